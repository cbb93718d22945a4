//! TLS on both sides of the executor: its gRPC server (with mutual TLS, only the control plane
//! may call `RunJob`), and its client to the control plane's `ExecutorRegistry` (the control
//! plane's CA, and this executor's certificate for a control plane that requires mutual TLS).
//! rustls with ring, no OpenSSL.
use std::time::Duration;

use anyhow::Context;
use ticketmax_runtime::tls::TlsFiles;
use tonic::transport::{Endpoint, ServerTlsConfig};

use crate::config::Config;

fn files(c: &Config) -> TlsFiles<'_> {
    TlsFiles {
        cert: c.tls_cert.as_deref(),
        key: c.tls_key.as_deref(),
        client_ca: c.tls_client_ca.as_deref(),
        ca: c.tls_ca.as_deref(),
    }
}

/// The gRPC server's TLS, when a certificate is configured.
pub fn server(c: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    Ok(files(c).grpc_server()?)
}

/// The scheme this executor serves, for the default advertised URL.
pub fn scheme(c: &Config) -> &'static str {
    if c.tls_cert.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The endpoint of the control plane's `ExecutorRegistry`. A CA or domain configured for a
/// plaintext URL is refused rather than ignored: the operator meant TLS.
pub fn control_plane(c: &Config) -> anyhow::Result<Endpoint> {
    let url = &c.control_plane_url;
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("TICKETMAX_CONTROL_PLANE_URL {url:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    if !url.starts_with("https://") {
        anyhow::ensure!(
            c.tls_ca.is_none() && c.tls_domain.is_none(),
            "TICKETMAX_TLS_CA / TICKETMAX_TLS_DOMAIN are set but TICKETMAX_CONTROL_PLANE_URL \
             {url} is plaintext; use https://"
        );
        return Ok(endpoint);
    }
    let mut tls = files(c).grpc_client()?;
    if let Some(domain) = &c.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    endpoint
        .tls_config(tls)
        .context("configuring TLS to the control plane")
}

/// TICKETMAX_TLS_CLIENT_NAMES, parsed.
pub fn client_names(c: &Config) -> anyhow::Result<ticketmax_runtime::peer_names::PeerNames> {
    ticketmax_runtime::peer_names::PeerNames::parse(
        c.tls_client_names.as_deref().unwrap_or(""),
        "TICKETMAX_TLS_CLIENT_NAMES",
    )
    .map_err(anyhow::Error::msg)
}
