//! Fires schedules. tokio-cron-scheduler wakes this replica at each job's ticks; every tick
//! becomes a durable run row keyed by (job, tick) before anything is dispatched, so replicas
//! that fire the same tick record it once. The leader also sweeps for ticks nobody recorded
//! (all replicas were down, or a wake-up came late) and records them per the job's missed-tick
//! policy, so no tick is silently lost.
use std::{collections::HashMap, collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    app::SharedApp,
    cron::Schedule,
    store::{self, Created, NewRun, job, missed, trigger},
};

/// How long after a tick the sweeper waits before it considers the tick missed.
const MISSED_GRACE: chrono::Duration = chrono::Duration::seconds(2);
/// How far back the sweeper looks for holes while replicas are up.
const SWEEP_LOOKBACK: chrono::Duration = chrono::Duration::seconds(120);
/// At most this many missed ticks of one job are recorded per sweep.
const MAX_MISSED_TICKS: usize = 1000;
const LEADER_LEASE: &str = "scheduler";

#[derive(PartialEq, Eq, Clone)]
struct Registered {
    cron_id: Uuid,
    schedule: String,
    timezone: String,
}

pub struct Scheduler {
    app: SharedApp,
    cron: JobScheduler,
    registered: HashMap<String, Registered>,
    /// When this replica's cron registrations were first in place. A tick missing from after
    /// this moment was not missed by an outage but fired late here (a stall, a database error,
    /// a schedule change racing its tick): the missed-tick policy is not for it.
    firing_since: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("cron scheduler: {0}")]
    Cron(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl Scheduler {
    pub async fn new(app: SharedApp) -> Result<Self, SchedulerError> {
        let cron = JobScheduler::new().await?;
        Ok(Self {
            app,
            cron,
            registered: HashMap::new(),
            firing_since: None,
        })
    }

    /// Runs until `cancel`: keeps the cron registrations in line with the jobs table (other
    /// replicas and the API change it), holds or follows the leader lease, and sweeps for
    /// missed ticks while leader.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), SchedulerError> {
        self.cron.start().await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            let periodic = tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => true,
                () = self.app.schedules_changed.notified() => false,
            };
            match self.reconcile().await {
                Ok(()) => {
                    self.firing_since.get_or_insert_with(Utc::now);
                }
                Err(e) => tracing::warn!(error = %e, "could not refresh cron registrations"),
            }
            if periodic {
                if n.is_multiple_of(2) {
                    self.lead_and_sweep().await;
                }
                n += 1;
            }
        }
        self.cron.shutdown().await?;
        if self.app.is_leader() {
            let _ = self
                .app
                .store
                .release_lease(LEADER_LEASE, &self.app.replica_id)
                .await;
            self.app.set_leader(false);
        }
        Ok(())
    }

    async fn lead_and_sweep(&self) {
        let lease = Duration::from_secs(6);
        match self
            .app
            .store
            .hold_lease(LEADER_LEASE, &self.app.replica_id, lease)
            .await
        {
            Ok(leader) => {
                if leader != self.app.is_leader() {
                    tracing::info!(
                        replica = %self.app.replica_id,
                        role = if leader { "leader" } else { "follower" },
                        "scheduler role changed"
                    );
                }
                self.app.set_leader(leader);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the leader lease");
                self.app.set_leader(false);
            }
        }
        if self.app.is_leader() {
            if let Err(e) = sweep_missed(&self.app, self.firing_since).await {
                tracing::warn!(error = %e, "missed-tick sweep failed");
            }
            let store = &self.app.store;
            let counts = async {
                Ok::<_, store::StoreError>((
                    store.count_in_state(store::state::QUEUED).await?,
                    store.count_in_state(store::state::RUNNING).await?,
                ))
            };
            self.app.metrics.set_run_gauges(counts.await.ok());
        } else {
            self.app.metrics.set_run_gauges(None);
        }
    }

    async fn reconcile(&mut self) -> Result<(), SchedulerError> {
        let jobs = self.app.store.jobs(None).await?;
        let mut wanted = HashSet::new();
        for j in jobs.iter().filter(|j| j.enabled) {
            wanted.insert(j.name.clone());
            let same = self
                .registered
                .get(&j.name)
                .is_some_and(|r| r.schedule == j.schedule && r.timezone == j.timezone);
            if same {
                continue;
            }
            if let Some(old) = self.registered.remove(&j.name) {
                self.cron.remove(&old.cron_id).await?;
            }
            match self.register(j).await {
                Ok(cron_id) => {
                    self.registered.insert(
                        j.name.clone(),
                        Registered {
                            cron_id,
                            schedule: j.schedule.clone(),
                            timezone: j.timezone.clone(),
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(job = %j.name, schedule = %j.schedule, error = %e, "cannot schedule job")
                }
            }
        }
        let stale: Vec<String> = self
            .registered
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for name in stale {
            if let Some(old) = self.registered.remove(&name) {
                self.cron.remove(&old.cron_id).await?;
            }
        }
        Ok(())
    }

    async fn register(&self, j: &job::Model) -> Result<Uuid, SchedulerError> {
        let schedule = Schedule::parse(&j.schedule, &j.timezone)
            .map_err(|e| SchedulerError::Store(store::StoreError::Corrupt(e.to_string())))?;
        let app = self.app.clone();
        let name = j.name.clone();
        let tz = schedule.tz;
        let cron_job = CronJob::new_async_tz(schedule.normalized.as_str(), tz, move |_, _| {
            let app = app.clone();
            let name = name.clone();
            Box::pin(async move { fire(&app, &name).await })
        })?;
        Ok(self.cron.add(cron_job).await?)
    }
}

/// Records the tick that just came due for `name`.
async fn fire(app: &SharedApp, name: &str) {
    if app.is_draining() {
        return;
    }
    let now = Utc::now();
    let job = match app.store.job(name).await {
        Ok(Some(j)) if j.enabled => j,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(job = name, error = %e, "cannot read job to fire it");
            return;
        }
    };
    let Ok(schedule) = Schedule::parse(&job.schedule, &job.timezone) else {
        return;
    };
    let Some(tick) = schedule.latest_at_or_before(now) else {
        return;
    };
    if tick < job.schedule_since {
        return;
    }
    record_tick(app, &job, tick, None).await;
}

