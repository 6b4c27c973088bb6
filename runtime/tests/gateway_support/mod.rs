//! Helpers of the gateway tests: loopback worlds of hospitals ([`duo_testkit::demo::world`]: a CA, a Mitz
//! simulator, community simulators and one DUO gateway per hospital, all over mutual TLS), SOAP requests
//! written and answers read by the ihe codec, the JSON timeline, `/metrics` and the audit files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duo_runtime::audit::AuditRecord;
use duo_runtime::consent::Decision;
use duo_runtime::ihe::mtom::{self, MtomLimits};
use duo_runtime::ihe::query::{AdhocQuery, AdhocQueryRequest, AdhocQueryResponse, ReturnType};
use duo_runtime::ihe::query::{StoredQuery, param};
use duo_runtime::ihe::retrieve::RetrieveDocumentSetResponse;
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::xua::{UnsignedAssertions, XuaAssertion};
use duo_runtime::ihe::xua_dsig::XmlDsigSigner;
use duo_runtime::ihe::{Fault, Message, SoapError, read_soap, write_soap};
use duo_runtime::model::{Bsn, Requester, Ura};
use duo_runtime::tls::TlsMaterial;
use duo_runtime::xml::Limits;
use duo_testkit::sim::faults::SimControl;
use serde_json::Value;

pub use duo_runtime::config::LocalizationMode;
pub use duo_testkit::demo::world::{self, Hospital, Kind, Options, Spec, World};

/// `urn:oasis:names:tc:ebxml-regrep:StatusType:Approved`.
pub const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";

/// A hospital of a test world.
pub fn spec(key: &str, kind: Kind, studies: usize, consent: Decision) -> Spec {
    let n = key.as_bytes()[0] - b'A' + 1;
    Spec {
        key: key.into(),
        name: format!("Ziekenhuis {key}"),
        ura: format!("1000000{n}").parse().unwrap(),
        facility_type: "V6".parse().unwrap(),
        kind,
        studies,
        consent,
    }
}

/// A world of these hospitals (no shared study), the demo's patient and seed, `localization`, a
/// deadline of 5 s per community.
pub fn options(hospitals: Vec<Spec>, localization: LocalizationMode) -> Options {
    Options {
        hospitals,
        shared_study: None,
        localization,
        ..Options::demo()
    }
}

/// Builds a world, panicking with the failed step.
pub async fn build(opts: Options) -> World {
    world::build(opts).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A radiologist of hospital `i` (UZI number `90000000<i+1>`, role 01.015).
pub fn requester(w: &World, i: usize) -> Requester {
    requester_with(w, i, &format!("90000000{}", i + 1), "01.015")
}

/// A professional of hospital `i` with this UZI number and role.
pub fn requester_with(w: &World, i: usize, uzi: &str, role: &str) -> Requester {
    let s = &w.hospitals[i].spec;
    Requester {
        uzi: uzi.parse().unwrap(),
        role: role.parse().unwrap(),
        ura: s.ura.clone(),
        facility_type: s.facility_type.clone(),
        purpose_of_use: Default::default(),
        name: Some(format!("Dr. {uzi}")),
    }
}

/// The same requester, speaking for another organisation.
pub fn for_organisation(r: &Requester, ura: &Ura) -> Requester {
    Requester {
        ura: ura.clone(),
        ..r.clone()
    }
}

/// What came back over HTTP.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    pub elapsed: Duration,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A query response (HTTP 200, the response Action of `tx`).
    pub fn query(&self, tx: Transaction) -> AdhocQueryResponse {
        assert_eq!(self.status, 200, "{}", self.text());
        let (h, r) = read_soap::<AdhocQueryResponse>(&self.body, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}: {}", self.text()));
        assert_eq!(h.action, tx.response_action());
        r
    }

    /// A retrieve response (any encoding) with every document resolved; HTTP 200, Action of `tx`.
    pub fn retrieve(&self, tx: Transaction) -> RetrieveDocumentSetResponse {
        assert_eq!(self.status, 200, "{}", self.text());
        let (h, r) = mtom::read_retrieve_response(
            &self.content_type,
            self.body.clone(),
            &MtomLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}: {}", self.text()));
        assert_eq!(h.action, tx.response_action());
        r
    }

    /// The SOAP fault of the answer.
    pub fn fault(&self) -> Fault {
        let (root, _) = mtom::soap_envelope(
            &self.content_type,
            self.body.clone(),
            &MtomLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}: {}", self.text()));
        match read_soap::<AdhocQueryResponse>(&root, &Limits::default()) {
            Err(SoapError::Fault(f)) => f,
            other => panic!("expected a SOAP fault, got {other:?}"),
        }
    }
}

