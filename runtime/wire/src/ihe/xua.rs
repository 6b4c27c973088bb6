//! ITI-40 Provide X-User Assertion (XUA): the SAML 2.0 assertion that carries the requester's identity on
//! every cross-community request, and on the Mitz open question.
//!
//! Building: [`XuaAssertion::new`] from a [`Requester`] (valid 10 minutes, Twiin agreements), written with
//! [`XuaAssertion::to_xml`] and wrapped in a `wsse:Security` header block by
//! [`XuaAssertion::security_header`], a self-contained XML string for
//! [`SoapHeader::other`](crate::ihe::soap::SoapHeader::other).
//!
//! Reading: [`parse_security_header`] / [`from_soap_header`] turn the block back into an [`XuaAssertion`]:
//! exactly one assertion in exactly one `wsse:Security` block, its signature handed to an
//! [`AssertionVerifier`], then the validity window (with a clock-skew allowance and a maximum lifetime),
//! the audience, the role (RoleCodeNL) and the purpose of use as [`Validation`] asks. Errors name the
//! attribute or condition that failed; [`XuaError::wsse_fault_code`] gives the WS-Security fault code a
//! refusal is answered with.
//!
//! Attributes (docs/DOMAIN.md "Twiin technical agreements"; value encodings as the public Mitz client
//! bastion365/nl-generic-functions `mitz-connector` sends them to the Mitz test environment):
//!
//! | Attribute name | Value |
//! |---|---|
//! | `urn:ihe:iti:xua:2017:subject:provider-identifier` | HL7 v3 `II` root `2.16.528.1.1007.3.1` (UZI number), required |
//! | `urn:oasis:names:tc:xacml:2.0:subject:role` | HL7 v3 `CE` `Role`, code system `2.16.840.1.113883.2.4.15.111` (RoleCodeNL), required |
//! | `urn:nl:otv:names:tc:1.0:subject:provider-institution` | HL7 v3 `II` root `2.16.528.1.1007.3.3` (URA), required |
//! | `urn:nl:otv:names:tc:1.0:subject:consulting-healthcare-facility-type-code` | HL7 v3 `CV`, code system `2.16.840.1.113883.2.4.15.1060` |
//! | `urn:oasis:names:tc:xspa:1.0:subject:purposeofuse` | HL7 v3 `CE` `PurposeOfUse`, code system `2.16.840.1.113883.1.11.20448`, required |
//! | `urn:nl:otv:names:tc:1.0:subject:mandated` | HL7 v3 `II` (UZI number of the mandating professional), conditional |
//! | `urn:ihe:iti:appc:2016:document-entry:event-code` | HL7 v3 `CV` data category (code system `2.16.840.1.113883.2.4.3.111.5.10.1`), optional |
//! | `urn:oasis:names:tc:xspa:1.0:subject:subject-id` | the professional's name as text (IHE XUA), optional |
//!
//! Signing and signature verification are [`AssertionSigner`] and [`AssertionVerifier`]; the XML
//! Signature implementations are in [`crate::ihe::xua_dsig`]. [`UnsignedAssertions`] and
//! [`SignatureNotChecked`] do neither and say so in their names (simulators, codec tests).

use std::fmt;

use jiff::{SignedDuration, Timestamp};

use crate::ihe::soap::SoapHeader;
use crate::model::{
    Bsn, DataCategory, FacilityType, PurposeOfUse, Requester, RoleCode, Ura, UziNumber,
};
use crate::xml::{Limits, Reader, Writer, XmlError, ns};

/// SAML attribute names of the XUA assertion (see the module documentation).
pub mod attr {
    /// UZI number of the professional (required).
    pub const PROVIDER_IDENTIFIER: &str = "urn:ihe:iti:xua:2017:subject:provider-identifier";
    /// UZI role code, RoleCodeNL (required).
    pub const ROLE: &str = "urn:oasis:names:tc:xacml:2.0:subject:role";
    /// URA of the requesting organisation (required).
    pub const PROVIDER_INSTITUTION: &str = "urn:nl:otv:names:tc:1.0:subject:provider-institution";
    /// Facility type (zorgaanbiedercategorie) of the requesting organisation.
    pub const CONSULTING_FACILITY_TYPE: &str =
        "urn:nl:otv:names:tc:1.0:subject:consulting-healthcare-facility-type-code";
    /// Purpose of use (required).
    pub const PURPOSE_OF_USE: &str = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse";
    /// UZI number of the professional who mandated the requester (conditional).
    pub const MANDATED: &str = "urn:nl:otv:names:tc:1.0:subject:mandated";
    /// Data category asked for (optional).
    pub const EVENT_CODE: &str = "urn:ihe:iti:appc:2016:document-entry:event-code";
    /// Plain-text name of the professional (IHE XUA subject-id, optional).
    pub const SUBJECT_ID: &str = "urn:oasis:names:tc:xspa:1.0:subject:subject-id";
    /// The patient the request is about (IHE XUA Patient ID option, ITI TF-2b 3.40.4.1.2; an II with the
    /// BSN root). A responding gateway needs it to ask Mitz about ITI-39 / RAD-75 retrieves, whose
    /// requests name no patient.
    pub const RESOURCE_ID: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
}

/// Audience of assertions sent to Mitz (docs/DOMAIN.md "Open question").
pub const MITZ_AUDIENCE: &str = "urn:oid:2.16.840.1.113883.2.4.3.111.2.1";
/// How long a built assertion is valid: 10 minutes (Twiin technical agreements).
pub const VALIDITY: SignedDuration = SignedDuration::from_mins(10);
/// Clock skew tolerated by default when checking NotBefore / NotOnOrAfter: 60 seconds.
pub const DEFAULT_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// SAML attribute NameFormat written on every attribute.
pub const NAME_FORMAT_URI: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
/// SubjectConfirmation method written (bearer, as the public Mitz clients do).
pub const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// AuthnContextClassRef written: the professional authenticated with an X.509 credential (UZI pass).
pub const AUTHN_X509: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509";
const NAMEID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";

