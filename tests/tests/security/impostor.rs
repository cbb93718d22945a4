//! Executors that are not who they claim: refused on both sides, while the real one works.

use super::*;

// ------------------------------------------------------------------------------------------
// Executor trust
// ------------------------------------------------------------------------------------------

/// Control plane and executor share TICKETMAX_EXECUTOR_TOKEN; JSON logs. An impostor cannot
/// register (by hand or as a real executor process with a wrong secret), nor run a job on the
/// executor directly; with the secret everything works end to end.
#[tokio::test]
async fn impostor_executors_are_refused_and_the_real_one_works() {
    let mut app = security_app().await;
    let json = ("LOG_FORMAT", "json".to_string());
    let (grpc, _http) = app
        .start_control_plane(
            "cp-1",
            &[
                ("TICKETMAX_API_TOKENS", api_tokens()),
                ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.into()),
                json.clone(),
            ],
        )
        .await;
    let ex_addr = app
        .start_executor(
            "ex-1",
            grpc,
            &[
                ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.into()),
                json.clone(),
            ],
            true,
        )
        .await;
    let mut api = api(grpc).await;
    pause_everything(&mut api, OPERATOR_SECRET).await;
    one_expired_booking(&app).await;

    // A real executor process with the wrong secret never gets in.
    app.start_executor(
        "ex-impostor",
        grpc,
        &[
            ("TICKETMAX_EXECUTOR_TOKEN", WRONG_SECRETS[1].into()),
            json.clone(),
        ],
        false,
    )
    .await;

    // By hand: Register, Heartbeat, Deregister without or with a wrong secret.
    let before = control_snapshot(&app).await;
    let mut reg =
        ExecutorRegistryClient::new(channel(format!("http://{grpc}"), None).await.unwrap());
    let register = |id: &str| v1::RegisterRequest {
        executor_id: id.into(),
        address: format!("http://{ex_addr}"),
        jobs: vec![CANCEL_EXPIRED.into()],
        version: "0.0.0".into(),
        ..Default::default()
    };
    for token in [
        None,
        Some(WRONG_SECRETS[0]),
        Some(OPERATOR_SECRET),
        Some(VIEWER_SECRET),
    ] {
        let r = reg.register(req(register("ex-hand"), token)).await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "Register with {token:?}: {r:?}"
        );
        let r = reg
            .heartbeat(req(
                v1::HeartbeatRequest {
                    executor_id: "ex-1".into(),
                    running: 99,
                    ..Default::default()
                },
                token,
            ))
            .await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "Heartbeat with {token:?}: {r:?}"
        );
        let r = reg
            .deregister(req(
                v1::DeregisterRequest {
                    executor_id: "ex-1".into(),
                },
                token,
            ))
            .await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "Deregister with {token:?}: {r:?}"
        );
    }
    // With the secret but a bad address: INVALID_ARGUMENT, no row either.
    let mut bad = register("ex-hand");
    bad.address = "ftp://somewhere".into();
    let r = reg.register(req(bad, Some(EXECUTOR_SECRET))).await;
    assert_eq!(code_of(&r), Code::InvalidArgument, "{r:?}");
    // The impostor process keeps trying; wait until it has been refused, and told why.
    wait_for_log(&app, "ex-impostor", "wrong executor token").await;
    let ids: String = scalar(
        app.control_db(),
        "SELECT coalesce(string_agg(id || ':' || deregistered::text, ',' ORDER BY id), '') FROM executors",
    )
    .await;
    assert_eq!(ids, "ex-1:false", "only the real executor is registered");
    assert_same(
        &before,
        &control_snapshot(&app).await,
        "impostor registry calls",
    );

    // Straight to the executor: RunJob and CancelRun without the secret are refused, and the
    // ticketing database does not change.
    let tk_before = ticketing_snapshot(&app).await;
    let mut ex = ExecutorClient::new(channel(format!("http://{ex_addr}"), None).await.unwrap());
    for token in [None, Some(WRONG_SECRETS[0]), Some(OPERATOR_SECRET)] {
        let r = ex.run_job(req(stray_run_job(), token)).await;
        let r: Result<Vec<ExecutorEvent>, Status> = match r {
            Ok(stream) => {
                use futures::StreamExt;
                stream
                    .into_inner()
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect()
            }
            Err(s) => Err(s),
        };
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "RunJob with {token:?}: {r:?}"
        );
        let r = ex
            .cancel_run(req(
                v1::CancelTaskRequest {
                    run_id: "x".into(),
                    ..Default::default()
                },
                token,
            ))
            .await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "CancelRun with {token:?}: {r:?}"
        );
    }
    // With the secret but past the message limit: refused before it is parsed.
    let mut huge = stray_run_job();
    huge.params = Some(json_to_struct(
        &serde_json::json!({ "blob": "x".repeat(1024 * 1024) }),
    ));
    let r = ex.run_job(req(huge, Some(EXECUTOR_SECRET))).await;
    assert_eq!(code_of(&r), Code::OutOfRange, "1 MiB RunJob: {r:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_same(
        &tk_before,
        &ticketing_snapshot(&app).await,
        "RunJob without the secret",
    );

    // The real thing: trigger → SUCCEEDED on ex-1, the booking cancelled.
    let run = trigger(&mut api, CANCEL_EXPIRED, OPERATOR_SECRET).await;
    let run = wait_run(&mut api, &run.id, VIEWER_SECRET, Duration::from_secs(60)).await;
    assert_eq!(run.state(), RunState::Succeeded, "{run:#?}");
    assert_eq!(
        (run.executor_id.as_str(), run.triggered_by.as_str()),
        ("ex-1", "alice")
    );
    let status: String = scalar(
        app.ticketing(),
        "SELECT status::text FROM bookings WHERE id = 1",
    )
    .await;
    assert_ne!(status, "pending", "the expired booking was not cancelled");
    let still: i64 = scalar(
        app.control_db(),
        "SELECT count(*) FROM executors WHERE id = 'ex-impostor' OR id = 'ex-hand'",
    )
    .await;
    assert_eq!(still, 0);

    for p in app.procs() {
        let log = p.log();
        // The first line the process wrote (the harness marks each start and stop).
        let first = log
            .lines()
            .find(|l| !l.starts_with("===== e2e harness"))
            .unwrap_or("");
        assert!(
            serde_json::from_str::<serde_json::Value>(first).is_ok(),
            "{} does not log JSON: {first}",
            p.name()
        );
    }
    let cp_log = app.control_planes[0].proc.log();
    assert!(
        cp_log.contains("alice"),
        "the control plane's log names who paused the jobs"
    );
    app.stop_and_assert_no_secret_in_logs(&secrets()).await;
}
