//! `--watch-namespaces` with the operator chart's narrowed RBAC (issue 21, item 3), on a real
//! kube-apiserver (authorization mode RBAC):
//!
//! - `helm template` of the operator chart with `watchNamespaces: [a, b]` renders a Role + RoleBinding in
//!   a and b, the Lease Role, no ClusterRoleBinding and no cluster-wide rule on Secrets, and passes
//!   `--watch-namespaces=a,b`; its ServiceAccount, Roles, bindings and ClusterRoles are applied;
//! - the operator runs in-process as that ServiceAccount (a bound token, so exactly the chart's RBAC)
//!   watching the namespaces of the rendered flag: a DuoGateway in `a` is reconciled (finalizer,
//!   children, status), one in `b` takes a community published from `a` and is told that namespace `c`,
//!   which it also selects, is not watched; the MitzConnections of a and b get a status; the DuoGateway,
//!   DuoCommunity and MitzConnection in `c` are left alone; the operator's log has no "forbidden";
//! - with the operator's credentials, listing or reading Secrets in `c` (or cluster-wide) fails with
//!   403, reading its own in `a` works;
//! - the chart's aggregate ClusterRoles join the built-in `view` and `edit` roles: a user bound to `view`
//!   in a namespace reads DuoGateways (and their status) there and cannot write them, one bound to `edit`
//!   may also write specs, not status.

mod common;

use std::collections::BTreeSet;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use duo_operator::crd::{DuoCommunity, DuoGateway, MitzConnection};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::SelectorExt;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

/// The rendered objects of `kind`, typed.
fn rendered<K: serde::de::DeserializeOwned>(objs: &[Value], kind: &str) -> Vec<K> {
    of_kind(objs, kind)
        .into_iter()
        .map(|o| serde_json::from_value(o.clone()).expect(kind))
        .collect()
}

