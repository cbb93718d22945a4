//! Rust client for the TicketMax Jobs control plane (`ticketmax.jobs.v1.JobService`).
//!
//! Two layers:
//!
//! - [`proto`]: the generated gRPC code (messages, enums and the raw
//!   [`proto::job_service_client::JobServiceClient`]), re-exported from
//!   `ticketmax-proto`, for callers that want full control.
//! - [`Client`]: an ergonomic wrapper with one method per use case, an optional bearer token,
//!   optional TLS, errors that say which call failed ([`Error`]), and helpers that the raw API
//!   does not have: paging through every run ([`Client::all_runs`]), following a run's events
//!   ([`Client::watch`]) and triggering a job and waiting for its outcome
//!   ([`Client::trigger_and_wait`]).
//!
//! The [`json`] module turns the messages into `serde_json` values (snake_case field names, enum
//! names such as `"RUN_STATE_SUCCEEDED"`, RFC 3339 times), as `ticketmaxctl --output json`
//! prints them.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use ticketmax_client::{Client, proto::RunState};
//!
//! # async fn demo() -> Result<(), ticketmax_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//!
//! // Every job with its schedule, next fire time and last run.
//! for job in client.status().await?.jobs {
//!     println!("{} {} enabled={}", job.name, job.schedule, job.enabled);
//! }
//!
//! // Run one now and wait (at most a minute) for the outcome.
//! let run = client
//!     .trigger_and_wait("booking-cleanup/cancel-expired-bookings", Duration::from_secs(60))
//!     .await?;
//! assert!(run.state().is_terminal());
//! if run.state() == RunState::Succeeded {
//!     println!("summary: {}", ticketmax_client::json::summary(&run));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! With a token and TLS:
//!
//! ```no_run
//! # async fn demo() -> Result<(), ticketmax_client::Error> {
//! let client = ticketmax_client::Client::builder("https://jobs.internal:50051")
//!     .token("s3cr3t")
//!     .ca_file("/etc/ticketmax/ca.pem")
//!     .connect()
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

pub use ticketmax_proto::v1 as proto;
pub use ticketmax_proto::{from_timestamp, json_to_struct, struct_to_json, to_timestamp};

use proto::job_service_client::JobServiceClient;
use proto::{
    CancelRunRequest, GetJobRequest, GetReportRequest, GetRunRequest, GetStatusRequest,
    GetStatusResponse, Job, ListJobsRequest, ListReportsRequest, ListRunsRequest, MissedTickPolicy,
    OverlapPolicy, PauseJobRequest, Report, ResumeJobRequest, Run, RunEvent, RunState,
    TriggerJobRequest, UpdateJobRequest, WatchRunRequest,
};

pub mod json;

/// The control plane's default address (`TICKETMAX_CONTROL_PLANE_URL`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:50051";

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

// -------------------------------------------------------------------------------------------
// Errors
// -------------------------------------------------------------------------------------------

/// Everything a [`Client`] call can fail with. `Display` is one line that names the failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not `http://host:port` or `https://host:port`.
    #[error("invalid control plane URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The control plane could not be reached (refused, DNS, TLS handshake, timeout).
    #[error("cannot connect to the control plane at {url}: {}", chain(.source))]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {}: {source}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings were rejected.
    #[error("invalid TLS configuration: {}", chain(.0))]
    Tls(#[source] tonic::transport::Error),
    /// The bearer token cannot be sent as a header.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A call was refused or failed on the server side; `method` is the gRPC method name.
    #[error("{method}: {} ({})", status_message(.status), code_name(.status.code()))]
    Rpc {
        method: &'static str,
        #[source]
        status: Status,
    },
    /// Input rejected before anything was sent.
    #[error("{0}")]
    InvalidInput(String),
    /// [`Client::wait`] / [`Client::trigger_and_wait`] gave up; the run goes on.
    #[error("run {run_id} did not end within {timeout:?} (last state: {last_state})")]
    Timeout {
        run_id: String,
        timeout: Duration,
        last_state: String,
    },
}

