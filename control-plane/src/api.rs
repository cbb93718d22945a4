//! The gRPC API: `JobService` (public) and `ExecutorRegistry` (executors). Every request is
//! validated before anything changes; bad input gets `INVALID_ARGUMENT`, unknown names
//! `NOT_FOUND`, impossible transitions `FAILED_PRECONDITION`.
use std::{pin::Pin, time::Duration};

use chrono::Utc;
use futures::Stream;
use ticketmax_proto::peer_names::PeerNames;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use ticketmax_proto::{
    json_to_struct, struct_to_json, to_timestamp,
    v1::{self, RunState, job_service_server::JobService},
};

use crate::{
    app::SharedApp,
    auth::{Principal, Role},
    cron::{self, Schedule},
    dispatch::executor_jobs,
    store::{
        self, Created, JobChanges, NewRun, Outcome, RunFilter, executor, job, missed, overlap,
        report, run, run_event, state, trigger,
    },
};

const MAX_NAME_LEN: usize = 200;
const MAX_KEY_LEN: usize = 200;
const MAX_PARAMS_BYTES: usize = 64 * 1024;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct JobApi {
    app: SharedApp,
}

impl JobApi {
    pub fn new(app: SharedApp) -> Self {
        Self { app }
    }
}

impl From<store::StoreError> for Status {
    fn from(e: store::StoreError) -> Self {
        tracing::error!(error = %e, "request failed on the database");
        match e {
            store::StoreError::Db { .. } => Status::unavailable(e.to_string()),
            store::StoreError::Corrupt(_) => Status::internal(e.to_string()),
        }
    }
}

// ------------------------------------------------------------------------------- conversions

pub fn state_to_proto(s: &str) -> RunState {
    match s {
        state::QUEUED => RunState::Queued,
        state::RUNNING => RunState::Running,
        state::SUCCEEDED => RunState::Succeeded,
        state::FAILED => RunState::Failed,
        state::CANCELLED => RunState::Cancelled,
        state::TIMED_OUT => RunState::TimedOut,
        state::SKIPPED => RunState::Skipped,
        _ => RunState::Unspecified,
    }
}

fn state_from_proto(s: RunState) -> Option<&'static str> {
    Some(match s {
        RunState::Unspecified => return None,
        RunState::Queued => state::QUEUED,
        RunState::Running => state::RUNNING,
        RunState::Succeeded => state::SUCCEEDED,
        RunState::Failed => state::FAILED,
        RunState::Cancelled => state::CANCELLED,
        RunState::TimedOut => state::TIMED_OUT,
        RunState::Skipped => state::SKIPPED,
    })
}

fn parse_json_struct(s: Option<&str>) -> Option<prost_types::Struct> {
    s.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .map(|v| json_to_struct(&v))
}

pub fn run_to_proto(r: &run::Model) -> v1::Run {
    v1::Run {
        id: r.id.clone(),
        job: r.job.clone(),
        state: state_to_proto(&r.state).into(),
        trigger: match r.trigger.as_str() {
            trigger::SCHEDULE => v1::Trigger::Schedule,
            trigger::MANUAL => v1::Trigger::Manual,
            _ => v1::Trigger::Unspecified,
        }
        .into(),
        scheduled_for: Some(to_timestamp(r.scheduled_for)),
        created_at: Some(to_timestamp(r.created_at)),
        started_at: r.started_at.map(to_timestamp),
        finished_at: r.finished_at.map(to_timestamp),
        attempt: u32::try_from(r.attempt).unwrap_or(0),
        summary: parse_json_struct(r.summary.as_deref()),
        error: r.error.clone().unwrap_or_default(),
        executor_id: r.executor_id.clone().unwrap_or_default(),
        idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
        params: parse_json_struct(r.params.as_deref()),
        triggered_by: r.triggered_by.clone().unwrap_or_default(),
        reason: r.reason.clone().unwrap_or_default(),
    }
}

fn overlap_to_proto(s: &str) -> v1::OverlapPolicy {
    match s {
        overlap::SKIP => v1::OverlapPolicy::Skip,
        overlap::QUEUE_ONE => v1::OverlapPolicy::QueueOne,
        overlap::ALLOW => v1::OverlapPolicy::Allow,
        _ => v1::OverlapPolicy::Unspecified,
    }
}

