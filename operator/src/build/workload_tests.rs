//! Tests of the workload settings (`spec.workload`, `spec.service`; issue 21 item 4): what reaches the
//! Deployment's pod spec and the Service, the default anti-affinity, and the operator's labels and
//! annotations that a spec can never take over.

use super::tests::gateway;
use super::*;
use crate::crd::{ExternalTrafficPolicy, GatewayService, ServiceType};
use k8s_openapi::api::core::v1::NodeAffinity;

fn owner(gw: &DuoGateway) -> OwnerReference {
    use kube::Resource;
    gw.controller_owner_ref(&()).expect("owner reference")
}

fn pod(gw: &DuoGateway) -> (ObjectMeta, PodSpec) {
    let d = deployment(gw, &owner(gw), None, "duo/duo-gateway:1", "abc");
    let t = d.spec.expect("spec").template;
    (t.metadata.expect("metadata"), t.spec.expect("pod spec"))
}

/// A DuoGateway with every workload and Service setting set, as a user writes it.
fn golden_workload() -> DuoGateway {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
        "kind": "DuoGateway",
        "metadata": {"name": "noord", "namespace": "hospitals", "uid": "7e1d2c3b-4a5f-4e6d-8c7b-9a0f1e2d3c4b"},
        "spec": {
            "organization": {
                "ura": "11223344",
                "name": "UMC Noord",
                "facilityType": "V5",
                "homeCommunityId": "urn:oid:2.16.528.1.1007.3.3.11223344.1"
            },
            "connection": {"xds": {"registryUrl": "https://registry.noord.example/iti18"}},
            "consent": {"mode": "permitAll"},
            "localization": "allCommunities",
            "tls": {
                "secretName": "noord-tls",
                "trustBundle": {"configMap": {"name": "duo-trust"}}
            },
            "replicas": 2,
            "workload": {
                "imagePullSecrets": [{"name": "regcred"}, {"name": "regcred-mirror"}],
                "nodeSelector": {"kubernetes.io/os": "linux", "node.noord.example/dmz": "true"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "duo", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
                ],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a", "zone-b"]}
                    ]}]
                }}},
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
                    {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                     "labelSelector": {"matchLabels": {"team": "imaging"}}}
                ],
                "podAnnotations": {"prometheus.io/scrape": "true", "sidecar.istio.io/inject": "false"},
                "podLabels": {"team": "imaging", "cost-centre": "radiology"},
                "priorityClassName": "duo-critical"
            },
            "service": {
                "type": "LoadBalancer",
                "annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
                "loadBalancerSourceRanges": ["192.0.2.0/24", "2001:db8::/48"],
                "externalTrafficPolicy": "Local"
            }
        }
    }))
    .expect("DuoGateway")
}

/// Compares `value` (pretty JSON) with `operator/tests/golden/<file>`; `DUO_UPDATE_GOLDEN=1` rewrites
/// the file instead (review the diff).
fn assert_golden(file: &str, value: &impl serde::Serialize) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let got = serde_json::to_string_pretty(value).expect("json") + "\n";
    if std::env::var_os("DUO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (DUO_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        got == want,
        "differs from {}:\n--- built ---\n{got}",
        path.display()
    );
}

