//! The completer: the one component that settles runs (succeeded, failed, cancelled, timed
//! out, retried), whoever asks — the dispatcher, `CancelRun`, the lease rescuer, a draining
//! replica — and that persists the events of the attempts this replica runs. Both travel in one
//! group-commit queue, so a run's events always reach the database before its end, and a batch
//! of events and ends from many runs is one transaction.
//!
//! After a batch commits, it publishes each settlement's state event to the run's watchers,
//! records the run's duration, and wakes the dispatcher when a slot was freed or a retry
//! queued.
use std::time::Duration;

use chrono::Utc;

use super::batch::{self, GroupCommit, Item};
use super::hub::live_event;
use crate::app::SharedApp;
use crate::lifecycle::{RunState, Settlement};
use crate::store::{
    self, StoreError,
    events::EventRecord,
    lifecycle::{SettleRow, Settled},
};

pub enum Write {
    Events(Vec<EventRecord>),
    Settle(SettleRow),
}

/// `None`: the run was not in a state the settlement may leave (already ended, superseded).
pub type Reply = Result<Option<Settled>, StoreError>;
pub type Queue = batch::Queue<Write, Reply>;

#[derive(Clone)]
pub struct Completer {
    queue: GroupCommit<Write, Reply>,
}

const MAX_BATCH: usize = 512;

pub fn channel() -> (Completer, Queue) {
    let (queue, rx) = batch::channel();
    (Completer { queue }, rx)
}

impl Completer {
    /// Persists events of an attempt this replica runs (they were already published live).
    pub fn append(&self, events: Vec<EventRecord>) {
        if !self.queue.send(Write::Events(events)) {
            tracing::warn!("events dropped: the completer has stopped");
        }
    }

    /// Settles one run and waits until it is committed.
    pub async fn settle(&self, row: SettleRow) -> Reply {
        self.queue
            .call("completer", Write::Settle(row))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
    }
}

/// The writer loop: runs until `stop`, then finishes what is queued.
pub async fn run(app: SharedApp, queue: Queue, stop: tokio_util::sync::CancellationToken) {
    batch::run(queue, MAX_BATCH, stop, |items| write(&app, items)).await;
}

async fn write(app: &SharedApp, items: Vec<Item<Write, Reply>>) {
    let mut events = Vec::new();
    let mut settles = Vec::new();
    let mut waiting = Vec::new();
    for item in items {
        match item.request {
            Write::Events(e) => events.extend(e),
            Write::Settle(row) => {
                settles.push(row);
                waiting.push(item.reply);
            }
        }
    }
    let mut wait = Duration::from_millis(50);
    let mut tries = 0;
    let outcome = loop {
        let now = store::now();
        match app
            .store
            .settle(&app.replica_id, &events, &settles, now, &app.replica_id)
            .await
        {
            Ok(o) => break Ok((o, now)),
            // A database that blinks (a failover, a restart) must not lose a run's end: keep
            // trying for about a lease; after that the rescuer owns the attempt anyway.
            Err(e) if tries < 8 => {
                tries += 1;
                tracing::warn!(error = %e, events = events.len(), settles = settles.len(), retry_in = ?wait, "cannot write run events and ends; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => break Err(e),
        }
    };
    let (outcome, now) = match outcome {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, events = events.len(), settles = settles.len(), "run events and ends not recorded");
            for reply in waiting.into_iter().flatten() {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut wake = outcome.promoted > 0;
    for ((row, done), reply) in settles.iter().zip(outcome.settled).zip(waiting) {
        match &done {
            Some(s) => {
                wake = true;
                announce(app, row, s, now);
            }
            None => tracing::warn!(
                run_id = %row.run_id,
                attempt = row.attempt,
                state = %row.settlement.target(),
                "result rejected: the attempt was superseded or already finished"
            ),
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(done));
        }
    }
    if wake {
        app.dispatch.wake();
    }
}

/// Publishes the settlement's event, records metrics and logs it.
fn announce(app: &SharedApp, row: &SettleRow, s: &Settled, now: chrono::DateTime<Utc>) {
    let run = &s.run;
    app.hub
        .publish(&run.id, live_event(&run.id, s.event_seq, now, &s.event));
    if let Settlement::Retry { error, backoff } = &row.settlement {
        tracing::warn!(job = %run.job, run_id = %run.id, attempt = row.attempt, error = %error, retry_in = ?backoff, "attempt failed; retrying");
        app.dispatch.wake_at(run.not_before);
        return;
    }
    if let (Some(start), Some(end)) = (run.started_at, run.finished_at) {
        #[allow(clippy::cast_precision_loss)]
        let secs = (end - start).num_milliseconds().max(0) as f64 / 1000.0;
        app.metrics.run_finished(&run.job, run.state.as_str(), secs);
    }
    let summary = run.summary.as_deref().unwrap_or("{}");
    let state = run.state;
    if state == RunState::Succeeded {
        tracing::info!(job = %run.job, run_id = %run.id, attempt = run.attempt, state = %state, summary = %summary, "run {state}");
    } else {
        tracing::warn!(job = %run.job, run_id = %run.id, attempt = run.attempt, state = %state, summary = %summary, error = run.error.as_deref().unwrap_or(""), reason = run.reason.as_deref().unwrap_or(""), "run {state}");
    }
}
