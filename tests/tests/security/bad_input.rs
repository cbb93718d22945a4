//! A table of bad inputs, each refused with its status and no change in the database.

use super::*;

pub(super) async fn bad_inputs(app: &TestApp, api: &mut Api, ctx: &Ctx, queued_run: &str) {
    use Code::{FailedPrecondition as Fp, InvalidArgument as Ia, NotFound as Nf};
    let t = Some(OPERATOR_SECRET);
    let long = |n: usize| "x".repeat(n);
    let job = || CANCEL_EXPIRED.to_string();
    let update = |f: &dyn Fn(&mut UpdateJobRequest)| {
        let mut r = UpdateJobRequest {
            name: job(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let big_params = json_to_struct(&serde_json::json!({ "blob": long(70 * 1024) }));
    let unknown_run = uuid::Uuid::new_v4().to_string();

    let before = control_snapshot(app).await;
    let mut cases: Vec<(&str, Code, Result<(), Status>)> = Vec::new();
    macro_rules! case {
        ($what:expr, $code:expr, $call:expr) => {
            cases.push(($what, $code, $call.await.map(|_| ())));
        };
    }
    case!(
        "GetJob empty name",
        Ia,
        api.get_job(req(
            GetJobRequest {
                name: String::new()
            },
            t
        ))
    );
    case!(
        "GetJob blank name",
        Ia,
        api.get_job(req(GetJobRequest { name: "   ".into() }, t))
    );
    case!(
        "GetJob 201-char name",
        Ia,
        api.get_job(req(GetJobRequest { name: long(201) }, t))
    );
    case!(
        "GetJob 10 KB name",
        Ia,
        api.get_job(req(
            GetJobRequest {
                name: long(10 * 1024)
            },
            t
        ))
    );
    case!(
        "GetJob unknown",
        Nf,
        api.get_job(req(
            GetJobRequest {
                name: "nope/no-such-job".into()
            },
            t
        ))
    );
    case!(
        "TriggerJob empty name",
        Ia,
        api.trigger_job(req(TriggerJobRequest::default(), t))
    );
    case!(
        "TriggerJob 10 KB name",
        Ia,
        api.trigger_job(req(
            TriggerJobRequest {
                job: long(10 * 1024),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "TriggerJob unknown job",
        Nf,
        api.trigger_job(req(
            TriggerJobRequest {
                job: "nope/no-such-job".into(),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "TriggerJob 201-char idempotency key",
        Ia,
        api.trigger_job(req(
            TriggerJobRequest {
                job: job(),
                idempotency_key: long(201),
                params: None
            },
            t
        ))
    );
    case!(
        "TriggerJob 70 KB params",
        Ia,
        api.trigger_job(req(
            TriggerJobRequest {
                job: job(),
                idempotency_key: String::new(),
                params: Some(big_params.clone())
            },
            t
        ))
    );
    // Past the servers' message limit: refused before it is parsed.
    case!(
        "TriggerJob 1 MiB message",
        Code::OutOfRange,
        api.trigger_job(req(
            TriggerJobRequest {
                job: job(),
                idempotency_key: String::new(),
                params: Some(json_to_struct(
                    &serde_json::json!({ "blob": long(1024 * 1024) })
                ))
            },
            t
        ))
    );
    for (what, schedule) in [
        ("UpdateJob bad cron", "not a cron"),
        ("UpdateJob out-of-range minute", "61 * * * *"),
        ("UpdateJob 4 fields", "* * * *"),
        ("UpdateJob never fires (30 Feb)", "0 0 30 2 *"),
        ("UpdateJob empty schedule", ""),
        ("UpdateJob multi-byte named schedule", "EVERY_DAY_AT_€"),
    ] {
        case!(
            what,
            Ia,
            api.update_job(req(update(&|r| r.schedule = Some(schedule.into())), t))
        );
    }
    case!(
        "UpdateJob 10 KB schedule",
        Ia,
        api.update_job(req(
            update(&|r| r.schedule = Some("*".repeat(10 * 1024))),
            t
        ))
    );
    case!(
        "UpdateJob bad timezone",
        Ia,
        api.update_job(req(
            update(&|r| r.timezone = Some("Mars/Olympus".into())),
            t
        ))
    );
    case!(
        "UpdateJob empty timezone",
        Ia,
        api.update_job(req(update(&|r| r.timezone = Some(String::new())), t))
    );
    case!(
        "UpdateJob valid change with a bad timezone",
        Ia,
        api.update_job(req(
            update(&|r| {
                r.max_retries = Some(3);
                r.enabled = Some(true);
                r.timezone = Some("Not/AZone".into());
            }),
            t
        ))
    );
    case!(
        "UpdateJob max_retries 101",
        Ia,
        api.update_job(req(update(&|r| r.max_retries = Some(101)), t))
    );
    case!(
        "UpdateJob timeout 0",
        Ia,
        api.update_job(req(update(&|r| r.timeout_seconds = Some(0)), t))
    );
    case!(
        "UpdateJob timeout over a week",
        Ia,
        api.update_job(req(
            update(&|r| r.timeout_seconds = Some(7 * 86_400 + 1)),
            t
        ))
    );
    case!(
        "UpdateJob catch-up window over a week",
        Ia,
        api.update_job(req(
            update(&|r| r.catch_up_window_seconds = Some(u32::MAX)),
            t
        ))
    );
    case!(
        "UpdateJob valid schedule, max_retries out of range",
        Ia,
        api.update_job(req(
            update(&|r| {
                r.schedule = Some("*/5 * * * *".into());
                r.max_retries = Some(1000);
            }),
            t
        ))
    );
    case!(
        "UpdateJob unknown overlap policy",
        Ia,
        api.update_job(req(update(&|r| r.overlap_policy = 99), t))
    );
    case!(
        "UpdateJob unknown missed-tick policy",
        Ia,
        api.update_job(req(update(&|r| r.missed_tick_policy = -1), t))
    );
    case!(
        "UpdateJob unknown job",
        Nf,
        api.update_job(req(
            UpdateJobRequest {
                name: "nope/no-such-job".into(),
                max_retries: Some(1),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "PauseJob unknown job",
        Nf,
        api.pause_job(req(
            PauseJobRequest {
                name: "nope/x".into()
            },
            t
        ))
    );
    case!(
        "PauseJob 10 KB name",
        Ia,
        api.pause_job(req(
            PauseJobRequest {
                name: long(10 * 1024)
            },
            t
        ))
    );
    case!(
        "ResumeJob empty name",
        Ia,
        api.resume_job(req(
            ResumeJobRequest {
                name: String::new()
            },
            t
        ))
    );
    case!(
        "ResumeJob unknown job",
        Nf,
        api.resume_job(req(
            ResumeJobRequest {
                name: "nope/x".into()
            },
            t
        ))
    );
    case!(
        "ListRuns bad page_token",
        Ia,
        api.list_runs(req(
            ListRunsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "ListRuns 10 KB page_token",
        Ia,
        api.list_runs(req(
            ListRunsRequest {
                page_token: long(10 * 1024),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "ListRuns unknown state",
        Ia,
        api.list_runs(req(
            ListRunsRequest {
                state: 99,
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "ListRuns unknown job",
        Nf,
        api.list_runs(req(
            ListRunsRequest {
                job: "nope/x".into(),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "GetRun empty id",
        Ia,
        api.get_run(req(
            GetRunRequest {
                run_id: String::new()
            },
            t
        ))
    );
    case!(
        "GetRun unknown id",
        Nf,
        api.get_run(req(
            GetRunRequest {
                run_id: unknown_run.clone()
            },
            t
        ))
    );
    case!(
        "GetRun 10 KB id",
        Ia,
        api.get_run(req(
            GetRunRequest {
                run_id: long(10 * 1024)
            },
            t
        ))
    );
    case!(
        "WatchRun unknown id",
        Nf,
        api.watch_run(req(
            WatchRunRequest {
                run_id: unknown_run.clone(),
                after_seq: 0
            },
            t
        ))
    );
    case!(
        "WatchRun after_seq too large",
        Ia,
        api.watch_run(req(
            WatchRunRequest {
                run_id: ctx.run_id.clone(),
                after_seq: u64::MAX
            },
            t
        ))
    );
    case!(
        "CancelRun unknown id",
        Nf,
        api.cancel_run(req(
            CancelRunRequest {
                run_id: unknown_run.clone(),
                reason: String::new()
            },
            t
        ))
    );
    case!(
        "CancelRun an ended run",
        Fp,
        api.cancel_run(req(
            CancelRunRequest {
                run_id: ctx.run_id.clone(),
                reason: String::new()
            },
            t
        ))
    );
    case!(
        "CancelRun 501-char reason",
        Ia,
        api.cancel_run(req(
            CancelRunRequest {
                run_id: queued_run.into(),
                reason: long(501)
            },
            t
        ))
    );
    case!(
        "GetReport empty id",
        Ia,
        api.get_report(req(GetReportRequest { id: String::new() }, t))
    );
    case!(
        "GetReport unknown id",
        Nf,
        api.get_report(req(
            GetReportRequest {
                id: unknown_run.clone()
            },
            t
        ))
    );

    let mut failures = Vec::new();
    for (what, want, got) in &cases {
        let got_code = code_of(got);
        if got_code != *want {
            failures.push(format!("{what}: want {want:?}, got {got:?}"));
        } else if let Err(s) = got
            && s.message().trim().is_empty()
        {
            failures.push(format!("{what}: {want:?} without a message"));
        }
    }
    assert!(failures.is_empty(), "bad inputs:\n{}", failures.join("\n"));
    assert_same(&before, &control_snapshot(app).await, "bad inputs");
    eprintln!(
        "[security] {} bad inputs refused with their status",
        cases.len()
    );
}