#[test]
fn every_workload_setting_reaches_the_deployment_and_the_service() {
    let gw = golden_workload();
    check_workload(&gw).expect("a valid spec");
    let d = deployment(
        &gw,
        &owner(&gw),
        None,
        "ghcr.io/duo-beeldbeschikbaarheid/duo-gateway:0.1.0",
        "5b1e0c7a9d3f2e4b6a8c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9d0e1f2",
    );
    assert_golden("deployment-workload.json", &d);
    let svc = service(&gw, &owner(&gw));
    assert_golden("service-workload.json", &svc);

    // the same, field by field, so that a golden file rewritten by mistake cannot hide a loss
    let (meta, p) = pod(&gw);
    let w = &gw.spec.workload;
    assert_eq!(
        p.image_pull_secrets.as_deref(),
        Some(&w.image_pull_secrets[..])
    );
    assert_eq!(p.node_selector.as_ref(), Some(&w.node_selector));
    assert_eq!(p.tolerations.as_deref(), Some(&w.tolerations[..]));
    assert_eq!(p.priority_class_name.as_deref(), Some("duo-critical"));
    let a = p.affinity.expect("affinity");
    assert_eq!(a.node_affinity, w.affinity.as_ref().unwrap().node_affinity);
    assert!(a.pod_affinity.is_none());
    let anti = a
        .pod_anti_affinity
        .expect("default anti-affinity with 2 replicas");
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .expect("preferred");
    let term = &preferred[0];
    assert_eq!(term.weight, 100);
    assert_eq!(
        term.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        term.pod_affinity_term
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref()),
        Some(&selector_labels(&gw))
    );
    let spread = p.topology_spread_constraints.expect("spread");
    assert_eq!(spread.len(), 2);
    assert_eq!(
        spread[0]
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref()),
        Some(&selector_labels(&gw)),
        "a constraint without labelSelector counts the gateway's pods"
    );
    assert_eq!(
        spread[1].label_selector, w.topology_spread_constraints[1].label_selector,
        "a given labelSelector is kept"
    );
    let labels = meta.labels.expect("labels");
    assert_eq!(labels["team"], "imaging");
    assert_eq!(labels["cost-centre"], "radiology");
    for (k, v) in selector_labels(&gw) {
        assert_eq!(labels[&k], v);
    }
    let annotations = meta.annotations.expect("annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["sidecar.istio.io/inject"], "false");
    assert_eq!(
        annotations[CHECKSUM_ANNOTATION], "abc",
        "pod() builds with checksum abc"
    );

    let spec = svc.spec.expect("service spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        spec.load_balancer_source_ranges.as_deref(),
        Some(&["192.0.2.0/24".to_owned(), "2001:db8::/48".to_owned()][..])
    );
    assert_eq!(
        svc.metadata.annotations.expect("annotations")["service.beta.kubernetes.io/azure-load-balancer-internal"],
        "true"
    );
    assert_eq!(
        svc.metadata.labels,
        Some(super::labels(&gw)),
        "child labels kept"
    );
    assert_eq!(spec.selector, Some(selector_labels(&gw)));
}

#[test]
fn without_workload_settings_the_pod_spec_and_service_are_as_before() {
    let mut gw = gateway();
    gw.spec.replicas = 1;
    let (meta, p) = pod(&gw);
    assert!(p.image_pull_secrets.is_none());
    assert!(p.node_selector.is_none());
    assert!(p.tolerations.is_none());
    assert!(
        p.affinity.is_none(),
        "no anti-affinity for a single replica"
    );
    assert!(p.topology_spread_constraints.is_none());
    assert!(p.priority_class_name.is_none());
    let mut want = labels(&gw);
    want.extend(selector_labels(&gw));
    assert_eq!(meta.labels, Some(want));
    assert_eq!(
        meta.annotations.map(|a| a.into_keys().collect::<Vec<_>>()),
        Some(vec![CHECKSUM_ANNOTATION.to_owned()])
    );
    let svc = service(&gw, &owner(&gw));
    assert!(svc.metadata.annotations.is_none());
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.external_traffic_policy.is_none());
    assert!(spec.load_balancer_source_ranges.is_none());
}

