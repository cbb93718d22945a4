//! booking-cleanup: expired pending bookings, old cancelled bookings, pending confirmations and
//! refund requests (the refund arithmetic in integer minor units).
use crate::common::{count, databases_at};
use chrono::Duration;
use serde_json::{Value, json};

use super::{base, booking, exists, reference_times, run_twice, run_tz, status};

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
