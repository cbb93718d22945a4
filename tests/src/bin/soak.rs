//! Soak test: 3 control-plane replicas and 3 executors on one Postgres, every catalog
//! job (32) on an every-second schedule, while random replicas and executors are SIGKILLed and
//! restarted. At the end all jobs are paused, the queue drains, and the control-plane database
//! is audited: ticks expected (every second of every job between its first and last recorded
//! tick; jobs stay enabled throughout), run, skipped, missed (expected but no row) and doubled
//! (more than one row for one (job, tick)). Exits 1 unless missed and doubled are 0.
//!
//! Usage: `ticketmax-soak [--seconds N] [--seed S]` with `TICKETMAX_TEST_DATABASE_URL` naming a
//! Postgres server (scripts/soak.sh provides one). Everything listens on 127.0.0.1.
//!
//! Overlap policy: SKIP (the default). With 32 jobs ticking every second on a small machine and
//! processes dying under them, a run can last longer than a second; SKIP keeps at most one
//! active run per job (no unbounded backlog), and every tick still gets its row (run or skipped
//! with the reason), so missed and doubled are measured exactly as with ALLOW.
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value as Json;
use ticketmax_e2e::*;

const EVERY_SECOND: &str = "* * * * * *";

struct Args {
    seconds: u64,
    seed: u64,
}

fn usage() -> ! {
    eprintln!("usage: ticketmax-soak [--seconds N (default 120)] [--seed S]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 120,
        seed: Utc::now().timestamp_subsec_nanos() as u64 ^ u64::from(std::process::id()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> u64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                usage()
            })
        };
        match a.as_str() {
            "--seconds" => args.seconds = value("--seconds"),
            "--seed" => args.seed = value("--seed"),
            "-h" | "--help" => usage(),
            other => {
                if let Some(v) = other.strip_prefix("--seconds=") {
                    args.seconds = v.parse().unwrap_or_else(|_| usage());
                } else {
                    eprintln!("unknown argument {other}");
                    usage()
                }
            }
        }
    }
    args
}

/// xorshift64*: reproducible chaos from `--seed`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn stamp(start: Instant) -> String {
    format!("[soak +{:>6.1}s]", start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = parse_args();
    tokio::select! {
        code = soak(args) => code,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("[soak] interrupted: stopping every process and dropping the databases");
            ExitCode::from(130)
        }
    }
}

