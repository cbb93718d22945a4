//! Runs survive the loss of their executor, can be cancelled, and processes stop gracefully.

use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CANCEL_EXPIRED;

#[tokio::test]
async fn a_run_whose_executor_dies_is_retried_on_another_executor() {
    let mut app = TestApp::builder().executors(2).spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(400).await;

    let run = app
        .try_trigger(
            CANCEL_EXPIRED,
            "",
            Some(serde_json::json!({ "batch_size": 1, "pause_ms": 20 })),
        )
        .await
        .expect("TriggerJob");
    // Kill the executor once it has committed some chunks but not all.
    let running = app
        .wait_for_run(
            &run.id,
            |r| (r.state() == RunState::Running && !r.executor_id.is_empty()) || terminal(r),
            secs(30),
        )
        .await;
    assert!(
        !terminal(&running),
        "the run ended before its executor could be killed: {running:#?}"
    );
    eventually("some bookings cancelled", secs(30), || async {
        let n: i64 = app
            .ticketing_scalar("SELECT count(*) FROM bookings WHERE status = 'cancelled'")
            .await;
        (n >= 20).then_some(())
    })
    .await;
    let victim = running.executor_id.clone();
    let index = app
        .executors
        .iter()
        .position(|e| e.executor_id == victim)
        .unwrap_or_else(|| panic!("run on unknown executor {victim:?}"));
    app.executors[index].kill().await;

    let done = app.wait_for_run(&run.id, terminal, secs(90)).await;
    assert_eq!(
        done.state(),
        RunState::Succeeded,
        "after executor {victim} died: {done:#?}"
    );
    assert!(done.attempt >= 2, "the run was not retried: {done:#?}");
    assert_ne!(
        done.executor_id, victim,
        "retried on the dead executor: {done:#?}"
    );
    let left: i64 = app
        .ticketing_scalar("SELECT count(*) FROM bookings WHERE status = 'pending'")
        .await;
    assert_eq!(left, 0, "expired bookings left pending after the retry");
    app.assert_inventory_consistent().await;
    let mails: i64 = app
        .ticketing_scalar("SELECT count(*) FROM email_outbox")
        .await;
    assert_eq!(
        mails, 400,
        "one cancellation e-mail per booking, none twice"
    );
}

