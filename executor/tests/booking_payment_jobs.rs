//! The stale-booking and stale-payment jobs against real databases.
mod common;

use chrono::Duration;
use common::{at, count, databases};
use serde_json::json;

const NOW: &str = "2026-11-28T12:00:00+00:00";

/// One customer, one event of 20 tickets, and bookings in every relevant state.
async fn scenario(t: &common::TestDb) {
    let now = at(NOW);
    t.exec("INSERT INTO users (id, email, first_name) VALUES (1, 'ada@example.com', 'Ada')")
        .await;
    // 20 - (2 + 3 + 1 + 4 + 2) held = 8 available.
    t.exec_with(
        "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, price, currency) \
         VALUES (1, 'Afrobeats Night', $1, 20, 8, 500000, 'NGN')",
        vec![(now + Duration::days(3)).into()],
    )
    .await;
    let old = now - Duration::minutes(11);
    let fresh = now - Duration::minutes(5);
    t.exec_with(
        "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) VALUES \
         (1, 1, 1, 2, 1000000, 'pending', $1), \
         (2, 1, 1, 3, 1500000, 'pending', $1), \
         (3, 1, 1, 1, 500000, 'pending', $2), \
         (4, 1, 1, 4, 2000000, 'confirmed', $1), \
         (5, 1, 1, 2, 1000000, 'pending', $1)",
        vec![old.into(), fresh.into()],
    )
    .await;
    // Booking 5 has a successful payment (confirmation not yet recorded): never cancelled.
    t.exec_with(
        "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at) VALUES \
         (1, 5, 1, 1000000, 'success', $1)",
        vec![old.into()],
    )
    .await;
    t.assert_inventory().await;
}

