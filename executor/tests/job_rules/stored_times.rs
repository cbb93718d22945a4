//! Times written by other software in other shapes compare as the instants they name.
use crate::common::{at, count, databases};
use serde_json::json;

use super::{NOW, run_twice, run_tz, status};

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
