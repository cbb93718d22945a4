//! Command line and environment configuration. Every option is also an environment variable.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ticketmax-executor",
    version,
    about = "TicketMax Jobs executor: runs the ticketing tasks against the ticketing database \
             and streams their progress to the control plane",
    after_help = "Logging and tracing: RUST_LOG (default info), LOG_FORMAT=json for JSON lines, \
                  OTEL_EXPORTER_OTLP_ENDPOINT to export spans over OTLP.\n\
                  Task parameters (RunJob params): as_of (RFC 3339 reference time), batch_size \
                  (rows per chunk), pause_ms (pause between chunks), limit (re-engagement), \
                  threshold_percent (disk check)."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the Executor gRPC API, register with the control plane and deliver e-mail (default).
    Serve,
    /// Run the ticketing schema migrations and exit.
    Migrate,
    /// Fill the ticketing database with deterministic demo data (users, events, bookings, ...).
    SeedDemo(SeedArgs),
}

#[derive(Args, Clone, Debug)]
pub struct SeedArgs {
    /// Number of users.
    #[arg(long, env = "TICKETMAX_SEED_USERS", default_value_t = 200)]
    pub users: u32,
    /// Number of events.
    #[arg(long, env = "TICKETMAX_SEED_EVENTS", default_value_t = 40)]
    pub events: u32,
    /// Number of bookings.
    #[arg(long, env = "TICKETMAX_SEED_BOOKINGS", default_value_t = 2000)]
    pub bookings: u32,
    /// PRNG seed: the same seed gives the same data (relative to "now").
    #[arg(long, env = "TICKETMAX_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Seed even if the database already has users (adds another batch with fresh e-mails).
    #[arg(long, env = "TICKETMAX_SEED_FORCE")]
    pub force: bool,
}

