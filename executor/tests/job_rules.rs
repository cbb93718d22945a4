//! The rules of SPEC §4, job by job, on both sides of every threshold, with rows inserted by
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
//! ([`calendar_windows_at_every_reference_time`]).
mod common;

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use common::{RunOpts, TestDb, at, count, databases, databases_at};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use ticketmax_executor::db::{Sql, col};
use ticketmax_executor::tasks::{RunTrigger, TaskError, TaskOutput};

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

#[tokio::test]
async fn expired_bookings_nine_minutes_stay_eleven_are_cancelled() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            base(&t, now, 50, 2 + 3 + 4 + 1 + 5).await;
            booking(&t, 1, 2, "pending", now - Duration::minutes(9)).await;
            booking(&t, 2, 3, "pending", now - Duration::minutes(11)).await;
            booking(&t, 3, 4, "confirmed", now - Duration::minutes(11)).await;
            // Exactly at the threshold: not older than 10 minutes, stays.
            booking(&t, 4, 1, "pending", now - Duration::minutes(10)).await;
            booking(&t, 5, 5, "confirmed", now - Duration::days(3)).await;
            booking(&t, 6, 7, "cancelled", now - Duration::days(3)).await;
            t.assert_inventory().await;
            let out = run_twice(
                &t,
                "booking-cleanup/cancel-expired-bookings",
                now,
                json!({"batch_size": 1}),
            )
            .await;
            assert_eq!(count(&out, "cancelled"), 1, "{}", t.name);
            assert_eq!(count(&out, "tickets_released"), 3, "{}", t.name);
            assert_eq!(count(&out, "emails_queued"), 1, "{}", t.name);
            assert_eq!(status(&t, "bookings", 1).await, "pending", "{}", t.name);
            assert_eq!(status(&t, "bookings", 2).await, "cancelled", "{}", t.name);
            assert_eq!(status(&t, "bookings", 3).await, "confirmed", "{}", t.name);
            assert_eq!(status(&t, "bookings", 4).await, "pending", "{}", t.name);
            assert_eq!(status(&t, "bookings", 5).await, "confirmed", "{}", t.name);
            assert_eq!(
                t.int("SELECT available_tickets FROM events WHERE id = 1")
                    .await,
                50 - 15 + 3,
                "{}",
                t.name
            );
            // Eleven minutes later booking 1 has expired too.
            let later = run_twice(
                &t,
                "booking-cleanup/cancel-expired-bookings",
                now + Duration::minutes(2),
                json!({}),
            )
            .await;
            assert_eq!(count(&later, "cancelled"), 2, "{}", t.name);
            assert_eq!(status(&t, "bookings", 1).await, "cancelled", "{}", t.name);
            assert_eq!(status(&t, "bookings", 4).await, "cancelled", "{}", t.name);
        }
    }
}

#[tokio::test]
async fn stale_payment_thresholds() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            // Bookings 1..4, one per payment, all still pending (old enough for the booking job,
            // which is not run here), each holding 2 tickets.
            base(&t, now, 20, 8).await;
            for id in 1..=4 {
                booking(&t, id, 2, "pending", now - Duration::minutes(30)).await;
            }
            t.exec_with(
                "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at) VALUES \
             (1, 1, 1, 2000, 'pending', $1), (2, 2, 1, 2000, 'pending', $2), \
             (3, 3, 1, 2000, 'processing', $3), (4, 4, 1, 2000, 'processing', $4)",
                vec![
                    (now - Duration::minutes(14)).into(),
                    (now - Duration::minutes(16)).into(),
                    (now - Duration::minutes(9)).into(),
                    (now - Duration::minutes(11)).into(),
                ],
            )
            .await;
            let abandoned = run_twice(
                &t,
                "payment-cleanup/cleanup-abandoned-payments",
                now,
                json!({"batch_size": 1}),
            )
            .await;
            assert_eq!(count(&abandoned, "abandoned"), 1, "{}", t.name);
            assert_eq!(count(&abandoned, "bookings_cancelled"), 1, "{}", t.name);
            assert_eq!(count(&abandoned, "tickets_released"), 2, "{}", t.name);
            assert_eq!(count(&abandoned, "emails_queued"), 1, "{}", t.name);
            assert_eq!(status(&t, "payments", 1).await, "pending", "{}", t.name);
            assert_eq!(status(&t, "payments", 2).await, "abandoned", "{}", t.name);
            assert_eq!(status(&t, "bookings", 1).await, "pending", "{}", t.name);
            assert_eq!(status(&t, "bookings", 2).await, "cancelled", "{}", t.name);

            let timeouts = run_twice(
                &t,
                "payment-cleanup/handle-payment-timeouts",
                now,
                json!({"batch_size": 1}),
            )
            .await;
            assert_eq!(count(&timeouts, "failed"), 1, "{}", t.name);
            assert_eq!(count(&timeouts, "bookings_cancelled"), 1, "{}", t.name);
            assert_eq!(count(&timeouts, "emails_queued"), 1, "{}", t.name);
            assert_eq!(status(&t, "payments", 3).await, "processing", "{}", t.name);
            assert_eq!(status(&t, "payments", 4).await, "failed", "{}", t.name);
            assert_eq!(
                t.int("SELECT COUNT(*) FROM payments WHERE id = 4 AND failed_at IS NOT NULL")
                    .await,
                1
            );
            assert_eq!(status(&t, "bookings", 3).await, "pending", "{}", t.name);
            assert_eq!(status(&t, "bookings", 4).await, "cancelled", "{}", t.name);
            assert_eq!(
                t.int("SELECT available_tickets FROM events WHERE id = 1")
                    .await,
                12 + 4,
                "{}",
                t.name
            );
            assert_eq!(
            t.int("SELECT COUNT(*) FROM email_outbox WHERE kind = 'payment-failed' AND dedupe_key = 'payment-failed:4'").await,
            1,
            "{}",
            t.name
        );
        }
    }
}

#[tokio::test]
async fn old_failed_payments_29_days_stay_31_are_deleted() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            base(&t, now, 10, 0).await;
            let (d29, d31) = (now - Duration::days(29), now - Duration::days(31));
            t.exec_with(
            "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at, failed_at, abandoned_at) VALUES \
             (1, 1, 1, 100, 'failed', $2, $1, NULL), \
             (2, 2, 1, 100, 'failed', $2, $2, NULL), \
             (3, 3, 1, 100, 'abandoned', $2, NULL, $1), \
             (4, 4, 1, 100, 'abandoned', $2, NULL, $2), \
             (5, 5, 1, 100, 'success', $2, NULL, NULL), \
             (6, 6, 1, 100, 'refunded', $2, NULL, NULL), \
             (7, 7, 1, 100, 'failed', $2, NULL, NULL), \
             (8, 8, 1, 100, 'pending', $2, NULL, NULL)",
            vec![d29.into(), d31.into()],
        )
        .await;
            let out = run_twice(
                &t,
                "payment-cleanup/cleanup-old-failed-payments",
                now,
                json!({"batch_size": 1}),
            )
            .await;
            assert_eq!(count(&out, "deleted"), 3, "{}: {:?}", t.name, out.summary);
            for (id, kept) in [
                (1, true),
                (2, false),
                (3, true),
                (4, false),
                (5, true),
                (6, true),
                (7, false),
                (8, true),
            ] {
                assert_eq!(
                    exists(&t, "payments", id).await,
                    kept,
                    "{}: payment {id}",
                    t.name
                );
            }
        }
    }
}

#[tokio::test]
async fn old_cancelled_bookings_29_days_stay_31_are_deleted_unless_refund_pending() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            base(&t, now, 10, 1).await;
            let (d29, d31) = (now - Duration::days(29), now - Duration::days(31));
            t.exec_with(
            "INSERT INTO bookings (id, user_id, event_id, quantity, status, created_at, cancelled_at, \
             refund_requested, refund_processed) VALUES \
             (1, 1, 1, 1, 'cancelled', $2, $1, FALSE, FALSE), \
             (2, 1, 1, 1, 'cancelled', $2, $2, FALSE, FALSE), \
             (3, 1, 1, 1, 'cancelled', $2, $2, TRUE, FALSE), \
             (4, 1, 1, 1, 'cancelled', $2, $2, TRUE, TRUE), \
             (5, 1, 1, 1, 'confirmed', $2, NULL, FALSE, FALSE), \
             (6, 1, 1, 1, 'refunded', $2, $2, TRUE, TRUE), \
             (7, 1, 1, 1, 'cancelled', $2, NULL, FALSE, FALSE), \
             (8, 1, 1, 1, 'cancelled', $1, NULL, FALSE, FALSE)",
            vec![d29.into(), d31.into()],
        )
        .await;
            t.assert_inventory().await;
            let out = run_twice(
                &t,
                "booking-cleanup/cleanup-old-cancelled-bookings",
                now,
                json!({"batch_size": 1}),
            )
            .await;
            assert_eq!(count(&out, "deleted"), 3, "{}: {:?}", t.name, out.summary);
            for (id, kept) in [
                (1, true),
                (2, false),
                (3, true),
                (4, false),
                (5, true),
                (6, true),
                (7, false),
                (8, true),
            ] {
                assert_eq!(
                    exists(&t, "bookings", id).await,
                    kept,
                    "{}: booking {id}",
                    t.name
                );
            }
        }
    }
}

