//! A real Kubernetes API server for tests, the envtest model: etcd and kube-apiserver started on
//! loopback with generated certificates, no controller-manager, scheduler or kubelet. Consequences
//! (those of the envtest model): no garbage collection through ownerReferences, no Pods, Deployments never get status
//! unless a test writes it.
//!
//! The binaries come from `$DUO_TOOLS_BIN` (built by `scripts/tools.sh`, exported by `.tools/env`).
//! [`tools_bin`] decides what happens when it is unset: a test fails when `CI` or `DUO_REQUIRE_TOOLS`
//! is set, and is skipped with a message otherwise.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Environment variable naming the folder with `etcd`, `kube-apiserver` and `helm`.
pub const TOOLS_ENV: &str = "DUO_TOOLS_BIN";

/// The tools folder, or `None` (after printing why) when `DUO_TOOLS_BIN` is unset during local unit
/// work. Panics with a clear message when it is unset but required (`CI` or `DUO_REQUIRE_TOOLS` set),
/// or when it is set but lacks `etcd` / `kube-apiserver`.
pub fn tools_bin() -> Option<PathBuf> {
    match std::env::var_os(TOOLS_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            for b in ["etcd", "kube-apiserver"] {
                assert!(
                    dir.join(b).is_file(),
                    "{TOOLS_ENV}={} has no {b}: run scripts/setup.sh (it builds the tools) and `source .tools/env`",
                    dir.display()
                );
            }
            Some(dir)
        }
        None => {
            let required = ["CI", "DUO_REQUIRE_TOOLS"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty() && x != "0"));
            if required {
                panic!(
                    "{TOOLS_ENV} is not set but CI / DUO_REQUIRE_TOOLS requires the real API server: \
                     run scripts/setup.sh and `source .tools/env`"
                );
            }
            eprintln!(
                "SKIPPED: {TOOLS_ENV} is not set (run scripts/setup.sh and `source .tools/env` to run this test)"
            );
            None
        }
    }
}