#[derive(Args, Clone)]
pub struct Config {
    /// gRPC listen address; port 0 picks a free port (the real one is advertised).
    #[arg(
        long = "addr",
        env = "TICKETMAX_EXECUTOR_ADDR",
        default_value = "127.0.0.1:50061",
        global = true
    )]
    pub addr: SocketAddr,
    /// URL the control plane dials to reach this executor [default: http://<bound address>].
    #[arg(
        long = "advertise-url",
        env = "TICKETMAX_EXECUTOR_ADVERTISE_URL",
        global = true
    )]
    pub advertise_url: Option<String>,
    /// Connections open at once on the gRPC port; more are closed at once.
    #[arg(
        long,
        env = "TICKETMAX_MAX_CONNECTIONS",
        default_value_t = 512,
        global = true
    )]
    pub max_connections: usize,
    /// Concurrent streams (runs, calls) per HTTP/2 connection.
    #[arg(
        long,
        env = "TICKETMAX_MAX_STREAMS",
        default_value_t = 256,
        global = true
    )]
    pub max_streams: u32,
    /// A connection must send its first bytes (HTTP/2 preface, TLS hello) within this.
    #[arg(
        long,
        env = "TICKETMAX_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub handshake_timeout_ms: u64,
    /// A connection with no traffic for this long is closed (clients that answer the
    /// server's keep-alive pings, such as the control plane, stay).
    #[arg(
        long,
        env = "TICKETMAX_IDLE_TIMEOUT_MS",
        default_value_t = 60_000,
        global = true
    )]
    pub idle_timeout_ms: u64,
    /// The control plane's gRPC URL (ExecutorRegistry).
    #[arg(
        long = "control-plane-url",
        env = "TICKETMAX_CONTROL_PLANE_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub control_plane_url: String,
    /// Ticketing database URL (postgres://... or sqlite://...) [default: sqlite file ticketing.db in the data dir].
    #[arg(long = "database-url", env = "TICKETING_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Directory for the SQLite database, mail, uploads, documents and logs of the embedded default.
    #[arg(
        long = "data-dir",
        env = "TICKETMAX_DATA_DIR",
        default_value = "./.ticketmax",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Executor id used when registering [default: <hostname>-<pid>].
    #[arg(long = "executor-id", env = "TICKETMAX_EXECUTOR_ID", global = true)]
    pub executor_id: Option<String>,
    /// Default IANA timezone for day windows when a run request names none.
    #[arg(
        long = "timezone",
        env = "TICKETMAX_TIMEZONE",
        default_value = "UTC",
        global = true
    )]
    pub timezone: chrono_tz::Tz,
    /// SMTP server; without it e-mails are written as .eml files into the mail dir.
    #[arg(long = "smtp-host", env = "SMTP_HOST", global = true)]
    pub smtp_host: Option<String>,
    /// SMTP port [default: 587].
    #[arg(long = "smtp-port", env = "SMTP_PORT", global = true)]
    pub smtp_port: Option<u16>,
    /// SMTP user name (authentication only when set).
    #[arg(long = "smtp-user", env = "SMTP_USER", global = true)]
    pub smtp_user: Option<String>,
    /// SMTP password.
    #[arg(
        long = "smtp-pass",
        env = "SMTP_PASS",
        hide_env_values = true,
        global = true
    )]
    pub smtp_pass: Option<String>,
    /// Sender address of every e-mail.
    #[arg(
        long = "smtp-from",
        env = "SMTP_FROM",
        default_value = "TicketMax <noreply@ticketmax.local>",
        global = true
    )]
    pub smtp_from: String,
    /// SMTP transport security: auto (465 → tls, 587 → starttls, else opportunistic starttls), tls, starttls, none.
    #[arg(
        long = "smtp-security",
        env = "SMTP_SECURITY",
        default_value = "auto",
        global = true
    )]
    pub smtp_security: SmtpSecurity,
    /// PEM CA certificate(s) trusted for the SMTP server's certificate (STARTTLS and TLS), on
    /// top of the web PKI roots: for a relay with an internal CA.
    #[arg(long = "smtp-ca-file", env = "SMTP_CA_FILE", global = true)]
    pub smtp_ca_file: Option<PathBuf>,
    /// Public URL of the TicketMax web app, used for links in e-mails.
    #[arg(
        long = "frontend-url",
        env = "FRONTEND_URL",
        default_value = "http://localhost:3000",
        global = true
    )]
    pub frontend_url: String,
    /// Secret (at least 32 bytes) that signs the one-click unsubscribe tokens of newsletter and
    /// marketing mail; the frontend verifies them with the same secret (README, "E-mail").
    /// Unset: the newsletter, promotion, birthday and re-engagement jobs refuse to run.
    #[arg(
        long = "unsubscribe-secret",
        env = "TICKETMAX_UNSUBSCRIBE_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub unsubscribe_secret: Option<String>,
    /// Address offered as a `mailto:` in `List-Unsubscribe` next to the link (subject: the token).
    #[arg(
        long = "unsubscribe-mailto",
        env = "TICKETMAX_UNSUBSCRIBE_MAILTO",
        global = true
    )]
    pub unsubscribe_mailto: Option<String>,
    /// Comma-separated addresses that receive reports and alerts.
    #[arg(
        long = "admin-emails",
        env = "ADMIN_EMAILS",
        value_delimiter = ',',
        global = true
    )]
    pub admin_emails: Vec<String>,
    /// Temporary uploads directory [default: <data dir>/uploads/tmp].
    #[arg(
        long = "uploads-tmp-dir",
        env = "TICKETMAX_UPLOADS_TMP_DIR",
        global = true
    )]
    pub uploads_tmp_dir: Option<PathBuf>,
    /// Documents directory [default: <data dir>/documents].
    #[arg(long = "documents-dir", env = "TICKETMAX_DOCUMENTS_DIR", global = true)]
    pub documents_dir: Option<PathBuf>,
    /// Logs directory [default: <data dir>/logs].
    #[arg(long = "logs-dir", env = "TICKETMAX_LOGS_DIR", global = true)]
    pub logs_dir: Option<PathBuf>,
    /// Directory of the .eml files written when no SMTP_HOST is set [default: <data dir>/mail].
    #[arg(long = "mail-dir", env = "TICKETMAX_MAIL_DIR", global = true)]
    pub mail_dir: Option<PathBuf>,
    /// Shared secret with the control plane: sent on registration and heartbeats, and required
    /// (as `authorization: Bearer <token>`) on RunJob and CancelRun. Unset: no check.
    #[arg(
        long = "executor-token",
        env = "TICKETMAX_EXECUTOR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub executor_token: Option<String>,
    /// PEM certificate chain: serve gRPC over TLS (advertised as https://), and present it to
    /// a control plane that requires mutual TLS.
    #[arg(
        long = "tls-cert",
        env = "TICKETMAX_TLS_CERT",
        requires = "tls_key",
        global = true
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of TICKETMAX_TLS_CERT.
    #[arg(
        long = "tls-key",
        env = "TICKETMAX_TLS_KEY",
        requires = "tls_cert",
        global = true
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: accept RunJob and CancelRun only from callers presenting a certificate it signed
    /// (the control plane's TICKETMAX_TLS_CERT); mutual TLS.
    #[arg(
        long = "tls-client-ca",
        env = "TICKETMAX_TLS_CLIENT_CA",
        requires = "tls_cert",
        global = true
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Names (DNS or IP, comma-separated) the caller's client certificate must be issued to for
    /// RunJob and CancelRun: the control planes', so that other certificates from the same CA
    /// (operators') cannot run jobs here.
    #[arg(
        long = "tls-client-names",
        env = "TICKETMAX_TLS_CLIENT_NAMES",
        requires = "tls_client_ca",
        global = true
    )]
    pub tls_client_names: Option<String>,
    /// PEM CA that signed the control plane's certificate, for an https:// control-plane URL
    /// [default: the web PKI roots].
    #[arg(long = "tls-ca", env = "TICKETMAX_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Name to expect in the control plane's certificate, when it differs from the URL's host.
    #[arg(long = "tls-domain", env = "TICKETMAX_TLS_DOMAIN", global = true)]
    pub tls_domain: Option<String>,
    /// Memory (resident set) above which the health report alerts, in MiB.
    #[arg(
        long = "memory-alert-mb",
        env = "TICKETMAX_MEMORY_ALERT_MB",
        default_value_t = 512,
        global = true
    )]
    pub memory_alert_mb: u64,
    /// Disk usage of a data dir's file system above which the disk check cleans and alerts, in percent.
    #[arg(
        long = "disk-alert-percent",
        env = "TICKETMAX_DISK_ALERT_PERCENT",
        default_value_t = 90,
        global = true
    )]
    pub disk_alert_percent: u8,
    /// Most re-engagement e-mails one run queues (params.limit overrides).
    #[arg(
        long = "reengagement-batch-limit",
        env = "TICKETMAX_REENGAGEMENT_BATCH_LIMIT",
        default_value_t = 1000,
        global = true
    )]
    pub reengagement_batch_limit: u64,
    /// Seconds a delivering executor holds an outbox row before another may retry it.
    #[arg(
        long = "mail-lease-seconds",
        env = "TICKETMAX_MAIL_LEASE_SECONDS",
        default_value_t = 300,
        global = true
    )]
    pub mail_lease_seconds: u64,
    /// Delivery attempts before an e-mail with transient errors is marked failed.
    #[arg(
        long = "mail-max-attempts",
        env = "TICKETMAX_MAIL_MAX_ATTEMPTS",
        default_value_t = 10,
        global = true
    )]
    pub mail_max_attempts: u32,
    /// Most e-mails sent per second, to stay within the SMTP provider's limits (0: no limit).
    #[arg(
        long = "mail-rate-per-second",
        env = "TICKETMAX_MAIL_RATE_PER_SECOND",
        default_value_t = 0,
        global = true
    )]
    pub mail_rate_per_second: u32,
    /// Milliseconds an idle e-mail sender waits before it looks at the outbox again. The
    /// fallback poll: on Postgres new rows wake the sender at once through LISTEN/NOTIFY, so this
    /// only matters while that is unavailable (or a notification was lost); on SQLite it is how
    /// rows written by other processes are picked up.
    #[arg(
        long = "mail-poll-ms",
        env = "TICKETMAX_MAIL_POLL_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub mail_poll_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpSecurity {
    Auto,
    Tls,
    Starttls,
    None,
}

