//! `JobService` handlers: authorise, take the validated request (`requests`), act through the
//! engine and the store, answer with `convert`. The seed REST endpoints and the dashboard call
//! these same handlers, so roles, validation and the record of who did what exist once.
use std::pin::Pin;

use chrono::Utc;
use futures::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use ticketmax_proto::{
    to_timestamp,
    v1::{self, job_service_server::JobService},
};

use super::{
    convert::{executor_to_proto, job_to_proto, report_to_proto, run_to_proto},
    requests::{self, require_name},
    watch::watch,
};
use crate::{
    app::SharedApp,
    auth::{Principal, Role},
    cron::{self, Schedule},
    engine::enqueue::NewRun,
    lifecycle::{RunState, Settlement, Trigger},
    store::{JobChanges, RunFilter, job, lifecycle::SettleRow, run},
};

pub struct JobApi {
    app: SharedApp,
}

impl JobApi {
    pub fn new(app: SharedApp) -> Self {
        Self { app }
    }

    fn job(&self, name: &str) -> Result<std::sync::Arc<job::Model>, Status> {
        let name = require_name("job name", name)?;
        self.app
            .jobs
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("no job named '{name}'")))
    }

    async fn load_run(&self, id: &str) -> Result<run::Model, Status> {
        let id = require_name("run_id", id)?;
        self.app
            .store
            .run(&id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no run with id '{id}'")))
    }

    async fn job_with_last_run(&self, j: &job::Model) -> Result<v1::Job, Status> {
        let last = self
            .app
            .store
            .runs(RunFilter {
                job: Some(j.name.clone()),
                limit: 1,
                ..RunFilter::default()
            })
            .await?;
        Ok(job_to_proto(j, last.first()))
    }

    /// Applies changes to a job, puts it in this replica's cache (the ticker re-registers its
    /// schedule at once) and tells the other replicas.
    async fn change_job(
        &self,
        name: &str,
        changes: JobChanges,
        who: Option<&Principal>,
    ) -> Result<job::Model, Status> {
        let updated = self
            .app
            .store
            .update_job(
                name,
                changes,
                who.map(|p| p.name.as_str()),
                &self.app.replica_id,
            )
            .await?
            .ok_or_else(|| Status::not_found(format!("no job named '{name}'")))?;
        self.app.jobs.put(updated.clone());
        Ok(updated)
    }

    async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        who: Option<Principal>,
    ) -> Result<v1::Job, Status> {
        let current = self.job(name)?;
        let changes = JobChanges {
            enabled: Some(enabled),
            ..JobChanges::default()
        };
        let updated = self
            .change_job(&current.name, changes, who.as_ref())
            .await?;
        tracing::info!(job = %updated.name, enabled, by = who.as_ref().map_or("", |p| p.name.as_str()), "job {}", if enabled { "resumed" } else { "paused" });
        self.job_with_last_run(&updated).await
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
            .require_request(&req, Role::Viewer, "GetStatus")?;
        let store = &self.app.store;
        let last = store.last_runs().await?;
        let jobs = self
            .app
            .jobs
            .all()
            .values()
            .map(|j| job_to_proto(j, last.get(&j.name)))
            .collect();
        let timeout = self.app.config.executor_timeout();
        let executors = self
            .app
            .executors
            .overlay(store.executors(None).await?)
            .iter()
            .map(|e| executor_to_proto(e, timeout))
            .collect();
        let (queued_runs, running_runs) = store.active_counts().await?;
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
            queued_runs,
            running_runs,
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
            .require_request(&req, Role::Viewer, "ListJobs")?;
        let service = req.into_inner().service;
        let service = requests::text("service", &service)?.trim();
        let last = self.app.store.last_runs().await?;
        let jobs = self
            .app
            .jobs
            .all()
            .values()
            .filter(|j| service.is_empty() || j.service == service)
            .map(|j| job_to_proto(j, last.get(&j.name)))
            .collect();
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, req: Request<v1::GetJobRequest>) -> Result<Response<v1::Job>, Status> {
        let _who = self
            .app
            .auth
            .require_request(&req, Role::Viewer, "GetJob")?;
        let j = self.job(&req.into_inner().name)?;
        Ok(Response::new(self.job_with_last_run(&j).await?))
    }

    async fn trigger_job(
        &self,
        req: Request<v1::TriggerJobRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let who = self
            .app
            .auth
            .require_request(&req, Role::Operator, "TriggerJob")?;
        let metadata = req.metadata().clone();
        let req = requests::TriggerJob::try_from(req.into_inner())?;
        let job = self.job(&req.job)?;
        if !req.params_map.is_empty() {
            let declared = self.app.executors.declared_params(
                &job.name,
                self.app.config.executor_timeout(),
                Utc::now(),
            );
            crate::params::check(
                declared.as_deref(),
                &req.params_map,
                Utc::now(),
                self.app.config.as_of_horizon_days,
            )
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", job.name)))?;
        }
        if let Some(p) = &who {
            self.app.auth.allow_trigger(&p.name)?;
        }
        let span = tracing::info_span!("trigger_job", job = %job.name);
        ticketmax_runtime::telemetry::adopt(&span, &metadata);
        let trace_parent = ticketmax_runtime::telemetry::traceparent(&span);
        let new = NewRun {
            job,
            trigger: Trigger::Manual,
            tick_at: None,
            scheduled_for: Utc::now(),
            idempotency_key: req.idempotency_key,
            params: req.params,
            triggered_by: who.as_ref().map(|p| p.name.clone()),
            trace_parent,
            skip_reason: None,
            message: "triggered manually".to_string(),
        };
        let created = self
            .app
            .enqueuer
            .call("enqueuer", new)
            .instrument(span)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))??;
        Ok(Response::new(run_to_proto(created.run())))
    }

    async fn get_run(&self, req: Request<v1::GetRunRequest>) -> Result<Response<v1::Run>, Status> {
        let _who = self
            .app
            .auth
            .require_request(&req, Role::Viewer, "GetRun")?;
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
            .require_request(&req, Role::Viewer, "ListRuns")?;
        let req = requests::ListRuns::try_from(req.into_inner())?;
        if let Some(job) = &req.job {
            self.job(job)?;
        }
        let page = req.page;
        let runs = self
            .app
            .store
            .runs(RunFilter {
                job: req.job,
                state: req.state,
                trigger: req.matching.trigger,
                before_id: req.before_id,
                created_since: req.matching.created_since,
                created_until: req.matching.created_until,
                limit: u64::from(page) + 1,
                oldest_first: false,
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
            .require_request(&req, Role::Viewer, "WatchRun")?;
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
            .require_request(&req, Role::Operator, "CancelRun")?;
        let req = requests::CancelRun::try_from(req.into_inner())?;
        let r = self.load_run(&req.run_id).await?;
        let reason = cancel_reason(who.as_ref(), req.reason.as_deref());
        match r.state {
            RunState::Queued => {
                let settled = self.app.completer.settle(cancel_queued(&r, reason)).await?;
                if let Some(done) = settled {
                    tracing::info!(run_id = %r.id, job = %r.job, "queued run cancelled");
                    return Ok(Response::new(run_to_proto(&done.run)));
                }
            }
            RunState::Running => {
                let requested = self
                    .app
                    .store
                    .request_cancel(std::slice::from_ref(&r.id), &reason, &self.app.replica_id)
                    .await?;
                if !requested.is_empty() {
                    self.app.attempts.signal(
                        &r.id,
                        crate::engine::attempts::Signal::Cancel {
                            reason: Some(reason),
                        },
                    );
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

    async fn cancel_runs(
        &self,
        req: Request<v1::CancelRunsRequest>,
    ) -> Result<Response<v1::CancelRunsResponse>, Status> {
        // Counting is a read: a viewer may see how many runs a bulk cancel would take.
        let need = if req.get_ref().dry_run {
            Role::Viewer
        } else {
            Role::Operator
        };
        let who = self.app.auth.require_request(&req, need, "CancelRuns")?;
        let req = requests::CancelRuns::try_from(req.into_inner())?;
        if let Some(job) = &req.job {
            self.job(job)?;
        }
        // One read per state; the oldest first, so repeated calls work through a backlog.
        let mut picked: Vec<run::Model> = Vec::new();
        for state in &req.states {
            picked.extend(
                self.app
                    .store
                    .runs(RunFilter {
                        job: req.job.clone(),
                        state: Some(*state),
                        trigger: req.matching.trigger,
                        before_id: None,
                        created_since: req.matching.created_since,
                        created_until: req.matching.created_until,
                        limit: u64::from(req.limit) + 1,
                        oldest_first: true,
                    })
                    .await?,
            );
        }
        picked.sort_by(|a, b| a.id.cmp(&b.id));
        let more = picked.len() > req.limit as usize;
        picked.truncate(req.limit as usize);
        let (queued, running): (Vec<run::Model>, Vec<run::Model>) = picked
            .into_iter()
            .partition(|r| r.state == RunState::Queued);
        if req.dry_run {
            return Ok(Response::new(v1::CancelRunsResponse {
                queued: u32::try_from(queued.len()).unwrap_or(u32::MAX),
                running: u32::try_from(running.len()).unwrap_or(u32::MAX),
                more,
            }));
        }
        let reason = cancel_reason(who.as_ref(), req.reason.as_deref());
        // The completer takes these together: one statement per batch of its queue.
        let settled = futures::future::join_all(
            queued
                .iter()
                .map(|r| self.app.completer.settle(cancel_queued(r, reason.clone()))),
        )
        .await;
        let mut cancelled = 0u32;
        for s in settled {
            // `None`: dispatched or ended meanwhile; not an error for a bulk cancel.
            if s?.is_some() {
                cancelled += 1;
            }
        }
        let ids: Vec<String> = running.iter().map(|r| r.id.clone()).collect();
        let requested = self
            .app
            .store
            .request_cancel(&ids, &reason, &self.app.replica_id)
            .await?;
        for id in &requested {
            self.app.attempts.signal(
                id,
                crate::engine::attempts::Signal::Cancel {
                    reason: Some(reason.clone()),
                },
            );
        }
        tracing::info!(
            who = who.as_ref().map_or("open access", |p| p.name.as_str()),
            job = req.job.as_deref().unwrap_or("any"),
            queued = cancelled,
            running = requested.len(),
            more,
            "runs cancelled in bulk"
        );
        Ok(Response::new(v1::CancelRunsResponse {
            queued: cancelled,
            running: u32::try_from(requested.len()).unwrap_or(u32::MAX),
            more,
        }))
    }

    async fn pause_job(
        &self,
        req: Request<v1::PauseJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let who = self
            .app
            .auth
            .require_request(&req, Role::Operator, "PauseJob")?;
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
            .require_request(&req, Role::Operator, "ResumeJob")?;
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
            .require_request(&req, Role::Operator, "UpdateJob")?;
        let req = requests::UpdateJob::try_from(req.into_inner())?;
        let current = self.job(&req.name)?;
        // Validate the combination that will be in force, so nothing invalid is ever stored.
        Schedule::parse(
            req.schedule.as_deref().unwrap_or(&current.schedule),
            req.timezone.as_deref().unwrap_or(&current.timezone),
        )
        .map_err(|e| match e {
            cron::ScheduleError::Cron { .. } | cron::ScheduleError::Timezone(_) => {
                Status::invalid_argument(e.to_string())
            }
        })?;
        let changes = JobChanges {
            schedule: req.schedule,
            timezone: req.timezone,
            enabled: req.enabled,
            overlap_policy: req.overlap_policy,
            missed_tick_policy: req.missed_tick_policy,
            catch_up_window_secs: req.catch_up_window_secs,
            timeout_secs: req.timeout_secs,
            max_retries: req.max_retries,
        };
        let updated = self
            .change_job(&current.name, changes, who.as_ref())
            .await?;
        tracing::info!(job = %updated.name, schedule = %updated.schedule, timezone = %updated.timezone, enabled = updated.enabled, "job updated");
        Ok(Response::new(self.job_with_last_run(&updated).await?))
    }

    async fn list_reports(
        &self,
        req: Request<v1::ListReportsRequest>,
    ) -> Result<Response<v1::ListReportsResponse>, Status> {
        let _who = self
            .app
            .auth
            .require_request(&req, Role::Viewer, "ListReports")?;
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 20,
            n => n.min(requests::MAX_PAGE),
        };
        let kind = requests::text("kind", &req.kind)?.trim();
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
            .require_request(&req, Role::Viewer, "GetReport")?;
        let id = require_name("id", &req.into_inner().id)?;
        let r = self
            .app
            .store
            .report(&id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no report with id '{id}'")))?;
        Ok(Response::new(report_to_proto(&r)))
    }
}

/// "cancelled by 'alice': the reason", as the run records it.
fn cancel_reason(who: Option<&Principal>, reason: Option<&str>) -> String {
    let by = who.map_or("an operator".to_string(), |p| format!("'{}'", p.name));
    match reason {
        None => format!("cancelled by {by}"),
        Some(r) => format!("cancelled by {by}: {r}"),
    }
}

/// The settlement that cancels queued run `r`.
fn cancel_queued(r: &run::Model, reason: String) -> SettleRow {
    SettleRow {
        run_id: r.id.clone(),
        attempt: r.attempt,
        settlement: Settlement::Cancelled {
            reason: Some(reason),
            summary: None,
            from_queue: true,
        },
        lease_expired_before: None,
    }
}
