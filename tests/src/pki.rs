//! Certificates made in the test with rcgen (the TLS and mutual-TLS tests, SMTP over TLS): a CA, leaf
//! certificates it signs, and PEM files written under a test's directory.
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

pub type Ca = CertifiedIssuer<'static, KeyPair>;

/// A self-signed CA named `name`.
pub fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// (certificate PEM, key PEM) for `names` (DNS names or IP addresses), signed by `issuer`.
pub fn leaf(issuer: &Ca, names: &[&str], cn: &str) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, &**issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

/// Writes a PEM file under `<test dir>/pki/`; returns its path.
pub fn write_pem(test_dir: &Path, name: &str, text: &str) -> String {
    let dir = test_dir.join("pki");
    std::fs::create_dir_all(&dir).expect("create the pki dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a PEM file");
    path.display().to_string()
}
