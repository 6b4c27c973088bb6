//! Who is calling: the TLS client certificate of the connection and the XUA assertion of the request.
//!
//! Rules:
//! - responding side (ITI-38, ITI-39, RAD-75 from other communities): exactly one XUA assertion, signed
//!   by an issuer in the trust list of the community the client certificate belongs to, for this
//!   community, within its validity and lifetime, with a RoleCodeNL role and an allowed purpose of use
//!   ([`super::xua`]); refused with a WS-Security fault code otherwise. Its organisation
//!   (provider-institution URA) must be the client certificate's URA, or the certificate must belong to a
//!   configured community (its `certificateUra`) that serves that organisation (a platform gateway
//!   speaking for several organisations). Anything else is refused before any data is touched.
//! - initiating side (local consumers and the JSON API): the client certificate must be the hospital's own
//!   (its URA) or a trusted front end's, listed by issuer and subject or SPKI pin
//!   (`initiating.trustedFrontEnd.certificates`); the requester is the local assertion's, or for the JSON
//!   API the `X-DUO-*` headers.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderMap;
use jiff::Timestamp;
use rustls::pki_types::CertificateDer;

use super::Gateway;
use crate::ihe::soap::SoapHeader;
use crate::ihe::xua::{self, SignatureNotChecked, Validation, XuaAssertion, XuaError};
use crate::model::{PurposeOfUse, Requester, Ura};
use crate::pki::{CertificateInfo, DistinguishedName, certificate_identity, certificate_info};

/// The verified client certificate chain of the connection a request came in on (leaf first), and the
/// connection's remote address (for the audit trail).
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    /// The chain, leaf first, as verified against the trust bundle.
    pub chain: Arc<Vec<CertificateDer<'static>>>,
    /// The remote socket address.
    pub remote: Option<SocketAddr>,
}

impl PeerCertificate {
    /// The leaf certificate, DER.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }
}

/// Why a caller was refused. The message is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No client certificate (cannot happen behind the mutual-TLS listener, kept for completeness).
    #[error("no client certificate")]
    NoCertificate,
    /// The request carries no usable XUA assertion where one is required.
    #[error("XUA assertion: {0}")]
    Assertion(String),
    /// A peer's XUA assertion is absent, unsigned, untrusted or unacceptable (responding side).
    #[error("XUA assertion: {0}")]
    Token(XuaError),
    /// The assertion's organisation is not the certificate's, nor one the calling community speaks for.
    #[error(
        "requester organisation {claimed} does not match the client certificate ({certificate})"
    )]
    OrganisationMismatch {
        /// URA in the assertion.
        claimed: String,
        /// What the certificate says (URA or subject).
        certificate: String,
    },
    /// A local request from a certificate that is not the hospital's or a trusted front end's.
    #[error("client certificate {0} may not use the initiating gateway of this hospital")]
    NotLocal(String),
    /// Identity headers missing or invalid.
    #[error("{0}")]
    Headers(String),
}

impl Refusal {
    /// The WS-Security fault subcode of the refusal, when it is one of the assertion.
    pub fn fault_subcode(&self) -> Option<&'static str> {
        match self {
            Refusal::Token(e) => Some(e.wsse_fault_code()),
            _ => None,
        }
    }
}

/// The parsed client certificate of a request, if any.
pub fn peer_info(peer: Option<&PeerCertificate>) -> Option<CertificateInfo> {
    peer.and_then(|p| p.leaf())
        .and_then(|der| certificate_info(der).ok())
}

fn validation(g: &Gateway) -> Validation {
    let mut v = Validation::at(Timestamp::now());
    v.default_purpose_of_use = Some(g.config.consent.default_purpose_of_use.clone());
    v
}

/// Checks that `claimed` may be stated by the holder of `cert` (see the module rules).
pub fn organisation_allowed(
    g: &Gateway,
    cert: &CertificateInfo,
    claimed: &Ura,
) -> Result<(), Refusal> {
    if cert.ura.as_ref() == Some(claimed) {
        return Ok(());
    }
    if let Some(cura) = &cert.ura {
        let speaks_for = g.remotes.iter().any(|r| {
            r.config.certificate_ura.as_ref() == Some(cura)
                && r.config.organizations.iter().any(|o| &o.ura == claimed)
        });
        if speaks_for {
            return Ok(());
        }
    }
    Err(Refusal::OrganisationMismatch {
        claimed: claimed.to_string(),
        certificate: cert
            .ura
            .as_ref()
            .map(|u| format!("URA {u}"))
            .unwrap_or_else(|| cert.subject.clone()),
    })
}

