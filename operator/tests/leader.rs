//! Two `duo-operator run` processes against a real kube-apiserver: exactly one holds the Lease and
//! reconciles; SIGTERM makes the leader finish, release the Lease and exit 0 (graceful shutdown), and
//! the other takes over. Logs are JSON lines.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use duo_operator::crd::{KeyRef, MitzConnection, MitzConnectionSpec, TrustBundleRef};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `duo_operator_leader` of the process listening on `port`, `None` when it does not answer.
fn leader_gauge(port: u16) -> Option<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("duo_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

fn start(kubeconfig: &std::path::Path, identity: &str, port: u16, log: &std::path::Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_duo-operator"))
        .args([
            "run",
            "--lease-namespace",
            "duo-system",
            "--lease-seconds",
            "4",
            "--identity",
            identity,
        ])
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .env("KUBECONFIG", kubeconfig)
        .env("DUO_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("clone")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start duo-operator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_graceful_handover() {
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, "duo-system").await;
    namespace(&client, "hosp").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (pa, pb) = (free_port(), free_port());
    let (la, lb) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = start(&env.kubeconfig, "replica-a", pa, &la);
    let mut b = start(&env.kubeconfig, "replica-b", pb, &lb);

    let a_leads = wait_for("one leader", Duration::from_secs(30), || async {
        match (leader_gauge(pa), leader_gauge(pb)) {
            (Some(1), Some(0)) => Some(true),
            (Some(0), Some(1)) => Some(false),
            (Some(1), Some(1)) => panic!("two leaders at once"),
            _ => None,
        }
    })
    .await;
    let (leader_port, leader, follower, follower_port, leader_log, leader_id, follower_id) =
        if a_leads {
            (pa, &mut a, &mut b, pb, la.clone(), "replica-a", "replica-b")
        } else {
            (pb, &mut b, &mut a, pa, lb.clone(), "replica-b", "replica-a")
        };
    // stays single-leader for a few renewals
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            (leader_gauge(leader_port), leader_gauge(follower_port)),
            (Some(1), Some(0))
        );
    }
    let lease = Api::<Lease>::namespaced(client.clone(), "duo-system")
        .get("duo-operator")
        .await
        .expect("Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(leader_id)
    );

    // the leader reconciles: a MitzConnection without its Secret gets a status saying so
    let mitz = MitzConnection::new(
        "mitz",
        MitzConnectionSpec {
            closed_question_url: "https://mitz.example/geslotenautorisatievraag/xacml3".into(),
            open_question_url: None,
            subscription_url: None,
            client_certificate_secret_name: "absent".into(),
            trust_bundle: TrustBundleRef {
                config_map: None,
                secret: Some(KeyRef {
                    name: "absent-ca".into(),
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
    let mitz_api: Api<MitzConnection> = Api::namespaced(client.clone(), "hosp");
    apply(&mitz_api, "mitz", &mitz).await;
    wait_for(
        "MitzConnection reports SecretMissing",
        Duration::from_secs(30),
        || async {
            let m = mitz_api.get("mitz").await.ok()?;
            m.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "SecretMissing")
                .then_some(())
        },
    )
    .await;

    // SIGTERM: the leader exits 0 and releases the Lease; the follower takes over
    let pid = leader.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = wait_for("leader exits", Duration::from_secs(30), || {
        let s = leader.try_wait().expect("try_wait");
        async move { s }
    })
    .await;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    wait_for(
        "follower becomes leader",
        Duration::from_secs(30),
        || async { (leader_gauge(follower_port) == Some(1)).then_some(()) },
    )
    .await;
    let lease = Api::<Lease>::namespaced(client.clone(), "duo-system")
        .get("duo-operator")
        .await
        .expect("Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(follower_id)
    );

    let log = std::fs::read_to_string(&leader_log).expect("leader log");
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(log.contains("releasing the Lease"), "{log}");
    let _ = follower.kill();
    let _ = follower.wait();
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_in_use_exits_non_zero_with_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = Command::new(env!("CARGO_BIN_EXE_duo-operator"))
        .args(["run", "--log-format", "text"])
        .arg(format!("--metrics-addr={addr}"))
        // no cluster needed: the listener comes first
        .env("KUBECONFIG", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("run duo-operator");
    assert!(!out.status.success(), "exit status {:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on --metrics-addr") && err.contains(&addr.to_string()),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_cannot_renew_stops_before_its_lease_is_others() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    use kube::api::{DeleteParams, PostParams};
    let Some(env) = env().await else { return };
    let client = env.client().await.expect("client");
    namespace(&client, "duo-system").await;
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some("op".into());
    Api::<ServiceAccount>::namespaced(client.clone(), "duo-system")
        .create(&PostParams::default(), &sa)
        .await
        .expect("sa");
    let binding = ClusterRoleBinding {
        metadata: kube::core::ObjectMeta {
            name: Some("op-admin".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "op".into(),
            namespace: Some("duo-system".into()),
            ..Default::default()
        }]),
    };
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let kubeconfig = env
        .service_account_kubeconfig("duo-system", "op", 3600)
        .await
        .expect("kubeconfig");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log = dir.path().join("op.log");
    let mut op = start(&kubeconfig, "replica-a", port, &log);
    wait_for("leader", Duration::from_secs(30), || async {
        (leader_gauge(port) == Some(1)).then_some(())
    })
    .await;
    // renewals now fail with 403
    bindings
        .delete("op-admin", &DeleteParams::default())
        .await
        .expect("unbind");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = op.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = op.kill();
            panic!(
                "still running 30 s after renewals began to fail:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("not renewed before it expired"), "{text}");
}