/// A client that authenticates as ServiceAccount `ns/name` (a bound token: only its RBAC).
async fn client_as(env: &duo_testenv::TestEnv, ns: &str, name: &str) -> Client {
    let path = env
        .service_account_kubeconfig(ns, name, 3600)
        .await
        .expect("ServiceAccount kubeconfig");
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// The HTTP status of a refused call (panics when it succeeded or failed otherwise).
fn status_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

/// The documents of `examples/<folder>/<file>`.
fn example(folder: &str, file: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(repo().join("examples").join(folder).join(file)).expect("example");
    serde_saphyr::from_multiple(&text).expect("example YAML")
}

fn example_of<K: serde::de::DeserializeOwned>(folder: &str, file: &str, kind: &str) -> K {
    let doc = example(folder, file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .expect(kind);
    serde_json::from_value(doc).expect(kind)
}

/// Waits until DuoGateway `ns/name` has a status for its current generation for which `ok` holds.
async fn wait_gateway(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    logs: &LogBuf,
    ok: impl Fn(&DuoGateway) -> bool,
) -> DuoGateway {
    let api: Api<DuoGateway> = Api::namespaced(client.clone(), ns);
    let start = std::time::Instant::now();
    loop {
        let gw = api.get(name).await.expect("get DuoGateway");
        let current = gw
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation == gw.metadata.generation);
        if current && ok(&gw) {
            return gw;
        }
        assert!(
            start.elapsed() < T,
            "timed out waiting for {ns}/{name}: {what}\nstatus: {:?}\n--- operator log ---\n{}",
            gw.status,
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator's log lines (the in-process operator logs through `tracing`).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What kube-controller-manager's clusterrole-aggregation controller does for ClusterRole `name` (it
/// does not run in this API-server-only environment): its rules become the union of the rules of every
/// other ClusterRole that one of its `aggregationRule` selectors matches. The selectors are the API
/// server's own bootstrap ones, so whether the chart's roles join is decided by their labels.
async fn aggregate(client: &Client, name: &str) -> Vec<String> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let mut role = api.get(name).await.expect("built-in ClusterRole");
    let selectors = role
        .aggregation_rule
        .as_ref()
        .and_then(|a| a.cluster_role_selectors.clone())
        .unwrap_or_else(|| panic!("the built-in {name} ClusterRole aggregates"));
    let selectors: Vec<kube::core::Selector> = selectors
        .into_iter()
        .map(|s| s.try_into().expect("selector"))
        .collect();
    let mut rules = Vec::new();
    let mut joined = Vec::new();
    let all = api.list(&ListParams::default()).await.expect("list");
    for r in all.items.iter().filter(|r| r.name_any() != name) {
        if selectors.iter().any(|s| s.matches(r.labels())) {
            joined.push(r.name_any());
            for rule in r.rules.iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    role.rules = Some(rules);
    role.metadata.managed_fields = None;
    api.replace(name, &PostParams::default(), &role)
        .await
        .expect("replace aggregated rules");
    joined
}

async fn bind_cluster_role(client: &Client, ns: &str, account: &str, role: &str) {
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some(account.into());
    apply(&Api::namespaced(client.clone(), ns), account, &sa).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": account, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]
    }))
    .expect("RoleBinding");
    apply(&Api::namespaced(client.clone(), ns), account, &binding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_in_its_namespaces_and_cannot_read_secrets_elsewhere() {
    let Some(helm) = duo_testenv::helm_bin() else {
        return;
    };
    let logs = LogBuf::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("duo_operator=debug,kube_runtime=warn,kube_client=warn")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    let Some(env) = env().await else { return };
    let admin = env.client().await.expect("client");
    for ns in ["duo-system", "a", "b", "c"] {
        namespace(&admin, ns).await;
    }

    // --- the chart with watchNamespaces [a, b] ------------------------------------------------------
    let objs = Helm::new(helm.clone(), None).template(&[
        "duo-operator",
        "charts/duo-operator",
        "-n",
        "duo-system",
        "--set",
        "watchNamespaces={a,b}",
    ]);
    let roles: BTreeSet<String> = of_kind(&objs, "Role")
        .iter()
        .filter(|r| r["metadata"]["name"] == "duo-operator")
        .map(|r| r["metadata"]["namespace"].as_str().expect("ns").to_owned())
        .collect();
    assert_eq!(roles, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    let lease_role = of_kind(&objs, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "duo-operator-leader-election")
        .expect("the Lease Role stays");
    assert_eq!(lease_role["metadata"]["namespace"], "duo-system");
    assert!(
        of_kind(&objs, "ClusterRoleBinding").is_empty(),
        "nothing cluster-wide for the operator"
    );
    for cr in of_kind(&objs, "ClusterRole") {
        let text = cr["rules"].to_string();
        assert!(
            !text.contains("secrets"),
            "a ClusterRole grants Secrets: {cr}"
        );
    }
    for r in of_kind(&objs, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == "duo-operator")
    {
        let secrets = r["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|rule| rule["resources"] == json!(["secrets"]))
            .expect("a Secret rule");
        assert_eq!(
            secrets["verbs"],
            json!(["get", "list", "watch", "create", "patch", "delete"])
        );
    }
    let deployment = of_kind(&objs, "Deployment")[0];
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let flag = args
        .iter()
        .find_map(|a| a.strip_prefix("--watch-namespaces="))
        .expect("--watch-namespaces passed");
    assert_eq!(flag, "a,b");
    // cluster-wide by default: the ClusterRole, no per-namespace Role, no flag
    let default = Helm::new(helm.clone(), None).template(&[
        "duo-operator",
        "charts/duo-operator",
        "-n",
        "duo-system",
    ]);
    assert_eq!(of_kind(&default, "ClusterRoleBinding").len(), 1);
    assert_eq!(of_kind(&default, "Role").len(), 1, "only the Lease Role");
    assert!(
        !of_kind(&default, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
            .contains("--watch-namespaces"),
        "no flag by default"
    );
    // a namespace name the API server would refuse is refused by the values schema
    let home = tempfile::tempdir().expect("home");
    let bad = Command::new(&helm)
        .args([
            "template",
            "x",
            "charts/duo-operator",
            "--set",
            "watchNamespaces={Hosp_A}",
        ])
        .current_dir(repo())
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
        .output()
        .expect("helm");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("watchNamespaces"),
        "{err}"
    );

    for o in rendered::<ServiceAccount>(&objs, "ServiceAccount") {
        let ns = o.namespace().unwrap_or_else(|| "duo-system".into());
        apply(&Api::namespaced(admin.clone(), &ns), &o.name_any(), &o).await;
    }
    for o in rendered::<ClusterRole>(&objs, "ClusterRole") {
        apply(&Api::all(admin.clone()), &o.name_any(), &o).await;
    }
    for o in rendered::<Role>(&objs, "Role") {
        let ns = o.namespace().expect("a Role's namespace");
        apply(&Api::namespaced(admin.clone(), &ns), &o.name_any(), &o).await;
    }
    for o in rendered::<RoleBinding>(&objs, "RoleBinding") {
        let ns = o.namespace().expect("a RoleBinding's namespace");
        apply(&Api::namespaced(admin.clone(), &ns), &o.name_any(), &o).await;
    }
    // the admission policy: only the operator's ServiceAccount writes the published-by label
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    for o in rendered::<ValidatingAdmissionPolicy>(&objs, "ValidatingAdmissionPolicy") {
        apply(&Api::all(admin.clone()), &o.name_any(), &o).await;
    }
    for o in rendered::<ValidatingAdmissionPolicyBinding>(&objs, "ValidatingAdmissionPolicyBinding")
    {
        apply(&Api::all(admin.clone()), &o.name_any(), &o).await;
    }
    let op_client = client_as(&env, "duo-system", "duo-operator").await;

    // --- hospitals: oost in a, west in b (selecting a, b and c), a third gateway in c ----------------
    for ns in ["a", "b", "c"] {
        create_example_secrets(&admin, ns).await;
        apply_example(&admin, ns, "mitz").await;
        point_mitz_at(&admin, ns, "mitz", MITZ_TEST_BASE).await;
    }
    let oost: DuoGateway = example_of("xds-hospital", "duogateway.yaml", "DuoGateway");
    let noord: DuoCommunity = example_of("xds-hospital", "duogateway.yaml", "DuoCommunity");
    apply(&Api::namespaced(admin.clone(), "a"), "oost", &oost).await;
    apply(&Api::namespaced(admin.clone(), "a"), "noord", &noord).await;
    let mut west: DuoGateway = example_of("tlb-hospital", "duogateway.yaml", "DuoGateway");
    west.spec
        .communities
        .as_mut()
        .expect("communities")
        .namespaces = Some(vec!["a".into(), "b".into(), "c".into()]);
    apply(&Api::namespaced(admin.clone(), "b"), "west", &west).await;
    apply(&Api::namespaced(admin.clone(), "c"), "oost", &oost).await;
    // a peer in c that west's selector matches: the operator cannot see it
    let mut zuid = noord.clone();
    zuid.metadata.name = Some("zuid".into());
    zuid.spec.name = "Ziekenhuis Zuid".into();
    zuid.spec.home_community_id = "urn:oid:2.16.528.1.1007.3.3.33332222.1".into();
    apply(&Api::namespaced(admin.clone(), "c"), "zuid", &zuid).await;

    let operator = Operator::start_in(op_client.clone(), &flag.split(',').collect::<Vec<_>>());

    // a: reconciled, with its children and status
    let gw = wait_gateway(&admin, "a", "oost", "applied with noord", &logs, |g| {
        gateway_applied(g) && g.status.as_ref().is_some_and(|s| s.communities == 1)
    })
    .await;
    assert!(
        gw.finalizers()
            .iter()
            .any(|f| f == duo_operator::reconcile::FINALIZER)
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), "a")
            .get_opt("duo-oost")
            .await
            .expect("get")
            .is_some(),
        "the gateway Deployment in a"
    );
    assert_eq!(
        configured_communities(&admin, "a", "oost").await,
        ["UMC Noord"]
    );
    // b: takes noord and oost's published community from a; told that c is not watched
    let gw = wait_gateway(
        &admin,
        "b",
        "west",
        "applied with a's communities, c reported",
        &logs,
        |g| {
            gateway_applied(g)
                && g.status.as_ref().is_some_and(|s| s.communities == 2)
                && gateway_condition(g, "CommunitiesSkipped").is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    let (_, reason, message) =
        gateway_condition(&gw, "CommunitiesSkipped").expect("CommunitiesSkipped");
    assert_eq!(reason, "NamespaceNotWatched");
    assert!(
        message.contains("namespace \"c\" is not watched by the operator (--watch-namespaces a,b)"),
        "{message}"
    );
    assert_eq!(
        configured_communities(&admin, "b", "west").await,
        ["UMC Noord", "Ziekenhuis Oost"],
        "the communities of a; nothing of c"
    );
    // the MitzConnection controller works per namespace too
    for ns in ["a", "b"] {
        wait_for(&format!("MitzConnection {ns}/mitz Ready"), T, || async {
            let m: MitzConnection = Api::namespaced(admin.clone(), ns).get("mitz").await.ok()?;
            m.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
    }

    // c: left alone (give the operator time it would need to act)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_c: DuoGateway = Api::namespaced(admin.clone(), "c")
        .get("oost")
        .await
        .expect("get");
    assert!(
        in_c.status.is_none() && in_c.finalizers().is_empty(),
        "{in_c:?}"
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), "c")
            .get_opt("duo-oost")
            .await
            .expect("get")
            .is_none()
    );
    let mitz_c: MitzConnection = Api::namespaced(admin.clone(), "c")
        .get("mitz")
        .await
        .expect("get");
    assert!(mitz_c.status.is_none());
    let published_c: Vec<String> = Api::<DuoCommunity>::namespaced(admin.clone(), "c")
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(published_c, ["zuid"], "nothing published in c");

    // --- the operator's credentials: Secrets in c (and cluster-wide) are out of reach -------------------
    let secrets_c: Api<Secret> = Api::namespaced(op_client.clone(), "c");
    assert_eq!(
        status_code(secrets_c.list(&ListParams::default()).await),
        403
    );
    assert_eq!(status_code(secrets_c.get("oost-tls").await), 403);
    assert_eq!(
        status_code(
            Api::<Secret>::all(op_client.clone())
                .list(&ListParams::default())
                .await
        ),
        403
    );
    assert_eq!(
        status_code(
            Api::<DuoGateway>::all(op_client.clone())
                .list(&ListParams::default())
                .await
        ),
        403,
        "no cluster-wide list of anything"
    );
    let own = Api::<Secret>::namespaced(op_client.clone(), "a")
        .get("oost-tls")
        .await
        .expect("control: the operator reads Secrets in a watched namespace");
    assert!(own.data.is_some());
    operator.stop().await;
    let log = logs.text();
    assert!(
        !log.to_ascii_lowercase().contains("forbidden"),
        "the chart's per-namespace RBAC was missing something:\n{log}"
    );

    // --- aggregate ClusterRoles: view reads, edit writes specs ------------------------------------------
    let joined = aggregate(&admin, "view").await;
    assert!(
        joined.contains(&"duo-operator-view".to_owned()),
        "{joined:?}"
    );
    assert!(!joined.contains(&"duo-operator-edit".to_owned()));
    let joined = aggregate(&admin, "edit").await;
    assert!(
        joined.contains(&"duo-operator-view".to_owned())
            && joined.contains(&"duo-operator-edit".to_owned()),
        "{joined:?}"
    );
    bind_cluster_role(&admin, "a", "viewer", "view").await;
    bind_cluster_role(&admin, "a", "editor", "edit").await;
    let viewer = client_as(&env, "a", "viewer").await;
    let editor = client_as(&env, "a", "editor").await;
    let dry_run = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let spec_patch = Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}}));
    let status_patch = Patch::Merge(json!({"status": {"communities": 9}}));

    let gws: Api<DuoGateway> = Api::namespaced(viewer.clone(), "a");
    assert_eq!(
        gws.list(&ListParams::default())
            .await
            .expect("view lists")
            .items
            .len(),
        1
    );
    gws.get("oost").await.expect("view gets");
    gws.get_status("oost").await.expect("view gets the status");
    Api::<DuoCommunity>::namespaced(viewer.clone(), "a")
        .list(&ListParams::default())
        .await
        .expect("view lists DuoCommunities");
    Api::<MitzConnection>::namespaced(viewer.clone(), "a")
        .get_status("mitz")
        .await
        .expect("view reads a MitzConnection's status");
    assert_eq!(
        status_code(gws.patch("oost", &dry_run, &spec_patch).await),
        403
    );
    assert_eq!(
        status_code(
            gws.delete(
                "oost",
                &DeleteParams {
                    dry_run: true,
                    ..DeleteParams::default()
                }
            )
            .await
        ),
        403
    );
    let mut community = zuid.clone();
    community.metadata.namespace = Some("a".into());
    let create_dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    assert_eq!(
        status_code(
            Api::<DuoCommunity>::namespaced(viewer.clone(), "a")
                .create(&create_dry, &community)
                .await
        ),
        403
    );
    assert_eq!(
        status_code(
            Api::<DuoGateway>::namespaced(viewer.clone(), "b")
                .list(&ListParams::default())
                .await
        ),
        403,
        "bound in a only"
    );
    assert_eq!(
        status_code(
            Api::<Secret>::namespaced(viewer.clone(), "a")
                .list(&ListParams::default())
                .await
        ),
        403,
        "view never reads Secrets"
    );

    let gws: Api<DuoGateway> = Api::namespaced(editor.clone(), "a");
    gws.list(&ListParams::default()).await.expect("edit reads");
    gws.patch("oost", &dry_run, &spec_patch)
        .await
        .expect("edit patches a DuoGateway (dry run)");
    Api::<DuoCommunity>::namespaced(editor.clone(), "a")
        .create(&create_dry, &community)
        .await
        .expect("edit creates a DuoCommunity (dry run)");
    assert_eq!(
        status_code(gws.patch_status("oost", &dry_run, &status_patch).await),
        403,
        "status belongs to the operator"
    );
    // ... but not one that claims to be published by the operator: the admission policy refuses the
    // label from anyone but the operator's ServiceAccount (which published oost above with it active)
    let mut forged = community.clone();
    forged.metadata.name = Some("oost-copy".into());
    forged.metadata.labels = Some(
        [(
            duo_operator::crd::PUBLISHED_BY_LABEL.to_owned(),
            "oost".to_owned(),
        )]
        .into(),
    );
    match Api::<DuoCommunity>::namespaced(editor.clone(), "a")
        .create(&create_dry, &forged)
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(
                e.message
                    .contains("only the duo-operator publishes DuoCommunities"),
                "{e:?}"
            );
        }
        other => panic!("a forged published-by label was admitted: {other:?}"),
    }
    drop(env);
}