#[tokio::test]
async fn events_completed_6_days_ago_stay_8_are_archived() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            let (d6, d8) = (now - Duration::days(6), now - Duration::days(8));
            t.exec_with(
                "INSERT INTO events (id, title, starts_at, ends_at, status, completed_at) VALUES \
             (1, 'six', $1, $1, 'completed', $1), \
             (2, 'eight', $2, $2, 'completed', $2), \
             (3, 'eight, still upcoming', $2, $2, 'upcoming', NULL), \
             (4, 'eight, cancelled', $2, $2, 'cancelled', NULL), \
             (5, 'ended 8 days ago, completed 6 days ago', $2, $2, 'completed', $1), \
             (6, 'no completed_at, ended 8 days ago', $2, $2, 'completed', NULL), \
             (7, 'no end: started 7 days 4 h 1 min ago', $3, NULL, 'completed', NULL), \
             (8, 'no end: started 7 days 3 h 59 min ago', $4, NULL, 'completed', NULL)",
                vec![
                    d6.into(),
                    d8.into(),
                    (now - Duration::days(7) - Duration::minutes(4 * 60 + 1)).into(),
                    (now - Duration::days(7) - Duration::minutes(4 * 60 - 1)).into(),
                ],
            )
            .await;
            let out = run_twice(
                &t,
                "event-management/archive-past-events",
                now,
                json!({"batch_size": 1}),
            )
            .await;
            assert_eq!(count(&out, "archived"), 3, "{}: {:?}", t.name, out.summary);
            // Event 8 ended (start + 4 h) 6 days 23 h 59 min ago: not yet.
            assert_eq!(
            t.int("SELECT COUNT(*) FROM events WHERE archived AND archived_at IS NOT NULL AND id IN (2, 6, 7)").await,
            3,
            "{}",
            t.name
        );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM events WHERE archived").await,
                3,
                "{}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn reminders_for_tomorrow_in_the_jobs_timezone() {
    let lagos = chrono_tz::Africa::Lagos; // UTC+1, no DST
    // 09:00 in Lagos on the 28th; "tomorrow" is the 29th local = [28 23:00Z, 29 23:00Z).
    let now = at("2026-11-28T08:00:00Z");
    for t in databases().await {
        t.exec(
            "INSERT INTO users (id, email, first_name, email_verified) \
             VALUES (1, 'ada@example.com', 'Ada', TRUE)",
        )
        .await;
        let starts = [
            // 1: 29th 00:30 Lagos (28th 23:30 UTC): tomorrow in Lagos, today in UTC.
            "2026-11-28T23:30:00Z",
            // 2: 29th 20:00 Lagos: tomorrow.
            "2026-11-29T19:00:00Z",
            // 3: 30th 00:30 Lagos (29th 23:30 UTC): in two days in Lagos, tomorrow in UTC.
            "2026-11-29T23:30:00Z",
            // 4: 30th noon: in two days.
            "2026-11-30T11:00:00Z",
            // 5: today.
            "2026-11-28T18:00:00Z",
        ];
        for (i, s) in starts.iter().enumerate() {
            t.exec_with(
                &format!(
                    "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) \
                     VALUES ({}, 'event {}', $1, 10, 8)",
                    i + 1,
                    i + 1
                ),
                vec![at(s).into()],
            )
            .await;
            t.exec(&format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, status) \
                 VALUES ({}, 1, {}, 2, 'confirmed')",
                i + 1,
                i + 1
            ))
            .await;
        }
        // A pending booking for tomorrow's event 2 gets no reminder; a cancelled one neither.
        t.exec(
            "UPDATE events SET available_tickets = 5 WHERE id = 2; \
             INSERT INTO bookings (id, user_id, event_id, quantity, status) VALUES \
             (10, 1, 2, 3, 'pending'), (11, 1, 2, 1, 'cancelled')",
        )
        .await;
        t.assert_inventory().await;
        let out = run_twice_tz(
            &t,
            "event-management/send-event-reminders",
            now,
            lagos,
            json!({"batch_size": 1}),
        )
        .await;
        assert_eq!(
            count(&out, "reminders_sent"),
            2,
            "{}: {:?}",
            t.name,
            out.summary
        );
        assert_eq!(count(&out, "emails_queued"), 2, "{}", t.name);
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE reminder_sent AND id IN (1, 2)")
                .await,
            2,
            "{}",
            t.name
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE reminder_sent")
                .await,
            2,
            "{}",
            t.name
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM email_outbox WHERE dedupe_key IN ('event-reminder:1', 'event-reminder:2')").await,
            2,
            "{}",
            t.name
        );
        // A day later in Lagos, events 3 and 4 are tomorrow.
        let next = run_twice_tz(
            &t,
            "event-management/send-event-reminders",
            now + Duration::days(1),
            lagos,
            json!({}),
        )
        .await;
        assert_eq!(count(&next, "reminders_sent"), 2, "{}", t.name);
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE reminder_sent AND id IN (3, 4)")
                .await,
            2,
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn birthdays_today_in_timezone_and_leap_day_on_28_february() {
    let lagos = chrono_tz::Africa::Lagos;
    // 00:30 on 28 Feb 2027 in Lagos (a non-leap year) is still the 27th in UTC.
    let now = at("2027-02-27T23:30:00Z");
    for t in databases().await {
        // A birthday offer is marketing: verified and opted in (user 7 opted out).
        t.exec(
            "INSERT INTO users (id, email, email_verified, promotional_emails, date_of_birth) VALUES \
             (1, 'leap@example.com', TRUE, TRUE, '2000-02-29'), \
             (2, 'feb28@example.com', TRUE, TRUE, '1990-02-28'), \
             (3, 'feb27@example.com', TRUE, TRUE, '1990-02-27'), \
             (4, 'mar1@example.com', TRUE, TRUE, '1990-03-01'), \
             (5, 'unverified@example.com', FALSE, TRUE, '1990-02-28'), \
             (6, 'nobirthday@example.com', TRUE, TRUE, NULL), \
             (7, 'optout@example.com', TRUE, FALSE, '1990-02-28')",
        )
        .await;
        let out = run_twice_tz(
            &t,
            "notifications/send-birthday-wishes",
            now,
            lagos,
            json!({"batch_size": 1}),
        )
        .await;
        assert_eq!(
            count(&out, "emails_queued"),
            2,
            "{}: {:?}",
            t.name,
            out.summary
        );
        assert_eq!(
            t.int(
                "SELECT COUNT(*) FROM email_outbox WHERE kind = 'birthday' \
                   AND dedupe_key IN ('birthday:1:2027', 'birthday:2:2027')"
            )
            .await,
            2,
            "{}",
            t.name
        );
        // Each later run (UTC) mails exactly one more user.
        for (why, when, key) in [
            // The same instant in UTC is the 27th: only user 3.
            ("utc run", now, "birthday:3:2027"),
            // In a leap year, 28 February is not the leap-day user's birthday.
            (
                "leap-year run",
                at("2028-02-28T10:00:00Z"),
                "birthday:2:2028",
            ),
            (
                "leap-day run",
                at("2028-02-29T10:00:00Z"),
                "birthday:1:2028",
            ),
        ] {
            let out = run_tz(
                &t,
                "notifications/send-birthday-wishes",
                when,
                chrono_tz::UTC,
                json!({}),
            )
            .await
            .expect(why);
            assert_eq!(count(&out, "emails_queued"), 1, "{}: {why}", t.name);
            assert_eq!(
                t.int(&format!(
                    "SELECT COUNT(*) FROM email_outbox WHERE dedupe_key = '{key}'"
                ))
                .await,
                1,
                "{}: {why}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn re_engagement_after_90_days_without_booking() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            // A win-back offer is marketing (verified, opted in) for accounts older than the
            // 90-day window with no booking inside it.
            t.exec_with(
                "INSERT INTO users (id, email, email_verified, promotional_emails, reengagement_sent, created_at) VALUES \
                 (1, 'recent@example.com', TRUE, TRUE, FALSE, $1), \
                 (2, 'lapsed@example.com', TRUE, TRUE, FALSE, $1), \
                 (3, 'never@example.com', TRUE, TRUE, FALSE, $1), \
                 (4, 'unverified@example.com', FALSE, TRUE, FALSE, $1), \
                 (5, 'already@example.com', TRUE, TRUE, TRUE, $1), \
                 (6, 'mixed@example.com', TRUE, TRUE, FALSE, $1), \
                 (7, 'optout@example.com', TRUE, FALSE, FALSE, $1), \
                 (8, 'yesterday@example.com', TRUE, TRUE, FALSE, $2), \
                 (9, 'signed-up-89-days-ago@example.com', TRUE, TRUE, FALSE, $3), \
                 (10, 'signed-up-91-days-ago@example.com', TRUE, TRUE, FALSE, $4)",
                vec![
                    (now - Duration::days(400)).into(),
                    (now - Duration::days(1)).into(),
                    (now - Duration::days(89)).into(),
                    (now - Duration::days(91)).into(),
                ],
            )
            .await;
            t.exec("INSERT INTO events (id, title, total_tickets, available_tickets) VALUES (1, 'x', 10, 10)")
                .await;
            t.exec_with(
                "INSERT INTO bookings (id, user_id, event_id, quantity, status, created_at) VALUES \
                 (1, 1, 1, 1, 'cancelled', $1), (2, 2, 1, 1, 'cancelled', $2), \
                 (3, 6, 1, 1, 'cancelled', $2), (4, 6, 1, 1, 'cancelled', $1), \
                 (5, 7, 1, 1, 'cancelled', $2)",
                vec![
                    (now - Duration::days(89)).into(),
                    (now - Duration::days(91)).into(),
                ],
            )
            .await;
            let out = run_twice(
                &t,
                "notifications/send-re-engagement-emails",
                now,
                json!({"batch_size": 1}),
            )
            .await;
            assert_eq!(
                count(&out, "reengagement_sent"),
                3,
                "{}: {:?}",
                t.name,
                out.summary
            );
            assert_eq!(count(&out, "emails_queued"), 3, "{}", t.name);
            assert_eq!(
                t.int("SELECT COUNT(*) FROM users WHERE reengagement_sent AND reengagement_sent_at IS NOT NULL AND id IN (2, 3, 10)").await,
                3,
                "{}",
                t.name
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM users WHERE reengagement_sent")
                    .await,
                4,
                "{}",
                t.name
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM email_outbox WHERE recipient IN \
                       ('optout@example.com', 'yesterday@example.com', 'signed-up-89-days-ago@example.com')")
                    .await,
                0,
                "{}",
                t.name
            );
            // The sender builds the signed unsubscribe link from these.
            let payload: Value = serde_json::from_str(
                &t.text("SELECT payload FROM email_outbox WHERE dedupe_key = 're-engagement:2'")
                    .await
                    .expect("payload"),
            )
            .expect("JSON");
            assert_eq!(
                payload["unsubscribe_list"], "marketing",
                "{}: {payload}",
                t.name
            );
            assert_eq!(payload["user_id"], 2, "{}: {payload}", t.name);
        }
    }
}

#[tokio::test]
async fn re_engagement_respects_the_limit() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            for id in 1..=5 {
                t.exec_with(
                &format!(
                    "INSERT INTO users (id, email, email_verified, promotional_emails, created_at) \
                     VALUES ({id}, 'u{id}@example.com', TRUE, TRUE, $1)"
                ),
                vec![(now - Duration::days(365)).into()],
            )
            .await;
            }
            let out = run_tz(
                &t,
                "notifications/send-re-engagement-emails",
                now,
                chrono_tz::UTC,
                json!({"limit": 3, "batch_size": 2}),
            )
            .await
            .expect("run");
            assert_eq!(
                count(&out, "reengagement_sent"),
                3,
                "{}: {:?}",
                t.name,
                out.summary
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM email_outbox").await,
                3,
                "{}",
                t.name
            );
        }
    }
}

