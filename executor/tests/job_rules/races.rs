//! Concurrency on Postgres: the expiry and abandoned-payment jobs racing customers who confirm
//! or pay on other connections.
use std::sync::Arc;

use crate::common::{at, count, databases};
use chrono::Duration;
use serde_json::json;
use ticketmax_executor::db::{Sql, col};

use super::{NOW, run_tz};

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
