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
    let resp = http
        .post(env.sim.subscription_url())
        .header("content-type", "application/fhir+xml")
        .body(sample("fhir/example_subscription.xml"))
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
