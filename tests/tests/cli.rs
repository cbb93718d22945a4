//! `ticketmaxctl` against the real control plane and executor: output, JSON, exit codes.
//!
//! The binary is `<target>/debug/ticketmaxctl` (`cargo build --workspace --bins` builds it;
//! `./scripts/test.sh` does so before the tests).

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value as Json;
use ticketmax_e2e::schedule::JOB_TABLE;
use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CANCEL_EXPIRED;
use ticketmax_e2e::jobs::NEWSLETTER;
/// Once a year: no tick of the job fires during a test.
const QUIET: &str = "0 0 1 1 *";

struct Ctl {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Ctl {
    fn json(&self) -> Json {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self:?}"))
    }

    /// stderr is one line starting with "error: ".
    fn assert_one_error_line(&self) {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line on stderr:\n{self:?}"
        );
        assert!(lines[0].starts_with("error: "), "{self:?}");
    }
}

fn ctl_bin() -> PathBuf {
    binary("ticketmaxctl")
}

/// Runs ticketmaxctl against `url` (None: the default, from nothing in the environment).
async fn ctl_at(url: Option<&str>, args: &[&str]) -> Ctl {
    ctl_with_token(url, args, None).await
}

/// Runs ticketmaxctl with `TICKETMAX_TOKEN` set to `token`.
async fn ctl_with_token(url: Option<&str>, args: &[&str], token: Option<&str>) -> Ctl {
    let mut cmd = tokio::process::Command::new(ctl_bin());
    cmd.args(args)
        .env_remove("TICKETMAX_CONTROL_PLANE_URL")
        .env_remove("TICKETMAX_TOKEN")
        .env_remove("TICKETMAX_OUTPUT")
        .env_remove("TICKETMAX_CA_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = url {
        cmd.env("TICKETMAX_CONTROL_PLANE_URL", url);
    }
    if let Some(token) = token {
        cmd.env("TICKETMAX_TOKEN", token);
    }
    let out = tokio::time::timeout(secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("ticketmaxctl {args:?} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", ctl_bin().display()));
    Ctl {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ctl(app: &TestApp, args: &[&str]) -> Ctl {
    ctl_at(Some(&app.control_planes[0].url()), args).await
}

async fn ctl_ok(app: &TestApp, args: &[&str]) -> Ctl {
    let out = ctl(app, args).await;
    assert_eq!(out.code, 0, "ticketmaxctl {args:?} failed:\n{out:?}");
    out
}

#[tokio::test]
async fn status_lists_every_job_the_executor_and_the_role_as_table_and_json() {
    let app = TestApp::spawn().await;
    let executor_id = app.executors[0].executor_id.clone();

    let out = ctl_ok(&app, &["status"]).await;
    let header = out.stdout.lines().next().unwrap_or_default();
    for col in [
        "JOB",
        "SCHEDULE",
        "TIMEZONE",
        "ENABLED",
        "LAST RUN",
        "NEXT FIRE",
    ] {
        assert!(header.contains(col), "status header lacks {col}:\n{out:?}");
    }
    let job_rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            JOB_TABLE
                .iter()
                .any(|(name, _)| l.starts_with(&format!("{name} ")))
        })
        .collect();
    assert_eq!(job_rows.len(), 32, "status must list the 32 jobs:\n{out:?}");
    for (name, _) in JOB_TABLE {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name} "))),
            "status lacks {name}:\n{out:?}"
        );
    }
    assert!(
        out.stdout.contains(&executor_id),
        "status lacks the executor:\n{out:?}"
    );
    assert!(
        out.stdout.contains("leader"),
        "status lacks the role:\n{out:?}"
    );
    assert!(out.stdout.contains("32 job(s)"), "{out:?}");

    // --output json: one document, the same facts.
    let v = ctl_ok(&app, &["--output", "json", "status"]).await.json();
    assert_eq!(v["status"], "active", "{v:#}");
    assert_eq!(v["role"], "leader", "{v:#}");
    let jobs = v["jobs"].as_array().expect("jobs array");
    assert_eq!(jobs.len(), 32, "{v:#}");
    for (name, _) in JOB_TABLE {
        let job = jobs
            .iter()
            .find(|j| j["name"] == *name)
            .unwrap_or_else(|| panic!("json status lacks {name}"));
        assert_eq!(job["enabled"], true, "{job:#}");
        assert!(job["next_fire_time"].is_string(), "{job:#}");
        assert!(
            job["schedule"].as_str().is_some_and(|s| !s.is_empty()),
            "{job:#}"
        );
    }
    let executors = v["executors"].as_array().expect("executors array");
    assert!(
        executors
            .iter()
            .any(|e| e["id"] == executor_id.as_str() && e["live"] == true),
        "{v:#}"
    );

    // The env var picks the format too, and the other listing commands parse.
    let jobs = ctl_ok(&app, &["-o", "json", "jobs"]).await.json();
    assert_eq!(jobs.as_array().map(Vec::len), Some(32), "{jobs:#}");
    let jobs = ctl_ok(
        &app,
        &["-o", "json", "jobs", "--service", "booking-cleanup"],
    )
    .await
    .json();
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert!(names.contains(&CANCEL_EXPIRED), "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("booking-cleanup/")),
        "{names:?}"
    );
    let job = ctl_ok(&app, &["-o", "json", "job", NEWSLETTER])
        .await
        .json();
    assert_eq!(job["name"], NEWSLETTER);
    assert_eq!(job["overlap_policy"], "OVERLAP_POLICY_SKIP", "{job:#}");
    let reports = ctl_ok(&app, &["-o", "json", "reports"]).await.json();
    assert!(reports.is_array(), "{reports:#}");
    let runs = ctl_ok(&app, &["-o", "json", "runs", "--state", "failed"])
        .await
        .json();
    assert!(runs.is_array(), "{runs:#}");

    // Human views of one job.
    let out = ctl_ok(&app, &["job", NEWSLETTER]).await;
    assert!(
        out.stdout.contains(NEWSLETTER) && out.stdout.contains("0 10 * * 1"),
        "{out:?}"
    );
    let out = ctl_ok(&app, &["jobs"]).await;
    assert!(out.stdout.lines().count() >= 33, "{out:?}");
}