/// Refunds as money really moves, in integer minor units: half of an odd amount rounds down; a
/// partial refund leaves its payment a `success` with `refunded_amount` beside it (and the
/// booking `cancelled`), only a full one marks them `refunded`; what was already refunded is
/// subtracted; a booking of an event the organizer cancelled is refunded in full whatever the
/// notice; revenue counts what was kept.
#[tokio::test]
async fn refund_arithmetic_on_odd_amounts() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            t.exec(
                "INSERT INTO users (id, email, email_verified) VALUES (1, 'ada@example.com', TRUE)",
            )
            .await;
            // Event 1 starts in 12 h (partial), event 2 in 3 days (full), event 3 started an hour
            // ago (denied), event 4 started an hour ago too but its organizer cancelled it.
            t.exec_with(
                "INSERT INTO events (id, title, starts_at, status, total_tickets, available_tickets) VALUES \
                 (1, 'soon', $1, 'upcoming', 10, 10), (2, 'later', $2, 'upcoming', 10, 10), \
                 (3, 'started', $3, 'live', 10, 10), (4, 'called off', $3, 'cancelled', 10, 10)",
                vec![
                    (now + Duration::hours(12)).into(),
                    (now + Duration::days(3)).into(),
                    (now - Duration::hours(1)).into(),
                ],
            )
            .await;
            // (booking, event, total, success payments as (amount, already refunded))
            type Case = (i64, i64, i64, &'static [(i64, i64)]);
            let cases: [Case; 11] = [
                (1, 1, 1001, &[(1001, 0)]),          // 50 % of 1001 → 500, never 501
                (2, 2, 1001, &[(1001, 0)]),          // full → 1001
                (3, 2, 2000, &[(1500, 0)]),          // full, but only 1500 was paid → 1500
                (4, 1, 1001, &[(999, 0)]),           // 50 % of what was paid (999) → 499
                (5, 3, 1001, &[(1001, 0)]),          // after the start → denied
                (6, 2, 1001, &[]),                   // nothing paid → denied
                (7, 1, 1001, &[(600, 0), (401, 0)]), // 500, taken from the older payment
                (8, 4, 1001, &[(1001, 0)]),          // organizer cancelled: full after the start
                (9, 4, 1001, &[(501, 0), (500, 0)]), // the same over two payments
                (10, 2, 1000, &[(1000, 300)]),       // full minus the 300 already refunded → 700
                (11, 1, 1000, &[(1000, 500)]),       // 50 % = 500, already refunded → denied
            ];
            let mut payment_id = 1;
            for (id, event, total, paid) in cases {
                t.exec_with(
                    &format!(
                        "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, \
                         created_at, cancelled_at, refund_requested, refund_requested_at) VALUES \
                         ({id}, 1, {event}, 1, {total}, 'cancelled', $1, $1, TRUE, $1)"
                    ),
                    vec![now.into()],
                )
                .await;
                for (amount, refunded) in paid {
                    t.exec_with(
                        &format!(
                            "INSERT INTO payments (id, booking_id, user_id, amount, refunded_amount, \
                             status, created_at, paid_at) \
                             VALUES ({payment_id}, {id}, 1, {amount}, {refunded}, 'success', $1, $1)"
                        ),
                        vec![(now - Duration::days(1)).into()],
                    )
                    .await;
                    payment_id += 1;
                }
            }
            // A failed attempt on booking 3 is not money received.
            t.exec_with(
                &format!(
                    "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at) \
                     VALUES ({payment_id}, 3, 1, 500, 'failed', $1)"
                ),
                vec![(now - Duration::days(1)).into()],
            )
            .await;
            let out = run_twice(
                &t,
                "booking-cleanup/process-refund-requests",
                now,
                json!({"batch_size": 3}),
            )
            .await;
            assert_eq!(
                count(&out, "processed"),
                11,
                "{}: {:?}",
                t.name,
                out.summary
            );
            assert_eq!(
                count(&out, "refunded_full"),
                5,
                "{}: {:?}",
                t.name,
                out.summary
            );
            assert_eq!(count(&out, "refunded_event_cancelled"), 2, "{}", t.name);
            assert_eq!(count(&out, "refunded_partial"), 3, "{}", t.name);
            assert_eq!(count(&out, "denied"), 3, "{}", t.name);
            assert_eq!(count(&out, "emails_queued"), 11, "{}", t.name);
            for (id, amount, st) in [
                (1, 500, "cancelled"),
                (2, 1001, "refunded"),
                (3, 1500, "refunded"),
                (4, 499, "cancelled"),
                (5, 0, "cancelled"),
                (6, 0, "cancelled"),
                (7, 500, "cancelled"),
                (8, 1001, "refunded"),
                (9, 1001, "refunded"),
                (10, 700, "refunded"),
                (11, 0, "cancelled"),
            ] {
                assert_eq!(
                    t.int(&format!(
                        "SELECT refund_amount FROM bookings WHERE id = {id}"
                    ))
                    .await,
                    amount,
                    "{}: booking {id}",
                    t.name
                );
                assert_eq!(
                    status(&t, "bookings", id).await,
                    st,
                    "{}: booking {id}",
                    t.name
                );
            }
            // Payment by payment: (id, status, refunded_amount).
            for (id, st, refunded) in [
                (1, "success", 500), // booking 1: half kept
                (2, "refunded", 1001),
                (3, "refunded", 1500),
                (4, "success", 499),
                (5, "success", 0),   // denied
                (6, "success", 500), // booking 7: from the older payment first
                (7, "success", 0),
                (8, "refunded", 1001),
                (9, "refunded", 501),
                (10, "refunded", 500),
                (11, "refunded", 1000),
                (12, "success", 500), // booking 11: nothing more
                (13, "failed", 0),
            ] {
                assert_eq!(
                    status(&t, "payments", id).await,
                    st,
                    "{}: payment {id}",
                    t.name
                );
                assert_eq!(
                    t.int(&format!(
                        "SELECT refunded_amount FROM payments WHERE id = {id}"
                    ))
                    .await,
                    refunded,
                    "{}: payment {id}",
                    t.name
                );
            }
            assert_eq!(
                t.int("SELECT COUNT(*) FROM payments WHERE status = 'refunded' AND refunded_at IS NULL")
                    .await,
                0,
                "{}",
                t.name
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM bookings WHERE refund_denied AND refund_denial_reason IS NOT NULL").await,
                3,
                "{}",
                t.name
            );
            // Never over-refunded: what the payments gave back never exceeds what they took, per
            // payment and per booking.
            assert_eq!(
                t.int(
                    "SELECT COUNT(*) FROM bookings b WHERE b.total_amount < \
                     (SELECT COALESCE(SUM(p.refunded_amount), 0) FROM payments p WHERE p.booking_id = b.id) \
                     OR EXISTS (SELECT 1 FROM payments p WHERE p.booking_id = b.id \
                                AND p.refunded_amount > p.amount)"
                )
                .await,
                0,
                "{}",
                t.name
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM email_outbox WHERE kind = 'refund-approved'")
                    .await,
                8,
                "{}",
                t.name
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM email_outbox WHERE kind = 'refund-denied'")
                    .await,
                3,
                "{}",
                t.name
            );
            let policy = |key: &'static str| {
                let t = &t;
                async move {
                    let payload = t
                        .text(&format!(
                            "SELECT payload FROM email_outbox WHERE dedupe_key = '{key}'"
                        ))
                        .await
                        .expect("payload");
                    serde_json::from_str::<Value>(&payload).expect("JSON")["refund_policy"].clone()
                }
            };
            assert_eq!(policy("refund:1").await, "partial", "{}", t.name);
            assert_eq!(policy("refund:2").await, "full", "{}", t.name);
            assert_eq!(policy("refund:8").await, "event_cancelled", "{}", t.name);
            // Yesterday's revenue counts what was kept: amount - refunded_amount of each success
            // payment (p1, p4, p5, p6, p7, p12); the refunded ones kept nothing.
            let analytics = run_tz(
                &t,
                "payment-cleanup/generate-payment-analytics",
                now,
                chrono_tz::UTC,
                json!({}),
            )
            .await
            .expect("payment analytics");
            let body = &analytics.reports[0].body;
            assert_eq!(
                body["revenue"]["NGN"],
                501 + 500 + 100 + 401 + 1001 + 500,
                "{}: {body}",
                t.name
            );
        }
    }
}

/// The midnight payment report covers the local day that just ended, the daily reports cover the
/// local day that just began, follow-ups go to events that ended yesterday, all in the job's
/// timezone.
#[tokio::test]
async fn daily_windows_follow_the_jobs_timezone() {
    let lagos = chrono_tz::Africa::Lagos; // UTC+1
    let la = chrono_tz::America::Los_Angeles; // UTC-8 in November
    for t in databases().await {
        t.exec("INSERT INTO users (id, email, email_verified) VALUES (1, 'ada@example.com', TRUE)")
            .await;
        // Lagos: 00:05 on the 28th = 23:05Z on the 27th; yesterday = [26 23:00Z, 27 23:00Z).
        let pay = [
            ("2026-11-26T22:30:00Z", "success"), // 26th local: no
            ("2026-11-26T23:30:00Z", "success"), // 27th 00:30 local: yes
            ("2026-11-27T22:30:00Z", "failed"),  // 27th 23:30 local: yes
            ("2026-11-27T23:02:00Z", "success"), // 28th 00:02 local: no
        ];
        for (i, (created, st)) in pay.iter().enumerate() {
            t.exec_with(
                &format!(
                    "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at, paid_at) \
                     VALUES ({}, {}, 1, 700, '{st}', $1, $1)",
                    i + 1,
                    i + 1
                ),
                vec![at(created).into()],
            )
            .await;
        }
        let out = run_twice_tz(
            &t,
            "payment-cleanup/generate-payment-analytics",
            at("2026-11-27T23:05:00Z"),
            lagos,
            json!({}),
        )
        .await;
        let body = &out.reports[0].body;
        assert_eq!(out.reports[0].period, "2026-11-27", "{}", t.name);
        assert_eq!(body["total"], 2, "{}: {body}", t.name);
        assert_eq!(body["by_status"]["success"], 1, "{}: {body}", t.name);
        assert_eq!(body["by_status"]["failed"], 1, "{}: {body}", t.name);
        assert_eq!(body["revenue"]["NGN"], 700, "{}: {body}", t.name);

        // Los Angeles: 00:10 on the 28th = 08:10Z; today = [28 08:00Z, 29 08:00Z).
        t.exec("INSERT INTO events (id, title, total_tickets, available_tickets) VALUES (1, 'x', 100, 94)")
            .await;
        let bookings = [
            "2026-11-28T03:00:00Z", // 27th 19:00 local (already the 28th in UTC): no
            "2026-11-28T07:55:00Z", // 27th 23:55 local: no
            "2026-11-28T08:05:00Z", // 28th 00:05 local: yes
        ];
        for (i, created) in bookings.iter().enumerate() {
            t.exec_with(
                &format!(
                    "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) \
                     VALUES ({}, 1, 1, 2, 3001, 'confirmed', $1)",
                    i + 1
                ),
                vec![at(created).into()],
            )
            .await;
        }
        t.assert_inventory().await;
        let as_of = at("2026-11-28T08:10:00Z");
        let daily = run_twice_tz(
            &t,
            "booking-cleanup/generate-daily-report",
            as_of,
            la,
            json!({}),
        )
        .await;
        assert_eq!(daily.reports[0].period, "2026-11-28", "{}", t.name);
        let body = &daily.reports[0].body;
        assert_eq!(body["total"], 1, "{}: {body}", t.name);
        assert_eq!(body["tickets_sold"], 2, "{}: {body}", t.name);
        assert_eq!(body["confirmed_revenue"]["NGN"], 3001, "{}: {body}", t.name);
        let analytics = run_twice_tz(
            &t,
            "analytics/generate-daily-analytics",
            as_of,
            la,
            json!({}),
        )
        .await;
        assert_eq!(analytics.reports[0].period, "2026-11-28", "{}", t.name);
        assert_eq!(
            analytics.reports[0].body["bookings"]["total"], 1,
            "{}: {}",
            t.name, analytics.reports[0].body
        );

        // Follow-ups in Los Angeles at 00:10 on the 28th: events that ended on the 27th local,
        // i.e. in [27 08:00Z, 28 08:00Z).
        let ended = [
            (2, "2026-11-27T07:30:00Z"), // 26th local: no
            (3, "2026-11-27T09:00:00Z"), // 27th local: yes
            (4, "2026-11-28T07:30:00Z"), // 27th 23:30 local (28th in UTC): yes
            (5, "2026-11-28T08:05:00Z"), // 28th local (today): no
        ];
        for (id, end) in ended {
            t.exec_with(
                &format!(
                    "INSERT INTO events (id, title, starts_at, ends_at, status, total_tickets, available_tickets) \
                     VALUES ({id}, 'e{id}', $1, $2, 'completed', 10, 9)"
                ),
                vec![(at(end) - Duration::hours(3)).into(), at(end).into()],
            )
            .await;
            t.exec(&format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, status) \
                 VALUES ({}, 1, {id}, 1, 'confirmed')",
                10 + id
            ))
            .await;
        }
        let follow = run_twice_tz(
            &t,
            "notifications/send-event-follow-ups",
            as_of,
            la,
            json!({}),
        )
        .await;
        assert_eq!(
            count(&follow, "follow_ups_sent"),
            2,
            "{}: {:?}",
            t.name,
            follow.summary
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE follow_up_sent AND id IN (13, 14)")
                .await,
            2,
            "{}",
            t.name
        );
    }
}

