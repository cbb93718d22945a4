//! Test harness: fresh ticketing databases (SQLite always, Postgres when
//! `TICKETMAX_TEST_DATABASE_URL` names a server) and a way to run one task directly.
#![allow(dead_code)]
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use serde_json::{Map, Value};
use ticketmax_executor::config::Dirs;
use ticketmax_executor::db::{self, Dialect, Sql, col};
use ticketmax_executor::mail::unsubscribe::Unsubscribe;
use ticketmax_executor::tasks::{
    ContextParts, RunRequest, RunStats, RunTrigger, TaskContext, TaskError, TaskOutput,
    TaskSettings,
};
use tokio_util::sync::CancellationToken;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = Utc::now().timestamp_subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub struct TestDb {
    /// The backend, and the scenario's reference time when there is one: for messages.
    pub name: String,
    /// "sqlite" or "postgres".
    pub backend: &'static str,
    pub db: DatabaseConnection,
    pub dialect: Dialect,
    pub dirs: Dirs,
    /// The database's URL, for a test that needs connections of its own to it.
    pub url: String,
    /// (server URL, database name) of a Postgres database to drop when the test ends.
    scratch: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.scratch.take() else {
            return;
        };
        // Drop runs outside async code: a short-lived runtime on its own thread does the DROP.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = db::connect(&server).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Fresh databases for a scenario run at the reference time called `label`.
pub async fn databases_at(label: &str) -> Vec<TestDb> {
    let mut dbs = databases().await;
    for t in &mut dbs {
        t.name = format!("{} at {label}", t.backend);
    }
    dbs
}

/// A migrated SQLite database, plus a migrated Postgres one when configured.
pub async fn databases() -> Vec<TestDb> {
    let root = std::env::temp_dir().join(unique("ticketmax_exec_test"));
    let dirs = Dirs {
        data: root.clone(),
        uploads_tmp: root.join("uploads/tmp"),
        documents: root.join("documents"),
        logs: root.join("logs"),
        mail: root.join("mail"),
    };
    let mut out = Vec::new();
    let sqlite_url = format!("sqlite://{}?mode=rwc", root.join("ticketing.db").display());
    let sqlite = db::connect(&sqlite_url).await.expect("sqlite");
    out.push(migrated("sqlite", sqlite, sqlite_url, dirs.clone(), None).await);
    match std::env::var("TICKETMAX_TEST_DATABASE_URL") {
        Ok(server) if !server.is_empty() => {
            let admin = db::connect(&server).await.expect("postgres server");
            let name = unique("tm_exec");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
            let url = format!("{base}/{name}");
            let pg = db::connect(&url).await.expect("test db");
            out.push(migrated("postgres", pg, url, dirs, Some((server.clone(), name))).await);
        }
        _ => eprintln!("TICKETMAX_TEST_DATABASE_URL is unset: testing on SQLite only"),
    }
    out
}

async fn migrated(
    name: &'static str,
    db: DatabaseConnection,
    url: String,
    dirs: Dirs,
    scratch: Option<(String, String)>,
) -> TestDb {
    ticketmax_executor::schema::Migrator::up(&db, None)
        .await
        .expect("migrations");
    let dialect = Dialect::of(&db).expect("dialect");
    TestDb {
        name: name.to_owned(),
        backend: name,
        db,
        dialect,
        dirs,
        url,
        scratch,
    }
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// The unsubscribe secret of the tests.
pub const UNSUBSCRIBE_SECRET: &str = "test-unsubscribe-secret-0123456789abcdef";

pub fn unsubscribe() -> Unsubscribe {
    Unsubscribe::new(UNSUBSCRIBE_SECRET, "https://tickets.example", None).expect("unsubscribe")
}

/// How a test runs a task: its timezone, the ADMIN_EMAILS it mails reports to, its
/// cancellation token, what fired it and the unsubscribe signer. Default: UTC,
/// `ops@example.com`, never cancelled, a manual run with `as_of`, [`UNSUBSCRIBE_SECRET`].
pub struct RunOpts {
    pub tz: chrono_tz::Tz,
    pub admin_emails: Vec<String>,
    pub cancel: CancellationToken,
    pub trigger: RunTrigger,
    /// `scheduled_for` of the run (default: the reference time).
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Whether `params.as_of` is set to the reference time (default true).
    pub as_of: bool,
    pub unsubscribe: Option<Unsubscribe>,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            tz: chrono_tz::UTC,
            admin_emails: vec!["ops@example.com".into()],
            cancel: CancellationToken::new(),
            trigger: RunTrigger::Manual,
            scheduled_for: None,
            as_of: true,
            unsubscribe: Some(unsubscribe()),
        }
    }
}