/// The directories the tasks and the mail sender work in, resolved against the data dir.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub data: PathBuf,
    pub uploads_tmp: PathBuf,
    pub documents: PathBuf,
    pub logs: PathBuf,
    pub mail: PathBuf,
}

impl Config {
    /// The limits of the gRPC port.
    pub fn connection_limits(&self) -> ticketmax_runtime::net::ConnectionLimits {
        ticketmax_runtime::net::ConnectionLimits {
            max_connections: self.max_connections,
            handshake_timeout: std::time::Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms),
        }
    }
    pub fn dirs(&self) -> Dirs {
        let data = self.data_dir.clone();
        let or = |dir: &Option<PathBuf>, default: &[&str]| {
            dir.clone()
                .unwrap_or_else(|| default.iter().fold(data.clone(), |p, part| p.join(part)))
        };
        Dirs {
            uploads_tmp: or(&self.uploads_tmp_dir, &["uploads", "tmp"]),
            documents: or(&self.documents_dir, &["documents"]),
            logs: or(&self.logs_dir, &["logs"]),
            mail: or(&self.mail_dir, &["mail"]),
            data,
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => sqlite_url(&self.data_dir.join("ticketing.db")),
        }
    }

    pub fn executor_id(&self) -> String {
        match &self.executor_id {
            Some(id) => id.clone(),
            None => format!("{}-{}", hostname(), std::process::id()),
        }
    }

    pub fn executor_token(&self) -> Option<String> {
        self.executor_token.clone().filter(|t| !t.is_empty())
    }

    /// The unsubscribe signer, or None when no secret is set (an empty value counts as unset).
    pub fn unsubscribe(
        &self,
    ) -> Result<
        Option<crate::mail::unsubscribe::Unsubscribe>,
        crate::mail::unsubscribe::UnsubscribeError,
    > {
        match self.unsubscribe_secret.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(secret) => crate::mail::unsubscribe::Unsubscribe::new(
                secret,
                &self.frontend_url,
                self.unsubscribe_mailto.as_deref(),
            )
            .map(Some),
        }
    }

    pub fn admin_emails(&self) -> Vec<String> {
        self.admin_emails
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect()
    }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "executor".to_owned())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap checks its definition only when asked; a clash between a global option and a
    /// subcommand's would otherwise surface as a panic at the operator's first run.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
