//! booking-cleanup: the booking lifecycle (expiry, refunds, confirmations, clean-up, reports).
use chrono::{DateTime, Duration, Utc};
use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::aggregates::{self, count};
use super::inventory::{id_list, release_tickets, released_rows};
use super::mailing::Mailing;
use super::window::{day_offset, last_seven_days};
use super::{ChunkDone, ChunkStep, Cursor, DeleteChunk, run_chunks, zero};
use crate::db::{Sql, col};
use crate::outbox::OutboxInsert;
use crate::tasks::{DbContext, Task, TaskContext, TaskError, TaskOutput, TaskRegistry};

pub fn register(r: &mut TaskRegistry) {
    r.register(CancelExpiredBookings);
    r.register(ProcessRefundRequests);
    r.register(SendPendingBookingConfirmations);
    r.register(CleanupOldCancelledBookings);
    r.register(GenerateDailyReport);
    r.register(GenerateWeeklyBookingReport);
}

/// How long a pending booking holds its tickets without a successful payment.
const BOOKING_HOLD_MINUTES: i64 = 10;

/// Pending bookings older than the hold with no successful payment → cancelled, tickets released,
/// customer e-mailed.
pub struct CancelExpiredBookings;

impl CancelExpiredBookings {
    /// The rule over the bookings row `b`; `cutoff` is the placeholder of `now - hold`.
    fn expired(b: &str, cutoff: &str) -> String {
        format!(
            "{b}.status = 'pending' AND {b}.created_at < {cutoff} \
             AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.booking_id = {b}.id \
                             AND p.status = 'success')"
        )
    }
}

struct CancelExpiredChunk {
    batch: u64,
    cursor: Cursor,
}

#[async_trait::async_trait]
impl ChunkStep for CancelExpiredChunk {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let cutoff = q.bind(ctx.now - Duration::minutes(BOOKING_HOLD_MINUTES));
        let reason = q.bind(format!(
            "Booking expired: no successful payment within {BOOKING_HOLD_MINUTES} minutes"
        ));
        let limit = q.bind(self.batch as i64);
        let after = q.bind(self.cursor.after());
        let rule = CancelExpiredBookings::expired("b", &cutoff);
        // The rule is evaluated again by the UPDATE on the row it locks, so a booking confirmed
        // (or paid) by another connection after the sub-select is left alone.
        q.push(&format!(
            "{picked}UPDATE bookings SET status = 'cancelled', cancelled_at = {now}, \
             cancellation_reason = {reason} \
             WHERE id IN (SELECT id FROM picked) AND {recheck} \
             RETURNING id, event_id, quantity",
            picked = ctx.dialect.picked(
                &format!(
                    "SELECT b.id FROM bookings b WHERE {rule} AND b.id > {after} \
                     ORDER BY b.id LIMIT {limit}"
                ),
                "b"
            ),
            recheck = CancelExpiredBookings::expired("bookings", &cutoff),
        ));
        let released = released_rows(
            q.fetch_all(txn)
                .await
                .context("cancelling expired bookings")?,
        )
        .context("reading cancelled bookings")?;
        if released.is_empty() {
            return Ok(ChunkDone::default());
        }
        self.cursor.advance(released.iter().map(|r| r.booking_id));
        let tickets = release_tickets(txn, ctx.dialect, &released)
            .await
            .context("releasing tickets of expired bookings")?;
        let ids = id_list(released.iter().map(|r| r.booking_id));
        let mut mail = Sql::new(ctx.dialect);
        OutboxInsert {
            kind: "booking-cancelled",
            dedupe_key: "'booking-cancelled:' || b.id".into(),
            recipient: "u.email".into(),
            subject: "'Your booking for ' || COALESCE(e.title, 'your event') || ' was cancelled'"
                .into(),
            payload: booking_payload(),
            from_where: format!(
                "FROM bookings b JOIN users u ON u.id = b.user_id \
                 LEFT JOIN events e ON e.id = b.event_id WHERE b.id IN ({ids})"
            ),
        }
        .push_to(&mut mail, chrono::Utc::now());
        let emails = mail
            .execute(txn)
            .await
            .context("queueing booking-cancelled e-mails")?;
        Ok(ChunkDone {
            handled: released.len() as u64,
            counts: vec![
                ("cancelled", released.len() as u64),
                ("tickets_released", tickets),
                ("emails_queued", emails),
            ],
            mail_queued: emails > 0,
        })
    }
}

