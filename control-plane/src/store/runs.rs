//! Runs as rows: creating them in batches (with their first event, in the same transaction),
//! reading and listing them, the tick ledger the sweeper checks, cancel requests, and deleting
//! old history. State changes after creation live in `store/lifecycle.rs`.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait, Value,
};
use serde_json::json;

use super::{Col, Context, Result, Store, json_param, json_time, model, run, truncate};
use crate::lifecycle::{EventPayload, RunState, Trigger};

/// A run to insert, complete, with the event it starts with (sequence number 1).
#[derive(Debug, Clone)]
pub struct NewRunRow {
    pub run: run::Model,
    pub event: EventPayload,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job: Option<String>,
    pub state: Option<RunState>,
    pub trigger: Option<Trigger>,
    /// Keyset page: runs older than this id (ids are UUIDv7, ordered by creation).
    pub before_id: Option<String>,
    /// Created at or after / before these times (turned into id bounds, so the primary key
    /// serves the range).
    pub created_since: Option<DateTime<Utc>>,
    pub created_until: Option<DateTime<Utc>>,
    pub limit: u64,
    /// Oldest first (a bulk cancel works through a backlog from its start); newest otherwise.
    pub oldest_first: bool,
}

/// The smallest UUIDv7 text a run created at `t` can have: ids compare as text in creation order.
pub fn id_floor(t: DateTime<Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    format!(
        "{:08x}-{:04x}-7000-8000-000000000000",
        ms >> 16,
        ms & 0xffff
    )
}

const RUN_COLUMNS: [(&str, Col); 26] = [
    ("id", Col::Text),
    ("job", Col::Text),
    ("state", Col::Text),
    ("trigger", Col::Text),
    ("scheduled_for", Col::Time),
    ("tick_at", Col::Time),
    ("idempotency_key", Col::Text),
    ("active_slot", Col::Int),
    ("attempt", Col::Int),
    ("executor_id", Col::Text),
    ("owner", Col::Text),
    ("lease_expires_at", Col::Time),
    ("not_before", Col::Time),
    ("deadline_at", Col::Time),
    ("cancel_requested", Col::Bool),
    ("params", Col::Text),
    ("summary", Col::Text),
    ("error", Col::Text),
    ("reason", Col::Text),
    ("triggered_by", Col::Text),
    ("trace_parent", Col::Text),
    ("created_at", Col::Time),
    ("started_at", Col::Time),
    ("finished_at", Col::Time),
    ("updated_at", Col::Time),
    ("last_seq", Col::Big),
];

pub(super) const EVENT_COLUMNS: [(&str, Col); 5] = [
    ("run_id", Col::Text),
    ("seq", Col::Big),
    ("at", Col::Time),
    ("kind", Col::Text),
    ("payload", Col::Text),
];

fn run_json(r: &run::Model) -> serde_json::Value {
    let t = |v: Option<DateTime<Utc>>| v.map(json_time);
    json!({
        "id": r.id,
        "job": r.job,
        "state": r.state.as_str(),
        "trigger": match r.trigger { Trigger::Schedule => "schedule", Trigger::Manual => "manual" },
        "scheduled_for": json_time(r.scheduled_for),
        "tick_at": t(r.tick_at),
        "idempotency_key": r.idempotency_key,
        "active_slot": r.active_slot,
        "attempt": r.attempt,
        "executor_id": r.executor_id,
        "owner": r.owner,
        "lease_expires_at": t(r.lease_expires_at),
        "not_before": json_time(r.not_before),
        "deadline_at": t(r.deadline_at),
        "cancel_requested": r.cancel_requested,
        "params": r.params,
        "summary": r.summary,
        "error": r.error,
        "reason": r.reason,
        "triggered_by": r.triggered_by,
        "trace_parent": r.trace_parent,
        "created_at": json_time(r.created_at),
        "started_at": t(r.started_at),
        "finished_at": t(r.finished_at),
        "updated_at": json_time(r.updated_at),
        "last_seq": r.last_seq,
    })
}

pub(super) fn event_json(
    run_id: &str,
    seq: i64,
    at: DateTime<Utc>,
    e: &EventPayload,
) -> serde_json::Value {
    json!({
        "run_id": run_id,
        "seq": seq,
        "at": json_time(at),
        "kind": e.kind(),
        "payload": e.to_json(),
    })
}

