//! Scale benchmark (not a test): N DuoGateways on a real kube-apiserver, reconciled by the real
//! `duo-operator run` process. Reports the time from the first apply until every gateway has all its
//! children and a current status (observedGeneration = generation, Degraded=False, all communities of
//! its group resolved), and the operator's peak resident memory (VmHWM).
//!
//! Run: `scripts/bench-operator-scale.sh [N]` (default 500). Gateways come in groups of 10 that select
//! each other's published DuoCommunities (a hosting provider whose hospitals find each other), so each
//! gateway ends with 9 communities in its configuration.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duo_operator::crd::*;
use duo_runtime::pki::generate::{Ca, ServerCertSpec};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

const NS: &str = "bench";
const GROUP: usize = 10;

fn gateway(i: usize) -> DuoGateway {
    let ura = format!("{:08}", 10_000_000 + i);
    let group = format!("g{}", i / GROUP);
    let mut gw = DuoGateway::new(
        &format!("h{i:04}"),
        DuoGatewaySpec {
            organization: GatewayOrganization {
                ura: ura.clone(),
                name: format!("Ziekenhuis {i}"),
                facility_type: "V6".into(),
                home_community_id: format!("urn:oid:2.16.528.1.1007.3.3.{ura}.1"),
            },
            connection: Connection {
                xds: Some(XdsConnection {
                    registry_url: format!("https://registry.h{i}.example/xds/iti18"),
                    repositories: vec![UniqueEndpoint {
                        unique_id: format!("1.2.3.{i}.1"),
                        url: format!("https://repo.h{i}.example/iti43"),
                    }],
                    imaging_document_sources: vec![UniqueEndpoint {
                        unique_id: format!("1.2.3.{i}.2"),
                        url: format!("https://pacs.h{i}.example/rad69"),
                    }],
                    deadline_ms: 10_000,
                }),
                tlb: None,
            },
            mitz: Some(MitzRef {
                connection_name: "mitz".into(),
            }),
            consent: Consent::default(),
            trusted_front_ends: Vec::new(),
            localization: if i.is_multiple_of(2) {
                Localization::Mitz
            } else {
                Localization::AllCommunities
            },
            tls: GatewayTls {
                secret_name: format!("h{i:04}-tls"),
                trust_bundle: TrustBundleRef {
                    config_map: Some(KeyRef {
                        name: "duo-trust".into(),
                        key: "ca.crt".into(),
                    }),
                    secret: None,
                },
            },
            communities: Some(CommunitySelection {
                selector: LabelSelector {
                    match_labels: Some([("bench/group".to_owned(), group.clone())].into()),
                    match_expressions: None,
                },
                namespaces: None,
            }),
            publish: Publish {
                enabled: true,
                labels: [("bench/group".to_owned(), group)].into(),
                address: None,
            },
            registration: Default::default(),
            replicas: 2,
            resources: None,
            image: None,
            workload: Default::default(),
            service: Default::default(),
            allow_plain_http: false,
            xua: Default::default(),
            tls_policy: Default::default(),
            revocation: Default::default(),
        },
    );
    gw.metadata.namespace = Some(NS.into());
    gw
}

