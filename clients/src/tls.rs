//! TLS for the channel to the control plane: which CA to trust (the certificates of a PEM file,
//! or the built-in web PKI roots), the client certificate and key for mutual TLS, and the name
//! expected in the server's certificate. The files are read here, so a missing or unreadable one
//! is an [`Error::File`] that names it.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::{Error, Result};

/// The TLS configuration of a [`ClientBuilder`](crate::ClientBuilder): `ca_file` replaces the
/// web PKI roots, `identity` is a (certificate, key) pair of PEM files, `domain` overrides the
/// URL's host as the name to verify.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    domain: Option<&str>,
) -> Result<ClientTlsConfig> {
    let mut tls = ClientTlsConfig::new();
    match ca_file {
        Some(path) => {
            let pem = read("CA certificate", path)?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        None => tls = tls.with_webpki_roots(),
    }
    if let Some((cert, key)) = identity {
        let cert = read("client certificate", cert)?;
        let key = read("client key", key)?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = domain {
        tls = tls.domain_name(domain);
    }
    Ok(tls)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}
