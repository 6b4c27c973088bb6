//! Helpers shared by the operator's tests on a real kube-apiserver (`duo-testenv`).

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duo_operator::crd::{DuoCommunity, DuoGateway, MitzConnection};
use duo_operator::metrics::Metrics;
use duo_runtime::pki::generate::{Ca, CertifiedPem, ServerCertSpec};
use duo_testenv::TestEnv;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;

/// Repository root (the operator crate's parent).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_path_buf()
}

/// Starts an API server with the CRDs of `crds/`, or `None` when the tools are absent locally.
pub async fn env() -> Option<TestEnv> {
    let tools = duo_testenv::tools_bin()?;
    let env = TestEnv::start(&tools)
        .await
        .expect("start etcd + kube-apiserver");
    env.install_crds(&repo().join("crds"))
        .await
        .expect("install crds/");
    Some(env)
}

/// Creates namespace `ns`.
pub async fn namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(ns.into());
    api.create(&PostParams::default(), &n)
        .await
        .expect("create namespace");
}

/// Polls `f` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `kubernetes.io/tls` Secret.
pub fn tls_secret(name: &str, c: &CertifiedPem) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.type_ = Some("kubernetes.io/tls".into());
    s.data = Some(
        [
            (
                "tls.crt".to_owned(),
                ByteString(c.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(c.key_pem.clone().into_bytes()),
            ),
        ]
        .into(),
    );
    s
}

/// Applies `obj` with server-side apply as the test's field manager.
pub async fn apply<K>(api: &Api<K>, name: &str, obj: &K)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    api.patch(
        name,
        &PatchParams::apply("duo-test").force(),
        &Patch::Apply(obj),
    )
    .await
    .expect("apply");
}

/// The example Secrets and trust bundles for `ns`, with UZI-style certificates from a fresh test CA.
pub struct ExampleSecrets {
    pub ca: Ca,
    pub oost: CertifiedPem,
    pub west: CertifiedPem,
    pub mitz: CertifiedPem,
}

pub async fn create_example_secrets(client: &Client, ns: &str) -> ExampleSecrets {
    let ca = Ca::new("DUO test UZI CA").expect("ca");
    let oost = ca
        .issue(&ServerCertSpec::uzi(
            "12345678".parse().unwrap(),
            "Ziekenhuis Oost",
            &["duo.oost.example"],
            365,
        ))
        .expect("oost cert");
    let west = ca
        .issue(&ServerCertSpec::uzi(
            "87654321".parse().unwrap(),
            "Ziekenhuis West",
            &["duo.west.example"],
            365,
        ))
        .expect("west cert");
    let mut mitz_spec = ServerCertSpec::uzi(
        "12345678".parse().unwrap(),
        "Hosting provider",
        &["client.hosting.example"],
        365,
    );
    mitz_spec.ura = None;
    let mitz = ca.issue(&mitz_spec).expect("mitz cert");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (name, c) in [
        ("oost-tls", &oost),
        ("west-tls", &west),
        ("mitz-client", &mitz),
    ] {
        apply(&secrets, name, &tls_secret(name, c)).await;
    }
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
    trust_config_map(client, ns, &ca.cert_pem).await;
    ExampleSecrets {
        ca,
        oost,
        west,
        mitz,
    }
}

/// Applies every document of the YAML files in `examples/<folder>` into `ns` (not the chart values).
pub async fn apply_example(client: &Client, ns: &str, folder: &str) {
    let dir = repo().join("examples").join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files
        .into_iter()
        // values.yaml is the duo-gateway chart's values for the same example (operator/tests/helm.rs)
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("values.yaml"))
    {
        let text = std::fs::read_to_string(&f).expect("read example");
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).expect("example YAML");
        for doc in docs {
            let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
            match doc["kind"].as_str() {
                Some("DuoGateway") => {
                    let o: DuoGateway = serde_json::from_value(doc).expect("DuoGateway");
                    apply(&Api::namespaced(client.clone(), ns), &name, &o).await;
                }
                Some("DuoCommunity") => {
                    let o: DuoCommunity = serde_json::from_value(doc).expect("DuoCommunity");
                    apply(&Api::namespaced(client.clone(), ns), &name, &o).await;
                }
                Some("MitzConnection") => {
                    let o: MitzConnection = serde_json::from_value(doc).expect("MitzConnection");
                    apply(&Api::namespaced(client.clone(), ns), &name, &o).await;
                }
                other => panic!("{}: unexpected kind {other:?}", f.display()),
            }
        }
    }
}

