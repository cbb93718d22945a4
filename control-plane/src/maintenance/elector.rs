//! Leader election: every replica tries to take or renew one named lease; whoever holds it is
//! the leader (the sweeper, the gauges and the cleaner run there). The same statement tells
//! whether the database answers, which drives the health endpoints.
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Service;
use crate::app::SharedApp;
use crate::store::StoreError;

pub const LEADER_LEASE: &str = "scheduler";

pub struct Elector {
    app: SharedApp,
    period: Duration,
    ttl: Duration,
}

impl Elector {
    /// Renews every `period`; the lease outlives three missed renewals.
    pub fn new(app: SharedApp, period: Duration) -> Self {
        Self {
            app,
            period,
            ttl: period * 3,
        }
    }

    /// Gives the lease up (graceful shutdown), so another replica leads at once.
    pub async fn resign(&self) {
        if self.app.is_leader() {
            let _ = self
                .app
                .store
                .release_lease(LEADER_LEASE, &self.app.replica_id)
                .await;
            self.app.set_leader(false);
        }
    }
}

impl Service for Elector {
    const NAME: &'static str = "elector";

    fn period(&self) -> Duration {
        self.period
    }

    async fn run_once(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let held = self
            .app
            .store
            .hold_lease(LEADER_LEASE, &self.app.replica_id, self.ttl, now)
            .await;
        self.app.database_reachable(held.is_ok());
        let leader = match held {
            Ok(l) => l,
            Err(e) => {
                self.app.set_leader(false);
                return Err(e);
            }
        };
        if leader != self.app.is_leader() {
            tracing::info!(
                replica = %self.app.replica_id,
                role = if leader { "leader" } else { "follower" },
                "scheduler role changed"
            );
        }
        self.app.set_leader(leader);
        Ok(())
    }
}