#[tokio::test]
async fn cancel_run_stops_a_running_task_between_chunks() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(400).await;

    let run = app
        .try_trigger(
            CANCEL_EXPIRED,
            "",
            Some(serde_json::json!({ "batch_size": 1, "pause_ms": 20 })),
        )
        .await
        .expect("TriggerJob");
    app.wait_for_run(
        &run.id,
        |r| r.state() == RunState::Running || terminal(r),
        secs(30),
    )
    .await;
    eventually("some bookings cancelled", secs(30), || async {
        let n: i64 = app
            .ticketing_scalar("SELECT count(*) FROM bookings WHERE status = 'cancelled'")
            .await;
        (n >= 5).then_some(())
    })
    .await;
    let resp = app
        .api()
        .cancel_run(v1::CancelRunRequest {
            run_id: run.id.clone(),
            reason: "e2e".into(),
        })
        .await
        .expect("CancelRun")
        .into_inner();
    assert_eq!(resp.id, run.id);

    let done = app.wait_for_run(&run.id, terminal, secs(30)).await;
    assert_eq!(done.state(), RunState::Cancelled, "{done:#?}");
    let cancelled: i64 = app
        .ticketing_scalar("SELECT count(*) FROM bookings WHERE status = 'cancelled'")
        .await;
    assert!(cancelled < 400, "the task ran to the end despite CancelRun");
    assert_eq!(
        summary_count(&done, "cancelled"),
        Some(cancelled),
        "the partial summary must count exactly the committed chunks: {}",
        summary(&done)
    );
    app.assert_inventory_consistent().await;

    // Cancelling a finished run is refused.
    let err = app
        .api()
        .cancel_run(v1::CancelRunRequest {
            run_id: run.id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("CancelRun of a finished run");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
}

#[tokio::test]
async fn cancel_runs_counts_then_cancels_the_queued_and_stops_the_running_runs_of_a_job() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(400).await;
    app.update_job(v1::UpdateJobRequest {
        name: CANCEL_EXPIRED.into(),
        overlap_policy: v1::OverlapPolicy::QueueOne as i32,
        ..Default::default()
    })
    .await
    .expect("queue one");
    let slow = Some(serde_json::json!({ "batch_size": 1, "pause_ms": 20 }));
    let running = app
        .try_trigger(CANCEL_EXPIRED, "", slow.clone())
        .await
        .expect("TriggerJob");
    app.wait_for_run(&running.id, |r| r.state() == RunState::Running, secs(30))
        .await;
    let queued = app
        .try_trigger(CANCEL_EXPIRED, "", slow)
        .await
        .expect("TriggerJob");
    assert_eq!(queued.state(), RunState::Queued, "{queued:#?}");
    let mut api = app.api();
    let bulk = |dry_run: bool, state: RunState| v1::CancelRunsRequest {
        job: CANCEL_EXPIRED.into(),
        state: state as i32,
        reason: "bulk e2e".into(),
        dry_run,
        ..Default::default()
    };

    // Bad input: a clear status, nothing changed.
    for (req, says) in [
        (bulk(false, RunState::Succeeded), "only queued or running"),
        (
            v1::CancelRunsRequest {
                limit: 10_001,
                ..bulk(false, RunState::Unspecified)
            },
            "at most 10000",
        ),
        (
            v1::CancelRunsRequest {
                job: "nope/none".into(),
                ..bulk(false, RunState::Unspecified)
            },
            "no job named",
        ),
        (
            v1::CancelRunsRequest {
                created_since: Some(to_timestamp(chrono::Utc::now())),
                created_until: Some(to_timestamp(
                    chrono::Utc::now() - chrono::Duration::hours(1),
                )),
                ..bulk(false, RunState::Unspecified)
            },
            "before created_since",
        ),
    ] {
        let err = api.cancel_runs(req).await.expect_err("refused");
        assert!(
            matches!(
                err.code(),
                tonic::Code::InvalidArgument | tonic::Code::NotFound
            ),
            "{err}"
        );
        assert!(err.message().contains(says), "{err}");
    }
    // The count first: changes nothing.
    let counted = api
        .cancel_runs(bulk(true, RunState::Unspecified))
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(
        (counted.queued, counted.running, counted.more),
        (1, 1, false)
    );
    assert_eq!(app.get_run(&queued.id).await.state(), RunState::Queued);
    // Only the queued ones when asked so.
    let only_queued = api
        .cancel_runs(bulk(true, RunState::Queued))
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!((only_queued.queued, only_queued.running), (1, 0));

    let done = api
        .cancel_runs(bulk(false, RunState::Unspecified))
        .await
        .expect("CancelRuns")
        .into_inner();
    assert_eq!((done.queued, done.running), (1, 1));
    assert_eq!(app.get_run(&queued.id).await.state(), RunState::Cancelled);
    let stopped = app.wait_for_run(&running.id, terminal, secs(30)).await;
    assert_eq!(stopped.state(), RunState::Cancelled, "{stopped:#?}");
    assert!(stopped.reason.contains("bulk e2e"), "{}", stopped.reason);
    let cancelled: i64 = app
        .ticketing_scalar("SELECT count(*) FROM bookings WHERE status = 'cancelled'")
        .await;
    assert!(cancelled < 400, "the running task was not stopped");
    app.assert_inventory_consistent().await;
    // Nothing left to cancel.
    let again = api
        .cancel_runs(bulk(false, RunState::Unspecified))
        .await
        .expect("CancelRuns")
        .into_inner();
    assert_eq!((again.queued, again.running), (0, 0));
}

#[tokio::test]
async fn sigterm_stops_both_processes_cleanly_and_they_start_again() {
    let mut app = TestApp::spawn().await;
    let status = app.executor().terminate().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "executor did not exit cleanly on SIGTERM within 15 s: {status:?}\n{}",
        app.executors[0].proc.log_tail(30)
    );
    let status = app.cp().terminate().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "control plane did not exit cleanly on SIGTERM within 15 s: {status:?}\n{}",
        app.control_planes[0].proc.log_tail(30)
    );
    app.cp().start().await;
    app.executor().start().await;
    let run = app.run_to_completion(CANCEL_EXPIRED).await;
    assert_eq!(run.state(), RunState::Succeeded, "{run:#?}");
}