/// A file whose modification time is `age` before the reference time `now`.
fn write_aged(path: &std::path::Path, bytes: usize, now: DateTime<Utc>, age: Duration) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, vec![b'x'; bytes]).expect("write");
    let mtime: SystemTime = (now - age).into();
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(mtime)
        .expect("set mtime");
}

#[tokio::test]
async fn file_jobs_age_files_by_modification_time() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            let d = &t.dirs;
            let h = Duration::hours;
            write_aged(&d.uploads_tmp.join("fresh.bin"), 10, now, h(23));
            write_aged(&d.uploads_tmp.join("old.bin"), 100, now, h(25));
            write_aged(&d.uploads_tmp.join("nested/old.bin"), 1000, now, h(25));
            write_aged(&d.logs.join("recent.log"), 10, now, Duration::days(29));
            write_aged(&d.logs.join("old.log"), 200, now, Duration::days(31));
            write_aged(&d.logs.join("old.txt"), 10, now, Duration::days(31));
            write_aged(&d.documents.join("recent.pdf"), 10, now, Duration::days(29));
            write_aged(
                &d.documents.join("orphan.pdf"),
                300,
                now,
                Duration::days(31),
            );
            write_aged(
                &d.documents.join("kept/used.pdf"),
                10,
                now,
                Duration::days(31),
            );
            t.exec("INSERT INTO documents (path) VALUES ('kept/used.pdf')")
                .await;

            let tmp = run_twice(&t, "data-cleanup/clean-temporary-files", now, json!({})).await;
            assert_eq!(
                count(&tmp, "files_deleted"),
                2,
                "{}: {:?}",
                t.name,
                tmp.summary
            );
            assert_eq!(count(&tmp, "bytes_freed"), 1100, "{}", t.name);
            assert!(d.uploads_tmp.join("fresh.bin").exists());
            assert!(!d.uploads_tmp.join("old.bin").exists());
            assert!(!d.uploads_tmp.join("nested/old.bin").exists());

            let logs = run_twice(&t, "data-cleanup/clean-old-logs", now, json!({})).await;
            assert_eq!(
                count(&logs, "files_deleted"),
                1,
                "{}: {:?}",
                t.name,
                logs.summary
            );
            assert_eq!(count(&logs, "bytes_freed"), 200, "{}", t.name);
            assert!(d.logs.join("recent.log").exists());
            assert!(d.logs.join("old.txt").exists());
            assert!(!d.logs.join("old.log").exists());

            let docs = run_twice(&t, "data-cleanup/clean-orphaned-documents", now, json!({})).await;
            assert_eq!(
                count(&docs, "files_deleted"),
                1,
                "{}: {:?}",
                t.name,
                docs.summary
            );
            assert_eq!(count(&docs, "bytes_freed"), 300, "{}", t.name);
            assert!(d.documents.join("recent.pdf").exists());
            assert!(d.documents.join("kept/used.pdf").exists());
            assert!(!d.documents.join("orphan.pdf").exists());

            // A second run from the second database shares nothing with the first: clean up.
            let _ = std::fs::remove_dir_all(&d.data);
        }
    }
}

/// Confirmations racing the expiry job on other connections: a booking the other side
/// confirmed is never cancelled, no confirmed booking is cancelled, no ticket is lost or made.
#[tokio::test]
async fn expiry_races_concurrent_confirmations_on_postgres() {
    let now = at(NOW);
    for t in databases().await {
        if t.backend != "postgres" {
            continue;
        }
        const EVENTS: i64 = 20;
        const PENDING: i64 = 6000;
        t.exec("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')")
            .await;
        t.exec(&format!(
            "INSERT INTO events (id, title, total_tickets, available_tickets) \
             SELECT g, 'event ' || g, 100000, 100000 FROM generate_series(1, {EVENTS}) g"
        ))
        .await;
        t.exec_with(
            &format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) \
                 SELECT g, 1, 1 + g % {EVENTS}, 1 + g % 3, 1000, \
                 CASE WHEN g % 10 = 0 THEN 'confirmed' ELSE 'pending' END, $1 \
                 FROM generate_series(1, {PENDING}) g"
            ),
            vec![(now - Duration::minutes(30)).into()],
        )
        .await;
        t.exec(
            "UPDATE events e SET available_tickets = total_tickets - (SELECT COALESCE(SUM(quantity), 0) \
             FROM bookings b WHERE b.event_id = e.id)",
        )
        .await;
        t.assert_inventory().await;
        let tickets_before = t
            .int("SELECT CAST(SUM(total_tickets) AS BIGINT) FROM events")
            .await;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut confirmers = Vec::new();
        for worker in 0..3_i64 {
            let db = t.db.clone();
            let dialect = t.dialect;
            let stop = stop.clone();
            confirmers.push(tokio::spawn(async move {
                let mut confirmed = Vec::new();
                let mut id = 1 + worker * 7;
                let mut rounds = 0_u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 50 {
                    rounds += 1;
                    // Walk the ids in a stride so the workers cross the job's chunks.
                    let ids: Vec<i64> = (0..4).map(|k| 1 + (id + k * 1499) % PENDING).collect();
                    id = (id + 13) % PENDING;
                    let mut q = Sql::new(dialect);
                    let list = q.bind_list(ids);
                    q.push(&format!(
                        "UPDATE bookings SET status = 'confirmed', confirmed_at = CURRENT_TIMESTAMP \
                         WHERE id IN ({list}) AND status = 'pending' RETURNING id"
                    ));
                    for row in q.fetch_all(&db).await.expect("confirm") {
                        confirmed.push(col::<i64>(&row, 0).expect("id"));
                    }
                    if rounds > 200_000 {
                        break;
                    }
                }
                confirmed
            }));
        }
        // Let the confirmers start, then expire in small chunks.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let out = run_tz(
            &t,
            "booking-cleanup/cancel-expired-bookings",
            now,
            chrono_tz::UTC,
            json!({"batch_size": 25}),
        )
        .await
        .expect("expiry run");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut confirmed_by_others = Vec::new();
        for c in confirmers {
            confirmed_by_others.extend(c.await.expect("confirmer"));
        }
        let cancelled = count(&out, "cancelled");
        eprintln!(
            "cancelled {cancelled}, confirmed concurrently {}",
            confirmed_by_others.len()
        );
        assert!(cancelled > 0, "the job cancelled nothing");
        assert!(
            !confirmed_by_others.is_empty(),
            "the confirmers confirmed nothing"
        );
        let mut unique = confirmed_by_others.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            confirmed_by_others.len(),
            "a booking was confirmed twice"
        );

        // Nothing both confirmed by another connection and cancelled.
        let mut q = Sql::new(t.dialect);
        let list = q.bind_list(unique.iter().copied());
        q.push(&format!(
            "SELECT COUNT(*) FROM bookings WHERE id IN ({list}) AND status <> 'confirmed'"
        ));
        let row = q.fetch_one(&t.db).await.expect("query").expect("row");
        assert_eq!(
            col::<i64>(&row, 0).expect("n"),
            0,
            "a confirmed booking was cancelled"
        );
        // The pre-confirmed ones too.
        assert_eq!(
            t.int(&format!(
                "SELECT COUNT(*) FROM bookings WHERE id % 10 = 0 AND id <= {PENDING} AND status <> 'confirmed'"
            ))
            .await,
            0
        );
        // A chunk skips rows a confirmer holds locked, so a few may still be pending when the
        // job ends; a run after the confirmers stopped cancels exactly those.
        let left = t
            .int("SELECT COUNT(*) FROM bookings WHERE status = 'pending'")
            .await;
        assert!(left <= 12, "{left} expired bookings left pending");
        t.assert_inventory().await;
        let again = run_tz(
            &t,
            "booking-cleanup/cancel-expired-bookings",
            now,
            chrono_tz::UTC,
            json!({}),
        )
        .await
        .expect("second run");
        assert_eq!(count(&again, "cancelled") as i64, left);
        let cancelled = cancelled + count(&again, "cancelled");
        let released = count(&out, "tickets_released") + count(&again, "tickets_released");
        // Every booking is accounted for: confirmed (before or concurrently) or cancelled.
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE status = 'cancelled'")
                .await,
            cancelled as i64
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE status = 'pending'")
                .await,
            0
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE status = 'confirmed'")
                .await,
            PENDING / 10 + unique.len() as i64
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE status = 'cancelled' AND confirmed_at IS NOT NULL").await,
            0
        );
        assert_eq!(
            t.int("SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM bookings WHERE status = 'cancelled'")
                .await,
            released as i64
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM email_outbox WHERE kind = 'booking-cancelled'")
                .await,
            cancelled as i64
        );
        assert_eq!(
            t.int("SELECT CAST(SUM(total_tickets) AS BIGINT) FROM events")
                .await,
            tickets_before
        );
        t.assert_inventory().await;
        let third = run_tz(
            &t,
            "booking-cleanup/cancel-expired-bookings",
            now,
            chrono_tz::UTC,
            json!({}),
        )
        .await
        .expect("third run");
        assert_eq!(count(&third, "cancelled"), 0);
        assert_eq!(count(&third, "emails_queued"), 0);
        t.assert_inventory().await;
    }
}

