//! The gateway's side of ITI-40 XUA trust (README "Trust model"): which key signs the assertions it
//! issues, and which issuers it trusts for the assertions it receives.
//!
//! - Out: every assertion this gateway issues (ITI-38 / ITI-39 / RAD-75 to communities, the assertion to
//!   the local TLB node, the Mitz open question unless `xua.signMitzOpenQuestion` is off) is signed by
//!   [`signer`]: `xua.signing`, or the hospital's server certificate, issuer `xua.issuer` (default the
//!   homeCommunityId).
//! - In: the calling community is the configured community whose `certificateUra` is the URA in the
//!   caller's client certificate; its `trustedIssuers` are the only signers accepted
//!   ([`crate::ihe::xua_dsig::XmlDsigVerifier`]), and the assertion must further name this community
//!   among its audiences (`xua.audiences`), live at most `xua.maxLifetimeSeconds`, carry a RoleCodeNL
//!   role and an allowed purpose of use (`xua.allowedPurposesOfUse`).

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::Gateway;
use crate::config::Config;
use crate::ihe::xua::{AssertionSigner, UnsignedAssertions, Validation, XuaAssertion};
use crate::ihe::xua_dsig::{TrustedIssuer, XmlDsigSigner, XmlDsigVerifier};
use crate::pki::CertificateInfo;

/// The signer of `c`'s outbound assertions (`xua.signing`, default `server.tls`). Errors: one line
/// naming the field and the file.
pub fn signer(c: &Config) -> Result<XmlDsigSigner, String> {
    let (cert, key) = c.xua_signing_files();
    let field = if c.xua.signing.is_some() {
        "xua.signing"
    } else {
        "server.tls (the XUA signing key by default)"
    };
    XmlDsigSigner::from_files(cert, key).map_err(|e| format!("{field}: {e}"))
}

/// The signer of the Mitz open question's assertion: [`signer`], or none when
/// `xua.signMitzOpenQuestion` is off.
pub fn open_question_signer(c: &Config) -> Result<Arc<dyn AssertionSigner>, String> {
    if c.xua.sign_mitz_open_question {
        Ok(Arc::new(signer(c)?))
    } else {
        Ok(Arc::new(UnsignedAssertions))
    }
}

/// The issuer trust lists of `c`'s communities, in configuration order. Errors name the field (the
/// configuration's validation already parsed them, so only a changed file could fail here).
pub fn trust_lists(c: &Config) -> Result<Vec<Vec<TrustedIssuer>>, String> {
    c.communities
        .iter()
        .enumerate()
        .map(|(i, rc)| {
            rc.trusted_issuers
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    TrustedIssuer::from_pem(&t.issuer, &t.certificates)
                        .map_err(|e| format!("communities[{i}].trustedIssuers[{j}]: {e}"))
                })
                .collect()
        })
        .collect()
}

/// The signed `wsse:Security` block holding `a`, or `None` (logged) when it cannot be signed; the
/// request then goes without an assertion and the peer refuses it, which is the failure to see.
pub fn security_block(g: &Gateway, a: &XuaAssertion) -> Option<String> {
    match a.security_header(g.signer.as_ref()) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "XUA assertion not signed; sent without one");
            None
        }
    }
}

/// A new assertion issued by this gateway (issuer `xua.issuer`) for `requester` and `audience`.
pub fn issue(g: &Gateway, requester: crate::model::Requester, audience: &str) -> XuaAssertion {
    XuaAssertion::new(requester, g.config.xua_issuer(), audience, Timestamp::now())
}

/// The trust lists of the communities the holder of `cert` is: those whose `certificateUra` is the
/// certificate's URA. Empty for a certificate without URA or of no configured community.
pub fn calling_issuers<'g>(g: &'g Gateway, cert: &CertificateInfo) -> Vec<&'g TrustedIssuer> {
    let Some(ura) = &cert.ura else {
        return Vec::new();
    };
    g.remotes
        .iter()
        .filter(|r| r.config.certificate_ura.as_ref() == Some(ura))
        .flat_map(|r| r.trusted_issuers.iter())
        .collect()
}

/// What a received assertion is checked against at the responding side, at `now`.
pub fn inbound_validation(c: &Config, now: Timestamp) -> Validation {
    let x = &c.xua;
    let mut v = Validation::at(now);
    v.clock_skew = SignedDuration::from_secs(x.clock_skew_seconds.min(300) as i64);
    v.audiences = c.xua_audiences();
    // an assertion must state its purpose of use (issue 13: coded, in the allowed set); only a
    // conformance harness that sends unsigned assertions without one gets the configured default
    v.default_purpose_of_use = x
        .allow_unsigned
        .then(|| c.consent.default_purpose_of_use.clone());
    v.max_lifetime = Some(SignedDuration::from_secs(
        x.max_lifetime_seconds.min(i64::MAX as u64) as i64,
    ));
    v.role_code_nl = true;
    v.allowed_purposes_of_use = x.allowed_purposes_of_use.clone();
    v
}

/// The verifier for a call from the holder of `cert`, at `now`.
pub fn verifier<'g>(g: &'g Gateway, cert: &CertificateInfo, now: Timestamp) -> XmlDsigVerifier<'g> {
    XmlDsigVerifier {
        issuers: calling_issuers(g, cert),
        allow_unsigned: g.config.xua.allow_unsigned,
        now,
    }
}
