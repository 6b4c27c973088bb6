//! The Helm charts (issue 6 acceptance), with helm built from its Go module (`$DUO_TOOLS_BIN/helm`):
//!
//! - `helm lint` and `helm template` of both charts with default and example values; what they render
//!   (CRDs equal to `crds/`, restricted pod security, the operator's default gateway image, the
//!   ServiceMonitor only with its API, the examples' values give the examples' resources, the Argo CD
//!   Applications point at charts and values files that exist and render);
//! - invalid values rejected by `values.schema.json` with the field named;
//! - on a real kube-apiserver: `helm install` of the operator chart (CRDs, RBAC, Deployment) and of
//!   gateway charts (the hosting provider's three hospitals, driven by the GitOps Applications, and the
//!   XDS and TLB examples); the operator, run as a process with the chart's ServiceAccount token and the
//!   chart Deployment's arguments, reconciles them and the hospitals find each other; pod templates pass
//!   the "restricted" Pod Security admission; `helm upgrade` to a chart whose CRD gained a field makes
//!   the field usable; `helm uninstall --wait` of every release leaves no finalizer stuck and keeps the
//!   CRDs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use duo_operator::crd::{DuoCommunity, DuoGateway, MitzConnection};

use duo_runtime::pki::generate::{Ca, ServerCertSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const VERSION: &str = env!("CARGO_PKG_VERSION");

// --- helm as a process ------------------------------------------------------------------------------

/// `v` with every number as a float: YAML writers differ in `600000` versus `600000.0`, the API server
/// does not.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn helm_or_skip() -> Option<PathBuf> {
    duo_testenv::helm_bin()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn kinds(objs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in objs {
        *m.entry(o["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    m
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_docs(&text)
}

/// A helm-installed Argo CD Application of `examples/gitops/argocd/apps`: release, chart folder (relative
/// to the repository), namespace, values files (relative to the repository) and sync wave.
#[derive(Debug, Clone)]
struct App {
    name: String,
    release: String,
    chart: String,
    namespace: String,
    values: Vec<String>,
    wave: i64,
}

/// The Applications the GitOps kustomization lists, in sync-wave order; checks that every reference
/// resolves inside the repository.
fn gitops_apps() -> Vec<App> {
    let dir = repo().join("examples/gitops/argocd/apps");
    let kustomization = yaml_file(&dir.join("kustomization.yaml"));
    let mut apps = Vec::new();
    for r in kustomization["resources"].as_array().expect("resources") {
        let file = dir.join(r.as_str().expect("resource path"));
        let app = yaml_file(&file);
        assert_eq!(app["kind"], "Application", "{}", file.display());
        let src = &app["spec"]["source"];
        let chart = src["path"].as_str().expect("source.path").to_owned();
        assert!(
            repo().join(&chart).join("Chart.yaml").is_file(),
            "{}: source.path {chart} is not a chart of this repository",
            file.display()
        );
        let values = src["helm"]["valueFiles"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|f| {
                        // Argo CD resolves valueFiles relative to source.path
                        let p = repo().join(&chart).join(f.as_str().expect("valueFile"));
                        let p = std::fs::canonicalize(&p).unwrap_or_else(|e| {
                            panic!("{}: valueFile {}: {e}", file.display(), p.display())
                        });
                        p.strip_prefix(std::fs::canonicalize(repo()).expect("repo"))
                            .expect("valueFile inside the repository")
                            .display()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        apps.push(App {
            name: app["metadata"]["name"].as_str().expect("name").to_owned(),
            release: src["helm"]["releaseName"]
                .as_str()
                .expect("helm.releaseName")
                .to_owned(),
            chart,
            namespace: app["spec"]["destination"]["namespace"]
                .as_str()
                .expect("destination.namespace")
                .to_owned(),
            values,
            wave: app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .expect("sync wave"),
        });
    }
    apps.sort_by_key(|a| a.wave);
    apps
}

fn app_helm_args(app: &App) -> Vec<String> {
    let mut a = vec![
        app.release.clone(),
        app.chart.clone(),
        "-n".into(),
        app.namespace.clone(),
    ];
    for v in &app.values {
        a.push("-f".into());
        a.push(v.clone());
    }
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn container_args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_owned())
        .collect()
}

// --- as subcharts, and identifiers given as numbers -----------------------------------------------------

/// Copies the chart folder `from` to `to` (a chart has only files and folders).
fn copy_chart(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read chart") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_chart(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

#[test]
fn both_charts_render_as_subcharts_of_an_umbrella_chart_with_global_values() {
    let Some(bin) = helm_or_skip() else { return };
    let helm = Helm::new(bin, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let umbrella = umbrella_chart(dir.path());
    let dir_arg = umbrella.to_str().expect("utf-8 path");
    let objs = helm.template(&["duo", dir_arg, "-n", "duo-system"]);
    assert_eq!(
        of_kind(&objs, "DuoGateway").len(),
        1,
        "the gateway subchart rendered"
    );
    assert_eq!(
        of_kind(&objs, "Deployment").len(),
        1,
        "the operator subchart rendered"
    );
    // Helm hands every subchart `global` (empty when the parent sets none): both schemas allow it
}

/// An umbrella chart in `dir` with both charts as dependencies, the XDS example's values under the
/// gateway subchart's name, and a `global` value.
fn umbrella_chart(dir: &Path) -> PathBuf {
    let umbrella = dir.join("umbrella");
    for chart in ["duo-operator", "duo-gateway"] {
        copy_chart(
            &repo().join("charts").join(chart),
            &umbrella.join("charts").join(chart),
        );
    }
    std::fs::write(
        umbrella.join("Chart.yaml"),
        "apiVersion: v2\nname: umbrella\nversion: 0.1.0\ndependencies:\n  - name: duo-operator\n    version: 0.1.0\n  - name: duo-gateway\n    version: 0.1.0\n",
    )
    .expect("Chart.yaml");
    let example = std::fs::read_to_string(repo().join("examples/xds-hospital/values.yaml"))
        .expect("example values");
    let nested: String = example.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(
        umbrella.join("values.yaml"),
        format!("global:\n  environment: acceptance\nduo-gateway:\n{nested}"),
    )
    .expect("values.yaml");
    umbrella
}

/// The umbrella chart installs into a real API server (the CRDs are there already, as after a first
/// operator install, so its CRD templates are switched off) and its objects are stored: the operator's
/// Deployment and admission policy, the hospital's DuoGateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_umbrella_chart_installs_on_a_real_api_server() {
    let Some(bin) = helm_or_skip() else { return };
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, "duo-umbrella").await;
    let helm = Helm::new(bin, Some(&env.kubeconfig));
    let dir = tempfile::tempdir().expect("tempdir");
    let umbrella = umbrella_chart(dir.path());
    helm.ok(&[
        "install",
        "duo",
        umbrella.to_str().expect("utf-8 path"),
        "-n",
        "duo-umbrella",
        "--set",
        "duo-operator.crds.enabled=false",
    ]);
    let gateways = Api::<DuoGateway>::namespaced(client.clone(), "duo-umbrella")
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(
        gateways.items.len(),
        1,
        "the gateway subchart's DuoGateway is stored"
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), "duo-umbrella")
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(
        deployments.items.len(),
        1,
        "the operator subchart's Deployment"
    );
    helm.ok(&["uninstall", "duo", "-n", "duo-umbrella"]);
}

#[test]
fn a_ura_given_as_a_number_is_taken_only_when_no_digit_was_lost() {
    let Some(bin) = helm_or_skip() else { return };
    let helm = Helm::new(bin, None);
    let values = "examples/xds-hospital/values.yaml";
    // `--set` makes a number of digits without a leading zero: eight of them are the URA as written
    let objs = helm.template(&[
        "x",
        "charts/duo-gateway",
        "-f",
        values,
        "--set",
        "organization.ura=12345678",
    ]);
    assert_eq!(
        one(&objs, "DuoGateway")["spec"]["organization"]["ura"],
        "12345678"
    );
    // a number of other length lost digits (or was never a URA): refused, naming --set-string
    for n in ["659", "1234567890"] {
        let err = helm.fails(&[
            "template",
            "x",
            "charts/duo-gateway",
            "-f",
            values,
            "--set",
            &format!("organization.ura={n}"),
        ]);
        assert!(
            err.contains("organization.ura must be a string of 8 digits")
                && err.contains("--set-string organization.ura="),
            "{err}"
        );
    }
    // with a leading zero Helm keeps the string
    let objs = helm.template(&[
        "x",
        "charts/duo-gateway",
        "-f",
        values,
        "--set",
        "organization.ura=00000659",
    ]);
    assert_eq!(
        one(&objs, "DuoGateway")["spec"]["organization"]["ura"],
        "00000659"
    );
}

// --- lint and template ------------------------------------------------------------------------------

#[test]
fn charts_lint_and_template_with_default_and_example_values() {
    let Some(bin) = helm_or_skip() else { return };
    let helm = Helm::new(bin, None);

    // lint: default values, then every example values file
    helm.ok(&["lint", "--strict", "charts/duo-operator"]);
    helm.ok(&["lint", "--strict", "charts/duo-gateway"]);
    let examples = [
        "examples/xds-hospital/values.yaml",
        "examples/tlb-hospital/values.yaml",
        "examples/hosting-provider/values/amstel.yaml",
        "examples/hosting-provider/values/maas.yaml",
        "examples/hosting-provider/values/waal.yaml",
    ];
    for v in examples {
        helm.ok(&["lint", "--strict", "charts/duo-gateway", "-f", v]);
    }

    // both charts carry the workspace version as appVersion (the image tags)
    for chart in ["duo-operator", "duo-gateway"] {
        let c = yaml_file(&repo().join("charts").join(chart).join("Chart.yaml"));
        assert_eq!(c["appVersion"], VERSION, "{chart} appVersion");
    }

    // --- operator chart, default values
    let objs = helm.template(&["duo-operator", "charts/duo-operator", "-n", "duo-system"]);
    let expected: BTreeMap<String, usize> = [
        ("ClusterRole", 3),
        ("ClusterRoleBinding", 1),
        ("CustomResourceDefinition", 3),
        ("Deployment", 1),
        ("PodDisruptionBudget", 1),
        ("Role", 1),
        ("RoleBinding", 1),
        ("Service", 1),
        ("ServiceAccount", 1),
        ("ValidatingAdmissionPolicy", 1),
        ("ValidatingAdmissionPolicyBinding", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds(&objs), expected, "no ServiceMonitor without its API");
    // the CRDs are crds/ (generated from the Rust types), with the keep policy
    for crd in of_kind(&objs, "CustomResourceDefinition") {
        let name = crd["metadata"]["name"].as_str().expect("name");
        let generated = yaml_file(&repo().join("crds").join(format!("{name}.yaml")));
        assert_eq!(
            numbers_as_f64(&crd["spec"]),
            numbers_as_f64(&generated["spec"]),
            "{name}: spec equals crds/"
        );
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}"
        );
        assert_eq!(
            crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"],
            "Prune=false,Delete=false"
        );
    }
    let dep = one(&objs, "Deployment");
    assert_eq!(dep["spec"]["replicas"], 2, "two replicas by default");
    let args = container_args(dep);
    assert!(
        args.contains(&format!(
            "--gateway-image={}",
            duo_operator::DEFAULT_GATEWAY_IMAGE
        )),
        "the chart's gateway image is the operator's built-in default: {args:?}"
    );
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        format!("{}/duo-operator:{VERSION}", duo_operator::IMAGE_PREFIX)
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    // the Lease namespace and identity come from the downward API, as `duo-operator run` reads them
    let env: BTreeSet<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains("POD_NAMESPACE") && env.contains("POD_NAME"));
    let svc = one(&objs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");

    // ServiceMonitor only when the API exists (and not when switched off)
    let with_api = helm.template(&[
        "duo-operator",
        "charts/duo-operator",
        "-n",
        "duo-system",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    ]);
    let sm = one(&with_api, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let off = helm.template(&[
        "duo-operator",
        "charts/duo-operator",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--set",
        "serviceMonitor.enabled=false",
    ]);
    assert!(of_kind(&off, "ServiceMonitor").is_empty());
    // CRDs managed elsewhere / not kept; one replica has no PDB
    let no_crds = helm.template(&["x", "charts/duo-operator", "--set", "crds.enabled=false"]);
    assert!(of_kind(&no_crds, "CustomResourceDefinition").is_empty());
    let not_kept = helm.template(&["x", "charts/duo-operator", "--set", "crds.keep=false"]);
    for crd in of_kind(&not_kept, "CustomResourceDefinition") {
        assert!(
            crd["metadata"]["annotations"]
                .get("helm.sh/resource-policy")
                .is_none()
        );
    }
    let single = helm.template(&["x", "charts/duo-operator", "--set", "replicaCount=1"]);
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty());
    let pinned = helm.template(&[
        "x",
        "charts/duo-operator",
        "--set",
        "gatewayImage.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]);
    assert!(container_args(one(&pinned, "Deployment")).contains(&format!(
        "--gateway-image={}@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        duo_operator::DEFAULT_GATEWAY_IMAGE
    )));

    // --- gateway chart, default values: a DuoGateway the operator's types read
    let objs = helm.template(&["hospital", "charts/duo-gateway", "-n", "hosp"]);
    assert_eq!(kinds(&objs), BTreeMap::from([("DuoGateway".to_owned(), 1)]));
    let gw: DuoGateway = serde_json::from_value(objs[0].clone()).expect("a DuoGateway");
    assert_eq!(gw.name_any(), "hospital", "named after the release");
    assert!(!gw.spec.allow_plain_http);

    // --- the example values render exactly the examples' resources
    for (values, raw) in [
        (
            "examples/xds-hospital/values.yaml",
            "examples/xds-hospital/duogateway.yaml",
        ),
        (
            "examples/tlb-hospital/values.yaml",
            "examples/tlb-hospital/duogateway.yaml",
        ),
    ] {
        let rendered = helm.template(&["r", "charts/duo-gateway", "-n", "hosp", "-f", values]);
        let expected = yaml_docs(&repo().join(raw));
        assert_eq!(kinds(&rendered), kinds(&expected), "{values}");
        for e in &expected {
            let r = rendered
                .iter()
                .find(|r| r["kind"] == e["kind"] && r["metadata"]["name"] == e["metadata"]["name"])
                .unwrap_or_else(|| {
                    panic!("{values}: renders {} {}", e["kind"], e["metadata"]["name"])
                });
            match e["kind"].as_str() {
                Some("DuoGateway") => {
                    let (r, e): (DuoGateway, DuoGateway) = (
                        serde_json::from_value(r.clone()).expect("rendered"),
                        serde_json::from_value(e.clone()).expect("example"),
                    );
                    assert_eq!(r.spec, e.spec, "{values}: DuoGateway spec");
                }
                Some("DuoCommunity") => {
                    let (r, e): (DuoCommunity, DuoCommunity) = (
                        serde_json::from_value(r.clone()).expect("rendered"),
                        serde_json::from_value(e.clone()).expect("example"),
                    );
                    assert_eq!(r.spec, e.spec, "{values}: DuoCommunity spec");
                    for (k, v) in e.labels() {
                        assert_eq!(r.labels().get(k), Some(v), "{values}: label {k}");
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    // --- the GitOps layout: every Application renders with its values files
    let apps = gitops_apps();
    assert_eq!(
        apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["duo-operator", "duo-amstel", "duo-maas", "duo-waal"],
        "operator first (sync wave -1)"
    );
    for app in &apps {
        let mut args = vec!["template".to_owned()];
        args.extend(app_helm_args(app));
        let objs = parse_docs(&helm.ok(&strs(&args)));
        if app.chart == "charts/duo-gateway" {
            let gw: DuoGateway =
                serde_json::from_value(one(&objs, "DuoGateway").clone()).expect("DuoGateway");
            assert_eq!(gw.name_any(), app.release);
            let _: MitzConnection = serde_json::from_value(one(&objs, "MitzConnection").clone())
                .expect("MitzConnection");
        }
    }
    let root = yaml_file(&repo().join("examples/gitops/argocd/root.yaml"));
    assert!(
        repo()
            .join(root["spec"]["source"]["path"].as_str().expect("path"))
            .join("kustomization.yaml")
            .is_file()
    );
}

#[test]
fn invalid_values_are_rejected_naming_the_field() {
    let Some(bin) = helm_or_skip() else { return };
    let helm = Helm::new(bin, None);
    let gw = |extra: &[&str]| {
        let mut a = vec!["template", "x", "charts/duo-gateway"];
        a.extend_from_slice(extra);
        helm.fails(&a)
    };
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        // a URA of 7 digits
        (
            vec!["--set-string", "organization.ura=1234567"],
            &["at '/organization/ura'", "'1234567' does not match pattern"],
        ),
        // a plain http endpoint without the opt-in, wherever it is
        (
            vec![
                "--set",
                "connection.xds.registryUrl=http://registry.example/iti18",
            ],
            &["at '/connection/xds/registryUrl'", "https://"],
        ),
        (
            vec![
                "-f",
                "examples/tlb-hospital/values.yaml",
                "--set",
                "connection.tlb.queryUrl=http://tlb.example/iti38",
            ],
            &["at '/connection/tlb/queryUrl'"],
        ),
        (
            vec![
                "-f",
                "examples/xds-hospital/values.yaml",
                "--set",
                "communities.external[0].queryUrl=http://noord.example/iti38",
            ],
            &["at '/communities/external/0/queryUrl'"],
        ),
        (
            vec![
                "--set",
                "mitz.create=true",
                "--set",
                "mitz.connection.closedQuestionUrl=http://mitz.example/x",
            ],
            &["at '/mitz/connection/closedQuestionUrl'"],
        ),
        // a missing certificate Secret name: empty, or absent
        (
            vec!["--set", "tls.secretName="],
            &["at '/tls/secretName'", "minLength"],
        ),
        (
            vec!["--set", "tls.secretName=null"],
            &["at '/tls'", "missing property 'secretName'"],
        ),
        (
            vec![
                "--set",
                "mitz.create=true",
                "--set",
                "mitz.connection.clientCertificateSecretName=",
            ],
            &["at '/mitz/connection/clientCertificateSecretName'"],
        ),
        // key material never goes into values
        (
            vec![
                "--set",
                "tls.trustBundle.from=pem",
                "--set-string",
                "tls.trustBundle.pem=-----BEGIN PRIVATE KEY-----",
            ],
            &["at '/tls/trustBundle/pem'"],
        ),
        // and the rest of the CRD's rules
        (
            vec!["--set", "organization.homeCommunityId=2.16.528.1"],
            &["at '/organization/homeCommunityId'"],
        ),
        (
            vec!["--set", "connection.kind=tlb"],
            &[
                "at '/connection/tlb/queryUrl'",
                "at '/connection/tlb/homeCommunityId'",
            ],
        ),
        (
            vec!["--set", "mitz.connectionName="],
            &["at '/mitz/connectionName'"],
        ),
        (
            vec!["--set", "localization=everyone"],
            &["at '/localization'"],
        ),
        // a trusted front end by a name alone, or by both forms at once (issue 12, defect 9)
        (
            vec![
                "--set-json",
                r#"trustedFrontEnds=[{"subject":"CN=epd.oost.example,O=Oost"}]"#,
            ],
            &["at '/trustedFrontEnds/0'"],
        ),
        (
            vec![
                "--set-json",
                r#"trustedFrontEnds=[{"issuer":"CN=CA","subject":"CN=epd","spkiSha256":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}]"#,
            ],
            &["at '/trustedFrontEnds/0'"],
        ),
        (
            vec![
                "--set-json",
                r#"trustedFrontEnds=[{"spkiSha256":"not a pin"}]"#,
            ],
            &["at '/trustedFrontEnds/0"],
        ),
        // target communities: each fronted id a homeCommunityId, none twice
        (
            vec![
                "-f",
                "examples/xds-hospital/values.yaml",
                "--set-json",
                r#"communities.external[0].frontedCommunities=["2.16.528.1"]"#,
            ],
            &["at '/communities/external/0/frontedCommunities/0'"],
        ),
        (
            vec![
                "-f",
                "examples/xds-hospital/values.yaml",
                "--set-json",
                r#"communities.external[0].frontedCommunities=["urn:oid:1.2.3","urn:oid:1.2.3"]"#,
            ],
            &["at '/communities/external/0/frontedCommunities'"],
        ),
        (
            vec!["--set", "tls.secretNmae=x"],
            &[
                "at '/tls'",
                "additional properties 'secretNmae' not allowed",
            ],
        ),
    ];
    for (args, expected) in cases {
        let err = gw(&args);
        for e in expected {
            assert!(err.contains(e), "{args:?}: expected {e:?} in:\n{err}");
        }
    }
    // the explicit opt-in allows http://, and the DuoGateway carries it to the API server's CEL rule
    let objs = helm.template(&[
        "x",
        "charts/duo-gateway",
        "--set",
        "connection.xds.registryUrl=http://registry.example/iti18",
        "--set",
        "allowPlainHttp=true",
    ]);
    assert_eq!(one(&objs, "DuoGateway")["spec"]["allowPlainHttp"], true);
    // a platform's fronted communities reach its DuoCommunity as given; none, no field
    let fronted = json!([
        "urn:oid:2.16.528.1.1007.99.777.11",
        "urn:oid:2.16.528.1.1007.99.777.12"
    ]);
    let objs = helm.template(&[
        "x",
        "charts/duo-gateway",
        "-f",
        "examples/xds-hospital/values.yaml",
        "--set-json",
        &format!("communities.external[0].frontedCommunities={fronted}"),
    ]);
    assert_eq!(
        one(&objs, "DuoCommunity")["spec"]["frontedCommunities"],
        fronted
    );
    let c: DuoCommunity = serde_json::from_value(one(&objs, "DuoCommunity").clone()).unwrap();
    assert_eq!(c.spec.fronted_communities.len(), 2);
    let objs = helm.template(&[
        "x",
        "charts/duo-gateway",
        "-f",
        "examples/xds-hospital/values.yaml",
    ]);
    assert!(
        one(&objs, "DuoCommunity")["spec"]
            .get("frontedCommunities")
            .is_none()
    );
    // trusted front ends reach the DuoGateway as given
    let front_ends = json!([
        {"issuer": "CN=UZI-register Private Server CA G1,O=CIBG,C=NL", "subject": "CN=epd.oost.example,O=Ziekenhuis Oost,C=NL"},
        {"spkiSha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}
    ]);
    let objs = helm.template(&[
        "x",
        "charts/duo-gateway",
        "--set-json",
        &format!("trustedFrontEnds={front_ends}"),
    ]);
    assert_eq!(
        one(&objs, "DuoGateway")["spec"]["trustedFrontEnds"],
        front_ends
    );
    let objs = helm.template(&["x", "charts/duo-gateway"]);
    assert!(
        one(&objs, "DuoGateway")["spec"]
            .get("trustedFrontEnds")
            .is_none()
    );
    // test set-ups without Mitz: only with permitAll and allCommunities
    let objs = helm.template(&[
        "x",
        "charts/duo-gateway",
        "--set",
        "mitz.connectionName=",
        "--set",
        "consent.mode=permitAll",
        "--set",
        "localization=allCommunities",
    ]);
    assert!(one(&objs, "DuoGateway")["spec"].get("mitz").is_none());
    // lint says the same (its findings go to stdout)
    let out = helm.run(&[
        "lint",
        "charts/duo-gateway",
        "--set-string",
        "organization.ura=1234567",
    ]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("at '/organization/ura'"), "{text}");

    // operator chart
    for (args, expected) in [
        (vec!["--set", "replicaCount=0"], "at '/replicaCount'"),
        (
            vec!["--set", "image.digest=sha256:beef"],
            "at '/image/digest'",
        ),
        (vec!["--set", "logFormat=xml"], "at '/logFormat'"),
        (vec!["--set", "crds.enabled=maybe"], "at '/crds/enabled'"),
    ] {
        let mut a = vec!["template", "x", "charts/duo-operator"];
        a.extend_from_slice(&args);
        let err = helm.fails(&a);
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in:\n{err}"
        );
    }
}

// --- on a real API server -----------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `duo-operator run` started the way the chart's Deployment starts it: its container arguments and
/// environment (downward API values filled in), the ServiceAccount's token; only the metrics listener
/// moves to a free loopback port.
struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(deployment: &Deployment, kubeconfig: &Path, log: PathBuf) -> OperatorProcess {
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        let c = &pod.containers[0];
        let args: Vec<String> = c
            .args
            .clone()
            .expect("args")
            .into_iter()
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    format!("--metrics-addr=127.0.0.1:{}", free_port())
                } else {
                    a
                }
            })
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_duo-operator"));
        cmd.args(&args).env("KUBECONFIG", kubeconfig);
        for e in c.env.as_ref().expect("env") {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.namespace") => deployment.namespace().expect("namespace"),
                        Some("metadata.name") => "duo-operator-test-pod".into(),
                        other => panic!("unexpected downward API field {other:?}"),
                    }
                }
                _ => String::new(),
            };
            cmd.env(&e.name, value);
        }
        let out = std::fs::File::create(&log).expect("log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("clone")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start duo-operator");
        OperatorProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as the kubelet sends; returns whether it exited 0.
    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    ns.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Waits until DuoGateway `ns/name` has a current status for which `ok` holds; the operator's log is
/// in the panic message when it does not come.
async fn wait_gateway(
    client: &Client,
    op: &OperatorProcess,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&DuoGateway) -> bool,
) -> DuoGateway {
    let api: Api<DuoGateway> = Api::namespaced(client.clone(), ns);
    let start = std::time::Instant::now();
    loop {
        if let Ok(gw) = api.get(name).await {
            let current = gw
                .status
                .as_ref()
                .is_some_and(|s| s.observed_generation == gw.metadata.generation);
            if current && ok(&gw) {
                return gw;
            }
            if start.elapsed() > T {
                panic!(
                    "timed out waiting for {ns}/{name}: {what}\nstatus: {:?}\n--- operator log ---\n{}",
                    gw.status,
                    op.log()
                );
            }
        } else if start.elapsed() > T {
            panic!("timed out waiting for {ns}/{name} to exist\n{}", op.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Pod from `deployment`'s template, created with dry-run in `ns` (Pod Security admission runs).
async fn dry_run_pod(client: &Client, ns: &str, deployment: &Deployment) -> Result<(), String> {
    let template = deployment.spec.as_ref().expect("spec").template.clone();
    let mut pod = Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        ..Pod::default()
    };
    pod.metadata.name = Some(format!("{}-dry-run", deployment.name_any()));
    pod.metadata.namespace = Some(ns.into());
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn tls(name: &str, c: &duo_runtime::pki::generate::CertifiedPem) -> Secret {
    tls_secret(name, c)
}

/// Secrets and trust bundles of one hosting-provider hospital namespace.
async fn hospital_secrets(
    client: &Client,
    ns: &str,
    ca: &Ca,
    mitz_client: &duo_runtime::pki::generate::CertifiedPem,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    apply(&secrets, "mitz-client", &tls("mitz-client", mitz_client)).await;
    let mut ca_secret = Secret::default();
    ca_secret.metadata.name = Some("mitz-ca".into());
    ca_secret.data = Some(
        [(
            "ca.crt".to_owned(),
            ByteString(ca.cert_pem.clone().into_bytes()),
        )]
        .into(),
    );
    apply(&secrets, "mitz-ca", &ca_secret).await;
    let mut trust = ConfigMap::default();
    trust.metadata.name = Some("duo-trust".into());
    trust.data = Some([("ca.crt".to_owned(), ca.cert_pem.clone())].into());
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        "duo-trust",
        &trust,
    )
    .await;
}

async fn hospital_certificate(client: &Client, ns: &str, name: &str, ura: &str, ca: &Ca) {
    let cert = ca
        .issue(&ServerCertSpec::uzi(
            ura.parse().expect("URA"),
            name,
            &[&format!("duo.{name}.example")],
            365,
        ))
        .expect("certificate");
    let secret_name = format!("{name}-tls");
    apply(
        &Api::<Secret>::namespaced(client.clone(), ns),
        &secret_name,
        &tls(&secret_name, &cert),
    )
    .await;
}

/// A copy of `charts/duo-operator` in `dir` whose DuoGateway CRD has an extra optional field
/// `spec.maintenanceWindow`, as chart version `version`.
fn chart_with_new_crd_field(dir: &Path, version: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from)
            .expect("read_dir")
            .filter_map(Result::ok)
        {
            let p = e.path();
            if p.is_dir() {
                copy(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).expect("copy");
            }
        }
    }
    let chart = dir.join("duo-operator");
    copy(&repo().join("charts/duo-operator"), &chart);
    let crd_path = chart.join("files/crds/duogateways.duo.beeldbeschikbaarheid.nl.yaml");
    let mut crd = yaml_file(&crd_path);
    crd.pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties")
        .expect("spec properties")
        .as_object_mut()
        .expect("object")
        .insert(
            "maintenanceWindow".into(),
            json!({"type": "string", "description": "When the hospital allows restarts."}),
        );
    std::fs::write(&crd_path, serde_saphyr::to_string(&crd).expect("yaml")).expect("write");
    let chart_yaml = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml).expect("Chart.yaml");
    let text = text.replace(
        &format!("\nversion: {VERSION}\n"),
        &format!("\nversion: {version}\n"),
    );
    assert!(text.contains(&format!("version: {version}")));
    std::fs::write(&chart_yaml, text).expect("write Chart.yaml");
    chart
}

const SERVICE_MONITOR_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1",
  "kind": "CustomResourceDefinition",
  "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
  "spec": {
    "group": "monitoring.coreos.com",
    "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors", "singular": "servicemonitor"},
    "scope": "Namespaced",
    "versions": [{"name": "v1", "served": true, "storage": true,
                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
  }
}"#;

async fn wait_established(client: &Client, name: &str) -> CustomResourceDefinition {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(&format!("CRD {name} Established"), T, || async {
        let crd = api.get(name).await.ok()?;
        crd.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(crd)
    })
    .await
}

const CRD_NAMES: [&str; 3] = [
    "duogateways.duo.beeldbeschikbaarheid.nl",
    "duocommunities.duo.beeldbeschikbaarheid.nl",
    "mitzconnections.duo.beeldbeschikbaarheid.nl",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_install_upgrade_and_uninstall_on_a_real_api_server() {
    let Some(helm_bin) = helm_or_skip() else {
        return;
    };
    let Some(tools) = duo_testenv::tools_bin() else {
        return;
    };
    // OwnerReferencesPermissionEnforcement (on in OpenShift and others) would refuse owner references
    // with blockOwnerDeletion without an RBAC rule on duogateways/finalizers: the chart has none, and
    // needs none
    let env = duo_testenv::TestEnv::start_with(
        &tools,
        &["--enable-admission-plugins=OwnerReferencesPermissionEnforcement"],
    )
    .await
    .expect("start etcd + kube-apiserver");
    let client = env.client().await.expect("client");
    let helm = Helm::new(helm_bin, Some(&env.kubeconfig));
    let apps = gitops_apps();
    let operator_app = apps
        .iter()
        .find(|a| a.chart == "charts/duo-operator")
        .expect("operator Application");

    // --- the operator chart, as its Application says: CRDs, RBAC, Deployment on an empty cluster ------
    let mut args = vec!["install".to_owned()];
    args.extend(app_helm_args(operator_app));
    args.push("--create-namespace".into());
    helm.ok(&strs(&args));
    for name in CRD_NAMES {
        let crd = wait_established(&client, name).await;
        assert_eq!(
            crd.annotations()
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep")
        );
    }
    let ops_ns = operator_app.namespace.as_str();
    let operator_deployment = Api::<Deployment>::namespaced(client.clone(), ops_ns)
        .get("duo-operator")
        .await
        .expect("operator Deployment");
    let sa_kubeconfig = env
        .service_account_kubeconfig(ops_ns, "duo-operator", 3600)
        .await
        .expect("ServiceAccount token");
    let mut operator = OperatorProcess::start(
        &operator_deployment,
        &sa_kubeconfig,
        env.dir().join("operator.log"),
    );

    // --- Pod Security "restricted": the operator's pod template passes, an unhardened pod does not ---
    create_namespace(
        &client,
        "psa-restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    dry_run_pod(&client, "psa-restricted", &operator_deployment)
        .await
        .expect("operator pod is admitted under restricted");
    let mut unhardened = operator_deployment.clone();
    if let Some(spec) = unhardened
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    {
        spec.security_context = None;
        spec.containers[0].security_context = None;
    }
    let err = dry_run_pod(&client, "psa-restricted", &unhardened)
        .await
        .expect_err("control: PodSecurity enforces restricted");
    assert!(err.contains("violates PodSecurity"), "{err}");

    // --- the hosting provider: three hospitals, each in its namespace, from the GitOps Applications ---
    let ca = Ca::new("DUO test UZI CA").expect("ca");
    let mut mitz_spec = ServerCertSpec::uzi(
        "20000001".parse().expect("URA"),
        "Hosting provider",
        &["client.hosting.example"],
        365,
    );
    mitz_spec.ura = None;
    let mitz_client = ca.issue(&mitz_spec).expect("Mitz client certificate");
    // (Application, URA, display name) per hospital
    let hospitals: Vec<(&App, String, String)> = apps
        .iter()
        .filter(|a| a.chart == "charts/duo-gateway")
        .map(|a| {
            let v = yaml_file(&repo().join(&a.values[0]));
            let ura = v["organization"]["ura"].as_str().expect("ura").to_owned();
            let display = v["organization"]["name"].as_str().expect("name").to_owned();
            (a, ura, display)
        })
        .collect();
    assert_eq!(hospitals.len(), 3);
    for (app, ura, _) in &hospitals {
        create_namespace(&client, &app.namespace, &[]).await;
        hospital_secrets(&client, &app.namespace, &ca, &mitz_client).await;
        // the last hospital's certificate comes later: its gateway reports the missing Secret first
        if app.release != hospitals[2].0.release {
            hospital_certificate(&client, &app.namespace, &app.release, ura, &ca).await;
        }
        let mut args = vec!["install".to_owned()];
        args.extend(app_helm_args(app));
        helm.ok(&strs(&args));
    }
    let (late, late_ura, _) = &hospitals[2];
    let gw = wait_gateway(
        &client,
        &operator,
        &late.namespace,
        &late.release,
        "Degraded SecretMissing",
        |g| {
            gateway_condition(g, "Degraded")
                .is_some_and(|(s, r, _)| s == "True" && r == "SecretMissing")
        },
    )
    .await;
    assert!(
        gateway_condition(&gw, "Degraded")
            .expect("Degraded")
            .2
            .contains(&format!("{}-tls", late.release))
    );
    // a Warning event says so (events RBAC)
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &late.namespace);
    wait_for("a Warning event for the missing Secret", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning"))
            .then_some(())
    })
    .await;
    hospital_certificate(&client, &late.namespace, &late.release, late_ura, &ca).await;
    // now every hospital runs and finds the other two, across namespaces
    for (app, _, display) in &hospitals {
        let gw = wait_gateway(
            &client,
            &operator,
            &app.namespace,
            &app.release,
            "gateway_applied, 2 communities",
            |g| gateway_applied(g) && g.status.as_ref().is_some_and(|s| s.communities == 2),
        )
        .await;
        assert!(
            gw.finalizers()
                .iter()
                .any(|f| f == duo_operator::reconcile::FINALIZER)
        );
        let mut others: Vec<String> = hospitals
            .iter()
            .filter(|(a, _, _)| a.release != app.release)
            .map(|(_, _, d)| d.to_string())
            .collect();
        others.sort();
        let mut found = configured_communities(&client, &app.namespace, &app.release).await;
        found.sort();
        assert_eq!(found, others, "{display} finds the other two hospitals");
        let d = Api::<Deployment>::namespaced(client.clone(), &app.namespace)
            .get(&format!("duo-{}", app.release))
            .await
            .expect("gateway Deployment");
        let image = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].image.clone());
        assert_eq!(
            image.as_deref(),
            Some(duo_operator::DEFAULT_GATEWAY_IMAGE),
            "the chart's gateway image"
        );
        dry_run_pod(&client, "psa-restricted", &d)
            .await
            .unwrap_or_else(|e| panic!("gateway pod of {display} under restricted: {e}"));
        let mitz: MitzConnection = Api::namespaced(client.clone(), &app.namespace)
            .get("mitz")
            .await
            .expect("MitzConnection from the chart");
        let _ = mitz;
    }
    // a helm upgrade of a hospital (one replica: the operator removes the PodDisruptionBudget)
    let first = hospitals[0].0;
    let pdbs = Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(
        client.clone(),
        &first.namespace,
    );
    assert!(
        pdbs.get_opt(&format!("duo-{}", first.release))
            .await
            .expect("get")
            .is_some()
    );
    let mut args = vec!["upgrade".to_owned()];
    args.extend(app_helm_args(first));
    args.extend(["--set".into(), "replicas=1".into()]);
    helm.ok(&strs(&args));
    wait_for("PDB removed after the upgrade to 1 replica", T, || async {
        pdbs.get_opt(&format!("duo-{}", first.release))
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // --- the XDS and TLB examples through the chart, next to the raw MitzConnection example ----------
    namespace(&client, "hosp").await;
    create_example_secrets(&client, "hosp").await;
    apply_example(&client, "hosp", "mitz").await;
    helm.ok(&[
        "install",
        "oost",
        "charts/duo-gateway",
        "-n",
        "hosp",
        "-f",
        "examples/xds-hospital/values.yaml",
    ]);
    helm.ok(&[
        "install",
        "west",
        "charts/duo-gateway",
        "-n",
        "hosp",
        "-f",
        "examples/tlb-hospital/values.yaml",
    ]);
    for name in ["oost", "west"] {
        wait_gateway(
            &client,
            &operator,
            "hosp",
            name,
            "gateway_applied, 2 communities",
            |g| gateway_applied(g) && g.status.as_ref().is_some_and(|s| s.communities == 2),
        )
        .await;
    }
    assert_eq!(
        configured_communities(&client, "hosp", "oost").await,
        ["UMC Noord", "Ziekenhuis West"]
    );
    // a name the API server refuses (CEL on metadata.name), with the field in the message
    let long = "a-release-name-that-is-longer-than-fifty-characters";
    let err = helm.fails(&[
        "install",
        long,
        "charts/duo-gateway",
        "-n",
        "hosp",
        "--set",
        "tls.secretName=oost-tls",
    ]);
    assert!(
        err.contains("metadata.name must be at most 50 characters"),
        "{err}"
    );
    helm.ok(&["uninstall", long, "-n", "hosp"]);

    // --- helm upgrade to a chart whose CRD gained a field: the field becomes usable -------------------
    let gateways = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &first.namespace,
        &ApiResource::erase::<DuoGateway>(&()),
    );
    let with_field = json!({
        "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
        "kind": "DuoGateway",
        "metadata": {"name": first.release},
        "spec": {"maintenanceWindow": "Sun 02:00-04:00"}
    });
    let strict = PatchParams::apply("duo-test").validation_strict();
    let err = gateways
        .patch(&first.release, &strict, &Patch::Apply(&with_field))
        .await
        .expect_err("the field is unknown before the upgrade");
    assert!(err.to_string().contains("maintenanceWindow"), "{err}");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_str(SERVICE_MONITOR_CRD).expect("CRD"),
        )
        .await
        .expect("ServiceMonitor CRD");
    wait_established(&client, "servicemonitors.monitoring.coreos.com").await;
    let upgraded = tempfile::tempdir().expect("tempdir");
    let chart = chart_with_new_crd_field(upgraded.path(), "0.1.1-test.1");
    let chart = chart.display().to_string();
    helm.ok(&["upgrade", &operator_app.release, &chart, "-n", ops_ns]);
    let crd = wait_established(&client, CRD_NAMES[0]).await;
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
    assert!(
        schema
            .pointer("/openAPIV3Schema/properties/spec/properties/maintenanceWindow")
            .is_some(),
        "the upgrade gateway_applied the new CRD"
    );
    // the API server may take a moment to serve the new schema
    wait_for("maintenanceWindow accepted", T, || async {
        gateways
            .patch(&first.release, &strict, &Patch::Apply(&with_field))
            .await
            .ok()
    })
    .await;
    let stored = gateways.get(&first.release).await.expect("get");
    assert_eq!(stored.data["spec"]["maintenanceWindow"], "Sun 02:00-04:00");
    // the upgrade also rendered the ServiceMonitor, now that the API exists
    let monitors = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        ops_ns,
        &ApiResource {
            group: "monitoring.coreos.com".into(),
            version: "v1".into(),
            api_version: "monitoring.coreos.com/v1".into(),
            kind: "ServiceMonitor".into(),
            plural: "servicemonitors".into(),
        },
    );
    assert!(
        monitors
            .get_opt("duo-operator")
            .await
            .expect("get")
            .is_some()
    );
    // and the operator keeps reconciling the gateway that uses the new field
    wait_gateway(
        &client,
        &operator,
        &first.namespace,
        &first.release,
        "gateway_applied after the CRD upgrade",
        gateway_applied,
    )
    .await;

    // --- helm uninstall: the operator removes its finalizers, nothing stays behind --------------------
    let mut releases: Vec<(String, String)> = hospitals
        .iter()
        .map(|(a, _, _)| (a.release.clone(), a.namespace.clone()))
        .collect();
    releases.push(("oost".into(), "hosp".into()));
    releases.push(("west".into(), "hosp".into()));
    for (release, ns) in &releases {
        // --wait: returns once every object of the release is gone, i.e. the finalizer has run
        helm.ok(&["uninstall", release, "-n", ns, "--wait", "--timeout", "60s"]);
    }
    for (release, ns) in &releases {
        let name = format!("duo-{release}");
        assert!(
            Api::<Deployment>::namespaced(client.clone(), ns)
                .get_opt(&name)
                .await
                .expect("get")
                .is_none(),
            "{ns}/{name} Deployment removed with its DuoGateway"
        );
        assert!(
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(&format!("duo-{release}-config"))
                .await
                .expect("get")
                .is_none()
        );
    }
    let left: Vec<String> = Api::<DuoGateway>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|g| format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()))
        .collect();
    assert!(left.is_empty(), "DuoGateways left: {left:?}");
    // hosp keeps only the raw MitzConnection example (not part of a release); no community is left
    let communities = Api::<DuoCommunity>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(
        communities.items.is_empty(),
        "published and external DuoCommunities removed"
    );
    let mitz_left: Vec<String> = Api::<MitzConnection>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|m| {
            assert!(m.finalizers().is_empty() && m.metadata.deletion_timestamp.is_none());
            format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any())
        })
        .collect();
    assert_eq!(mitz_left, ["hosp/mitz"]);

    // the operator stops like a pod: SIGTERM, exit 0; its log shows no permission denied
    assert!(
        operator.terminate(),
        "graceful shutdown\n{}",
        operator.log()
    );
    let log = operator.log();
    assert!(
        !log.to_ascii_lowercase().contains("forbidden"),
        "the chart's RBAC was missing something:\n{log}"
    );
    let out = helm.ok(&[
        "uninstall",
        &operator_app.release,
        "-n",
        ops_ns,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(
        out.contains("kept due to the resource policy") || out.contains("resource policy"),
        "{out}"
    );
    for name in CRD_NAMES {
        assert!(
            Api::<CustomResourceDefinition>::all(client.clone())
                .get_opt(name)
                .await
                .expect("get")
                .is_some(),
            "{name} kept (crds.keep)"
        );
    }
    assert!(
        Api::<Deployment>::namespaced(client.clone(), ops_ns)
            .get_opt("duo-operator")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        helm.ok(&["list", "-A", "-q"]).trim().is_empty(),
        "no release left"
    );
    drop(env);
}
