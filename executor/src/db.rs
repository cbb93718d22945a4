//! Connection to the ticketing database and a small raw-SQL builder that works on both backends.
//!
//! Jobs are written as raw, set-based SQL. sqlx accepts `$1, $2, ..` numbered placeholders on
//! Postgres and on SQLite alike (SQLite binds `$N` to argument N, and a repeated `$N` is the same
//! argument), so one query text serves both; the few real differences (JSON construction, row
//! locks, date functions) live in [`Dialect`].
use std::path::Path;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult,
    Statement, Value,
};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the ticketing database: {0}")]
    Connect(#[source] DbErr),
    #[error("unsupported database backend {0:?}: use postgres:// or sqlite://")]
    Unsupported(DbBackend),
}

/// Connects to `url`; for a SQLite file, creates its directory first so a fresh data dir works.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbError> {
    if let Some(path) = sqlite_file_path(url)
        && let Some(dir) = Path::new(&path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(10)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        // SQL text is logged by our own spans when needed; sqlx's per-statement info logs are noise.
        .sqlx_logging(false);
    let db = Database::connect(options).await.map_err(DbError::Connect)?;
    Dialect::of(&db)?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // Several tasks and the mail sender share one SQLite file: wait for locks instead of
        // failing with SQLITE_BUSY, and let readers proceed while a chunk commits.
        db.execute_unprepared("PRAGMA journal_mode = WAL")
            .await
            .map_err(DbError::Connect)?;
        db.execute_unprepared("PRAGMA busy_timeout = 10000")
            .await
            .map_err(DbError::Connect)?;
    }
    Ok(db)
}

/// The file path of a `sqlite://PATH?...` URL, or None for in-memory and non-SQLite URLs.
fn sqlite_file_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(path.to_owned())
    }
}

/// The SQL differences between the two supported backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn of(db: &impl ConnectionTrait) -> Result<Self, DbError> {
        match db.get_database_backend() {
            DbBackend::Postgres => Ok(Dialect::Postgres),
            DbBackend::Sqlite => Ok(Dialect::Sqlite),
            other => Err(DbError::Unsupported(other)),
        }
    }

    pub fn backend(self) -> DbBackend {
        match self {
            Dialect::Postgres => DbBackend::Postgres,
            Dialect::Sqlite => DbBackend::Sqlite,
        }
    }

    /// Row locks for a claiming SELECT (on the rows of `alias` only: Postgres refuses to lock
    /// the nullable side of an outer join, and joined rows need no lock). SQLite has a single
    /// writer, so it needs none.
    pub fn skip_locked_of(self, alias: &str) -> String {
        match self {
            Dialect::Postgres => format!(" FOR UPDATE OF {alias} SKIP LOCKED"),
            Dialect::Sqlite => String::new(),
        }
    }

    /// `WITH picked AS MATERIALIZED (<select> FOR UPDATE OF <alias> SKIP LOCKED) `: the rows one
    /// chunk claims, for a following `UPDATE/DELETE ... WHERE id IN (SELECT id FROM picked)`.
    ///
    /// Materialized on purpose: written as `WHERE id IN (SELECT .. LIMIT n FOR UPDATE SKIP
    /// LOCKED)`, Postgres may re-run the sub-select for every row of the outer statement, each
    /// re-run skipping the rows just changed, so the whole table goes in one "chunk".
    pub fn picked(self, select: &str, alias: &str) -> String {
        format!(
            "WITH picked AS MATERIALIZED ({select}{}) ",
            self.skip_locked_of(alias)
        )
    }

    /// A JSON object, as text, from `(key, SQL expression)` pairs.
    pub fn json_object(self, fields: &[(&str, String)]) -> String {
        let args = fields
            .iter()
            .map(|(key, expr)| format!("'{key}', {expr}"))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            Dialect::Postgres => format!("json_build_object({args})::text"),
            Dialect::Sqlite => format!("json_object({args})"),
        }
    }

    /// A bound parameter holding JSON text, usable as a value inside [`Dialect::json_object`].
    pub fn json_value(self, placeholder: &str) -> String {
        match self {
            Dialect::Postgres => format!("CAST({placeholder} AS json)"),
            Dialect::Sqlite => format!("json({placeholder})"),
        }
    }

    /// A time expression (a column or a bound time) in the form this backend compares.
    ///
    /// Postgres compares `timestamptz` values. SQLite keeps times as text, and text written by
    /// other software comes in other shapes than the executor's RFC 3339 (`datetime('now')` gives
    /// `2026-11-28 10:00:00`, others end in `Z` or `+01:00`), whose text order is not time order;
    /// `julianday()` reads all of them as the instant they name. Every time comparison and time
    /// ordering of the jobs goes through here, on both sides.
    pub fn ts(self, expr: &str) -> String {
        match self {
            Dialect::Postgres => expr.to_owned(),
            Dialect::Sqlite => format!("julianday({expr})"),
        }
    }

    /// `left <op> right` over two time expressions (see [`Dialect::ts`]).
    pub fn cmp(self, left: &str, op: &str, right: &str) -> String {
        format!("{} {op} {}", self.ts(left), self.ts(right))
    }

    /// `start <= expr < end` over time expressions (see [`Dialect::ts`]).
    pub fn within(self, expr: &str, start: &str, end: &str) -> String {
        format!(
            "{} AND {}",
            self.cmp(expr, ">=", start),
            self.cmp(expr, "<", end)
        )
    }

    /// `MM-DD` of a date column.
    pub fn month_day(self, expr: &str) -> String {
        match self {
            Dialect::Postgres => format!("to_char({expr}, 'MM-DD')"),
            Dialect::Sqlite => format!("strftime('%m-%d', {expr})"),
        }
    }
}

