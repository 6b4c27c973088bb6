//! The Mitz closed question ("gesloten autorisatievraag") on the wire: a SOAP 1.2 + WS-Addressing envelope
//! holding an XACML 3.0 `Request` inside a SAML-profile `XACMLAuthzDecisionQuery`, and the XACML
//! `Response` with one `Result/Decision` per data category.
//!
//! The request is written exactly as `testdata/mitz/xacml/example.xml` (nuts-foundation/nuts-knooppunt):
//! the same elements, namespaces, attribute ids, HL7 v3 data types (`urn:hl7-org:v3#II`, `#CV`), OIDs and
//! attribute order, with one `action` `Attributes` element (`xml:id="action<n>"`) per data category, as
//! the public client bastion365/nl-generic-functions `mitz-connector` sends several categories. Tests
//! compare the output with the sample structurally.
//!
//! Answers are read tolerantly in form (any prefixes; the XACML `Response` directly in the body, as in the
//! samples under `testdata/mitz/xacml/derived/`, or nested in a SAML wrapper) and strictly in meaning: an
//! answer must be tied to the question ([`read_closed_answer`]), else it decides nothing.
//! - Which `Result` belongs to which category: a `Result` that echoes the `event-code` of its action
//!   (XACML 3.0 §5.47, `IncludeInResult`) is matched on it; an answer in which no `Result` echoes a
//!   category (the nuts-knooppunt mock answers `Decision` and `Status` only) is accepted only for a
//!   question with exactly one category and exactly one `Result`. A category needs exactly one `Result`
//!   that names it and no other category; a `Result` naming no category beside ones that do makes every
//!   category undecided.
//! - A `Result` holds exactly one `Decision`: two (say Deny, then Permit) decide nothing.
//! - Every echoed attribute the question holds must hold the asked value (and, when stated, the asked
//!   identifier root or code system): the patient (resource-id), the data holder, the requester's UZI
//!   number, role, organisation, facility type and purpose of use, the mandating professional, the
//!   asked categories. One contradicting echo anywhere in the answer leaves every category undecided.
//!
//! Every category left without an unambiguous, uncontradicted `Result` gets [`Decision::Indeterminate`]
//! with the reason as its status message (fail closed: it discloses nothing).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ihe::soap::{self, SoapError, SoapHeader, WSA_ANONYMOUS};
use crate::model::{
    Bsn, DataCategory, FacilityType, PurposeOfUse, Requester, RoleCode, Ura, UziNumber,
};
use crate::xml::{Elem, Limits, Reader, Writer, XmlError, ns};

/// `wsa:Action` of the closed question, as in the sample and both public clients.
pub const ACTION: &str = "XACMLAuthorizationDecisionQueryRequest";
/// `wsa:Action` Mitz answers with (as the public client bastion365 `mitz-connector` expects it). The
/// derived samples carry no header at all, so the action of an answer is not checked.
pub const RESPONSE_ACTION: &str = "http://schemas.otv.nl/toestemmingsregister/XACMLAuthzDecisionQuery/IGeslotenAutorisatievraagService/XACMLAuthzDecisionQueryResponse";

/// XACML categories of the closed question.
pub mod category {
    /// The resource: patient, data holder.
    pub const RESOURCE: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource";
    /// The action: one per data category.
    pub const ACTION: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:action";
    /// The requesting professional and organisation.
    pub const ACCESS_SUBJECT: &str = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject";
    /// The purpose of use.
    pub const ENVIRONMENT: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:environment";
}

