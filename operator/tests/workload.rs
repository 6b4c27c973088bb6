//! Workload settings on a real kube-apiserver (issue 21, item 4: "the workload settings appear in the
//! Deployment"): the duo-gateway chart installed with every `workload` and `service` value set, the
//! operator (in-process) reconciles it, and the Deployment and Service the API server stores carry each
//! setting, with the default anti-affinity for two replicas. Bad values are refused by the chart
//! schema or the CRD (unknown Service type, podLabels taking the selector labels, maps over their
//! bound) or reported as `Degraded` `ApplyFailed` when only the API server knows (a toleration operator,
//! a source range that is no CIDR), with nothing of that generation applied. Going back to a ClusterIP
//! Service removes what only a load balancer takes.

mod common;

use std::path::Path;

use std::time::Duration;

use common::*;
use duo_operator::build::CHECKSUM_ANNOTATION;
use duo_operator::crd::DuoGateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

const NS: &str = "duo-workload";
const T: Duration = Duration::from_secs(60);

/// Every workload and Service value set (on top of the XDS example's values).
const VALUES: &str = r#"
replicas: 2
workload:
  imagePullSecrets: [{name: regcred}, {name: regcred-mirror}]
  nodeSelector: {kubernetes.io/os: linux, node.hosting.example/dmz: "true"}
  tolerations:
    - {key: dedicated, operator: Equal, value: duo, effect: NoSchedule}
    - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [zone-a, zone-b]}]
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
  podAnnotations: {prometheus.io/scrape: "true", sidecar.istio.io/inject: "false"}
  podLabels: {team: imaging, cost-centre: radiology}
  priorityClassName: duo-critical
service:
  type: LoadBalancer
  annotations: {service.beta.kubernetes.io/azure-load-balancer-internal: "true"}
  loadBalancerSourceRanges: [192.0.2.0/24, "2001:db8::/48"]
  externalTrafficPolicy: Local
"#;

fn condition<'a>(gw: &'a DuoGateway, t: &str) -> Option<&'a Condition> {
    gw.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

/// Waits until the Degraded condition describes the current generation and `ok` holds for it.
async fn wait_degraded(
    gws: &Api<DuoGateway>,
    what: &str,
    ok: impl Fn(&Condition) -> bool,
) -> DuoGateway {
    wait_for(what, T, || async {
        let gw = gws.get("oost").await.ok()?;
        let c = condition(&gw, "Degraded")?;
        (c.observed_generation == gw.metadata.generation && ok(c)).then_some(gw)
    })
    .await
}

fn applied(c: &Condition) -> bool {
    c.status == "False"
}

fn apply_failed(c: &Condition) -> bool {
    c.status == "True" && c.reason == "ApplyFailed"
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn values_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write values");
    p.display().to_string()
}

