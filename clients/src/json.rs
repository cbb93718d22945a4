//! The contract's messages as JSON values: snake_case field names (the proto names), enums by
//! name (`"RUN_STATE_SUCCEEDED"`), times as RFC 3339 UTC strings (`null` when unset), summaries,
//! params and report bodies as plain JSON objects.
//!
//! ```
//! use ticketmax_client::{json, proto::{Run, RunState}};
//! let mut run = Run { id: "r1".into(), job: "analytics/generate-daily-analytics".into(), ..Run::default() };
//! run.set_state(RunState::Succeeded);
//! let v = json::run(&run);
//! assert_eq!(v["state"], "RUN_STATE_SUCCEEDED");
//! assert_eq!(v["finished_at"], serde_json::Value::Null);
//! ```
use chrono::SecondsFormat;
use prost_types::{Struct, Timestamp};
use serde_json::{Value, json};

use crate::proto::{ExecutorInfo, GetStatusResponse, Job, Report, Run, RunEvent, run_event::Kind};
use crate::{from_timestamp, struct_to_json};

/// RFC 3339 with milliseconds, or `null`.
pub fn time(t: Option<&Timestamp>) -> Value {
    t.and_then(from_timestamp).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

fn object(s: Option<&Struct>) -> Value {
    s.map_or(Value::Null, struct_to_json)
}

/// The run's summary (`{}` when it has none).
pub fn summary(run: &Run) -> Value {
    run.summary
        .as_ref()
        .map_or_else(|| json!({}), struct_to_json)
}

pub fn run(r: &Run) -> Value {
    json!({
        "id": r.id,
        "job": r.job,
        "state": r.state().as_str_name(),
        "trigger": r.trigger().as_str_name(),
        "scheduled_for": time(r.scheduled_for.as_ref()),
        "created_at": time(r.created_at.as_ref()),
        "started_at": time(r.started_at.as_ref()),
        "finished_at": time(r.finished_at.as_ref()),
        "attempt": r.attempt,
        "summary": object(r.summary.as_ref()),
        "error": r.error,
        "executor_id": r.executor_id,
        "idempotency_key": r.idempotency_key,
        "params": object(r.params.as_ref()),
        "triggered_by": r.triggered_by,
        "reason": r.reason,
    })
}

pub fn job(j: &Job) -> Value {
    json!({
        "name": j.name,
        "service": j.service,
        "task": j.task,
        "description": j.description,
        "schedule": j.schedule,
        "default_schedule": j.default_schedule,
        "timezone": j.timezone,
        "enabled": j.enabled,
        "next_fire_time": time(j.next_fire_time.as_ref()),
        "overlap_policy": j.overlap_policy().as_str_name(),
        "missed_tick_policy": j.missed_tick_policy().as_str_name(),
        "catch_up_window_seconds": j.catch_up_window_seconds,
        "timeout_seconds": j.timeout_seconds,
        "max_retries": j.max_retries,
        "last_run": j.last_run.as_ref().map_or(Value::Null, run),
        "updated_at": time(j.updated_at.as_ref()),
        "updated_by": j.updated_by,
    })
}

pub fn executor(e: &ExecutorInfo) -> Value {
    json!({
        "id": e.id,
        "address": e.address,
        "live": e.live,
        "running": e.running,
        "version": e.version,
        "jobs": e.jobs,
        "registered_at": time(e.registered_at.as_ref()),
        "last_heartbeat_at": time(e.last_heartbeat_at.as_ref()),
    })
}

pub fn status(s: &GetStatusResponse) -> Value {
    json!({
        "status": s.status,
        "role": s.role,
        "replica_id": s.replica_id,
        "version": s.version,
        "now": time(s.now.as_ref()),
        "queued_runs": s.queued_runs,
        "running_runs": s.running_runs,
        "jobs": s.jobs.iter().map(job).collect::<Vec<_>>(),
        "executors": s.executors.iter().map(executor).collect::<Vec<_>>(),
    })
}

pub fn event(e: &RunEvent) -> Value {
    let mut v = json!({
        "run_id": e.run_id,
        "seq": e.seq,
        "time": time(e.time.as_ref()),
    });
    let (kind, body) = match &e.kind {
        Some(Kind::State(s)) => (
            "state",
            json!({"state": s.state().as_str_name(), "message": s.message, "attempt": s.attempt}),
        ),
        Some(Kind::Progress(p)) => (
            "progress",
            json!({"done": p.done, "total": p.total, "message": p.message}),
        ),
        Some(Kind::Log(l)) => ("log", json!({"level": l.level, "message": l.message})),
        None => ("unknown", Value::Null),
    };
    v["kind"] = Value::String(kind.into());
    if !body.is_null() {
        v[kind] = body;
    }
    v
}

pub fn report(r: &Report) -> Value {
    json!({
        "id": r.id,
        "kind": r.kind,
        "period": r.period,
        "job": r.job,
        "run_id": r.run_id,
        "created_at": time(r.created_at.as_ref()),
        "body": object(r.body.as_ref()),
    })
}