async fn record_tick(app: &SharedApp, job: &job::Model, tick: DateTime<Utc>, skip: Option<String>) {
    let span = tracing::info_span!("tick", job = %job.name, scheduled_for = %tick, lateness_ms = (Utc::now() - tick).num_milliseconds());
    record_tick_in(app, job, tick, skip).instrument(span).await;
}

async fn record_tick_in(
    app: &SharedApp,
    job: &job::Model,
    tick: DateTime<Utc>,
    skip: Option<String>,
) {
    let new = NewRun {
        job,
        trigger: trigger::SCHEDULE,
        tick_at: Some(tick),
        scheduled_for: tick,
        idempotency_key: None,
        params: None,
        triggered_by: None,
        trace_parent: ticketmax_proto::telemetry::traceparent(&tracing::Span::current()),
        skip_reason: skip,
    };
    match app.store.create_run(new).await {
        Ok(Created::New(run)) => {
            let lateness = (Utc::now() - tick).num_milliseconds();
            #[allow(clippy::cast_precision_loss)]
            app.metrics.tick(
                &job.name,
                lateness as f64 / 1000.0,
                run.state == store::state::SKIPPED,
            );
            if run.state == store::state::SKIPPED {
                tracing::info!(job = %job.name, run_id = %run.id, scheduled_for = %tick, reason = run.reason.as_deref().unwrap_or(""), "tick skipped");
                app.record_state(
                    &run.id,
                    &run.state,
                    run.attempt,
                    run.reason.as_deref().unwrap_or("skipped"),
                )
                .await;
            } else {
                tracing::info!(job = %job.name, run_id = %run.id, scheduled_for = %tick, lateness_ms = lateness, "tick recorded");
                app.record_state(&run.id, &run.state, run.attempt, "scheduled tick")
                    .await;
                app.dispatch_wake.notify_one();
            }
        }
        Ok(Created::Existing(_)) => {}
        Err(e) => {
            tracing::error!(job = %job.name, scheduled_for = %tick, error = %e, "cannot record tick")
        }
    }
}

/// Records every tick of every enabled job that should exist by now but does not. Ticks from
/// before `firing_since` fell while no control plane fired them: the job's missed-tick policy
/// decides. Later ones were fired late by a running replica: the newest runs (within the
/// catch-up window, and unless a newer tick is already recorded) whatever the policy.
async fn sweep_missed(
    app: &SharedApp,
    firing_since: Option<DateTime<Utc>>,
) -> Result<(), store::StoreError> {
    let late = |t: DateTime<Utc>| firing_since.is_some_and(|since| t >= since);
    let now = Utc::now();
    for job in app
        .store
        .jobs(None)
        .await?
        .into_iter()
        .filter(|j| j.enabled)
    {
        let Ok(schedule) = Schedule::parse(&job.schedule, &job.timezone) else {
            continue;
        };
        let last = app.store.last_tick(&job.name).await?;
        let floor = match last {
            Some(last) => last.min(now - SWEEP_LOOKBACK),
            None => job.schedule_since,
        }
        .max(job.schedule_since);
        let expected = schedule.ticks_between(floor, now - MISSED_GRACE, MAX_MISSED_TICKS);
        if expected.is_empty() {
            continue;
        }
        let existing = app.store.ticks_since(&job.name, floor).await?;
        let missing: Vec<_> = expected
            .into_iter()
            .filter(|t| !existing.contains(&store::truncate(*t)))
            .collect();
        let Some(newest) = missing.last().copied() else {
            continue;
        };
        let window = chrono::Duration::seconds(i64::from(job.catch_up_window_secs));
        let run_newest = (job.missed_tick_policy == missed::RUN_ONCE || late(newest))
            && now - newest <= window
            && last.is_none_or(|l| newest > l);
        tracing::warn!(job = %job.name, missed = missing.len(), run_newest, late = late(newest), "recording missed ticks");
        for tick in missing {
            let skip = if tick == newest && run_newest {
                None
            } else if late(tick) {
                Some(if now - tick > window {
                    "missed: fired late, outside the catch-up window".to_string()
                } else {
                    "missed: fired late; a newer tick runs instead".to_string()
                })
            } else if now - tick > window {
                Some(
                    "missed: no control plane was running; outside the catch-up window".to_string(),
                )
            } else if job.missed_tick_policy == missed::SKIP {
                Some("missed: no control plane was running; missed-tick policy is skip".to_string())
            } else {
                Some("missed: a newer tick runs instead".to_string())
            };
            record_tick(app, &job, tick, skip).await;
        }
    }
    Ok(())
}