#[async_trait::async_trait]
impl Task for CancelExpiredBookings {
    fn name(&self) -> &'static str {
        "booking-cleanup/cancel-expired-bookings"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["cancelled", "tickets_released", "emails_queued"]);
        let batch = ctx.batch_size(500)?;
        let mut q = Sql::new(ctx.dialect);
        let cutoff = q.bind(ctx.now - Duration::minutes(BOOKING_HOLD_MINUTES));
        q.push(&format!(
            "SELECT COUNT(*) FROM bookings b WHERE {}",
            Self::expired("b", &cutoff)
        ));
        let total = count(q, ctx, "counting expired bookings").await?;
        run_chunks(
            ctx,
            &CancelExpiredChunk {
                batch,
                cursor: Cursor::default(),
            },
            total,
            "expired bookings",
        )
        .await?;
        ctx.info(format!(
            "Cancelled {} expired bookings, released {} tickets",
            ctx.count("cancelled"),
            ctx.count("tickets_released")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Template fields of a booking e-mail over aliases `b` (bookings), `u` (users), `e` (events).
pub fn booking_payload() -> Vec<(&'static str, String)> {
    vec![
        ("booking_id", "b.id".into()),
        ("first_name", "u.first_name".into()),
        ("last_name", "u.last_name".into()),
        ("event_id", "b.event_id".into()),
        ("event_title", "e.title".into()),
        ("venue", "e.venue".into()),
        ("starts_at", "e.starts_at".into()),
        ("quantity", "b.quantity".into()),
        ("total_amount", "b.total_amount".into()),
        ("currency", "b.currency".into()),
        ("status", "b.status".into()),
        ("cancellation_reason", "b.cancellation_reason".into()),
    ]
}

/// The refund policy, relative to when the refund was requested: at least 24 hours before the
/// event 100 %, less than that 50 % (rounded down), once the event has started none. Amounts are
/// integer minor units and never exceed what was actually paid.
#[derive(Debug, PartialEq, Eq)]
pub enum RefundDecision {
    Full(i64),
    Partial(i64),
    Denied(&'static str),
}

pub fn refund_decision(
    total_amount: i64,
    paid: i64,
    starts_at: Option<DateTime<Utc>>,
    requested_at: DateTime<Utc>,
) -> RefundDecision {
    let Some(starts_at) = starts_at else {
        return RefundDecision::Denied("The event of this booking no longer exists");
    };
    let refundable = total_amount.min(paid);
    if refundable <= 0 {
        return RefundDecision::Denied("No payment was received for this booking");
    }
    let notice = starts_at - requested_at;
    if notice >= Duration::hours(24) {
        RefundDecision::Full(refundable)
    } else if notice > Duration::zero() {
        RefundDecision::Partial(refundable / 2)
    } else {
        RefundDecision::Denied("Refunds are not available once the event has started")
    }
}

/// Cancelled bookings with an unprocessed refund request → refunded (full or half) or denied,
/// the payment marked refunded, one e-mail per outcome.
pub struct ProcessRefundRequests;

struct RefundChunk {
    batch: u64,
    cursor: Cursor,
}

const REFUND_REQUESTED: &str =
    "b.status = 'cancelled' AND b.refund_requested = TRUE AND b.refund_processed = FALSE";

#[async_trait::async_trait]
impl ChunkStep for RefundChunk {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let mut q = Sql::new(ctx.dialect);
        let limit = q.bind(self.batch as i64);
        let after = q.bind(self.cursor.after());
        q.push(&format!(
            "SELECT b.id, b.total_amount, e.starts_at, b.refund_requested_at, b.cancelled_at, \
             (SELECT CAST(COALESCE(SUM(p.amount), 0) AS BIGINT) FROM payments p \
              WHERE p.booking_id = b.id AND p.status = 'success') \
             FROM bookings b LEFT JOIN events e ON e.id = b.event_id \
             WHERE {REFUND_REQUESTED} AND b.id > {after} ORDER BY b.id LIMIT {limit}{lock}",
            lock = ctx.dialect.skip_locked_of("b"),
        ));
        let rows = q
            .fetch_all(txn)
            .await
            .context("selecting refund requests")?;
        if rows.is_empty() {
            return Ok(ChunkDone::default());
        }
        let mut decisions = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = || -> Result<(i64, RefundDecision), sea_orm::DbErr> {
                let id: i64 = col(row, 0)?;
                let total: i64 = col(row, 1)?;
                let starts_at: Option<DateTime<Utc>> = col(row, 2)?;
                let requested: Option<DateTime<Utc>> = col(row, 3)?;
                let cancelled: Option<DateTime<Utc>> = col(row, 4)?;
                let paid: i64 = col(row, 5)?;
                let requested_at = requested.or(cancelled).unwrap_or(ctx.now);
                Ok((id, refund_decision(total, paid, starts_at, requested_at)))
            };
            decisions.push(read().context("reading a refund request")?);
        }

        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let (mut amounts, mut denied, mut reasons, mut statuses) =
            (String::new(), String::new(), String::new(), String::new());
        for (id, decision) in &decisions {
            let idp = q.bind(*id);
            let (amount, is_denied, reason, status) = match decision {
                RefundDecision::Full(a) | RefundDecision::Partial(a) => {
                    (*a, false, None, "refunded")
                }
                RefundDecision::Denied(r) => (0, true, Some(*r), "cancelled"),
            };
            amounts.push_str(&format!(" WHEN {idp} THEN {}", q.bind(amount)));
            denied.push_str(&format!(" WHEN {idp} THEN {}", q.bind(is_denied)));
            reasons.push_str(&format!(
                " WHEN {idp} THEN {}",
                q.bind(reason.map(str::to_owned))
            ));
            statuses.push_str(&format!(" WHEN {idp} THEN {}", q.bind(status.to_owned())));
        }
        self.cursor.advance(decisions.iter().map(|(id, _)| *id));
        let ids = id_list(decisions.iter().map(|(id, _)| *id));
        q.push(&format!(
            "UPDATE bookings SET refund_processed = TRUE, refund_processed_at = {now}, \
             refund_amount = CASE id{amounts} END, refund_denied = CASE id{denied} END, \
             refund_denial_reason = CASE id{reasons} END, status = CASE id{statuses} END \
             WHERE id IN ({ids}) AND status = 'cancelled' AND refund_requested = TRUE \
             AND refund_processed = FALSE"
        ));
        q.execute(txn).await.context("recording refund decisions")?;

        let approved: Vec<i64> = decisions
            .iter()
            .filter(|(_, d)| !matches!(d, RefundDecision::Denied(_)))
            .map(|(id, _)| *id)
            .collect();
        if !approved.is_empty() {
            let mut q = Sql::new(ctx.dialect);
            let now = q.bind(ctx.now);
            q.push(&format!(
                "UPDATE payments SET status = 'refunded', refunded_at = {now} \
                 WHERE booking_id IN ({}) AND status = 'success'",
                id_list(approved.iter().copied())
            ));
            q.execute(txn).await.context("marking payments refunded")?;
        }

        let mut emails = 0;
        for (kind, subject, condition) in [
            (
                "refund-approved",
                "Your refund has been approved",
                "b.refund_denied = FALSE",
            ),
            (
                "refund-denied",
                "About your refund request",
                "b.refund_denied = TRUE",
            ),
        ] {
            let mut payload = booking_payload();
            payload.push(("refund_amount", "b.refund_amount".into()));
            payload.push(("refund_denial_reason", "b.refund_denial_reason".into()));
            let mut mail = Sql::new(ctx.dialect);
            let subject = mail.bind(subject.to_owned());
            OutboxInsert {
                kind,
                dedupe_key: "'refund:' || b.id".into(),
                recipient: "u.email".into(),
                subject,
                payload,
                from_where: format!(
                    "FROM bookings b JOIN users u ON u.id = b.user_id \
                     LEFT JOIN events e ON e.id = b.event_id \
                     WHERE b.id IN ({ids}) AND b.refund_processed = TRUE AND {condition}"
                ),
            }
            .push_to(&mut mail, Utc::now());
            emails += mail
                .execute(txn)
                .await
                .context(format!("queueing {kind} e-mails"))?;
        }
        let full = decisions
            .iter()
            .filter(|(_, d)| matches!(d, RefundDecision::Full(_)))
            .count() as u64;
        let partial = decisions
            .iter()
            .filter(|(_, d)| matches!(d, RefundDecision::Partial(_)))
            .count() as u64;
        Ok(ChunkDone {
            handled: decisions.len() as u64,
            counts: vec![
                ("processed", decisions.len() as u64),
                ("refunded_full", full),
                ("refunded_partial", partial),
                ("denied", decisions.len() as u64 - full - partial),
                ("emails_queued", emails),
            ],
            mail_queued: emails > 0,
        })
    }
}

#[async_trait::async_trait]
impl Task for ProcessRefundRequests {
    fn name(&self) -> &'static str {
        "booking-cleanup/process-refund-requests"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(
            ctx,
            &[
                "processed",
                "refunded_full",
                "refunded_partial",
                "denied",
                "emails_queued",
            ],
        );
        let mut q = Sql::new(ctx.dialect);
        q.push(&format!(
            "SELECT COUNT(*) FROM bookings b WHERE {REFUND_REQUESTED}"
        ));
        let total = count(q, ctx, "counting refund requests").await?;
        let batch = ctx.batch_size(200)?;
        let step = RefundChunk {
            batch,
            cursor: Cursor::default(),
        };
        run_chunks(ctx, &step, total, "refund requests").await?;
        ctx.info(format!(
            "Processed {} refund requests: {} full, {} partial, {} denied",
            ctx.count("processed"),
            ctx.count("refunded_full"),
            ctx.count("refunded_partial"),
            ctx.count("denied")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Confirmed bookings whose confirmation e-mail was never sent → e-mail, flag set.
pub struct SendPendingBookingConfirmations;

#[async_trait::async_trait]
impl Task for SendPendingBookingConfirmations {
    fn name(&self) -> &'static str {
        "booking-cleanup/send-pending-booking-confirmations"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let rule = |_: &mut Sql| "TRUE".to_owned();
        let sent = Mailing {
            table: "bookings",
            alias: "b",
            flag: "confirmation_email_sent",
            flag_at: "confirmation_email_sent_at",
            joins: "JOIN users u ON u.id = b.user_id LEFT JOIN events e ON e.id = b.event_id",
            row_rule: "{t}.status = 'confirmed'",
            rule: &rule,
            kind: "booking-confirmation",
            dedupe_prefix: "booking-confirmation",
            recipient: "u.email",
            subject: "'Booking confirmed: ' || COALESCE(e.title, 'your event')".into(),
            payload: booking_payload(),
            limit: None,
            counted_as: "confirmations_sent",
        }
        .run(ctx)
        .await?;
        ctx.info(format!("Sent {sent} booking confirmations"));
        Ok(ctx.output(Vec::new()))
    }
}

/// Bookings cancelled more than 30 days ago are deleted, except those whose refund request is
/// still unprocessed.
pub struct CleanupOldCancelledBookings;

const CANCELLED_RETENTION_DAYS: i64 = 30;

fn old_cancelled(b: &str, cutoff: &str) -> String {
    format!(
        "{b}.status = 'cancelled' AND COALESCE({b}.cancelled_at, {b}.created_at) < {cutoff} \
         AND NOT ({b}.refund_requested = TRUE AND {b}.refund_processed = FALSE)"
    )
}

#[async_trait::async_trait]
impl Task for CleanupOldCancelledBookings {
    fn name(&self) -> &'static str {
        "booking-cleanup/cleanup-old-cancelled-bookings"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["deleted"]);
        let mut q = Sql::new(ctx.dialect);
        let cutoff = q.bind(ctx.now - Duration::days(CANCELLED_RETENTION_DAYS));
        q.push(&format!(
            "SELECT COUNT(*) FROM bookings b WHERE {}",
            old_cancelled("b", &cutoff)
        ));
        let total = count(q, ctx, "counting old cancelled bookings").await?;
        let batch = ctx.batch_size(1000)?;
        run_chunks(
            ctx,
            &DeleteChunk {
                table: "bookings",
                alias: "b",
                rule: old_cancelled,
                retention: Duration::days(CANCELLED_RETENTION_DAYS),
                batch,
                cursor: Cursor::default(),
            },
            total,
            "old cancelled bookings",
        )
        .await?;
        ctx.info(format!(
            "Deleted {} bookings cancelled more than {CANCELLED_RETENTION_DAYS} days ago",
            ctx.count("deleted")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Bookings made today (in the job's timezone) by status, and confirmed revenue.
pub struct GenerateDailyReport;

#[async_trait::async_trait]
impl Task for GenerateDailyReport {
    fn name(&self) -> &'static str {
        "booking-cleanup/generate-daily-report"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let day = day_offset(ctx.tz, ctx.now, 0);
        let by_status =
            aggregates::count_by(ctx, "bookings", "status", "created_at", &day, "").await?;
        let total: u64 = by_status.values().filter_map(|v| v.as_u64()).sum();
        let revenue = aggregates::sum_by_currency(
            ctx,
            "bookings",
            "total_amount",
            "created_at",
            &day,
            "status = 'confirmed'",
        )
        .await?;
        let tickets = aggregates::scalar(ctx, "counting tickets sold today", |q| {
            let (s, e) = (q.bind(day.start), q.bind(day.end));
            format!(
                "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM bookings \
                 WHERE status = 'confirmed' AND created_at >= {s} AND created_at < {e}"
            )
        })
        .await?;
        ctx.set("bookings", total);
        ctx.info(format!(
            "Daily booking report for {}: {total} bookings, revenue {}",
            day.period,
            json!(revenue)
        ));
        let body = json!({
            "period": day.period, "timezone": ctx.tz.name(),
            "window": {"start": day.start, "end": day.end},
            "total": total, "by_status": by_status, "tickets_sold": tickets,
            "confirmed_revenue": revenue,
        });
        aggregates::report(ctx, "daily-bookings", &day.period, body).await
    }
}

/// The last seven days of bookings by status, and the top 10 events by revenue.
pub struct GenerateWeeklyBookingReport;

#[async_trait::async_trait]
impl Task for GenerateWeeklyBookingReport {
    fn name(&self) -> &'static str {
        "booking-cleanup/generate-weekly-booking-report"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let week = last_seven_days(ctx.tz, ctx.now);
        let by_status =
            aggregates::count_by(ctx, "bookings", "status", "created_at", &week, "").await?;
        let total: u64 = by_status.values().filter_map(|v| v.as_u64()).sum();
        let revenue = aggregates::sum_by_currency(
            ctx,
            "bookings",
            "total_amount",
            "created_at",
            &week,
            "status = 'confirmed'",
        )
        .await?;
        let top = aggregates::top_events(ctx, &week, 10).await?;
        ctx.set("bookings", total);
        ctx.info(format!(
            "Weekly booking report {}: {total} bookings",
            week.period
        ));
        let body = json!({
            "period": week.period, "timezone": ctx.tz.name(),
            "window": {"start": week.start, "end": week.end},
            "total": total, "by_status": by_status, "confirmed_revenue": revenue,
            "top_events": top,
        });
        aggregates::report(ctx, "weekly-bookings", &week.period, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_policy() {
        let start = Utc::now();
        let d = |h: i64| refund_decision(10_001, 10_001, Some(start), start - Duration::hours(h));
        assert_eq!(d(48), RefundDecision::Full(10_001));
        assert_eq!(d(24), RefundDecision::Full(10_001));
        assert_eq!(d(23), RefundDecision::Partial(5_000));
        assert!(matches!(d(-1), RefundDecision::Denied(_)));
        // Never more than was paid.
        assert_eq!(
            refund_decision(10_000, 4_000, Some(start), start - Duration::days(3)),
            RefundDecision::Full(4_000)
        );
        assert!(matches!(
            refund_decision(10_000, 0, Some(start), start - Duration::days(3)),
            RefundDecision::Denied(_)
        ));
    }
}