/// The stored DuoGateway as raw JSON with `pointer` set to `value`, applied by the test's field
/// manager: the typed client would refuse some of these values before the API server sees them.
async fn raw_apply(client: &Client, pointer: &str, value: serde_json::Value) -> kube::Error {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<DuoGateway>(&()));
    let mut doc = serde_json::to_value(api.get("oost").await.expect("oost")).expect("json");
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    doc.pointer_mut(parent)
        .expect("parent")
        .as_object_mut()
        .expect("object")
        .insert(key.to_owned(), value);
    for k in [
        "managedFields",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
    ] {
        doc["metadata"].as_object_mut().expect("metadata").remove(k);
    }
    doc.as_object_mut().expect("doc").remove("status");
    api.patch(
        "oost",
        &PatchParams::apply("duo-test-hostile").force(),
        &Patch::Apply(&doc),
    )
    .await
    .expect_err(pointer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_settings_reach_the_deployment_and_service_the_api_server_stores() {
    let Some(helm_bin) = duo_testenv::helm_bin() else {
        return;
    };
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, NS).await;
    create_example_secrets(&client, NS).await;
    apply_example(&client, NS, "mitz").await;
    let _operator = Operator::start(client.clone());
    let helm = Helm::new(helm_bin, Some(&env.kubeconfig));
    let dir = tempfile::tempdir().expect("values dir");
    let values = values_file(dir.path(), "workload.yaml", VALUES);
    let release = |verb: &'static str, extra: &[&str]| {
        let mut args = vec![
            verb,
            "oost",
            "charts/duo-gateway",
            "-n",
            NS,
            "-f",
            "examples/xds-hospital/values.yaml",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| helm.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(release("install", &["-f", &values]));

    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let gw = wait_degraded(&gws, "oost applied", applied).await;
    let selector = duo_operator::build::selector_labels(&gw);

    // --- what the API server stores -------------------------------------------------------------------
    let d = deployments.get("duo-oost").await.expect("Deployment");
    let p = pod_spec(&d);
    let names: Vec<&str> = p
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["regcred", "regcred-mirror"]);
    let ns = p.node_selector.as_ref().expect("nodeSelector");
    assert_eq!(ns["kubernetes.io/os"], "linux");
    assert_eq!(ns["node.hosting.example/dmz"], "true");
    let t = p.tolerations.as_ref().expect("tolerations");
    assert_eq!(t.len(), 2);
    assert_eq!(
        (
            t[0].key.as_deref(),
            t[0].operator.as_deref(),
            t[0].value.as_deref(),
            t[0].effect.as_deref()
        ),
        (
            Some("dedicated"),
            Some("Equal"),
            Some("duo"),
            Some("NoSchedule")
        )
    );
    assert_eq!(t[1].toleration_seconds, Some(30));
    let a = p.affinity.as_ref().expect("affinity");
    let terms = &a
        .node_affinity
        .as_ref()
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("required node affinity")
        .node_selector_terms;
    let expr = &terms[0].match_expressions.as_ref().expect("expressions")[0];
    assert_eq!(expr.key, "topology.kubernetes.io/zone");
    assert_eq!(
        expr.values.as_deref(),
        Some(&["zone-a".to_owned(), "zone-b".to_owned()][..])
    );
    // two replicas and no podAntiAffinity given: the preferred one over nodes is added
    let anti = a
        .pod_anti_affinity
        .as_ref()
        .and_then(|x| {
            x.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("default anti-affinity");
    assert_eq!(anti[0].weight, 100);
    assert_eq!(
        anti[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti[0]
            .pod_affinity_term
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref()),
        Some(&selector)
    );
    let spread = p.topology_spread_constraints.as_ref().expect("spread");
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
    assert_eq!(
        spread[0]
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref()),
        Some(&selector)
    );
    assert_eq!(p.priority_class_name.as_deref(), Some("duo-critical"));
    let meta = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .expect("template metadata");
    let labels = meta.labels.as_ref().expect("labels");
    assert_eq!(labels["team"], "imaging");
    assert_eq!(labels["cost-centre"], "radiology");
    for (k, v) in &selector {
        assert_eq!(&labels[k], v);
    }
    let annotations = meta.annotations.as_ref().expect("annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["sidecar.istio.io/inject"], "false");
    assert!(annotations.contains_key(CHECKSUM_ANNOTATION));

    let svc = services.get("duo-oost").await.expect("Service");
    let spec = svc.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert!(
        spec.health_check_node_port.is_some(),
        "LoadBalancer with Local gets a health check node port from the API server"
    );
    assert_eq!(
        spec.load_balancer_source_ranges.as_deref(),
        Some(&["192.0.2.0/24".to_owned(), "2001:db8::/48".to_owned()][..])
    );
    assert_eq!(
        svc.metadata.annotations.as_ref().expect("annotations")["service.beta.kubernetes.io/azure-load-balancer-internal"],
        "true"
    );
    assert_eq!(spec.selector.as_ref(), Some(&selector));

    // --- refused before anything reaches the operator ----------------------------------------------
    // by the chart's schema, naming the field
    for (set, field) in [
        ("service.type=ExternalName", "/service/type"),
        (
            "workload.podLabels.app\\.kubernetes\\.io/instance=other",
            "/workload/podLabels",
        ),
        (
            "workload.podAnnotations.duo\\.beeldbeschikbaarheid\\.nl/checksum=forged",
            "/workload/podAnnotations",
        ),
    ] {
        let mut args = release("upgrade", &["-f", &values, "--set", set]);
        args.push("--dry-run=server".into());
        let err = helm.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.contains(field), "{set}: {err}");
    }
    // by the CRD on the API server (a client that is not the chart), with the CEL messages
    let hostile_labels: serde_json::Map<String, serde_json::Value> =
        (0..65).map(|i| (format!("team-{i}"), json!("x"))).collect();
    let huge_value = "v".repeat(5000);
    for (pointer, value, message) in [
        (
            "/spec/service/type",
            json!("ExternalName"),
            "Unsupported value",
        ),
        (
            "/spec/workload/podLabels",
            json!({"app.kubernetes.io/name": "intruder", "team": "x"}),
            "podLabels may not set app.kubernetes.io/name",
        ),
        (
            "/spec/workload/podLabels",
            json!({"app.kubernetes.io/instance": "other-gateway"}),
            "podLabels may not set",
        ),
        (
            "/spec/workload/podAnnotations",
            json!({"duo.beeldbeschikbaarheid.nl/checksum": "forged"}),
            "podAnnotations may not use the prefix",
        ),
        (
            "/spec/workload/podLabels",
            json!(hostile_labels),
            "must have at most 64",
        ),
        (
            "/spec/workload/podAnnotations",
            json!({"big": huge_value}),
            "may not be more than 4096",
        ),
        (
            "/spec/service",
            json!({"type": "ClusterIP", "externalTrafficPolicy": "Local"}),
            "externalTrafficPolicy may only be set when service.type is NodePort or LoadBalancer",
        ),
        (
            "/spec/service",
            json!({"type": "NodePort", "loadBalancerSourceRanges": ["192.0.2.0/24"]}),
            "loadBalancerSourceRanges may only be set when service.type is LoadBalancer",
        ),
    ] {
        let err = raw_apply(&client, pointer, value).await;
        assert!(err.to_string().contains(message), "{pointer}: {err}");
    }

    // --- refused by the API server when the operator applies: ApplyFailed, nothing half-applied -------
    let before_d = deployments.get("duo-oost").await.expect("Deployment");
    let before_s = services.get("duo-oost").await.expect("Service");
    let before_gen = gw.status.as_ref().and_then(|s| s.observed_generation);
    // a toleration operator only the API server knows to refuse, with a Service change in the same
    // generation: neither may be applied
    let bad_toleration = values_file(
        dir.path(),
        "bad-toleration.yaml",
        "workload:\n  tolerations: [{key: dedicated, operator: Sometimes, value: duo, effect: NoSchedule}]\nservice:\n  annotations: {changed.example/x: \"1\"}\n",
    );
    run(release("upgrade", &["-f", &values, "-f", &bad_toleration]));
    let gw = wait_degraded(&gws, "ApplyFailed for the toleration", apply_failed).await;
    let msg = &condition(&gw, "Degraded").expect("Degraded").message;
    assert!(msg.contains("Deployment duo-oost"), "{msg}");
    assert!(
        msg.contains("Sometimes") || msg.contains("operator"),
        "{msg}"
    );
    assert_eq!(
        gw.status.as_ref().and_then(|s| s.observed_generation),
        before_gen,
        "the refused generation is not observed"
    );
    let after_d = deployments.get("duo-oost").await.expect("Deployment");
    let after_s = services.get("duo-oost").await.expect("Service");
    assert_eq!(
        after_d.metadata.resource_version, before_d.metadata.resource_version,
        "Deployment unchanged"
    );
    assert_eq!(
        after_s.metadata.resource_version, before_s.metadata.resource_version,
        "Service unchanged although its own change was valid"
    );
    // a source range that is no CIDR: the Service is refused, the Deployment left as it was
    let bad_range = values_file(
        dir.path(),
        "bad-range.yaml",
        "service:\n  loadBalancerSourceRanges: [192.0.2.0/33]\n",
    );
    run(release("upgrade", &["-f", &values, "-f", &bad_range]));
    let gw = wait_degraded(&gws, "ApplyFailed for the source range", |c| {
        apply_failed(c) && c.message.contains("Service duo-oost")
    })
    .await;
    let msg = &condition(&gw, "Degraded").expect("Degraded").message;
    assert!(msg.contains("192.0.2.0/33"), "{msg}");
    assert_eq!(
        deployments
            .get("duo-oost")
            .await
            .expect("Deployment")
            .metadata
            .resource_version,
        before_d.metadata.resource_version
    );

    // --- back to the defaults: a ClusterIP Service without what only a load balancer takes ------------
    // (the API server clears the node ports and health check port it allocated; the operator's field
    // manager drops the annotations, source ranges and traffic policy it had set)
    run(release("upgrade", &[]));
    wait_degraded(&gws, "applied with the defaults", applied).await;
    let svc = services.get("duo-oost").await.expect("Service");
    let spec = svc.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.external_traffic_policy.is_none(), "{spec:?}");
    assert!(spec.load_balancer_source_ranges.is_none(), "{spec:?}");
    assert!(spec.health_check_node_port.is_none(), "{spec:?}");
    assert!(
        spec.ports.iter().flatten().all(|p| p.node_port.is_none()),
        "{spec:?}"
    );
    assert!(
        svc.metadata.annotations.as_ref().is_none_or(
            |a| !a.contains_key("service.beta.kubernetes.io/azure-load-balancer-internal")
        ),
        "{:?}",
        svc.metadata.annotations
    );
    let d = deployments.get("duo-oost").await.expect("Deployment");
    let p = pod_spec(&d);
    assert!(p.image_pull_secrets.is_none() && p.node_selector.is_none() && p.tolerations.is_none());
    assert!(p.topology_spread_constraints.is_none() && p.priority_class_name.is_none());
    let a = p
        .affinity
        .as_ref()
        .expect("the default anti-affinity stays (2 replicas)");
    assert!(a.node_affinity.is_none() && a.pod_anti_affinity.is_some());
    let labels = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert!(!labels.contains_key("team"), "{labels:?}");

    // --- the bound itself is accepted: 64 pod labels reach the pods ------------------------------------
    let mut many = String::from("workload:\n  podLabels:\n");
    for i in 0..64 {
        many += &format!("    label-{i}: v{i}\n");
    }
    let many = values_file(dir.path(), "many.yaml", &many);
    run(release("upgrade", &["-f", &many]));
    wait_degraded(&gws, "applied with 64 pod labels", applied).await;
    let d = deployments.get("duo-oost").await.expect("Deployment");
    let labels = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert!((0..64).all(|i| labels.get(&format!("label-{i}")) == Some(&format!("v{i}"))));
    for (k, v) in &selector {
        assert_eq!(&labels[k], v);
    }
    drop(env);
}
