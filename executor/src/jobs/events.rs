//! event-management: the event lifecycle (live, completed, archived), reminders, analytics.
use chrono::Duration;
use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::aggregates::count;
use super::bookings::booking_payload;
use super::mailing::Mailing;
use super::window::{Window, day_offset, iso_week};
use super::{ChunkDone, ChunkStep, Cursor, aggregates, returned_ids, run_chunks, zero};
use crate::db::{Dialect, Sql, col};
use crate::tasks::{
    DbContext, Param, Task, TaskContext, TaskError, TaskOutput, TaskRegistry, params,
};

pub fn register(r: &mut TaskRegistry) {
    r.register(ArchivePastEvents);
    r.register(EventReminders::TOMORROW);
    r.register(EventReminders::EARLY_BIRD);
    r.register(UpdateEventStatuses);
    r.register(GenerateEventAnalytics);
}

/// An event without `ends_at` is over this long after it starts.
pub const DEFAULT_EVENT_HOURS: i64 = 4;
const ARCHIVE_AFTER_DAYS: i64 = 7;

/// Completed events that ended more than 7 days ago → archived. An event ended at its
/// `completed_at`, else its `ends_at`, else `DEFAULT_EVENT_HOURS` after its start (the rule of
/// update-event-statuses), so an event without an end is not archived 4 hours early.
pub struct ArchivePastEvents;

/// `cutoff` is the placeholder of `now - 7 days`, `start_cutoff` of `now - 7 days - 4 hours`.
fn archivable(d: Dialect, e: &str, cutoff: &str, start_cutoff: &str) -> String {
    format!(
        "{e}.status = 'completed' AND {e}.archived = FALSE \
         AND ({} OR ({e}.completed_at IS NULL AND {e}.ends_at IS NULL AND {}))",
        d.cmp(
            &format!("COALESCE({e}.completed_at, {e}.ends_at)"),
            "<",
            cutoff
        ),
        d.cmp(&format!("{e}.starts_at"), "<", start_cutoff),
    )
}

/// The cutoffs of [`archivable`] bound into `q`.
fn archive_cutoffs(q: &mut Sql, now: chrono::DateTime<chrono::Utc>) -> (String, String) {
    let cutoff = now - Duration::days(ARCHIVE_AFTER_DAYS);
    (
        q.bind(cutoff),
        q.bind(cutoff - Duration::hours(DEFAULT_EVENT_HOURS)),
    )
}

struct ArchiveChunk {
    batch: u64,
    cursor: Cursor,
}

#[async_trait::async_trait]
impl ChunkStep for ArchiveChunk {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let (cutoff, start_cutoff) = archive_cutoffs(&mut q, ctx.now);
        let limit = super::limit_literal(self.batch);
        let after = q.bind(self.cursor.after());
        q.push(&format!(
            "{}UPDATE events SET archived = TRUE, archived_at = {now} \
             WHERE id IN (SELECT id FROM picked) AND {} RETURNING id",
            ctx.dialect.picked(
                &format!(
                    "SELECT e.id FROM events e WHERE {} AND e.id > {after} \
                     ORDER BY e.id LIMIT {limit}",
                    archivable(ctx.dialect, "e", &cutoff, &start_cutoff)
                ),
                "e"
            ),
            archivable(ctx.dialect, "events", &cutoff, &start_cutoff)
        ));
        let ids = returned_ids(q, txn, "archiving past events").await?;
        self.cursor.advance(ids.iter().copied());
        let archived = ids.len() as u64;
        Ok(ChunkDone {
            handled: archived,
            counts: vec![("archived", archived)],
            mail_queued: false,
        })
    }
}

#[async_trait::async_trait]
impl Task for ArchivePastEvents {
    fn name(&self) -> &'static str {
        "event-management/archive-past-events"
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["archived"]);
        let mut q = Sql::new(ctx.dialect);
        let (cutoff, start_cutoff) = archive_cutoffs(&mut q, ctx.now);
        q.push(&format!(
            "SELECT COUNT(*) FROM events e WHERE {}",
            archivable(ctx.dialect, "e", &cutoff, &start_cutoff)
        ));
        let total = count(q, ctx, "counting events to archive").await?;
        run_chunks(
            ctx,
            &ArchiveChunk {
                batch: ctx.batch_size(500)?,
                cursor: Cursor::default(),
            },
            total,
            "past events",
        )
        .await?;
        ctx.info(format!("Archived {} past events", ctx.count("archived")));
        Ok(ctx.output(Vec::new()))
    }
}

/// Confirmed bookings of events starting on a given local day, not yet reminded → e-mail, flag.
pub struct EventReminders {
    name: &'static str,
    days_ahead: i64,
    flag: &'static str,
    flag_at: &'static str,
    kind: &'static str,
}

impl EventReminders {
    pub const TOMORROW: EventReminders = EventReminders {
        name: "event-management/send-event-reminders",
        days_ahead: 1,
        flag: "reminder_sent",
        flag_at: "reminder_sent_at",
        kind: "event-reminder",
    };
    pub const EARLY_BIRD: EventReminders = EventReminders {
        name: "event-management/send-early-bird-reminders",
        days_ahead: 7,
        flag: "early_reminder_sent",
        flag_at: "early_reminder_sent_at",
        kind: "early-bird-reminder",
    };
}

