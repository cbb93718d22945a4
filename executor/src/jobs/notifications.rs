//! notifications: customer engagement e-mails (newsletter, promotions, birthdays, follow-ups,
//! re-engagement) and the monthly organizer figures.
//!
//! Campaigns without a flag column (newsletter, promotions, birthdays) rely on the outbox's
//! dedupe key alone: `newsletter:<user>:<week>`, `promotion:<user>:<event>`,
//! `birthday:<user>:<year>`; a second run inserts nothing.
//!
//! Consent: marketing mail (birthday offers, win-back offers, promotions) goes only to verified
//! addresses whose `promotional_emails` is true, the newsletter only to verified addresses whose
//! `newsletter_subscribed` is true; the condition is checked again by the statement that queues
//! the e-mail. Each of these e-mails names its `unsubscribe_list` and `user_id`, from which the
//! sender builds the signed one-click unsubscribe link and headers (`mail::unsubscribe`); the
//! jobs refuse to run without TICKETMAX_UNSUBSCRIBE_SECRET.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{Datelike, Duration, NaiveDate};
use sea_orm::DatabaseTransaction;
use serde_json::{Map, Value, json};

use super::aggregates::count;
use super::bookings::booking_payload;
use super::events::DEFAULT_EVENT_HOURS;
use super::inventory::id_list;
use super::mailing::Mailing;
use super::window::{day_offset, iso_week, local_date, month};
use super::{ChunkDone, ChunkStep, aggregates, run_chunks, zero};
use crate::db::{Sql, col};
use crate::outbox::{self, OutboxInsert, OutboxRow};
use crate::tasks::{
    DbContext, Param, Task, TaskContext, TaskError, TaskOutput, TaskRegistry, params,
};

pub fn register(r: &mut TaskRegistry) {
    r.register(SendWeeklyNewsletter);
    r.register(SendPromotionalNotifications);
    r.register(SendBirthdayWishes);
    r.register(SendEventFollowUps);
    r.register(SendReEngagementEmails);
    r.register(SendOrganizerAnalytics);
}

/// Consent of the newsletter, over users `u`.
const NEWSLETTER_CONSENT: &str = "u.email_verified = TRUE AND u.newsletter_subscribed = TRUE";
/// Consent of marketing mail (birthday, win-back and promotion offers), over users `u`.
const MARKETING_CONSENT: &str = "u.email_verified = TRUE AND u.promotional_emails = TRUE";

/// Payload fields from which the sender builds the unsubscribe link of `list`.
fn unsubscribe_fields(list: &str) -> [(&'static str, String); 2] {
    [
        ("user_id", "u.id".into()),
        ("unsubscribe_list", format!("'{list}'")),
    ]
}

/// An e-mail to each user matching a rule, walked in id order (keyset chunks).
struct UserCampaign<'a> {
    /// Condition over `u` (users); binds its values into the statement.
    rule: &'a (dyn Fn(&mut Sql) -> String + Send + Sync),
    /// The outbox insert for the users whose ids are in `ids` (an SQL list).
    mail: &'a (dyn Fn(&mut Sql, &str) -> OutboxInsert<'static> + Send + Sync),
    batch: u64,
    last_id: AtomicI64,
}

#[async_trait::async_trait]
impl ChunkStep for UserCampaign<'_> {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let mut q = Sql::new(ctx.dialect);
        let after = q.bind(self.last_id.load(Ordering::Relaxed));
        let limit = super::limit_literal(self.batch);
        let rule = (self.rule)(&mut q);
        q.push(&format!(
            "SELECT u.id FROM users u WHERE u.id > {after} AND {rule} ORDER BY u.id LIMIT {limit}"
        ));
        let ids = q
            .fetch_all(txn)
            .await
            .context("selecting recipients")?
            .iter()
            .map(|r| col::<i64>(r, 0))
            .collect::<Result<Vec<_>, _>>()
            .context("reading recipient ids")?;
        let Some(last) = ids.last() else {
            return Ok(ChunkDone::default());
        };
        self.last_id.store(*last, Ordering::Relaxed);
        let mut mail = Sql::new(ctx.dialect);
        let insert = (self.mail)(&mut mail, &id_list(ids.iter().copied()));
        insert.push_to(&mut mail, chrono::Utc::now(), ctx.tz);
        let emails = mail
            .execute(txn)
            .await
            .context("queueing campaign e-mails")?;
        Ok(ChunkDone {
            handled: ids.len() as u64,
            counts: vec![("recipients", ids.len() as u64), ("emails_queued", emails)],
            mail_queued: emails > 0,
        })
    }
}

