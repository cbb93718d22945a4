//! notifications: birthdays, re-engagement, promotions, the newsletter, organizer analytics, and
//! the marketing jobs refusing to run without an unsubscribe secret.
use crate::common::{RunOpts, at, count, databases, databases_at};
use chrono::Duration;
use serde_json::{Value, json};
use ticketmax_executor::tasks::TaskError;

use super::{NOW, reference_times, run_twice, run_twice_tz, run_tz};

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
