//! Wires one replica together: gRPC server (API, registry, health, reflection), scheduler,
//! dispatcher, database health, and the shutdown sequence on SIGTERM/SIGINT.
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use ticketmax_proto::v1::{
    executor_registry_server::ExecutorRegistryServer, job_service_server::JobServiceServer,
};

use crate::{
    api::{JobApi, RegistryApi},
    app::SharedApp,
    dispatch::Dispatcher,
    scheduler::Scheduler,
    tls,
};

const SERVICES: [&str; 3] = [
    "",
    "ticketmax.jobs.v1.JobService",
    "ticketmax.jobs.v1.ExecutorRegistry",
];

pub async fn serve(app: SharedApp) -> anyhow::Result<()> {
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

    let shutdown = CancellationToken::new();
    let workers = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let scheduler = Scheduler::new(app.clone()).await?;
    tasks.spawn({
        let token = workers.clone();
        async move {
            if let Err(e) = scheduler.run(token).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        }
    });
    tasks.spawn(
        Dispatcher::new(app.clone(), tls::executor_client(&app.config)?).run(workers.clone()),
    );
    tasks.spawn(watch_database(
        app.clone(),
        health_reporter.clone(),
        workers.clone(),
    ));

    let server_shutdown = shutdown.clone();
    let mut builder = Server::builder();
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
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            server_shutdown.cancelled_owned(),
        );
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
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "worker task failed");
        }
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

/// grpc.health.v1 says NOT_SERVING while the database does not answer.
async fn watch_database(
    app: SharedApp,
    reporter: tonic_health::server::HealthReporter,
    cancel: CancellationToken,
) {
    let mut healthy = true;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let ok = tokio::time::timeout(Duration::from_secs(2), app.store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if ok != healthy {
            healthy = ok;
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if ok {
                tracing::info!("database reachable again: SERVING");
            } else {
                tracing::error!("database unreachable: NOT_SERVING");
            }
            for s in SERVICES {
                reporter.set_service_status(s, status).await;
            }
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
