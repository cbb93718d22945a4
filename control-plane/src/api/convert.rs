//! Stored rows as the API shows them.
use std::time::Duration;

use chrono::Utc;
use ticketmax_proto::{json_to_struct, to_timestamp, v1};

use crate::{
    cron::Schedule,
    engine::executors::jobs_of,
    store::{executor, job, report, run},
};

fn json_struct(s: Option<&str>) -> Option<prost_types::Struct> {
    s.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .map(|v| json_to_struct(&v))
}

pub fn run_to_proto(r: &run::Model) -> v1::Run {
    v1::Run {
        id: r.id.clone(),
        job: r.job.clone(),
        state: r.state.to_proto().into(),
        trigger: r.trigger.to_proto().into(),
        scheduled_for: Some(to_timestamp(r.scheduled_for)),
        created_at: Some(to_timestamp(r.created_at)),
        started_at: r.started_at.map(to_timestamp),
        finished_at: r.finished_at.map(to_timestamp),
        attempt: u32::try_from(r.attempt).unwrap_or(0),
        summary: json_struct(r.summary.as_deref()),
        error: r.error.clone().unwrap_or_default(),
        executor_id: r.executor_id.clone().unwrap_or_default(),
        idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
        params: json_struct(r.params.as_deref()),
        triggered_by: r.triggered_by.clone().unwrap_or_default(),
        reason: r.reason.clone().unwrap_or_default(),
        trace_id: r
            .trace_parent
            .as_deref()
            .and_then(trace_id)
            .unwrap_or_default(),
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<flags>`).
fn trace_id(traceparent: &str) -> Option<String> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

pub fn job_to_proto(j: &job::Model, last: Option<&run::Model>) -> v1::Job {
    let next = if j.enabled {
        Schedule::parse(&j.schedule, &j.timezone)
            .ok()
            .and_then(|s| s.next_after(Utc::now()))
            .map(to_timestamp)
    } else {
        None
    };
    v1::Job {
        name: j.name.clone(),
        service: j.service.clone(),
        task: j.task.clone(),
        description: j.description.clone(),
        schedule: j.schedule.clone(),
        timezone: j.timezone.clone(),
        enabled: j.enabled,
        next_fire_time: next,
        overlap_policy: j.overlap_policy.to_proto().into(),
        missed_tick_policy: j.missed_tick_policy.to_proto().into(),
        catch_up_window_seconds: u32::try_from(j.catch_up_window_secs).unwrap_or(0),
        timeout_seconds: u32::try_from(j.timeout_secs).unwrap_or(0),
        max_retries: u32::try_from(j.max_retries).unwrap_or(0),
        last_run: last.map(run_to_proto),
        default_schedule: j.default_schedule.clone(),
        updated_at: Some(to_timestamp(j.updated_at)),
        updated_by: j.updated_by.clone().unwrap_or_default(),
    }
}

pub fn report_to_proto(r: &report::Model) -> v1::Report {
    v1::Report {
        id: r.id.clone(),
        kind: r.kind.clone(),
        period: r.period.clone(),
        job: r.job.clone(),
        run_id: r.run_id.clone(),
        created_at: Some(to_timestamp(r.created_at)),
        body: json_struct(Some(&r.body)),
    }
}

pub fn executor_to_proto(e: &executor::Model, timeout: Duration) -> v1::ExecutorInfo {
    let silent = (Utc::now() - e.last_heartbeat_at)
        .to_std()
        .unwrap_or_default();
    v1::ExecutorInfo {
        id: e.id.clone(),
        address: e.address.clone(),
        jobs: jobs_of(e),
        registered_at: Some(to_timestamp(e.registered_at)),
        last_heartbeat_at: Some(to_timestamp(e.last_heartbeat_at)),
        live: !e.deregistered && silent <= timeout,
        running: u32::try_from(e.running).unwrap_or(0),
        version: e.version.clone(),
        outbox_pending: u64::try_from(e.outbox_pending).unwrap_or(0),
        emails_sent: u64::try_from(e.emails_sent).unwrap_or(0),
        emails_failed: u64::try_from(e.emails_failed).unwrap_or(0),
    }
}
