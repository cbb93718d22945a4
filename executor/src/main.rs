//! `ticketmax-executor`: runs the TicketMax ticketing tasks for the control plane.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ticketmax_executor::config::{Cli, Command, Config};
use ticketmax_executor::{api, db, jobs, mail, registration, schema, seed, tasks, tls};

/// How long shutdown waits for running tasks to report CANCELLED before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // sqlx reports "relation already exists" notices of idempotent migrations at info.
    let c = &cli.config;
    let secrets = ticketmax_runtime::redact::Secrets::new()
        .url(Some(&c.database_url()))
        .value(c.executor_token.as_deref())
        .value(c.smtp_pass.as_deref())
        .value(c.unsubscribe_secret.as_deref());
    let telemetry = ticketmax_runtime::telemetry::init(
        "ticketmax-executor",
        "info,sqlx=warn,h2=warn,tower=warn,hyper=warn,opentelemetry=warn",
        secrets.clone(),
    );
    let result = run(cli).await;
    telemetry.shutdown();
    secrets.exit_code(result)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Migrate => {
            let db = migrated_db(&cli.config).await?;
            db.close().await.ok();
            tracing::info!("ticketing schema is up to date");
            Ok(())
        }
        Command::SeedDemo(args) => {
            let db = migrated_db(&cli.config).await?;
            seed::run(&db, &cli.config.dirs(), &args).await?;
            db.close().await.ok();
            Ok(())
        }
    }
}

async fn migrated_db(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let url = config.database_url();
    let db = db::connect(&url)
        .await
        .with_context(|| format!("connecting to {}", ticketmax_runtime::redact::url(&url)))?;
    schema::Migrator::up(&db, None)
        .await
        .context("running the ticketing schema migrations")?;
    Ok(db)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(n) = ticketmax_runtime::net::raise_fd_limit() {
        tracing::debug!(open_files = n, "file descriptor limit");
    }
    let dirs = config.dirs();
    let db = migrated_db(&config).await?;
    let dialect = db::Dialect::of(&db)?;
    let executor_id = config.executor_id();
    let registry = Arc::new(jobs::registry());

    // Bind first, so port 0 works and the advertised URL carries the real port.
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let bound: SocketAddr = listener.local_addr().context("reading the bound address")?;
    let advertise_url = config
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{}://{bound}", tls::scheme(&config)));
    // Bad TLS files or a plaintext URL with a CA stop the start, before anything runs.
    let server_tls = tls::server(&config)?;
    let client_names = tls::client_names(&config)?;
    let control_plane = tls::control_plane(&config)?;
    warn_if_exposed(&config, bound);

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let running = Arc::new(api::RunningTasks::default());
    let mail_queued = Arc::new(Notify::new());

    let unsubscribe = config
        .unsubscribe()
        .context("setting up unsubscribe links")?;
    warn_about_unsubscribe(&config, unsubscribe.is_some());
    let sender = mail::Sender::new(
        &config,
        db.clone(),
        dialect,
        dirs.mail.clone(),
        mail_queued.clone(),
        unsubscribe.clone(),
    )
    .context("setting up e-mail delivery")?;
    tracing::info!(delivery = %sender.describe(), "e-mail sender ready");
    // The sender stops on its own token, after the tasks, so their last e-mails still go out.
    let mail_stop = CancellationToken::new();
    let mail_task = tokio::spawn(sender.run(mail_stop.clone()));

    let service = api::ExecutorService {
        executor_id: executor_id.clone(),
        registry: registry.clone(),
        db: db.clone(),
        dialect,
        settings: Arc::new(tasks::TaskSettings {
            dirs: dirs.clone(),
            frontend_url: config.frontend_url.clone(),
            admin_emails: config.admin_emails(),
            memory_alert_mb: config.memory_alert_mb,
            disk_alert_percent: config.disk_alert_percent,
            reengagement_batch_limit: config.reengagement_batch_limit,
            started_at: chrono::Utc::now(),
            unsubscribe,
        }),
        default_tz: config.timezone,
        running: running.clone(),
        run_stats: Arc::new(tasks::RunStats::default()),
        mail_queued,
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ticketmax_proto::v1::executor_server::ExecutorServer<api::ExecutorService>>()
        .await;
    // The descriptor set also holds the control plane's services; list only what is served here.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ticketmax_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("ticketmax.jobs.v1.Executor")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection().build_v1().context("building reflection v1")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building reflection v1alpha")?;

    let registration = registration::Registration {
        control_plane_url: config.control_plane_url.clone(),
        endpoint: control_plane,
        executor_id: executor_id.clone(),
        advertise_url: advertise_url.clone(),
        jobs: registry.names(),
        tasks: registry.specs(),
        running: running.clone(),
        token: config.executor_token(),
        db: db.clone(),
    };
    let registration = Arc::new(registration);
    let heartbeat_stop = CancellationToken::new();
    let heartbeat_task = tokio::spawn({
        let registration = registration.clone();
        let stop = heartbeat_stop.clone();
        async move { registration.run(stop).await }
    });

    let signal_task = tokio::spawn(signal_shutdown(shutdown.clone()));

    tracing::info!(
        %executor_id, listen = %bound, advertise = %advertise_url,
        database = %ticketmax_runtime::redact::url(&config.database_url()), tasks = registry.names().len(),
        tls = config.tls_cert.is_some(), mutual_tls = config.tls_client_ca.is_some(),
        token = config.executor_token().is_some(),
        "executor serving"
    );
    let server_shutdown = shutdown.clone();
    let incoming =
        ticketmax_runtime::net::GuardedListener::new(listener, config.connection_limits(), "gRPC")
            .incoming();
    // Keep-alive pings find callers that vanished; callers that answer stay connected, so a
    // long quiet run keeps its stream under the idle timeout.
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.max_streams))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = server_tls {
        server = server.tls_config(tls).context("configuring gRPC TLS")?;
    }
    server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ticketmax_proto::v1::executor_server::ExecutorServer::new(service)
                .max_decoding_message_size(ticketmax_proto::MAX_REQUEST_BYTES),
            api::RequireToken::new(config.executor_token(), client_names),
        ))
        .serve_with_incoming_shutdown(incoming, server_shutdown.cancelled_owned())
        .await
        .context("serving gRPC")?;

    // The server returns once its connections have drained; running tasks were cancelled by the
    // same token and have reported CANCELLED on their streams.
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish within {SHUTDOWN_GRACE:?}");
    }
    heartbeat_stop.cancel();
    let _ = heartbeat_task.await;
    registration.deregister().await;
    mail_stop.cancel();
    let _ = mail_task.await;
    db.close().await.ok();
    signal_task.abort();
    tracing::info!("executor stopped");
    Ok(())
}