/// XACML attribute ids of the closed question (docs/DOMAIN.md "Mitz" table).
pub mod attr {
    /// Patient BSN (II).
    pub const RESOURCE_ID: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
    /// Data holder's facility type (CV).
    pub const HOLDER_FACILITY_TYPE: &str =
        "urn:ihe:iti:appc:2016:document-entry:healthcare-facility-type-code";
    /// Data holder's URA (II).
    pub const HOLDER_URA: &str = "urn:ihe:iti:appc:2016:author-institution:id";
    /// Data category (CV), one per action.
    pub const EVENT_CODE: &str = "urn:ihe:iti:appc:2016:document-entry:event-code";
    /// Requester's UZI role code (CV).
    pub const ROLE: &str = "urn:oasis:names:tc:xacml:2.0:subject:role";
    /// Professional who mandated the requester (II), when present.
    pub const MANDATED: &str = "urn:nl:otv:names:tc:1.0:subject:mandated";
    /// Requester's UZI number (II).
    pub const PROVIDER_IDENTIFIER: &str = "urn:ihe:iti:xua:2017:subject:provider-identifier";
    /// Requesting organisation's URA (II).
    pub const PROVIDER_INSTITUTION: &str = "urn:nl:otv:names:tc:1.0:subject:provider-institution";
    /// Requesting organisation's facility type (CV).
    pub const CONSULTING_FACILITY_TYPE: &str =
        "urn:nl:otv:names:tc:1.0:subject:consulting-healthcare-facility-type-code";
    /// Purpose of use (CV).
    pub const PURPOSE_OF_USE: &str = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse";
}

/// XACML data type of an HL7 v3 instance identifier value.
pub const DATATYPE_II: &str = "urn:hl7-org:v3#II";
/// XACML data type of an HL7 v3 coded value.
pub const DATATYPE_CV: &str = "urn:hl7-org:v3#CV";
/// XACML status code of a normal answer.
pub const STATUS_OK: &str = "urn:oasis:names:tc:xacml:1.0:status:ok";
/// XACML status code of an answer that could not be evaluated.
pub const STATUS_PROCESSING_ERROR: &str = "urn:oasis:names:tc:xacml:1.0:status:processing-error";
/// XACML status code of a question that lacks an attribute.
pub const STATUS_MISSING_ATTRIBUTE: &str = "urn:oasis:names:tc:xacml:1.0:status:missing-attribute";

/// An XACML 3.0 decision. Only [`Decision::Permit`] discloses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// Consent: disclose.
    Permit,
    /// The patient refused.
    Deny,
    /// No consent on record for this question.
    NotApplicable,
    /// Could not be evaluated (also used for every failure to get an answer).
    Indeterminate,
}

impl Decision {
    /// The XACML text.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Permit => "Permit",
            Decision::Deny => "Deny",
            Decision::NotApplicable => "NotApplicable",
            Decision::Indeterminate => "Indeterminate",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Decision {
    type Err = String;
    /// Exact XACML spelling (surrounding whitespace ignored); anything else is an error, never a guess.
    fn from_str(s: &str) -> Result<Decision, String> {
        match s.trim() {
            "Permit" => Ok(Decision::Permit),
            "Deny" => Ok(Decision::Deny),
            "NotApplicable" => Ok(Decision::NotApplicable),
            "Indeterminate" => Ok(Decision::Indeterminate),
            other => Err(format!("{other:?} is not an XACML decision")),
        }
    }
}

/// What the closed question asks: may `requester` see the data of `patient` held by the data holder, for
/// each of `categories`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedQuestion {
    /// The patient (resource-id, BSN).
    pub patient: Bsn,
    /// URA of the data holder (this hospital at the responding gateway).
    pub holder_ura: Ura,
    /// Facility type of the data holder.
    pub holder_facility_type: FacilityType,
    /// Data categories, one action each, in order. At least one.
    pub categories: Vec<DataCategory>,
    /// The requesting professional and organisation (from the XUA assertion).
    pub requester: Requester,
    /// The professional who mandated the requester, when the assertion names one.
    pub mandated: Option<UziNumber>,
}

/// One `Result` of an answer, matched to its data category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryDecision {
    /// The category this decision is for.
    pub category: DataCategory,
    /// The decision.
    pub decision: Decision,
    /// `Status/StatusCode/@Value`, when present.
    pub status_code: Option<String>,
    /// `Status/StatusMessage`, when present (e.g. "No consent found").
    pub status_message: Option<String>,
}

