//! Reading and checking a FHIR `Subscription` (XML or JSON, as in
//! `testdata/mitz/fhir/example_subscription.xml`) into a [`Registration`]. The subscriber is treated as
//! hostile: anything ambiguous (a criteria parameter or an extension given twice, two channels), an
//! endpoint the simulator should not call (not `https://`, with userinfo), an unknown provider type or an
//! oversized message is refused and registers nothing.

use axum::http::StatusCode;

use super::registry::{NotificationPayload, Registration};
use crate::model::{Bsn, FacilityType, HomeCommunityId, Ura};
use crate::xml::{Elem, Limits, Reader, XmlError};

/// The FHIR namespace.
pub(super) const FHIR_NS: &str = "http://hl7.org/fhir";

/// The extension naming the holder's community.
const GATEWAY_SYSTEM: &str = "http://fhir.nl/StructureDefinition/GatewaySystem";
/// The extension naming the holder's source system.
const SOURCE_SYSTEM: &str = "http://fhir.nl/StructureDefinition/SourceSystem";

/// Most extensions one Subscription may carry (the sample has 3).
pub(super) const MAX_EXTENSIONS: usize = 16;

/// Why a Subscription is refused: HTTP status, the OperationOutcome issue code (FHIR `IssueType`) and
/// the diagnostics.
#[derive(Debug)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub diagnostics: String,
}

impl Refusal {
    fn invalid(diagnostics: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            diagnostics: diagnostics.into(),
        }
    }

    fn unprocessable(diagnostics: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            diagnostics: diagnostics.into(),
        }
    }
}

/// The parts of a Subscription the simulator reads.
#[derive(Debug, Default)]
pub(super) struct Subscription {
    pub reason: String,
    pub criteria: String,
    pub channel_type: String,
    pub endpoint: Option<String>,
    pub payload: Option<String>,
    pub gateway_system: Option<String>,
    pub source_system: Option<String>,
    /// A field or extension that appeared more than once (refused when checked).
    pub repeated: Option<String>,
}

fn set_once(slot: &mut Option<String>, value: String, name: &str, repeated: &mut Option<String>) {
    if slot.is_some() {
        repeated.get_or_insert_with(|| name.to_owned());
    }
    *slot = Some(value);
}

fn set_extension(sub: &mut Subscription, url: &str, value: Option<String>) {
    let value = value.unwrap_or_default();
    match url {
        GATEWAY_SYSTEM => set_once(
            &mut sub.gateway_system,
            value,
            "extension GatewaySystem",
            &mut sub.repeated,
        ),
        SOURCE_SYSTEM => set_once(
            &mut sub.source_system,
            value,
            "extension SourceSystem",
            &mut sub.repeated,
        ),
        _ => {}
    }
}

/// Reads a JSON Subscription. Errors: not JSON, not a Subscription (400); too many extensions (422).
pub(super) fn read_json(body: &[u8]) -> Result<Subscription, Refusal> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refusal::invalid(format!("not JSON: {e}")))?;
    if v.get("resourceType").and_then(|r| r.as_str()) != Some("Subscription") {
        return Err(Refusal::invalid("resourceType is not Subscription"));
    }
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_owned);
    let mut sub = Subscription {
        reason: s("/reason").unwrap_or_default(),
        criteria: s("/criteria").unwrap_or_default(),
        channel_type: s("/channel/type").unwrap_or_default(),
        endpoint: s("/channel/endpoint"),
        payload: s("/channel/payload"),
        ..Subscription::default()
    };
    let extensions = match v.get("extension") {
        None => &[][..],
        Some(serde_json::Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(Refusal::invalid("extension is not an array")),
    };
    if extensions.len() > MAX_EXTENSIONS {
        return Err(Refusal::unprocessable(format!(
            "{} extensions, at most {MAX_EXTENSIONS}",
            extensions.len()
        )));
    }
    for e in extensions {
        let url = e.get("url").and_then(|u| u.as_str()).unwrap_or("");
        let val = e
            .get("valueOid")
            .and_then(|u| u.as_str())
            .map(str::to_owned);
        set_extension(&mut sub, url, val);
    }
    Ok(sub)
}

/// Reads an XML Subscription within `limits`. Errors: not well-formed or not a FHIR Subscription
/// (400); too many extensions (422).
pub(super) fn read_xml(body: &[u8], limits: &Limits) -> Result<Subscription, Refusal> {
    let mut r = Reader::new(body, limits).map_err(|e| Refusal::invalid(e.to_string()))?;
    let root = r.root().map_err(|e| Refusal::invalid(e.to_string()))?;
    if !root.is(FHIR_NS, "Subscription") {
        return Err(Refusal::invalid(format!(
            "{} is not a FHIR Subscription",
            root.qualified()
        )));
    }
    let mut sub = Subscription::default();
    let mut extensions = 0usize;
    let value = |e: &Elem<'_>| e.attr("value").unwrap_or("").trim().to_owned();
    let mut reason = None;
    let mut criteria = None;
    let mut channels = 0usize;
    let mut channel_type = None;
    let read = (|| -> Result<Result<(), Refusal>, XmlError> {
        while let Some(c) = r.child(&root)? {
            if c.ns.uri() != FHIR_NS {
                continue;
            }
            match c.local {
                "reason" => set_once(&mut reason, value(&c), "reason", &mut sub.repeated),
                "criteria" => set_once(&mut criteria, value(&c), "criteria", &mut sub.repeated),
                "channel" => {
                    channels += 1;
                    while let Some(t) = r.child(&c)? {
                        if t.ns.uri() != FHIR_NS {
                            continue;
                        }
                        let slot = match t.local {
                            "type" => &mut channel_type,
                            "endpoint" => &mut sub.endpoint,
                            "payload" => &mut sub.payload,
                            _ => continue,
                        };
                        set_once(
                            slot,
                            value(&t),
                            &format!("channel.{}", t.local),
                            &mut sub.repeated,
                        );
                    }
                }
                "extension" => {
                    extensions += 1;
                    if extensions > MAX_EXTENSIONS {
                        return Ok(Err(Refusal::unprocessable(format!(
                            "more than {MAX_EXTENSIONS} extensions"
                        ))));
                    }
                    let url = c.attr("url").unwrap_or("").trim().to_owned();
                    let mut v = None;
                    while let Some(x) = r.child(&c)? {
                        if x.is(FHIR_NS, "valueOid") {
                            v = Some(value(&x));
                        }
                    }
                    set_extension(&mut sub, &url, v);
                }
                _ => {}
            }
        }
        Ok(Ok(()))
    })();
    read.map_err(|e| Refusal::invalid(e.to_string()))??;
    if channels > 1 {
        sub.repeated.get_or_insert_with(|| "channel".to_owned());
    }
    sub.reason = reason.unwrap_or_default();
    sub.criteria = criteria.unwrap_or_default();
    sub.channel_type = channel_type.unwrap_or_default();
    Ok(sub)
}

