//! The real binary over gRPC: unknown jobs, cancellation, timeouts and SIGTERM.
use std::process::Stdio;
use std::time::Duration;

use ticketmax_proto::v1::executor_client::ExecutorClient;
use ticketmax_proto::v1::{
    CancelTaskRequest, ExecutorEvent, Finished, RunJobRequest, RunState, executor_event,
};
use ticketmax_proto::{json_to_struct, struct_to_json};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_ticketmax-executor");

struct Executor {
    child: Child,
    client: ExecutorClient<Channel>,
}

async fn start() -> Executor {
    start_with(&[]).await
}

async fn start_with(env: &[(&str, &str)]) -> Executor {
    let dir = std::env::temp_dir().join(format!(
        "tm_exec_grpc_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let seeded = Command::new(BIN)
        .args([
            "--data-dir",
            &dir.display().to_string(),
            "seed-demo",
            "--users",
            "60",
            "--events",
            "16",
            "--bookings",
            "400",
        ])
        .stderr(Stdio::null())
        .status()
        .await
        .expect("seed-demo");
    assert!(seeded.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(BIN)
        .env("TICKETMAX_DATA_DIR", &dir)
        .env("TICKETMAX_EXECUTOR_ADDR", format!("127.0.0.1:{port}"))
        // Nobody listens there: registration keeps retrying quietly.
        .env("TICKETMAX_CONTROL_PLANE_URL", "http://127.0.0.1:9")
        .env("TICKETMAX_EXECUTOR_ID", "ex-test")
        .envs(env.iter().copied())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn executor");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(client) = ExecutorClient::connect(url.clone()).await {
            return Executor { child, client };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("executor did not start on {url}");
}

fn request(
    run_id: &str,
    job: &str,
    params: serde_json::Value,
    timeout_seconds: u32,
) -> RunJobRequest {
    RunJobRequest {
        run_id: run_id.into(),
        job: job.into(),
        attempt: 1,
        params: Some(json_to_struct(&params)),
        timeout_seconds,
        ..Default::default()
    }
}

/// Reads the stream to its end; calls `on_progress` with each progress count.
async fn finish(
    stream: &mut tonic::Streaming<ExecutorEvent>,
    mut on_progress: impl FnMut(u64),
) -> (Finished, Vec<ExecutorEvent>) {
    let mut events = Vec::new();
    let mut finished = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("stream stalled")
        .expect("stream error")
    {
        match &event.kind {
            Some(executor_event::Kind::Progress(p)) => on_progress(p.done),
            Some(executor_event::Kind::Finished(f)) => {
                assert!(finished.is_none(), "two Finished events");
                finished = Some(f.clone());
            }
            _ => {}
        }
        events.push(event);
    }
    (finished.expect("a Finished event"), events)
}

const JOB: &str = "booking-cleanup/cancel-expired-bookings";

#[tokio::test]
async fn unknown_job_cancel_timeout_and_sigterm() {
    let mut ex = start().await;

    let mut s = ex
        .client
        .run_job(request(
            "r-unknown",
            "nope/nothing",
            serde_json::json!({}),
            0,
        ))
        .await
        .expect("RunJob")
        .into_inner();
    let (f, events) = finish(&mut s, |_| {}).await;
    assert!(
        matches!(events[0].kind, Some(executor_event::Kind::Started(ref st)) if st.executor_id == "ex-test")
    );
    assert_eq!(f.outcome(), RunState::Failed);
    assert_eq!(f.error, "executor ex-test has no task named 'nope/nothing'");

    // CancelRun stops the task at a chunk boundary with its partial summary.
    let params = serde_json::json!({"batch_size": 1, "pause_ms": 300});
    let mut s = ex
        .client
        .run_job(request("r-cancel", JOB, params.clone(), 0))
        .await
        .expect("RunJob")
        .into_inner();
    let mut client = ex.client.clone();
    let mut asked = false;
    let (f, _) = finish(&mut s, |done| {
        if done >= 2 && !asked {
            asked = true;
            let mut c = client.clone();
            tokio::spawn(async move {
                let found = c
                    .cancel_run(CancelTaskRequest {
                        run_id: "r-cancel".into(),
                        attempt: 1,
                    })
                    .await
                    .expect("CancelRun");
                assert!(found.into_inner().found);
            });
        }
    })
    .await;
    assert_eq!(f.outcome(), RunState::Cancelled, "{f:?}");
    let summary = struct_to_json(f.summary.as_ref().expect("summary"));
    let cancelled = summary["cancelled"].as_u64().expect("partial count");
    assert!(cancelled >= 2, "{summary}");
    let found = client
        .cancel_run(CancelTaskRequest {
            run_id: "r-cancel".into(),
            attempt: 1,
        })
        .await
        .expect("CancelRun");
    assert!(
        !found.into_inner().found,
        "a finished run is no longer running"
    );

    // A run over its timeout ends TIMED_OUT with the partial summary.
    let mut s = ex
        .client
        .run_job(request("r-timeout", JOB, params.clone(), 1))
        .await
        .expect("RunJob")
        .into_inner();
    let (f, _) = finish(&mut s, |_| {}).await;
    assert_eq!(f.outcome(), RunState::TimedOut, "{f:?}");
    assert!(
        struct_to_json(f.summary.as_ref().expect("summary"))["cancelled"]
            .as_u64()
            .is_some()
    );

    // SIGTERM: the running task ends CANCELLED on its stream, then the process exits.
    let mut s = ex
        .client
        .run_job(request("r-term", JOB, params, 0))
        .await
        .expect("RunJob")
        .into_inner();
    let pid = ex.child.id().expect("pid");
    let mut signalled = false;
    let (f, _) = finish(&mut s, |done| {
        if done >= 1 && !signalled {
            signalled = true;
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    })
    .await;
    assert_eq!(f.outcome(), RunState::Cancelled, "{f:?}");
    let status = tokio::time::timeout(Duration::from_secs(20), ex.child.wait())
        .await
        .expect("exit")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_shared_token_is_required_when_configured() {
    let mut ex = start_with(&[("TICKETMAX_EXECUTOR_TOKEN", "s3cret")]).await;
    let req = || request("r-token", JOB, serde_json::json!({}), 0);
    let err = ex.client.run_job(req()).await.expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut wrong = tonic::Request::new(req());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().expect("header"));
    let err = ex.client.run_job(wrong).await.expect_err("wrong token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut right = tonic::Request::new(req());
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().expect("header"));
    let mut s = ex
        .client
        .run_job(right)
        .await
        .expect("RunJob with the token")
        .into_inner();
    let (f, _) = finish(&mut s, |_| {}).await;
    assert_eq!(f.outcome(), RunState::Succeeded, "{f:?}");
}

/// `RunJobRequest.trigger` over the wire: a TRIGGER_SCHEDULE run reports the day of its tick
/// (`scheduled_for`, 23:00 in Lagos on 28 November 2026) although it runs days later; the same
/// request from an older control plane (TRIGGER_UNSPECIFIED) is a manual run: today.
#[tokio::test]
async fn a_scheduled_run_reports_the_day_of_its_tick() {
    use ticketmax_proto::v1::Trigger;
    let mut ex = start().await;
    let tick = chrono::DateTime::parse_from_rfc3339("2026-11-28T22:00:00Z")
        .expect("tick")
        .with_timezone(&chrono::Utc);
    for (run, trigger) in [
        ("r-tick", Trigger::Schedule),
        ("r-old", Trigger::Unspecified),
    ] {
        let mut req = request(
            run,
            "booking-cleanup/generate-daily-report",
            serde_json::json!({}),
            0,
        );
        req.scheduled_for = Some(ticketmax_proto::to_timestamp(tick));
        req.timezone = "Africa/Lagos".into();
        req.trigger = trigger.into();
        let before = chrono::Utc::now()
            .with_timezone(&chrono_tz::Africa::Lagos)
            .date_naive();
        let mut s = ex.client.run_job(req).await.expect("RunJob").into_inner();
        let (f, _) = finish(&mut s, |_| {}).await;
        let after = chrono::Utc::now()
            .with_timezone(&chrono_tz::Africa::Lagos)
            .date_naive();
        assert_eq!(f.outcome(), RunState::Succeeded, "{run}: {}", f.error);
        let period = &f.reports[0].period;
        if trigger == Trigger::Schedule {
            assert_eq!(period, "2026-11-28", "{run}");
        } else {
            assert!(
                [before, after]
                    .iter()
                    .any(|d| &d.format("%Y-%m-%d").to_string() == period),
                "{run}: {period}"
            );
        }
    }
}
