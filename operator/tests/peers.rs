//! Issue 21 acceptance on a real kube-apiserver: two hospitals in one cluster whose certificates name
//! only their external hosts (`duo.oost.example`, `duo.west.example`, no `.svc` name) are published
//! under those names, and each queries the other through the other's Service (`endpoints.connectTo`),
//! with TLS verified against the published name; both run as the pod would (`duo-gateway serve` from the
//! rendered ConfigMap and the operator-owned material Secret). Then a user writes an expired certificate
//! and a mistyped URA: the operator refuses both, a restarted gateway process starts from the last good
//! material and serves, and the published DuoCommunity keeps the last good values.
//!
//! What differs from a cluster: the listen ports are free loopback ports, and the Service names in
//! `connectTo` resolve to 127.0.0.1 (the cluster DNS would give the Service's ClusterIP) — the test
//! rewrites `duo-<name>.duo-peers.svc` to `127.0.0.1` in the laid-out configuration and nothing else.

mod common;

use std::time::Duration;

use common::*;
use duo_operator::crd::{DuoCommunity, DuoGateway};
use duo_runtime::model::AuthorInstitution;
use duo_runtime::pki::generate::{Ca, CertifiedPem, ServerCertSpec};
use duo_testkit::dicom::synth::{SynthConfig, SynthPatient};
use duo_testkit::sim::seed::{CommunitySeed, seed_patient};
use duo_testkit::sim::serve::Transport;
use duo_testkit::sim::store::Store;
use duo_testkit::sim::xds::{self, XdsConfig, XdsSim};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const NS: &str = "duo-peers";
const T: Duration = Duration::from_secs(60);
const REPOSITORY: &str = "2.16.528.1.1007.3.3.12345678.10";
const SOURCE: &str = "2.16.528.1.1007.3.3.12345678.20";

struct Hospital {
    name: &'static str,
    ura: &'static str,
    org: &'static str,
    home: &'static str,
    host: &'static str,
}

const OOST: Hospital = Hospital {
    name: "oost",
    ura: "12345678",
    org: "Ziekenhuis Oost",
    home: "urn:oid:2.16.528.1.1007.3.3.12345678.1",
    host: "duo.oost.example",
};
const WEST: Hospital = Hospital {
    name: "west",
    ura: "87654321",
    org: "Ziekenhuis West",
    home: "urn:oid:2.16.528.1.1007.3.3.87654321.1",
    host: "duo.west.example",
};

/// The hospital's server certificate: its external host only, valid `days` (negative: expired).
fn certificate(ca: &Ca, h: &Hospital, days: i64) -> CertifiedPem {
    let mut spec = ServerCertSpec::uzi(h.ura.parse().expect("URA"), h.org, &[h.host], 365);
    spec.not_after = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days);
    if days < 0 {
        spec.not_before = spec.not_after - jiff::SignedDuration::from_hours(24 * 365);
    }
    ca.issue(&spec).expect("certificate")
}

/// A DuoGateway for `h`: the shared XDS-I.b simulator as its own infrastructure, consent permitAll and
/// every community asked (this test is about addresses and certificates, not consent), published under
/// `h.host:port`.
fn gateway(h: &Hospital, port: u16, xds_urls: &(String, String, String)) -> DuoGateway {
    serde_json::from_value(json!({
        "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
        "kind": "DuoGateway",
        "metadata": {"name": h.name, "namespace": NS},
        "spec": {
            "organization": {"ura": h.ura, "name": h.org, "facilityType": "V6", "homeCommunityId": h.home},
            "connection": {"xds": {
                "registryUrl": xds_urls.0,
                "repositories": [{"uniqueId": REPOSITORY, "url": xds_urls.1}],
                "imagingDocumentSources": [{"uniqueId": SOURCE, "url": xds_urls.2}],
            }},
            "consent": {"mode": "permitAll"},
            "localization": "allCommunities",
            "tls": {"secretName": format!("{}-tls", h.name),
                    "trustBundle": {"configMap": {"name": "duo-trust", "key": "ca.crt"}}},
            "communities": {"selector": {"matchLabels": {"net": "peers"}}},
            "publish": {"address": format!("{}:{port}", h.host), "labels": {"net": "peers"}},
            "replicas": 1,
        }
    }))
    .expect("DuoGateway")
}

