//! Comparing cron schedules by meaning: `*/10 * * * *`, `0 */10 * * * *` and `EVERY_10_MINUTES`
//! are the same schedule.
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use croner::Cron;

/// The job table of `docs/jobs.md` with the seed's default schedules, as 5-field cron expressions.
pub const JOB_TABLE: &[(&str, &str)] = &[
    ("payment-cleanup/cleanup-abandoned-payments", "*/10 * * * *"),
    ("payment-cleanup/handle-payment-timeouts", "*/5 * * * *"),
    ("payment-cleanup/cleanup-old-failed-payments", "0 1 * * 0"),
    ("payment-cleanup/generate-payment-analytics", "0 0 * * *"),
    ("booking-cleanup/cancel-expired-bookings", "*/5 * * * *"),
    ("booking-cleanup/process-refund-requests", "0 */2 * * *"),
    (
        "booking-cleanup/send-pending-booking-confirmations",
        "*/10 * * * *",
    ),
    (
        "booking-cleanup/cleanup-old-cancelled-bookings",
        "0 2 * * *",
    ),
    ("booking-cleanup/generate-daily-report", "0 23 * * *"),
    (
        "booking-cleanup/generate-weekly-booking-report",
        "0 20 * * 0",
    ),
    ("event-management/archive-past-events", "0 2 * * *"),
    ("event-management/send-event-reminders", "0 9 * * *"),
    ("event-management/send-early-bird-reminders", "0 10 * * *"),
    ("event-management/update-event-statuses", "0 * * * *"),
    ("event-management/generate-event-analytics", "0 8 * * 1"),
    ("notifications/send-weekly-newsletter", "0 10 * * 1"),
    ("notifications/send-promotional-notifications", "0 14 * * *"),
    ("notifications/send-birthday-wishes", "0 9 * * *"),
    ("notifications/send-event-follow-ups", "0 12 * * *"),
    ("notifications/send-re-engagement-emails", "0 15 * * 2"),
    ("notifications/send-organizer-analytics", "0 8 1 * *"),
    ("data-cleanup/clean-cache", "0 */4 * * *"),
    ("data-cleanup/clean-temporary-files", "0 3 * * *"),
    ("data-cleanup/clean-orphaned-documents", "0 4 * * 0"),
    ("data-cleanup/generate-system-health-report", "0 6 * * *"),
    ("data-cleanup/clean-old-logs", "0 2 * * 1"),
    ("data-cleanup/emergency-disk-space-check", "0 * * * *"),
    ("data-cleanup/optimize-database", "0 5 * * 0"),
    ("analytics/generate-daily-analytics", "0 23 * * *"),
    ("analytics/generate-weekly-business-report", "0 9 * * 1"),
    ("analytics/generate-monthly-executive-summary", "0 8 1 * *"),
    ("analytics/monitor-real-time-performance", "*/30 * * * *"),
];

/// NestJS `CronExpression` names (the ones a default schedule could plausibly use) as cron.
fn named(expr: &str) -> Option<String> {
    let e = expr.trim().to_ascii_uppercase();
    let fixed = match e.as_str() {
        "EVERY_SECOND" => Some("* * * * * *"),
        "EVERY_MINUTE" => Some("* * * * *"),
        "EVERY_HOUR" => Some("0 * * * *"),
        "EVERY_DAY_AT_MIDNIGHT" | "EVERY_DAY" | "DAILY" | "MIDNIGHT" => Some("0 0 * * *"),
        "EVERY_DAY_AT_NOON" => Some("0 12 * * *"),
        "EVERY_WEEK" | "WEEKLY" => Some("0 0 * * 0"),
        "EVERY_WEEKDAY" => Some("0 0 * * 1-5"),
        "EVERY_WEEKEND" => Some("0 0 * * 6,0"),
        "EVERY_1ST_DAY_OF_MONTH_AT_MIDNIGHT" | "MONTHLY" => Some("0 0 1 * *"),
        "EVERY_1ST_DAY_OF_MONTH_AT_NOON" => Some("0 12 1 * *"),
        "EVERY_YEAR" | "YEARLY" => Some("0 0 1 1 *"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_owned());
    }
    let rest = e.strip_prefix("EVERY_")?;
    if let Some(n) = rest.strip_suffix("_SECONDS") {
        return Some(format!("*/{} * * * * *", n.parse::<u32>().ok()?));
    }
    if let Some(n) = rest.strip_suffix("_MINUTES") {
        return Some(format!("*/{} * * * *", n.parse::<u32>().ok()?));
    }
    if let Some(n) = rest.strip_suffix("_HOURS") {
        return Some(format!("0 */{} * * *", n.parse::<u32>().ok()?));
    }
    if let Some(t) = rest.strip_prefix("DAY_AT_") {
        let (h, pm) = if let Some(h) = t.strip_suffix("AM") {
            (h, false)
        } else {
            (t.strip_suffix("PM")?, true)
        };
        let h: u32 = h.parse().ok()?;
        let h24 = match (h, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, false) => h,
            (h, true) => h + 12,
        };
        return Some(format!("0 {h24} * * *"));
    }
    None
}