impl Store {
    /// Inserts runs with their first event in one transaction. A row that conflicts with a
    /// unique index (its tick is already recorded, its idempotency key used, its overlap slot
    /// taken) is left out; the ids of the rows inserted are returned.
    pub async fn insert_runs(&self, rows: &[NewRunRow]) -> Result<HashSet<String>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let txn = self.db.begin().await.ctx("beginning a transaction")?;
        let cols: Vec<&str> = RUN_COLUMNS.iter().map(|(c, _)| *c).collect();
        let cols = cols.join(", ");
        let sql = format!(
            "INSERT INTO runs ({cols}) SELECT {cols} FROM {} WHERE true \
             ON CONFLICT DO NOTHING RETURNING id",
            self.rows_from_json(1, "v", &RUN_COLUMNS)
        );
        let json_rows: Vec<_> = rows.iter().map(|r| run_json(&r.run)).collect();
        let inserted: HashSet<String> = txn
            .query_all_raw(self.stmt(&sql, vec![json_param(&json_rows)]))
            .await
            .ctx("inserting runs")?
            .iter()
            .filter_map(|row| row.try_get::<String>("", "id").ok())
            .collect();
        let events: Vec<_> = rows
            .iter()
            .filter(|r| inserted.contains(&r.run.id))
            .map(|r| event_json(&r.run.id, 1, r.run.created_at, &r.event))
            .collect();
        self.insert_events(&txn, &events).await?;
        txn.commit().await.ctx("committing new runs")?;
        Ok(inserted)
    }

    /// Plain insert of event rows (numbers already decided), skipping any that exist.
    pub(super) async fn insert_events(
        &self,
        db: &impl ConnectionTrait,
        events: &[serde_json::Value],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO run_events (run_id, seq, at, kind, payload) \
             SELECT run_id, seq, at, kind, payload FROM {} WHERE true ON CONFLICT DO NOTHING",
            self.rows_from_json(1, "v", &EVENT_COLUMNS)
        );
        db.execute_raw(self.stmt(&sql, vec![json_param(events)]))
            .await
            .ctx("appending events")?;
        Ok(())
    }

    /// The run a conflicting insert collided with on its tick or its idempotency key.
    pub async fn run_for_tick_or_key(
        &self,
        job: &str,
        tick_at: Option<DateTime<Utc>>,
        key: Option<&str>,
    ) -> Result<Option<run::Model>> {
        if let Some(tick) = tick_at {
            let found = run::Entity::find()
                .filter(run::Column::Job.eq(job))
                .filter(run::Column::TickAt.eq(truncate(tick)))
                .one(&self.db)
                .await
                .ctx("finding a tick")?;
            if found.is_some() {
                return Ok(found);
            }
        }
        if let Some(key) = key {
            return run::Entity::find()
                .filter(run::Column::Job.eq(job))
                .filter(run::Column::IdempotencyKey.eq(key))
                .one(&self.db)
                .await
                .ctx("finding an idempotency key");
        }
        Ok(None)
    }

    /// The oldest queued or running run of a job (what a skipped run is waiting behind).
    pub async fn active_run_of(&self, job: &str) -> Result<Option<run::Model>> {
        run::Entity::find()
            .filter(run::Column::Job.eq(job))
            .filter(run::Column::State.is_in(RunState::ACTIVE))
            .order_by_asc(run::Column::Id)
            .one(&self.db)
            .await
            .ctx("finding the active run")
    }

    pub async fn run(&self, id: &str) -> Result<Option<run::Model>> {
        run::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .ctx("reading a run")
    }

    /// Newest first, keyset-paged by id.
    pub async fn runs(&self, f: RunFilter) -> Result<Vec<run::Model>> {
        let order = if f.oldest_first {
            Order::Asc
        } else {
            Order::Desc
        };
        let mut q = run::Entity::find().order_by(run::Column::Id, order);
        if let Some(j) = &f.job {
            q = q.filter(run::Column::Job.eq(j));
        }
        if let Some(s) = f.state {
            q = q.filter(run::Column::State.eq(s));
        }
        if let Some(t) = f.trigger {
            q = q.filter(run::Column::Trigger.eq(t));
        }
        if let Some(b) = &f.before_id {
            q = q.filter(run::Column::Id.lt(b));
        }
        if let Some(t) = f.created_since {
            q = q.filter(run::Column::Id.gte(id_floor(t)));
        }
        if let Some(t) = f.created_until {
            q = q.filter(run::Column::Id.lt(id_floor(t)));
        }
        q.limit(f.limit).all(&self.db).await.ctx("listing runs")
    }

    /// The newest run of every job: one index probe per job.
    pub async fn last_runs(&self) -> Result<HashMap<String, run::Model>> {
        let rows = self
            .db
            .query_all_raw(self.stmt(
                "SELECT * FROM runs WHERE id IN (SELECT (SELECT r.id FROM runs r \
                 WHERE r.job = j.name ORDER BY r.id DESC LIMIT 1) FROM jobs j)",
                vec![],
            ))
            .await
            .ctx("reading the newest runs")?;
        rows.iter()
            .map(|row| model::<run::Model>(row, "run").map(|r| (r.job.clone(), r)))
            .collect()
    }

    /// (job, state, count) over all runs, for metrics.
    pub async fn run_counts(&self) -> Result<Vec<(String, RunState, i64)>> {
        run::Entity::find()
            .select_only()
            .column(run::Column::Job)
            .column(run::Column::State)
            .column_as(run::Column::Id.count(), "n")
            .group_by(run::Column::Job)
            .group_by(run::Column::State)
            .into_tuple::<(String, RunState, i64)>()
            .all(&self.db)
            .await
            .ctx("counting runs by job and state")
    }

    /// Queued and running runs, in one query.
    pub async fn active_counts(&self) -> Result<(u64, u64)> {
        let counts = run::Entity::find()
            .select_only()
            .column(run::Column::State)
            .column_as(run::Column::Id.count(), "n")
            .filter(run::Column::State.is_in(RunState::ACTIVE))
            .group_by(run::Column::State)
            .into_tuple::<(RunState, i64)>()
            .all(&self.db)
            .await
            .ctx("counting active runs")?;
        let get = |s: RunState| {
            counts
                .iter()
                .find(|(st, _)| *st == s)
                .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0))
        };
        Ok((get(RunState::Queued), get(RunState::Running)))
    }

    /// The newest recorded tick of every job, in one statement (an index probe per job).
    pub async fn last_ticks(&self) -> Result<HashMap<String, DateTime<Utc>>> {
        let rows = self
            .db
            .query_all_raw(self.stmt(
                "SELECT j.name AS job, (SELECT MAX(r.tick_at) FROM runs r WHERE r.job = j.name) \
                 AS tick_at FROM jobs j",
                vec![],
            ))
            .await
            .ctx("reading the last ticks")?;
        let mut out = HashMap::new();
        for row in rows {
            let job: String = row.try_get("", "job").ctx("reading the last ticks")?;
            if let Ok(Some(t)) = row.try_get::<Option<DateTime<Utc>>>("", "tick_at") {
                out.insert(job, t);
            }
        }
        Ok(out)
    }

    /// Ticks recorded for each job in its window `(after, until]`, in one statement.
    pub async fn ticks_in(
        &self,
        windows: &[(String, DateTime<Utc>, DateTime<Utc>)],
    ) -> Result<HashMap<String, HashSet<DateTime<Utc>>>> {
        if windows.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<_> = windows
            .iter()
            .map(|(job, after, until)| {
                json!({"job": job, "after": json_time(*after), "until": json_time(*until)})
            })
            .collect();
        let sql = format!(
            "SELECT r.job AS job, r.tick_at AS tick_at FROM runs r JOIN {} \
             ON r.job = w.job AND r.tick_at > w.after AND r.tick_at <= w.until",
            self.rows_from_json(
                1,
                "w",
                &[
                    ("job", Col::Text),
                    ("after", Col::Time),
                    ("until", Col::Time)
                ]
            )
        );
        let found = self
            .db
            .query_all_raw(self.stmt(&sql, vec![json_param(&rows)]))
            .await
            .ctx("reading recorded ticks")?;
        let mut out: HashMap<String, HashSet<DateTime<Utc>>> = HashMap::new();
        for row in found {
            let job: String = row.try_get("", "job").ctx("reading recorded ticks")?;
            let tick: DateTime<Utc> = row.try_get("", "tick_at").ctx("reading recorded ticks")?;
            out.entry(job).or_default().insert(tick);
        }
        Ok(out)
    }

    /// The last `limit` ticks of a job (newest first): the tick ledger.
    pub async fn recent_ticks(&self, job: &str, limit: u64) -> Result<Vec<run::Model>> {
        run::Entity::find()
            .filter(run::Column::Job.eq(job))
            .filter(run::Column::TickAt.is_not_null())
            .order_by(run::Column::TickAt, Order::Desc)
            .limit(limit)
            .all(&self.db)
            .await
            .ctx("reading the tick ledger")
    }

    /// Flags those of `ids` that are running for cancellation and records who asked, in one
    /// transaction that also notifies the replicas running them; the replica stops each task
    /// at its next chunk boundary (told at once, or at its next lease renewal). Returns the ids
    /// whose cancellation was requested.
    pub async fn request_cancel(
        &self,
        ids: &[String],
        reason: &str,
        origin: &str,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin().await.ctx("beginning a transaction")?;
        let list: Vec<serde_json::Value> = ids.iter().map(|id| id.as_str().into()).collect();
        let rows = txn
            .query_all_raw(self.stmt(
                &format!(
                    "UPDATE runs SET cancel_requested = $1, reason = $2, updated_at = $3 \
                     WHERE id {} AND state = $5 RETURNING id",
                    self.in_json_list(4)
                ),
                vec![
                    true.into(),
                    reason.into(),
                    Value::from(super::now()),
                    super::json_param(&list),
                    RunState::Running.as_str().into(),
                ],
            ))
            .await
            .ctx("requesting cancellations")?;
        let done = rows
            .iter()
            .map(|row| {
                row.try_get::<String>("", "id")
                    .ctx("reading a cancelled run")
            })
            .collect::<Result<Vec<_>>>()?;
        let payloads: Vec<String> = done
            .iter()
            .map(|id| crate::engine::notify::cancel(origin, id))
            .collect();
        self.notify(&txn, &payloads).await?;
        txn.commit().await.ctx("committing cancel requests")?;
        Ok(done)
    }

    /// Deletes, in one transaction, up to `batch` finished runs created before `created_before`
    /// with their events, never one of the `keep` newest runs of its job, never the newest tick
    /// of a job (the sweeper's cursor), and never a tick at or after `ticks_from` (inside a
    /// catch-up window). Returns how many runs went.
    pub async fn delete_old_runs(
        &self,
        created_before: DateTime<Utc>,
        ticks_from: DateTime<Utc>,
        keep: u64,
        batch: u64,
    ) -> Result<u64> {
        let txn = self.db.begin().await.ctx("beginning a transaction")?;
        let terminal: Vec<String> = [
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
            RunState::TimedOut,
            RunState::Skipped,
        ]
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
        let sql = format!(
            "SELECT r.id AS id FROM runs r \
             WHERE r.id < $1 AND r.state IN ({}) \
               AND (r.tick_at IS NULL OR r.tick_at < $2) \
               AND r.id < (SELECT k.id FROM runs k WHERE k.job = r.job \
                           ORDER BY k.id DESC LIMIT 1 OFFSET $3) \
               AND (r.tick_at IS NULL OR r.tick_at < \
                    (SELECT MAX(t.tick_at) FROM runs t WHERE t.job = r.job)) \
             ORDER BY r.id LIMIT $4",
            terminal.join(", ")
        );
        let keep_offset = i64::try_from(keep.saturating_sub(1)).unwrap_or(i64::MAX);
        let ids: Vec<serde_json::Value> = txn
            .query_all_raw(self.stmt(
                &sql,
                vec![
                    id_floor(created_before).into(),
                    Value::from(truncate(ticks_from)),
                    keep_offset.into(),
                    i64::try_from(batch).unwrap_or(1000).into(),
                ],
            ))
            .await
            .ctx("choosing old runs")?
            .iter()
            .filter_map(|row| row.try_get::<String>("", "id").ok())
            .map(serde_json::Value::String)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let list = json_param(&ids);
        txn.execute_raw(self.stmt(
            &format!(
                "DELETE FROM run_events WHERE run_id {}",
                self.in_json_list(1)
            ),
            vec![list.clone()],
        ))
        .await
        .ctx("deleting old events")?;
        let res = txn
            .execute_raw(self.stmt(
                &format!("DELETE FROM runs WHERE id {}", self.in_json_list(1)),
                vec![list],
            ))
            .await
            .ctx("deleting old runs")?;
        txn.commit().await.ctx("committing deleted runs")?;
        Ok(res.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_floors_order_like_the_uuidv7_ids_of_their_time() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let before = id_floor(t);
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(t.timestamp()).unwrap_or(0),
            0,
        ))
        .to_string();
        assert!(before <= id, "{before} vs {id}");
        assert!(id < id_floor(t + chrono::Duration::milliseconds(1)));
        assert_eq!(before.len(), id.len());
    }
}
