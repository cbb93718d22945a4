//! Reports the jobs produce: one per (kind, period), replaced by a re-run of the period (see
//! `Store::settle`, which stores them with the run's end).
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};

use super::{Context, Result, Store, report};

impl Store {
    /// Newest first (by when the current figures were stored).
    pub async fn reports(&self, kind: Option<&str>, limit: u64) -> Result<Vec<report::Model>> {
        let mut q = report::Entity::find()
            .order_by(report::Column::CreatedAt, Order::Desc)
            .order_by(report::Column::Id, Order::Desc);
        if let Some(k) = kind {
            q = q.filter(report::Column::Kind.eq(k));
        }
        q.limit(limit).all(&self.db).await.ctx("listing reports")
    }

    pub async fn report(&self, id: &str) -> Result<Option<report::Model>> {
        report::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .ctx("reading a report")
    }
}