impl Error {
    /// The gRPC status code, for errors that carry one (a connection failure counts as
    /// `UNAVAILABLE`).
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            Error::Connect { .. } => Some(Code::Unavailable),
            _ => None,
        }
    }

    /// The status returned by the server, if this is an RPC error.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The job, run or report does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// The control plane could not be reached, or the connection failed during the call
    /// (tonic reports some of those as `UNKNOWN` or `INTERNAL` with a transport or HTTP/2 error
    /// inside, e.g. plaintext to a TLS port); retrying later may help.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Rpc { status, .. } => {
                status.code() == Code::Unavailable
                    || (matches!(status.code(), Code::Unknown | Code::Internal)
                        && is_transport_failure(status))
            }
            _ => false,
        }
    }

    fn rpc(method: &'static str) -> impl Fn(Status) -> Error + Copy + Send + Sync + 'static {
        move |status| Error::Rpc { method, status }
    }
}

/// The canonical upper-case name of a gRPC code, e.g. `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_message(status: &Status) -> String {
    let msg = status.message().trim();
    let mut out = if msg.is_empty() {
        "no message".to_string()
    } else {
        msg.replace('\n', " ")
    };
    // Transport failures put the useful part ("Connection refused") in the source chain.
    if let Some(source) = std::error::Error::source(status) {
        let detail = chain(source);
        if detail.starts_with(&out) {
            out = detail;
        } else if !detail.is_empty() && !out.contains(&detail) {
            out.push_str(": ");
            out.push_str(&detail);
        }
    }
    out
}

/// Whether a status came from the transport (connection refused or broken) rather than from
/// the server.
fn is_transport_failure(status: &Status) -> bool {
    // tonic turns HTTP/2 connection errors into INTERNAL "h2 protocol error: ...".
    if status.message().starts_with("h2 protocol error") {
        return true;
    }
    let mut cur = std::error::Error::source(status);
    while let Some(err) = cur {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An error and its sources on one line: "transport error: tcp connect error: refused".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string().replace('\n', " ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

// -------------------------------------------------------------------------------------------
// Authentication
// -------------------------------------------------------------------------------------------

/// Interceptor that adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Default)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    /// No token: calls go out unchanged.
    pub fn none() -> Self {
        Self::default()
    }

    /// Fails when the token is empty or not visible ASCII.
    pub fn new(token: &str) -> Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::InvalidToken("the token is empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidToken(
                "a token may only contain visible ASCII characters".into(),
            ));
        }
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::InvalidToken("not a valid header value".into()))?;
        Ok(Self {
            header: Some(header),
        })
    }
}

impl std::fmt::Debug for BearerAuth {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// The raw generated client as a [`Client`] uses it (channel plus [`BearerAuth`]).
pub type RawClient = JobServiceClient<InterceptedService<Channel, BearerAuth>>;

// -------------------------------------------------------------------------------------------
// Builder
// -------------------------------------------------------------------------------------------

/// Options for [`Client`]: token, TLS, timeouts.
///
/// ```no_run
/// # async fn demo() -> Result<(), ticketmax_client::Error> {
/// use std::time::Duration;
/// let client = ticketmax_client::Client::builder("http://127.0.0.1:50051")
///     .token("operator-token")
///     .connect_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    domain: Option<String>,
    connect_timeout: Duration,
    lazy: bool,
}

