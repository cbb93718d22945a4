//! The maintenance services, each through its `run_once` with a fixed clock, against a real
//! database: SQLite always, and Postgres too when `TICKETMAX_TEST_DATABASE_URL` names a server.
//! The dispatcher's claim is tested here too, with the same harness.
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use sea_orm::{ConnectionTrait, Statement};
use tokio_util::sync::CancellationToken;

use ticketmax_control_plane::{
    app::SharedApp,
    auth::Auth,
    catalog,
    config::Cli,
    lifecycle::{EventPayload, RunState, Trigger},
    maintenance::{
        Service,
        cleaner::{Cleaner, Retention},
        elector::Elector,
        gauges::Gauges,
        rescuer::Rescuer,
        sweeper::Sweeper,
    },
    server,
    store::{NewRunRow, Store, run},
};

const JOB: &str = "data-cleanup/clean-cache";
const OTHER: &str = "event-management/update-event-statuses";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A run id created at `t`, as the engine makes them (UUIDv7 of its creation).
fn id_at(t: DateTime<Utc>, n: u32) -> String {
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(t.timestamp()).unwrap_or(0),
        n,
    ))
    .to_string()
}

struct Db {
    url: String,
    /// (server, name) of a Postgres database to drop.
    scratch: Option<(String, String)>,
    _dir: Option<std::path::PathBuf>,
}

async fn databases() -> Vec<Db> {
    let dir = std::env::temp_dir().join(format!("tm-cp-maint-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![Db {
        url: format!("sqlite://{}?mode=rwc", dir.join("cp.db").display()),
        scratch: None,
        _dir: Some(dir),
    }];
    if let Ok(server) = std::env::var("TICKETMAX_TEST_DATABASE_URL")
        && !server.is_empty()
    {
        let admin = Store::connect(&server).await.expect("postgres");
        let name = format!("tm_cp_maint_{}", uuid::Uuid::new_v4().simple());
        admin
            .connection()
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        out.push(Db {
            url: format!("{base}/{name}"),
            scratch: Some((server.clone(), name)),
            _dir: None,
        });
    }
    out
}