#[tokio::test]
async fn event_statuses_at_start_and_end() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            let m = Duration::minutes;
            // (id, status, starts_at, ends_at, expected)
            let cases: [(i64, &str, Duration, Option<Duration>, &str); 9] = [
                (1, "upcoming", m(1), None, "upcoming"),
                (2, "upcoming", m(-1), None, "live"),
                (3, "upcoming", m(-5 * 60), None, "completed"),
                (4, "live", m(-4 * 60 + 1), None, "live"),
                (5, "live", m(-4 * 60 - 1), None, "completed"),
                (6, "live", m(-10 * 60), Some(m(-1)), "completed"),
                (7, "live", m(-10 * 60), Some(m(1)), "live"),
                (8, "cancelled", m(-60), None, "cancelled"),
                (9, "upcoming", m(-60), Some(m(-1)), "completed"),
            ];
            for (id, st, start, end, _) in &cases {
                t.exec_with(
                    &format!(
                        "INSERT INTO events (id, title, status, starts_at, ends_at) \
                     VALUES ({id}, 'e{id}', '{st}', $1, $2)"
                    ),
                    vec![(now + *start).into(), end.map(|e| now + e).into()],
                )
                .await;
            }
            let out = run_twice(&t, "event-management/update-event-statuses", now, json!({})).await;
            assert_eq!(count(&out, "live"), 1, "{}: {:?}", t.name, out.summary);
            assert_eq!(count(&out, "completed"), 4, "{}: {:?}", t.name, out.summary);
            for (id, _, _, _, expected) in &cases {
                assert_eq!(
                    status(&t, "events", *id).await,
                    *expected,
                    "{}: event {id}",
                    t.name
                );
            }
            assert_eq!(
            t.int(
                "SELECT COUNT(*) FROM events WHERE status = 'completed' AND completed_at IS NULL"
            )
            .await,
            0,
            "{}",
            t.name
        );
            let again = run_tz(
                &t,
                "event-management/update-event-statuses",
                now,
                chrono_tz::UTC,
                json!({}),
            )
            .await
            .expect("second run");
            assert_eq!(
                count(&again, "live") + count(&again, "completed"),
                0,
                "{}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn early_bird_reminders_seven_days_ahead_only() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            t.exec(
                "INSERT INTO users (id, email, email_verified) VALUES (1, 'ada@example.com', TRUE)",
            )
            .await;
            for (id, days) in [(1, 6), (2, 7), (3, 8), (4, 1)] {
                t.exec_with(
                &format!(
                    "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) \
                     VALUES ({id}, 'e{id}', $1, 10, 9)"
                ),
                vec![(now + Duration::days(days)).into()],
            )
            .await;
                t.exec(&format!(
                    "INSERT INTO bookings (id, user_id, event_id, quantity, status) \
                 VALUES ({id}, 1, {id}, 1, 'confirmed')"
                ))
                .await;
            }
            let out = run_twice(
                &t,
                "event-management/send-early-bird-reminders",
                now,
                json!({}),
            )
            .await;
            assert_eq!(
                count(&out, "reminders_sent"),
                1,
                "{}: {:?}",
                t.name,
                out.summary
            );
            assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE early_reminder_sent AND NOT reminder_sent AND id = 2")
                .await,
            1,
            "{}",
            t.name
        );
            // The day-before reminder is a separate flag: event 4 still gets it.
            let tomorrow =
                run_twice(&t, "event-management/send-event-reminders", now, json!({})).await;
            assert_eq!(count(&tomorrow, "reminders_sent"), 1, "{}", t.name);
            assert_eq!(
                t.int("SELECT COUNT(*) FROM bookings WHERE reminder_sent AND id = 4")
                    .await,
                1,
                "{}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn confirmations_only_for_confirmed_bookings_without_one() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            base(&t, now, 20, 6).await;
            booking(&t, 1, 1, "confirmed", now - Duration::hours(1)).await;
            booking(&t, 2, 2, "confirmed", now - Duration::hours(1)).await;
            booking(&t, 3, 3, "pending", now - Duration::minutes(1)).await;
            booking(&t, 4, 4, "cancelled", now - Duration::hours(1)).await;
            t.exec("UPDATE bookings SET confirmation_email_sent = TRUE WHERE id = 2")
                .await;
            let out = run_twice(
                &t,
                "booking-cleanup/send-pending-booking-confirmations",
                now,
                json!({}),
            )
            .await;
            assert_eq!(
                count(&out, "confirmations_sent"),
                1,
                "{}: {:?}",
                t.name,
                out.summary
            );
            assert_eq!(
                t.int(
                    "SELECT COUNT(*) FROM email_outbox WHERE dedupe_key = 'booking-confirmation:1'"
                )
                .await,
                1,
                "{}",
                t.name
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM bookings WHERE confirmation_email_sent")
                    .await,
                2,
                "{}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn expired_cache_entries_only() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            t.exec_with(
                "INSERT INTO cache_entries (key, value, size_bytes, expires_at) VALUES \
             ('a', 'x', 100, $1), ('b', 'x', 20, $2), ('c', 'x', 7, NULL), ('d', 'x', 3, $1)",
                vec![
                    (now - Duration::seconds(1)).into(),
                    (now + Duration::seconds(1)).into(),
                ],
            )
            .await;
            let out = run_tz(
                &t,
                "data-cleanup/clean-cache",
                now,
                chrono_tz::UTC,
                json!({"batch_size": 1}),
            )
            .await
            .expect("run");
            assert_eq!(count(&out, "deleted"), 2, "{}: {:?}", t.name, out.summary);
            assert_eq!(count(&out, "bytes_freed"), 103, "{}", t.name);
            assert_eq!(count(&out, "remaining"), 2, "{}", t.name);
            let again = run_tz(
                &t,
                "data-cleanup/clean-cache",
                now,
                chrono_tz::UTC,
                json!({}),
            )
            .await
            .expect("second run");
            assert_eq!(count(&again, "deleted"), 0, "{}", t.name);
        }
    }
}

#[tokio::test]
async fn promotions_for_undersold_events_this_week() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            t.exec(
                "INSERT INTO users (id, email, email_verified, promotional_emails) VALUES \
             (1, 'fan@example.com', TRUE, TRUE), (2, 'booked@example.com', TRUE, TRUE), \
             (3, 'optout@example.com', TRUE, FALSE), (4, 'unverified@example.com', FALSE, TRUE)",
            )
            .await;
            // 1: in 3 days, 29 % sold → promoted; 2: in 3 days, exactly 30 % sold → not;
            // 3: in 8 days, 10 % sold → not; 4: started an hour ago → not.
            for (id, start, sold) in [
                (1, Duration::days(3), 29),
                (2, Duration::days(3), 30),
                (3, Duration::days(8), 10),
                (4, Duration::hours(-1), 0),
            ] {
                t.exec_with(
                &format!(
                    "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) \
                     VALUES ({id}, 'e{id}', $1, 100, {})",
                    100 - sold
                ),
                vec![(now + start).into()],
            )
            .await;
                if sold > 0 {
                    t.exec(&format!(
                        "INSERT INTO bookings (id, user_id, event_id, quantity, status) \
                     VALUES ({id}, 2, {id}, {sold}, 'confirmed')"
                    ))
                    .await;
                }
            }
            t.assert_inventory().await;
            let out = run_twice(
                &t,
                "notifications/send-promotional-notifications",
                now,
                json!({}),
            )
            .await;
            assert_eq!(
                count(&out, "emails_queued"),
                1,
                "{}: {:?}",
                t.name,
                out.summary
            );
            assert_eq!(
                t.int("SELECT COUNT(*) FROM email_outbox WHERE dedupe_key = 'promotion:1:1'")
                    .await,
                1,
                "{}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn newsletter_to_recent_subscribed_verified_users() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            t.exec(
            "INSERT INTO users (id, email, email_verified, newsletter_subscribed) VALUES \
             (1, 'recent@example.com', TRUE, TRUE), (2, 'old@example.com', TRUE, TRUE), \
             (3, 'unverified@example.com', FALSE, TRUE), (4, 'unsubscribed@example.com', TRUE, FALSE)",
        )
        .await;
            for id in 1..=6 {
                t.exec_with(
                    &format!(
                        "INSERT INTO events (id, title, starts_at) VALUES ({id}, 'e{id}', $1)"
                    ),
                    vec![(now + Duration::days(id)).into()],
                )
                .await;
            }
            t.exec_with(
                "INSERT INTO bookings (id, user_id, event_id, quantity, status, created_at) VALUES \
             (1, 1, 1, 1, 'cancelled', $1), (2, 2, 1, 1, 'cancelled', $2), \
             (3, 3, 1, 1, 'cancelled', $1), (4, 4, 1, 1, 'cancelled', $1)",
                vec![
                    (now - Duration::days(10)).into(),
                    (now - Duration::days(31)).into(),
                ],
            )
            .await;
            let out = run_twice(&t, "notifications/send-weekly-newsletter", now, json!({})).await;
            assert_eq!(
                count(&out, "emails_queued"),
                1,
                "{}: {:?}",
                t.name,
                out.summary
            );
            let payload = t
            .text("SELECT payload FROM email_outbox WHERE kind = 'newsletter' AND recipient = 'recent@example.com'")
            .await
            .expect("newsletter");
            let payload: Value = serde_json::from_str(&payload).expect("JSON");
            let events = payload["events"].as_array().expect("events array");
            assert_eq!(events.len(), 5, "{}: {payload}", t.name);
            assert_eq!(events[0]["id"], 1, "{}: {payload}", t.name);
            // No guessable `?user=<id>` link: the sender signs one from these at delivery.
            assert_eq!(
                payload["unsubscribe_list"], "newsletter",
                "{}: {payload}",
                t.name
            );
            assert_eq!(payload["user_id"], 1, "{}: {payload}", t.name);
            assert!(
                !payload.to_string().contains("user="),
                "{}: {payload}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn organizer_analytics_for_last_month_whatever_the_role() {
    let now = at(NOW); // November: last month is October
    for t in databases().await {
        t.exec(
            "INSERT INTO users (id, email, role) VALUES \
             (1, 'org@example.com', 'customer'), (2, 'buyer@example.com', 'customer'), \
             (3, 'idle-org@example.com', 'organizer')",
        )
        .await;
        for (id, start) in [
            (1, "2026-10-15T19:00:00Z"),
            (2, "2026-10-31T23:30:00Z"),
            (3, "2026-11-01T00:30:00Z"),
        ] {
            t.exec_with(
                &format!(
                    "INSERT INTO events (id, organizer_id, title, starts_at, status, total_tickets, available_tickets) \
                     VALUES ({id}, 1, 'e{id}', $1, 'completed', 100, 95)"
                ),
                vec![at(start).into()],
            )
            .await;
        }
        t.exec(
            "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status) VALUES \
             (1, 2, 1, 2, 2001, 'confirmed'), (2, 2, 1, 3, 3001, 'confirmed'), \
             (3, 2, 2, 1, 999, 'cancelled'), (4, 2, 3, 5, 5000, 'confirmed')",
        )
        .await;
        t.exec("UPDATE events SET available_tickets = 100 WHERE id = 2")
            .await;
        t.assert_inventory().await;
        let out = run_twice(&t, "notifications/send-organizer-analytics", now, json!({})).await;
        assert_eq!(
            count(&out, "emails_queued"),
            1,
            "{}: {:?}",
            t.name,
            out.summary
        );
        let body = &out.reports[0].body;
        assert_eq!(out.reports[0].period, "2026-10", "{}", t.name);
        let org = &body["organizers"][0];
        assert_eq!(org["organizer_id"], 1, "{}: {body}", t.name);
        assert_eq!(org["events"], 2, "{}: {body}", t.name);
        assert_eq!(org["tickets_sold"], 5, "{}: {body}", t.name);
        assert_eq!(org["revenue"]["NGN"], 5002, "{}: {body}", t.name);
    }
}

