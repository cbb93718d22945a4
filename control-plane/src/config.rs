//! Configuration: every setting is an environment variable and a flag, with the defaults the
//! README's configuration table lists.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ticketmax-control-plane",
    version,
    about = "TicketMax Jobs control plane: keeps job definitions, schedules and run history, fires \
             schedules and dispatches runs to executors over gRPC.",
    long_about = "TicketMax Jobs control plane.\n\n\
        Keeps job definitions, schedules and run history in its database (SQLite in the data dir \
        by default, Postgres when DATABASE_URL says so), fires each enabled job's cron schedule in \
        its timezone, records every tick as a durable run, and dispatches runs to registered \
        executors with Executor.RunJob. Serves ticketmax.jobs.v1.JobService and ExecutorRegistry \
        with gRPC reflection and health.\n\n\
        Any number of replicas may share one Postgres database: each tick runs exactly once.\n\n\
        Example:\n  ticketmax-control-plane                      # embedded default, SQLite\n  \
        DATABASE_URL=postgres://postgres@127.0.0.1/ticketmax ticketmax-control-plane\n  \
        ticketmax-control-plane migrate              # run migrations and exit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API, run the scheduler and the dispatcher (the default).
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Print the SHA-256 of a token (read from standard input), for TICKETMAX_API_TOKENS.
    ///
    /// Example: `printf %s "$TOKEN" | ticketmax-control-plane hash-token`
    HashToken,
}

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// gRPC listen address (JobService, ExecutorRegistry, health, reflection).
    #[arg(long, env = "TICKETMAX_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// HTTP listen address (seed REST endpoints and /metrics).
    #[arg(long, env = "TICKETMAX_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Control-plane database: postgres://... or sqlite://...; default: SQLite file
    /// control-plane.db in the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for the SQLite file of the embedded default.
    #[arg(long, env = "TICKETMAX_DATA_DIR", default_value = "./.ticketmax")]
    pub data_dir: PathBuf,

    /// Default IANA timezone of jobs (their schedules and day windows).
    #[arg(long, env = "TICKETMAX_TIMEZONE", default_value = "UTC")]
    pub timezone: String,

    /// Name of this replica in logs, leases and run ownership; default: hostname-pid.
    #[arg(long, env = "TICKETMAX_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Heartbeat interval the control plane asks executors for, in milliseconds.
    #[arg(long, env = "TICKETMAX_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u32,

    /// An executor without a heartbeat for this long is considered dead, in milliseconds.
    #[arg(long, env = "TICKETMAX_EXECUTOR_TIMEOUT_MS", default_value_t = 5000)]
    pub executor_timeout_ms: u64,

    /// Lease of a dispatching replica on a running attempt; another replica takes the run over
    /// when it expires, in milliseconds.
    #[arg(long, env = "TICKETMAX_RUN_LEASE_MS", default_value_t = 5000)]
    pub run_lease_ms: u64,

    /// How many runs one replica dispatches at the same time. An attempt is a task and an
    /// HTTP/2 stream, and a slot stays taken until the run's end is committed, so slots bound
    /// throughput by latency: 64 gave 640 runs/s of no-op runs on 2 cores with the machine a
    /// third busy, 256 gave 878 (`bench/runs.sh`). Overlap policies still bound each job.
    #[arg(long, env = "TICKETMAX_MAX_CONCURRENT_RUNS", default_value_t = 256)]
    pub max_concurrent_runs: usize,

    /// How long SIGTERM waits for running runs to finish before handing them over.
    #[arg(long, env = "TICKETMAX_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// API bearer tokens as NAME:ROLE:SHA256HEX entries separated by commas; ROLE is viewer
    /// (status, jobs, runs, watch, reports) or operator (also trigger, cancel, pause, resume,
    /// update). Unset: the API is open (fine on loopback only). Hash with `hash-token`.
    #[arg(long, env = "TICKETMAX_API_TOKENS", hide_env_values = true)]
    pub api_tokens: Option<String>,

    /// Secret shared with executors: required on ExecutorRegistry calls, sent with RunJob.
    #[arg(long, env = "TICKETMAX_EXECUTOR_TOKEN", hide_env_values = true)]
    pub executor_token: Option<String>,

    /// Manual triggers allowed per token per minute (0: unlimited). Applies when tokens are set.
    #[arg(long, env = "TICKETMAX_TRIGGER_RATE_PER_MINUTE", default_value_t = 60)]
    pub trigger_rate_per_minute: u32,

    /// PEM certificate chain: serve gRPC and HTTP over TLS, and present it to https://
    /// executors that require mutual TLS.
    #[arg(long, env = "TICKETMAX_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of TICKETMAX_TLS_CERT.
    #[arg(long, env = "TICKETMAX_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA: require every client (executors, ticketmaxctl, grpcurl, HTTP callers) to present
    /// a certificate it signed, on both ports (mutual TLS).
    #[arg(long, env = "TICKETMAX_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Names (DNS or IP, comma-separated) an executor's client certificate must be issued to
    /// for Register, Heartbeat and Deregister: keeps operators' certificates from the same CA
    /// out of the executor registry.
    #[arg(long, env = "TICKETMAX_TLS_EXECUTOR_NAMES", requires = "tls_client_ca")]
    pub tls_executor_names: Option<String>,

    /// PEM CA that signed the executors' certificates, for https:// executor addresses
    /// [default: the web PKI roots].
    #[arg(long, env = "TICKETMAX_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Connections open at once on each port (gRPC, HTTP); more are closed at once.
    #[arg(long, env = "TICKETMAX_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// Concurrent streams (requests) per HTTP/2 connection.
    #[arg(long, env = "TICKETMAX_MAX_STREAMS", default_value_t = 256)]
    pub max_streams: u32,

    /// A connection must send its first bytes (HTTP/2 preface, TLS hello, request line)
    /// within this, and an HTTP/1 request its head.
    #[arg(long, env = "TICKETMAX_HANDSHAKE_TIMEOUT_MS", default_value_t = 5000)]
    pub handshake_timeout_ms: u64,

    /// A connection with no traffic for this long is closed (HTTP/2 clients that answer the
    /// server's keep-alive pings stay).
    #[arg(long, env = "TICKETMAX_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Largest HTTP request head (bytes); larger gets 431.
    #[arg(long, env = "TICKETMAX_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// How far in the past a run's `as_of` parameter may reach, in days.
    #[arg(long, env = "TICKETMAX_AS_OF_HORIZON_DAYS", default_value_t = 400)]
    pub as_of_horizon_days: u32,

    /// Finished runs (and their events) older than this many days are deleted; 0 keeps
    /// everything.
    #[arg(long, env = "TICKETMAX_RUN_RETENTION_DAYS", default_value_t = 30)]
    pub run_retention_days: u32,

    /// The newest runs of each job kept whatever their age.
    #[arg(long, env = "TICKETMAX_RUN_RETENTION_KEEP", default_value_t = 100)]
    pub run_retention_keep: u64,

    /// The dashboard's link from a run to its trace: a URL with `{trace_id}` in it, such as
    /// `http://jaeger:16686/trace/{trace_id}`. No link when unset.
    #[arg(long, env = "TICKETMAX_TRACE_URL")]
    pub trace_url: Option<String>,

    /// How long a dashboard sign-in lasts, in seconds (sessions are kept in the database and hold on every replica).
    #[arg(
        long,
        env = "TICKETMAX_DASHBOARD_SESSION_SECS",
        default_value_t = 43_200
    )]
    pub dashboard_session_secs: u64,

    /// When the run-history cleaner runs (cron, 5 or 6 fields, UTC; the leader runs it).
    #[arg(
        long,
        env = "TICKETMAX_CLEANER_SCHEDULE",
        default_value = "0 */10 * * * *"
    )]
    pub cleaner_schedule: String,
}

impl Config {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("control-plane.db").display()
            )
        })
    }

    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn executor_timeout(&self) -> Duration {
        Duration::from_millis(self.executor_timeout_ms)
    }

    pub fn connection_limits(&self) -> ticketmax_runtime::net::ConnectionLimits {
        ticketmax_runtime::net::ConnectionLimits {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }

    pub fn run_lease(&self) -> Duration {
        Duration::from_millis(self.run_lease_ms)
    }
}

/// Strips credentials from a database URL for logs.
pub fn redact_url(url: &str) -> String {
    ticketmax_runtime::redact::url(url)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap checks its definition only when asked; a clash would otherwise surface as a panic
    /// at the operator's first run.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