/// Why an assertion was not built or not accepted. Messages name the attribute or condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XuaError {
    /// The SOAP header has no `wsse:Security` block.
    #[error("no WS-Security header (wsse:Security) with a SAML assertion")]
    NoSecurityHeader,
    /// The `wsse:Security` block holds no `saml2:Assertion`.
    #[error("wsse:Security header holds no SAML 2.0 assertion")]
    NoAssertion,
    /// More than one `wsse:Security` block, or more than one `saml2:Assertion` in it (at any depth):
    /// which one would count is exactly what a signature-wrapping attack plays with, so none does.
    #[error("{0}")]
    Ambiguous(String),
    /// The assertion carries no `ds:Signature` and unsigned assertions are not accepted.
    #[error("SAML assertion is not signed")]
    Unsigned,
    /// The assertion's Issuer is not in the issuer trust list of the calling community.
    #[error("SAML assertion issuer {0:?} is not trusted for the calling community")]
    UntrustedIssuer(String),
    /// NotOnOrAfter lies further after NotBefore than the maximum lifetime allows.
    #[error("SAML assertion lifetime {lifetime} exceeds the maximum of {max}")]
    TooLongLived {
        /// NotOnOrAfter minus NotBefore.
        lifetime: SignedDuration,
        /// The configured maximum.
        max: SignedDuration,
    },
    /// The role is not a code of the RoleCodeNL value set.
    #[error("SAML assertion role {0:?} is not in the RoleCodeNL value set")]
    UnknownRole(String),
    /// The purpose of use is not one this gateway accepts.
    #[error("SAML assertion purpose of use {found:?} is not allowed (allowed: {allowed:?})")]
    PurposeNotAllowed {
        /// What the assertion states.
        found: String,
        /// What is configured.
        allowed: Vec<String>,
    },
    /// The block or assertion is not acceptable XML.
    #[error("SAML assertion: {0}")]
    Xml(#[from] XmlError),
    /// A required element, attribute or SAML attribute is absent.
    #[error("SAML assertion: missing {0}")]
    Missing(String),
    /// A value does not parse or has the wrong code system / root.
    #[error("SAML assertion: invalid {field}: {msg}")]
    Invalid {
        /// The SAML attribute or element.
        field: String,
        /// Why.
        msg: String,
    },
    /// NotBefore lies in the future (beyond the clock skew).
    #[error("SAML assertion not valid before {not_before} (now {now})")]
    NotYetValid {
        /// `Conditions/@NotBefore`.
        not_before: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// NotOnOrAfter has passed (beyond the clock skew).
    #[error("SAML assertion expired at {not_on_or_after} (now {now})")]
    Expired {
        /// `Conditions/@NotOnOrAfter`.
        not_on_or_after: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// The audience restriction does not name the expected audience.
    #[error("SAML assertion audience {found:?} does not include {expected}")]
    Audience {
        /// The audience this party requires.
        expected: String,
        /// What the assertion names.
        found: Vec<String>,
    },
    /// The signature seam refused the assertion.
    #[error("SAML assertion signature: {0}")]
    Signature(String),
    /// The signer could not sign.
    #[error("signing SAML assertion: {0}")]
    Signing(String),
}

impl XuaError {
    /// The WS-Security fault subcode (OASIS SOAP Message Security 1.1, section 12) a request refused for
    /// this reason is answered with: `wsse:SecurityTokenUnavailable` when no assertion was sent,
    /// `wsse:FailedAuthentication` when its signature or signer is not accepted, and
    /// `wsse:InvalidSecurityToken` when the assertion itself is unacceptable (ambiguous, malformed, out
    /// of its validity window, wrong audience, role or purpose of use).
    pub fn wsse_fault_code(&self) -> &'static str {
        match self {
            XuaError::NoSecurityHeader | XuaError::NoAssertion => "wsse:SecurityTokenUnavailable",
            XuaError::Unsigned | XuaError::Signature(_) | XuaError::UntrustedIssuer(_) => {
                "wsse:FailedAuthentication"
            }
            _ => "wsse:InvalidSecurityToken",
        }
    }
}

fn invalid(field: &str, msg: impl Into<String>) -> XuaError {
    XuaError::Invalid {
        field: field.to_owned(),
        msg: msg.into(),
    }
}

/// Signs an assertion before it is sent (seam for XML digital signature, a later issue).
///
/// `sign` receives the unsigned, self-contained `saml2:Assertion` element and returns the element to put
/// into the `wsse:Security` header (normally the same element with an enveloped `ds:Signature`).
pub trait AssertionSigner: Send + Sync {
    /// Returns the assertion as it is to be sent. Errors: [`XuaError::Signing`].
    fn sign(&self, assertion_xml: String) -> Result<String, XuaError>;
}

/// Sends assertions UNSIGNED. Only until assertion signing exists (a later issue); peers that require a
/// signature will refuse these assertions.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnsignedAssertions;

impl AssertionSigner for UnsignedAssertions {
    fn sign(&self, assertion_xml: String) -> Result<String, XuaError> {
        Ok(assertion_xml)
    }
}

/// A received assertion as the [`AssertionVerifier`] sees it, before any of its attributes is used.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The `saml2:Assertion` element exactly as it arrived, made self-contained (the namespace
    /// declarations in scope where it stood added to its start tag).
    pub xml: &'a str,
    /// Its `@ID`.
    pub id: &'a str,
    /// Its `saml2:Issuer` (trimmed).
    pub issuer: &'a str,
    /// Whether it holds a `ds:Signature` child.
    pub has_signature: bool,
}

