//! The run-engine benchmark's load client (`bench/runs.sh` starts the databases, the release
//! binaries and pgbench, then runs this). It measures, against one control plane and one
//! executor on Postgres:
//!
//! - idle control-plane transactions per second (executor connected, nothing to do), and the
//!   same with `BENCH_WATCHERS` `WatchRun` streams open on a queued run;
//! - runs per second from the first `TriggerJob` to the last `SUCCEEDED`, for `BENCH_RUNS`
//!   triggers of `data-cleanup/clean-cache` (overlap allowed) at `BENCH_CONCURRENCY` in flight,
//!   beside the pgbench floor the script measured (`BENCH_FLOOR_TPS`), and control-plane and
//!   ticketing transactions per run (from `pg_stat_database`, minus this client's own queries
//!   and the idle rate);
//! - tick lateness for 10 jobs firing every second for `BENCH_TICK_SECONDS`: row created and
//!   run started, after the tick, p50 / p99 / max;
//! - resident memory (now and peak) of both processes.
//!
//! Transaction counts come from `pg_stat_database`, which backends update at most once a
//! second and within ten seconds of going idle: every reading waits for the counters to settle.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use ticketmax_proto::v1::{
    self, GetStatusRequest, TriggerJobRequest, UpdateJobRequest, WatchRunRequest,
    job_service_client::JobServiceClient,
};
use tonic::transport::Channel;

use ticketmax_e2e::jobs::CLEAN_CACHE;
/// Ten jobs that do (almost) nothing on an empty ticketing database.
const TICKING: [&str; 10] = [
    "data-cleanup/clean-cache",
    "event-management/update-event-statuses",
    "booking-cleanup/cancel-expired-bookings",
    "payment-cleanup/cleanup-abandoned-payments",
    "payment-cleanup/handle-payment-timeouts",
    "event-management/archive-past-events",
    "analytics/monitor-real-time-performance",
    "data-cleanup/clean-temporary-files",
    "data-cleanup/clean-old-logs",
    "booking-cleanup/send-pending-booking-confirmations",
];
/// pg_stat_database settles within PGSTAT_IDLE_INTERVAL (10 s) of a backend going idle.
const STATS_SETTLE: Duration = Duration::from_secs(11);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_required(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is required"))
}

struct Db {
    conn: DatabaseConnection,
    name: String,
    /// Statements this client ran on it since the last reading.
    own: u64,
}

impl Db {
    async fn connect(url: &str) -> Result<Self> {
        let conn = Database::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let name = url.rsplit('/').next().unwrap_or("").to_string();
        Ok(Self { conn, name, own: 0 })
    }

    async fn scalar_i64(&mut self, sql: &str) -> Result<i64> {
        self.own += 1;
        let row = self
            .conn
            .query_one_raw(Statement::from_string(
                self.conn.get_database_backend(),
                sql,
            ))
            .await?
            .context("no row")?;
        Ok(row.try_get_by_index::<i64>(0)?)
    }

    async fn exec(&mut self, sql: &str) -> Result<()> {
        self.own += 1;
        self.conn.execute_unprepared(sql).await?;
        Ok(())
    }

    /// Committed transactions of this database so far (the reading itself excluded).
    async fn commits(&mut self) -> Result<i64> {
        let sql = format!(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = '{}'",
            self.name
        );
        let n = self.scalar_i64(&sql).await?;
        Ok(n)
    }

    async fn times(&mut self, sql: &str) -> Result<Vec<f64>> {
        self.own += 1;
        let rows = self
            .conn
            .query_all_raw(Statement::from_string(
                self.conn.get_database_backend(),
                sql,
            ))
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get_by_index::<f64>(0)?))
            .collect()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    #[allow(clippy::cast_precision_loss)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU seconds of the `postgres` processes alive now: the backends of `cp_db`, those of
/// `tk_db`, and all the others (the postmaster, WAL writer, checkpointer...). A backend's
/// title names its database (`postgres: [cluster: ]user db host(port) state`).
fn postgres_cpu_secs(cp_db: &str, tk_db: &str) -> [f64; 3] {
    let mut out = [0.0; 3];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return [f64::NAN; 3];
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().into_string() else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres");
        let Some(secs) = is_postgres.then(|| cpu_secs(&pid)).flatten() else {
            continue;
        };
        let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let has = |db: &str| {
            title
                .split(|c: char| c.is_whitespace() || c == '\0')
                .any(|w| w == db)
        };
        let slot = if has(cp_db) {
            0
        } else if has(tk_db) {
            1
        } else {
            2
        };
        out[slot] += secs;
    }
    out
}