#[tokio::test]
async fn trigger_wait_follows_the_run_to_success_and_prints_the_summary() {
    let app = TestApp::spawn().await;
    app.set_schedule(CANCEL_EXPIRED, QUIET).await;

    let out = ctl_ok(&app, &["trigger", CANCEL_EXPIRED, "--wait"]).await;
    assert!(
        out.stderr.is_empty() || !out.stderr.contains("error"),
        "{out:?}"
    );
    let end = out
        .stdout
        .lines()
        .find(|l| l.starts_with("run ") && l.contains(" SUCCEEDED in "))
        .unwrap_or_else(|| panic!("no 'run ... SUCCEEDED in ...' line:\n{out:?}"));
    let run_id = end.split_whitespace().nth(1).unwrap().to_string();
    let summary_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line:\n{out:?}"));
    let summary: Json = serde_json::from_str(summary_line.trim_start_matches("summary: "))
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{out:?}"));
    assert!(
        summary.get("cancelled").is_some(),
        "summary lacks 'cancelled':\n{out:?}"
    );
    // The followed events were printed: at least the RUNNING state change.
    assert!(out.stdout.contains("state RUNNING"), "{out:?}");

    // The server agrees.
    let run = app.get_run(&run_id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{run:?}");
    assert_eq!(ticketmax_e2e::summary(&run), summary);

    // JSON mode: one document, the final run.
    let v = ctl_ok(
        &app,
        &[
            "-o",
            "json",
            "trigger",
            CANCEL_EXPIRED,
            "--wait",
            "--key",
            "k-1",
        ],
    )
    .await
    .json();
    assert_eq!(v["state"], "RUN_STATE_SUCCEEDED", "{v:#}");
    assert_eq!(v["job"], CANCEL_EXPIRED, "{v:#}");
    assert_eq!(v["idempotency_key"], "k-1", "{v:#}");
    assert!(v["summary"]["cancelled"].is_number(), "{v:#}");
    let second_id = v["id"].as_str().unwrap().to_string();
    // The same key returns the same run.
    let again = ctl_ok(
        &app,
        &["-o", "json", "trigger", CANCEL_EXPIRED, "--key", "k-1"],
    )
    .await
    .json();
    assert_eq!(again["id"], second_id.as_str(), "{again:#}");

    // Params are passed through as JSON values.
    let v = ctl_ok(
        &app,
        &[
            "-o",
            "json",
            "trigger",
            CANCEL_EXPIRED,
            "--param",
            "batch_size=5",
            "--param",
            "pause_ms=0",
            "--wait",
        ],
    )
    .await
    .json();
    assert_eq!(
        v["params"],
        serde_json::json!({"batch_size": 5, "pause_ms": 0}),
        "{v:#}"
    );

    // watch: replays the stored events of a finished run and exits 0.
    let out = ctl_ok(&app, &["watch", &run_id]).await;
    assert!(out.stdout.contains("state SUCCEEDED"), "{out:?}");
    assert!(out.stdout.contains("summary: "), "{out:?}");
    let out = ctl_ok(&app, &["-o", "json", "watch", &run_id]).await;
    let events: Vec<Json> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}")))
        .collect();
    assert!(events.len() >= 3, "{out:?}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{out:?}");
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "state", "{last:#}");
    assert_eq!(last["state"]["state"], "RUN_STATE_SUCCEEDED", "{last:#}");
    assert!(events.iter().all(|e| e["run_id"] == run_id.as_str()));
    // --after-seq resumes after that event.
    let after = seqs.len() as u64 - 1;
    let out = ctl_ok(
        &app,
        &[
            "-o",
            "json",
            "watch",
            &run_id,
            "--after-seq",
            &after.to_string(),
        ],
    )
    .await;
    let later: Vec<Json> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(later.len(), 1, "{out:?}");
    assert_eq!(later[0]["seq"].as_u64(), Some(seqs.len() as u64));

    // run and runs show it.
    let out = ctl_ok(&app, &["run", &run_id]).await;
    assert!(
        out.stdout.contains("SUCCEEDED") && out.stdout.contains("cancelled"),
        "{out:?}"
    );
    let v = ctl_ok(&app, &["-o", "json", "run", &run_id]).await.json();
    assert_eq!(v["id"], run_id.as_str());
    assert_eq!(v["trigger"], "TRIGGER_MANUAL");
    let out = ctl_ok(
        &app,
        &["runs", "--job", CANCEL_EXPIRED, "--state", "succeeded"],
    )
    .await;
    assert!(out.stdout.contains(&run_id), "{out:?}");
    let runs = ctl_ok(
        &app,
        &[
            "-o",
            "json",
            "runs",
            "--job",
            CANCEL_EXPIRED,
            "--limit",
            "2",
        ],
    )
    .await
    .json();
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(2),
        "--limit 2: {runs:#}"
    );

    // Cancelling a run that has ended is refused: FAILED_PRECONDITION, exit 4.
    let out = ctl(&app, &["cancel", &run_id]).await;
    assert_eq!(out.code, 4, "{out:?}");
    out.assert_one_error_line();
    assert!(out.stderr.contains("FAILED_PRECONDITION"), "{out:?}");
}