/// Checks the signature of a received assertion.
pub trait AssertionVerifier: Send + Sync {
    /// Accepts or refuses `assertion` before anything of it is used. Errors: [`XuaError::Unsigned`],
    /// [`XuaError::UntrustedIssuer`], [`XuaError::Signature`].
    fn verify(&self, assertion: &Received<'_>) -> Result<(), XuaError>;
}

/// Accepts every assertion WITHOUT checking any signature, signed or not: simulators and codec tests
/// only. The gateway verifies with [`crate::ihe::xua_dsig::XmlDsigVerifier`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SignatureNotChecked;

impl AssertionVerifier for SignatureNotChecked {
    fn verify(&self, _assertion: &Received<'_>) -> Result<(), XuaError> {
        Ok(())
    }
}

/// An XUA assertion: who asks, issued by whom, for whom, valid when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XuaAssertion {
    /// `@ID`, an NCName (`_` + UUID when built here).
    pub id: String,
    /// `saml2:Issuer`: the issuing system or organisation (e.g. `urn:oid:<home community OID>`).
    pub issuer: String,
    /// `@IssueInstant`.
    pub issue_instant: Timestamp,
    /// `Conditions/@NotBefore` (the issue instant when the assertion has none).
    pub not_before: Timestamp,
    /// `Conditions/@NotOnOrAfter`.
    pub not_on_or_after: Timestamp,
    /// `Conditions/AudienceRestriction/Audience` values.
    pub audiences: Vec<String>,
    /// The requester's identity from the attribute statement.
    pub requester: Requester,
    /// `urn:nl:otv:names:tc:1.0:subject:mandated`: the professional who mandated the requester.
    pub mandated: Option<UziNumber>,
    /// `urn:ihe:iti:appc:2016:document-entry:event-code`: data categories, optional.
    pub event_codes: Vec<DataCategory>,
    /// `urn:oasis:names:tc:xacml:2.0:resource:resource-id`: the patient (BSN), optional.
    pub patient: Option<Bsn>,
}

/// How a received assertion is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The time to check the validity window against.
    pub now: Timestamp,
    /// Tolerated clock difference with the issuer (default [`DEFAULT_CLOCK_SKEW`]).
    pub clock_skew: SignedDuration,
    /// When not empty, the audience restriction must name one of these.
    pub audiences: Vec<String>,
    /// Purpose of use assumed when the assertion states none (ConsentConfig.defaultPurposeOfUse); when
    /// `None` a missing purpose of use is an error.
    pub default_purpose_of_use: Option<PurposeOfUse>,
    /// When set, NotOnOrAfter may lie at most this long after NotBefore (Twiin: 10 minutes).
    pub max_lifetime: Option<SignedDuration>,
    /// Whether the role must be a code of the RoleCodeNL value set ([`RoleCode::is_role_code_nl`]).
    pub role_code_nl: bool,
    /// When not empty, the purpose of use (stated or defaulted) must be one of these.
    pub allowed_purposes_of_use: Vec<PurposeOfUse>,
}

impl Validation {
    /// Checks at `now` with the default skew and nothing else required: no audience, lifetime, role
    /// value set or purpose of use, and no default purpose of use.
    pub fn at(now: Timestamp) -> Validation {
        Validation {
            now,
            clock_skew: DEFAULT_CLOCK_SKEW,
            audiences: Vec::new(),
            default_purpose_of_use: None,
            max_lifetime: None,
            role_code_nl: false,
            allowed_purposes_of_use: Vec::new(),
        }
    }

    /// [`Validation::at`] the current time.
    pub fn now() -> Validation {
        Validation::at(Timestamp::now())
    }
}

/// Formats a SAML `xs:dateTime` in UTC with milliseconds, e.g. `2025-03-01T10:00:00.000Z`.
pub fn format_instant(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses an `xs:dateTime`; a value without offset is taken as UTC (SAML 2.0 core 1.3.3 requires UTC).
pub fn parse_instant(field: &str, s: &str) -> Result<Timestamp, XuaError> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    t.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| invalid(field, format!("{t:?} is not an xs:dateTime")))
}

impl XuaAssertion {
    /// A new assertion for `requester`, issued by `issuer` for `audience` at `now`, valid from `now` for
    /// [`VALIDITY`] (10 minutes).
    pub fn new(
        requester: Requester,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        now: Timestamp,
    ) -> XuaAssertion {
        XuaAssertion {
            id: format!("_{}", uuid::Uuid::new_v4().simple()),
            issuer: issuer.into(),
            issue_instant: now,
            not_before: now,
            not_on_or_after: now.checked_add(VALIDITY).unwrap_or(Timestamp::MAX),
            audiences: vec![audience.into()],
            requester,
            mandated: None,
            event_codes: Vec::new(),
            patient: None,
        }
    }

