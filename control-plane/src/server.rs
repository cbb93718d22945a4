//! Wires one replica together: gRPC server (API, registry, health, reflection), HTTP server,
//! the engine's writers, the ticker, the dispatcher, the maintenance services, and the
//! shutdown sequence on SIGTERM/SIGINT.
use std::time::Duration;

use anyhow::Context;
use ticketmax_runtime::net::GuardedListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use ticketmax_proto::v1::{
    executor_registry_server::ExecutorRegistryServer, job_service_server::JobServiceServer,
};

use crate::{
    api::{JobApi, RegistryApi},
    app::{App, SharedApp},
    auth::Auth,
    config::Config,
    dispatch::Dispatcher,
    engine::{completer, enqueue, heartbeats, notify},
    maintenance::{
        self,
        cleaner::{Cleaner, Retention},
        elector::{self, Elector},
        gauges::Gauges,
        rescuer::Rescuer,
        sweeper::Sweeper,
    },
    scheduler::Ticker,
    store::Store,
    tls,
};

/// How often a replica renews (or tries to take) the leader lease; the lease lasts three.
const ELECTOR_PERIOD: Duration = Duration::from_millis(2500);
/// How often the leader looks for ticks nobody recorded.
const SWEEPER_PERIOD: Duration = Duration::from_millis(2500);

const SERVICES: [&str; 3] = [
    "",
    "ticketmax.jobs.v1.JobService",
    "ticketmax.jobs.v1.ExecutorRegistry",
];

/// Builds the replica (engine writers, caches) around `store` and serves until SIGTERM or
/// SIGINT.
/// The writer queues of a replica, for [`spawn_writers`].
pub struct WriterQueues {
    enqueue: enqueue::Queue,
    complete: completer::Queue,
    heartbeat: heartbeats::Queue,
}

/// One replica's state around `store`, its caches loaded; the writers still to be started.
pub async fn assemble(
    store: Store,
    config: Config,
    auth: Auth,
) -> anyhow::Result<(SharedApp, WriterQueues)> {
    let (enqueuer, enqueue) = enqueue::channel();
    let (completer, complete) = completer::channel();
    let (heartbeats, heartbeat) = heartbeats::channel();
    let app = App::new(store, config, auth, enqueuer, completer, heartbeats);
    app.jobs
        .refresh(&app.store)
        .await
        .context("loading the jobs")?;
    app.executors.refresh(
        app.store
            .executors(None)
            .await
            .context("loading the executors")?,
    );
    Ok((
        app,
        WriterQueues {
            enqueue,
            complete,
            heartbeat,
        },
    ))
}

/// Starts the engine's writers (and, on Postgres, the notification listener) until `stop`.
pub fn spawn_writers(
    app: &SharedApp,
    queues: WriterQueues,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(enqueue::run(app.clone(), queues.enqueue, stop.clone()));
    tasks.spawn(completer::run(app.clone(), queues.complete, stop.clone()));
    tasks.spawn(heartbeats::run(app.clone(), queues.heartbeat, stop.clone()));
    tasks.spawn(notify::listen(app.clone(), stop.clone()));
    tasks
}