async fn soak(args: Args) -> ExitCode {
    let t0 = Instant::now();
    println!(
        "[soak] {} s, seed {}, 3 control planes, 3 executors, Postgres {}",
        args.seconds,
        args.seed,
        redact(&server_url())
    );
    let mut app = TestApp::builder()
        .name("soak")
        .control_planes(3)
        .executors(3)
        .spawn()
        .await;
    println!("{} up; logs in {}", stamp(t0), app.log_dir.display());
    let max_conn: String = app.control_scalar("SHOW max_connections").await;
    let in_use: i64 = app
        .control_scalar("SELECT count(*) FROM pg_stat_activity")
        .await;
    println!(
        "{} Postgres max_connections {max_conn}, {in_use} in use",
        stamp(t0)
    );
    if max_conn.parse::<i64>().unwrap_or(0) < 200 {
        println!(
            "{} WARNING: 3 replicas and 3 executors (and their restarts) need well over 100 \
             connections; a restarted process may fail to connect. scripts/soak.sh without \
             TICKETMAX_TEST_DATABASE_URL starts a cluster with max_connections=400.",
            stamp(t0)
        );
    }

    let jobs: Vec<String> = app.list_jobs().await.into_iter().map(|j| j.name).collect();
    for job in &jobs {
        app.update_job(UpdateJobRequest {
            name: job.clone(),
            schedule: Some(EVERY_SECOND.into()),
            overlap_policy: v1::OverlapPolicy::Skip as i32,
            enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("UpdateJob({job}) failed: {s}"));
    }
    println!(
        "{} {} jobs on '{EVERY_SECOND}' (overlap SKIP); chaos for {} s",
        stamp(t0),
        jobs.len(),
        args.seconds
    );

    // Chaos: every 2-5 s, SIGKILL a random set of processes (at most 2 of the 3 replicas and at
    // most 2 of the 3 executors at once), leave them down 0.5-3 s, start them again (replicas
    // first: an executor waits until its replica lists it live).
    let mut rng = Rng(args.seed);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let (mut cp_kills, mut ex_kills) = (0, 0);
    while Instant::now() + Duration::from_secs(2) < deadline {
        tokio::time::sleep(rng.millis(2000, 5000)).await;
        if Instant::now() >= deadline {
            break;
        }
        let mut cps: Vec<usize> = Vec::new();
        let mut exs: Vec<usize> = Vec::new();
        while cps.is_empty() && exs.is_empty() {
            let n_cp = rng.below(3); // 0, 1 or 2 replicas
            let n_ex = rng.below(3);
            while cps.len() < n_cp as usize {
                let i = rng.below(3) as usize;
                if !cps.contains(&i) {
                    cps.push(i);
                }
            }
            while exs.len() < n_ex as usize {
                let i = rng.below(3) as usize;
                if !exs.contains(&i) {
                    exs.push(i);
                }
            }
        }
        let names: Vec<String> = cps
            .iter()
            .map(|&i| app.control_planes[i].replica_id.clone())
            .chain(exs.iter().map(|&i| app.executors[i].executor_id.clone()))
            .collect();
        for &i in &cps {
            app.control_planes[i].kill().await;
            cp_kills += 1;
        }
        for &i in &exs {
            app.executors[i].kill().await;
            ex_kills += 1;
        }
        let down = rng.millis(500, 3000);
        println!(
            "{} SIGKILL {} (down {:?})",
            stamp(t0),
            names.join(", "),
            down
        );
        tokio::time::sleep(down).await;
        for &i in &cps {
            app.control_planes[i].start().await;
        }
        for &i in &exs {
            app.executors[i].start().await;
        }
        println!("{} restarted {}", stamp(t0), names.join(", "));
    }
    println!(
        "{} chaos over: {cp_kills} replica kills, {ex_kills} executor kills; every process up, \
         5 s of calm, then every job is paused",
        stamp(t0)
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    for job in &jobs {
        app.pause(job).await;
    }
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    let mut active: i64;
    loop {
        active = app
            .control_scalar("SELECT count(*) FROM runs WHERE state IN ('queued', 'running')")
            .await;
        if active == 0 || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if active > 0 {
        println!(
            "{} WARNING: {active} runs still queued/running after 120 s of draining",
            stamp(t0)
        );
    } else {
        println!("{} queue drained", stamp(t0));
    }

    let code = report(&app).await;
    println!("{} done; logs in {}", stamp(t0), app.log_dir.display());
    code
}

/// The audit, from the control-plane database.
async fn report(app: &TestApp) -> ExitCode {
    let rows = app
        .control_rows(
            "WITH b AS ( \
               SELECT job, min(scheduled_for) AS lo, max(scheduled_for) AS hi FROM runs \
               WHERE trigger = 'schedule' GROUP BY job), \
             expected AS ( \
               SELECT b.job, s AS tick FROM b, generate_series(b.lo, b.hi, interval '1 second') s), \
             per_tick AS ( \
               SELECT e.job, e.tick, count(r.id) AS n, \
                      count(r.id) FILTER (WHERE r.state <> 'skipped') AS ran, \
                      count(r.id) FILTER (WHERE r.state = 'skipped') AS skipped \
               FROM expected e LEFT JOIN runs r \
                 ON r.job = e.job AND r.scheduled_for = e.tick AND r.trigger = 'schedule' \
               GROUP BY e.job, e.tick), \
             rows_of AS ( \
               SELECT job, count(*) AS total, \
                      count(*) FILTER (WHERE state = 'succeeded') AS succeeded, \
                      count(*) FILTER (WHERE state = 'failed') AS failed, \
                      count(*) FILTER (WHERE state IN ('cancelled', 'timed_out')) AS stopped, \
                      count(*) FILTER (WHERE state IN ('queued', 'running')) AS active, \
                      count(*) FILTER (WHERE state = 'skipped' AND reason LIKE 'missed%') AS skipped_missed, \
                      count(*) FILTER (WHERE attempt > 1) AS retried \
               FROM runs WHERE trigger = 'schedule' GROUP BY job) \
             SELECT p.job, count(*)::bigint AS expected, sum(p.ran)::bigint AS run, \
                    sum(p.skipped)::bigint AS skipped, \
                    (count(*) FILTER (WHERE p.n = 0))::bigint AS missed, \
                    sum(GREATEST(p.n - 1, 0))::bigint AS doubled, \
                    (max(o.total) - sum(p.n))::bigint AS off_grid, \
                    max(o.succeeded)::bigint AS succeeded, max(o.failed)::bigint AS failed, \
                    max(o.stopped)::bigint AS stopped, max(o.active)::bigint AS active, \
                    max(o.skipped_missed)::bigint AS skipped_missed, \
                    max(o.retried)::bigint AS retried \
             FROM per_tick p JOIN rows_of o ON o.job = p.job \
             GROUP BY p.job ORDER BY p.job",
        )
        .await;
    let cols = [
        ("expected", 8),
        ("run", 6),
        ("skipped", 7),
        ("missed", 6),
        ("doubled", 7),
        ("succeeded", 9),
        ("failed", 6),
        ("stopped", 7),
        ("active", 6),
        ("retried", 7),
        ("skipped_missed", 14),
        ("off_grid", 8),
    ];
    let get = |r: &Json, k: &str| r.get(k).and_then(Json::as_i64).unwrap_or(0);
    let name_w = rows
        .iter()
        .filter_map(|r| r.get("job").and_then(Json::as_str))
        .map(str::len)
        .max()
        .unwrap_or(10)
        .max(5);
    let header: String = cols.iter().map(|(c, w)| format!(" {c:>w$}")).collect();
    println!();
    println!("{:<name_w$}{header}", "job");
    println!("{}", "-".repeat(name_w + header.len()));
    let mut totals = vec![0i64; cols.len()];
    for r in &rows {
        let job = r.get("job").and_then(Json::as_str).unwrap_or("?");
        let mut line = format!("{job:<name_w$}");
        for (i, (c, w)) in cols.iter().enumerate() {
            let v = get(r, c);
            totals[i] += v;
            line.push_str(&format!(" {v:>w$}"));
        }
        println!("{line}");
    }
    println!("{}", "-".repeat(name_w + header.len()));
    let mut line = format!("{:<name_w$}", format!("TOTAL ({} jobs)", rows.len()));
    for (i, (_, w)) in cols.iter().enumerate() {
        line.push_str(&format!(" {:>w$}", totals[i]));
    }
    println!("{line}");
    println!(
        "\nexpected = every second of every job between its first and last recorded tick; \
         run = ticks with a non-skipped row (succeeded + failed + stopped + active); \
         missed = expected ticks without a row; doubled = extra rows for one (job, tick); \
         skipped_missed = skipped rows recorded by the missed-tick sweeper; off_grid = schedule \
         rows not on a whole-second tick."
    );
    let tick_dups: i64 = app
        .control_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM runs WHERE trigger = 'schedule' \
             GROUP BY job, tick_at HAVING count(*) > 1) d",
        )
        .await;
    let idx = |name: &str| cols.iter().position(|(c, _)| *c == name).unwrap();
    let (expected, missed, doubled) = (
        totals[idx("expected")],
        totals[idx("missed")],
        totals[idx("doubled")] + tick_dups,
    );
    let off_grid = totals[idx("off_grid")];
    let manual: i64 = app
        .control_scalar("SELECT count(*) FROM runs WHERE trigger <> 'schedule'")
        .await;
    println!(
        "\nSUMMARY: jobs {} | ticks expected {expected} | run {} | skipped {} | missed {missed} | \
         doubled {doubled} | off-grid rows {off_grid} | manual runs {manual}",
        rows.len(),
        totals[idx("run")],
        totals[idx("skipped")],
    );
    if rows.is_empty() || expected == 0 {
        println!("FAIL: no tick was recorded at all");
        return ExitCode::FAILURE;
    }
    if missed > 0 {
        let list = app
            .control_rows(
                "WITH b AS (SELECT job, min(scheduled_for) AS lo, max(scheduled_for) AS hi \
                            FROM runs WHERE trigger = 'schedule' GROUP BY job) \
                 SELECT b.job, s::text AS tick FROM b, \
                        generate_series(b.lo, b.hi, interval '1 second') s \
                 WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = b.job \
                                   AND r.scheduled_for = s AND r.trigger = 'schedule') \
                 ORDER BY s, b.job LIMIT 40",
            )
            .await;
        println!("missed ticks (first 40):");
        for r in list {
            println!("  {r}");
        }
    }
    if doubled > 0 {
        let list = app
            .control_rows(
                "SELECT job, scheduled_for::text AS tick, count(*)::bigint AS n, \
                        string_agg(state || '/' || COALESCE(reason, ''), '; ') AS rows \
                 FROM runs WHERE trigger = 'schedule' GROUP BY job, scheduled_for \
                 HAVING count(*) > 1 ORDER BY 2 LIMIT 40",
            )
            .await;
        println!("doubled ticks (first 40):");
        for r in list {
            println!("  {r}");
        }
    }
    if missed == 0 && doubled == 0 && off_grid == 0 {
        println!("PASS: no tick missed, none doubled");
        ExitCode::SUCCESS
    } else {
        println!("FAIL: missed {missed}, doubled {doubled}, off-grid {off_grid} (all must be 0)");
        ExitCode::FAILURE
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