fn missed_to_proto(s: &str) -> v1::MissedTickPolicy {
    match s {
        missed::RUN_ONCE => v1::MissedTickPolicy::RunOnce,
        missed::SKIP => v1::MissedTickPolicy::Skip,
        _ => v1::MissedTickPolicy::Unspecified,
    }
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
        overlap_policy: overlap_to_proto(&j.overlap_policy).into(),
        missed_tick_policy: missed_to_proto(&j.missed_tick_policy).into(),
        catch_up_window_seconds: u32::try_from(j.catch_up_window_secs).unwrap_or(0),
        timeout_seconds: u32::try_from(j.timeout_secs).unwrap_or(0),
        max_retries: u32::try_from(j.max_retries).unwrap_or(0),
        last_run: last.map(run_to_proto),
        default_schedule: j.default_schedule.clone(),
        updated_at: Some(to_timestamp(j.updated_at)),
        updated_by: j.updated_by.clone().unwrap_or_default(),
    }
}

pub fn event_to_proto(e: &run_event::Model) -> v1::RunEvent {
    let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap_or_default();
    let text = |k: &str| {
        payload
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let num = |k: &str| {
        payload
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let kind = match e.kind.as_str() {
        "state" => v1::run_event::Kind::State(v1::StateChange {
            state: state_to_proto(&text("state")).into(),
            message: text("message"),
            attempt: u32::try_from(num("attempt")).unwrap_or(0),
        }),
        "progress" => v1::run_event::Kind::Progress(v1::Progress {
            done: num("done"),
            total: num("total"),
            message: text("message"),
        }),
        _ => v1::run_event::Kind::Log(v1::LogLine {
            level: text("level"),
            message: text("message"),
        }),
    };
    v1::RunEvent {
        run_id: e.run_id.clone(),
        seq: u64::try_from(e.seq).unwrap_or(0),
        time: Some(to_timestamp(e.at)),
        kind: Some(kind),
    }
}

fn report_to_proto(r: &report::Model) -> v1::Report {
    v1::Report {
        id: r.id.clone(),
        kind: r.kind.clone(),
        period: r.period.clone(),
        job: r.job.clone(),
        run_id: r.run_id.clone(),
        created_at: Some(to_timestamp(r.created_at)),
        body: parse_json_struct(Some(&r.body)),
    }
}

pub fn executor_to_proto(e: &executor::Model, timeout: Duration) -> v1::ExecutorInfo {
    let silent = (Utc::now() - e.last_heartbeat_at)
        .to_std()
        .unwrap_or_default();
    v1::ExecutorInfo {
        id: e.id.clone(),
        address: e.address.clone(),
        jobs: executor_jobs(e),
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

// ------------------------------------------------------------------------------- validation

fn require_name<'a>(what: &str, name: &'a str) -> Result<&'a str, Status> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Status::invalid_argument(format!(
            "{what} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    Ok(name)
}

impl JobApi {
    async fn load_job(&self, name: &str) -> Result<job::Model, Status> {
        let name = require_name("job name", name)?;
        self.app
            .store
            .job(name)
            .await?
            .ok_or_else(|| Status::not_found(format!("no job named '{name}'")))
    }

    async fn load_run(&self, id: &str) -> Result<run::Model, Status> {
        let id = require_name("run_id", id)?;
        self.app
            .store
            .run(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no run with id '{id}'")))
    }

    async fn job_with_last_run(&self, j: job::Model) -> Result<v1::Job, Status> {
        let last = self
            .app
            .store
            .runs(RunFilter {
                job: Some(j.name.clone()),
                state: None,
                before_id: None,
                limit: 1,
            })
            .await?;
        Ok(job_to_proto(&j, last.first()))
    }

    async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        who: Option<Principal>,
    ) -> Result<v1::Job, Status> {
        let current = self.load_job(name).await?;
        let changes = JobChanges {
            enabled: Some(enabled),
            ..JobChanges::default()
        };
        let updated = self
            .app
            .store
            .update_job(
                &current.name,
                changes,
                who.as_ref().map(|p| p.name.as_str()),
            )
            .await?
            .ok_or_else(|| Status::not_found(format!("no job named '{name}'")))?;
        self.app.schedules_changed.notify_one();
        tracing::info!(job = %updated.name, enabled, by = who.as_ref().map_or("", |p| p.name.as_str()), "job {}", if enabled { "resumed" } else { "paused" });
        self.job_with_last_run(updated).await
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::RunEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl JobService for JobApi {
    async fn get_status(
        &self,
        req: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "GetStatus")?;
        let store = &self.app.store;
        let last = store.last_runs().await?;
        let jobs = store
            .jobs(None)
            .await?
            .iter()
            .map(|j| job_to_proto(j, last.get(&j.name)))
            .collect();
        let timeout = self.app.config.executor_timeout();
        let executors = store
            .executors(None)
            .await?
            .iter()
            .map(|e| executor_to_proto(e, timeout))
            .collect();
        Ok(Response::new(v1::GetStatusResponse {
            status: if self.app.is_draining() {
                "draining"
            } else {
                "active"
            }
            .into(),
            role: if self.app.is_leader() {
                "leader"
            } else {
                "follower"
            }
            .into(),
            replica_id: self.app.replica_id.clone(),
            jobs,
            executors,
            now: Some(to_timestamp(Utc::now())),
            queued_runs: store.count_in_state(state::QUEUED).await?,
            running_runs: store.count_in_state(state::RUNNING).await?,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "ListJobs")?;
        let service = req.into_inner().service;
        let service = service.trim();
        let last = self.app.store.last_runs().await?;
        let jobs = self
            .app
            .store
            .jobs((!service.is_empty()).then_some(service))
            .await?
            .iter()
            .map(|j| job_to_proto(j, last.get(&j.name)))
            .collect();
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, req: Request<v1::GetJobRequest>) -> Result<Response<v1::Job>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "GetJob")?;
        let j = self.load_job(&req.into_inner().name).await?;
        Ok(Response::new(self.job_with_last_run(j).await?))
    }

    async fn trigger_job(
        &self,
        req: Request<v1::TriggerJobRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let who = self
            .app
            .auth
            .require(req.metadata(), Role::Operator, "TriggerJob")?;
        let metadata = req.metadata().clone();
        let req = req.into_inner();
        let key = req.idempotency_key.trim().to_string();
        if key.len() > MAX_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "idempotency_key is longer than {MAX_KEY_LEN} characters"
            )));
        }
        let params = req
            .params
            .as_ref()
            .map(|p| struct_to_json(p).to_string())
            .filter(|p| p != "{}");
        if params.as_ref().is_some_and(|p| p.len() > MAX_PARAMS_BYTES) {
            return Err(Status::invalid_argument(format!(
                "params are larger than {MAX_PARAMS_BYTES} bytes"
            )));
        }
        let job = self.load_job(&req.job).await?;
        if let Some(p) = &who {
            self.app.auth.allow_trigger(&p.name)?;
        }
        let span = tracing::info_span!("trigger_job", job = %job.name);
        ticketmax_proto::telemetry::adopt(&span, &metadata);
        let trace_parent = ticketmax_proto::telemetry::traceparent(&span);
        let now = Utc::now();
        let created = self
            .app
            .store
            .create_run(NewRun {
                job: &job,
                trigger: trigger::MANUAL,
                tick_at: None,
                scheduled_for: now,
                idempotency_key: (!key.is_empty()).then_some(key),
                params,
                triggered_by: who.as_ref().map(|p| p.name.clone()),
                trace_parent,
                skip_reason: None,
            })
            .instrument(span.clone())
            .await?;
        if let Created::New(run) = &created {
            let message = match run.state.as_str() {
                state::SKIPPED => run.reason.clone().unwrap_or_default(),
                _ => "triggered manually".to_string(),
            };
            tracing::info!(job = %run.job, run_id = %run.id, state = %run.state, "manual trigger");
            self.app
                .record_state(&run.id, &run.state, run.attempt, &message)
                .await;
            self.app.dispatch_wake.notify_one();
        }
        Ok(Response::new(run_to_proto(created.run())))
    }

    async fn get_run(&self, req: Request<v1::GetRunRequest>) -> Result<Response<v1::Run>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "GetRun")?;
        let r = self.load_run(&req.into_inner().run_id).await?;
        Ok(Response::new(run_to_proto(&r)))
    }

    async fn list_runs(
        &self,
        req: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "ListRuns")?;
        let req = req.into_inner();
        let page = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let st = RunState::try_from(req.state)
            .map_err(|_| Status::invalid_argument(format!("unknown run state {}", req.state)))?;
        let token = req.page_token.trim();
        let before_id = if token.is_empty() {
            None
        } else {
            uuid::Uuid::parse_str(token).map_err(|_| {
                Status::invalid_argument("page_token is not one this server issued")
            })?;
            Some(token.to_string())
        };
        let job = req.job.trim();
        if !job.is_empty() {
            self.load_job(job).await?;
        }
        let runs = self
            .app
            .store
            .runs(RunFilter {
                job: (!job.is_empty()).then(|| job.to_string()),
                state: state_from_proto(st),
                before_id,
                limit: u64::from(page) + 1,
            })
            .await?;
        let more = runs.len() > page as usize;
        let runs: Vec<v1::Run> = runs.iter().take(page as usize).map(run_to_proto).collect();
        let next_page_token = if more {
            runs.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListRunsResponse {
            runs,
            next_page_token,
        }))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(
        &self,
        req: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "WatchRun")?;
        let req = req.into_inner();
        let run = self.load_run(&req.run_id).await?;
        let after = i64::try_from(req.after_seq)
            .map_err(|_| Status::invalid_argument("after_seq is too large"))?;
        Ok(Response::new(Box::pin(watch(
            self.app.clone(),
            run.id,
            after,
        ))))
    }

    async fn cancel_run(
        &self,
        req: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let who = self
            .app
            .auth
            .require(req.metadata(), Role::Operator, "CancelRun")?;
        let req = req.into_inner();
        let r = self.load_run(&req.run_id).await?;
        let by = who
            .as_ref()
            .map_or("an operator".to_string(), |p| format!("'{}'", p.name));
        let reason = match req.reason.trim() {
            "" => format!("cancelled by {by}"),
            r if r.len() > 500 => {
                return Err(Status::invalid_argument(
                    "reason is longer than 500 characters",
                ));
            }
            r => format!("cancelled by {by}: {r}"),
        };
        match r.state.as_str() {
            state::QUEUED => {
                let outcome = Outcome {
                    state: state::CANCELLED,
                    summary: None,
                    error: None,
                    reason: Some(&reason),
                };
                if let Some(done) = self
                    .app
                    .store
                    .finish(&r.id, r.attempt, &[state::QUEUED], outcome)
                    .await?
                {
                    self.app.events_wake.notify_waiters();
                    tracing::info!(run_id = %r.id, job = %r.job, "queued run cancelled");
                    return Ok(Response::new(run_to_proto(&done)));
                }
            }
            state::RUNNING => {
                if self.app.store.request_cancel(&r.id).await? {
                    self.app
                        .record_event(&r.id, "log", serde_json::json!({"level": "warn", "message": format!("cancellation requested: {reason}")}))
                        .await;
                    tracing::info!(run_id = %r.id, job = %r.job, "cancellation requested");
                }
            }
            other => {
                return Err(Status::failed_precondition(format!(
                    "run {} has already ended ({other})",
                    r.id
                )));
            }
        }
        let now = self.load_run(&r.id).await?;
        Ok(Response::new(run_to_proto(&now)))
    }

    async fn pause_job(
        &self,
        req: Request<v1::PauseJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let who = self
            .app
            .auth
            .require(req.metadata(), Role::Operator, "PauseJob")?;
        Ok(Response::new(
            self.set_enabled(&req.into_inner().name, false, who).await?,
        ))
    }

    async fn resume_job(
        &self,
        req: Request<v1::ResumeJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let who = self
            .app
            .auth
            .require(req.metadata(), Role::Operator, "ResumeJob")?;
        Ok(Response::new(
            self.set_enabled(&req.into_inner().name, true, who).await?,
        ))
    }

    async fn update_job(
        &self,
        req: Request<v1::UpdateJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let who = self
            .app
            .auth
            .require(req.metadata(), Role::Operator, "UpdateJob")?;
        let req = req.into_inner();
        let current = self.load_job(&req.name).await?;
        let schedule = req.schedule.as_deref().map(str::trim);
        let timezone = req.timezone.as_deref().map(str::trim);
        // Validate the combination that will be in force, so nothing invalid is ever stored.
        Schedule::parse(
            schedule.unwrap_or(&current.schedule),
            timezone.unwrap_or(&current.timezone),
        )
        .map_err(|e| match e {
            cron::ScheduleError::Cron { .. } | cron::ScheduleError::Timezone(_) => {
                Status::invalid_argument(e.to_string())
            }
        })?;
        let overlap_policy = match v1::OverlapPolicy::try_from(req.overlap_policy) {
            Ok(v1::OverlapPolicy::Unspecified) => None,
            Ok(v1::OverlapPolicy::Skip) => Some(overlap::SKIP),
            Ok(v1::OverlapPolicy::QueueOne) => Some(overlap::QUEUE_ONE),
            Ok(v1::OverlapPolicy::Allow) => Some(overlap::ALLOW),
            Err(_) => return Err(Status::invalid_argument("unknown overlap_policy")),
        };
        let missed_tick_policy = match v1::MissedTickPolicy::try_from(req.missed_tick_policy) {
            Ok(v1::MissedTickPolicy::Unspecified) => None,
            Ok(v1::MissedTickPolicy::RunOnce) => Some(missed::RUN_ONCE),
            Ok(v1::MissedTickPolicy::Skip) => Some(missed::SKIP),
            Err(_) => return Err(Status::invalid_argument("unknown missed_tick_policy")),
        };
        let bounded =
            |what: &str, v: Option<u32>, lo: u32, hi: u32| -> Result<Option<i32>, Status> {
                match v {
                    None => Ok(None),
                    Some(n) if (lo..=hi).contains(&n) => Ok(i32::try_from(n).ok()),
                    Some(n) => Err(Status::invalid_argument(format!(
                        "{what} must be between {lo} and {hi}, got {n}"
                    ))),
                }
            };
        let changes = JobChanges {
            schedule: schedule.map(str::to_string),
            timezone: timezone.map(str::to_string),
            enabled: req.enabled,
            overlap_policy,
            missed_tick_policy,
            catch_up_window_secs: bounded(
                "catch_up_window_seconds",
                req.catch_up_window_seconds,
                0,
                7 * 86_400,
            )?,
            timeout_secs: bounded("timeout_seconds", req.timeout_seconds, 1, 7 * 86_400)?,
            max_retries: bounded("max_retries", req.max_retries, 0, 100)?,
        };
        let updated = self
            .app
            .store
            .update_job(
                &current.name,
                changes,
                who.as_ref().map(|p| p.name.as_str()),
            )
            .await?
            .ok_or_else(|| Status::not_found(format!("no job named '{}'", req.name)))?;
        self.app.schedules_changed.notify_one();
        tracing::info!(job = %updated.name, schedule = %updated.schedule, timezone = %updated.timezone, enabled = updated.enabled, "job updated");
        Ok(Response::new(self.job_with_last_run(updated).await?))
    }

    async fn list_reports(
        &self,
        req: Request<v1::ListReportsRequest>,
    ) -> Result<Response<v1::ListReportsResponse>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "ListReports")?;
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 20,
            n => n.min(MAX_PAGE),
        };
        let kind = req.kind.trim();
        let reports = self
            .app
            .store
            .reports((!kind.is_empty()).then_some(kind), u64::from(limit))
            .await?
            .iter()
            .map(report_to_proto)
            .collect();
        Ok(Response::new(v1::ListReportsResponse { reports }))
    }

    async fn get_report(
        &self,
        req: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::Report>, Status> {
        let _who = self
            .app
            .auth
            .require(req.metadata(), Role::Viewer, "GetReport")?;
        let id = req.into_inner().id;
        let id = require_name("id", &id)?;
        let r = self
            .app
            .store
            .report(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no report with id '{id}'")))?;
        Ok(Response::new(report_to_proto(&r)))
    }
}

/// Stored events after `after`, then live ones, ending once the run has ended and every event
/// has been sent. Polls the database (events may be written by another replica) and wakes
/// early when this replica appends.
fn watch(
    app: SharedApp,
    run_id: String,
    after: i64,
) -> impl Stream<Item = Result<v1::RunEvent, Status>> + Send + 'static {
    struct Cursor {
        app: SharedApp,
        run_id: String,
        after: i64,
        buffered: std::collections::VecDeque<run_event::Model>,
        done: bool,
        /// Whether the terminal state event went out; until then an ended run gets a short
        /// grace for its last event (a skipped run's event follows its row).
        terminal_sent: bool,
        grace_polls: u8,
    }
    let cursor = Cursor {
        app,
        run_id,
        after,
        buffered: std::collections::VecDeque::new(),
        done: false,
        terminal_sent: false,
        grace_polls: 0,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.buffered.pop_front() {
                c.after = e.seq;
                let event = event_to_proto(&e);
                if let Some(v1::run_event::Kind::State(s)) = &event.kind {
                    c.terminal_sent |= s.state().is_terminal();
                }
                return Some((Ok(event), c));
            }
            if c.done {
                return None;
            }
            // Read the state before the events: if the run had ended, these events are all.
            let ended = match c.app.store.run(&c.run_id).await {
                Ok(Some(r)) => state_to_proto(&r.state).is_terminal(),
                Ok(None) => true,
                Err(e) => return Some((Err(Status::from(e)), Cursor { done: true, ..c })),
            };
            match c.app.store.events_after(&c.run_id, c.after, 500).await {
                Ok(events) if !events.is_empty() => c.buffered.extend(events),
                Ok(_) if ended && (c.terminal_sent || c.grace_polls >= 10) => return None,
                Ok(_) if ended => {
                    c.grace_polls += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(_) => {
                    let wake = c.app.events_wake.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(200), wake).await;
                }
                Err(e) => return Some((Err(Status::from(e)), Cursor { done: true, ..c })),
            }
        }
    })
}

