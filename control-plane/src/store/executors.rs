//! Executors: registration, heartbeats (many per statement), deregistration and reads.
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait as _, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use serde_json::json;

use super::{Col, Context, Result, Store, executor, json_param, json_time, model, now};

/// What an executor reports with each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatFigures {
    pub running: i32,
    pub outbox_pending: i64,
    pub emails_sent: i64,
    pub emails_failed: i64,
}

/// What an executor registers with.
pub struct Registration<'a> {
    pub id: &'a str,
    pub address: &'a str,
    pub jobs: &'a [String],
    pub version: &'a str,
    /// JSON of the declared parameters (see `crate::params`).
    pub tasks: &'a str,
}

/// A heartbeat to persist.
#[derive(Debug, Clone)]
pub struct HeartbeatRow {
    pub id: String,
    pub at: DateTime<Utc>,
    pub figures: HeartbeatFigures,
    /// The registration it belongs to; empty from executors that predate sessions.
    pub session: String,
}

impl Store {
    /// Registers an executor under a new session, unless its id is held by a live
    /// registration from another address (an impostor, or a second process given the same
    /// id): that is refused with the holder, and nothing changes. A registration from the same
    /// address (a quick restart) or of a silent or deregistered id takes the id over.
    pub async fn register_executor(
        &self,
        reg: &Registration<'_>,
        live_since: DateTime<Utc>,
    ) -> Result<std::result::Result<executor::Model, executor::Model>> {
        let t = now();
        let txn = self.db.begin().await.ctx("beginning a transaction")?;
        let lock = if self.is_postgres() {
            " FOR UPDATE"
        } else {
            ""
        };
        let current = txn
            .query_one_raw(self.stmt(
                &format!("SELECT * FROM executors WHERE id = $1{lock}"),
                vec![reg.id.into()],
            ))
            .await
            .ctx("reading an executor")?
            .map(|row| model::<executor::Model>(&row, "executor"))
            .transpose()?;
        if let Some(holder) = current
            && !holder.deregistered
            && holder.last_heartbeat_at >= live_since
            && holder.address != reg.address
        {
            return Ok(Err(holder));
        }
        let model = executor::Model {
            id: reg.id.to_string(),
            address: reg.address.to_string(),
            jobs: serde_json::to_string(reg.jobs).unwrap_or_else(|_| "[]".into()),
            version: reg.version.to_string(),
            running: 0,
            outbox_pending: 0,
            emails_sent: 0,
            emails_failed: 0,
            deregistered: false,
            registered_at: t,
            last_heartbeat_at: t,
            session: Some(uuid::Uuid::new_v4().to_string()),
            tasks: reg.tasks.to_string(),
        };
        let am: executor::ActiveModel = model.clone().into();
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
                        executor::Column::Session,
                        executor::Column::Tasks,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .ctx("registering an executor")?;
        txn.commit().await.ctx("committing a registration")?;
        Ok(Ok(model))
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
                    "session": h.session,
                })
            })
            .collect();
        let sql = format!(
            "UPDATE executors SET last_heartbeat_at = v.at, running = v.running, \
             outbox_pending = v.outbox_pending, emails_sent = v.emails_sent, \
             emails_failed = v.emails_failed FROM {} \
             WHERE executors.id = v.id AND executors.deregistered = false \
             AND (v.session = '' OR executors.session IS NULL OR executors.session = v.session) \
             RETURNING {}",
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
                    ("session", Col::Text),
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
