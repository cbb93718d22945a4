//! The catalog of ticketing jobs: every job of `docs/jobs.md` with the seed's default schedule.
//!
//! Upserted into the `jobs` table at start-up; an operator's changes (schedule, timezone,
//! enabled, policies) survive the upsert.

pub struct CatalogEntry {
    pub name: &'static str,
    pub schedule: &'static str,
    pub description: &'static str,
}

const fn job(
    name: &'static str,
    schedule: &'static str,
    description: &'static str,
) -> CatalogEntry {
    CatalogEntry {
        name,
        schedule,
        description,
    }
}

pub const CATALOG: &[CatalogEntry] = &[
    job(
        "payment-cleanup/cleanup-abandoned-payments",
        "EVERY_10_MINUTES",
        "Payments pending > 15 min become abandoned; their booking is cancelled, tickets released, customer e-mailed",
    ),
    job(
        "payment-cleanup/handle-payment-timeouts",
        "EVERY_5_MINUTES",
        "Payments processing > 10 min fail with 'Payment gateway timeout'; booking cancelled, tickets released, e-mail",
    ),
    job(
        "payment-cleanup/cleanup-old-failed-payments",
        "0 1 * * 0",
        "Delete failed/abandoned payments older than 30 days, in chunks",
    ),
    job(
        "payment-cleanup/generate-payment-analytics",
        "0 0 * * *",
        "Report for the day that just ended: counts per status, success rate, revenue per currency",
    ),
    job(
        "booking-cleanup/cancel-expired-bookings",
        "EVERY_5_MINUTES",
        "Bookings pending > 10 min with no successful payment are cancelled, tickets released, customer e-mailed",
    ),
    job(
        "booking-cleanup/process-refund-requests",
        "EVERY_2_HOURS",
        "Refund requests: >= 24 h before the event 100 %, 0-24 h 50 %, after the event denied",
    ),
    job(
        "booking-cleanup/send-pending-booking-confirmations",
        "EVERY_10_MINUTES",
        "Confirmed bookings without a confirmation e-mail get one",
    ),
    job(
        "booking-cleanup/cleanup-old-cancelled-bookings",
        "0 2 * * *",
        "Delete bookings cancelled > 30 days ago, except those with an unprocessed refund",
    ),
    job(
        "booking-cleanup/generate-daily-report",
        "0 23 * * *",
        "Bookings today by status, confirmed revenue",
    ),
    job(
        "booking-cleanup/generate-weekly-booking-report",
        "0 20 * * 0",
        "Last 7 days by status, top 10 events by revenue",
    ),
    job(
        "event-management/archive-past-events",
        "0 2 * * *",
        "Events completed more than 7 days ago are archived",
    ),
    job(
        "event-management/send-event-reminders",
        "0 9 * * *",
        "Confirmed bookings of events starting tomorrow get a reminder",
    ),
    job(
        "event-management/send-early-bird-reminders",
        "0 10 * * *",
        "Confirmed bookings of events starting in 7 days get a reminder",
    ),
    job(
        "event-management/update-event-statuses",
        "EVERY_HOUR",
        "upcoming -> live at start; live -> completed at end (start + 4 h when no end is set)",
    ),
    job(
        "event-management/generate-event-analytics",
        "0 8 * * 1",
        "Weekly event performance",
    ),
    job(
        "notifications/send-weekly-newsletter",
        "0 10 * * 1",
        "Verified, subscribed users with a booking in the last 30 days get the 5 soonest upcoming events",
    ),
    job(
        "notifications/send-promotional-notifications",
        "0 14 * * *",
        "Events in the next 7 days under 30 % sold: up to 100 opted-in users each who have not booked it",
    ),
    job(
        "notifications/send-birthday-wishes",
        "0 9 * * *",
        "Verified users whose birthday is today get an offer code, once a year",
    ),
    job(
        "notifications/send-event-follow-ups",
        "0 12 * * *",
        "Confirmed bookings of events that completed yesterday get a feedback request",
    ),
    job(
        "notifications/send-re-engagement-emails",
        "0 15 * * 2",
        "Verified users with no booking in 90+ days (or never) get a win-back offer",
    ),
    job(
        "notifications/send-organizer-analytics",
        "0 8 1 * *",
        "Each organizer gets last month's events, tickets and revenue",
    ),
    job(
        "data-cleanup/clean-cache",
        "0 */4 * * *",
        "Delete expired cache entries, report what was freed",
    ),
    job(
        "data-cleanup/clean-temporary-files",
        "0 3 * * *",
        "Files in the temp upload dir older than 1 day",
    ),
    job(
        "data-cleanup/clean-orphaned-documents",
        "0 4 * * 0",
        "Files in the documents dir older than 30 days that no row references",
    ),
    job(
        "data-cleanup/generate-system-health-report",
        "0 6 * * *",
        "Memory, uptime, database and disk health, job success rates; alert above thresholds",
    ),
    job(
        "data-cleanup/clean-old-logs",
        "0 2 * * 1",
        "*.log files older than 30 days in the logs dir",
    ),
    job(
        "data-cleanup/emergency-disk-space-check",
        "EVERY_HOUR",
        "Disk usage of the data dirs; above a threshold, clean temp files and alert admins",
    ),
    job(
        "data-cleanup/optimize-database",
        "0 5 * * 0",
        "VACUUM (ANALYZE) / ANALYZE of the ticketing tables",
    ),
    job(
        "analytics/generate-daily-analytics",
        "0 23 * * *",
        "Users, logins, events, bookings, conversion, payments, top 5 events",
    ),
    job(
        "analytics/generate-weekly-business-report",
        "0 9 * * 1",
        "Business performance over the last 7 days",
    ),
    job(
        "analytics/generate-monthly-executive-summary",
        "0 8 1 * *",
        "Month over month growth, category breakdown",
    ),
    job(
        "analytics/monitor-real-time-performance",
        "EVERY_30_MINUTES",
        "Activity in the last 30 min, warning above thresholds",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_every_job_of_the_spec_once_and_valid_schedules() {
        assert_eq!(CATALOG.len(), 32);
        let mut names: Vec<_> = CATALOG.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 32);
        for e in CATALOG {
            crate::cron::Schedule::parse(e.schedule, "UTC")
                .unwrap_or_else(|err| panic!("{}: {err}", e.name));
            let (service, task) = e.name.split_once('/').expect("service/task");
            assert!(!service.is_empty() && !task.is_empty());
        }
    }
}
