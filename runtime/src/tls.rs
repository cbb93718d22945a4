//! TLS material both binaries load at start, from the PEM files their variables name:
//! `TICKETMAX_TLS_CERT` and `TICKETMAX_TLS_KEY` (this process's identity, served and presented
//! as a client), `TICKETMAX_TLS_CLIENT_CA` (mutual TLS on the server side) and
//! `TICKETMAX_TLS_CA` (the CA the peer it dials must be signed by; the web PKI roots without
//! it). rustls with ring, no OpenSSL. Errors name the variable and the file, never their
//! contents (a key's parse error could quote key material).
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {var} {}: {source}", path.display())]
pub struct ReadError {
    /// The variable that names the file.
    pub var: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The bytes of the PEM file `path`, named by variable `var`.
pub fn read_pem(path: &Path, var: &'static str) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|source| ReadError {
        var,
        path: path.to_owned(),
        source,
    })
}

/// The TLS files a process was configured with.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsFiles<'a> {
    /// `TICKETMAX_TLS_CERT`
    pub cert: Option<&'a Path>,
    /// `TICKETMAX_TLS_KEY`
    pub key: Option<&'a Path>,
    /// `TICKETMAX_TLS_CLIENT_CA`
    pub client_ca: Option<&'a Path>,
    /// `TICKETMAX_TLS_CA`
    pub ca: Option<&'a Path>,
}

impl TlsFiles<'_> {
    /// This process's certificate and key, when both are configured.
    pub fn identity(&self) -> Result<Option<Identity>, ReadError> {
        let (Some(cert), Some(key)) = (self.cert, self.key) else {
            return Ok(None);
        };
        Ok(Some(Identity::from_pem(
            read_pem(cert, "TICKETMAX_TLS_CERT")?,
            read_pem(key, "TICKETMAX_TLS_KEY")?,
        )))
    }

    /// The gRPC server's TLS when a certificate is configured, requiring a client certificate
    /// signed by `TICKETMAX_TLS_CLIENT_CA` when that is set.
    pub fn grpc_server(&self) -> Result<Option<ServerTlsConfig>, ReadError> {
        let Some(identity) = self.identity()? else {
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = self.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read_pem(
                ca,
                "TICKETMAX_TLS_CLIENT_CA",
            )?));
        }
        Ok(Some(tls))
    }

    /// How this process dials a TLS peer: the peer's CA (`TICKETMAX_TLS_CA`, else the web PKI
    /// roots), presenting this process's identity for peers that require mutual TLS.
    pub fn grpc_client(&self) -> Result<ClientTlsConfig, ReadError> {
        let mut tls = match self.ca {
            Some(ca) => ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read_pem(ca, "TICKETMAX_TLS_CA")?)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        if let Some(identity) = self.identity()? {
            tls = tls.identity(identity);
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_means_plaintext() {
        let files = TlsFiles::default();
        assert!(files.identity().expect("no files to read").is_none());
        assert!(files.grpc_server().expect("no files to read").is_none());
    }

    #[test]
    fn a_missing_file_names_its_variable_and_path() {
        let cert = Path::new("/nonexistent/ticketmax/cert.pem");
        let files = TlsFiles {
            cert: Some(cert),
            key: Some(Path::new("/nonexistent/ticketmax/key.pem")),
            ..TlsFiles::default()
        };
        let err = files.grpc_server().expect_err("the files do not exist");
        assert_eq!(err.var, "TICKETMAX_TLS_CERT");
        let text = err.to_string();
        assert!(
            text.starts_with("reading TICKETMAX_TLS_CERT /nonexistent/ticketmax/cert.pem: "),
            "{text}"
        );
        let err = TlsFiles {
            ca: Some(Path::new("/nonexistent/ca.pem")),
            ..TlsFiles::default()
        }
        .grpc_client()
        .expect_err("the CA does not exist");
        assert_eq!(err.var, "TICKETMAX_TLS_CA");
    }
}