/// A stale `processing` payment whose booking was paid by another payment fails, but the paid
/// booking is neither cancelled nor released.
#[tokio::test]
async fn timeout_never_cancels_a_paid_booking() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            base(&t, now, 10, 2 + 3).await;
            // Payments made by user 2 for bookings of user 1: the e-mails go to the booking's
            // customer.
            t.exec(
                "INSERT INTO users (id, email, first_name) VALUES (2, 'payer@example.com', 'Pat')",
            )
            .await;
            booking(&t, 1, 2, "pending", now - Duration::minutes(30)).await;
            booking(&t, 2, 3, "pending", now - Duration::minutes(30)).await;
            booking(&t, 3, 1, "cancelled", now - Duration::minutes(30)).await;
            t.exec_with(
                "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at) VALUES \
                 (1, 1, 2, 2000, 'processing', $1), (2, 1, 1, 2000, 'success', $2), \
                 (3, 2, 2, 3000, 'processing', $1), (4, 3, 2, 1000, 'processing', $1)",
                vec![
                    (now - Duration::minutes(20)).into(),
                    (now - Duration::minutes(1)).into(),
                ],
            )
            .await;
            let out = run_twice(
                &t,
                "payment-cleanup/handle-payment-timeouts",
                now,
                json!({}),
            )
            .await;
            assert_eq!(count(&out, "failed"), 3, "{}", t.name);
            assert_eq!(count(&out, "bookings_cancelled"), 1, "{}", t.name);
            assert_eq!(count(&out, "tickets_released"), 3, "{}", t.name);
            assert_eq!(status(&t, "bookings", 1).await, "pending", "{}", t.name);
            assert_eq!(status(&t, "bookings", 2).await, "cancelled", "{}", t.name);
            // What each e-mail says happened to its booking, and to whom it goes.
            for (payment, outcome, subject) in [
                (1, "stands", "A payment attempt failed; your booking stands"),
                (3, "released", "Payment failed"),
                (4, "already_cancelled", "Payment failed"),
            ] {
                let row =
                    t.db.query_one_raw(sea_orm::Statement::from_string(
                        t.db.get_database_backend(),
                        format!(
                            "SELECT recipient, subject, payload FROM email_outbox \
                             WHERE dedupe_key = 'payment-failed:{payment}'"
                        ),
                    ))
                    .await
                    .expect("query")
                    .unwrap_or_else(|| panic!("{}: no e-mail for payment {payment}", t.name));
                let recipient: String = col(&row, 0).expect("recipient");
                let got_subject: String = col(&row, 1).expect("subject");
                let payload: Value =
                    serde_json::from_str(&col::<String>(&row, 2).expect("payload")).expect("JSON");
                assert_eq!(
                    recipient, "ada@example.com",
                    "{}: payment {payment}",
                    t.name
                );
                assert_eq!(got_subject, subject, "{}: payment {payment}", t.name);
                assert_eq!(
                    payload["booking_outcome"], outcome,
                    "{}: payment {payment}: {payload}",
                    t.name
                );
                assert_eq!(payload["timezone"], "UTC", "{}: {payload}", t.name);
            }
            let expiry = run_twice(
                &t,
                "booking-cleanup/cancel-expired-bookings",
                now,
                json!({}),
            )
            .await;
            assert_eq!(count(&expiry, "cancelled"), 0, "{}", t.name);
            assert_eq!(
                t.int("SELECT available_tickets FROM events WHERE id = 1")
                    .await,
                10 - 2,
                "{}",
                t.name
            );
        }
    }
}

/// "Tomorrow" on the day before a DST change is a 25-hour (fall back) or 23-hour (spring
/// forward) local day; its last hour still counts.
#[tokio::test]
async fn reminders_across_dst_changes() {
    let la = chrono_tz::America::Los_Angeles;
    for t in databases().await {
        t.exec("INSERT INTO users (id, email, email_verified) VALUES (1, 'ada@example.com', TRUE)")
            .await;
        // Fall back on Sunday 1 November 2026: 1 Nov local = [07:00Z 1 Nov, 08:00Z 2 Nov).
        // Spring forward on Sunday 8 March 2026: 8 Mar local = [08:00Z 8 Mar, 07:00Z 9 Mar).
        let starts = [
            (1, "2026-11-02T07:30:00Z", true),  // 1 Nov 23:30 PST: tomorrow
            (2, "2026-11-02T08:00:00Z", false), // 2 Nov 00:00 PST: the day after
            (3, "2026-11-01T07:00:00Z", true),  // 1 Nov 00:00 PDT: tomorrow
            (4, "2026-11-01T06:59:00Z", false), // 31 Oct 23:59 PDT: today
        ];
        for (id, s, _) in starts {
            t.exec_with(
                &format!(
                    "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) \
                     VALUES ({id}, 'e{id}', $1, 10, 9)"
                ),
                vec![at(s).into()],
            )
            .await;
            t.exec(&format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, status) \
                 VALUES ({id}, 1, {id}, 1, 'confirmed')"
            ))
            .await;
        }
        // 09:00 PDT on Saturday 31 October.
        let out = run_twice_tz(
            &t,
            "event-management/send-event-reminders",
            at("2026-10-31T16:00:00Z"),
            la,
            json!({}),
        )
        .await;
        assert_eq!(
            count(&out, "reminders_sent"),
            2,
            "{}: {:?}",
            t.name,
            out.summary
        );
        for (id, _, reminded) in starts {
            assert_eq!(
                t.int(&format!(
                    "SELECT COUNT(*) FROM bookings WHERE id = {id} AND reminder_sent"
                ))
                .await
                    == 1,
                reminded,
                "{}: booking {id}",
                t.name
            );
        }
        t.exec(
            "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) VALUES \
             (10, 'spring', '2026-03-09T06:30:00Z', 10, 9), (11, 'after', '2026-03-09T07:00:00Z', 10, 9); \
             INSERT INTO bookings (id, user_id, event_id, quantity, status) VALUES \
             (10, 1, 10, 1, 'confirmed'), (11, 1, 11, 1, 'confirmed')",
        )
        .await;
        // 09:00 PST on Saturday 7 March: tomorrow (8 March) ends at 07:00Z on the 9th.
        let spring = run_twice_tz(
            &t,
            "event-management/send-event-reminders",
            at("2026-03-07T17:00:00Z"),
            la,
            json!({}),
        )
        .await;
        assert_eq!(
            count(&spring, "reminders_sent"),
            1,
            "{}: {:?}",
            t.name,
            spring.summary
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE id = 10 AND reminder_sent")
                .await,
            1,
            "{}",
            t.name
        );
    }
}

/// Customers paying pending payments on other connections while the abandoned-payment job runs:
/// a payment that succeeded is never abandoned, its booking never cancelled.
#[tokio::test]
async fn abandoned_payments_race_concurrent_successes_on_postgres() {
    let now = at(NOW);
    for t in databases().await {
        if t.backend != "postgres" {
            continue;
        }
        const N: i64 = 4000;
        t.exec("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')")
            .await;
        t.exec(
            "INSERT INTO events (id, title, total_tickets, available_tickets) \
             SELECT g, 'event ' || g, 100000, 100000 FROM generate_series(1, 10) g",
        )
        .await;
        let old = now - Duration::minutes(30);
        t.exec_with(
            &format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) \
                 SELECT g, 1, 1 + g % 10, 1 + g % 3, 1000, 'pending', $1 FROM generate_series(1, {N}) g"
            ),
            vec![old.into()],
        )
        .await;
        t.exec_with(
            &format!(
                "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at) \
                 SELECT g, g, 1, 1000, 'pending', $1 FROM generate_series(1, {N}) g"
            ),
            vec![old.into()],
        )
        .await;
        t.exec(
            "UPDATE events e SET available_tickets = total_tickets - (SELECT COALESCE(SUM(quantity), 0) \
             FROM bookings b WHERE b.event_id = e.id)",
        )
        .await;
        t.assert_inventory().await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut payers = Vec::new();
        for worker in 0..3_i64 {
            let db = t.db.clone();
            let stop = stop.clone();
            payers.push(tokio::spawn(async move {
                use sea_orm::TransactionTrait;
                let mut paid = Vec::new();
                let mut id = 1 + worker * 11;
                let mut rounds = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 50 {
                    rounds += 1;
                    let p = 1 + (id * 977) % N;
                    id += 3;
                    // The gateway callback: the payment succeeds, then its booking is confirmed,
                    // in one transaction, only if the payment was still pending.
                    let txn = db.begin().await.expect("begin");
                    let mut q = Sql::new(ticketmax_executor::db::Dialect::Postgres);
                    let pid = q.bind(p);
                    q.push(&format!(
                        "UPDATE payments SET status = 'success', paid_at = CURRENT_TIMESTAMP \
                         WHERE id = {pid} AND status = 'pending' RETURNING booking_id"
                    ));
                    let rows = q.fetch_all(&txn).await.expect("pay");
                    if let Some(row) = rows.first() {
                        let booking: i64 = col(row, 0).expect("booking id");
                        let mut q = Sql::new(ticketmax_executor::db::Dialect::Postgres);
                        let b = q.bind(booking);
                        q.push(&format!(
                            "UPDATE bookings SET status = 'confirmed', confirmed_at = CURRENT_TIMESTAMP \
                             WHERE id = {b} AND status = 'pending'"
                        ));
                        let n = q.execute(&txn).await.expect("confirm");
                        assert_eq!(n, 1, "a paid booking {booking} was no longer pending");
                        paid.push(p);
                    }
                    txn.commit().await.expect("commit");
                    if rounds > 100_000 {
                        break;
                    }
                }
                paid
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let out = run_tz(
            &t,
            "payment-cleanup/cleanup-abandoned-payments",
            now,
            chrono_tz::UTC,
            json!({"batch_size": 25}),
        )
        .await
        .expect("job run");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut paid = Vec::new();
        for p in payers {
            paid.extend(p.await.expect("payer"));
        }
        eprintln!(
            "abandoned {}, paid concurrently {}",
            count(&out, "abandoned"),
            paid.len()
        );
        assert!(count(&out, "abandoned") > 0);
        assert!(!paid.is_empty());
        let again = run_tz(
            &t,
            "payment-cleanup/cleanup-abandoned-payments",
            now,
            chrono_tz::UTC,
            json!({}),
        )
        .await
        .expect("second run");
        let abandoned = count(&out, "abandoned") + count(&again, "abandoned");
        assert_eq!(abandoned as usize + paid.len(), N as usize);
        assert_eq!(
            t.int("SELECT COUNT(*) FROM payments WHERE status = 'success'")
                .await,
            paid.len() as i64
        );
        // Success ↔ confirmed, abandoned ↔ cancelled, booking by booking.
        assert_eq!(
            t.int(
                "SELECT COUNT(*) FROM payments p JOIN bookings b ON b.id = p.booking_id \
                 WHERE NOT ((p.status = 'success' AND b.status = 'confirmed') \
                         OR (p.status = 'abandoned' AND b.status = 'cancelled'))"
            )
            .await,
            0
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM email_outbox WHERE kind = 'payment-abandoned'")
                .await,
            abandoned as i64
        );
        t.assert_inventory().await;
    }
}

/// At most 100 recipients per event and run; nobody twice.
#[tokio::test]
async fn promotions_cap_at_100_recipients_per_event() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            for id in 1..=105 {
                t.exec(&format!(
                    "INSERT INTO users (id, email, email_verified, promotional_emails) \
                 VALUES ({id}, 'fan{id}@example.com', TRUE, TRUE)"
                ))
                .await;
            }
            t.exec_with(
                "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) \
             VALUES (1, 'e1', $1, 100, 100)",
                vec![(now + Duration::days(2)).into()],
            )
            .await;
            let out = run_tz(
                &t,
                "notifications/send-promotional-notifications",
                now,
                chrono_tz::UTC,
                json!({}),
            )
            .await
            .expect("run");
            assert_eq!(
                count(&out, "emails_queued"),
                100,
                "{}: {:?}",
                t.name,
                out.summary
            );
            let again = run_tz(
                &t,
                "notifications/send-promotional-notifications",
                now,
                chrono_tz::UTC,
                json!({}),
            )
            .await
            .expect("second run");
            // The cap is per run: the second run reaches the 5 users left, never one twice.
            eprintln!(
                "{}: second run queued {}",
                t.name,
                count(&again, "emails_queued")
            );
            assert_eq!(
                t.int("SELECT COUNT(DISTINCT recipient) FROM email_outbox")
                    .await,
                t.int("SELECT COUNT(*) FROM email_outbox").await,
                "{}",
                t.name
            );
        }
    }
}

