//! State shared by the API, the scheduler and the dispatcher of one replica.
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::Notify;

use crate::{auth::Auth, config::Config, store::Store};

pub struct App {
    pub store: Store,
    pub config: Config,
    pub auth: Auth,
    pub metrics: crate::metrics::Metrics,
    pub replica_id: String,
    /// Wakes the dispatcher as soon as a run is queued on this replica.
    pub dispatch_wake: Notify,
    /// Wakes watchers of this replica when events are appended here; others poll.
    pub events_wake: Notify,
    /// Wakes this replica's scheduler when the API changed a job here, so a new schedule fires
    /// from its very next tick; other replicas pick the change up within a second.
    pub schedules_changed: Notify,
    leader: AtomicBool,
    draining: AtomicBool,
}

pub type SharedApp = Arc<App>;

impl App {
    pub fn new(store: Store, config: Config, auth: Auth) -> SharedApp {
        let replica_id = config.replica_id();
        Arc::new(Self {
            store,
            config,
            auth,
            metrics: crate::metrics::Metrics::default(),
            replica_id,
            dispatch_wake: Notify::new(),
            events_wake: Notify::new(),
            schedules_changed: Notify::new(),
            leader: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Appends a run event and wakes local watchers. A failure to record an event is logged,
    /// not fatal: the run's state columns stay the source of truth.
    pub async fn record_event(&self, run_id: &str, kind: &str, payload: serde_json::Value) {
        match self
            .store
            .append_event(run_id, kind, payload.to_string())
            .await
        {
            Ok(_) => self.events_wake.notify_waiters(),
            Err(e) => tracing::warn!(run_id, error = %e, "could not record a run event"),
        }
    }

    pub async fn record_state(&self, run_id: &str, state: &str, attempt: i32, message: &str) {
        self.record_event(
            run_id,
            "state",
            serde_json::json!({ "state": state, "attempt": attempt, "message": message }),
        )
        .await;
    }
}
