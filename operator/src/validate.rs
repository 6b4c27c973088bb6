//! Deep checks that CEL cannot do (docs/ARCHITECTURE.md "validate"): the TLS certificate parses, its key
//! matches, it is valid now, and the URA it carries is the one in the spec; trust bundles hold at least
//! one CA certificate. Pure functions over the PEM bytes the reconciler fetched, and the revocation
//! check of the gateway's own certificate ([`check_own_revocation`], which fetches its CRL / OCSP).

use std::sync::Arc;

use duo_core::pki::{self, CertificateInfo};
use duo_trust::revocation::{ChainError, Checker, Verdict};
use jiff::{SignedDuration, Timestamp};
use rustls::RootCertStore;

use crate::condition::{ConditionStatus, Reason};

/// Days before `notAfter` from which the operator warns (event and `CertificateExpiring` condition).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Why a certificate cannot be used. [`CertProblem::reason`] is the condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    /// The Secret lacks `tls.crt` / `tls.key`, or they do not parse.
    #[error("{0}")]
    Unreadable(String),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// `notAfter` has passed.
    #[error("the certificate expired at {0}")]
    Expired(Timestamp),
    /// `notBefore` is in the future.
    #[error("the certificate is not valid before {0}")]
    NotYetValid(Timestamp),
    /// The certificate's URA differs from `spec.organization.ura` (or it carries none).
    #[error("the certificate's URA is {found}, but spec.organization.ura is {expected}")]
    UraMismatch {
        /// URA of the spec.
        expected: String,
        /// URA in the certificate, or `none`.
        found: String,
    },
}

impl CertProblem {
    /// The condition reason (`Degraded=True`, or a MitzConnection's `Ready=False`).
    pub fn reason(&self) -> Reason {
        match self {
            CertProblem::Unreadable(_) => Reason::CertificateInvalid,
            CertProblem::KeyMismatch => Reason::CertificateKeyMismatch,
            CertProblem::Expired(_) => Reason::CertificateExpired,
            CertProblem::NotYetValid(_) => Reason::CertificateNotYetValid,
            CertProblem::UraMismatch { .. } => Reason::CertificateUraMismatch,
        }
    }
}

/// Checks a certificate chain and key (PEM) at `now`; with `expected_ura`, also that the leaf is a UZI
/// server certificate for that URA. Returns what the leaf says.
pub fn check_certificate(
    cert_pem: &[u8],
    key_pem: &[u8],
    expected_ura: Option<&str>,
    now: Timestamp,
) -> Result<CertificateInfo, CertProblem> {
    let certs = pki::parse_certificates(cert_pem)
        .map_err(|e| CertProblem::Unreadable(format!("tls.crt: {e}")))?;
    let key = pki::parse_private_key(key_pem)
        .map_err(|e| CertProblem::Unreadable(format!("tls.key: {e}")))?;
    let info = pki::certificate_info(certs[0].as_ref())
        .map_err(|e| CertProblem::Unreadable(format!("tls.crt: {e}")))?;
    match pki::key_matches_certificate(certs[0].as_ref(), &key) {
        Ok(true) => {}
        Ok(false) => return Err(CertProblem::KeyMismatch),
        Err(e) => return Err(CertProblem::Unreadable(format!("tls.key: {e}"))),
    }
    if now >= info.not_after {
        return Err(CertProblem::Expired(info.not_after));
    }
    if now < info.not_before {
        return Err(CertProblem::NotYetValid(info.not_before));
    }
    if let Some(expected) = expected_ura {
        let found = info.ura.as_ref().map(|u| u.as_str().to_owned());
        if found.as_deref() != Some(expected) {
            return Err(CertProblem::UraMismatch {
                expected: expected.to_owned(),
                found: found.unwrap_or_else(|| "none (not a UZI server certificate)".into()),
            });
        }
    }
    Ok(info)
}

