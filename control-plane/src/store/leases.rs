//! Named leases (the scheduler's leader lease): held by one replica until it stops renewing.
use std::time::Duration;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, TryInsertResult,
    sea_query::{Expr, ExprTrait},
};

use chrono::{DateTime, Utc};

use super::{Context, Result, Store, lease};

impl Store {
    /// Takes or renews a named lease at `now`; true while `holder` holds it.
    pub async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let t = super::truncate(now);
        let until = t + chrono::Duration::from_std(ttl).unwrap_or_default();
        let res = lease::Entity::update_many()
            .col_expr(lease::Column::Holder, Expr::value(holder))
            .col_expr(lease::Column::ExpiresAt, Expr::value(until))
            .filter(lease::Column::Name.eq(name))
            .filter(
                lease::Column::Holder
                    .eq(holder)
                    .or(lease::Column::ExpiresAt.lt(t)),
            )
            .exec(&self.db)
            .await
            .ctx("renewing a lease")?;
        if res.rows_affected == 1 {
            return Ok(true);
        }
        let am = lease::ActiveModel {
            name: Set(name.to_string()),
            holder: Set(holder.to_string()),
            expires_at: Set(until),
        };
        let res = lease::Entity::insert(am)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await
            .ctx("taking a lease")?;
        Ok(matches!(res, TryInsertResult::Inserted(n) if n > 0))
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        lease::Entity::delete_many()
            .filter(lease::Column::Name.eq(name))
            .filter(lease::Column::Holder.eq(holder))
            .exec(&self.db)
            .await
            .ctx("releasing a lease")?;
        Ok(())
    }
}
