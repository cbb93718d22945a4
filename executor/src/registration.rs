//! Registration with the control plane's `ExecutorRegistry`, heartbeats, and deregistration.
use std::sync::Arc;
use std::time::Duration;

use ticketmax_proto::v1::executor_registry_client::ExecutorRegistryClient;
use ticketmax_proto::v1::{DeregisterRequest, HeartbeatRequest, RegisterRequest};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::api::RunningTasks;

pub struct Registration {
    pub control_plane_url: String,
    /// The control plane's endpoint, with its TLS settings (`tls::control_plane`).
    pub endpoint: Endpoint,
    pub executor_id: String,
    pub advertise_url: String,
    pub jobs: Vec<String>,
    /// Every task's declared parameters (`TaskRegistry::specs`): the control plane refuses
    /// any other parameter before a run exists.
    pub tasks: Vec<ticketmax_proto::v1::TaskSpec>,
    pub running: Arc<RunningTasks>,
    /// Shared secret the control plane may require (TICKETMAX_EXECUTOR_TOKEN).
    pub token: Option<String>,
    /// The ticketing database, for the outbox depth reported with each heartbeat.
    pub db: sea_orm::DatabaseConnection,
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

impl Registration {
    /// E-mails waiting for delivery; 0 when the database does not answer (the heartbeat matters
    /// more than the figure).
    async fn outbox_pending(&self) -> u64 {
        use sea_orm::ConnectionTrait;
        let stmt = sea_orm::Statement::from_string(
            self.db.get_database_backend(),
            "SELECT COUNT(*) FROM email_outbox WHERE status = 'pending'",
        );
        match self.db.query_one_raw(stmt).await {
            Ok(Some(row)) => row
                .try_get_by_index::<i64>(0)
                .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
            _ => 0,
        }
    }

    /// A request carrying the shared executor token, when one is configured.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    fn channel(&self) -> Channel {
        // Lazy: the control plane may start after us; calls fail until it answers.
        self.endpoint.connect_lazy()
    }

    /// Registers (retrying with backoff until the control plane answers), then heartbeats until
    /// `shutdown`, registering again whenever the control plane has forgotten us.
    pub async fn run(&self, shutdown: CancellationToken) {
        // The outbox depth counted for each heartbeat is also an OTLP gauge.
        let pending = Arc::new(std::sync::atomic::AtomicI64::new(-1));
        let _gauge = {
            let pending = pending.clone();
            opentelemetry::global::meter("ticketmax-executor")
                .i64_observable_gauge("ticketmax.outbox.pending")
                .with_description("E-mails in the outbox waiting for delivery")
                .with_callback(move |observer| {
                    let v = pending.load(std::sync::atomic::Ordering::Relaxed);
                    if v >= 0 {
                        observer.observe(v, &[]);
                    }
                })
                .build()
        };
        let mut client = ExecutorRegistryClient::new(self.channel());
        let mut outage = false;
        'register: loop {
            let mut backoff = MIN_BACKOFF;
            let (interval, session) = loop {
                let request = RegisterRequest {
                    executor_id: self.executor_id.clone(),
                    address: self.advertise_url.clone(),
                    jobs: self.jobs.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    tasks: self.tasks.clone(),
                };
                match client.register(self.request(request)).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        let ms = resp.heartbeat_interval_ms;
                        tracing::info!(
                            control_plane = %self.control_plane_url,
                            executor_id = %self.executor_id,
                            address = %self.advertise_url,
                            jobs = self.jobs.len(),
                            "registered with the control plane"
                        );
                        outage = false;
                        let interval = if ms == 0 {
                            DEFAULT_HEARTBEAT
                        } else {
                            Duration::from_millis(u64::from(ms))
                        };
                        break (interval, resp.session);
                    }
                    // Another live process holds this id: say so every time, it needs a person.
                    Err(status) if status.code() == tonic::Code::AlreadyExists => {
                        tracing::error!(
                            executor_id = %self.executor_id,
                            error = %why(&status),
                            "REFUSED: another live process is registered as this executor id \
                             (an impostor with the executor secret, or two executors sharing \
                             TICKETMAX_EXECUTOR_ID); no runs come here until it is gone"
                        );
                        outage = true;
                    }
                    Err(status) => {
                        if !outage {
                            tracing::warn!(control_plane = %self.control_plane_url, error = %why(&status), "cannot register with the control plane; will keep trying");
                            outage = true;
                        }
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            };

            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let stats = &crate::mail::STATS;
                let outbox_pending = self.outbox_pending().await;
                pending.store(
                    i64::try_from(outbox_pending).unwrap_or(i64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let request = HeartbeatRequest {
                    executor_id: self.executor_id.clone(),
                    running: u32::try_from(self.running.count()).unwrap_or(u32::MAX),
                    outbox_pending,
                    emails_sent: stats.sent.load(std::sync::atomic::Ordering::Relaxed),
                    emails_failed: stats.failed.load(std::sync::atomic::Ordering::Relaxed),
                    session: session.clone(),
                };
                match client.heartbeat(self.request(request)).await {
                    Ok(resp) if resp.get_ref().displaced => {
                        tracing::error!(
                            executor_id = %self.executor_id,
                            "DISPLACED: another process registered this executor id while this \
                             one was unreachable; its runs go there now. Registering again"
                        );
                        continue 'register;
                    }
                    Ok(resp) if resp.get_ref().known => {
                        if outage {
                            tracing::info!("control plane reachable again");
                            outage = false;
                        }
                    }
                    Ok(_) => {
                        tracing::info!(
                            "control plane does not know this executor; registering again"
                        );
                        continue 'register;
                    }
                    Err(status) => {
                        if !outage {
                            tracing::warn!(error = %why(&status), "heartbeat failed; control plane unreachable");
                            outage = true;
                        }
                    }
                }
            }
        }
    }

    pub async fn deregister(&self) {
        let mut client = ExecutorRegistryClient::new(self.channel());
        let request = DeregisterRequest {
            executor_id: self.executor_id.clone(),
        };
        match tokio::time::timeout(
            Duration::from_secs(3),
            client.deregister(self.request(request)),
        )
        .await
        {
            Ok(Ok(_)) => tracing::info!("deregistered from the control plane"),
            Ok(Err(status)) => tracing::warn!(error = %status.message(), "deregistration failed"),
            Err(_) => tracing::warn!("deregistration timed out"),
        }
    }
}

/// The status message and its causes: a TLS failure (unknown CA, missing client certificate)
/// is only in the source chain, behind "transport error".
fn why(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let cause = e.to_string();
        // hyper and tonic repeat their cause in their own message; say each thing once.
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = e.source();
    }
    text
}
