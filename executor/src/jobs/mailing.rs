//! A mailing: rows matching a rule get a flag set and one e-mail each, in the same transaction.
//! Booking confirmations, event reminders, follow-ups and re-engagement e-mails are mailings.
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::DatabaseTransaction;

use super::aggregates::count;
use super::inventory::id_list;
use super::{ChunkDone, ChunkStep, Cursor, chunk_figures, run_chunks, zero};
use crate::db::{Dialect, Sql, col};
use crate::outbox::OutboxInsert;
use crate::tasks::{DbContext, TaskContext, TaskError};

pub struct Mailing<'a> {
    pub table: &'static str,
    pub alias: &'static str,
    /// Boolean column set once the e-mail is queued, and its timestamp column.
    pub flag: &'static str,
    pub flag_at: &'static str,
    /// Joins from the table's alias to what the rule and the e-mail need.
    pub joins: &'static str,
    /// Condition on the row alone, re-checked by the UPDATE on the locked row;
    /// `{t}` stands for the alias or the table name.
    pub row_rule: &'static str,
    /// Further condition over the joined rows; binds its values into the statement.
    pub rule: &'a (dyn Fn(&mut Sql) -> String + Send + Sync),
    pub kind: &'static str,
    pub dedupe_prefix: &'static str,
    pub recipient: &'static str,
    /// SQL expression of the subject.
    pub subject: String,
    pub payload: Vec<(&'static str, String)>,
    /// Most rows one run handles.
    pub limit: Option<u64>,
    /// What the summary calls the rows handled, e.g. "reminders_sent".
    pub counted_as: &'static str,
}

impl Mailing<'_> {
    fn row_rule(&self, t: &str) -> String {
        self.row_rule.replace("{t}", t)
    }

    fn candidates(&self, q: &mut Sql) -> String {
        let a = self.alias;
        format!(
            "FROM {table} {a} {joins} WHERE {a}.{flag} = FALSE AND {row} AND {rule}",
            table = self.table,
            joins = self.joins,
            flag = self.flag,
            row = self.row_rule(a),
            rule = (self.rule)(q),
        )
    }

    /// Runs the mailing in chunks; returns how many rows were flagged.
    pub async fn run(&self, ctx: &TaskContext) -> Result<u64, TaskError> {
        zero(ctx, &[self.counted_as, "emails_queued"]);
        let mut q = Sql::new(ctx.dialect);
        let from = self.candidates(&mut q);
        q.push(&format!("SELECT COUNT(*) {from}"));
        let mut total = count(q, ctx, &format!("counting {} candidates", self.kind)).await?;
        if let Some(limit) = self.limit {
            total = total.min(limit);
        }
        let step = MailingChunk {
            mailing: self,
            batch: ctx.batch_size(super::ONE_STATEMENT_BATCH)?,
            remaining: AtomicU64::new(self.limit.unwrap_or(u64::MAX)),
            cursor: Cursor::default(),
        };
        run_chunks(ctx, &step, total, self.kind).await
    }
}

struct MailingChunk<'a> {
    mailing: &'a Mailing<'a>,
    batch: u64,
    remaining: AtomicU64,
    cursor: Cursor,
}

