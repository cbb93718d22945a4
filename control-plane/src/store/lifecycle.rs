//! The statements that move runs through their lifecycle, each for many runs at once: claim
//! (queued → running), lease renewal, and settling (running or queued → an end state, or back
//! to queued for a retry). Every one re-checks the state and the attempt in its `UPDATE`; the
//! legal transitions they apply are those of `crate::lifecycle`.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait, Value};
use serde_json::json;

use super::{
    Col, Context, Result, Store, StoreError, json_param, json_time, model, run, runs::event_json,
};
use crate::lifecycle::{EventPayload, ReportDraft, RunState, Settlement};

/// One settlement to apply.
#[derive(Debug, Clone)]
pub struct SettleRow {
    pub run_id: String,
    pub attempt: i32,
    pub settlement: Settlement,
    /// Only while the run's lease expired before this instant (the rescuer's condition, so a
    /// replica that renewed meanwhile keeps its attempt).
    pub lease_expired_before: Option<DateTime<Utc>>,
}

/// What a settlement did: the run as it is now, and the event it recorded.
#[derive(Debug, Clone)]
pub struct Settled {
    pub run: run::Model,
    pub event_seq: i64,
    pub event: EventPayload,
}

/// The result of a settle batch: per input row, the settled run (`None`: the run was not in a
/// state the settlement may leave, or the attempt was superseded), and the runs promoted into
/// their job's active slot (queue-one) that may be dispatched now.
pub struct SettleOutcome {
    pub settled: Vec<Option<Settled>>,
    pub promoted: usize,
}

/// Lease renewal answer for one attempt this replica still holds.
#[derive(Debug, Clone)]
pub struct Renewed {
    pub run_id: String,
    pub attempt: i32,
    pub cancel_requested: bool,
    pub reason: Option<String>,
}

fn store_time(t: DateTime<Utc>) -> DateTime<Utc> {
    super::truncate(t)
}

