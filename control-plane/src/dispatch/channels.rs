//! gRPC channels to executors (one lazily connected channel per address; `https://` ones with
//! the configured CA and this replica's certificate, for mutual TLS), and the choice of
//! executor for a run.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::engine::executors::jobs_of;
use crate::store::executor;

pub struct Channels {
    map: Mutex<HashMap<String, Channel>>,
    tls: ClientTlsConfig,
}

impl Channels {
    pub fn new(tls: ClientTlsConfig) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            tls,
        }
    }

    pub fn get(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        // Keep-alive pings no more often than gRPC's default minimum (5 minutes for servers
        // that do not opt in), so other gRPC implementations do not close the connection for
        // "too many pings"; the lease and heartbeats detect a dead executor anyway.
        let mut endpoint = Endpoint::from_shared(address.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(300))
            .keep_alive_timeout(Duration::from_secs(20));
        if address.starts_with("https://") {
            endpoint = endpoint.tls_config(self.tls.clone())?;
        }
        let channel = endpoint.connect_lazy();
        map.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// The least loaded live executor that offers the job.
pub fn pick<'a>(
    live: &'a [executor::Model],
    load: &HashMap<String, i64>,
    job: &str,
) -> Option<&'a executor::Model> {
    live.iter()
        .filter(|e| jobs_of(e).iter().any(|j| j == job))
        .min_by_key(|e| (load.get(&e.id).copied().unwrap_or(0), e.id.clone()))
}
