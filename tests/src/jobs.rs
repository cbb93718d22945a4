//! Names of the jobs the end-to-end tests run most (every job and its schedule is in
//! [`crate::schedule::JOB_TABLE`]; the rules are in `docs/jobs.md`).
pub const CANCEL_EXPIRED: &str = "booking-cleanup/cancel-expired-bookings";
pub const CONFIRMATIONS: &str = "booking-cleanup/send-pending-booking-confirmations";
pub const DAILY_REPORT: &str = "booking-cleanup/generate-daily-report";
pub const ABANDONED_PAYMENTS: &str = "payment-cleanup/cleanup-abandoned-payments";
pub const PAYMENT_ANALYTICS: &str = "payment-cleanup/generate-payment-analytics";
pub const UPDATE_STATUSES: &str = "event-management/update-event-statuses";
pub const NEWSLETTER: &str = "notifications/send-weekly-newsletter";
/// The cheapest job (a cache directory that is usually empty): the one the engine tests tick.
pub const CLEAN_CACHE: &str = "data-cleanup/clean-cache";
pub const CLEAN_TEMP_FILES: &str = "data-cleanup/clean-temporary-files";
