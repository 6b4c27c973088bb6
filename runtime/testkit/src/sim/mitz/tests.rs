use std::sync::Arc;

use super::env::SimEnv;
use super::*;
use crate::consent::{MitzClient, MitzError};
use crate::ihe::xua::UnsignedAssertions;
use crate::localization::LocalizationClient;
use crate::test_pki::{Pki, requester};
use duo_wire::xml::compare::{diff, tree};

fn config(yaml: &str) -> MitzSimConfig {
    MitzSimConfig::parse(yaml).unwrap()
}

fn sample(rel: &str) -> String {
    let p = format!("{}/../../testdata/mitz/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn rule_choice_prefers_the_most_specific_rule() {
    let c = config(
        r#"
consents:
  - { patient: "900186021", holder: "00000659", decision: Deny }
  - { patient: "900186021", holder: "00000659", category: GGC002, decision: Permit }
  - { patient: "900186021", holder: "00000659", requester: "00000666", decision: NotApplicable }
  - { patient: "900186021", holder: "00000659", requester: "00000777", category: GGC002, decision: Indeterminate }
  - { patient: "900186021", holder: "00000659", requester: "00000777", category: GGC002, decision: Permit }
"#,
    );
    let p = "900186021".parse().unwrap();
    let h = "00000659".parse().unwrap();
    let u = |s: &str| s.parse::<Ura>().unwrap();
    let g = |s: &str| s.parse::<DataCategory>().unwrap();
    assert_eq!(c.decide(&p, &h, &u("00000111"), None), Decision::Deny);
    assert_eq!(
        c.decide(&p, &h, &u("00000111"), Some(&g("GGC002"))),
        Decision::Permit
    );
    assert_eq!(
        c.decide(&p, &h, &u("00000666"), Some(&g("GGC002"))),
        Decision::NotApplicable,
        "requester counts more than category"
    );
    assert_eq!(
        c.decide(&p, &h, &u("00000777"), Some(&g("GGC002"))),
        Decision::Indeterminate,
        "first of equally specific rules"
    );
    assert_eq!(
        c.decide(&p, &u("00000660"), &u("00000111"), None),
        Decision::NotApplicable,
        "default"
    );
}

#[test]
fn bad_consents_files_name_the_field() {
    let e = MitzSimConfig::parse(
        "consents:\n  - { patient: \"123456789\", holder: \"00000659\", decision: Permit }\n",
    )
    .unwrap_err();
    assert!(
        e.contains("consents[0].patient") && e.contains("BSN"),
        "{e}"
    );
    let e = MitzSimConfig::parse(
        "consents:\n  - { patient: \"900186021\", holder: \"00000659\", decision: Maybe }\n",
    )
    .unwrap_err();
    assert!(e.contains("decision"), "{e}");
    let e = MitzSimConfig::parse("consent: []\n").unwrap_err();
    assert!(e.contains("consent"), "{e}");
}

#[tokio::test]
async fn the_sample_question_gets_a_decision_in_the_derived_format() {
    let env = SimEnv::start(config(
        r#"
consents:
  - { patient: "900186021", holder: "00000659", requester: "00000666", decision: Permit }
"#,
    ))
    .await;
    let http = env.client_tls.http_client(Duration::from_secs(5)).unwrap();
    // the sample request exactly as in testdata, posted as is
    let resp = http
        .post(env.sim.closed_question_url())
        .header("content-type", "application/soap+xml; charset=UTF-8")
        .body(sample("xacml/example.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    // the answer has exactly the format of the derived Permit sample
    let expected = tree(&sample("xacml/derived/xacml-response-permit.xml"));
    assert_eq!(diff(&tree(&body), &expected, "", &[]), None, "{body}");
    let got = xacml::read_closed_answer(
        body.as_bytes(),
        &crate::consent::xacml::sample_question(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(got[0].decision, Decision::Permit);
    assert_eq!(env.sim.stats().closed_questions, 1);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn the_client_reads_every_decision_of_the_simulator() {
    let env = SimEnv::start(config(
        r#"
defaultDecision: NotApplicable
consents:
  - { patient: "900186021", holder: "00000659", category: GGC002, decision: Permit }
  - { patient: "900186021", holder: "00000659", category: GGC007, decision: Deny }
  - { patient: "900186021", holder: "00000659", category: GGC012, decision: Indeterminate }
"#,
    ))
    .await;
    let client = env.client(5_000);
    let mut q = crate::consent::xacml::sample_question();
    q.categories = ["GGC002", "GGC007", "GGC012", "GGC013"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let got = client.closed_question(&q).await.unwrap();
    let d: Vec<Decision> = got.iter().map(|c| c.decision).collect();
    assert_eq!(
        d,
        vec![
            Decision::Permit,
            Decision::Deny,
            Decision::Indeterminate,
            Decision::NotApplicable
        ]
    );
    assert_eq!(got[0].status_message.as_deref(), Some("Consent granted"));
    assert_eq!(got[1].status_message.as_deref(), Some("No consent found"));
    env.sim.shutdown().await;
}

#[tokio::test]
async fn subscriptions_in_xml_and_json_are_accepted_and_checked() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    let http = env.client_tls.http_client(Duration::from_secs(5)).unwrap();
    // the sample as published, but for a patient with a valid BSN (the sample's 123456789 fails the
    // elfproef, and the simulator refuses it as Mitz would)
    let xml = sample("fhir/example_subscription.xml")
        .replace("patientid=123456789", "patientid=900186021");
    let resp = http
        .post(env.sim.subscription_url())
        .header("content-type", "application/fhir+xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("Subscription/sim-"), "{loc}");
    let body = resp.text().await.unwrap();
    assert!(body.contains("<id value=\"sim-"), "{body}");

    let json = serde_json::json!({
        "resourceType": "Subscription",
        "extension": [
            {"url": "http://fhir.nl/StructureDefinition/GatewaySystem", "valueOid": "urn:oid:2.16.528.1.1007.3.3.659.1"},
            {"url": "http://fhir.nl/StructureDefinition/SourceSystem", "valueOid": "urn:oid:2.16.528.1.1007.3.3.659.1.2"}
        ],
        "status": "requested",
        "reason": "OTV",
        "criteria": "Consent?_query=otv&patientid=900186021&providerid=00000659&providertype=V6",
        "channel": {"type": "rest-hook", "endpoint": "https://gw.example/notify", "payload": "application/fhir+json"}
    });
    let resp = http
        .post(env.sim.subscription_url())
        .header("content-type", "application/fhir+json")
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("sim-"));

    let mut bad = json.clone();
    bad["reason"] = "other".into();
    let resp = http
        .post(env.sim.subscription_url())
        .header("content-type", "application/fhir+json")
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = http
        .post(env.sim.subscription_url())
        .header("content-type", "application/fhir+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(env.sim.stats().subscriptions, 4);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn the_open_question_names_permitted_locations_only() {
    let env = SimEnv::start(config(
        r#"
consents:
  - { patient: "900186021", holder: "00000659", decision: Permit }
  - { patient: "900186021", holder: "00000660", decision: Deny }
  - { patient: "900186021", holder: "00000661", requester: "00000666", decision: Permit }
locations:
  - { patient: "900186021", homeCommunityId: "urn:oid:2.16.528.1.1007.3.3.659.1", holder: "00000659", sourceId: "urn:oid:1.2.3.4" }
  - { patient: "900186021", homeCommunityId: "urn:oid:2.16.528.1.1007.3.3.660.1", holder: "00000660" }
  - { patient: "900186021", homeCommunityId: "urn:oid:2.16.528.1.1007.3.3.661.1", holder: "00000661" }
"#,
    ))
    .await;
    let loc = LocalizationClient::new(
        env.client(5_000),
        "urn:oid:2.16.528.1.1007.3.3.666.1",
        Arc::new(UnsignedAssertions),
    );
    let patient: Bsn = "900186021".parse().unwrap();
    let got = loc.locate(&patient, &requester("00000666")).await.unwrap();
    let ids: Vec<String> = got
        .iter()
        .map(|l| l.home_community_id.to_string())
        .collect();
    assert_eq!(
        ids,
        vec![
            "urn:oid:2.16.528.1.1007.3.3.659.1",
            "urn:oid:2.16.528.1.1007.3.3.661.1"
        ]
    );
    assert_eq!(got[0].holder_ura.as_ref().unwrap().as_str(), "00000659");
    assert_eq!(got[0].source_id.as_deref(), Some("urn:oid:1.2.3.4"));
    assert_eq!(
        got[0].corresponding_patient_id.as_ref().unwrap().extension,
        "900186021"
    );
    // another organisation sees only the location permitted for everyone
    let other = loc.locate(&patient, &requester("00000777")).await.unwrap();
    assert_eq!(other.len(), 1);
    // a patient without locations: an empty answer, not an error
    let none = loc
        .locate(&"111222333".parse().unwrap(), &requester("00000666"))
        .await
        .unwrap();
    assert!(none.is_empty());
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_subscription_registers_a_location() {
    let env = SimEnv::start(config(
        r#"
consents:
  - { patient: "900186021", holder: "00000659", decision: Permit }
"#,
    ))
    .await;
    let http = env.client_tls.http_client(Duration::from_secs(5)).unwrap();
    let json = serde_json::json!({
        "resourceType": "Subscription",
        "extension": [
            {"url": "http://fhir.nl/StructureDefinition/GatewaySystem", "valueOid": "urn:oid:2.16.528.1.1007.3.3.659.1"}
        ],
        "status": "requested", "reason": "OTV",
        "criteria": "Consent?_query=otv&patientid=900186021&providerid=00000659&providertype=V6",
        "channel": {"type": "rest-hook", "endpoint": "https://gw.example/notify"}
    });
    let resp = http
        .post(env.sim.subscription_url())
        .header("content-type", "application/fhir+json")
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let loc = LocalizationClient::new(
        env.client(5_000),
        "urn:oid:1.2.3",
        Arc::new(UnsignedAssertions),
    );
    let got = loc
        .locate(&"900186021".parse().unwrap(), &requester("00000666"))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].home_community_id.to_string(),
        "urn:oid:2.16.528.1.1007.3.3.659.1"
    );
    env.sim.shutdown().await;
}

#[tokio::test]
async fn an_open_question_without_assertion_is_refused() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    let client = env.client(5_000);
    // the envelope with a header block that is not WS-Security
    let envelope = crate::localization::write_location_query(
        &"900186021".parse().unwrap(),
        "<x:Other xmlns:x=\"urn:x\"/>".into(),
        &env.sim.open_question_url(),
    );
    let e = client
        .post(&env.sim.open_question_url(), envelope)
        .await
        .unwrap_err();
    match e {
        MitzError::Http { status, detail } => {
            assert_eq!(status, 400);
            assert!(detail.contains("WS-Security"), "{detail}");
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_client_without_a_trusted_certificate_is_refused() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    let stranger = Pki::new("Other CA");
    let mut tls = stranger.material(&stranger.leaf("intruder", &["intruder"]));
    // the intruder trusts the simulator, but the simulator does not trust the intruder
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        rustls::pki_types::CertificateDer::pem_slice_iter(env.pki.ca_pem.as_bytes())
            .map(|c| c.unwrap()),
    );
    tls.roots = Arc::new(roots);
    let client = MitzClient::with_tls(&env.mitz_config(3_000, 0), &tls).unwrap();
    let q = crate::consent::xacml::sample_question();
    let e = client.closed_question(&q).await.unwrap_err();
    assert!(matches!(e, MitzError::Tls(_)), "{e:?}");
    assert_eq!(env.sim.stats().closed_questions, 0);
    env.sim.shutdown().await;
}

// ---- registrations, down/up, notifications (issue 14, item 4) ----

use super::env::{NotificationReceiver, Received};
use super::subscription::FHIR_NS;
use duo_wire::xml::compare::Node;

const PATIENT: &str = "900186021";
const HOLDER: &str = "00000659";

/// A JSON Subscription for (patient, holder, providertype, GatewaySystem) with its channel endpoint and
/// payload.
fn sub_json(
    patient: &str,
    holder: &str,
    ptype: &str,
    gateway: &str,
    endpoint: &str,
    payload: &str,
) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Subscription",
        "extension": [
            {"url": "http://fhir.nl/StructureDefinition/GatewaySystem", "valueOid": gateway},
            {"url": "http://fhir.nl/StructureDefinition/SourceSystem", "valueOid": format!("{gateway}.1")}
        ],
        "status": "requested",
        "reason": "OTV",
        "criteria": format!("Consent?_query=otv&patientid={patient}&providerid={holder}&providertype={ptype}"),
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": payload}
    })
}

/// The sample XML Subscription for (patient, holder, Z3), with `endpoint` and `payload`.
fn sub_xml(patient: &str, holder: &str, endpoint: &str, payload: &str) -> String {
    sample("fhir/example_subscription.xml")
        .replace("patientid=123456789", &format!("patientid={patient}"))
        .replace("providerid=01234567", &format!("providerid={holder}"))
        .replace(
            "https://zim.prf001.lsp.aorta-zorg.nl/otv/Subscription/312",
            endpoint,
        )
        .replace("application/fhir+xml", payload)
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

async fn post(env: &SimEnv, url: &str, content_type: &str, body: String) -> Answer {
    let http = env.client_tls.http_client(Duration::from_secs(5)).unwrap();
    let resp = http
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    Answer {
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: resp.text().await.unwrap(),
    }
}

async fn subscribe_json(env: &SimEnv, v: &serde_json::Value) -> Answer {
    post(
        env,
        &env.sim.subscription_url(),
        "application/fhir+json",
        v.to_string(),
    )
    .await
}

async fn subscribe_xml(env: &SimEnv, xml: String) -> Answer {
    post(
        env,
        &env.sim.subscription_url(),
        "application/fhir+xml",
        xml,
    )
    .await
}

fn rule(patient: &str, holder: &str, category: Option<&str>, decision: Decision) -> ConsentRule {
    ConsentRule {
        patient: patient.parse().unwrap(),
        holder: holder.parse().unwrap(),
        requester: None,
        category: category.map(|c| c.parse().unwrap()),
        decision,
    }
}

/// The children of `n` named `local`.
fn kids<'a>(n: &'a Node, local: &str) -> Vec<&'a Node> {
    n.children.iter().filter(|c| c.local == local).collect()
}

fn kid<'a>(n: &'a Node, local: &str) -> &'a Node {
    let k = kids(n, local);
    assert_eq!(k.len(), 1, "one {local} in {}", n.local);
    k[0]
}