impl MailingChunk<'_> {
    /// The whole chunk as one statement: claim, set the flag (re-checking the row's rule on the
    /// locked row) and queue the e-mails of exactly the rows flagged, read from the UPDATE's
    /// RETURNING (their values after the change).
    async fn apply_postgres(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
        limit: u64,
    ) -> Result<ChunkDone, TaskError> {
        let m = self.mailing;
        let d = Dialect::Postgres;
        let mut q = Sql::new(d);
        let now = q.bind(ctx.now);
        let from = m.candidates(&mut q);
        let limit = super::limit_literal(limit);
        let after = q.bind(self.cursor.after());
        let mail = OutboxInsert {
            kind: m.kind,
            dedupe_key: format!("'{}:' || {}.id", m.dedupe_prefix, m.alias),
            recipient: m.recipient.to_owned(),
            subject: m.subject.clone(),
            payload: m.payload.clone(),
            from_where: format!("FROM c {} {} WHERE TRUE", m.alias, m.joins),
        }
        .text(&mut q, chrono::Utc::now(), ctx.tz);
        q.push(&format!(
            "{picked}, c AS (UPDATE {table} SET {flag} = TRUE, {flag_at} = {now} \
             WHERE id IN (SELECT id FROM picked) AND {flag} = FALSE AND {recheck} RETURNING *), \
             m AS ({mail} RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM c), (SELECT MAX(id) FROM c), (SELECT COUNT(*) FROM m)",
            picked = d.picked(
                &format!(
                    "SELECT {a}.id {from} AND {a}.id > {after} ORDER BY {a}.id LIMIT {limit}",
                    a = m.alias
                ),
                m.alias
            ),
            table = m.table,
            flag = m.flag,
            flag_at = m.flag_at,
            recheck = m.row_rule(m.table),
        ));
        let f = chunk_figures(q, txn, 3, &format!("flagging rows for {} e-mails", m.kind)).await?;
        let (flagged, last, emails) = (f[0] as u64, f[1], f[2] as u64);
        if flagged == 0 {
            return Ok(ChunkDone::default());
        }
        self.remaining.fetch_sub(flagged, Ordering::Relaxed);
        self.cursor.advance([last]);
        Ok(ChunkDone {
            handled: flagged,
            counts: vec![(m.counted_as, flagged), ("emails_queued", emails)],
            mail_queued: emails > 0,
        })
    }
}

#[async_trait::async_trait]
impl ChunkStep for MailingChunk<'_> {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let m = self.mailing;
        let limit = self.batch.min(self.remaining.load(Ordering::Relaxed));
        if limit == 0 {
            return Ok(ChunkDone::default());
        }
        if ctx.dialect == Dialect::Postgres {
            return self.apply_postgres(ctx, txn, limit).await;
        }
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let from = m.candidates(&mut q);
        let limit = super::limit_literal(limit);
        let after = q.bind(self.cursor.after());
        q.push(&format!(
            "{picked}UPDATE {table} SET {flag} = TRUE, {flag_at} = {now} \
             WHERE id IN (SELECT id FROM picked) AND {flag} = FALSE AND {recheck} RETURNING id",
            picked = ctx.dialect.picked(
                &format!(
                    "SELECT {a}.id {from} AND {a}.id > {after} ORDER BY {a}.id LIMIT {limit}",
                    a = m.alias
                ),
                m.alias
            ),
            table = m.table,
            flag = m.flag,
            flag_at = m.flag_at,
            recheck = m.row_rule(m.table),
        ));
        let ids = q
            .fetch_all(txn)
            .await
            .context(format!("flagging rows for {} e-mails", m.kind))?
            .iter()
            .map(|r| col::<i64>(r, 0))
            .collect::<Result<Vec<_>, _>>()
            .context("reading flagged ids")?;
        if ids.is_empty() {
            return Ok(ChunkDone::default());
        }
        self.remaining
            .fetch_sub(ids.len() as u64, Ordering::Relaxed);
        self.cursor.advance(ids.iter().copied());
        let mut mail = Sql::new(ctx.dialect);
        OutboxInsert {
            kind: m.kind,
            dedupe_key: format!("'{}:' || {}.id", m.dedupe_prefix, m.alias),
            recipient: m.recipient.to_owned(),
            subject: m.subject.clone(),
            payload: m.payload.clone(),
            from_where: format!(
                "FROM {} {a} {} WHERE {a}.id IN ({})",
                m.table,
                m.joins,
                id_list(ids.iter().copied()),
                a = m.alias
            ),
        }
        .push_to(&mut mail, chrono::Utc::now(), ctx.tz);
        let emails = mail
            .execute(txn)
            .await
            .context(format!("queueing {} e-mails", m.kind))?;
        Ok(ChunkDone {
            handled: ids.len() as u64,
            counts: vec![(m.counted_as, ids.len() as u64), ("emails_queued", emails)],
            mail_queued: emails > 0,
        })
    }
}