/// CPU seconds of the control plane, the executor, Postgres and this client, read together.
#[derive(Clone, Copy)]
struct Cpu {
    cp: f64,
    ex: f64,
    /// Backends of the control-plane database, of the ticketing database, and the rest.
    pg: [f64; 3],
    client: f64,
}

impl Cpu {
    fn read(cp_pid: &str, ex_pid: &str, cp_db: &str, tk_db: &str) -> Self {
        Self {
            cp: cpu_secs(cp_pid).unwrap_or(f64::NAN),
            ex: cpu_secs(ex_pid).unwrap_or(f64::NAN),
            pg: postgres_cpu_secs(cp_db, tk_db),
            client: cpu_secs("self").unwrap_or(f64::NAN),
        }
    }
}

fn rss_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn set_job(
    api: &mut JobServiceClient<Channel>,
    job: &str,
    schedule: &str,
    allow: bool,
) -> Result<()> {
    api.update_job(UpdateJobRequest {
        name: job.into(),
        schedule: Some(schedule.into()),
        overlap_policy: if allow {
            v1::OverlapPolicy::Allow as i32
        } else {
            v1::OverlapPolicy::Unspecified as i32
        },
        ..Default::default()
    })
    .await
    .with_context(|| format!("UpdateJob {job}"))?;
    Ok(())
}

