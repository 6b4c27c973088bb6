//! Faults a tester found, on a real kube-apiserver: bad and colliding DuoCommunities are left out and
//! named instead of freezing every gateway that selects them; the own published DuoCommunity follows the
//! spec even while the gateway is degraded; objects the operator did not create are never taken over or
//! deleted; an apply the API server refuses is reported in status; an http:// MitzConnection is refused.

mod common;

use std::time::Duration;

use common::*;
use duo_operator::crd::{DuoCommunity, DuoGateway, MitzConnection};
use duo_operator::reconcile::COMMUNITIES_SKIPPED;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};

const T: Duration = Duration::from_secs(60);

fn condition<'a>(gw: &'a DuoGateway, t: &str) -> Option<&'a Condition> {
    gw.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

fn communities(gw: &DuoGateway) -> i32 {
    gw.status.as_ref().map_or(-1, |s| s.communities)
}

fn applied(gw: &DuoGateway) -> bool {
    gw.status.as_ref().and_then(|s| s.observed_generation) == gw.metadata.generation
        && condition(gw, "Degraded").is_some_and(|c| c.status == "False")
}

async fn wait_gw(
    api: &Api<DuoGateway>,
    name: &str,
    what: &str,
    ok: impl Fn(&DuoGateway) -> bool,
) -> DuoGateway {
    wait_for(what, T, || async {
        let gw = api.get(name).await.ok()?;
        ok(&gw).then_some(gw)
    })
    .await
}