/// The criteria's parameters, percent-decoded, in order. Errors (422): not `Consent?...`, a parameter
/// the simulator does not know, or one given twice.
pub(super) fn criteria_params(criteria: &str) -> Result<Vec<(String, String)>, Refusal> {
    let Some(q) = criteria.trim().strip_prefix("Consent?") else {
        return Err(Refusal::unprocessable("criteria must start with Consent?"));
    };
    let mut m: Vec<(String, String)> = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let (k, v) = (dec(k), dec(v));
        if !["_query", "patientid", "providerid", "providertype"].contains(&k.as_str()) {
            return Err(Refusal::unprocessable(format!(
                "criteria parameter {k:?} is not supported"
            )));
        }
        if m.iter().any(|(x, _)| *x == k) {
            return Err(Refusal::unprocessable(format!(
                "criteria parameter {k} given more than once"
            )));
        }
        m.push((k, v));
    }
    Ok(m)
}

/// The value of criteria parameter `name`.
pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Checks a notification endpoint: an absolute `https://` URL with a host and without userinfo.
fn check_endpoint(endpoint: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("channel.endpoint {endpoint:?} is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "channel.endpoint must be https://, not {}://",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("channel.endpoint must not carry userinfo".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("channel.endpoint has no host".into());
    }
    Ok(url.to_string())
}

/// Checks a read Subscription and its criteria and makes the registration it asks for (id left empty).
/// `request_payload` is the format of the request, used when `channel.payload` is absent. Errors (422)
/// name the first rule broken.
pub(super) fn registration(
    sub: Subscription,
    params: &[(String, String)],
    provider_types: &[FacilityType],
    request_payload: NotificationPayload,
) -> Result<Registration, Refusal> {
    let no = |m: String| Refusal::unprocessable(m);
    if let Some(what) = &sub.repeated {
        return Err(no(format!("{what} given more than once")));
    }
    if sub.reason != "OTV" {
        return Err(no("reason must be OTV".into()));
    }
    if param(params, "_query") != Some("otv") {
        return Err(no("criteria must have _query=otv".into()));
    }
    for p in ["patientid", "providerid", "providertype"] {
        if param(params, p).is_none_or(str::is_empty) {
            return Err(no(format!("criteria must have {p}")));
        }
    }
    let patient: Bsn = param(params, "patientid")
        .unwrap_or_default()
        .parse()
        .map_err(|e| no(format!("criteria patientid: {e}")))?;
    let holder: Ura = param(params, "providerid")
        .unwrap_or_default()
        .parse()
        .map_err(|e| no(format!("criteria providerid: {e}")))?;
    let provider_type: FacilityType = param(params, "providertype")
        .unwrap_or_default()
        .parse()
        .map_err(|e| no(format!("criteria providertype: {e}")))?;
    if !provider_types.contains(&provider_type) {
        return Err(no(format!(
            "criteria providertype {provider_type} is not a known facility type"
        )));
    }
    if sub.channel_type != "rest-hook" {
        return Err(no("channel.type must be rest-hook".into()));
    }
    let endpoint = check_endpoint(sub.endpoint.as_deref().unwrap_or("")).map_err(no)?;
    let payload = match sub.payload.as_deref().map(str::trim) {
        None | Some("") => request_payload,
        Some("application/fhir+xml") => NotificationPayload::Xml,
        Some("application/fhir+json") => NotificationPayload::Json,
        Some(other) => {
            return Err(no(format!(
                "channel.payload {other:?} is not application/fhir+xml or application/fhir+json"
            )));
        }
    };
    let Some(gw) = sub.gateway_system.as_deref() else {
        return Err(no("extension GatewaySystem (valueOid) is required".into()));
    };
    let home_community_id: HomeCommunityId = gw
        .parse()
        .map_err(|e| no(format!("extension GatewaySystem: {e}")))?;
    if let Some(s) = &sub.source_system
        && !s.starts_with("urn:oid:")
    {
        return Err(no("extension SourceSystem must be urn:oid:...".into()));
    }
    Ok(Registration {
        id: String::new(),
        patient,
        holder,
        provider_type: Some(provider_type),
        home_community_id,
        source_id: sub.source_system,
        category: None,
        endpoint: Some(endpoint),
        payload,
    })
}
