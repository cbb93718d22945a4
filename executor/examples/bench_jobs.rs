//! Benchmark driver of `bench/jobs.sh`: each bulk job against one hand-written SQL statement.
//!
//! Seeds a fresh Postgres database (the template) with users, events, `BENCH_BOOKINGS` bookings
//! (default 1,000,000) and their payments using set-based `INSERT ... SELECT generate_series`,
//! then for each job clones the template twice (`CREATE DATABASE ... TEMPLATE`): on one copy it
//! runs the real Task (the executor's code, chunked, with its default batch size), on the other
//! one statement doing the same writes (the floor). It checks that both copies end in the same
//! state and prints job time, floor time and their ratio. Every database it creates is dropped.
//!
//! Environment: `TICKETMAX_BENCH_DATABASE_URL` (a Postgres server URL whose user may create
//! databases; default postgres://postgres@127.0.0.1:5432/postgres), `BENCH_BOOKINGS`,
//! `BENCH_JOBS` (comma-separated subset of the job names below).
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, DurationRound, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use serde_json::{Map, Value, json};
use ticketmax_executor::config::Dirs;
use ticketmax_executor::db::{self, Sql, col};
use ticketmax_executor::tasks::{
    ContextParts, RunRequest, RunStats, RunTrigger, TaskContext, TaskOutput, TaskSettings,
};
use tokio_util::sync::CancellationToken;

const EVENTS: i64 = 2_000;
const USERS: i64 = 100_000;

struct Bench {
    server: String,
    base: String,
    tag: String,
    started: Instant,
    now: DateTime<Utc>,
}

impl Bench {
    fn log(&self, msg: &str) {
        let s = self.started.elapsed().as_secs();
        eprintln!("[{:02}:{:02}] {msg}", s / 60, s % 60);
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// `'<now +/- offset>'::timestamptz`
    fn ts(&self, t: DateTime<Utc>) -> String {
        format!("'{}'::timestamptz", t.to_rfc3339())
    }

    async fn admin(&self) -> anyhow::Result<DatabaseConnection> {
        Ok(db::connect(&self.server).await?)
    }

    async fn clone_template(&self, name: &str) -> anyhow::Result<DatabaseConnection> {
        let admin = self.admin().await?;
        let tpl = format!("{}_tpl", self.tag);
        if admin
            .execute_unprepared(&format!(
                "CREATE DATABASE {name} TEMPLATE {tpl} STRATEGY FILE_COPY"
            ))
            .await
            .is_err()
        {
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name} TEMPLATE {tpl}"))
                .await?;
        }
        admin.close().await?;
        Ok(db::connect(&self.url(name)).await?)
    }