#[tokio::test]
async fn unknown_names_exit_3_with_a_clear_message() {
    let app = TestApp::spawn().await;

    let out = ctl(&app, &["trigger", "nope/no-such-job"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    out.assert_one_error_line();
    assert!(
        out.stderr.contains("no job named 'nope/no-such-job'"),
        "{out:?}"
    );
    assert!(out.stderr.contains("NOT_FOUND"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    for args in [
        vec!["trigger", "nope/no-such-job", "--wait"],
        vec!["job", "nope/no-such-job"],
        vec!["pause", "nope/no-such-job"],
        vec!["update", "nope/no-such-job", "--max-retries", "1"],
        vec!["run", "01a22000-0000-7000-8000-000000000000"],
        vec!["watch", "01a22000-0000-7000-8000-000000000000"],
        vec!["cancel", "01a22000-0000-7000-8000-000000000000"],
        vec!["report", "01a22000-0000-7000-8000-000000000000"],
        vec!["-o", "json", "runs", "--job", "nope/no-such-job"],
    ] {
        let out = ctl(&app, &args).await;
        assert_eq!(out.code, 3, "ticketmaxctl {args:?}:\n{out:?}");
        out.assert_one_error_line();
        assert!(out.stderr.contains("NOT_FOUND"), "{args:?}:\n{out:?}");
    }
}

#[tokio::test]
async fn update_validates_schedules_and_pause_resume_flip_enabled() {
    let app = TestApp::spawn().await;
    let before = app.get_job(NEWSLETTER).await;

    // A bad schedule: INVALID_ARGUMENT, exit 4, nothing changed.
    for args in [
        vec!["update", NEWSLETTER, "--schedule", "61 * * * *"],
        vec!["update", NEWSLETTER, "--schedule", "not a cron"],
        vec!["update", NEWSLETTER, "--timezone", "Mars/Olympus_Mons"],
        vec![
            "update",
            NEWSLETTER,
            "--schedule",
            "*/5 * * * *",
            "--timezone",
            "Nowhere/Else",
        ],
        vec!["update", NEWSLETTER, "--timeout-seconds", "0"],
    ] {
        let out = ctl(&app, &args).await;
        assert_eq!(out.code, 4, "ticketmaxctl {args:?}:\n{out:?}");
        out.assert_one_error_line();
        assert!(
            out.stderr.contains("INVALID_ARGUMENT"),
            "{args:?}:\n{out:?}"
        );
    }
    let after = app.get_job(NEWSLETTER).await;
    assert_eq!(after.schedule, before.schedule);
    assert_eq!(after.timezone, before.timezone);
    assert_eq!(after.timeout_seconds, before.timeout_seconds);

    // Nothing to change is a usage error.
    let out = ctl(&app, &["update", NEWSLETTER]).await;
    assert_eq!(out.code, 2, "{out:?}");
    out.assert_one_error_line();

    // A good update changes exactly what was given.
    let v = ctl_ok(
        &app,
        &[
            "-o",
            "json",
            "update",
            NEWSLETTER,
            "--schedule",
            "30 9 * * 1",
            "--timezone",
            "Africa/Lagos",
            "--overlap",
            "queue-one",
            "--max-retries",
            "7",
        ],
    )
    .await
    .json();
    assert_eq!(v["schedule"], "30 9 * * 1", "{v:#}");
    let job = app.get_job(NEWSLETTER).await;
    assert_eq!(job.schedule, "30 9 * * 1");
    assert_eq!(job.timezone, "Africa/Lagos");
    assert_eq!(job.overlap_policy(), v1::OverlapPolicy::QueueOne);
    assert_eq!(job.max_retries, 7);
    assert_eq!(job.timeout_seconds, before.timeout_seconds);

    // pause / resume.
    let out = ctl_ok(&app, &["pause", NEWSLETTER]).await;
    assert!(out.stdout.contains("paused"), "{out:?}");
    assert!(
        !app.get_job(NEWSLETTER).await.enabled,
        "pause left the job enabled"
    );
    let v = ctl_ok(&app, &["-o", "json", "job", NEWSLETTER])
        .await
        .json();
    assert_eq!(v["enabled"], false, "{v:#}");
    assert_eq!(
        v["next_fire_time"],
        Json::Null,
        "a paused job has no next fire: {v:#}"
    );
    let status = ctl_ok(&app, &["-o", "json", "status"]).await.json();
    let row = status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == NEWSLETTER)
        .cloned()
        .unwrap();
    assert_eq!(row["enabled"], false, "{row:#}");

    let v = ctl_ok(&app, &["-o", "json", "resume", NEWSLETTER])
        .await
        .json();
    assert_eq!(v["enabled"], true, "{v:#}");
    assert!(
        app.get_job(NEWSLETTER).await.enabled,
        "resume left the job paused"
    );

    // --disable / --enable do the same through update.
    ctl_ok(&app, &["update", NEWSLETTER, "--disable"]).await;
    assert!(!app.get_job(NEWSLETTER).await.enabled);
    ctl_ok(&app, &["update", NEWSLETTER, "--enable"]).await;
    assert!(app.get_job(NEWSLETTER).await.enabled);
}

#[tokio::test]
async fn a_cancelled_run_makes_watch_exit_1_and_wait_times_out_without_executors() {
    // No executor: a triggered run stays QUEUED.
    let app = TestApp::builder().executors(0).spawn().await;
    app.set_schedule(CANCEL_EXPIRED, QUIET).await;

    let out = ctl(
        &app,
        &["trigger", CANCEL_EXPIRED, "--wait", "--timeout", "2"],
    )
    .await;
    assert_eq!(
        out.code, 1,
        "--wait on a run that cannot start must time out:\n{out:?}"
    );
    assert!(out.stderr.contains("did not end within"), "{out:?}");
    out.assert_one_error_line();
    let run_id = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no run id:\n{out:?}"))
        .to_string();
    assert_eq!(app.get_run(&run_id).await.state(), RunState::Queued);

    let out = ctl_ok(&app, &["cancel", &run_id, "--reason", "test"]).await;
    assert!(out.stdout.contains("CANCELLED"), "{out:?}");
    assert_eq!(app.get_run(&run_id).await.state(), RunState::Cancelled);

    let out = ctl(&app, &["watch", &run_id]).await;
    assert_eq!(out.code, 1, "watch of a cancelled run exits 1:\n{out:?}");
    assert!(out.stdout.contains("CANCELLED"), "{out:?}");
    out.assert_one_error_line();
    assert!(out.stderr.contains("ended CANCELLED"), "{out:?}");

    // cancel-all: the count first, then the runs it counted; bad input exits with its code.
    app.update_job(UpdateJobRequest {
        name: CANCEL_EXPIRED.into(),
        overlap_policy: v1::OverlapPolicy::Allow as i32,
        ..Default::default()
    })
    .await
    .expect("overlap allowed");
    for _ in 0..3 {
        ctl_ok(&app, &["trigger", CANCEL_EXPIRED]).await;
    }
    let out = ctl_ok(&app, &["cancel-all", "--job", CANCEL_EXPIRED, "--dry-run"]).await;
    assert!(
        out.stdout.contains("3 runs match: 3 queued, 0 running"),
        "{out:?}"
    );
    assert_eq!(
        app.list_all_runs(CANCEL_EXPIRED, RunState::Queued, 100)
            .await
            .len(),
        3,
        "a dry run changes nothing"
    );
    let out = ctl(&app, &["cancel-all", "--state", "succeeded"]).await;
    assert_eq!(out.code, 4, "INVALID_ARGUMENT exits 4:\n{out:?}");
    out.assert_one_error_line();
    let out = ctl_ok(
        &app,
        &[
            "--output",
            "json",
            "cancel-all",
            "--job",
            CANCEL_EXPIRED,
            "--trigger",
            "manual",
            "--reason",
            "cli test",
        ],
    )
    .await
    .json();
    assert_eq!(
        (out["queued"].as_u64(), out["more"].as_bool()),
        (Some(3), Some(false)),
        "{out:#}"
    );
    assert!(
        app.list_all_runs(CANCEL_EXPIRED, RunState::Queued, 100)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn usage_and_connection_errors_have_their_exit_codes() {
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = ctl_at(Some(&dead), &["status"]).await;
    assert_eq!(out.code, 5, "{out:?}");
    out.assert_one_error_line();
    assert!(out.stderr.contains("cannot connect"), "{out:?}");
    // --url overrides the environment.
    let out = ctl_at(Some("http://127.0.0.1:1"), &["--url", &dead, "jobs"]).await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains(&dead), "{out:?}");

    for args in [
        vec!["--output", "xml", "status"],
        vec!["runs", "--state", "bogus"],
        vec!["runs", "--limit", "0"],
        vec!["trigger"],
        vec!["trigger", "a/b", "--param", "novalue"],
        vec!["update", "a/b", "--enable", "--disable"],
        vec!["update", "a/b", "--overlap", "sometimes"],
        vec!["watch", "x", "--after-seq", "-1"],
        vec!["frobnicate"],
        vec![],
    ] {
        let out = ctl_at(Some(&dead), &args).await;
        assert_eq!(out.code, 2, "ticketmaxctl {args:?}:\n{out:?}");
        assert!(
            out.stderr.contains("error") || out.stderr.contains("Usage"),
            "{out:?}"
        );
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
    let out = ctl_at(Some("not-a-url"), &["status"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    out.assert_one_error_line();

    // Help documents the exit codes and every subcommand has an example.
    let out = ctl_at(None, &["--help"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Exit codes:"), "{out:?}");
    for code in [
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "UNAVAILABLE",
        "UNAUTHENTICATED",
    ] {
        assert!(out.stdout.contains(code), "--help lacks {code}:\n{out:?}");
    }
    for sub in [
        "status",
        "jobs",
        "job",
        "trigger",
        "runs",
        "run",
        "watch",
        "cancel",
        "cancel-all",
        "pause",
        "resume",
        "update",
        "reports",
        "report",
    ] {
        let out = ctl_at(None, &[sub, "--help"]).await;
        assert_eq!(out.code, 0, "{sub} --help:\n{out:?}");
        assert!(
            out.stdout.contains(&format!("ticketmaxctl {sub}")),
            "{sub} --help has no example:\n{out:?}"
        );
    }
}

#[tokio::test]
async fn reports_and_report_show_what_an_analytics_run_produced() {
    use ticketmax_e2e::jobs::PAYMENT_ANALYTICS;
    let app = TestApp::spawn().await;
    app.set_schedule(PAYMENT_ANALYTICS, QUIET).await;

    let run = ctl_ok(
        &app,
        &["-o", "json", "trigger", PAYMENT_ANALYTICS, "--wait"],
    )
    .await
    .json();
    assert_eq!(run["state"], "RUN_STATE_SUCCEEDED", "{run:#}");
    let run_id = run["id"].as_str().unwrap();

    let reports = ctl_ok(
        &app,
        &["-o", "json", "reports", "--kind", "payment-analytics"],
    )
    .await
    .json();
    let reports = reports.as_array().expect("array");
    let report = reports
        .iter()
        .find(|r| r["run_id"] == run_id)
        .unwrap_or_else(|| panic!("no payment-analytics report of run {run_id}: {reports:#?}"));
    assert_eq!(report["kind"], "payment-analytics", "{report:#}");
    assert_eq!(report["job"], PAYMENT_ANALYTICS, "{report:#}");
    assert!(report["body"].is_object(), "{report:#}");
    let id = report["id"].as_str().unwrap();
    let period = report["period"].as_str().unwrap();

    let out = ctl_ok(
        &app,
        &["reports", "--kind", "payment-analytics", "--limit", "5"],
    )
    .await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(id) && l.contains(period)),
        "{out:?}"
    );
    let one = ctl_ok(&app, &["-o", "json", "report", id]).await.json();
    assert_eq!(one["id"], id);
    assert_eq!(one["body"], report["body"]);
    let out = ctl_ok(&app, &["report", id]).await;
    assert!(
        out.stdout.contains(period) && out.stdout.contains(run_id),
        "{out:?}"
    );
    // The body is printed as JSON after the header lines.
    let body_start = out.stdout.find("\n{").expect("a JSON body");
    let body: Json = serde_json::from_str(&out.stdout[body_start..]).expect("body is JSON");
    assert_eq!(body, report["body"]);
}

// -------------------------------------------------------------------------------------------
// A control plane on SQLite that requires bearer tokens (TICKETMAX_API_TOKENS), or serves TLS
// -------------------------------------------------------------------------------------------

use ticketmax_e2e::tokens::{OPERATOR_TOKEN, VIEWER_TOKEN};

#[tokio::test]
async fn bearer_tokens_and_roles_map_to_exit_code_6() {
    let app = TestApp::builder()
        .sqlite_store()
        .executors(0)
        .viewer_and_operator()
        .spawn()
        .await;
    let url = app.control_planes[0].url();
    let url = Some(url.as_str());

    // No token, an unknown token: UNAUTHENTICATED.
    let out = ctl_with_token(url, &["status"], None).await;
    assert_eq!(out.code, 6, "{out:?}");
    out.assert_one_error_line();
    assert!(out.stderr.contains("UNAUTHENTICATED"), "{out:?}");
    let out = ctl_with_token(url, &["status"], Some("not-a-configured-token")).await;
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("UNAUTHENTICATED"), "{out:?}");

    // The viewer reads (token from TICKETMAX_TOKEN) ...
    let v = ctl_with_token(url, &["-o", "json", "status"], Some(VIEWER_TOKEN)).await;
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["jobs"].as_array().map(Vec::len), Some(32));
    // ... but may not change anything: PERMISSION_DENIED.
    for args in [
        vec!["trigger", CANCEL_EXPIRED],
        vec!["pause", NEWSLETTER],
        vec!["update", NEWSLETTER, "--max-retries", "1"],
    ] {
        let out = ctl_with_token(url, &args, Some(VIEWER_TOKEN)).await;
        assert_eq!(out.code, 6, "viewer {args:?}:\n{out:?}");
        out.assert_one_error_line();
        assert!(out.stderr.contains("PERMISSION_DENIED"), "{out:?}");
    }

    // The operator (token from --token, which beats the environment) may.
    let run = ctl_with_token(
        url,
        &[
            "--token",
            OPERATOR_TOKEN,
            "-o",
            "json",
            "trigger",
            CANCEL_EXPIRED,
        ],
        Some(VIEWER_TOKEN),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = run.json();
    assert_eq!(run["job"], CANCEL_EXPIRED, "{run:#}");
    let out = ctl_with_token(url, &["pause", NEWSLETTER], Some(OPERATOR_TOKEN)).await;
    assert_eq!(out.code, 0, "{out:?}");
    let job = ctl_with_token(url, &["-o", "json", "job", NEWSLETTER], Some(VIEWER_TOKEN)).await;
    assert_eq!(job.json()["enabled"], false);
}

#[tokio::test]
async fn tls_with_a_ca_file() {
    let app = TestApp::builder()
        .sqlite_store()
        .executors(0)
        .tls()
        .spawn()
        .await;
    let addr = app.control_planes[0].grpc_addr;
    let ca = app.ca_file().to_string_lossy().into_owned();
    let https = format!("https://localhost:{}", addr.port());
    let url = Some(https.as_str());

    // Ready when it answers over TLS.
    let status = eventually("the TLS control plane to answer", secs(60), || {
        let ca = ca.clone();
        async move {
            let out = ctl_at(url, &["--ca-file", &ca, "-o", "json", "status"]).await;
            (out.code == 0).then_some(out)
        }
    })
    .await;
    assert_eq!(
        status.json()["jobs"].as_array().map(Vec::len),
        Some(32),
        "{status:?}"
    );

    // The CA from the environment works too; so does the IP address in the certificate.
    let ip_url = format!("https://{addr}");
    let mut cmd = tokio::process::Command::new(ctl_bin());
    let out = cmd
        .args(["--url", &ip_url, "-o", "json", "trigger", CANCEL_EXPIRED])
        .env("TICKETMAX_CA_FILE", &ca)
        .env_remove("TICKETMAX_TOKEN")
        .env_remove("TICKETMAX_OUTPUT")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let run: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["job"], CANCEL_EXPIRED, "{run:#}");

    // Without the CA (web PKI roots) or in plaintext: unreachable, exit 5, one line.
    let out = ctl_at(url, &["status"]).await;
    assert_eq!(out.code, 5, "{out:?}");
    out.assert_one_error_line();
    let plain = format!("http://{addr}");
    let out = ctl_at(Some(&plain), &["--connect-timeout", "3", "status"]).await;
    assert_eq!(out.code, 5, "{out:?}");
    out.assert_one_error_line();
}