/// Responding side: the caller's assertion, verified against the issuer trust list of the caller's
/// community ([`super::xua`]) and checked against its certificate. A request without an assertion is
/// served anonymously only under `xua.allowUnsigned` (a conformance harness; consent then fails closed
/// in mode `mitz`, having no requester to ask for).
pub fn responding_requester(
    g: &Gateway,
    peer: Option<&PeerCertificate>,
    header: &SoapHeader,
) -> Result<Option<XuaAssertion>, Refusal> {
    let cert = peer_info(peer).ok_or(Refusal::NoCertificate)?;
    let now = Timestamp::now();
    let verifier = super::xua::verifier(g, &cert, now);
    let validation = super::xua::inbound_validation(&g.config, now);
    let assertion = match xua::from_soap_header(header, &validation, &verifier) {
        Ok(a) => a,
        Err(XuaError::NoSecurityHeader | XuaError::NoAssertion) if g.config.xua.allow_unsigned => {
            return Ok(None);
        }
        Err(e) => return Err(Refusal::Token(e)),
    };
    organisation_allowed(g, &cert, &assertion.requester.ura)?;
    Ok(Some(assertion))
}

/// Whether the caller may use the initiating gateway: its certificate is the hospital's own (its URA), or
/// matches one of `initiating.trustedFrontEnd.certificates` by issuer and subject (issued directly by the
/// bundle CA of that name) or SPKI pin (never by DNS name: any CA of the trust bundle can issue one,
/// issue 12 defect 9). `Err` holds the refusal,
/// naming the certificate's subject, issuer and pin so that an operator can list it.
fn check_local_caller(
    g: &Gateway,
    peer: Option<&PeerCertificate>,
    cert: &CertificateInfo,
) -> Result<(), Refusal> {
    if cert.ura.as_ref() == Some(&g.config.organization.ura) {
        return Ok(());
    }
    let id = peer
        .and_then(|p| p.leaf())
        .and_then(|der| certificate_identity(der).ok());
    let trusted = &g.config.initiating.trusted_front_end.certificates;
    // issuer and subject hold only when a CA certificate of the trust bundle with that name issued the
    // certificate itself: a same-named intermediate that another bundle CA issued is not that CA
    let direct = || {
        peer.and_then(|p| p.leaf())
            .is_some_and(|leaf| issued_directly_by_a_bundle_ca(&g.tls.roots, leaf))
    };
    match id {
        Some(id)
            if trusted
                .iter()
                .any(|t| t.matches(&id) && (t.spki_sha256.is_some() || direct())) =>
        {
            Ok(())
        }
        Some(id) => Err(Refusal::NotLocal(format!(
            "(subject {}, issuer {}, spkiSha256 {})",
            name_or_unreadable(id.subject.as_ref()),
            name_or_unreadable(id.issuer.as_ref()),
            id.spki_sha256
        ))),
        None => Err(Refusal::NotLocal(cert.subject.clone())),
    }
}

/// Whether `leaf` verifies against a CA certificate of the trust bundle (`roots`) with no intermediate:
/// that CA issued it. The leaf's issuer name then is that CA's subject (RFC 5280 name chaining, checked
/// by webpki with the signature), so a front end listed by issuer and subject is vouched for by the
/// bundle CA of that name, and only by it ([`check_front_end_issuers`] refuses two of one name).
fn issued_directly_by_a_bundle_ca(
    roots: &rustls::RootCertStore,
    leaf: &rustls::pki_types::CertificateDer<'_>,
) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    // a static list: building a crypto provider per request would allocate its cipher suites each time
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &roots.roots,
        &[],
        rustls::pki_types::UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

fn name_or_unreadable(n: Option<&DistinguishedName>) -> String {
    n.map_or_else(
        || "(not readable as text)".to_owned(),
        |n| format!("{:?}", n.to_string()),
    )
}