/// Writes the closed question envelope: `message_id` as `wsa:MessageID`, `to` as `wsa:To` (the endpoint).
pub fn write_closed_question(q: &ClosedQuestion, message_id: &str, to: &str) -> String {
    let mut w = Writer::with_capacity(6144);
    w.decl();
    w.start("soap:Envelope")
        .attr("xmlns:soap", ns::SOAP12)
        .attr("xmlns:s", ns::XS)
        .attr("xmlns:types", ns::XACML_SAMLP)
        .attr("xmlns:wsa", ns::WSA)
        .attr("xmlns:xsi", ns::XSI);
    w.start("soap:Header");
    w.leaf("wsa:Action", ACTION);
    w.leaf("wsa:MessageID", message_id);
    w.start("wsa:ReplyTo")
        .leaf("wsa:Address", WSA_ANONYMOUS)
        .end();
    w.leaf("wsa:To", to);
    w.end();
    w.start("soap:Body");
    w.start("types:XACMLAuthzDecisionQuery");
    w.start("Request")
        .attr("CombinedDecision", "false")
        .attr("ReturnPolicyIdList", "false")
        .attr("xmlns", ns::XACML);

    attributes(&mut w, category::RESOURCE, "resource", |w| {
        ii(w, attr::RESOURCE_ID, Bsn::OID, q.patient.as_str(), None);
        cv(
            w,
            attr::HOLDER_FACILITY_TYPE,
            q.holder_facility_type.as_str(),
            FacilityType::CODE_SYSTEM,
        );
        ii(w, attr::HOLDER_URA, Ura::OID, q.holder_ura.as_str(), None);
    });
    for (i, c) in q.categories.iter().enumerate() {
        attributes(&mut w, category::ACTION, &format!("action{i}"), |w| {
            cv(w, attr::EVENT_CODE, c.as_str(), DataCategory::CODE_SYSTEM);
        });
    }
    let r = &q.requester;
    attributes(&mut w, category::ACCESS_SUBJECT, "subject", |w| {
        cv(w, attr::ROLE, r.role.as_str(), RoleCode::CODE_SYSTEM);
        if let Some(m) = &q.mandated {
            ii(w, attr::MANDATED, UziNumber::OID, m.as_str(), Some("CIBG"));
        }
        ii(
            w,
            attr::PROVIDER_IDENTIFIER,
            UziNumber::OID,
            r.uzi.as_str(),
            Some("CIBG"),
        );
        ii(
            w,
            attr::PROVIDER_INSTITUTION,
            Ura::OID,
            r.ura.as_str(),
            None,
        );
        cv(
            w,
            attr::CONSULTING_FACILITY_TYPE,
            r.facility_type.as_str(),
            FacilityType::CODE_SYSTEM,
        );
    });
    attributes(&mut w, category::ENVIRONMENT, "environment", |w| {
        cv(
            w,
            attr::PURPOSE_OF_USE,
            r.purpose_of_use.as_str(),
            PurposeOfUse::CODE_SYSTEM,
        );
    });
    w.end(); // Request
    w.end(); // XACMLAuthzDecisionQuery
    w.end(); // Body
    w.end(); // Envelope
    w.finish()
}

fn attributes(w: &mut Writer, category: &str, id: &str, body: impl FnOnce(&mut Writer)) {
    w.start("Attributes")
        .attr("Category", category)
        .attr("xml:id", id);
    body(w);
    w.end();
}

fn ii(w: &mut Writer, id: &str, root: &str, extension: &str, authority: Option<&str>) {
    w.start("Attribute")
        .attr("AttributeId", id)
        .attr("IncludeInResult", "true");
    w.start("AttributeValue").attr("DataType", DATATYPE_II);
    w.start("InstanceIdentifier")
        .attr_opt("assigningAuthorityName", authority)
        .attr("extension", extension)
        .attr("root", root)
        .attr("xmlns", ns::HL7V3)
        .end();
    w.end().end();
}