async fn run_campaign(
    ctx: &TaskContext,
    what: &str,
    rule: &(dyn Fn(&mut Sql) -> String + Send + Sync),
    mail: &(dyn Fn(&mut Sql, &str) -> OutboxInsert<'static> + Send + Sync),
) -> Result<(), TaskError> {
    zero(ctx, &["recipients", "emails_queued"]);
    let mut q = Sql::new(ctx.dialect);
    let text = rule(&mut q);
    q.push(&format!("SELECT COUNT(*) FROM users u WHERE {text}"));
    let total = count(q, ctx, &format!("counting {what} recipients")).await?;
    let step = UserCampaign {
        rule,
        mail,
        batch: ctx.batch_size(500)?,
        last_id: AtomicI64::new(i64::MIN),
    };
    run_chunks(ctx, &step, total, what).await?;
    Ok(())
}

/// Verified, subscribed users with a booking in the last 30 days get the 5 soonest upcoming
/// events and an unsubscribe link.
pub struct SendWeeklyNewsletter;

#[async_trait::async_trait]
impl Task for SendWeeklyNewsletter {
    fn name(&self) -> &'static str {
        "notifications/send-weekly-newsletter"
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        ctx.settings.require_unsubscribe()?;
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        q.push(&format!(
            "SELECT id, title, venue, starts_at, price, currency, category FROM events \
             WHERE status = 'upcoming' AND archived = FALSE AND {} \
             ORDER BY {}, id LIMIT 5",
            ctx.dialect.cmp("starts_at", ">", &now),
            ctx.dialect.ts("starts_at"),
        ));
        let rows = q
            .fetch_all(&ctx.db)
            .await
            .context("selecting upcoming events")?;
        let events = rows
            .iter()
            .map(|r| {
                Ok(json!({
                    "id": col::<i64>(r, 0)?,
                    "title": col::<String>(r, 1)?,
                    "venue": col::<String>(r, 2)?,
                    "starts_at": col::<chrono::DateTime<chrono::Utc>>(r, 3)?,
                    "price": col::<i64>(r, 4)?,
                    "currency": col::<String>(r, 5)?,
                    "category": col::<String>(r, 6)?,
                }))
            })
            .collect::<Result<Vec<_>, sea_orm::DbErr>>()
            .context("reading upcoming events")?;
        ctx.set("events_featured", events.len() as u64);
        if events.is_empty() {
            zero(ctx, &["recipients", "emails_queued"]);
            ctx.info("No upcoming events: newsletter not sent");
            return Ok(ctx.output(Vec::new()));
        }
        let events_json = Value::Array(events).to_string();
        let week = iso_week(ctx.tz, ctx.now, 0).period;
        let active_since = ctx.now - Duration::days(30);
        let rule = move |q: &mut Sql| {
            let since = q.bind(active_since);
            format!(
                "{NEWSLETTER_CONSENT} AND EXISTS (SELECT 1 FROM bookings b \
                 WHERE b.user_id = u.id AND {})",
                q.dialect().cmp("b.created_at", ">=", &since)
            )
        };
        let mail = |q: &mut Sql, ids: &str| {
            let events = q.dialect().json_value(&q.bind(events_json.clone()));
            let key = q.bind(format!(":{week}"));
            let mut payload = vec![("first_name", "u.first_name".into()), ("events", events)];
            payload.extend(unsubscribe_fields("newsletter"));
            OutboxInsert {
                kind: "newsletter",
                dedupe_key: format!("'newsletter:' || u.id || {key}"),
                recipient: "u.email".into(),
                subject: "'This week on TicketMax'".into(),
                payload,
                from_where: format!("FROM users u WHERE u.id IN ({ids}) AND {NEWSLETTER_CONSENT}"),
            }
        };
        run_campaign(ctx, "newsletter", &rule, &mail).await?;
        ctx.info(format!(
            "Queued {} newsletters for {week}",
            ctx.count("emails_queued")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Events in the next 7 days that sold under 30 %: up to 100 opted-in users each who have not
/// booked the event and were never sent this promotion.
pub struct SendPromotionalNotifications;

const PROMOTION_RECIPIENTS_PER_EVENT: i64 = 100;

#[async_trait::async_trait]
impl Task for SendPromotionalNotifications {
    fn name(&self) -> &'static str {
        "notifications/send-promotional-notifications"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        ctx.settings.require_unsubscribe()?;
        zero(ctx, &["events", "emails_queued"]);
        let mut q = Sql::new(ctx.dialect);
        let (now, until) = (q.bind(ctx.now), q.bind(ctx.now + Duration::days(7)));
        q.push(&format!(
            "SELECT id FROM events WHERE status = 'upcoming' AND archived = FALSE \
             AND {} AND {} AND total_tickets > 0 \
             AND (total_tickets - available_tickets) * 10 < total_tickets * 3 ORDER BY id",
            ctx.dialect.cmp("starts_at", ">", &now),
            ctx.dialect.cmp("starts_at", "<=", &until),
        ));
        let events = q
            .fetch_all(&ctx.db)
            .await
            .context("selecting events to promote")?
            .iter()
            .map(|r| col::<i64>(r, 0))
            .collect::<Result<Vec<_>, _>>()
            .context("reading event ids")?;
        let total = events.len() as u64;
        for (i, event) in events.iter().enumerate() {
            ctx.checkpoint()?;
            let mut q = Sql::new(ctx.dialect);
            let event = q.bind(*event);
            let limit = q.bind(PROMOTION_RECIPIENTS_PER_EVENT);
            let dedupe = "'promotion:' || u.id || ':' || e.id".to_owned();
            let mut payload = vec![
                ("first_name", "u.first_name".into()),
                ("event_id", "e.id".into()),
                ("event_title", "e.title".into()),
                ("venue", "e.venue".into()),
                ("starts_at", "e.starts_at".into()),
                ("price", "e.price".into()),
                ("currency", "e.currency".into()),
                ("available_tickets", "e.available_tickets".into()),
            ];
            payload.extend(unsubscribe_fields("marketing"));
            OutboxInsert {
                kind: "promotion",
                dedupe_key: dedupe.clone(),
                recipient: "u.email".into(),
                subject: "'Still available: ' || e.title".into(),
                payload,
                from_where: format!(
                    "FROM users u, events e WHERE e.id = {event} AND {MARKETING_CONSENT} \
                     AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.user_id = u.id \
                                     AND b.event_id = e.id) \
                     AND NOT EXISTS (SELECT 1 FROM email_outbox o WHERE o.dedupe_key = {dedupe}) \
                     ORDER BY u.id LIMIT {limit}"
                ),
            }
            .push_to(&mut q, chrono::Utc::now(), ctx.tz);
            let queued = q.execute(&ctx.db).await.context("queueing promotions")?;
            ctx.add("events", 1);
            ctx.add("emails_queued", queued);
            if queued > 0 {
                ctx.mail_queued();
            }
            ctx.progress(i as u64 + 1, total, format!("event {} promoted", i + 1));
        }
        ctx.info(format!(
            "Queued {} promotions for {total} under-sold events",
            ctx.count("emails_queued")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// The `MM-DD` birthdays celebrated on `date`: 29 February birthdays are celebrated on
/// 28 February in non-leap years.
pub fn birthdays_on(date: NaiveDate) -> Vec<String> {
    let mut days = vec![date.format("%m-%d").to_string()];
    let leap = NaiveDate::from_ymd_opt(date.year(), 2, 29).is_some();
    if date.month() == 2 && date.day() == 28 && !leap {
        days.push("02-29".to_owned());
    }
    days
}

/// Verified users whose birthday is today get an offer code, once a year.
pub struct SendBirthdayWishes;

#[async_trait::async_trait]
impl Task for SendBirthdayWishes {
    fn name(&self) -> &'static str {
        "notifications/send-birthday-wishes"
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        ctx.settings.require_unsubscribe()?;
        let today = local_date(ctx.tz, ctx.now);
        let days = birthdays_on(today);
        let year = today.year();
        let month_day = ctx.dialect.month_day("u.date_of_birth");
        let rule = |q: &mut Sql| {
            format!(
                "{MARKETING_CONSENT} AND u.date_of_birth IS NOT NULL AND {month_day} IN ({})",
                q.bind_list(days.iter().cloned())
            )
        };
        let mail = |q: &mut Sql, ids: &str| {
            let suffix = q.bind(format!(":{year}"));
            let code = q.bind(format!("BDAY{year}-"));
            let mut payload = vec![
                ("first_name", "u.first_name".into()),
                ("offer_code", format!("{code} || u.id")),
            ];
            payload.extend(unsubscribe_fields("marketing"));
            OutboxInsert {
                kind: "birthday",
                dedupe_key: format!("'birthday:' || u.id || {suffix}"),
                recipient: "u.email".into(),
                subject: "'Happy birthday from TicketMax!'".into(),
                payload,
                from_where: format!("FROM users u WHERE u.id IN ({ids}) AND {MARKETING_CONSENT}"),
            }
        };
        run_campaign(ctx, "birthday wishes", &rule, &mail).await?;
        ctx.info(format!(
            "Queued {} birthday wishes for {today}",
            ctx.count("emails_queued")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Confirmed bookings of events that ended yesterday get a feedback request, once.
pub struct SendEventFollowUps;

#[async_trait::async_trait]
impl Task for SendEventFollowUps {
    fn name(&self) -> &'static str {
        "notifications/send-event-follow-ups"
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let day = day_offset(ctx.tz, ctx.now, -1);
        let hours = Duration::hours(DEFAULT_EVENT_HOURS);
        let rule = |q: &mut Sql| {
            let (s, e) = (q.bind(day.start), q.bind(day.end));
            let (ss, se) = (q.bind(day.start - hours), q.bind(day.end - hours));
            let d = q.dialect();
            format!(
                "e.status <> 'cancelled' AND ((e.ends_at IS NOT NULL AND {}) \
                 OR (e.ends_at IS NULL AND {}))",
                d.within("e.ends_at", &s, &e),
                d.within("e.starts_at", &ss, &se),
            )
        };
        let sent = Mailing {
            table: "bookings",
            alias: "b",
            flag: "follow_up_sent",
            flag_at: "follow_up_sent_at",
            joins: "JOIN users u ON u.id = b.user_id JOIN events e ON e.id = b.event_id",
            row_rule: "{t}.status = 'confirmed'",
            rule: &rule,
            kind: "event-follow-up",
            dedupe_prefix: "event-follow-up",
            recipient: "u.email",
            subject: "'How was ' || e.title || '?'".into(),
            payload: booking_payload(),
            limit: None,
            counted_as: "follow_ups_sent",
        }
        .run(ctx)
        .await?;
        ctx.info(format!(
            "Sent {sent} follow-ups for events of {}",
            day.period
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Users who agreed to marketing mail (verified address, `promotional_emails`), whose account
/// is older than the inactivity window and who made no booking inside it (or never), not yet
/// sent: a win-back offer, once. A user who signed up yesterday is not "inactive for 90 days".
pub struct SendReEngagementEmails;

const INACTIVE_DAYS: i64 = 90;

/// Chunked, plus `limit`: the most offers one run sends (else TICKETMAX_REENGAGEMENT_BATCH_LIMIT).
const RE_ENGAGEMENT_PARAMS: &[Param] = &[
    params::AS_OF,
    params::BATCH_SIZE,
    params::PAUSE_MS,
    Param::integer("limit", "most offers one run sends", 0, 1_000_000),
];

#[async_trait::async_trait]
impl Task for SendReEngagementEmails {
    fn name(&self) -> &'static str {
        "notifications/send-re-engagement-emails"
    }

    fn params(&self) -> &'static [Param] {
        RE_ENGAGEMENT_PARAMS
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        ctx.settings.require_unsubscribe()?;
        let limit = ctx
            .param_u64("limit")?
            .unwrap_or(ctx.settings.reengagement_batch_limit);
        let cutoff = ctx.now - Duration::days(INACTIVE_DAYS);
        let rule = |q: &mut Sql| {
            let cutoff = q.bind(cutoff);
            let d = q.dialect();
            format!(
                "{} AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.user_id = u.id AND {})",
                d.cmp("u.created_at", "<", &cutoff),
                d.cmp("b.created_at", ">=", &cutoff)
            )
        };
        let mut payload = vec![
            ("first_name", "u.first_name".into()),
            ("offer_code", "'COMEBACK-' || u.id".into()),
        ];
        payload.extend(unsubscribe_fields("marketing"));
        let sent = Mailing {
            table: "users",
            alias: "u",
            flag: "reengagement_sent",
            flag_at: "reengagement_sent_at",
            joins: "",
            // Consent is re-checked by the UPDATE on the locked row.
            row_rule: "{t}.email_verified = TRUE AND {t}.promotional_emails = TRUE",
            rule: &rule,
            kind: "re-engagement",
            dedupe_prefix: "re-engagement",
            recipient: "u.email",
            subject: "'We miss you at TicketMax'".into(),
            payload,
            limit: Some(limit),
            counted_as: "reengagement_sent",
        }
        .run(ctx)
        .await?;
        ctx.info(format!("Sent {sent} re-engagement e-mails (limit {limit})"));
        Ok(ctx.output(Vec::new()))
    }
}

/// Each organizer (any user owning events, whatever their role) gets last month's figures:
/// events held, bookings, tickets sold, revenue per currency.
pub struct SendOrganizerAnalytics;

#[async_trait::async_trait]
impl Task for SendOrganizerAnalytics {
    fn name(&self) -> &'static str {
        "notifications/send-organizer-analytics"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let last = month(ctx.tz, ctx.now, -1);
        let mut q = Sql::new(ctx.dialect);
        let (s, e) = (q.bind(last.start), q.bind(last.end));
        q.push(&format!(
            "SELECT e.organizer_id, u.email, u.first_name, e.currency, COUNT(DISTINCT e.id), \
             COUNT(b.id), CAST(COALESCE(SUM(b.quantity), 0) AS BIGINT), \
             CAST(COALESCE(SUM(b.total_amount), 0) AS BIGINT) \
             FROM events e JOIN users u ON u.id = e.organizer_id \
             LEFT JOIN bookings b ON b.event_id = e.id AND b.status = 'confirmed' \
             WHERE {} AND e.status <> 'cancelled' \
             GROUP BY e.organizer_id, u.email, u.first_name, e.currency ORDER BY 1, 4",
            ctx.dialect.within("e.starts_at", &s, &e)
        ));
        let rows = q
            .fetch_all(&ctx.db)
            .await
            .context("aggregating organizer figures")?;
        #[derive(Default)]
        struct Figures {
            email: String,
            first_name: String,
            events: i64,
            bookings: i64,
            tickets: i64,
            revenue: Map<String, Value>,
        }
        let mut organizers: BTreeMap<i64, Figures> = BTreeMap::new();
        for r in &rows {
            let mut read = || -> Result<(), sea_orm::DbErr> {
                let f = organizers.entry(col(r, 0)?).or_default();
                f.email = col(r, 1)?;
                f.first_name = col(r, 2)?;
                f.events += col::<i64>(r, 4)?;
                f.bookings += col::<i64>(r, 5)?;
                f.tickets += col::<i64>(r, 6)?;
                f.revenue.insert(col(r, 3)?, json!(col::<i64>(r, 7)?));
                Ok(())
            };
            read().context("reading organizer figures")?;
        }
        let mut mails = Vec::with_capacity(organizers.len());
        let mut report = Vec::with_capacity(organizers.len());
        for (id, f) in &organizers {
            let payload = json!({
                "organizer_id": id, "first_name": f.first_name, "period": last.period,
                "events": f.events, "bookings": f.bookings, "tickets_sold": f.tickets,
                "revenue": f.revenue,
            });
            report.push(payload.clone());
            mails.push(OutboxRow {
                dedupe_key: format!("organizer-analytics:{id}:{}", last.period),
                kind: "organizer-analytics".into(),
                recipient: f.email.clone(),
                subject: format!("Your TicketMax results for {}", last.period),
                payload,
            });
        }
        let queued = outbox::insert_rows(&ctx.db, ctx.dialect, &mails, chrono::Utc::now(), ctx.tz)
            .await
            .context("queueing organizer reports")?;
        ctx.set("organizers", organizers.len() as u64);
        ctx.add("emails_queued", queued);
        if queued > 0 {
            ctx.mail_queued();
        }
        ctx.info(format!(
            "Sent analytics for {} to {} organizers",
            last.period,
            organizers.len()
        ));
        let body = json!({"period": last.period, "organizers": report});
        aggregates::report(ctx, "organizer-analytics", &last.period, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leap_day_birthdays_move_to_the_28th() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("date");
        assert_eq!(birthdays_on(d(2027, 2, 28)), vec!["02-28", "02-29"]);
        assert_eq!(birthdays_on(d(2028, 2, 28)), vec!["02-28"]);
        assert_eq!(birthdays_on(d(2028, 2, 29)), vec!["02-29"]);
        assert_eq!(birthdays_on(d(2026, 11, 28)), vec!["11-28"]);
    }
}
