//! End to end on a real kube-apiserver (issue 5 acceptance): the examples are applied, the operator
//! creates every child with the expected content, the rendered configuration and Secrets are laid out as
//! the pod mounts them and `duo-gateway` accepts them, a community change or certificate rotation changes
//! only the configuration or the checksum, bad edits are rejected (CEL) or reported (status) while the
//! running Deployment stays untouched, and deleting a DuoGateway removes its children.

mod common;

use std::time::Duration;

use common::*;
use duo_operator::build::CHECKSUM_ANNOTATION;
use duo_operator::crd::{DuoCommunity, DuoGateway, MitzConnection};
use duo_runtime::config::Config;
use duo_runtime::pki::generate::ServerCertSpec;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};

const NS: &str = "duo-e2e";
const T: Duration = Duration::from_secs(60);

fn condition<'a>(
    gw: &'a DuoGateway,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    gw.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

/// Waits until `name` has a status for its current generation for which `ok` holds.
async fn wait_status(
    api: &Api<DuoGateway>,
    name: &str,
    what: &str,
    ok: impl Fn(&DuoGateway) -> bool,
) -> DuoGateway {
    wait_for(what, T, || async {
        let gw = api.get(name).await.ok()?;
        let current = gw.status.as_ref()?.observed_generation == gw.metadata.generation;
        (current && ok(&gw)).then_some(gw)
    })
    .await
}

fn applied(gw: &DuoGateway) -> bool {
    condition(gw, "Degraded").is_some_and(|c| c.status == "False")
}

/// The Deployment without what legitimately changes on a rollout trigger (checksum) or on the server.
fn deployment_shape(d: &Deployment) -> serde_json::Value {
    let mut spec = serde_json::to_value(d.spec.as_ref().expect("spec")).expect("json");
    if let Some(a) = spec.pointer_mut("/template/metadata/annotations") {
        a.as_object_mut()
            .expect("annotations")
            .remove(CHECKSUM_ANNOTATION);
    }
    spec
}

