//! Maintenance services: small named loops, each owning one concern, each with a `run_once`
//! that tests call directly with a fixed clock.
//!
//! | service | runs on | what it does |
//! |---|---|---|
//! | [`elector::Elector`] | every replica | holds or follows the leader lease; reports database health |
//! | [`sweeper::Sweeper`] | the leader | records ticks nobody recorded, per the missed-tick policy |
//! | [`rescuer::Rescuer`] | every replica | retries attempts whose replica stopped renewing the lease |
//! | [`gauges::Gauges`] | the leader | counts queued and running runs for the OTLP gauges |
//! | [`cleaner::Cleaner`] | the leader, on a cron schedule | deletes old run history in bounded batches |
//!
//! Each costs at most one statement per period when there is nothing to do, which is what
//! keeps an idle replica under two transactions a second.
pub mod cleaner;
pub mod elector;
pub mod gauges;
pub mod rescuer;
pub mod sweeper;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::app::SharedApp;
use crate::store::StoreError;

pub trait Service: Send {
    const NAME: &'static str;

    /// Time between two passes.
    fn period(&self) -> Duration;

    /// One pass at `now`.
    fn run_once(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Runs `service` every period, and whenever this replica's role changes, until `stop`; the
/// first pass is at once. Errors are logged, once per streak of failures.
pub async fn run<S: Service>(mut service: S, app: SharedApp, stop: CancellationToken) {
    let mut tick = tokio::time::interval(service.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut role = app.role_changes();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
            // A new leader sweeps and counts at once rather than a period later.
            changed = role.changed() => if changed.is_err() { break },
        }
        if app.is_draining() && S::NAME != elector::Elector::NAME {
            continue;
        }
        match service.run_once(Utc::now()).await {
            Ok(()) => {
                if failing {
                    tracing::info!(service = S::NAME, "maintenance pass works again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(service = S::NAME, error = %e, "maintenance pass failed");
                }
                failing = true;
            }
        }
    }
}
