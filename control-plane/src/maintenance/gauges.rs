//! The queued and running counts behind the `ticketmax.runs.queued` and
//! `ticketmax.runs.running` OTLP gauges, counted by the leader only so replicas do not add up.
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Service;
use crate::app::SharedApp;
use crate::store::StoreError;

pub struct Gauges {
    app: SharedApp,
}

impl Gauges {
    pub fn new(app: SharedApp) -> Self {
        Self { app }
    }
}

impl Service for Gauges {
    const NAME: &'static str = "gauges";

    fn period(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn run_once(&mut self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        if !self.app.is_leader() {
            self.app.metrics.set_run_gauges(None);
            return Ok(());
        }
        let counts = self.app.store.active_counts().await;
        self.app
            .metrics
            .set_run_gauges(counts.as_ref().ok().copied());
        counts.map(|_| ())
    }
}