impl Drop for Db {
    fn drop(&mut self) {
        let Some((server, name)) = self.scratch.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(admin) = Store::connect(&server).await {
                        let _ = admin
                            .connection()
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

struct Replica {
    app: SharedApp,
    stop: CancellationToken,
    writers: tokio::task::JoinSet<()>,
}

impl Replica {
    async fn start(url: &str, replica: &str) -> Self {
        let mut cli = Cli::parse_from(["ticketmax-control-plane"]);
        cli.config.database_url = Some(url.to_string());
        cli.config.replica_id = Some(replica.to_string());
        let store = Store::connect(url).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
            .upsert_catalog(catalog::CATALOG, "UTC")
            .await
            .expect("catalog");
        let auth = Auth::new(None, None, 60).expect("auth");
        let (app, queues) = server::assemble(store, cli.config, auth)
            .await
            .expect("assemble");
        let stop = CancellationToken::new();
        let writers = server::spawn_writers(&app, queues, &stop);
        Self { app, stop, writers }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.writers.join_next().await.is_some() {}
    }

    async fn exec(&self, sql: &str) {
        let store = &self.app.store;
        store
            .connection()
            .execute_raw(Statement::from_string(store.backend(), sql.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn count(&self, sql: &str) -> i64 {
        let store = &self.app.store;
        let row = store
            .connection()
            .query_one_raw(Statement::from_string(store.backend(), sql.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: no row"));
        row.try_get_by_index::<i64>(0)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn run(&self, id: &str) -> run::Model {
        self.app
            .store
            .run(id)
            .await
            .expect("read run")
            .unwrap_or_else(|| panic!("no run {id}"))
    }
}

fn row(id: String, job: &str, state: RunState, created: DateTime<Utc>) -> NewRunRow {
    let terminal = state.is_terminal();
    NewRunRow {
        run: run::Model {
            id,
            job: job.to_string(),
            state,
            trigger: Trigger::Manual,
            scheduled_for: created,
            tick_at: None,
            idempotency_key: None,
            active_slot: None,
            attempt: 1,
            executor_id: None,
            owner: None,
            lease_expires_at: None,
            not_before: created,
            deadline_at: None,
            cancel_requested: false,
            params: None,
            summary: None,
            error: None,
            reason: None,
            triggered_by: None,
            trace_parent: None,
            created_at: created,
            started_at: None,
            finished_at: terminal.then_some(created),
            updated_at: created,
            last_seq: 1,
        },
        event: EventPayload::state(state, 1, "test"),
    }
}

#[tokio::test]
async fn the_cleaner_deletes_old_history_in_batches_and_keeps_what_it_must() {
    let now = at("2026-06-15T12:00:00Z");
    for db in databases().await {
        let r = Replica::start(&db.url, "cp-1").await;
        let old = now - chrono::Duration::days(40);
        let mut rows = Vec::new();
        for n in 0..150 {
            let created = old + chrono::Duration::seconds(n);
            let mut x = row(id_at(created, 0), JOB, RunState::Succeeded, created);
            if n == 0 {
                // The job's newest tick, though its oldest run: the sweeper's cursor.
                x.run.trigger = Trigger::Schedule;
                x.run.tick_at = Some(created);
            }
            rows.push(x);
        }
        // Not finished: never deleted.
        rows.push(row(id_at(old, 7), JOB, RunState::Queued, old));
        // Another job with fewer runs than are kept.
        for n in 0..5 {
            let created = old + chrono::Duration::seconds(n);
            rows.push(row(id_at(created, 9), OTHER, RunState::Failed, created));
        }
        // Recent enough to stay.
        let recent = now - chrono::Duration::days(29);
        rows.push(row(id_at(recent, 0), OTHER, RunState::Succeeded, recent));
        let inserted = r.app.store.insert_runs(&rows).await.expect("insert");
        assert_eq!(inserted.len(), rows.len());

        let mut cleaner = Cleaner::new(
            r.app.clone(),
            Retention {
                days: 30,
                keep_per_job: 100,
                batch: 20,
            },
            CancellationToken::new(),
        );
        cleaner.run_once(now).await.expect("clean");
        // 150 finished runs of JOB: the newest 100 stay, and the tick; 49 go.
        assert_eq!(cleaner.last_deleted, 49, "{}", db.url);
        assert_eq!(
            r.count(&format!("SELECT count(*) FROM runs WHERE job = '{JOB}'"))
                .await,
            102
        );
        assert_eq!(
            r.count(&format!("SELECT count(*) FROM runs WHERE job = '{OTHER}'"))
                .await,
            6
        );
        assert_eq!(
            r.count("SELECT count(*) FROM run_events WHERE run_id NOT IN (SELECT id FROM runs)")
                .await,
            0,
            "events of deleted runs remain"
        );
        assert_eq!(
            r.count("SELECT count(*) FROM runs WHERE tick_at IS NOT NULL")
                .await,
            1,
            "the newest tick was deleted"
        );
        // A second pass has nothing to do; retention 0 keeps everything.
        cleaner.run_once(now).await.expect("clean again");
        assert_eq!(cleaner.last_deleted, 0);
        let mut keeper = Cleaner::new(
            r.app.clone(),
            Retention {
                days: 0,
                keep_per_job: 1,
                batch: 20,
            },
            CancellationToken::new(),
        );
        keeper.run_once(now).await.expect("retention off");
        assert_eq!(keeper.last_deleted, 0);
        r.stop().await;
    }
}

#[tokio::test]
async fn the_rescuer_retries_or_cancels_attempts_whose_lease_expired_and_leaves_live_ones() {
    for db in databases().await {
        let r = Replica::start(&db.url, "cp-1").await;
        let now = ticketmax_control_plane::store::now();
        let created = now - chrono::Duration::minutes(1);
        let rows = vec![
            row(id_at(created, 1), JOB, RunState::Queued, created),
            row(id_at(created, 2), JOB, RunState::Queued, created),
            row(id_at(created, 3), JOB, RunState::Queued, created),
        ];
        r.app.store.insert_runs(&rows).await.expect("insert");
        let ids: Vec<String> = rows.iter().map(|x| x.run.id.clone()).collect();
        let t = |d: chrono::Duration| (now + d).format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string();
        // Running under a replica that died (two of them) and one that is alive.
        for (id, lease, cancel) in [
            (&ids[0], t(-chrono::Duration::seconds(10)), false),
            (&ids[1], t(-chrono::Duration::seconds(10)), true),
            (&ids[2], t(chrono::Duration::seconds(30)), false),
        ] {
            let lease = if r.app.store.is_postgres() {
                format!("'{lease}'::timestamptz")
            } else {
                format!("'{lease}'")
            };
            r.exec(&format!(
                "UPDATE runs SET state = 'running', owner = 'dead-replica', \
                 lease_expires_at = {lease}, cancel_requested = {cancel}, \
                 reason = {} WHERE id = '{id}'",
                if cancel {
                    "'cancelled by ''alice'''"
                } else {
                    "NULL"
                }
            ))
            .await;
        }
        let mut rescuer = Rescuer::new(r.app.clone(), Duration::from_secs(5));
        rescuer.run_once(now).await.expect("rescue");
        let retried = r.run(&ids[0]).await;
        assert_eq!(retried.state, RunState::Queued, "{retried:?}");
        assert_eq!(retried.attempt, 2);
        assert!(
            retried
                .error
                .as_deref()
                .unwrap_or("")
                .contains("dead-replica"),
            "{retried:?}"
        );
        assert!(
            retried.not_before > now,
            "retried without its backoff: {retried:?}"
        );
        let cancelled = r.run(&ids[1]).await;
        assert_eq!(cancelled.state, RunState::Cancelled, "{cancelled:?}");
        assert_eq!(cancelled.reason.as_deref(), Some("cancelled by 'alice'"));
        let live = r.run(&ids[2]).await;
        assert_eq!(
            live.state,
            RunState::Running,
            "a live lease was rescued: {live:?}"
        );
        // The settlements recorded their events after the first.
        let events = r
            .app
            .store
            .events_after(&ids[0], 0, 10)
            .await
            .expect("events");
        assert_eq!(events.len(), 2, "{events:?}");
        r.stop().await;
    }
}

#[tokio::test]
async fn the_sweeper_records_an_outage_once_per_the_policy_and_only_as_leader() {
    for db in databases().await {
        let r = Replica::start(&db.url, "cp-1").await;
        // Half past a minute, so the window (since, now - grace] holds exactly ten minute ticks.
        let real = ticketmax_control_plane::store::now();
        let minute =
            DateTime::from_timestamp(real.timestamp() - real.timestamp() % 60, 0).unwrap_or(real);
        let now = minute + chrono::Duration::seconds(30);
        let since = now - chrono::Duration::minutes(10) + chrono::Duration::seconds(15);
        let since_sql = since.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string();
        let since_sql = if r.app.store.is_postgres() {
            format!("'{since_sql}'::timestamptz")
        } else {
            format!("'{since_sql}'")
        };
        r.exec(&format!(
            "UPDATE jobs SET schedule = '0 * * * * *', schedule_since = {since_sql}, \
             missed_tick_policy = CASE WHEN name = '{OTHER}' THEN 'skip' ELSE 'run_once' END, \
             enabled = (name IN ('{JOB}', '{OTHER}'))"
        ))
        .await;
        r.app.jobs.refresh(&r.app.store).await.expect("reload jobs");
        let mut sweeper = Sweeper::new(r.app.clone(), Duration::from_secs(5));
        // A follower sweeps nothing.
        sweeper.run_once(now).await.expect("sweep");
        assert_eq!(sweeper.last_recorded, 0);
        r.app.set_leader(true);
        sweeper.run_once(now).await.expect("sweep");
        assert_eq!(
            sweeper.last_recorded, 20,
            "ten minutes of two every-minute jobs"
        );
        let ran = |job: &str| {
            format!(
                "SELECT count(*) FROM runs WHERE job = '{job}' AND tick_at IS NOT NULL \
                 AND state <> 'skipped'"
            )
        };
        assert_eq!(
            r.count(&ran(JOB)).await,
            1,
            "run_once runs the newest missed tick"
        );
        assert_eq!(r.count(&ran(OTHER)).await, 0, "skip runs none");
        assert_eq!(
            r.count("SELECT count(*) FROM runs WHERE state = 'skipped' AND reason LIKE 'missed:%'")
                .await,
            19
        );
        // Nothing is recorded twice.
        sweeper.run_once(now).await.expect("sweep again");
        assert_eq!(sweeper.last_recorded, 0);
        let later = now + chrono::Duration::minutes(2);
        sweeper.run_once(later).await.expect("sweep later");
        assert_eq!(
            sweeper.last_recorded, 4,
            "the two minutes since, for both jobs"
        );
        r.stop().await;
    }
}

#[tokio::test]
async fn one_elector_leads_and_another_takes_over_when_its_lease_lapses() {
    for db in databases().await {
        let a = Replica::start(&db.url, "cp-a").await;
        let b = Replica::start(&db.url, "cp-b").await;
        let period = Duration::from_secs(2);
        let mut ea = Elector::new(a.app.clone(), period);
        let mut eb = Elector::new(b.app.clone(), period);
        let t0 = ticketmax_control_plane::store::now();
        ea.run_once(t0).await.expect("a");
        eb.run_once(t0).await.expect("b");
        assert!(a.app.is_leader() && !b.app.is_leader());
        // a keeps renewing: b stays a follower.
        let t1 = t0 + chrono::Duration::seconds(4);
        ea.run_once(t1).await.expect("a renews");
        eb.run_once(t1).await.expect("b follows");
        assert!(a.app.is_leader() && !b.app.is_leader());
        // a stops; three periods after its last renewal b takes over, and a learns it lost.
        let t2 = t1 + chrono::Duration::seconds(7);
        eb.run_once(t2).await.expect("b takes over");
        ea.run_once(t2).await.expect("a notices");
        assert!(b.app.is_leader() && !a.app.is_leader());
        // The gauges count on the leader only.
        let mut ga = Gauges::new(a.app.clone());
        let mut gb = Gauges::new(b.app.clone());
        ga.run_once(t2).await.expect("gauges a");
        gb.run_once(t2).await.expect("gauges b");
        assert_eq!(a.app.metrics.run_gauges(), None);
        assert_eq!(b.app.metrics.run_gauges(), Some((0, 0)));
        a.stop().await;
        b.stop().await;
    }
}

/// The dispatcher's claim (not a maintenance service, but the same harness): each claim takes
/// at most its limit, oldest queued first, never a finished run, under the generic plans a
/// pooled connection switches to after five executions (forced here for every connection).
#[tokio::test]
async fn a_claim_takes_at_most_its_limit_of_the_queued_runs_due_first() {
    for db in databases().await {
        if let Some((server, name)) = &db.scratch {
            let admin = Store::connect(server).await.expect("postgres");
            admin
                .connection()
                .execute_unprepared(&format!(
                    "ALTER DATABASE {name} SET plan_cache_mode = force_generic_plan"
                ))
                .await
                .expect("generic plans");
        }
        let r = Replica::start(&db.url, "cp-1").await;
        let now = at("2026-06-01T12:00:00Z");
        // History first (older ids), then the queue.
        let mut rows: Vec<NewRunRow> = (0..400)
            .map(|n| {
                let t = now - chrono::Duration::hours(2);
                row(id_at(t, n), JOB, RunState::Succeeded, t)
            })
            .collect();
        let queued: Vec<NewRunRow> = (0..120)
            .map(|n| {
                let t = now - chrono::Duration::minutes(1)
                    + chrono::Duration::milliseconds(i64::from(n));
                row(id_at(t, n), JOB, RunState::Queued, t)
            })
            .collect();
        // Due in the order of `n` (not_before); the ids' random tails are in another order,
        // so the claim's order is the due time's, not the id's.
        let expected: Vec<String> = queued.iter().map(|x| x.run.id.clone()).collect();
        rows.extend(queued);
        r.app.store.insert_runs(&rows).await.expect("insert");
        let lease = now + chrono::Duration::seconds(30);
        let mut taken = Vec::new();
        for round in 0..20 {
            let claimed = r
                .app
                .store
                .claim("cp-1", &[JOB.to_string()], 7, lease, now, |runs| {
                    runs.iter()
                        .map(|x| (x.id.clone(), "exec-1".to_string(), lease))
                        .collect()
                })
                .await
                .expect("claim");
            let want = expected.len().saturating_sub(taken.len()).min(7);
            assert_eq!(claimed.len(), want, "round {round}: claimed {claimed:?}");
            let mut ids: Vec<String> = claimed.iter().map(|x| x.id.clone()).collect();
            ids.sort();
            let mut due = expected[taken.len()..taken.len() + want].to_vec();
            due.sort();
            assert_eq!(ids, due, "round {round}: the queued runs due first");
            assert!(claimed.iter().all(
                |x| x.state == RunState::Running && x.executor_id.as_deref() == Some("exec-1")
            ));
            taken.extend(ids);
        }
        assert_eq!(taken.len(), 120);
        let running = r
            .count("SELECT COUNT(*) FROM runs WHERE state = 'running'")
            .await;
        assert_eq!(running, 120, "exactly the claimed runs are running");
        let succeeded = r
            .count("SELECT COUNT(*) FROM runs WHERE state = 'succeeded'")
            .await;
        assert_eq!(succeeded, 400, "history untouched");
        r.stop().await;
    }
}
