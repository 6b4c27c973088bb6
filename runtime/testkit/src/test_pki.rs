//! Test certificates (tests only): a throw-away CA and leaf certificates made with rcgen, as TLS
//! material or PEM files. The project's shared PKI module will replace this.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::TlsConfig;
use crate::tls::TlsMaterial;

/// A test CA.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

/// A leaf certificate and its key.
pub struct Leaf {
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl Pki {
    /// A self-signed CA named `name` (fresh key each call).
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Pki {
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for server and client use with `sans` (DNS names or IP addresses).
    pub fn leaf(&self, cn: &str, sans: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }

    /// `leaf` as TLS material trusting this CA.
    pub fn material(&self, leaf: &Leaf) -> TlsMaterial {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        TlsMaterial {
            chain: vec![leaf.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
            roots: Arc::new(roots),
            policy: crate::tls::TlsPolicy::default(),
        }
    }

    /// Writes `<name>.crt`, `<name>.key` and `ca.crt` into `dir` and returns the config pointing at them.
    pub fn write(&self, dir: &Path, name: &str, leaf: &Leaf) -> TlsConfig {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        let ca = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        std::fs::write(&ca, &self.ca_pem).unwrap();
        TlsConfig {
            cert_file: cert,
            key_file: key,
            trust_bundle_file: ca,
        }
    }
}

/// The first `n` valid BSNs (elfproef) from 100000000 upwards.
pub fn bsns(n: usize) -> Vec<crate::model::Bsn> {
    let mut out = Vec::with_capacity(n);
    let mut prefix = 10_000_000u32;
    while out.len() < n {
        let s = format!("{prefix:08}");
        let sum: i64 = s
            .bytes()
            .enumerate()
            .map(|(i, b)| i64::from(b - b'0') * (9 - i as i64))
            .sum();
        // the last digit d has weight -1: (sum - d) % 11 == 0
        let d = sum % 11;
        if d <= 9
            && let Ok(b) = format!("{s}{d}").parse()
        {
            out.push(b);
        }
        prefix += 1;
    }
    out
}

/// A requester of organisation `ura` (UZI 000095254, role 01.015, facility V6, TREAT).
pub fn requester(ura: &str) -> crate::model::Requester {
    crate::model::Requester {
        uzi: "000095254".parse().unwrap(),
        role: "01.015".parse().unwrap(),
        ura: ura.parse().unwrap(),
        facility_type: "V6".parse().unwrap(),
        purpose_of_use: crate::model::PurposeOfUse::default(),
        name: None,
    }
}
