//! Run history retention (leader only): deletes finished runs older than
//! `TICKETMAX_RUN_RETENTION_DAYS` with their events, in bounded batches (one transaction
//! each, so locks stay short and the work is cancellable between batches). It never deletes
//! the newest `TICKETMAX_RUN_RETENTION_KEEP` runs of a job, the newest tick of a job (the
//! sweeper's cursor), nor a tick inside the largest catch-up window.
//!
//! It also deletes expired dashboard sessions.
//!
//! It runs on a cron schedule (`TICKETMAX_CLEANER_SCHEDULE`, by default every 10 minutes)
//! driven by tokio-cron-scheduler: half a second of jitter is nothing for a cleaner, and an
//! operator can move the work to quiet hours with the cron syntax they know.
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::app::SharedApp;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct Retention {
    pub days: u32,
    /// The newest runs of each job kept whatever their age.
    pub keep_per_job: u64,
    /// Runs deleted per transaction.
    pub batch: u64,
}

pub struct Cleaner {
    app: SharedApp,
    retention: Retention,
    stop: CancellationToken,
    /// Runs deleted by the last pass.
    pub last_deleted: u64,
}

impl Cleaner {
    pub fn new(app: SharedApp, retention: Retention, stop: CancellationToken) -> Self {
        Self {
            app,
            retention,
            stop,
            last_deleted: 0,
        }
    }

    /// Runs a pass at every fire time of `schedule` (6-field cron, UTC) until `stop`.
    pub async fn run_on(
        mut self,
        schedule: &str,
    ) -> Result<(), tokio_cron_scheduler::JobSchedulerError> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let cron = JobScheduler::new().await?;
        cron.add(CronJob::new_async(schedule, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // A pass still running absorbs the bell.
                let _ = tx.try_send(());
            })
        })?)
        .await?;
        cron.start().await?;
        let stop = self.stop.clone();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                bell = rx.recv() => if bell.is_none() { break },
            }
            if !self.app.is_leader() || self.app.is_draining() {
                continue;
            }
            if let Err(e) = self.run_once(Utc::now()).await {
                tracing::warn!(error = %e, "run history cleanup failed");
            }
        }
        let mut cron = cron;
        cron.shutdown().await
    }
}

impl Service for Cleaner {
    const NAME: &'static str = "cleaner";

    fn period(&self) -> Duration {
        Duration::from_secs(600)
    }

    async fn run_once(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.last_deleted = 0;
        // Expired dashboard sessions are refused when read; this only takes the rows away.
        let sessions = self.app.store.delete_expired_sessions(now).await?;
        if sessions > 0 {
            tracing::info!(sessions, "expired dashboard sessions deleted");
        }
        if self.retention.days == 0 {
            return Ok(());
        }
        let before = now - chrono::Duration::days(i64::from(self.retention.days));
        let widest_window = self
            .app
            .jobs
            .all()
            .values()
            .map(|j| i64::from(j.catch_up_window_secs))
            .max()
            .unwrap_or(0);
        let ticks_from = now - chrono::Duration::seconds(widest_window);
        loop {
            let deleted = self
                .app
                .store
                .delete_old_runs(
                    before,
                    ticks_from,
                    self.retention.keep_per_job.max(1),
                    self.retention.batch.max(1),
                )
                .await?;
            self.last_deleted += deleted;
            if deleted > 0 {
                tracing::info!(deleted, total = self.last_deleted, before = %before, "run history cleanup: batch deleted");
            }
            if deleted < self.retention.batch || self.stop.is_cancelled() {
                break;
            }
            // Let other writers in between batches.
            tokio::task::yield_now().await;
        }
        if self.last_deleted > 0 {
            tracing::info!(deleted = self.last_deleted, "run history cleanup done");
        }
        Ok(())
    }
}