async fn warning_event(client: &Client, ns: &str, reason: &str, contains: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("Warning event {reason}"), T, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains(contains))
            })
            .then_some(())
    })
    .await;
}

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("DUO_TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_colliding_communities_are_left_out_and_named() {
    logs();
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    let ns = "duo-communities";
    namespace(&client, ns).await;
    create_example_secrets(&client, ns).await;
    apply_example(&client, ns, "mitz").await;
    apply_example(&client, ns, "xds-hospital").await;
    apply_example(&client, ns, "tlb-hospital").await;
    let _operator = Operator::start(client.clone());
    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), ns);
    let dcoms: Api<DuoCommunity> = Api::namespaced(client.clone(), ns);
    wait_gw(&gws, "oost", "oost applied with 2 communities", |g| {
        applied(g) && communities(g) == 2
    })
    .await;

    // --- the CRD refuses http:// without the opt-in, consistently with its message -----------------
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<DuoCommunity>(&()));
    let bad = serde_json::json!({
        "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
        "kind": "DuoCommunity",
        "metadata": {"name": "bad", "labels": {"duo.beeldbeschikbaarheid.nl/network": "demo"}},
        "spec": {
            "homeCommunityId": "urn:oid:1.2.3.4",
            "name": "Bad",
            "endpoints": {"queryUrl": "http://x/y", "retrieveUrl": "https://x/2", "imagingRetrieveUrl": "https://x/3"}
        }
    });
    let err = raw
        .create(
            &Default::default(),
            &serde_json::from_value(bad.clone()).expect("object"),
        )
        .await
        .expect_err("http:// without allowPlainHttp refused");
    assert!(
        err.to_string()
            .contains("endpoints must be https:// unless allowPlainHttp is true"),
        "{err}"
    );
    // with the opt-in it is stored, but oost (no allowPlainHttp) leaves it out and says which and why
    let mut bad = bad;
    bad["spec"]["allowPlainHttp"] = true.into();
    raw.create(
        &Default::default(),
        &serde_json::from_value(bad).expect("object"),
    )
    .await
    .expect("stored with the opt-in");
    let oost = wait_gw(&gws, "oost", "oost names the bad community", |g| {
        condition(g, COMMUNITIES_SKIPPED).is_some_and(|c| c.status == "True")
    })
    .await;
    assert!(applied(&oost), "still applied: {:?}", oost.status);
    assert_eq!(communities(&oost), 2, "the good communities stay");
    let msg = &condition(&oost, COMMUNITIES_SKIPPED)
        .expect("condition")
        .message;
    assert!(
        msg.contains(&format!("DuoCommunity {ns}/bad")) && msg.contains("spec.endpoints.queryUrl"),
        "{msg}"
    );
    warning_event(&client, ns, "CommunitySkipped", &format!("{ns}/bad")).await;
    dcoms
        .delete("bad", &DeleteParams::default())
        .await
        .expect("delete bad");
    wait_gw(&gws, "oost", "oost without skipped communities", |g| {
        condition(g, COMMUNITIES_SKIPPED).is_some_and(|c| c.status == "False")
    })
    .await;

    let west_id = gws
        .get("west")
        .await
        .expect("west")
        .spec
        .organization
        .home_community_id;
    // --- west cannot take noord's homeCommunityId: it is in URA 55554444's OID arc ------------------
    let noord_arc_id = dcoms
        .get("noord")
        .await
        .expect("noord")
        .spec
        .home_community_id;
    merge(
        &gws,
        "west",
        serde_json::json!({"spec": {"organization": {"homeCommunityId": noord_arc_id}}}),
    )
    .await;
    let refused = wait_gw(&gws, "west", "west refused noord's URA-arc id", |g| {
        g.status.as_ref().and_then(|s| s.observed_generation) == g.metadata.generation
            && condition(g, "Degraded").is_some_and(|c| c.status == "True")
    })
    .await;
    let c = condition(&refused, "Degraded").expect("Degraded");
    assert_eq!(c.reason, "InvalidSpec");
    assert!(
        c.message.contains("OID arc of URA 55554444"),
        "{}",
        c.message
    );
    assert_ne!(
        dcoms
            .get("west")
            .await
            .expect("west")
            .spec
            .home_community_id,
        noord_arc_id,
        "a refused identity is not published"
    );

    // --- with an identifier outside the URA arcs, west takes noord's: named, nobody freezes ----------
    let noord_id = "urn:oid:2.16.840.1.113883.2.4.3.111.55.1".to_owned();
    merge(
        &dcoms,
        "noord",
        serde_json::json!({"spec": {"homeCommunityId": noord_id}}),
    )
    .await;
    merge(
        &gws,
        "west",
        serde_json::json!({"spec": {"organization": {"homeCommunityId": noord_id}}}),
    )
    .await;
    // west's published community follows at once
    wait_for("west published with the new id", T, || async {
        (dcoms.get("west").await.ok()?.spec.home_community_id == noord_id).then_some(())
    })
    .await;
    let oost = wait_gw(&gws, "oost", "oost names the collision", |g| {
        condition(g, COMMUNITIES_SKIPPED)
            .is_some_and(|c| c.status == "True" && c.reason == "DuplicateHomeCommunityId")
    })
    .await;
    assert!(applied(&oost), "{:?}", oost.status);
    let msg = &condition(&oost, COMMUNITIES_SKIPPED).expect("c").message;
    assert!(
        msg.contains(&format!("DuoCommunity {ns}/west")) && msg.contains(&format!("{ns}/noord")),
        "{msg}"
    );
    let west = wait_gw(&gws, "west", "west applied, noord left out", |g| {
        applied(g) && condition(g, COMMUNITIES_SKIPPED).is_some_and(|c| c.status == "True")
    })
    .await;
    let msg = &condition(&west, COMMUNITIES_SKIPPED).expect("c").message;
    assert!(
        msg.contains(&format!("DuoCommunity {ns}/noord")) && msg.contains("own homeCommunityId"),
        "{msg}"
    );
    warning_event(&client, ns, "CommunitySkipped", "DuoCommunity").await;

    // --- reverting recovers without deleting anything by hand --------------------------------------
    merge(
        &gws,
        "west",
        serde_json::json!({"spec": {"organization": {"homeCommunityId": west_id}}}),
    )
    .await;
    for name in ["oost", "west"] {
        wait_gw(&gws, name, "recovered with 2 communities", |g| {
            applied(g)
                && communities(g) == 2
                && condition(g, COMMUNITIES_SKIPPED).is_some_and(|c| c.status == "False")
        })
        .await;
    }
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_objects_are_not_adopted_and_rejected_applies_are_reported() {
    logs();
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    let ns = "duo-conflict";
    namespace(&client, ns).await;
    create_example_secrets(&client, ns).await;
    // a ConfigMap someone else made, with the name the operator would give oost's configuration
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut foreign = ConfigMap::default();
    foreign.metadata.name = Some("duo-oost-config".into());
    foreign.data = Some([("keep".to_owned(), "me".to_owned())].into());
    apply(&cms, "duo-oost-config", &foreign).await;
    apply_example(&client, ns, "mitz").await;
    apply_example(&client, ns, "xds-hospital").await;
    let _operator = Operator::start(client.clone());
    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), ns);

    let oost = wait_gw(&gws, "oost", "ChildConflict", |g| {
        condition(g, "Degraded").is_some_and(|c| c.reason == "ChildConflict")
    })
    .await;
    let msg = &condition(&oost, "Degraded").expect("Degraded").message;
    assert!(msg.contains("ConfigMap duo-oost-config"), "{msg}");
    warning_event(&client, ns, "ChildConflict", "ConfigMap duo-oost-config").await;
    let cm = cms.get("duo-oost-config").await.expect("still there");
    assert!(cm.metadata.owner_references.is_none(), "not adopted");
    assert_eq!(cm.data.as_ref().map(|d| d.contains_key("keep")), Some(true));
    // a gateway that was never applied is not published: peers would call pods that do not run
    assert!(
        Api::<DuoCommunity>::namespaced(client.clone(), ns)
            .get_opt("oost")
            .await
            .expect("get")
            .is_none(),
        "published before its first apply"
    );

    // the conflict resolved (the foreign object removed), oost applies
    cms.delete("duo-oost-config", &DeleteParams::default())
        .await
        .expect("delete foreign");
    wait_gw(&gws, "oost", "applied after the conflict", applied).await;

    // --- a spec the API server refuses for a child: Degraded ApplyFailed, generation not observed ----
    let observed = gws
        .get("oost")
        .await
        .expect("oost")
        .status
        .and_then(|s| s.observed_generation);
    merge(
        &gws,
        "oost",
        serde_json::json!({"spec": {"resources": {"requests": {"cpu": "lots"}}, "organization": {"name": "Renamed while refused"}}}),
    )
    .await;
    let oost = wait_gw(&gws, "oost", "ApplyFailed", |g| {
        condition(g, "Degraded").is_some_and(|c| c.status == "True" && c.reason == "ApplyFailed")
    })
    .await;
    let msg = &condition(&oost, "Degraded").expect("Degraded").message;
    assert!(msg.contains("Deployment duo-oost"), "{msg}");
    assert!(msg.contains("lots") || msg.contains("quantit"), "{msg}");
    assert_eq!(
        oost.status.as_ref().and_then(|s| s.observed_generation),
        observed,
        "the refused generation is not observed"
    );
    warning_event(&client, ns, "ApplyFailed", "Deployment duo-oost").await;
    // nothing of the refused generation was applied: the running pods would hot-reload a new ConfigMap
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let rendered = cms.get("duo-oost-config").await.expect("duo-oost-config");
    let text = rendered
        .data
        .as_ref()
        .and_then(|d| d.values().next().cloned())
        .unwrap_or_default();
    assert!(!text.is_empty(), "the last good configuration is there");
    assert!(
        !text.contains("Renamed while refused"),
        "the refused generation's configuration was applied: {text}"
    );
    merge(
        &gws,
        "oost",
        serde_json::json!({"spec": {"resources": {"requests": {"cpu": "100m"}}}}),
    )
    .await;
    wait_gw(&gws, "oost", "applied after the fix", applied).await;

    // --- a Secret without tls.key: SecretIncomplete naming the key ------------------------------------
    // (a kubernetes.io/tls Secret must have tls.key: an Opaque one of the same name need not)
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut incomplete = secrets.get("oost-tls").await.expect("oost-tls");
    secrets
        .delete("oost-tls", &DeleteParams::default())
        .await
        .expect("delete oost-tls");
    incomplete.metadata = Default::default();
    incomplete.metadata.name = Some("oost-tls".into());
    incomplete.type_ = Some("Opaque".into());
    if let Some(d) = incomplete.data.as_mut() {
        d.remove("tls.key");
    }
    secrets
        .create(&Default::default(), &incomplete)
        .await
        .expect("create incomplete");
    let oost = wait_gw(&gws, "oost", "SecretIncomplete", |g| {
        condition(g, "Degraded").is_some_and(|c| c.reason == "SecretIncomplete")
    })
    .await;
    let msg = &condition(&oost, "Degraded").expect("Degraded").message;
    assert!(msg.contains("tls.key"), "{msg}");

    // --- deleting the gateway leaves what it does not own ----------------------------------------------
    apply(&cms, "duo-unrelated", &{
        let mut c = ConfigMap::default();
        c.metadata.name = Some("duo-unrelated".into());
        c
    })
    .await;
    gws.delete("oost", &DeleteParams::default())
        .await
        .expect("delete oost");
    wait_for("oost gone", T, || async {
        gws.get_opt("oost").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cms.get_opt("duo-oost-config").await.expect("get").is_none());
    assert!(cms.get_opt("duo-unrelated").await.expect("get").is_some());
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_mitz_connection_is_refused_and_not_ready() {
    logs();
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    let ns = "duo-mitz-http";
    namespace(&client, ns).await;
    create_example_secrets(&client, ns).await;
    apply_example(&client, ns, "mitz").await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<MitzConnection>(&()),
    );
    let mut m = serde_json::to_value(
        Api::<MitzConnection>::namespaced(client.clone(), ns)
            .get("mitz")
            .await
            .expect("example mitz"),
    )
    .expect("json");
    m["metadata"] = serde_json::json!({"name": "plain"});
    m["spec"]["closedQuestionUrl"] = "http://mitz.example/x".into();
    let err = raw
        .create(
            &Default::default(),
            &serde_json::from_value(m.clone()).expect("object"),
        )
        .await
        .expect_err("http:// refused");
    assert!(
        err.to_string()
            .contains("Mitz endpoints must be https:// unless spec.allowPlainHttp is true"),
        "{err}"
    );
    // with the opt-in it is stored and Ready (on hosts that are not placeholders)
    m["spec"]["allowPlainHttp"] = true.into();
    for (k, path) in [
        ("closedQuestionUrl", "geslotenautorisatievraag/xacml3"),
        ("openQuestionUrl", "openautorisatievraag"),
        ("subscriptionUrl", "abonnementen/fhir/Subscription"),
    ] {
        m["spec"][k] = format!("http://mitz.duo-test.internal/{path}").into();
    }
    raw.create(
        &Default::default(),
        &serde_json::from_value(m).expect("object"),
    )
    .await
    .expect("stored with the opt-in");
    let _operator = Operator::start(client.clone());
    let mitz: Api<MitzConnection> = Api::namespaced(client.clone(), ns);
    wait_for("plain Ready", T, || async {
        let m = mitz.get("plain").await.ok()?;
        m.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    drop(env);
}