#[test]
fn anti_affinity_by_default_only_with_several_replicas_and_none_given() {
    let mut gw = gateway();
    for (replicas, expected) in [(0, false), (1, false), (2, true), (5, true)] {
        gw.spec.replicas = replicas;
        let a = pod(&gw).1.affinity;
        assert_eq!(
            a.as_ref().is_some_and(|a| a.pod_anti_affinity.is_some()),
            expected,
            "{replicas} replicas"
        );
    }
    // a required rule would leave replicas Pending on a single node: the default is only preferred
    gw.spec.replicas = 3;
    let anti = pod(&gw).1.affinity.unwrap().pod_anti_affinity.unwrap();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    // the user's own podAntiAffinity is used as given, even an empty one (the way to have none)
    let given = PodAntiAffinity {
        preferred_during_scheduling_ignored_during_execution: None,
        required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
            topology_key: "topology.kubernetes.io/zone".into(),
            ..PodAffinityTerm::default()
        }]),
    };
    gw.spec.workload.affinity = Some(Affinity {
        pod_anti_affinity: Some(given.clone()),
        ..Affinity::default()
    });
    assert_eq!(pod(&gw).1.affinity.unwrap().pod_anti_affinity, Some(given));
    gw.spec.workload.affinity = Some(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity::default()),
        ..Affinity::default()
    });
    assert_eq!(
        pod(&gw).1.affinity.unwrap().pod_anti_affinity,
        Some(PodAntiAffinity::default()),
        "an empty podAntiAffinity switches the default off"
    );
    // node affinity alone: used as given, the default anti-affinity added beside it
    let node = NodeAffinity::default();
    gw.spec.workload.affinity = Some(Affinity {
        node_affinity: Some(node.clone()),
        ..Affinity::default()
    });
    let a = pod(&gw).1.affinity.unwrap();
    assert_eq!(a.node_affinity, Some(node));
    assert!(a.pod_anti_affinity.is_some());
}

#[test]
fn pod_labels_and_annotations_never_take_the_operators_own() {
    for key in crate::crd::RESERVED_POD_LABELS {
        let mut gw = gateway();
        gw.spec.workload.pod_labels = BTreeMap::from([
            ("team".to_owned(), "imaging".to_owned()),
            (key.to_owned(), "intruder".to_owned()),
        ]);
        let e = check_workload(&gw).expect_err(key);
        assert_eq!(e.field, "spec.workload.podLabels");
        assert!(e.message.contains(key), "{e}");
        // a spec that got past the check anyway (an older CRD, a direct write to etcd) still cannot
        // move the pods out of the Deployment's selector: the operator's labels win
        let (meta, _) = pod(&gw);
        let labels = meta.labels.unwrap();
        assert_eq!(labels[key], super::labels(&gw)[key], "{key}");
        assert_eq!(labels["team"], "imaging");
    }
    let mut gw = gateway();
    gw.spec.workload.pod_annotations =
        BTreeMap::from([(CHECKSUM_ANNOTATION.to_owned(), "forged".to_owned())]);
    let e = check_workload(&gw).unwrap_err();
    assert_eq!(e.field, "spec.workload.podAnnotations");
    let (meta, _) = pod(&gw);
    assert_eq!(meta.annotations.unwrap()[CHECKSUM_ANNOTATION], "abc");
    gw.spec.workload.pod_annotations = BTreeMap::from([(
        "duo.beeldbeschikbaarheid.nl/paused".to_owned(),
        "true".to_owned(),
    )]);
    assert!(check_workload(&gw).is_err(), "the whole prefix is reserved");
    // look-alikes are not the operator's and pass
    gw.spec.workload.pod_annotations = BTreeMap::from([(
        "example.duo.beeldbeschikbaarheid.nl/x".to_owned(),
        "1".to_owned(),
    )]);
    gw.spec.workload.pod_labels = BTreeMap::from([(
        "example.org/app.kubernetes.io/name".to_owned(),
        "x".to_owned(),
    )]);
    check_workload(&gw).expect("look-alike keys are the user's");
}

#[test]
fn generated_pod_labels_keep_the_selector_and_every_user_label() {
    // many random maps, some with reserved keys among user keys: the built template always carries
    // the selector labels with the operator's values, the other user labels unchanged, and
    // check_workload refuses exactly the maps with a reserved key
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let gw0 = gateway();
    for _ in 0..300 {
        let mut gw = gw0.clone();
        let n = (next() % 80) as usize;
        let mut reserved = false;
        for i in 0..n {
            let r = next();
            let key = if r % 17 == 0 {
                reserved = true;
                crate::crd::RESERVED_POD_LABELS[(r / 17 % 4) as usize].to_owned()
            } else {
                format!("k{i}-{}", r % 1000)
            };
            gw.spec
                .workload
                .pod_labels
                .insert(key, format!("v{}", r % 97));
        }
        assert_eq!(
            check_workload(&gw).is_err(),
            reserved,
            "{:?}",
            gw.spec.workload.pod_labels
        );
        let labels = pod(&gw).0.labels.unwrap();
        for (k, v) in super::labels(&gw) {
            assert_eq!(labels[&k], v);
        }
        for (k, v) in &gw.spec.workload.pod_labels {
            if !crate::crd::RESERVED_POD_LABELS.contains(&k.as_str()) {
                assert_eq!(&labels[k], v);
            }
        }
    }
}

