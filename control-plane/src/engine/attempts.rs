//! The attempts this replica is running, so that whoever learns something about one (a
//! `CancelRun` here, a cancel notification from another replica, the lease renewal, the
//! executor book) can tell it at once.
use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

/// What an attempt is told while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Stop the task; `reason` says who asked.
    Cancel { reason: Option<String> },
    /// The attempt is no longer this replica's (finished elsewhere, or taken over).
    Superseded,
    /// Its executor stopped heartbeating or deregistered.
    ExecutorLost(String),
}

struct Handle {
    attempt: i32,
    executor_id: String,
    tx: mpsc::UnboundedSender<Signal>,
}

#[derive(Default)]
pub struct AttemptBook {
    running: Mutex<HashMap<String, Handle>>,
}

impl AttemptBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a started attempt; its signals arrive on the returned receiver.
    pub fn start(
        &self,
        run_id: &str,
        attempt: i32,
        executor_id: &str,
    ) -> mpsc::UnboundedReceiver<Signal> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(
            run_id.to_string(),
            Handle {
                attempt,
                executor_id: executor_id.to_string(),
                tx,
            },
        );
        rx
    }

    pub fn finish(&self, run_id: &str, attempt: i32) {
        let mut running = self.lock();
        if running.get(run_id).is_some_and(|h| h.attempt == attempt) {
            running.remove(run_id);
        }
    }

    /// Tells the attempt of `run_id`, if it runs here; false otherwise.
    pub fn signal(&self, run_id: &str, signal: Signal) -> bool {
        self.lock()
            .get(run_id)
            .is_some_and(|h| h.tx.send(signal).is_ok())
    }

    /// (run id, attempt, executor id) of every attempt running here.
    pub fn list(&self) -> Vec<(String, i32, String)> {
        self.lock()
            .iter()
            .map(|(id, h)| (id.clone(), h.attempt, h.executor_id.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