async fn wait_applied(gws: &Api<DuoGateway>, name: &str, communities: i32) -> DuoGateway {
    wait_for(
        &format!("{name} applied with {communities} peer(s)"),
        T,
        || async {
            let g = gws.get(name).await.ok()?;
            let st = g.status.as_ref()?;
            let ok = st.observed_generation == g.metadata.generation
                && st.communities == communities
                && gateway_condition(&g, "Degraded").is_some_and(|c| c.0 == "False");
            ok.then_some(g)
        },
    )
    .await
}

/// The patient's timeline from `at`'s own front end (a certificate with the hospital's URA), reaching
/// the gateway at its published host through 127.0.0.1; the homeCommunityIds of every source.
async fn timeline_sources(
    work: &std::path::Path,
    ca: &Ca,
    at: &Hospital,
    port: u16,
    bsn: &str,
    gateway: &PodProcess,
) -> Vec<String> {
    let mut spec = ServerCertSpec::uzi(
        at.ura.parse().expect("URA"),
        &format!("{} EPD", at.org),
        &[&format!("epd.{}", at.host)],
        30,
    );
    spec.uzi_number = "90000222".into();
    let http = identity(work, ca, &format!("{}-epd", at.name), &spec)
        .http_client_via(Duration::from_secs(5), Some("127.0.0.1"))
        .expect("front-end client");
    let resp = http
        .get(format!(
            "https://{}:{port}/api/v1/patients/{bsn}/timeline",
            at.host
        ))
        .header("X-DUO-Requester-UZI", "900000001")
        .header("X-DUO-Requester-Role", "01.015")
        .header("X-DUO-Requester-Name", "Dr. R. Radioloog")
        .send()
        .await
        .unwrap_or_else(|e| panic!("timeline request: {e:?}\n{}", gateway.log()));
    let status = resp.status();
    let body: Value = resp.json().await.expect("timeline JSON");
    assert!(
        status.is_success(),
        "{} timeline answered {status}: {body}\n{}",
        at.name,
        gateway.log()
    );
    let mut out: Vec<String> = body["studies"]
        .as_array()
        .expect("studies")
        .iter()
        .flat_map(|s| s["sources"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["homeCommunityId"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    assert_eq!(
        body["status"],
        "Success",
        "no community failed: {body}\n{}",
        gateway.log()
    );
    out
}

async fn deployment(client: &Client, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), NS)
        .get(&format!("duo-{name}"))
        .await
        .expect("Deployment")
}

/// The laid-out configuration as this machine needs it: the peers' Service names resolve to 127.0.0.1.
fn services_on_loopback(config: &mut duo_runtime::config::Config) {
    for c in &mut config.communities {
        let svc = c
            .connect_to
            .as_deref()
            .expect("connectTo set on a published peer");
        assert!(svc.ends_with(&format!(".{NS}.svc")), "{svc}");
        c.connect_to = Some("127.0.0.1".into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_external_certificates_query_each_other_and_survive_a_bad_edit() {
    duo_runtime::tls::install_crypto_provider();
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, NS).await;
    let work = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("DUO test UZI CA").expect("ca");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let good_oost = certificate(&ca, &OOST, 365);
    apply(&secrets, "oost-tls", &tls_secret("oost-tls", &good_oost)).await;
    apply(
        &secrets,
        "west-tls",
        &tls_secret("west-tls", &certificate(&ca, &WEST, 365)),
    )
    .await;
    trust_config_map(&client, NS, &ca.cert_pem).await;

    // both hospitals' own infrastructure: one XDS-I.b simulator holding the patient's studies
    let patient = SynthPatient::example();
    let store = std::sync::Arc::new(Store::new());
    let seed = CommunitySeed::new(
        AuthorInstitution {
            name: OOST.org.into(),
            ura: Some(OOST.ura.parse().expect("URA")),
        },
        "V6".parse().expect("facility type"),
        REPOSITORY,
        SOURCE,
        None,
    );
    seed_patient(&store, &seed, &SynthConfig::default(), &patient, 2026, 2).expect("seed");
    let sim_tls = identity(work.path(), &ca, "sim", &plain("localhost"));
    let xds_run = XdsSim::with_store(XdsConfig::default(), store)
        .start(Transport::mutual_tls(&sim_tls).expect("transport"))
        .await
        .expect("XDS-I.b simulator");
    let xds_urls = (
        local_url(&xds_run, xds::paths::ITI18),
        local_url(&xds_run, xds::paths::ITI43),
        local_url(&xds_run, xds::paths::RAD69),
    );

    // --- published under their external names ---------------------------------------------------------
    let (oost_port, west_port) = (free_port(), free_port());
    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), NS);
    apply(&gws, "oost", &gateway(&OOST, oost_port, &xds_urls)).await;
    apply(&gws, "west", &gateway(&WEST, west_port, &xds_urls)).await;
    let operator = Operator::start(client.clone());
    wait_applied(&gws, "oost", 1).await;
    wait_applied(&gws, "west", 1).await;
    let published: Api<DuoCommunity> = Api::namespaced(client.clone(), NS);
    let p_oost = published.get("oost").await.expect("published oost");
    assert_eq!(
        p_oost.spec.endpoints.query_url,
        format!("https://duo.oost.example:{oost_port}/xca/iti38")
    );
    assert_eq!(
        p_oost.spec.endpoints.imaging_retrieve_url,
        format!("https://duo.oost.example:{oost_port}/xcai/rad75")
    );
    assert_eq!(
        p_oost.spec.endpoints.connect_to.as_deref(),
        Some("duo-oost.duo-peers.svc")
    );
    assert_eq!(p_oost.spec.trust.certificate_ura.as_deref(), Some(OOST.ura));
    // the Service listens on the published port too, to the gateway's https port
    let svc = Api::<Service>::namespaced(client.clone(), NS)
        .get("duo-oost")
        .await
        .expect("Service");
    let ports = svc.spec.and_then(|s| s.ports).expect("ports");
    assert!(
        ports.iter().any(|p| p.port == i32::from(oost_port)
            && p.target_port
                == Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                        "https".into()
                    )
                )),
        "{ports:?}"
    );
    // the pods mount the operator's copy of the certificates, not the user's Secret
    let material = secrets.get("duo-oost-material").await.expect("material");
    assert_eq!(
        material.data.as_ref().expect("data")["tls.crt"].0,
        good_oost.cert_pem.as_bytes()
    );
    let d_oost = deployment(&client, "oost").await;
    let pod = d_oost
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    for v in pod.volumes.iter().flatten() {
        if let Some(s) = &v.secret {
            assert_eq!(s.secret_name.as_deref(), Some("duo-oost-material"), "{v:?}");
        }
    }

    // --- both run as their pods would, and query each other --------------------------------------------
    let mut oost = PodProcess::start(
        &client,
        NS,
        &d_oost,
        &work.path().join("oost"),
        oost_port,
        services_on_loopback,
        T,
    )
    .await;
    let west = PodProcess::start(
        &client,
        NS,
        &deployment(&client, "west").await,
        &work.path().join("west"),
        west_port,
        services_on_loopback,
        T,
    )
    .await;
    let bsn = patient.bsn.to_string();
    let at_oost = timeline_sources(work.path(), &ca, &OOST, oost_port, &bsn, &oost).await;
    assert!(
        at_oost.contains(&WEST.home.to_owned()),
        "oost's timeline has west's answer (ITI-38 to duo.west.example through the Service): {at_oost:?}\n{}",
        west.log()
    );
    let at_west = timeline_sources(work.path(), &ca, &WEST, west_port, &bsn, &west).await;
    assert!(
        at_west.contains(&OOST.home.to_owned()),
        "west's timeline has oost's answer: {at_west:?}\n{}",
        oost.log()
    );
    // the certificate names only the external host: connecting by address is refused by TLS, so the
    // queries above were verified against the published name
    let direct = identity(work.path(), &ca, "probe", &plain("probe.example"))
        .http_client(Duration::from_secs(5))
        .expect("client")
        .get(format!("https://127.0.0.1:{oost_port}/readyz"))
        .send()
        .await
        .expect_err("no certificate for 127.0.0.1");
    let why = format!("{direct:?}");
    assert!(
        why.contains("NotValidForName") || why.contains("certificate"),
        "{why}"
    );

    // --- a bad edit: an expired certificate and a mistyped URA ------------------------------------------
    apply(
        &secrets,
        "oost-tls",
        &tls_secret("oost-tls", &certificate(&ca, &OOST, -1)),
    )
    .await;
    wait_for("oost refuses the expired certificate", T, || async {
        let g = gws.get("oost").await.ok()?;
        gateway_condition(&g, "Degraded").filter(|c| c.0 == "True" && c.1 == "CertificateExpired")
    })
    .await;
    gws.patch(
        "oost",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"organization": {"ura": "12345679"}}})),
    )
    .await
    .expect("mistype the URA");
    let (_, reason, message) = wait_for("oost refuses the edit", T, || async {
        let g = gws.get("oost").await.ok()?;
        let current = g.status.as_ref()?.observed_generation == g.metadata.generation;
        gateway_condition(&g, "Degraded").filter(|c| current && c.0 == "True")
    })
    .await;
    assert_eq!(reason, "CertificateExpired", "{message}");
    // the operator's copy still holds the last good certificate
    let material = secrets.get("duo-oost-material").await.expect("material");
    assert_eq!(
        material.data.as_ref().expect("data")["tls.crt"].0,
        good_oost.cert_pem.as_bytes(),
        "a refused certificate never reaches the pods' Secret"
    );
    // the published DuoCommunity keeps the applied values
    let p_now = published.get("oost").await.expect("published oost");
    assert_eq!(
        p_now.spec, p_oost.spec,
        "published values are the applied ones"
    );
    assert_eq!(p_now.spec.organizations[0].ura, OOST.ura);

    // the pod restarts (eviction, node drain): it starts from what the Deployment mounts now
    let exit = oost.terminate(T);
    assert!(exit.success(), "{exit}\n{}", oost.log());
    drop(oost);
    let restarted = PodProcess::start(
        &client,
        NS,
        &deployment(&client, "oost").await,
        &work.path().join("oost-restarted"),
        oost_port,
        services_on_loopback,
        T,
    )
    .await;
    let at_west = timeline_sources(work.path(), &ca, &WEST, west_port, &bsn, &west).await;
    assert!(
        at_west.contains(&OOST.home.to_owned()),
        "the restarted oost serves west with the last good certificate: {at_west:?}\n{}",
        restarted.log()
    );
    operator.stop().await;
    xds_run.stop().await;
}

