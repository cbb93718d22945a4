//! Run events: appended in batches by the replica that owns each attempt, read back in order
//! by watchers. A run's events are numbered from `runs.last_seq`; the owner of an attempt
//! numbers its own events in memory from the value its claim returned, and the append is
//! fenced by (attempt, owner, running), so a superseded attempt cannot add to the record.
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;

use super::{Col, Context, Result, Store, json_param, json_time, run_event, runs::EVENT_COLUMNS};
use crate::lifecycle::{EventPayload, RunState};

/// One event of a running attempt, numbered by its owner.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub run_id: String,
    pub attempt: i32,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub payload: EventPayload,
}

impl Store {
    /// Appends events of attempts `owner` holds, inside `db`'s transaction. Rows of attempts
    /// no longer running under `owner` are dropped.
    pub async fn append_events(
        &self,
        db: &impl ConnectionTrait,
        owner: &str,
        events: &[EventRecord],
    ) -> Result<()> {
        let running = RunState::Running.as_str();
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                json!({
                    "run_id": e.run_id,
                    "attempt": e.attempt,
                    "seq": e.seq,
                    "at": json_time(e.at),
                    "kind": e.payload.kind(),
                    "payload": e.payload.to_json(),
                })
            })
            .collect();
        let mut cols = EVENT_COLUMNS.to_vec();
        cols.push(("attempt", Col::Int));
        let sql = format!(
            "INSERT INTO run_events (run_id, seq, at, kind, payload) \
             SELECT v.run_id, v.seq, v.at, v.kind, v.payload FROM {} \
             JOIN runs r ON r.id = v.run_id AND r.attempt = v.attempt \
             AND r.owner = $2 AND r.state = $3 WHERE true ON CONFLICT DO NOTHING",
            self.rows_from_json(1, "v", &cols)
        );
        db.execute_raw(self.stmt(&sql, vec![json_param(&rows), owner.into(), running.into()]))
            .await
            .ctx("appending events")?;
        // The newest number of each run, so other writers number after it.
        let mut newest: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
        for e in events {
            let n = newest.entry((e.run_id.as_str(), e.attempt)).or_default();
            *n = (*n).max(e.seq);
        }
        let rows: Vec<_> = newest
            .iter()
            .map(|((id, attempt), seq)| json!({"run_id": id, "attempt": attempt, "seq": seq}))
            .collect();
        let sql = format!(
            "UPDATE runs SET last_seq = {} FROM {} \
             WHERE runs.id = v.run_id AND runs.attempt = v.attempt AND runs.owner = $2",
            self.greatest("runs.last_seq", "v.seq"),
            self.rows_from_json(
                1,
                "v",
                &[
                    ("run_id", Col::Text),
                    ("attempt", Col::Int),
                    ("seq", Col::Big)
                ]
            )
        );
        db.execute_raw(self.stmt(&sql, vec![json_param(&rows), owner.into()]))
            .await
            .ctx("numbering events")?;
        Ok(())
    }

    pub async fn events_after(
        &self,
        run_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<run_event::Model>> {
        run_event::Entity::find()
            .filter(run_event::Column::RunId.eq(run_id))
            .filter(run_event::Column::Seq.gt(after))
            .order_by_asc(run_event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await
            .ctx("reading events")
    }
}
