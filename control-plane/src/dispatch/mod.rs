//! The dispatcher: claims queued runs in batches, starts an attempt for each on a live
//! executor, and keeps the leases of all of this replica's attempts in one statement.
//!
//! It sleeps until something can be dispatched: a run queued here, a slot freed, a retry's
//! backoff ending, an executor registering, or a slow fallback poll for runs queued by other
//! replicas. A claim takes as many runs as the replica has room for, so under load one
//! statement starts many runs. An attempt whose executor dies, stops heartbeating or breaks
//! the stream fails and is retried (attempt + 1, exponential backoff) up to the job's limit;
//! an attempt whose replica dies is found by its expired lease (`maintenance::rescuer`).
//! Results are written with the attempt number as fencing token, so a superseded attempt's
//! late result is rejected.
mod attempt;
pub mod channels;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::ClientTlsConfig;

use crate::{
    app::SharedApp,
    engine::attempts::Signal,
    lifecycle::Settlement,
    store::{self, executor, lifecycle::SettleRow},
};

use attempt::Attempt;
use channels::Channels;

/// How often the dispatcher looks for runs it was not told about (queued by another replica).
const FALLBACK_POLL: Duration = Duration::from_secs(10);
/// While runs wait and no executor is live, how often to look for one.
const NO_EXECUTOR_POLL: Duration = Duration::from_secs(1);
/// The control plane's own deadline is the job timeout plus this, so the executor's timeout
/// (which reports a partial summary) normally wins.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// An attempt task joined: only a panic is left to report.
fn reaped(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        tracing::error!(error = %e, "dispatch task panicked");
    }
}

/// What a dispatch round found.
enum Round {
    /// It took as many runs as there was room for: more may wait.
    Full,
    /// No room: look again when an attempt ends.
    NoRoom,
    /// Nothing (more) to take now: look again after this, or when woken.
    Idle(Duration),
}

pub struct Dispatcher {
    app: SharedApp,
    channels: Arc<Channels>,
    no_executor_warned: Option<tokio::time::Instant>,
}

impl Dispatcher {
    pub fn new(app: SharedApp, tls: ClientTlsConfig) -> Self {
        Self {
            app,
            channels: Arc::new(Channels::new(tls)),
            no_executor_warned: None,
        }
    }