/// Issue 21, tenancy: a DuoCommunity that copies a published hospital's homeCommunityId (and forges the
/// operator's label and owner reference) in another namespace the gateway selects does not remove that
/// hospital's peer: the intruder is skipped and named in `CommunitiesSkipped` and a Warning event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intruder_cannot_displace_a_published_peer() {
    const H: &str = "duo-tenancy-h";
    const X: &str = "duo-tenancy-x";
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, H).await;
    namespace(&client, X).await;
    let ca = Ca::new("DUO test UZI CA").expect("ca");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), H);
    for h in [&OOST, &WEST] {
        let name = format!("{}-tls", h.name);
        apply(
            &secrets,
            &name,
            &tls_secret(&name, &certificate(&ca, h, 365)),
        )
        .await;
    }
    trust_config_map(&client, H, &ca.cert_pem).await;
    let urls = (
        "https://xds.example/iti18".to_owned(),
        "https://xds.example/iti43".to_owned(),
        "https://xds.example/rad69".to_owned(),
    );
    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), H);
    for h in [&OOST, &WEST] {
        let mut g = gateway(h, 443, &urls);
        g.metadata.namespace = Some(H.into());
        g.spec.communities.as_mut().expect("communities").namespaces =
            Some(vec![H.into(), X.into()]);
        apply(&gws, h.name, &g).await;
    }
    let operator = Operator::start(client.clone());
    wait_applied(&gws, "oost", 1).await;
    let real = Api::<DuoCommunity>::namespaced(client.clone(), H)
        .get("west")
        .await
        .expect("published west");
    // the intruder: west's homeCommunityId, its own endpoints, and the operator's label and owner
    // reference copied from the real one
    let mut intruder: DuoCommunity = serde_json::from_value(json!({
        "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
        "kind": "DuoCommunity",
        "metadata": {"name": "west", "namespace": X, "labels": real.metadata.labels.clone()},
        "spec": {
            "homeCommunityId": WEST.home,
            "name": "Ziekenhuis West (echt)",
            "organizations": [{"ura": WEST.ura, "name": WEST.org}],
            "endpoints": {
                "queryUrl": "https://intruder.example/xca/iti38",
                "retrieveUrl": "https://intruder.example/xca/iti39",
                "imagingRetrieveUrl": "https://intruder.example/xcai/rad75",
            },
            "trust": {"certificateUra": WEST.ura},
        }
    }))
    .expect("DuoCommunity");
    intruder.metadata.owner_references = real.metadata.owner_references.clone();
    apply(
        &Api::<DuoCommunity>::namespaced(client.clone(), X),
        "west",
        &intruder,
    )
    .await;
    let g = wait_for("oost names the intruder", T, || async {
        let g = gws.get("oost").await.ok()?;
        gateway_condition(&g, "CommunitiesSkipped")
            .filter(|c| c.0 == "True" && c.2.contains(&format!("{X}/west")))
            .map(|c| (g, c))
    })
    .await;
    let (g, (_, reason, message)) = g;
    assert_eq!(reason, "DuplicateHomeCommunityId");
    assert!(
        message.contains(&format!("{H}/west")) && message.contains("kept"),
        "{message}"
    );
    assert_eq!(g.status.as_ref().expect("status").communities, 1);
    let cm = Api::<ConfigMap>::namespaced(client.clone(), H)
        .get("duo-oost-config")
        .await
        .expect("config");
    let config =
        duo_runtime::config::Config::parse(&cm.data.expect("data")["config.yaml"]).expect("config");
    assert_eq!(config.communities.len(), 1);
    assert_eq!(
        config.communities[0].query_url, real.spec.endpoints.query_url,
        "west's peer is the published one, not the intruder's"
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), H);
    wait_for("a Warning event names the intruder", T, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("CommunitySkipped")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains(&format!("{X}/west")))
            })
            .then_some(())
    })
    .await;
    operator.stop().await;
}

