//! A small pool of SMTP connections whose sockets have `TCP_NODELAY` set.
//!
//! lettre's own pool (`AsyncSmtpTransport`) connects without `TCP_NODELAY`, and lettre writes a
//! message body and its `\r\n.\r\n` terminator as two writes. With Nagle's algorithm the
//! terminator then waits for the ACK of the body, which the server delays (it has nothing to say
//! until it sees the terminator): about 40-50 ms per message, whatever the link. bench/mail.sh
//! measured 60-70 messages per second into a local smtp-sink that postfix smtp-source fills at
//! thousands per second. Here the socket is ours, so Nagle is off, and lettre's
//! [`AsyncSmtpConnection`] speaks SMTP over it (greeting, EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA).
//!
//! Implicit TLS (SMTPS, port 465) is done here too: the socket is wrapped in rustls before
//! lettre sees it, so it keeps `TCP_NODELAY` (lettre's own SMTPS transport has the delay).
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

/// How the session is secured.
pub enum Security {
    None,
    /// STARTTLS when the server offers it.
    Opportunistic(TlsParameters),
    /// STARTTLS or fail.
    Required(TlsParameters),
    /// TLS from the first byte (SMTPS).
    Implicit(ImplicitTls),
}

/// What an implicit-TLS session needs: the verifier's roots and the name to check.
pub struct ImplicitTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl ImplicitTls {
    /// Trusts the web PKI roots and the certificates in `extra_ca_pem`; checks `host`.
    pub fn new(host: &str, extra_ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(pem) = extra_ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("SMTP_CA_FILE: {e}"))?;
                roots.add(cert).map_err(|e| format!("SMTP_CA_FILE: {e}"))?;
                added += 1;
            }
            if added == 0 {
                return Err("SMTP_CA_FILE holds no PEM certificate".to_owned());
            }
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("SMTP_HOST {host:?} is not a TLS server name: {e}"))?;
        Ok(ImplicitTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A rustls session over our socket, in the shape lettre's connection speaks SMTP over.
struct TlsSocket(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsSocket")
            .field(self.0.get_ref().0)
            .finish()
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsSocket {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

pub enum SendError {
    /// No session could be set up or it timed out: always worth retrying.
    Connection(String),
    /// What the server or lettre said (`is_permanent()` for 5xx).
    Smtp(lettre::transport::smtp::Error),
}

/// Idle connections older than this are closed instead of reused (servers drop idle clients).
const MAX_IDLE: Duration = Duration::from_secs(60);

pub struct SmtpPool {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    max_size: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpPool {
    pub fn new(
        host: &str,
        port: u16,
        security: Security,
        credentials: Option<Credentials>,
        timeout: Duration,
        max_size: usize,
    ) -> Self {
        SmtpPool {
            host: host.to_owned(),
            port,
            security,
            credentials,
            hello: ClientId::default(),
            timeout,
            max_size,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one message on an idle connection or a new one; a connection is reused only after
    /// a fully successful transaction.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<(), SendError> {
        let mut conn = match self.checkout() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        match tokio::time::timeout(self.timeout, conn.send(envelope, email)).await {
            Ok(Ok(_)) => {
                self.checkin(conn);
                Ok(())
            }
            // lettre has already aborted (QUIT and closed) a connection that failed.
            Ok(Err(e)) => Err(SendError::Smtp(e)),
            Err(_) => Err(SendError::Connection(format!(
                "timed out after {:?} sending to {}:{}",
                self.timeout, self.host, self.port
            ))),
        }
    }

    fn checkout(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_size {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        match tokio::time::timeout(self.timeout, self.open()).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Connection(format!(
                "timed out after {:?} connecting to {}:{}",
                self.timeout, self.host, self.port
            ))),
        }
    }

    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                SendError::Connection(format!(
                    "Connection error: {e} ({}:{})",
                    self.host, self.port
                ))
            })?;
        tcp.set_nodelay(true)
            .map_err(|e| SendError::Connection(format!("setting TCP_NODELAY: {e}")))?;
        let socket: Box<dyn AsyncTokioStream> = match &self.security {
            Security::Implicit(tls) => Box::new(TlsSocket(
                tls.connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| {
                        SendError::Connection(format!(
                            "TLS handshake with {}:{}: {e}",
                            self.host, self.port
                        ))
                    })?,
            )),
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(socket, &self.hello)
            .await
            .map_err(SendError::Smtp)?;
        match &self.security {
            Security::None | Security::Implicit(_) => {}
            Security::Opportunistic(tls) => {
                if conn.can_starttls() {
                    conn.starttls(tls.clone(), &self.hello)
                        .await
                        .map_err(SendError::Smtp)?;
                }
            }
            Security::Required(tls) => conn
                .starttls(tls.clone(), &self.hello)
                .await
                .map_err(SendError::Smtp)?,
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(SendError::Smtp)?;
        }
        Ok(conn)
    }
}
