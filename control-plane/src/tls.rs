//! TLS for the control plane's three doors: the gRPC server, the HTTP port, and the client side
//! of `RunJob` (dialing https:// executors). One certificate and key (`TICKETMAX_TLS_CERT`,
//! `TICKETMAX_TLS_KEY`) serve both ports and are presented to executors as this replica's client
//! identity; `TICKETMAX_TLS_CLIENT_CA` turns on mutual TLS on both ports; `TICKETMAX_TLS_CA` is
//! the CA executors' certificates are checked against. rustls with ring, no OpenSSL.
use std::sync::Arc;

use anyhow::Context;
use ticketmax_runtime::tls::{TlsFiles, read_pem};
use tokio_rustls::rustls::{
    self, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

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
pub fn grpc_server(c: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    Ok(files(c).grpc_server()?)
}

/// How this replica dials https:// executors: their CA (the web PKI roots without one), and its
/// own certificate for executors that require mutual TLS.
pub fn executor_client(c: &Config) -> anyhow::Result<ClientTlsConfig> {
    Ok(files(c).grpc_client()?)
}

/// The HTTP port's rustls configuration, when a certificate is configured: the same identity
/// as gRPC and, with `TICKETMAX_TLS_CLIENT_CA`, the same client-certificate requirement.
pub fn http_server(c: &Config) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_slice_iter(&read_pem(cert, "TICKETMAX_TLS_CERT")?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing TICKETMAX_TLS_CERT {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TICKETMAX_TLS_CERT {} holds no certificate",
        cert.display()
    );
    // The key's parse error is not shown: it could quote key material.
    let key_der =
        PrivateKeyDer::from_pem_slice(&read_pem(key, "TICKETMAX_TLS_KEY")?).map_err(|_| {
            anyhow::anyhow!(
                "TICKETMAX_TLS_KEY {} holds no PEM private key",
                key.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?;
    let builder = match &c.tls_client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(&read_pem(ca, "TICKETMAX_TLS_CLIENT_CA")?) {
                let der = der
                    .with_context(|| format!("parsing TICKETMAX_TLS_CLIENT_CA {}", ca.display()))?;
                roots
                    .add(der)
                    .with_context(|| format!("TICKETMAX_TLS_CLIENT_CA {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("building the client-certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .context("TICKETMAX_TLS_CERT and TICKETMAX_TLS_KEY do not make a usable identity")?;
    // HTTP/1.1 on the HTTP port (the gRPC port is where HTTP/2 clients go).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// TICKETMAX_TLS_EXECUTOR_NAMES, parsed.
pub fn executor_names(c: &Config) -> anyhow::Result<ticketmax_runtime::peer_names::PeerNames> {
    ticketmax_runtime::peer_names::PeerNames::parse(
        c.tls_executor_names.as_deref().unwrap_or(""),
        "TICKETMAX_TLS_EXECUTOR_NAMES",
    )
    .map_err(anyhow::Error::msg)
}