/// Checks the key pair that signs a gateway's XUA assertions (PEM) at `now`: as [`check_certificate`]
/// without a URA requirement, and that the runtime can sign with it (RSA, or EC P-256 in PKCS#8).
pub fn check_xua_signing(
    cert_pem: &[u8],
    key_pem: &[u8],
    now: Timestamp,
) -> Result<CertificateInfo, CertProblem> {
    let info = check_certificate(cert_pem, key_pem, None, now)?;
    duo_wire::ihe::xua_dsig::XmlDsigSigner::from_pem(cert_pem, key_pem)
        .map_err(|e| CertProblem::Unreadable(format!("cannot sign XUA assertions: {e}")))?;
    Ok(info)
}

/// Whether `info` expires within [`EXPIRY_WARNING_DAYS`] of `now`.
pub fn expires_soon(info: &CertificateInfo, now: Timestamp) -> bool {
    info.not_after - SignedDuration::from_hours(24 * EXPIRY_WARNING_DAYS) <= now
}

/// Checks that a trust bundle holds at least one parseable certificate; returns how many.
pub fn check_trust_bundle(pem: &[u8]) -> Result<usize, String> {
    let certs = pki::parse_certificates(pem).map_err(|e| e.to_string())?;
    for (i, c) in certs.iter().enumerate() {
        pki::certificate_info(c.as_ref()).map_err(|e| format!("certificate {}: {e}", i + 1))?;
    }
    Ok(certs.len())
}

/// The `CertificateRevoked` condition of a gateway: what the CRL / OCSP responder of its own
/// certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnRevocation {
    /// `True` (revoked), `False` (usable data says not revoked) or `Unknown` (not checked, or no
    /// usable data).
    pub status: ConditionStatus,
    /// The condition reason: [`Reason::CertificateRevoked`], [`Reason::CertificateNotRevoked`],
    /// [`Reason::RevocationUnavailable`], [`Reason::NoRevocationSource`], [`Reason::ChainNotVerified`]
    /// or [`Reason::RevocationCheckDisabled`].
    pub reason: Reason,
    /// One line for people: the source (CRL or OCSP URL) or why there is none.
    pub message: String,
}

impl OwnRevocation {
    /// `spec.revocation.enabled` is false: nothing is checked.
    pub fn disabled() -> OwnRevocation {
        OwnRevocation {
            status: ConditionStatus::Unknown,
            reason: Reason::RevocationCheckDisabled,
            message:
                "spec.revocation.enabled is false: the certificate is not checked for revocation"
                    .into(),
        }
    }

    /// The condition for the outcome of [`Checker::check_own`]. Pure.
    pub fn from_check(result: Result<Verdict, ChainError>) -> OwnRevocation {
        match result {
            Ok(Verdict::Revoked(src)) => OwnRevocation {
                status: ConditionStatus::True,
                reason: Reason::CertificateRevoked,
                message: format!(
                    "the TLS certificate is revoked ({src}); peers refuse it and a new gateway pod refuses to start: replace it"
                ),
            },
            Ok(Verdict::Good(src)) => OwnRevocation {
                status: ConditionStatus::False,
                reason: Reason::CertificateNotRevoked,
                message: format!("the TLS certificate is not revoked ({src})"),
            },
            Ok(Verdict::Unavailable { detail, .. }) => OwnRevocation {
                status: ConditionStatus::Unknown,
                reason: Reason::RevocationUnavailable,
                message: format!("no usable revocation data for the TLS certificate: {detail}"),
            },
            Ok(Verdict::Unchecked { .. }) => OwnRevocation {
                status: ConditionStatus::Unknown,
                reason: Reason::NoRevocationSource,
                message: "the TLS certificate names no CRL distribution point or OCSP responder and no spec.revocation.crlUrls CRL covers it".into(),
            },
            Err(e) => OwnRevocation {
                status: ConditionStatus::Unknown,
                reason: Reason::ChainNotVerified,
                message: format!(
                    "not checked for revocation: the certificate chain does not verify against spec.tls.trustBundle ({e})"
                ),
            },
        }
    }
}

