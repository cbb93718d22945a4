//! data-cleanup: cache, temporary files, orphaned documents, logs, disk and health checks,
//! database maintenance.
use std::path::{Path, PathBuf};

use chrono::Duration;
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::{Value, json};

use super::aggregates::count;
use super::files::{self, AgedFile};
use super::window::day_offset;
use super::{ChunkDone, ChunkStep, aggregates, run_chunks, zero};
use crate::db::{Dialect, Sql, col};
use crate::schema::TABLES;
use crate::tasks::{
    DbContext, Param, Task, TaskContext, TaskError, TaskOutput, TaskRegistry, params,
};

pub fn register(r: &mut TaskRegistry) {
    r.register(CleanCache);
    r.register(CleanTemporaryFiles);
    r.register(CleanOrphanedDocuments);
    r.register(GenerateSystemHealthReport);
    r.register(CleanOldLogs);
    r.register(EmergencyDiskSpaceCheck);
    r.register(OptimizeDatabase);
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TaskError {
    let context = context.into();
    move |source| TaskError::Io { context, source }
}

/// Expired cache entries are deleted; the summary says how many bytes that freed.
pub struct CleanCache;

struct CacheChunk {
    batch: u64,
}

#[async_trait::async_trait]
impl ChunkStep for CacheChunk {
    async fn apply(
        &self,
        ctx: &TaskContext,
        txn: &DatabaseTransaction,
    ) -> Result<ChunkDone, TaskError> {
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        let limit = super::limit_literal(self.batch);
        let d = ctx.dialect;
        q.push(&format!(
            "{}DELETE FROM cache_entries WHERE key IN (SELECT key FROM picked) \
             AND {} RETURNING size_bytes",
            d.picked(
                &format!(
                    "SELECT c.key FROM cache_entries c WHERE {} ORDER BY {} LIMIT {limit}",
                    d.cmp("c.expires_at", "<", &now),
                    d.ts("c.expires_at")
                ),
                "c"
            ),
            d.cmp("expires_at", "<", &now),
        ));
        let rows = q
            .fetch_all(txn)
            .await
            .context("deleting expired cache entries")?;
        let mut bytes = 0_i64;
        for r in &rows {
            bytes += col::<i64>(r, 0).context("reading entry sizes")?;
        }
        Ok(ChunkDone {
            handled: rows.len() as u64,
            counts: vec![
                ("deleted", rows.len() as u64),
                ("bytes_freed", bytes.max(0) as u64),
            ],
            mail_queued: false,
        })
    }
}

#[async_trait::async_trait]
impl Task for CleanCache {
    fn name(&self) -> &'static str {
        "data-cleanup/clean-cache"
    }

    fn params(&self) -> &'static [Param] {
        params::CHUNKED
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["deleted", "bytes_freed"]);
        let mut q = Sql::new(ctx.dialect);
        let now = q.bind(ctx.now);
        q.push(&format!(
            "SELECT COUNT(*) FROM cache_entries WHERE {}",
            ctx.dialect.cmp("expires_at", "<", &now)
        ));
        let total = count(q, ctx, "counting expired cache entries").await?;
        run_chunks(
            ctx,
            &CacheChunk {
                batch: ctx.batch_size(1000)?,
            },
            total,
            "expired cache entries",
        )
        .await?;
        let mut q = Sql::new(ctx.dialect);
        q.push("SELECT COUNT(*) FROM cache_entries");
        ctx.set("remaining", count(q, ctx, "counting cache entries").await?);
        ctx.info(format!(
            "Deleted {} expired cache entries, freed {} bytes",
            ctx.count("deleted"),
            ctx.count("bytes_freed")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Deletes `files` in batches with a cancellation check between them; counts into the summary.
async fn remove_in_batches(
    ctx: &TaskContext,
    files: Vec<AgedFile>,
    what: &str,
) -> Result<(), TaskError> {
    let total = files.len() as u64;
    let mut done = 0;
    ctx.progress(0, total, format!("{what}: 0/{total}"));
    for batch in files.chunks(200) {
        ctx.checkpoint()?;
        let (n, bytes) = files::remove(batch.to_vec())
            .await
            .map_err(io(format!("deleting {what}")))?;
        ctx.add("files_deleted", n);
        ctx.add("bytes_freed", bytes);
        done += batch.len() as u64;
        ctx.progress(done, total, format!("{what}: {done}/{total}"));
    }
    Ok(())
}

const TEMP_FILE_MAX_AGE_HOURS: i64 = 24;

/// Files in the temporary uploads directory older than a day are deleted.
pub struct CleanTemporaryFiles;

async fn clean_temp_files(ctx: &TaskContext, max_age: Duration) -> Result<(), TaskError> {
    let dir = ctx.settings.dirs.uploads_tmp.clone();
    let old = files::older_than(dir.clone(), ctx.now - max_age, files::any_file)
        .await
        .map_err(io(format!("listing {}", dir.display())))?;
    remove_in_batches(ctx, old, "temporary files").await
}

#[async_trait::async_trait]
impl Task for CleanTemporaryFiles {
    fn name(&self) -> &'static str {
        "data-cleanup/clean-temporary-files"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["files_deleted", "bytes_freed"]);
        clean_temp_files(ctx, Duration::hours(TEMP_FILE_MAX_AGE_HOURS)).await?;
        ctx.info(format!(
            "Deleted {} temporary files ({} bytes)",
            ctx.count("files_deleted"),
            ctx.count("bytes_freed")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Files in the documents directory older than 30 days that no `documents` row references
/// (by path relative to the directory, or absolute) are deleted.
pub struct CleanOrphanedDocuments;

const ORPHAN_MIN_AGE_DAYS: i64 = 30;

/// `threshold_percent` overrides TICKETMAX_DISK_ALERT_PERCENT for one run.
const DISK_CHECK_PARAMS: &[Param] = &[
    params::AS_OF,
    Param::integer(
        "threshold_percent",
        "disk usage that raises an alert",
        1,
        100,
    ),
];

async fn referenced(
    ctx: &TaskContext,
    dir: &Path,
    batch: &[AgedFile],
) -> Result<Vec<bool>, TaskError> {
    let forms = |f: &AgedFile| {
        let relative = f
            .path
            .strip_prefix(dir)
            .unwrap_or(&f.path)
            .display()
            .to_string();
        let absolute = std::path::absolute(&f.path)
            .unwrap_or_else(|_| f.path.clone())
            .display()
            .to_string();
        [relative, absolute, f.path.display().to_string()]
    };
    let mut q = Sql::new(ctx.dialect);
    let list = q.bind_list(batch.iter().flat_map(forms));
    q.push(&format!(
        "SELECT path FROM documents WHERE path IN ({list})"
    ));
    let known: std::collections::HashSet<String> = q
        .fetch_all(&ctx.db)
        .await
        .context("looking up document references")?
        .iter()
        .map(|r| col::<String>(r, 0))
        .collect::<Result<_, _>>()
        .context("reading document paths")?;
    Ok(batch
        .iter()
        .map(|f| forms(f).iter().any(|p| known.contains(p)))
        .collect())
}

#[async_trait::async_trait]
impl Task for CleanOrphanedDocuments {
    fn name(&self) -> &'static str {
        "data-cleanup/clean-orphaned-documents"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["files_checked", "files_deleted", "bytes_freed"]);
        let dir = ctx.settings.dirs.documents.clone();
        let old = files::older_than(
            dir.clone(),
            ctx.now - Duration::days(ORPHAN_MIN_AGE_DAYS),
            files::any_file,
        )
        .await
        .map_err(io(format!("listing {}", dir.display())))?;
        let total = old.len() as u64;
        let mut done = 0;
        for batch in old.chunks(300) {
            ctx.checkpoint()?;
            let refs = referenced(ctx, &dir, batch).await?;
            let orphans: Vec<AgedFile> = batch
                .iter()
                .zip(refs)
                .filter(|(_, r)| !r)
                .map(|(f, _)| f.clone())
                .collect();
            let (n, bytes) = files::remove(orphans)
                .await
                .map_err(io("deleting orphaned documents"))?;
            ctx.add("files_checked", batch.len() as u64);
            ctx.add("files_deleted", n);
            ctx.add("bytes_freed", bytes);
            done += batch.len() as u64;
            ctx.progress(done, total, format!("documents checked: {done}/{total}"));
        }
        ctx.info(format!(
            "Deleted {} orphaned documents of {} old files",
            ctx.count("files_deleted"),
            ctx.count("files_checked")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// `*.log` files in the logs directory older than 30 days are deleted.
pub struct CleanOldLogs;

#[async_trait::async_trait]
impl Task for CleanOldLogs {
    fn name(&self) -> &'static str {
        "data-cleanup/clean-old-logs"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["files_deleted", "bytes_freed"]);
        let dir = ctx.settings.dirs.logs.clone();
        let old = files::older_than(dir.clone(), ctx.now - Duration::days(30), files::log_file)
            .await
            .map_err(io(format!("listing {}", dir.display())))?;
        remove_in_batches(ctx, old, "old log files").await?;
        ctx.info(format!(
            "Deleted {} old log files",
            ctx.count("files_deleted")
        ));
        Ok(ctx.output(Vec::new()))
    }
}

/// Usage of the file system holding one data directory.
#[derive(serde::Serialize)]
struct Disk {
    dir: String,
    used_bytes: u64,
    total_bytes: u64,
    percent: f64,
}

/// Disk usage of the file systems holding the data directories, one entry per directory.
fn disk_report(dirs: &[&PathBuf]) -> Vec<Disk> {
    let mut out: Vec<Disk> = Vec::new();
    for dir in dirs {
        // A directory that does not exist yet lives on its nearest existing ancestor's disk.
        let mut probe: &Path = dir;
        while !probe.exists() {
            match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p,
                _ => {
                    probe = Path::new(".");
                    break;
                }
            }
        }
        if let Ok((used, total)) = files::disk_usage(probe) {
            let percent = if total == 0 {
                0.0
            } else {
                (used as f64 / total as f64 * 1000.0).round() / 10.0
            };
            let name = dir.display().to_string();
            if !out.iter().any(|d| d.dir == name) {
                out.push(Disk {
                    dir: name,
                    used_bytes: used,
                    total_bytes: total,
                    percent,
                });
            }
        }
    }
    out
}

/// Memory, uptime, database, disk and outbox health, and the success rates of the runs this
/// executor finished; alerts admins above the thresholds.
pub struct GenerateSystemHealthReport;

#[async_trait::async_trait]
impl Task for GenerateSystemHealthReport {
    fn name(&self) -> &'static str {
        "data-cleanup/generate-system-health-report"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let settings = &ctx.settings;
        let memory = files::resident_memory();
        let uptime = (chrono::Utc::now() - settings.started_at).num_seconds();

        let started = std::time::Instant::now();
        let mut q = Sql::new(ctx.dialect);
        q.push("SELECT 1");
        let db_ok = q.fetch_one(&ctx.db).await.is_ok();
        let db_latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut tables = serde_json::Map::new();
        for table in [
            "users",
            "events",
            "bookings",
            "payments",
            "email_outbox",
            "cache_entries",
        ] {
            let mut q = Sql::new(ctx.dialect);
            q.push(&format!("SELECT COUNT(*) FROM {table}"));
            tables.insert(
                table.into(),
                json!(count(q, ctx, &format!("counting {table}")).await?),
            );
        }
        let outbox_by_status = {
            let mut q = Sql::new(ctx.dialect);
            q.push("SELECT status, COUNT(*) FROM email_outbox GROUP BY status ORDER BY status");
            let mut m = serde_json::Map::new();
            for r in q.fetch_all(&ctx.db).await.context("counting the outbox")? {
                m.insert(
                    col::<String>(&r, 0).context("outbox status")?,
                    json!(col::<i64>(&r, 1).context("outbox count")?),
                );
            }
            m
        };
        let d = &settings.dirs;
        let disks = disk_report(&[&d.data, &d.uploads_tmp, &d.documents, &d.logs, &d.mail]);

        let mut warnings = Vec::new();
        let limit = settings.memory_alert_mb * 1024 * 1024;
        if let Some(m) = memory
            && m > limit
        {
            warnings.push(format!(
                "memory {} MB above {} MB",
                m / (1024 * 1024),
                settings.memory_alert_mb
            ));
        }
        if !db_ok {
            warnings.push("database did not answer".to_owned());
        }
        for Disk { dir, percent, .. } in &disks {
            if *percent > f64::from(settings.disk_alert_percent) {
                warnings.push(format!(
                    "disk of {dir} {percent}% full (threshold {}%)",
                    settings.disk_alert_percent
                ));
            }
        }
        if let Some(failed) = outbox_by_status.get("failed").and_then(Value::as_u64)
            && failed > 0
        {
            warnings.push(format!("{failed} e-mails failed permanently"));
        }

        let day = day_offset(ctx.tz, ctx.now, 0);
        let body = json!({
            "period": day.period,
            "memory_bytes": memory,
            "memory_alert_mb": settings.memory_alert_mb,
            "uptime_seconds": uptime,
            "database": {"ok": db_ok, "latency_ms": (db_latency_ms * 10.0).round() / 10.0, "rows": tables},
            "outbox": outbox_by_status,
            "disks": disks,
            "runs": ctx.run_stats.snapshot(),
            "warnings": warnings,
            "healthy": warnings.is_empty(),
        });
        ctx.set("healthy", warnings.is_empty());
        ctx.set("warnings", warnings.len() as u64);
        zero(ctx, &["alerts_queued"]);
        if !warnings.is_empty() {
            aggregates::alert(
                ctx,
                &format!("system-health:{}", day.period),
                "system health",
                &warnings,
                &body,
            )
            .await?;
        }
        ctx.info(format!("System health: {} warning(s)", warnings.len()));
        // A snapshot: memory, uptime and latency differ on every run, so a re-run is not news.
        aggregates::report_mailed(
            ctx,
            "system-health",
            &day.period,
            body,
            aggregates::ReportMail::FirstOnly,
        )
        .await
    }
}

/// Disk usage of the data directories; above the threshold, temporary files older than an hour
/// are deleted and admins alerted (once per hour).
pub struct EmergencyDiskSpaceCheck;

#[async_trait::async_trait]
impl Task for EmergencyDiskSpaceCheck {
    fn name(&self) -> &'static str {
        "data-cleanup/emergency-disk-space-check"
    }

    fn params(&self) -> &'static [Param] {
        DISK_CHECK_PARAMS
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["files_deleted", "bytes_freed", "alerts_queued"]);
        let threshold = match ctx.param_u64("threshold_percent")? {
            Some(t) => t as f64,
            None => f64::from(ctx.settings.disk_alert_percent),
        };
        let d = &ctx.settings.dirs;
        let disks = disk_report(&[&d.data, &d.uploads_tmp, &d.documents, &d.logs, &d.mail]);
        let max = disks.iter().map(|d| d.percent).fold(0.0, f64::max);
        ctx.set("max_usage_percent", max);
        let warnings: Vec<String> = disks
            .iter()
            .filter(|d| d.percent > threshold)
            .map(|d| {
                format!(
                    "disk of {} is {}% full (threshold {threshold}%)",
                    d.dir, d.percent
                )
            })
            .collect();
        ctx.set("emergency", !warnings.is_empty());
        if warnings.is_empty() {
            ctx.info(format!("Disk usage fine: at most {max}%"));
            return Ok(ctx.output(Vec::new()));
        }
        clean_temp_files(ctx, Duration::hours(1)).await?;
        let body = json!({
            "disks": disks,
            "temp_files_deleted": ctx.count("files_deleted"),
            "bytes_freed": ctx.count("bytes_freed"),
        });
        let hour = ctx.now.with_timezone(&ctx.tz).format("%Y-%m-%dT%H");
        aggregates::alert(ctx, &format!("disk:{hour}"), "disk space", &warnings, &body).await?;
        Ok(ctx.output(Vec::new()))
    }
}

/// Refreshes planner statistics (and reclaims space on Postgres) for the ticketing tables.
pub struct OptimizeDatabase;

#[async_trait::async_trait]
impl Task for OptimizeDatabase {
    fn name(&self) -> &'static str {
        "data-cleanup/optimize-database"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        zero(ctx, &["tables"]);
        let total = TABLES.len() as u64;
        for (i, table) in TABLES.iter().enumerate() {
            ctx.checkpoint()?;
            // VACUUM cannot run inside a transaction: this runs on a pooled connection directly.
            let sql = match ctx.dialect {
                Dialect::Postgres => format!("VACUUM (ANALYZE) {table}"),
                Dialect::Sqlite => format!("ANALYZE {table}"),
            };
            ctx.db
                .execute_unprepared(&sql)
                .await
                .context(format!("running {sql}"))?;
            ctx.add("tables", 1);
            ctx.progress(i as u64 + 1, total, format!("{table} optimized"));
        }
        if ctx.dialect == Dialect::Sqlite {
            ctx.db
                .execute_unprepared("PRAGMA optimize")
                .await
                .context("running PRAGMA optimize")?;
        }
        ctx.info(format!("Optimized {total} tables"));
        Ok(ctx.output(Vec::new()))
    }
}