/// The `helm` binary of the tools folder, or `None` (after printing why) when `DUO_TOOLS_BIN` is unset
/// during local unit work; the same rules as [`tools_bin`]. Panics when the folder has no `helm`.
pub fn helm_bin() -> Option<PathBuf> {
    let dir = tools_bin()?;
    let helm = dir.join("helm");
    assert!(
        helm.is_file(),
        "{TOOLS_ENV}={} has no helm: run scripts/setup.sh (it builds the tools) and `source .tools/env`",
        dir.display()
    );
    Some(helm)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running etcd + kube-apiserver pair. Dropping it stops both and removes the data folder.
pub struct TestEnv {
    etcd: Child,
    apiserver: Child,
    dir: tempfile::TempDir,
    /// Kubeconfig with cluster-admin (`system:masters`) credentials.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
}

struct Pki {
    ca_pem: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    sa_key: String,
    sa_pub: String,
}

fn pki() -> anyhow::Result<Pki> {
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "duo-testenv-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    serving
        .subject_alt_names
        .push(SanType::IpAddress([10, 0, 0, 1].into()));
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let mut admin = CertificateParams::default();
    admin
        .distinguished_name
        .push(DnType::CommonName, "duo-testenv-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate()?;
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        sa_key: sa.serialize_pem(),
        sa_pub: sa.public_key_pem(),
    })
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = fs::File::create(log)?;
    let err = out.try_clone()?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

impl TestEnv {
    /// Starts etcd and kube-apiserver from `tools` and waits (up to 90 s) until `/readyz` answers ok
    /// and the `default` namespace exists.
    pub async fn start(tools: &Path) -> anyhow::Result<TestEnv> {
        TestEnv::start_with(tools, &[]).await
    }

    /// [`TestEnv::start`] with extra kube-apiserver flags (appended, so they win over the defaults), e.g.
    /// `--enable-admission-plugins=OwnerReferencesPermissionEnforcement`.
    ///
    /// The ports are chosen free, then released for etcd and kube-apiserver to bind: another test
    /// process may take one in between. A start that failed because a port was taken is tried again
    /// with new ports (at most three times).
    pub async fn start_with(
        tools: &Path,
        extra_apiserver_args: &[&str],
    ) -> anyhow::Result<TestEnv> {
        let mut attempt = 1;
        loop {
            match TestEnv::start_once(tools, extra_apiserver_args).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(tools: &Path, extra_apiserver_args: &[&str]) -> anyhow::Result<TestEnv> {
        let dir = tempfile::Builder::new().prefix("duo-testenv-").tempdir()?;
        let d = dir.path();
        let pki = pki()?;
        let w = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let p = d.join(name);
            fs::write(&p, text)?;
            Ok(p)
        };
        let ca = w("ca.crt", &pki.ca_pem)?;
        let serving_cert = w("apiserver.crt", &pki.serving_cert)?;
        let serving_key = w("apiserver.key", &pki.serving_key)?;
        let sa_key = w("sa.key", &pki.sa_key)?;
        let sa_pub = w("sa.pub", &pki.sa_pub)?;

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_log = d.join("etcd.log");
        let mut etcd = spawn(
            &tools.join("etcd"),
            &[
                "--name=duo-testenv".into(),
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=duo-testenv={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &etcd_log,
        )?;
        let server = format!("https://127.0.0.1:{api_port}");
        let api_log = d.join("kube-apiserver.log");
        let apiserver = match spawn(
            &tools.join("kube-apiserver"),
            &[
                "--advertise-address=127.0.0.1".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", d.join("certs").display()),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", serving_cert.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--client-ca-file={}", ca.display()),
                // a /16: the scale benchmark creates hundreds of Services (a /24 runs out at 254)
                "--service-cluster-ip-range=10.0.0.0/16".into(),
                "--allow-privileged=true".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--v=0".into(),
            ]
            .into_iter()
            .chain(extra_apiserver_args.iter().map(|a| a.to_string()))
            .collect::<Vec<String>>(),
            &api_log,
        ) {
            Ok(c) => c,
            Err(e) => {
                let _ = etcd.kill();
                return Err(e);
            }
        };
        let kubeconfig = d.join("kubeconfig.yaml");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: duo-testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: duo-testenv\n  context:\n    cluster: duo-testenv\n    user: admin\n    namespace: default\ncurrent-context: duo-testenv\n",
            b64(&pki.ca_pem),
            b64(&pki.admin_cert),
            b64(&pki.admin_key),
        );
        let mut f = fs::File::create(&kubeconfig)?;
        f.write_all(text.as_bytes())?;
        let mut env = TestEnv {
            etcd,
            apiserver,
            dir,
            kubeconfig,
            server,
        };
        env.wait_ready(Duration::from_secs(90)).await.map_err(|e| {
            anyhow!(
                "{e}\n--- kube-apiserver log (tail) ---\n{}\n--- etcd log (tail) ---\n{}",
                tail(&api_log),
                tail(&etcd_log)
            )
        })?;
        Ok(env)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::from("not tried");
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.apiserver.try_wait() {
                bail!("kube-apiserver exited with {status}");
            }
            if let Ok(Some(status)) = self.etcd.try_wait() {
                bail!("etcd exited with {status}");
            }
            match self.client().await {
                Ok(client) => {
                    let req = http::Request::get("/readyz").body(Vec::new())?;
                    match client.request_text(req).await {
                        Ok(t) if t.trim() == "ok" => {
                            let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                                kube::Api::all(client);
                            match ns.get_opt("default").await {
                                Ok(Some(_)) => return Ok(()),
                                Ok(None) => last = "namespace default not created yet".into(),
                                Err(e) => last = e.to_string(),
                            }
                        }
                        Ok(t) => last = t,
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("kube-apiserver not ready after {timeout:?}: {last}")
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        config.read_timeout = Some(Duration::from_secs(295));
        Ok(kube::Client::try_from(config)?)
    }

    /// Folder of the environment (certificates, logs, kubeconfig); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` with a bound token from
    /// the TokenRequest API (valid `seconds`), so that a process runs with exactly that account's RBAC,
    /// as it would in a pod. Returns its path (inside [`TestEnv::dir`]).
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        seconds: i64,
    ) -> anyhow::Result<PathBuf> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                expiration_seconds: Some(seconds),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = api
            .create_token_request(name, &Default::default(), &request)
            .await
            .with_context(|| format!("token for ServiceAccount {namespace}/{name}"))?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| anyhow!("TokenRequest for {namespace}/{name} returned no token"))?;
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{namespace}-{name}.yaml"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: duo-testenv\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: duo-testenv\n    user: sa\n    namespace: {namespace}\ncurrent-context: sa\n",
            self.server,
            self.dir.path().join("ca.crt").display(),
        );
        fs::write(&path, text)?;
        Ok(path)
    }

    /// Installs every `*.yaml` CRD in `dir` with server-side apply and waits until each is Established.
    pub async fn install_crds(&self, dir: &Path) -> anyhow::Result<()> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        use kube::api::{Patch, PatchParams};
        let client = self.client().await?;
        let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client);
        let mut names = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        {
            let text = fs::read_to_string(&path)?;
            let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
                .with_context(|| format!("{} is not a CRD", path.display()))?;
            let name = crd
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("{}: CRD without a name", path.display()))?;
            api.patch(
                &name,
                &PatchParams::apply("duo-testenv").force(),
                &Patch::Apply(&crd),
            )
            .await?;
            names.push(name);
        }
        let start = Instant::now();
        for name in names {
            loop {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("CRD {name} not Established after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}
