//! Ticket inventory: cancelling held bookings and giving their tickets back to the event.
//!
//! Invariant kept here: for every event, `available_tickets` plus the quantities of its pending
//! and confirmed bookings equals `total_tickets`. A booking leaves "pending" and its tickets are
//! released in the same statement sequence of one transaction, and only for bookings the UPDATE
//! itself moved (its RETURNING rows), so a booking another connection confirmed meanwhile is
//! neither cancelled nor released.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};

use crate::db::{Dialect, Sql, col};

/// A booking that one of our UPDATEs just moved out of "pending".
#[derive(Clone, Debug)]
pub struct Released {
    pub booking_id: i64,
    pub event_id: i64,
    pub quantity: i64,
}

/// Cancels those of `booking_ids` that are still pending and have no successful payment;
/// returns the ones actually cancelled.
pub async fn cancel_pending_bookings(
    db: &impl ConnectionTrait,
    dialect: Dialect,
    booking_ids: &[i64],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Released>, DbErr> {
    if booking_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Sql::new(dialect);
    let now = q.bind(now);
    let reason = q.bind(reason.to_owned());
    let ids = q.bind_list(booking_ids.iter().copied());
    q.push(&format!(
        "UPDATE bookings SET status = 'cancelled', cancelled_at = {now}, \
         cancellation_reason = {reason} \
         WHERE id IN ({ids}) AND status = 'pending' \
         AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.booking_id = bookings.id \
                         AND p.status = 'success') \
         RETURNING id, event_id, quantity"
    ));
    released_rows(q.fetch_all(db).await?)
}

pub fn released_rows(rows: Vec<sea_orm::QueryResult>) -> Result<Vec<Released>, DbErr> {
    rows.iter()
        .map(|r| {
            Ok(Released {
                booking_id: col(r, 0)?,
                event_id: col(r, 1)?,
                quantity: col(r, 2)?,
            })
        })
        .collect()
}

/// Gives the tickets of `released` back to their events with one statement; returns the number
/// of tickets released.
pub async fn release_tickets(
    db: &impl ConnectionTrait,
    dialect: Dialect,
    released: &[Released],
) -> Result<u64, DbErr> {
    let mut per_event: BTreeMap<i64, i64> = BTreeMap::new();
    for r in released {
        *per_event.entry(r.event_id).or_default() += r.quantity.max(0);
    }
    per_event.retain(|_, n| *n > 0);
    if per_event.is_empty() {
        return Ok(0);
    }
    let mut q = Sql::new(dialect);
    let mut cases = String::new();
    for (event, n) in &per_event {
        let e = q.bind(*event);
        let n = q.bind(*n);
        cases.push_str(&format!(" WHEN {e} THEN {n}"));
    }
    let ids = q.bind_list(per_event.keys().copied());
    q.push(&format!(
        "UPDATE events SET available_tickets = available_tickets + CASE id{cases} ELSE 0 END \
         WHERE id IN ({ids})"
    ));
    q.execute(db).await?;
    Ok(per_event.values().map(|n| *n as u64).sum())
}

/// Postgres: the CTE `r` that gives the tickets of the bookings the CTE `source` just moved out
/// of pending (it must return `event_id` and `quantity`) back to their events, in the same
/// statement, so only bookings the UPDATE actually moved release anything. The same per-event
/// sums as [`release_tickets`] (negative quantities release nothing).
pub fn release_cte(source: &str) -> String {
    format!(
        "r AS (UPDATE events ev SET available_tickets = ev.available_tickets + s.n \
         FROM (SELECT event_id, SUM(quantity) AS n FROM {source} WHERE quantity > 0 \
               GROUP BY event_id) s \
         WHERE ev.id = s.event_id RETURNING ev.id)"
    )
}

/// The tickets [`release_cte`] gives back, as a BIGINT sub-select (counted as
/// [`release_tickets`] counts them).
pub fn released_tickets(source: &str) -> String {
    format!("(SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM {source} WHERE quantity > 0)")
}

/// `ids` as a list of SQL-safe integer literals, for sub-statements of one chunk.
pub fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    let list: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    if list.is_empty() {
        "NULL".to_owned()
    } else {
        list.join(", ")
    }
}