fn val(n: &Node) -> &str {
    n.attrs
        .get(&(String::new(), "value".to_owned()))
        .map(String::as_str)
        .unwrap_or("")
}

/// What a notification Bundle says, read back from XML: (Consent status, provision type, category code,
/// the BSN of the referenced Patient, the URA of the referenced Organization) per Consent.
fn read_xml_bundle(body: &str) -> Vec<(String, Option<String>, String, String, String)> {
    let b = tree(body);
    assert_eq!((b.ns.as_str(), b.local.as_str()), (FHIR_NS, "Bundle"));
    assert_eq!(val(kid(&b, "type")), "transaction");
    let entries = kids(&b, "entry");
    let by_url = |url: &str| -> &Node {
        let e = entries
            .iter()
            .find(|e| val(kid(e, "fullUrl")) == url)
            .unwrap_or_else(|| panic!("no entry {url}"));
        let r = kid(e, "resource");
        &r.children[0]
    };
    let mut out = Vec::new();
    for e in &entries {
        let r = &kid(e, "resource").children[0];
        if r.local != "Consent" {
            continue;
        }
        assert_eq!(
            val(kid(kid(r, "meta"), "profile")),
            "http://vzvz.nl/fhir/StructureDefinition/Consent-Mitz-Notify|3.8.0"
        );
        let provision = kid(r, "provision");
        let ptype = kids(provision, "type").first().map(|t| val(t).to_owned());
        let category = val(kid(kid(kid(r, "category"), "coding"), "code")).to_owned();
        let patient = by_url(val(kid(kid(r, "patient"), "reference")));
        assert_eq!(patient.local, "Patient");
        let pid = kid(patient, "identifier");
        assert_eq!(
            val(kid(pid, "system")),
            "http://fhir.nl/fhir/NamingSystem/bsn"
        );
        let actor = kid(provision, "actor");
        assert_eq!(val(kid(kid(kid(actor, "role"), "coding"), "code")), "CST");
        let org = by_url(val(kid(kid(actor, "reference"), "reference")));
        assert_eq!(org.local, "Organization");
        let oid = kid(org, "identifier");
        assert_eq!(
            val(kid(oid, "system")),
            "http://fhir.nl/fhir/NamingSystem/ura"
        );
        out.push((
            val(kid(r, "status")).to_owned(),
            ptype,
            category,
            val(kid(pid, "value")).to_owned(),
            val(kid(oid, "value")).to_owned(),
        ));
    }
    out
}

