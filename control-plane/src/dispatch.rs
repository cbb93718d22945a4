//! Dispatcher: claims queued runs, sends `Executor.RunJob` to a live executor, persists every
//! streamed event and the outcome, and keeps a lease on each running attempt.
//!
//! Failure handling lives here too: an attempt whose executor dies, stops heartbeating or
//! breaks the stream is retried (attempt + 1, exponential backoff) up to the job's limit; an
//! attempt whose dispatching replica dies is found by its expired lease and retried by any
//! replica. Results are written with the attempt number as fencing token, so a superseded
//! attempt's late result is rejected.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument;

use ticketmax_proto::{
    json_to_struct, struct_to_json, to_timestamp,
    v1::{
        CancelTaskRequest, ExecutorEvent, RunJobRequest, RunState, executor_client::ExecutorClient,
        executor_event::Kind,
    },
};

use crate::{
    app::SharedApp,
    store::{self, Outcome, executor, job, run, state},
};

const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The control plane's own deadline is the job timeout plus this, so the executor's timeout
/// (which reports a partial summary) normally wins.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// One lazily connected channel per executor address; https:// addresses use the configured
/// CA (and this replica's certificate, for mutual TLS).
struct Channels {
    map: Mutex<HashMap<String, Channel>>,
    tls: ClientTlsConfig,
}

