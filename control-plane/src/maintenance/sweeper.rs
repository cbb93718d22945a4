//! The missed-tick sweep (leader only): records every tick of every enabled job that should
//! exist by now but does not, so no tick is silently lost. Ticks from before this replica's
//! ticker started fell while no control plane fired them: the job's missed-tick policy
//! decides (the newest inside the catch-up window runs, or none). Later ones were fired late
//! by a running replica (a stall, a database error): the newest runs (within the catch-up
//! window, and unless a newer tick is already recorded) whatever the policy.
//!
//! It keeps, per job, the instant up to which every tick is known to be recorded, so a pass
//! checks only the ticks that came due since the last one — in one statement for all jobs,
//! and none at all when no job had a tick.
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Service;
use crate::app::SharedApp;
use crate::cron::Schedule;
use crate::lifecycle::MissedTickPolicy;
use crate::store::{self, StoreError};

/// How long after a tick the sweeper waits before it considers the tick missed.
pub const MISSED_GRACE: chrono::Duration = chrono::Duration::seconds(2);
/// How far back a new leader looks for holes.
const LOOKBACK: chrono::Duration = chrono::Duration::seconds(120);
/// At most this many missed ticks of one job are recorded per pass.
const MAX_MISSED_TICKS: usize = 1000;

pub struct Sweeper {
    app: SharedApp,
    period: Duration,
    /// Per job: every tick up to here is recorded. Empty while not the leader.
    checked: HashMap<String, DateTime<Utc>>,
    /// The ticks recorded by the last pass (for tests and the log).
    pub last_recorded: usize,
}

impl Sweeper {
    pub fn new(app: SharedApp, period: Duration) -> Self {
        Self {
            app,
            period,
            checked: HashMap::new(),
            last_recorded: 0,
        }
    }
}

impl Service for Sweeper {
    const NAME: &'static str = "sweeper";

    fn period(&self) -> Duration {
        self.period
    }

    async fn run_once(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.last_recorded = 0;
        if !self.app.is_leader() {
            self.checked.clear();
            return Ok(());
        }
        let jobs = self.app.jobs.all();
        let firing_since = self.app.firing_since.get().copied();
        // Ticks up to the ticker's start are nobody's to fire any more: no need to give them
        // the grace (which is for a replica firing a little late), so a restart's catch-up
        // sees the whole outage in one pass and runs its newest tick only.
        let upper =
            firing_since.map_or(now - MISSED_GRACE, |f| (now - MISSED_GRACE).max(f.min(now)));
        if jobs.keys().any(|name| !self.checked.contains_key(name)) {
            let last = self.app.store.last_ticks().await?;
            for (name, j) in jobs.iter() {
                if !self.checked.contains_key(name) {
                    let floor = match last.get(name) {
                        Some(l) => (*l).min(now - LOOKBACK),
                        None => j.schedule_since,
                    };
                    self.checked.insert(name.clone(), floor);
                }
            }
        }
        // Expected ticks since each job's cursor.
        let mut expected = Vec::new();
        let mut windows = Vec::new();
        for (name, j) in jobs.iter().filter(|(_, j)| j.enabled) {
            let Ok(schedule) = Schedule::parse(&j.schedule, &j.timezone) else {
                continue;
            };
            let from = self
                .checked
                .get(name)
                .copied()
                .unwrap_or(j.schedule_since)
                .max(j.schedule_since);
            if from >= upper {
                continue;
            }
            let ticks = schedule.ticks_between(from, upper, MAX_MISSED_TICKS);
            if ticks.is_empty() {
                self.checked.insert(name.clone(), upper);
                continue;
            }
            windows.push((name.clone(), from, upper));
            expected.push((j.clone(), ticks));
        }
        if windows.is_empty() {
            return Ok(());
        }
        let recorded = self.app.store.ticks_in(&windows).await?;
        let last = if expected.iter().any(|(j, ticks)| {
            let have = recorded.get(&j.name);
            ticks
                .iter()
                .any(|t| have.is_none_or(|h| !h.contains(&store::truncate(*t))))
        }) {
            self.app.store.last_ticks().await?
        } else {
            HashMap::new()
        };
        let late = |t: DateTime<Utc>| firing_since.is_some_and(|since| t >= since);
        let mut pending = Vec::new();
        for (j, ticks) in expected {
            let have = recorded.get(&j.name);
            let missing: Vec<_> = ticks
                .into_iter()
                .filter(|t| have.is_none_or(|h| !h.contains(&store::truncate(*t))))
                .collect();
            self.checked.insert(j.name.clone(), upper);
            let Some(newest) = missing.last().copied() else {
                continue;
            };
            let window = chrono::Duration::seconds(i64::from(j.catch_up_window_secs));
            // "Unless a newer tick already ran": for a tick fired late, any newer tick; for a
            // tick of an outage, a newer one from before this replica started firing (the
            // ticker records fresh ticks from its first second, and those must not cancel
            // the catch-up).
            let newer_ran = if late(newest) {
                last.get(&j.name).is_some_and(|l| *l > newest)
            } else {
                have.is_some_and(|h| h.iter().any(|t| *t > newest && !late(*t)))
            };
            let run_newest = (j.missed_tick_policy == MissedTickPolicy::RunOnce || late(newest))
                && now - newest <= window
                && !newer_ran;
            tracing::warn!(job = %j.name, missed = missing.len(), run_newest, late = late(newest), "recording missed ticks");
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
                        "missed: no control plane was running; outside the catch-up window"
                            .to_string(),
                    )
                } else if j.missed_tick_policy == MissedTickPolicy::Skip {
                    Some(
                        "missed: no control plane was running; missed-tick policy is skip"
                            .to_string(),
                    )
                } else {
                    Some("missed: a newer tick runs instead".to_string())
                };
                pending.push(crate::scheduler::record_tick(
                    self.app.clone(),
                    j.clone(),
                    tick,
                    skip,
                ));
            }
        }
        // Handed to the enqueuer together: one batch.
        self.last_recorded = futures::future::join_all(pending)
            .await
            .into_iter()
            .flatten()
            .count();
        Ok(())
    }
}
