//! The control plane's database: the source of truth for jobs, runs, run events, executors,
//! reports, leases and dashboard sessions, one module per aggregate. Every change of a run's state is a
//! conditional `UPDATE` that re-checks the state (and the attempt, as a fencing token), so
//! concurrent replicas, late executors and operators can race without corrupting a run.
//!
//! Hot paths take many rows per statement: a batch travels as one JSON parameter turned into
//! rows by [`Store::rows_from_json`] (`jsonb_to_recordset` on Postgres, `json_each` on SQLite),
//! so the SQL text stays the same whatever the batch size.
pub mod entities;
pub mod events;
pub mod executors;
pub mod jobs;
pub mod leases;
pub mod lifecycle;
pub mod migration;
pub mod reports;
pub mod runs;
pub mod sessions;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult,
    Statement, TransactionTrait, Value,
};
use sea_orm_migration::MigratorTrait;

pub use entities::{executor, job, lease, report, run, run_event};
pub use jobs::JobChanges;
pub use runs::{NewRunRow, RunFilter};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error while {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: Arc<DbErr>,
    },
    #[error("{0}")]
    Corrupt(String),
}

impl StoreError {
    /// A conflict or deadlock between concurrent writers: the same statement may succeed when
    /// tried again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db { source, .. } => {
                let text = source.to_string();
                text.contains("deadlock")
                    || text.contains("could not serialize")
                    || text.contains("database is locked")
            }
            StoreError::Corrupt(_) => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, DbErr> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Db {
            context,
            source: Arc::new(source),
        })
    }
}

/// Timestamps are kept at microsecond precision: what Postgres stores, and what SQLite compares
/// as text.
pub fn now() -> DateTime<Utc> {
    truncate(Utc::now())
}

pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_subsec_micros();
    t.with_nanosecond(micros * 1000).unwrap_or(t)
}

/// A time inside a JSON batch, in the text form sqlx binds on SQLite (so stored values compare
/// correctly as text) and that Postgres parses as `timestamptz`.
pub fn json_time(t: DateTime<Utc>) -> String {
    truncate(t).to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// The column types a JSON batch can carry.
#[derive(Clone, Copy)]
pub(crate) enum Col {
    Text,
    Int,
    Big,
    Bool,
    Time,
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self> {
        let sqlite = url.starts_with("sqlite");
        let mut opts = ConnectOptions::new(url.to_string());
        opts.max_connections(if sqlite { 4 } else { 16 })
            .min_connections(if sqlite { 1 } else { 2 })
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(15))
            // A ping per acquire is a round trip per statement; a dead connection fails its
            // statement instead, which every caller handles.
            .test_before_acquire(false)
            .sqlx_logging(false)
            // Every connection of the pool, not just the first: readers and one writer at a
            // time without "database is locked" errors; WAL makes a commit one append.
            .map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
            });
        let db = Database::connect(opts).await.ctx("connecting")?;
        Ok(Self { db })
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub fn is_postgres(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Runs pending migrations. On Postgres an advisory lock serialises replicas that start
    /// together (concurrent `CREATE TABLE IF NOT EXISTS` races on the catalog otherwise).
    pub async fn migrate(&self) -> Result<()> {
        if !self.is_postgres() {
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

    // ------------------------------------------------------------------------- SQL helpers

    pub(crate) fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend(), sql, values)
    }

    /// A row source for `FROM` made of the JSON array bound as parameter `$param`, with the
    /// given columns, aliased `alias`.
    pub(crate) fn rows_from_json(&self, param: usize, alias: &str, cols: &[(&str, Col)]) -> String {
        if self.is_postgres() {
            let defs: Vec<String> = cols
                .iter()
                .map(|(name, ty)| {
                    let ty = match ty {
                        Col::Text => "text",
                        Col::Int => "integer",
                        Col::Big => "bigint",
                        Col::Bool => "boolean",
                        Col::Time => "timestamptz",
                    };
                    format!("{name} {ty}")
                })
                .collect();
            format!(
                "jsonb_to_recordset(${param}::jsonb) AS {alias}({})",
                defs.join(", ")
            )
        } else {
            let picks: Vec<String> = cols
                .iter()
                .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                .collect();
            format!(
                "(SELECT {} FROM json_each(${param})) AS {alias}",
                picks.join(", ")
            )
        }
    }

    /// `IN (...)` over the JSON array of strings bound as parameter `$param`.
    pub(crate) fn in_json_list(&self, param: usize) -> String {
        if self.is_postgres() {
            format!("IN (SELECT jsonb_array_elements_text(${param}::jsonb))")
        } else {
            format!("IN (SELECT value FROM json_each(${param}))")
        }
    }

    /// A `RETURNING` list of `table`'s columns in an `UPDATE ... FROM`: qualified on Postgres
    /// (the `FROM` rows' columns would be ambiguous or returned too), plain on SQLite (which
    /// returns only the updated table's columns and wants them unqualified).
    pub(crate) fn returning(&self, table: &str, cols: &[&str]) -> String {
        cols.iter()
            .map(|c| match (self.is_postgres(), *c) {
                (true, "*") => format!("{table}.*"),
                (true, c) => format!("{table}.{c} AS {c}"),
                (false, c) => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The larger of two SQL expressions.
    pub(crate) fn greatest(&self, a: &str, b: &str) -> String {
        if self.is_postgres() {
            format!("GREATEST({a}, {b})")
        } else {
            format!("MAX({a}, {b})")
        }
    }

    /// Makes the statements of `txn` that join a batch of rows to `runs` by id find them
    /// through the keys (Postgres; nothing on SQLite). The runs table grows by thousands of
    /// rows between two ANALYZEs when a burst arrives; on the statistics of an emptier table
    /// the planner hashes the batch and scans all of `runs` (2.5 ms per batch at 10,000
    /// runs, growing with them). One round trip per transaction, not per row.
    pub(crate) async fn keyed_plans(&self, txn: &impl ConnectionTrait) -> Result<()> {
        if self.is_postgres() {
            txn.execute_unprepared("SET LOCAL enable_seqscan = off")
                .await
                .ctx("planning by keys")?;
        }
        Ok(())
    }

    /// Sends notifications to every replica listening (Postgres only; a no-op on SQLite), all
    /// in one statement, as part of `db`'s transaction, so they are delivered only if the
    /// transaction commits.
    pub(crate) async fn notify(
        &self,
        db: &impl ConnectionTrait,
        payloads: &[String],
    ) -> Result<()> {
        if !self.is_postgres() || payloads.is_empty() {
            return Ok(());
        }
        let list: Vec<serde_json::Value> = payloads.iter().map(|p| p.as_str().into()).collect();
        db.execute_raw(self.stmt(
            "SELECT pg_notify($1, p) FROM jsonb_array_elements_text($2::jsonb) AS p",
            vec![crate::engine::notify::CHANNEL.into(), json_param(&list)],
        ))
        .await
        .ctx("sending notifications")?;
        Ok(())
    }
}

/// Turns JSON values into the text parameter of a batch.
pub(crate) fn json_param(rows: &[serde_json::Value]) -> Value {
    Value::String(Some(serde_json::Value::Array(rows.to_vec()).to_string()))
}

/// Reads a row into a model, saying which query it came from when it does not fit.
pub(crate) fn model<M: sea_orm::FromQueryResult>(row: &QueryResult, what: &str) -> Result<M> {
    M::from_query_result(row, "")
        .map_err(|e| StoreError::Corrupt(format!("cannot read a {what} row: {e}")))
}
