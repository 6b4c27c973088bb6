//! X.509 helpers shared by the operator and the runtime: PEM parsing, what a certificate says (expiry,
//! subject, DNS names, the URA of a UZI server certificate), whether a key belongs to a certificate, and
//! (in [`generate`]) test and demo certificates in the UZI server certificate shape.
//!
//! UZI server certificates carry the organisation's URA in a subjectAltName `otherName` with type id
//! `2.5.5.5` and an IA5String value `<CA OID>-<version>-<UZI number>-<card type>-<URA>-<role>-<AGB>`;
//! card type `S` is a server certificate. Certificates issued after 8 November 2023 also carry the URA in
//! an `otherName` permanentIdentifier (RFC 4043, `1.3.6.1.5.5.7.8.3`) whose assigner is the URA OID
//! `2.16.528.1.1007.3.3` (docs/DOMAIN.md "Identifiers"; UZI-register CPS as summarised by the Nuts foundation).
//!
//! Errors are [`PkiError`]: one line, never a panic on input.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::model::Ura;

pub mod name;
pub use name::{CertificateIdentity, DistinguishedName, SpkiSha256, certificate_identity};

/// OID of the UZI `otherName` (`2.5.5.5`) holding the compound UZI string.
pub const UZI_OTHER_NAME_OID: &[u64] = &[2, 5, 5, 5];
/// OID of the RFC 4043 permanentIdentifier `otherName` (`id-on-permanentIdentifier`).
pub const PERMANENT_IDENTIFIER_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 8, 3];
/// OID of the URA register (assigner of a URA permanentIdentifier), `2.16.528.1.1007.3.3`.
pub const URA_OID: &[u64] = &[2, 16, 528, 1, 1007, 3, 3];

/// Why certificate material was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// The text holds no PEM block of the expected kind (`CERTIFICATE`, or a private key).
    #[error("no {0} PEM block found")]
    NoPem(&'static str),
    /// A PEM block could not be decoded.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// The DER inside a certificate PEM block is not an X.509 certificate.
    #[error("invalid X.509 certificate: {0}")]
    Certificate(String),
    /// The private key is of a type or shape that rustls (ring) cannot use.
    #[error("unusable private key: {0}")]
    Key(String),
    /// The UZI `otherName` value does not have the seven `-`-separated fields of the UZI CPS, or its URA
    /// is not 8 digits.
    #[error(
        "invalid UZI otherName {0:?}: expected <CA OID>-<version>-<UZI number>-<card type>-<URA>-<role>-<AGB>"
    )]
    UziOtherName(String),
    /// The UZI otherName and the permanentIdentifier name different URAs.
    #[error(
        "certificate names two different URAs: {0} (UZI otherName) and {1} (permanentIdentifier)"
    )]
    ConflictingUra(String, String),
    /// Certificate generation failed (tests and demo only).
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// The fields of a UZI `otherName` (`2.5.5.5`): `<CA OID>-<version>-<UZI number>-<card type>-<URA>-<role>-<AGB>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UziName {
    /// OID of the issuing UZI CA.
    pub ca_oid: String,
    /// Version of the naming scheme.
    pub version: String,
    /// UZI number of the card or server certificate.
    pub uzi_number: String,
    /// Card type: `S` server certificate, `Z` personal card, `N` named employee, `M` medewerker.
    pub card_type: String,
    /// Subscriber number: the organisation's URA.
    pub ura: Ura,
    /// UZI role code (`00.000` for server certificates).
    pub role: String,
    /// AGB code (`00000000` when absent).
    pub agb: String,
}

impl FromStr for UziName {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        let bad = || PkiError::UziOtherName(s.to_owned());
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [ca, version, uzi, card, ura, role, agb] = parts.as_slice() else {
            return Err(bad());
        };
        if ca.is_empty() || card.is_empty() {
            return Err(bad());
        }
        Ok(UziName {
            ca_oid: (*ca).to_owned(),
            version: (*version).to_owned(),
            uzi_number: (*uzi).to_owned(),
            card_type: (*card).to_owned(),
            ura: ura.parse().map_err(|_| bad())?,
            role: (*role).to_owned(),
            agb: (*agb).to_owned(),
        })
    }
}