// ------------------------------------------------------------------------------- registry

pub struct RegistryApi {
    app: SharedApp,
    /// Names an executor's client certificate must carry (TICKETMAX_TLS_EXECUTOR_NAMES).
    executor_names: PeerNames,
}

impl RegistryApi {
    pub fn new(app: SharedApp, executor_names: PeerNames) -> Self {
        Self {
            app,
            executor_names,
        }
    }

    /// Only executors: the shared secret when one is set, the pinned certificate names when
    /// they are set.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.app.auth.require_executor(req.metadata())?;
        self.executor_names
            .admit(req.peer_certs().as_deref().map(Vec::as_slice))
    }
}

#[tonic::async_trait]
impl v1::executor_registry_server::ExecutorRegistry for RegistryApi {
    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let id = require_name("executor_id", &req.executor_id)?;
        let address = req.address.trim();
        if !(address.starts_with("http://") || address.starts_with("https://"))
            || address.parse::<tonic::transport::Uri>().is_err()
        {
            return Err(Status::invalid_argument(format!(
                "address '{address}' is not an http:// or https:// URL"
            )));
        }
        if req.jobs.len() > 1000 || req.jobs.iter().any(|j| j.len() > MAX_NAME_LEN) {
            return Err(Status::invalid_argument("too many or too long job names"));
        }
        self.app
            .store
            .register_executor(id, address, &req.jobs, &req.version)
            .await?;
        tracing::info!(
            executor = id,
            address,
            jobs = req.jobs.len(),
            "executor registered"
        );
        self.app.dispatch_wake.notify_one();
        Ok(Response::new(v1::RegisterResponse {
            executor_id: id.to_string(),
            heartbeat_interval_ms: self.app.config.heartbeat_interval_ms,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let id = require_name("executor_id", &req.executor_id)?;
        let known = self
            .app
            .store
            .heartbeat(
                id,
                i32::try_from(req.running).unwrap_or(i32::MAX),
                store::MailFigures {
                    outbox_pending: i64::try_from(req.outbox_pending).unwrap_or(i64::MAX),
                    emails_sent: i64::try_from(req.emails_sent).unwrap_or(i64::MAX),
                    emails_failed: i64::try_from(req.emails_failed).unwrap_or(i64::MAX),
                },
            )
            .await?;
        Ok(Response::new(v1::HeartbeatResponse { known }))
    }

    async fn deregister(
        &self,
        req: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::DeregisterResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let id = require_name("executor_id", &req.executor_id)?;
        self.app.store.deregister_executor(id).await?;
        tracing::info!(executor = id, "executor deregistered");
        Ok(Response::new(v1::DeregisterResponse {}))
    }
}
