//! The e-mail outbox: e-mails are rows written in the same transaction as the change that causes
//! them, keyed by a unique dedupe key, and delivered later by [`crate::mail::Sender`].
//!
//! A job never sends mail itself: if its transaction rolls back, no e-mail exists; if it commits,
//! the e-mail will be delivered even across crashes; and running the job twice cannot queue a
//! second e-mail because `ON CONFLICT (dedupe_key) DO NOTHING` drops the duplicate.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::Value;

use crate::db::{Dialect, Sql};

/// An `INSERT INTO email_outbox ... SELECT ... ON CONFLICT DO NOTHING` statement: one e-mail per
/// row of `from_where`. Every field is an SQL expression over that FROM clause.
pub struct OutboxInsert<'a> {
    pub kind: &'a str,
    /// E.g. `'booking-cancelled:' || b.id`.
    pub dedupe_key: String,
    /// E.g. `u.email`.
    pub recipient: String,
    pub subject: String,
    /// `(key, SQL expression)` pairs of the template's payload.
    pub payload: Vec<(&'a str, String)>,
    /// `FROM ... WHERE ...` (a WHERE is required: SQLite needs it before ON CONFLICT).
    pub from_where: String,
}

impl OutboxInsert<'_> {
    /// Appends the statement to `q`; `queued_at` is bound as created_at and next_attempt_at.
    /// The payload also names `tz`, the job's timezone, in which the e-mail shows its times.
    pub fn push_to(&self, q: &mut Sql, queued_at: DateTime<Utc>, tz: chrono_tz::Tz) {
        let text = self.text(q, queued_at, tz);
        q.push(&text);
    }

    /// The statement as text, its values bound into `q` but the text not pushed: for a
    /// data-modifying CTE (`m AS (<text> RETURNING 1)`) that queues the e-mails of a chunk in the
    /// same Postgres statement as the change causing them.
    pub fn text(&self, q: &mut Sql, queued_at: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
        let at = q.bind(queued_at);
        let kind = q.bind(self.kind.to_owned());
        let trace = q.bind(current_traceparent());
        let mut fields = self.payload.clone();
        fields.push(("timezone", q.bind(tz.name().to_owned())));
        let payload = q.dialect().json_object(&fields);
        format!(
            "INSERT INTO email_outbox (dedupe_key, kind, recipient, subject, payload, status, \
             attempts, next_attempt_at, created_at, trace_parent) \
             SELECT {dedupe}, {kind}, {recipient}, {subject}, {payload}, 'pending', 0, {at}, {at}, \
             {trace} {from_where} ON CONFLICT (dedupe_key) DO NOTHING",
            dedupe = self.dedupe_key,
            recipient = self.recipient,
            subject = self.subject,
            from_where = self.from_where,
        )
    }
}

/// The trace context of the code queueing an e-mail (the run's task span), stored with the row.
fn current_traceparent() -> Option<String> {
    ticketmax_runtime::telemetry::traceparent(&tracing::Span::current())
}

/// One e-mail whose payload was built in Rust (reports, alerts, aggregated figures).
pub struct OutboxRow {
    pub dedupe_key: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub payload: Value,
}

/// Queues `rows` with one multi-row INSERT; returns how many were new. Object payloads also
/// name `tz`, the job's timezone, in which the e-mail shows its times.
pub async fn insert_rows(
    db: &impl ConnectionTrait,
    dialect: Dialect,
    rows: &[OutboxRow],
    queued_at: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<u64, DbErr> {
    let mut queued = 0;
    // Keep each statement well under SQLite's bound-parameter limit.
    for chunk in rows.chunks(500) {
        let mut q = Sql::new(dialect);
        let at = q.bind(queued_at);
        let trace = q.bind(current_traceparent());
        let mut values = Vec::with_capacity(chunk.len());
        for row in chunk {
            let key = q.bind(row.dedupe_key.clone());
            let kind = q.bind(row.kind.clone());
            let to = q.bind(row.recipient.clone());
            let subject = q.bind(row.subject.clone());
            let mut payload = row.payload.clone();
            if let Value::Object(map) = &mut payload {
                map.insert("timezone".into(), Value::from(tz.name()));
            }
            let payload = q.bind(payload.to_string());
            values.push(format!(
                "({key}, {kind}, {to}, {subject}, {payload}, 'pending', 0, {at}, {at}, {trace})"
            ));
        }
        q.push(&format!(
            "INSERT INTO email_outbox (dedupe_key, kind, recipient, subject, payload, status, \
             attempts, next_attempt_at, created_at, trace_parent) VALUES {} \
             ON CONFLICT (dedupe_key) DO NOTHING",
            values.join(", ")
        ));
        queued += q.execute(db).await?;
    }
    Ok(queued)
}

/// One e-mail per admin address carrying a report or an alert.
pub fn to_admins(
    admins: &[String],
    kind: &str,
    key: &str,
    subject: &str,
    payload: &Value,
) -> Vec<OutboxRow> {
    admins
        .iter()
        .map(|admin| OutboxRow {
            dedupe_key: format!("{kind}:{key}:{admin}"),
            kind: kind.to_owned(),
            recipient: admin.clone(),
            subject: subject.to_owned(),
            payload: payload.clone(),
        })
        .collect()
}