impl ClientBuilder {
    /// Sends `authorization: Bearer <token>` with every call. An empty token means none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.trim().is_empty()).then_some(token);
        self
    }

    /// Trusts the CA certificate(s) in this PEM file instead of the built-in web PKI roots
    /// (implies TLS).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM) for mutual TLS.
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Expects this name in the server certificate (default: the URL's host).
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// How long to wait for the TCP (and TLS) connection; default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects on the first call instead of in [`connect`](Self::connect).
    pub fn lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let url = self.url.trim().to_string();
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.clone(),
            reason: reason.into(),
        };
        let https = url.starts_with("https://");
        if !(https || url.starts_with("http://")) {
            return Err(invalid("expected http://HOST:PORT or https://HOST:PORT"));
        }
        let uri: tonic::transport::Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| invalid(&chain(&e)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if https || self.ca_file.is_some() || self.identity.is_some() {
            let mut tls = ClientTlsConfig::new();
            match &self.ca_file {
                Some(path) => {
                    let pem = read("CA certificate", path)?;
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                None => tls = tls.with_webpki_roots(),
            }
            if let Some((cert, key)) = &self.identity {
                let cert = read("client certificate", cert)?;
                let key = read("client key", key)?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &self.domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(Error::Tls)?;
        }
        Ok(endpoint)
    }

    /// Builds the client; unless [`lazy`](Self::lazy), connects now and fails with
    /// [`Error::Connect`] when the control plane cannot be reached.
    pub async fn connect(self) -> Result<Client> {
        let auth = match &self.token {
            Some(t) => BearerAuth::new(t)?,
            None => BearerAuth::none(),
        };
        let endpoint = self.endpoint()?;
        let channel = if self.lazy {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            })?
        };
        let api = JobServiceClient::with_interceptor(channel, auth)
            .max_decoding_message_size(64 * 1024 * 1024);
        Ok(Client { api, url: self.url })
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::File {
        what,
        path: path.clone(),
        source,
    })
}

// -------------------------------------------------------------------------------------------
// Request options
// -------------------------------------------------------------------------------------------

/// Options of [`Client::trigger_with`].
#[derive(Debug, Clone, Default)]
pub struct TriggerOptions {
    /// A key repeated for the same job returns the run created the first time instead of a new
    /// one (safe retries).
    pub idempotency_key: Option<String>,
    /// Task parameters (a JSON object), passed to the executor as they are.
    pub params: Option<serde_json::Value>,
}

/// Which runs [`Client::runs`] and [`Client::all_runs`] return, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this job.
    pub job: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Runs per page, 1..=500 (server default 50 when 0).
    pub page_size: u32,
    /// Continue after this page ([`RunsPage::next_page_token`]).
    pub page_token: Option<String>,
}

impl RunFilter {
    /// Runs of one job.
    pub fn job(job: impl Into<String>) -> Self {
        Self {
            job: Some(job.into()),
            ..Self::default()
        }
    }

    /// Only runs in `state`.
    pub fn state(mut self, state: RunState) -> Self {
        self.state = Some(state);
        self
    }

    /// Runs per page.
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }
}

/// One page of [`Client::runs`].
#[derive(Debug, Clone, Default)]
pub struct RunsPage {
    pub runs: Vec<Run>,
    /// `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Changes for [`Client::update`]; fields left `None` keep their value.
#[derive(Debug, Clone, Default)]
pub struct UpdateJob {
    /// Cron (5 fields, or 6 with seconds first) or a named expression such as
    /// `EVERY_5_MINUTES`.
    pub schedule: Option<String>,
    /// IANA timezone, e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
    pub enabled: Option<bool>,
    pub overlap_policy: Option<OverlapPolicy>,
    pub missed_tick_policy: Option<MissedTickPolicy>,
    pub catch_up_window_seconds: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub max_retries: Option<u32>,
}

impl UpdateJob {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.schedule.is_none()
            && self.timezone.is_none()
            && self.enabled.is_none()
            && self.overlap_policy.is_none()
            && self.missed_tick_policy.is_none()
            && self.catch_up_window_seconds.is_none()
            && self.timeout_seconds.is_none()
            && self.max_retries.is_none()
    }
}

// -------------------------------------------------------------------------------------------
// Client
// -------------------------------------------------------------------------------------------

/// A connection to the control plane's `JobService`. Cheap to clone (clones share the HTTP/2
/// connection); every method takes `&self`.
#[derive(Debug, Clone)]
pub struct Client {
    api: RawClient,
    url: String,
}

