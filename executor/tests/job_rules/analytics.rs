//! The report and analytics jobs of every service (booking-cleanup's daily report,
//! payment-cleanup's payment analytics, event-management's event analytics, notifications'
//! organizer analytics and follow-ups, analytics' daily analytics, data-cleanup's health report):
//! their day, week and month windows, the schedule tick as reference time, and re-runs.
use crate::common::{RunOpts, at, count, databases, databases_at};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};
use ticketmax_executor::tasks::RunTrigger;

use super::{NOW, booking, reference_times, run_twice_tz, run_tz};

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
