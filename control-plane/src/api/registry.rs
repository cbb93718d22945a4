//! `ExecutorRegistry`: executors register, heartbeat and deregister. Heartbeats are answered
//! from the replica's executor book and reach the database at most every third of the executor
//! timeout, many per statement.
use tonic::{Request, Response, Status};

use ticketmax_proto::v1;
use ticketmax_runtime::peer_names::PeerNames;

use super::requests::{MAX_NAME_LEN, require_name, text};
use crate::{
    app::SharedApp,
    engine::executors::Heartbeat,
    store::{self, executors::HeartbeatFigures},
};

pub struct RegistryApi {
    app: SharedApp,
    /// Names an executor's client certificate must carry (TICKETMAX_TLS_EXECUTOR_NAMES).
    executor_names: PeerNames,
}

impl RegistryApi {
    pub fn new(app: SharedApp, executor_names: PeerNames) -> Self {
        Self {
            app,
            executor_names,
        }
    }

    /// Only executors: the shared secret when one is set, the pinned certificate names when
    /// they are set.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.app.auth.require_executor(req.metadata())?;
        self.executor_names
            .admit(req.peer_certs().as_deref().map(Vec::as_slice))
    }
}

#[tonic::async_trait]
impl v1::executor_registry_server::ExecutorRegistry for RegistryApi {
    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let id = require_name("executor_id", &req.executor_id)?;
        let address = text("address", &req.address)?.trim();
        if text("version", &req.version)?.len() > MAX_NAME_LEN {
            return Err(Status::invalid_argument("version is too long"));
        }
        for j in &req.jobs {
            text("jobs", j)?;
        }
        if !(address.starts_with("http://") || address.starts_with("https://"))
            || address.parse::<tonic::transport::Uri>().is_err()
        {
            return Err(Status::invalid_argument(format!(
                "address '{address}' is not an http:// or https:// URL"
            )));
        }
        if req.jobs.len() > 1000 || req.jobs.iter().any(|j| j.len() > MAX_NAME_LEN) {
            return Err(Status::invalid_argument("too many or too long job names"));
        }
        let tasks = crate::params::from_proto(&req.tasks).map_err(Status::invalid_argument)?;
        let tasks = serde_json::to_string(&tasks).unwrap_or_else(|_| "[]".into());
        let live_since = store::now()
            - chrono::Duration::from_std(self.app.config.executor_timeout()).unwrap_or_default();
        let registration = store::executors::Registration {
            id: &id,
            address,
            jobs: &req.jobs,
            version: &req.version,
            tasks: &tasks,
        };
        let model = match self
            .app
            .store
            .register_executor(&registration, live_since)
            .await?
        {
            Ok(model) => model,
            Err(holder) => {
                tracing::error!(
                    executor = %id,
                    address,
                    holder = %holder.address,
                    "REFUSED a registration of a live executor id from another address: another process \
                     holds this id (an impostor with the executor secret, or two executors configured \
                     with the same TICKETMAX_EXECUTOR_ID)"
                );
                return Err(Status::already_exists(format!(
                    "executor id '{id}' is registered from another address and alive; \
                     give each executor its own TICKETMAX_EXECUTOR_ID"
                )));
            }
        };
        let session = model.session.clone().unwrap_or_default();
        self.app.executors.registered(model);
        tracing::info!(
            executor = %id,
            address,
            jobs = req.jobs.len(),
            "executor registered"
        );
        self.app.dispatch.wake();
        Ok(Response::new(v1::RegisterResponse {
            executor_id: id,
            heartbeat_interval_ms: self.app.config.heartbeat_interval_ms,
            session,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let id = require_name("executor_id", &req.executor_id)?;
        let figures = HeartbeatFigures {
            running: i32::try_from(req.running).unwrap_or(i32::MAX),
            outbox_pending: i64::try_from(req.outbox_pending).unwrap_or(i64::MAX),
            emails_sent: i64::try_from(req.emails_sent).unwrap_or(i64::MAX),
            emails_failed: i64::try_from(req.emails_failed).unwrap_or(i64::MAX),
        };
        let session = text("session", &req.session)?.to_string();
        let now = store::now();
        // Often enough that the stored heartbeat is never older than the timeout for the other
        // replicas (it lags by at most this plus one heartbeat interval).
        let every = persist_every(
            self.app.config.executor_timeout(),
            std::time::Duration::from_millis(u64::from(self.app.config.heartbeat_interval_ms)),
        );
        let known = match self
            .app
            .executors
            .heartbeat(&id, &session, figures, now, every)
        {
            Heartbeat::Known => true,
            Heartbeat::Displaced => false,
            // The executor's heartbeat cadence must not follow the database's latency: it
            // is answered from memory, the write happens meanwhile.
            Heartbeat::PersistInBackground => {
                let row = store::executors::HeartbeatRow {
                    id: id.clone(),
                    at: now,
                    figures,
                    session: session.clone(),
                };
                let app = self.app.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    match app.heartbeats.call("heartbeats", row).await {
                        Ok(Ok(known)) => app.executors.persisted(&id, now, known),
                        Ok(Err(e)) => {
                            app.executors.persist_failed(&id);
                            tracing::warn!(executor = %id, error = %e, "cannot record a heartbeat");
                        }
                        Err(_) => app.executors.persist_failed(&id),
                    }
                });
                true
            }
            Heartbeat::Persist => {
                let row = store::executors::HeartbeatRow {
                    id: id.clone(),
                    at: now,
                    figures,
                    session: session.clone(),
                };
                let known = self
                    .app
                    .heartbeats
                    .call("heartbeats", row)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))??;
                self.app.executors.persisted(&id, now, known);
                known
            }
        };
        // Not known: either the id is free (register again) or another registration holds it.
        let displaced =
            !known
                && !session.is_empty()
                && self.app.store.executor(&id).await?.is_some_and(|e| {
                    !e.deregistered && e.session.as_deref() != Some(session.as_str())
                });
        if displaced {
            tracing::error!(executor = %id, "heartbeat from a displaced registration: another process registered this executor id");
        }
        Ok(Response::new(v1::HeartbeatResponse { known, displaced }))
    }

    async fn deregister(
        &self,
        req: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::DeregisterResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let id = require_name("executor_id", &req.executor_id)?;
        self.app.store.deregister_executor(&id).await?;
        self.app.executors.deregistered(&id);
        tracing::info!(executor = %id, "executor deregistered");
        Ok(Response::new(v1::DeregisterResponse {}))
    }
}

/// How often a heartbeat must reach the database: half of what the executor timeout leaves
/// after one heartbeat interval.
fn persist_every(
    timeout: std::time::Duration,
    interval: std::time::Duration,
) -> std::time::Duration {
    (timeout.saturating_sub(interval) / 2).max(std::time::Duration::from_millis(250))
}
