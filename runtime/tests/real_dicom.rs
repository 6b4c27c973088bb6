//! Real input (issue 7 item 1): the DICOM files shipped inside pydicom, a real PACS (Orthanc with its
//! DICOMweb plugin) and two of our gateways.
//!
//! 1. pydicom's `data/test_files` are loaded with [`duo_testkit::dicom::corpus::load_dir`]: every file
//!    it cannot read, or that has no Study Instance UID, is reported with its reason and skipped.
//! 2. The loaded instances get the test patient's BSN as Patient ID (dcmtk `dcmodify`, so a PACS can be
//!    queried by BSN) and are split into two hospitals: hospital X publishes its studies into an XDS-I.b
//!    affinity domain simulator (KOS manifests and DocumentEntries built by our code), hospital P stores
//!    its studies in an Orthanc started here on loopback (generated JSON configuration, free ports, its
//!    own storage folder, DICOMweb plugin), uploaded over Orthanc's REST API. One study is in both.
//! 3. Gateway X (local backend `xds`) knows gateway P (local backend `dicomweb`, Orthanc) as a
//!    community. A timeline query at X spans both: every study once, the shared one with two sources,
//!    series and instance counts from the manifests (P's built on demand from QIDO-RS).
//! 4. A RAD-69 to X's imaging gateway for P's studies (references taken from the timeline) goes X → RAD-75
//!    → P → WADO-RS → Orthanc, and returns exactly the bytes Orthanc holds: SHA-256 compared with
//!    Orthanc's own `GET /instances/{id}/file`.
//!
//! Needs `DUO_PYTHON` (pydicom), Orthanc, its DICOMweb plugin and dcmtk (`scripts/setup.sh` installs
//! them). Without them the test says why and skips; with `CI` or `DUO_REQUIRE_TOOLS=1` it fails.

