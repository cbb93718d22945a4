//! Rendering: how each message looks on a terminal (the status, jobs, runs and reports tables,
//! the key/value views of one job, run or report, the last lines of a followed run), and the
//! choice, by `--output`, between those and the JSON documents of [`ticketmax_client::json`]
//! ([`show`], [`show_all`]).

mod text;

use serde_json::Value;

use ticketmax_client::proto::{
    ExecutorInfo, GetStatusResponse, Job, MissedTickPolicy, OverlapPolicy, Report, Run, Trigger,
};
use ticketmax_client::{json, struct_to_json};

use text::{compact_json, fmt_duration, fmt_time, fmt_when, kv, table, truncate, yes_no};
pub use text::{one_line, out, out_json, short_state};

/// One message: its JSON document with `--output json`, else its human view.
pub fn show<T>(item: &T, json_out: bool, to_json: fn(&T) -> Value, human: fn(&T)) {
    if json_out {
        out_json(&to_json(item));
    } else {
        human(item);
    }
}

/// A list: one JSON array with `--output json`, else its table.
pub fn show_all<T>(items: &[T], json_out: bool, to_json: fn(&T) -> Value, human: fn(&[T])) {
    if json_out {
        out_json(&Value::Array(items.iter().map(to_json).collect()));
    } else {
        human(items);
    }
}

pub fn print_status(s: &GetStatusResponse) {
    let rows: Vec<Vec<String>> = s
        .jobs
        .iter()
        .map(|j| {
            let (last, finished) = match &j.last_run {
                None => ("-".to_string(), "-".to_string()),
                Some(r) => (
                    short_state(r.state()).to_string(),
                    if r.state().is_terminal() {
                        fmt_time(r.finished_at.as_ref())
                    } else {
                        "-".into()
                    },
                ),
            };
            job_row(j, [last, finished])
        })
        .collect();
    out(table(&job_headers(["LAST RUN", "FINISHED"]), &rows));
    out("");
    if s.executors.is_empty() {
        out("executors: none registered");
    } else {
        out(executors_table(&s.executors));
    }
    out("");
    out(format!(
        "control plane: {} ({}), replica {}, version {}; {} job(s), {} queued, {} running",
        s.status,
        s.role,
        if s.replica_id.is_empty() {
            "-"
        } else {
            &s.replica_id
        },
        if s.version.is_empty() {
            "-"
        } else {
            &s.version
        },
        s.jobs.len(),
        s.queued_runs,
        s.running_runs
    ));
}

fn executors_table(executors: &[ExecutorInfo]) -> String {
    let rows: Vec<Vec<String>> = executors
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.address.clone(),
                yes_no(e.live),
                e.running.to_string(),
                e.jobs.len().to_string(),
                fmt_when(e.last_heartbeat_at.as_ref()),
                e.version.clone(),
            ]
        })
        .collect();
    table(
        &[
            "EXECUTOR",
            "ADDRESS",
            "LIVE",
            "RUNNING",
            "JOBS",
            "LAST HEARTBEAT",
            "VERSION",
        ],
        &rows,
    )
}

fn overlap_name(p: OverlapPolicy) -> &'static str {
    match p {
        OverlapPolicy::Unspecified => "-",
        OverlapPolicy::Skip => "skip",
        OverlapPolicy::QueueOne => "queue-one",
        OverlapPolicy::Allow => "allow",
    }
}

fn missed_name(p: MissedTickPolicy) -> &'static str {
    match p {
        MissedTickPolicy::Unspecified => "-",
        MissedTickPolicy::RunOnce => "run-once",
        MissedTickPolicy::Skip => "skip",
    }
}

pub fn print_jobs(jobs: &[Job]) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            job_row(
                j,
                [
                    overlap_name(j.overlap_policy()).into(),
                    format!("{}s", j.timeout_seconds),
                    j.max_retries.to_string(),
                ],
            )
        })
        .collect();
    out(table(
        &job_headers(["OVERLAP", "TIMEOUT", "RETRIES"]),
        &rows,
    ));
}

/// The headers of a table of jobs (status, jobs): name, schedule, timezone and enabled, then
/// `middle`, then the next fire time.
fn job_headers<const N: usize>(middle: [&'static str; N]) -> Vec<&'static str> {
    let mut headers = vec!["JOB", "SCHEDULE", "TIMEZONE", "ENABLED"];
    headers.extend(middle);
    headers.push("NEXT FIRE");
    headers
}

/// A row of a table of jobs, in the order of [`job_headers`].
fn job_row<const N: usize>(j: &Job, middle: [String; N]) -> Vec<String> {
    let mut row = vec![
        j.name.clone(),
        j.schedule.clone(),
        j.timezone.clone(),
        yes_no(j.enabled),
    ];
    row.extend(middle);
    row.push(fmt_when(j.next_fire_time.as_ref()));
    row
}

pub fn print_job(j: &Job) {
    let schedule = if j.default_schedule.is_empty() || j.default_schedule == j.schedule {
        j.schedule.clone()
    } else {
        format!("{} (default {})", j.schedule, j.default_schedule)
    };
    let last = match &j.last_run {
        None => "-".into(),
        Some(r) => format!(
            "{} {} (finished {})",
            r.id,
            short_state(r.state()),
            fmt_time(r.finished_at.as_ref())
        ),
    };
    kv(&[
        ("name", j.name.clone()),
        ("description", one_line(&j.description)),
        ("schedule", schedule),
        ("timezone", j.timezone.clone()),
        ("enabled", yes_no(j.enabled)),
        ("next fire", fmt_when(j.next_fire_time.as_ref())),
        ("overlap", overlap_name(j.overlap_policy()).into()),
        ("missed ticks", missed_name(j.missed_tick_policy()).into()),
        ("catch-up window", format!("{}s", j.catch_up_window_seconds)),
        ("timeout", format!("{}s", j.timeout_seconds)),
        ("max retries", j.max_retries.to_string()),
        ("last run", last),
        (
            "updated",
            format!(
                "{}{}",
                fmt_time(j.updated_at.as_ref()),
                if j.updated_by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", j.updated_by)
                }
            ),
        ),
    ]);
}

/// After `pause` and `resume`.
pub fn print_enabled(j: &Job) {
    out(format!(
        "{}: {} (next fire {})",
        j.name,
        if j.enabled { "enabled" } else { "paused" },
        fmt_when(j.next_fire_time.as_ref())
    ));
}

fn trigger_name(r: &Run) -> &'static str {
    match r.trigger() {
        Trigger::Schedule => "schedule",
        Trigger::Manual => "manual",
        Trigger::Unspecified => "-",
    }
}