impl Channels {
    fn get(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(address.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if address.starts_with("https://") {
            endpoint = endpoint.tls_config(self.tls.clone())?;
        }
        let channel = endpoint.connect_lazy();
        map.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

pub struct Dispatcher {
    app: SharedApp,
    channels: std::sync::Arc<Channels>,
}

impl Dispatcher {
    pub fn new(app: SharedApp, tls: ClientTlsConfig) -> Self {
        Self {
            app,
            channels: std::sync::Arc::new(Channels {
                map: Mutex::new(HashMap::new()),
                tls,
            }),
        }
    }

    /// Runs until `cancel`; then stops claiming, gives running attempts the shutdown grace to
    /// finish, and hands the rest over to other replicas.
    pub async fn run(self, cancel: CancellationToken) {
        let mut inflight: JoinSet<()> = JoinSet::new();
        let handover = CancellationToken::new();
        let mut last_reap = tokio::time::Instant::now();
        let mut no_executor_warned = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.app.dispatch_wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                Some(res) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Err(e) = res {
                        tracing::error!(error = %e, "dispatch task panicked");
                    }
                    continue;
                }
            }
            if last_reap.elapsed() >= Duration::from_secs(1) {
                last_reap = tokio::time::Instant::now();
                if let Err(e) = reap_expired_leases(&self.app).await {
                    tracing::warn!(error = %e, "could not reap expired leases");
                }
            }
            match self.dispatch_ready(&mut inflight, &handover).await {
                Ok(true) => {}
                Ok(false) => {
                    if no_executor_warned.elapsed() > Duration::from_secs(10) {
                        tracing::warn!("runs are queued but no executor is live");
                        no_executor_warned = tokio::time::Instant::now();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dispatch round failed"),
            }
        }
        if !inflight.is_empty() {
            let grace = Duration::from_millis(self.app.config.shutdown_grace_ms);
            tracing::info!(
                running = inflight.len(),
                ?grace,
                "draining: waiting for running runs"
            );
            let drained = tokio::time::timeout(grace, async {
                while inflight.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    running = inflight.len(),
                    "grace period over: handing running runs over to other replicas"
                );
                handover.cancel();
                while inflight.join_next().await.is_some() {}
            }
        }
    }

    /// One round: claims as many dispatchable runs as this replica has room for. Returns false
    /// when runs wait but no executor is live.
    async fn dispatch_ready(
        &self,
        inflight: &mut JoinSet<()>,
        handover: &CancellationToken,
    ) -> Result<bool, store::StoreError> {
        let room = self
            .app
            .config
            .max_concurrent_runs
            .saturating_sub(inflight.len());
        if room == 0 || self.app.is_draining() {
            return Ok(true);
        }
        let runs = self.app.store.dispatchable(room as u64).await?;
        if runs.is_empty() {
            return Ok(true);
        }
        let live = live_executors(&self.app).await?;
        if live.is_empty() {
            return Ok(false);
        }
        let mut load: HashMap<&str, i64> = live
            .iter()
            .map(|e| (e.id.as_str(), i64::from(e.running)))
            .collect();
        for r in runs {
            let Some(job) = self.app.store.job(&r.job).await? else {
                continue;
            };
            let Some(exec) = pick_executor(&live, &load, &r.job) else {
                // Retrying cannot help a job no executor has: fail it now, clearly.
                let ids: Vec<&str> = live.iter().map(|e| e.id.as_str()).collect();
                let error = format!(
                    "no live executor offers job '{}' (live executors: {})",
                    r.job,
                    ids.join(", ")
                );
                let outcome = Outcome {
                    state: state::FAILED,
                    summary: None,
                    error: Some(error),
                    reason: None,
                };
                finish(&self.app, &r, &[state::QUEUED], outcome).await;
                continue;
            };
            let timeout = Duration::from_secs(u64::try_from(job.timeout_secs).unwrap_or(3600));
            let Some(claimed) = self
                .app
                .store
                .claim(
                    &r,
                    &self.app.replica_id,
                    &exec.id,
                    self.app.config.run_lease(),
                    timeout + TIMEOUT_GRACE,
                )
                .await?
            else {
                continue; // another replica took it
            };
            *load.entry(exec.id.as_str()).or_default() += 1;
            let attempt = Attempt {
                app: self.app.clone(),
                channels: self.channels.clone(),
                run: claimed,
                job,
                executor: exec.clone(),
                handover: handover.clone(),
            };
            let span = tracing::info_span!("dispatch", job = %attempt.run.job, run_id = %attempt.run.id, attempt = attempt.run.attempt, executor = %attempt.executor.id, trace_id = tracing::field::Empty, outcome = tracing::field::Empty);
            if let Some(tp) = &attempt.run.trace_parent {
                ticketmax_proto::telemetry::adopt_traceparent(&span, tp);
            }
            // Every log line of the run carries the trace id (span fields are part of each line).
            let trace_id = ticketmax_proto::telemetry::trace_id(&span);
            if !trace_id.is_empty() {
                span.record("trace_id", trace_id.as_str());
            }
            inflight.spawn(attempt.run().instrument(span));
        }
        Ok(true)
    }
}

async fn live_executors(app: &SharedApp) -> Result<Vec<executor::Model>, store::StoreError> {
    let since = store::now()
        - chrono::Duration::from_std(app.config.executor_timeout()).unwrap_or_default();
    app.store.executors(Some(since)).await
}

pub fn executor_jobs(e: &executor::Model) -> Vec<String> {
    serde_json::from_str(&e.jobs).unwrap_or_default()
}

/// The least loaded live executor that offers the job.
fn pick_executor<'a>(
    live: &'a [executor::Model],
    load: &HashMap<&str, i64>,
    job: &str,
) -> Option<&'a executor::Model> {
    live.iter()
        .filter(|e| executor_jobs(e).iter().any(|j| j == job))
        .min_by_key(|e| (load.get(e.id.as_str()).copied().unwrap_or(0), e.id.clone()))
}

fn backoff(job: &job::Model, attempt: i32) -> Duration {
    let base = Duration::from_secs(u64::try_from(job.retry_backoff_secs).unwrap_or(5));
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    base.saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_BACKOFF)
}

