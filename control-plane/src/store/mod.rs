//! The control plane's database: the source of truth for jobs, runs, run events, executors,
//! reports and the leader lease. Every state change of a run is a conditional UPDATE that
//! re-checks the state (and the attempt, as a fencing token), so concurrent replicas, late
//! executors and operators can race without corrupting a run.
pub mod entities;
pub mod migration;

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait,
    Order, QueryFilter, QueryOrder, QuerySelect, TransactionTrait, TryInsertResult,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use sea_orm_migration::MigratorTrait;

pub use entities::{executor, job, lease, report, run, run_event};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error while {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: DbErr,
    },
    #[error("{0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}
impl<T> Context<T> for std::result::Result<T, DbErr> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Db { context, source })
    }
}

/// Run states as stored; the API maps them to `RunState`.
pub mod state {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
    pub const TIMED_OUT: &str = "timed_out";
    pub const SKIPPED: &str = "skipped";
    pub const ACTIVE: [&str; 2] = [QUEUED, RUNNING];
}

pub mod trigger {
    pub const SCHEDULE: &str = "schedule";
    pub const MANUAL: &str = "manual";
}

pub mod overlap {
    pub const SKIP: &str = "skip";
    pub const QUEUE_ONE: &str = "queue_one";
    pub const ALLOW: &str = "allow";
}

pub mod missed {
    pub const RUN_ONCE: &str = "run_once";
    pub const SKIP: &str = "skip";
}

/// Timestamps are kept at microsecond precision: what Postgres stores, and a fixed-width text
/// form in SQLite so that comparisons stay correct.
pub fn now() -> DateTime<Utc> {
    truncate(Utc::now())
}

pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_subsec_micros();
    t.with_nanosecond(micros * 1000).unwrap_or(t)
}

use chrono::Timelike;

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// What a caller wants to start.
pub struct NewRun<'a> {
    pub job: &'a job::Model,
    pub trigger: &'static str,
    pub tick_at: Option<DateTime<Utc>>,
    pub scheduled_for: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    pub params: Option<String>,
    pub triggered_by: Option<String>,
    pub trace_parent: Option<String>,
    /// Recorded as skipped whatever the overlap state (a missed tick outside the policy).
    pub skip_reason: Option<String>,
}

pub enum Created {
    New(run::Model),
    Existing(run::Model),
}

impl Created {
    pub fn run(&self) -> &run::Model {
        match self {
            Created::New(r) | Created::Existing(r) => r,
        }
    }
}

/// Operator changes to a job; `None` keeps the current value.
#[derive(Default)]
pub struct JobChanges {
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub enabled: Option<bool>,
    pub overlap_policy: Option<&'static str>,
    pub missed_tick_policy: Option<&'static str>,
    pub catch_up_window_secs: Option<i32>,
    pub timeout_secs: Option<i32>,
    pub max_retries: Option<i32>,
}

/// E-mail figures an executor reports with its heartbeat.
pub struct MailFigures {
    pub outbox_pending: i64,
    pub emails_sent: i64,
    pub emails_failed: i64,
}

pub struct RunFilter {
    pub job: Option<String>,
    pub state: Option<&'static str>,
    pub before_id: Option<String>,
    pub limit: u64,
}

