//! DICOMweb QIDO-RS and WADO-RS (DICOM PS3.18) over a simulated community's imaging document sources,
//! as a TLB node or PACS offers them.
//!
//! Routes (all `GET`, below [`super::tlb::paths::DICOMWEB`], i.e. `/dicomweb`):
//!
//! | Path | Service | Answer |
//! |---|---|---|
//! | `/studies` | QIDO-RS Search For Studies | `application/dicom+json` array of study attributes |
//! | `/studies/{study}/series` | QIDO-RS Search For Series | series attributes |
//! | `/studies/{study}/instances` | QIDO-RS Search For Instances (study level) | instance attributes |
//! | `/studies/{study}/series/{series}/instances` | QIDO-RS Search For Instances | instance attributes |
//! | `/studies/{study}` | WADO-RS Retrieve Study | `multipart/related; type="application/dicom"` |
//! | `/studies/{study}/series/{series}` | WADO-RS Retrieve Series | same |
//! | `/studies/{study}/series/{series}/instances/{instance}` | WADO-RS Retrieve Instance | same |
//!
//! QIDO matching keys (by keyword or tag): PatientID, StudyInstanceUID (comma-separated list),
//! AccessionNumber, StudyDate (`YYYYMMDD`, `A-B`, `A-`, `-B`), ModalitiesInStudy, PatientName (wildcards
//! `*` `?`), Modality, SeriesInstanceUID, SOPInstanceUID; `limit` and `offset`. Other keys are ignored
//! (PS3.18 8.3.4.1 lets a server ignore keys it does not support). Attributes are written in the DICOM
//! JSON Model (PS3.18 F.2): tag keys, `vr`, `Value` arrays, PN as `{"Alphabetic": ...}`, IS as numbers.
//! No match answers `204 No Content` (PS3.18 8.3.4.4.1) or, per [`QidoEmpty::EmptyArray`], `200` with
//! `[]` (as Orthanc does and CP-2473 proposes).
//!
//! WADO-RS answers each instance as one part `application/dicom; transfer-syntax=<uid>`. The `Accept`
//! header may name `transfer-syntax=<uid>` (that encoding, else `406`), `*` (the stored one); without it
//! Explicit VR Little Endian is preferred and otherwise the stored encoding is sent (the simulator does not
//! transcode). Unknown UIDs answer `404`.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::dicom::{StoredInstance, transfer_syntax};
use crate::ihe::mtom::ContentType;

use super::faults::Endpoint;
use super::tlb::TlbState;
use super::wire;
use crate::server::listener::PeerCertificate;

/// What a QIDO-RS search with no match answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QidoEmpty {
    /// `204 No Content`, as PS3.18 8.3.4.4.1 says.
    #[default]
    NoContent,
    /// `200 OK` with `[]`.
    EmptyArray,
}

/// The DICOMweb routes, to be nested under a prefix.
pub(crate) fn router() -> Router<TlbState> {
    Router::new()
        .route("/studies", get(search_studies))
        .route("/studies/{study}", get(retrieve_study))
        .route("/studies/{study}/series", get(search_series))
        .route("/studies/{study}/instances", get(search_study_instances))
        .route("/studies/{study}/series/{series}", get(retrieve_series))
        .route(
            "/studies/{study}/series/{series}/instances",
            get(search_instances),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            get(retrieve_instance),
        )
}

