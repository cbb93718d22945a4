//! Schema of the control plane's database (Postgres in production, SQLite embedded).
use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Initial),
            Box::new(Engine),
            Box::new(ExecutorSessions),
            Box::new(QueuedIndex),
            Box::new(DashboardSessions),
            Box::new(QueuedDueIndex),
        ]
    }
}

struct Initial;

impl MigrationName for Initial {
    fn name(&self) -> &str {
        "m20261128_000001_initial"
    }
}

fn ts(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}
fn ts_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}
fn text(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .text()
        .not_null()
        .to_owned()
}
fn text_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).text().null().to_owned()
}
fn int(name: &'static str, default: i32) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .integer()
        .not_null()
        .default(default)
        .to_owned()
}
fn big(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}
fn boolean(name: &'static str, default: bool) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .boolean()
        .not_null()
        .default(default)
        .to_owned()
}
fn index(name: &str, table: &str, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(Alias::new(table)).if_not_exists();
    for c in cols {
        idx.col(Alias::new(*c));
    }
    if unique {
        idx.unique();
    }
    idx.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("jobs"))
                .if_not_exists()
                .col(text("name").primary_key())
                .col(text("service"))
                .col(text("task"))
                .col(text("description"))
                .col(text("schedule"))
                .col(text("default_schedule"))
                .col(text("timezone"))
                .col(boolean("enabled", true))
                .col(text("overlap_policy"))
                .col(text("missed_tick_policy"))
                .col(int("catch_up_window_secs", 3600))
                .col(int("timeout_secs", 3600))
                .col(int("max_retries", 3))
                .col(int("retry_backoff_secs", 5))
                // Set once an operator changes the schedule, so the catalog upsert keeps it.
                .col(boolean("operator_modified", false))
                // Ticks before this instant are never caught up (job created, resumed or
                // rescheduled then).
                .col(ts("schedule_since"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .col(text_null("updated_by"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("runs"))
                .if_not_exists()
                .col(text("id").primary_key())
                .col(text("job"))
                .col(text("state"))
                .col(text("trigger"))
                .col(ts("scheduled_for"))
                // The cron tick of a scheduled run; NULL for manual runs. Unique per job, so
                // two replicas can never both record (and run) the same tick.
                .col(ts_null("tick_at"))
                .col(text_null("idempotency_key"))
                // Overlap slot: 0 = the active run of the job, 1 = the one queued behind it
                // (queue-one policy); NULL for finished runs and for the allow policy. Unique per
                // job, so the overlap policy holds across replicas and manual triggers.
                .col(ColumnDef::new(Alias::new("active_slot")).integer().null())
                .col(int("attempt", 1))
                .col(text_null("executor_id"))
                .col(text_null("owner"))
                .col(ts_null("lease_expires_at"))
                .col(ts("not_before"))
                .col(ts_null("deadline_at"))
                .col(boolean("cancel_requested", false))
                .col(text_null("params"))
                .col(text_null("summary"))
                .col(text_null("error"))
                .col(text_null("reason"))
                .col(text_null("triggered_by"))
                // W3C traceparent of the tick or trigger call; the dispatch span continues it.
                .col(text_null("trace_parent"))
                .col(ts("created_at"))
                .col(ts_null("started_at"))
                .col(ts_null("finished_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("runs_job_tick", "runs", &["job", "tick_at"], true))
            .await?;
        m.create_index(index(
            "runs_job_idempotency",
            "runs",
            &["job", "idempotency_key"],
            true,
        ))
        .await?;
        m.create_index(index(
            "runs_job_slot",
            "runs",
            &["job", "active_slot"],
            true,
        ))
        .await?;
        m.create_index(index(
            "runs_state_not_before",
            "runs",
            &["state", "not_before"],
            false,
        ))
        .await?;
        m.create_index(index("runs_job_id", "runs", &["job", "id"], false))
            .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("run_events"))
                .if_not_exists()
                .col(text("run_id"))
                .col(ColumnDef::new(Alias::new("seq")).big_integer().not_null())
                .col(ts("at"))
                .col(text("kind"))
                .col(text("payload"))
                .primary_key(
                    Index::create()
                        .col(Alias::new("run_id"))
                        .col(Alias::new("seq")),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("executors"))
                .if_not_exists()
                .col(text("id").primary_key())
                .col(text("address"))
                .col(text("jobs"))
                .col(text("version"))
                .col(int("running", 0))
                .col(big("outbox_pending"))
                .col(big("emails_sent"))
                .col(big("emails_failed"))
                .col(boolean("deregistered", false))
                .col(ts("registered_at"))
                .col(ts("last_heartbeat_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("reports"))
                .if_not_exists()
                .col(text("id").primary_key())
                .col(text("kind"))
                .col(text("period"))
                .col(text("job"))
                .col(text("run_id"))
                .col(text("body"))
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "reports_run_kind_period",
            "reports",
            &["run_id", "kind", "period"],
            true,
        ))
        .await?;
        m.create_index(index(
            "reports_kind_created",
            "reports",
            &["kind", "created_at"],
            false,
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("leases"))
                .if_not_exists()
                .col(text("name").primary_key())
                .col(text("holder"))
                .col(ts("expires_at"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// The batched run engine: `runs.last_seq` numbers a run's events without a `max(seq)` read per
/// event (backfilled from the events already stored), and one stored report per (kind, period)
/// (a re-run replaces the report of its period; older duplicates keep only the newest).
struct Engine;

impl MigrationName for Engine {
    fn name(&self) -> &str {
        "m20261202_000002_engine"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Engine {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("runs"))
                .add_column(
                    ColumnDef::new(Alias::new("last_seq"))
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        db.execute_unprepared(
            "UPDATE runs SET last_seq = COALESCE(\
                (SELECT MAX(e.seq) FROM run_events e WHERE e.run_id = runs.id), 0)",
        )
        .await?;
        db.execute_unprepared(
            "DELETE FROM reports WHERE id NOT IN \
                (SELECT MAX(id) FROM reports GROUP BY kind, period)",
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("reports_run_kind_period")
                .table(Alias::new("reports"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "reports_kind_period",
            "reports",
            &["kind", "period"],
            true,
        ))
        .await?;
        Ok(())
    }
}

/// Executor identity: each registration gets a session that its heartbeats carry, so a second
/// registration of a live id is refused and a displaced executor learns it; and the parameters
/// each executor declares for its jobs (JSON), which `TriggerJob` checks.
struct ExecutorSessions;

impl MigrationName for ExecutorSessions {
    fn name(&self) -> &str {
        "m20261202_000003_executor_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ExecutorSessions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("executors"))
                .add_column(text_null("session"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Alias::new("executors"))
                .add_column(
                    ColumnDef::new(Alias::new("tasks"))
                        .text()
                        .not_null()
                        .default("[]"),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// The claim takes the oldest queued runs (`ORDER BY id`, UUIDv7 so creation order). With only
/// `(state, not_before)` to go on, Postgres walks the primary key from the oldest run through
/// all history to reach the queued ones: 70 ms per claim at 200,000 finished runs, growing with
/// the table. This partial index holds the queued runs only, in id order (1 ms there).
struct QueuedIndex;

impl MigrationName for QueuedIndex {
    fn name(&self) -> &str {
        "m20261203_000004_queued_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for QueuedIndex {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Partial indexes are the same SQL on Postgres and SQLite.
        m.get_connection()
            .execute_unprepared("CREATE INDEX runs_queued_id ON runs (id) WHERE state = 'queued'")
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX runs_queued_id")
            .await?;
        Ok(())
    }
}

/// Dashboard sessions in the database, so a sign-in holds on every replica behind a load
/// balancer and a sign-out ends it everywhere; and an index for the runs list's trigger filter. Nothing secret is stored: the session id and
/// the API token appear only as SHA-256 digests (the token's is the one `TICKETMAX_API_TOKENS`
/// already holds), so reading this table neither signs anyone in nor reveals a token.
struct DashboardSessions;

impl MigrationName for DashboardSessions {
    fn name(&self) -> &str {
        "m20261204_000005_dashboard_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DashboardSessions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("dashboard_sessions"))
                .if_not_exists()
                .col(text("id_hash").primary_key())
                .col(text("token_hash"))
                .col(text("csrf"))
                .col(ts("created_at"))
                .col(ts("expires_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "dashboard_sessions_expires",
            "dashboard_sessions",
            &["expires_at"],
            false,
        ))
        .await?;
        // The runs list filtered by trigger walks this instead of all history (manual runs
        // are a few among the ticks: 15 ms at 100,000 runs without it, growing with them).
        m.create_index(index("runs_trigger_id", "runs", &["trigger", "id"], false))
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("runs_trigger_id")
                .table(Alias::new("runs"))
                .to_owned(),
        )
        .await?;
        m.drop_table(
            Table::drop()
                .table(Alias::new("dashboard_sessions"))
                .to_owned(),
        )
        .await
    }
}

/// The claim takes queued runs in the order they became due, `(not_before, id)`, through a
/// partial index in that order. With the index of `QueuedIndex` (id only) beside
/// `(state, not_before)`, the planner went by the statistics of the last ANALYZE: a queue
/// that grew from nothing to 8,000 runs in seconds still looked empty, so it read every
/// queued run through `(state, not_before)` and sorted them — 12 to 42 ms per claim in
/// `bench/runs.sh` with 10,000 runs. This index serves the filter and the order at once, so
/// the scan stops after the claim's limit.
struct QueuedDueIndex;

impl MigrationName for QueuedDueIndex {
    fn name(&self) -> &str {
        "m20261204_000006_queued_due_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for QueuedDueIndex {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(
            "CREATE INDEX runs_queued_due ON runs (not_before, id) WHERE state = 'queued'",
        )
        .await?;
        db.execute_unprepared("DROP INDEX runs_queued_id").await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared("CREATE INDEX runs_queued_id ON runs (id) WHERE state = 'queued'")
            .await?;
        db.execute_unprepared("DROP INDEX runs_queued_due").await?;
        Ok(())
    }
}
