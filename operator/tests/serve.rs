//! The pod's runtime from the operator's rendering (issue 5): on a real kube-apiserver the operator
//! reconciles the XDS example hospital `oost`, whose XDS-I.b endpoints and MitzConnection point at
//! simulators (an XDS-I.b affinity domain seeded with the patient's studies, the Mitz simulator; both
//! over mutual TLS). The rendered ConfigMap and the Secrets are laid out exactly as the Deployment mounts
//! them, `duo-gateway serve` starts with the container's arguments (only the listen ports move to free
//! loopback ports), and a front end of the hospital asks it for the patient's timeline
//! (`GET /api/v1/patients/{bsn}/timeline`, mutual TLS): every seeded study comes back, after Mitz was
//! asked.

mod common;

use std::time::Duration;

use common::*;
use duo_operator::crd::DuoGateway;
use duo_runtime::config::{Config, LocalBackend};
use duo_runtime::consent::Decision;
use duo_runtime::model::{AuthorInstitution, HomeCommunityId, Ura};
use duo_runtime::pki::generate::ServerCertSpec;
use duo_testkit::dicom::synth::{SynthConfig, SynthPatient};
use duo_testkit::sim::mitz::{self, ConsentRule, LocationRule, MitzSimConfig};
use duo_testkit::sim::seed::{CommunitySeed, seed_patient};
use duo_testkit::sim::serve::Transport;
use duo_testkit::sim::store::Store;
use duo_testkit::sim::xds::{self, XdsConfig, XdsSim};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const NS: &str = "duo-serve";
const T: Duration = Duration::from_secs(60);
const URA: &str = "12345678";
const HOME: &str = "urn:oid:2.16.528.1.1007.3.3.12345678.1";
// the example's repository and imaging document source (examples/xds-hospital/duogateway.yaml)
const REPOSITORY: &str = "2.16.528.1.1007.3.3.12345678.10";
const SOURCE: &str = "2.16.528.1.1007.3.3.12345678.20";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_configuration_serves_a_timeline_query() {
    duo_runtime::tls::install_crypto_provider();
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, NS).await;
    let secrets = create_example_secrets(&client, NS).await;
    let ca = &secrets.ca;
    // the hospital's server certificate also names localhost, where this test reaches the gateway
    let oost_cert = ca
        .issue(&ServerCertSpec::uzi(
            URA.parse().expect("URA"),
            "Ziekenhuis Oost",
            &["duo.oost.example", "localhost"],
            365,
        ))
        .expect("oost certificate");
    apply(
        &Api::<Secret>::namespaced(client.clone(), NS),
        "oost-tls",
        &tls_secret("oost-tls", &oost_cert),
    )
    .await;
    let work = tempfile::tempdir().expect("tempdir");

    // --- simulators over mutual TLS: the hospital's XDS-I.b affinity domain and Mitz ----------------
    let patient = SynthPatient::example();
    let store = std::sync::Arc::new(Store::new());
    let seed = CommunitySeed::new(
        AuthorInstitution {
            name: "Ziekenhuis Oost".into(),
            ura: Some(URA.parse().expect("URA")),
        },
        "V6".parse().expect("facility type"),
        REPOSITORY,
        SOURCE,
        None,
    );
    let studies = seed_patient(&store, &seed, &SynthConfig::default(), &patient, 2026, 3)
        .expect("seed the patient's studies");
    let sim_tls = identity(work.path(), ca, "sim", &plain("localhost"));
    let xds_sim = XdsSim::with_store(XdsConfig::default(), store.clone());
    let xds_run = xds_sim
        .start(Transport::mutual_tls(&sim_tls).expect("transport"))
        .await
        .expect("XDS-I.b simulator");
    let ura: Ura = URA.parse().expect("URA");
    let home: HomeCommunityId = HOME.parse().expect("homeCommunityId");
    let mitz_cfg = MitzSimConfig {
        consents: vec![
            ConsentRule {
                patient: patient.bsn.clone(),
                holder: ura.clone(),
                requester: None,
                category: None,
                decision: Decision::Permit,
            },
            ConsentRule {
                patient: patient.bsn.clone(),
                holder: ura.clone(),
                requester: None,
                category: Some("GGC002".parse().expect("category")),
                decision: Decision::Permit,
            },
        ],
        locations: vec![LocationRule {
            patient: patient.bsn.clone(),
            home_community_id: home.clone(),
            holder: ura.clone(),
            source_id: None,
            category: None,
        }],
        ..MitzSimConfig::default()
    };
    let mitz_sim = mitz::start(mitz_cfg, "127.0.0.1:0".parse().expect("addr"), &sim_tls)
        .await
        .expect("Mitz simulator");
    let mitz_base = format!("https://localhost:{}", mitz_sim.local_addr().port());

    // --- the XDS example and the Mitz example, pointed at the simulators -----------------------------
    apply_example(&client, NS, "mitz").await;
    apply_example(&client, NS, "xds-hospital").await;
    let patch = PatchParams::default();
    Api::<duo_operator::crd::MitzConnection>::namespaced(client.clone(), NS)
        .patch(
            "mitz",
            &patch,
            &Patch::Merge(json!({"spec": {
                "closedQuestionUrl": format!("{mitz_base}/geslotenautorisatievraag/xacml3"),
                "openQuestionUrl": format!("{mitz_base}/openautorisatievraag"),
                "subscriptionUrl": format!("{mitz_base}/abonnementen/fhir/Subscription"),
            }})),
        )
        .await
        .expect("point the MitzConnection at the simulator");
    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), NS);
    gws.patch(
        "oost",
        &patch,
        &Patch::Merge(json!({"spec": {"connection": {"xds": {
            "registryUrl": local_url(&xds_run, xds::paths::ITI18),
            "repositories": [{"uniqueId": REPOSITORY, "url": local_url(&xds_run, xds::paths::ITI43)}],
            "imagingDocumentSources": [{"uniqueId": SOURCE, "url": local_url(&xds_run, xds::paths::RAD69)}],
        }}}})),
    )
    .await
    .expect("point the DuoGateway at the simulator");
    let operator = Operator::start(client.clone());

    // --- the operator renders it ----------------------------------------------------------------------
    let registry = local_url(&xds_run, xds::paths::ITI18);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    wait_for("oost applied with the simulators' endpoints", T, || async {
        let gw = gws.get("oost").await.ok()?;
        let st = gw.status.as_ref()?;
        let current = st.observed_generation == gw.metadata.generation;
        let applied = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "False");
        let cm = cms.get("duo-oost-config").await.ok()?;
        let config = Config::parse(&cm.data.as_ref()?["config.yaml"]).ok()?;
        let points = matches!(&config.local, LocalBackend::Xds(x) if x.registry_url == registry)
            && config
                .mitz
                .as_ref()
                .is_some_and(|m| m.closed_question_url.starts_with(&mitz_base));
        (current && applied && points).then_some(())
    })
    .await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("duo-oost")
        .await
        .expect("oost Deployment");

    // --- `duo-gateway serve` from what the pod mounts -------------------------------------------------
    // the only change: the pod's listen addresses (0.0.0.0:8443 and :8080) become free loopback ports
    let port = free_port();
    let mut gateway = PodProcess::start(
        &client,
        NS,
        &deployment,
        &work.path().join("pod"),
        port,
        |_| {},
        T,
    )
    .await;

    // --- a timeline query from the hospital's front end (its certificate carries the hospital's URA) --
    let mut front_spec = ServerCertSpec::uzi(
        ura.clone(),
        "Ziekenhuis Oost EPD",
        &["epd.oost.example"],
        30,
    );
    front_spec.uzi_number = "90000222".into();
    let front_end = identity(work.path(), ca, "front-end", &front_spec);
    let http = front_end
        .http_client(Duration::from_secs(5))
        .expect("front-end client");
    let resp = http
        .get(format!(
            "https://localhost:{port}/api/v1/patients/{}/timeline",
            patient.bsn
        ))
        .header("X-DUO-Requester-UZI", "900000001")
        .header("X-DUO-Requester-Role", "01.015")
        .header("X-DUO-Requester-Name", "Dr. R. Radioloog")
        .send()
        .await
        .unwrap_or_else(|e| panic!("timeline request: {e}\n{}", gateway.log()));
    let status = resp.status();
    let body: Value = resp.json().await.expect("timeline JSON");
    assert!(
        status.is_success(),
        "timeline answered {status}: {body}\n{}",
        gateway.log()
    );
    let mut got: Vec<&str> = body["studies"]
        .as_array()
        .expect("studies")
        .iter()
        .filter_map(|s| s["studyInstanceUid"].as_str())
        .collect();
    got.sort();
    let mut want: Vec<&str> = studies
        .iter()
        .map(|s| s.study_instance_uid.as_str())
        .collect();
    want.sort();
    assert_eq!(got, want, "every seeded study on the timeline: {body}");
    for s in body["studies"].as_array().expect("studies") {
        assert_eq!(s["sources"][0]["homeCommunityId"], HOME, "{s}");
    }
    let stats = mitz_sim.stats();
    assert!(
        stats.open_questions >= 1,
        "localisation asked Mitz's open question: {stats:?}"
    );
    // a caller that is not the hospital's is refused
    let mut other = ServerCertSpec::uzi(
        "87654321".parse().expect("URA"),
        "Ziekenhuis West",
        &["duo.west.example"],
        30,
    );
    other.uzi_number = "90000333".into();
    let refused = identity(work.path(), ca, "other", &other)
        .http_client(Duration::from_secs(5))
        .expect("client")
        .get(format!(
            "https://localhost:{port}/api/v1/patients/{}/timeline",
            patient.bsn
        ))
        .header("X-DUO-Requester-UZI", "900000001")
        .header("X-DUO-Requester-Role", "01.015")
        .send()
        .await
        .expect("request");
    assert_eq!(
        refused.status().as_u16(),
        403,
        "another hospital's certificate"
    );

    // the gateway stops like a pod: SIGTERM, exit 0
    let exit = gateway.terminate(T);
    assert!(exit.success(), "exit {exit}\n{}", gateway.log());
    operator.stop().await;
    xds_run.stop().await;
    mitz_sim.shutdown().await;
}
