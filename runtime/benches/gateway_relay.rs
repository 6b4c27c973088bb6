//! RAD-75 relay of a 1 GiB study through a `duo-gateway serve` process (issue 7 performance figure b,
//! issue 3 memory acceptance): throughput relative to fetching the same study directly from its source,
//! and the gateway process's peak resident set.
//!
//! The source is an XDS-I.b imaging document source simulator in THIS process (so its 1 GiB is not counted
//! against the gateway), holding one CT study of `--parts` (default 2,048) real DICOM instances of
//! 512×512×16 bit (≈ 513 KiB each, 1 GiB in all). Everything runs over mutual TLS on loopback:
//! - direct: RAD-69 from the client to the source;
//! - relay: RAD-75 from the client to the gateway's responding imaging gateway, which retrieves from the
//!   source (its own community) with RAD-69 and streams the answer through part by part.
//!
//! The client reads each answer with the streaming MTOM reader and checks every instance's size; runs
//! alternate direct / relay `--rounds` times (default 2). The gateway's memory is `VmHWM` of its
//! `/proc/<pid>/status` (peak over its whole life), also sampled as `VmRSS` every 20 ms during relays.
//!
//! `scripts/perf.sh` runs it: `cargo bench -p duo-runtime --bench gateway_relay`.

mod bed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duo_runtime::config::{Endpoint as EndpointConfig, LocalBackend, XdsBackendConfig};
use duo_runtime::ihe::mtom::{MtomLimits, RetrieveItem, RetrieveResponseReader};
use duo_runtime::ihe::retrieve::{
    DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::write_soap;
use duo_runtime::tls::TlsMaterial;
use duo_testkit::dicom::synth::{Modality, SynthConfig, SynthPatient, generate_study};
use duo_testkit::sim::bed::{Hospital, Pki, test_config};
use duo_testkit::sim::seed::with_uids;
use duo_testkit::sim::serve::Transport;
use duo_testkit::sim::xds::{self, XdsConfig, XdsSim};
use futures::StreamExt;

use bed::GatewayProcess;

const IDS: &str = "2.16.528.1.1007.3.3.10000200.11";
const HOME: &str = "urn:oid:2.16.528.1.1007.3.3.10000200.1";
const STUDY: &str = "2.25.1762391093518840012345678901234567";

/// Fetches `req` as `tx` from `url`, reading the MTOM answer as a stream; returns (bytes of documents,
/// documents, seconds). Panics when a document is missing or has the wrong size.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    tx: Transaction,
    req: &RetrieveImagingDocumentSetRequest,
    sizes: &std::collections::HashMap<String, u64>,
) -> (u64, usize, f64) {
    let h = SoapHeader::request(tx.request_action(), Some(url));
    let body = write_soap(&h, req);
    let t = Instant::now();
    let r = client
        .post(url)
        .header(
            "content-type",
            format!(
                "application/soap+xml; charset=UTF-8; action=\"{}\"",
                tx.request_action()
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "HTTP {}", r.status());
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let len = r.content_length();
    let stream = r
        .bytes_stream()
        .map(|x| x.map_err(|e| -> duo_runtime::ihe::mtom::BoxError { Box::new(e) }));
    let reader = RetrieveResponseReader::open(&ct, len, stream, &MtomLimits::default())
        .await
        .unwrap();
    assert!(
        reader.registry_response().errors.is_empty(),
        "{:?}",
        reader.registry_response().errors
    );
    let metas = reader.documents().to_vec();
    let mut items = Box::pin(reader.into_items());
    let (mut total, mut docs, mut cur, mut n) = (0u64, 0usize, None, 0u64);
    while let Some(it) = items.next().await {
        match it.unwrap() {
            RetrieveItem::Document(i) => {
                cur = Some(i);
                n = 0;
            }
            RetrieveItem::Chunk(c) => n += c.len() as u64,
            RetrieveItem::End => {
                let i = cur.take().unwrap();
                let uid = &metas[i].document_unique_id;
                assert_eq!(sizes.get(uid), Some(&n), "{uid}");
                total += n;
                docs += 1;
            }
            RetrieveItem::Failed(i, why) => panic!("document {i} not delivered: {why}"),
        }
    }
    (total, docs, t.elapsed().as_secs_f64())
}

fn main() {
    duo_runtime::tune_allocator();
    let parts: usize = bed::arg_or("--parts", 2048);
    let rounds: usize = bed::arg_or("--rounds", 2);
    let rt = bed::runtime();
    rt.block_on(run(parts, rounds));
}

async fn run(parts: usize, rounds: usize) {
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "DUO relay test CA").unwrap();
    let sim_tls = TlsMaterial::load(
        &pki.plain("source", "Imaging document source", &["localhost"])
            .unwrap(),
    )
    .unwrap();

    // the study: one real 512×512 CT image, re-stamped into `parts` instances in 4 series
    let cfg = SynthConfig {
        modalities: vec![Modality::Ct],
        series_per_study: (1, 1),
        instances_per_series: (1, 1),
        rows: 512,
        columns: 512,
        ..SynthConfig::default()
    };
    let image = generate_study(&cfg, &SynthPatient::example(), 75).unwrap();
    let src = image.instances[0].bytes.clone();
    let sim = XdsSim::new(XdsConfig::default());
    let mut sizes = std::collections::HashMap::new();
    let mut series: Vec<SeriesRequest> = Vec::new();
    let mut bytes_total = 0u64;
    for k in 0..parts {
        let se = format!("{STUDY}.{}", k % 4 + 1);
        let sop = format!("{se}.{k}");
        let (info, b) = with_uids(&src, STUDY, &se, &sop).unwrap();
        bytes_total += b.len() as u64;
        sizes.insert(sop.clone(), b.len() as u64);
        sim.store.add_instance(IDS, info, b).unwrap();
        let d = DocumentRequest {
            home_community_id: Some(HOME.parse().unwrap()),
            repository_unique_id: IDS.into(),
            document_unique_id: sop,
        };
        match series.iter_mut().find(|s| s.series_instance_uid == se) {
            Some(s) => s.documents.push(d),
            None => series.push(SeriesRequest {
                series_instance_uid: se,
                documents: vec![d],
            }),
        }
    }
    let req = RetrieveImagingDocumentSetRequest {
        studies: vec![StudyRequest {
            study_instance_uid: STUDY.into(),
            series,
        }],
        transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
    };
    let source = sim
        .start(Transport::mutual_tls(&sim_tls).unwrap())
        .await
        .unwrap();
    let source_url = format!(
        "https://localhost:{}{}",
        source.addr().port(),
        xds::paths::RAD69
    );

    let h = Hospital::new("10000200", "Ziekenhuis Relay", HOME);
    let mut gcfg = test_config(
        &h,
        pki.hospital("gateway", &h.ura, &h.name).unwrap(),
        LocalBackend::Xds(XdsBackendConfig {
            registry_url: format!(
                "https://localhost:{}{}",
                source.addr().port(),
                xds::paths::ITI18
            ),
            repositories: Vec::new(),
            imaging_document_sources: vec![EndpointConfig {
                unique_id: IDS.into(),
                url: source_url.clone(),
            }],
            deadline_ms: 30_000,
        }),
        &dir.path().join("audit.jsonl"),
        &[],
    );
    gcfg.allow_plain_http = false;
    gcfg.server.limits.request_timeout_seconds = 600;
    let gw = GatewayProcess::start(&gcfg, dir.path());
    let (hwm_idle, rss_idle) = gw.memory_kib();
    let client = TlsMaterial::load(
        &pki.plain("client", "Remote imaging gateway", &["client.relay.test"])
            .unwrap(),
    )
    .unwrap()
    .http_client(Duration::from_secs(10))
    .unwrap();
    let mut direct_req = req.clone();
    for st in &mut direct_req.studies {
        for se in &mut st.series {
            for d in &mut se.documents {
                d.home_community_id = None;
            }
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "RAD-75 relay: {parts} instances, {:.1} MiB ({bytes_total} bytes), mutual TLS on loopback; gateway idle RSS {:.1} MiB",
        mib(bytes_total),
        rss_idle as f64 / 1024.0
    );
    let _ = hwm_idle;
    let (mut direct, mut relay) = (Vec::new(), Vec::new());
    let sampled_max = Arc::new(AtomicU64::new(0));
    // CPU seconds per GiB moved: this process (source and client) for direct; this process plus the
    // gateway for the relay
    let (mut cpu_direct, mut cpu_relay, mut cpu_gw) = (Vec::new(), Vec::new(), Vec::new());
    let me = std::process::id();
    let per_gib =
        |ticks: u64, bytes: u64| ticks as f64 / 100.0 / (bytes as f64 / (1u64 << 30) as f64);
    for round in 0..rounds {
        let c0 = bed::cpu_ticks(me);
        let (b, n, s) = fetch(
            &client,
            &source_url,
            Transaction::Rad69,
            &direct_req,
            &sizes,
        )
        .await;
        assert_eq!((b, n), (bytes_total, parts));
        cpu_direct.push(per_gib(bed::cpu_ticks(me) - c0, b));
        println!(
            "  round {round}: direct (RAD-69 to the source)      {s:6.2} s  {:7.1} MiB/s  CPU {:.2} s/GiB",
            mib(b) / s,
            cpu_direct[round]
        );
        direct.push(mib(b) / s);
        let (c0, g0) = (bed::cpu_ticks(me), bed::cpu_ticks(gw.pid()));

        let stop = Arc::new(AtomicBool::new(false));
        let pid = gw.pid();
        let (stop2, max2) = (stop.clone(), sampled_max.clone());
        let sampler = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let (_, rss) = bed::memory_kib(pid);
                max2.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (b, n, s) = fetch(
            &client,
            &gw.url("/xcai/rad75"),
            Transaction::Rad75,
            &req,
            &sizes,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        assert_eq!((b, n), (bytes_total, parts));
        cpu_gw.push(per_gib(bed::cpu_ticks(gw.pid()) - g0, b));
        cpu_relay.push(per_gib(bed::cpu_ticks(me) - c0, b) + cpu_gw[round]);
        println!(
            "  round {round}: relay (RAD-75 through the gateway) {s:6.2} s  {:7.1} MiB/s  CPU {:.2} s/GiB, of which the gateway {:.2}",
            mib(b) / s,
            cpu_relay[round],
            cpu_gw[round]
        );
        relay.push(mib(b) / s);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (hwm, _) = gw.memory_kib();
    let ratio = mean(&relay) / mean(&direct);
    println!(
        "  mean: direct {:.1} MiB/s, relay {:.1} MiB/s = {:.0}% of direct (bar ≥ 70%: {})",
        mean(&direct),
        mean(&relay),
        ratio * 100.0,
        if ratio >= 0.7 { "met" } else { "NOT met" }
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "  CPU per GiB: direct {:.2} s, relay {:.2} s (gateway {:.2} s). When both saturate the {cpus} CPUs, the relay can reach at most {:.0}% of direct on this machine",
        mean(&cpu_direct),
        mean(&cpu_relay),
        mean(&cpu_gw),
        mean(&cpu_direct) / mean(&cpu_relay) * 100.0
    );
    println!(
        "  gateway peak RSS (VmHWM, whole life) {:.1} MiB; highest VmRSS sampled during relays {:.1} MiB (bar < 100 MiB: {})",
        hwm as f64 / 1024.0,
        sampled_max.load(Ordering::Relaxed) as f64 / 1024.0,
        if hwm < 100 * 1024 { "met" } else { "NOT met" }
    );
    drop(gw);
    source.stop().await;
}