async fn answer(resp: reqwest::Response, started: Instant) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await.unwrap();
    Answer {
        status,
        content_type,
        body,
        elapsed: started.elapsed(),
    }
}

/// An HTTPS client presenting hospital `i`'s gateway certificate (a peer gateway, or the hospital itself).
pub fn gateway_client(w: &World, i: usize) -> reqwest::Client {
    TlsMaterial::load(&w.hospitals[i].config.server.tls)
        .unwrap()
        .http_client(Duration::from_secs(5))
        .unwrap()
        .into()
}

/// An HTTPS client of hospital `i`'s viewer front end (local consumer of its gateway).
pub fn front_end(w: &World, i: usize) -> reqwest::Client {
    w.front_end_client(i).unwrap().into()
}

/// The `wsse:Security` header block with an XUA assertion for `requester` about `patient`.
pub fn xua(requester: &Requester, patient: Option<&Bsn>, audience: &str) -> String {
    let mut a = XuaAssertion::new(
        requester.clone(),
        "urn:oid:2.16.528.1.1007.99.1",
        audience,
        jiff::Timestamp::now(),
    );
    a.patient = patient.cloned();
    a.security_header(&UnsignedAssertions).unwrap()
}

/// The signer of hospital `i`'s gateway: its server certificate and key, as the gateway signs by default.
pub fn signer_of(w: &World, i: usize) -> XmlDsigSigner {
    let (cert, key) = w.hospitals[i].config.xua_signing_files();
    XmlDsigSigner::from_files(cert, key).unwrap()
}

/// The assertion hospital `from`'s gateway would issue for `requester` about `patient` to `audience`
/// (its issuer, valid 10 minutes from now), unsigned.
pub fn assertion_of(
    w: &World,
    from: usize,
    requester: &Requester,
    patient: Option<&Bsn>,
    audience: &str,
) -> XuaAssertion {
    let mut a = XuaAssertion::new(
        requester.clone(),
        w.hospitals[from].config.xua_issuer(),
        audience,
        jiff::Timestamp::now(),
    );
    a.patient = patient.cloned();
    a
}

/// The `wsse:Security` header block with an XUA assertion for `requester` about `patient`, issued and
/// signed as hospital `from`'s gateway does.
pub fn signed_xua(
    w: &World,
    from: usize,
    requester: &Requester,
    patient: Option<&Bsn>,
    audience: &str,
) -> String {
    assertion_of(w, from, requester, patient, audience)
        .security_header(&signer_of(w, from))
        .unwrap()
}