fn states_sql(states: &[RunState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The message of the state event a settlement records.
fn event_message(run: &run::Model, s: &Settlement) -> String {
    match s {
        Settlement::Retry { error, backoff } => format!(
            "attempt {} failed: {error}; retrying in {}s as attempt {}",
            run.attempt - 1,
            backoff.as_secs(),
            run.attempt
        ),
        Settlement::Cancelled { .. } => run.reason.clone().unwrap_or_default(),
        _ => s.error().map(str::to_string).unwrap_or_default(),
    }
}

impl Store {
    /// Takes up to `limit` queued runs whose turn it is (their overlap slot is the active one
    /// and their retry backoff has passed) for `owner`, oldest first, and records the executor
    /// and deadline `assign` picks for each, in one transaction of two statements, so nobody
    /// sees a run running without its executor. On Postgres `FOR UPDATE SKIP LOCKED` lets
    /// replicas claim side by side. A run `assign` leaves out keeps no executor (the caller
    /// fails it: nobody can run it).
    pub async fn claim(
        &self,
        owner: &str,
        jobs: &[String],
        limit: u64,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        assign: impl FnOnce(&[run::Model]) -> Vec<(String, String, DateTime<Utc>)>,
    ) -> Result<Vec<run::Model>> {
        if jobs.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // The pick's state is a literal, not a parameter: in a generic plan of the prepared
        // statement `state = $5` cannot use the partial index of queued runs and walked the
        // whole table: 120 ms at 200,000 runs. It takes the runs in the order they became due
        // (`not_before`, then creation), which is the order of that index (migration
        // `QueuedDueIndex`): the scan stops after `limit` rows whatever the statistics say.
        let pick = format!(
            "SELECT id FROM runs WHERE state = '{}' AND not_before <= $4 \
             AND (active_slot IS NULL OR active_slot = 0) AND job {} \
             ORDER BY not_before, id LIMIT $7",
            RunState::Queued.as_str(),
            self.in_json_list(6)
        );
        let sql = if self.is_postgres() {
            // A MATERIALIZED CTE runs the locking pick exactly once. As `id IN (subquery)` the
            // planner may rescan the LIMIT ... SKIP LOCKED subquery and update more rows than
            // the limit: claims of 952 runs were seen with room for 64.
            format!(
                "WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED) \
                 UPDATE runs SET state = $1, owner = $2, lease_expires_at = $3, started_at = $4, \
                 updated_at = $4 FROM picked WHERE runs.id = picked.id AND runs.state = $5 \
                 RETURNING runs.*"
            )
        } else {
            format!(
                "UPDATE runs SET state = $1, owner = $2, lease_expires_at = $3, started_at = $4, \
                 updated_at = $4 WHERE state = $5 AND id IN ({pick}) RETURNING *"
            )
        };
        let jobs: Vec<serde_json::Value> = jobs.iter().cloned().map(Into::into).collect();
        let txn = self.db.begin().await.ctx("beginning a transaction")?;
        if self.is_postgres() {
            // The queue grows from nothing to thousands of runs between two ANALYZEs, so the
            // planner believes it holds a dozen and reads all of it through a bitmap scan to
            // sort it (5 to 42 ms per claim at 5,000 queued, `bench/runs.sh`). Without sorts
            // the only plan left reads `runs_queued_due` in order and stops at the limit; the
            // executors' assignment joins its batch by id (see `keyed_plans`).
            txn.execute_unprepared("SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off")
                .await
                .ctx("planning the claim")?;
        }
        let rows = txn
            .query_all_raw(self.stmt(
                &sql,
                vec![
                    RunState::Running.as_str().into(),
                    owner.into(),
                    Value::from(lease_until),
                    Value::from(now),
                    RunState::Queued.as_str().into(),
                    json_param(&jobs),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await
            .ctx("claiming runs")?;
        let mut runs = rows
            .iter()
            .map(|r| model::<run::Model>(r, "run"))
            .collect::<Result<Vec<_>>>()?;
        if runs.is_empty() {
            txn.commit().await.ctx("committing a claim")?;
            return Ok(runs);
        }
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        let assigned = assign(&runs);
        if !assigned.is_empty() {
            let data: Vec<_> = assigned
                .iter()
                .map(|(id, executor, deadline)| {
                    json!({"id": id, "executor_id": executor, "deadline_at": json_time(*deadline)})
                })
                .collect();
            let sql = format!(
                "UPDATE runs SET executor_id = v.executor_id, deadline_at = v.deadline_at FROM {} \
                 WHERE runs.id = v.id",
                self.rows_from_json(
                    1,
                    "v",
                    &[
                        ("id", Col::Text),
                        ("executor_id", Col::Text),
                        ("deadline_at", Col::Time),
                    ]
                )
            );
            txn.execute_raw(self.stmt(&sql, vec![json_param(&data)]))
                .await
                .ctx("recording executor assignments")?;
            for r in &mut runs {
                if let Some((_, e, d)) = assigned.iter().find(|(id, _, _)| *id == r.id) {
                    r.executor_id = Some(e.clone());
                    r.deadline_at = Some(store_time(*d));
                }
            }
        }
        txn.commit().await.ctx("committing a claim")?;
        Ok(runs)
    }

    /// Whether any run waits in the queue with its turn come (for the "no executor" warning).
    pub async fn runs_waiting(&self, now: DateTime<Utc>) -> Result<bool> {
        let rows = self
            .db
            .query_all_raw(self.stmt(
                "SELECT id FROM runs WHERE state = $1 AND not_before <= $2 LIMIT 1",
                vec![RunState::Queued.as_str().into(), Value::from(now)],
            ))
            .await
            .ctx("looking for queued runs")?;
        Ok(!rows.is_empty())
    }

    /// Extends the lease of every listed attempt `owner` still holds, in one statement; the
    /// answer lists those still held (with a pending cancel request, if any).
    pub async fn renew(
        &self,
        owner: &str,
        attempts: &[(String, i32)],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Renewed>> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<_> = attempts
            .iter()
            .map(|(id, attempt)| json!({"id": id, "attempt": attempt}))
            .collect();
        let sql = format!(
            "UPDATE runs SET lease_expires_at = $2 FROM {} \
             WHERE runs.id = v.id AND runs.attempt = v.attempt AND runs.owner = $3 \
             AND runs.state = $4 RETURNING {}",
            self.rows_from_json(1, "v", &[("id", Col::Text), ("attempt", Col::Int)]),
            self.returning("runs", &["id", "attempt", "cancel_requested", "reason"])
        );
        let found = self
            .db
            .query_all_raw(self.stmt(
                &sql,
                vec![
                    json_param(&rows),
                    Value::from(lease_until),
                    owner.into(),
                    RunState::Running.as_str().into(),
                ],
            ))
            .await
            .ctx("renewing leases")?;
        found
            .iter()
            .map(|row| {
                Ok(Renewed {
                    run_id: row.try_get("", "id").ctx("reading a renewal")?,
                    attempt: row.try_get("", "attempt").ctx("reading a renewal")?,
                    cancel_requested: row
                        .try_get("", "cancel_requested")
                        .ctx("reading a renewal")?,
                    reason: row.try_get("", "reason").ctx("reading a renewal")?,
                })
            })
            .collect()
    }

    /// Running attempts whose owner stopped renewing the lease (replica died or hung).
    pub async fn expired_leases(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<run::Model>> {
        let rows = self
            .db
            .query_all_raw(self.stmt(
                "SELECT * FROM runs WHERE state = $1 AND lease_expires_at < $2 \
                 ORDER BY id LIMIT $3",
                vec![
                    RunState::Running.as_str().into(),
                    Value::from(now),
                    i64::try_from(limit).unwrap_or(100).into(),
                ],
            ))
            .await
            .ctx("finding expired leases")?;
        rows.iter().map(|r| model::<run::Model>(r, "run")).collect()
    }

    /// Applies settlements in one transaction (with the events of `events_first`, written before them so a run's last event precedes its end): each run
    /// is changed only from a state its settlement may leave and only for its attempt, frees
    /// its overlap slot (promoting the run queued behind it), records its state event, and a
    /// success stores its reports (one per kind and period: a re-run replaces the report of
    /// its period). Notifies other replicas of the events.
    pub async fn settle(
        &self,
        owner: &str,
        events_first: &[super::events::EventRecord],
        rows: &[SettleRow],
        now: DateTime<Utc>,
        origin: &str,
    ) -> Result<SettleOutcome> {
        let txn = self.db.begin().await.ctx("beginning a transaction")?;
        self.keyed_plans(&txn).await?;
        self.append_events(&txn, owner, events_first).await?;
        let mut settled: Vec<Option<Settled>> = vec![None; rows.len()];
        // One statement per kind of change: (retry?, from-states, lease fence).
        let mut groups: BTreeMap<(bool, String, Option<String>), Vec<usize>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let key = (
                r.settlement.is_retry(),
                states_sql(r.settlement.from_states()),
                r.lease_expired_before.map(json_time),
            );
            groups.entry(key).or_default().push(i);
        }
        for ((retry, from, fence), members) in groups {
            let changed = if retry {
                self.apply_retries(&txn, rows, &members, &from, fence.is_some(), now)
                    .await?
            } else {
                self.apply_ends(&txn, rows, &members, &from, fence.is_some(), now)
                    .await?
            };
            for (i, run) in changed {
                let event = EventPayload::state(
                    run.state,
                    run.attempt,
                    event_message(&run, &rows[i].settlement),
                );
                settled[i] = Some(Settled {
                    event_seq: run.last_seq,
                    event,
                    run,
                });
            }
        }
        let events: Vec<_> = settled
            .iter()
            .flatten()
            .map(|s| event_json(&s.run.id, s.event_seq, now, &s.event))
            .collect();
        self.insert_events(&txn, &events).await?;
        let promoted = self.promote_queued(&txn, &settled).await?;
        self.store_reports(&txn, rows, &settled, now).await?;
        let mut touched: Vec<(String, i64)> = events_first
            .iter()
            .map(|e| (e.run_id.clone(), e.seq))
            .collect();
        touched.extend(
            settled
                .iter()
                .flatten()
                .map(|s| (s.run.id.clone(), s.event_seq)),
        );
        self.notify(&txn, &crate::engine::notify::events(origin, &touched))
            .await?;
        txn.commit().await.ctx("committing settled runs")?;
        Ok(SettleOutcome { settled, promoted })
    }

    async fn apply_ends(
        &self,
        db: &impl ConnectionTrait,
        rows: &[SettleRow],
        members: &[usize],
        from: &str,
        fenced: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<(usize, run::Model)>> {
        let data: Vec<_> = members
            .iter()
            .map(|&i| {
                let r = &rows[i];
                let s = &r.settlement;
                let reason = match s {
                    Settlement::Cancelled { reason, .. } => reason.clone(),
                    _ => None,
                };
                json!({
                    "i": i,
                    "id": r.run_id,
                    "attempt": r.attempt,
                    "state": s.target().as_str(),
                    "summary": s.summary(),
                    "error": s.error(),
                    "reason": reason,
                    "fallback_reason": matches!(s, Settlement::Cancelled { .. })
                        .then_some("cancelled on request"),
                    "fence": r.lease_expired_before.map(json_time),
                })
            })
            .collect();
        let fence = if fenced {
            " AND runs.lease_expires_at < v.fence"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE runs SET state = v.state, finished_at = $2, updated_at = $2, \
             active_slot = NULL, lease_expires_at = NULL, \
             summary = COALESCE(v.summary, runs.summary), \
             error = COALESCE(v.error, runs.error), \
             reason = CASE WHEN v.state = 'cancelled' \
                 THEN COALESCE(v.reason, runs.reason, v.fallback_reason) ELSE v.reason END, \
             last_seq = runs.last_seq + 1 \
             FROM {} WHERE runs.id = v.id AND runs.attempt = v.attempt \
             AND runs.state IN ({from}){fence} RETURNING {}",
            self.rows_from_json(
                1,
                "v",
                &[
                    ("i", Col::Int),
                    ("id", Col::Text),
                    ("attempt", Col::Int),
                    ("state", Col::Text),
                    ("summary", Col::Text),
                    ("error", Col::Text),
                    ("reason", Col::Text),
                    ("fallback_reason", Col::Text),
                    ("fence", Col::Time),
                ]
            ),
            self.returning("runs", &["*"])
        );
        let values = vec![json_param(&data), Value::from(now)];
        self.changed_rows(db, &sql, values, rows, members, "finishing runs")
            .await
    }

    async fn apply_retries(
        &self,
        db: &impl ConnectionTrait,
        rows: &[SettleRow],
        members: &[usize],
        from: &str,
        fenced: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<(usize, run::Model)>> {
        let data: Vec<_> = members
            .iter()
            .map(|&i| {
                let r = &rows[i];
                let (error, backoff) = match &r.settlement {
                    Settlement::Retry { error, backoff } => (error.as_str(), *backoff),
                    _ => ("", std::time::Duration::ZERO),
                };
                let not_before = now + chrono::Duration::from_std(backoff).unwrap_or_default();
                json!({
                    "i": i,
                    "id": r.run_id,
                    "attempt": r.attempt,
                    "error": error,
                    "not_before": json_time(not_before),
                    "fence": r.lease_expired_before.map(json_time),
                })
            })
            .collect();
        let fence = if fenced {
            " AND runs.lease_expires_at < v.fence"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE runs SET state = $3, attempt = runs.attempt + 1, not_before = v.not_before, \
             owner = NULL, executor_id = NULL, lease_expires_at = NULL, error = v.error, \
             updated_at = $2, last_seq = runs.last_seq + 1 \
             FROM {} WHERE runs.id = v.id AND runs.attempt = v.attempt \
             AND runs.state IN ({from}){fence} RETURNING {}",
            self.rows_from_json(
                1,
                "v",
                &[
                    ("i", Col::Int),
                    ("id", Col::Text),
                    ("attempt", Col::Int),
                    ("error", Col::Text),
                    ("not_before", Col::Time),
                    ("fence", Col::Time),
                ]
            ),
            self.returning("runs", &["*"])
        );
        let values = vec![
            json_param(&data),
            Value::from(now),
            RunState::Queued.as_str().into(),
        ];
        self.changed_rows(db, &sql, values, rows, members, "requeueing runs")
            .await
    }

    /// Runs a settling statement and maps the returned rows back to their input positions.
    async fn changed_rows(
        &self,
        db: &impl ConnectionTrait,
        sql: &str,
        values: Vec<Value>,
        rows: &[SettleRow],
        members: &[usize],
        context: &'static str,
    ) -> Result<Vec<(usize, run::Model)>> {
        let returned = db
            .query_all_raw(self.stmt(sql, values))
            .await
            .ctx(context)?;
        let mut out = Vec::with_capacity(returned.len());
        for row in &returned {
            let run: run::Model = model(row, "run")?;
            let i = members
                .iter()
                .copied()
                .find(|&i| rows[i].run_id == run.id)
                .ok_or_else(|| StoreError::Corrupt(format!("settled an unknown run {}", run.id)))?;
            out.push((i, run));
        }
        Ok(out)
    }

    /// Moves the run queued behind an ended one (queue-one) into its job's active slot.
    async fn promote_queued(
        &self,
        db: &impl ConnectionTrait,
        settled: &[Option<Settled>],
    ) -> Result<usize> {
        let jobs: std::collections::BTreeSet<&str> = settled
            .iter()
            .flatten()
            .map(|s| s.run.job.as_str())
            .collect();
        if jobs.is_empty() {
            return Ok(0);
        }
        let jobs: Vec<serde_json::Value> = jobs.into_iter().map(Into::into).collect();
        let sql = format!(
            "UPDATE runs SET active_slot = 0 WHERE active_slot = 1 AND job {} \
             AND NOT EXISTS (SELECT 1 FROM runs a WHERE a.job = runs.job AND a.active_slot = 0)",
            self.in_json_list(1)
        );
        let res = db
            .execute_raw(self.stmt(&sql, vec![json_param(&jobs)]))
            .await
            .ctx("promoting queued runs")?;
        Ok(usize::try_from(res.rows_affected()).unwrap_or(0))
    }

    async fn store_reports(
        &self,
        db: &impl ConnectionTrait,
        rows: &[SettleRow],
        settled: &[Option<Settled>],
        now: DateTime<Utc>,
    ) -> Result<()> {
        // One per (kind, period): the last one of the batch wins, as a later run would.
        let mut reports: BTreeMap<(&str, &str), (&run::Model, &ReportDraft)> = BTreeMap::new();
        for (row, done) in rows.iter().zip(settled) {
            if let (
                Settlement::Succeeded {
                    reports: drafts, ..
                },
                Some(done),
            ) = (&row.settlement, done)
            {
                for d in drafts {
                    reports.insert((&d.kind, &d.period), (&done.run, d));
                }
            }
        }
        if reports.is_empty() {
            return Ok(());
        }
        let data: Vec<_> = reports
            .values()
            .map(|(run, d)| {
                json!({
                    "id": uuid::Uuid::now_v7().to_string(),
                    "kind": d.kind,
                    "period": d.period,
                    "job": run.job,
                    "run_id": run.id,
                    "body": d.body,
                    "created_at": json_time(now),
                })
            })
            .collect();
        let sql = format!(
            "INSERT INTO reports (id, kind, period, job, run_id, body, created_at) \
             SELECT id, kind, period, job, run_id, body, created_at FROM {} WHERE true \
             ON CONFLICT (kind, period) DO UPDATE SET job = excluded.job, \
             run_id = excluded.run_id, body = excluded.body, created_at = excluded.created_at",
            self.rows_from_json(
                1,
                "v",
                &[
                    ("id", Col::Text),
                    ("kind", Col::Text),
                    ("period", Col::Text),
                    ("job", Col::Text),
                    ("run_id", Col::Text),
                    ("body", Col::Text),
                    ("created_at", Col::Time),
                ]
            )
        );
        db.execute_raw(self.stmt(&sql, vec![json_param(&data)]))
            .await
            .ctx("storing reports")?;
        Ok(())
    }
}