impl fmt::Display for UziName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}-{}-{}-{}",
            self.ca_oid,
            self.version,
            self.uzi_number,
            self.card_type,
            self.ura,
            self.role,
            self.agb
        )
    }
}

/// What the operator and the runtime need to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Start of validity (UTC).
    pub not_before: Timestamp,
    /// End of validity (UTC); the certificate is expired from this instant on.
    pub not_after: Timestamp,
    /// Subject distinguished name in RFC 4514 text form.
    pub subject: String,
    /// subjectAltName dNSName entries, in certificate order.
    pub dns_names: Vec<String>,
    /// URA of a UZI server certificate (card type `S`): from the UZI otherName, else from a URA
    /// permanentIdentifier. `None` for other certificates (PKIoverheid, personal UZI cards, plain TLS).
    pub ura: Option<Ura>,
    /// The parsed UZI otherName, whatever its card type.
    pub uzi: Option<UziName>,
}

impl CertificateInfo {
    /// Whether the certificate is valid at `now` (not before `not_before`, before `not_after`).
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// PEM text of one DER block under `label` (e.g. `CERTIFICATE`), 64 base64 characters per line.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// Parses every `CERTIFICATE` block of a PEM text (a chain, leaf first). Errors when there is none or a
/// block is malformed.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::NoPem("CERTIFICATE"));
    }
    Ok(certs)
}

/// Parses the first private key of a PEM text (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PkiError::NoPem("PRIVATE KEY"),
        other => PkiError::Pem(other.to_string()),
    })
}

