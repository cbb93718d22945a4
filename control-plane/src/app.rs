//! State shared by the API, the ticker, the dispatcher and the maintenance services of one
//! replica.
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::watch;

use crate::{
    auth::Auth,
    config::Config,
    engine::{
        DispatchWake, attempts::AttemptBook, completer::Completer, enqueue::Enqueuer,
        executors::ExecutorBook, heartbeats::Heartbeats, hub::Hub, job_cache::JobCache,
        notify::Notice,
    },
    store::Store,
};

pub struct App {
    pub store: Store,
    pub config: Config,
    pub auth: Auth,
    pub metrics: crate::metrics::Metrics,
    pub replica_id: String,
    pub jobs: JobCache,
    pub executors: ExecutorBook,
    pub attempts: AttemptBook,
    pub hub: Hub,
    pub enqueuer: Enqueuer,
    pub completer: Completer,
    pub heartbeats: Heartbeats,
    pub dispatch: DispatchWake,
    /// Whether the database answered the last time a maintenance service asked it; drives
    /// `grpc.health.v1` and `/healthz`.
    pub database_ok: watch::Sender<bool>,
    /// When this replica's ticker started firing. A tick missing from after this moment was
    /// not missed by an outage but fired late here (a stall, a database error): the
    /// missed-tick policy is not for it.
    pub firing_since: std::sync::OnceLock<chrono::DateTime<chrono::Utc>>,
    leader: watch::Sender<bool>,
    draining: AtomicBool,
}

pub type SharedApp = Arc<App>;

impl App {
    pub fn new(
        store: Store,
        config: Config,
        auth: Auth,
        enqueuer: Enqueuer,
        completer: Completer,
        heartbeats: Heartbeats,
    ) -> SharedApp {
        let replica_id = config.replica_id();
        Arc::new(Self {
            store,
            config,
            auth,
            metrics: crate::metrics::Metrics::default(),
            replica_id,
            jobs: JobCache::default(),
            executors: ExecutorBook::default(),
            attempts: AttemptBook::default(),
            hub: Hub::default(),
            enqueuer,
            completer,
            heartbeats,
            dispatch: DispatchWake::default(),
            database_ok: watch::Sender::new(true),
            firing_since: std::sync::OnceLock::new(),
            leader: watch::Sender::new(false),
            draining: AtomicBool::new(false),
        })
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
    }

    /// Changes whenever this replica becomes or stops being the leader.
    pub fn role_changes(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn database_reachable(&self, ok: bool) {
        self.database_ok.send_if_modified(|current| {
            let changed = *current != ok;
            *current = ok;
            changed
        });
    }

    /// Acts on what another replica said (see `engine::notify`).
    pub async fn on_notice(&self, notice: Notice) {
        match notice {
            Notice::JobsChanged => {
                if let Err(e) = self.jobs.refresh(&self.store).await {
                    tracing::warn!(error = %e, "cannot reload jobs after a change elsewhere");
                }
            }
            Notice::Cancel { run_id } => {
                let reason = match self.store.run(&run_id).await {
                    Ok(Some(r)) => r.reason,
                    _ => None,
                };
                self.attempts
                    .signal(&run_id, crate::engine::attempts::Signal::Cancel { reason });
            }
            Notice::Events(touched) => {
                for (run_id, seq) in touched {
                    if let Some(feed) = self.hub.watched(&run_id)
                        && feed.newest() < seq
                        && let Err(e) = feed.catch_up(&self.store, std::time::Duration::ZERO).await
                    {
                        tracing::warn!(run_id, error = %e, "cannot read new events for watchers");
                    }
                }
            }
        }
    }

    /// After notifications may have been lost: reload jobs, catch every watched run up, and
    /// let the dispatcher look.
    pub async fn resync(&self) {
        if let Err(e) = self.jobs.refresh(&self.store).await {
            tracing::warn!(error = %e, "cannot reload jobs");
        }
        for feed in self.hub.all_watched() {
            let _ = feed.catch_up(&self.store, std::time::Duration::ZERO).await;
        }
        self.dispatch.wake();
    }
}
