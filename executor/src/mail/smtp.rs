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
//! Implicit TLS (port 465) stays on lettre's transport: lettre offers no supported way to wrap
//! a socket of ours in TLS before the greeting.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

/// How the session is secured (implicit TLS is handled by lettre's transport, not here).
pub enum Security {
    None,
    /// STARTTLS when the server offers it.
    Opportunistic(TlsParameters),
    /// STARTTLS or fail.
    Required(TlsParameters),
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
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
            .await
            .map_err(SendError::Smtp)?;
        match &self.security {
            Security::None => {}
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