/// An operator running in-process against `client` until dropped.
pub struct Operator {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub metrics: Arc<Metrics>,
}

impl Operator {
    /// The operator watching every namespace.
    pub fn start(client: Client) -> Operator {
        Operator::start_with(client, "duo-gateway:test", None, &[])
    }

    /// The operator watching `namespaces` only (`--watch-namespaces`); none: every namespace.
    pub fn start_in(client: Client, namespaces: &[&str]) -> Operator {
        Operator::start_with(client, "duo-gateway:test", None, namespaces)
    }

    /// An operator whose default gateway image is `image`, with `--max-concurrent-rollouts`
    /// `rollout_cap` (default when `None`), watching `namespaces` (none: every namespace).
    pub fn start_with(
        client: Client,
        image: &str,
        rollout_cap: Option<usize>,
        namespaces: &[&str],
    ) -> Operator {
        let metrics = Arc::new(Metrics::new());
        let scope =
            duo_operator::scope::Scope::from_namespaces(namespaces).expect("valid namespace names");
        let (ctx, writers) = duo_operator::run::context(
            client.clone(),
            metrics.clone(),
            image.into(),
            "test",
            scope,
        );
        if let Some(cap) = rollout_cap {
            ctx.rollout_cap
                .store(cap, std::sync::atomic::Ordering::Relaxed);
        }
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(duo_operator::run::run_controllers(
            client,
            ctx,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
            8,
            writers,
        ));
        Operator {
            stop,
            task: Some(task),
            metrics,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The `duo-gateway` binary: `$DUO_GATEWAY_BIN`, else `duo-gateway` next to this test's target folder
/// (`target/<profile>/duo-gateway`, built by `cargo test --workspace` because duo-runtime has
/// integration tests, or by `cargo build --release --bin duo-gateway`).
pub fn duo_gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DUO_GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/duo-gateway
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("duo-gateway");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --release --bin duo-gateway` (cargo test --workspace builds it) or set DUO_GATEWAY_BIN",
        bin.display()
    );
    bin
}

/// Lays the ConfigMap and Secrets of namespace `ns` out as the pod of `d` mounts them, under `root`
/// instead of `/etc/duo`, and returns the config path (`/etc/duo` in the rendered paths rewritten to
/// `root`). Checks that the container runs `serve --config <that file>`.
pub async fn lay_out_like_the_pod(
    client: &Client,
    ns: &str,
    d: &Deployment,
    root: &Path,
) -> PathBuf {
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let container = &pod.containers[0];
    let volumes = pod.volumes.as_ref().expect("volumes");
    for m in container.volume_mounts.as_ref().expect("mounts") {
        let Some(rel) = m.mount_path.strip_prefix("/etc/duo/") else {
            continue;
        };
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .expect("volume of mount");
        if let Some(cm) = &v.config_map {
            let data = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&cm.name)
                .await
                .expect("configmap")
                .data
                .unwrap_or_default();
            for item in cm.items.as_ref().expect("items") {
                let text = data[&item.key].replace("/etc/duo", &root.display().to_string());
                std::fs::write(dir.join(&item.path), text).expect("write");
            }
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.as_ref().expect("secret name");
            let data = Api::<Secret>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .expect("secret")
                .data
                .unwrap_or_default();
            for item in s.items.as_ref().expect("items") {
                std::fs::write(dir.join(&item.path), &data[&item.key].0).expect("write");
            }
        }
    }
    // the same argument the container gets
    let args = container.args.as_ref().expect("args");
    assert_eq!(args[0], "serve");
    assert_eq!(args[1], "--config");
    root.join(
        args[2]
            .strip_prefix("/etc/duo/")
            .expect("config under /etc/duo"),
    )
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `duo-gateway serve` started as the pod of a Deployment would run it, killed when dropped.
pub struct PodProcess {
    pub child: std::process::Child,
    pub log: PathBuf,
    /// Loopback port of the `https` listener (the pod's 8443).
    pub port: u16,
    /// Loopback port of the `ops` listener (the pod's 8080).
    pub ops_port: u16,
}

impl PodProcess {
    /// What the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lays out what the pod of `d` in `ns` mounts under `root` ([`lay_out_like_the_pod`]), moves the
    /// two listeners to loopback `port` and a free ops port, lets `adjust` change what the cluster
    /// would provide differently here (e.g. `connectTo` names that only the cluster DNS resolves), and
    /// starts `duo-gateway` with the container's arguments and environment. Waits until `/readyz`
    /// answers; panics with the log when the process exits or is not ready within `timeout`.
    pub async fn start(
        client: &Client,
        ns: &str,
        d: &Deployment,
        root: &Path,
        port: u16,
        adjust: impl FnOnce(&mut duo_runtime::config::Config),
        timeout: Duration,
    ) -> PodProcess {
        let config_path = lay_out_like_the_pod(client, ns, d, root).await;
        let rendered = std::fs::read_to_string(&config_path).expect("config.yaml");
        let mut config = duo_runtime::config::Config::parse(&rendered).expect("rendered config");
        assert_eq!(config.server.listen.port(), 8443);
        assert_eq!(config.server.ops_listen.port(), 8080);
        let ops_port = free_port();
        config.server.listen = ([127, 0, 0, 1], port).into();
        config.server.ops_listen = ([127, 0, 0, 1], ops_port).into();
        adjust(&mut config);
        std::fs::write(&config_path, config.to_yaml()).expect("write config");
        let container = &d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
            .containers[0];
        let mut args = container.args.clone().expect("args");
        let i = args.iter().position(|a| a == "--config").expect("--config") + 1;
        args[i] = config_path.display().to_string();
        let log = root.join("gateway.log");
        let out = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(duo_gateway_bin());
        cmd.args(&args);
        for e in container.env.iter().flatten() {
            if let Some(v) = &e.value {
                cmd.env(&e.name, v);
            }
        }
        let mut p = PodProcess {
            child: cmd
                .stdin(Stdio::null())
                .stdout(Stdio::from(out.try_clone().expect("clone")))
                .stderr(Stdio::from(out))
                .spawn()
                .expect("start duo-gateway serve"),
            log,
            port,
            ops_port,
        };
        p.wait_ready(timeout).await;
        p
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let ops = duo_runtime::tls::plain_http_client(Duration::from_secs(2)).expect("client");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("duo-gateway serve exited: {status}\n{}", self.log());
            }
            let ready = ops
                .get(format!("http://127.0.0.1:{}/readyz", self.ops_port))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "duo-gateway serve not ready\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, as the kubelet stops a pod; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "no exit after SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// A TLS identity issued by `ca` as files in `dir`, loaded.
pub fn identity(
    dir: &Path,
    ca: &Ca,
    name: &str,
    spec: &ServerCertSpec,
) -> duo_runtime::tls::TlsMaterial {
    let c = ca.issue(spec).expect("certificate");
    duo_runtime::tls::TlsMaterial::load(&duo_runtime::config::TlsConfig {
        cert_file: write(dir, &format!("{name}.crt"), &c.cert_pem),
        key_file: write(dir, &format!("{name}.key"), &c.key_pem),
        trust_bundle_file: write(dir, "ca.crt", &ca.cert_pem),
    })
    .expect("load identity")
}

/// A certificate without URA for `dns` (simulators' server certificates).
pub fn plain(dns: &str) -> ServerCertSpec {
    let mut s = ServerCertSpec::uzi("12345678".parse().expect("URA"), "Simulator", &[dns], 30);
    s.ura = None;
    s.uzi_name = false;
    s.permanent_identifier = false;
    s.uzi_number = String::new();
    s
}

pub fn local_url(sim: &duo_testkit::sim::serve::RunningSim, path: &str) -> String {
    // the simulators' certificates name `localhost`
    format!("https://localhost:{}{path}", sim.addr().port())
}

/// A Mitz base URL that is not a placeholder (`.internal` is for private networks, not reserved for
/// examples like the examples' `mitz.example`, which the operator never makes Ready).
pub const MITZ_TEST_BASE: &str = "https://mitz.duo-test.internal";

/// Points the endpoints of MitzConnection `ns/name` at `base` (merge patch as the test's manager).
pub async fn point_mitz_at(client: &Client, ns: &str, name: &str, base: &str) {
    Api::<MitzConnection>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "closedQuestionUrl": format!("{base}/geslotenautorisatievraag/xacml3"),
                "openQuestionUrl": format!("{base}/openautorisatievraag"),
                "subscriptionUrl": format!("{base}/abonnementen/fhir/Subscription"),
            }})),
        )
        .await
        .expect("point the MitzConnection's endpoints");
}

// --- helm as a process and what it renders ---------------------------------------------------------

/// helm with its own cache/config/data folders (nothing from the user's home) and, optionally, a
/// kubeconfig.
pub struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    pub fn new(bin: PathBuf, kubeconfig: Option<&Path>) -> Helm {
        Helm {
            bin,
            home: tempfile::tempdir().expect("helm home"),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
        }
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        let h = self.home.path();
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(repo())
            .env("HOME", h)
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .env_remove("HELM_NAMESPACE")
            .stdin(Stdio::null());
        match &self.kubeconfig {
            Some(k) => cmd.env("KUBECONFIG", k),
            None => cmd.env("KUBECONFIG", h.join("no-cluster")),
        };
        cmd.output().expect("run helm")
    }

    /// Runs helm and returns stdout; panics with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs helm, expects failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "helm {} should have failed; stdout:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `helm template` output as objects (empty documents dropped).
    pub fn template(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["template"];
        all.extend_from_slice(args);
        parse_docs(&self.ok(&all))
    }
}

pub fn parse_docs(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("helm output is YAML");
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// The objects of `kind` in `objs`.
pub fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// `(status, reason, message)` of condition `t` of a DuoGateway.
pub fn gateway_condition(gw: &DuoGateway, t: &str) -> Option<(String, String, String)> {
    gw.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The current spec of a DuoGateway is applied (`Degraded=False`).
pub fn gateway_applied(gw: &DuoGateway) -> bool {
    gateway_condition(gw, "Degraded").is_some_and(|(s, _, _)| s == "False")
}

/// Community names in the rendered runtime configuration of DuoGateway `ns/name`.
pub async fn configured_communities(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(&format!("duo-{name}-config"))
        .await
        .expect("rendered ConfigMap");
    let config =
        duo_runtime::config::Config::parse(&cm.data.as_ref().expect("data")["config.yaml"])
            .expect("rendered config parses");
    config.communities.iter().map(|c| c.name.clone()).collect()
}

/// ConfigMap `duo-trust` (key `ca.crt`) in `ns` with `ca_pem`: the trust bundle the examples name.
pub async fn trust_config_map(client: &Client, ns: &str, ca_pem: &str) {
    let mut trust = ConfigMap::default();
    trust.metadata.name = Some("duo-trust".into());
    trust.data = Some([("ca.crt".to_owned(), ca_pem.to_owned())].into());
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        "duo-trust",
        &trust,
    )
    .await;
}