/// Local midnight of `date` in London, computed here rather than by the executor's windows.
fn london_midnight(date: NaiveDate) -> DateTime<Utc> {
    chrono_tz::Europe::London
        .from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .expect("London midnights exist once")
        .with_timezone(&Utc)
}

/// Four instants around a window `[start, end)`: the two inside it and the two just outside.
fn around(start: DateTime<Utc>, end: DateTime<Utc>) -> [(DateTime<Utc>, bool); 4] {
    let s = Duration::seconds(1);
    [
        (start - s, false),
        (start, true),
        (end - s, true),
        (end, false),
    ]
}

/// The day, week and month windows of the report jobs, in Europe/London, at every reference
/// time: today (daily booking report), yesterday (payment analytics), last ISO week (event
/// analytics) and last month (organizer analytics) each count exactly the rows inside their
/// window, whose local-midnight ends are computed here independently; on the DST days the
/// windows are 23 or 25 hours long.
#[tokio::test]
async fn calendar_windows_at_every_reference_time() {
    let london = chrono_tz::Europe::London;
    for (label, now) in reference_times() {
        let today = now.with_timezone(&london).date_naive();
        let day = |d: NaiveDate| (london_midnight(d), london_midnight(d + Duration::days(1)));
        let (today_start, today_end) = day(today);
        let (yesterday_start, yesterday_end) = day(today - Duration::days(1));
        let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
        let last_monday = monday - Duration::days(7);
        let (week_start, week_end) = (london_midnight(last_monday), london_midnight(monday));
        let first = today.with_day(1).expect("1st");
        let last_first = (first - Duration::days(1)).with_day(1).expect("1st");
        let (month_start, month_end) = (london_midnight(last_first), london_midnight(first));
        for t in databases_at(label).await {
            t.exec(
                "INSERT INTO users (id, email, email_verified) VALUES \
                 (1, 'org@example.com', TRUE), (2, 'fan@example.com', TRUE)",
            )
            .await;
            let long_ago = at("2000-01-01T00:00:00Z");
            t.exec_with(
                "INSERT INTO events (id, organizer_id, title, starts_at, created_at, total_tickets, \
                 available_tickets, status) VALUES (1, NULL, 'x', $1, $1, 100, 100, 'completed')",
                vec![long_ago.into()],
            )
            .await;
            for (i, (when, _)) in around(today_start, today_end).iter().enumerate() {
                t.exec_with(
                    &format!(
                        "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, \
                         status, created_at) VALUES ({}, 2, 1, 1, 100, 'cancelled', $1)",
                        i + 1
                    ),
                    vec![(*when).into()],
                )
                .await;
            }
            for (i, (when, _)) in around(yesterday_start, yesterday_end).iter().enumerate() {
                t.exec_with(
                    &format!(
                        "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at, \
                         paid_at) VALUES ({}, 1, 2, 100, 'success', $1, $1)",
                        i + 1
                    ),
                    vec![(*when).into()],
                )
                .await;
            }
            // Created around last week (held in 2030), and held around last month (created in
            // 2000), so neither report sees the other's events.
            for (i, (when, _)) in around(week_start, week_end).iter().enumerate() {
                t.exec_with(
                    &format!(
                        "INSERT INTO events (id, organizer_id, title, starts_at, created_at, \
                         total_tickets, available_tickets) VALUES ({}, NULL, 'w', $2, $1, 10, 10)",
                        10 + i
                    ),
                    vec![(*when).into(), at("2030-06-01T00:00:00Z").into()],
                )
                .await;
            }
            for (i, (when, _)) in around(month_start, month_end).iter().enumerate() {
                t.exec_with(
                    &format!(
                        "INSERT INTO events (id, organizer_id, title, starts_at, created_at, \
                         total_tickets, available_tickets, status) \
                         VALUES ({}, 1, 'm', $1, $2, 10, 10, 'completed')",
                        20 + i
                    ),
                    vec![(*when).into(), long_ago.into()],
                )
                .await;
            }
            let run = |job: &'static str| {
                let t = &t;
                async move {
                    run_tz(t, job, now, london, json!({}))
                        .await
                        .unwrap_or_else(|e| panic!("{}: {job}: {e}", t.name))
                        .reports
                        .remove(0)
                }
            };
            let daily = run("booking-cleanup/generate-daily-report").await;
            assert_eq!(
                daily.period,
                today.format("%Y-%m-%d").to_string(),
                "{}",
                t.name
            );
            assert_eq!(daily.body["total"], 2, "{}: {}", t.name, daily.body);
            let payments = run("payment-cleanup/generate-payment-analytics").await;
            assert_eq!(
                payments.period,
                (today - Duration::days(1)).format("%Y-%m-%d").to_string(),
                "{}",
                t.name
            );
            assert_eq!(payments.body["total"], 2, "{}: {}", t.name, payments.body);
            assert_eq!(
                payments.body["revenue"]["NGN"], 200,
                "{}: {}",
                t.name, payments.body
            );
            let weekly = run("event-management/generate-event-analytics").await;
            let iso = last_monday.iso_week();
            assert_eq!(
                weekly.period,
                format!("{}-W{:02}", iso.year(), iso.week()),
                "{}",
                t.name
            );
            assert_eq!(
                weekly.body["events_created"], 2,
                "{}: {}",
                t.name, weekly.body
            );
            let monthly = run("notifications/send-organizer-analytics").await;
            assert_eq!(
                monthly.period,
                last_first.format("%Y-%m").to_string(),
                "{}",
                t.name
            );
            assert_eq!(
                monthly.body["organizers"][0]["events"], 2,
                "{}: {}",
                t.name, monthly.body
            );
        }
    }
}

/// A run fired by the schedule computes its windows from its tick, also when it starts late:
/// the 23:00 (Lagos) daily report that runs days later still reports its own day, and the
/// midnight payment report the day before its tick. A manual run uses `as_of`, else the time it
/// starts.
#[tokio::test]
async fn scheduled_runs_take_their_tick_as_reference_time() {
    let lagos = chrono_tz::Africa::Lagos;
    for t in databases().await {
        t.exec("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')")
            .await;
        t.exec("INSERT INTO events (id, title, total_tickets, available_tickets) VALUES (1, 'x', 10, 10)")
            .await;
        for (id, created) in [
            (1, "2026-11-27T22:59:00Z"), // 27th 23:59 Lagos
            (2, "2026-11-27T23:00:00Z"), // 28th 00:00 Lagos
            (3, "2026-11-28T21:30:00Z"), // 28th 22:30 Lagos
            (4, "2026-11-28T23:10:00Z"), // 29th 00:10 Lagos
        ] {
            t.exec_with(
                &format!(
                    "INSERT INTO bookings (id, user_id, event_id, quantity, status, created_at) \
                     VALUES ({id}, 1, 1, 1, 'cancelled', $1)"
                ),
                vec![at(created).into()],
            )
            .await;
            t.exec_with(
                &format!(
                    "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at) \
                     VALUES ({id}, {id}, 1, 100, 'failed', $1)"
                ),
                vec![at(created).into()],
            )
            .await;
        }
        let scheduled = |tick: &str| RunOpts {
            tz: lagos,
            admin_emails: Vec::new(),
            trigger: RunTrigger::Schedule,
            scheduled_for: Some(at(tick)),
            as_of: false,
            ..RunOpts::default()
        };
        // The reference time passed as `now` is ignored here (no as_of): the wall clock.
        let wall = Utc::now();
        let (daily, _) = t
            .run_opts(
                "booking-cleanup/generate-daily-report",
                wall,
                json!({}),
                scheduled("2026-11-28T22:00:00Z"),
            )
            .await;
        let daily = daily.expect("daily report");
        assert_eq!(daily.reports[0].period, "2026-11-28", "{}", t.name);
        assert_eq!(daily.reports[0].body["total"], 2, "{}", t.name);
        let (payments, _) = t
            .run_opts(
                "payment-cleanup/generate-payment-analytics",
                wall,
                json!({}),
                scheduled("2026-11-28T23:00:00Z"),
            )
            .await;
        let payments = payments.expect("payment analytics");
        assert_eq!(payments.reports[0].period, "2026-11-28", "{}", t.name);
        assert_eq!(payments.reports[0].body["total"], 2, "{}", t.name);
        // as_of, when given, wins over the tick.
        let (explicit, _) = t
            .run_opts(
                "booking-cleanup/generate-daily-report",
                at("2026-11-27T12:00:00Z"),
                json!({}),
                RunOpts {
                    as_of: true,
                    ..scheduled("2026-11-28T22:00:00Z")
                },
            )
            .await;
        assert_eq!(
            explicit.expect("as_of run").reports[0].period,
            "2026-11-27",
            "{}",
            t.name
        );
        // A manual run without as_of: the time it starts, whatever its scheduled_for.
        let before = Utc::now().with_timezone(&lagos).date_naive();
        let (manual, _) = t
            .run_opts(
                "booking-cleanup/generate-daily-report",
                wall,
                json!({}),
                RunOpts {
                    trigger: RunTrigger::Manual,
                    ..scheduled("2026-11-28T22:00:00Z")
                },
            )
            .await;
        let after = Utc::now().with_timezone(&lagos).date_naive();
        let period = manual.expect("manual run").reports[0].period.clone();
        assert!(
            [before, after]
                .iter()
                .any(|d| d.format("%Y-%m-%d").to_string() == period),
            "{}: manual run reported {period}, today is {before}",
            t.name
        );
    }
}