/// POSTs `body` as a `tx` request (plain SOAP 1.2) with these header blocks.
pub async fn soap<T: Message>(
    client: &reqwest::Client,
    url: &str,
    tx: Transaction,
    blocks: Vec<String>,
    body: &T,
) -> Answer {
    let mut h = SoapHeader::request(tx.request_action(), Some(url));
    h.other = blocks;
    let started = Instant::now();
    let resp = client
        .post(url)
        .header(
            "content-type",
            format!(
                "application/soap+xml; charset=UTF-8; action=\"{}\"",
                tx.request_action()
            ),
        )
        .body(write_soap(&h, body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    answer(resp, started).await
}

/// The gateway path of a transaction.
pub fn path(tx: Transaction) -> &'static str {
    match tx {
        Transaction::Iti18 => "/xds/iti18",
        Transaction::Iti43 => "/xds/iti43",
        Transaction::Rad69 => "/xdsi/rad69",
        Transaction::Iti38 => "/xca/iti38",
        Transaction::Iti39 => "/xca/iti39",
        Transaction::Rad75 => "/xcai/rad75",
    }
}

/// Sends `body` as `tx` to hospital `to`'s gateway from hospital `from`'s gateway certificate, with an
/// XUA assertion of `requester` about `patient` signed as `from`'s gateway signs. Responding-side
/// transactions (ITI-38/39, RAD-75).
pub async fn to_gateway<T: Message>(
    w: &World,
    from: usize,
    to: usize,
    tx: Transaction,
    requester: &Requester,
    patient: Option<&Bsn>,
    body: &T,
) -> Answer {
    let url = format!("{}{}", w.hospitals[to].gateway_url(), path(tx));
    let block = signed_xua(
        w,
        from,
        requester,
        patient,
        &w.hospitals[to].home.to_string(),
    );
    soap(&gateway_client(w, from), &url, tx, vec![block], body).await
}

/// Sends `body` as `tx` to hospital `i`'s gateway from its viewer front end (initiating-side
/// transactions ITI-18/43, RAD-69), with an XUA assertion of `requester` when given.
pub async fn local<T: Message>(
    w: &World,
    i: usize,
    tx: Transaction,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    body: &T,
) -> Answer {
    let url = format!("{}{}", w.hospitals[i].gateway_url(), path(tx));
    let blocks = requester
        .map(|r| vec![xua(r, patient, &w.hospitals[i].home.to_string())])
        .unwrap_or_default();
    soap(&front_end(w, i), &url, tx, blocks, body).await
}

/// FindDocuments (Approved) for `patient`, optionally naming a community in `@home`.
pub fn find_documents(patient: &Bsn, home: Option<&str>, rt: ReturnType) -> AdhocQueryRequest {
    let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
    q.home = home.map(|h| h.parse().unwrap());
    q.set_single(param::DE_PATIENT_ID, &patient.to_cx());
    q.add_list(param::DE_STATUS, &[APPROVED]);
    AdhocQueryRequest::new(q, rt)
}

/// GetDocuments by uniqueId, optionally naming a community in `@home`.
pub fn get_documents(unique_ids: &[&str], home: Option<&str>) -> AdhocQueryRequest {
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.home = home.map(|h| h.parse().unwrap());
    q.add_list(param::DE_UNIQUE_ID, unique_ids);
    AdhocQueryRequest::new(q, ReturnType::LeafClass)
}

/// `GET /api/v1/patients/{bsn}/timeline` at hospital `i`'s gateway from its front end, as `requester`.
pub async fn timeline(w: &World, i: usize, requester: &Requester, bsn: &str) -> Answer {
    timeline_with(&front_end(w, i), w, i, requester, bsn).await
}

/// [`timeline`] over a given client (to share its connection pool).
pub async fn timeline_with(
    client: &reqwest::Client,
    w: &World,
    i: usize,
    requester: &Requester,
    bsn: &str,
) -> Answer {
    let url = format!(
        "{}/api/v1/patients/{bsn}/timeline",
        w.hospitals[i].gateway_url()
    );
    let started = Instant::now();
    let resp = client
        .get(&url)
        .header("X-DUO-Requester-UZI", requester.uzi.as_str())
        .header("X-DUO-Requester-Role", requester.role.as_str())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    answer(resp, started).await
}

/// Study Instance UIDs on a timeline, with the homeCommunityIds of their sources.
pub fn studies(t: &Value) -> BTreeMap<String, Vec<String>> {
    t["studies"]
        .as_array()
        .unwrap_or_else(|| panic!("no studies: {t}"))
        .iter()
        .map(|s| {
            (
                s["studyInstanceUid"].as_str().unwrap().to_owned(),
                s["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["homeCommunityId"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// (errorCode, location) of each error on a timeline.
pub fn timeline_errors(t: &Value) -> Vec<(String, String)> {
    t["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["errorCode"].as_str().unwrap().to_owned(),
                e["location"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// (errorCode, location) of each error of a response.
pub fn errors(e: &[duo_runtime::ihe::RegistryError]) -> Vec<(String, String)> {
    e.iter()
        .map(|e| {
            (
                e.error_code.as_str().to_owned(),
                e.location.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// The Study Instance UIDs seeded into hospital `i`'s community.
pub fn seeded(w: &World, i: usize) -> Vec<String> {
    w.hospitals[i]
        .studies
        .iter()
        .map(|s| s.study_instance_uid.clone())
        .collect()
}

/// The `/metrics` text of hospital `i`'s gateway.
pub async fn metrics_text(h: &Hospital) -> String {
    let r = duo_runtime::tls::plain_http_client(Duration::from_secs(5))
        .unwrap()
        .get(format!("{}/metrics", h.ops_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every pair of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => continue,
        };
        let (n, l) = match head.find('{') {
            Some(p) => (&head[..p], &head[p + 1..head.len() - 1]),
            None => (head, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<(&str, &str)> = l
            .split(',')
            .filter(|s| !s.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|want| pairs.contains(want)) {
            sum += value.parse::<f64>().unwrap();
        }
    }
    sum
}

/// [`metric`] read from hospital `h`'s gateway.
pub async fn metric_of(h: &Hospital, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&metrics_text(h).await, name, labels)
}

/// The audit records of hospital `h`'s gateway so far.
pub fn audit(h: &Hospital) -> Vec<AuditRecord> {
    std::fs::read_to_string(&h.audit_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Requests seen by everyone outside a gateway: each hospital's community simulator (per endpoint
/// total), the Mitz simulator, and each gateway's inbound requests (`duo_requests_total`).
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub sims: Vec<u64>,
    pub gateways: Vec<f64>,
    pub mitz: (u64, u64),
}

pub async fn traffic(w: &World) -> Traffic {
    let mut gateways = Vec::new();
    for h in &w.hospitals {
        gateways.push(metric_of(h, "duo_requests_total", &[]).await);
    }
    let s = w.mitz.stats();
    Traffic {
        sims: w
            .hospitals
            .iter()
            .map(|h| h.control.total_requests())
            .collect(),
        gateways,
        mitz: (s.closed_questions, s.open_questions),
    }
}

/// Clears the request logs of every community simulator.
pub fn clear_logs(w: &World) {
    for h in &w.hospitals {
        h.control.clear_log();
    }
}

/// The request counts of a simulator per endpoint, for messages.
pub fn log_of(c: &SimControl) -> Vec<(String, u64)> {
    use duo_testkit::sim::faults::Endpoint;
    Endpoint::ALL
        .iter()
        .map(|e| (format!("{e:?}"), c.requests(*e)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Starts another Mitz simulator with `config`, with a certificate of the world's CA for `localhost`.
pub async fn start_mitz(
    w: &World,
    name: &str,
    config: duo_testkit::sim::mitz::MitzSimConfig,
) -> duo_testkit::sim::mitz::MitzSim {
    let (_, tls) = w
        .issue(name, world::plain_spec("Mitz test", &["localhost"]))
        .unwrap();
    duo_testkit::sim::mitz::start(config, "127.0.0.1:0".parse().unwrap(), &tls)
        .await
        .unwrap()
}

/// Points hospital `i`'s gateway at the Mitz simulator listening on `port` (closed and open question)
/// with this deadline and cache lifetime.
pub async fn use_mitz(w: &mut World, i: usize, port: u16, deadline_ms: u64, cache_seconds: u64) {
    w.reconfigure(i, |c| {
        let m = c.mitz.as_mut().unwrap();
        m.closed_question_url = format!("https://localhost:{port}/geslotenautorisatievraag/xacml3");
        m.open_question_url = Some(format!("https://localhost:{port}/openautorisatievraag"));
        m.deadline_ms = deadline_ms;
        m.cache_seconds = cache_seconds;
    })
    .await
    .unwrap();
}

/// A remote community entry for hospital `i`'s TLB node itself (its simulator, not its gateway): the
/// initiating gateway then talks ITI-38/39 and RAD-75 to the node directly.
pub fn node_community(
    w: &World,
    i: usize,
    deadline_ms: u64,
) -> duo_runtime::config::RemoteCommunity {
    let h = &w.hospitals[i];
    let duo_runtime::config::LocalBackend::Xca(x) = &h.config.local else {
        panic!("hospital {i} is not on TLB")
    };
    duo_runtime::config::RemoteCommunity {
        home_community_id: x.home_community_id.clone(),
        name: format!("{} node", h.spec.name),
        organizations: vec![duo_runtime::config::CommunityOrganization {
            ura: h.spec.ura.clone(),
            name: h.spec.name.clone(),
        }],
        query_url: x.query_url.clone(),
        retrieve_url: x.retrieve_url.clone(),
        imaging_retrieve_url: x.imaging_retrieve_url.clone(),
        connect_to: None,
        certificate_ura: None,
        trusted_issuers: Vec::new(),
        deadline_ms,
        fronted_communities: Vec::new(),
    }
}
