//! payment-cleanup: stale payments, old failed payments, payment analytics.
//!
//! The two stale-payment jobs never overlap: "abandoned" takes `pending` payments (the customer
//! never submitted them), "timeouts" takes `processing` payments (sent to the gateway, no answer).
use chrono::Duration;
use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::aggregates::count;
use super::inventory::{
    cancel_pending_bookings, id_list, release_cte, release_tickets, released_tickets,
};
use super::window::day_offset;
use super::{
    ChunkDone, ChunkStep, Cursor, DeleteChunk, aggregates, chunk_figures, run_chunks, zero,
};
use crate::db::{Dialect, Sql, col};
use crate::outbox::OutboxInsert;
use crate::tasks::{
    DbContext, Param, Task, TaskContext, TaskError, TaskOutput, TaskRegistry, params,
};

pub fn register(r: &mut TaskRegistry) {
    r.register(StalePayments::ABANDONED);
    r.register(StalePayments::TIMEOUTS);
    r.register(CleanupOldFailedPayments);
    r.register(GeneratePaymentAnalytics);
}

/// Payments stuck in `from_status` for longer than `minutes` → `to_status`; their still-pending
/// booking is cancelled, its tickets released and the customer e-mailed.
pub struct StalePayments {
    name: &'static str,
    from_status: &'static str,
    minutes: i64,
    to_status: &'static str,
    /// Timestamp column set to the run's reference time.
    at_column: &'static str,
    failure_reason: Option<&'static str>,
    booking_reason: &'static str,
    mail_kind: &'static str,
    subject: &'static str,
    /// Subject when another payment already paid the booking, which stands.
    stands_subject: &'static str,
    /// Summary key of the payments changed.
    counted_as: &'static str,
}

impl StalePayments {
    pub const ABANDONED: StalePayments = StalePayments {
        name: "payment-cleanup/cleanup-abandoned-payments",
        from_status: "pending",
        minutes: 15,
        to_status: "abandoned",
        at_column: "abandoned_at",
        failure_reason: None,
        booking_reason: "Payment abandoned",
        mail_kind: "payment-abandoned",
        subject: "Your payment was not completed",
        stands_subject: "A payment attempt was not completed; your booking stands",
        counted_as: "abandoned",
    };

    pub const TIMEOUTS: StalePayments = StalePayments {
        name: "payment-cleanup/handle-payment-timeouts",
        from_status: "processing",
        minutes: 10,
        to_status: "failed",
        at_column: "failed_at",
        failure_reason: Some("Payment gateway timeout"),
        booking_reason: "Payment failed: payment gateway timeout",
        mail_kind: "payment-failed",
        subject: "Payment failed",
        stands_subject: "A payment attempt failed; your booking stands",
        counted_as: "failed",
    };

    /// The e-mail of each payment of `from_where` (aliases `p` payments, `b` its booking, `e`,
    /// `u`), bound into `q`, as statement text. `released` tells a booking this chunk cancelled,
    /// `booking_status` is its status after the chunk.
    fn mail(
        &self,
        q: &mut Sql,
        released: &str,
        booking_status: &str,
        from_where: &str,
        tz: chrono_tz::Tz,
    ) -> String {
        // What happened to each booking, so the e-mail says it: released by this chunk, or
        // already paid by another payment (it stands), or cancelled before.
        let outcome = format!(
            "CASE WHEN b.id IS NULL THEN 'none' WHEN {released} THEN 'released' \
             WHEN b.status IN ('cancelled', 'refunded') THEN 'already_cancelled' \
             WHEN b.status = 'confirmed' OR EXISTS (SELECT 1 FROM payments s \
                  WHERE s.booking_id = b.id AND s.status IN ('success', 'refunded')) \
             THEN 'stands' ELSE 'unchanged' END"
        );
        let subject = q.bind(self.subject.to_owned());
        let stands_subject = q.bind(self.stands_subject.to_owned());
        OutboxInsert {
            kind: self.mail_kind,
            dedupe_key: format!("'{}:' || p.id", self.mail_kind),
            recipient: "u.email".into(),
            subject: format!(
                "CASE {outcome} WHEN 'stands' THEN {stands_subject} ELSE {subject} END"
            ),
            payload: vec![
                ("payment_id", "p.id".into()),
                ("booking_id", "p.booking_id".into()),
                ("first_name", "u.first_name".into()),
                ("last_name", "u.last_name".into()),
                ("amount", "p.amount".into()),
                ("currency", "p.currency".into()),
                ("failure_reason", "p.failure_reason".into()),
                ("event_title", "e.title".into()),
                ("starts_at", "e.starts_at".into()),
                ("quantity", "b.quantity".into()),
                ("booking_status", booking_status.into()),
                ("booking_outcome", outcome.clone()),
            ],
            from_where: from_where.to_owned(),
        }
        .text(q, chrono::Utc::now(), tz)
    }