/// One report per kind and period: a re-run whose figures changed mails the admins the updated
/// report once, marked as updated; a re-run with the same figures mails nothing; figures that
/// change back are news again. The health report, a snapshot, is mailed once per period.
#[tokio::test]
async fn re_run_reports_mail_each_change_once() {
    let now = at(NOW);
    let admins = vec!["ops@example.com".to_owned(), "cfo@example.com".to_owned()];
    for t in databases().await {
        t.exec("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')")
            .await;
        t.exec("INSERT INTO events (id, title, total_tickets, available_tickets) VALUES (1, 'x', 10, 8)")
            .await;
        booking(&t, 1, 1, "confirmed", now - Duration::hours(2)).await;
        let run = |job: &'static str| {
            let t = &t;
            let admins = admins.clone();
            async move {
                let opts = RunOpts {
                    admin_emails: admins,
                    ..RunOpts::default()
                };
                let out = t.run_opts(job, now, json!({}), opts).await.0;
                count(
                    &out.unwrap_or_else(|e| panic!("{}: {job}: {e}", t.name)),
                    "emails_queued",
                )
            }
        };
        const DAILY: &str = "booking-cleanup/generate-daily-report";
        let keys = |suffix: &str| {
            admins
                .iter()
                .map(|a| format!("report:daily-bookings:2026-11-28:{a}{suffix}"))
                .collect::<Vec<_>>()
        };
        let queued = |key: String| {
            let t = &t;
            async move {
                t.text(&format!(
                    "SELECT subject FROM email_outbox WHERE dedupe_key = '{key}'"
                ))
                .await
            }
        };
        assert_eq!(run(DAILY).await, 2, "{}: first run", t.name);
        for key in keys("") {
            assert_eq!(
                queued(key).await.as_deref(),
                Some("TicketMax report: daily-bookings 2026-11-28"),
                "{}",
                t.name
            );
        }
        assert_eq!(run(DAILY).await, 0, "{}: same figures", t.name);
        // A booking made later that day changes the figures.
        booking(&t, 2, 1, "confirmed", now - Duration::hours(1)).await;
        assert_eq!(run(DAILY).await, 2, "{}: changed figures", t.name);
        for key in keys(":v2") {
            assert_eq!(
                queued(key).await.as_deref(),
                Some("TicketMax report: daily-bookings 2026-11-28 [updated]"),
                "{}",
                t.name
            );
        }
        let payload: Value = serde_json::from_str(
            &t.text(&format!(
                "SELECT payload FROM email_outbox WHERE dedupe_key = '{}'",
                keys(":v2")[0]
            ))
            .await
            .expect("payload"),
        )
        .expect("JSON");
        assert_eq!(payload["updated"], true, "{}: {payload}", t.name);
        assert_eq!(payload["body"]["total"], 2, "{}: {payload}", t.name);
        assert_eq!(run(DAILY).await, 0, "{}: same changed figures", t.name);
        assert_eq!(run(DAILY).await, 0, "{}: and again", t.name);
        // Back to the first figures: what the admins last received is out of date again.
        t.exec("DELETE FROM bookings WHERE id = 2").await;
        assert_eq!(run(DAILY).await, 2, "{}: figures changed back", t.name);
        for key in keys(":v3") {
            assert!(queued(key).await.is_some(), "{}", t.name);
        }
        assert_eq!(run(DAILY).await, 0, "{}", t.name);
        assert_eq!(
            t.int("SELECT COUNT(*) FROM email_outbox WHERE kind = 'report'")
                .await,
            6,
            "{}",
            t.name
        );
        // The health report: once per period, though every run measures something new.
        const HEALTH: &str = "data-cleanup/generate-system-health-report";
        assert_eq!(run(HEALTH).await, 2, "{}", t.name);
        assert_eq!(run(HEALTH).await, 0, "{}", t.name);
    }
}

/// Without TICKETMAX_UNSUBSCRIBE_SECRET no newsletter or marketing e-mail can carry a signed
/// unsubscribe link: those jobs fail, saying why, and queue nothing; transactional mail goes on.
#[tokio::test]
async fn marketing_jobs_refuse_to_run_without_an_unsubscribe_secret() {
    let now = at(NOW);
    for t in databases().await {
        // User 1 may get marketing mail (a birthday today, an old account without bookings);
        // user 2 the newsletter (a booking yesterday).
        t.exec_with(
            "INSERT INTO users (id, email, email_verified, newsletter_subscribed, \
             promotional_emails, date_of_birth, created_at) VALUES \
             (1, 'ada@example.com', TRUE, FALSE, TRUE, '1990-11-28', $1), \
             (2, 'bo@example.com', TRUE, TRUE, FALSE, NULL, $1)",
            vec![(now - Duration::days(400)).into()],
        )
        .await;
        t.exec_with(
            "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) \
             VALUES (1, 'Promo', $1, 100, 100), (2, 'Sold out', $1, 1, 0)",
            vec![(now + Duration::days(2)).into()],
        )
        .await;
        t.exec_with(
            "INSERT INTO bookings (id, user_id, event_id, quantity, status, created_at) \
             VALUES (1, 2, 2, 1, 'confirmed', $1)",
            vec![(now - Duration::days(1)).into()],
        )
        .await;
        for job in [
            "notifications/send-weekly-newsletter",
            "notifications/send-promotional-notifications",
            "notifications/send-birthday-wishes",
            "notifications/send-re-engagement-emails",
        ] {
            let opts = RunOpts {
                unsubscribe: None,
                ..RunOpts::default()
            };
            match t.run_opts(job, now, json!({}), opts).await.0 {
                Err(TaskError::NotConfigured(why)) => {
                    assert!(why.contains("TICKETMAX_UNSUBSCRIBE_SECRET"), "{job}: {why}")
                }
                other => panic!("{}: {job} ran without a secret: {other:?}", t.name),
            }
        }
        assert_eq!(
            t.int("SELECT COUNT(*) FROM email_outbox").await,
            0,
            "{}",
            t.name
        );
        let opts = RunOpts {
            unsubscribe: None,
            ..RunOpts::default()
        };
        let out = t
            .run_opts(
                "booking-cleanup/send-pending-booking-confirmations",
                now,
                json!({}),
                opts,
            )
            .await
            .0
            .expect("transactional mail needs no secret");
        assert_eq!(count(&out, "emails_queued"), 1, "{}", t.name);
        // With the secret, every one of them mails user 1.
        for job in [
            "notifications/send-weekly-newsletter",
            "notifications/send-promotional-notifications",
            "notifications/send-birthday-wishes",
            "notifications/send-re-engagement-emails",
        ] {
            let out = run_tz(&t, job, now, chrono_tz::UTC, json!({}))
                .await
                .unwrap_or_else(|e| panic!("{}: {job}: {e}", t.name));
            assert_eq!(count(&out, "emails_queued"), 1, "{}: {job}", t.name);
        }
    }
}

/// Times written by other software in other shapes (SQLite's `datetime('now')` text, `Z`, an
/// offset) compare as the instants they name, on both backends.
#[tokio::test]
async fn times_written_by_other_software_compare_as_instants() {
    let now = at(NOW); // 12:00 UTC
    for t in databases().await {
        t.exec("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')")
            .await;
        t.exec("INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) VALUES (1, 'x', '2030-01-01 00:00:00', 100, 90)")
            .await;
        // (booking, created_at as text, expired: older than 10 minutes at 12:00 UTC)
        let cases = [
            (1, "2026-11-28 11:49:00", true),
            (2, "2026-11-28 11:51:00", false),
            (3, "2026-11-28T11:51:00Z", false),
            (4, "2026-11-28T12:49:00+01:00", true),
            (5, "2026-11-28T12:51:00+01:00", false),
        ];
        for (id, created, _) in cases {
            t.exec(&format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, status, created_at) \
                 VALUES ({id}, 1, 1, 2, 'pending', '{created}')"
            ))
            .await;
        }
        t.assert_inventory().await;
        let out = run_twice(
            &t,
            "booking-cleanup/cancel-expired-bookings",
            now,
            json!({}),
        )
        .await;
        assert_eq!(count(&out, "cancelled"), 2, "{}: {:?}", t.name, out.summary);
        for (id, created, expired) in cases {
            assert_eq!(
                status(&t, "bookings", id).await,
                if expired { "cancelled" } else { "pending" },
                "{}: booking created {created}",
                t.name
            );
        }
        // Events: (id, starts_at as text, status expected at 12:00 UTC).
        let events = [
            (10, "2026-11-28 11:00:00", "live"),
            (11, "2026-11-28T14:30:00+03:00", "live"),
            (12, "2026-11-28 12:30:00", "upcoming"),
            (13, "2026-11-28 07:59:00", "completed"),
        ];
        for (id, starts, _) in events {
            t.exec(&format!(
                "INSERT INTO events (id, title, starts_at, status) VALUES ({id}, 'e', '{starts}', 'upcoming')"
            ))
            .await;
        }
        run_twice(&t, "event-management/update-event-statuses", now, json!({})).await;
        for (id, starts, expected) in events {
            assert_eq!(
                status(&t, "events", id).await,
                expected,
                "{}: event starting {starts}",
                t.name
            );
        }
        // Cache entries expiring just before and just after 12:00 UTC.
        t.exec(
            "INSERT INTO cache_entries (key, value, size_bytes, expires_at) VALUES \
             ('gone', 'x', 1, '2026-11-28 11:59:59'), ('kept', 'x', 1, '2026-11-28 12:00:01'), \
             ('kept-offset', 'x', 1, '2026-11-28T11:30:00-01:00')",
        )
        .await;
        let cache = run_tz(
            &t,
            "data-cleanup/clean-cache",
            now,
            chrono_tz::UTC,
            json!({}),
        )
        .await
        .expect("clean-cache");
        assert_eq!(
            count(&cache, "deleted"),
            1,
            "{}: {:?}",
            t.name,
            cache.summary
        );
        // The daily report's window, for rows written as `datetime('now')` text.
        for (id, created) in [(20, "2026-11-27 23:59:59"), (21, "2026-11-28 00:00:00")] {
            t.exec(&format!(
                "INSERT INTO bookings (id, user_id, event_id, quantity, status, created_at) \
                 VALUES ({id}, 1, 1, 0, 'cancelled', '{created}')"
            ))
            .await;
        }
        let daily = run_tz(
            &t,
            "booking-cleanup/generate-daily-report",
            now,
            chrono_tz::UTC,
            json!({}),
        )
        .await
        .expect("daily report");
        // Bookings 1..5 and 21 were created on the 28th.
        assert_eq!(
            daily.reports[0].body["total"], 6,
            "{}: {}",
            t.name, daily.reports[0].body
        );
    }
}
