//! Registration with Mitz (a data holder announces that it holds data of a patient): the FHIR STU3
//! `Subscription` a gateway POSTs to `{base}/abonnementen/fhir/Subscription`, and what Mitz answers.
//!
//! Source: `testdata/mitz/fhir/example_subscription.xml` (Mitz's own example, from the public Nuts
//! knooppunt repository; docs/DOMAIN.md "Registration"). [`write_subscription`] writes that document byte
//! for byte when given its values: the extensions `Patient.birthDate` (only when the birth date is known),
//! `GatewaySystem` (the homeCommunityId) and `SourceSystem`, status `requested`, reason `OTV`, criteria
//! `Consent?_query=otv&patientid=<BSN>&providerid=<URA>&providertype=<facility type>` and a rest-hook
//! channel to the data holder's notification endpoint.
//!
//! Answers: `201 Created` with `Location: .../Subscription/<id>[/_history/<v>]` (or the id in the body);
//! errors carry a FHIR `OperationOutcome` ([`read_operation_outcome`]), whose issue code `duplicate`
//! says the registration exists already.

use quick_xml::escape::escape;

use crate::xml::{Limits, Reader};

/// The FHIR namespace of XML resources.
pub const FHIR_NS: &str = "http://hl7.org/fhir";
/// Extension URL of the homeCommunityId through which the data is reachable.
pub const GATEWAY_SYSTEM: &str = "http://fhir.nl/StructureDefinition/GatewaySystem";
/// Extension URL of the data holder's source system (repository or community id).
pub const SOURCE_SYSTEM: &str = "http://fhir.nl/StructureDefinition/SourceSystem";
/// Extension URL of the patient's birth date.
pub const BIRTH_DATE: &str = "http://fhir.nl/StructureDefinition/Patient.birthDate";
/// Media type of an XML FHIR resource.
pub const FHIR_XML: &str = "application/fhir+xml";
/// Media type of a JSON FHIR resource.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The values of one registration. Identifiers are passed as text: the caller checks them (BSN with its
/// 11-check, 8-digit URA, facility type code); this codec only writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest<'a> {
    /// The patient's birth date, `YYYY-MM-DD`, when known (the extension is left out otherwise).
    pub birth_date: Option<&'a str>,
    /// `urn:oid:` homeCommunityId of the gateway through which the data holder answers.
    pub gateway_system: &'a str,
    /// `urn:oid:` id of the data holder's source system.
    pub source_system: &'a str,
    /// The patient's BSN.
    pub patient_id: &'a str,
    /// The data holder's URA.
    pub provider_id: &'a str,
    /// The data holder's facility type (zorgaanbiedercategorie, e.g. `V6`).
    pub provider_type: &'a str,
    /// The rest-hook endpoint Mitz delivers consent notifications to (`https://`).
    pub endpoint: &'a str,
    /// The media type of notifications ([`FHIR_XML`] as in the sample).
    pub payload: &'a str,
}

/// Writes `r` as Mitz's sample Subscription (XML, no declaration, four-space indentation).
pub fn write_subscription(r: &SubscriptionRequest<'_>) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str(
        "<Subscription xmlns=\"http://hl7.org/fhir\"\n    xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
    );
    let ext = |out: &mut String, url: &str, kind: &str, value: &str| {
        out.push_str(&format!(
            "    <extension url=\"{}\">\n        <{kind} value=\"{}\"/>\n    </extension>\n",
            escape(url),
            escape(value)
        ));
    };
    if let Some(d) = r.birth_date {
        ext(&mut out, BIRTH_DATE, "valueDate", d);
    }
    ext(&mut out, GATEWAY_SYSTEM, "valueOid", r.gateway_system);
    ext(&mut out, SOURCE_SYSTEM, "valueOid", r.source_system);
    out.push_str("    <status value=\"requested\"/>\n    <reason value=\"OTV\"/>\n");
    out.push_str(&format!(
        "    <criteria value=\"{}\"/>\n",
        escape(criteria(r.patient_id, r.provider_id, r.provider_type))
    ));
    out.push_str(&format!(
        "    <channel>\n        <type value=\"rest-hook\"/>\n        <endpoint value=\"{}\"/>\n        <payload value=\"{}\"/>\n    </channel>\n</Subscription>",
        escape(r.endpoint),
        escape(r.payload)
    ));
    out
}

