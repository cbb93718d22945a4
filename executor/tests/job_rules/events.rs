//! event-management: statuses at start and end, archiving, and the reminders (tomorrow in the
//! job's timezone, across DST changes, early-bird seven days ahead).
use crate::common::{at, count, databases, databases_at};
use chrono::Duration;
use serde_json::json;

use super::{reference_times, run_twice, run_twice_tz, run_tz, status};

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
