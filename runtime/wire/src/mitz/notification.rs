//! Mitz's consent notifications: what Mitz POSTs to a data holder's rest-hook endpoint when a consent of a
//! registered patient changes. A FHIR transaction `Bundle` of `Consent` resources (profile
//! `Consent-Mitz-Notify`) with the `Patient` (BSN) and `Organization` (URA) entries they reference:
//! `testdata/mitz/fhir/example_notification_bundle.xml` (XML); the same resources in FHIR JSON are read too.
//!
//! The reader is strict, because a notification changes what the gateway remembers about consent: every
//! Consent must reference a Patient entry of the same Bundle that carries exactly one BSN (with its
//! 11-check), entries have distinct `fullUrl`s, the Bundle has at least one Consent and at most
//! [`MAX_ENTRIES`] entries. Anything else is a [`NotificationError`] and the whole notification is refused.
//! What a Consent permits is not taken from it: the gateway asks Mitz again (closed question) after a
//! notification, so only the patients matter.

use std::collections::HashMap;

use duo_core::model::{Bsn, Ura};

use super::subscription::FHIR_NS;
use crate::xml::{Elem, Limits, Reader, XmlError};

/// Most entries read from one notification Bundle.
pub const MAX_ENTRIES: usize = 1_000;
/// The identifier system of a BSN in Dutch FHIR profiles.
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// The identifier system of a URA in Dutch FHIR profiles.
pub const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";

/// A notification as read: the Bundle's id and one entry per Consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentNotification {
    /// The Bundle's `id`, when it has one (audit records name it).
    pub bundle_id: Option<String>,
    /// The Consents, in Bundle order.
    pub consents: Vec<NotifiedConsent>,
}

impl ConsentNotification {
    /// The distinct patients the notification is about, in first-seen order.
    pub fn patients(&self) -> Vec<Bsn> {
        let mut out: Vec<Bsn> = Vec::new();
        for c in &self.consents {
            if !out.contains(&c.patient) {
                out.push(c.patient.clone());
            }
        }
        out
    }
}

/// One Consent of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifiedConsent {
    /// The Consent's `id` (empty when absent).
    pub id: String,
    /// `status` (`active`, `inactive`, ...; empty when absent).
    pub status: String,
    /// The patient, from the referenced Patient entry.
    pub patient: Bsn,
    /// The custodian (`provision.actor` with role `CST`) URA, when the referenced Organization has one.
    pub custodian: Option<Ura>,
}

/// Why a notification was refused. The message is safe to return to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// Not a readable XML or JSON document.
    #[error("not a readable FHIR document: {0}")]
    Unreadable(String),
    /// Not a FHIR Bundle of type `transaction`.
    #[error("{0}")]
    NotATransaction(String),
    /// An entry breaks a rule (named in the message).
    #[error("{0}")]
    Invalid(String),
}

impl From<XmlError> for NotificationError {
    fn from(e: XmlError) -> Self {
        NotificationError::Unreadable(e.to_string())
    }
}

/// What an entry's resource gave, before references are resolved.
#[derive(Debug, Default)]
struct RawConsent {
    id: String,
    status: String,
    patient_ref: Option<String>,
    custodian_refs: Vec<String>,
}

#[derive(Debug, Default)]
struct Parsed {
    bundle_id: Option<String>,
    bundle_type: String,
    consents: Vec<RawConsent>,
    /// fullUrl (and `Patient/<id>`) -> BSN values of its identifiers
    patients: HashMap<String, Vec<String>>,
    /// fullUrl (and `Organization/<id>`) -> URA values
    organizations: HashMap<String, Vec<String>>,
    full_urls: Vec<String>,
    entries: usize,
}

/// Reads a notification. `json` chooses FHIR JSON, otherwise XML (the caller decides from
/// `Content-Type`). Errors: see [`NotificationError`].
pub fn read_notification(
    body: &[u8],
    json: bool,
    limits: &Limits,
) -> Result<ConsentNotification, NotificationError> {
    let p = if json {
        parse_json(body)?
    } else {
        parse_xml(body, limits)?
    };
    resolve(p)
}