/// Reads validity, subject, DNS names and the UZI identity of one DER certificate.
pub fn certificate_info(der: &[u8]) -> Result<CertificateInfo, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let ts = |t: &x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp())
            .map_err(|e| PkiError::Certificate(format!("validity out of range: {e}")))
    };
    let not_before = ts(&cert.validity().not_before)?;
    let not_after = ts(&cert.validity().not_after)?;
    let subject = cert.subject().to_string();
    let mut dns_names = Vec::new();
    let mut uzi = None;
    let mut permanent_ura = None;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(format!("subjectAltName: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                GeneralName::OtherName(oid, value) => {
                    let arcs: Option<Vec<u64>> = oid.iter().map(|i| i.collect());
                    match arcs.as_deref() {
                        Some(UZI_OTHER_NAME_OID) => {
                            let text = read_explicit0(value, |r| r.read_ia5_string())
                                .or_else(|_| read_explicit0(value, |r| r.read_utf8string()))
                                .map_err(|_| PkiError::UziOtherName("<not an IA5String>".into()))?;
                            uzi = Some(text.parse::<UziName>()?);
                        }
                        Some(PERMANENT_IDENTIFIER_OID) => {
                            if let Some(ura) = read_permanent_identifier_ura(value) {
                                permanent_ura = Some(ura);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
    let uzi_server_ura = uzi
        .as_ref()
        .filter(|u| u.card_type == "S")
        .map(|u| u.ura.clone());
    let ura = match (uzi_server_ura, permanent_ura) {
        (Some(a), Some(b)) if a != b => {
            return Err(PkiError::ConflictingUra(a.to_string(), b.to_string()));
        }
        (Some(a), _) => Some(a),
        // a permanentIdentifier alone only counts when no personal UZI name says otherwise
        (None, Some(b)) if uzi.is_none() => Some(b),
        _ => None,
    };
    Ok(CertificateInfo {
        not_before,
        not_after,
        subject,
        dns_names,
        ura,
        uzi,
    })
}

/// [`certificate_info`] of the first (leaf) certificate of a PEM chain.
pub fn leaf_info(pem: &[u8]) -> Result<CertificateInfo, PkiError> {
    let certs = parse_certificates(pem)?;
    certificate_info(certs[0].as_ref())
}

/// Checks the certificates (PEM, one or more `CERTIFICATE` blocks) of a trusted XUA assertion issuer:
/// each readable, with a key that can verify XUA signatures (RSA, or EC on P-256, P-384 or P-521).
/// Errors: one line naming the certificate and what is wrong. The gateway loads the keys themselves
/// with its XML-Signature library (`duo_runtime::ihe::xua_dsig::TrustedIssuer`); this check lets a
/// configuration be refused before that, by every component that reads it (the operator included).
pub fn check_xua_signature_certificates(pem: &str) -> Result<(), String> {
    const RSA: &str = "1.2.840.113549.1.1.1";
    const EC: &str = "1.2.840.10045.2.1";
    const CURVES: [&str; 3] = ["1.2.840.10045.3.1.7", "1.3.132.0.34", "1.3.132.0.35"];
    let ders = parse_certificates(pem.as_bytes()).map_err(|e| e.to_string())?;
    for der in &ders {
        let info = certificate_info(der).map_err(|e| e.to_string())?;
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("certificate {}: {e}", info.subject))?;
        let spki = &cert.tbs_certificate.subject_pki;
        let alg = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        let ok = alg == RSA || (alg == EC && curve.as_deref().is_some_and(|c| CURVES.contains(&c)));
        if !ok {
            return Err(format!(
                "certificate {}: {} keys are not accepted for XUA signatures",
                info.subject,
                curve.map_or(alg.clone(), |c| format!("{alg} ({c})"))
            ));
        }
    }
    Ok(())
}

/// Whether `key` is the private key of the certificate `cert_der`: compares the key's public key with
/// the certificate's subjectPublicKeyInfo. Errors when either cannot be read.
pub fn key_matches_certificate(cert_der: &[u8], key: &PrivateKeyDer<'_>) -> Result<bool, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| PkiError::Key(e.to_string()))?;
    let spki = signer
        .public_key()
        .ok_or_else(|| PkiError::Key("cannot derive the public key".into()))?;
    Ok(spki.as_ref() == cert.tbs_certificate.subject_pki.raw)
}

/// Reads `[0] EXPLICIT <value>` (the otherName value wrapper of RFC 5280 4.2.1.6).
fn read_explicit0<T>(
    der: &[u8],
    f: impl FnOnce(yasna::BERReader<'_, '_>) -> yasna::ASN1Result<T>,
) -> yasna::ASN1Result<T> {
    yasna::parse_der(der, |r| r.read_tagged(yasna::Tag::context(0), f))
}

/// The URA of a permanentIdentifier (RFC 4043: `SEQUENCE { identifierValue UTF8String OPTIONAL,
/// assigner OBJECT IDENTIFIER OPTIONAL }`) whose assigner is the URA register; `None` otherwise.
fn read_permanent_identifier_ura(der: &[u8]) -> Option<Ura> {
    let (value, assigner) = read_explicit0(der, |r| {
        r.read_sequence(|r| {
            let value = r.read_optional(|r| r.read_utf8string())?;
            let assigner = r.read_optional(|r| r.read_oid())?;
            Ok((value, assigner))
        })
    })
    .ok()?;
    if assigner?.components().as_slice() != URA_OID {
        return None;
    }
    value?.parse().ok()
}

/// Builds the DER of a subjectAltName extension value holding the UZI otherName and/or the URA
/// permanentIdentifier, and dNSNames. Only certificates made here need it (test certificates).
#[cfg(any(test, feature = "test-certificates"))]
fn uzi_subject_alt_name(
    uzi: &UziName,
    uzi_name: bool,
    permanent_identifier: bool,
    dns_names: &[String],
) -> Vec<u8> {
    use yasna::models::ObjectIdentifier;
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            if uzi_name {
                w.next().write_tagged_implicit(yasna::Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next()
                            .write_oid(&ObjectIdentifier::from_slice(UZI_OTHER_NAME_OID));
                        w.next().write_tagged(yasna::Tag::context(0), |w| {
                            w.write_ia5_string(&uzi.to_string())
                        });
                    })
                });
            }
            if permanent_identifier {
                w.next().write_tagged_implicit(yasna::Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next()
                            .write_oid(&ObjectIdentifier::from_slice(PERMANENT_IDENTIFIER_OID));
                        w.next().write_tagged(yasna::Tag::context(0), |w| {
                            w.write_sequence(|w| {
                                w.next().write_utf8_string(uzi.ura.as_str());
                                w.next().write_oid(&ObjectIdentifier::from_slice(URA_OID));
                            })
                        });
                    })
                });
            }
            for d in dns_names {
                w.next()
                    .write_tagged_implicit(yasna::Tag::context(2), |w| w.write_ia5_string(d));
            }
        })
    })
}