fn checksum_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .expect("annotations")[CHECKSUM_ANNOTATION]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_end_to_end() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("DUO_TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, NS).await;
    let secrets = create_example_secrets(&client, NS).await;
    apply_example(&client, NS, "mitz").await;
    apply_example(&client, NS, "xds-hospital").await;
    apply_example(&client, NS, "tlb-hospital").await;
    let operator = Operator::start(client.clone());

    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), NS);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);

    // --- every child, with the expected content ---------------------------------------------------
    // each hospital sees the other (published by the operator) and the external "noord"
    let oost = wait_status(&gws, "oost", "oost applied with 2 communities", |g| {
        applied(g) && g.status.as_ref().is_some_and(|s| s.communities == 2)
    })
    .await;
    let west = wait_status(&gws, "west", "west applied with 2 communities", |g| {
        applied(g) && g.status.as_ref().is_some_and(|s| s.communities == 2)
    })
    .await;
    assert!(
        oost.finalizers()
            .iter()
            .any(|f| f == duo_operator::reconcile::FINALIZER)
    );
    let os = oost.status.clone().expect("status");
    assert_eq!(os.connection_kind.as_deref(), Some("xds"));
    assert_eq!(os.localization.as_deref(), Some("mitz"));
    assert_eq!(
        west.status.as_ref().and_then(|s| s.localization.as_deref()),
        Some("allCommunities")
    );
    assert_eq!(
        west.status
            .as_ref()
            .and_then(|s| s.connection_kind.as_deref()),
        Some("tlb")
    );
    assert_eq!(
        os.certificate.as_ref().and_then(|c| c.ura.as_deref()),
        Some("12345678")
    );
    assert_eq!(
        condition(&oost, "Ready").map(|c| c.status.as_str()),
        Some("False"),
        "no pods without a kubelet"
    );

    let cm = cms.get("duo-oost-config").await.expect("oost ConfigMap");
    let config = Config::parse(&cm.data.as_ref().expect("data")["config.yaml"])
        .expect("rendered config parses and validates");
    assert_eq!(config.organization.ura.as_str(), "12345678");
    let names: Vec<&str> = config.communities.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["UMC Noord", "Ziekenhuis West"],
        "sorted by namespace/name: noord, west"
    );
    let west_in_oost = &config.communities[1];
    // published under the host its certificate names, reached through its Service
    assert_eq!(west_in_oost.query_url, "https://duo.west.example/xca/iti38");
    assert_eq!(
        west_in_oost.imaging_retrieve_url,
        "https://duo.west.example/xcai/rad75"
    );
    assert_eq!(west_in_oost.connect_to, Some(format!("duo-west.{NS}.svc")));
    assert_eq!(
        west_in_oost.certificate_ura.as_ref().map(|u| u.as_str()),
        Some("87654321")
    );
    assert!(config.mitz.is_some());

    let dep = deps.get("duo-oost").await.expect("oost Deployment");
    assert_eq!(
        checksum_of(&dep),
        os.applied_checksum.clone().expect("checksum in status")
    );
    assert_eq!(dep.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let owner = &dep.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("DuoGateway", "oost", Some(true))
    );
    assert!(
        dep.metadata
            .managed_fields
            .as_ref()
            .expect("managed fields")
            .iter()
            .all(|m| m.manager.as_deref() == Some("duo-operator"))
    );
    Api::<Service>::namespaced(client.clone(), NS)
        .get("duo-oost")
        .await
        .expect("Service");
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .get("duo-oost")
        .await
        .expect("ServiceAccount");
    assert_eq!(sa.automount_service_account_token, Some(false));
    Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .get("duo-oost")
        .await
        .expect("PDB for 2 replicas");
    assert!(
        Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
            .get_opt("duo-west")
            .await
            .expect("get")
            .is_none(),
        "no PDB for 1 replica"
    );
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), NS)
        .get("duo-oost")
        .await
        .expect("NetworkPolicy");
    assert_eq!(
        np.spec.and_then(|s| s.policy_types),
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    let published = Api::<DuoCommunity>::namespaced(client.clone(), NS)
        .get("oost")
        .await
        .expect("published community");
    assert_eq!(
        published.spec.endpoints.query_url,
        "https://duo.oost.example/xca/iti38"
    );
    assert_eq!(
        published.spec.endpoints.connect_to,
        Some(format!("duo-oost.{NS}.svc"))
    );
    // it publishes oost's XUA issuer with the certificate that signs its assertions (the TLS one by
    // default), which every other gateway of the cluster then trusts without hand work
    let leaf = |pem: &str| {
        duo_runtime::pki::parse_certificates(pem.as_bytes()).expect("PEM certificates")[0].to_vec()
    };
    let issuers = &published.spec.trust.issuers;
    assert_eq!(issuers.len(), 1, "{issuers:?}");
    assert_eq!(issuers[0].issuer, oost.spec.organization.home_community_id);
    assert_eq!(leaf(&issuers[0].certificates), leaf(&secrets.oost.cert_pem));
    let xs = os.xua.as_ref().expect("status.xua");
    assert_eq!(xs.issuer, issuers[0].issuer);
    assert!(xs.trusted_issuers >= 1, "{xs:?}");
    assert!(!xs.unsigned_allowed);
    // the example's endpoints are placeholders (mitz.example): never Ready, saying why
    wait_for("MitzConnection PlaceholderEndpoint", T, || async {
        let m = Api::<MitzConnection>::namespaced(client.clone(), NS)
            .get("mitz")
            .await
            .ok()?;
        m.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "PlaceholderEndpoint")
            .then_some(())
    })
    .await;
    point_mitz_at(&client, NS, "mitz", MITZ_TEST_BASE).await;
    let mitz: MitzConnection = wait_for("MitzConnection Ready", T, || async {
        let m = Api::<MitzConnection>::namespaced(client.clone(), NS)
            .get("mitz")
            .await
            .ok()?;
        m.status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(m)
    })
    .await;
    assert!(mitz.status.and_then(|s| s.certificate).is_some());
    let metrics = operator.metrics.encode();
    assert!(
        metrics
            .contains(r#"duo_operator_gateways{localization="allCommunities",consent="mitz"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"duo_operator_gateways{localization="mitz",consent="mitz"} 1"#),
        "{metrics}"
    );

    // --- the runtime accepts what the pod would mount ----------------------------------------------
    // check-config parses and validates the same file; operator/tests/serve.rs starts `duo-gateway
    // serve` from such a layout against simulators and runs a timeline query through it.
    for (name, peer) in [("duo-oost", "west"), ("duo-west", "oost")] {
        let d = deps.get(name).await.expect("deployment");
        let root = tempfile::tempdir().expect("tempdir");
        let config_path = lay_out_like_the_pod(&client, NS, &d, root.path()).await;
        let rendered = Config::load(&config_path).expect("config loads from the mounted layout");
        // the peer's published issuer trust list is in the rendered configuration, as published
        let peer_published = Api::<DuoCommunity>::namespaced(client.clone(), NS)
            .get(peer)
            .await
            .expect("published peer community");
        let rc = rendered
            .communities
            .iter()
            .find(|c| c.home_community_id.to_string() == peer_published.spec.home_community_id)
            .unwrap_or_else(|| panic!("{name} configures {peer}"));
        assert_eq!(
            rc.trusted_issuers.len(),
            1,
            "{name}: {:?}",
            rc.trusted_issuers
        );
        assert_eq!(
            (
                &rc.trusted_issuers[0].issuer,
                &rc.trusted_issuers[0].certificates
            ),
            (
                &peer_published.spec.trust.issuers[0].issuer,
                &peer_published.spec.trust.issuers[0].certificates
            )
        );
        for f in [
            &rendered.server.tls.cert_file,
            &rendered.server.tls.key_file,
            &rendered.server.tls.trust_bundle_file,
        ] {
            assert!(f.is_file(), "{} mounted", f.display());
        }
        let out = std::process::Command::new(duo_gateway_bin())
            .args(["check-config", "--config"])
            .arg(&config_path)
            .output()
            .expect("run duo-gateway");
        assert!(
            out.status.success(),
            "duo-gateway check-config failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // --- the Deployment rolls out: Ready --------------------------------------------------------------
    // the test plays the Deployment controller, which reports every generation it has rolled out: a
    // reconcile that re-applies the Deployment after a first report (a peer published late on a loaded
    // machine) gets its own report, as in a cluster
    let oost = wait_for("oost Ready", T, || async {
        let dep = deps.get("duo-oost").await.ok()?;
        let reported = dep.status.as_ref().and_then(|s| s.observed_generation);
        if reported != dep.metadata.generation {
            let status = DeploymentStatus {
                observed_generation: dep.metadata.generation,
                replicas: Some(2),
                updated_replicas: Some(2),
                ready_replicas: Some(2),
                available_replicas: Some(2),
                ..DeploymentStatus::default()
            };
            deps.patch_status(
                "duo-oost",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await
            .ok()?;
        }
        let gw = gws.get("oost").await.ok()?;
        let current = gw.status.as_ref()?.observed_generation == gw.metadata.generation;
        (current && condition(&gw, "Ready").is_some_and(|c| c.status == "True")).then_some(gw)
    })
    .await;
    assert_eq!(oost.status.as_ref().map(|s| s.ready_replicas), Some(2));
    assert_eq!(
        condition(&oost, "Progressing").map(|c| c.status.as_str()),
        Some("False")
    );

    // --- no reconcile storm: with nothing changing, the operator goes quiet ---------------------------
    // (its own status writes are filtered out; a storm would keep the counter moving)
    let reconciles = |m: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with("duo_operator_reconciliations_total{"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
            .sum()
    };
    wait_for("the operator to go quiet", T, || async {
        let before = reconciles(&operator.metrics.encode());
        tokio::time::sleep(Duration::from_secs(3)).await;
        (reconciles(&operator.metrics.encode()) == before).then_some(())
    })
    .await;

    // --- a community change: only the config and the checksum change -------------------------------
    let before_dep = deps.get("duo-oost").await.expect("deployment");
    let before_cm = cms.get("duo-oost-config").await.expect("cm");
    let communities: Api<DuoCommunity> = Api::namespaced(client.clone(), NS);
    communities
        .patch(
            "noord",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"endpoints": {"queryUrl": "https://duo2.noord.example/xca/iti38"}}})),
        )
        .await
        .expect("edit community");
    let after_cm = wait_for("oost config follows the community", T, || async {
        let cm = cms.get("duo-oost-config").await.ok()?;
        cm.data.as_ref()?["config.yaml"]
            .contains("duo2.noord.example")
            .then_some(cm)
    })
    .await;
    assert_ne!(before_cm.data, after_cm.data);
    let after_dep = wait_for("checksum follows", T, || async {
        let d = deps.get("duo-oost").await.ok()?;
        (checksum_of(&d) != checksum_of(&before_dep)).then_some(d)
    })
    .await;
    assert_eq!(
        deployment_shape(&before_dep),
        deployment_shape(&after_dep),
        "only the checksum annotation changed"
    );

    // --- certificate rotation: only the checksum changes --------------------------------------------
    let before_dep = after_dep;
    let before_cm = after_cm;
    let rotated = secrets
        .ca
        .issue(&ServerCertSpec::uzi(
            "12345678".parse().unwrap(),
            "Ziekenhuis Oost",
            &["duo.oost.example"],
            200,
        ))
        .expect("rotated cert");
    apply(
        &Api::<Secret>::namespaced(client.clone(), NS),
        "oost-tls",
        &tls_secret("oost-tls", &rotated),
    )
    .await;
    let after_dep = wait_for("checksum follows the rotated certificate", T, || async {
        let d = deps.get("duo-oost").await.ok()?;
        (checksum_of(&d) != checksum_of(&before_dep)).then_some(d)
    })
    .await;
    assert_eq!(deployment_shape(&before_dep), deployment_shape(&after_dep));
    assert_eq!(
        cms.get("duo-oost-config").await.expect("cm").data,
        before_cm.data,
        "config unchanged by rotation"
    );

    // --- bad edits leave the running Deployment untouched ------------------------------------------
    let running = deps.get("duo-oost").await.expect("deployment");
    let rv = running.resource_version();
    // an invalid URA is rejected by the API server with the CEL message
    let err = gws
        .patch(
            "oost",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"organization": {"ura": "1234567"}}})),
        )
        .await
        .expect_err("7-digit URA rejected");
    assert!(
        err.to_string().contains("must be a URA: exactly 8 digits"),
        "{err}"
    );
    // a missing Secret is reported in status
    gws.patch(
        "oost",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"tls": {"secretName": "oost-tls-missing"}}})),
    )
    .await
    .expect("edit secretName");
    let oost = wait_status(&gws, "oost", "SecretMissing reported", |g| {
        condition(g, "Degraded").is_some_and(|c| c.status == "True")
    })
    .await;
    let degraded = condition(&oost, "Degraded").expect("Degraded");
    assert_eq!(degraded.reason, "SecretMissing");
    assert!(
        degraded.message.contains("oost-tls-missing"),
        "{}",
        degraded.message
    );
    assert_eq!(
        condition(&oost, "Ready").map(|c| c.status.as_str()),
        Some("False")
    );
    // a certificate of another hospital (URA mismatch)
    gws.patch(
        "oost",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"tls": {"secretName": "west-tls"}}})),
    )
    .await
    .expect("edit secretName");
    let oost = wait_status(&gws, "oost", "URA mismatch reported", |g| {
        condition(g, "Degraded").is_some_and(|c| c.reason == "CertificateUraMismatch")
    })
    .await;
    assert!(
        condition(&oost, "Degraded")
            .expect("Degraded")
            .message
            .contains("87654321")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        deps.get("duo-oost")
            .await
            .expect("deployment")
            .resource_version(),
        rv,
        "running Deployment untouched"
    );
    // fixing the spec applies again
    gws.patch(
        "oost",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"tls": {"secretName": "oost-tls"}}})),
    )
    .await
    .expect("fix secretName");
    wait_status(&gws, "oost", "oost applied again", applied).await;

    // --- a certificate 20 days from expiry: condition and Warning event --------------------------------
    let short = secrets
        .ca
        .issue(&ServerCertSpec::uzi(
            "12345678".parse().unwrap(),
            "Ziekenhuis Oost",
            &["duo.oost.example"],
            20,
        ))
        .expect("short cert");
    apply(
        &Api::<Secret>::namespaced(client.clone(), NS),
        "oost-tls",
        &tls_secret("oost-tls", &short),
    )
    .await;
    wait_status(&gws, "oost", "CertificateExpiring", |g| {
        condition(g, "CertificateExpiring").is_some_and(|c| c.status == "True")
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    wait_for("CertificateExpiresSoon event", T, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("CertificateExpiresSoon")
                    && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;

    // --- pause: spec changes wait until the annotation goes ---------------------------------------------
    gws.patch(
        "oost",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {duo_operator::crd::PAUSED_ANNOTATION: "true"}},
            "spec": {"replicas": 3}
        })),
    )
    .await
    .expect("pause and scale");
    wait_for("Progressing=Paused", T, || async {
        let g = gws.get("oost").await.ok()?;
        condition(&g, "Progressing")
            .is_some_and(|c| c.reason == "Paused")
            .then_some(())
    })
    .await;
    assert_eq!(
        deps.get("duo-oost")
            .await
            .expect("dep")
            .spec
            .and_then(|s| s.replicas),
        Some(2),
        "paused: not applied"
    );
    gws.patch(
        "oost",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {duo_operator::crd::PAUSED_ANNOTATION: null}}})),
    )
    .await
    .expect("unpause");
    wait_for("3 replicas after unpause", T, || async {
        (deps.get("duo-oost").await.ok()?.spec?.replicas == Some(3)).then_some(())
    })
    .await;

    // --- deleting a DuoGateway removes its children --------------------------------------------------
    gws.delete("west", &DeleteParams::default())
        .await
        .expect("delete west");
    wait_for("west gone (finalizer done)", T, || async {
        gws.get_opt("west").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(deps.get_opt("duo-west").await.expect("get").is_none());
    assert!(cms.get_opt("duo-west-config").await.expect("get").is_none());
    assert!(
        Api::<Service>::namespaced(client.clone(), NS)
            .get_opt("duo-west")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), NS)
            .get_opt("duo-west")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        Api::<NetworkPolicy>::namespaced(client.clone(), NS)
            .get_opt("duo-west")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        communities.get_opt("west").await.expect("get").is_none(),
        "published community removed"
    );
    // and oost no longer lists west
    wait_for("oost config without west", T, || async {
        let cm = cms.get("duo-oost-config").await.ok()?;
        (!cm.data.as_ref()?["config.yaml"].contains("Ziekenhuis West")).then_some(())
    })
    .await;
    operator.stop().await;
    drop(env);
}

