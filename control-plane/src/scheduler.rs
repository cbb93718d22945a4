//! The ticker: fires every enabled job's schedule at its instants. It keeps each job's next
//! fire time (computed by `cron::Schedule`, croner underneath, with the DST rule) in one
//! ordered queue and sleeps until the earliest, so a tick is recorded within a millisecond or
//! two of its time rather than at the next poll of a loop. Each tick becomes a durable run row
//! keyed by (job, tick) before anything is dispatched, so replicas that fire the same tick
//! record it once.
//!
//! The job cache tells the ticker when a job changed (here, or on another replica); the
//! changed job's next tick is recomputed from that moment, so a new schedule fires from its
//! very next tick. Ticks nobody recorded (all replicas down, a stall) are the sweeper's
//! (`maintenance::sweeper`). tokio-cron-scheduler, whose own loop wakes every 500 ms, drives
//! only the maintenance cadence where that does not matter (`maintenance::cleaner`).
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    app::SharedApp,
    cron::Schedule,
    engine::enqueue::{Created, NewRun},
    lifecycle::{RunState, Trigger},
    store::job,
};

struct Entry {
    schedule: Schedule,
    /// What the entry was computed from; a change of any of these recomputes it.
    source: (String, String, DateTime<Utc>),
    next: Option<DateTime<Utc>>,
}

pub struct Ticker {
    app: SharedApp,
    entries: HashMap<String, Entry>,
    queue: BTreeSet<(DateTime<Utc>, String)>,
}

impl Ticker {
    pub fn new(app: SharedApp) -> Self {
        Self {
            app,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut changes = self.app.jobs.subscribe();
        // Ticks after `start` are this ticker's; the ones up to it are the sweeper's.
        let start = Utc::now();
        self.rebuild(start);
        let _ = self.app.firing_since.set(start);
        loop {
            let wait = self
                .queue
                .first()
                .map_or(Duration::from_secs(3600), |(t, _)| {
                    (*t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                });
            tokio::select! {
                () = stop.cancelled() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.rebuild(Utc::now());
                }
                () = tokio::time::sleep(wait) => self.fire_due(Utc::now()),
            }
        }
    }

    /// Brings the entries in line with the job cache: new and changed jobs get their next
    /// tick after `now`; paused and removed ones leave the queue.
    fn rebuild(&mut self, now: DateTime<Utc>) {
        let jobs = self.app.jobs.all();
        let wanted: HashMap<&str, &Arc<job::Model>> = jobs
            .iter()
            .filter(|(_, j)| j.enabled)
            .map(|(n, j)| (n.as_str(), j))
            .collect();
        let stale: Vec<String> = self
            .entries
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in stale {
            self.remove(&name);
        }
        for (name, j) in wanted {
            let source = (j.schedule.clone(), j.timezone.clone(), j.schedule_since);
            if self.entries.get(name).is_some_and(|e| e.source == source) {
                continue;
            }
            self.remove(name);
            let schedule = match Schedule::parse(&j.schedule, &j.timezone) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(job = %name, schedule = %j.schedule, error = %e, "cannot schedule job");
                    continue;
                }
            };
            let next = schedule.next_after(now.max(j.schedule_since));
            if let Some(t) = next {
                self.queue.insert((t, name.to_string()));
            }
            self.entries.insert(
                name.to_string(),
                Entry {
                    schedule,
                    source,
                    next,
                },
            );
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.entries.remove(name)
            && let Some(t) = old.next
        {
            self.queue.remove(&(t, name.to_string()));
        }
    }

    /// Fires every tick that is due. A job that fell behind (a stall longer than its period)
    /// fires only its newest due tick; the sweeper records the ones in between.
    fn fire_due(&mut self, now: DateTime<Utc>) {
        while let Some((t, name)) = self.queue.first().cloned() {
            if t > now {
                break;
            }
            self.queue.remove(&(t, name.clone()));
            let Some(entry) = self.entries.get_mut(&name) else {
                continue;
            };
            let tick = entry
                .schedule
                .latest_at_or_before(now)
                .map_or(t, |latest| latest.max(t));
            entry.next = entry.schedule.next_after(tick);
            if let Some(next) = entry.next {
                self.queue.insert((next, name.clone()));
            }
            if let Some(job) = self.app.jobs.get(&name)
                && job.enabled
                && tick >= job.schedule_since
                && !self.app.is_draining()
            {
                tokio::spawn(record_tick(self.app.clone(), job, tick, None));
            }
        }
    }
}

/// Records one tick as a run (or as skipped, with `skip`).
pub async fn record_tick(
    app: SharedApp,
    job: Arc<job::Model>,
    tick: DateTime<Utc>,
    skip: Option<String>,
) -> Option<Created> {
    let span = tracing::info_span!("tick", job = %job.name, scheduled_for = %tick, lateness_ms = (Utc::now() - tick).num_milliseconds());
    let trace_parent = ticketmax_runtime::telemetry::traceparent(&span);
    let name = job.name.clone();
    let new = NewRun {
        job,
        trigger: Trigger::Schedule,
        tick_at: Some(tick),
        scheduled_for: tick,
        idempotency_key: None,
        params: None,
        triggered_by: None,
        trace_parent,
        skip_reason: skip,
        message: "scheduled tick".to_string(),
    };
    let created = app.enqueuer.call("enqueuer", new).instrument(span).await;
    match created {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            tracing::error!(job = %name, scheduled_for = %tick, error = %e, "cannot record tick");
            None
        }
        Err(e) => {
            tracing::warn!(job = %name, scheduled_for = %tick, error = %e, "tick not recorded");
            None
        }
    }
}

/// Whether a recorded tick will run (for the sweeper's log lines and tests).
pub fn runs(c: &Created) -> bool {
    matches!(c, Created::New(r) if r.state == RunState::Queued)
}
