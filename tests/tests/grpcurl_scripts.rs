//! The operator scripts in `clients/grpcurl/`, run as an operator would (bash, the real grpcurl,
//! server reflection only) against a spawned control plane and executor.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value as Json;
use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CANCEL_EXPIRED;
/// Once a year: no tick of the job fires during a test.
const QUIET: &str = "0 0 1 1 *";

/// Seed trigger scripts and the job each one triggers.
const SEED_SCRIPTS: &[(&str, &str)] = &[
    (
        "payment-cleanup.sh",
        "payment-cleanup/cleanup-abandoned-payments",
    ),
    (
        "booking-cleanup.sh",
        "booking-cleanup/cancel-expired-bookings",
    ),
    ("event-archive.sh", "event-management/archive-past-events"),
    ("daily-report.sh", "analytics/generate-daily-analytics"),
    ("temp-files.sh", "data-cleanup/clean-temporary-files"),
    (
        "weekly-newsletter.sh",
        "notifications/send-weekly-newsletter",
    ),
];
const OTHER_SCRIPTS: &[&str] = &["status.sh", "trigger.sh", "watch.sh", "runs.sh"];

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("clients")
        .join("grpcurl")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// grpcurl prints one JSON document per response message.
    fn documents(&self) -> Vec<Json> {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter::<Json>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("output is not JSON ({e}):\n{self:?}"))
    }

    fn json(&self) -> Json {
        let mut docs = self.documents();
        assert_eq!(docs.len(), 1, "expected one JSON document:\n{self:?}");
        docs.remove(0)
    }
}

/// Runs `clients/grpcurl/<script> args...` with `env` on top of a clean TICKETMAX_* environment.
async fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let path = scripts_dir().join(name);
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(args)
        .env_remove("TICKETMAX_GRPC_ADDR")
        .env_remove("TICKETMAX_TOKEN")
        .env_remove("TICKETMAX_GRPCURL_FLAGS")
        .env_remove("TICKETMAX_PAGE_SIZE")
        .env_remove("TICKETMAX_PAGE_TOKEN")
        .env("TICKETMAX_GRPCURL", grpcurl_path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn script_at(app: &TestApp, name: &str, args: &[&str]) -> Out {
    let addr = app.control_planes[0].grpc_addr.to_string();
    script(name, args, &[("TICKETMAX_GRPC_ADDR", &addr)]).await
}

async fn script_ok(app: &TestApp, name: &str, args: &[&str]) -> Out {
    let out = script_at(app, name, args).await;
    assert_eq!(out.code, 0, "{name} {args:?} failed:\n{out:?}");
    out
}

fn assert_fresh_run(run: &Json, job: &str, what: &str) {
    assert_eq!(run["job"], job, "{what}: wrong job: {run:#}");
    assert!(
        run["id"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: no run id: {run:#}"
    );
    let state = run["state"].as_str().unwrap_or_default();
    assert!(
        [
            "RUN_STATE_QUEUED",
            "RUN_STATE_RUNNING",
            "RUN_STATE_SUCCEEDED",
            "RUN_STATE_FAILED",
            "RUN_STATE_CANCELLED",
            "RUN_STATE_TIMED_OUT",
            "RUN_STATE_SKIPPED",
        ]
        .contains(&state),
        "{what}: state {state:?} is not QUEUED or later: {run:#}"
    );
    assert_eq!(run["trigger"], "TRIGGER_MANUAL", "{what}: {run:#}");
}

#[test]
fn every_script_is_known_executable_and_strict() {
    let dir = scripts_dir();
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".sh") || name == "_common.sh" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#!/usr/bin/env bash"),
            "{name}: no bash shebang"
        );
        assert!(
            text.contains("set -euo pipefail"),
            "{name}: not set -euo pipefail"
        );
        assert!(
            text.contains("_common.sh"),
            "{name}: does not use _common.sh"
        );
        assert!(!text.contains(".proto"), "{name}: must use reflection only");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{name} is not executable");
        found.insert(name);
    }
    let expected: BTreeSet<String> = SEED_SCRIPTS
        .iter()
        .map(|(s, _)| s.to_string())
        .chain(OTHER_SCRIPTS.iter().map(|s| s.to_string()))
        .collect();
    assert_eq!(
        found,
        expected,
        "scripts in {} differ from the tested set",
        dir.display()
    );
    assert!(
        dir.join("README.md").is_file(),
        "clients/grpcurl/README.md is missing"
    );
}