fn cv(w: &mut Writer, id: &str, code: &str, system: &str) {
    w.start("Attribute")
        .attr("AttributeId", id)
        .attr("IncludeInResult", "true");
    w.start("AttributeValue").attr("DataType", DATATYPE_CV);
    w.start("CodedValue")
        .attr("code", code)
        .attr("codeSystem", system)
        .attr("xmlns", ns::HL7V3)
        .end();
    w.end().end();
}

/// Why an answer (or, at the simulator, a question) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XacmlError {
    /// The envelope was refused (not SOAP 1.2, malformed, hostile) or is a SOAP fault.
    #[error(transparent)]
    Soap(#[from] SoapError),
    /// The body is not what the closed question expects.
    #[error("{0}")]
    Content(String),
}

impl From<XmlError> for XacmlError {
    fn from(e: XmlError) -> Self {
        XacmlError::Soap(SoapError::Xml(e))
    }
}

/// Reads an answer to question `q` and returns one [`CategoryDecision`] per asked category, in question
/// order. The answer must be tied to the question (see the module documentation): exactly one `Result`
/// per asked category holding exactly one `Decision`, and nothing echoed that contradicts the question;
/// every category for which that does not hold is [`Decision::Indeterminate`], with the reason as its
/// status message. Errors: a SOAP fault, malformed or hostile XML, no XACML `Response`, a `Result`
/// without a `Decision`, a `Decision` that is not one of the four XACML values.
pub fn read_closed_answer(
    body: &[u8],
    q: &ClosedQuestion,
    limits: &Limits,
) -> Result<Vec<CategoryDecision>, XacmlError> {
    // Every element of the Body is looked at, not only the first: a second `Response` (Permit, then
    // Deny) or a failing SAML status around the Response must not go unseen.
    let mut found = Found::default();
    soap::read_envelope_body(body, limits, |r, el| collect_responses(r, el, &mut found))?;
    if let Some(status) = found.saml_failure {
        return Err(XacmlError::Content(format!(
            "the answer's SAML status is {status}, not Success"
        )));
    }
    let results = match found.responses.len() {
        0 => return Err(XacmlError::Content("answer holds no XACML Response".into())),
        1 => found.responses.pop().unwrap_or_default(),
        n => {
            return Err(XacmlError::Content(format!(
                "answer holds {n} XACML Responses, not one"
            )));
        }
    };
    if results.is_empty() {
        return Err(XacmlError::Content("XACML Response holds no Result".into()));
    }
    let asked = &q.categories;
    let undetermined = |c: &DataCategory, why: &str| CategoryDecision {
        category: c.clone(),
        decision: Decision::Indeterminate,
        status_code: None,
        status_message: Some(why.to_owned()),
    };
    let all_undetermined = |why: &str| -> Vec<CategoryDecision> {
        asked.iter().map(|c| undetermined(c, why)).collect()
    };
    // an answer any part of which is about another question answers none of this one
    if let Some(why) = results.iter().find_map(|r| contradiction(r, q)) {
        return Ok(all_undetermined(&format!(
            "answer contradicts the question: {why}"
        )));
    }
    fn categories_of(r: &RawResult) -> Vec<&str> {
        let mut v: Vec<&str> = r
            .echoed
            .iter()
            .filter(|e| e.attribute_id == attr::EVENT_CODE)
            .map(|e| e.value.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
    let echoes: Vec<Vec<&str>> = results.iter().map(categories_of).collect();
    if echoes.iter().all(Vec::is_empty) {
        // the answer of the nuts-knooppunt mock: Decision and Status only, accepted when nothing else
        // can be meant (one category asked, one Result)
        if asked.len() == 1 && results.len() == 1 {
            return Ok(vec![decided(&asked[0], &results[0])]);
        }
        return Ok(all_undetermined(
            "answer does not say which Result belongs to which category",
        ));
    }
    if echoes.iter().any(Vec::is_empty) {
        // a Result that names no category could be for any of them
        return Ok(all_undetermined(
            "a Result of the answer does not say which category it is for",
        ));
    }
    Ok(asked
        .iter()
        .map(|c| {
            let mut matching = results
                .iter()
                .zip(&echoes)
                .filter(|(_, e)| e.contains(&c.as_str()));
            match (matching.next(), matching.next()) {
                (Some((r, e)), None) if e.len() == 1 => decided(c, r),
                (Some(_), None) => {
                    undetermined(c, "the Result for this category names other categories too")
                }
                (None, _) => undetermined(c, "answer holds no Result for this category"),
                (Some(_), Some(_)) => {
                    undetermined(c, "answer holds several Results for this category")
                }
            }
        })
        .collect())
}

/// What in `r`'s echoed attributes (XACML 3.0 §5.47, `IncludeInResult`) contradicts question `q`, if
/// anything: another patient, data holder, requester, role, organisation, facility type, purpose of use
/// or mandating professional, a category that was not asked, or an identifier or code in another
/// system. Attributes the question does not hold are ignored, except a mandating professional the
/// question did not name. The reason names the attribute, never the value (it may be a BSN).
fn contradiction(r: &RawResult, q: &ClosedQuestion) -> Option<String> {
    let req = &q.requester;
    let mandated = q.mandated.as_ref().map(UziNumber::as_str);
    for e in &r.echoed {
        // (expected value, expected OID of the identifier or code system)
        let expected: Option<(Option<&str>, &str)> = match e.attribute_id.as_str() {
            attr::RESOURCE_ID => Some((Some(q.patient.as_str()), Bsn::OID)),
            attr::HOLDER_URA => Some((Some(q.holder_ura.as_str()), Ura::OID)),
            attr::HOLDER_FACILITY_TYPE => Some((
                Some(q.holder_facility_type.as_str()),
                FacilityType::CODE_SYSTEM,
            )),
            attr::ROLE => Some((Some(req.role.as_str()), RoleCode::CODE_SYSTEM)),
            attr::PROVIDER_IDENTIFIER => Some((Some(req.uzi.as_str()), UziNumber::OID)),
            attr::PROVIDER_INSTITUTION => Some((Some(req.ura.as_str()), Ura::OID)),
            attr::CONSULTING_FACILITY_TYPE => {
                Some((Some(req.facility_type.as_str()), FacilityType::CODE_SYSTEM))
            }
            attr::PURPOSE_OF_USE => {
                Some((Some(req.purpose_of_use.as_str()), PurposeOfUse::CODE_SYSTEM))
            }
            attr::MANDATED => Some((mandated, UziNumber::OID)),
            attr::EVENT_CODE => {
                if !q.categories.iter().any(|c| c.as_str() == e.value) {
                    return Some(format!(
                        "{} names a category that was not asked",
                        e.attribute_id
                    ));
                }
                Some((None, DataCategory::CODE_SYSTEM))
            }
            _ => None,
        };
        let Some((value, system)) = expected else {
            continue;
        };
        if let Some(v) = value {
            if e.value != v {
                return Some(format!("{} is not the one asked about", e.attribute_id));
            }
        } else if e.attribute_id == attr::MANDATED {
            return Some(format!("{} was not in the question", e.attribute_id));
        }
        if e.system.as_deref().is_some_and(|s| s != system) {
            return Some(format!(
                "{} is in another identifier or code system",
                e.attribute_id
            ));
        }
    }
    None
}

/// The decision of one `Result` for category `c`. A Result with more than one `Decision` decides
/// nothing (Indeterminate). A Permit whose `StatusCode` is present and not `status:ok` is not a clean
/// Permit (XACML 3.0 §5.57: the PDP reports an error) and counts as Indeterminate, so that it discloses
/// nothing.
fn decided(c: &DataCategory, r: &RawResult) -> CategoryDecision {
    let clean = r.status_code.as_deref().is_none_or(|s| s == STATUS_OK);
    let (decision, status_message) = match r.decisions.as_slice() {
        [_] if r.statuses > 1 => (
            Decision::Indeterminate,
            Some(format!("the Result holds {} statuses, not one", r.statuses)),
        ),
        [d] if *d == Decision::Permit && r.obligations => (
            Decision::Indeterminate,
            Some("Permit with obligations this gateway cannot fulfil".to_owned()),
        ),
        [d] if *d == Decision::Permit && !clean => (
            Decision::Indeterminate,
            Some(format!(
                "Permit with status {} is not a clean Permit",
                r.status_code.as_deref().unwrap_or_default()
            )),
        ),
        [d] => (*d, r.status_message.clone()),
        many => (
            Decision::Indeterminate,
            Some(format!(
                "the Result holds {} decisions, not one",
                many.len()
            )),
        ),
    };
    CategoryDecision {
        category: c.clone(),
        decision,
        status_code: r.status_code.clone(),
        status_message,
    }
}

/// One attribute value a `Result` echoes: its AttributeId, the II extension / CV code (or the text of a
/// plain value) and the II root / CV codeSystem when present.
struct Echo {
    attribute_id: String,
    value: String,
    system: Option<String>,
}

struct RawResult {
    /// Every `Decision` of the Result, in order (one expected).
    decisions: Vec<Decision>,
    status_code: Option<String>,
    status_message: Option<String>,
    /// How many `Status` elements and top-level `StatusCode`s the Result holds (XACML 3.0 §5.53: at
    /// most one Status with one StatusCode); more than one is an unclear answer.
    statuses: usize,
    /// The Result carries `Obligations` (XACML 3.0 §7.18: a PEP that cannot fulfil an obligation must
    /// not act on the Permit; this gateway knows none).
    obligations: bool,
    echoed: Vec<Echo>,
}

/// What [`collect_responses`] found in an answer's Body.
#[derive(Default)]
struct Found {
    /// The Results of every XACML `Response` anywhere in the Body, in document order (one expected).
    responses: Vec<Vec<RawResult>>,
    /// The first SAML 2.0 protocol `StatusCode` that is not Success (the XACML SAML profile wraps the
    /// Response in a `samlp:Response`; a failing status there means the answer decides nothing).
    saml_failure: Option<String>,
}

/// SAML 2.0 protocol namespace (`samlp`), whose `StatusCode` says whether a wrapped answer is valid.
const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML 2.0 core §3.2.2.2: the only top-level status code of a successful answer.
const SAML_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// Walks all of `el` (depth bounded by the reader's limits) and records every XACML `Response` and
/// every failing SAML status in `found`; wrappers between the Body and the Response are allowed, but
/// nothing in them is skipped unseen.
fn collect_responses<'i>(
    r: &mut Reader<'i>,
    el: Elem<'i>,
    found: &mut Found,
) -> Result<(), XmlError> {
    if el.is(ns::XACML, "Response") {
        let results = read_response(r, &el)?;
        found.responses.push(results);
        return Ok(());
    }
    if el.is(SAMLP, "StatusCode") {
        let value = el.attr("Value").unwrap_or("").trim();
        if value != SAML_SUCCESS && found.saml_failure.is_none() {
            found.saml_failure = Some(if value.is_empty() {
                "absent".to_owned()
            } else {
                value.to_owned()
            });
        }
        // a nested StatusCode is a second-level code refining the first: it cannot make a failure a
        // success, and under Success it is not expected
    }
    while let Some(c) = r.child(&el)? {
        collect_responses(r, c, found)?;
    }
    Ok(())
}

/// Reads the values of one echoed `Attribute` into `out`.
fn read_echoed<'i>(
    r: &mut Reader<'i>,
    a: &Elem<'i>,
    attribute_id: &str,
    out: &mut Vec<Echo>,
) -> Result<(), XmlError> {
    while let Some(v) = r.child(a)? {
        if !v.is(ns::XACML, "AttributeValue") {
            continue;
        }
        let mut typed = Vec::new();
        let text = r.mixed(&v, |_, val| {
            let value = val.attr("extension").or_else(|| val.attr("code"));
            let system = val.attr("root").or_else(|| val.attr("codeSystem"));
            typed.push(Echo {
                attribute_id: attribute_id.to_owned(),
                value: value.unwrap_or("").trim().to_owned(),
                system: system.map(|s| s.trim().to_owned()),
            });
            Ok(())
        })?;
        if typed.is_empty() {
            // a plain XACML value (e.g. a string) instead of an HL7 v3 one
            typed.push(Echo {
                attribute_id: attribute_id.to_owned(),
                value: text.trim().to_owned(),
                system: None,
            });
        }
        out.append(&mut typed);
    }
    Ok(())
}

