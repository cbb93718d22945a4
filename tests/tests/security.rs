//! Issue 8 (SPEC §9) against the real binaries on Postgres: every role against every
//! `JobService` method (gRPC and the HTTP door), who did what, the per-token trigger rate limit,
//! TLS and mutual TLS with certificates made here by rcgen, an impostor executor refused on both
//! sides, a table of bad inputs each refused with its status and no change in the database, and
//! no secret in any process log (human and JSON log formats).
//!
//! The harness's readiness check calls `GetStatus` without a token (and in plaintext), so these
//! systems are started here: the same binaries, fresh Postgres databases, logs under
//! `target/e2e-logs/security/<test>/`, readiness from the control plane's `/healthz`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use ticketmax_e2e::pki::{leaf, make_ca, write_pem};
use ticketmax_e2e::v1::{
    self, CancelRunRequest, ExecutorEvent, GetReportRequest, ListReportsRequest,
    executor_client::ExecutorClient, executor_registry_client::ExecutorRegistryClient,
};
use ticketmax_e2e::{
    Api, CONTROL_PLANE_BIN, EXECUTOR_BIN, GetJobRequest, GetRunRequest, GetStatusRequest,
    JobServiceClient, ListJobsRequest, ListRunsRequest, PauseJobRequest, ResumeJobRequest,
    RunState, TriggerJobRequest, UpdateJobRequest, WatchRunRequest, bin_dir, binary, database_url,
    free_port, json_to_struct, server_url,
};

const CANCEL_EXPIRED: &str = "booking-cleanup/cancel-expired-bookings";

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

fn sha256_hex(s: &str) -> String {
    // The control plane's own `hash-token` is the reference (and exercised here).
    let mut child = std::process::Command::new(binary(CONTROL_PLANE_BIN))
        .arg("hash-token")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run hash-token");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(hash.len(), 64, "{hash}");
    hash
}

fn api_tokens() -> String {
    format!(
        "alice:operator:{},dash:viewer:{},limited:operator:{}",
        sha256_hex(OPERATOR_SECRET),
        sha256_hex(VIEWER_SECRET),
        sha256_hex(LIMITED_SECRET)
    )
}

// ------------------------------------------------------------------------------------------
// A small system under test: databases, processes, logs
// ------------------------------------------------------------------------------------------

struct Proc {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

struct Sys {
    dir: PathBuf,
    server: String,
    databases: Vec<String>,
    control: DatabaseConnection,
    ticketing: DatabaseConnection,
    cp_url: String,
    tk_url: String,
    procs: Vec<Proc>,
    /// How the readiness check speaks to control planes started from now on: plaintext
    /// HTTP, or TLS with this client configuration.
    http_tls: Option<TlsConnector>,
}

impl Drop for Sys {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.procs {
                eprintln!("---- {} ({}):\n{}", p.name, p.log.display(), p.tail());
            }
        }
        for p in &mut self.procs {
            let _ = p.child.start_kill();
        }
        let server = self.server.clone();
        let names = std::mem::take(&mut self.databases);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(db) = Database::connect(&server).await {
                    for n in names {
                        let _ = db
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {n} WITH (FORCE)"
                            ))
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

impl Sys {
    async fn new(test: &str) -> Sys {
        let dir = bin_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("e2e-logs")
            .join("security")
            .join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        eprintln!("[security] {test}: process logs in {}", dir.display());
        let server = server_url();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let names = vec![format!("tm_cp_{id}"), format!("tm_tk_{id}")];
        let admin = Database::connect(&server)
            .await
            .expect("connect to Postgres");
        for n in &names {
            admin
                .execute_unprepared(&format!("CREATE DATABASE {n}"))
                .await
                .unwrap();
        }
        drop(admin);
        let cp_url = database_url(&server, &names[0]);
        let tk_url = database_url(&server, &names[1]);
        let control = Database::connect(&cp_url).await.unwrap();
        let ticketing = Database::connect(&tk_url).await.unwrap();
        Sys {
            dir,
            server,
            databases: names,
            control,
            ticketing,
            cp_url,
            tk_url,
            procs: Vec::new(),
            http_tls: None,
        }
    }

    fn spawn(&mut self, name: &str, bin: &str, env: &[(&str, String)]) -> usize {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let data = self.dir.join("data").join(name);
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = tokio::process::Command::new(binary(bin));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("TICKETMAX_DATA_DIR", &data)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
        self.procs.len() - 1
    }