    /// Runs until `stop`; then stops claiming, gives running attempts the shutdown grace to
    /// finish, and hands the rest over to other replicas.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut inflight: JoinSet<()> = JoinSet::new();
        let handover = CancellationToken::new();
        let lease = self.app.config.run_lease();
        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_look = tokio::time::Instant::now();
        // Runs may be waiting that the last round had no room for: look again as soon as an
        // attempt ends, not only when woken.
        let mut waiting = true;
        loop {
            let timed = self
                .app
                .dispatch
                .next_due(Utc::now())
                .and_then(|d| (d - Utc::now()).to_std().ok())
                .map_or(next_look, |d| {
                    next_look.min(tokio::time::Instant::now() + d)
                });
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.app.dispatch.notified() => {}
                () = tokio::time::sleep_until(timed) => {}
                _ = renew.tick(), if !self.app.attempts.is_empty() => {
                    self.renew_leases().await;
                    continue;
                }
                Some(res) = inflight.join_next(), if !inflight.is_empty() => {
                    reaped(res);
                    if !waiting {
                        continue;
                    }
                }
            }
            let round = self.dispatch_ready(&mut inflight, &handover).await;
            (waiting, next_look) = match round {
                Ok(Round::Full) => (true, tokio::time::Instant::now()),
                Ok(Round::NoRoom) => (true, tokio::time::Instant::now() + FALLBACK_POLL),
                Ok(Round::Idle(wait)) => (false, tokio::time::Instant::now() + wait),
                Err(e) => {
                    tracing::warn!(error = %e, "dispatch round failed");
                    (true, tokio::time::Instant::now() + NO_EXECUTOR_POLL)
                }
            };
        }
        self.drain(inflight, handover).await;
    }

    async fn drain(&self, mut inflight: JoinSet<()>, handover: CancellationToken) {
        if inflight.is_empty() {
            return;
        }
        let grace = Duration::from_millis(self.app.config.shutdown_grace_ms);
        tracing::info!(
            running = inflight.len(),
            ?grace,
            "draining: waiting for running runs"
        );
        let lease = self.app.config.run_lease();
        let drained = tokio::time::timeout(grace, async {
            let mut renew = tokio::time::interval(lease / 3);
            loop {
                tokio::select! {
                    next = inflight.join_next() => if next.is_none() { break },
                    _ = renew.tick() => self.renew_leases().await,
                }
            }
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

    /// The executors that are live now, from memory, refreshed from the database when the
    /// view is older than a second (executors that heartbeat to other replicas).
    async fn live_executors(&self) -> store::Result<Vec<executor::Model>> {
        let book = &self.app.executors;
        if book.stale(Duration::from_secs(1)) {
            book.refresh(self.app.store.executors(None).await?);
        }
        Ok(book.live(self.app.config.executor_timeout(), store::now()))
    }

    /// One round: claims as many runs as this replica has room for and starts them.
    async fn dispatch_ready(
        &mut self,
        inflight: &mut JoinSet<()>,
        handover: &CancellationToken,
    ) -> store::Result<Round> {
        // A JoinSet counts finished tasks until they are joined; the loop joins one per turn,
        // so reap them all here, or `room` would count ended attempts and, under load, shrink
        // to one run per round (seen: 5,000 queued runs dispatched one at a time).
        while let Some(res) = inflight.try_join_next() {
            reaped(res);
        }
        let room = self
            .app
            .config
            .max_concurrent_runs
            .saturating_sub(inflight.len());
        if self.app.is_draining() {
            return Ok(Round::Idle(FALLBACK_POLL));
        }
        if room == 0 {
            return Ok(Round::NoRoom);
        }
        let live = self.live_executors().await?;
        let now = store::now();
        if live.is_empty() {
            if self.app.store.runs_waiting(now).await? {
                if self
                    .no_executor_warned
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    tracing::warn!("runs are queued but no executor is live");
                    self.no_executor_warned = Some(tokio::time::Instant::now());
                }
                return Ok(Round::Idle(NO_EXECUTOR_POLL));
            }
            return Ok(Round::Idle(FALLBACK_POLL));
        }
        let jobs = self.app.jobs.all();
        let names: Vec<String> = jobs.keys().cloned().collect();
        let lease_until =
            now + chrono::Duration::from_std(self.app.config.run_lease()).unwrap_or_default();
        let mut load: HashMap<String, i64> = live
            .iter()
            .map(|e| (e.id.clone(), i64::from(e.running)))
            .collect();
        // The least loaded live executor offering each run's job, chosen as the claim runs, so
        // the run is never seen running without its executor.
        let assign = |runs: &[store::run::Model]| {
            runs.iter()
                .filter_map(|r| {
                    let job = jobs.get(&r.job)?;
                    let exec = channels::pick(&live, &load, &r.job)?;
                    *load.entry(exec.id.clone()).or_default() += 1;
                    let timeout =
                        Duration::from_secs(u64::try_from(job.timeout_secs).unwrap_or(3600))
                            + TIMEOUT_GRACE;
                    let deadline = now + chrono::Duration::from_std(timeout).unwrap_or_default();
                    Some((r.id.clone(), exec.id.clone(), deadline))
                })
                .collect()
        };
        let claimed = self
            .app
            .store
            .claim(
                &self.app.replica_id,
                &names,
                room as u64,
                lease_until,
                now,
                assign,
            )
            .await?;
        let full = claimed.len() == room;
        for run in claimed {
            let Some(job) = jobs.get(&run.job).cloned() else {
                self.fail_unrunnable(&run, format!("job '{}' no longer exists", run.job));
                continue;
            };
            let Some(exec) = run
                .executor_id
                .as_deref()
                .and_then(|id| live.iter().find(|e| e.id == id))
            else {
                // Retrying cannot help a job no executor has: fail it now, clearly.
                let ids: Vec<&str> = live.iter().map(|e| e.id.as_str()).collect();
                self.fail_unrunnable(
                    &run,
                    format!(
                        "no live executor offers job '{}' (live executors: {})",
                        run.job,
                        ids.join(", ")
                    ),
                );
                continue;
            };
            let timeout = Duration::from_secs(u64::try_from(job.timeout_secs).unwrap_or(3600));
            let signals = self.app.attempts.start(&run.id, run.attempt, &exec.id);
            let attempt = Attempt::new(
                self.app.clone(),
                self.channels.clone(),
                run,
                job,
                exec.clone(),
                handover.clone(),
                signals,
                timeout + TIMEOUT_GRACE,
            );
            inflight.spawn(attempt.run());
        }
        Ok(if full {
            Round::Full
        } else {
            Round::Idle(FALLBACK_POLL)
        })
    }

    /// A claimed run nobody can ever run: failed at once, not retried.
    fn fail_unrunnable(&self, run: &store::run::Model, error: String) {
        let app = self.app.clone();
        let row = SettleRow {
            run_id: run.id.clone(),
            attempt: run.attempt,
            settlement: Settlement::Failed {
                error,
                from_queue: false,
            },
            lease_expired_before: None,
        };
        tokio::spawn(async move {
            if let Err(e) = app.completer.settle(row).await {
                tracing::error!(error = %e, "cannot fail an unrunnable run");
            }
        });
    }

    /// Renews the leases of every attempt running here in one statement, and tells each
    /// attempt what changed: superseded, cancel requested, or its executor gone.
    async fn renew_leases(&self) {
        let running = self.app.attempts.list();
        if running.is_empty() {
            return;
        }
        let now = store::now();
        let lease_until =
            now + chrono::Duration::from_std(self.app.config.run_lease()).unwrap_or_default();
        let ids: Vec<(String, i32)> = running
            .iter()
            .map(|(id, attempt, _)| (id.clone(), *attempt))
            .collect();
        match self
            .app
            .store
            .renew(&self.app.replica_id, &ids, lease_until)
            .await
        {
            Ok(held) => {
                let held: HashMap<&str, &store::lifecycle::Renewed> =
                    held.iter().map(|r| (r.run_id.as_str(), r)).collect();
                for (id, attempt, _) in &running {
                    match held.get(id.as_str()) {
                        None => {
                            tracing::info!(run_id = %id, attempt, "attempt no longer ours; stopping it");
                            self.app.attempts.signal(id, Signal::Superseded);
                        }
                        Some(r) if r.cancel_requested => {
                            self.app.attempts.signal(
                                id,
                                Signal::Cancel {
                                    reason: r.reason.clone(),
                                },
                            );
                        }
                        Some(_) => {}
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew leases"),
        }
        // Executors that stopped heartbeating take their attempts with them.
        let timeout = self.app.config.executor_timeout();
        if let Ok(live) = self.live_executors().await {
            for (id, _, executor_id) in &running {
                if live.iter().any(|e| &e.id == executor_id) {
                    continue;
                }
                let reason = match self.app.executors.get(executor_id) {
                    Some(e) => {
                        let silent = (Utc::now() - e.last_heartbeat_at)
                            .to_std()
                            .unwrap_or_default();
                        if silent > timeout {
                            format!(
                                "executor {executor_id} stopped heartbeating ({}ms ago)",
                                silent.as_millis()
                            )
                        } else {
                            continue;
                        }
                    }
                    None => format!("executor {executor_id} deregistered or is unknown"),
                };
                self.app.attempts.signal(id, Signal::ExecutorLost(reason));
            }
        }
    }
}