    async fn drop_db(&self, name: &str) {
        if let Ok(admin) = self.admin().await {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            let _ = admin.close().await;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let server = std::env::var("TICKETMAX_BENCH_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let bookings: i64 = std::env::var("BENCH_BOOKINGS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let only: Option<Vec<String>> = std::env::var("BENCH_JOBS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(|j| j.trim().to_owned()).collect());
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(b, _)| b)
        .to_owned();
    let bench = Bench {
        server: server.clone(),
        base,
        tag: format!("tm_bench_{}", std::process::id()),
        started: Instant::now(),
        // Whole seconds, so the literal timestamps of the floors match the bound ones exactly.
        now: Utc::now().duration_trunc(Duration::seconds(1))?,
    };
    let tpl = format!("{}_tpl", bench.tag);
    let result = run(&bench, bookings, only.as_deref()).await;
    bench.drop_db(&tpl).await;
    for suffix in ["job", "floor"] {
        bench.drop_db(&format!("{}_{suffix}", bench.tag)).await;
    }
    result
}

struct Row {
    job: &'static str,
    rows: String,
    job_time: StdDuration,
    floor_time: StdDuration,
    same: String,
}

async fn run(bench: &Bench, bookings: i64, only: Option<&[String]>) -> anyhow::Result<()> {
    let tpl = format!("{}_tpl", bench.tag);
    bench.log(&format!(
        "creating {tpl} and seeding {bookings} bookings (as_of {})",
        bench.now.to_rfc3339()
    ));
    let admin = bench.admin().await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {tpl}"))
        .await?;
    admin.close().await?;
    let db = db::connect(&bench.url(&tpl)).await?;
    ticketmax_executor::schema::Migrator::up(&db, None).await?;
    seed(bench, &db, bookings).await?;
    for (what, sql) in [
        ("bookings", "SELECT COUNT(*) FROM bookings"),
        ("payments", "SELECT COUNT(*) FROM payments"),
        ("events", "SELECT COUNT(*) FROM events"),
        ("users", "SELECT COUNT(*) FROM users"),
    ] {
        bench.log(&format!("  {what}: {}", int(&db, sql).await?));
    }
    db.close().await?;

    let mut table = Vec::new();
    for spec in specs(bench) {
        if let Some(only) = only
            && !only.iter().any(|j| spec.job.ends_with(j.as_str()))
        {
            continue;
        }
        let job_db_name = format!("{}_job", bench.tag);
        let floor_db_name = format!("{}_floor", bench.tag);

        bench.log(&format!("{}: cloning the data for the job", spec.job));
        let job_db = bench.clone_template(&job_db_name).await?;
        let acting = int(&job_db, &spec.acting).await?;
        bench.log(&format!(
            "{}: running the task ({acting} rows to act on)",
            spec.job
        ));
        let t = Instant::now();
        let out = run_task(bench, &job_db, spec.job).await?;
        let job_time = t.elapsed();
        bench.log(&format!(
            "{}: task took {:.2}s: {}",
            spec.job,
            job_time.as_secs_f64(),
            Value::Object(out.summary.clone())
        ));
        let job_state = digest(&job_db).await?;
        job_db.close().await?;
        bench.drop_db(&job_db_name).await;

        bench.log(&format!("{}: cloning the data for the floor", spec.job));
        let floor_db = bench.clone_template(&floor_db_name).await?;
        int(&floor_db, "SELECT CAST(1 AS BIGINT)").await?;
        let t = Instant::now();
        floor_db.execute_unprepared(&spec.floor).await?;
        let floor_time = t.elapsed();
        bench.log(&format!(
            "{}: floor statement took {:.2}s",
            spec.job,
            floor_time.as_secs_f64()
        ));
        let floor_state = digest(&floor_db).await?;
        floor_db.close().await?;
        bench.drop_db(&floor_db_name).await;

        let same = if spec.read_only {
            "read-only".to_owned()
        } else if job_state == floor_state {
            "yes".to_owned()
        } else {
            bench.log(&format!(
                "{}: STATES DIFFER\n  job:   {job_state}\n  floor: {floor_state}",
                spec.job
            ));
            "NO".to_owned()
        };
        table.push(Row {
            job: spec.job,
            rows: acting.to_string(),
            job_time,
            floor_time,
            same,
        });
    }

    println!();
    println!(
        "{bookings} bookings, Postgres, job = real Task (default batch size) on a copy, \
         floor = one hand-written statement on an identical copy"
    );
    println!(
        "{:<48} {:>9} {:>10} {:>10} {:>7}  same end state",
        "job", "rows", "job s", "floor s", "ratio"
    );
    println!("{}", "-".repeat(100));
    for r in &table {
        println!(
            "{:<48} {:>9} {:>10.2} {:>10.2} {:>7.2}  {}",
            r.job,
            r.rows,
            r.job_time.as_secs_f64(),
            r.floor_time.as_secs_f64(),
            r.job_time.as_secs_f64() / r.floor_time.as_secs_f64().max(1e-6),
            r.same
        );
    }
    bench.log("done");
    Ok(())
}

async fn int(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let mut q = Sql::new(db::Dialect::Postgres);
    q.push(sql);
    let row = q.fetch_one(db).await?.expect("a row");
    Ok(col::<Option<i64>>(&row, 0)?.unwrap_or(0))
}

/// The state the bulk jobs change, as one comparable string.
async fn digest(db: &DatabaseConnection) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM bookings",
        "SELECT COUNT(*) FROM bookings WHERE status = 'pending'",
        "SELECT COUNT(*) FROM bookings WHERE status = 'confirmed'",
        "SELECT COUNT(*) FROM bookings WHERE status = 'cancelled'",
        "SELECT COUNT(*) FROM bookings WHERE status = 'refunded'",
        "SELECT COUNT(*) FROM bookings WHERE reminder_sent",
        "SELECT COUNT(*) FROM bookings WHERE refund_processed",
        "SELECT COUNT(*) FROM bookings WHERE refund_denied",
        "SELECT CAST(COALESCE(SUM(refund_amount), 0) AS BIGINT) FROM bookings",
        "SELECT COUNT(*) FROM payments WHERE status = 'pending'",
        "SELECT COUNT(*) FROM payments WHERE status = 'abandoned'",
        "SELECT COUNT(*) FROM payments WHERE status = 'refunded'",
        "SELECT CAST(SUM(available_tickets) AS BIGINT) FROM events",
        "SELECT COUNT(*) FROM email_outbox",
        "SELECT COUNT(DISTINCT kind) FROM email_outbox",
        // The ticket invariant, broken events.
        "SELECT COUNT(*) FROM events e WHERE e.available_tickets + (SELECT COALESCE(SUM(b.quantity), 0) \
         FROM bookings b WHERE b.event_id = e.id AND b.status IN ('pending', 'confirmed')) <> e.total_tickets",
    ] {
        out.push(int(db, sql).await?.to_string());
    }
    Ok(out.join(" "))
}

async fn run_task(bench: &Bench, db: &DatabaseConnection, job: &str) -> anyhow::Result<TaskOutput> {
    let registry = ticketmax_executor::jobs::registry();
    let task = registry
        .get(job)
        .ok_or_else(|| anyhow::anyhow!("no task {job}"))?;
    let root = std::env::temp_dir().join(format!("{}_dirs", bench.tag));
    let mut params = Map::new();
    params.insert("as_of".into(), json!(bench.now.to_rfc3339()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Drain progress events as the executor's stream would.
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let ctx = TaskContext::new(
        ContextParts {
            db: db.clone(),
            dialect: db::Dialect::Postgres,
            settings: Arc::new(TaskSettings {
                dirs: Dirs {
                    data: root.clone(),
                    uploads_tmp: root.join("uploads/tmp"),
                    documents: root.join("documents"),
                    logs: root.join("logs"),
                    mail: root.join("mail"),
                },
                frontend_url: "https://tickets.example".into(),
                admin_emails: Vec::new(),
                memory_alert_mb: 512,
                disk_alert_percent: 90,
                reengagement_batch_limit: 1000,
                started_at: bench.now,
                unsubscribe: Some(ticketmax_executor::mail::unsubscribe::Unsubscribe::new(
                    "bench-only-unsubscribe-secret-0123456789",
                    "https://tickets.example",
                    None,
                )?),
            }),
            run_stats: Arc::new(RunStats::default()),
            mail_queued: Arc::new(tokio::sync::Notify::new()),
        },
        RunRequest {
            run_id: "bench".into(),
            job: job.into(),
            attempt: 1,
            scheduled_for: Some(bench.now),
            trigger: RunTrigger::Manual,
            tz: chrono_tz::UTC,
            params,
            declared: task.params(),
        },
        tx,
        CancellationToken::new(),
        Arc::new(Mutex::new(Map::new())),
    )?;
    let out = task.run(&ctx).await?;
    drop(ctx);
    let _ = drain.await;
    Ok(out)
}

/// Users, events, bookings (10 classes by `id % 10`), payments, logins; then the inventory.
///
/// - 0: pending, 11-60 min old, no payment → expired
/// - 1: pending, 20-50 min old, payment pending 16-20 min → abandoned payment (and expired)
/// - 2: cancelled 2 h ago with a refund requested 1 h ago, paid → refund (full, half or denied
///   depending on the event)
/// - 3: cancelled 45 days ago, payment failed → deleted by the clean-up
/// - 4-9: confirmed and paid, created over the last 30 days; a fifth of the events start
///   tomorrow → reminders
async fn seed(bench: &Bench, db: &DatabaseConnection, bookings: i64) -> anyhow::Result<()> {
    let now = bench.ts(bench.now);
    let tomorrow = bench.now.duration_trunc(Duration::days(1))? + Duration::days(1);
    let tomorrow = bench.ts(tomorrow);
    let steps: Vec<(&str, String)> = vec![
        (
            "users",
            format!(
                "INSERT INTO users (id, email, first_name, last_name, role, email_verified, \
                 newsletter_subscribed, promotional_emails, created_at, last_login_at) \
                 SELECT g, 'user' || g || '@bench.example', 'User', 'N' || g, \
                 CASE WHEN g <= 500 THEN 'organizer' ELSE 'customer' END, TRUE, g % 2 = 0, \
                 g % 3 = 0, {now} - (g % 400) * INTERVAL '1 day' - INTERVAL '1 minute', \
                 {now} - (g % 30) * INTERVAL '1 day' - INTERVAL '1 minute' \
                 FROM generate_series(1, {USERS}) g"
            ),
        ),
        (
            "events",
            format!(
                "INSERT INTO events (id, organizer_id, title, category, venue, starts_at, ends_at, \
                 total_tickets, available_tickets, price, currency, status, created_at) \
                 SELECT g, 1 + g % 500, 'Event ' || g, \
                 (ARRAY['music', 'tech', 'sports', 'arts'])[1 + g % 4], 'Venue ' || g % 50, s, \
                 s + INTERVAL '3 hours', 1000000, 1000000, 5001 + g % 7 * 1001, 'NGN', \
                 CASE WHEN g % 5 = 3 THEN 'completed' ELSE 'upcoming' END, \
                 {now} - (g % 90) * INTERVAL '1 day' - INTERVAL '1 minute' \
                 FROM (SELECT g, CASE g % 5 \
                   WHEN 0 THEN {tomorrow} + (g % 20) * INTERVAL '1 hour' \
                   WHEN 1 THEN {now} + INTERVAL '2 hours' \
                   WHEN 2 THEN {now} + INTERVAL '10 days' \
                   WHEN 3 THEN {now} - INTERVAL '2 days' \
                   ELSE {now} + INTERVAL '30 days' END AS s \
                   FROM generate_series(1, {EVENTS}) g) x"
            ),
        ),
        (
            "bookings",
            format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, currency, \
                 status, created_at, confirmed_at, cancelled_at, cancellation_reason, \
                 refund_requested, refund_requested_at) \
                 SELECT g, 1 + g % {USERS}, 1 + (g / 10) % {EVENTS}, 1 + g % 4, \
                 (1 + g % 4) * (5001 + g % 7 * 1001), 'NGN', \
                 CASE c WHEN 0 THEN 'pending' WHEN 1 THEN 'pending' WHEN 2 THEN 'cancelled' \
                   WHEN 3 THEN 'cancelled' ELSE 'confirmed' END, \
                 t, CASE WHEN c >= 4 THEN t END, \
                 CASE c WHEN 2 THEN {now} - INTERVAL '2 hours' WHEN 3 THEN t END, \
                 CASE WHEN c IN (2, 3) THEN 'Cancelled by the customer' END, \
                 c = 2, CASE WHEN c = 2 THEN {now} - INTERVAL '1 hour' END \
                 FROM (SELECT g, g % 10 AS c, CASE g % 10 \
                   WHEN 0 THEN {now} - (11 + g % 50) * INTERVAL '1 minute' \
                   WHEN 1 THEN {now} - (20 + g % 30) * INTERVAL '1 minute' \
                   WHEN 2 THEN {now} - INTERVAL '3 days' \
                   WHEN 3 THEN {now} - INTERVAL '45 days' \
                   ELSE {now} - ((g / 10) % 30) * INTERVAL '1 day' - (60 + g % 600) * INTERVAL '1 second' \
                   END AS t FROM generate_series(1, {bookings}) g) x"
            ),
        ),
        (
            "payments",
            format!(
                "INSERT INTO payments (id, booking_id, user_id, amount, currency, status, \
                 created_at, paid_at, failed_at) \
                 SELECT b.id, b.id, b.user_id, b.total_amount, b.currency, \
                 CASE b.id % 10 WHEN 1 THEN 'pending' WHEN 3 THEN 'failed' ELSE 'success' END, \
                 CASE b.id % 10 WHEN 1 THEN {now} - (16 + b.id % 4) * INTERVAL '1 minute' \
                   ELSE b.created_at END, \
                 CASE WHEN b.id % 10 IN (2, 4, 5, 6, 7, 8, 9) THEN b.created_at END, \
                 CASE WHEN b.id % 10 = 3 THEN b.created_at END \
                 FROM bookings b WHERE b.id % 10 <> 0"
            ),
        ),
        (
            "logins",
            format!(
                "INSERT INTO login_events (user_id, created_at) \
                 SELECT 1 + g % {USERS}, {now} - (g % 2880) * INTERVAL '1 minute' - INTERVAL '1 second' \
                 FROM generate_series(1, 100000) g"
            ),
        ),
        (
            "inventory",
            "UPDATE events e SET available_tickets = e.total_tickets - h.n \
             FROM (SELECT event_id, SUM(quantity) AS n FROM bookings \
                   WHERE status IN ('pending', 'confirmed') GROUP BY event_id) h \
             WHERE e.id = h.event_id"
                .to_owned(),
        ),
        ("vacuum analyze", "VACUUM (ANALYZE)".to_owned()),
        ("checkpoint", "CHECKPOINT".to_owned()),
    ];
    for (what, sql) in steps {
        let t = Instant::now();
        db.execute_unprepared(&sql).await?;
        bench.log(&format!(
            "  seeded {what} in {:.1}s",
            t.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

struct Spec {
    job: &'static str,
    /// Counts the rows the job acts on (before it runs).
    acting: String,
    /// The hand-written statement doing the same writes.
    floor: String,
    read_only: bool,
}

/// Payload of a booking e-mail over aliases `b` (a bookings row or CTE), `u`, `e`, as the jobs
/// write it.
fn booking_payload(extra: &str) -> String {
    format!(
        "json_build_object('booking_id', b.id, 'first_name', u.first_name, 'last_name', u.last_name, \
         'event_id', b.event_id, 'event_title', e.title, 'venue', e.venue, 'starts_at', e.starts_at, \
         'quantity', b.quantity, 'total_amount', b.total_amount, 'currency', b.currency, \
         'status', b.status, 'cancellation_reason', b.cancellation_reason{extra})::text"
    )
}

fn outbox_insert(now: &str, select: &str) -> String {
    format!(
        "INSERT INTO email_outbox (dedupe_key, kind, recipient, subject, payload, status, attempts, \
         next_attempt_at, created_at) {select_with_times} ON CONFLICT (dedupe_key) DO NOTHING",
        select_with_times = select.replace("{queued}", &format!("'pending', 0, {now}, {now}"))
    )
}

fn specs(bench: &Bench) -> Vec<Spec> {
    let now = bench.ts(bench.now);
    let ts = |d: Duration| bench.ts(bench.now + d);
    let today = bench.now.duration_trunc(Duration::days(1)).expect("day");
    let (tom_s, tom_e) = (
        bench.ts(today + Duration::days(1)),
        bench.ts(today + Duration::days(2)),
    );
    let (day_s, day_e) = (bench.ts(today), bench.ts(today + Duration::days(1)));
    let release = "r AS (UPDATE events ev SET available_tickets = ev.available_tickets + s.n \
                   FROM (SELECT event_id, SUM(quantity) AS n FROM c GROUP BY event_id) s \
                   WHERE ev.id = s.event_id)";
    vec![
        Spec {
            job: "booking-cleanup/cancel-expired-bookings",
            acting: format!(
                "SELECT COUNT(*) FROM bookings b WHERE b.status = 'pending' AND b.created_at < {} \
                 AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.booking_id = b.id AND p.status = 'success')",
                ts(Duration::minutes(-10))
            ),
            floor: format!(
                "WITH c AS (UPDATE bookings b SET status = 'cancelled', cancelled_at = {now}, \
                   cancellation_reason = 'Booking expired: no successful payment within 10 minutes' \
                   WHERE b.status = 'pending' AND b.created_at < {cutoff} \
                   AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.booking_id = b.id AND p.status = 'success') \
                   RETURNING b.*), {release} {insert}",
                cutoff = ts(Duration::minutes(-10)),
                insert = outbox_insert(
                    &now,
                    &format!(
                        "SELECT 'booking-cancelled:' || b.id, 'booking-cancelled', u.email, \
                         'Your booking for ' || COALESCE(e.title, 'your event') || ' was cancelled', \
                         {}, {{queued}} FROM c b JOIN users u ON u.id = b.user_id \
                         LEFT JOIN events e ON e.id = b.event_id",
                        booking_payload("")
                    )
                ),
            ),
            read_only: false,
        },
        Spec {
            job: "payment-cleanup/cleanup-abandoned-payments",
            acting: format!(
                "SELECT COUNT(*) FROM payments WHERE status = 'pending' AND created_at < {}",
                ts(Duration::minutes(-15))
            ),
            floor: format!(
                "WITH p AS (UPDATE payments SET status = 'abandoned', abandoned_at = {now} \
                   WHERE status = 'pending' AND created_at < {cutoff} RETURNING *), \
                 c AS (UPDATE bookings b SET status = 'cancelled', cancelled_at = {now}, \
                   cancellation_reason = 'Payment abandoned' \
                   WHERE b.id IN (SELECT booking_id FROM p) AND b.status = 'pending' \
                   AND NOT EXISTS (SELECT 1 FROM payments x WHERE x.booking_id = b.id AND x.status = 'success') \
                   RETURNING b.*), {release} {insert}",
                cutoff = ts(Duration::minutes(-15)),
                insert = outbox_insert(
                    &now,
                    "SELECT 'payment-abandoned:' || p.id, 'payment-abandoned', u.email, \
                     'Your payment was not completed', json_build_object('payment_id', p.id, \
                     'booking_id', p.booking_id, 'first_name', u.first_name, 'last_name', u.last_name, \
                     'amount', p.amount, 'currency', p.currency, 'failure_reason', p.failure_reason, \
                     'event_title', e.title, 'starts_at', e.starts_at, 'quantity', b.quantity, \
                     'booking_status', COALESCE(c.status, b.status))::text, {queued} \
                     FROM p JOIN users u ON u.id = p.user_id LEFT JOIN bookings b ON b.id = p.booking_id \
                     LEFT JOIN c ON c.id = p.booking_id LEFT JOIN events e ON e.id = b.event_id"
                ),
            ),
            read_only: false,
        },
        Spec {
            job: "booking-cleanup/process-refund-requests",
            acting: "SELECT COUNT(*) FROM bookings WHERE status = 'cancelled' \
                     AND refund_requested AND NOT refund_processed"
                .to_owned(),
            floor: format!(
                "WITH d AS (SELECT b.id, e.starts_at, COALESCE(b.refund_requested_at, b.cancelled_at, {now}) AS req, \
                   LEAST(b.total_amount, (SELECT COALESCE(SUM(p.amount), 0) FROM payments p \
                     WHERE p.booking_id = b.id AND p.status = 'success'))::bigint AS refundable \
                   FROM bookings b LEFT JOIN events e ON e.id = b.event_id \
                   WHERE b.status = 'cancelled' AND b.refund_requested AND NOT b.refund_processed), \
                 k AS (SELECT id, CASE WHEN starts_at IS NULL OR refundable <= 0 \
                     OR starts_at - req <= INTERVAL '0' THEN NULL \
                     WHEN starts_at - req >= INTERVAL '24 hours' THEN refundable \
                     ELSE refundable / 2 END AS amount, \
                   CASE WHEN starts_at IS NULL THEN 'The event of this booking no longer exists' \
                     WHEN refundable <= 0 THEN 'No payment was received for this booking' \
                     WHEN starts_at - req <= INTERVAL '0' THEN 'Refunds are not available once the event has started' \
                   END AS reason FROM d), \
                 c AS (UPDATE bookings b SET refund_processed = TRUE, refund_processed_at = {now}, \
                   refund_amount = COALESCE(k.amount, 0), refund_denied = k.amount IS NULL, \
                   refund_denial_reason = k.reason, \
                   status = CASE WHEN k.amount IS NULL THEN 'cancelled' ELSE 'refunded' END \
                   FROM k WHERE b.id = k.id RETURNING b.*), \
                 p AS (UPDATE payments SET status = 'refunded', refunded_at = {now} \
                   WHERE booking_id IN (SELECT id FROM c WHERE NOT refund_denied) AND status = 'success') \
                 {insert}",
                insert = outbox_insert(
                    &now,
                    &format!(
                        "SELECT 'refund:' || b.id, \
                         CASE WHEN b.refund_denied THEN 'refund-denied' ELSE 'refund-approved' END, u.email, \
                         CASE WHEN b.refund_denied THEN 'About your refund request' \
                           ELSE 'Your refund has been approved' END, {}, {{queued}} \
                         FROM c b JOIN users u ON u.id = b.user_id LEFT JOIN events e ON e.id = b.event_id",
                        booking_payload(
                            ", 'refund_amount', b.refund_amount, 'refund_denial_reason', b.refund_denial_reason"
                        )
                    )
                ),
            ),
            read_only: false,
        },
        Spec {
            job: "event-management/send-event-reminders",
            acting: format!(
                "SELECT COUNT(*) FROM bookings b JOIN events e ON e.id = b.event_id \
                 WHERE b.status = 'confirmed' AND NOT b.reminder_sent AND e.starts_at >= {tom_s} \
                 AND e.starts_at < {tom_e} AND e.status IN ('upcoming', 'live')"
            ),
            floor: format!(
                "WITH c AS (UPDATE bookings b SET reminder_sent = TRUE, reminder_sent_at = {now} \
                   FROM events e WHERE e.id = b.event_id AND b.status = 'confirmed' \
                   AND b.reminder_sent = FALSE AND e.starts_at >= {tom_s} AND e.starts_at < {tom_e} \
                   AND e.status IN ('upcoming', 'live') RETURNING b.*) {insert}",
                insert = outbox_insert(
                    &now,
                    &format!(
                        "SELECT 'event-reminder:' || b.id, 'event-reminder', u.email, \
                         'Reminder: ' || e.title || ' is tomorrow', {}, {{queued}} \
                         FROM c b JOIN users u ON u.id = b.user_id JOIN events e ON e.id = b.event_id",
                        booking_payload("")
                    )
                ),
            ),
            read_only: false,
        },
        Spec {
            job: "booking-cleanup/cleanup-old-cancelled-bookings",
            acting: format!(
                "SELECT COUNT(*) FROM bookings WHERE status = 'cancelled' \
                 AND COALESCE(cancelled_at, created_at) < {} \
                 AND NOT (refund_requested AND NOT refund_processed)",
                ts(Duration::days(-30))
            ),
            floor: format!(
                "DELETE FROM bookings WHERE status = 'cancelled' \
                 AND COALESCE(cancelled_at, created_at) < {} \
                 AND NOT (refund_requested AND NOT refund_processed)",
                ts(Duration::days(-30))
            ),
            read_only: false,
        },
        Spec {
            job: "analytics/generate-daily-analytics",
            acting: format!(
                "SELECT COUNT(*) FROM bookings WHERE created_at >= {day_s} AND created_at < {day_e}"
            ),
            floor: format!(
                "SELECT json_build_object( \
                 'new_users', (SELECT COUNT(*) FROM users WHERE created_at >= {s} AND created_at < {e}), \
                 'logins', (SELECT COUNT(*) FROM login_events WHERE created_at >= {s} AND created_at < {e}), \
                 'users_logged_in', (SELECT COUNT(*) FROM users WHERE last_login_at >= {s} AND last_login_at < {e}), \
                 'events_created', (SELECT COUNT(*) FROM events WHERE created_at >= {s} AND created_at < {e}), \
                 'bookings', (SELECT json_object_agg(status, n) FROM (SELECT status, COUNT(*) AS n \
                   FROM bookings WHERE created_at >= {s} AND created_at < {e} GROUP BY status) x), \
                 'payments', (SELECT json_object_agg(status, n) FROM (SELECT status, COUNT(*) AS n \
                   FROM payments WHERE created_at >= {s} AND created_at < {e} GROUP BY status) x), \
                 'revenue', (SELECT json_object_agg(currency, n) FROM (SELECT currency, SUM(amount) AS n \
                   FROM payments WHERE status = 'success' AND COALESCE(paid_at, created_at) >= {s} \
                   AND COALESCE(paid_at, created_at) < {e} GROUP BY currency) x), \
                 'tickets', (SELECT SUM(quantity) FROM bookings WHERE status = 'confirmed' \
                   AND created_at >= {s} AND created_at < {e}), \
                 'top', (SELECT json_agg(t) FROM (SELECT e.id, e.title, b.currency, SUM(b.total_amount) AS revenue, \
                   SUM(b.quantity) AS tickets, COUNT(*) AS bookings FROM bookings b JOIN events e ON e.id = b.event_id \
                   WHERE b.status = 'confirmed' AND b.created_at >= {s} AND b.created_at < {e} \
                   GROUP BY e.id, e.title, b.currency ORDER BY 4 DESC, e.id LIMIT 5) t))",
                s = day_s,
                e = day_e
            ),
            read_only: true,
        },
    ]
}