/// Serves `body` as `application/pkix-crl` to every request on `listener` (one request per
/// connection); counts the requests.
fn serve_crl(
    listener: std::net::TcpListener,
    body: Vec<u8>,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::io::{Read, Write};
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    hits
}

/// The operator checks the gateway's own certificate against the CRL its distribution point names
/// (served on loopback): `CertificateRevoked` is `False` for a certificate the CRL does not list, and
/// `True` with a Warning event for one it lists, while the gateway stays applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_certificate_revocation_condition() {
    const NS: &str = "duo-revocation";
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("DUO_TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, NS).await;
    let secrets = create_example_secrets(&client, NS).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/uzi-ca.crl",
        listener.local_addr().expect("addr").port()
    );
    let spec = ServerCertSpec::uzi(
        "12345678".parse().unwrap(),
        "Ziekenhuis Oost",
        &["duo.oost.example"],
        365,
    );
    let good = secrets
        .ca
        .issue_naming_crl(&spec, Some(&url))
        .expect("good cert");
    let revoked = secrets
        .ca
        .issue_naming_crl(&spec, Some(&url))
        .expect("revoked cert");
    let crl = secrets
        .ca
        .crl(
            &[&revoked.cert_pem],
            jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
        )
        .expect("crl");
    let hits = serve_crl(listener, crl);
    let secret_api = Api::<Secret>::namespaced(client.clone(), NS);
    apply(&secret_api, "oost-tls", &tls_secret("oost-tls", &good)).await;
    apply_example(&client, NS, "mitz").await;
    apply_example(&client, NS, "xds-hospital").await;
    let operator = Operator::start(client.clone());
    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), NS);

    let g = wait_status(&gws, "oost", "CertificateRevoked=False", |g| {
        applied(g) && condition(g, "CertificateRevoked").is_some_and(|c| c.status == "False")
    })
    .await;
    let c = condition(&g, "CertificateRevoked").expect("condition");
    assert_eq!(c.reason, "CertificateNotRevoked");
    assert!(c.message.contains(&url), "{}", c.message);
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the CRL was fetched"
    );

    apply(&secret_api, "oost-tls", &tls_secret("oost-tls", &revoked)).await;
    let g = wait_status(&gws, "oost", "CertificateRevoked=True", |g| {
        condition(g, "CertificateRevoked").is_some_and(|c| c.status == "True")
    })
    .await;
    let c = condition(&g, "CertificateRevoked").expect("condition");
    assert_eq!(c.reason, "CertificateRevoked");
    assert!(c.message.contains(&url), "{}", c.message);
    assert!(
        applied(&g),
        "a revoked certificate is reported, the gateway stays applied"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    wait_for("CertificateRevoked Warning event", T, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("CertificateRevoked")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains("revoked"))
            })
            .then_some(())
    })
    .await;
    operator.stop().await;
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_rejects_bad_specs_with_cel_messages() {
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, "duo-cel").await;
    let text = std::fs::read_to_string(repo().join("examples/xds-hospital/duogateway.yaml"))
        .expect("example");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("yaml");
    let good = docs
        .into_iter()
        .find(|d| d["kind"] == "DuoGateway")
        .expect("gateway doc");
    // raw objects: the typed client would refuse some of these values before the API server sees them
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "duo-cel",
        &ApiResource::erase::<DuoGateway>(&()),
    );
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "/spec/organization/ura",
            "1234567".into(),
            "must be a URA: exactly 8 digits",
        ),
        (
            "/spec/organization/homeCommunityId",
            "2.16.528.1".into(),
            "must be a homeCommunityId",
        ),
        (
            "/spec/connection/xds/registryUrl",
            "http://registry.oost.example/iti18".into(),
            "must be https:// unless allowPlainHttp",
        ),
        (
            "/spec/connection/xds/registryUrl",
            "registry".into(),
            "must be an absolute https:// URL",
        ),
        ("/spec/localization", "everyone".into(), "Unsupported value"),
        (
            "/spec/connection/tlb",
            serde_json::json!({"homeCommunityId": "urn:oid:1.2.3", "queryUrl": "https://a/1", "retrieveUrl": "https://a/2", "imagingRetrieveUrl": "https://a/3"}),
            "set exactly one of connection.xds or connection.tlb",
        ),
        (
            "/spec/tls/trustBundle/secret",
            serde_json::json!({"name": "x"}),
            "set exactly one of configMap or secret",
        ),
        // a trusted front end by a name alone, by both forms, or by a pin that is none (issue 12)
        (
            "/spec/trustedFrontEnds",
            serde_json::json!([{"subject": "CN=epd.oost.example,O=Ziekenhuis Oost"}]),
            "set issuer and subject, or spkiSha256",
        ),
        (
            "/spec/trustedFrontEnds",
            serde_json::json!([{"issuer": "CN=CA", "subject": "CN=epd", "spkiSha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}]),
            "set issuer and subject, or spkiSha256",
        ),
        (
            "/spec/trustedFrontEnds",
            serde_json::json!([{"spkiSha256": "epd.oost.example"}]),
            "should match",
        ),
    ];
    for (i, (pointer, value, message)) in cases.into_iter().enumerate() {
        let mut doc = good.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        doc.pointer_mut(parent)
            .expect("parent")
            .as_object_mut()
            .expect("object")
            .insert(key.to_owned(), value);
        doc["metadata"]["name"] = format!("bad-{i}").into();
        let err = api
            .create(
                &Default::default(),
                &serde_json::from_value::<DynamicObject>(doc).expect("object"),
            )
            .await
            .expect_err(pointer);
        assert!(err.to_string().contains(message), "{pointer}: {err}");
    }
    // without mitz, only permitAll + allCommunities is accepted
    let mut doc = good.clone();
    doc["spec"].as_object_mut().expect("spec").remove("mitz");
    let err = api
        .create(
            &Default::default(),
            &serde_json::from_value::<DynamicObject>(doc.clone()).expect("object"),
        )
        .await
        .expect_err("mitz required");
    assert!(err.to_string().contains("mitz is required"), "{err}");
    doc["spec"]["consent"]["mode"] = "permitAll".into();
    doc["spec"]["localization"] = "allCommunities".into();
    doc["metadata"]["name"] = "no-mitz".into();
    api.create(
        &Default::default(),
        &serde_json::from_value::<DynamicObject>(doc).expect("object"),
    )
    .await
    .expect("accepted");
    // trusted front ends in either form are accepted
    let mut doc = good.clone();
    doc["spec"]["trustedFrontEnds"] = serde_json::json!([
        {"issuer": "CN=UZI-register Private Server CA G1,O=CIBG,C=NL", "subject": "CN=epd.oost.example,O=Ziekenhuis Oost,C=NL"},
        {"spkiSha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}
    ]);
    doc["metadata"]["name"] = "front-ends".into();
    api.create(
        &Default::default(),
        &serde_json::from_value::<DynamicObject>(doc).expect("object"),
    )
    .await
    .expect("trusted front ends accepted");
    // kubectl explain has descriptions to show
    let crd = duo_operator::crds().into_iter().next().expect("crd");
    assert!(
        serde_json::to_string(&crd)
            .expect("json")
            .contains("Zorgaanbiedercategorie")
    );
    drop(env);
}