/// Checks the gateway's own certificate chain (`cert_pem`, leaf first) for revocation with `checker`,
/// after verifying it against the trust bundle `trust_pem` (only a verified chain's CRL distribution
/// points and OCSP responder are fetched, over plain http, bounded in size and time; see
/// [`duo_trust::revocation`]). Waits at most the checker's `fetchTimeoutMs` for data not cached.
pub async fn check_own_revocation(
    checker: &Checker,
    cert_pem: &[u8],
    trust_pem: &[u8],
) -> OwnRevocation {
    let chain = match pki::parse_certificates(cert_pem) {
        Ok(c) => c,
        Err(e) => return OwnRevocation::from_check(Err(ChainError(format!("tls.crt: {e}")))),
    };
    let mut roots = RootCertStore::empty();
    if let Ok(anchors) = pki::parse_certificates(trust_pem) {
        roots.add_parsable_certificates(anchors);
    }
    if roots.is_empty() {
        return OwnRevocation::from_check(Err(ChainError(
            "no usable CA certificate in the trust bundle".into(),
        )));
    }
    OwnRevocation::from_check(checker.check_own(chain, Arc::new(roots)).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duo_core::pki::generate::{Ca, ServerCertSpec};

    fn spec(ura: &str, days: i64) -> ServerCertSpec {
        ServerCertSpec::uzi(ura.parse().unwrap(), "Oost", &["duo.oost.example"], days)
    }

    #[test]
    fn good_certificate_passes_and_reports_expiry() {
        let ca = Ca::new("ca").unwrap();
        let c = ca.issue(&spec("12345678", 90)).unwrap();
        let now = Timestamp::now();
        let info = check_certificate(
            c.cert_pem.as_bytes(),
            c.key_pem.as_bytes(),
            Some("12345678"),
            now,
        )
        .unwrap();
        assert!(!expires_soon(&info, now));
        let c = ca.issue(&spec("12345678", 20)).unwrap();
        let info = check_certificate(
            c.cert_pem.as_bytes(),
            c.key_pem.as_bytes(),
            Some("12345678"),
            now,
        )
        .unwrap();
        assert!(expires_soon(&info, now));
    }

    #[test]
    fn each_problem_has_its_reason() {
        let ca = Ca::new("ca").unwrap();
        let now = Timestamp::now();
        let a = ca.issue(&spec("12345678", 90)).unwrap();
        let b = ca.issue(&spec("12345678", 90)).unwrap();
        let e = check_certificate(
            a.cert_pem.as_bytes(),
            a.key_pem.as_bytes(),
            Some("87654321"),
            now,
        )
        .unwrap_err();
        assert_eq!(e.reason(), Reason::CertificateUraMismatch);
        assert!(
            e.to_string().contains("12345678") && e.to_string().contains("87654321"),
            "{e}"
        );
        let e = check_certificate(
            a.cert_pem.as_bytes(),
            b.key_pem.as_bytes(),
            Some("12345678"),
            now,
        )
        .unwrap_err();
        assert_eq!(e, CertProblem::KeyMismatch);
        let later = now + SignedDuration::from_hours(24 * 91);
        let e = check_certificate(
            a.cert_pem.as_bytes(),
            a.key_pem.as_bytes(),
            Some("12345678"),
            later,
        )
        .unwrap_err();
        assert_eq!(e.reason(), Reason::CertificateExpired);
        let e = check_certificate(b"", a.key_pem.as_bytes(), None, now).unwrap_err();
        assert_eq!(e.reason(), Reason::CertificateInvalid);
        let mut plain = spec("12345678", 90);
        plain.ura = None;
        let p = ca.issue(&plain).unwrap();
        assert!(check_certificate(p.cert_pem.as_bytes(), p.key_pem.as_bytes(), None, now).is_ok());
        let e = check_certificate(
            p.cert_pem.as_bytes(),
            p.key_pem.as_bytes(),
            Some("12345678"),
            now,
        )
        .unwrap_err();
        assert_eq!(e.reason(), Reason::CertificateUraMismatch);
    }

    #[test]
    fn trust_bundle() {
        let ca = Ca::new("ca").unwrap();
        assert_eq!(check_trust_bundle(ca.cert_pem.as_bytes()), Ok(1));
        assert!(check_trust_bundle(b"nothing").is_err());
    }
}