impl TestDb {
    /// Runs task `job` with `as_of = now` and the given extra params.
    pub async fn run(
        &self,
        job: &str,
        now: DateTime<Utc>,
        params: Value,
    ) -> Result<TaskOutput, TaskError> {
        self.run_with(job, now, params, CancellationToken::new())
            .await
    }

    pub async fn run_with(
        &self,
        job: &str,
        now: DateTime<Utc>,
        params: Value,
        cancel: CancellationToken,
    ) -> Result<TaskOutput, TaskError> {
        self.run_collect(job, now, params, cancel).await.0
    }

    /// Runs a task and also returns the `done` counts of its progress events.
    pub async fn run_collect(
        &self,
        job: &str,
        now: DateTime<Utc>,
        params: Value,
        cancel: CancellationToken,
    ) -> (Result<TaskOutput, TaskError>, Vec<u64>) {
        let opts = RunOpts {
            cancel,
            ..RunOpts::default()
        };
        self.run_opts(job, now, params, opts).await
    }

    /// Runs a task as set out in `opts`; also returns the `done` counts of its progress events.
    pub async fn run_opts(
        &self,
        job: &str,
        now: DateTime<Utc>,
        params: Value,
        opts: RunOpts,
    ) -> (Result<TaskOutput, TaskError>, Vec<u64>) {
        let registry = ticketmax_executor::jobs::registry();
        let task = registry.get(job).expect("task exists");
        let mut params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
        if opts.as_of {
            params.insert("as_of".into(), Value::String(now.to_rfc3339()));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = TaskContext::new(
            ContextParts {
                db: self.db.clone(),
                dialect: self.dialect,
                settings: Arc::new(TaskSettings {
                    dirs: self.dirs.clone(),
                    frontend_url: "https://tickets.example".into(),
                    admin_emails: opts.admin_emails,
                    memory_alert_mb: 512,
                    disk_alert_percent: 90,
                    reengagement_batch_limit: 1000,
                    started_at: now,
                    unsubscribe: opts.unsubscribe,
                }),
                run_stats: Arc::new(RunStats::default()),
                mail_queued: Arc::new(tokio::sync::Notify::new()),
            },
            RunRequest {
                run_id: "test-run".into(),
                job: job.into(),
                attempt: 1,
                scheduled_for: Some(opts.scheduled_for.unwrap_or(now)),
                trigger: opts.trigger,
                tz: opts.tz,
                params,
                declared: task.params(),
            },
            tx,
            opts.cancel,
            Arc::new(Mutex::new(Map::new())),
        );
        let result = match ctx {
            Ok(ctx) => task.run(&ctx).await,
            Err(e) => Err(e),
        };
        let mut progress = Vec::new();
        while let Ok(event) = rx.try_recv() {
            if let Some(ticketmax_proto::v1::executor_event::Kind::Progress(p)) = event.kind {
                progress.push(p.done);
            }
        }
        (result, progress)
    }

    pub async fn exec(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
    }

    /// Runs `sql` with `$1 .. $n` bound to `values`.
    pub async fn exec_with(&self, sql: &str, values: Vec<sea_orm::Value>) {
        let mut q = Sql::new(self.dialect);
        for v in values {
            q.bind(v);
        }
        q.push(sql);
        q.execute(&self.db)
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
    }

    pub async fn int(&self, sql: &str) -> i64 {
        let mut q = Sql::new(self.dialect);
        q.push(sql);
        let row = q
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name))
            .expect("a row");
        col::<Option<i64>>(&row, 0)
            .expect("an integer")
            .unwrap_or(0)
    }

    pub async fn text(&self, sql: &str) -> Option<String> {
        let mut q = Sql::new(self.dialect);
        q.push(sql);
        let row = q.fetch_one(&self.db).await.expect("query")?;
        col::<Option<String>>(&row, 0).expect("text")
    }

    /// Asserts the ticket invariant for every event.
    pub async fn assert_inventory(&self) {
        let broken = self
            .int(
                "SELECT COUNT(*) FROM events e WHERE e.available_tickets + \
                 (SELECT COALESCE(SUM(b.quantity), 0) FROM bookings b WHERE b.event_id = e.id \
                  AND b.status IN ('pending', 'confirmed')) <> e.total_tickets",
            )
            .await;
        assert_eq!(broken, 0, "{}: ticket invariant broken", self.name);
    }
}

pub fn count(out: &TaskOutput, key: &str) -> u64 {
    out.summary
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("summary has no count '{key}': {:?}", out.summary))
}
