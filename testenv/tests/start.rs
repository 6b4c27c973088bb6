//! The harness starts a real API server that serves the pinned version, stores objects in etcd, and
//! cleans up after itself.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_a_real_api_server() {
    let Some(tools) = duo_testenv::tools_bin() else {
        return;
    };
    let env = duo_testenv::TestEnv::start(&tools).await.expect("start");
    let client = env.client().await.expect("client");
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.git_version, "v1.36.3");
    // namespaces are served from etcd: create one and read it back
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some("probe".into());
    api.create(&Default::default(), &ns).await.expect("create");
    assert!(api.get_opt("probe").await.expect("get").is_some());
    assert!(env.kubeconfig.is_file());
    let dir = env.dir().to_path_buf();
    drop(env);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!dir.exists(), "data folder removed on drop");
}
