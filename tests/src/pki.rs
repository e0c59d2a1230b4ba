//! Certificates for the TLS tests: a CA and the leaves it signs, made fresh for each test.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A leaf certificate for `name` signed by `issuer` (a server's also names 127.0.0.1): the
/// certificate's PEM, its key's PEM and its DER.
pub fn leaf(name: &str, issuer: &Issuer<'_, KeyPair>, server: bool) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    if server {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    }
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// A self-signed CA: its PEM and the issuer that signs leaves.
pub fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), Issuer::new(params, key))
}
