//! [`TestApp`], a running system under test: its processes and databases, the gRPC and SQL
//! helpers the scenarios use, and the teardown on drop.
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Statement, TryGetable};
use serde_json::Value as Json;
use tonic::{Code, Status};

use crate::*;
/// A running system under test: control plane(s), executor(s), their databases.
pub struct TestApp {
    pub name: String,
    pub log_dir: PathBuf,
    pub server_url: String,
    /// The control plane's store (shared by all replicas).
    pub cp_database_url: String,
    /// The executors' ticketing database.
    pub tk_database_url: String,
    pub control_planes: Vec<ControlPlane>,
    pub executors: Vec<Executor>,
    /// Processes a test started with [`TestApp::start_process`] (not waited for).
    pub(crate) others: Vec<Proc>,
    /// When [`TestApp::silence_schedules`] ran, and the jobs it silenced.
    pub(crate) silenced: std::sync::Mutex<Option<(DateTime<Utc>, HashSet<String>)>>,
    pub(crate) databases: Vec<String>,
    pub(crate) control_db: Option<DatabaseConnection>,
    pub(crate) ticketing_db: Option<DatabaseConnection>,
    /// The CA of [`TestAppBuilder::tls`].
    pub(crate) ca_pem: Option<String>,
    pub(crate) clean_env: bool,
    /// The HTTPS client of readiness checks for control planes started by the test from now on
    /// ([`TestApp::set_readiness_tls`]).
    pub(crate) readiness_tls: Option<tokio_rustls::TlsConnector>,
}

impl TestApp {
    /// One control plane and one executor.
    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// A client of the first control plane.
    pub fn api(&self) -> Api {
        self.control_planes[0].client()
    }

    /// A client of control plane `i` (0-based).
    pub fn api_of(&self, i: usize) -> Api {
        self.control_planes[i].client()
    }

    /// The first control plane.
    pub fn cp(&mut self) -> &mut ControlPlane {
        &mut self.control_planes[0]
    }

    /// The first executor.
    pub fn executor(&mut self) -> &mut Executor {
        &mut self.executors[0]
    }

    /// The ticketing database (tables created by the executor's migrations).
    pub fn ticketing(&self) -> &DatabaseConnection {
        self.ticketing_db.as_ref().expect("ticketing db")
    }

    /// The control plane's store (Postgres only: not with [`TestAppBuilder::sqlite_store`]).
    pub fn control_db(&self) -> &DatabaseConnection {
        self.control_db
            .as_ref()
            .expect("the control plane's store is SQLite here: the harness does not open it")
    }

    /// The CA certificate (PEM) of [`TestAppBuilder::tls`], and its file.
    pub fn ca_pem(&self) -> &str {
        self.ca_pem
            .as_deref()
            .expect("the app was built without .tls()")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.log_dir.join("pki").join("ca.pem")
    }

    // ---- gRPC scenario helpers ----------------------------------------------------------

    pub async fn status(&self) -> GetStatusResponse {
        self.api()
            .get_status(GetStatusRequest {})
            .await
            .unwrap_or_else(|s| panic!("GetStatus failed: {s}"))
            .into_inner()
    }

    pub async fn list_jobs(&self) -> Vec<Job> {
        self.api()
            .list_jobs(ListJobsRequest::default())
            .await
            .unwrap_or_else(|s| panic!("ListJobs failed: {s}"))
            .into_inner()
            .jobs
    }

    pub async fn get_job(&self, name: &str) -> Job {
        self.try_get_job(name)
            .await
            .unwrap_or_else(|s| panic!("GetJob({name}) failed: {s}"))
    }

