//! The system's processes as the harness sees them: a control-plane replica and an executor,
//! each a [`Proc`] with its ports, and how the harness tells that it is up (`GetStatus`,
//! `/healthz`, the store's `executors` row), retrying on fresh ports when a picked port was
//! taken before the process bound it.
use std::net::SocketAddr;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tonic::transport::Endpoint;

use crate::*;
// -------------------------------------------------------------------------------------------
// Processes
// -------------------------------------------------------------------------------------------

/// A control-plane replica.
pub struct ControlPlane {
    pub proc: Proc,
    pub replica_id: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub(crate) client: Option<Api>,
    pub(crate) readiness: Readiness,
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
    pub(crate) async fn start_on_free_ports(&mut self) {
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
    pub(crate) registered: Registered,
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
    pub(crate) async fn start_on_free_port(&mut self) {
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
        let n: i64 = crate::app::scalar(db, &sql, "control-plane").await;
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
