//! The run engine of one replica: the in-memory parts that sit between the API, the ticker,
//! the dispatcher and the database, so that runs move in batches and nobody polls.
//!
//! The path of a run:
//!
//! 1. A tick (`scheduler`) or a trigger (`api`) hands a [`enqueue::NewRun`] to the
//!    **enqueuer**, which records it with its first event, many per transaction.
//! 2. The **dispatcher** (`dispatch`), woken by [`DispatchWake`], claims queued runs in one
//!    statement, picks a live executor from the [`executors::ExecutorBook`] and starts an
//!    attempt; its lease is renewed with all the replica's others in one statement.
//! 3. The attempt streams `RunJob`; each event is published at once to the run's watchers
//!    through the [`hub::Hub`] and persisted by the **completer** in batches.
//! 4. Whoever ends the run — the attempt, `CancelRun`, the lease rescuer — asks the
//!    [`completer::Completer`], which settles it (state, slot, terminal event, reports) in the
//!    same batch machinery, and publishes the end.
//!
//! Replicas tell each other what the others need to know through [`notify`] (Postgres
//! `LISTEN/NOTIFY`); the database stays the source of truth for everything.
pub mod attempts;
pub mod batch;
pub mod completer;
pub mod enqueue;
pub mod executors;
pub mod heartbeats;
pub mod hub;
pub mod job_cache;
pub mod notify;

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// Wakes the dispatcher: now (a run was queued or a slot freed), or at a time (a retry's
/// backoff ends).
#[derive(Default)]
pub struct DispatchWake {
    notify: Notify,
    due: Mutex<Option<DateTime<Utc>>>,
}

impl DispatchWake {
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Remembers the earliest time the dispatcher must look again.
    pub fn wake_at(&self, at: DateTime<Utc>) {
        let mut due = self
            .due
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if due.is_none_or(|d| at < d) {
            *due = Some(at);
        }
        drop(due);
        self.notify.notify_one();
    }

    /// The pending timed wake-up, taken if it is due.
    pub fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut due = self
            .due
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *due {
            Some(d) if d <= now => {
                *due = None;
                Some(d)
            }
            other => other,
        }
    }

    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}
