//! `duo-testbed`: the test kit's binary (never in the container image).
//!
//! `duo-testbed demo [--once] [--json]` is the main job on the embedded default (the README's first
//! command; see `duo_testkit::demo`). `duo-testbed mitz-sim` runs the Mitz simulator over mutual TLS until
//! interrupted (consents file format, admin endpoints and notifications: `duo_testkit::sim::mitz`); it
//! reloads the consents file when it changes (polled every second) and notifies the registrations whose
//! rules changed.
//!
//! `duo-testbed interop` sets up the surroundings of a real `duo-gateway serve` process for tests written
//! outside Rust (the zeep interop suite in `interop/`).
//!
//! `duo-testbed interop --dir <DIR> --fixture <JSON>` writes a throwaway PKI into `DIR`, starts over
//! mutual TLS on loopback the hospital's own community (an XDS-I.b affinity domain simulator seeded with
//! the fixture's entries, documents and instances) and a remote community (a TLB node simulator seeded
//! with the fixture's `remote` entries), writes the gateway's configuration `DIR/gateway.yaml` (consent
//! `permitAll`, localisation `allCommunities`: no Mitz in this bed), prints one JSON line naming the
//! files and identities, and serves until its standard input closes (or it is killed). The caller then
//! runs `duo-gateway serve --config DIR/gateway.yaml`.
//!
//! Fixture (the interop suite's `fixture_data`): `{"home": "urn:oid:…", "entries": [DocumentEntry…],
//! "documents": [{"repositoryUniqueId", "documentUniqueId", "mimeType", "contentBase64"}],
//! "instances": [{"sourceUniqueId", "studyInstanceUid", "seriesInstanceUid", "sopInstanceUid",
//! "sopClassUid", "transferSyntaxUid", "contentBase64"}], "remote": {"home": "urn:oid:…",
//! "entries": [DocumentEntry…]}}`. Entries and documents are stored as given; documents and instances
//! are retrievable whether or not an entry names them.
//!
//! Exit status 1 with a one-line reason when the fixture or the set-up fails.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use duo_runtime::config::{
    CommunityOrganization, Endpoint as EndpointConfig, LocalBackend, RemoteCommunity,
    XdsBackendConfig,
};
use duo_runtime::dicom::InstanceInfo;
use duo_runtime::ihe::retrieve::decode_base64;
use duo_runtime::model::{DocumentEntry, HomeCommunityId};
use duo_runtime::tls::TlsMaterial;
use duo_testkit::sim::bed::{Hospital, Pki, test_config};
use duo_testkit::sim::serve::{RunningSim, Transport};
use duo_testkit::sim::store::{Store, StoredDocument};
use duo_testkit::sim::tlb::{self, TlbConfig, TlbSim};
use duo_testkit::sim::xds::{self, XdsConfig, XdsSim};
use serde::Deserialize;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "duo-testbed",
    about = "The DUO test kit: the demo, the Mitz simulator, and simulated communities around a duo-gateway process"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on the embedded default: four hospitals (XDS, XDS, TLB, and one without consent) with
    /// their own gateways on loopback; a timeline query, a verified RAD-75 retrieve, the audit trail.
    Demo {
        /// Exit after the run instead of serving.
        #[arg(long)]
        once: bool,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run the Mitz simulator (closed question, open question, subscriptions, consent notifications)
    /// over mutual TLS until interrupted; the consents file is reloaded when it changes. The file format
    /// and the admin endpoints are documented in `duo_testkit::sim::mitz`.
    MitzSim {
        /// YAML file of consents, locations and faults.
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8444.
        #[arg(long)]
        listen: SocketAddr,
        /// Server certificate chain, PEM.
        #[arg(long)]
        cert: PathBuf,
        /// Server private key, PEM.
        #[arg(long)]
        key: PathBuf,
        /// CA certificates, PEM, that clients' certificates must chain to.
        #[arg(long)]
        trust_bundle: PathBuf,
    },
    /// Simulators and a gateway configuration for the zeep interop suite.
    Interop {
        /// Folder for certificates, keys, the gateway configuration and audit file (must exist).
        #[arg(long)]
        dir: PathBuf,
        /// JSON fixture (see the binary's documentation).
        #[arg(long)]
        fixture: PathBuf,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    repository_unique_id: String,
    document_unique_id: String,
    mime_type: String,
    content_base64: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    source_unique_id: String,
    study_instance_uid: String,
    series_instance_uid: String,
    sop_instance_uid: String,
    #[serde(default)]
    sop_class_uid: String,
    transfer_syntax_uid: String,
    content_base64: String,
}

#[derive(Deserialize)]
struct Remote {
    home: HomeCommunityId,
    #[serde(default)]
    entries: Vec<DocumentEntry>,
}

#[derive(Deserialize)]
struct Fixture {
    home: HomeCommunityId,
    #[serde(default)]
    entries: Vec<DocumentEntry>,
    #[serde(default)]
    documents: Vec<Document>,
    #[serde(default)]
    instances: Vec<Instance>,
    remote: Remote,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn seed_local(store: &Store, f: &Fixture) -> Result<(Vec<String>, Vec<String>), String> {
    for e in &f.entries {
        store.add_entry(e.clone());
    }
    let mut repositories: Vec<String> = f
        .entries
        .iter()
        .map(|e| e.repository_unique_id.clone())
        .collect();
    for d in &f.documents {
        let bytes = decode_base64(&d.content_base64)
            .map_err(|e| format!("document {}: {e}", d.document_unique_id))?;
        store.add_content(
            &d.repository_unique_id,
            &d.document_unique_id,
            StoredDocument {
                mime_type: d.mime_type.clone(),
                bytes: Bytes::from(bytes),
            },
        );
        repositories.push(d.repository_unique_id.clone());
    }
    let mut sources = Vec::new();
    for i in &f.instances {
        let bytes = decode_base64(&i.content_base64)
            .map_err(|e| format!("instance {}: {e}", i.sop_instance_uid))?;
        let info = InstanceInfo {
            sop_class_uid: if i.sop_class_uid.is_empty() {
                "1.2.840.10008.5.1.4.1.1.2".into()
            } else {
                i.sop_class_uid.clone()
            },
            sop_instance_uid: i.sop_instance_uid.clone(),
            study_instance_uid: i.study_instance_uid.clone(),
            series_instance_uid: i.series_instance_uid.clone(),
            transfer_syntax_uid: i.transfer_syntax_uid.clone(),
            is_image: true,
            ..InstanceInfo::default()
        };
        store
            .add_instance(&i.source_unique_id, info, Bytes::from(bytes))
            .map_err(|e| format!("instance {}: {e}", i.sop_instance_uid))?;
        sources.push(i.source_unique_id.clone());
    }
    repositories.sort();
    repositories.dedup();
    sources.sort();
    sources.dedup();
    Ok((repositories, sources))
}

fn url(sim: &RunningSim, path: &str) -> String {
    // the simulators' certificates name `localhost`
    format!("https://localhost:{}{path}", sim.addr().port())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

async fn interop(dir: PathBuf, fixture: PathBuf) -> Result<(), String> {
    duo_runtime::tls::install_crypto_provider();
    let text = std::fs::read(&fixture).map_err(|e| format!("{}: {e}", fixture.display()))?;
    let f: Fixture =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", fixture.display()))?;
    let pki = Pki::new(&dir, "DUO interop test CA")?;
    let gateway = Hospital::new("13700201", "Interop hospital", &f.home.to_string());
    let remote = Hospital::new(
        "13700202",
        "Interop remote community",
        &f.remote.home.to_string(),
    );
    let gateway_tls = pki.hospital("gateway", &gateway.ura, &gateway.name)?;
    // the remote community's gateway identity: what zeep presents acting as a remote initiating gateway
    let peer_tls = pki.hospital("peer", &remote.ura, &remote.name)?;
    // a document consumer of the hospital (a trusted front end of its gateway)
    let (consumer_tls, consumer) = pki.front_end(
        "consumer",
        "Interop document consumer",
        &["consumer.interop.test"],
    )?;
    let sim_tls = pki.plain("sim", "Interop simulators", &["localhost"])?;
    let sim_material = TlsMaterial::load(&sim_tls).map_err(err)?;

    let local = XdsSim::new(XdsConfig::default());
    let (repositories, sources) = seed_local(&local.store, &f)?;
    let node = TlbSim::with_store(
        TlbConfig::new(f.remote.home.clone()),
        Arc::new(Store::new()),
    );
    for e in &f.remote.entries {
        node.store.add_entry(e.clone());
    }
    let transport = Transport::mutual_tls(&sim_material).map_err(err)?;
    let local_run = local.start(transport.clone()).await.map_err(err)?;
    let node_run = node.start(transport).await.map_err(err)?;

    let mut config = test_config(
        &gateway,
        gateway_tls.clone(),
        LocalBackend::Xds(XdsBackendConfig {
            registry_url: url(&local_run, xds::paths::ITI18),
            repositories: repositories
                .iter()
                .map(|r| EndpointConfig {
                    unique_id: r.clone(),
                    url: url(&local_run, xds::paths::ITI43),
                })
                .collect(),
            imaging_document_sources: sources
                .iter()
                .map(|s| EndpointConfig {
                    unique_id: s.clone(),
                    url: url(&local_run, xds::paths::RAD69),
                })
                .collect(),
            deadline_ms: 10_000,
        }),
        &dir.join("audit.jsonl"),
        &[consumer],
    );
    config.allow_plain_http = false;
    config.communities = vec![RemoteCommunity {
        home_community_id: f.remote.home.clone(),
        name: remote.name.clone(),
        organizations: vec![CommunityOrganization {
            ura: remote.ura.clone(),
            name: remote.name.clone(),
        }],
        query_url: url(&node_run, tlb::paths::ITI38),
        retrieve_url: url(&node_run, tlb::paths::ITI39),
        imaging_retrieve_url: url(&node_run, tlb::paths::RAD75),
        connect_to: None,
        certificate_ura: Some(remote.ura.clone()),
        trusted_issuers: Vec::new(),
        deadline_ms: 10_000,
        fronted_communities: Vec::new(),
    }];
    config.validate().map_err(err)?;
    let config_file = dir.join("gateway.yaml");
    std::fs::write(&config_file, config.to_yaml())
        .map_err(|e| format!("{}: {e}", config_file.display()))?;
    println!(
        "{}",
        json!({
            "config": path_str(&config_file),
            "ca": path_str(&pki.ca_file),
            "consumer": {"cert": path_str(&consumer_tls.cert_file), "key": path_str(&consumer_tls.key_file)},
            "peer": {"cert": path_str(&peer_tls.cert_file), "key": path_str(&peer_tls.key_file)},
            "home": f.home.to_string(),
            "remoteHome": f.remote.home.to_string(),
            "audit": path_str(&dir.join("audit.jsonl")),
            "local": local_run.base_url(),
            "remote": node_run.base_url(),
        })
    );
    // serve until the caller closes our standard input
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await;
    local_run.stop().await;
    node_run.stop().await;
    Ok(())
}

/// `mitz-sim`: the simulator from a consents file and PEM files, until Ctrl-C. The consents file is
/// polled every second: when it changed, its rules replace the live ones and the registrations concerned
/// are notified; a file that no longer parses is reported on standard error and the live rules are kept.
async fn mitz_sim(
    config: PathBuf,
    listen: SocketAddr,
    cert_file: PathBuf,
    key_file: PathBuf,
    trust_bundle_file: PathBuf,
) -> Result<(), String> {
    use duo_testkit::sim::mitz;
    duo_runtime::tls::install_crypto_provider();
    // watched from before it is read: a change in between is reloaded at the first poll
    let mut watch = mitz::ConsentsFileWatch::new(&config);
    let cfg = mitz::MitzSimConfig::load(&config).map_err(|e| e.to_string())?;
    let tls = TlsMaterial::load(&duo_runtime::config::TlsConfig {
        cert_file,
        key_file,
        trust_bundle_file,
    })
    .map_err(|e| e.to_string())?;
    let sim = mitz::start(cfg, listen, &tls)
        .await
        .map_err(|e| e.to_string())?;
    println!("mitz-sim listening on {}", sim.base_url());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = &mut ctrl_c => {
                r.map_err(|e| e.to_string())?;
                break;
            }
            _ = tick.tick() => match watch.poll(&sim) {
                Ok(None) => {}
                Ok(Some((changes, deliveries))) => println!(
                    "mitz-sim: {} reloaded: {changes} rule(s) changed, {deliveries} notification(s) sent",
                    config.display()
                ),
                Err(e) => eprintln!("mitz-sim: not reloaded, the previous rules stay: {e}"),
            },
        }
    }
    sim.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    duo_runtime::tune_allocator();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duo-testbed: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo { once, json } => {
            if std::env::var_os("RUST_LOG").is_some() {
                duo_runtime::init_tracing();
            }
            let code = rt.block_on(duo_testkit::demo::run(duo_testkit::demo::DemoOptions {
                once,
                json,
            }));
            return ExitCode::from(code as u8);
        }
        Command::MitzSim {
            config,
            listen,
            cert,
            key,
            trust_bundle,
        } => rt
            .block_on(mitz_sim(config, listen, cert, key, trust_bundle))
            .map_err(|e| format!("mitz-sim: {e}")),
        Command::Interop { dir, fixture } => rt.block_on(interop(dir, fixture)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duo-testbed: {e}");
            ExitCode::FAILURE
        }
    }
}