/// Parses a 5- or 6-field cron expression or a NestJS name.
pub fn parse_cron(expr: &str) -> Option<Cron> {
    let normal = named(expr).unwrap_or_else(|| expr.trim().to_owned());
    Cron::from_str(&normal).ok()
}

/// The next `n` fire times of `expr` strictly after `from`, in timezone `tz`.
pub fn next_fires<Tz: TimeZone + Copy>(
    expr: &str,
    from: DateTime<Tz>,
    n: usize,
) -> Option<Vec<DateTime<Utc>>> {
    let cron = parse_cron(expr)?;
    // Cron ticks are whole seconds; croner would carry `from`'s fraction into its answers.
    let from = from.with_nanosecond(0)?;
    Some(
        cron.iter_after(from)
            .take(n)
            .map(|t| t.with_timezone(&Utc))
            .collect(),
    )
}

/// Whether two schedules fire at the same instants (the next 40 fires after two reference times
/// in different seasons, UTC).
pub fn same_schedule(a: &str, b: &str) -> bool {
    let refs = [
        Utc.with_ymd_and_hms(2026, 1, 14, 13, 7, 3).unwrap(),
        Utc.with_ymd_and_hms(2026, 7, 30, 22, 59, 59).unwrap(),
    ];
    refs.iter()
        .all(|r| match (next_fires(a, *r, 40), next_fires(b, *r, 40)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_spellings_are_the_same_schedule() {
        assert!(same_schedule("*/10 * * * *", "0 */10 * * * *"));
        assert!(same_schedule("*/10 * * * *", "EVERY_10_MINUTES"));
        assert!(same_schedule("0 */2 * * *", "EVERY_2_HOURS"));
        assert!(same_schedule("0 0-23/2 * * *", "EVERY_2_HOURS"));
        assert!(same_schedule("0 1 * * 0", "0 1 * * 7"));
        assert!(same_schedule("0 1 * * 0", "0 0 1 * * SUN"));
        assert!(same_schedule("0 23 * * *", "EVERY_DAY_AT_11PM"));
        assert!(same_schedule("0 0 * * *", "EVERY_DAY_AT_MIDNIGHT"));
        assert!(!same_schedule("*/10 * * * *", "*/5 * * * *"));
        assert!(!same_schedule("0 8 1 * *", "0 8 * * 1"));
        assert!(!same_schedule("0 8 1 * *", "not a cron"));
    }

    #[test]
    fn next_fires_are_whole_seconds() {
        let from = Utc.with_ymd_and_hms(2026, 1, 14, 13, 7, 3).unwrap()
            + chrono::Duration::milliseconds(500);
        let next = next_fires("*/5 * * * *", from, 2).unwrap();
        assert_eq!(
            next[0],
            Utc.with_ymd_and_hms(2026, 1, 14, 13, 10, 0).unwrap()
        );
        assert_eq!(
            next[1],
            Utc.with_ymd_and_hms(2026, 1, 14, 13, 15, 0).unwrap()
        );
        let next = next_fires("* * * * * *", from, 1).unwrap();
        assert_eq!(
            next[0],
            Utc.with_ymd_and_hms(2026, 1, 14, 13, 7, 4).unwrap()
        );
    }

    #[test]
    fn spec_table_has_32_distinct_jobs_that_parse() {
        let names: std::collections::BTreeSet<_> = JOB_TABLE.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 32);
        for (name, cron) in JOB_TABLE {
            assert!(parse_cron(cron).is_some(), "{name}: {cron}");
        }
    }
}