    /// The unsigned `saml2:Assertion` element, self-contained (declares `saml2`, `xsi` and `xs`).
    pub fn to_xml(&self) -> String {
        let mut w = Writer::with_capacity(3072);
        w.start("saml2:Assertion")
            .attr("xmlns:saml2", ns::SAML2)
            .attr("xmlns:xsi", ns::XSI)
            .attr("xmlns:xs", ns::XS)
            .attr("ID", &self.id)
            .attr("IssueInstant", &format_instant(self.issue_instant))
            .attr("Version", "2.0");
        w.leaf("saml2:Issuer", &self.issuer);
        w.start("saml2:Subject");
        w.start("saml2:NameID")
            .attr("Format", NAMEID_UNSPECIFIED)
            .text(self.requester.uzi.as_str())
            .end();
        w.start("saml2:SubjectConfirmation")
            .attr("Method", BEARER)
            .end();
        w.end();
        w.start("saml2:Conditions")
            .attr("NotBefore", &format_instant(self.not_before))
            .attr("NotOnOrAfter", &format_instant(self.not_on_or_after));
        w.start("saml2:AudienceRestriction");
        for a in &self.audiences {
            w.leaf("saml2:Audience", a);
        }
        w.end().end();
        w.start("saml2:AuthnStatement")
            .attr("AuthnInstant", &format_instant(self.issue_instant));
        w.start("saml2:AuthnContext")
            .leaf("saml2:AuthnContextClassRef", AUTHN_X509)
            .end()
            .end();
        w.start("saml2:AttributeStatement");
        let r = &self.requester;
        attribute(&mut w, attr::PROVIDER_IDENTIFIER, |w| {
            ii(w, "id", UziNumber::OID, r.uzi.as_str(), Some("CIBG"))
        });
        if let Some(name) = &r.name {
            attribute(&mut w, attr::SUBJECT_ID, |w| {
                w.start("saml2:AttributeValue")
                    .attr("xsi:type", "xs:string")
                    .text(name)
                    .end();
            });
        }
        if let Some(m) = &self.mandated {
            attribute(&mut w, attr::MANDATED, |w| {
                ii(w, "id", UziNumber::OID, m.as_str(), Some("CIBG"))
            });
        }
        attribute(&mut w, attr::ROLE, |w| {
            coded(
                w,
                "Role",
                "CE",
                r.role.as_str(),
                RoleCode::CODE_SYSTEM,
                Some("RoleCodeNL"),
            )
        });
        attribute(&mut w, attr::PROVIDER_INSTITUTION, |w| {
            ii(w, "id", Ura::OID, r.ura.as_str(), None)
        });
        attribute(&mut w, attr::CONSULTING_FACILITY_TYPE, |w| {
            coded(
                w,
                "consulting-facility-type-code",
                "CV",
                r.facility_type.as_str(),
                FacilityType::CODE_SYSTEM,
                None,
            )
        });
        attribute(&mut w, attr::PURPOSE_OF_USE, |w| {
            coded(
                w,
                "PurposeOfUse",
                "CE",
                r.purpose_of_use.as_str(),
                PurposeOfUse::CODE_SYSTEM,
                None,
            )
        });
        if let Some(p) = &self.patient {
            attribute(&mut w, attr::RESOURCE_ID, |w| {
                ii(w, "InstanceIdentifier", Bsn::OID, p.as_str(), None)
            });
        }
        if !self.event_codes.is_empty() {
            attribute(&mut w, attr::EVENT_CODE, |w| {
                for c in &self.event_codes {
                    coded(
                        w,
                        "CodedValue",
                        "CV",
                        c.as_str(),
                        DataCategory::CODE_SYSTEM,
                        None,
                    );
                }
            });
        }
        w.end();
        w.end();
        w.finish()
    }

    /// The `wsse:Security` header block holding this assertion as `signer` returns it. The block declares
    /// every prefix it uses (it is placed into [`SoapHeader::other`]) and carries
    /// `soap:mustUnderstand="true"`, as the public Mitz clients send it.
    pub fn security_header(&self, signer: &dyn AssertionSigner) -> Result<String, XuaError> {
        let signed = signer.sign(self.to_xml())?;
        Ok(security_block(&signed))
    }
}

/// Wraps an (already signed or deliberately unsigned) assertion element in a `wsse:Security` block.
pub fn security_block(assertion_xml: &str) -> String {
    let mut w = Writer::with_capacity(assertion_xml.len() + 512);
    w.start("wsse:Security")
        .attr("xmlns:wsse", ns::WSSE)
        .attr("xmlns:wsu", ns::WSU)
        .attr("xmlns:soap", ns::SOAP12)
        .attr("soap:mustUnderstand", "true");
    w.raw(assertion_xml);
    w.end();
    w.finish()
}

fn attribute(w: &mut Writer, name: &str, values: impl FnOnce(&mut Writer)) {
    w.start("saml2:Attribute")
        .attr("Name", name)
        .attr("NameFormat", NAME_FORMAT_URI);
    values(w);
    w.end();
}

/// `<saml2:AttributeValue><{local} xmlns="urn:hl7-org:v3" xsi:type="II" root extension/></...>`
fn ii(w: &mut Writer, local: &str, root: &str, extension: &str, authority: Option<&str>) {
    w.start("saml2:AttributeValue");
    w.start(local)
        .attr("xmlns", ns::HL7V3)
        .attr("xsi:type", "II")
        .attr("root", root)
        .attr("extension", extension)
        .attr_opt("assigningAuthorityName", authority)
        .end();
    w.end();
}

/// `<saml2:AttributeValue><{local} xmlns="urn:hl7-org:v3" xsi:type="CE|CV" code codeSystem/></...>`
fn coded(
    w: &mut Writer,
    local: &str,
    ty: &str,
    code: &str,
    system: &str,
    system_name: Option<&str>,
) {
    w.start("saml2:AttributeValue");
    w.start(local)
        .attr("xmlns", ns::HL7V3)
        .attr("xsi:type", ty)
        .attr("code", code)
        .attr("codeSystem", system)
        .attr_opt("codeSystemName", system_name)
        .end();
    w.end();
}

fn limits() -> Limits {
    // an assertion is a few kilobytes; a signed one with a certificate chain perhaps 20
    Limits {
        max_bytes: 1024 * 1024,
        max_depth: 32,
        max_elements: 10_000,
        max_namespace_bindings: 64,
    }
}

/// Finds the `wsse:Security` block among the raw header blocks of `header` and parses its assertion with
/// [`parse_security_header`]. Errors: [`XuaError::NoSecurityHeader`] when there is none,
/// [`XuaError::Ambiguous`] when there are several, else as [`parse_security_header`].
pub fn from_soap_header(
    header: &SoapHeader,
    validation: &Validation,
    verifier: &dyn AssertionVerifier,
) -> Result<XuaAssertion, XuaError> {
    let mut found = None;
    for block in &header.other {
        let mut r = Reader::new(block.as_bytes(), &limits())?;
        if r.root()?.is(ns::WSSE, "Security") {
            if found.is_some() {
                return Err(XuaError::Ambiguous(
                    "more than one wsse:Security header block".into(),
                ));
            }
            found = Some(block);
        }
    }
    match found {
        Some(block) => parse_security_header(block, validation, verifier),
        None => Err(XuaError::NoSecurityHeader),
    }
}

