//! Security against the real binaries on Postgres (README "Security"): every role against
//! every `JobService` method (gRPC and the HTTP door), who did what, the per-token trigger rate
//! limit (`roles`), a table of bad inputs each refused with its status and no change in the
//! database (`bad_input`), an impostor executor refused on both sides (`impostor`), TLS and
//! mutual TLS with certificates made here by rcgen (`tls`), what the binaries say or refuse at
//! start (`startup`), and no secret in any process log (human and JSON log formats).
//!
//! Every system starts from [`security_app`]: fresh databases and no process; each test starts
//! the control planes and executors it is about with [`TestApp::start_control_plane`] and
//! [`TestApp::start_executor`] (readiness from `/healthz` and the store, since the harness holds
//! none of their credentials), logs under `target/e2e-logs/security/<test>/`.

mod bad_input;
mod impostor;
mod roles;
mod startup;
mod tls;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use ticketmax_e2e::http::{grpc_tls, http_call, https_call, https_client};
use ticketmax_e2e::pki::{leaf, make_ca, write_pem};
use ticketmax_e2e::tokens::{self, ApiToken};
use ticketmax_e2e::v1::{
    self, CancelRunRequest, ExecutorEvent, GetReportRequest, ListReportsRequest,
    executor_client::ExecutorClient, executor_registry_client::ExecutorRegistryClient,
};
use ticketmax_e2e::{
    Api, CONTROL_PLANE_BIN, EXECUTOR_BIN, GetJobRequest, GetRunRequest, GetStatusRequest,
    JobServiceClient, ListJobsRequest, ListRunsRequest, PauseJobRequest, ResumeJobRequest,
    RunState, TestApp, TriggerJobRequest, UpdateJobRequest, WatchRunRequest, binary, free_port,
    hash_token, json_to_struct,
};

use ticketmax_e2e::jobs::CANCEL_EXPIRED;

// Plaintext secrets: none of them may ever show up in a log.
const OPERATOR_SECRET: &str = "op-secret-Zq81vKx4Lm";
const VIEWER_SECRET: &str = "view-secret-Hd73pWn2Ra";
const LIMITED_SECRET: &str = "limited-secret-Ue55tBc9Yo";
const EXECUTOR_SECRET: &str = "exec-secret-Ka19fRr6Pw";
const WRONG_SECRETS: [&str; 2] = ["wrong-secret-Jx42mNq8Vt", "impostor-secret-Gb67sLd3Ce"];

fn secrets() -> Vec<&'static str> {
    let mut v = vec![
        OPERATOR_SECRET,
        VIEWER_SECRET,
        LIMITED_SECRET,
        EXECUTOR_SECRET,
    ];
    v.extend(WRONG_SECRETS);
    v
}

fn api_tokens() -> String {
    tokens::api_tokens_env(&[
        ApiToken::new("alice", "operator", OPERATOR_SECRET),
        ApiToken::new("dash", "viewer", VIEWER_SECRET),
        ApiToken::new("limited", "operator", LIMITED_SECRET),
    ])
}

/// A system with no process yet: fresh Postgres databases (store and ticketing data), logs
/// under the test's directory, every process started from an empty environment. Each test
/// starts its own control planes and executors, with the environment it is about.
async fn security_app() -> TestApp {
    TestApp::builder()
        .control_planes(0)
        .executors(0)
        .clean_env()
        .spawn()
        .await
}

async fn scalar<T: sea_orm::TryGetable>(db: &DatabaseConnection, sql: &str) -> T {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
        .try_get_by_index(0)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every row of the tables that API calls could change, as text.
async fn snapshot(db: &DatabaseConnection, tables: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in tables {
        let text: String = scalar(
            db,
            &format!(
                "SELECT coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM {t} x"
            ),
        )
        .await;
        out.push((t.to_string(), text));
    }
    out
}

const CONTROL_TABLES: [&str; 4] = ["jobs", "runs", "run_events", "reports"];

async fn control_snapshot(app: &TestApp) -> Vec<(String, String)> {
    let mut s = snapshot(app.control_db(), &CONTROL_TABLES).await;
    let ids: String = scalar(
        app.control_db(),
        "SELECT coalesce(string_agg(id || ':' || deregistered::text, ',' ORDER BY id), '') FROM executors",
    )
    .await;
    s.push(("executors".into(), ids));
    s
}

fn assert_same(before: &[(String, String)], after: &[(String, String)], what: &str) {
    for ((t, a), (_, b)) in before.iter().zip(after) {
        assert!(
            a == b,
            "{what} changed table {t}:\nbefore:\n{a}\nafter:\n{b}"
        );
    }
}

async fn channel(
    url: String,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let mut ep = Endpoint::from_shared(url)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20));
    if let Some(tls) = tls {
        ep = ep.tls_config(tls)?;
    }
    ep.connect().await
}