/// Anyone who can reach an unauthenticated executor can make it run jobs against the
/// ticketing database; fine on loopback, a mistake anywhere else.
fn warn_if_exposed(config: &Config, bound: SocketAddr) {
    if bound.ip().is_loopback() {
        return;
    }
    if config.tls_client_ca.is_none() && config.executor_token().is_none() {
        tracing::warn!(listen = %bound, "the executor accepts RunJob from anyone on a non-loopback address: set TICKETMAX_TLS_CLIENT_CA (mutual TLS) or TICKETMAX_EXECUTOR_TOKEN");
    }
    if config.tls_cert.is_none() {
        tracing::warn!(listen = %bound, "the executor serves plaintext gRPC on a non-loopback address: set TICKETMAX_TLS_CERT and TICKETMAX_TLS_KEY");
    }
}

/// Says loudly, once at start-up, what the unsubscribe settings mean for marketing mail.
fn warn_about_unsubscribe(config: &Config, configured: bool) {
    if !configured {
        tracing::error!(
            "TICKETMAX_UNSUBSCRIBE_SECRET is not set: the newsletter, promotion, birthday and \
             re-engagement jobs will fail instead of sending mail without a signed one-click \
             unsubscribe link; transactional e-mail is unaffected"
        );
    } else if !config.frontend_url.starts_with("https://") {
        tracing::warn!(frontend_url = %config.frontend_url, "FRONTEND_URL is not https: mailbox providers ignore a List-Unsubscribe one-click link that is not HTTPS (RFC 8058)");
    }
}

async fn signal_shutdown(shutdown: CancellationToken) {
    ticketmax_runtime::shutdown::signal().await;
    tracing::info!("shutdown requested: cancelling running tasks");
    shutdown.cancel();
}
