//! Which certificate may make a call: with mutual TLS every certificate the client CA signed
//! gets through the handshake, operators' included. Pinning the names the certificate must be
//! issued to narrows the executor's `RunJob` to control planes, and the control plane's
//! `ExecutorRegistry` to executors, when one CA signs them all.
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::Status;

/// The names (DNS or IP, as in the certificate's subject alternative names) one of which a
/// peer's certificate must be valid for. Empty: any peer the TLS handshake let in.
#[derive(Clone, Debug, Default)]
pub struct PeerNames {
    names: Vec<ServerName<'static>>,
    /// The setting they come from, for the refusal message.
    setting: &'static str,
}

impl PeerNames {
    /// Parses a comma-separated list; an invalid name is an error naming `setting`.
    pub fn parse(list: &str, setting: &'static str) -> Result<Self, String> {
        let names = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                ServerName::try_from(n.to_owned())
                    .map_err(|_| format!("{setting}: {n:?} is not a DNS name or an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PeerNames { names, setting })
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Admits a peer whose leaf certificate (already verified by the TLS handshake) is valid
    /// for one of the names; `PERMISSION_DENIED` otherwise, `UNAUTHENTICATED` without one.
    #[allow(clippy::result_large_err)]
    pub fn admit(&self, peer_certs: Option<&[CertificateDer<'static>]>) -> Result<(), Status> {
        if self.names.is_empty() {
            return Ok(());
        }
        let Some(leaf) = peer_certs.and_then(<[_]>::first) else {
            return Err(Status::unauthenticated(format!(
                "a client certificate is required ({} is set)",
                self.setting
            )));
        };
        let valid = webpki::EndEntityCert::try_from(leaf).is_ok_and(|cert| {
            self.names
                .iter()
                .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
        });
        if valid {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the client certificate is not issued to a name in {}",
                self.setting
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn cert_for(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn code(r: Result<(), Status>) -> Code {
        r.map_or_else(|s| s.code(), |()| Code::Ok)
    }

    #[test]
    fn pinned_names_admit_only_certificates_issued_to_them() {
        let pin = PeerNames::parse(" control-plane.internal , 10.0.0.7 ", "SETTING").unwrap();
        let cp = [cert_for(&["control-plane.internal"])];
        let by_ip = [cert_for(&["10.0.0.7"])];
        let operator = [cert_for(&["alice.internal"])];
        assert_eq!(code(pin.admit(Some(&cp))), Code::Ok);
        assert_eq!(code(pin.admit(Some(&by_ip))), Code::Ok);
        assert_eq!(code(pin.admit(Some(&operator))), Code::PermissionDenied);
        assert_eq!(code(pin.admit(Some(&[]))), Code::Unauthenticated);
        assert_eq!(code(pin.admit(None)), Code::Unauthenticated);
        // Not a certificate at all.
        let junk = [CertificateDer::from(vec![1u8, 2, 3])];
        assert_eq!(code(pin.admit(Some(&junk))), Code::PermissionDenied);
        let message = pin.admit(Some(&operator)).unwrap_err().message().to_owned();
        assert!(message.contains("SETTING"), "{message}");
    }

    #[test]
    fn no_names_admit_whatever_the_handshake_let_in() {
        let open = PeerNames::parse("", "SETTING").unwrap();
        assert!(open.is_empty());
        assert_eq!(code(open.admit(None)), Code::Ok);
    }

    #[test]
    fn a_bad_name_is_refused_with_the_setting() {
        let err = PeerNames::parse("ok.internal,not a name", "TICKETMAX_X").unwrap_err();
        assert!(
            err.contains("TICKETMAX_X") && err.contains("not a name"),
            "{err}"
        );
    }
}
