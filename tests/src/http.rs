//! Hand-written HTTP/1.1 calls to the control plane's HTTP port, in plaintext or over TLS, and
//! the TLS client configurations (gRPC and HTTPS) for certificates made by [`crate::pki`].
//!
//! Hand-written on purpose: the tests see the exact status line and body the server sent, with
//! no client library retrying, following or normalising anything.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A certificate and its key, both PEM.
pub type CertPair = (String, String);

/// `method path` in plaintext, with `Authorization: Bearer token` when given; the status code
/// and the body.
pub async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_exchange(connect(addr).await?, addr, method, path, token).await
}

/// The same over TLS with `tls` (see [`https_client`]); the server is named `localhost`.
pub async fn https_call(
    addr: SocketAddr,
    tls: &TlsConnector,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let tcp = connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let stream = tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    http_exchange(stream, addr, method, path, token).await
}

/// [`http_call`] or [`https_call`], whichever `tls` says.
pub async fn call(
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    match tls {
        Some(tls) => https_call(addr, tls, method, path, token).await,
        None => http_call(addr, method, path, token).await,
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify once the response is complete.
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await {
        Err(_) => return Err(std::io::Error::other("read timed out")),
        Ok(Err(e)) if buf.is_empty() => return Err(e),
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A gRPC client TLS configuration trusting `ca_pem` for `localhost`, presenting `client` when
/// given.
pub fn grpc_tls(ca_pem: &str, client: Option<&CertPair>) -> ClientTlsConfig {
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        t = t.identity(Identity::from_pem(cert, key));
    }
    t
}

/// An HTTPS client trusting `ca_pem`, presenting `client` when given.
pub fn https_client(ca_pem: &str, client: Option<&CertPair>) -> TlsConnector {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("a CA certificate PEM"))
        .expect("a usable CA certificate");
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("a certificate PEM")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("a key PEM"),
            )
            .expect("a client identity"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}