pub async fn serve(store: Store, config: Config, auth: Auth) -> anyhow::Result<()> {
    if let Some(n) = ticketmax_runtime::net::raise_fd_limit() {
        tracing::debug!(open_files = n, "file descriptor limit");
    }
    let (app, queues) = assemble(store, config, auth).await?;

    let listener = tokio::net::TcpListener::bind(app.config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", app.config.grpc_addr))?;
    let addr = listener.local_addr()?;
    let http_listener = tokio::net::TcpListener::bind(app.config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", app.config.http_addr))?;
    let http_addr = http_listener.local_addr()?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for s in SERVICES {
        health_reporter
            .set_service_status(s, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ticketmax_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ticketmax_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Stopped in order on shutdown: the workers (ticker, dispatcher, maintenance) first, then
    // the writers they hand their last results to, then the servers.
    let shutdown = CancellationToken::new();
    let workers = CancellationToken::new();
    let writers = CancellationToken::new();
    let mut worker_tasks = JoinSet::new();
    let mut writer_tasks = spawn_writers(&app, queues, &writers);

    worker_tasks.spawn(Ticker::new(app.clone()).run(workers.clone()));
    worker_tasks.spawn(
        Dispatcher::new(app.clone(), tls::executor_client(&app.config)?).run(workers.clone()),
    );
    let lease = app.config.run_lease();
    worker_tasks.spawn(maintenance::run(
        Elector::new(app.clone(), ELECTOR_PERIOD),
        app.clone(),
        workers.clone(),
    ));
    worker_tasks.spawn(maintenance::run(
        Sweeper::new(app.clone(), SWEEPER_PERIOD),
        app.clone(),
        workers.clone(),
    ));
    worker_tasks.spawn(maintenance::run(
        Rescuer::new(app.clone(), lease),
        app.clone(),
        workers.clone(),
    ));
    worker_tasks.spawn(maintenance::run(
        Gauges::new(app.clone()),
        app.clone(),
        workers.clone(),
    ));
    let cleaner = Cleaner::new(
        app.clone(),
        Retention {
            days: app.config.run_retention_days,
            keep_per_job: app.config.run_retention_keep,
            batch: 1000,
        },
        workers.clone(),
    );
    let cleaner_schedule = crate::cron::Schedule::parse(&app.config.cleaner_schedule, "UTC")
        .context("TICKETMAX_CLEANER_SCHEDULE")?
        .normalized;
    worker_tasks.spawn(async move {
        if let Err(e) = cleaner.run_on(&cleaner_schedule).await {
            tracing::error!(error = %e, "the run-history cleaner stopped");
        }
    });
    worker_tasks.spawn(poll_jobs(app.clone(), workers.clone()));
    worker_tasks.spawn(report_health(
        app.clone(),
        health_reporter.clone(),
        workers.clone(),
    ));

    let server_shutdown = shutdown.clone();
    let limits = app.config.connection_limits();
    let incoming = GuardedListener::new(listener, limits, "gRPC").incoming();
    // Keep-alive pings find clients that vanished; clients that answer stay connected.
    let mut builder = Server::builder()
        .max_concurrent_streams(Some(app.config.max_streams))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(crate::api::decode_errors::DecodeErrorsLayer);
    if let Some(tls) = tls::grpc_server(&app.config)? {
        builder = builder.tls_config(tls).context("configuring gRPC TLS")?;
    }
    let http_tls = tls::http_server(&app.config)?;
    let executor_names = tls::executor_names(&app.config)?;
    warn_if_exposed(&app, addr, http_addr);
    let server = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            JobServiceServer::new(JobApi::new(app.clone()))
                .max_decoding_message_size(ticketmax_proto::MAX_REQUEST_BYTES),
        )
        .add_service(
            ExecutorRegistryServer::new(RegistryApi::new(app.clone(), executor_names))
                .max_decoding_message_size(ticketmax_proto::MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, server_shutdown.cancelled_owned());
    let server = tokio::spawn(server);
    let http = tokio::spawn(crate::http::serve(
        app.clone(),
        http_listener,
        http_tls,
        shutdown.clone(),
    ));

    let (scheme, grpcurl_flags) = if app.config.tls_cert.is_some() {
        ("https", "-cacert <CA> -authority <name in the certificate>")
    } else {
        ("http", "-plaintext")
    };
    tracing::info!(
        replica = %app.replica_id,
        grpc = %addr,
        http = %format!("{scheme}://{http_addr}"),
        tls = app.config.tls_cert.is_some(),
        mutual_tls = app.config.tls_client_ca.is_some(),
        "control plane listening on {addr}; try: grpcurl {grpcurl_flags} {addr} ticketmax.jobs.v1.JobService/GetStatus"
    );

    wait_for_signal().await;
    tracing::info!("shutdown requested: draining");
    app.start_draining();
    for s in SERVICES {
        health_reporter
            .set_service_status(s, ServingStatus::NotServing)
            .await;
    }
    workers.cancel();
    join_all(&mut worker_tasks, "worker").await;
    writers.cancel();
    join_all(&mut writer_tasks, "writer").await;
    if app.is_leader() {
        let _ = app
            .store
            .release_lease(elector::LEADER_LEASE, &app.replica_id)
            .await;
        app.set_leader(false);
    }
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server error"),
        Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
        Err(_) => tracing::warn!("gRPC server did not stop within 5s"),
    }
    match tokio::time::timeout(Duration::from_secs(5), http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server error"),
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("HTTP server did not stop within 5s"),
    }
    tracing::info!("control plane stopped");
    Ok(())
}

async fn join_all(tasks: &mut JoinSet<()>, what: &str) {
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "{what} task failed");
        }
    }
}

/// The job cache's fallback: other processes' changes reach it by notification on Postgres
/// (this poll only covers a lost one), and only by this poll on SQLite.
async fn poll_jobs(app: SharedApp, stop: CancellationToken) {
    let period = if app.store.is_postgres() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = app.jobs.refresh(&app.store).await {
            tracing::debug!(error = %e, "cannot reload jobs");
        }
    }
}

/// grpc.health.v1 says NOT_SERVING while the database does not answer (as the elector finds
/// at each pass).
async fn report_health(
    app: SharedApp,
    reporter: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut ok = app.database_ok.subscribe();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = ok.changed() => if changed.is_err() { return },
        }
        let healthy = *ok.borrow_and_update();
        let status = if healthy {
            tracing::info!("database reachable again: SERVING");
            ServingStatus::Serving
        } else {
            tracing::error!("database unreachable: NOT_SERVING");
            ServingStatus::NotServing
        };
        for s in SERVICES {
            reporter.set_service_status(s, status).await;
        }
    }
}

/// Plaintext and an open API are the embedded default on loopback; anywhere else they are a
/// mistake worth shouting about.
fn warn_if_exposed(app: &SharedApp, grpc: std::net::SocketAddr, http: std::net::SocketAddr) {
    let c = &app.config;
    for (what, addr) in [("gRPC", grpc), ("HTTP", http)] {
        if addr.ip().is_loopback() {
            continue;
        }
        if c.tls_cert.is_none() {
            tracing::warn!(%addr, "{what} listens on a non-loopback address without TLS: set TICKETMAX_TLS_CERT and TICKETMAX_TLS_KEY");
        }
        if !app.auth.api_tokens_configured() {
            tracing::warn!(%addr, "{what} listens on a non-loopback address without API tokens: anyone who can reach it can trigger jobs; set TICKETMAX_API_TOKENS");
        }
        // Executors register on the gRPC port only.
        if what == "gRPC" && app.auth.executor_token().is_none() && c.tls_client_ca.is_none() {
            tracing::warn!(%addr, "executors are not authenticated: anyone who can reach this port can register as one and receive runs; set TICKETMAX_EXECUTOR_TOKEN or TICKETMAX_TLS_CLIENT_CA");
        }
    }
}

async fn wait_for_signal() {
    ticketmax_runtime::shutdown::signal().await;
}