    /// `from_status` as an SQL literal, not a bound value: Postgres matches a claim to the
    /// partial index of stale payments (`ix_payments_stale_id`) only when the query names the
    /// status itself. It is one of this file's constants, never outside input.
    fn status_literal(&self) -> String {
        format!("'{}'", self.from_status)
    }

    fn stale(&self, d: Dialect, p: &str, status: &str, cutoff: &str) -> String {
        format!(
            "{p}.status = {status} AND {}",
            d.cmp(&format!("{p}.created_at"), "<", cutoff)
        )
    }
}

struct StaleChunk<'a> {
    rule: &'a StalePayments,
    batch: u64,
    cursor: Cursor,
}

impl StaleChunk<'_> {
    /// The whole chunk as one statement: claim the stale payments, change them (re-checking the
    /// rule on each locked row), cancel their still-pending unpaid bookings, release the tickets
    /// of exactly those, and queue one e-mail per payment changed. The e-mail reads the payments
    /// from their UPDATE's RETURNING (new status, failure reason) and a booking's status after
    /// the chunk as `COALESCE(c.status, b.status)`, since the other CTEs see the statement's
    /// snapshot. The payments this chunk changed were `pending`/`processing` in that snapshot
    /// and stay out of `success`/`refunded`, so the snapshot answers "paid by another payment"
    /// as the later statements of the multi-statement chunk do.
    async fn apply_postgres(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let rule = self.rule;
        let d = Dialect::Postgres;
        let mut q = Sql::new(d);
        let now = q.bind(ctx.now);
        let from = rule.status_literal();
        let to = q.bind(rule.to_status.to_owned());
        let cutoff = q.bind(ctx.now - Duration::minutes(rule.minutes));
        let limit = super::limit_literal(self.batch);
        let after = q.bind(self.cursor.after());
        let booking_reason = q.bind(rule.booking_reason.to_owned());
        let reason = match rule.failure_reason {
            Some(r) => format!(", failure_reason = {}", q.bind(r.to_owned())),
            None => String::new(),
        };
        let mail = rule.mail(
            &mut q,
            "c.id IS NOT NULL",
            "COALESCE(c.status, b.status)",
            "FROM sp p LEFT JOIN bookings b ON b.id = p.booking_id \
             LEFT JOIN c ON c.id = p.booking_id LEFT JOIN events e ON e.id = b.event_id \
             JOIN users u ON u.id = COALESCE(b.user_id, p.user_id) WHERE TRUE",
            ctx.tz,
        );
        q.push(&format!(
            "{picked}, sp AS (UPDATE payments SET status = {to}, {at} = {now}{reason} \
             WHERE id IN (SELECT id FROM picked) AND {recheck} RETURNING *), \
             c AS (UPDATE bookings SET status = 'cancelled', cancelled_at = {now}, \
             cancellation_reason = {booking_reason} \
             WHERE id IN (SELECT booking_id FROM sp) AND status = 'pending' \
             AND NOT EXISTS (SELECT 1 FROM payments x WHERE x.booking_id = bookings.id \
                             AND x.status = 'success') \
             RETURNING id, event_id, quantity, status), \
             {release}, m AS ({mail} RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM sp), (SELECT MAX(id) FROM sp), \
             (SELECT COUNT(*) FROM c), {tickets}, (SELECT COUNT(*) FROM m)",
            at = rule.at_column,
            picked = d.picked(
                &format!(
                    "SELECT p.id FROM payments p WHERE {} AND p.id > {after} \
                     ORDER BY p.id LIMIT {limit}",
                    rule.stale(d, "p", &from, &cutoff)
                ),
                "p"
            ),
            recheck = rule.stale(d, "payments", &from, &cutoff),
            release = release_cte("c"),
            tickets = released_tickets("c"),
        ));
        let f = chunk_figures(
            q,
            txn,
            5,
            &format!("marking stale payments {}", rule.to_status),
        )
        .await?;
        let (changed, last, cancelled, tickets, emails) =
            (f[0] as u64, f[1], f[2] as u64, f[3] as u64, f[4] as u64);
        if changed == 0 {
            return Ok(ChunkDone::default());
        }
        self.cursor.advance([last]);
        Ok(ChunkDone {
            handled: changed,
            counts: vec![
                (rule.counted_as, changed),
                ("bookings_cancelled", cancelled),
                ("tickets_released", tickets),
                ("emails_queued", emails),
            ],
            mail_queued: emails > 0,
        })
    }
}