#[async_trait::async_trait]
impl Task for EventReminders {
    fn name(&self) -> &'static str {
        self.name
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let day = day_offset(ctx.tz, ctx.now, self.days_ahead);
        let rule = |q: &mut Sql| {
            let (s, e) = (q.bind(day.start), q.bind(day.end));
            format!(
                "{} AND e.status IN ('upcoming', 'live')",
                q.dialect().within("e.starts_at", &s, &e)
            )
        };
        let sent = Mailing {
            table: "bookings",
            alias: "b",
            flag: self.flag,
            flag_at: self.flag_at,
            joins: "JOIN users u ON u.id = b.user_id JOIN events e ON e.id = b.event_id",
            row_rule: "{t}.status = 'confirmed'",
            rule: &rule,
            kind: self.kind,
            dedupe_prefix: self.kind,
            recipient: "u.email",
            subject: format!(
                "'Reminder: ' || e.title || ' is {}'",
                if self.days_ahead == 1 {
                    "tomorrow"
                } else {
                    "in one week"
                }
            ),
            payload: booking_payload(),
            limit: None,
            counted_as: "reminders_sent",
        }
        .run(ctx)
        .await?;
        ctx.info(format!(
            "Sent {sent} reminders for events on {}",
            day.period
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// upcoming → live once started; upcoming/live → completed once over (`ends_at`, or start + 4 h
/// when no end is set). An event whose whole window passed while nobody ran this job goes
/// straight to completed.
pub struct UpdateEventStatuses;

fn over(d: Dialect, e: &str, now: &str, start_cutoff: &str) -> String {
    format!(
        "(({e}.ends_at IS NOT NULL AND {}) OR ({e}.ends_at IS NULL AND {}))",
        d.cmp(&format!("{e}.ends_at"), "<=", now),
        d.cmp(&format!("{e}.starts_at"), "<=", start_cutoff),
    )
}

#[async_trait::async_trait]
impl Task for UpdateEventStatuses {
    fn name(&self) -> &'static str {
        "event-management/update-event-statuses"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["completed", "live"]);
        // Two set-based statements, each its own transaction: finishing events first means an
        // event already over is never made live.
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let start_cutoff = q.bind(ctx.now - Duration::hours(DEFAULT_EVENT_HOURS));
        q.push(&format!(
            "UPDATE events SET status = 'completed', completed_at = {now} \
             WHERE status IN ('upcoming', 'live') AND {}",
            over(ctx.dialect, "events", &now, &start_cutoff)
        ));
        let completed = q.execute(&ctx.db).await.context("completing events")?;
        ctx.add("completed", completed);
        ctx.progress(1, 2, format!("{completed} events completed"));
        ctx.checkpoint()?;

        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let start_cutoff = q.bind(ctx.now - Duration::hours(DEFAULT_EVENT_HOURS));
        q.push(&format!(
            "UPDATE events SET status = 'live' WHERE status = 'upcoming' AND {} AND NOT {}",
            ctx.dialect.cmp("starts_at", "<=", &now),
            over(ctx.dialect, "events", &now, &start_cutoff)
        ));
        let live = q.execute(&ctx.db).await.context("starting events")?;
        ctx.add("live", live);
        ctx.progress(2, 2, format!("{live} events live"));
        ctx.info(format!(
            "Event statuses: {live} now live, {completed} completed"
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Weekly event performance for last week's bookings: tickets sold, revenue and occupancy per
/// event, plus events by status.
pub struct GenerateEventAnalytics;

async fn event_performance(
    ctx: &TaskContext,
    week: &Window,
) -> Result<Vec<serde_json::Value>, TaskError> {
    let mut q = Sql::new(ctx.dialect);
    let (s, e) = (q.bind(week.start), q.bind(week.end));
    q.push(&format!(
        "SELECT e.id, e.title, e.category, e.status, e.total_tickets, e.available_tickets, \
         e.currency, COUNT(b.id), \
         CAST(COALESCE(SUM(CASE WHEN b.status = 'confirmed' THEN b.quantity ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN b.status = 'confirmed' THEN b.total_amount ELSE 0 END), 0) AS BIGINT) \
         FROM events e JOIN bookings b ON b.event_id = e.id \
         WHERE {} \
         GROUP BY e.id, e.title, e.category, e.status, e.total_tickets, e.available_tickets, e.currency \
         ORDER BY 10 DESC, e.id LIMIT 100",
        ctx.dialect.within("b.created_at", &s, &e)
    ));
    let rows = q
        .fetch_all(&ctx.db)
        .await
        .context("measuring event performance")?;
    rows.iter()
        .map(|r| {
            let total: i64 = col(r, 4)?;
            let available: i64 = col(r, 5)?;
            Ok(json!({
                "event_id": col::<i64>(r, 0)?,
                "title": col::<String>(r, 1)?,
                "category": col::<String>(r, 2)?,
                "status": col::<String>(r, 3)?,
                "bookings": col::<i64>(r, 7)?,
                "tickets_sold": col::<i64>(r, 8)?,
                "revenue": col::<i64>(r, 9)?,
                "currency": col::<String>(r, 6)?,
                "occupancy": aggregates::ratio((total - available).max(0) as u64, total.max(0) as u64),
            }))
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()
        .context("reading event performance")
}

#[async_trait::async_trait]
impl Task for GenerateEventAnalytics {
    fn name(&self) -> &'static str {
        "event-management/generate-event-analytics"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let week = iso_week(ctx.tz, ctx.now, -1);
        let events = event_performance(ctx, &week).await?;
        let created = aggregates::count_in(ctx, "events", "created_at", &week, "TRUE").await?;
        let starting = aggregates::count_in(ctx, "events", "starts_at", &week, "TRUE").await?;
        ctx.set("events_with_bookings", events.len() as u64);
        ctx.info(format!(
            "Event analytics {}: {} events with bookings, {created} created, {starting} held",
            week.period,
            events.len()
        ));
        let body = json!({
            "period": week.period, "timezone": ctx.tz.name(),
            "window": {"start": week.start, "end": week.end},
            "events_created": created, "events_held": starting, "events": events,
        });
        aggregates::report(ctx, "event-analytics", &week.period, body).await
    }
}
