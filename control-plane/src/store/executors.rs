//! Executors: registration, heartbeats (many per statement), deregistration and reads.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait as _, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, OnConflict},
};
use serde_json::json;

use super::{Col, Context, Result, Store, executor, json_param, json_time, now};

/// What an executor reports with each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatFigures {
    pub running: i32,
    pub outbox_pending: i64,
    pub emails_sent: i64,
    pub emails_failed: i64,
}

/// A heartbeat to persist.
#[derive(Debug, Clone)]
pub struct HeartbeatRow {
    pub id: String,
    pub at: DateTime<Utc>,
    pub figures: HeartbeatFigures,
}

impl Store {
    pub async fn register_executor(
        &self,
        id: &str,
        address: &str,
        jobs: &[String],
        version: &str,
    ) -> Result<executor::Model> {
        let t = now();
        let jobs = serde_json::to_string(jobs).unwrap_or_else(|_| "[]".into());
        let model = executor::Model {
            id: id.to_string(),
            address: address.to_string(),
            jobs,
            version: version.to_string(),
            running: 0,
            outbox_pending: 0,
            emails_sent: 0,
            emails_failed: 0,
            deregistered: false,
            registered_at: t,
            last_heartbeat_at: t,
        };
        let am = executor::ActiveModel {
            id: Set(model.id.clone()),
            address: Set(model.address.clone()),
            jobs: Set(model.jobs.clone()),
            version: Set(model.version.clone()),
            running: Set(0),
            outbox_pending: Set(0),
            emails_sent: Set(0),
            emails_failed: Set(0),
            deregistered: Set(false),
            registered_at: Set(t),
            last_heartbeat_at: Set(t),
        };
        executor::Entity::insert(am)
            .on_conflict(
                OnConflict::column(executor::Column::Id)
                    .update_columns([
                        executor::Column::Address,
                        executor::Column::Jobs,
                        executor::Column::Version,
                        executor::Column::Running,
                        executor::Column::Deregistered,
                        executor::Column::RegisteredAt,
                        executor::Column::LastHeartbeatAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .ctx("registering an executor")?;
        Ok(model)
    }

    /// Records many heartbeats in one statement; returns the ids that are still registered.
    pub async fn heartbeats(&self, rows: &[HeartbeatRow]) -> Result<Vec<String>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let data: Vec<_> = rows
            .iter()
            .map(|h| {
                json!({
                    "id": h.id,
                    "at": json_time(h.at),
                    "running": h.figures.running,
                    "outbox_pending": h.figures.outbox_pending,
                    "emails_sent": h.figures.emails_sent,
                    "emails_failed": h.figures.emails_failed,
                })
            })
            .collect();
        let sql = format!(
            "UPDATE executors SET last_heartbeat_at = v.at, running = v.running, \
             outbox_pending = v.outbox_pending, emails_sent = v.emails_sent, \
             emails_failed = v.emails_failed FROM {} \
             WHERE executors.id = v.id AND executors.deregistered = false RETURNING {}",
            self.rows_from_json(
                1,
                "v",
                &[
                    ("id", Col::Text),
                    ("at", Col::Time),
                    ("running", Col::Int),
                    ("outbox_pending", Col::Big),
                    ("emails_sent", Col::Big),
                    ("emails_failed", Col::Big),
                ]
            ),
            self.returning("executors", &["id"])
        );
        let found = self
            .db
            .query_all_raw(self.stmt(&sql, vec![json_param(&data)]))
            .await
            .ctx("recording heartbeats")?;
        Ok(found
            .iter()
            .filter_map(|r| r.try_get::<String>("", "id").ok())
            .collect())
    }

    pub async fn deregister_executor(&self, id: &str) -> Result<()> {
        executor::Entity::update_many()
            .col_expr(executor::Column::Deregistered, Expr::value(true))
            .filter(executor::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .ctx("deregistering an executor")?;
        Ok(())
    }

    /// Executors seen since `seen_since`, deregistered ones excluded.
    pub async fn executors(
        &self,
        seen_since: Option<DateTime<Utc>>,
    ) -> Result<Vec<executor::Model>> {
        let mut q = executor::Entity::find()
            .filter(executor::Column::Deregistered.eq(false))
            .order_by_asc(executor::Column::Id);
        if let Some(since) = seen_since {
            q = q.filter(executor::Column::LastHeartbeatAt.gte(since));
        }
        q.all(&self.db).await.ctx("listing executors")
    }

    pub async fn executor(&self, id: &str) -> Result<Option<executor::Model>> {
        executor::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .ctx("reading an executor")
    }
}