/// A raw SQL statement under construction: text plus the values bound to `$1, $2, ..`.
pub struct Sql {
    dialect: Dialect,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            text: String::new(),
            values: Vec::new(),
        }
    }

    /// Binds a value and returns its placeholder (`$n`), which may be used several times.
    pub fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    /// Binds every value and returns `$a, $b, ..` for an `IN (..)` list.
    pub fn bind_list<V: Into<Value>>(&mut self, values: impl IntoIterator<Item = V>) -> String {
        let placeholders: Vec<String> = values.into_iter().map(|v| self.bind(v)).collect();
        if placeholders.is_empty() {
            // `IN ()` is a syntax error; NULL matches nothing.
            "NULL".to_owned()
        } else {
            placeholders.join(", ")
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.dialect.backend(), self.text, self.values)
    }

    /// A child span of the running task for one statement: its text (placeholders, never the
    /// bound values) and, once done, the rows it affected or returned.
    /// Outside any span (the mail sender's polling) there is nothing to join: no span.
    fn span(&self) -> tracing::Span {
        if tracing::Span::current().is_none() {
            return tracing::Span::none();
        }
        let system = match self.dialect {
            Dialect::Postgres => "postgresql",
            Dialect::Sqlite => "sqlite",
        };
        tracing::info_span!("sql", db.system = system, db.statement = %self.text, rows = tracing::field::Empty)
    }

    pub async fn execute(self, db: &impl ConnectionTrait) -> Result<u64, DbErr> {
        let span = self.span();
        let rows = db
            .execute_raw(self.statement())
            .instrument(span.clone())
            .await?
            .rows_affected();
        span.record("rows", rows);
        Ok(rows)
    }

    pub async fn fetch_all(self, db: &impl ConnectionTrait) -> Result<Vec<QueryResult>, DbErr> {
        let span = self.span();
        let rows = db
            .query_all_raw(self.statement())
            .instrument(span.clone())
            .await?;
        span.record("rows", rows.len());
        Ok(rows)
    }

    pub async fn fetch_one(self, db: &impl ConnectionTrait) -> Result<Option<QueryResult>, DbErr> {
        let span = self.span();
        let row = db
            .query_one_raw(self.statement())
            .instrument(span.clone())
            .await?;
        span.record("rows", usize::from(row.is_some()));
        Ok(row)
    }
}

/// Reads column `index` of a row, as the Rust type the query casts it to.
pub fn col<T: sea_orm::TryGetable>(row: &QueryResult, index: usize) -> Result<T, DbErr> {
    row.try_get_by_index(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_file_path("sqlite://./x/ticketing.db?mode=rwc").as_deref(),
            Some("./x/ticketing.db")
        );
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
        assert_eq!(sqlite_file_path("postgres://h/db"), None);
    }

    #[tokio::test]
    async fn numbered_placeholders_work_on_sqlite() {
        let db = connect("sqlite::memory:").await.expect("in-memory sqlite");
        let mut q = Sql::new(Dialect::Sqlite);
        let a = q.bind(2_i64);
        let b = q.bind(5_i64);
        q.push(&format!("SELECT {b} - {a}, {a} * {a}"));
        let row = q.fetch_one(&db).await.expect("query").expect("row");
        assert_eq!(col::<i64>(&row, 0).expect("col 0"), 3);
        assert_eq!(col::<i64>(&row, 1).expect("col 1"), 4);
    }
}