/// The same, read back from JSON.
fn read_json_bundle(body: &str) -> Vec<(String, Option<String>, String, String, String)> {
    let b: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "transaction");
    let entries = b["entry"].as_array().unwrap();
    let by_url = |url: &str| -> &serde_json::Value {
        &entries
            .iter()
            .find(|e| e["fullUrl"] == url)
            .unwrap_or_else(|| panic!("no entry {url}"))["resource"]
    };
    let mut out = Vec::new();
    for e in entries {
        let r = &e["resource"];
        if r["resourceType"] != "Consent" {
            continue;
        }
        assert_eq!(
            r["meta"]["profile"][0],
            "http://vzvz.nl/fhir/StructureDefinition/Consent-Mitz-Notify|3.8.0"
        );
        let patient = by_url(r["patient"]["reference"].as_str().unwrap());
        assert_eq!(patient["resourceType"], "Patient");
        assert_eq!(
            patient["identifier"][0]["system"],
            "http://fhir.nl/fhir/NamingSystem/bsn"
        );
        let actor = &r["provision"]["actor"][0];
        assert_eq!(actor["role"]["coding"][0]["code"], "CST");
        let org = by_url(actor["reference"]["reference"].as_str().unwrap());
        assert_eq!(org["resourceType"], "Organization");
        assert_eq!(
            org["identifier"][0]["system"],
            "http://fhir.nl/fhir/NamingSystem/ura"
        );
        out.push((
            r["status"].as_str().unwrap().to_owned(),
            r["provision"]["type"].as_str().map(str::to_owned),
            r["category"][0]["coding"][0]["code"]
                .as_str()
                .unwrap()
                .to_owned(),
            patient["identifier"][0]["value"]
                .as_str()
                .unwrap()
                .to_owned(),
            org["identifier"][0]["value"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// The element structure of `n`: one line per element path with its attribute names, in document
/// order; a child whose structure equals its previous sibling's is left out (the sample repeats the
/// OTV-ProviderCategory extension six times, the simulator writes it once).
fn shape(n: &Node, prefix: &str, out: &mut Vec<String>) {
    let here = format!("{prefix}/{{{}}}{}", n.ns, n.local);
    let attrs: Vec<&str> = n.attrs.keys().map(|(_, l)| l.as_str()).collect();
    out.push(format!("{here} {attrs:?}"));
    let mut previous: Option<Vec<String>> = None;
    for c in &n.children {
        let mut mine = Vec::new();
        shape(c, &here, &mut mine);
        if previous.as_ref() != Some(&mine) {
            out.extend(mine.iter().cloned());
            previous = Some(mine);
        }
    }
}

fn shape_of(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    shape(&tree(xml), "", &mut out);
    out
}

async fn settled(env: &SimEnv) {
    tokio::time::timeout(Duration::from_secs(20), env.sim.deliveries_settled())
        .await
        .expect("deliveries settle within 20 s");
}

fn oo_code(a: &Answer) -> String {
    if a.content_type.contains("xml") {
        let t = tree(&a.body);
        assert_eq!(t.local, "OperationOutcome", "{}", a.body);
        val(kid(kid(&t, "issue"), "code")).to_owned()
    } else {
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["resourceType"], "OperationOutcome", "{}", a.body);
        v["issue"][0]["code"].as_str().unwrap().to_owned()
    }
}

fn oo_diagnostics(a: &Answer) -> String {
    if a.content_type.contains("xml") {
        val(kid(kid(&tree(&a.body), "issue"), "diagnostics")).to_owned()
    } else {
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        v["issue"][0]["diagnostics"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn a_second_subscription_for_a_registered_key_is_a_duplicate_and_registers_nothing() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    let gw = "urn:oid:2.16.528.1.1007.3.3.659.1";
    let first = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        gw,
        "https://gw.example/n",
        "application/fhir+json",
    );
    let a = subscribe_json(&env, &first).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let id = id["id"].as_str().unwrap().to_owned();

    // the same key again, even with another endpoint and payload: 409 duplicate naming the first id
    let again = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        gw,
        "https://other.example/n",
        "application/fhir+xml",
    );
    let a = subscribe_json(&env, &again).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.content_type.contains("json"), "{}", a.content_type);
    assert_eq!(oo_code(&a), "duplicate");
    assert!(oo_diagnostics(&a).contains(&id), "{}", a.body);

    // in XML: an XML OperationOutcome
    let xml_first = sub_xml(
        PATIENT,
        HOLDER,
        "https://gw.example/x",
        "application/fhir+xml",
    );
    let a = subscribe_xml(&env, xml_first.clone()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = subscribe_xml(&env, xml_first).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.content_type.contains("xml"), "{}", a.content_type);
    assert_eq!(oo_code(&a), "duplicate");

    // another provider type or gateway system is another registration
    let other_type = sub_json(
        PATIENT,
        HOLDER,
        "Z3",
        gw,
        "https://gw.example/n",
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(&env, &other_type).await.status, 201);

    let stats = env.sim.stats();
    assert_eq!(stats.subscriptions, 5);
    assert_eq!(stats.registrations, 3);
    let regs = env.sim.registrations();
    assert_eq!(regs.len(), 3);
    assert_eq!(regs[0].id, id);
    assert_eq!(regs[0].endpoint.as_deref(), Some("https://gw.example/n"));
    assert_eq!(regs[0].payload, NotificationPayload::Json);
    assert_eq!(regs[0].provider_type.as_ref().unwrap().as_str(), "V6");
    assert_eq!(
        regs[0].source_id.as_deref(),
        Some("urn:oid:2.16.528.1.1007.3.3.659.1.1")
    );
    assert_eq!(regs[1].payload, NotificationPayload::Xml);
    assert_eq!(
        regs[1].home_community_id.to_string(),
        "urn:oid:2.16.840.1.113883.2.4.6.6.1"
    );
    env.sim.shutdown().await;
}

#[tokio::test]
async fn the_open_question_lists_only_registered_holders() {
    // consent for two holders, but only one has registered
    let env = SimEnv::start(config(
        r#"
consents:
  - { patient: "900186021", holder: "00000659", decision: Permit }
  - { patient: "900186021", holder: "00000660", decision: Permit }
"#,
    ))
    .await;
    let loc = LocalizationClient::new(
        env.client(5_000),
        "urn:oid:2.16.528.1.1007.3.3.666.1",
        Arc::new(UnsignedAssertions),
    );
    let patient: Bsn = PATIENT.parse().unwrap();
    let ids = |got: Vec<PatientLocation>| -> Vec<String> {
        got.iter()
            .map(|l| l.home_community_id.to_string())
            .collect()
    };
    assert!(
        loc.locate(&patient, &requester("00000666"))
            .await
            .unwrap()
            .is_empty()
    );
    let s = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        "urn:oid:2.16.528.1.1007.3.3.659.1",
        "https://gw.example/n",
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(&env, &s).await.status, 201);
    assert_eq!(
        ids(loc.locate(&patient, &requester("00000666")).await.unwrap()),
        vec!["urn:oid:2.16.528.1.1007.3.3.659.1"]
    );
    // a second registration of the same holder and community (another provider type): listed once
    let other_type = sub_json(
        PATIENT,
        HOLDER,
        "Z3",
        "urn:oid:2.16.528.1.1007.3.3.659.1",
        "https://gw.example/n",
        "application/fhir+json",
    );
    let a = subscribe_json(&env, &other_type).await;
    assert_eq!(a.status, 201);
    assert_eq!(env.sim.registrations().len(), 2);
    assert_eq!(
        loc.locate(&patient, &requester("00000666"))
            .await
            .unwrap()
            .len(),
        1
    );
    // a refused Subscription (unknown provider type) for the other holder lists nothing more
    let bad = sub_json(
        PATIENT,
        "00000660",
        "Q9",
        "urn:oid:2.16.528.1.1007.3.3.660.1",
        "https://gw.example/n",
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(&env, &bad).await.status, 422);
    assert_eq!(
        loc.locate(&patient, &requester("00000666"))
            .await
            .unwrap()
            .len(),
        1
    );
    // the live rules decide: consent withdrawn, the registered holder is no longer listed
    env.sim
        .set_consent(rule(PATIENT, HOLDER, None, Decision::NotApplicable));
    assert!(
        loc.locate(&patient, &requester("00000666"))
            .await
            .unwrap()
            .is_empty()
    );
    env.sim.shutdown().await;
}

#[tokio::test]
async fn down_answers_503_everywhere_but_admin_and_nothing_is_lost_or_doubled() {
    let env = SimEnv::start(config(
        r#"
consents:
  - { patient: "900186021", holder: "00000659", requester: "00000666", decision: Permit }
"#,
    ))
    .await;
    let s = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        "urn:oid:2.16.528.1.1007.3.3.659.1",
        "https://gw.example/n",
        "application/fhir+json",
    );
    let a = post(
        &env,
        &env.sim.admin_url("down"),
        "application/json",
        String::new(),
    )
    .await;
    assert_eq!(a.status, 204);
    assert!(env.sim.is_down());
    // the closed question: a SOAP Receiver fault, 503
    let a = post(
        &env,
        &env.sim.closed_question_url(),
        "application/soap+xml",
        sample("xacml/example.xml"),
    )
    .await;
    assert_eq!(a.status, 503);
    assert!(a.body.contains("Receiver"), "{}", a.body);
    // the client sees an error, never a decision
    let client = env.client(5_000);
    let e = client
        .closed_question(&crate::consent::xacml::sample_question())
        .await
        .unwrap_err();
    assert!(matches!(e, MitzError::Http { status: 503, .. }), "{e:?}");
    // the open question
    let loc = LocalizationClient::new(
        env.client(5_000),
        "urn:oid:1.2.3",
        Arc::new(UnsignedAssertions),
    );
    assert!(
        loc.locate(&PATIENT.parse().unwrap(), &requester("00000666"))
            .await
            .is_err()
    );
    // a registration while down: 503 transient, nothing registered
    let a = subscribe_json(&env, &s).await;
    assert_eq!(a.status, 503);
    assert_eq!(oo_code(&a), "transient");
    let a = subscribe_xml(
        &env,
        sub_xml(
            PATIENT,
            HOLDER,
            "https://gw.example/x",
            "application/fhir+xml",
        ),
    )
    .await;
    assert_eq!((a.status, oo_code(&a).as_str()), (503, "transient"));
    assert_eq!(env.sim.stats().registrations, 0);

    let a = post(
        &env,
        &env.sim.admin_url("up"),
        "application/json",
        String::new(),
    )
    .await;
    assert_eq!(a.status, 204);
    assert!(!env.sim.is_down());
    // the broker re-sends: registered once; a second re-send is a duplicate, not a second registration
    assert_eq!(subscribe_json(&env, &s).await.status, 201);
    assert_eq!(subscribe_json(&env, &s).await.status, 409);
    let stats = env.sim.stats();
    assert_eq!((stats.subscriptions, stats.registrations), (4, 1));
    assert_eq!(env.sim.registrations().len(), 1);
    // and the questions are answered again
    let got = client
        .closed_question(&crate::consent::xacml::sample_question())
        .await;
    assert!(got.is_ok(), "{got:?}");
    // set_down from the API, too
    env.sim.set_down(true);
    assert_eq!(subscribe_json(&env, &s).await.status, 503);
    env.sim.set_down(false);
    env.sim.shutdown().await;
}

