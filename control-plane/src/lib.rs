//! TicketMax Jobs control plane: job definitions, schedules and run history in its database,
//! the gRPC API, the ticker that fires schedules, the dispatcher that sends runs to
//! executors, and the maintenance services. `main.rs` only parses the command line.
//!
//! Where to look:
//!
//! | module | owns |
//! |---|---|
//! | [`lifecycle`] | run states, triggers, policies, the legal transitions, event payloads |
//! | [`engine`] | the path of a run in memory: enqueuer, completer, hub, caches, notifications |
//! | [`scheduler`] | the ticker: each tick at its instant |
//! | [`dispatch`] | claiming runs, attempts on executors, lease renewal |
//! | [`maintenance`] | elector, sweeper, rescuer, gauges, cleaner |
//! | [`store`] | the database, one module per aggregate |
//! | [`api`] | `JobService` and `ExecutorRegistry` |
//! | [`http`] | seed REST endpoints, `/metrics`, `/healthz` |
//! | [`dashboard`] | the operator dashboard: pages, live run console (SSE), sessions and CSRF |
//! | [`cron`] | cron parsing, timezones, the DST rule |
//! | [`auth`], [`tls`] | tokens and roles; TLS and mutual TLS |
pub mod api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod cron;
pub mod dashboard;
pub mod dispatch;
pub mod engine;
pub mod http;
pub mod lifecycle;
pub mod maintenance;
pub mod metrics;
pub mod params;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tls;

use anyhow::Context;

use crate::config::{Cli, Command};

/// Runs the command the operator asked for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.config;
    if matches!(cli.command, Some(Command::HashToken)) {
        let mut token = String::new();
        std::io::stdin()
            .read_line(&mut token)
            .context("reading the token from standard input")?;
        println!("{}", auth::sha256_hex(token.trim_end_matches(['\n', '\r'])));
        return Ok(());
    }
    let auth = auth::Auth::new(
        cfg.api_tokens.as_deref(),
        cfg.executor_token.clone(),
        cfg.trigger_rate_per_minute,
    )
    .context("TICKETMAX_API_TOKENS")?;
    cron::parse_timezone(&cfg.timezone).context("TICKETMAX_TIMEZONE")?;
    let url = cfg.database_url();
    if url.starts_with("sqlite") {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    }
    let store = connect_with_retry(&url).await?;
    store
        .migrate()
        .await
        .context("migrating the control-plane database")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::HashToken => Ok(()),
        Command::Migrate => {
            tracing::info!(database = %config::redact_url(&url), "migrations applied");
            Ok(())
        }
        Command::Serve => {
            let added = store
                .upsert_catalog(catalog::CATALOG, &cfg.timezone)
                .await
                .context("loading the job catalog")?;
            tracing::info!(database = %config::redact_url(&url), jobs = catalog::CATALOG.len(), added, "job catalog loaded");
            server::serve(store, cfg, auth).await
        }
    }
}

/// The database may come up after the control plane (compose, a restarting Postgres, a pool
/// briefly exhausted): retry for a minute before giving up.
async fn connect_with_retry(url: &str) -> anyhow::Result<store::Store> {
    // A URL that cannot work never will: say so once instead of retrying for a minute.
    check_database_url(url)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match store::Store::connect(url).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(database = %config::redact_url(url), error = %e, retry_in = ?wait, "database not reachable yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("connecting to {}", config::redact_url(url)));
            }
        }
    }
}

/// The database URL is one the control plane can use (scheme and syntax), checked before any
/// connection attempt; the message never repeats the URL's credentials.
fn check_database_url(url: &str) -> anyhow::Result<()> {
    use std::str::FromStr;
    let shown = config::redact_url(url);
    let parsed = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        sea_orm::sqlx::postgres::PgConnectOptions::from_str(url).map(|_| ())
    } else if url.starts_with("sqlite:") {
        sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url).map(|_| ())
    } else {
        anyhow::bail!(
            "DATABASE_URL {shown}: unsupported scheme; use postgres://... or sqlite://..."
        );
    };
    parsed.map_err(|_| anyhow::anyhow!("DATABASE_URL {shown} is not a valid connection string"))
}