mod common;
mod sim_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duo_runtime::config::{
    CommunityOrganization, DicomwebBackendConfig, Endpoint as EndpointConfig, LocalBackend,
    RemoteCommunity, TrustedIssuerConfig, XdsBackendConfig,
};
use duo_runtime::ihe::retrieve::{
    Content, DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::write_soap;
use duo_runtime::model::{AuthorInstitution, Bsn};
use duo_runtime::server::run;
use duo_testkit::dicom::corpus::{CorpusOptions, LoadReport, load_dir};
use duo_testkit::dicom::xds::ReportFormat;
use duo_testkit::sim::bed::{Hospital, Pki, test_config};
use duo_testkit::sim::seed::{CommunitySeed, seed_instances, sha256_hex};
use duo_testkit::sim::serve::Transport;
use duo_testkit::sim::xds::{self, XdsConfig, XdsSim};
use serde_json::Value;
use sim_support as s;

const BSN: &str = "999911120";
const X_HOME: &str = "urn:oid:2.16.528.1.1007.3.3.10000071.1";
const P_HOME: &str = "urn:oid:2.16.528.1.1007.3.3.10000072.1";
const X_REPO: &str = "2.16.528.1.1007.3.3.10000071.10";
const X_IDS: &str = "2.16.528.1.1007.3.3.10000071.11";
const P_REPO: &str = "2.16.528.1.1007.3.3.10000072.10";

fn required() -> bool {
    let ci = std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false" && v != "0")
        .unwrap_or(false);
    ci || std::env::var("DUO_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// `Some(path)` when the file exists; otherwise a skip message (or a failure when tools are required).
fn need(what: &str, p: Option<PathBuf>) -> Option<PathBuf> {
    match p {
        Some(p) if p.is_file() => Some(p),
        _ => {
            assert!(
                !required(),
                "{what} is required (CI or DUO_REQUIRE_TOOLS=1): run scripts/setup.sh"
            );
            eprintln!("SKIP real_dicom: {what} not available (run scripts/setup.sh)");
            None
        }
    }
}

fn env_path(var: &str, default: &str) -> Option<PathBuf> {
    Some(
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default)),
    )
}

fn pydicom_test_files(python: &Path) -> PathBuf {
    let out = Command::new(python)
        .arg("-c")
        .arg("import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pydicom not importable from DUO_PYTHON: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An Orthanc process, killed when dropped.
struct Orthanc {
    child: Child,
    http: u16,
    log: PathBuf,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Orthanc {
    /// Starts Orthanc with a generated configuration (free HTTP and DICOM ports on loopback, storage
    /// under `dir`, DICOMweb plugin) and waits until its REST API answers.
    async fn start(bin: &Path, plugin: &Path, dir: &Path) -> Orthanc {
        let storage = dir.join("orthanc-storage");
        std::fs::create_dir_all(&storage).unwrap();
        let http = free_port();
        let config = serde_json::json!({
            "Name": "duo-real-dicom",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": http,
            "DicomPort": free_port(),
            "DicomAet": "DUOTEST",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpCompressionEnabled": false,
            "StorageCompression": false,
            "OverwriteInstances": false,
            "Plugins": [plugin],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": false },
        });
        let cfg = dir.join("orthanc.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = dir.join("orthanc.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(&cfg)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let o = Orthanc { child, http, log };
        let client = s::client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(o.url("/system")).send().await
                && r.status().is_success()
            {
                // the plugin must be loaded
                let p = client.get(o.url("/plugins")).send().await.unwrap();
                let list: Vec<String> = p.json().await.unwrap();
                assert!(
                    list.iter().any(|x| x == "dicom-web"),
                    "DICOMweb plugin not loaded: {list:?}\n{}",
                    o.log_tail()
                );
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "Orthanc did not start:\n{}",
                o.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        t.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Copies every loaded instance (its first encoding) into `dir` and sets Patient ID to `bsn` with
/// dcmtk `dcmodify` (inserting it where a file has none). Returns files dcmodify refused, with why.
fn restamp_patient(
    report: &LoadReport,
    dir: &Path,
    dcmodify: &Path,
    bsn: &str,
) -> Vec<(PathBuf, String)> {
    let mut refused = Vec::new();
    let mut n = 0;
    for study in &report.studies {
        for p in &study.paths {
            n += 1;
            let to = dir.join(format!(
                "{n:04}-{}",
                p.file_name().unwrap().to_string_lossy()
            ));
            std::fs::copy(p, &to).unwrap();
            let out = Command::new(dcmodify)
                .arg("-nb")
                .arg("-i")
                .arg(format!("(0010,0020)={bsn}"))
                .arg(&to)
                .output()
                .unwrap();
            if !out.status.success() {
                refused.push((
                    p.clone(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                        .to_owned(),
                ));
                std::fs::remove_file(&to).unwrap();
            }
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydicom_files_through_xds_and_orthanc_gateways() {
    let Some(python) = need(
        "DUO_PYTHON (pydicom)",
        std::env::var_os("DUO_PYTHON").map(PathBuf::from),
    ) else {
        return;
    };
    let Some(orthanc_bin) = need("Orthanc", env_path("DUO_ORTHANC", "/usr/sbin/Orthanc")) else {
        return;
    };
    let Some(plugin) = need(
        "Orthanc DICOMweb plugin",
        env_path(
            "DUO_ORTHANC_DICOMWEB",
            "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
        ),
    ) else {
        return;
    };
    let Some(dcmodify) = s::tool("dcmodify") else {
        return;
    };
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let bsn: Bsn = BSN.parse().unwrap();

    // 1. pydicom's files as they are: unreadable ones and those without a study are reported, skipped
    let source = pydicom_test_files(&python);
    let original = load_dir(&source, &CorpusOptions::new(X_IDS)).unwrap();
    eprintln!("pydicom test files: {}", original.summary());
    let reason = |name: &str| {
        original
            .skipped
            .iter()
            .find(|k| k.path.file_name().is_some_and(|n| n == name))
            .map(|k| k.reason.clone())
            .unwrap_or_else(|| panic!("{name} was not skipped"))
    };
    assert!(reason("MR_truncated.dcm").starts_with("malformed"));
    assert!(reason("no_meta.dcm").starts_with("not a DICOM Part 10 file"));
    assert_eq!(reason("DICOMDIR"), "missing Study Instance UID (0020,000D)");
    assert!(reason("README.txt").starts_with("not a DICOM Part 10 file"));
    assert!(original.studies.len() >= 20, "{}", original.summary());

    // 2. the patient's BSN in every loaded file, then the load again from those files
    let stamped = dir.path().join("stamped");
    std::fs::create_dir(&stamped).unwrap();
    let refused = restamp_patient(&original, &stamped, &dcmodify, BSN);
    for (p, why) in &refused {
        eprintln!("dcmodify refused {}: {why}", p.display());
    }
    let report = load_dir(&stamped, &CorpusOptions::new(X_IDS)).unwrap();
    eprintln!("with the BSN as Patient ID: {}", report.summary());
    assert!(report.studies.len() >= 20, "{}", report.summary());
    for st in &report.studies {
        for i in &st.instances {
            assert_eq!(i.info.patient_id, BSN, "{}", i.info.sop_instance_uid);
        }
    }

    // hospital X: even studies (and study 0) in the XDS-I.b simulator, manifests built by our code
    let xds_sim = XdsSim::new(XdsConfig::default());
    let community = CommunitySeed::new(
        AuthorInstitution {
            name: "Ziekenhuis X".into(),
            ura: Some("10000071".parse().unwrap()),
        },
        "V6".parse().unwrap(),
        X_REPO,
        X_IDS,
        None,
    );
    let mut in_xds: BTreeSet<String> = BTreeSet::new();
    let mut not_published = Vec::new();
    for (k, st) in report.studies.iter().enumerate() {
        if k % 2 != 0 {
            continue;
        }
        match seed_instances(
            &xds_sim.store,
            &community,
            &bsn,
            st.instances.clone(),
            ReportFormat::Pdf,
            k as u64,
        ) {
            Ok(_) => {
                in_xds.insert(st.study_instance_uid.clone());
            }
            Err(e) => not_published.push(format!("{}: {e}", st.study_instance_uid)),
        }
    }
    for n in &not_published {
        eprintln!("not published in the XDS community: {n}");
    }
    assert!(
        in_xds.len() >= 10,
        "only {} studies published",
        in_xds.len()
    );
    let xds_run = xds_sim.start(Transport::Plain).await.unwrap();

    // hospital P: odd studies and study 0 in Orthanc (REST upload of the first encoding of each instance)
    let orthanc = Orthanc::start(&orthanc_bin, &plugin, dir.path()).await;
    let http = s::client();
    let mut orthanc_ids: BTreeMap<String, String> = BTreeMap::new(); // SOP Instance UID → Orthanc id
    let mut in_orthanc: BTreeMap<String, usize> = BTreeMap::new(); // study → instances stored
    let mut orthanc_refused = Vec::new();
    let shared = report.studies[0].study_instance_uid.clone();
    for (k, st) in report.studies.iter().enumerate() {
        if k % 2 == 0 && k != 0 {
            continue;
        }
        for inst in &st.instances {
            let bytes = inst.encodings[0].bytes.clone();
            let r = http
                .post(orthanc.url("/instances"))
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if status.is_success() && body["Status"] == "Success" {
                orthanc_ids.insert(
                    inst.info.sop_instance_uid.clone(),
                    body["ID"].as_str().unwrap().to_owned(),
                );
                *in_orthanc.entry(st.study_instance_uid.clone()).or_default() += 1;
            } else {
                orthanc_refused.push(format!(
                    "{} ({}): HTTP {status} {body}",
                    inst.info.sop_instance_uid, st.study_instance_uid
                ));
            }
        }
    }
    for r in &orthanc_refused {
        eprintln!("Orthanc refused {r}");
    }
    assert!(
        in_orthanc.len() >= 10,
        "only {} studies in Orthanc\n{}",
        in_orthanc.len(),
        orthanc.log_tail()
    );
    assert!(
        in_orthanc.contains_key(&shared) && in_xds.contains(&shared),
        "the shared study is in both"
    );

    // 3. the gateways
    let pki = Pki::new(dir.path(), "real DICOM test CA").unwrap();
    let x = Hospital::new("10000071", "Ziekenhuis X", X_HOME);
    let p = Hospital::new("10000072", "Beeldcentrum P", P_HOME);
    let (viewer, viewer_entry) = pki
        .front_end("viewer", "Viewer of X", &["viewer.x.test"])
        .unwrap();
    let mut x_cfg = test_config(
        &x,
        pki.hospital("x", &x.ura, &x.name).unwrap(),
        LocalBackend::Xds(XdsBackendConfig {
            registry_url: xds_run.url(xds::paths::ITI18),
            repositories: vec![EndpointConfig {
                unique_id: X_REPO.into(),
                url: xds_run.url(xds::paths::ITI43),
            }],
            imaging_document_sources: vec![EndpointConfig {
                unique_id: X_IDS.into(),
                url: xds_run.url(xds::paths::RAD69),
            }],
            deadline_ms: 20_000,
        }),
        &dir.path().join("audit-x.jsonl"),
        &[viewer_entry],
    );
    let mut p_cfg = test_config(
        &p,
        pki.hospital("p", &p.ura, &p.name).unwrap(),
        LocalBackend::Dicomweb(DicomwebBackendConfig {
            base_url: orthanc.url("/dicom-web"),
            repository_unique_id: P_REPO.into(),
            deadline_ms: 20_000,
        }),
        &dir.path().join("audit-p.jsonl"),
        &[],
    );
    // P knows X as a community and trusts X's XUA issuer (X signs with its server certificate, the
    // default): xua.allowUnsigned of the test bed admits unsigned assertions only, never a signed one by
    // an untrusted issuer. P only answers X, so X's endpoints here are never called.
    let (x_signing_cert, _) = x_cfg.xua_signing_files();
    p_cfg.communities = vec![RemoteCommunity {
        home_community_id: X_HOME.parse().unwrap(),
        name: x.name.clone(),
        organizations: vec![CommunityOrganization {
            ura: x.ura.clone(),
            name: x.name.clone(),
        }],
        query_url: "https://localhost:9/xca/iti38".into(),
        retrieve_url: "https://localhost:9/xca/iti39".into(),
        imaging_retrieve_url: "https://localhost:9/xcai/rad75".into(),
        connect_to: None,
        certificate_ura: Some(x.ura.clone()),
        trusted_issuers: vec![TrustedIssuerConfig {
            issuer: x_cfg.xua_issuer(),
            certificates: std::fs::read_to_string(x_signing_cert).unwrap(),
        }],
        deadline_ms: 20_000,
        fronted_communities: Vec::new(),
    }];
    let p_gw = run::start(p_cfg, None, run::default_hooks()).await.unwrap();
    let p_url = format!("https://localhost:{}", p_gw.addr.port());
    x_cfg.communities = vec![RemoteCommunity {
        home_community_id: P_HOME.parse().unwrap(),
        name: p.name.clone(),
        organizations: vec![CommunityOrganization {
            ura: p.ura.clone(),
            name: p.name.clone(),
        }],
        query_url: format!("{p_url}/xca/iti38"),
        retrieve_url: format!("{p_url}/xca/iti39"),
        imaging_retrieve_url: format!("{p_url}/xcai/rad75"),
        connect_to: None,
        certificate_ura: Some(p.ura.clone()),
        trusted_issuers: Vec::new(),
        deadline_ms: 20_000,
        fronted_communities: Vec::new(),
    }];
    let x_gw = run::start(x_cfg, None, run::default_hooks()).await.unwrap();
    let x_url = format!("https://localhost:{}", x_gw.addr.port());
    let client = duo_runtime::tls::TlsMaterial::load(&viewer)
        .unwrap()
        .http_client(Duration::from_secs(60))
        .unwrap();

    // the timeline at X spans the XDS community and the Orthanc-backed community
    let resp = client
        .get(format!("{x_url}/api/v1/patients/{BSN}/timeline"))
        .header("X-DUO-Requester-UZI", "900000001")
        .header("X-DUO-Requester-Role", "01.015")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let timeline: Value = resp.json().await.unwrap();
    assert_eq!(timeline["status"], "Success", "{:#}", timeline["errors"]);
    let studies = timeline["studies"].as_array().unwrap();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for st in studies {
        let uid = st["studyInstanceUid"].as_str().unwrap().to_owned();
        let homes = st["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["homeCommunityId"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            seen.insert(uid.clone(), homes).is_none(),
            "{uid} twice on the timeline"
        );
    }
    let expected: BTreeSet<String> = in_xds
        .iter()
        .cloned()
        .chain(in_orthanc.keys().cloned())
        .collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (uid, homes) in &seen {
        let mut want = Vec::new();
        if in_xds.contains(uid) {
            want.push(X_HOME.to_owned());
        }
        if in_orthanc.contains_key(uid) {
            want.push(P_HOME.to_owned());
        }
        let mut got = homes.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "sources of {uid}");
    }
    eprintln!(
        "timeline: {} studies ({} from the XDS community, {} from Orthanc, 1 shared)",
        seen.len(),
        in_xds.len(),
        in_orthanc.len()
    );

    // 4. RAD-69 at X for P's studies, as the timeline references them: X → RAD-75 → P → WADO-RS → Orthanc
    // the consumer accepts every transfer syntax the files are in (the DICOMweb backend relays instances
    // as stored, `transfer-syntax=*`: it does not transcode)
    let stored_syntaxes: BTreeSet<String> = report
        .studies
        .iter()
        .flat_map(|st| {
            st.instances
                .iter()
                .map(|i| i.info.transfer_syntax_uid.clone())
        })
        .collect();
    let mut req = RetrieveImagingDocumentSetRequest {
        studies: Vec::new(),
        transfer_syntaxes: stored_syntaxes.iter().cloned().collect(),
    };
    for st in studies {
        let uid = st["studyInstanceUid"].as_str().unwrap();
        let Some(at_p) = st["retrieve"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["homeCommunityId"] == P_HOME)
        else {
            continue;
        };
        let mut count = 0;
        let series = at_p["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|se| SeriesRequest {
                series_instance_uid: se["seriesInstanceUid"].as_str().unwrap().to_owned(),
                documents: se["sopInstanceUids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|sop| {
                        count += 1;
                        DocumentRequest {
                            home_community_id: Some(P_HOME.parse().unwrap()),
                            repository_unique_id: se["repositoryUniqueId"]
                                .as_str()
                                .unwrap()
                                .to_owned(),
                            document_unique_id: sop.as_str().unwrap().to_owned(),
                        }
                    })
                    .collect(),
            })
            .collect();
        assert_eq!(
            Some(count),
            in_orthanc.get(uid).copied(),
            "instances of {uid} in the timeline's references"
        );
        if !in_xds.contains(uid) {
            // counted from P's manifest, which P built from Orthanc's QIDO-RS answers
            assert_eq!(
                st["numberOfInstances"].as_u64(),
                Some(count as u64),
                "{uid}"
            );
        }
        req.studies.push(StudyRequest {
            study_instance_uid: uid.to_owned(),
            series,
        });
    }
    let asked = req.documents().count();
    assert_eq!(asked, orthanc_ids.len());
    let url = format!("{x_url}/xdsi/rad69");
    let h = SoapHeader::request(Transaction::Rad69.request_action(), Some(&url));
    let r = client
        .post(&url)
        .header(
            "content-type",
            s::soap_ct(Transaction::Rad69.request_action()),
        )
        .body(write_soap(&h, &req))
        .send()
        .await
        .unwrap();
    let answer = s::Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: r.bytes().await.unwrap(),
    };
    let got = s::retrieve_response(&answer, Transaction::Rad69);
    assert!(got.response.errors.is_empty(), "{:?}", got.response.errors);
    assert_eq!(got.documents.len(), asked);
    let mut verified = 0;
    let mut bytes = 0;
    for d in &got.documents {
        assert_eq!(
            d.meta
                .home_community_id
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(P_HOME)
        );
        assert_eq!(d.meta.repository_unique_id, P_REPO);
        let Content::Inline(b) = &d.content else {
            panic!("unresolved document")
        };
        let info = duo_runtime::dicom::read_instance(b).unwrap();
        assert_eq!(info.sop_instance_uid, d.meta.document_unique_id);
        assert!(stored_syntaxes.contains(&info.transfer_syntax_uid));
        let id = &orthanc_ids[&d.meta.document_unique_id];
        let file = http
            .get(orthanc.url(&format!("/instances/{id}/file")))
            .send()
            .await
            .unwrap();
        assert!(file.status().is_success());
        let held = file.bytes().await.unwrap();
        assert_eq!(
            sha256_hex(b),
            sha256_hex(&held),
            "{} differs from what Orthanc holds",
            d.meta.document_unique_id
        );
        verified += 1;
        bytes += b.len();
    }
    eprintln!(
        "RAD-69 → RAD-75 → WADO-RS: {verified} instances ({bytes} bytes) identical to Orthanc's files"
    );

    x_gw.stop().await;
    p_gw.stop().await;
    xds_run.stop().await;
    drop(orthanc);
}