/// The criteria of a registration: `Consent?_query=otv&patientid=..&providerid=..&providertype=..`, each
/// value percent-encoded (identifiers are digits and letters, so the sample's form is unchanged).
pub fn criteria(patient_id: &str, provider_id: &str, provider_type: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |v: &str| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string();
    format!(
        "Consent?_query=otv&patientid={}&providerid={}&providertype={}",
        enc(patient_id),
        enc(provider_id),
        enc(provider_type)
    )
}

/// Whether `id` is a FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`, FHIR R4/STU3 datatype `id`).
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The subscription id of a `201 Created` answer: from the `Location` header
/// (`[...]/Subscription/<id>[/_history/<version>]`), else from the body's `id` (XML `<id value>` of the
/// root, or JSON `"id"`). `None` when neither holds a valid FHIR id (the registration still counts: Mitz
/// accepted it).
pub fn created_id(location: Option<&str>, body: &[u8], limits: &Limits) -> Option<String> {
    if let Some(loc) = location {
        let path = loc.split(['?', '#']).next().unwrap_or("");
        let parts: Vec<&str> = path.split('/').collect();
        if let Some(i) = parts.iter().rposition(|p| *p == "Subscription")
            && let Some(id) = parts.get(i + 1)
            && is_fhir_id(id)
        {
            return Some((*id).to_owned());
        }
    }
    let id = if body.first().is_some_and(|b| *b == b'<') || body.starts_with(b"\xef\xbb\xbf<") {
        xml_root_id(body, limits)
    } else {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
    };
    id.filter(|i| is_fhir_id(i))
}

fn xml_root_id(body: &[u8], limits: &Limits) -> Option<String> {
    let mut r = Reader::new(body, limits).ok()?;
    let root = r.root().ok()?;
    while let Some(c) = r.child(&root).ok()? {
        if c.is(FHIR_NS, "id") {
            return c.attr("value").map(str::to_owned);
        }
        r.skip(&c).ok()?;
    }
    None
}

/// A FHIR `OperationOutcome` as far as a client acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperationOutcome {
    /// The `issue.code` of every issue (`duplicate`, `invalid`, `throttled` ...), in order.
    pub codes: Vec<String>,
    /// The issues' `diagnostics` (or `details.text`), joined with `; `, at most 300 characters.
    pub diagnostics: String,
}

impl OperationOutcome {
    /// Whether an issue says the resource exists already (issue type `duplicate`).
    pub fn is_duplicate(&self) -> bool {
        self.codes.iter().any(|c| c == "duplicate")
    }
}

