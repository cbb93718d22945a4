//! Lease rescue: a running attempt whose replica stopped renewing its lease (died, hung, lost
//! the database) is failed and retried per the job's retries — or cancelled, if a cancel was
//! requested — through the completer, fenced on the lease still being expired so a replica
//! that renewed meanwhile keeps its attempt.
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Service;
use crate::app::SharedApp;
use crate::lifecycle::{self, Settlement};
use crate::store::{self, StoreError, lifecycle::SettleRow};

pub struct Rescuer {
    app: SharedApp,
    period: Duration,
}

impl Rescuer {
    pub fn new(app: SharedApp, period: Duration) -> Self {
        Self { app, period }
    }
}

impl Service for Rescuer {
    const NAME: &'static str = "rescuer";

    fn period(&self) -> Duration {
        self.period
    }

    async fn run_once(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let now = store::truncate(now);
        let mut rows = Vec::new();
        for r in self.app.store.expired_leases(now, 100).await? {
            let owner = r.owner.clone().unwrap_or_default();
            let settlement = if r.cancel_requested {
                Settlement::Cancelled {
                    reason: None,
                    summary: None,
                    from_queue: false,
                }
            } else {
                let (max_retries, backoff) = self.app.jobs.get(&r.job).map_or((0, 5), |j| {
                    (
                        j.max_retries,
                        u64::try_from(j.retry_backoff_secs).unwrap_or(5),
                    )
                });
                lifecycle::after_failure(
                    r.attempt,
                    max_retries,
                    Duration::from_secs(backoff),
                    format!("lease expired: replica {owner} stopped renewing it"),
                )
            };
            tracing::warn!(run_id = %r.id, job = %r.job, attempt = r.attempt, owner = %owner, "rescuing an attempt whose lease expired");
            rows.push(SettleRow {
                run_id: r.id.clone(),
                attempt: r.attempt,
                settlement,
                lease_expired_before: Some(now),
            });
        }
        // Handed over together, so the completer settles them in one batch.
        let completer = &self.app.completer;
        for result in futures::future::join_all(rows.into_iter().map(|r| completer.settle(r))).await
        {
            result?;
        }
        Ok(())
    }
}