fn tls_secret(name: &str, cert: &str, key: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.type_ = Some("kubernetes.io/tls".into());
    s.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(cert.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
        ]
        .into(),
    );
    s
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn names<K>(api: &Api<K>) -> anyhow::Result<HashSet<String>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    Ok(api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|o| o.name_any())
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(500);
    let tools = PathBuf::from(
        std::env::var_os(duo_testenv::TOOLS_ENV)
            .ok_or_else(|| anyhow::anyhow!("DUO_TOOLS_BIN is not set: source .tools/env"))?,
    );
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf();
    let operator_bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("duo-operator"))
        .expect("target dir");
    anyhow::ensure!(
        operator_bin.is_file(),
        "{} missing: cargo build --release --bin duo-operator",
        operator_bin.display()
    );

    let env = duo_testenv::TestEnv::start(&tools).await?;
    env.install_crds(&repo.join("crds")).await?;
    let client: Client = env.client().await?;
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let pp = PatchParams::apply("bench").force();

    // referenced material: one CA, one Mitz connection, one UZI certificate per hospital
    let ca = Ca::new("bench CA")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut trust = ConfigMap::default();
    trust.metadata.name = Some("duo-trust".into());
    trust.data = Some([("ca.crt".to_owned(), ca.cert_pem.clone())].into());
    Api::<ConfigMap>::namespaced(client.clone(), NS)
        .patch("duo-trust", &pp, &Patch::Apply(&trust))
        .await?;
    let mut mspec = ServerCertSpec::uzi(
        "12345678".parse()?,
        "Hosting",
        &["client.hosting.example"],
        365,
    );
    mspec.ura = None;
    let mc = ca.issue(&mspec)?;
    secrets
        .patch(
            "mitz-client",
            &pp,
            &Patch::Apply(&tls_secret("mitz-client", &mc.cert_pem, &mc.key_pem)),
        )
        .await?;
    let mut mca = Secret::default();
    mca.metadata.name = Some("mitz-ca".into());
    mca.data = Some(
        [(
            "ca.crt".to_owned(),
            ByteString(ca.cert_pem.clone().into_bytes()),
        )]
        .into(),
    );
    secrets.patch("mitz-ca", &pp, &Patch::Apply(&mca)).await?;
    let mitz = MitzConnection::new(
        "mitz",
        MitzConnectionSpec {
            closed_question_url: "https://mitz.example/geslotenautorisatievraag/xacml3".into(),
            open_question_url: Some("https://mitz.example/openautorisatievraag".into()),
            subscription_url: None,
            client_certificate_secret_name: "mitz-client".into(),
            trust_bundle: TrustBundleRef {
                config_map: None,
                secret: Some(KeyRef {
                    name: "mitz-ca".into(),
                    key: "ca.crt".into(),
                }),
            },
            deadline_ms: 3000,
            cache_seconds: 60,
            notification_client_names: Vec::new(),
            allow_plain_http: false,
            crl_urls: Vec::new(),
        },
    );
    Api::<MitzConnection>::namespaced(client.clone(), NS)
        .patch("mitz", &pp, &Patch::Apply(&mitz))
        .await?;
    let certs: Vec<_> = (0..n)
        .map(|i| {
            ca.issue(&ServerCertSpec::uzi(
                format!("{:08}", 10_000_000 + i).parse().expect("ura"),
                "h",
                &[&format!("duo.h{i}.example")],
                365,
            ))
        })
        .collect::<Result<_, _>>()?;
    futures::stream::iter(certs.iter().enumerate())
        .map(|(i, c)| {
            let secrets = secrets.clone();
            let pp = pp.clone();
            async move {
                let name = format!("h{i:04}-tls");
                secrets
                    .patch(
                        &name,
                        &pp,
                        &Patch::Apply(&tls_secret(&name, &c.cert_pem, &c.key_pem)),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;

    // the operator, as a separate process so its memory is its own
    let log = env.dir().join("operator.log");
    let mut operator = Command::new(&operator_bin)
        .args([
            "run",
            "--metrics-addr=127.0.0.1:0",
            "--lease-namespace",
            NS,
            "--identity",
            "bench",
        ])
        .env("KUBECONFIG", &env.kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(std::fs::File::create(&log)?))
        .stderr(Stdio::null())
        .spawn()?;
    let pid = operator.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = vm_hwm_kib(pid).unwrap_or(0);

    let gws: Api<DuoGateway> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let gws = gws.clone();
            let pp = pp.clone();
            async move {
                gws.patch(&format!("h{i:04}"), &pp, &Patch::Apply(&gateway(i)))
                    .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let applied = start.elapsed();
    let expected_communities = |i: usize| (GROUP.min(n - (i / GROUP) * GROUP) - 1) as i32;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), NS);
    let communities: Api<DuoCommunity> = Api::namespaced(client.clone(), NS);
    let timeout = Duration::from_secs(600);
    let ready = loop {
        let list = gws.list(&ListParams::default()).await?;
        let (d, c, s, p, dc) = (
            names(&deps).await?,
            names(&cms).await?,
            names(&svcs).await?,
            names(&nps).await?,
            names(&communities).await?,
        );
        let ready = list
            .items
            .iter()
            .filter(|g| {
                let i: usize = g.name_any()[1..].parse().unwrap_or(usize::MAX);
                let st = g.status.as_ref();
                let current = st.is_some_and(|s| s.observed_generation == g.metadata.generation);
                let applied = st.is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Degraded" && c.status == "False")
                });
                let resolved =
                    st.is_some_and(|s| i < n && s.communities == expected_communities(i));
                let child = format!("duo-{}", g.name_any());
                current
                    && applied
                    && resolved
                    && d.contains(&child)
                    && s.contains(&child)
                    && p.contains(&child)
                    && c.contains(&format!("{child}-config"))
                    && dc.contains(&g.name_any())
            })
            .count();
        if ready == n || start.elapsed() > timeout {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let elapsed = start.elapsed();
    let peak_kib = vm_hwm_kib(pid).unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = operator.wait();
    println!("gateways:              {n} ({ready} complete)");
    println!("apply of all gateways: {:.1} s", applied.as_secs_f64());
    println!("all children + status: {:.1} s", elapsed.as_secs_f64());
    println!(
        "operator peak RSS:     {:.1} MiB (idle after start: {:.1} MiB)",
        peak_kib as f64 / 1024.0,
        idle_kib as f64 / 1024.0
    );
    anyhow::ensure!(
        ready == n,
        "only {ready} of {n} gateways complete after {timeout:?}; operator log: {}",
        log.display()
    );
    Ok(())
}