/// Transactions per second of `db` over `window`, minus this client's own statements.
async fn rate(db: &mut Db, window: Duration) -> Result<f64> {
    tokio::time::sleep(STATS_SETTLE).await;
    let start = db.commits().await?;
    db.own = 0;
    tokio::time::sleep(window).await;
    let end = db.commits().await?;
    #[allow(clippy::cast_precision_loss)]
    Ok((end - start - i64::try_from(db.own).unwrap_or(0)).max(0) as f64 / window.as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cp_url = env_required("BENCH_CP_URL")?;
    let mut cp = Db::connect(&env_required("BENCH_CP_DB")?).await?;
    let mut tk = Db::connect(&env_required("BENCH_TK_DB")?).await?;
    let cp_pid = std::env::var("BENCH_CP_PID").unwrap_or_default();
    let ex_pid = std::env::var("BENCH_EX_PID").unwrap_or_default();
    let runs: usize = env_or("BENCH_RUNS", 2000);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let tick_secs: u64 = env_or("BENCH_TICK_SECONDS", 40);
    let idle_secs: u64 = env_or("BENCH_IDLE_SECONDS", 30);
    let watchers: usize = env_or("BENCH_WATCHERS", 200);
    let floor_tps: f64 = env_or("BENCH_FLOOR_TPS", f64::NAN);

    let channel = tonic::transport::Endpoint::from_shared(cp_url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {cp_url}"))?;
    let mut api = JobServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = api.get_status(GetStatusRequest {}).await?.into_inner();
        if status.executors.iter().any(|e| e.live) {
            break;
        }
        if Instant::now() > deadline {
            bail!("no live executor after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing fires on its own during the measurements.
    let jobs = api
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner()
        .jobs;
    for j in &jobs {
        set_job(&mut api, &j.name, "0 0 1 1 *", j.name == CLEAN_CACHE).await?;
    }

    // ---------------------------------------------------------------- idle
    eprintln!("idle: {idle_secs} s with the executor connected...");
    let idle = rate(&mut cp, Duration::from_secs(idle_secs)).await?;

    // ---------------------------------------------------------------- watchers on a queued run
    eprintln!("idle with {watchers} WatchRun streams on a queued run...");
    // A run waiting out a retry backoff of an hour: queued, and staying so.
    let run_id = uuid::Uuid::now_v7().to_string();
    // Older schemas (to measure earlier builds) have no last_seq.
    let numbered = cp
        .scalar_i64(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'runs' AND column_name = 'last_seq'",
        )
        .await?
        > 0;
    let (seq_col, seq_val) = if numbered {
        (", last_seq", ", 1")
    } else {
        ("", "")
    };
    cp.exec(&format!(
        "INSERT INTO runs (id, job, state, trigger, scheduled_for, attempt, not_before, \
         cancel_requested, created_at, updated_at{seq_col}) VALUES ('{run_id}', \
         '{CLEAN_CACHE}', 'queued', 'manual', now(), 2, now() + interval '1 hour', false, \
         now(), now(){seq_val}); \
         INSERT INTO run_events (run_id, seq, at, kind, payload) VALUES ('{run_id}', 1, now(), \
         'state', '{{\"state\":\"queued\",\"attempt\":2,\"message\":\"retrying\"}}')"
    ))
    .await?;
    let mut streams = Vec::new();
    for _ in 0..watchers {
        let mut client = JobServiceClient::new(channel.clone());
        let mut s = client
            .watch_run(WatchRunRequest {
                run_id: run_id.clone(),
                after_seq: 0,
            })
            .await?
            .into_inner();
        // The replayed event arrives; then the stream waits.
        s.message().await?;
        streams.push(s);
    }
    let watched = rate(&mut cp, Duration::from_secs(idle_secs)).await?;
    drop(streams);
    cp.exec(&format!(
        "DELETE FROM run_events WHERE run_id = '{run_id}'; DELETE FROM runs WHERE id = '{run_id}'"
    ))
    .await?;

    // ---------------------------------------------------------------- throughput
    eprintln!("throughput: {runs} triggers at {concurrency} in flight...");
    tokio::time::sleep(STATS_SETTLE).await;
    let cp_before = cp.commits().await?;
    let tk_before = tk.commits().await?;
    cp.own = 0;
    tk.own = 0;
    let started_wall = Utc::now();
    let started = Instant::now();
    let cpu_before = Cpu::read(&cp_pid, &ex_pid, &cp.name, &tk.name);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let mut client = JobServiceClient::new(channel.clone());
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < runs {
                let run = client
                    .trigger_job(TriggerJobRequest {
                        job: CLEAN_CACHE.into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                ids.push(run.id);
            }
            Ok::<_, tonic::Status>(ids)
        }));
    }
    let mut triggered = 0;
    for w in workers {
        triggered += w.await??.len();
    }
    let trigger_secs = started.elapsed().as_secs_f64();
    let since = started_wall.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    let done_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = cp
            .scalar_i64(&format!(
                "SELECT count(*) FROM runs WHERE job = '{CLEAN_CACHE}' AND created_at >= '{since}' \
                 AND state IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'skipped')"
            ))
            .await?;
        if usize::try_from(n).unwrap_or(0) >= triggered {
            break;
        }
        if Instant::now() > done_deadline {
            bail!("only {n} of {triggered} runs ended within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_after = Cpu::read(&cp_pid, &ex_pid, &cp.name, &tk.name);
    let succeeded = cp
        .scalar_i64(&format!(
            "SELECT count(*) FROM runs WHERE job = '{CLEAN_CACHE}' AND created_at >= '{since}' \
             AND state = 'succeeded'"
        ))
        .await?;
    let span = cp
        .times(&format!(
            "SELECT EXTRACT(EPOCH FROM (max(finished_at) - '{since}'::timestamptz))::float8 \
             FROM runs WHERE job = '{CLEAN_CACHE}' AND created_at >= '{since}'"
        ))
        .await?
        .first()
        .copied()
        .unwrap_or(f64::NAN);
    // Where a run's time goes: waiting to be claimed, then on the executor until settled.
    let mut queued = cp
        .times(&format!(
            "SELECT (EXTRACT(EPOCH FROM (started_at - created_at)) * 1000)::float8 FROM runs \
             WHERE job = '{CLEAN_CACHE}' AND created_at >= '{since}' AND started_at IS NOT NULL"
        ))
        .await?;
    let mut running = cp
        .times(&format!(
            "SELECT (EXTRACT(EPOCH FROM (finished_at - started_at)) * 1000)::float8 FROM runs \
             WHERE job = '{CLEAN_CACHE}' AND created_at >= '{since}' AND finished_at IS NOT NULL"
        ))
        .await?;
    queued.sort_by(f64::total_cmp);
    running.sort_by(f64::total_cmp);
    let rss_cp_peak = rss_kib(&cp_pid, "VmHWM:");
    let rss_ex_peak = rss_kib(&ex_pid, "VmHWM:");
    tokio::time::sleep(STATS_SETTLE).await;
    let own_cp = cp.own;
    let own_tk = tk.own;
    let cp_after = cp.commits().await?;
    let tk_after = tk.commits().await?;
    // The idle rate ran meanwhile too (load phase and the settle): take it out.
    let elapsed = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let cp_per_run = ((cp_after - cp_before) as f64 - own_cp as f64 - idle * elapsed).max(0.0)
        / triggered as f64;
    #[allow(clippy::cast_precision_loss)]
    let tk_per_run = ((tk_after - tk_before) as f64 - own_tk as f64).max(0.0) / triggered as f64;
    #[allow(clippy::cast_precision_loss)]
    let runs_per_sec = succeeded as f64 / span;

    // ---------------------------------------------------------------- ticks
    eprintln!(
        "ticks: {} jobs every second for {tick_secs} s...",
        TICKING.len()
    );
    let tick_from = Utc::now() + chrono::Duration::seconds(2);
    for job in TICKING {
        set_job(&mut api, job, "* * * * * *", true).await?;
    }
    tokio::time::sleep(Duration::from_secs(tick_secs + 2)).await;
    let tick_until = Utc::now();
    for job in TICKING {
        set_job(&mut api, job, "0 0 1 1 *", true).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    let window = format!(
        "tick_at >= '{}' AND tick_at <= '{}' AND state <> 'skipped'",
        fmt(tick_from),
        fmt(tick_until)
    );
    let mut created = cp
        .times(&format!(
            "SELECT (EXTRACT(EPOCH FROM (created_at - tick_at)) * 1000)::float8 FROM runs \
             WHERE {window}"
        ))
        .await?;
    let mut started_late = cp
        .times(&format!(
            "SELECT (EXTRACT(EPOCH FROM (started_at - tick_at)) * 1000)::float8 FROM runs \
             WHERE {window} AND started_at IS NOT NULL"
        ))
        .await?;
    created.sort_by(f64::total_cmp);
    started_late.sort_by(f64::total_cmp);
    let rss_cp = rss_kib(&cp_pid, "VmRSS:");
    let rss_ex = rss_kib(&ex_pid, "VmRSS:");

    // ---------------------------------------------------------------- report
    let mib =
        |k: Option<u64>| k.map_or("?".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
    println!();
    println!("| figure | value | beside |");
    println!("|---|---|---|");
    println!(
        "| runs per second, trigger to SUCCEEDED ({succeeded} of {triggered} runs, {concurrency} in flight; triggers sent in {trigger_secs:.2} s) | {runs_per_sec:.0} | pgbench floor {floor_tps:.0} tps: ratio {:.2} |",
        runs_per_sec / floor_tps
    );
    println!(
        "| of which queued (created to started), p50 / p99 | {:.1} / {:.1} ms | |",
        percentile(&queued, 0.5),
        percentile(&queued, 0.99)
    );
    println!(
        "| of which running (started to finished), p50 / p99 | {:.1} / {:.1} ms | |",
        percentile(&running, 0.5),
        percentile(&running, 0.99)
    );
    #[allow(clippy::cast_precision_loss)]
    let ms_per_run = |a: f64, b: f64| (b - a) * 1000.0 / triggered as f64;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!(
        "| CPU per run: control plane / executor / load client | {:.2} / {:.2} / {:.2} ms | |",
        ms_per_run(cpu_before.cp, cpu_after.cp),
        ms_per_run(cpu_before.ex, cpu_after.ex),
        ms_per_run(cpu_before.client, cpu_after.client),
    );
    println!(
        "| CPU per run: Postgres backends of the control-plane db / ticketing db / other Postgres processes | {:.2} / {:.2} / {:.2} ms | {} cores at this rate: {:.2} ms of CPU per run |",
        ms_per_run(cpu_before.pg[0], cpu_after.pg[0]),
        ms_per_run(cpu_before.pg[1], cpu_after.pg[1]),
        ms_per_run(cpu_before.pg[2], cpu_after.pg[2]),
        cores,
        f64::from(u32::try_from(cores).unwrap_or(1)) * 1000.0 / runs_per_sec
    );
    println!("| control-plane transactions per run | {cp_per_run:.2} | |");
    println!("| ticketing transactions per run | {tk_per_run:.2} | |");
    println!(
        "| ticks: row created late, p50 / p99 / max ({} ticks) | {:.1} / {:.1} / {:.1} ms | |",
        created.len(),
        percentile(&created, 0.5),
        percentile(&created, 0.99),
        created.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| ticks: run started late, p50 / p99 / max | {:.1} / {:.1} / {:.1} ms | |",
        percentile(&started_late, 0.5),
        percentile(&started_late, 0.99),
        started_late.last().copied().unwrap_or(f64::NAN)
    );
    println!("| idle control-plane transactions per second | {idle:.2} | |");
    println!("| the same with {watchers} WatchRun streams open on a queued run | {watched:.2} | |");
    println!(
        "| RSS control plane: end / peak | {} / {} | |",
        mib(rss_cp),
        mib(rss_cp_peak)
    );
    println!(
        "| RSS executor: end / peak | {} / {} | |",
        mib(rss_ex),
        mib(rss_ex_peak)
    );
    Ok(())
}
