//! The builder: [`ClientBuilder`] holds the connection options (URL, token, TLS files, connect
//! timeout, lazy or eager), checks the URL before anything is sent, and opens the channel that a
//! [`Client`] wraps.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::Endpoint;

use crate::auth::BearerAuth;
use crate::error::chain;
use crate::proto::job_service_client::JobServiceClient;
use crate::{Client, Error, Result, tls};

/// Options for [`Client`]: token, TLS, timeouts.
///
/// ```no_run
/// # async fn demo() -> Result<(), ticketmax_client::Error> {
/// use std::time::Duration;
/// let client = ticketmax_client::Client::builder("http://127.0.0.1:50051")
///     .token("operator-token")
///     .connect_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    domain: Option<String>,
    connect_timeout: Duration,
    lazy: bool,
}

impl ClientBuilder {
    /// The defaults: no token, TLS only for `https://` (web PKI roots), 5 s to connect, eager.
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            token: None,
            ca_file: None,
            identity: None,
            domain: None,
            connect_timeout: Duration::from_secs(5),
            lazy: false,
        }
    }

    /// Sends `authorization: Bearer <token>` with every call. An empty token means none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.trim().is_empty()).then_some(token);
        self
    }

    /// Trusts the CA certificate(s) in this PEM file instead of the built-in web PKI roots
    /// (implies TLS).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM) for mutual TLS.
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Expects this name in the server certificate (default: the URL's host).
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// How long to wait for the TCP (and TLS) connection; default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects on the first call instead of in [`connect`](Self::connect).
    pub fn lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let url = self.url.trim().to_string();
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.clone(),
            reason: reason.into(),
        };
        let https = url.starts_with("https://");
        if !(https || url.starts_with("http://")) {
            return Err(invalid("expected http://HOST:PORT or https://HOST:PORT"));
        }
        let uri: tonic::transport::Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| invalid(&chain(&e)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if https || self.ca_file.is_some() || self.identity.is_some() {
            let tls = tls::client_config(
                self.ca_file.as_deref(),
                self.identity
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
                self.domain.as_deref(),
            )?;
            endpoint = endpoint.tls_config(tls).map_err(Error::Tls)?;
        }
        Ok(endpoint)
    }

    /// Builds the client; unless [`lazy`](Self::lazy), connects now and fails with
    /// [`Error::Connect`] when the control plane cannot be reached.
    pub async fn connect(self) -> Result<Client> {
        let auth = match &self.token {
            Some(t) => BearerAuth::new(t)?,
            None => BearerAuth::none(),
        };
        let endpoint = self.endpoint()?;
        let channel = if self.lazy {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            })?
        };
        let api = JobServiceClient::with_interceptor(channel, auth)
            .max_decoding_message_size(64 * 1024 * 1024);
        Ok(Client::new(api, self.url))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Client, Error};

    #[tokio::test]
    async fn bad_urls_are_rejected_before_connecting() {
        for url in ["127.0.0.1:50051", "ftp://x:1", "http://", ""] {
            let err = Client::connect(url).await.unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
        }
    }

    #[tokio::test]
    async fn refused_connection_is_unavailable_with_a_clear_message() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Client::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("cannot connect"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