    /// A control plane on fresh ports; returns (gRPC, HTTP) once `/healthz` answers 200.
    async fn control_plane(
        &mut self,
        name: &str,
        env: &[(&str, String)],
    ) -> (SocketAddr, SocketAddr) {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut all = vec![
            ("TICKETMAX_GRPC_ADDR", grpc.to_string()),
            ("TICKETMAX_HTTP_ADDR", http.to_string()),
            ("DATABASE_URL", self.cp_url.clone()),
            ("TICKETMAX_REPLICA_ID", name.to_string()),
            ("TICKETMAX_EXECUTOR_TIMEOUT_MS", "3000".to_string()),
        ];
        all.extend(env.iter().cloned());
        let i = self.spawn(name, CONTROL_PLANE_BIN, &all);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(st)) = self.procs[i].child.try_wait() {
                panic!("{name} exited ({st}):\n{}", self.procs[i].tail());
            }
            let health = match &self.http_tls {
                Some(tls) => https_call(http, tls, "GET", "/healthz", None).await,
                None => http_call(http, "GET", "/healthz", None).await,
            };
            if let Ok((200, _)) = health {
                return (grpc, http);
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready:\n{}",
                self.procs[i].tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An executor registering with `cp`; waits for its row in `executors` when `wait`.
    async fn executor(
        &mut self,
        name: &str,
        cp: SocketAddr,
        env: &[(&str, String)],
        wait: bool,
    ) -> SocketAddr {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut all = vec![
            ("TICKETMAX_EXECUTOR_ADDR", addr.to_string()),
            ("TICKETMAX_CONTROL_PLANE_URL", format!("http://{cp}")),
            ("TICKETING_DATABASE_URL", self.tk_url.clone()),
            ("TICKETMAX_EXECUTOR_ID", name.to_string()),
        ];
        all.extend(env.iter().cloned());
        let i = self.spawn(name, EXECUTOR_BIN, &all);
        if wait {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if let Ok(Some(st)) = self.procs[i].child.try_wait() {
                    panic!("{name} exited ({st}):\n{}", self.procs[i].tail());
                }
                let n: i64 = scalar(
                    &self.control,
                    &format!(
                        "SELECT count(*) FROM executors WHERE id = '{name}' AND NOT deregistered"
                    ),
                )
                .await;
                if n == 1 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} never registered:\n{}",
                    self.procs[i].tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        addr
    }

    /// Every process log, after the processes were stopped.
    async fn stop_and_assert_no_secret_in_logs(&mut self) {
        for p in &mut self.procs {
            p.kill().await;
        }
        let mut files = Vec::new();
        for entry in walk(&self.dir) {
            if entry.extension().is_some_and(|e| e == "log") {
                files.push(entry);
            }
        }
        assert!(files.len() >= self.procs.len(), "{files:?}");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            assert!(!text.trim().is_empty(), "{} is empty", f.display());
            for s in secrets() {
                assert!(!text.contains(s), "{} contains the secret {s}", f.display());
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
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

async fn control_snapshot(sys: &Sys) -> Vec<(String, String)> {
    let mut s = snapshot(&sys.control, &CONTROL_TABLES).await;
    let ids: String = scalar(
        &sys.control,
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

/// A hand-written HTTP/1.1 request in plaintext; returns the status code and the body.
async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_exchange(connect(addr).await?, addr, method, path, token).await
}

/// The same over TLS with `tls` (see [`https_client`]).
async fn https_call(
    addr: SocketAddr,
    tls: &TlsConnector,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let tcp = connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let stream = tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    http_exchange(stream, addr, method, path, token).await
}

async fn connect(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify once the response is complete.
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await {
        Err(_) => return Err(std::io::Error::other("read timed out")),
        Ok(Err(e)) if buf.is_empty() => return Err(e),
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
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

// ------------------------------------------------------------------------------------------
// Every role against every method
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum M {
    GetStatus,
    ListJobs,
    GetJob,
    GetRun,
    ListRuns,
    WatchRun,
    ListReports,
    GetReport,
    TriggerJob,
    CancelRun,
    UpdateJob,
    PauseJob,
    ResumeJob,
}

const READS: [M; 8] = [
    M::GetStatus,
    M::ListJobs,
    M::GetJob,
    M::GetRun,
    M::ListRuns,
    M::WatchRun,
    M::ListReports,
    M::GetReport,
];
/// In this order the operator's calls make sense one after the other.
const WRITES: [M; 5] = [
    M::TriggerJob,
    M::CancelRun,
    M::UpdateJob,
    M::PauseJob,
    M::ResumeJob,
];

struct Ctx {
    job: String,
    run_id: String,
    report_id: String,
}

/// Calls `m` with `token`; on success, what it returned (the run or the job, when one).
async fn call(api: &mut Api, m: M, token: Option<&str>, c: &Ctx) -> Result<String, Status> {
    let job = c.job.clone();
    let run_id = c.run_id.clone();
    Ok(match m {
        M::GetStatus => format!(
            "{:?}",
            api.get_status(req(GetStatusRequest {}, token))
                .await?
                .get_ref()
                .status
        ),
        M::ListJobs => format!(
            "{}",
            api.list_jobs(req(ListJobsRequest::default(), token))
                .await?
                .get_ref()
                .jobs
                .len()
        ),
        M::GetJob => {
            api.get_job(req(GetJobRequest { name: job }, token))
                .await?
                .into_inner()
                .updated_by
        }
        M::GetRun => {
            api.get_run(req(GetRunRequest { run_id }, token))
                .await?
                .into_inner()
                .id
        }
        M::ListRuns => format!(
            "{}",
            api.list_runs(req(
                ListRunsRequest {
                    job,
                    ..Default::default()
                },
                token
            ))
            .await?
            .get_ref()
            .runs
            .len()
        ),
        M::WatchRun => {
            api.watch_run(req(
                WatchRunRequest {
                    run_id,
                    after_seq: 0,
                },
                token,
            ))
            .await?;
            String::new()
        }
        M::ListReports => format!(
            "{}",
            api.list_reports(req(ListReportsRequest::default(), token))
                .await?
                .get_ref()
                .reports
                .len()
        ),
        M::GetReport => {
            api.get_report(req(
                GetReportRequest {
                    id: c.report_id.clone(),
                },
                token,
            ))
            .await?
            .into_inner()
            .id
        }
        M::TriggerJob => {
            api.trigger_job(req(
                TriggerJobRequest {
                    job,
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner()
            .id
        }
        M::CancelRun => {
            api.cancel_run(req(
                CancelRunRequest {
                    run_id,
                    reason: "security test".into(),
                },
                token,
            ))
            .await?
            .into_inner()
            .reason
        }
        M::UpdateJob => {
            api.update_job(req(
                UpdateJobRequest {
                    name: job,
                    schedule: Some("0 0 1 1 *".into()),
                    max_retries: Some(7),
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner()
            .updated_by
        }
        M::PauseJob => {
            api.pause_job(req(PauseJobRequest { name: job }, token))
                .await?
                .into_inner()
                .updated_by
        }
        M::ResumeJob => {
            api.resume_job(req(ResumeJobRequest { name: job }, token))
                .await?
                .into_inner()
                .updated_by
        }
    })
}

/// One control plane with viewer and operator tokens and no executor (runs stay QUEUED, so
/// nothing but the API changes the database); human-format logs.
#[tokio::test]
async fn roles_rate_limit_bad_inputs_and_who_did_what() {
    let mut sys = Sys::new("roles_rate_limit_bad_inputs_and_who_did_what").await;
    let (grpc, http) = sys
        .control_plane(
            "cp-1",
            &[
                ("TICKETMAX_API_TOKENS", api_tokens()),
                ("TICKETMAX_TRIGGER_RATE_PER_MINUTE", "3".into()),
                ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.into()),
            ],
        )
        .await;
    let mut api = api(grpc).await;
    pause_everything(&mut api, OPERATOR_SECRET).await;
    // Every trigger makes a queued run (not SKIPPED behind the previous one).
    api.update_job(req(
        UpdateJobRequest {
            name: CANCEL_EXPIRED.into(),
            overlap_policy: v1::OverlapPolicy::Allow.into(),
            ..Default::default()
        },
        Some(OPERATOR_SECRET),
    ))
    .await
    .unwrap();

    // A run (queued: there is no executor) and a report to read.
    let alice_first = Instant::now();
    let first = api
        .trigger_job(req(
            TriggerJobRequest {
                job: CANCEL_EXPIRED.into(),
                ..Default::default()
            },
            Some(OPERATOR_SECRET),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.triggered_by, "alice", "{first:#?}");
    sys.control
        .execute_unprepared(&format!(
            "INSERT INTO reports (id, kind, period, job, run_id, body, created_at) VALUES \
             ('rep-1', 'daily-analytics', '2026-11-27', 'analytics/generate-daily-analytics', '{}', '{{}}', now())",
            first.id
        ))
        .await
        .unwrap();
    let ctx = Ctx {
        job: CANCEL_EXPIRED.into(),
        run_id: first.id.clone(),
        report_id: "rep-1".into(),
    };

    // Refused: no token, an unknown token (every method), the viewer (changes only).
    let before = control_snapshot(&sys).await;
    for m in READS.iter().chain(&WRITES) {
        for (who, token) in [
            ("no token", None),
            ("unknown token", Some(WRONG_SECRETS[0])),
        ] {
            let r = call(&mut api, *m, token, &ctx).await;
            assert_eq!(
                code_of(&r),
                Code::Unauthenticated,
                "{m:?} with {who}: {r:?}"
            );
            let msg = r.unwrap_err().message().to_string();
            assert!(!msg.contains(WRONG_SECRETS[0]), "{msg}");
        }
    }
    for m in WRITES {
        let r = call(&mut api, m, Some(VIEWER_SECRET), &ctx).await;
        assert_eq!(
            code_of(&r),
            Code::PermissionDenied,
            "{m:?} as viewer: {r:?}"
        );
        let msg = r.unwrap_err().message().to_string();
        assert!(
            msg.contains("dash") && !msg.contains(VIEWER_SECRET),
            "{msg}"
        );
    }
    // The viewer reads everything; reads change nothing either.
    for m in READS {
        let r = call(&mut api, m, Some(VIEWER_SECRET), &ctx).await;
        assert!(r.is_ok(), "{m:?} as viewer: {r:?}");
    }
    assert_same(
        &before,
        &control_snapshot(&sys).await,
        "refused calls and reads",
    );

    // HTTP: the same rules at the seed's trigger endpoint (and the status endpoint).
    let path = "/background-jobs/booking-cleanup/run";
    assert_eq!(http_call(http, "POST", path, None).await.unwrap().0, 401);
    assert_eq!(
        http_call(http, "POST", path, Some(WRONG_SECRETS[1]))
            .await
            .unwrap()
            .0,
        401
    );
    let (code, body) = http_call(http, "POST", path, Some(VIEWER_SECRET))
        .await
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        http_call(http, "GET", "/background-jobs/status", None)
            .await
            .unwrap()
            .0,
        401
    );
    let (code, body) = http_call(http, "GET", "/background-jobs/status", Some(VIEWER_SECRET))
        .await
        .unwrap();
    assert_eq!(
        code, 200,
        "the viewer may read the status over HTTP: {body}"
    );
    // /metrics names jobs, executors and e-mail figures: a viewer token at least. /healthz
    // stays open for load balancers and says nothing more than ok.
    for (token, expect) in [
        (None, 401),
        (Some(WRONG_SECRETS[0]), 401),
        (Some(VIEWER_SECRET), 200),
        (Some(OPERATOR_SECRET), 200),
    ] {
        let (code, body) = http_call(http, "GET", "/metrics", token).await.unwrap();
        assert_eq!(code, expect, "/metrics with {token:?}: {body}");
        assert_eq!(
            body.contains("ticketmax_runs"),
            expect == 200,
            "/metrics with {token:?}: {body}"
        );
    }
    assert_eq!(
        http_call(http, "GET", "/healthz", None).await.unwrap(),
        (200, "ok".to_string())
    );
    assert_same(&before, &control_snapshot(&sys).await, "refused HTTP calls");
    let (code, body) = http_call(http, "POST", path, Some(OPERATOR_SECRET))
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    let http_run = v["run"]["id"].as_str().unwrap().to_string();
    let r = api
        .get_run(req(GetRunRequest { run_id: http_run }, Some(VIEWER_SECRET)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.triggered_by, "alice", "{r:#?}");

    // The operator may do everything; who did it is recorded.
    for m in READS {
        let r = call(&mut api, m, Some(OPERATOR_SECRET), &ctx).await;
        assert!(r.is_ok(), "{m:?} as operator: {r:?}");
    }
    let mut ctx = ctx;
    for m in WRITES {
        let r = call(&mut api, m, Some(OPERATOR_SECRET), &ctx).await;
        let out = r.unwrap_or_else(|s| panic!("{m:?} as operator: {s:?}"));
        match m {
            M::TriggerJob => {
                let run = api
                    .get_run(req(
                        GetRunRequest {
                            run_id: out.clone(),
                        },
                        Some(OPERATOR_SECRET),
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(run.triggered_by, "alice");
                ctx.run_id = out;
            }
            M::CancelRun => assert!(out.contains("'alice'"), "cancel reason: {out}"),
            M::UpdateJob | M::PauseJob | M::ResumeJob => assert_eq!(out, "alice", "{m:?}"),
            _ => {}
        }
    }
    let job = api
        .get_job(req(
            GetJobRequest {
                name: CANCEL_EXPIRED.into(),
            },
            Some(VIEWER_SECRET),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            job.schedule.as_str(),
            job.max_retries,
            job.updated_by.as_str()
        ),
        ("0 0 1 1 *", 7, "alice")
    );
    let cancelled = api
        .get_run(req(
            GetRunRequest {
                run_id: ctx.run_id.clone(),
            },
            Some(VIEWER_SECRET),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), RunState::Cancelled);
    api.pause_job(req(
        PauseJobRequest {
            name: CANCEL_EXPIRED.into(),
        },
        Some(OPERATOR_SECRET),
    ))
    .await
    .unwrap();

    // The per-token trigger rate limit: 3 a minute for "limited", whatever the door.
    let runs_now = || async { scalar::<i64>(&sys.control, "SELECT count(*) FROM runs").await };
    let mut limited_runs = Vec::new();
    for i in 0..3 {
        let r = api
            .trigger_job(req(
                TriggerJobRequest {
                    job: CANCEL_EXPIRED.into(),
                    ..Default::default()
                },
                Some(LIMITED_SECRET),
            ))
            .await;
        limited_runs.push(
            r.unwrap_or_else(|s| panic!("trigger {i}: {s:?}"))
                .into_inner(),
        );
    }
    let count = runs_now().await;
    let r = api
        .trigger_job(req(
            TriggerJobRequest {
                job: CANCEL_EXPIRED.into(),
                ..Default::default()
            },
            Some(LIMITED_SECRET),
        ))
        .await;
    assert_eq!(code_of(&r), Code::ResourceExhausted, "{r:?}");
    let (code, body) = http_call(http, "POST", path, Some(LIMITED_SECRET))
        .await
        .unwrap();
    assert_eq!(code, 429, "{body}");
    assert_eq!(runs_now().await, count, "a refused trigger created a run");
    // Per token: "limited" used its own 3, not alice's; alice has used 3 too, over both doors
    // (gRPC twice, HTTP once), so she is out as well, unless 20 s went by since her first
    // trigger (a slow machine) and the bucket refilled one.
    let alice_out = alice_first.elapsed() < Duration::from_secs(18);
    let r = api
        .trigger_job(req(
            TriggerJobRequest {
                job: CANCEL_EXPIRED.into(),
                ..Default::default()
            },
            Some(OPERATOR_SECRET),
        ))
        .await;
    if alice_out {
        assert_eq!(code_of(&r), Code::ResourceExhausted, "{r:?}");
        assert_eq!(runs_now().await, count, "a refused trigger created a run");
    }
    let queued = limited_runs.pop().unwrap();
    assert_eq!(queued.state(), RunState::Queued, "{queued:#?}");
    assert_eq!(queued.triggered_by, "limited");

    // Bad inputs: each gets its status and changes nothing.
    bad_inputs(&sys, &mut api, &ctx, &queued.id).await;

    let cp_log = sys.procs[0].log();
    assert!(
        cp_log.contains(" INFO ") && cp_log.contains("alice"),
        "human-format log naming who did what: {cp_log}"
    );
    sys.stop_and_assert_no_secret_in_logs().await;
}

async fn bad_inputs(sys: &Sys, api: &mut Api, ctx: &Ctx, queued_run: &str) {
    use Code::{FailedPrecondition as Fp, InvalidArgument as Ia, NotFound as Nf};
    let t = Some(OPERATOR_SECRET);
    let long = |n: usize| "x".repeat(n);
    let job = || CANCEL_EXPIRED.to_string();
    let update = |f: &dyn Fn(&mut UpdateJobRequest)| {
        let mut r = UpdateJobRequest {
            name: job(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let big_params = json_to_struct(&serde_json::json!({ "blob": long(70 * 1024) }));
    let unknown_run = uuid::Uuid::new_v4().to_string();

    let before = control_snapshot(sys).await;
    let mut cases: Vec<(&str, Code, Result<(), Status>)> = Vec::new();
    macro_rules! case {
        ($what:expr, $code:expr, $call:expr) => {
            cases.push(($what, $code, $call.await.map(|_| ())));
        };
    }
    case!(
        "GetJob empty name",
        Ia,
        api.get_job(req(
            GetJobRequest {
                name: String::new()
            },
            t
        ))
    );
    case!(
        "GetJob blank name",
        Ia,
        api.get_job(req(GetJobRequest { name: "   ".into() }, t))
    );
    case!(
        "GetJob 201-char name",
        Ia,
        api.get_job(req(GetJobRequest { name: long(201) }, t))
    );
    case!(
        "GetJob 10 KB name",
        Ia,
        api.get_job(req(
            GetJobRequest {
                name: long(10 * 1024)
            },
            t
        ))
    );
    case!(
        "GetJob unknown",
        Nf,
        api.get_job(req(
            GetJobRequest {
                name: "nope/no-such-job".into()
            },
            t
        ))
    );
    case!(
        "TriggerJob empty name",
        Ia,
        api.trigger_job(req(TriggerJobRequest::default(), t))
    );
    case!(
        "TriggerJob 10 KB name",
        Ia,
        api.trigger_job(req(
            TriggerJobRequest {
                job: long(10 * 1024),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "TriggerJob unknown job",
        Nf,
        api.trigger_job(req(
            TriggerJobRequest {
                job: "nope/no-such-job".into(),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "TriggerJob 201-char idempotency key",
        Ia,
        api.trigger_job(req(
            TriggerJobRequest {
                job: job(),
                idempotency_key: long(201),
                params: None
            },
            t
        ))
    );
    case!(
        "TriggerJob 70 KB params",
        Ia,
        api.trigger_job(req(
            TriggerJobRequest {
                job: job(),
                idempotency_key: String::new(),
                params: Some(big_params.clone())
            },
            t
        ))
    );
    // Past the servers' message limit: refused before it is parsed.
    case!(
        "TriggerJob 1 MiB message",
        Code::OutOfRange,
        api.trigger_job(req(
            TriggerJobRequest {
                job: job(),
                idempotency_key: String::new(),
                params: Some(json_to_struct(
                    &serde_json::json!({ "blob": long(1024 * 1024) })
                ))
            },
            t
        ))
    );
    for (what, schedule) in [
        ("UpdateJob bad cron", "not a cron"),
        ("UpdateJob out-of-range minute", "61 * * * *"),
        ("UpdateJob 4 fields", "* * * *"),
        ("UpdateJob never fires (30 Feb)", "0 0 30 2 *"),
        ("UpdateJob empty schedule", ""),
        ("UpdateJob multi-byte named schedule", "EVERY_DAY_AT_€"),
    ] {
        case!(
            what,
            Ia,
            api.update_job(req(update(&|r| r.schedule = Some(schedule.into())), t))
        );
    }
    case!(
        "UpdateJob 10 KB schedule",
        Ia,
        api.update_job(req(
            update(&|r| r.schedule = Some("*".repeat(10 * 1024))),
            t
        ))
    );
    case!(
        "UpdateJob bad timezone",
        Ia,
        api.update_job(req(
            update(&|r| r.timezone = Some("Mars/Olympus".into())),
            t
        ))
    );
    case!(
        "UpdateJob empty timezone",
        Ia,
        api.update_job(req(update(&|r| r.timezone = Some(String::new())), t))
    );
    case!(
        "UpdateJob valid change with a bad timezone",
        Ia,
        api.update_job(req(
            update(&|r| {
                r.max_retries = Some(3);
                r.enabled = Some(true);
                r.timezone = Some("Not/AZone".into());
            }),
            t
        ))
    );
    case!(
        "UpdateJob max_retries 101",
        Ia,
        api.update_job(req(update(&|r| r.max_retries = Some(101)), t))
    );
    case!(
        "UpdateJob timeout 0",
        Ia,
        api.update_job(req(update(&|r| r.timeout_seconds = Some(0)), t))
    );
    case!(
        "UpdateJob timeout over a week",
        Ia,
        api.update_job(req(
            update(&|r| r.timeout_seconds = Some(7 * 86_400 + 1)),
            t
        ))
    );
    case!(
        "UpdateJob catch-up window over a week",
        Ia,
        api.update_job(req(
            update(&|r| r.catch_up_window_seconds = Some(u32::MAX)),
            t
        ))
    );
    case!(
        "UpdateJob valid schedule, max_retries out of range",
        Ia,
        api.update_job(req(
            update(&|r| {
                r.schedule = Some("*/5 * * * *".into());
                r.max_retries = Some(1000);
            }),
            t
        ))
    );
    case!(
        "UpdateJob unknown overlap policy",
        Ia,
        api.update_job(req(update(&|r| r.overlap_policy = 99), t))
    );
    case!(
        "UpdateJob unknown missed-tick policy",
        Ia,
        api.update_job(req(update(&|r| r.missed_tick_policy = -1), t))
    );
    case!(
        "UpdateJob unknown job",
        Nf,
        api.update_job(req(
            UpdateJobRequest {
                name: "nope/no-such-job".into(),
                max_retries: Some(1),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "PauseJob unknown job",
        Nf,
        api.pause_job(req(
            PauseJobRequest {
                name: "nope/x".into()
            },
            t
        ))
    );
    case!(
        "PauseJob 10 KB name",
        Ia,
        api.pause_job(req(
            PauseJobRequest {
                name: long(10 * 1024)
            },
            t
        ))
    );
    case!(
        "ResumeJob empty name",
        Ia,
        api.resume_job(req(
            ResumeJobRequest {
                name: String::new()
            },
            t
        ))
    );
    case!(
        "ResumeJob unknown job",
        Nf,
        api.resume_job(req(
            ResumeJobRequest {
                name: "nope/x".into()
            },
            t
        ))
    );
    case!(
        "ListRuns bad page_token",
        Ia,
        api.list_runs(req(
            ListRunsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "ListRuns 10 KB page_token",
        Ia,
        api.list_runs(req(
            ListRunsRequest {
                page_token: long(10 * 1024),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "ListRuns unknown state",
        Ia,
        api.list_runs(req(
            ListRunsRequest {
                state: 99,
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "ListRuns unknown job",
        Nf,
        api.list_runs(req(
            ListRunsRequest {
                job: "nope/x".into(),
                ..Default::default()
            },
            t
        ))
    );
    case!(
        "GetRun empty id",
        Ia,
        api.get_run(req(
            GetRunRequest {
                run_id: String::new()
            },
            t
        ))
    );
    case!(
        "GetRun unknown id",
        Nf,
        api.get_run(req(
            GetRunRequest {
                run_id: unknown_run.clone()
            },
            t
        ))
    );
    case!(
        "GetRun 10 KB id",
        Ia,
        api.get_run(req(
            GetRunRequest {
                run_id: long(10 * 1024)
            },
            t
        ))
    );
    case!(
        "WatchRun unknown id",
        Nf,
        api.watch_run(req(
            WatchRunRequest {
                run_id: unknown_run.clone(),
                after_seq: 0
            },
            t
        ))
    );
    case!(
        "WatchRun after_seq too large",
        Ia,
        api.watch_run(req(
            WatchRunRequest {
                run_id: ctx.run_id.clone(),
                after_seq: u64::MAX
            },
            t
        ))
    );
    case!(
        "CancelRun unknown id",
        Nf,
        api.cancel_run(req(
            CancelRunRequest {
                run_id: unknown_run.clone(),
                reason: String::new()
            },
            t
        ))
    );
    case!(
        "CancelRun an ended run",
        Fp,
        api.cancel_run(req(
            CancelRunRequest {
                run_id: ctx.run_id.clone(),
                reason: String::new()
            },
            t
        ))
    );
    case!(
        "CancelRun 501-char reason",
        Ia,
        api.cancel_run(req(
            CancelRunRequest {
                run_id: queued_run.into(),
                reason: long(501)
            },
            t
        ))
    );
    case!(
        "GetReport empty id",
        Ia,
        api.get_report(req(GetReportRequest { id: String::new() }, t))
    );
    case!(
        "GetReport unknown id",
        Nf,
        api.get_report(req(
            GetReportRequest {
                id: unknown_run.clone()
            },
            t
        ))
    );

    let mut failures = Vec::new();
    for (what, want, got) in &cases {
        let got_code = code_of(got);
        if got_code != *want {
            failures.push(format!("{what}: want {want:?}, got {got:?}"));
        } else if let Err(s) = got
            && s.message().trim().is_empty()
        {
            failures.push(format!("{what}: {want:?} without a message"));
        }
    }
    assert!(failures.is_empty(), "bad inputs:\n{}", failures.join("\n"));
    assert_same(&before, &control_snapshot(sys).await, "bad inputs");
    eprintln!(
        "[security] {} bad inputs refused with their status",
        cases.len()
    );
}

// ------------------------------------------------------------------------------------------
// Executor trust
// ------------------------------------------------------------------------------------------

/// Waits for the executor's ticketing schema, then adds booking 1: pending for 30 minutes, so
/// cancel-expired-bookings cancels it.
async fn one_expired_booking(sys: &Sys) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar::<i64>(
        &sys.ticketing,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'email_outbox'",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "no ticketing schema");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sys.ticketing
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

async fn ticketing_snapshot(sys: &Sys) -> Vec<(String, String)> {
    snapshot(
        &sys.ticketing,
        &["bookings", "events", "payments", "email_outbox"],
    )
    .await
}

/// Control plane and executor share TICKETMAX_EXECUTOR_TOKEN; JSON logs. An impostor cannot
/// register (by hand or as a real executor process with a wrong secret), nor run a job on the
/// executor directly; with the secret everything works end to end.
#[tokio::test]
async fn impostor_executors_are_refused_and_the_real_one_works() {
    let mut sys = Sys::new("impostor_executors_are_refused_and_the_real_one_works").await;
    let json = ("LOG_FORMAT", "json".to_string());
    let (grpc, _http) = sys
        .control_plane(
            "cp-1",
            &[
                ("TICKETMAX_API_TOKENS", api_tokens()),
                ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.into()),
                json.clone(),
            ],
        )
        .await;
    let ex_addr = sys
        .executor(
            "ex-1",
            grpc,
            &[
                ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.into()),
                json.clone(),
            ],
            true,
        )
        .await;
    let mut api = api(grpc).await;
    pause_everything(&mut api, OPERATOR_SECRET).await;
    one_expired_booking(&sys).await;

    // A real executor process with the wrong secret never gets in.
    sys.executor(
        "ex-impostor",
        grpc,
        &[
            ("TICKETMAX_EXECUTOR_TOKEN", WRONG_SECRETS[1].into()),
            json.clone(),
        ],
        false,
    )
    .await;

    // By hand: Register, Heartbeat, Deregister without or with a wrong secret.
    let before = control_snapshot(&sys).await;
    let mut reg =
        ExecutorRegistryClient::new(channel(format!("http://{grpc}"), None).await.unwrap());
    let register = |id: &str| v1::RegisterRequest {
        executor_id: id.into(),
        address: format!("http://{ex_addr}"),
        jobs: vec![CANCEL_EXPIRED.into()],
        version: "0.0.0".into(),
        ..Default::default()
    };
    for token in [
        None,
        Some(WRONG_SECRETS[0]),
        Some(OPERATOR_SECRET),
        Some(VIEWER_SECRET),
    ] {
        let r = reg.register(req(register("ex-hand"), token)).await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "Register with {token:?}: {r:?}"
        );
        let r = reg
            .heartbeat(req(
                v1::HeartbeatRequest {
                    executor_id: "ex-1".into(),
                    running: 99,
                    ..Default::default()
                },
                token,
            ))
            .await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "Heartbeat with {token:?}: {r:?}"
        );
        let r = reg
            .deregister(req(
                v1::DeregisterRequest {
                    executor_id: "ex-1".into(),
                },
                token,
            ))
            .await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "Deregister with {token:?}: {r:?}"
        );
    }
    // With the secret but a bad address: INVALID_ARGUMENT, no row either.
    let mut bad = register("ex-hand");
    bad.address = "ftp://somewhere".into();
    let r = reg.register(req(bad, Some(EXECUTOR_SECRET))).await;
    assert_eq!(code_of(&r), Code::InvalidArgument, "{r:?}");
    // The impostor process keeps trying; wait until it has been refused, and told why.
    wait_for_log(&sys, "ex-impostor", "wrong executor token").await;
    let ids: String = scalar(
        &sys.control,
        "SELECT coalesce(string_agg(id || ':' || deregistered::text, ',' ORDER BY id), '') FROM executors",
    )
    .await;
    assert_eq!(ids, "ex-1:false", "only the real executor is registered");
    assert_same(
        &before,
        &control_snapshot(&sys).await,
        "impostor registry calls",
    );

    // Straight to the executor: RunJob and CancelRun without the secret are refused, and the
    // ticketing database does not change.
    let tk_before = ticketing_snapshot(&sys).await;
    let mut ex = ExecutorClient::new(channel(format!("http://{ex_addr}"), None).await.unwrap());
    for token in [None, Some(WRONG_SECRETS[0]), Some(OPERATOR_SECRET)] {
        let r = ex.run_job(req(stray_run_job(), token)).await;
        let r: Result<Vec<ExecutorEvent>, Status> = match r {
            Ok(stream) => {
                use futures::StreamExt;
                stream
                    .into_inner()
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect()
            }
            Err(s) => Err(s),
        };
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "RunJob with {token:?}: {r:?}"
        );
        let r = ex
            .cancel_run(req(
                v1::CancelTaskRequest {
                    run_id: "x".into(),
                    ..Default::default()
                },
                token,
            ))
            .await;
        assert_eq!(
            code_of(&r),
            Code::Unauthenticated,
            "CancelRun with {token:?}: {r:?}"
        );
    }
    // With the secret but past the message limit: refused before it is parsed.
    let mut huge = stray_run_job();
    huge.params = Some(json_to_struct(
        &serde_json::json!({ "blob": "x".repeat(1024 * 1024) }),
    ));
    let r = ex.run_job(req(huge, Some(EXECUTOR_SECRET))).await;
    assert_eq!(code_of(&r), Code::OutOfRange, "1 MiB RunJob: {r:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_same(
        &tk_before,
        &ticketing_snapshot(&sys).await,
        "RunJob without the secret",
    );

    // The real thing: trigger → SUCCEEDED on ex-1, the booking cancelled.
    let run = api
        .trigger_job(req(
            TriggerJobRequest {
                job: CANCEL_EXPIRED.into(),
                ..Default::default()
            },
            Some(OPERATOR_SECRET),
        ))
        .await
        .unwrap()
        .into_inner();
    let run = wait_run(&mut api, &run.id, VIEWER_SECRET, Duration::from_secs(60)).await;
    assert_eq!(run.state(), RunState::Succeeded, "{run:#?}");
    assert_eq!(
        (run.executor_id.as_str(), run.triggered_by.as_str()),
        ("ex-1", "alice")
    );
    let status: String = scalar(
        &sys.ticketing,
        "SELECT status::text FROM bookings WHERE id = 1",
    )
    .await;
    assert_ne!(status, "pending", "the expired booking was not cancelled");
    let still: i64 = scalar(
        &sys.control,
        "SELECT count(*) FROM executors WHERE id = 'ex-impostor' OR id = 'ex-hand'",
    )
    .await;
    assert_eq!(still, 0);

    for p in &sys.procs {
        let log = p.log();
        let first = log.lines().next().unwrap_or("");
        assert!(
            serde_json::from_str::<serde_json::Value>(first).is_ok(),
            "{} does not log JSON: {first}",
            p.name
        );
    }
    let cp_log = sys.procs[0].log();
    assert!(
        cp_log.contains("alice"),
        "the control plane's log names who paused the jobs"
    );
    sys.stop_and_assert_no_secret_in_logs().await;
}

// ------------------------------------------------------------------------------------------
// TLS and mutual TLS
// ------------------------------------------------------------------------------------------

fn tls(ca_pem: &str, client: Option<&(String, String)>) -> ClientTlsConfig {
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        t = t.identity(Identity::from_pem(cert, key));
    }
    t
}

/// An HTTPS client trusting `ca_pem`, presenting `client` when given.
fn https_client(ca_pem: &str, client: Option<&(String, String)>) -> TlsConnector {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
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

#[tokio::test]
async fn tls_and_mutual_tls_with_generated_certificates() {
    let mut sys = Sys::new("tls_and_mutual_tls_with_generated_certificates").await;
    let ca = make_ca("TicketMax security test CA");
    let other = make_ca("Some other CA");
    let server = leaf(&ca, &["localhost", "127.0.0.1"], "control-plane");
    let client = leaf(&ca, &["ticketmaxctl"], "ticketmaxctl");
    let stranger = leaf(&other, &["ticketmaxctl"], "stranger");
    let dir = sys.dir.clone();
    let write = |name: &str, text: &str| write_pem(&dir, name, text);
    let cert = write("server.pem", &server.0);
    let key = write("server.key", &server.1);
    let ca_file = write("ca.pem", &ca.pem());

    // TLS: plaintext clients fail, clients trusting the CA succeed, others fail; on both ports.
    sys.http_tls = Some(https_client(&ca.pem(), None));
    let (grpc, http) = sys
        .control_plane(
            "cp-tls",
            &[
                ("TICKETMAX_TLS_CERT", cert.clone()),
                ("TICKETMAX_TLS_KEY", key.clone()),
            ],
        )
        .await;
    let https = format!("https://{grpc}");
    let plain = status_over(format!("http://{grpc}"), None).await;
    assert!(plain.is_err(), "a plaintext client got through: {plain:?}");
    let ok = status_over(https.clone(), Some(tls(&ca.pem(), None))).await;
    assert_eq!(ok.as_deref(), Ok("active"), "TLS client trusting the CA");
    let wrong = status_over(https.clone(), Some(tls(&other.pem(), None))).await;
    assert!(
        wrong.is_err(),
        "a client trusting another CA accepted the server: {wrong:?}"
    );
    let tls_http = https_client(&ca.pem(), None);
    let r = https_call(http, &tls_http, "GET", "/background-jobs/status", None).await;
    assert_eq!(r.as_ref().map(|r| r.0).ok(), Some(200), "HTTPS: {r:?}");
    let r = http_call(http, "GET", "/background-jobs/status", None).await;
    assert!(r.is_err(), "plaintext HTTP on the TLS port answered: {r:?}");
    let r = https_call(
        http,
        &https_client(&other.pem(), None),
        "GET",
        "/healthz",
        None,
    )
    .await;
    assert!(r.is_err(), "HTTPS trusting another CA, yet: {r:?}");
    sys.procs[0].kill().await;

    // Mutual TLS: a client certificate signed by TICKETMAX_TLS_CLIENT_CA is required.
    sys.http_tls = Some(https_client(&ca.pem(), Some(&client)));
    let (grpc, http) = sys
        .control_plane(
            "cp-mtls",
            &[
                ("TICKETMAX_TLS_CERT", cert),
                ("TICKETMAX_TLS_KEY", key),
                ("TICKETMAX_TLS_CLIENT_CA", ca_file),
            ],
        )
        .await;
    let https = format!("https://{grpc}");
    let none = status_over(https.clone(), Some(tls(&ca.pem(), None))).await;
    assert!(none.is_err(), "no client certificate, yet: {none:?}");
    let foreign = status_over(https.clone(), Some(tls(&ca.pem(), Some(&stranger)))).await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA, yet: {foreign:?}"
    );
    let plain = status_over(format!("http://{grpc}"), None).await;
    assert!(plain.is_err(), "plaintext, yet: {plain:?}");
    let ok = status_over(https.clone(), Some(tls(&ca.pem(), Some(&client)))).await;
    assert_eq!(ok.as_deref(), Ok("active"), "CA-signed client certificate");
    // The HTTP port asks for the same client certificate.
    for (what, tls) in [
        ("no client certificate", https_client(&ca.pem(), None)),
        (
            "a foreign certificate",
            https_client(&ca.pem(), Some(&stranger)),
        ),
    ] {
        let r = https_call(http, &tls, "GET", "/healthz", None).await;
        assert!(r.is_err(), "HTTPS with {what}, yet: {r:?}");
    }
    let r = https_call(
        http,
        &https_client(&ca.pem(), Some(&client)),
        "GET",
        "/healthz",
        None,
    )
    .await;
    assert_eq!(
        r.as_ref().map(|r| r.0).ok(),
        Some(200),
        "HTTPS with mTLS: {r:?}"
    );

    // Registration by hand over mutual TLS: only with a CA-signed certificate, and only then a
    // row. (The executor binary over mutual TLS: `mutual_tls_between_every_process`.)
    let register = v1::RegisterRequest {
        executor_id: "ex-tls".into(),
        address: "https://127.0.0.1:1".into(),
        jobs: vec![CANCEL_EXPIRED.into()],
        version: "0.0.0".into(),
        ..Default::default()
    };
    let refused = match channel(https.clone(), Some(tls(&ca.pem(), Some(&stranger)))).await {
        Ok(ch) => ExecutorRegistryClient::new(ch)
            .register(register.clone())
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
        Err(e) => Err(format!("{e:?}")),
    };
    assert!(refused.is_err(), "registered with a foreign certificate");
    let rows = || async {
        scalar::<i64>(
            &sys.control,
            "SELECT count(*) FROM executors WHERE id = 'ex-tls'",
        )
        .await
    };
    assert_eq!(rows().await, 0);
    let ch = channel(https.clone(), Some(tls(&ca.pem(), Some(&client))))
        .await
        .expect("mTLS connect");
    ExecutorRegistryClient::new(ch)
        .register(register)
        .await
        .expect("Register over mutual TLS");
    assert_eq!(rows().await, 1);
    // The private keys are not logged either.
    for p in &mut sys.procs {
        p.kill().await;
    }
    for p in &sys.procs {
        let log = p.log();
        for secret in [&server.1, &client.1] {
            let body = secret.lines().nth(1).unwrap_or("-");
            assert!(!log.contains(body), "{} logs a private key", p.name);
        }
    }
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
async fn wait_for_log(sys: &Sys, name: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = sys.procs.iter().find(|p| p.name == name).unwrap().log();
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

/// The production shape of SPEC §9 with mutual TLS and no shared executor secret: the control
/// plane, an executor and ticketmaxctl each hold a certificate from one internal CA, and each
/// server pins the names the other's certificate must carry. The executor registers over
/// mutual TLS and is dialed back over mutual TLS; executors with a foreign certificate, with
/// none, or in plaintext never register, nor does the operator's certificate; RunJob straight
/// at the executor without the control plane's certificate is refused and changes nothing; the
/// HTTP port asks for the same client certificate and `/metrics` for a viewer token.
#[tokio::test]
async fn mutual_tls_between_every_process() {
    let mut sys = Sys::new("mutual_tls_between_every_process").await;
    let ca = make_ca("TicketMax internal CA");
    let other = make_ca("Some other CA");
    let names = ["localhost", "127.0.0.1"];
    let cp = leaf(
        &ca,
        &["localhost", "127.0.0.1", "control-plane.internal"],
        "control-plane",
    );
    let ex = leaf(
        &ca,
        &["localhost", "127.0.0.1", "executor.internal"],
        "executor",
    );
    let ctl = leaf(&ca, &["ticketmaxctl"], "ticketmaxctl");
    let stranger = leaf(&other, &names, "stranger");
    let dir = sys.dir.clone();
    let write = |name: &str, text: &str| write_pem(&dir, name, text);
    let ca_file = write("ca.pem", &ca.pem());
    let other_ca_file = write("other-ca.pem", &other.pem());
    let identity = |who: &str, (cert, key): &(String, String)| {
        vec![
            ("TICKETMAX_TLS_CERT", write(&format!("{who}.pem"), cert)),
            ("TICKETMAX_TLS_KEY", write(&format!("{who}.key"), key)),
        ]
    };
    let cp_env = identity("control-plane", &cp);
    let ex_env = identity("executor", &ex);
    let ctl_files = identity("ticketmaxctl", &ctl);
    let stranger_env = identity("stranger", &stranger);

    sys.http_tls = Some(https_client(&ca.pem(), Some(&ctl)));
    let mut env = cp_env;
    env.extend([
        ("TICKETMAX_TLS_CLIENT_CA", ca_file.clone()),
        ("TICKETMAX_TLS_CA", ca_file.clone()),
        ("TICKETMAX_API_TOKENS", api_tokens()),
        // ticketmaxctl's certificate is from the same CA: pinned names keep it out.
        ("TICKETMAX_TLS_EXECUTOR_NAMES", "executor.internal".into()),
    ]);
    let (grpc, http) = sys.control_plane("cp-1", &env).await;
    let cp_url = format!("https://{grpc}");
    // No scheduled run may touch the ticketing data while the test compares snapshots.
    let mut api = JobServiceClient::with_interceptor(
        channel(cp_url.clone(), Some(tls(&ca.pem(), Some(&ctl))))
            .await
            .expect("mTLS connect"),
        ticketmax_e2e::HarnessToken,
    );
    pause_everything(&mut api, OPERATOR_SECRET).await;
    let trusting = |mut env: Vec<(&'static str, String)>, ca: &str| {
        env.extend([
            ("TICKETMAX_TLS_CLIENT_CA", ca.to_string()),
            ("TICKETMAX_TLS_CA", ca.to_string()),
            ("TICKETMAX_CONTROL_PLANE_URL", cp_url.clone()),
        ]);
        env
    };
    let mut ex_env = trusting(ex_env, &ca_file);
    ex_env.push((
        "TICKETMAX_TLS_CLIENT_NAMES",
        "control-plane.internal".into(),
    ));
    let ex_addr = sys.executor("ex-1", grpc, &ex_env, true).await;
    let advertised: String = scalar(
        &sys.control,
        "SELECT address FROM executors WHERE id = 'ex-1'",
    )
    .await;
    assert_eq!(advertised, format!("https://{ex_addr}"));

    // Would-be executors: a certificate from another CA, no certificate, plaintext.
    sys.executor(
        "ex-stranger",
        grpc,
        &trusting(stranger_env, &other_ca_file),
        false,
    )
    .await;
    sys.executor(
        "ex-anonymous",
        grpc,
        &[
            ("TICKETMAX_TLS_CA", ca_file.clone()),
            ("TICKETMAX_CONTROL_PLANE_URL", cp_url.clone()),
        ],
        false,
    )
    .await;
    sys.executor("ex-plaintext", grpc, &[], false).await;
    for name in ["ex-stranger", "ex-anonymous", "ex-plaintext"] {
        wait_for_log(&sys, name, "cannot register with the control plane").await;
    }
    let ids: String = scalar(
        &sys.control,
        "SELECT string_agg(id, ',' ORDER BY id) FROM executors",
    )
    .await;
    assert_eq!(
        ids, "ex-1",
        "only the executor with a CA-signed certificate"
    );
    // An operator's certificate from the same CA passes the handshake but is not an executor's.
    let register = v1::RegisterRequest {
        executor_id: "ex-operator".into(),
        address: format!("https://{ex_addr}"),
        jobs: vec![CANCEL_EXPIRED.into()],
        version: "0.0.0".into(),
        ..Default::default()
    };
    let r = ExecutorRegistryClient::new(
        channel(cp_url.clone(), Some(tls(&ca.pem(), Some(&ctl))))
            .await
            .expect("mTLS connect"),
    )
    .register(register)
    .await;
    assert_eq!(code_of(&r), Code::PermissionDenied, "{r:?}");
    let n: i64 = scalar(
        &sys.control,
        "SELECT count(*) FROM executors WHERE id = 'ex-operator'",
    )
    .await;
    assert_eq!(n, 0);

    // RunJob straight at the executor without the control plane's trust: nothing runs.
    one_expired_booking(&sys).await;
    let tk_before = ticketing_snapshot(&sys).await;
    let ex_url = format!("https://{ex_addr}");
    for (what, url, tls) in [
        ("plaintext", format!("http://{ex_addr}"), None),
        (
            "no client certificate",
            ex_url.clone(),
            Some(tls(&ca.pem(), None)),
        ),
        (
            "a foreign client certificate",
            ex_url.clone(),
            Some(tls(&ca.pem(), Some(&stranger))),
        ),
        (
            "an operator's certificate from the same CA",
            ex_url.clone(),
            Some(tls(&ca.pem(), Some(&ctl))),
        ),
    ] {
        let r = run_job_over(url, tls).await;
        assert!(r.is_err(), "RunJob with {what} ran: {r:?}");
        if what.starts_with("an operator") {
            assert!(
                r.as_ref().is_err_and(|e| e.contains("PermissionDenied")),
                "{r:?}"
            );
        }
    }
    assert_same(
        &tk_before,
        &ticketing_snapshot(&sys).await,
        "RunJob without the control plane's certificate",
    );

    // ticketmaxctl over mutual TLS: refused without its certificate, then the real trigger runs
    // on ex-1, which the control plane dialed over mutual TLS.
    let ctl_cmd = |with_cert: bool| {
        let mut cmd = tokio::process::Command::new(binary("ticketmaxctl"));
        cmd.env_clear()
            .env("TICKETMAX_CONTROL_PLANE_URL", &cp_url)
            .env("TICKETMAX_CA_FILE", &ca_file)
            .env("TICKETMAX_TOKEN", OPERATOR_SECRET)
            .args(["trigger", CANCEL_EXPIRED, "--wait", "--timeout", "60"])
            .kill_on_drop(true);
        if with_cert {
            cmd.args([
                "--client-cert",
                &ctl_files[0].1,
                "--client-key",
                &ctl_files[1].1,
            ]);
        }
        cmd
    };
    let out = tokio::time::timeout(Duration::from_secs(60), ctl_cmd(false).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !out.status.success(),
        "ticketmaxctl without a client certificate: {out:?}"
    );
    assert_same(
        &tk_before,
        &ticketing_snapshot(&sys).await,
        "ticketmaxctl without a client certificate",
    );
    let out = tokio::time::timeout(Duration::from_secs(120), ctl_cmd(true).output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ticketmaxctl trigger --wait: {text}");
    let (state, executor, who): (String, String, String) = (
        scalar(
            &sys.control,
            "SELECT state FROM runs WHERE trigger = 'manual'",
        )
        .await,
        scalar(
            &sys.control,
            "SELECT executor_id FROM runs WHERE trigger = 'manual'",
        )
        .await,
        scalar(
            &sys.control,
            "SELECT triggered_by FROM runs WHERE trigger = 'manual'",
        )
        .await,
    );
    assert_eq!(
        (state.as_str(), executor.as_str(), who.as_str()),
        ("succeeded", "ex-1", "alice"),
        "{text}"
    );
    let booking: String = scalar(
        &sys.ticketing,
        "SELECT status::text FROM bookings WHERE id = 1",
    )
    .await;
    assert_eq!(booking, "cancelled");

    // The HTTP port over mutual TLS: /healthz for anyone holding a certificate, /metrics only
    // with a viewer token.
    let https = https_client(&ca.pem(), Some(&ctl));
    let code = |r: std::io::Result<(u16, String)>| r.map(|r| r.0).map_err(|e| e.to_string());
    assert_eq!(
        code(https_call(http, &https, "GET", "/healthz", None).await),
        Ok(200)
    );
    assert_eq!(
        code(https_call(http, &https, "GET", "/metrics", None).await),
        Ok(401)
    );
    let (status, body) = https_call(http, &https, "GET", "/metrics", Some(VIEWER_SECRET))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ticketmax_runs{"), "{body}");

    for p in &mut sys.procs {
        p.kill().await;
    }
    for p in &sys.procs {
        let log = p.log();
        for (_, key) in [&cp, &ex, &ctl, &stranger] {
            let body = key.lines().nth(1).unwrap_or("-");
            assert!(!log.contains(body), "{} logs a private key", p.name);
        }
    }
    sys.stop_and_assert_no_secret_in_logs().await;
}

/// What an operator checks from outside the repo: the real grpcurl, by reflection, against a
/// control plane with mutual TLS and tokens. No, wrong and right credentials, then a table of
/// bad inputs; each refused with its status, and the database unchanged.
#[tokio::test]
async fn grpcurl_credentials_and_bad_inputs_over_mutual_tls() {
    let mut sys = Sys::new("grpcurl_credentials_and_bad_inputs_over_mutual_tls").await;
    let ca = make_ca("TicketMax internal CA");
    let cp = leaf(&ca, &["localhost", "127.0.0.1"], "control-plane");
    let ctl = leaf(&ca, &["operator"], "operator");
    let dir = sys.dir.clone();
    let write = |name: &str, text: &str| write_pem(&dir, name, text);
    let ca_file = write("ca.pem", &ca.pem());
    let (ctl_cert, ctl_key) = (write("me.pem", &ctl.0), write("me.key", &ctl.1));
    sys.http_tls = Some(https_client(&ca.pem(), Some(&ctl)));
    let (grpc, _) = sys
        .control_plane(
            "cp-1",
            &[
                ("TICKETMAX_TLS_CERT", write("cp.pem", &cp.0)),
                ("TICKETMAX_TLS_KEY", write("cp.key", &cp.1)),
                ("TICKETMAX_TLS_CLIENT_CA", ca_file.clone()),
                ("TICKETMAX_API_TOKENS", api_tokens()),
            ],
        )
        .await;
    let target = format!("localhost:{}", grpc.port());
    let mtls = [
        "-cacert",
        ca_file.as_str(),
        "-cert",
        ctl_cert.as_str(),
        "-key",
        ctl_key.as_str(),
    ];
    // (exit success, stdout + stderr)
    let grpcurl = |flags: &[&str], token: Option<&str>, method: &str, body: &str| {
        let mut cmd = tokio::process::Command::new(ticketmax_e2e::grpcurl_path());
        cmd.args(flags);
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        cmd.args(["-d", body, &target])
            .arg(format!("ticketmax.jobs.v1.JobService/{method}"))
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("grpcurl did not finish in 30 s")
                .expect("run grpcurl");
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    };
    let (ok, text) = grpcurl(&mtls, Some(OPERATOR_SECRET), "GetStatus", "{}").await;
    assert!(ok, "GetStatus over mutual TLS: {text}");
    let before = control_snapshot(&sys).await;

    // Transport: without the client certificate, or in plaintext, nothing gets through.
    for (what, flags) in [
        ("no client certificate", vec!["-cacert", ca_file.as_str()]),
        ("plaintext", vec!["-plaintext"]),
    ] {
        let (ok, text) = grpcurl(&flags, Some(OPERATOR_SECRET), "GetStatus", "{}").await;
        assert!(!ok, "GetStatus with {what}: {text}");
    }
    // Credentials and roles.
    let job = CANCEL_EXPIRED;
    let trigger = format!(r#"{{"job": "{job}"}}"#);
    let pause = format!(r#"{{"name": "{job}"}}"#);
    let update = |field: &str| format!(r#"{{"name": "{job}", {field}}}"#);
    let unknown_run = format!(r#"{{"runId": "{}"}}"#, uuid::Uuid::new_v4());
    let long_key = format!(
        r#"{{"job": "{job}", "idempotencyKey": "{}"}}"#,
        "k".repeat(201)
    );
    let long_name = format!(r#"{{"name": "{}"}}"#, "x".repeat(10 * 1024));
    let cases: Vec<(&str, Option<&str>, &str, String, &str)> = vec![
        (
            "no token",
            None,
            "GetStatus",
            "{}".into(),
            "Unauthenticated",
        ),
        (
            "wrong token",
            Some(WRONG_SECRETS[0]),
            "GetStatus",
            "{}".into(),
            "Unauthenticated",
        ),
        (
            "no token",
            None,
            "TriggerJob",
            trigger.clone(),
            "Unauthenticated",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "TriggerJob",
            trigger.clone(),
            "PermissionDenied",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "PauseJob",
            pause.clone(),
            "PermissionDenied",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "UpdateJob",
            update(r#""schedule": "* * * * *""#),
            "PermissionDenied",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "CancelRun",
            unknown_run.clone(),
            "PermissionDenied",
        ),
        // Bad inputs, with the operator's token.
        (
            "empty name",
            Some(OPERATOR_SECRET),
            "GetJob",
            r#"{"name": ""}"#.into(),
            "InvalidArgument",
        ),
        (
            "10 KB name",
            Some(OPERATOR_SECRET),
            "PauseJob",
            long_name,
            "InvalidArgument",
        ),
        (
            "unknown job",
            Some(OPERATOR_SECRET),
            "TriggerJob",
            r#"{"job": "nope/no-such-job"}"#.into(),
            "NotFound",
        ),
        (
            "201-char idempotency key",
            Some(OPERATOR_SECRET),
            "TriggerJob",
            long_key,
            "InvalidArgument",
        ),
        (
            "bad cron",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""schedule": "not a cron""#),
            "InvalidArgument",
        ),
        (
            "minute 61",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""schedule": "61 * * * *""#),
            "InvalidArgument",
        ),
        (
            "never fires (30 Feb)",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""schedule": "0 0 30 2 *""#),
            "InvalidArgument",
        ),
        (
            "bad timezone",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""timezone": "Mars/Olympus""#),
            "InvalidArgument",
        ),
        (
            "max_retries 101",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""maxRetries": 101"#),
            "InvalidArgument",
        ),
        (
            "bad page token",
            Some(OPERATOR_SECRET),
            "ListRuns",
            r#"{"pageToken": "not-a-token"}"#.into(),
            "InvalidArgument",
        ),
        (
            "unknown run",
            Some(OPERATOR_SECRET),
            "GetRun",
            unknown_run.clone(),
            "NotFound",
        ),
        (
            "cancel unknown run",
            Some(OPERATOR_SECRET),
            "CancelRun",
            unknown_run,
            "NotFound",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, token, method, body, code) in &cases {
        let (ok, text) = grpcurl(&mtls, *token, method, body).await;
        if ok || !text.contains(&format!("Code: {code}")) {
            wrong.push(format!("{method} ({what}): expected {code}, got: {text}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_same(
        &before,
        &control_snapshot(&sys).await,
        "refused grpcurl calls",
    );

    // And the right credentials do change things.
    let (ok, text) = grpcurl(&mtls, Some(OPERATOR_SECRET), "PauseJob", &pause).await;
    assert!(ok, "PauseJob as operator: {text}");
    let updated_by: String = scalar(
        &sys.control,
        &format!("SELECT coalesce(updated_by, '') FROM jobs WHERE name = '{job}'"),
    )
    .await;
    assert_eq!(updated_by, "alice");
    sys.stop_and_assert_no_secret_in_logs().await;
}

/// Plaintext and open doors are fine on loopback, a mistake anywhere else: both binaries say
/// so at start when they listen on 0.0.0.0 without TLS or credentials, and say nothing once
/// TLS and credentials are configured.
#[tokio::test]
async fn exposed_listeners_without_protection_are_called_out_at_start() {
    let mut sys = Sys::new("exposed_listeners_without_protection_are_called_out_at_start").await;
    let ca = make_ca("TicketMax internal CA");
    let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"], "ticketmax");
    let protected = [
        ("TICKETMAX_TLS_CERT", write_pem(&sys.dir, "cert.pem", &cert)),
        ("TICKETMAX_TLS_KEY", write_pem(&sys.dir, "cert.key", &key)),
        ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.to_string()),
    ];
    let cp_warnings = [
        "gRPC listens on a non-loopback address without TLS",
        "HTTP listens on a non-loopback address without TLS",
        "without API tokens",
        "executors are not authenticated",
    ];
    let ex_warnings = [
        "accepts RunJob from anyone",
        "serves plaintext gRPC on a non-loopback address",
    ];

    for (round, guarded) in [("open", false), ("guarded", true)] {
        let grpc = free_port();
        let mut env = vec![
            ("TICKETMAX_GRPC_ADDR", format!("0.0.0.0:{grpc}")),
            ("TICKETMAX_HTTP_ADDR", format!("0.0.0.0:{}", free_port())),
            ("DATABASE_URL", sys.cp_url.clone()),
        ];
        let mut ex_env = vec![
            (
                "TICKETMAX_EXECUTOR_ADDR",
                format!("0.0.0.0:{}", free_port()),
            ),
            ("TICKETING_DATABASE_URL", sys.tk_url.clone()),
            (
                "TICKETMAX_CONTROL_PLANE_URL",
                format!("http://127.0.0.1:{grpc}"),
            ),
        ];
        if guarded {
            env.extend(protected.iter().cloned());
            env.push(("TICKETMAX_API_TOKENS", api_tokens()));
            ex_env.extend(protected.iter().cloned());
        }
        let (cp, ex) = (format!("cp-{round}"), format!("ex-{round}"));
        sys.spawn(&cp, CONTROL_PLANE_BIN, &env);
        sys.spawn(&ex, EXECUTOR_BIN, &ex_env);
        wait_for_log(&sys, &cp, "control plane listening").await;
        wait_for_log(&sys, &ex, "executor serving").await;
        for (name, warnings) in [(&cp, &cp_warnings[..]), (&ex, &ex_warnings[..])] {
            let log = sys.procs.iter().find(|p| &p.name == name).unwrap().log();
            for w in warnings {
                assert_eq!(
                    log.contains(w),
                    !guarded,
                    "{name}: warning {w:?} expected: {}\n{log}",
                    !guarded
                );
            }
        }
        for p in &mut sys.procs {
            p.kill().await;
        }
    }
    sys.stop_and_assert_no_secret_in_logs().await;
}

/// A token configuration that cannot be meant stops the control plane at start-up, with a
/// message that names the entry but not the hash.
#[tokio::test]
async fn misconfigured_tokens_stop_the_control_plane_with_a_clear_message() {
    let h = sha256_hex(VIEWER_SECRET);
    for (tokens, expect) in [
        (
            format!("dash:viewer:{h},ops:operator:{h}"),
            "'dash' and 'ops' the same token",
        ),
        (
            format!("dash:root:{h}"),
            "entry 1 is not NAME:ROLE:SHA256HEX",
        ),
        (
            format!(
                "dash:viewer:{h},dash:operator:{}",
                sha256_hex(OPERATOR_SECRET)
            ),
            "names 'dash' twice",
        ),
        (
            "dash:viewer:abc".to_string(),
            "entry 1 is not NAME:ROLE:SHA256HEX",
        ),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(binary(CONTROL_PLANE_BIN))
                .env_clear()
                .env("TICKETMAX_API_TOKENS", &tokens)
                .env("TICKETMAX_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
                .env("TICKETMAX_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the control plane should refuse to start, not hang")
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{tokens}: started: {text}");
        assert!(text.contains(expect), "{tokens}: {text}");
        assert!(!text.contains(&h), "{tokens}: the hash is echoed: {text}");
    }
}