/// Query parameters in order, percent- and `+`-decoded.
fn params(raw: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The value of a matching key given by keyword or by tag (`00100020`).
fn key<'a>(p: &'a [(String, String)], keyword: &str, tag: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k == keyword || k.eq_ignore_ascii_case(tag))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// DICOM wildcard matching (`*` any run, `?` one character), PS3.4 C.2.2.2.4.
fn wildcard(pattern: &str, value: &str) -> bool {
    fn m(p: &[char], v: &[char]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], v) || (!v.is_empty() && m(p, &v[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &v[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    m(&p, &v)
}

fn uid_list_matches(filter: Option<&str>, value: &str) -> bool {
    filter.is_none_or(|f| f.split(['\\', ',']).any(|u| u.trim() == value))
}

fn text_matches(filter: Option<&str>, value: &str) -> bool {
    filter.is_none_or(|f| wildcard(f, value))
}

/// DA range matching: `A`, `A-B`, `A-`, `-B` (PS3.4 C.2.2.2.5).
fn date_matches(filter: Option<&str>, value: &str) -> bool {
    let Some(f) = filter else { return true };
    match f.split_once('-') {
        None => f == value,
        Some((a, b)) => {
            !value.is_empty()
                && (a.is_empty() || value >= a.trim())
                && (b.is_empty() || value <= b.trim())
        }
    }
}

fn limit_offset(p: &[(String, String)]) -> (usize, usize) {
    let n = |k: &str| {
        p.iter()
            .find(|(x, _)| x == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    (n("limit").unwrap_or(usize::MAX), n("offset").unwrap_or(0))
}

fn attr(vr: &str, values: Vec<Value>) -> Value {
    if values.is_empty() {
        json!({ "vr": vr })
    } else {
        json!({ "vr": vr, "Value": values })
    }
}

fn s(vr: &str, v: &str) -> Value {
    if v.is_empty() {
        attr(vr, Vec::new())
    } else {
        attr(vr, vec![Value::String(v.to_owned())])
    }
}

fn pn(v: &str) -> Value {
    if v.is_empty() {
        attr("PN", Vec::new())
    } else {
        attr("PN", vec![json!({ "Alphabetic": v })])
    }
}

fn is(v: Option<i64>) -> Value {
    attr("IS", v.map(|n| vec![json!(n)]).unwrap_or_default())
}

/// A DICOM JSON object with keys in tag order (PS3.18 F.2.1.1 lists attributes in tag order).
fn object(attrs: Vec<(&str, Value)>) -> Value {
    let sorted: BTreeMap<&str, Value> = attrs.into_iter().collect();
    let mut m = Map::new();
    for (k, v) in sorted {
        m.insert(k.to_owned(), v);
    }
    Value::Object(m)
}

/// Every instance of the node (clones are cheap: encodings are reference-counted).
fn all_instances(st: &TlbState) -> Vec<StoredInstance> {
    let mut out = Vec::new();
    st.store.for_each_instance(|_, i| out.push(i.clone()));
    out
}

/// The URL prefix of this service as the client addressed it (Host header; `https` when the request came
/// over the mutual-TLS listener), for RetrieveURL (0008,1190).
fn base_url(tls: bool, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}{}", super::tlb::paths::DICOMWEB)
}

fn qido_response(st: &TlbState, results: Vec<Value>) -> Response {
    if results.is_empty() && st.config.qido_empty == QidoEmpty::NoContent {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = serde_json::to_vec(&Value::Array(results)).unwrap_or_else(|_| b"[]".to_vec());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        body,
    )
        .into_response()
}

/// `application/dicom+json`, `application/json` or anything matching them; `406` otherwise.
fn qido_accept(headers: &HeaderMap) -> bool {
    media_ranges(headers).is_none_or(|ranges| {
        ranges.iter().any(|ct| {
            matches!(
                ct.mime.as_str(),
                "application/dicom+json" | "application/json" | "application/*" | "*/*"
            )
        })
    })
}

/// The `Accept` media ranges, or `None` when there is no Accept header (anything goes).
fn media_ranges(headers: &HeaderMap) -> Option<Vec<ContentType>> {
    let mut out = Vec::new();
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        any = true;
        let Ok(v) = v.to_str() else { continue };
        // commas separate ranges except inside quoted parameter values
        let mut depth_quote = false;
        let mut start = 0;
        let bytes = v.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            match b {
                b'"' => depth_quote = !depth_quote,
                b',' if !depth_quote => {
                    if let Ok(ct) = ContentType::parse(&v[start..i]) {
                        out.push(ct);
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
        if let Ok(ct) = ContentType::parse(&v[start..]) {
            out.push(ct);
        }
    }
    any.then_some(out)
}

/// What a WADO-RS request accepts: `Ok(None)` the default, `Ok(Some(ts))` a transfer syntax UID or `*`;
/// `Err(())` nothing this server can send.
fn wado_accept(headers: &HeaderMap) -> Result<Option<String>, ()> {
    let Some(ranges) = media_ranges(headers) else {
        return Ok(None);
    };
    for ct in ranges {
        let ok = match ct.mime.as_str() {
            "multipart/related" => ct
                .param("type")
                .is_none_or(|t| t.trim().eq_ignore_ascii_case("application/dicom")),
            "multipart/*" | "*/*" => true,
            _ => false,
        };
        if ok {
            return Ok(ct.param("transfer-syntax").map(|t| t.trim().to_owned()));
        }
    }
    Err(())
}

/// A QIDO-RS request: recorded, faults applied, Accept checked; its parameters and the base URL.
async fn qido(
    st: &TlbState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    tls: Option<Extension<PeerCertificate>>,
) -> Result<(Vec<(String, String)>, String), Box<Response>> {
    let (_faults, early) = wire::intake(
        &st.control,
        Endpoint::Qido,
        method,
        uri,
        headers,
        &Bytes::new(),
    )
    .await;
    if let Some(r) = early {
        return Err(Box::new(r));
    }
    if !qido_accept(headers) {
        return Err(Box::new(
            (
                StatusCode::NOT_ACCEPTABLE,
                "QIDO-RS answers application/dicom+json\n",
            )
                .into_response(),
        ));
    }
    Ok((params(uri.query()), base_url(tls.is_some(), headers)))
}

async fn search_studies(
    State(st): State<TlbState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    tls: Option<Extension<PeerCertificate>>,
) -> Response {
    let (p, base) = match qido(&st, &method, &uri, &headers, tls).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    // study UID → its instances, in first-seen order
    let mut order: Vec<String> = Vec::new();
    let mut studies: BTreeMap<String, Vec<StoredInstance>> = BTreeMap::new();
    for i in all_instances(&st) {
        let uid = i.info.study_instance_uid.clone();
        if !studies.contains_key(&uid) {
            order.push(uid.clone());
        }
        studies.entry(uid).or_default().push(i);
    }
    let mut results = Vec::new();
    for uid in order {
        let Some(inst) = studies.get(&uid) else {
            continue;
        };
        let Some(first) = inst.first().map(|i| &i.info) else {
            continue;
        };
        let mut modalities: Vec<String> = Vec::new();
        let mut series: Vec<&str> = Vec::new();
        for i in inst {
            if !i.info.modality.is_empty() && !modalities.contains(&i.info.modality) {
                modalities.push(i.info.modality.clone());
            }
            if !series.contains(&i.info.series_instance_uid.as_str()) {
                series.push(&i.info.series_instance_uid);
            }
        }
        let mods_filter = key(&p, "ModalitiesInStudy", "00080061");
        if !(text_matches(key(&p, "PatientID", "00100020"), &first.patient_id)
            && uid_list_matches(key(&p, "StudyInstanceUID", "0020000D"), &uid)
            && text_matches(
                key(&p, "AccessionNumber", "00080050"),
                &first.accession_number,
            )
            && date_matches(key(&p, "StudyDate", "00080020"), &first.study_date)
            && text_matches(key(&p, "PatientName", "00100010"), &first.patient_name)
            && mods_filter.is_none_or(|f| {
                f.split(['\\', ','])
                    .any(|m| modalities.iter().any(|x| x == m.trim()))
            }))
        {
            continue;
        }
        results.push(object(vec![
            ("00080020", s("DA", &first.study_date)),
            ("00080030", s("TM", &first.study_time)),
            ("00080050", s("SH", &first.accession_number)),
            (
                "00080061",
                attr(
                    "CS",
                    modalities
                        .iter()
                        .map(|m| Value::String(m.clone()))
                        .collect(),
                ),
            ),
            ("00080090", pn(&first.referring_physician_name)),
            ("00081030", s("LO", &first.study_description)),
            ("00081190", s("UR", &format!("{base}/studies/{uid}"))),
            ("00100010", pn(&first.patient_name)),
            ("00100020", s("LO", &first.patient_id)),
            ("00100021", s("LO", &first.issuer_of_patient_id)),
            ("00100030", s("DA", &first.patient_birth_date)),
            ("00100040", s("CS", &first.patient_sex)),
            ("00180015", s("CS", &first.body_part)),
            ("0020000D", s("UI", &uid)),
            ("00200010", s("SH", &first.study_id)),
            ("00201206", is(Some(series.len() as i64))),
            ("00201208", is(Some(inst.len() as i64))),
        ]));
    }
    let (limit, offset) = limit_offset(&p);
    qido_response(&st, results.into_iter().skip(offset).take(limit).collect())
}

async fn search_series(
    State(st): State<TlbState>,
    Path(study): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    tls: Option<Extension<PeerCertificate>>,
) -> Response {
    let (p, base) = match qido(&st, &method, &uri, &headers, tls).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut order: Vec<String> = Vec::new();
    let mut series: BTreeMap<String, Vec<StoredInstance>> = BTreeMap::new();
    for i in all_instances(&st) {
        if i.info.study_instance_uid != study {
            continue;
        }
        let uid = i.info.series_instance_uid.clone();
        if !series.contains_key(&uid) {
            order.push(uid.clone());
        }
        series.entry(uid).or_default().push(i);
    }
    let mut results = Vec::new();
    for uid in order {
        let Some(inst) = series.get(&uid) else {
            continue;
        };
        let Some(first) = inst.first().map(|i| &i.info) else {
            continue;
        };
        if !(text_matches(key(&p, "Modality", "00080060"), &first.modality)
            && uid_list_matches(key(&p, "SeriesInstanceUID", "0020000E"), &uid))
        {
            continue;
        }
        results.push(object(vec![
            ("00080060", s("CS", &first.modality)),
            ("0008103E", s("LO", &first.series_description)),
            (
                "00081190",
                s("UR", &format!("{base}/studies/{study}/series/{uid}")),
            ),
            ("0020000D", s("UI", &study)),
            ("0020000E", s("UI", &uid)),
            ("00200011", is(first.series_number.map(i64::from))),
            ("00201209", is(Some(inst.len() as i64))),
        ]));
    }
    let (limit, offset) = limit_offset(&p);
    qido_response(&st, results.into_iter().skip(offset).take(limit).collect())
}

fn instance_results(
    st: &TlbState,
    base: &str,
    p: &[(String, String)],
    study: &str,
    series: Option<&str>,
) -> Vec<Value> {
    all_instances(st)
        .into_iter()
        .filter(|i| {
            i.info.study_instance_uid == study
                && series.is_none_or(|s| i.info.series_instance_uid == s)
                && uid_list_matches(
                    key(p, "SOPInstanceUID", "00080018"),
                    &i.info.sop_instance_uid,
                )
                && uid_list_matches(key(p, "SOPClassUID", "00080016"), &i.info.sop_class_uid)
        })
        .map(|i| {
            let info = &i.info;
            object(vec![
                ("00080016", s("UI", &info.sop_class_uid)),
                ("00080018", s("UI", &info.sop_instance_uid)),
                ("00080060", s("CS", &info.modality)),
                (
                    "00081190",
                    s(
                        "UR",
                        &format!(
                            "{base}/studies/{}/series/{}/instances/{}",
                            info.study_instance_uid,
                            info.series_instance_uid,
                            info.sop_instance_uid
                        ),
                    ),
                ),
                ("00083002", s("UI", &info.transfer_syntax_uid)),
                ("0020000D", s("UI", &info.study_instance_uid)),
                ("0020000E", s("UI", &info.series_instance_uid)),
                ("00200013", is(info.instance_number.map(i64::from))),
            ])
        })
        .collect()
}

async fn search_instances(
    State(st): State<TlbState>,
    Path((study, series)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    tls: Option<Extension<PeerCertificate>>,
) -> Response {
    let (p, base) = match qido(&st, &method, &uri, &headers, tls).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let results = instance_results(&st, &base, &p, &study, Some(&series));
    let (limit, offset) = limit_offset(&p);
    qido_response(&st, results.into_iter().skip(offset).take(limit).collect())
}

async fn search_study_instances(
    State(st): State<TlbState>,
    Path(study): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    tls: Option<Extension<PeerCertificate>>,
) -> Response {
    let (p, base) = match qido(&st, &method, &uri, &headers, tls).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let results = instance_results(&st, &base, &p, &study, None);
    let (limit, offset) = limit_offset(&p);
    qido_response(&st, results.into_iter().skip(offset).take(limit).collect())
}

async fn wado(
    st: &TlbState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    select: impl Fn(&StoredInstance) -> bool,
) -> Response {
    let (_faults, early) = wire::intake(
        &st.control,
        Endpoint::Wado,
        method,
        uri,
        headers,
        &Bytes::new(),
    )
    .await;
    if let Some(r) = early {
        return r;
    }
    let Ok(wanted) = wado_accept(headers) else {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "WADO-RS here answers multipart/related; type=\"application/dicom\"\n",
        )
            .into_response();
    };
    let instances: Vec<StoredInstance> = all_instances(st)
        .into_iter()
        .filter(|i| select(i))
        .collect();
    if instances.is_empty() {
        return (StatusCode::NOT_FOUND, "no such study, series or instance\n").into_response();
    }
    let mut parts = Vec::with_capacity(instances.len());
    for i in &instances {
        let enc = match wanted.as_deref() {
            Some("*") => i.encodings.first(),
            Some(ts) => i.encodings.iter().find(|e| e.transfer_syntax_uid == ts),
            None => i
                .encodings
                .iter()
                .find(|e| e.transfer_syntax_uid == transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN)
                .or(i.encodings.first()),
        };
        let Some(enc) = enc else {
            return (
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "instance {} is not available in transfer syntax {}\n",
                    i.info.sop_instance_uid,
                    wanted.as_deref().unwrap_or("")
                ),
            )
                .into_response();
        };
        parts.push((enc.transfer_syntax_uid.clone(), enc.bytes.clone()));
    }
    let boundary = format!("DUO_WADO_{}", uuid::Uuid::new_v4().simple());
    let mut chunks: Vec<Result<Bytes, std::convert::Infallible>> =
        Vec::with_capacity(parts.len() * 3 + 1);
    for (ts, bytes) in parts {
        chunks.push(Ok(Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={ts}\r\n\r\n"
        ))));
        chunks.push(Ok(bytes));
        chunks.push(Ok(Bytes::from_static(b"\r\n")));
    }
    chunks.push(Ok(Bytes::from(format!("--{boundary}--\r\n"))));
    let mut r = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "multipart/related; type=\"application/dicom\"; boundary={boundary}"
    )) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

async fn retrieve_study(
    State(st): State<TlbState>,
    Path(study): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    wado(&st, &method, &uri, &headers, |i| {
        i.info.study_instance_uid == study
    })
    .await
}

async fn retrieve_series(
    State(st): State<TlbState>,
    Path((study, series)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    wado(&st, &method, &uri, &headers, |i| {
        i.info.study_instance_uid == study && i.info.series_instance_uid == series
    })
    .await
}

async fn retrieve_instance(
    State(st): State<TlbState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    wado(&st, &method, &uri, &headers, |i| {
        i.info.study_instance_uid == study
            && i.info.series_instance_uid == series
            && i.info.sop_instance_uid == instance
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        assert!(wildcard("Jans*", "Jansen-de Vries^Eline"));
        assert!(wildcard("?ansen*", "Jansen"));
        assert!(!wildcard("Jan", "Jansen"));
        assert!(date_matches(Some("20200101-20201231"), "20200615"));
        assert!(!date_matches(Some("20200101-20201231"), "20210101"));
        assert!(date_matches(Some("-20201231"), "20200615"));
        assert!(date_matches(Some("20200615"), "20200615"));
        assert!(uid_list_matches(Some("1.2,1.3"), "1.3"));
        assert!(!uid_list_matches(Some("1.2"), "1.3"));
        assert_eq!(
            params(Some("PatientID=9%209&includefield=all&x")),
            vec![
                ("PatientID".into(), "9 9".into()),
                ("includefield".into(), "all".into()),
                ("x".into(), String::new())
            ]
        );
    }

    #[test]
    fn accept_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(wado_accept(&h), Ok(None));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.70",
            ),
        );
        assert_eq!(
            wado_accept(&h),
            Ok(Some("1.2.840.10008.1.2.4.70".to_owned()))
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("image/jpeg, multipart/related; type=application/dicom"),
        );
        assert_eq!(wado_accept(&h), Ok(None));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/dicom+xml"),
        );
        assert_eq!(wado_accept(&h), Err(()));
        assert!(!qido_accept(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/dicom+json"),
        );
        assert!(qido_accept(&h));
    }
}
