//! `ExecutorRegistry`: executors register, heartbeat and deregister. Heartbeats are answered
//! from the replica's executor book and reach the database at most every third of the executor
//! timeout, many per statement.
use tonic::{Request, Response, Status};

use ticketmax_proto::{peer_names::PeerNames, v1};

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
        let model = self
            .app
            .store
            .register_executor(&id, address, &req.jobs, &req.version)
            .await?;
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
        let now = store::now();
        let every = self.app.config.executor_timeout() / 3;
        let known = match self.app.executors.heartbeat(&id, figures, now, every) {
            Heartbeat::Known => true,
            Heartbeat::Persist => {
                let row = store::executors::HeartbeatRow {
                    id: id.clone(),
                    at: now,
                    figures,
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
        Ok(Response::new(v1::HeartbeatResponse { known }))
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
