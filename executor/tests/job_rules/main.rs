//! The rules of `docs/jobs.md`, job by job, on both sides of every threshold, with rows inserted by
//! plain SQL: a second run changes nothing and queues no e-mail, the ticket invariant holds after
//! every run, refund arithmetic stays in integer minor units, day windows follow the job's
//! timezone, the file jobs age files by modification time, and `cancel-expired-bookings` never
//! cancels a booking another connection confirms meanwhile (Postgres).
//!
//! Every scenario runs on SQLite and, when `TICKETMAX_TEST_DATABASE_URL` is set, on Postgres.
//! No scenario reads the wall clock: each builds its rows around a fixed reference time passed
//! as `as_of`, and the scenarios whose rules are relative ("older than 10 minutes", "in 7
//! days") run at every time of [`reference_times`]: the 1st of a month, 1 January, 29 February
//! and both DST change days of Europe/London; the calendar windows are checked there too
//! ([`analytics::calendar_windows_at_every_reference_time`]).
//!
//! One module per service (`bookings`, `payments`, `events`, `notifications`, `data_cleanup`),
//! the report and analytics jobs of every service together (`analytics`), times stored by other
//! software (`stored_times`) and the Postgres concurrency tests (`races`); the helpers below are
//! shared by all of them.
#[path = "../common/mod.rs"]
mod common;

mod analytics;
mod bookings;
mod data_cleanup;
mod events;
mod notifications;
mod payments;
mod races;
mod stored_times;

use chrono::{DateTime, Duration, Utc};
use common::{RunOpts, TestDb, at};
use serde_json::Value;
use ticketmax_executor::tasks::{TaskError, TaskOutput};

const NOW: &str = "2026-11-28T12:00:00+00:00";

/// The reference times every relative rule is checked at.
fn reference_times() -> Vec<(&'static str, DateTime<Utc>)> {
    vec![
        ("an ordinary Saturday", at(NOW)),
        // Just after midnight on the 1st: yesterday and "last month" are another month.
        ("the 1st of a month", at("2026-12-01T00:30:00Z")),
        // Midnight exactly, and the ISO week is 2026-W53.
        ("1 January", at("2027-01-01T00:00:00Z")),
        ("29 February", at("2028-02-29T23:30:00Z")),
        // Europe/London: 01:00 GMT → 02:00 BST, and 02:00 BST → 01:00 GMT.
        ("the spring DST change", at("2026-03-29T01:30:00Z")),
        ("the autumn DST change", at("2026-10-25T01:30:00Z")),
    ]
}

/// Runs `job` with `as_of = now` in timezone `tz`, with no admin addresses.
async fn run_tz(
    t: &TestDb,
    job: &str,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    params: Value,
) -> Result<TaskOutput, TaskError> {
    let opts = RunOpts {
        tz,
        admin_emails: Vec::new(),
        ..RunOpts::default()
    };
    t.run_opts(job, now, params, opts).await.0
}

/// Runs `job` (UTC), checks the invariant, runs it again and checks that the second run changed
/// nothing: same row fingerprint, no e-mail queued. Returns the first run's output.
async fn run_twice(t: &TestDb, job: &str, now: DateTime<Utc>, params: Value) -> TaskOutput {
    run_twice_tz(t, job, now, chrono_tz::UTC, params).await
}

async fn run_twice_tz(
    t: &TestDb,
    job: &str,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    params: Value,
) -> TaskOutput {
    let first = run_tz(t, job, now, tz, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{}: {job}: {e}", t.name));
    t.assert_inventory().await;
    let before = fingerprint(t).await;
    let outbox = t.int("SELECT COUNT(*) FROM email_outbox").await;
    let second = run_tz(t, job, now, tz, params)
        .await
        .unwrap_or_else(|e| panic!("{}: {job} (second run): {e}", t.name));
    t.assert_inventory().await;
    assert_eq!(
        fingerprint(t).await,
        before,
        "{}: {job}: the second run changed rows",
        t.name
    );
    assert_eq!(
        t.int("SELECT COUNT(*) FROM email_outbox").await,
        outbox,
        "{}: {job}: the second run queued e-mails: {:?}",
        t.name,
        second.summary
    );
    if let Some(n) = second.summary.get("emails_queued").and_then(Value::as_u64) {
        assert_eq!(
            n, 0,
            "{}: {job}: second run summary {:?}",
            t.name, second.summary
        );
    }
    first
}

/// A cheap digest of the mutable state the jobs touch.
async fn fingerprint(t: &TestDb) -> Vec<i64> {
    vec![
        t.int("SELECT COUNT(*) FROM bookings").await,
        t.int("SELECT COUNT(*) FROM bookings WHERE status = 'pending'").await,
        t.int("SELECT COUNT(*) FROM bookings WHERE status = 'confirmed'").await,
        t.int("SELECT COUNT(*) FROM bookings WHERE status = 'cancelled'").await,
        t.int("SELECT COUNT(*) FROM bookings WHERE status = 'refunded'").await,
        t.int("SELECT COUNT(*) FROM bookings WHERE reminder_sent OR early_reminder_sent OR follow_up_sent OR confirmation_email_sent").await,
        t.int("SELECT COUNT(*) FROM bookings WHERE refund_processed").await,
        t.int("SELECT CAST(COALESCE(SUM(refund_amount), 0) AS BIGINT) FROM bookings").await,
        t.int("SELECT COUNT(*) FROM payments").await,
        t.int("SELECT COUNT(*) FROM payments WHERE status IN ('abandoned', 'failed', 'refunded')").await,
        t.int("SELECT CAST(COALESCE(SUM(available_tickets), 0) AS BIGINT) FROM events").await,
        t.int("SELECT COUNT(*) FROM events WHERE archived").await,
        t.int("SELECT COUNT(*) FROM users WHERE reengagement_sent").await,
    ]
}

async fn status(t: &TestDb, table: &str, id: i64) -> String {
    t.text(&format!("SELECT status FROM {table} WHERE id = {id}"))
        .await
        .unwrap_or_else(|| panic!("{}: {table} {id} is gone", t.name))
}

async fn exists(t: &TestDb, table: &str, id: i64) -> bool {
    t.int(&format!("SELECT COUNT(*) FROM {table} WHERE id = {id}"))
        .await
        == 1
}

/// Users 1 (verified) and an event 1 twenty days after `now` with `total` tickets, `held` of them held
/// by the bookings the test will insert.
async fn base(t: &TestDb, now: DateTime<Utc>, total: i64, held: i64) {
    t.exec(
        "INSERT INTO users (id, email, first_name, email_verified) \
         VALUES (1, 'ada@example.com', 'Ada', TRUE)",
    )
    .await;
    t.exec_with(
        &format!(
            "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, price) \
             VALUES (1, 'Afrobeats Night', $1, {total}, {}, 1000)",
            total - held
        ),
        vec![(now + Duration::days(20)).into()],
    )
    .await;
}

async fn booking(t: &TestDb, id: i64, quantity: i64, status: &str, created_at: DateTime<Utc>) {
    t.exec_with(
        &format!(
            "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) \
             VALUES ({id}, 1, 1, {quantity}, {}, '{status}', $1)",
            quantity * 1000
        ),
        vec![created_at.into()],
    )
    .await;
}