fn read_response<'i>(r: &mut Reader<'i>, resp: &Elem<'i>) -> Result<Vec<RawResult>, XmlError> {
    let mut out = Vec::new();
    while let Some(res) = r.child(resp)? {
        if !res.is(ns::XACML, "Result") {
            continue;
        }
        let mut decisions = Vec::new();
        let mut status_code = None;
        let mut status_message = None;
        let mut echoed = Vec::new();
        let mut statuses = 0;
        let mut obligations = false;
        while let Some(c) = r.child(&res)? {
            if c.is(ns::XACML, "Decision") {
                let t = r.text(&c)?;
                decisions.push(
                    t.parse::<Decision>()
                        .map_err(|e| XmlError::invalid("Result/Decision", e))?,
                );
            } else if c.is(ns::XACML, "Status") {
                statuses += 1;
                let mut codes = 0;
                while let Some(s) = r.child(&c)? {
                    if s.is(ns::XACML, "StatusCode") {
                        codes += 1;
                        status_code = s.attr("Value").map(|v| v.trim().to_owned());
                    } else if s.is(ns::XACML, "StatusMessage") {
                        status_message = Some(r.text(&s)?.trim().to_owned());
                    }
                }
                statuses += codes.max(1) - 1;
            } else if c.is(ns::XACML, "Obligations") {
                obligations = true;
            } else if c.is(ns::XACML, "Attributes") {
                while let Some(a) = r.child(&c)? {
                    if a.is(ns::XACML, "Attribute") {
                        let id = a.attr("AttributeId").unwrap_or("").trim().to_owned();
                        read_echoed(r, &a, &id, &mut echoed)?;
                    }
                }
            }
        }
        if decisions.is_empty() {
            return Err(XmlError::Missing("Result/Decision".into()));
        }
        out.push(RawResult {
            decisions,
            status_code,
            status_message,
            statuses,
            obligations,
            echoed,
        });
    }
    Ok(out)
}

