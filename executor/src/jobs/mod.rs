//! The ticketing jobs, one module per service of the original system; their rules are in
//! `docs/jobs.md`.
//!
//! Every mutating job works in chunks: one transaction per chunk, conditions re-checked inside
//! the UPDATE/DELETE itself, e-mails queued in the same transaction, a progress event after each
//! commit and a cancellation check before the next chunk.
use sea_orm::{DatabaseTransaction, TransactionTrait};

use crate::tasks::{DbContext, TaskContext, TaskError, TaskRegistry};

pub mod aggregates;
pub mod analytics;
pub mod bookings;
pub mod data_cleanup;
pub mod events;
pub mod files;
pub mod inventory;
pub mod mailing;
pub mod notifications;
pub mod payments;
pub mod window;

/// Every task this executor can run.
pub fn registry() -> TaskRegistry {
    let mut r = TaskRegistry::default();
    payments::register(&mut r);
    bookings::register(&mut r);
    events::register(&mut r);
    notifications::register(&mut r);
    data_cleanup::register(&mut r);
    analytics::register(&mut r);
    r
}

/// Keyset position of a chunked job: each chunk picks rows after the highest id the previous
/// chunks handled, so a chunk near the end of a large table costs what the first one did (an
/// `ORDER BY id LIMIT n` from the start walks past every row already handled, and past dead
/// index entries of deleted rows, making a whole run quadratic).
#[derive(Default)]
pub struct Cursor(std::sync::atomic::AtomicI64);