/// Test and demo certificates: a CA and UZI-style server certificates signed by it (feature
/// `test-certificates`, which the shipped binaries leave out).
///
/// Keys are ECDSA P-256 (ring cannot generate RSA keys); real UZI server certificates use RSA, which
/// [`parse_private_key`] and [`key_matches_certificate`] accept as well.
#[cfg(any(test, feature = "test-certificates"))]
pub mod generate {
    use jiff::{SignedDuration, Timestamp};
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use x509_parser::time::ASN1Time;

    use super::{PkiError, UziName, uzi_subject_alt_name};
    use crate::model::Ura;

    fn err(e: impl std::fmt::Display) -> PkiError {
        PkiError::Generate(e.to_string())
    }

    /// rcgen takes `time::OffsetDateTime`; x509-parser converts to it, so the `time` crate need not be named.
    macro_rules! to_datetime {
        ($t:expr) => {
            ASN1Time::from_timestamp($t.as_second())
                .map_err(err)?
                .to_datetime()
        };
    }

    /// A certificate and its private key, PEM.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CertifiedPem {
        /// Certificate, PEM.
        pub cert_pem: String,
        /// Private key, PKCS#8 PEM.
        pub key_pem: String,
    }

    /// A certificate authority that can sign server certificates.
    pub struct Ca {
        params: CertificateParams,
        key: KeyPair,
        /// The CA certificate, PEM (the trust bundle of whoever trusts this CA).
        pub cert_pem: String,
    }

    impl Ca {
        /// A self-signed CA named `common_name`, valid from an hour ago for ten years.
        pub fn new(common_name: &str) -> Result<Ca, PkiError> {
            let now = Timestamp::now();
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, common_name);
            dn.push(DnType::OrganizationName, "DUO test PKI");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = to_datetime!(now - SignedDuration::from_hours(1));
            params.not_after = to_datetime!(now + SignedDuration::from_hours(24 * 3650));
            let key = KeyPair::generate().map_err(err)?;
            let cert = params.self_signed(&key).map_err(err)?;
            Ok(Ca {
                params,
                key,
                cert_pem: cert.pem(),
            })
        }

        /// An intermediate CA named `common_name` (organisation `DUO test PKI`, as [`Ca::new`] names
        /// its CAs) signed by this CA; its `cert_pem` is the intermediate alone.
        pub fn intermediate(&self, common_name: &str) -> Result<Ca, PkiError> {
            let now = Timestamp::now();
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, common_name);
            dn.push(DnType::OrganizationName, "DUO test PKI");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = to_datetime!(now - SignedDuration::from_hours(1));
            params.not_after = to_datetime!(now + SignedDuration::from_hours(24 * 365));
            let key = KeyPair::generate().map_err(err)?;
            let issuer = Issuer::from_params(&self.params, &self.key);
            let cert = params.signed_by(&key, &issuer).map_err(err)?;
            Ok(Ca {
                params,
                key,
                cert_pem: cert.pem(),
            })
        }

        /// Signs a certificate for `spec`.
        pub fn issue(&self, spec: &ServerCertSpec) -> Result<CertifiedPem, PkiError> {
            self.issue_naming_crl(spec, None)
        }

        /// Signs a certificate for `spec` whose CRL distribution point is `crl_url` (when given).
        pub fn issue_naming_crl(
            &self,
            spec: &ServerCertSpec,
            crl_url: Option<&str>,
        ) -> Result<CertifiedPem, PkiError> {
            let mut params = CertificateParams::default();
            if let Some(u) = crl_url {
                params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                    uris: vec![u.to_owned()],
                }];
            }
            let mut dn = DistinguishedName::new();
            dn.push(
                DnType::CommonName,
                spec.dns_names.first().map(String::as_str).unwrap_or("duo"),
            );
            dn.push(DnType::OrganizationName, spec.organization.as_str());
            params.distinguished_name = dn;
            params.not_before = to_datetime!(spec.not_before);
            params.not_after = to_datetime!(spec.not_after);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.use_authority_key_identifier_extension = true;
            match &spec.ura {
                Some(ura) => {
                    // rcgen writes otherName values only as UTF8String; UZI uses IA5String, so the whole
                    // subjectAltName is written here.
                    let uzi = UziName {
                        ca_oid: "2.16.528.1.1003.1.3.5.5.2".into(),
                        version: "1".into(),
                        uzi_number: spec.uzi_number.clone(),
                        card_type: "S".into(),
                        ura: ura.clone(),
                        role: "00.000".into(),
                        agb: "00000000".into(),
                    };
                    let der = uzi_subject_alt_name(
                        &uzi,
                        spec.uzi_name,
                        spec.permanent_identifier,
                        &spec.dns_names,
                    );
                    params
                        .custom_extensions
                        .push(CustomExtension::from_oid_content(&[2, 5, 29, 17], der));
                }
                None => {
                    for d in &spec.dns_names {
                        params
                            .subject_alt_names
                            .push(rcgen::SanType::DnsName(d.as_str().try_into().map_err(err)?));
                    }
                }
            }
            let key = KeyPair::generate().map_err(err)?;
            let issuer = Issuer::from_params(&self.params, &self.key);
            let cert = params.signed_by(&key, &issuer).map_err(err)?;
            Ok(CertifiedPem {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        }

        /// A CRL (DER) of this CA listing the certificates `revoked` (PEM, leaf first), issued an
        /// hour ago with nextUpdate `next_update`. Errors: a certificate does not parse.
        pub fn crl(&self, revoked: &[&str], next_update: Timestamp) -> Result<Vec<u8>, PkiError> {
            let now = Timestamp::now();
            let mut revoked_certs = Vec::new();
            for pem in revoked {
                let certs = super::parse_certificates(pem.as_bytes())?;
                let (_, c) = x509_parser::parse_x509_certificate(certs[0].as_ref()).map_err(err)?;
                revoked_certs.push(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(c.raw_serial()),
                    revocation_time: to_datetime!(now - SignedDuration::from_mins(30)),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                });
            }
            let params = rcgen::CertificateRevocationListParams {
                this_update: to_datetime!(now - SignedDuration::from_hours(1)),
                next_update: to_datetime!(next_update),
                crl_number: rcgen::SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs,
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            };
            let issuer = Issuer::from_params(&self.params, &self.key);
            Ok(params.signed_by(&issuer).map_err(err)?.der().to_vec())
        }
    }

    /// What to put in a generated server certificate.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ServerCertSpec {
        /// URA for the UZI otherName; `None` gives a plain TLS certificate (no UZI identity).
        pub ura: Option<Ura>,
        /// UZI number of the server certificate.
        pub uzi_number: String,
        /// Write the UZI otherName (`2.5.5.5`) naming the URA (every UZI server certificate has it).
        pub uzi_name: bool,
        /// Also write the URA permanentIdentifier (certificates issued after 8 November 2023).
        pub permanent_identifier: bool,
        /// Organisation name (subject O).
        pub organization: String,
        /// DNS names (the first is also the subject CN).
        pub dns_names: Vec<String>,
        /// Start of validity.
        pub not_before: Timestamp,
        /// End of validity.
        pub not_after: Timestamp,
    }

    impl ServerCertSpec {
        /// A UZI server certificate for `ura` and `dns_names`, valid from an hour ago for `days` days.
        pub fn uzi(ura: Ura, organization: &str, dns_names: &[&str], days: i64) -> ServerCertSpec {
            let now = Timestamp::now();
            ServerCertSpec {
                ura: Some(ura),
                uzi_number: "90000111".into(),
                uzi_name: true,
                permanent_identifier: true,
                organization: organization.into(),
                dns_names: dns_names.iter().map(|s| (*s).to_owned()).collect(),
                not_before: now - SignedDuration::from_hours(1),
                not_after: now + SignedDuration::from_hours(24 * days),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::generate::{Ca, ServerCertSpec};
    use super::*;
    use jiff::SignedDuration;

    fn ura(s: &str) -> Ura {
        s.parse().unwrap()
    }

    #[test]
    fn uzi_name_parses_and_round_trips() {
        let s = "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-90000123-00.000-00000000";
        let n: UziName = s.parse().unwrap();
        assert_eq!(n.card_type, "S");
        assert_eq!(n.ura.as_str(), "90000123");
        assert_eq!(n.uzi_number, "12345678");
        assert_eq!(n.to_string(), s);
        assert!(
            "1.2.3-1-123-S-9000012-00.000-0".parse::<UziName>().is_err(),
            "7-digit URA"
        );
        assert!(
            "1.2.3-1-123-S-90000123-00.000".parse::<UziName>().is_err(),
            "six fields"
        );
        assert!("".parse::<UziName>().is_err());
    }

    #[test]
    fn generated_uzi_certificate_carries_ura_and_names() {
        let ca = Ca::new("Test UZI CA").unwrap();
        let c = ca
            .issue(&ServerCertSpec::uzi(
                ura("12345678"),
                "Ziekenhuis Oost",
                &["duo.oost.example", "oost"],
                90,
            ))
            .unwrap();
        let info = leaf_info(c.cert_pem.as_bytes()).unwrap();
        assert_eq!(info.ura, Some(ura("12345678")));
        assert_eq!(
            info.dns_names,
            vec!["duo.oost.example".to_owned(), "oost".to_owned()]
        );
        assert!(
            info.subject.contains("CN=duo.oost.example"),
            "{}",
            info.subject
        );
        assert_eq!(info.uzi.as_ref().map(|u| u.card_type.as_str()), Some("S"));
        let days = (info.not_after - Timestamp::now()).get_seconds() / 86_400;
        assert!((88..=90).contains(&days), "{days}");
        assert!(info.is_valid_at(Timestamp::now()));
        assert!(!info.is_valid_at(info.not_after));
    }

    #[test]
    fn ura_from_either_name_form_and_conflict_detected() {
        let ca = Ca::new("ca").unwrap();
        let mut spec = ServerCertSpec::uzi(ura("87654321"), "West", &["west"], 10);
        spec.permanent_identifier = false;
        assert_eq!(
            leaf_info(ca.issue(&spec).unwrap().cert_pem.as_bytes())
                .unwrap()
                .ura,
            Some(ura("87654321"))
        );
        spec.permanent_identifier = true;
        spec.uzi_name = false;
        let info = leaf_info(ca.issue(&spec).unwrap().cert_pem.as_bytes()).unwrap();
        assert_eq!(info.ura, Some(ura("87654321")));
        assert_eq!(info.uzi, None);
        // both forms, different URAs: refuse rather than pick one
        let uzi: UziName = "1.2-1-1-S-11112222-00.000-0".parse().unwrap();
        let mut der = uzi_subject_alt_name(&uzi, true, false, &[]);
        let other = uzi_subject_alt_name(
            &UziName {
                ura: ura("33334444"),
                ..uzi.clone()
            },
            false,
            true,
            &[],
        );
        // splice: SEQUENCE { uziName(11112222), permanentIdentifier(33334444) }
        let a = yasna::parse_der(&der, |r| r.read_sequence(|r| r.next().read_der())).unwrap();
        let b = yasna::parse_der(&other, |r| r.read_sequence(|r| r.next().read_der())).unwrap();
        der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&a);
                w.next().write_der(&b);
            })
        });
        let mut params = rcgen::CertificateParams::default();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[2, 5, 29, 17],
                der,
            ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_info(cert.der().as_ref()),
            Err(PkiError::ConflictingUra(
                "11112222".into(),
                "33334444".into()
            ))
        );
    }

    #[test]
    fn plain_certificate_has_no_ura() {
        let ca = Ca::new("ca").unwrap();
        let mut spec = ServerCertSpec::uzi(ura("12345678"), "x", &["mitz.example"], 10);
        spec.ura = None;
        let c = ca.issue(&spec).unwrap();
        let info = leaf_info(c.cert_pem.as_bytes()).unwrap();
        assert_eq!(info.ura, None);
        assert_eq!(info.uzi, None);
        assert_eq!(info.dns_names, vec!["mitz.example".to_owned()]);
    }

    #[test]
    fn expired_certificate_is_reported_as_such() {
        let ca = Ca::new("ca").unwrap();
        let mut spec = ServerCertSpec::uzi(ura("12345678"), "x", &["a"], 10);
        spec.not_before = Timestamp::now() - SignedDuration::from_hours(48);
        spec.not_after = Timestamp::now() - SignedDuration::from_hours(24);
        let info = leaf_info(ca.issue(&spec).unwrap().cert_pem.as_bytes()).unwrap();
        assert!(!info.is_valid_at(Timestamp::now()));
    }

    #[test]
    fn key_match_detects_foreign_key() {
        let ca = Ca::new("ca").unwrap();
        let a = ca
            .issue(&ServerCertSpec::uzi(ura("12345678"), "a", &["a"], 10))
            .unwrap();
        let b = ca
            .issue(&ServerCertSpec::uzi(ura("12345678"), "b", &["b"], 10))
            .unwrap();
        let cert = parse_certificates(a.cert_pem.as_bytes()).unwrap();
        let ka = parse_private_key(a.key_pem.as_bytes()).unwrap();
        let kb = parse_private_key(b.key_pem.as_bytes()).unwrap();
        assert!(key_matches_certificate(cert[0].as_ref(), &ka).unwrap());
        assert!(!key_matches_certificate(cert[0].as_ref(), &kb).unwrap());
    }

    #[test]
    fn chain_and_garbage() {
        let ca = Ca::new("ca").unwrap();
        let a = ca
            .issue(&ServerCertSpec::uzi(ura("12345678"), "a", &["a"], 10))
            .unwrap();
        let chain = format!("{}{}", a.cert_pem, ca.cert_pem);
        assert_eq!(parse_certificates(chain.as_bytes()).unwrap().len(), 2);
        assert_eq!(
            parse_certificates(b"hello"),
            Err(PkiError::NoPem("CERTIFICATE"))
        );
        assert_eq!(
            parse_private_key(b"hello"),
            Err(PkiError::NoPem("PRIVATE KEY"))
        );
        assert!(parse_private_key(a.cert_pem.as_bytes()).is_err());
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let certs = parse_certificates(broken.as_bytes()).unwrap();
        assert!(matches!(
            certificate_info(certs[0].as_ref()),
            Err(PkiError::Certificate(_))
        ));
    }
}