/// Counts the elements `{ns_uri}local` below `el` (at any depth), consuming `el`.
fn count_below<'i>(
    r: &mut Reader<'i>,
    el: &crate::xml::Elem<'i>,
    ns_uri: &str,
    local: &str,
) -> Result<usize, XmlError> {
    let mut n = 0;
    while let Some(c) = r.child(el)? {
        if c.is(ns_uri, local) {
            n += 1;
        }
        n += count_below(r, &c, ns_uri, local)?;
    }
    Ok(n)
}

/// Parses the one `saml2:Assertion` of a `wsse:Security` block, hands it to `verifier`, and checks it
/// against `validation`. The block must hold exactly one assertion, counted at any depth (a second one,
/// e.g. wrapped inside the first or beside it, is refused rather than chosen from). Errors name what is
/// missing, ambiguous, invalid or out of its validity window.
pub fn parse_security_header(
    block: &str,
    validation: &Validation,
    verifier: &dyn AssertionVerifier,
) -> Result<XuaAssertion, XuaError> {
    let mut r = Reader::new(block.as_bytes(), &limits())?;
    let root = r.root()?;
    if !root.is(ns::WSSE, "Security") {
        return Err(XuaError::NoSecurityHeader);
    }
    let count = count_below(&mut r, &root, ns::SAML2, "Assertion")?;
    match count {
        0 => return Err(XuaError::NoAssertion),
        1 => {}
        n => {
            return Err(XuaError::Ambiguous(format!(
                "wsse:Security holds {n} SAML assertions, exactly one is accepted"
            )));
        }
    }
    let mut r = Reader::new(block.as_bytes(), &limits())?;
    let root = r.root()?;
    while let Some(el) = r.child(&root)? {
        if el.is(ns::SAML2, "Assertion") {
            let raw = r.raw_fragment_in_scope(&el)?;
            return parse_assertion(&raw, validation, verifier);
        }
        r.skip(&el)?;
    }
    // the one assertion is nested inside another header element, not a child of wsse:Security
    Err(XuaError::Ambiguous(
        "the SAML assertion is not a child of wsse:Security".into(),
    ))
}

/// Parses a self-contained `saml2:Assertion` element, hands it to `verifier`, and checks it against
/// `validation` (validity window with skew, lifetime, audience, role and purpose of use as asked).
pub fn parse_assertion(
    assertion_xml: &str,
    validation: &Validation,
    verifier: &dyn AssertionVerifier,
) -> Result<XuaAssertion, XuaError> {
    let parsed = read_assertion(assertion_xml)?;
    verifier.verify(&Received {
        xml: assertion_xml,
        id: &parsed.id,
        issuer: &parsed.issuer,
        has_signature: parsed.has_signature,
    })?;
    let skew = validation.clock_skew.abs();
    let now = validation.now;
    let not_before = parsed.not_before.unwrap_or(parsed.issue_instant);
    if now.checked_add(skew).unwrap_or(Timestamp::MAX) < not_before {
        return Err(XuaError::NotYetValid { not_before, now });
    }
    // an assertion issued in the future (beyond the skew) was not issued by a working IdP clock
    if now.checked_add(skew).unwrap_or(Timestamp::MAX) < parsed.issue_instant {
        return Err(XuaError::NotYetValid {
            not_before: parsed.issue_instant,
            now,
        });
    }
    let Some(not_on_or_after) = parsed.not_on_or_after else {
        return Err(XuaError::Missing("Conditions/@NotOnOrAfter".into()));
    };
    if now.checked_sub(skew).unwrap_or(Timestamp::MIN) >= not_on_or_after {
        return Err(XuaError::Expired {
            not_on_or_after,
            now,
        });
    }
    if let Some(max) = validation.max_lifetime {
        // from the earlier of NotBefore and IssueInstant: a late NotBefore cannot shorten the count
        let from = not_before.min(parsed.issue_instant);
        let lifetime = not_on_or_after.duration_since(from);
        if lifetime > max {
            return Err(XuaError::TooLongLived { lifetime, max });
        }
    }
    if !validation.audiences.is_empty()
        && !parsed
            .audiences
            .iter()
            .any(|a| validation.audiences.iter().any(|e| a.trim() == e))
    {
        return Err(XuaError::Audience {
            expected: validation.audiences.join(" or "),
            found: parsed.audiences,
        });
    }
    let a = parsed.attrs;
    let uzi = a
        .uzi
        .ok_or_else(|| XuaError::Missing(format!("attribute {}", attr::PROVIDER_IDENTIFIER)))?;
    let role = a
        .role
        .ok_or_else(|| XuaError::Missing(format!("attribute {}", attr::ROLE)))?;
    let ura = a
        .ura
        .ok_or_else(|| XuaError::Missing(format!("attribute {}", attr::PROVIDER_INSTITUTION)))?;
    let facility_type = a.facility_type.ok_or_else(|| {
        XuaError::Missing(format!("attribute {}", attr::CONSULTING_FACILITY_TYPE))
    })?;
    let purpose_of_use = match (a.purpose_of_use, &validation.default_purpose_of_use) {
        (Some(p), _) => p,
        (None, Some(d)) => d.clone(),
        (None, None) => {
            return Err(XuaError::Missing(format!(
                "attribute {}",
                attr::PURPOSE_OF_USE
            )));
        }
    };
    if validation.role_code_nl && !role.is_role_code_nl() {
        return Err(XuaError::UnknownRole(role.to_string()));
    }
    if !validation.allowed_purposes_of_use.is_empty()
        && !validation.allowed_purposes_of_use.contains(&purpose_of_use)
    {
        return Err(XuaError::PurposeNotAllowed {
            found: purpose_of_use.to_string(),
            allowed: validation
                .allowed_purposes_of_use
                .iter()
                .map(ToString::to_string)
                .collect(),
        });
    }
    Ok(XuaAssertion {
        id: parsed.id,
        issuer: parsed.issuer,
        issue_instant: parsed.issue_instant,
        not_before,
        not_on_or_after,
        audiences: parsed.audiences,
        requester: Requester {
            uzi,
            role,
            ura,
            facility_type,
            purpose_of_use,
            name: a.name,
        },
        mandated: a.mandated,
        event_codes: a.event_codes,
        patient: a.patient,
    })
}