impl Cursor {
    pub fn after(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn advance(&self, ids: impl IntoIterator<Item = i64>) {
        if let Some(max) = ids.into_iter().max() {
            self.0.fetch_max(max, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One chunk of a retention job: delete the rows of `table` matching `rule` (given the dialect,
/// the row alias and the cutoff placeholder) whose age exceeds `retention`, re-checking the rule
/// in the DELETE.
pub struct DeleteChunk {
    pub table: &'static str,
    pub alias: &'static str,
    pub rule: fn(crate::db::Dialect, &str, &str) -> String,
    pub retention: chrono::Duration,
    pub batch: u64,
    pub cursor: Cursor,
}

#[async_trait::async_trait]
impl ChunkStep for DeleteChunk {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let (table, a) = (self.table, self.alias);
        let mut q = crate::db::Sql::new(ctx.dialect);
        let cutoff = q.bind(ctx.now - self.retention);
        let limit = limit_literal(self.batch);
        let after = q.bind(self.cursor.after());
        q.push(&format!(
            "{}DELETE FROM {table} WHERE id IN (SELECT id FROM picked) AND {} RETURNING id",
            ctx.dialect.picked(
                &format!(
                    "SELECT {a}.id FROM {table} {a} WHERE {} AND {a}.id > {after} \
                     ORDER BY {a}.id LIMIT {limit}",
                    (self.rule)(ctx.dialect, a, &cutoff)
                ),
                a
            ),
            (self.rule)(ctx.dialect, table, &cutoff),
        ));
        let ids = returned_ids(q, txn, &format!("deleting old rows of {table}")).await?;
        self.cursor.advance(ids.iter().copied());
        let deleted = ids.len() as u64;
        Ok(ChunkDone {
            handled: deleted,
            counts: vec![("deleted", deleted)],
            mail_queued: false,
        })
    }
}

/// The ids a `... RETURNING id` statement gave back.
pub async fn returned_ids(
    q: crate::db::Sql,
    txn: &DatabaseTransaction,
    what: &str,
) -> Result<Vec<i64>, TaskError> {
    use crate::tasks::DbContext as _;
    q.fetch_all(txn)
        .await
        .context(what.to_owned())?
        .iter()
        .map(|r| crate::db::col::<i64>(r, 0))
        .collect::<Result<Vec<_>, _>>()
        .context(format!("reading ids after {what}"))
}

/// A chunk's `LIMIT`, written into the statement instead of bound. sqlx keeps every statement
/// prepared, and after five executions Postgres may switch to a generic plan, made without the
/// bound values: with the limit a parameter it guesses a tenth of the claim's rows and far fewer
/// for the later CTEs (EXPLAIN of the abandoned-payment chunk: 3,597 claimed, 23 bookings
/// cancelled, where a chunk of 5,000 cancels 5,000) and plans their joins for that. At 1M
/// bookings that chunk took 0.45 s for five chunks and 2 s each from the sixth on (the job 23.5 s
/// against a floor of 7.9 s; 10.8 s against 10.9 s with the limit in the text). Written into the
/// text, the generic plan knows the claim's size. It is our own integer, never outside input.
pub fn limit_literal(n: u64) -> String {
    n.to_string()
}

/// Default chunk of the jobs whose Postgres chunk is one statement (expiry, stale payments,
/// mailings). A chunk's fixed cost (the commit's WAL flush, planning, the claim's first index
/// probe, the progress event) is paid once per chunk; measured at 1M bookings against the
/// one-statement floor: reminders (120k rows) 1.81x at 500 a chunk, 1.61x at 2,000, 1.29x at
/// 5,000; abandoned payments (100k) 1.84x, 1.30x, 1.15x. Larger chunks hold their row locks
/// longer (a 5,000-row expiry chunk takes about 0.3 s, and holds the events whose tickets it
/// releases that long), and 10,000 is the most a run may ask for.
pub const ONE_STATEMENT_BATCH: u64 = 5000;

/// Postgres: runs a chunk written as one statement (data-modifying CTEs chaining the claim, the
/// change, the ticket release and the outbox insert) whose final SELECT returns one row of
/// `n` BIGINT figures; a NULL figure (`MAX(id)` of nothing) reads as 0. One round trip per
/// chunk: nothing comes back to Rust but these figures, so a chunk's memory stays in Postgres.
pub async fn chunk_figures(
    q: crate::db::Sql,
    txn: &DatabaseTransaction,
    n: usize,
    what: &str,
) -> Result<Vec<i64>, TaskError> {
    use crate::tasks::DbContext as _;
    let row = q
        .fetch_one(txn)
        .await
        .context(what.to_owned())?
        .ok_or_else(|| sea_orm::DbErr::RecordNotFound(format!("the figures of {what}")))
        .context(what.to_owned())?;
    (0..n)
        .map(|i| crate::db::col::<Option<i64>>(&row, i).map(Option::unwrap_or_default))
        .collect::<Result<Vec<_>, _>>()
        .context(format!("reading the figures of {what}"))
}

/// What one chunk did: rows handled (0 ends the loop) and the counts to add to the summary.
#[derive(Default)]
pub struct ChunkDone {
    pub handled: u64,
    pub counts: Vec<(&'static str, u64)>,
    pub mail_queued: bool,
}

/// One chunk of a job, applied inside the transaction it is given.
#[async_trait::async_trait]
pub trait ChunkStep: Send + Sync {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError>;
}

/// Applies `step` chunk after chunk, each in its own transaction, until a chunk handles nothing.
/// Counts reach the summary only once their chunk has committed.
pub async fn run_chunks(
    ctx: &TaskContext,
    step: &dyn ChunkStep,
    total: u64,
    what: &str,
) -> Result<u64, TaskError> {
    let mut done = 0;
    let pause = ctx.chunk_pause()?;
    ctx.progress(0, total, format!("{what}: 0/{total}"));
    loop {
        if let Some(pause) = pause
            && done > 0
        {
            ctx.pause(pause).await;
        }
        ctx.checkpoint()?;
        let txn = ctx.db.begin().await.context("starting a transaction")?;
        let chunk = step.apply(ctx, &txn).await?;
        txn.commit()
            .await
            .context(format!("committing a chunk of {what}"))?;
        if chunk.handled == 0 {
            break;
        }
        for (key, n) in &chunk.counts {
            ctx.add(key, *n);
        }
        if chunk.mail_queued {
            ctx.mail_queued();
        }
        done += chunk.handled;
        ctx.progress(
            done,
            total.max(done),
            format!("{what}: {done}/{}", total.max(done)),
        );
    }
    Ok(done)
}

/// Initialises summary keys to 0 so an idle run still reports every count.
pub fn zero(ctx: &TaskContext, keys: &[&str]) {
    for key in keys {
        ctx.add(key, 0);
    }
}