pub fn print_runs(runs: &[Run]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let detail = if !r.error.is_empty() {
                one_line(&r.error)
            } else if !r.reason.is_empty() {
                one_line(&r.reason)
            } else {
                compact_json(&json::summary(r))
            };
            vec![
                r.id.clone(),
                r.job.clone(),
                short_state(r.state()).into(),
                trigger_name(r).into(),
                fmt_time(r.scheduled_for.as_ref()),
                fmt_duration(r),
                r.attempt.to_string(),
                truncate(&detail, 80),
            ]
        })
        .collect();
    if rows.is_empty() {
        out("no runs");
        return;
    }
    out(table(
        &[
            "RUN",
            "JOB",
            "STATE",
            "TRIGGER",
            "SCHEDULED FOR",
            "DURATION",
            "ATTEMPT",
            "SUMMARY / ERROR",
        ],
        &rows,
    ));
}

pub fn print_run(r: &Run) {
    let mut pairs = vec![
        ("run", r.id.clone()),
        ("job", r.job.clone()),
        ("state", short_state(r.state()).into()),
        ("trigger", trigger_name(r).into()),
        ("scheduled for", fmt_time(r.scheduled_for.as_ref())),
        ("started", fmt_time(r.started_at.as_ref())),
        ("finished", fmt_time(r.finished_at.as_ref())),
        ("duration", fmt_duration(r)),
        ("attempt", r.attempt.to_string()),
        (
            "executor",
            if r.executor_id.is_empty() {
                "-".into()
            } else {
                r.executor_id.clone()
            },
        ),
    ];
    if !r.idempotency_key.is_empty() {
        pairs.push(("idempotency key", r.idempotency_key.clone()));
    }
    if let Some(p) = &r.params {
        pairs.push(("params", compact_json(&struct_to_json(p))));
    }
    if !r.triggered_by.is_empty() {
        pairs.push(("triggered by", r.triggered_by.clone()));
    }
    pairs.push(("summary", compact_json(&json::summary(r))));
    if !r.error.is_empty() {
        pairs.push(("error", one_line(&r.error)));
    }
    if !r.reason.is_empty() {
        pairs.push(("reason", one_line(&r.reason)));
    }
    kv(&pairs);
}

/// `trigger` without `--wait`: the new run, and how to follow it.
pub fn print_triggered(r: &Run) {
    out(format!(
        "run {} of {}: {}{}",
        r.id,
        r.job,
        short_state(r.state()),
        if r.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", one_line(&r.reason))
        }
    ));
    if !r.state().is_terminal() {
        out(format!("follow it with: ticketmaxctl watch {}", r.id));
    }
}

/// After `cancel`: ended at once (a queued run), or asked to stop (a running one).
pub fn print_cancelled(r: &Run) {
    if r.state().is_terminal() {
        out(format!("run {} {}", r.id, short_state(r.state())));
    } else {
        out(format!(
            "run {}: cancellation requested (the task stops at its next chunk; it is {} now)",
            r.id,
            short_state(r.state())
        ));
    }
}

/// The end of `trigger --wait` and `watch`.
pub fn print_outcome(r: &Run) {
    let mut line = format!(
        "run {} of {} {} in {} (attempt {})",
        r.id,
        r.job,
        short_state(r.state()),
        fmt_duration(r),
        r.attempt
    );
    if !r.reason.is_empty() {
        line.push_str(&format!(": {}", one_line(&r.reason)));
    }
    out(line);
    out(format!("summary: {}", compact_json(&json::summary(r))));
    if !r.error.is_empty() {
        out(format!("error: {}", one_line(&r.error)));
    }
}

pub fn print_reports(reports: &[Report]) {
    if reports.is_empty() {
        out("no reports");
        return;
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.kind.clone(),
                r.period.clone(),
                r.job.clone(),
                fmt_time(r.created_at.as_ref()),
            ]
        })
        .collect();
    out(table(
        &["REPORT", "KIND", "PERIOD", "JOB", "CREATED"],
        &rows,
    ));
}

pub fn print_report(r: &Report) {
    kv(&[
        ("report", r.id.clone()),
        ("kind", r.kind.clone()),
        ("period", r.period.clone()),
        ("job", r.job.clone()),
        ("run", r.run_id.clone()),
        ("created", fmt_time(r.created_at.as_ref())),
    ]);
    out("");
    let body = r
        .body
        .as_ref()
        .map_or(Value::Object(Default::default()), struct_to_json);
    out_json(&body);
}