#[test]
fn service_fields_only_where_the_api_server_accepts_them() {
    let mut gw = gateway();
    gw.spec.service = GatewayService {
        type_: ServiceType::NodePort,
        annotations: BTreeMap::new(),
        load_balancer_source_ranges: Vec::new(),
        external_traffic_policy: Some(ExternalTrafficPolicy::Cluster),
    };
    check_workload(&gw).expect("NodePort takes a traffic policy");
    let spec = service(&gw, &owner(&gw)).spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    // the API server refuses externalTrafficPolicy on a ClusterIP Service and source ranges without
    // a load balancer: refused with the field named, and never rendered
    gw.spec.service.type_ = ServiceType::ClusterIP;
    let e = check_workload(&gw).unwrap_err();
    assert_eq!(e.field, "spec.service.externalTrafficPolicy");
    assert!(
        service(&gw, &owner(&gw))
            .spec
            .unwrap()
            .external_traffic_policy
            .is_none()
    );
    gw.spec.service.external_traffic_policy = None;
    gw.spec.service.load_balancer_source_ranges = vec!["192.0.2.0/24".into()];
    for t in [ServiceType::ClusterIP, ServiceType::NodePort] {
        gw.spec.service.type_ = t;
        let e = check_workload(&gw).unwrap_err();
        assert_eq!(e.field, "spec.service.loadBalancerSourceRanges");
        assert!(
            service(&gw, &owner(&gw))
                .spec
                .unwrap()
                .load_balancer_source_ranges
                .is_none()
        );
    }
    gw.spec.service.type_ = ServiceType::LoadBalancer;
    check_workload(&gw).expect("LoadBalancer takes source ranges");
}

#[test]
fn crd_schema_bounds_the_maps_and_refuses_reserved_keys() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(DuoGateway::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let w = &spec["workload"]["properties"];
    for (field, max) in [
        ("podLabels", 64),
        ("podAnnotations", 64),
        ("nodeSelector", 32),
    ] {
        assert_eq!(w[field]["maxProperties"], max, "{field}");
    }
    assert_eq!(w["tolerations"]["maxItems"], 32);
    assert_eq!(w["imagePullSecrets"]["maxItems"], 16);
    assert_eq!(w["topologySpreadConstraints"]["maxItems"], 8);
    let rule = w["podLabels"]["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap();
    for key in crate::crd::RESERVED_POD_LABELS {
        assert!(rule.contains(&format!("'{key}' in self")), "{rule}");
    }
    let svc = &spec["service"];
    assert_eq!(
        svc["properties"]["type"]["enum"],
        serde_json::json!(["ClusterIP", "NodePort", "LoadBalancer"])
    );
    assert_eq!(
        svc["properties"]["externalTrafficPolicy"]["enum"],
        serde_json::json!(["Cluster", "Local"])
    );
    assert_eq!(svc["properties"]["annotations"]["maxProperties"], 64);
    assert_eq!(
        svc["properties"]["loadBalancerSourceRanges"]["maxItems"],
        128
    );
    assert_eq!(svc["x-kubernetes-validations"].as_array().unwrap().len(), 2);
    // every field says what it is for
    for (name, field) in w
        .as_object()
        .unwrap()
        .iter()
        .chain(svc["properties"].as_object().unwrap())
    {
        assert!(
            field["description"]
                .as_str()
                .is_some_and(|d| d.len() > 40 && !d.starts_with("See ")),
            "{name} has no description"
        );
    }
}