    pub async fn try_get_job(&self, name: &str) -> Result<Job, Status> {
        self.api()
            .get_job(GetJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    /// `TriggerJob(job)`; panics unless it succeeds.
    pub async fn trigger(&self, job: &str) -> Run {
        self.try_trigger(job, "", None)
            .await
            .unwrap_or_else(|s| panic!("TriggerJob({job}) failed: {s}"))
    }

    /// `TriggerJob` with an idempotency key and params, returning the gRPC outcome.
    pub async fn try_trigger(
        &self,
        job: &str,
        idempotency_key: &str,
        params: Option<Json>,
    ) -> Result<Run, Status> {
        self.api()
            .trigger_job(TriggerJobRequest {
                job: job.into(),
                idempotency_key: idempotency_key.into(),
                params: params.as_ref().map(json_to_struct),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Triggers `job` and waits (60 s) for its run to end.
    pub async fn run_to_completion(&self, job: &str) -> Run {
        let run = self.trigger(job).await;
        self.wait_for_run(&run.id, terminal, secs(60)).await
    }

    pub async fn get_run(&self, run_id: &str) -> Run {
        self.try_get_run(run_id)
            .await
            .unwrap_or_else(|s| panic!("GetRun({run_id}) failed: {s}"))
    }

    pub async fn try_get_run(&self, run_id: &str) -> Result<Run, Status> {
        self.api()
            .get_run(GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Polls `GetRun` until `until(run)` holds; panics with the last state seen after `timeout`.
    pub async fn wait_for_run(
        &self,
        run_id: &str,
        until: impl Fn(&Run) -> bool,
        timeout: Duration,
    ) -> Run {
        let deadline = Instant::now() + timeout;
        let mut last: Option<Run> = None;
        loop {
            match self.try_get_run(run_id).await {
                Ok(run) if until(&run) => return run,
                Ok(run) => last = Some(run),
                Err(s) if s.code() == Code::Unavailable => {}
                Err(s) => panic!("GetRun({run_id}) failed: {s}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "run {run_id} did not reach the awaited state within {timeout:?}; last seen: \
                     {last:#?}\nlogs in {}",
                    self.log_dir.display()
                );
            }
            tokio::time::sleep(millis(100)).await;
        }
    }

    /// `UpdateJob(name, schedule)`.
    pub async fn try_set_schedule(&self, job: &str, schedule: &str) -> Result<Job, Status> {
        self.api()
            .update_job(UpdateJobRequest {
                name: job.into(),
                schedule: Some(schedule.into()),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn set_schedule(&self, job: &str, schedule: &str) -> Job {
        self.try_set_schedule(job, schedule)
            .await
            .unwrap_or_else(|s| panic!("UpdateJob({job}, schedule={schedule:?}) failed: {s}"))
    }

    pub async fn update_job(&self, req: UpdateJobRequest) -> Result<Job, Status> {
        self.api()
            .update_job(req)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn pause(&self, job: &str) -> Job {
        self.api()
            .pause_job(PauseJobRequest { name: job.into() })
            .await
            .unwrap_or_else(|s| panic!("PauseJob({job}) failed: {s}"))
            .into_inner()
    }

    pub async fn resume(&self, job: &str) -> Job {
        self.api()
            .resume_job(ResumeJobRequest { name: job.into() })
            .await
            .unwrap_or_else(|s| panic!("ResumeJob({job}) failed: {s}"))
            .into_inner()
    }

    /// Moves every job's schedule (except `except`) to once a year (`0 0 1 1 *`), so that no
    /// default tick (every 5 min, hourly, ...) fires in the middle of a test and touches its data.
    ///
    /// A default tick may still have fired between the start and this call (a test that starts
    /// at 07:40:00 sees the every-5-minutes tick of 07:40:00): [`Self::schedule_runs`] leaves
    /// out the ticks of silenced jobs from before this call, so they are not taken for the
    /// test's own.
    pub async fn silence_schedules(&self, except: &[&str]) {
        let mut silenced = HashSet::new();
        for job in self.list_jobs().await {
            if !except.contains(&job.name.as_str()) {
                self.set_schedule(&job.name, "0 0 1 1 *").await;
                silenced.insert(job.name);
            }
        }
        let mut guard = self
            .silenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Some((Utc::now(), silenced));
    }

    /// Whether `run` is a default tick of a job [`Self::silence_schedules`] silenced, from
    /// before it did.
    fn before_silence(&self, run: &Run) -> bool {
        let guard = self
            .silenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&*guard, scheduled_for(run)) {
            (Some((at, jobs)), Some(t)) => t < *at && jobs.contains(&run.job),
            _ => false,
        }
    }

    /// One `ListRuns` page.
    pub async fn list_runs_page(&self, req: ListRunsRequest) -> v1::ListRunsResponse {
        self.api()
            .list_runs(req.clone())
            .await
            .unwrap_or_else(|s| panic!("ListRuns({req:?}) failed: {s}"))
            .into_inner()
    }

    /// Every run matching `job`/`state`, following `next_page_token` with pages of `page_size`.
    /// Panics if the paging does not terminate or a page exceeds its size.
    pub async fn list_all_runs(&self, job: &str, state: RunState, page_size: u32) -> Vec<Run> {
        let mut all = Vec::new();
        let mut token = String::new();
        let mut seen_tokens = HashSet::new();
        for _ in 0..10_000 {
            let page = self
                .list_runs_page(ListRunsRequest {
                    job: job.into(),
                    state: state as i32,
                    page_size,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await;
            assert!(
                page.runs.len() <= page_size as usize,
                "ListRuns returned {} runs for page_size {page_size}",
                page.runs.len()
            );
            all.extend(page.runs);
            if page.next_page_token.is_empty() {
                return all;
            }
            assert!(
                seen_tokens.insert(page.next_page_token.clone()),
                "ListRuns returned page token {:?} twice",
                page.next_page_token
            );
            token = page.next_page_token;
        }
        panic!("ListRuns paging did not end after 10000 pages")
    }

    /// Every run of `job`, newest first as the server orders them.
    pub async fn runs_of(&self, job: &str) -> Vec<Run> {
        self.list_all_runs(job, RunState::Unspecified, 100).await
    }

    /// The runs of `job` fired by its schedule, ordered by `scheduled_for` (without the default
    /// ticks from before [`Self::silence_schedules`]).
    pub async fn schedule_runs(&self, job: &str) -> Vec<Run> {
        let mut runs: Vec<Run> = self
            .runs_of(job)
            .await
            .into_iter()
            .filter(|r| r.trigger() == Trigger::Schedule && !self.before_silence(r))
            .collect();
        runs.sort_by_key(|r| (scheduled_for(r), r.id.clone()));
        runs
    }

    /// Waits until `job` has at least `n` schedule runs with `scheduled_for > after`.
    pub async fn wait_for_ticks(
        &self,
        job: &str,
        after: DateTime<Utc>,
        n: usize,
        timeout: Duration,
    ) -> Vec<Run> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.schedule_runs(job).await;
            let count = runs
                .iter()
                .filter(|r| scheduled_for(r).is_some_and(|t| t > after))
                .count();
            if count >= n {
                return runs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{job}: {count} schedule runs after {after} within {timeout:?}, expected {n}; \
                     all: {}",
                    describe_ticks(&runs)
                );
            }
            tokio::time::sleep(millis(200)).await;
        }
    }

    /// Waits until every run of `job` is terminal; returns them.
    pub async fn wait_until_all_runs_end(&self, job: &str, timeout: Duration) -> Vec<Run> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.runs_of(job).await;
            let active: Vec<_> = runs.iter().filter(|r| !terminal(r)).collect();
            if active.is_empty() {
                return runs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{job}: runs still not ended after {timeout:?}: {active:#?}\nlogs in {}",
                    self.log_dir.display()
                );
            }
            tokio::time::sleep(millis(200)).await;
        }
    }

    /// Rows of the control plane's `runs` table where one (job, scheduled_for) of a schedule
    /// trigger occurs more than once.
    pub async fn duplicate_ticks_in_store(&self) -> Vec<Json> {
        self.control_rows(
            "SELECT job, scheduled_for::text AS scheduled_for, count(*)::bigint AS n FROM runs \
             WHERE trigger = 'schedule' GROUP BY job, scheduled_for HAVING count(*) > 1",
        )
        .await
    }

    /// `WatchRun(run_id, after_seq)` collected until the server ends the stream; panics if it
    /// does not end within `timeout`.
    pub async fn watch(&self, run_id: &str, after_seq: u64, timeout: Duration) -> Vec<RunEvent> {
        let fut = async {
            let mut stream = self
                .api()
                .watch_run(WatchRunRequest {
                    run_id: run_id.into(),
                    after_seq,
                })
                .await
                .unwrap_or_else(|s| panic!("WatchRun({run_id}, {after_seq}) failed: {s}"))
                .into_inner();
            let mut events = Vec::new();
            while let Some(item) = stream.next().await {
                events.push(item.unwrap_or_else(|s| {
                    panic!(
                        "WatchRun({run_id}) stream error after {} events: {s}",
                        events.len()
                    )
                }));
            }
            events
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                panic!("WatchRun({run_id}, after_seq={after_seq}) did not end within {timeout:?}")
            })
    }

    // ---- SQL helpers --------------------------------------------------------------------

    /// Runs SQL (one or more statements) on the ticketing database; returns rows affected.
    pub async fn ticketing_exec(&self, sql: &str) -> u64 {
        exec(self.ticketing(), sql, "ticketing").await
    }

    /// The first column of the first row of a query on the ticketing database.
    pub async fn ticketing_scalar<T: TryGetable>(&self, sql: &str) -> T {
        scalar(self.ticketing(), sql, "ticketing").await
    }

    /// Rows of a query on the ticketing database as JSON objects.
    pub async fn ticketing_rows(&self, sql: &str) -> Vec<Json> {
        rows(self.ticketing(), sql, "ticketing").await
    }

    pub async fn control_exec(&self, sql: &str) -> u64 {
        exec(self.control_db(), sql, "control-plane").await
    }

    pub async fn control_scalar<T: TryGetable>(&self, sql: &str) -> T {
        scalar(self.control_db(), sql, "control-plane").await
    }

    pub async fn control_rows(&self, sql: &str) -> Vec<Json> {
        rows(self.control_db(), sql, "control-plane").await
    }

    /// Waits until the executor's migrations have created `table` in the ticketing database.
    pub async fn wait_for_ticketing_table(&self, table: &str) {
        let sql = format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = \
             current_schema() AND table_name = '{table}'"
        );
        let db = self.ticketing();
        eventually(&format!("ticketing table {table}"), secs(30), || {
            let sql = sql.clone();
            async move {
                let n: i64 = scalar(db, &sql, "ticketing").await;
                (n > 0).then_some(())
            }
        })
        .await
    }

    /// `n` bookings pending for 30 minutes on event 10 (1 ticket each), inventory consistent:
    /// the data of the cancel-expired-bookings scenarios.
    pub async fn seed_expired_bookings(&self, n: u32) {
        self.wait_for_ticketing_table("bookings").await;
        self.ticketing_exec(&format!(
            "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'); \
             INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, status) VALUES \
               (10, 'Big Show', now() + interval '10 days', {total}, 1000, 'upcoming'); \
             INSERT INTO bookings (user_id, event_id, quantity, total_amount, status, created_at) \
               SELECT 1, 10, 1, 1000, 'pending', now() - interval '30 minutes' FROM generate_series(1, {n});",
            total = 1000 + n
        ))
        .await;
    }

    /// The ticket invariant of `docs/jobs.md` on every event: available + tickets held by
    /// pending and confirmed bookings = total.
    pub async fn assert_inventory_consistent(&self) {
        let broken = self
            .ticketing_rows(
                "SELECT e.id, e.total_tickets, e.available_tickets, \
                        COALESCE(SUM(b.quantity) FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)::bigint AS held \
                 FROM events e LEFT JOIN bookings b ON b.event_id = e.id \
                 GROUP BY e.id, e.total_tickets, e.available_tickets \
                 HAVING e.available_tickets + COALESCE(SUM(b.quantity) FILTER (WHERE b.status IN ('pending', 'confirmed')), 0) <> e.total_tickets",
            )
            .await;
        assert!(broken.is_empty(), "inventory invariant broken: {broken:?}");
    }

    /// Dump of every log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in self.procs() {
            out.push_str(&format!(
                "----- last {lines} lines of {} -----\n{}\n",
                p.log_path().display(),
                p.log_tail(lines)
            ));
        }
        out
    }

    /// Every process of the app: control planes, executors, the test's others.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.control_planes
            .iter()
            .map(|c| &c.proc)
            .chain(self.executors.iter().map(|e| &e.proc))
            .chain(self.others.iter())
    }

    pub(crate) fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.control_planes
            .iter_mut()
            .map(|c| &mut c.proc)
            .chain(self.executors.iter_mut().map(|e| &mut e.proc))
            .chain(self.others.iter_mut())
    }
}

async fn exec(db: &DatabaseConnection, sql: &str, which: &str) -> u64 {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("SQL on the {which} database failed: {e}\n{sql}"))
        .rows_affected()
}

pub(crate) async fn scalar<T: TryGetable>(db: &DatabaseConnection, sql: &str, which: &str) -> T {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap_or_else(|e| panic!("SQL on the {which} database failed: {e}\n{sql}"))
        .unwrap_or_else(|| panic!("SQL on the {which} database returned no row:\n{sql}"));
    row.try_get_by_index::<T>(0)
        .unwrap_or_else(|e| panic!("SQL on the {which} database: cannot read column 0: {e}\n{sql}"))
}

async fn rows(db: &DatabaseConnection, sql: &str, which: &str) -> Vec<Json> {
    Json::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .all(db)
    .await
    .unwrap_or_else(|e| panic!("SQL on the {which} database failed: {e}\n{sql}"))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[e2e] {} failed; process logs in {}\n{}",
                self.name,
                self.log_dir.display(),
                self.logs_tail(40)
            );
        }
        for p in self.procs_mut() {
            p.start_kill();
        }
        if std::env::var_os("TICKETMAX_E2E_KEEP_DB").is_none() && !self.databases.is_empty() {
            // Our own pools first, so nothing waits on them.
            self.control_db.take();
            self.ticketing_db.take();
            db::drop_databases_blocking(
                self.server_url.clone(),
                std::mem::take(&mut self.databases),
            );
        }
    }
}
