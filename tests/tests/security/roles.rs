//! Every role against every `JobService` method (gRPC and the HTTP door), who did what, and
//! the per-token trigger rate limit.

use super::*;

// ------------------------------------------------------------------------------------------
// Every role against every method
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum M {
    GetStatus,
    ListJobs,
    GetJob,
    GetRun,
    ListRuns,
    WatchRun,
    ListReports,
    GetReport,
    TriggerJob,
    CancelRun,
    CancelRuns,
    UpdateJob,
    PauseJob,
    ResumeJob,
}

const READS: [M; 8] = [
    M::GetStatus,
    M::ListJobs,
    M::GetJob,
    M::GetRun,
    M::ListRuns,
    M::WatchRun,
    M::ListReports,
    M::GetReport,
];
/// In this order the operator's calls make sense one after the other.
const WRITES: [M; 6] = [
    M::TriggerJob,
    M::CancelRun,
    M::CancelRuns,
    M::UpdateJob,
    M::PauseJob,
    M::ResumeJob,
];

/// Calls `m` with `token`; on success, what it returned (the run or the job, when one).
async fn call(api: &mut Api, m: M, token: Option<&str>, c: &Ctx) -> Result<String, Status> {
    let job = c.job.clone();
    let run_id = c.run_id.clone();
    Ok(match m {
        M::GetStatus => format!(
            "{:?}",
            api.get_status(req(GetStatusRequest {}, token))
                .await?
                .get_ref()
                .status
        ),
        M::ListJobs => format!(
            "{}",
            api.list_jobs(req(ListJobsRequest::default(), token))
                .await?
                .get_ref()
                .jobs
                .len()
        ),
        M::GetJob => {
            api.get_job(req(GetJobRequest { name: job }, token))
                .await?
                .into_inner()
                .updated_by
        }
        M::GetRun => {
            api.get_run(req(GetRunRequest { run_id }, token))
                .await?
                .into_inner()
                .id
        }
        M::ListRuns => format!(
            "{}",
            api.list_runs(req(
                ListRunsRequest {
                    job,
                    ..Default::default()
                },
                token
            ))
            .await?
            .get_ref()
            .runs
            .len()
        ),
        M::WatchRun => {
            api.watch_run(req(
                WatchRunRequest {
                    run_id,
                    after_seq: 0,
                },
                token,
            ))
            .await?;
            String::new()
        }
        M::ListReports => format!(
            "{}",
            api.list_reports(req(ListReportsRequest::default(), token))
                .await?
                .get_ref()
                .reports
                .len()
        ),
        M::GetReport => {
            api.get_report(req(
                GetReportRequest {
                    id: c.report_id.clone(),
                },
                token,
            ))
            .await?
            .into_inner()
            .id
        }
        M::TriggerJob => {
            api.trigger_job(req(
                TriggerJobRequest {
                    job,
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner()
            .id
        }
        M::CancelRun => {
            api.cancel_run(req(
                CancelRunRequest {
                    run_id,
                    reason: "security test".into(),
                },
                token,
            ))
            .await?
            .into_inner()
            .reason
        }
        M::CancelRuns => {
            let done = api
                .cancel_runs(req(
                    v1::CancelRunsRequest {
                        job,
                        reason: "security test".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await?
                .into_inner();
            format!("{}/{}", done.queued, done.running)
        }
        M::UpdateJob => {
            api.update_job(req(
                UpdateJobRequest {
                    name: job,
                    schedule: Some("0 0 1 1 *".into()),
                    max_retries: Some(7),
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner()
            .updated_by
        }
        M::PauseJob => {
            api.pause_job(req(PauseJobRequest { name: job }, token))
                .await?
                .into_inner()
                .updated_by
        }
        M::ResumeJob => {
            api.resume_job(req(ResumeJobRequest { name: job }, token))
                .await?
                .into_inner()
                .updated_by
        }
    })
}

/// One control plane with viewer and operator tokens and no executor (runs stay QUEUED, so
/// nothing but the API changes the database); human-format logs.
#[tokio::test]
async fn roles_rate_limit_bad_inputs_and_who_did_what() {
    let mut app = security_app().await;
    let (grpc, http) = app
        .start_control_plane(
            "cp-1",
            &[
                ("TICKETMAX_API_TOKENS", api_tokens()),
                ("TICKETMAX_TRIGGER_RATE_PER_MINUTE", "3".into()),
                ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.into()),
            ],
        )
        .await;
    let mut api = api(grpc).await;
    pause_everything(&mut api, OPERATOR_SECRET).await;
    // Every trigger makes a queued run (not SKIPPED behind the previous one).
    api.update_job(req(
        UpdateJobRequest {
            name: CANCEL_EXPIRED.into(),
            overlap_policy: v1::OverlapPolicy::Allow.into(),
            ..Default::default()
        },
        Some(OPERATOR_SECRET),
    ))
    .await
    .unwrap();

    // A run (queued: there is no executor) and a report to read.
    let alice_first = Instant::now();
    let first = trigger(&mut api, CANCEL_EXPIRED, OPERATOR_SECRET).await;
    assert_eq!(first.triggered_by, "alice", "{first:#?}");
    app.control_db()
        .execute_unprepared(&format!(
            "INSERT INTO reports (id, kind, period, job, run_id, body, created_at) VALUES \
             ('rep-1', 'daily-analytics', '2026-11-27', 'analytics/generate-daily-analytics', '{}', '{{}}', now())",
            first.id
        ))
        .await
        .unwrap();
    let ctx = Ctx {
        job: CANCEL_EXPIRED.into(),
        run_id: first.id.clone(),
        report_id: "rep-1".into(),
    };

    // Refused: no token, an unknown token (every method), the viewer (changes only).
    let before = control_snapshot(&app).await;
    for m in READS.iter().chain(&WRITES) {
        for (who, token) in [
            ("no token", None),
            ("unknown token", Some(WRONG_SECRETS[0])),
        ] {
            let r = call(&mut api, *m, token, &ctx).await;
            assert_eq!(
                code_of(&r),
                Code::Unauthenticated,
                "{m:?} with {who}: {r:?}"
            );
            let msg = r.unwrap_err().message().to_string();
            assert!(!msg.contains(WRONG_SECRETS[0]), "{msg}");
        }
    }
    for m in WRITES {
        let r = call(&mut api, m, Some(VIEWER_SECRET), &ctx).await;
        assert_eq!(
            code_of(&r),
            Code::PermissionDenied,
            "{m:?} as viewer: {r:?}"
        );
        let msg = r.unwrap_err().message().to_string();
        assert!(
            msg.contains("dash") && !msg.contains(VIEWER_SECRET),
            "{msg}"
        );
    }
    // The viewer reads everything; reads change nothing either.
    for m in READS {
        let r = call(&mut api, m, Some(VIEWER_SECRET), &ctx).await;
        assert!(r.is_ok(), "{m:?} as viewer: {r:?}");
    }
    assert_same(
        &before,
        &control_snapshot(&app).await,
        "refused calls and reads",
    );

    // HTTP: the same rules at the seed's trigger endpoint (and the status endpoint).
    let path = "/background-jobs/booking-cleanup/run";
    assert_eq!(http_call(http, "POST", path, None).await.unwrap().0, 401);
    assert_eq!(
        http_call(http, "POST", path, Some(WRONG_SECRETS[1]))
            .await
            .unwrap()
            .0,
        401
    );
    let (code, body) = http_call(http, "POST", path, Some(VIEWER_SECRET))
        .await
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        http_call(http, "GET", "/background-jobs/status", None)
            .await
            .unwrap()
            .0,
        401
    );
    let (code, body) = http_call(http, "GET", "/background-jobs/status", Some(VIEWER_SECRET))
        .await
        .unwrap();
    assert_eq!(
        code, 200,
        "the viewer may read the status over HTTP: {body}"
    );
    // /metrics names jobs, executors and e-mail figures: a viewer token at least. /healthz
    // stays open for load balancers and says nothing more than ok.
    for (token, expect) in [
        (None, 401),
        (Some(WRONG_SECRETS[0]), 401),
        (Some(VIEWER_SECRET), 200),
        (Some(OPERATOR_SECRET), 200),
    ] {
        let (code, body) = http_call(http, "GET", "/metrics", token).await.unwrap();
        assert_eq!(code, expect, "/metrics with {token:?}: {body}");
        assert_eq!(
            body.contains("ticketmax_runs"),
            expect == 200,
            "/metrics with {token:?}: {body}"
        );
    }
    assert_eq!(
        http_call(http, "GET", "/healthz", None).await.unwrap(),
        (200, "ok".to_string())
    );
    assert_same(&before, &control_snapshot(&app).await, "refused HTTP calls");
    let (code, body) = http_call(http, "POST", path, Some(OPERATOR_SECRET))
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    let http_run = v["run"]["id"].as_str().unwrap().to_string();
    let r = api
        .get_run(req(GetRunRequest { run_id: http_run }, Some(VIEWER_SECRET)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.triggered_by, "alice", "{r:#?}");

    // The operator may do everything; who did it is recorded.
    for m in READS {
        let r = call(&mut api, m, Some(OPERATOR_SECRET), &ctx).await;
        assert!(r.is_ok(), "{m:?} as operator: {r:?}");
    }
    let mut ctx = ctx;
    for m in WRITES {
        let r = call(&mut api, m, Some(OPERATOR_SECRET), &ctx).await;
        let out = r.unwrap_or_else(|s| panic!("{m:?} as operator: {s:?}"));
        match m {
            M::TriggerJob => {
                let run = api
                    .get_run(req(
                        GetRunRequest {
                            run_id: out.clone(),
                        },
                        Some(OPERATOR_SECRET),
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(run.triggered_by, "alice");
                ctx.run_id = out;
            }
            M::CancelRun => assert!(out.contains("'alice'"), "cancel reason: {out}"),
            M::UpdateJob | M::PauseJob | M::ResumeJob => assert_eq!(out, "alice", "{m:?}"),
            _ => {}
        }
    }
    let job = api
        .get_job(req(
            GetJobRequest {
                name: CANCEL_EXPIRED.into(),
            },
            Some(VIEWER_SECRET),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            job.schedule.as_str(),
            job.max_retries,
            job.updated_by.as_str()
        ),
        ("0 0 1 1 *", 7, "alice")
    );
    let cancelled = api
        .get_run(req(
            GetRunRequest {
                run_id: ctx.run_id.clone(),
            },
            Some(VIEWER_SECRET),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), RunState::Cancelled);
    api.pause_job(req(
        PauseJobRequest {
            name: CANCEL_EXPIRED.into(),
        },
        Some(OPERATOR_SECRET),
    ))
    .await
    .unwrap();

    // The per-token trigger rate limit: 3 a minute for "limited", whatever the door.
    let runs_now = || async { scalar::<i64>(app.control_db(), "SELECT count(*) FROM runs").await };
    let mut limited_runs = Vec::new();
    for i in 0..3 {
        let r = api
            .trigger_job(req(
                TriggerJobRequest {
                    job: CANCEL_EXPIRED.into(),
                    ..Default::default()
                },
                Some(LIMITED_SECRET),
            ))
            .await;
        limited_runs.push(
            r.unwrap_or_else(|s| panic!("trigger {i}: {s:?}"))
                .into_inner(),
        );
    }
    let count = runs_now().await;
    let r = api
        .trigger_job(req(
            TriggerJobRequest {
                job: CANCEL_EXPIRED.into(),
                ..Default::default()
            },
            Some(LIMITED_SECRET),
        ))
        .await;
    assert_eq!(code_of(&r), Code::ResourceExhausted, "{r:?}");
    let (code, body) = http_call(http, "POST", path, Some(LIMITED_SECRET))
        .await
        .unwrap();
    assert_eq!(code, 429, "{body}");
    assert_eq!(runs_now().await, count, "a refused trigger created a run");
    // Per token: "limited" used its own 3, not alice's; alice has used 3 too, over both doors
    // (gRPC twice, HTTP once), so she is out as well, unless 20 s went by since her first
    // trigger (a slow machine) and the bucket refilled one.
    let alice_out = alice_first.elapsed() < Duration::from_secs(18);
    let r = api
        .trigger_job(req(
            TriggerJobRequest {
                job: CANCEL_EXPIRED.into(),
                ..Default::default()
            },
            Some(OPERATOR_SECRET),
        ))
        .await;
    if alice_out {
        assert_eq!(code_of(&r), Code::ResourceExhausted, "{r:?}");
        assert_eq!(runs_now().await, count, "a refused trigger created a run");
    }
    let queued = limited_runs.pop().unwrap();
    assert_eq!(queued.state(), RunState::Queued, "{queued:#?}");
    assert_eq!(queued.triggered_by, "limited");

    // Bad inputs: each gets its status and changes nothing.
    super::bad_input::bad_inputs(&app, &mut api, &ctx, &queued.id).await;

    let cp_log = app.control_planes[0].proc.log();
    assert!(
        cp_log.contains(" INFO ") && cp_log.contains("alice"),
        "human-format log naming who did what: {cp_log}"
    );
    app.stop_and_assert_no_secret_in_logs(&secrets()).await;
}