/// Ends a failed attempt: retried as the next attempt while the job has retries left.
async fn attempt_failed(app: &SharedApp, run: &run::Model, job: &job::Model, error: &str) {
    if run.attempt <= job.max_retries {
        let wait = backoff(job, run.attempt);
        match app.store.requeue(&run.id, run.attempt, wait, error).await {
            Ok(true) => {
                tracing::warn!(job = %run.job, run_id = %run.id, attempt = run.attempt, error, retry_in = ?wait, "attempt failed; retrying");
                app.record_state(
                    &run.id,
                    state::QUEUED,
                    run.attempt + 1,
                    &format!(
                        "attempt {} failed: {error}; retrying in {}s as attempt {}",
                        run.attempt,
                        wait.as_secs(),
                        run.attempt + 1
                    ),
                )
                .await;
                app.dispatch_wake.notify_one();
            }
            Ok(false) => {
                tracing::info!(run_id = %run.id, attempt = run.attempt, "attempt already settled elsewhere")
            }
            Err(e) => tracing::error!(run_id = %run.id, error = %e, "cannot requeue run"),
        }
        return;
    }
    let outcome = Outcome {
        state: state::FAILED,
        summary: None,
        error: Some(error.to_string()),
        reason: None,
    };
    finish(app, run, &[state::RUNNING], outcome).await;
}

/// Writes a terminal state (fenced) and its event.
async fn finish(app: &SharedApp, run: &run::Model, from: &[&str], outcome: Outcome<'_>) {
    let st = outcome.state;
    tracing::Span::current().record("outcome", st);
    match app.store.finish(&run.id, run.attempt, from, outcome).await {
        Ok(Some(done)) => {
            if let (Some(start), Some(end)) = (done.started_at, done.finished_at) {
                #[allow(clippy::cast_precision_loss)]
                let secs = (end - start).num_milliseconds().max(0) as f64 / 1000.0;
                app.metrics.run_finished(&done.job, st, secs);
            }
            let summary = done.summary.clone().unwrap_or_else(|| "{}".into());
            tracing::info!(job = %done.job, run_id = %done.id, attempt = done.attempt, state = st, summary = %summary, "run {st}");
            app.events_wake.notify_waiters();
            app.dispatch_wake.notify_one();
        }
        Ok(None) => tracing::warn!(
            run_id = %run.id,
            attempt = run.attempt,
            state = st,
            "result rejected: the attempt was superseded or already finished"
        ),
        Err(e) => tracing::error!(run_id = %run.id, error = %e, "cannot record the end of a run"),
    }
}

/// Running attempts whose dispatching replica stopped renewing the lease.
async fn reap_expired_leases(app: &SharedApp) -> Result<(), store::StoreError> {
    for r in app.store.expired_leases(100).await? {
        let Some(job) = app.store.job(&r.job).await? else {
            continue;
        };
        let owner = r.owner.clone().unwrap_or_default();
        if r.cancel_requested {
            let outcome = Outcome {
                state: state::CANCELLED,
                summary: None,
                error: None,
                reason: Some("cancelled; the dispatching replica was lost"),
            };
            finish(app, &r, &[state::RUNNING], outcome).await;
        } else {
            attempt_failed(
                app,
                &r,
                &job,
                &format!("lease expired: replica {owner} stopped renewing it"),
            )
            .await;
        }
    }
    Ok(())
}

struct Attempt {
    app: SharedApp,
    channels: std::sync::Arc<Channels>,
    run: run::Model,
    job: job::Model,
    executor: executor::Model,
    handover: CancellationToken,
}

enum Settled {
    Done,
    Failed(String),
}

impl Attempt {
    async fn run(self) {
        tracing::info!(job = %self.run.job, run_id = %self.run.id, attempt = self.run.attempt, executor = %self.executor.id, "dispatching");
        self.app
            .record_state(
                &self.run.id,
                state::RUNNING,
                self.run.attempt,
                &format!(
                    "attempt {} on executor {}",
                    self.run.attempt, self.executor.id
                ),
            )
            .await;
        match self.stream().await {
            Settled::Done => {}
            Settled::Failed(error) => attempt_failed(&self.app, &self.run, &self.job, &error).await,
        }
    }

