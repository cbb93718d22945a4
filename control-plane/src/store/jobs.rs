//! Job definitions: the catalog upsert at start-up, reads, and operator changes.
use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TryInsertResult,
    sea_query::Expr,
};

use super::{Context, Result, Store, job, now};
use crate::lifecycle::{MissedTickPolicy, OverlapPolicy};

/// Operator changes to a job; `None` keeps the current value.
#[derive(Default, Debug, Clone)]
pub struct JobChanges {
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub enabled: Option<bool>,
    pub overlap_policy: Option<OverlapPolicy>,
    pub missed_tick_policy: Option<MissedTickPolicy>,
    pub catch_up_window_secs: Option<i32>,
    pub timeout_secs: Option<i32>,
    pub max_retries: Option<i32>,
}

impl Store {
    /// Inserts catalog jobs that are missing and refreshes the descriptive columns of known ones;
    /// the schedule follows a changed default only while no operator has touched it.
    pub async fn upsert_catalog(
        &self,
        entries: &[crate::catalog::CatalogEntry],
        timezone: &str,
    ) -> Result<usize> {
        let existing: HashMap<String, job::Model> = job::Entity::find()
            .all(&self.db)
            .await
            .ctx("loading jobs")?
            .into_iter()
            .map(|j| (j.name.clone(), j))
            .collect();
        let t = now();
        let mut inserted = 0;
        for e in entries {
            let (service, task) = e.name.split_once('/').unwrap_or((e.name, e.name));
            match existing.get(e.name) {
                None => {
                    let am = job::ActiveModel {
                        name: Set(e.name.to_string()),
                        service: Set(service.to_string()),
                        task: Set(task.to_string()),
                        description: Set(e.description.to_string()),
                        schedule: Set(e.schedule.to_string()),
                        default_schedule: Set(e.schedule.to_string()),
                        timezone: Set(timezone.to_string()),
                        enabled: Set(true),
                        overlap_policy: Set(OverlapPolicy::Skip),
                        missed_tick_policy: Set(MissedTickPolicy::RunOnce),
                        catch_up_window_secs: Set(3600),
                        timeout_secs: Set(3600),
                        max_retries: Set(3),
                        retry_backoff_secs: Set(5),
                        operator_modified: Set(false),
                        schedule_since: Set(t),
                        created_at: Set(t),
                        updated_at: Set(t),
                        updated_by: Set(None),
                    };
                    let res = job::Entity::insert(am)
                        .on_conflict_do_nothing()
                        .exec_without_returning(&self.db)
                        .await
                        .ctx("inserting a catalog job")?;
                    if matches!(res, TryInsertResult::Inserted(_)) {
                        inserted += 1;
                    }
                }
                Some(j) if j.description != e.description || j.default_schedule != e.schedule => {
                    let mut q = job::Entity::update_many()
                        .col_expr(job::Column::Description, Expr::value(e.description))
                        .col_expr(job::Column::DefaultSchedule, Expr::value(e.schedule))
                        .filter(job::Column::Name.eq(e.name));
                    if !j.operator_modified {
                        q = q.col_expr(job::Column::Schedule, Expr::value(e.schedule));
                    }
                    q.exec(&self.db).await.ctx("refreshing a catalog job")?;
                }
                Some(_) => {}
            }
        }
        Ok(inserted)
    }

    pub async fn jobs(&self, service: Option<&str>) -> Result<Vec<job::Model>> {
        let mut q = job::Entity::find().order_by_asc(job::Column::Name);
        if let Some(s) = service {
            q = q.filter(job::Column::Service.eq(s));
        }
        q.all(&self.db).await.ctx("listing jobs")
    }

    pub async fn job(&self, name: &str) -> Result<Option<job::Model>> {
        job::Entity::find_by_id(name.to_string())
            .one(&self.db)
            .await
            .ctx("reading a job")
    }

    /// Applies already validated changes. A changed schedule, timezone or a resume moves
    /// `schedule_since`, so ticks from before the change are never caught up. Tells the other
    /// replicas, which reload their job cache.
    pub async fn update_job(
        &self,
        name: &str,
        changes: JobChanges,
        by: Option<&str>,
        origin: &str,
    ) -> Result<Option<job::Model>> {
        let Some(current) = self.job(name).await? else {
            return Ok(None);
        };
        let t = now();
        let mut am: job::ActiveModel = current.clone().into();
        let mut reschedule = false;
        if let Some(s) = changes.schedule.filter(|s| *s != current.schedule) {
            am.schedule = Set(s);
            am.operator_modified = Set(true);
            reschedule = true;
        }
        if let Some(tz) = changes.timezone.filter(|tz| *tz != current.timezone) {
            am.timezone = Set(tz);
            am.operator_modified = Set(true);
            reschedule = true;
        }
        if let Some(e) = changes.enabled.filter(|e| *e != current.enabled) {
            am.enabled = Set(e);
            reschedule |= e;
        }
        if let Some(p) = changes.overlap_policy {
            am.overlap_policy = Set(p);
        }
        if let Some(p) = changes.missed_tick_policy {
            am.missed_tick_policy = Set(p);
        }
        if let Some(v) = changes.catch_up_window_secs {
            am.catch_up_window_secs = Set(v);
        }
        if let Some(v) = changes.timeout_secs {
            am.timeout_secs = Set(v);
        }
        if let Some(v) = changes.max_retries {
            am.max_retries = Set(v);
        }
        if reschedule {
            am.schedule_since = Set(t);
        }
        am.updated_at = Set(t);
        am.updated_by = Set(by.map(str::to_string));
        let updated = job::Entity::update(am)
            .exec(&self.db)
            .await
            .ctx("updating a job")?;
        self.notify(&self.db, &[crate::engine::notify::jobs_changed(origin)])
            .await?;
        Ok(Some(updated))
    }
}
