//! Operators' view: the real grpcurl binary, by server reflection only (no .proto files).

use std::process::Output;

use serde_json::Value as Json;
use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CANCEL_EXPIRED;

async fn grpcurl(args: &[&str]) -> Output {
    let bin = grpcurl_path();

    tokio::time::timeout(
        secs(30),
        tokio::process::Command::new(&bin)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("grpcurl {args:?} did not finish in 30 s"))
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Runs grpcurl, asserts success, returns stdout.
async fn grpcurl_ok(args: &[&str]) -> String {
    let out = grpcurl(args).await;
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// grpcurl prints one JSON document per response message.
fn json_documents(text: &str) -> Vec<Json> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Json>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("grpcurl output is not JSON ({e}):\n{text}"))
}

fn json_one(text: &str) -> Json {
    let mut docs = json_documents(text);
    assert_eq!(docs.len(), 1, "expected one JSON document:\n{text}");
    docs.remove(0)
}

#[tokio::test]
async fn grpcurl_lists_services_by_reflection_on_both_servers() {
    let app = TestApp::spawn().await;
    let cp = app.control_planes[0].grpc_addr.to_string();

    let services = grpcurl_ok(&["-plaintext", &cp, "list"]).await;
    let services: Vec<&str> = services.lines().map(str::trim).collect();
    for s in ["ticketmax.jobs.v1.JobService", "grpc.health.v1.Health"] {
        assert!(
            services.contains(&s),
            "control plane: `grpcurl list` lacks {s}: {services:?}"
        );
    }

    let methods = grpcurl_ok(&["-plaintext", &cp, "list", "ticketmax.jobs.v1.JobService"]).await;
    for m in [
        "GetStatus",
        "ListJobs",
        "GetJob",
        "TriggerJob",
        "GetRun",
        "ListRuns",
        "WatchRun",
        "CancelRun",
        "CancelRuns",
        "PauseJob",
        "ResumeJob",
        "UpdateJob",
        "ListReports",
        "GetReport",
    ] {
        let full = format!("ticketmax.jobs.v1.JobService.{m}");
        assert!(
            methods.lines().any(|l| l.trim() == full),
            "{full} not listed:\n{methods}"
        );
    }
    let describe = grpcurl_ok(&["-plaintext", &cp, "describe", "ticketmax.jobs.v1.Run"]).await;
    assert!(
        describe.contains("scheduled_for"),
        "describe Run:\n{describe}"
    );

    let health = json_one(
        &grpcurl_ok(&[
            "-plaintext",
            "-d",
            r#"{"service": ""}"#,
            &cp,
            "grpc.health.v1.Health/Check",
        ])
        .await,
    );
    assert_eq!(
        health["status"], "SERVING",
        "control plane health: {health}"
    );

    let ex = app.executors[0].addr.to_string();
    let services = grpcurl_ok(&["-plaintext", &ex, "list"]).await;
    for s in ["ticketmax.jobs.v1.Executor", "grpc.health.v1.Health"] {
        assert!(
            services.lines().any(|l| l.trim() == s),
            "executor: `grpcurl list` lacks {s}:\n{services}"
        );
    }
    let health = json_one(
        &grpcurl_ok(&[
            "-plaintext",
            "-d",
            r#"{"service": ""}"#,
            &ex,
            "grpc.health.v1.Health/Check",
        ])
        .await,
    );
    assert_eq!(health["status"], "SERVING", "executor health: {health}");
}

#[tokio::test]
async fn grpcurl_drives_the_api_with_json() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    let cp = app.control_planes[0].grpc_addr.to_string();
    let svc = "ticketmax.jobs.v1.JobService";

    let status = json_one(&grpcurl_ok(&["-plaintext", &cp, &format!("{svc}/GetStatus")]).await);
    assert_eq!(status["status"], "active", "{status}");
    let executors = status["executors"].as_array().expect("executors array");
    assert!(
        executors
            .iter()
            .any(|e| e["id"] == "ex-1" && e["live"] == true),
        "{status}"
    );

    let jobs =
        json_one(&grpcurl_ok(&["-plaintext", "-d", "{}", &cp, &format!("{svc}/ListJobs")]).await);
    let jobs = jobs["jobs"].as_array().expect("jobs array");
    assert!(
        jobs.len() >= 32,
        "ListJobs via grpcurl: {} jobs",
        jobs.len()
    );
    let cancel = jobs
        .iter()
        .find(|j| j["name"] == CANCEL_EXPIRED)
        .expect("cancel-expired-bookings listed");
    assert!(
        cancel["schedule"].is_string() && cancel["nextFireTime"].is_string(),
        "{cancel}"
    );

    let key = format!("grpcurl-{}", uuid::Uuid::new_v4());
    let req = serde_json::json!({ "job": CANCEL_EXPIRED, "idempotencyKey": key, "params": { "batch_size": 100 } });
    let run = json_one(
        &grpcurl_ok(&[
            "-plaintext",
            "-d",
            &req.to_string(),
            &cp,
            &format!("{svc}/TriggerJob"),
        ])
        .await,
    );
    let run_id = run["id"].as_str().expect("run id").to_owned();
    assert_eq!(run["job"], CANCEL_EXPIRED);
    assert_eq!(run["trigger"], "TRIGGER_MANUAL", "{run}");

    // The stream ends when the run ends; each message is one JSON document.
    let watch_req = serde_json::json!({ "runId": run_id }).to_string();
    let events = json_documents(
        &grpcurl_ok(&[
            "-plaintext",
            "-d",
            &watch_req,
            &cp,
            &format!("{svc}/WatchRun"),
        ])
        .await,
    );
    assert!(!events.is_empty(), "WatchRun via grpcurl printed no event");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| match &e["seq"] {
            Json::String(s) => s.parse().expect("seq"),
            Json::Number(n) => n.as_u64().expect("seq"),
            other => panic!("seq {other}"),
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "seq via grpcurl"
    );
    let last = events.last().unwrap();
    assert_eq!(
        last["state"]["state"], "RUN_STATE_SUCCEEDED",
        "last event {last}"
    );

    let got = json_one(
        &grpcurl_ok(&[
            "-plaintext",
            "-d",
            &watch_req,
            &cp,
            &format!("{svc}/GetRun"),
        ])
        .await,
    );
    assert_eq!(got["id"], run_id.as_str());
    assert_eq!(got["state"], "RUN_STATE_SUCCEEDED", "{got}");
    assert_eq!(got["summary"]["cancelled"], 0, "summary via grpcurl: {got}");
    assert!(got["finishedAt"].is_string(), "{got}");

    // Errors come back as gRPC codes.
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name": "no/such-job"}"#,
        &cp,
        &format!("{svc}/GetJob"),
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NotFound"),
        "GetJob(unknown) via grpcurl: {err}"
    );
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name": "booking-cleanup/cancel-expired-bookings", "schedule": "not a cron"}"#,
        &cp,
        &format!("{svc}/UpdateJob"),
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument"),
        "UpdateJob(bad cron) via grpcurl: {err}"
    );
}