#[derive(Default)]
struct Attrs {
    uzi: Option<UziNumber>,
    role: Option<RoleCode>,
    ura: Option<Ura>,
    facility_type: Option<FacilityType>,
    purpose_of_use: Option<PurposeOfUse>,
    mandated: Option<UziNumber>,
    event_codes: Vec<DataCategory>,
    name: Option<String>,
    patient: Option<Bsn>,
}

struct Parsed {
    id: String,
    issuer: String,
    issue_instant: Timestamp,
    not_before: Option<Timestamp>,
    not_on_or_after: Option<Timestamp>,
    audiences: Vec<String>,
    has_signature: bool,
    attrs: Attrs,
}

fn read_assertion(xml: &str) -> Result<Parsed, XuaError> {
    let mut r = Reader::new(xml.as_bytes(), &limits())?;
    let root = r.root()?;
    if !root.is(ns::SAML2, "Assertion") {
        return Err(XuaError::NoAssertion);
    }
    let version = root.attr("Version").unwrap_or("");
    if version.trim() != "2.0" {
        return Err(invalid(
            "Assertion/@Version",
            format!("{version:?} is not 2.0"),
        ));
    }
    let id = root.required_attr("ID")?.to_owned();
    let issue_instant = parse_instant(
        "Assertion/@IssueInstant",
        root.required_attr("IssueInstant")?,
    )?;
    let mut p = Parsed {
        id,
        issuer: String::new(),
        issue_instant,
        not_before: None,
        not_on_or_after: None,
        audiences: Vec::new(),
        has_signature: false,
        attrs: Attrs::default(),
    };
    let mut issuer_seen = false;
    while let Some(el) = r.child(&root)? {
        if el.is(ns::SAML2, "Issuer") {
            p.issuer = r.text(&el)?.trim().to_owned();
            issuer_seen = true;
        } else if el.is(ns::DS, "Signature") {
            if p.has_signature {
                return Err(XuaError::Ambiguous(
                    "SAML assertion holds more than one ds:Signature".into(),
                ));
            }
            p.has_signature = true;
            r.skip(&el)?;
        } else if el.is(ns::SAML2, "Conditions") {
            if let Some(v) = el.attr("NotBefore") {
                p.not_before = Some(parse_instant("Conditions/@NotBefore", v)?);
            }
            if let Some(v) = el.attr("NotOnOrAfter") {
                p.not_on_or_after = Some(parse_instant("Conditions/@NotOnOrAfter", v)?);
            }
            while let Some(c) = r.child(&el)? {
                if c.is(ns::SAML2, "AudienceRestriction") {
                    while let Some(a) = r.child(&c)? {
                        if a.is(ns::SAML2, "Audience") {
                            p.audiences.push(r.text(&a)?.trim().to_owned());
                        }
                    }
                }
            }
        } else if el.is(ns::SAML2, "AttributeStatement") {
            while let Some(a) = r.child(&el)? {
                if a.is(ns::SAML2, "Attribute") {
                    let name = a.attr("Name").unwrap_or("").trim().to_owned();
                    while let Some(v) = r.child(&a)? {
                        if v.is(ns::SAML2, "AttributeValue") {
                            let frag = r.raw_fragment(&v)?;
                            let value = read_value(&frag)?;
                            apply_attribute(&mut p.attrs, &name, &value)?;
                        }
                    }
                }
            }
        }
    }
    if !issuer_seen || p.issuer.is_empty() {
        return Err(XuaError::Missing("Issuer".into()));
    }
    Ok(p)
}

/// What one `AttributeValue` holds: the attributes of an HL7 v3 child element, or plain text.
#[derive(Default, Debug)]
struct Value {
    root: Option<String>,
    extension: Option<String>,
    code: Option<String>,
    code_system: Option<String>,
    text: String,
}

fn read_value(fragment: &str) -> Result<Value, XuaError> {
    let mut r = Reader::new(fragment.as_bytes(), &limits())?;
    let av = r.root()?;
    if let Some(c) = r.child(&av)? {
        let get = |n: &str| c.attr(n).map(|s| s.trim().to_owned());
        let v = Value {
            root: get("root"),
            extension: get("extension"),
            code: get("code"),
            code_system: get("codeSystem"),
            text: String::new(),
        };
        return Ok(v);
    }
    // no child element: the value is the text content
    let mut r = Reader::new(fragment.as_bytes(), &limits())?;
    let av = r.root()?;
    Ok(Value {
        text: r.text(&av)?.trim().to_owned(),
        ..Value::default()
    })
}

/// An II value: `extension` (or text), with `root`, when present, required to be `oid`.
fn ii_value(field: &str, v: &Value, oid: &str) -> Result<String, XuaError> {
    if let Some(root) = &v.root
        && root != oid
    {
        return Err(invalid(field, format!("root {root} is not {oid}")));
    }
    let s = v.extension.clone().unwrap_or_else(|| v.text.clone());
    if s.is_empty() {
        return Err(invalid(field, "empty value"));
    }
    Ok(s)
}

/// A CE/CV value: `code` (or text), with `codeSystem`, when present, required to be `system`.
fn code_value(field: &str, v: &Value, system: &str) -> Result<String, XuaError> {
    if let Some(cs) = &v.code_system
        && cs != system
    {
        return Err(invalid(field, format!("codeSystem {cs} is not {system}")));
    }
    let s = v.code.clone().unwrap_or_else(|| v.text.clone());
    if s.is_empty() {
        return Err(invalid(field, "empty value"));
    }
    Ok(s)
}