#[async_trait::async_trait]
impl ChunkStep for StaleChunk<'_> {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        if ctx.dialect == Dialect::Postgres {
            return self.apply_postgres(ctx, txn).await;
        }
        let rule = self.rule;
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let from = rule.status_literal();
        let to = q.bind(rule.to_status.to_owned());
        let cutoff = q.bind(ctx.now - Duration::minutes(rule.minutes));
        let limit = super::limit_literal(self.batch);
        let after = q.bind(self.cursor.after());
        let reason = match rule.failure_reason {
            Some(r) => format!(", failure_reason = {}", q.bind(r.to_owned())),
            None => String::new(),
        };
        q.push(&format!(
            "{picked}UPDATE payments SET status = {to}, {at} = {now}{reason} \
             WHERE id IN (SELECT id FROM picked) AND {recheck} RETURNING id, booking_id",
            at = rule.at_column,
            picked = ctx.dialect.picked(
                &format!(
                    "SELECT p.id FROM payments p WHERE {} AND p.id > {after} \
                     ORDER BY p.id LIMIT {limit}",
                    rule.stale(ctx.dialect, "p", &from, &cutoff)
                ),
                "p"
            ),
            recheck = rule.stale(ctx.dialect, "payments", &from, &cutoff),
        ));
        let rows = q
            .fetch_all(txn)
            .await
            .context(format!("marking stale payments {}", rule.to_status))?;
        if rows.is_empty() {
            return Ok(ChunkDone::default());
        }
        let mut payment_ids = Vec::with_capacity(rows.len());
        let mut booking_ids = Vec::with_capacity(rows.len());
        for row in &rows {
            payment_ids.push(col::<i64>(row, 0).context("reading payment ids")?);
            booking_ids.push(col::<i64>(row, 1).context("reading payment booking ids")?);
        }
        self.cursor.advance(payment_ids.iter().copied());
        booking_ids.sort_unstable();
        booking_ids.dedup();
        let released =
            cancel_pending_bookings(txn, ctx.dialect, &booking_ids, rule.booking_reason, ctx.now)
                .await
                .context("cancelling the bookings of stale payments")?;
        let tickets = release_tickets(txn, ctx.dialect, &released)
            .await
            .context("releasing tickets of stale payments")?;

        let mut mail = Sql::new(ctx.dialect);
        let text = rule.mail(
            &mut mail,
            &format!(
                "b.id IN ({})",
                id_list(released.iter().map(|r| r.booking_id))
            ),
            "b.status",
            // The e-mail goes to the booking's customer (whoever made this payment attempt).
            &format!(
                "FROM payments p LEFT JOIN bookings b ON b.id = p.booking_id \
                 LEFT JOIN events e ON e.id = b.event_id \
                 JOIN users u ON u.id = COALESCE(b.user_id, p.user_id) WHERE p.id IN ({})",
                id_list(payment_ids.iter().copied())
            ),
            ctx.tz,
        );
        mail.push(&text);
        let emails = mail
            .execute(txn)
            .await
            .context(format!("queueing {} e-mails", rule.mail_kind))?;

        Ok(ChunkDone {
            handled: payment_ids.len() as u64,
            counts: vec![
                (rule.counted_as, payment_ids.len() as u64),
                ("bookings_cancelled", released.len() as u64),
                ("tickets_released", tickets),
                ("emails_queued", emails),
            ],
            mail_queued: emails > 0,
        })
    }
}