/// How a dispatched attempt ended, as the control plane records it.
pub struct Outcome<'a> {
    pub state: &'static str,
    pub summary: Option<String>,
    pub error: Option<String>,
    pub reason: Option<&'a str>,
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.max_connections(if url.starts_with("sqlite") { 4 } else { 16 })
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(15))
            .sqlx_logging(false);
        let db = Database::connect(opts).await.ctx("connecting")?;
        if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            // Readers and one writer at a time without "database is locked" errors.
            db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000;")
                .await
                .ctx("configuring sqlite")?;
        }
        Ok(Self { db })
    }

    /// Runs pending migrations. On Postgres an advisory lock serialises replicas that start
    /// together (concurrent `CREATE TABLE IF NOT EXISTS` races on the catalog otherwise).
    pub async fn migrate(&self) -> Result<()> {
        if self.db.get_database_backend() != sea_orm::DbBackend::Postgres {
            return migration::Migrator::up(&self.db, None)
                .await
                .ctx("running migrations");
        }
        let txn = self.db.begin().await.ctx("beginning the migration")?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7262531001)")
            .await
            .ctx("taking the migration lock")?;
        migration::Migrator::up(&txn, None)
            .await
            .ctx("running migrations")?;
        txn.commit().await.ctx("committing migrations")
    }

    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await.ctx("pinging the database")
    }

    // ------------------------------------------------------------------------------- jobs

    /// Inserts catalog jobs that are missing and refreshes the descriptive columns of known ones;
    /// the schedule follows a changed default only while no operator has touched it.
    pub async fn upsert_catalog(
        &self,
        entries: &[crate::catalog::CatalogEntry],
        timezone: &str,
    ) -> Result<usize> {
        let existing: HashMap<String, job::Model> = job::Entity::find()
            .all(&self.db)
            .await
            .ctx("loading jobs")?
            .into_iter()
            .map(|j| (j.name.clone(), j))
            .collect();
        let t = now();
        let mut inserted = 0;
        for e in entries {
            let (service, task) = e.name.split_once('/').unwrap_or((e.name, e.name));
            match existing.get(e.name) {
                None => {
                    let am = job::ActiveModel {
                        name: Set(e.name.to_string()),
                        service: Set(service.to_string()),
                        task: Set(task.to_string()),
                        description: Set(e.description.to_string()),
                        schedule: Set(e.schedule.to_string()),
                        default_schedule: Set(e.schedule.to_string()),
                        timezone: Set(timezone.to_string()),
                        enabled: Set(true),
                        overlap_policy: Set(overlap::SKIP.into()),
                        missed_tick_policy: Set(missed::RUN_ONCE.into()),
                        catch_up_window_secs: Set(3600),
                        timeout_secs: Set(3600),
                        max_retries: Set(3),
                        retry_backoff_secs: Set(5),
                        operator_modified: Set(false),
                        schedule_since: Set(t),
                        created_at: Set(t),
                        updated_at: Set(t),
                        updated_by: Set(None),
                    };
                    let res = job::Entity::insert(am)
                        .on_conflict_do_nothing()
                        .exec_without_returning(&self.db)
                        .await
                        .ctx("inserting a catalog job")?;
                    if matches!(res, TryInsertResult::Inserted(_)) {
                        inserted += 1;
                    }
                }
                Some(j) if j.description != e.description || j.default_schedule != e.schedule => {
                    let mut q = job::Entity::update_many()
                        .col_expr(job::Column::Description, Expr::value(e.description))
                        .col_expr(job::Column::DefaultSchedule, Expr::value(e.schedule))
                        .filter(job::Column::Name.eq(e.name));
                    if !j.operator_modified {
                        q = q.col_expr(job::Column::Schedule, Expr::value(e.schedule));
                    }
                    q.exec(&self.db).await.ctx("refreshing a catalog job")?;
                }
                Some(_) => {}
            }
        }
        Ok(inserted)
    }

    pub async fn jobs(&self, service: Option<&str>) -> Result<Vec<job::Model>> {
        let mut q = job::Entity::find().order_by_asc(job::Column::Name);
        if let Some(s) = service {
            q = q.filter(job::Column::Service.eq(s));
        }
        q.all(&self.db).await.ctx("listing jobs")
    }

    pub async fn job(&self, name: &str) -> Result<Option<job::Model>> {
        job::Entity::find_by_id(name.to_string())
            .one(&self.db)
            .await
            .ctx("reading a job")
    }

    /// Applies already validated changes. A changed schedule, timezone or a resume moves
    /// `schedule_since`, so ticks from before the change are never caught up.
    pub async fn update_job(
        &self,
        name: &str,
        changes: JobChanges,
        by: Option<&str>,
    ) -> Result<Option<job::Model>> {
        let Some(current) = self.job(name).await? else {
            return Ok(None);
        };
        let t = now();
        let mut am: job::ActiveModel = current.clone().into();
        let mut reschedule = false;
        if let Some(s) = changes.schedule.filter(|s| *s != current.schedule) {
            am.schedule = Set(s);
            am.operator_modified = Set(true);
            reschedule = true;
        }
        if let Some(tz) = changes.timezone.filter(|tz| *tz != current.timezone) {
            am.timezone = Set(tz);
            am.operator_modified = Set(true);
            reschedule = true;
        }
        if let Some(e) = changes.enabled.filter(|e| *e != current.enabled) {
            am.enabled = Set(e);
            reschedule |= e;
        }
        if let Some(p) = changes.overlap_policy {
            am.overlap_policy = Set(p.into());
        }
        if let Some(p) = changes.missed_tick_policy {
            am.missed_tick_policy = Set(p.into());
        }
        if let Some(v) = changes.catch_up_window_secs {
            am.catch_up_window_secs = Set(v);
        }
        if let Some(v) = changes.timeout_secs {
            am.timeout_secs = Set(v);
        }
        if let Some(v) = changes.max_retries {
            am.max_retries = Set(v);
        }
        if reschedule {
            am.schedule_since = Set(t);
        }
        am.updated_at = Set(t);
        am.updated_by = Set(by.map(str::to_string));
        let updated = job::Entity::update(am)
            .exec(&self.db)
            .await
            .ctx("updating a job")?;
        Ok(Some(updated))
    }

    // ------------------------------------------------------------------------------- runs

    /// Records a run, enforcing in the database: one row per (job, tick), one run per
    /// (job, idempotency key), and the job's overlap policy through the unique slot index.
    pub async fn create_run(&self, new: NewRun<'_>) -> Result<Created> {
        let slots: &[Option<i32>] = if new.skip_reason.is_some() {
            &[]
        } else {
            match new.job.overlap_policy.as_str() {
                overlap::ALLOW => &[None],
                overlap::QUEUE_ONE => &[Some(0), Some(1)],
                _ => &[Some(0)],
            }
        };
        for slot in slots {
            if let Some(run) = self
                .try_insert_run(&new, state::QUEUED, *slot, None)
                .await?
            {
                return Ok(Created::New(run));
            }
            if let Some(existing) = self.existing_for(&new).await? {
                return Ok(Created::Existing(existing));
            }
        }
        let reason = match &new.skip_reason {
            Some(r) => r.clone(),
            None => {
                let active = self.active_run_of(&new.job.name).await?;
                match active {
                    Some(a) => format!(
                        "overlap policy '{}': run {} is still {}",
                        new.job.overlap_policy, a.id, a.state
                    ),
                    None => format!("overlap policy '{}'", new.job.overlap_policy),
                }
            }
        };
        if let Some(run) = self
            .try_insert_run(&new, state::SKIPPED, None, Some(reason))
            .await?
        {
            return Ok(Created::New(run));
        }
        self.existing_for(&new)
            .await?
            .map(Created::Existing)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "run of {} conflicted but no conflicting row was found",
                    new.job.name
                ))
            })
    }

    async fn try_insert_run(
        &self,
        new: &NewRun<'_>,
        st: &'static str,
        slot: Option<i32>,
        reason: Option<String>,
    ) -> Result<Option<run::Model>> {
        let t = now();
        let terminal = st == state::SKIPPED;
        let model = run::Model {
            id: uuid::Uuid::now_v7().to_string(),
            job: new.job.name.clone(),
            state: st.to_string(),
            trigger: new.trigger.to_string(),
            scheduled_for: truncate(new.scheduled_for),
            tick_at: new.tick_at.map(truncate),
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
            reason,
            triggered_by: new.triggered_by.clone(),
            trace_parent: new.trace_parent.clone(),
            created_at: t,
            started_at: None,
            finished_at: terminal.then_some(t),
            updated_at: t,
        };
        let am: run::ActiveModel = model.clone().into();
        let res = run::Entity::insert(am)
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .try_insert()
            .exec_without_returning(&self.db)
            .await
            .ctx("inserting a run")?;
        Ok(match res {
            TryInsertResult::Inserted(n) if n > 0 => Some(model),
            _ => None,
        })
    }

    async fn existing_for(&self, new: &NewRun<'_>) -> Result<Option<run::Model>> {
        if let Some(tick) = new.tick_at {
            let found = run::Entity::find()
                .filter(run::Column::Job.eq(&new.job.name))
                .filter(run::Column::TickAt.eq(truncate(tick)))
                .one(&self.db)
                .await
                .ctx("finding a tick")?;
            if found.is_some() {
                return Ok(found);
            }
        }
        if let Some(key) = &new.idempotency_key {
            return run::Entity::find()
                .filter(run::Column::Job.eq(&new.job.name))
                .filter(run::Column::IdempotencyKey.eq(key))
                .one(&self.db)
                .await
                .ctx("finding an idempotency key");
        }
        Ok(None)
    }

    async fn active_run_of(&self, job: &str) -> Result<Option<run::Model>> {
        run::Entity::find()
            .filter(run::Column::Job.eq(job))
            .filter(run::Column::State.is_in(state::ACTIVE))
            .order_by_asc(run::Column::Id)
            .one(&self.db)
            .await
            .ctx("finding the active run")
    }

    pub async fn run(&self, id: &str) -> Result<Option<run::Model>> {
        run::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .ctx("reading a run")
    }

    /// Newest first; `before_id` is the page token (run ids are UUIDv7, ordered by creation).
    pub async fn runs(&self, f: RunFilter) -> Result<Vec<run::Model>> {
        let mut q = run::Entity::find().order_by(run::Column::Id, Order::Desc);
        if let Some(j) = &f.job {
            q = q.filter(run::Column::Job.eq(j));
        }
        if let Some(s) = f.state {
            q = q.filter(run::Column::State.eq(s));
        }
        if let Some(b) = &f.before_id {
            q = q.filter(run::Column::Id.lt(b));
        }
        q.limit(f.limit).all(&self.db).await.ctx("listing runs")
    }

    /// The newest run of every job, in one query.
    pub async fn last_runs(&self) -> Result<HashMap<String, run::Model>> {
        let newest = run::Entity::find()
            .select_only()
            .column_as(run::Column::Id.max(), "id")
            .group_by(run::Column::Job)
            .into_tuple::<String>()
            .all(&self.db)
            .await
            .ctx("finding the newest runs")?;
        let runs = run::Entity::find()
            .filter(run::Column::Id.is_in(newest))
            .all(&self.db)
            .await
            .ctx("reading the newest runs")?;
        Ok(runs.into_iter().map(|r| (r.job.clone(), r)).collect())
    }

    /// (job, state, count) over all runs, for metrics.
    pub async fn run_counts(&self) -> Result<Vec<(String, String, i64)>> {
        run::Entity::find()
            .select_only()
            .column(run::Column::Job)
            .column(run::Column::State)
            .column_as(run::Column::Id.count(), "n")
            .group_by(run::Column::Job)
            .group_by(run::Column::State)
            .into_tuple::<(String, String, i64)>()
            .all(&self.db)
            .await
            .ctx("counting runs by job and state")
    }

    pub async fn count_in_state(&self, st: &str) -> Result<u64> {
        use sea_orm::PaginatorTrait;
        run::Entity::find()
            .filter(run::Column::State.eq(st))
            .count(&self.db)
            .await
            .ctx("counting runs")
    }

    /// The newest recorded tick of a job (the catch-up cursor).
    pub async fn last_tick(&self, job: &str) -> Result<Option<DateTime<Utc>>> {
        run::Entity::find()
            .select_only()
            .column_as(run::Column::TickAt.max(), "tick_at")
            .filter(run::Column::Job.eq(job))
            .into_tuple::<Option<DateTime<Utc>>>()
            .one(&self.db)
            .await
            .map(Option::flatten)
            .ctx("reading the last tick")
    }

    /// Ticks of a job recorded after `floor`.
    pub async fn ticks_since(
        &self,
        job: &str,
        floor: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<DateTime<Utc>>> {
        let ticks = run::Entity::find()
            .select_only()
            .column(run::Column::TickAt)
            .filter(run::Column::Job.eq(job))
            .filter(run::Column::TickAt.gt(truncate(floor)))
            .into_tuple::<Option<DateTime<Utc>>>()
            .all(&self.db)
            .await
            .ctx("reading recent ticks")?;
        Ok(ticks.into_iter().flatten().collect())
    }

    /// Queued runs that may start now: their slot is the active one (or they overlap freely)
    /// and their retry backoff has passed. Oldest first.
    pub async fn dispatchable(&self, limit: u64) -> Result<Vec<run::Model>> {
        run::Entity::find()
            .filter(run::Column::State.eq(state::QUEUED))
            .filter(run::Column::NotBefore.lte(now()))
            .filter(
                run::Column::ActiveSlot
                    .is_null()
                    .or(run::Column::ActiveSlot.eq(0)),
            )
            .order_by_asc(run::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .ctx("finding dispatchable runs")
    }

    /// Takes a queued run for this replica. Only one replica's UPDATE can match.
    pub async fn claim(
        &self,
        run: &run::Model,
        owner: &str,
        executor_id: &str,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Option<run::Model>> {
        let t = now();
        let lease_until = t + chrono::Duration::from_std(lease).unwrap_or_default();
        let deadline = t + chrono::Duration::from_std(timeout).unwrap_or_default();
        let res = run::Entity::update_many()
            .col_expr(run::Column::State, Expr::value(state::RUNNING))
            .col_expr(run::Column::Owner, Expr::value(owner))
            .col_expr(run::Column::ExecutorId, Expr::value(executor_id))
            .col_expr(run::Column::LeaseExpiresAt, Expr::value(lease_until))
            .col_expr(run::Column::DeadlineAt, Expr::value(deadline))
            .col_expr(run::Column::StartedAt, Expr::value(t))
            .col_expr(run::Column::UpdatedAt, Expr::value(t))
            .filter(run::Column::Id.eq(&run.id))
            .filter(run::Column::State.eq(state::QUEUED))
            .filter(run::Column::Attempt.eq(run.attempt))
            .exec(&self.db)
            .await
            .ctx("claiming a run")?;
        if res.rows_affected == 1 {
            self.run(&run.id).await
        } else {
            Ok(None)
        }
    }

    /// Extends the lease of an attempt this replica owns. `None`: the attempt is no longer ours
    /// (finished, cancelled or taken over); `Some(cancel_requested)` otherwise.
    pub async fn renew(
        &self,
        id: &str,
        attempt: i32,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<bool>> {
        let t = now();
        let res = run::Entity::update_many()
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(t + chrono::Duration::from_std(lease).unwrap_or_default()),
            )
            .filter(run::Column::Id.eq(id))
            .filter(run::Column::Attempt.eq(attempt))
            .filter(run::Column::State.eq(state::RUNNING))
            .filter(run::Column::Owner.eq(owner))
            .exec(&self.db)
            .await
            .ctx("renewing a lease")?;
        if res.rows_affected == 0 {
            return Ok(None);
        }
        Ok(self.run(id).await?.map(|r| r.cancel_requested))
    }

    /// Records the end of an attempt, fenced by attempt number and state, frees the job's overlap
    /// slot, moves the run queued behind it (queue-one) into the active slot, and appends the
    /// terminal state event — all in one transaction, so a watcher that sees the run ended also
    /// sees its last event.
    pub async fn finish(
        &self,
        id: &str,
        attempt: i32,
        from_states: &[&str],
        outcome: Outcome<'_>,
    ) -> Result<Option<run::Model>> {
        let t = now();
        let message = outcome
            .error
            .clone()
            .or_else(|| outcome.reason.map(str::to_string))
            .unwrap_or_default();
        let terminal_state = outcome.state;
        let txn = self.db.begin().await.ctx("beginning a transaction")?;
        let Some(current) = run::Entity::find_by_id(id.to_string())
            .one(&txn)
            .await
            .ctx("reading a run")?
        else {
            return Ok(None);
        };
        let mut q = run::Entity::update_many()
            .col_expr(run::Column::State, Expr::value(outcome.state))
            .col_expr(run::Column::FinishedAt, Expr::value(t))
            .col_expr(run::Column::UpdatedAt, Expr::value(t))
            .col_expr(run::Column::ActiveSlot, Expr::value(Option::<i32>::None))
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(run::Column::Id.eq(id))
            .filter(run::Column::Attempt.eq(attempt))
            .filter(run::Column::State.is_in(from_states.iter().copied()));
        if let Some(s) = outcome.summary {
            q = q.col_expr(run::Column::Summary, Expr::value(s));
        }
        if let Some(e) = outcome.error {
            q = q.col_expr(run::Column::Error, Expr::value(e));
        }
        if let Some(r) = outcome.reason {
            q = q.col_expr(run::Column::Reason, Expr::value(r));
        }
        let res = q.exec(&txn).await.ctx("finishing a run")?;
        if res.rows_affected == 0 {
            return Ok(None);
        }
        if current.active_slot == Some(0) {
            run::Entity::update_many()
                .col_expr(run::Column::ActiveSlot, Expr::value(0))
                .filter(run::Column::Job.eq(&current.job))
                .filter(run::Column::ActiveSlot.eq(1))
                .exec(&txn)
                .await
                .ctx("promoting the queued run")?;
        }
        let last_seq: Option<i64> = run_event::Entity::find()
            .select_only()
            .column_as(run_event::Column::Seq.max(), "seq")
            .filter(run_event::Column::RunId.eq(id))
            .into_tuple::<Option<i64>>()
            .one(&txn)
            .await
            .ctx("reading the last event")?
            .flatten();
        let payload = serde_json::json!({
            "state": terminal_state,
            "attempt": attempt,
            "message": message,
        });
        run_event::Entity::insert(run_event::ActiveModel {
            run_id: Set(id.to_string()),
            seq: Set(last_seq.unwrap_or(0) + 1),
            at: Set(t),
            kind: Set("state".to_string()),
            payload: Set(payload.to_string()),
        })
        .exec_without_returning(&txn)
        .await
        .ctx("appending the terminal event")?;
        txn.commit().await.ctx("committing a finished run")?;
        self.run(id).await
    }

    /// Puts a failed attempt back in the queue as the next attempt, after `backoff`.
    pub async fn requeue(
        &self,
        id: &str,
        attempt: i32,
        backoff: Duration,
        error: &str,
    ) -> Result<bool> {
        let t = now();
        let res = run::Entity::update_many()
            .col_expr(run::Column::State, Expr::value(state::QUEUED))
            .col_expr(run::Column::Attempt, Expr::value(attempt + 1))
            .col_expr(
                run::Column::NotBefore,
                Expr::value(t + chrono::Duration::from_std(backoff).unwrap_or_default()),
            )
            .col_expr(run::Column::Owner, Expr::value(Option::<String>::None))
            .col_expr(run::Column::ExecutorId, Expr::value(Option::<String>::None))
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(run::Column::Error, Expr::value(error))
            .col_expr(run::Column::UpdatedAt, Expr::value(t))
            .filter(run::Column::Id.eq(id))
            .filter(run::Column::Attempt.eq(attempt))
            .filter(run::Column::State.eq(state::RUNNING))
            .exec(&self.db)
            .await
            .ctx("requeueing a run")?;
        Ok(res.rows_affected == 1)
    }

    pub async fn request_cancel(&self, id: &str) -> Result<bool> {
        let res = run::Entity::update_many()
            .col_expr(run::Column::CancelRequested, Expr::value(true))
            .col_expr(run::Column::UpdatedAt, Expr::value(now()))
            .filter(run::Column::Id.eq(id))
            .filter(run::Column::State.eq(state::RUNNING))
            .exec(&self.db)
            .await
            .ctx("requesting a cancellation")?;
        Ok(res.rows_affected == 1)
    }

    /// Running attempts whose owner stopped renewing the lease (replica died or hung).
    pub async fn expired_leases(&self, limit: u64) -> Result<Vec<run::Model>> {
        run::Entity::find()
            .filter(run::Column::State.eq(state::RUNNING))
            .filter(run::Column::LeaseExpiresAt.lt(now()))
            .order_by_asc(run::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .ctx("finding expired leases")
    }

    // ------------------------------------------------------------------------------- events

    /// Appends an event with the next sequence number of the run. The primary key (run_id, seq)
    /// makes concurrent writers retry instead of interleaving numbers.
    pub async fn append_event(&self, run_id: &str, kind: &str, payload: String) -> Result<i64> {
        for _ in 0..20 {
            let max: Option<i64> = run_event::Entity::find()
                .select_only()
                .column_as(run_event::Column::Seq.max(), "seq")
                .filter(run_event::Column::RunId.eq(run_id))
                .into_tuple::<Option<i64>>()
                .one(&self.db)
                .await
                .ctx("reading the last event")?
                .flatten();
            let seq = max.unwrap_or(0) + 1;
            let am = run_event::ActiveModel {
                run_id: Set(run_id.to_string()),
                seq: Set(seq),
                at: Set(now()),
                kind: Set(kind.to_string()),
                payload: Set(payload.clone()),
            };
            let res = run_event::Entity::insert(am)
                .on_conflict_do_nothing()
                .exec_without_returning(&self.db)
                .await
                .ctx("appending an event")?;
            if matches!(res, TryInsertResult::Inserted(n) if n > 0) {
                return Ok(seq);
            }
        }
        Err(StoreError::Corrupt(format!(
            "could not number an event of run {run_id}: too much contention"
        )))
    }

    pub async fn events_after(
        &self,
        run_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<run_event::Model>> {
        run_event::Entity::find()
            .filter(run_event::Column::RunId.eq(run_id))
            .filter(run_event::Column::Seq.gt(after))
            .order_by_asc(run_event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await
            .ctx("reading events")
    }

    // ------------------------------------------------------------------------------- executors

    pub async fn register_executor(
        &self,
        id: &str,
        address: &str,
        jobs: &[String],
        version: &str,
    ) -> Result<()> {
        let t = now();
        let jobs = serde_json::to_string(jobs).unwrap_or_else(|_| "[]".into());
        let am = executor::ActiveModel {
            id: Set(id.to_string()),
            address: Set(address.to_string()),
            jobs: Set(jobs),
            version: Set(version.to_string()),
            running: Set(0),
            outbox_pending: Set(0),
            emails_sent: Set(0),
            emails_failed: Set(0),
            deregistered: Set(false),
            registered_at: Set(t),
            last_heartbeat_at: Set(t),
        };
        executor::Entity::insert(am)
            .on_conflict(
                OnConflict::column(executor::Column::Id)
                    .update_columns([
                        executor::Column::Address,
                        executor::Column::Jobs,
                        executor::Column::Version,
                        executor::Column::Running,
                        executor::Column::Deregistered,
                        executor::Column::RegisteredAt,
                        executor::Column::LastHeartbeatAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .ctx("registering an executor")?;
        Ok(())
    }

    pub async fn heartbeat(&self, id: &str, running: i32, mail: MailFigures) -> Result<bool> {
        let res = executor::Entity::update_many()
            .col_expr(executor::Column::LastHeartbeatAt, Expr::value(now()))
            .col_expr(executor::Column::Running, Expr::value(running))
            .col_expr(
                executor::Column::OutboxPending,
                Expr::value(mail.outbox_pending),
            )
            .col_expr(executor::Column::EmailsSent, Expr::value(mail.emails_sent))
            .col_expr(
                executor::Column::EmailsFailed,
                Expr::value(mail.emails_failed),
            )
            .filter(executor::Column::Id.eq(id))
            .filter(executor::Column::Deregistered.eq(false))
            .exec(&self.db)
            .await
            .ctx("recording a heartbeat")?;
        Ok(res.rows_affected == 1)
    }

    pub async fn deregister_executor(&self, id: &str) -> Result<()> {
        executor::Entity::update_many()
            .col_expr(executor::Column::Deregistered, Expr::value(true))
            .filter(executor::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .ctx("deregistering an executor")?;
        Ok(())
    }

    /// Executors seen within `since`, deregistered ones excluded.
    pub async fn executors(
        &self,
        seen_since: Option<DateTime<Utc>>,
    ) -> Result<Vec<executor::Model>> {
        let mut q = executor::Entity::find()
            .filter(executor::Column::Deregistered.eq(false))
            .order_by_asc(executor::Column::Id);
        if let Some(since) = seen_since {
            q = q.filter(executor::Column::LastHeartbeatAt.gte(since));
        }
        q.all(&self.db).await.ctx("listing executors")
    }

    pub async fn executor(&self, id: &str) -> Result<Option<executor::Model>> {
        executor::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .ctx("reading an executor")
    }

    // ------------------------------------------------------------------------------- reports

    pub async fn insert_report(
        &self,
        kind: &str,
        period: &str,
        job: &str,
        run_id: &str,
        body: String,
    ) -> Result<()> {
        let am = report::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            kind: Set(kind.to_string()),
            period: Set(period.to_string()),
            job: Set(job.to_string()),
            run_id: Set(run_id.to_string()),
            body: Set(body),
            created_at: Set(now()),
        };
        report::Entity::insert(am)
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .try_insert()
            .exec_without_returning(&self.db)
            .await
            .ctx("storing a report")?;
        Ok(())
    }

    pub async fn reports(&self, kind: Option<&str>, limit: u64) -> Result<Vec<report::Model>> {
        let mut q = report::Entity::find().order_by(report::Column::Id, Order::Desc);
        if let Some(k) = kind {
            q = q.filter(report::Column::Kind.eq(k));
        }
        q.limit(limit).all(&self.db).await.ctx("listing reports")
    }

    pub async fn report(&self, id: &str) -> Result<Option<report::Model>> {
        report::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .ctx("reading a report")
    }

    // ------------------------------------------------------------------------------- leases

    /// Takes or renews a named lease; true while `holder` holds it.
    pub async fn hold_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let t = now();
        let until = t + chrono::Duration::from_std(ttl).unwrap_or_default();
        let res = lease::Entity::update_many()
            .col_expr(lease::Column::Holder, Expr::value(holder))
            .col_expr(lease::Column::ExpiresAt, Expr::value(until))
            .filter(lease::Column::Name.eq(name))
            .filter(
                lease::Column::Holder
                    .eq(holder)
                    .or(lease::Column::ExpiresAt.lt(t)),
            )
            .exec(&self.db)
            .await
            .ctx("renewing a lease")?;
        if res.rows_affected == 1 {
            return Ok(true);
        }
        let am = lease::ActiveModel {
            name: Set(name.to_string()),
            holder: Set(holder.to_string()),
            expires_at: Set(until),
        };
        let res = lease::Entity::insert(am)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await
            .ctx("taking a lease")?;
        Ok(matches!(res, TryInsertResult::Inserted(n) if n > 0))
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        lease::Entity::delete_many()
            .filter(lease::Column::Name.eq(name))
            .filter(lease::Column::Holder.eq(holder))
            .exec(&self.db)
            .await
            .ctx("releasing a lease")?;
        Ok(())
    }
}