fn resolve(p: Parsed) -> Result<ConsentNotification, NotificationError> {
    if p.bundle_type != "transaction" {
        return Err(NotificationError::NotATransaction(format!(
            "Bundle.type is {:?}, not \"transaction\"",
            p.bundle_type
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for u in &p.full_urls {
        if !u.is_empty() && !seen.insert(u.as_str()) {
            return Err(NotificationError::Invalid(format!(
                "two entries have fullUrl {u:?}"
            )));
        }
    }
    if p.consents.is_empty() {
        return Err(NotificationError::Invalid(
            "the Bundle holds no Consent".into(),
        ));
    }
    let mut consents = Vec::with_capacity(p.consents.len());
    for c in p.consents {
        let Some(r) = c.patient_ref.as_deref().filter(|r| !r.is_empty()) else {
            return Err(NotificationError::Invalid(format!(
                "Consent {:?} has no patient reference",
                c.id
            )));
        };
        let Some(bsns) = p.patients.get(r) else {
            return Err(NotificationError::Invalid(format!(
                "Consent {:?}: patient {r:?} is not a Patient entry of this Bundle",
                c.id
            )));
        };
        let patient = match bsns.as_slice() {
            [one] => one.parse::<Bsn>().map_err(|e| {
                NotificationError::Invalid(format!("Consent {:?}: patient BSN: {e}", c.id))
            })?,
            [] => {
                return Err(NotificationError::Invalid(format!(
                    "Consent {:?}: patient {r:?} has no BSN identifier",
                    c.id
                )));
            }
            _ => {
                return Err(NotificationError::Invalid(format!(
                    "Consent {:?}: patient {r:?} has more than one BSN identifier",
                    c.id
                )));
            }
        };
        let mut custodian = None;
        for r in &c.custodian_refs {
            if let Some([ura]) = p.organizations.get(r).map(Vec::as_slice) {
                custodian = ura.parse::<Ura>().ok();
            }
        }
        consents.push(NotifiedConsent {
            id: c.id,
            status: c.status,
            patient,
            custodian,
        });
    }
    Ok(ConsentNotification {
        bundle_id: p.bundle_id,
        consents,
    })
}

fn too_many() -> NotificationError {
    NotificationError::Invalid(format!("more than {MAX_ENTRIES} entries"))
}

/// The keys an entry can be referenced by: its fullUrl and `<Type>/<id>`.
fn keys(full_url: &str, kind: &str, id: &str) -> Vec<String> {
    let mut k = Vec::new();
    if !full_url.is_empty() {
        k.push(full_url.to_owned());
    }
    if !id.is_empty() {
        k.push(format!("{kind}/{id}"));
    }
    k
}

fn parse_xml(body: &[u8], limits: &Limits) -> Result<Parsed, NotificationError> {
    let mut r = Reader::new(body, limits)?;
    let root = r.root()?;
    if !root.is(FHIR_NS, "Bundle") {
        return Err(NotificationError::NotATransaction(format!(
            "{} is not a FHIR Bundle",
            root.qualified()
        )));
    }
    let mut p = Parsed::default();
    let value = |e: &Elem<'_>| e.attr("value").unwrap_or("").trim().to_owned();
    while let Some(c) = r.child(&root)? {
        if !c.ns.uri().eq(FHIR_NS) {
            r.skip(&c)?;
            continue;
        }
        match c.local {
            "id" => {
                p.bundle_id = Some(value(&c));
                r.skip(&c)?;
            }
            "type" => {
                p.bundle_type = value(&c);
                r.skip(&c)?;
            }
            "entry" => {
                p.entries += 1;
                if p.entries > MAX_ENTRIES {
                    return Err(too_many());
                }
                let mut full_url = String::new();
                let mut resource: Option<(String, String, Vec<String>, Option<RawConsent>)> = None;
                while let Some(e) = r.child(&c)? {
                    if e.is(FHIR_NS, "fullUrl") {
                        full_url = value(&e);
                        r.skip(&e)?;
                    } else if e.is(FHIR_NS, "resource") {
                        while let Some(res) = r.child(&e)? {
                            if resource.is_some() {
                                return Err(NotificationError::Invalid(
                                    "an entry's resource holds more than one resource".into(),
                                ));
                            }
                            resource = Some(read_xml_resource(&mut r, &res)?);
                        }
                    } else {
                        r.skip(&e)?;
                    }
                }
                p.full_urls.push(full_url.clone());
                if let Some((kind, id, idents, consent)) = resource {
                    add(&mut p, &full_url, &kind, &id, idents, consent);
                }
            }
            _ => r.skip(&c)?,
        }
    }
    Ok(p)
}

fn add(
    p: &mut Parsed,
    full_url: &str,
    kind: &str,
    id: &str,
    idents: Vec<String>,
    consent: Option<RawConsent>,
) {
    match kind {
        "Consent" => {
            if let Some(c) = consent {
                p.consents.push(c);
            }
        }
        "Patient" => {
            for k in keys(full_url, kind, id) {
                p.patients.insert(k, idents.clone());
            }
        }
        "Organization" => {
            for k in keys(full_url, kind, id) {
                p.organizations.insert(k, idents.clone());
            }
        }
        _ => {}
    }
}

/// Reads one resource element: (type, id, identifier values of the BSN or URA system, the Consent).
type XmlResource = (String, String, Vec<String>, Option<RawConsent>);

fn read_xml_resource<'i>(
    r: &mut Reader<'i>,
    res: &Elem<'i>,
) -> Result<XmlResource, NotificationError> {
    let kind = if res.ns.uri() == FHIR_NS {
        res.local.to_owned()
    } else {
        String::new()
    };
    let value = |e: &Elem<'_>| e.attr("value").unwrap_or("").trim().to_owned();
    let mut id = String::new();
    let mut idents = Vec::new();
    let mut consent = RawConsent::default();
    let wanted_system = match kind.as_str() {
        "Patient" => BSN_SYSTEM,
        _ => URA_SYSTEM,
    };
    while let Some(f) = r.child(res)? {
        if f.ns.uri() != FHIR_NS {
            r.skip(&f)?;
            continue;
        }
        match (kind.as_str(), f.local) {
            (_, "id") => {
                id = value(&f);
                r.skip(&f)?;
            }
            ("Patient" | "Organization", "identifier") => {
                let (mut system, mut v) = (String::new(), String::new());
                while let Some(x) = r.child(&f)? {
                    if x.is(FHIR_NS, "system") {
                        system = value(&x);
                    } else if x.is(FHIR_NS, "value") {
                        v = value(&x);
                    }
                    r.skip(&x)?;
                }
                if system == wanted_system {
                    idents.push(v);
                }
            }
            ("Consent", "status") => {
                consent.status = value(&f);
                r.skip(&f)?;
            }
            ("Consent", "patient") => {
                while let Some(x) = r.child(&f)? {
                    if x.is(FHIR_NS, "reference") {
                        if consent.patient_ref.is_some() {
                            return Err(NotificationError::Invalid(
                                "a Consent has two patient references".into(),
                            ));
                        }
                        consent.patient_ref = Some(value(&x));
                    }
                    r.skip(&x)?;
                }
            }
            ("Consent", "provision") => {
                while let Some(x) = r.child(&f)? {
                    if !x.is(FHIR_NS, "actor") {
                        r.skip(&x)?;
                        continue;
                    }
                    let (mut cst, mut reference) = (false, None);
                    while let Some(a) = r.child(&x)? {
                        if a.is(FHIR_NS, "role") {
                            while let Some(coding) = r.child(&a)? {
                                while let Some(code) = r.child(&coding)? {
                                    if code.is(FHIR_NS, "code") && value(&code) == "CST" {
                                        cst = true;
                                    }
                                    r.skip(&code)?;
                                }
                            }
                        } else if a.is(FHIR_NS, "reference") {
                            while let Some(rr) = r.child(&a)? {
                                if rr.is(FHIR_NS, "reference") {
                                    reference = Some(value(&rr));
                                }
                                r.skip(&rr)?;
                            }
                        } else {
                            r.skip(&a)?;
                        }
                    }
                    if cst && let Some(reference) = reference {
                        consent.custodian_refs.push(reference);
                    }
                }
            }
            _ => r.skip(&f)?,
        }
    }
    consent.id = id.clone();
    let consent = (kind == "Consent").then_some(consent);
    Ok((kind, id, idents, consent))
}

fn parse_json(body: &[u8]) -> Result<Parsed, NotificationError> {
    use serde_json::Value;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| NotificationError::Unreadable(e.to_string()))?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(NotificationError::NotATransaction(
            "resourceType is not Bundle".into(),
        ));
    }
    let s = |x: &Value, p: &str| {
        x.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let mut p = Parsed {
        bundle_id: v.get("id").and_then(Value::as_str).map(str::to_owned),
        bundle_type: s(&v, "/type"),
        ..Parsed::default()
    };
    let entries = match v.get("entry") {
        None => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(NotificationError::Invalid("entry is not a list".into())),
    };
    if entries.len() > MAX_ENTRIES {
        return Err(too_many());
    }
    for e in entries {
        p.entries += 1;
        let full_url = s(e, "/fullUrl");
        p.full_urls.push(full_url.clone());
        let Some(res) = e.get("resource") else {
            continue;
        };
        let kind = s(res, "/resourceType");
        let id = s(res, "/id");
        let wanted = if kind == "Patient" {
            BSN_SYSTEM
        } else {
            URA_SYSTEM
        };
        let idents: Vec<String> = res
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|i| s(i, "/system") == wanted)
            .map(|i| s(i, "/value"))
            .collect();
        let consent = (kind == "Consent").then(|| RawConsent {
            id: id.clone(),
            status: s(res, "/status"),
            patient_ref: res
                .pointer("/patient/reference")
                .and_then(Value::as_str)
                .map(|r| r.trim().to_owned()),
            custodian_refs: res
                .pointer("/provision/actor")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|a| {
                    a.pointer("/role/coding")
                        .and_then(Value::as_array)
                        .is_some_and(|c| c.iter().any(|c| s(c, "/code") == "CST"))
                })
                .map(|a| s(a, "/reference/reference"))
                .collect(),
        });
        add(&mut p, &full_url, &kind, &id, idents, consent);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        include_str!("../../../../testdata/mitz/fhir/example_notification_bundle.xml");

    fn read(x: &str) -> Result<ConsentNotification, NotificationError> {
        read_notification(x.as_bytes(), false, &Limits::default())
    }

    #[test]
    fn the_sample_notification_is_read() {
        let n = read(SAMPLE).unwrap();
        assert_eq!(
            n.bundle_id.as_deref(),
            Some("a508cfaa-5b22-4d61-a9f2-52df2a1ea266")
        );
        assert_eq!(n.consents.len(), 2);
        assert_eq!(n.consents[0].status, "active");
        assert_eq!(n.consents[1].status, "inactive");
        assert_eq!(n.consents[0].id, "27b7bc07-7a6a-4545-a813-0f0bba89b09c");
        for c in &n.consents {
            assert_eq!(c.patient.as_str(), "900186021");
            assert_eq!(c.custodian.as_ref().map(Ura::as_str), Some("00000659"));
        }
        assert_eq!(n.patients().len(), 1);
    }

    #[test]
    fn the_sample_as_json_is_read_alike() {
        let j = serde_json::json!({
            "resourceType": "Bundle", "id": "b1", "type": "transaction",
            "entry": [
                {"fullUrl": "urn:uuid:c1", "resource": {"resourceType": "Consent", "id": "c1",
                  "status": "inactive", "patient": {"reference": "urn:uuid:p1"},
                  "provision": {"actor": [{"role": {"coding": [{"code": "CST"}]},
                                           "reference": {"reference": "urn:uuid:o1"}}]}}},
                {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1",
                  "identifier": [{"system": BSN_SYSTEM, "value": "900186021"}]}},
                {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Organization",
                  "identifier": [{"system": URA_SYSTEM, "value": "00000659"}]}}
            ]
        });
        let n = read_notification(j.to_string().as_bytes(), true, &Limits::default()).unwrap();
        assert_eq!(n.consents.len(), 1);
        assert_eq!(n.consents[0].patient.as_str(), "900186021");
        assert_eq!(n.consents[0].status, "inactive");
        assert_eq!(
            n.consents[0].custodian.as_ref().map(Ura::as_str),
            Some("00000659")
        );
    }

    #[test]
    fn hostile_bundles_are_refused() {
        let swap = |from: &str, to: &str| {
            assert!(SAMPLE.contains(from), "{from}");
            SAMPLE.replacen(from, to, 1)
        };
        let cases = [
            // not a transaction
            swap("<type value=\"transaction\"/>", "<type value=\"history\"/>"),
            // the patient reference points nowhere
            SAMPLE.replace(
                "<reference value=\"urn:uuid:2083dda0-4a90-4b37-87fe-3c974399dbe2\"/>",
                "<reference value=\"urn:uuid:elsewhere\"/>",
            ),
            // a BSN that fails the 11-check
            swap(
                "<value value=\"900186021\"/>",
                "<value value=\"900186022\"/>",
            ),
            // a second BSN for the same patient
            swap(
                "<value value=\"900186021\"/>",
                "<value value=\"900186021\"/></identifier><identifier><system value=\"http://fhir.nl/fhir/NamingSystem/bsn\"/><value value=\"999993653\"/>",
            ),
            // the BSN under another system
            swap(
                "<system value=\"http://fhir.nl/fhir/NamingSystem/bsn\"/>",
                "<system value=\"http://example.org/bsn\"/>",
            ),
            // two entries with one fullUrl
            swap(
                "<fullUrl value=\"urn:uuid:99d561ea-caaa-442f-88dc-e6d753d79c73\"/>",
                "<fullUrl value=\"urn:uuid:27b7bc07-7a6a-4545-a813-0f0bba89b09c\"/>",
            ),
            // not FHIR
            SAMPLE.replacen("http://hl7.org/fhir", "urn:other", 1),
            // not XML
            "{\"resourceType\":\"Bundle\"}".into(),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(read(c).is_err(), "case {i} was accepted");
        }
        // a Bundle without Consents
        let empty = r#"<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/></Bundle>"#;
        assert!(matches!(read(empty), Err(NotificationError::Invalid(_))));
        // too many entries
        let mut big =
            String::from(r#"<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/>"#);
        for _ in 0..=MAX_ENTRIES {
            big.push_str("<entry/>");
        }
        big.push_str("</Bundle>");
        assert!(read(&big).is_err());
    }

    #[test]
    fn generated_mutations_never_panic_and_accepted_ones_name_a_valid_patient() {
        // every single-byte deletion of the sample: read or refused, never a panic; what is accepted
        // still names only patients with a valid BSN
        let b = SAMPLE.as_bytes();
        for i in (0..b.len()).step_by(7) {
            let mut m = b.to_vec();
            m.remove(i);
            if let Ok(n) = read_notification(&m, false, &Limits::default()) {
                assert!(!n.consents.is_empty());
            }
            let _ = read_notification(&m, true, &Limits::default());
        }
    }
}