#[async_trait::async_trait]
impl Task for StalePayments {
    fn name(&self) -> &'static str {
        self.name
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(
            ctx,
            &[
                self.counted_as,
                "bookings_cancelled",
                "tickets_released",
                "emails_queued",
            ],
        );
        let batch = ctx.batch_size(super::ONE_STATEMENT_BATCH)?;
        let mut q = Sql::new(ctx.dialect);
        let from = self.status_literal();
        let cutoff = q.bind(ctx.now - Duration::minutes(self.minutes));
        q.push(&format!(
            "SELECT COUNT(*) FROM payments p WHERE {}",
            self.stale(ctx.dialect, "p", &from, &cutoff)
        ));
        let total = count(q, ctx, "counting stale payments").await?;
        run_chunks(
            ctx,
            &StaleChunk {
                rule: self,
                batch,
                cursor: Cursor::default(),
            },
            total,
            &format!("{} payments", self.from_status),
        )
        .await?;
        ctx.info(format!(
            "Processed {} {} payments ({} → {}), cancelled {} bookings, released {} tickets",
            ctx.count(self.counted_as),
            self.from_status,
            self.from_status,
            self.to_status,
            ctx.count("bookings_cancelled"),
            ctx.count("tickets_released"),
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Failed and abandoned payments older than 30 days are deleted.
pub struct CleanupOldFailedPayments;

const FAILED_PAYMENT_RETENTION_DAYS: i64 = 30;

fn old_failed(d: Dialect, p: &str, cutoff: &str) -> String {
    format!(
        "{p}.status IN ('failed', 'abandoned') AND {}",
        d.cmp(
            &format!("COALESCE({p}.failed_at, {p}.abandoned_at, {p}.created_at)"),
            "<",
            cutoff
        )
    )
}

#[async_trait::async_trait]
impl Task for CleanupOldFailedPayments {
    fn name(&self) -> &'static str {
        "payment-cleanup/cleanup-old-failed-payments"
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["deleted"]);
        let batch = ctx.batch_size(1000)?;
        let mut q = Sql::new(ctx.dialect);
        let cutoff = q.bind(ctx.now - Duration::days(FAILED_PAYMENT_RETENTION_DAYS));
        q.push(&format!(
            "SELECT COUNT(*) FROM payments p WHERE {}",
            old_failed(ctx.dialect, "p", &cutoff)
        ));
        let total = count(q, ctx, "counting old failed payments").await?;
        run_chunks(
            ctx,
            &DeleteChunk {
                table: "payments",
                alias: "p",
                rule: old_failed,
                retention: Duration::days(FAILED_PAYMENT_RETENTION_DAYS),
                batch,
                cursor: Cursor::default(),
            },
            total,
            "old failed payments",
        )
        .await?;
        ctx.info(format!(
            "Deleted {} failed or abandoned payments older than {FAILED_PAYMENT_RETENTION_DAYS} days",
            ctx.count("deleted")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Daily report for the day that just ended (the 00:00 run reports yesterday, not the empty new
/// day): payments per status, success rate, revenue per currency.
pub struct GeneratePaymentAnalytics;

#[async_trait::async_trait]
impl Task for GeneratePaymentAnalytics {
    fn name(&self) -> &'static str {
        "payment-cleanup/generate-payment-analytics"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let day = day_offset(ctx.tz, ctx.now, -1);
        let by_status =
            aggregates::count_by(ctx, "payments", "status", "created_at", &day, "").await?;
        let total: u64 = by_status.values().filter_map(|v| v.as_u64()).sum();
        let n = |s: &str| by_status.get(s).and_then(|v| v.as_u64()).unwrap_or(0);
        // Settled attempts only: pending/processing ones have no outcome yet.
        let settled = n("success") + n("failed") + n("abandoned") + n("refunded");
        let success_rate = aggregates::ratio(n("success") + n("refunded"), settled);
        let revenue = aggregates::sum_by_currency(
            ctx,
            "payments",
            // What was kept: a partially refunded payment counts its retained part.
            "amount - refunded_amount",
            "COALESCE(paid_at, created_at)",
            &day,
            "status = 'success'",
        )
        .await?;
        let body = json!({
            "period": day.period,
            "timezone": ctx.tz.name(),
            "window": {"start": day.start, "end": day.end},
            "total": total,
            "by_status": by_status,
            "success_rate": success_rate,
            "revenue": revenue,
        });
        ctx.set("payments", total);
        ctx.set("success_rate", success_rate);
        ctx.info(format!(
            "Payment analytics for {}: {total} payments, success rate {:.1}%",
            day.period,
            success_rate * 100.0
        ));
        aggregates::report(ctx, "payment-analytics", &day.period, body).await
    }
}