async fn api(addr: SocketAddr) -> Api {
    JobServiceClient::with_interceptor(
        channel(format!("http://{addr}"), None)
            .await
            .expect("connect"),
        ticketmax_e2e::HarnessToken,
    )
}

fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn code_of<T>(r: &Result<T, Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn pause_everything(api: &mut Api, token: &str) {
    let jobs = api
        .list_jobs(req(ListJobsRequest::default(), Some(token)))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    for j in jobs {
        api.pause_job(req(PauseJobRequest { name: j.name }, Some(token)))
            .await
            .unwrap();
    }
}

/// TriggerJob for `job` with `token`, which must succeed.
async fn trigger(api: &mut Api, job: &str, token: &str) -> v1::Run {
    api.trigger_job(req(
        TriggerJobRequest {
            job: job.into(),
            ..Default::default()
        },
        Some(token),
    ))
    .await
    .unwrap_or_else(|s| panic!("TriggerJob {job}: {s}"))
    .into_inner()
}

async fn wait_run(api: &mut Api, id: &str, token: &str, timeout: Duration) -> v1::Run {
    let deadline = Instant::now() + timeout;
    loop {
        let run = api
            .get_run(req(GetRunRequest { run_id: id.into() }, Some(token)))
            .await
            .unwrap()
            .into_inner();
        if run.state().is_terminal() {
            return run;
        }
        assert!(Instant::now() < deadline, "run did not end: {run:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Ctx {
    job: String,
    run_id: String,
    report_id: String,
}

/// Waits for the executor's ticketing schema, then adds booking 1: pending for 30 minutes, so
/// cancel-expired-bookings cancels it.
async fn one_expired_booking(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar::<i64>(
        app.ticketing(),
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'email_outbox'",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "no ticketing schema");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.ticketing()
        .execute_unprepared(
            "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'); \
             INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, status) VALUES \
               (10, 'Big Show', now() + interval '10 days', 100, 98, 'upcoming'); \
             INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) VALUES \
               (1, 1, 10, 2, 1000, 'pending', now() - interval '30 minutes');",
        )
        .await
        .unwrap();
}

async fn ticketing_snapshot(app: &TestApp) -> Vec<(String, String)> {
    snapshot(
        app.ticketing(),
        &["bookings", "events", "payments", "email_outbox"],
    )
    .await
}

/// GetStatus over a fresh connection; the error as text.
async fn status_over(url: String, tls: Option<ClientTlsConfig>) -> Result<String, String> {
    let fut = async {
        let ch = channel(url, tls)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        JobServiceClient::new(ch)
            .get_status(GetStatusRequest {})
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| format!("GetStatus: {s:?}"))
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A RunJob for cancel-expired-bookings, as a caller other than the control plane would send it.
fn stray_run_job() -> v1::RunJobRequest {
    v1::RunJobRequest {
        run_id: uuid::Uuid::new_v4().to_string(),
        job: CANCEL_EXPIRED.into(),
        attempt: 1,
        scheduled_for: Some(ticketmax_e2e::to_timestamp(chrono::Utc::now())),
        idempotency_key: "impostor".into(),
        params: None,
        timezone: "UTC".into(),
        timeout_seconds: 60,
        trigger: v1::Trigger::Manual.into(),
    }
}

/// RunJob at `url` over a fresh connection, to the end of its stream; the failure as text.
async fn run_job_over(url: String, tls: Option<ClientTlsConfig>) -> Result<usize, String> {
    let fut = async {
        let ch = channel(url, tls)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let stream = ExecutorClient::new(ch)
            .run_job(stray_run_job())
            .await
            .map_err(|s| format!("RunJob: {s:?}"))?;
        use futures::StreamExt;
        let events: Vec<_> = stream.into_inner().collect().await;
        events
            .into_iter()
            .collect::<Result<Vec<ExecutorEvent>, Status>>()
            .map(|e| e.len())
            .map_err(|s| format!("RunJob stream: {s:?}"))
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Waits until `name`'s log says `what`.
async fn wait_for_log(app: &TestApp, name: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = app.proc(name).log();
        if log.contains(what) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never logged {what:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