/// Registers (patient, holder) twice on `rx`: `/xml` with an XML payload (XML request), `/json` with a
/// JSON payload (JSON request); plus a registration of another holder (`/other-holder`) and of another
/// patient (`/other-patient`), which must get nothing.
async fn register_receivers(env: &SimEnv, rx: &NotificationReceiver) {
    let a = subscribe_xml(
        env,
        sub_xml(PATIENT, HOLDER, &rx.url("/xml"), "application/fhir+xml"),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let s = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        "urn:oid:2.16.528.1.1007.3.3.659.2",
        &rx.url("/json"),
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(env, &s).await.status, 201);
    let s = sub_json(
        PATIENT,
        "00000660",
        "V6",
        "urn:oid:2.16.528.1.1007.3.3.660.1",
        &rx.url("/other-holder"),
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(env, &s).await.status, 201);
    let s = sub_json(
        "111222333",
        HOLDER,
        "V6",
        "urn:oid:2.16.528.1.1007.3.3.659.2",
        &rx.url("/other-patient"),
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(env, &s).await.status, 201);
}

fn one(rx: &NotificationReceiver, path: &str) -> Received {
    let got = rx.received_on(path);
    assert_eq!(got.len(), 1, "one notification on {path}: {got:?}");
    got.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_consent_change_pushes_a_bundle_in_xml_and_json_over_mutual_tls() {
    let env = SimEnv::start(config(
        r#"
consents:
  - { patient: "900186021", holder: "00000659", category: GGC002, decision: Permit }
"#,
    ))
    .await;
    let rx = env.receiver().await;
    register_receivers(&env, &rx).await;

    // withdrawn (Deny) through the API
    let started = env
        .sim
        .set_consent(rule(PATIENT, HOLDER, Some("GGC002"), Decision::Deny));
    assert_eq!(started, 2);
    settled(&env).await;
    let stats = env.sim.stats();
    assert_eq!(
        (stats.notifications_sent, stats.notifications_failed),
        (2, 0)
    );
    let x = one(&rx, "/xml");
    assert_eq!(x.content_type, "application/fhir+xml");
    // the simulator's own certificate as client certificate
    assert_eq!(
        x.client_certificate.as_ref(),
        Some(&env.server_tls.chain[0])
    );
    let got = read_xml_bundle(std::str::from_utf8(&x.body).unwrap());
    let withdrawn = (
        "inactive".to_owned(),
        None,
        "GGC002".to_owned(),
        PATIENT.to_owned(),
        HOLDER.to_owned(),
    );
    assert_eq!(got, vec![withdrawn.clone()]);
    let j = one(&rx, "/json");
    assert_eq!(j.content_type, "application/fhir+json");
    assert_eq!(
        j.client_certificate.as_ref(),
        Some(&env.server_tls.chain[0])
    );
    assert_eq!(
        read_json_bundle(std::str::from_utf8(&j.body).unwrap()),
        vec![withdrawn]
    );
    assert!(rx.received_on("/other-holder").is_empty());
    assert!(rx.received_on("/other-patient").is_empty());
    // the live rule set holds the replacement, not a second rule
    assert_eq!(env.sim.consents().len(), 1);
    assert_eq!(env.sim.consents()[0].decision, Decision::Deny);

    // granted again through the admin endpoint
    let a = post(
        &env,
        &env.sim.admin_url("consents"),
        "application/json",
        r#"{"patient": "900186021", "holder": "00000659", "category": "GGC002", "decision": "Permit"}"#
            .into(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, r#"{"notifications":2}"#);
    settled(&env).await;
    let x = rx.received_on("/xml");
    assert_eq!(x.len(), 2);
    let granted = (
        "active".to_owned(),
        Some("permit".to_owned()),
        "GGC002".to_owned(),
        PATIENT.to_owned(),
        HOLDER.to_owned(),
    );
    assert_eq!(
        read_xml_bundle(std::str::from_utf8(&x[1].body).unwrap()),
        vec![granted.clone()]
    );
    let j = rx.received_on("/json");
    assert_eq!(
        read_json_bundle(std::str::from_utf8(&j[1].body).unwrap()),
        vec![granted]
    );
    // a bad rule: 400, nothing changed or sent
    let a = post(
        &env,
        &env.sim.admin_url("consents"),
        "application/json",
        r#"{"patient": "123456789", "holder": "00000659", "decision": "Permit"}"#.into(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = post(
        &env,
        &env.sim.admin_url("consents"),
        "application/json",
        r#"{"patient": "900186021", "holder": "00000659", "decision": "Permit", "extra": 1}"#
            .into(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    settled(&env).await;
    assert_eq!(env.sim.stats().notifications_sent, 4);
    assert_eq!(rx.received().len(), 4);
    rx.stop().await;
    env.sim.shutdown().await;
}

#[tokio::test]
async fn the_xml_bundle_has_the_structure_of_the_sample() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    let rx = env.receiver().await;
    register_receivers(&env, &rx).await;
    // a Permit and a withdrawal in one change, as the sample has
    let mut deny = rule(PATIENT, HOLDER, Some("GGC002"), Decision::Deny);
    deny.requester = Some("00000777".parse().unwrap());
    let (changes, started) = env.sim.replace_consents(vec![
        rule(PATIENT, HOLDER, Some("GGC002"), Decision::Permit),
        deny,
    ]);
    assert_eq!((changes, started), (2, 2));
    settled(&env).await;
    let x = one(&rx, "/xml");
    let body = std::str::from_utf8(&x.body).unwrap();
    let sample_bundle = sample("fhir/example_notification_bundle.xml");
    assert_eq!(shape_of(body), shape_of(&sample_bundle), "{body}");
    // the shape check can fail: the sample's structure is not that of a single Consent
    let one_consent = {
        let (_, n) = env.sim.replace_consents(vec![rule(
            PATIENT,
            HOLDER,
            Some("GGC002"),
            Decision::Permit,
        )]);
        assert_eq!(n, 2, "the withdrawal of the requester rule");
        settled(&env).await;
        let x = rx.received_on("/xml");
        String::from_utf8(x[1].body.to_vec()).unwrap()
    };
    assert_ne!(shape_of(&one_consent), shape_of(&sample_bundle));
    assert_eq!(
        read_xml_bundle(&one_consent),
        vec![(
            "inactive".to_owned(),
            None,
            "GGC002".to_owned(),
            PATIENT.to_owned(),
            HOLDER.to_owned()
        )]
    );
    // the JSON Bundle of the first change says the same as the XML one
    let j = &rx.received_on("/json")[0];
    assert_eq!(
        read_json_bundle(std::str::from_utf8(&j.body).unwrap()),
        read_xml_bundle(body)
    );
    // fresh uuids: no two Bundles share an id
    let ids: std::collections::HashSet<String> = rx
        .received_on("/xml")
        .iter()
        .map(|r| val(kid(&tree(std::str::from_utf8(&r.body).unwrap()), "id")).to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    rx.stop().await;
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_delivery_is_retried_then_counted_failed_and_redirects_are_not_followed() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    let rx = env.receiver().await;
    let s = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        "urn:oid:2.16.528.1.1007.3.3.659.1",
        &rx.url("/n"),
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(&env, &s).await.status, 201);
    rx.set_status(500);
    assert_eq!(
        env.sim
            .set_consent(rule(PATIENT, HOLDER, None, Decision::Permit)),
        1
    );
    settled(&env).await;
    assert_eq!(
        rx.received_on("/n").len(),
        4,
        "the first attempt and 3 retries"
    );
    let stats = env.sim.stats();
    assert_eq!(
        (stats.notifications_sent, stats.notifications_failed),
        (0, 1)
    );

    // a redirect is a failure, never followed
    rx.set_status(307);
    env.sim
        .set_consent(rule(PATIENT, HOLDER, None, Decision::Deny));
    settled(&env).await;
    assert_eq!(rx.received_on("/n").len(), 8);
    assert!(rx.received_on("/elsewhere").is_empty());
    assert_eq!(env.sim.stats().notifications_failed, 2);

    // a receiver that refuses twice and then accepts: delivered once retried
    rx.set_status(503);
    env.sim
        .set_consent(rule(PATIENT, HOLDER, None, Decision::Permit));
    tokio::time::sleep(Duration::from_millis(150)).await;
    rx.set_status(200);
    settled(&env).await;
    let stats = env.sim.stats();
    assert_eq!(
        (stats.notifications_sent, stats.notifications_failed),
        (1, 2)
    );
    assert!(rx.received_on("/n").len() >= 9);

    // an endpoint that is not listening: failed after the retries
    let gone = rx.url("/n");
    rx.stop().await;
    let s = sub_json(
        PATIENT,
        HOLDER,
        "Z3",
        "urn:oid:2.16.528.1.1007.3.3.659.1",
        &gone,
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(&env, &s).await.status, 201);
    assert_eq!(
        env.sim
            .set_consent(rule(PATIENT, HOLDER, None, Decision::Deny)),
        2
    );
    settled(&env).await;
    assert_eq!(env.sim.stats().notifications_failed, 4);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_does_not_trust_the_simulator_gets_nothing() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    // a receiver of another PKI: the simulator does not trust its certificate
    let other = Pki::new("Other CA");
    let rx = NotificationReceiver::start(
        &other.material(&other.leaf("receiver.test", &["localhost", "127.0.0.1"])),
    )
    .await;
    let s = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        "urn:oid:2.16.528.1.1007.3.3.659.1",
        &rx.url("/n"),
        "application/fhir+json",
    );
    assert_eq!(subscribe_json(&env, &s).await.status, 201);
    env.sim
        .set_consent(rule(PATIENT, HOLDER, None, Decision::Permit));
    settled(&env).await;
    assert!(rx.received().is_empty());
    assert_eq!(env.sim.stats().notifications_failed, 1);
    rx.stop().await;
    env.sim.shutdown().await;
}

#[tokio::test]
async fn hostile_subscriptions_are_refused_and_register_nothing() {
    let env = SimEnv::start(MitzSimConfig::default()).await;
    let gw = "urn:oid:2.16.528.1.1007.3.3.659.1";
    let good = sub_json(
        PATIENT,
        HOLDER,
        "V6",
        gw,
        "https://gw.example/n",
        "application/fhir+json",
    );
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let criteria = |c: &str| {
        let c = c.to_owned();
        with(&move |v| v["criteria"] = c.clone().into())
    };
    let endpoint = |e: &str| {
        let e = e.to_owned();
        with(&move |v| v["channel"]["endpoint"] = e.clone().into())
    };
    let many: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({"url": format!("urn:x:{i}"), "valueOid": "urn:oid:1.2"}))
        .collect();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("http endpoint", endpoint("http://gw.example/n")),
        ("ftp endpoint", endpoint("ftp://gw.example/n")),
        ("userinfo", endpoint("https://user:secret@gw.example/n")),
        ("user only", endpoint("https://user@gw.example/n")),
        ("not a URL", endpoint("gw.example/n")),
        ("empty endpoint", endpoint("")),
        (
            "no endpoint",
            with(&|v| {
                v["channel"].as_object_mut().unwrap().remove("endpoint");
            }),
        ),
        (
            "two patientid",
            criteria(
                "Consent?_query=otv&patientid=900186021&patientid=111222333&providerid=00000659&providertype=V6",
            ),
        ),
        (
            "two patientid, same value",
            criteria(
                "Consent?_query=otv&patientid=900186021&patientid=900186021&providerid=00000659&providertype=V6",
            ),
        ),
        (
            "unknown providertype",
            criteria("Consent?_query=otv&patientid=900186021&providerid=00000659&providertype=Q9"),
        ),
        (
            "malformed providertype",
            criteria(
                "Consent?_query=otv&patientid=900186021&providerid=00000659&providertype=V%206",
            ),
        ),
        (
            "not a BSN",
            criteria("Consent?_query=otv&patientid=123456789&providerid=00000659&providertype=V6"),
        ),
        (
            "not a URA",
            criteria("Consent?_query=otv&patientid=900186021&providerid=659&providertype=V6"),
        ),
        (
            "unknown parameter",
            criteria(
                "Consent?_query=otv&patientid=900186021&providerid=00000659&providertype=V6&status=active",
            ),
        ),
        (
            "other resource",
            criteria("Patient?_query=otv&patientid=900186021"),
        ),
        (
            "10,000 extensions",
            with(&|v| v["extension"] = many.clone().into()),
        ),
        (
            "two GatewaySystems",
            with(&|v| {
                v["extension"].as_array_mut().unwrap().push(serde_json::json!(
                    {"url": "http://fhir.nl/StructureDefinition/GatewaySystem", "valueOid": "urn:oid:2.16.528.1.1007.3.3.660.1"}
                ));
            }),
        ),
        (
            "no GatewaySystem",
            with(&|v| v["extension"] = serde_json::json!([])),
        ),
        (
            "GatewaySystem not an OID",
            with(&|v| v["extension"][0]["valueOid"] = "https://evil.example".into()),
        ),
        (
            "unknown payload",
            with(&|v| v["channel"]["payload"] = "text/html".into()),
        ),
        (
            "websocket channel",
            with(&|v| v["channel"]["type"] = "websocket".into()),
        ),
        ("reason", with(&|v| v["reason"] = "MARKETING".into())),
        (
            "not a Subscription",
            with(&|v| v["resourceType"] = "Consent".into()),
        ),
        (
            "extension not an array",
            with(&|v| v["extension"] = "x".into()),
        ),
    ];
    let json_reasons: &[(&str, &str)] = &[
        ("http endpoint", "must be https://"),
        ("ftp endpoint", "must be https://"),
        ("userinfo", "userinfo"),
        ("user only", "userinfo"),
        ("not a URL", "is not a URL"),
        ("empty endpoint", "is not a URL"),
        ("no endpoint", "is not a URL"),
        ("two patientid", "patientid given more than once"),
        (
            "two patientid, same value",
            "patientid given more than once",
        ),
        ("unknown providertype", "not a known facility type"),
        ("malformed providertype", "invalid facility type"),
        ("not a BSN", "invalid BSN"),
        ("not a URA", "invalid URA"),
        ("unknown parameter", "not supported"),
        ("other resource", "must start with Consent?"),
        ("10,000 extensions", "at most 16"),
        ("two GatewaySystems", "GatewaySystem given more than once"),
        ("no GatewaySystem", "GatewaySystem (valueOid) is required"),
        ("GatewaySystem not an OID", "invalid OID"),
        ("unknown payload", "channel.payload"),
        ("websocket channel", "rest-hook"),
        ("reason", "reason must be OTV"),
        ("not a Subscription", "not Subscription"),
        ("extension not an array", "not an array"),
    ];
    assert_eq!(cases.len(), json_reasons.len());
    for (name, body) in &cases {
        let a = subscribe_json(&env, body).await;
        assert!(
            a.status == 400 || a.status == 422,
            "{name}: {} {}",
            a.status,
            a.body
        );
        assert_eq!(oo_code(&a), "invalid", "{name}");
        let reason = json_reasons.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(oo_diagnostics(&a).contains(reason), "{name}: {}", a.body);
    }
    // XML: 10,000 extensions, two criteria, two channels, an http endpoint, not well-formed, a DTD
    let base = sub_xml(
        PATIENT,
        HOLDER,
        "https://gw.example/x",
        "application/fhir+xml",
    );
    let ext =
        "<extension url=\"urn:x\"><valueOid value=\"urn:oid:1.2\"/></extension>".repeat(10_000);
    let xml_cases: Vec<(&str, String)> = vec![
        ("10,000 extensions", base.replacen("<status", &format!("{ext}<status"), 1)),
        (
            "two criteria",
            base.replacen(
                "<reason",
                "<criteria value=\"Consent?_query=otv&amp;patientid=111222333&amp;providerid=00000659&amp;providertype=Z3\"/><reason",
                1,
            ),
        ),
        (
            "two channels",
            base.replacen(
                "</Subscription>",
                "<channel><type value=\"rest-hook\"/><endpoint value=\"https://evil.example/\"/></channel></Subscription>",
                1,
            ),
        ),
        (
            "two endpoints",
            base.replacen(
                "<payload",
                "<endpoint value=\"https://evil.example/\"/><payload",
                1,
            ),
        ),
        ("http endpoint", sub_xml(PATIENT, HOLDER, "http://gw.example/x", "application/fhir+xml")),
        ("not well-formed", base.replacen("</Subscription>", "", 1)),
        (
            "DTD",
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE Subscription [<!ENTITY a \"aaaa\">]>{}",
                base.replacen("OTV", "&a;", 1)
            ),
        ),
    ];
    let xml_reasons: &[(&str, &str)] = &[
        ("10,000 extensions", "more than 16 extensions"),
        ("two criteria", "criteria given more than once"),
        ("two channels", "given more than once"),
        ("two endpoints", "channel.endpoint given more than once"),
        ("http endpoint", "must be https://"),
        ("not well-formed", "malformed XML"),
        ("DTD", "DTD"),
    ];
    assert_eq!(xml_cases.len(), xml_reasons.len());
    for (name, body) in xml_cases {
        let a = subscribe_xml(&env, body).await;
        assert!(
            a.status == 400 || a.status == 422,
            "{name}: {} {}",
            a.status,
            a.body
        );
        assert!(a.content_type.contains("xml"), "{name}: {}", a.content_type);
        assert_eq!(oo_code(&a), "invalid", "{name}");
        let reason = xml_reasons.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(oo_diagnostics(&a).contains(reason), "{name}: {}", a.body);
    }
    assert_eq!(env.sim.stats().registrations, 0);
    assert!(env.sim.registrations().is_empty());
    // generated: every truncation of a valid criteria is refused; only the whole one registers
    let full = "Consent?_query=otv&patientid=900186021&providerid=00000659&providertype=V6";
    for i in 0..full.len() {
        let a = subscribe_json(&env, &criteria(&full[..i])).await;
        assert_eq!(a.status, 422, "{:?}: {}", &full[..i], a.body);
    }
    assert_eq!(subscribe_json(&env, &criteria(full)).await.status, 201);
    assert_eq!(env.sim.stats().registrations, 1);
    env.sim.shutdown().await;
}

#[test]
fn consent_changes_name_what_changed_and_what_was_removed() {
    let a = rule(PATIENT, HOLDER, Some("GGC002"), Decision::Permit);
    let b = rule(PATIENT, "00000660", None, Decision::Deny);
    let c = rule("111222333", HOLDER, None, Decision::Permit);
    let a_deny = ConsentRule {
        decision: Decision::Deny,
        ..a.clone()
    };
    assert!(consent_changes(&[a.clone(), b.clone()], &[a.clone(), b.clone()]).is_empty());
    let withdrawn_b = ConsentRule {
        decision: Decision::NotApplicable,
        ..b.clone()
    };
    assert_eq!(
        consent_changes(&[a.clone(), b.clone()], &[a_deny.clone(), c.clone()]),
        vec![a_deny.clone(), c.clone(), withdrawn_b]
    );
    // a later rule with the same key does not count (the first wins, as in the rule choice)
    assert!(consent_changes(std::slice::from_ref(&a), &[a.clone(), a_deny.clone()]).is_empty());
}

#[tokio::test]
async fn the_consents_file_reloaded_pushes_the_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consents.yaml");
    let v1 = "consents:\n  - { patient: \"900186021\", holder: \"00000659\", decision: Permit }\n";
    std::fs::write(&path, v1).unwrap();
    let env = SimEnv::start(MitzSimConfig::load(&path).unwrap()).await;
    let rx = env.receiver().await;
    register_receivers(&env, &rx).await;
    let mut watch = ConsentsFileWatch::new(&path);
    assert_eq!(watch.poll(&env.sim).unwrap(), None);
    // a rule withdrawn and one for the other holder added
    let v2 = "consents:\n  - { patient: \"900186021\", holder: \"00000660\", decision: Permit }\n";
    std::fs::write(&path, v2).unwrap();
    set_modified(&path, 1);
    assert_eq!(watch.poll(&env.sim).unwrap(), Some((2, 3)));
    settled(&env).await;
    assert_eq!(
        read_xml_bundle(std::str::from_utf8(&one(&rx, "/xml").body).unwrap()),
        vec![(
            "inactive".to_owned(),
            None,
            "GGC002".to_owned(),
            PATIENT.to_owned(),
            HOLDER.to_owned()
        )]
    );
    assert_eq!(
        read_json_bundle(std::str::from_utf8(&one(&rx, "/other-holder").body).unwrap()),
        vec![(
            "active".to_owned(),
            Some("permit".to_owned()),
            "GGC002".to_owned(),
            PATIENT.to_owned(),
            "00000660".to_owned()
        )]
    );
    assert!(rx.received_on("/other-patient").is_empty());
    // unchanged: nothing
    assert_eq!(watch.poll(&env.sim).unwrap(), None);
    // a broken file: an error naming it, the live rules kept
    std::fs::write(&path, "consents: [ { patient: 1 } ]\n").unwrap();
    set_modified(&path, 2);
    let e = watch.poll(&env.sim).unwrap_err().to_string();
    assert!(e.contains("consents.yaml"), "{e}");
    assert_eq!(env.sim.consents().len(), 1);
    assert_eq!(env.sim.consents()[0].holder.as_str(), "00000660");
    rx.stop().await;
    env.sim.shutdown().await;
}

/// Sets the file's modification time `secs` seconds into the future (a test writes faster than a
/// file system's timestamp granularity).
fn set_modified(path: &std::path::Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(secs))
        .unwrap();
}