impl Client {
    /// Connects without token or custom TLS (`https://` URLs use the web PKI roots).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), ticketmax_client::Error> {
    /// let client = ticketmax_client::Client::connect("http://127.0.0.1:50051").await?;
    /// println!("{} jobs", client.jobs().await?.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        Self::builder(url).connect().await
    }

    /// A builder for token, TLS and timeouts.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: None,
            ca_file: None,
            identity: None,
            domain: None,
            connect_timeout: Duration::from_secs(5),
            lazy: false,
        }
    }

    /// The URL this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> RawClient {
        self.api.clone()
    }

    /// `GetStatus`: scheduler status, every job with its next fire time and last run, the
    /// executors and this replica's role.
    pub async fn status(&self) -> Result<GetStatusResponse> {
        self.raw()
            .get_status(GetStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetStatus"))
    }

    /// `ListJobs`: every job.
    pub async fn jobs(&self) -> Result<Vec<Job>> {
        self.jobs_of_service("").await
    }

    /// `ListJobs(service)`: the jobs of one service, e.g. `booking-cleanup`.
    pub async fn jobs_of_service(&self, service: &str) -> Result<Vec<Job>> {
        self.raw()
            .list_jobs(ListJobsRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().jobs)
            .map_err(Error::rpc("ListJobs"))
    }

    /// `GetJob(name)`; [`Error::is_not_found`] for an unknown name.
    pub async fn job(&self, name: &str) -> Result<Job> {
        self.raw()
            .get_job(GetJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetJob"))
    }

    /// `TriggerJob(job)`: the new run (usually `RUN_STATE_QUEUED`, or `RUN_STATE_SKIPPED` when
    /// the job's overlap policy refuses it).
    pub async fn trigger(&self, job: &str) -> Result<Run> {
        self.trigger_with(job, TriggerOptions::default()).await
    }

    /// `TriggerJob` with an idempotency key and/or parameters.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use ticketmax_client::TriggerOptions;
    /// let run = client
    ///     .trigger_with(
    ///         "notifications/send-re-engagement-emails",
    ///         TriggerOptions {
    ///             idempotency_key: Some("campaign-2026-11".into()),
    ///             params: Some(serde_json::json!({"batch_limit": 100})),
    ///         },
    ///     )
    ///     .await?;
    /// println!("run {} is {}", run.id, run.state().as_str_name());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn trigger_with(&self, job: &str, options: TriggerOptions) -> Result<Run> {
        let params = match &options.params {
            None => None,
            Some(v @ serde_json::Value::Object(_)) => Some(json_to_struct(v)),
            Some(_) => {
                return Err(Error::InvalidInput(
                    "trigger params must be a JSON object".into(),
                ));
            }
        };
        self.raw()
            .trigger_job(TriggerJobRequest {
                job: job.into(),
                idempotency_key: options.idempotency_key.unwrap_or_default(),
                params,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("TriggerJob"))
    }

    /// Triggers `job` and waits until its run ends (see [`wait`](Self::wait)); returns the final
    /// run, whatever its state.
    pub async fn trigger_and_wait(&self, job: &str, timeout: Duration) -> Result<Run> {
        self.trigger_and_wait_with(job, TriggerOptions::default(), timeout)
            .await
    }

    /// [`trigger_with`](Self::trigger_with), then [`wait`](Self::wait).
    pub async fn trigger_and_wait_with(
        &self,
        job: &str,
        options: TriggerOptions,
        timeout: Duration,
    ) -> Result<Run> {
        let run = self.trigger_with(job, options).await?;
        if run.state().is_terminal() {
            return Ok(run);
        }
        self.wait(&run.id, timeout).await
    }

    /// Follows the run's events until it ends and returns the final run. Survives a dropped
    /// stream (it resumes after the last event seen). Fails with [`Error::Timeout`] after
    /// `timeout`; the run itself goes on.
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Result<Run> {
        let follow = async {
            let mut after = 0u64;
            loop {
                let mut events = self.watch(run_id, after);
                while let Some(item) = events.next().await {
                    match item {
                        Ok(e) => after = after.max(e.seq),
                        Err(e) if e.is_unavailable() => break,
                        Err(e) => return Err(e),
                    }
                }
                match self.run(run_id).await {
                    Ok(run) if run.state().is_terminal() => return Ok(run),
                    Ok(_) => {}
                    Err(e) if e.is_unavailable() => {}
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        match tokio::time::timeout(timeout, follow).await {
            Ok(result) => result,
            Err(_) => {
                let last_state = match self.run(run_id).await {
                    Ok(run) => run.state().as_str_name().to_string(),
                    Err(e) => format!("unknown: {e}"),
                };
                Err(Error::Timeout {
                    run_id: run_id.into(),
                    timeout,
                    last_state,
                })
            }
        }
    }

    /// `GetRun(id)`.
    pub async fn run(&self, run_id: &str) -> Result<Run> {
        self.raw()
            .get_run(GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetRun"))
    }

    /// `ListRuns`: one page of runs, newest first.
    pub async fn runs(&self, filter: RunFilter) -> Result<RunsPage> {
        let resp = self
            .raw()
            .list_runs(ListRunsRequest {
                job: filter.job.unwrap_or_default(),
                state: filter.state.unwrap_or(RunState::Unspecified).into(),
                page_size: filter.page_size,
                page_token: filter.page_token.unwrap_or_default(),
            })
            .await
            .map_err(Error::rpc("ListRuns"))?
            .into_inner();
        Ok(RunsPage {
            runs: resp.runs,
            next_page_token: (!resp.next_page_token.is_empty()).then_some(resp.next_page_token),
        })
    }

    /// Every run matching `filter`, newest first, fetching pages as the stream is read.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use futures::TryStreamExt;
    /// use ticketmax_client::{RunFilter, proto::RunState};
    ///
    /// let failed: Vec<_> = client
    ///     .all_runs(RunFilter::job("payment-cleanup/cleanup-abandoned-payments").state(RunState::Failed))
    ///     .try_collect()
    ///     .await?;
    /// println!("{} failed runs", failed.len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn all_runs(
        &self,
        filter: RunFilter,
    ) -> impl Stream<Item = Result<Run>> + Send + Unpin + 'static {
        let client = self.clone();
        // State: the next token to ask for, or None when the last page was read.
        let pages = stream::try_unfold(
            Some(filter.page_token.clone().unwrap_or_default()),
            move |token| {
                let client = client.clone();
                let mut filter = filter.clone();
                async move {
                    let Some(token) = token else {
                        return Ok(None);
                    };
                    filter.page_token = (!token.is_empty()).then_some(token.clone());
                    let page = client.runs(filter).await?;
                    // A server that hands back the token it was given would loop forever.
                    let next = page.next_page_token.filter(|t| *t != token);
                    Ok(Some((page.runs, next)))
                }
            },
        );
        Box::pin(
            pages
                .map_ok(|runs| stream::iter(runs.into_iter().map(Ok)))
                .try_flatten(),
        )
    }

    /// `WatchRun(run_id, after_seq)`: the run's stored events after `after_seq` (0 = all), then
    /// live ones; the stream ends when the run has ended.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use futures::StreamExt;
    /// use ticketmax_client::proto::run_event::Kind;
    ///
    /// let mut events = client.watch("0192f5c1-...", 0);
    /// while let Some(event) = events.next().await {
    ///     match event?.kind {
    ///         Some(Kind::Progress(p)) => println!("{}/{} {}", p.done, p.total, p.message),
    ///         Some(Kind::Log(l)) => println!("[{}] {}", l.level, l.message),
    ///         Some(Kind::State(s)) => println!("state {}", s.state().as_str_name()),
    ///         None => {}
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> impl Stream<Item = Result<RunEvent>> + Send + Unpin + 'static {
        let mut api = self.raw();
        let req = WatchRunRequest {
            run_id: run_id.into(),
            after_seq,
        };
        Box::pin(
            stream::once(async move {
                api.watch_run(req)
                    .await
                    .map(|resp| resp.into_inner().map_err(Error::rpc("WatchRun")))
                    .map_err(Error::rpc("WatchRun"))
            })
            .try_flatten(),
        )
    }

    /// `CancelRun`: a queued run is cancelled at once; a running one is asked to stop at its next
    /// chunk boundary (the returned run may still be `RUNNING`). `FAILED_PRECONDITION` when the
    /// run has already ended.
    pub async fn cancel(&self, run_id: &str, reason: Option<&str>) -> Result<Run> {
        self.raw()
            .cancel_run(CancelRunRequest {
                run_id: run_id.into(),
                reason: reason.unwrap_or_default().into(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("CancelRun"))
    }

    /// `PauseJob`: the schedule stops firing (manual triggers still work).
    pub async fn pause(&self, name: &str) -> Result<Job> {
        self.raw()
            .pause_job(PauseJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("PauseJob"))
    }

    /// `ResumeJob`.
    pub async fn resume(&self, name: &str) -> Result<Job> {
        self.raw()
            .resume_job(ResumeJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("ResumeJob"))
    }

    /// `UpdateJob`: changes the fields that are set. A bad cron or timezone is
    /// `INVALID_ARGUMENT` and changes nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use ticketmax_client::UpdateJob;
    /// let job = client
    ///     .update(
    ///         "analytics/generate-daily-analytics",
    ///         UpdateJob {
    ///             schedule: Some("0 30 23 * * *".into()),
    ///             timezone: Some("Africa/Lagos".into()),
    ///             ..UpdateJob::default()
    ///         },
    ///     )
    ///     .await?;
    /// println!("next fire: {:?}", job.next_fire_time);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update(&self, name: &str, changes: UpdateJob) -> Result<Job> {
        self.raw()
            .update_job(UpdateJobRequest {
                name: name.into(),
                schedule: changes.schedule,
                timezone: changes.timezone,
                enabled: changes.enabled,
                overlap_policy: changes
                    .overlap_policy
                    .unwrap_or(OverlapPolicy::Unspecified)
                    .into(),
                missed_tick_policy: changes
                    .missed_tick_policy
                    .unwrap_or(MissedTickPolicy::Unspecified)
                    .into(),
                catch_up_window_seconds: changes.catch_up_window_seconds,
                timeout_seconds: changes.timeout_seconds,
                max_retries: changes.max_retries,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("UpdateJob"))
    }

    /// `ListReports`: the newest reports, optionally of one kind (e.g. `payment-analytics`);
    /// `limit` 1..=500, 0 for the server default (20).
    pub async fn reports(&self, kind: Option<&str>, limit: u32) -> Result<Vec<Report>> {
        self.raw()
            .list_reports(ListReportsRequest {
                kind: kind.unwrap_or_default().into(),
                limit,
            })
            .await
            .map(|r| r.into_inner().reports)
            .map_err(Error::rpc("ListReports"))
    }

    /// `GetReport(id)`.
    pub async fn report(&self, id: &str) -> Result<Report> {
        self.raw()
            .get_report(GetReportRequest { id: id.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetReport"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_validated_and_redacted() {
        assert!(BearerAuth::new("").is_err());
        assert!(BearerAuth::new("has space").is_err());
        assert!(BearerAuth::new("tökén").is_err());
        let auth = BearerAuth::new("abc.DEF-123").unwrap();
        assert!(!format!("{auth:?}").contains("abc"));
        let mut auth = auth;
        let req = auth.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer abc.DEF-123"
        );
        let req = BearerAuth::none().call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn bad_urls_are_rejected_before_connecting() {
        for url in ["127.0.0.1:50051", "ftp://x:1", "http://", ""] {
            let err = Client::connect(url).await.unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
        }
    }

    #[tokio::test]
    async fn refused_connection_is_unavailable_with_a_clear_message() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Client::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("cannot connect"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn rpc_errors_name_the_method_and_code() {
        let err = Error::Rpc {
            method: "GetJob",
            status: Status::not_found("no job named 'x'"),
        };
        assert_eq!(err.to_string(), "GetJob: no job named 'x' (NOT_FOUND)");
        assert!(err.is_not_found());
        assert!(!err.is_unavailable());
    }

    #[test]
    fn connection_failures_inside_a_call_count_as_unavailable() {
        let rpc = |status| Error::Rpc {
            method: "GetStatus",
            status,
        };
        assert!(rpc(Status::unavailable("connection refused")).is_unavailable());
        assert!(
            rpc(Status::internal(
                "h2 protocol error: frame with invalid size"
            ))
            .is_unavailable()
        );
        assert!(!rpc(Status::internal("database exploded")).is_unavailable());
        assert!(!rpc(Status::unknown("handler failed")).is_unavailable());
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let status = Status::from_error(Box::new(io));
        assert!(rpc(status).is_unavailable());
    }
}
