//! Creating runs: every tick and every trigger becomes a row, with its first event, through
//! one group-commit writer. A batch is one transaction; a run that collides with a unique
//! index (its tick is already recorded by another replica, its idempotency key was used, its
//! job's overlap slot is taken) is settled afterwards on its own: the existing run is
//! returned, the next overlap slot tried, or the run recorded as skipped with the reason.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::batch::{self, GroupCommit, Item};
use crate::app::SharedApp;
use crate::lifecycle::{EventPayload, RunState, Trigger};
use crate::store::{self, NewRunRow, StoreError, job, run};

/// A run somebody wants.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub job: Arc<job::Model>,
    pub trigger: Trigger,
    pub tick_at: Option<DateTime<Utc>>,
    pub scheduled_for: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    /// JSON text.
    pub params: Option<String>,
    pub triggered_by: Option<String>,
    pub trace_parent: Option<String>,
    /// Record it as skipped with this reason whatever the overlap state (a missed tick the
    /// policy does not run).
    pub skip_reason: Option<String>,
    /// The message of its first event when it is queued ("scheduled tick", ...).
    pub message: String,
}

#[derive(Debug, Clone)]
pub enum Created {
    New(run::Model),
    /// The tick or idempotency key already had this run.
    Existing(run::Model),
}

impl Created {
    pub fn run(&self) -> &run::Model {
        match self {
            Created::New(r) | Created::Existing(r) => r,
        }
    }
}

pub type Reply = Result<Created, StoreError>;
pub type Enqueuer = GroupCommit<NewRun, Reply>;
pub type Queue = batch::Queue<NewRun, Reply>;

pub fn channel() -> (Enqueuer, Queue) {
    batch::channel()
}

const MAX_BATCH: usize = 256;

/// The writer loop: runs until `stop`, then finishes what is queued.
pub async fn run(app: SharedApp, queue: Queue, stop: tokio_util::sync::CancellationToken) {
    batch::run(queue, MAX_BATCH, stop, |items| write(&app, items)).await;
}

fn row(new: &NewRun, slot: Option<i32>, skipped: Option<String>) -> NewRunRow {
    let t = store::now();
    let (state, event) = match &skipped {
        Some(reason) => (
            RunState::Skipped,
            EventPayload::state(RunState::Skipped, 1, reason.clone()),
        ),
        None => (
            RunState::Queued,
            EventPayload::state(RunState::Queued, 1, new.message.clone()),
        ),
    };
    NewRunRow {
        run: run::Model {
            id: uuid::Uuid::now_v7().to_string(),
            job: new.job.name.clone(),
            state,
            trigger: new.trigger,
            scheduled_for: store::truncate(new.scheduled_for),
            tick_at: new.tick_at.map(store::truncate),
            idempotency_key: new.idempotency_key.clone(),
            active_slot: slot,
            attempt: 1,
            executor_id: None,
            owner: None,
            lease_expires_at: None,
            not_before: t,
            deadline_at: None,
            cancel_requested: false,
            params: new.params.clone(),
            summary: None,
            error: None,
            reason: skipped.clone(),
            triggered_by: new.triggered_by.clone(),
            trace_parent: new.trace_parent.clone(),
            created_at: t,
            started_at: None,
            finished_at: skipped.is_some().then_some(t),
            updated_at: t,
            last_seq: 1,
        },
        event,
    }
}

fn first_row(new: &NewRun) -> NewRunRow {
    match &new.skip_reason {
        Some(reason) => row(new, None, Some(reason.clone())),
        None => row(new, new.job.overlap_policy.slots()[0], None),
    }
}

/// Inserts with a few retries: a deadlock between replicas or a database that blinks should
/// not lose a tick.
async fn insert(
    app: &SharedApp,
    rows: &[NewRunRow],
) -> store::Result<std::collections::HashSet<String>> {
    let mut wait = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        match app.store.insert_runs(rows).await {
            Ok(ids) => return Ok(ids),
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::warn!(error = %e, rows = rows.len(), retry_in = ?wait, "cannot record runs; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write(app: &SharedApp, items: Vec<Item<NewRun, Reply>>) {
    let rows: Vec<NewRunRow> = items.iter().map(|i| first_row(&i.request)).collect();
    let inserted = match insert(app, &rows).await {
        Ok(ids) => ids,
        Err(e) => {
            for item in items {
                item.answer(Err(e.clone()));
            }
            return;
        }
    };
    let mut any_queued = false;
    for (item, row) in items.into_iter().zip(rows) {
        let result = if inserted.contains(&row.run.id) {
            Ok(Created::New(row.run))
        } else {
            collided(app, &item.request).await
        };
        if let Ok(Created::New(run)) = &result {
            any_queued |= run.state == RunState::Queued;
            announce(app, &item.request, run);
        }
        item.answer(result);
    }
    if any_queued {
        app.dispatch.wake();
    }
}

/// A run whose first insert collided: the existing run of its tick or key, the next overlap
/// slot, or a skipped row saying what it waits behind.
async fn collided(app: &SharedApp, new: &NewRun) -> Reply {
    let store = &app.store;
    let existing =
        || store.run_for_tick_or_key(&new.job.name, new.tick_at, new.idempotency_key.as_deref());
    if let Some(r) = existing().await? {
        return Ok(Created::Existing(r));
    }
    if new.skip_reason.is_none() {
        for slot in new.job.overlap_policy.slots().iter().skip(1) {
            let r = row(new, *slot, None);
            if insert(app, std::slice::from_ref(&r))
                .await?
                .contains(&r.run.id)
            {
                return Ok(Created::New(r.run));
            }
        }
    }
    let reason = match &new.skip_reason {
        Some(r) => r.clone(),
        None => match store.active_run_of(&new.job.name).await? {
            Some(a) => format!(
                "overlap policy '{}': run {} is still {}",
                new.job.overlap_policy.as_str(),
                a.id,
                a.state
            ),
            None => format!("overlap policy '{}'", new.job.overlap_policy.as_str()),
        },
    };
    let r = row(new, None, Some(reason));
    if insert(app, std::slice::from_ref(&r))
        .await?
        .contains(&r.run.id)
    {
        return Ok(Created::New(r.run));
    }
    existing().await?.map(Created::Existing).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "run of {} conflicted but no conflicting row was found",
            new.job.name
        ))
    })
}

/// Metrics and the log line of a new run.
fn announce(app: &SharedApp, new: &NewRun, run: &run::Model) {
    let skipped = run.state == RunState::Skipped;
    if let Some(tick) = run.tick_at {
        let lateness = (run.created_at - tick).num_milliseconds();
        #[allow(clippy::cast_precision_loss)]
        app.metrics
            .tick(&run.job, lateness as f64 / 1000.0, skipped);
        if skipped {
            tracing::info!(job = %run.job, run_id = %run.id, scheduled_for = %tick, reason = run.reason.as_deref().unwrap_or(""), "tick skipped");
        } else {
            tracing::info!(job = %run.job, run_id = %run.id, scheduled_for = %tick, lateness_ms = lateness, "tick recorded");
        }
    } else {
        tracing::info!(job = %run.job, run_id = %run.id, state = %run.state, by = new.triggered_by.as_deref().unwrap_or(""), "manual trigger");
    }
}