/// Refuses trusted front ends named by an issuer that two or more CA certificates of
/// `server.tls.trustBundleFile` carry as their subject: then issuer and subject would not say which CA
/// vouches for the front end (the configuration is ambiguous; pin such a front end by `spkiSha256`).
/// Errors: one line naming the entry, or the trust bundle when it cannot be read.
pub fn check_front_end_issuers(config: &crate::config::Config) -> Result<(), String> {
    let entries = &config.initiating.trusted_front_end.certificates;
    if entries.iter().all(|e| e.issuer.is_none()) {
        return Ok(());
    }
    let bundle = &config.server.tls.trust_bundle_file;
    let cas: Vec<Option<DistinguishedName>> = crate::tls::load_certs(bundle)
        .map_err(|e| format!("server.tls.trustBundleFile: {e}"))?
        .iter()
        .map(|c| certificate_identity(c).ok().and_then(|id| id.subject))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let Some(issuer) = &e.issuer else { continue };
        let n = cas.iter().filter(|s| s.as_ref() == Some(issuer)).count();
        if n > 1 {
            return Err(format!(
                "initiating.trustedFrontEnd.certificates[{i}].issuer: ambiguous: {n} CA certificates \
                 of {} are named \"{issuer}\"; pin this front end by spkiSha256 instead",
                bundle.display()
            ));
        }
    }
    Ok(())
}

/// Initiating side, SOAP: the caller must be local; the requester is its assertion's (which must name
/// this hospital), if it sent one.
pub fn local_requester(
    g: &Gateway,
    peer: Option<&PeerCertificate>,
    header: &SoapHeader,
) -> Result<Option<XuaAssertion>, Refusal> {
    let cert = peer_info(peer).ok_or(Refusal::NoCertificate)?;
    check_local_caller(g, peer, &cert)?;
    match xua::from_soap_header(header, &validation(g), &SignatureNotChecked) {
        Ok(a) => {
            if a.requester.ura != g.config.organization.ura {
                return Err(Refusal::OrganisationMismatch {
                    claimed: a.requester.ura.to_string(),
                    certificate: format!("this hospital ({})", g.config.organization.ura),
                });
            }
            Ok(Some(a))
        }
        Err(XuaError::NoSecurityHeader | XuaError::NoAssertion) => Ok(None),
        Err(e) => Err(Refusal::Assertion(e.to_string())),
    }
}

/// Whether the caller may use this hospital's APIs (registration): its certificate is the hospital's own
/// or a trusted front end's ([`check_local_caller`]'s rules); no requester headers are read.
pub fn local_caller(g: &Gateway, peer: Option<&PeerCertificate>) -> Result<(), Refusal> {
    let cert = peer_info(peer).ok_or(Refusal::NoCertificate)?;
    check_local_caller(g, peer, &cert)
}

/// Header naming the professional's UZI number (JSON API).
pub const H_UZI: &str = "x-duo-requester-uzi";
/// Header naming the professional's UZI role code.
pub const H_ROLE: &str = "x-duo-requester-role";
/// Header naming the professional (audit only).
pub const H_NAME: &str = "x-duo-requester-name";
/// Longest professional's name accepted in [`H_NAME`] (it is copied into every audit record and
/// assertion).
pub const MAX_NAME_CHARS: usize = 200;
/// Header with the purpose of use (default `TREAT`).
pub const H_PURPOSE: &str = "x-duo-purpose-of-use";

/// Initiating side, JSON API: the caller must be local; the requester is stated in the `X-DUO-*`
/// headers; organisation and facility type are this hospital's.
pub fn api_requester(
    g: &Gateway,
    peer: Option<&PeerCertificate>,
    headers: &HeaderMap,
) -> Result<Requester, Refusal> {
    let cert = peer_info(peer).ok_or(Refusal::NoCertificate)?;
    check_local_caller(g, peer, &cert)?;
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let uzi = get(H_UZI).ok_or_else(|| Refusal::Headers(format!("missing header {H_UZI}")))?;
    let role = get(H_ROLE).ok_or_else(|| Refusal::Headers(format!("missing header {H_ROLE}")))?;
    let purpose = match get(H_PURPOSE) {
        Some(p) => p
            .parse::<PurposeOfUse>()
            .map_err(|e| Refusal::Headers(format!("{H_PURPOSE}: {e}")))?,
        None => g.config.consent.default_purpose_of_use.clone(),
    };
    Ok(Requester {
        uzi: uzi
            .parse()
            .map_err(|e| Refusal::Headers(format!("{H_UZI}: {e}")))?,
        role: role
            .parse()
            .map_err(|e| Refusal::Headers(format!("{H_ROLE}: {e}")))?,
        ura: g.config.organization.ura.clone(),
        facility_type: g.config.organization.facility_type.clone(),
        purpose_of_use: purpose,
        name: match get(H_NAME) {
            Some(n) if n.chars().count() > MAX_NAME_CHARS => {
                return Err(Refusal::Headers(format!(
                    "{H_NAME}: longer than {MAX_NAME_CHARS} characters"
                )));
            }
            n => n.map(str::to_owned),
        },
    })
}
