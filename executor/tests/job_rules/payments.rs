//! payment-cleanup: stale payments (abandoned, timed out), old failed payments, and a timeout
//! never cancelling a booking another payment paid.
use crate::common::{count, databases_at};
use chrono::Duration;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use ticketmax_executor::db::col;

use super::{base, booking, exists, reference_times, run_twice, status};

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