/// Issue 21, rollout cap: when the operator's default gateway image changes, at most
/// `--max-concurrent-rollouts` (here 2) of five gateways get the new image at a time; the others wait
/// with `Progressing=True` `RolloutQueued` and follow as rollouts finish (the test completes a rollout
/// by writing the Deployment's status, as the Deployment controller would; this API server runs none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_gateway_image_rolls_at_most_two_gateways_at_once() {
    const N: &str = "duo-rollout";
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, N).await;
    let ca = Ca::new("DUO test UZI CA").expect("ca");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), N);
    apply(
        &secrets,
        "oost-tls",
        &tls_secret("oost-tls", &certificate(&ca, &OOST, 365)),
    )
    .await;
    trust_config_map(&client, N, &ca.cert_pem).await;
    let urls = (
        "https://xds.example/iti18".to_owned(),
        "https://xds.example/iti43".to_owned(),
        "https://xds.example/rad69".to_owned(),
    );
    let names: Vec<String> = (1..=5).map(|i| format!("h{i}")).collect();
    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), N);
    for (i, name) in names.iter().enumerate() {
        let mut g = gateway(&OOST, 443, &urls);
        g.metadata.name = Some(name.clone());
        g.metadata.namespace = Some(N.into());
        g.spec.organization.home_community_id = format!("{}.{i}", OOST.home);
        g.spec.tls.secret_name = "oost-tls".into();
        g.spec.publish.enabled = false;
        apply(&gws, name, &g).await;
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), N);
    let image = |d: &Deployment| duo_operator::build::container_image(d).unwrap_or_default();
    // a rollout finishes: what the Deployment controller writes when every pod is updated and available
    let complete = |name: String| {
        let deps = deps.clone();
        async move {
            let d = deps.get(&name).await.expect("Deployment");
            let g = d.metadata.generation;
            deps.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"observedGeneration": g, "replicas": 1,
                    "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}})),
            )
            .await
            .expect("Deployment status");
        }
    };
    let first = Operator::start_with(client.clone(), "duo-gateway:1", Some(2), &[]);
    for name in &names {
        wait_applied(&gws, name, 0).await;
        complete(format!("duo-{name}")).await;
    }
    first.stop().await;
    // the upgrade: a new operator with a new default image
    let _second = Operator::start_with(client.clone(), "duo-gateway:2", Some(2), &[]);
    let mut rolled: Vec<String> = Vec::new();
    for round in 1..=3 {
        let want = (round * 2).min(5);
        let now = wait_for(&format!("{want} gateways on the new image"), T, || async {
            let list = deps.list(&Default::default()).await.ok()?;
            let new: Vec<String> = list
                .items
                .iter()
                .filter(|d| image(d) == "duo-gateway:2")
                .filter_map(|d| d.metadata.name.clone())
                .collect();
            (new.len() >= want).then_some(new)
        })
        .await;
        assert_eq!(now.len(), want, "the cap holds: {now:?}");
        // it keeps holding while those roll out
        tokio::time::sleep(Duration::from_secs(3)).await;
        let list = deps.list(&Default::default()).await.expect("list");
        let new = list
            .items
            .iter()
            .filter(|d| image(d) == "duo-gateway:2")
            .count();
        assert_eq!(new, want, "no third gateway rolls while two are rolling");
        if want < 5 {
            let queued = gws
                .list(&Default::default())
                .await
                .expect("list")
                .items
                .into_iter()
                .filter(|g| {
                    gateway_condition(g, "Progressing").is_some_and(|c| c.1 == "RolloutQueued")
                })
                .count();
            assert_eq!(queued, 5 - want, "the others say why they wait");
        }
        for name in now.iter().filter(|n| !rolled.contains(n)) {
            complete(name.clone()).await;
        }
        rolled = now;
    }
}