    fn client(&self) -> Result<ExecutorClient<Channel>, String> {
        self.channels
            .get(&self.executor.address)
            .map(ExecutorClient::new)
            .map_err(|e| format!("bad executor address {}: {e}", self.executor.address))
    }

    async fn stream(&self) -> Settled {
        let mut client = match self.client() {
            Ok(c) => c,
            Err(e) => return Settled::Failed(e),
        };
        let params = self
            .run
            .params
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .map(|v| json_to_struct(&v));
        let request = RunJobRequest {
            run_id: self.run.id.clone(),
            job: self.run.job.clone(),
            attempt: u32::try_from(self.run.attempt).unwrap_or(1),
            scheduled_for: Some(to_timestamp(self.run.scheduled_for)),
            idempotency_key: format!(
                "{}|{}|{}",
                self.run.job,
                self.run.scheduled_for.to_rfc3339(),
                self.run.attempt
            ),
            params,
            timezone: self.job.timezone.clone(),
            timeout_seconds: u32::try_from(self.job.timeout_secs).unwrap_or(0),
            // A scheduled run's windows are computed from its tick (`scheduled_for`).
            trigger: match self.run.trigger.as_str() {
                "schedule" => ticketmax_proto::v1::Trigger::Schedule,
                _ => ticketmax_proto::v1::Trigger::Manual,
            }
            .into(),
        };
        let mut request = tonic::Request::new(request);
        ticketmax_proto::telemetry::inject(&tracing::Span::current(), request.metadata_mut());
        self.authenticate(request.metadata_mut());
        let mut stream = match client.run_job(request).await {
            Ok(s) => s.into_inner(),
            Err(status) => {
                return Settled::Failed(format!(
                    "executor {} refused the run: {} {}",
                    self.executor.id,
                    status.code(),
                    status.message()
                ));
            }
        };
        let lease = self.app.config.run_lease();
        let mut renew = tokio::time::interval(lease / 3);
        renew.tick().await;
        let deadline = self
            .run
            .deadline_at
            .map(|d| (d - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600));
        let deadline = tokio::time::sleep(deadline);
        tokio::pin!(deadline);
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(ev)) => {
                        if let Some(settled) = self.on_event(ev).await {
                            return settled;
                        }
                    }
                    Ok(None) => return Settled::Failed(format!("executor {} closed the stream without a result", self.executor.id)),
                    Err(status) => return Settled::Failed(format!("executor {} failed: {} {}", self.executor.id, status.code(), status.message())),
                },
                _ = renew.tick() => {
                    match self.app.store.renew(&self.run.id, self.run.attempt, &self.app.replica_id, lease).await {
                        Ok(None) => {
                            tracing::info!(run_id = %self.run.id, "attempt no longer ours; stopping it");
                            self.cancel_on_executor(&mut client).await;
                            return Settled::Done;
                        }
                        Ok(Some(true)) if !cancel_sent => {
                            cancel_sent = true;
                            self.cancel_on_executor(&mut client).await;
                        }
                        Ok(Some(_)) => {}
                        Err(e) => tracing::warn!(run_id = %self.run.id, error = %e, "cannot renew lease"),
                    }
                    if let Some(reason) = self.executor_lost().await {
                        return Settled::Failed(reason);
                    }
                }
                () = &mut deadline => {
                    self.cancel_on_executor(&mut client).await;
                    let outcome = Outcome { state: state::TIMED_OUT, summary: None, error: Some(format!("no result within the timeout of {}s", self.job.timeout_secs)), reason: None };
                    finish(&self.app, &self.run, &[state::RUNNING], outcome).await;
                    return Settled::Done;
                }
                () = self.handover.cancelled() => {
                    self.cancel_on_executor(&mut client).await;
                    return Settled::Failed(format!("handed over: replica {} shut down", self.app.replica_id));
                }
            }
        }
    }

    /// Executors that require the shared executor secret get it with every RunJob.
    fn authenticate(&self, md: &mut tonic::metadata::MetadataMap) {
        if let Some(token) = self.app.auth.executor_token()
            && let Ok(v) = format!("Bearer {token}").parse()
        {
            md.insert("authorization", v);
        }
    }

    /// The executor is gone when its heartbeats stopped (or it deregistered).
    async fn executor_lost(&self) -> Option<String> {
        match self.app.store.executor(&self.executor.id).await {
            Ok(Some(e)) if e.deregistered => Some(format!("executor {} deregistered", e.id)),
            Ok(Some(e)) => {
                let silent = (Utc::now() - e.last_heartbeat_at)
                    .to_std()
                    .unwrap_or_default();
                (silent > self.app.config.executor_timeout()).then(|| {
                    format!(
                        "executor {} stopped heartbeating ({}ms ago)",
                        e.id,
                        silent.as_millis()
                    )
                })
            }
            Ok(None) => Some(format!("executor {} is unknown", self.executor.id)),
            Err(_) => None,
        }
    }

    async fn cancel_on_executor(&self, client: &mut ExecutorClient<Channel>) {
        let mut req = tonic::Request::new(CancelTaskRequest {
            run_id: self.run.id.clone(),
            attempt: u32::try_from(self.run.attempt).unwrap_or(1),
        });
        self.authenticate(req.metadata_mut());
        if let Err(e) = client.cancel_run(req).await {
            tracing::warn!(run_id = %self.run.id, error = %e, "could not ask the executor to cancel");
        }
    }

    /// Persists one streamed event; returns how the attempt settled when it was the last one.
    async fn on_event(&self, ev: ExecutorEvent) -> Option<Settled> {
        let id = &self.run.id;
        match ev.kind? {
            Kind::Started(s) => {
                self.app
                    .record_event(id, "log", serde_json::json!({"level": "info", "message": format!("started on executor {}", s.executor_id)}))
                    .await;
                None
            }
            Kind::Progress(p) => {
                self.app
                    .record_event(
                        id,
                        "progress",
                        serde_json::json!({"done": p.done, "total": p.total, "message": p.message}),
                    )
                    .await;
                None
            }
            Kind::Log(l) => {
                self.app
                    .record_event(
                        id,
                        "log",
                        serde_json::json!({"level": l.level, "message": l.message}),
                    )
                    .await;
                None
            }
            Kind::Finished(f) => Some(self.on_finished(f).await),
        }
    }

    async fn on_finished(&self, f: ticketmax_proto::v1::Finished) -> Settled {
        let summary = f.summary.as_ref().map(|s| struct_to_json(s).to_string());
        let outcome = RunState::try_from(f.outcome).unwrap_or(RunState::Failed);
        let error = (!f.error.is_empty()).then(|| f.error.clone());
        if outcome == RunState::Failed {
            // Keep the partial summary of a failed attempt in the error for the record.
            let error = error.unwrap_or_else(|| "the task failed".into());
            return Settled::Failed(error);
        }
        for r in &f.reports {
            let body = r
                .body
                .as_ref()
                .map(|b| struct_to_json(b).to_string())
                .unwrap_or_else(|| "{}".into());
            if let Err(e) = self
                .app
                .store
                .insert_report(&r.kind, &r.period, &self.run.job, &self.run.id, body)
                .await
            {
                tracing::error!(run_id = %self.run.id, error = %e, "cannot store a report");
            }
        }
        let st = match outcome {
            RunState::Succeeded => state::SUCCEEDED,
            RunState::Cancelled => state::CANCELLED,
            RunState::TimedOut => state::TIMED_OUT,
            _ => state::FAILED,
        };
        let reason = (st == state::CANCELLED).then_some("cancelled on request");
        let outcome = Outcome {
            state: st,
            summary,
            error,
            reason,
        };
        finish(&self.app, &self.run, &[state::RUNNING], outcome).await;
        Settled::Done
    }
}