/// Writes an answer in the format of `testdata/mitz/xacml/derived/*.xml`: a SOAP 1.2 envelope without
/// header whose body is the XACML `Response`, one `Result` per decision with `Decision` and `Status`
/// (`StatusCode` and `StatusMessage`). With `echo_categories` each `Result` also carries the `action`
/// attributes of its category (XACML 3.0 §5.47), so a question about several categories can be answered
/// unambiguously. Used by the Mitz simulator.
pub fn write_closed_answer(results: &[CategoryDecision], echo_categories: bool) -> String {
    let mut w = Writer::with_capacity(1024);
    w.decl();
    w.start("s:Envelope").attr("xmlns:s", ns::SOAP12);
    w.start("s:Body");
    w.start("Response").attr("xmlns", ns::XACML);
    for r in results {
        w.start("Result");
        w.leaf("Decision", r.decision.as_str());
        w.start("Status");
        w.start("StatusCode")
            .attr("Value", r.status_code.as_deref().unwrap_or(STATUS_OK))
            .end();
        if let Some(m) = &r.status_message {
            w.leaf("StatusMessage", m);
        }
        w.end();
        if echo_categories {
            w.start("Attributes").attr("Category", category::ACTION);
            cv(
                &mut w,
                attr::EVENT_CODE,
                r.category.as_str(),
                DataCategory::CODE_SYSTEM,
            );
            w.end();
        }
        w.end();
    }
    w.end().end().end();
    w.finish()
}