#[tokio::test]
async fn cancel_expired_bookings_releases_tickets_once() {
    for t in databases().await {
        scenario(&t).await;
        let out = t
            .run(
                "booking-cleanup/cancel-expired-bookings",
                at(NOW),
                json!({"batch_size": 1}),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(count(&out, "cancelled"), 2, "{}", t.name);
        assert_eq!(count(&out, "tickets_released"), 5, "{}", t.name);
        assert_eq!(count(&out, "emails_queued"), 2, "{}", t.name);
        assert_eq!(
            t.int("SELECT available_tickets FROM events WHERE id = 1")
                .await,
            13
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE status = 'cancelled' AND cancelled_at IS NOT NULL AND cancellation_reason IS NOT NULL").await,
            2
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM bookings WHERE id IN (3, 4, 5) AND status <> 'cancelled'")
                .await,
            3
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM email_outbox WHERE kind = 'booking-cancelled' AND dedupe_key IN ('booking-cancelled:1', 'booking-cancelled:2') AND recipient = 'ada@example.com'").await,
            2
        );
        let payload = t
            .text("SELECT payload FROM email_outbox WHERE dedupe_key = 'booking-cancelled:1'")
            .await
            .expect("payload");
        let payload: serde_json::Value = serde_json::from_str(&payload).expect("JSON payload");
        assert_eq!(payload["event_title"], "Afrobeats Night", "{}", t.name);
        assert_eq!(payload["total_amount"], 1_000_000, "{}", t.name);
        t.assert_inventory().await;

        let again = t
            .run(
                "booking-cleanup/cancel-expired-bookings",
                at(NOW),
                json!({}),
            )
            .await
            .expect("second run");
        assert_eq!(count(&again, "cancelled"), 0);
        assert_eq!(count(&again, "emails_queued"), 0);
        assert_eq!(t.int("SELECT COUNT(*) FROM email_outbox").await, 2);
        t.assert_inventory().await;
    }
}

#[tokio::test]
async fn stale_payment_jobs_do_not_overlap() {
    for t in databases().await {
        scenario(&t).await;
        let now = at(NOW);
        t.exec_with(
            "INSERT INTO payments (id, booking_id, user_id, amount, status, created_at) VALUES \
             (2, 1, 1, 1000000, 'pending', $1), \
             (3, 2, 1, 1500000, 'processing', $2), \
             (4, 3, 1, 500000, 'pending', $3), \
             (5, 4, 1, 2000000, 'processing', $3)",
            vec![
                (now - Duration::minutes(16)).into(),
                (now - Duration::minutes(11)).into(),
                (now - Duration::minutes(5)).into(),
            ],
        )
        .await;

        let abandoned = t
            .run("payment-cleanup/cleanup-abandoned-payments", now, json!({}))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(count(&abandoned, "abandoned"), 1, "{}", t.name);
        assert_eq!(count(&abandoned, "bookings_cancelled"), 1);
        assert_eq!(count(&abandoned, "tickets_released"), 2);
        assert_eq!(count(&abandoned, "emails_queued"), 1);
        assert_eq!(
            t.text("SELECT status FROM payments WHERE id = 2")
                .await
                .as_deref(),
            Some("abandoned")
        );
        assert_eq!(
            t.int("SELECT COUNT(*) FROM payments WHERE id = 2 AND abandoned_at IS NOT NULL")
                .await,
            1
        );
        // The processing payment is the timeout job's, untouched here.
        assert_eq!(
            t.text("SELECT status FROM payments WHERE id = 3")
                .await
                .as_deref(),
            Some("processing")
        );

        let timeouts = t
            .run("payment-cleanup/handle-payment-timeouts", now, json!({}))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(count(&timeouts, "failed"), 1, "{}", t.name);
        assert_eq!(count(&timeouts, "bookings_cancelled"), 1);
        assert_eq!(count(&timeouts, "tickets_released"), 3);
        assert_eq!(
            t.text("SELECT failure_reason FROM payments WHERE id = 3")
                .await
                .as_deref(),
            Some("Payment gateway timeout")
        );
        assert_eq!(
            t.text("SELECT status FROM payments WHERE id = 4")
                .await
                .as_deref(),
            Some("pending")
        );
        assert_eq!(
            t.text("SELECT status FROM payments WHERE id = 5")
                .await
                .as_deref(),
            Some("processing")
        );
        // A confirmed booking is never cancelled, whatever its payment does.
        assert_eq!(
            t.text("SELECT status FROM bookings WHERE id = 4")
                .await
                .as_deref(),
            Some("confirmed")
        );
        assert_eq!(
            t.int("SELECT available_tickets FROM events WHERE id = 1")
                .await,
            13
        );
        t.assert_inventory().await;

        for job in [
            "payment-cleanup/cleanup-abandoned-payments",
            "payment-cleanup/handle-payment-timeouts",
        ] {
            let again = t.run(job, now, json!({})).await.expect("second run");
            assert_eq!(count(&again, "bookings_cancelled"), 0);
            assert_eq!(count(&again, "emails_queued"), 0);
        }
        assert_eq!(t.int("SELECT COUNT(*) FROM email_outbox").await, 2);
    }
}

#[tokio::test]
async fn cancelled_task_stops_with_partial_summary() {
    for t in databases().await {
        scenario(&t).await;
        let cancel = tokio_util::sync::CancellationToken::new();
        cancel.cancel();
        let result = t
            .run_with(
                "booking-cleanup/cancel-expired-bookings",
                at(NOW),
                json!({}),
                cancel,
            )
            .await;
        match result {
            Err(ticketmax_executor::tasks::TaskError::Cancelled(partial)) => {
                assert_eq!(partial.get("cancelled").and_then(|v| v.as_u64()), Some(0));
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
        t.assert_inventory().await;
    }
}

#[tokio::test]
async fn chunks_honor_batch_size() {
    // Postgres must not re-run the claiming sub-select per row (it would take every row at once).
    for t in databases().await {
        let now = at(NOW);
        t.exec("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')")
            .await;
        t.exec_with(
            "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets) \
             VALUES (10, 'Big Show', $1, 100, 70)",
            vec![(now + Duration::days(3)).into()],
        )
        .await;
        for _ in 0..30 {
            t.exec_with(
                "INSERT INTO bookings (user_id, event_id, quantity, status, created_at) \
                 VALUES (1, 10, 1, 'pending', $1)",
                vec![(now - Duration::minutes(30)).into()],
            )
            .await;
        }
        let (out, progress) = t
            .run_collect(
                "booking-cleanup/cancel-expired-bookings",
                now,
                json!({"batch_size": 7}),
                tokio_util::sync::CancellationToken::new(),
            )
            .await;
        let out = out.unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(count(&out, "cancelled"), 30);
        assert_eq!(progress, vec![0, 7, 14, 21, 28, 30], "{}", t.name);
        assert_eq!(
            t.int("SELECT available_tickets FROM events WHERE id = 10")
                .await,
            100
        );
        t.assert_inventory().await;
    }
}