#[tokio::test]
async fn seed_trigger_scripts_create_runs_of_their_jobs_and_honour_idempotency_keys() {
    let app = TestApp::spawn().await;

    for (name, job) in SEED_SCRIPTS {
        let run = script_ok(&app, name, &[]).await.json();
        assert_fresh_run(&run, job, name);
        let id = run["id"].as_str().unwrap();
        let stored = app.get_run(id).await;
        assert_eq!(stored.job, *job, "{name}: GetRun disagrees");

        // With an idempotency key: a repeat returns the same run.
        let key = format!("grpcurl-{name}");
        let first = script_ok(&app, name, &[&key]).await.json();
        assert_fresh_run(&first, job, name);
        assert_eq!(first["idempotencyKey"], key.as_str(), "{name}: {first:#}");
        let second = script_ok(&app, name, &[&key]).await.json();
        assert_eq!(
            second["id"], first["id"],
            "{name}: a repeated key made a new run"
        );

        // Too many arguments is a usage error.
        let out = script_at(&app, name, &["a", "b"]).await;
        assert_eq!(out.code, 2, "{name} a b:\n{out:?}");
        assert!(out.stderr.contains("usage:"), "{out:?}");
    }
}

#[tokio::test]
async fn status_trigger_watch_and_runs_scripts() {
    let app = TestApp::spawn().await;
    app.set_schedule(CANCEL_EXPIRED, QUIET).await;

    // status.sh: the whole GetStatus answer.
    let status = script_ok(&app, "status.sh", &[]).await.json();
    assert_eq!(status["status"], "active", "{status:#}");
    assert_eq!(status["role"], "leader", "{status:#}");
    let jobs = status["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 32, "{status:#}");
    for (name, _) in ticketmax_e2e::schedule::JOB_TABLE {
        assert!(
            jobs.iter().any(|j| j["name"] == *name),
            "status.sh lacks {name}"
        );
    }
    let executor_id = app.executors[0].executor_id.as_str();
    assert!(
        status["executors"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["id"] == executor_id && e["live"] == true)),
        "{status:#}"
    );

    // trigger.sh: any job, with a key.
    let run = script_ok(&app, "trigger.sh", &[CANCEL_EXPIRED, "watch-me"])
        .await
        .json();
    assert_fresh_run(&run, CANCEL_EXPIRED, "trigger.sh");
    assert_eq!(run["idempotencyKey"], "watch-me");
    let run_id = run["id"].as_str().unwrap().to_string();

    // watch.sh: every event until the run ends, the last one its final state.
    let events = script_ok(&app, "watch.sh", &[&run_id]).await.documents();
    assert!(events.len() >= 3, "{events:#?}");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| {
            // grpcurl prints uint64 as a string.
            e["seq"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| e["seq"].as_u64())
                .unwrap_or_else(|| panic!("event without seq: {e:#}"))
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{events:#?}"
    );
    assert!(
        events.iter().all(|e| e["runId"] == run_id.as_str()),
        "{events:#?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["state"]["state"], "RUN_STATE_SUCCEEDED", "{events:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["state"]["state"] == "RUN_STATE_RUNNING"),
        "{events:#?}"
    );
    assert_eq!(app.get_run(&run_id).await.state(), RunState::Succeeded);

    // watch.sh RUN_ID AFTER_SEQ: only later events.
    let after = (seqs.len() - 1).to_string();
    let tail = script_ok(&app, "watch.sh", &[&run_id, &after])
        .await
        .documents();
    assert_eq!(tail.len(), 1, "{tail:#?}");
    assert_eq!(tail[0]["state"]["state"], "RUN_STATE_SUCCEEDED");

    // runs.sh JOB / runs.sh.
    let page = script_ok(&app, "runs.sh", &[CANCEL_EXPIRED]).await.json();
    let runs = page["runs"].as_array().expect("runs");
    assert!(runs.iter().all(|r| r["job"] == CANCEL_EXPIRED), "{page:#}");
    let mine = runs
        .iter()
        .find(|r| r["id"] == run_id.as_str())
        .unwrap_or_else(|| panic!("runs.sh lacks {run_id}: {page:#}"));
    assert_eq!(mine["state"], "RUN_STATE_SUCCEEDED");
    assert!(mine["summary"]["cancelled"].is_number(), "{mine:#}");
    let all = script_ok(&app, "runs.sh", &[]).await.json();
    assert!(
        all["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == run_id.as_str())),
        "{all:#}"
    );

    // Paging through TICKETMAX_PAGE_SIZE / TICKETMAX_PAGE_TOKEN.
    script_ok(&app, "trigger.sh", &[CANCEL_EXPIRED]).await;
    let addr = app.control_planes[0].grpc_addr.to_string();
    let env = [
        ("TICKETMAX_GRPC_ADDR", addr.as_str()),
        ("TICKETMAX_PAGE_SIZE", "1"),
    ];
    let first = script("runs.sh", &[CANCEL_EXPIRED], &env).await;
    assert_eq!(first.code, 0, "{first:?}");
    let first = first.json();
    assert_eq!(first["runs"].as_array().map(Vec::len), Some(1), "{first:#}");
    let token = first["nextPageToken"]
        .as_str()
        .expect("a next page token")
        .to_string();
    assert!(!token.is_empty(), "{first:#}");
    let env2 = [
        ("TICKETMAX_GRPC_ADDR", addr.as_str()),
        ("TICKETMAX_PAGE_SIZE", "1"),
        ("TICKETMAX_PAGE_TOKEN", token.as_str()),
    ];
    let second = script("runs.sh", &[CANCEL_EXPIRED], &env2).await;
    assert_eq!(second.code, 0, "{second:?}");
    let second = second.json();
    assert_ne!(
        second["runs"][0]["id"], first["runs"][0]["id"],
        "{second:#}"
    );

    // Errors: grpcurl's exit code (64 + NOT_FOUND = 69) and message; usage errors exit 2.
    let out = script_at(&app, "trigger.sh", &["nope/no-such-job"]).await;
    assert_eq!(out.code, 69, "{out:?}");
    assert!(out.stderr.contains("no job named"), "{out:?}");
    let out = script_at(&app, "trigger.sh", &[]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("usage: trigger.sh JOB"), "{out:?}");
    let out = script_at(&app, "watch.sh", &[&run_id, "x"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let out = script_at(&app, "watch.sh", &["01a22000-0000-7000-8000-000000000000"]).await;
    assert_eq!(out.code, 69, "{out:?}");
    // A job name with JSON-special characters is escaped, not injected.
    let out = script_at(&app, "trigger.sh", &["a\"b\\c"]).await;
    assert_eq!(out.code, 69, "{out:?}");
}

/// The environment handling of `_common.sh`, checked with a stand-in grpcurl that prints its
/// arguments.
#[tokio::test]
async fn scripts_pass_address_token_and_flags_to_grpcurl() {
    let dir = std::env::temp_dir().join(format!("tm-fake-grpcurl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("grpcurl");
    std::fs::write(&fake, "#!/usr/bin/env bash\nprintf '%s\\n' \"$@\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_string_lossy().into_owned();

    let args = |out: &Out| -> Vec<String> {
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout.lines().map(str::to_string).collect()
    };

    // Defaults: -plaintext, 127.0.0.1:50051, no authorization header.
    let out = script("status.sh", &[], &[("TICKETMAX_GRPCURL", &fake)]).await;
    let a = args(&out);
    assert!(a.contains(&"-plaintext".to_string()), "{a:?}");
    assert!(a.contains(&"127.0.0.1:50051".to_string()), "{a:?}");
    assert!(
        a.contains(&"ticketmax.jobs.v1.JobService/GetStatus".to_string()),
        "{a:?}"
    );
    assert!(!a.iter().any(|x| x.contains("authorization")), "{a:?}");

    // Address, token and flags from the environment.
    let out = script(
        "trigger.sh",
        &["data-cleanup/clean-cache", "key-1"],
        &[
            ("TICKETMAX_GRPCURL", &fake),
            ("TICKETMAX_GRPC_ADDR", "jobs.internal:443"),
            ("TICKETMAX_TOKEN", "s3cr3t"),
            ("TICKETMAX_GRPCURL_FLAGS", "-cacert /etc/ca.pem"),
        ],
    )
    .await;
    let a = args(&out);
    assert!(!a.contains(&"-plaintext".to_string()), "{a:?}");
    let pos = a.iter().position(|x| x == "-cacert").expect("-cacert");
    assert_eq!(a[pos + 1], "/etc/ca.pem");
    let h = a.iter().position(|x| x == "-H").expect("-H");
    assert_eq!(a[h + 1], "authorization: Bearer s3cr3t");
    assert!(a.contains(&"jobs.internal:443".to_string()), "{a:?}");
    let d = a.iter().position(|x| x == "-d").expect("-d");
    let req: Json = serde_json::from_str(&a[d + 1]).expect("request is JSON");
    assert_eq!(req["job"], "data-cleanup/clean-cache");
    assert_eq!(req["idempotency_key"], "key-1");
    assert_eq!(a.last().unwrap(), "ticketmax.jobs.v1.JobService/TriggerJob");

    let _ = std::fs::remove_dir_all(&dir);
}

// -------------------------------------------------------------------------------------------
// A control plane on SQLite that requires bearer tokens (TICKETMAX_API_TOKENS), or serves TLS
// -------------------------------------------------------------------------------------------

use ticketmax_e2e::tokens::{OPERATOR_TOKEN, VIEWER_TOKEN};

#[tokio::test]
async fn scripts_send_the_bearer_token_and_grpcurl_reports_auth_errors() {
    let app = TestApp::builder()
        .sqlite_store()
        .executors(0)
        .viewer_and_operator()
        .spawn()
        .await;
    let addr = app.control_planes[0].grpc_addr.to_string();
    let env = |token: Option<&'static str>| {
        let mut env = vec![("TICKETMAX_GRPC_ADDR", addr.clone())];
        if let Some(t) = token {
            env.push(("TICKETMAX_TOKEN", t.to_string()));
        }
        env
    };
    let run = |name: &'static str, args: Vec<&'static str>, env: Vec<(&'static str, String)>| async move {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        script(name, &args, &env).await
    };

    // No token: UNAUTHENTICATED (grpcurl exits 64 + 16).
    let out = run("status.sh", vec![], env(None)).await;
    assert_eq!(out.code, 80, "{out:?}");
    assert!(out.stderr.contains("Unauthenticated"), "{out:?}");

    // Viewer: reads, may not trigger (PERMISSION_DENIED, 64 + 7).
    let out = run("status.sh", vec![], env(Some(VIEWER_TOKEN))).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["jobs"].as_array().map(Vec::len), Some(32));
    let out = run("runs.sh", vec![], env(Some(VIEWER_TOKEN))).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = run("booking-cleanup.sh", vec![], env(Some(VIEWER_TOKEN))).await;
    assert_eq!(out.code, 71, "{out:?}");
    assert!(out.stderr.contains("PermissionDenied"), "{out:?}");

    // Operator: triggers.
    let out = run("booking-cleanup.sh", vec![], env(Some(OPERATOR_TOKEN))).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_fresh_run(
        &out.json(),
        CANCEL_EXPIRED,
        "booking-cleanup.sh with the operator token",
    );
}

#[tokio::test]
async fn scripts_speak_tls_through_grpcurl_flags() {
    let app = TestApp::builder()
        .sqlite_store()
        .executors(0)
        .tls()
        .spawn()
        .await;
    let ca = app.ca_file().to_string_lossy().into_owned();
    let addr = format!("localhost:{}", app.control_planes[0].grpc_addr.port());
    let flags = format!("-cacert {ca}");
    let tls_env = [
        ("TICKETMAX_GRPC_ADDR", addr.as_str()),
        ("TICKETMAX_GRPCURL_FLAGS", flags.as_str()),
    ];

    let status = eventually("the TLS control plane to answer", secs(60), || async {
        let out = script("status.sh", &[], &tls_env).await;
        (out.code == 0).then_some(out)
    })
    .await;
    assert_eq!(
        status.json()["jobs"].as_array().map(Vec::len),
        Some(32),
        "{status:?}"
    );
    let out = script("temp-files.sh", &[], &tls_env).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_fresh_run(
        &out.json(),
        "data-cleanup/clean-temporary-files",
        "temp-files.sh over TLS",
    );

    // The default -plaintext cannot talk to a TLS server.
    let out = script("status.sh", &[], &[("TICKETMAX_GRPC_ADDR", addr.as_str())]).await;
    assert_ne!(out.code, 0, "{out:?}");
}