/// A closed question as received (by the Mitz simulator): the typed question where every identifier
/// parses, plus the raw values so a receiver can answer Indeterminate for what it cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceivedQuestion {
    /// Resource, subject and environment attributes: (attribute id, value), value = II extension or CV code.
    pub attributes: Vec<(String, String)>,
    /// The data categories of the action attributes, in order.
    pub categories: Vec<String>,
}

impl ReceivedQuestion {
    /// The first value of attribute `id`.
    pub fn get(&self, id: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a closed question envelope (the simulator's side). Errors: not SOAP 1.2, malformed XML, the body
/// is not an `XACMLAuthzDecisionQuery` with a `Request`.
pub fn read_closed_question(
    body: &[u8],
    limits: &Limits,
) -> Result<(SoapHeader, ReceivedQuestion), XacmlError> {
    let (h, q) = soap::read_envelope(body, limits, |r, el| {
        if !el.is(ns::XACML_SAMLP, "XACMLAuthzDecisionQuery") {
            return Err(XmlError::Unexpected {
                expected: "XACMLAuthzDecisionQuery".into(),
                found: el.qualified(),
            });
        }
        let mut q = None;
        while let Some(req) = r.child(&el)? {
            if req.is(ns::XACML, "Request") {
                q = Some(read_request(r, &req)?);
            }
        }
        q.ok_or_else(|| XmlError::Missing("XACMLAuthzDecisionQuery/Request".into()))
    })?;
    Ok((h, q))
}

fn read_request<'i>(r: &mut Reader<'i>, req: &Elem<'i>) -> Result<ReceivedQuestion, XmlError> {
    let mut q = ReceivedQuestion::default();
    while let Some(attrs) = r.child(req)? {
        if !attrs.is(ns::XACML, "Attributes") {
            continue;
        }
        let is_action = attrs.attr("Category").map(str::trim) == Some(category::ACTION);
        while let Some(a) = r.child(&attrs)? {
            if !a.is(ns::XACML, "Attribute") {
                continue;
            }
            let id = a.attr("AttributeId").unwrap_or("").trim().to_owned();
            while let Some(v) = r.child(&a)? {
                if !v.is(ns::XACML, "AttributeValue") {
                    continue;
                }
                while let Some(val) = r.child(&v)? {
                    let value = val
                        .attr("extension")
                        .or_else(|| val.attr("code"))
                        .unwrap_or("")
                        .trim()
                        .to_owned();
                    if is_action && id == attr::EVENT_CODE {
                        q.categories.push(value);
                    } else {
                        q.attributes.push((id.clone(), value));
                    }
                }
            }
        }
    }
    Ok(q)
}

/// The question of `testdata/mitz/xacml/example.xml` in typed form, for tests comparing with that
/// sample (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub fn sample_question() -> ClosedQuestion {
    ClosedQuestion {
        patient: "900186021".parse().unwrap(),
        holder_ura: "00000659".parse().unwrap(),
        holder_facility_type: "Z3".parse().unwrap(),
        categories: vec!["GGC002".parse().unwrap()],
        requester: Requester {
            uzi: "000095254".parse().unwrap(),
            role: "01.015".parse().unwrap(),
            ura: "00000666".parse().unwrap(),
            facility_type: "Z3".parse().unwrap(),
            purpose_of_use: "TREAT".parse().unwrap(),
            name: None,
        },
        mandated: None,
    }
}

#[cfg(test)]
mod tests;