/// Reads an `OperationOutcome` (XML or JSON, chosen by the first byte). `None` when the body is not one.
pub fn read_operation_outcome(body: &[u8], limits: &Limits) -> Option<OperationOutcome> {
    let mut o = OperationOutcome::default();
    let mut texts = Vec::new();
    if body.first().is_some_and(|b| *b == b'<') {
        let mut r = Reader::new(body, limits).ok()?;
        let root = r.root().ok()?;
        if !root.is(FHIR_NS, "OperationOutcome") {
            return None;
        }
        while let Some(c) = r.child(&root).ok()? {
            if !c.is(FHIR_NS, "issue") {
                r.skip(&c).ok()?;
                continue;
            }
            while let Some(f) = r.child(&c).ok()? {
                match f.local {
                    "code" => o.codes.push(f.attr("value").unwrap_or("").to_owned()),
                    "diagnostics" => texts.push(f.attr("value").unwrap_or("").to_owned()),
                    _ => {}
                }
                r.skip(&f).ok()?;
            }
        }
    } else {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if v.get("resourceType").and_then(|t| t.as_str()) != Some("OperationOutcome") {
            return None;
        }
        for i in v
            .get("issue")
            .and_then(|i| i.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(c) = i.get("code").and_then(|c| c.as_str()) {
                o.codes.push(c.to_owned());
            }
            if let Some(d) = i
                .get("diagnostics")
                .or_else(|| i.pointer("/details/text"))
                .and_then(|d| d.as_str())
            {
                texts.push(d.to_owned());
            }
        }
    }
    o.diagnostics = texts.join("; ").chars().take(300).collect();
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../../testdata/mitz/fhir/example_subscription.xml");

    fn sample_values() -> SubscriptionRequest<'static> {
        SubscriptionRequest {
            birth_date: Some("2012-03-07"),
            gateway_system: "urn:oid:2.16.840.1.113883.2.4.6.6.1",
            source_system: "urn:oid:2.16.840.1.113883.2.4.6.6.90000017",
            patient_id: "123456789",
            provider_id: "01234567",
            provider_type: "Z3",
            endpoint: "https://zim.prf001.lsp.aorta-zorg.nl/otv/Subscription/312",
            payload: FHIR_XML,
        }
    }

    #[test]
    fn the_sample_is_written_byte_for_byte() {
        assert_eq!(write_subscription(&sample_values()), SAMPLE);
    }

    #[test]
    fn without_a_birth_date_the_extension_is_left_out_and_values_are_escaped() {
        let mut v = sample_values();
        v.birth_date = None;
        v.endpoint = "https://h.example/n?a=1&b=\"2\"";
        let x = write_subscription(&v);
        assert!(!x.contains("Patient.birthDate"));
        assert!(
            x.contains("https://h.example/n?a=1&amp;b=&quot;2&quot;"),
            "{x}"
        );
        // what is written reads back as XML
        Reader::new(x.as_bytes(), &Limits::default())
            .and_then(|mut r| r.root().map(|_| ()))
            .unwrap();
    }

    #[test]
    fn criteria_values_are_percent_encoded() {
        assert_eq!(
            criteria("1&patientid=2", "x", "V6"),
            "Consent?_query=otv&patientid=1%26patientid%3D2&providerid=x&providertype=V6"
        );
    }

    #[test]
    fn the_created_id_comes_from_location_or_body_and_must_be_a_fhir_id() {
        let l = Limits::default();
        assert_eq!(
            created_id(
                Some("https://mitz/x/Subscription/abc-1/_history/1"),
                b"",
                &l
            )
            .as_deref(),
            Some("abc-1")
        );
        assert_eq!(
            created_id(Some("Subscription/sim-3"), b"", &l).as_deref(),
            Some("sim-3")
        );
        assert_eq!(
            created_id(
                None,
                b"<Subscription xmlns=\"http://hl7.org/fhir\"><id value=\"7\"/></Subscription>",
                &l
            )
            .as_deref(),
            Some("7")
        );
        assert_eq!(
            created_id(None, br#"{"resourceType":"Subscription","id":"j-9"}"#, &l).as_deref(),
            Some("j-9")
        );
        assert_eq!(created_id(Some("Subscription/a b"), b"", &l), None);
        assert_eq!(created_id(None, br#"{"id":"../../etc"}"#, &l), None);
        assert_eq!(created_id(None, b"garbage", &l), None);
    }

    #[test]
    fn operation_outcomes_are_read_in_both_formats() {
        let l = Limits::default();
        let x = br#"<OperationOutcome xmlns="http://hl7.org/fhir"><issue><severity value="error"/><code value="duplicate"/><diagnostics value="exists as s-1"/></issue></OperationOutcome>"#;
        let o = read_operation_outcome(x, &l).unwrap();
        assert!(o.is_duplicate());
        assert_eq!(o.diagnostics, "exists as s-1");
        let j = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","details":{"text":"bad criteria"}}]}"#;
        let o = read_operation_outcome(j, &l).unwrap();
        assert!(!o.is_duplicate());
        assert_eq!(o.codes, ["invalid"]);
        assert_eq!(o.diagnostics, "bad criteria");
        assert_eq!(
            read_operation_outcome(b"<Bundle xmlns=\"http://hl7.org/fhir\"/>", &l),
            None
        );
        assert_eq!(read_operation_outcome(b"{}", &l), None);
    }
}