fn apply_attribute(a: &mut Attrs, name: &str, v: &Value) -> Result<(), XuaError> {
    fn parse<T: std::str::FromStr>(field: &str, s: String) -> Result<T, XuaError>
    where
        T::Err: fmt::Display,
    {
        s.parse().map_err(|e: T::Err| invalid(field, e.to_string()))
    }
    match name {
        attr::PROVIDER_IDENTIFIER => {
            a.uzi = Some(parse(name, ii_value(name, v, UziNumber::OID)?)?);
        }
        attr::MANDATED => {
            a.mandated = Some(parse(name, ii_value(name, v, UziNumber::OID)?)?);
        }
        attr::PROVIDER_INSTITUTION => {
            a.ura = Some(parse(name, ii_value(name, v, Ura::OID)?)?);
        }
        attr::ROLE => {
            a.role = Some(parse(name, code_value(name, v, RoleCode::CODE_SYSTEM)?)?);
        }
        attr::CONSULTING_FACILITY_TYPE => {
            a.facility_type = Some(parse(
                name,
                code_value(name, v, FacilityType::CODE_SYSTEM)?,
            )?);
        }
        attr::PURPOSE_OF_USE => {
            a.purpose_of_use = Some(parse(
                name,
                code_value(name, v, PurposeOfUse::CODE_SYSTEM)?,
            )?);
        }
        attr::EVENT_CODE => {
            a.event_codes.push(parse(
                name,
                code_value(name, v, DataCategory::CODE_SYSTEM)?,
            )?);
        }
        attr::RESOURCE_ID => {
            a.patient = Some(parse(name, ii_value(name, v, Bsn::OID)?)?);
        }
        attr::SUBJECT_ID if !v.text.is_empty() => a.name = Some(v.text.clone()),
        _ => {} // other attributes (organisation name, NPI ...) are not used here
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn requester() -> Requester {
        Requester {
            uzi: "000095254".parse().unwrap(),
            role: "01.015".parse().unwrap(),
            ura: "00000666".parse().unwrap(),
            facility_type: "Z3".parse().unwrap(),
            purpose_of_use: PurposeOfUse::default(),
            name: Some("Dr. A & B <test>".into()),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_through_a_soap_header() {
        let now = t("2025-03-01T10:00:00Z");
        let mut a = XuaAssertion::new(requester(), "urn:oid:1.2.3", MITZ_AUDIENCE, now);
        a.mandated = Some("123456782".parse().unwrap());
        a.event_codes = vec!["GGC002".parse().unwrap()];
        a.patient = Some("900186021".parse().unwrap());
        assert_eq!(a.not_on_or_after, t("2025-03-01T10:10:00Z"));
        let block = a.security_header(&UnsignedAssertions).unwrap();
        // the block survives an envelope round trip as a raw header block
        let env = crate::ihe::soap::write_envelope(
            &SoapHeader {
                other: vec![block],
                ..SoapHeader::request("urn:x", None)
            },
            |w| {
                w.start("p:x").attr("xmlns:p", "urn:p").end();
            },
        );
        let (h, _) =
            crate::ihe::soap::read_envelope(env.as_bytes(), &Limits::default(), |r, e| r.skip(&e))
                .unwrap();
        let mut v = Validation::at(t("2025-03-01T10:05:00Z"));
        v.audiences = vec![MITZ_AUDIENCE.into()];
        let back = from_soap_header(&h, &v, &SignatureNotChecked).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn validity_window_is_checked_with_skew() {
        let now = t("2025-03-01T10:00:00Z");
        let a = XuaAssertion::new(requester(), "urn:oid:1.2.3", MITZ_AUDIENCE, now);
        let block = a.security_header(&UnsignedAssertions).unwrap();
        let ok =
            |at: &str| parse_security_header(&block, &Validation::at(t(at)), &SignatureNotChecked);
        assert!(
            ok("2025-03-01T09:59:30Z").is_ok(),
            "within skew before NotBefore"
        );
        assert!(matches!(
            ok("2025-03-01T09:58:00Z"),
            Err(XuaError::NotYetValid { .. })
        ));
        assert!(
            ok("2025-03-01T10:10:30Z").is_ok(),
            "within skew after expiry"
        );
        let e = ok("2025-03-01T10:11:01Z").unwrap_err();
        assert!(matches!(e, XuaError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn an_assertion_issued_in_the_future_is_not_yet_valid() {
        // found by the breaking run of issue 13: IssueInstant a day ahead, with a current validity
        // window, was accepted
        let now = t("2025-03-01T10:00:00Z");
        let mut a = XuaAssertion::new(requester(), "urn:oid:1.2.3", MITZ_AUDIENCE, now);
        a.issue_instant = t("2025-03-02T10:00:00Z");
        let block = a.security_header(&UnsignedAssertions).unwrap();
        let mut v = Validation::at(now);
        v.max_lifetime = None;
        assert!(matches!(
            parse_security_header(&block, &v, &SignatureNotChecked),
            Err(XuaError::NotYetValid { .. })
        ));
    }

    #[test]
    fn audience_and_missing_attributes_are_named() {
        let now = t("2025-03-01T10:00:00Z");
        let a = XuaAssertion::new(requester(), "urn:oid:1.2.3", "urn:other", now);
        let block = a.security_header(&UnsignedAssertions).unwrap();
        let mut v = Validation::at(now);
        v.audiences = vec![MITZ_AUDIENCE.into()];
        assert!(matches!(
            parse_security_header(&block, &v, &SignatureNotChecked),
            Err(XuaError::Audience { .. })
        ));
        // remove the role attribute: the error names it
        let xml = a.to_xml();
        let start = xml
            .find(&format!("<saml2:Attribute Name=\"{}\"", attr::ROLE))
            .unwrap();
        let end =
            start + xml[start..].find("</saml2:Attribute>").unwrap() + "</saml2:Attribute>".len();
        let without = format!("{}{}", &xml[..start], &xml[end..]);
        let e = parse_assertion(&without, &Validation::at(now), &SignatureNotChecked).unwrap_err();
        assert_eq!(e, XuaError::Missing(format!("attribute {}", attr::ROLE)));
        // a wrong root on the URA is refused
        let wrong = xml.replace(
            "root=\"2.16.528.1.1007.3.3\"",
            "root=\"2.16.528.1.1007.3.9\"",
        );
        let e = parse_assertion(&wrong, &Validation::at(now), &SignatureNotChecked).unwrap_err();
        assert!(e.to_string().contains(attr::PROVIDER_INSTITUTION), "{e}");
    }

    #[test]
    fn default_purpose_of_use_applies_only_when_configured() {
        let now = t("2025-03-01T10:00:00Z");
        let a = XuaAssertion::new(requester(), "urn:oid:1.2.3", MITZ_AUDIENCE, now);
        let xml = a.to_xml();
        let start = xml
            .find(&format!(
                "<saml2:Attribute Name=\"{}\"",
                attr::PURPOSE_OF_USE
            ))
            .unwrap();
        let end =
            start + xml[start..].find("</saml2:Attribute>").unwrap() + "</saml2:Attribute>".len();
        let without = format!("{}{}", &xml[..start], &xml[end..]);
        let mut v = Validation::at(now);
        assert!(matches!(
            parse_assertion(&without, &v, &SignatureNotChecked),
            Err(XuaError::Missing(_))
        ));
        v.default_purpose_of_use = Some("COC".parse().unwrap());
        let got = parse_assertion(&without, &v, &SignatureNotChecked).unwrap();
        assert_eq!(got.requester.purpose_of_use.as_str(), "COC");
    }

    #[test]
    fn reads_foreign_prefixes_and_plain_text_values() {
        // another implementation's shape: other prefixes, text values, no NotBefore
        let doc = r#"<S:Security xmlns:S="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><a:Assertion xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion" ID="x1" Version="2.0" IssueInstant="2025-03-01T09:00:00"><a:Issuer>me</a:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/><a:Conditions NotOnOrAfter="2025-03-01T10:10:00+01:00"/><a:AttributeStatement>
        <a:Attribute Name="urn:ihe:iti:xua:2017:subject:provider-identifier"><a:AttributeValue> 000095254 </a:AttributeValue></a:Attribute>
        <a:Attribute Name="urn:oasis:names:tc:xacml:2.0:subject:role"><a:AttributeValue><h:Role xmlns:h="urn:hl7-org:v3" code="01.015" codeSystem="2.16.840.1.113883.2.4.15.111"/></a:AttributeValue></a:Attribute>
        <a:Attribute Name="urn:nl:otv:names:tc:1.0:subject:provider-institution"><a:AttributeValue><h:InstanceIdentifier xmlns:h="urn:hl7-org:v3" root="2.16.528.1.1007.3.3" extension="00000666"/></a:AttributeValue></a:Attribute>
        <a:Attribute Name="urn:nl:otv:names:tc:1.0:subject:consulting-healthcare-facility-type-code"><a:AttributeValue>V6</a:AttributeValue></a:Attribute>
        <a:Attribute Name="urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"><a:AttributeValue><h:PurposeOfUse xmlns:h="urn:hl7-org:v3" code="TREAT"/></a:AttributeValue></a:Attribute>
        </a:AttributeStatement></a:Assertion></S:Security>"#;
        struct SeesSignature(std::sync::atomic::AtomicBool);
        impl AssertionVerifier for SeesSignature {
            fn verify(&self, a: &Received<'_>) -> Result<(), XuaError> {
                assert!(a.xml.starts_with("<a:Assertion"));
                assert_eq!((a.id, a.issuer), ("x1", "me"));
                self.0
                    .store(a.has_signature, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        }
        let seen = SeesSignature(Default::default());
        let got =
            parse_security_header(doc, &Validation::at(t("2025-03-01T09:05:00Z")), &seen).unwrap();
        assert!(seen.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(got.requester.uzi.as_str(), "000095254");
        assert_eq!(got.requester.facility_type.as_str(), "V6");
        assert_eq!(got.issue_instant, t("2025-03-01T09:00:00Z"));
        assert_eq!(got.not_before, got.issue_instant);
        assert_eq!(got.not_on_or_after, t("2025-03-01T09:10:00Z"));
    }

    #[test]
    fn a_verifier_can_refuse() {
        struct Refuse;
        impl AssertionVerifier for Refuse {
            fn verify(&self, a: &Received<'_>) -> Result<(), XuaError> {
                if a.has_signature {
                    Ok(())
                } else {
                    Err(XuaError::Signature("assertion is not signed".into()))
                }
            }
        }
        let now = Timestamp::now();
        let a = XuaAssertion::new(requester(), "urn:oid:1.2.3", MITZ_AUDIENCE, now);
        let block = a.security_header(&UnsignedAssertions).unwrap();
        let e = parse_security_header(&block, &Validation::at(now), &Refuse).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SAML assertion signature: assertion is not signed"
        );
    }

    #[test]
    fn hostile_or_absent_headers_are_errors() {
        let h = SoapHeader::default();
        assert_eq!(
            from_soap_header(&h, &Validation::now(), &SignatureNotChecked),
            Err(XuaError::NoSecurityHeader)
        );
        let xxe = r#"<!DOCTYPE a [<!ENTITY x "y">]><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"/>"#;
        assert!(matches!(
            parse_security_header(xxe, &Validation::now(), &SignatureNotChecked),
            Err(XuaError::Xml(XmlError::Dtd))
        ));
        let empty = r#"<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"/>"#;
        assert_eq!(
            parse_security_header(empty, &Validation::now(), &SignatureNotChecked),
            Err(XuaError::NoAssertion)
        );
    }
}
