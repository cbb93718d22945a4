//! booking-cleanup: the booking lifecycle (expiry, refunds, confirmations, clean-up, reports).
use chrono::Duration;
use sea_orm::DatabaseTransaction;

use super::inventory::{id_list, release_tickets, released_rows};
use super::{ChunkDone, ChunkStep, run_chunks, zero};
use crate::db::{Sql, col};
use crate::outbox::OutboxInsert;
use crate::tasks::{DbContext, Task, TaskContext, TaskError, TaskOutput, TaskRegistry};

pub fn register(r: &mut TaskRegistry) {
    r.register(CancelExpiredBookings);
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
        let rule = CancelExpiredBookings::expired("b", &cutoff);
        // The rule is evaluated again by the UPDATE on the row it locks, so a booking confirmed
        // (or paid) by another connection after the sub-select is left alone.
        q.push(&format!(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = {now}, \
             cancellation_reason = {reason} \
             WHERE id IN (SELECT b.id FROM bookings b WHERE {rule} ORDER BY b.id LIMIT {limit}{lock}) \
             AND {recheck} \
             RETURNING id, event_id, quantity",
            lock = ctx.dialect.skip_locked(),
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
            &CancelExpiredChunk { batch },
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

/// Runs a `SELECT COUNT(*) ...` (or any single BIGINT) query.
pub async fn count(q: Sql, ctx: &TaskContext, what: &str) -> Result<u64, TaskError> {
    let row = q.fetch_one(&ctx.db).await.context(what.to_owned())?;
    let n: i64 = match row {
        Some(row) => col(&row, 0).context(what.to_owned())?,
        None => 0,
    };
    Ok(n.max(0) as u64)
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
