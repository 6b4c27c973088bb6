//! Timeline load (issue 7, performance figure a): queries per second and latency of
//! `GET /api/v1/patients/{bsn}/timeline` at a `duo-gateway serve` process whose timeline spans three
//! simulated communities (TLB node simulators in this process, mutual TLS), each answering every call
//! (ITI-38 FindDocuments, then ITI-39 for the KOS manifests) after 10 ms; and the gateway's own overhead:
//! the client's latency minus the slowest community's service time for that very query, measured at the
//! simulators (a middleware times each call and keys it by the query's patient; each in-flight query has
//! its own patient).
//!
//! Consent `permitAll` and localisation `allCommunities` (no Mitz round trip), manifest details on (the
//! default), audit to a file. After a warm-up, an open loop at each of `--rates` queries/s (default
//! `100,200,300,500`) for `--seconds` each (default 20), latency counted from each query's send; then a
//! closed loop of `--concurrency` (default 32) clients for the highest rate the set-up sustains. Load
//! generator, simulators and gateway share the machine: past what the machine can do, queueing shows up
//! as latency, "overhead" and a growing resident set (the gateway accepts every connection).
//!
//! `scripts/perf.sh` runs it: `cargo bench -p duo-runtime --bench timeline_load -- --rates 100,200,300,500`.

mod bed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Bytes;
use duo_runtime::config::{
    Endpoint as EndpointConfig, LocalBackend, RemoteCommunity, XdsBackendConfig,
};
use duo_runtime::model::{AuthorInstitution, Bsn};
use duo_runtime::tls::TlsMaterial;
use duo_testkit::dicom::synth::{SynthConfig, SynthPatient, generate_study};
use duo_testkit::dicom::xds::ReportFormat;
use duo_testkit::sim::bed::{Hospital, Pki, test_config};
use duo_testkit::sim::faults::Faults;
use duo_testkit::sim::seed::{CommunitySeed, seed_study};
use duo_testkit::sim::serve::{self, RunningSim, Transport};
use duo_testkit::sim::store::StoredDocument;
use duo_testkit::sim::tlb::{self, TlbConfig, TlbSim};
use duo_testkit::sim::xds::{self, XdsConfig, XdsSim};

use bed::{GatewayProcess, percentile};

/// Patients the queries cycle through: each in-flight query has one of its own (needed to attribute each
/// simulator call to its query).
const PATIENTS: usize = 256;

/// One call a simulator served: which community, for which patient, when it started, how long it took.
#[derive(Debug, Clone, Copy)]
struct Served {
    community: usize,
    patient: usize,
    start: Instant,
    took: Duration,
}

#[derive(Clone)]
struct Probe {
    community: usize,
    bsns: Arc<HashMap<String, usize>>,
    documents: Arc<HashMap<String, usize>>,
    log: Arc<Mutex<Vec<Served>>>,
}

fn find_patient(p: &Probe, body: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(body).ok()?;
    // ITI-38: the patient's CX in the FindDocuments slot (`'<bsn>^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO'`)
    if let Some(i) = text.find("^^^&") {
        let bsn = text.get(i.checked_sub(9)?..i)?;
        return p.bsns.get(bsn).copied();
    }
    // ITI-39: a manifest's DocumentUniqueId
    let i = text.find("DocumentUniqueId>")?;
    let uid = text[i + "DocumentUniqueId>".len()..].split('<').next()?;
    p.documents.get(uid.trim()).copied()
}

async fn probe(State(p): State<Probe>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let patient = find_patient(&p, &bytes);
    let start = Instant::now();
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let took = start.elapsed();
    if let Some(patient) = patient {
        p.log.lock().unwrap().push(Served {
            community: p.community,
            patient,
            start,
            took,
        });
    }
    resp
}

/// The first `n` valid BSNs (11-check) from 100000000 up.
fn bsns(n: usize) -> Vec<Bsn> {
    (100_000_000u32..)
        .filter_map(|x| x.to_string().parse::<Bsn>().ok())
        .take(n)
        .collect()
}

struct Community {
    _sim: TlbSim,
    run: RunningSim,
    home: String,
}

/// A TLB node with one study (KOS manifest and report) for each of `patients`, every call delayed by
/// `latency`.
async fn community(
    c: usize,
    patients: &[Bsn],
    latency: Duration,
    transport: Transport,
    log: Arc<Mutex<Vec<Served>>>,
) -> Community {
    let home = format!("urn:oid:2.16.528.1.1007.3.3.1000011{c}.1");
    let sim = TlbSim::new(TlbConfig::new(home.parse().unwrap()));
    let seed = CommunitySeed::new(
        AuthorInstitution {
            name: format!("Ziekenhuis {c}"),
            ura: Some(format!("1000011{c}").parse().unwrap()),
        },
        "V6".parse().unwrap(),
        &format!("2.16.528.1.1007.3.3.1000011{c}.10"),
        &format!("2.16.528.1.1007.3.3.1000011{c}.11"),
        Some(home.parse().unwrap()),
    );
    let mut p0 = SynthPatient::example();
    p0.bsn = patients[0].clone();
    let study = generate_study(&SynthConfig::default(), &p0, 700 + c as u64).unwrap();
    let seeded = seed_study(
        &sim.store,
        &seed,
        &patients[0],
        &study,
        ReportFormat::Pdf,
        c as u64,
    )
    .unwrap();
    let mut documents = HashMap::new();
    let originals = sim.store.get_documents(
        &[],
        &[
            seeded.manifest.unique_id.clone(),
            seeded.report.unique_id.clone(),
        ],
    );
    for e in &originals {
        documents.insert(e.unique_id.clone(), 0);
    }
    // the same study under every other patient: entries and documents of their own
    for (k, bsn) in patients.iter().enumerate().skip(1) {
        for e in &originals {
            let content = sim
                .store
                .document(&e.repository_unique_id, &e.unique_id)
                .unwrap();
            let mut e2 = e.clone();
            e2.patient_id = bsn.to_cx();
            e2.entry_uuid = format!("urn:uuid:{}", uuid::Uuid::new_v4());
            e2.unique_id = format!("{}.{k}", e.unique_id);
            documents.insert(e2.unique_id.clone(), k);
            sim.store.add_document(
                e2,
                StoredDocument {
                    mime_type: content.mime_type,
                    bytes: content.bytes,
                },
            );
        }
    }
    sim.control.set_faults(Faults {
        delay_ms: latency.as_millis() as u64,
        ..Faults::default()
    });
    let probe_state = Probe {
        community: c,
        bsns: Arc::new(
            patients
                .iter()
                .enumerate()
                .map(|(k, b)| (b.to_string(), k))
                .collect(),
        ),
        documents: Arc::new(documents),
        log,
    };
    let router = sim
        .router()
        .layer(middleware::from_fn_with_state(probe_state, probe));
    let run = serve::start(router, transport).await.unwrap();
    Community {
        _sim: sim,
        run,
        home,
    }
}

fn url(run: &RunningSim, path: &str) -> String {
    format!("https://localhost:{}{path}", run.addr().port())
}

#[derive(Debug, Clone)]
struct Query {
    patient: usize,
    scheduled: Instant,
    sent: Instant,
    done: Instant,
    error: Option<String>,
}

async fn timeline(client: &reqwest::Client, gw: &str, bsn: &str) -> Result<(), String> {
    let r = client
        .get(format!("{gw}/api/v1/patients/{bsn}/timeline"))
        .header("X-DUO-Requester-UZI", "900000001")
        .header("X-DUO-Requester-Role", "01.015")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() || body["status"] != "Success" {
        return Err(format!("HTTP {status}: {}", body["status"]));
    }
    let n = body["studies"].as_array().map(Vec::len).unwrap_or(0);
    let counted = body["studies"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|s| s["numberOfInstances"].as_u64().is_some_and(|n| n > 0));
    if n != 3 || !counted {
        return Err(format!(
            "{n} studies (3 expected) or a study without its manifest's counts"
        ));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn open_loop(
    client: &reqwest::Client,
    gw: &str,
    patients: &[Bsn],
    rate: f64,
    seconds: f64,
) -> Vec<Query> {
    let total = (rate * seconds).round() as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let gw = gw.to_owned();
        let patient = i % patients.len();
        let bsn = patients[patient].to_string();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = timeline(&client, &gw, &bsn).await;
            Query {
                patient,
                scheduled,
                sent,
                done: Instant::now(),
                error: r.err(),
            }
        }));
    }
    let mut out = Vec::with_capacity(total);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn closed_loop(
    client: &reqwest::Client,
    gw: &str,
    patients: &[Bsn],
    concurrency: usize,
    seconds: f64,
) -> (usize, usize, Vec<f64>) {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let gw = gw.to_owned();
        let patients = patients.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut k = w;
            while Instant::now() < until {
                let t = Instant::now();
                if timeline(&client, &gw, &patients[k % patients.len()].to_string())
                    .await
                    .is_err()
                {
                    errors += 1;
                }
                lat.push(ms(t.elapsed()));
                k += concurrency;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_by(f64::total_cmp);
    (all.len(), errors, all)
}

struct Measured {
    achieved: f64,
    errors: usize,
    unmatched: usize,
    first_error: Option<String>,
    latency: Vec<f64>,
    slowest: Vec<f64>,
    overhead: Vec<f64>,
    lag: Vec<f64>,
    cpu_ms: f64,
    /// CPU of this process (the three simulators and the load generator) per query, ms.
    rest_cpu_ms: f64,
    rss_mib: f64,
}

/// One open-loop run at `rate`, each query paired with the simulator calls made for it.
async fn measure(
    client: &reqwest::Client,
    gw_url: &str,
    patients: &[Bsn],
    gw: &GatewayProcess,
    log: &Arc<Mutex<Vec<Served>>>,
    rate: f64,
    seconds: f64,
) -> Measured {
    log.lock().unwrap().clear();
    let cpu0 = bed::cpu_ticks(gw.pid());
    let rest0 = bed::cpu_ticks(std::process::id());
    let t0 = Instant::now();
    let queries = open_loop(client, gw_url, patients, rate, seconds).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = bed::cpu_ticks(gw.pid());
    let rest1 = bed::cpu_ticks(std::process::id());
    let served = log.lock().unwrap().clone();
    let mut by_patient: HashMap<usize, Vec<Served>> = HashMap::new();
    for s in served {
        by_patient.entry(s.patient).or_default().push(s);
    }
    let mut m = Measured {
        achieved: queries.len() as f64 / wall,
        errors: 0,
        unmatched: 0,
        first_error: None,
        latency: Vec::new(),
        slowest: Vec::new(),
        overhead: Vec::new(),
        lag: Vec::new(),
        cpu_ms: (cpu1 - cpu0) as f64 / 100.0 * 1000.0 / queries.len() as f64,
        rest_cpu_ms: (rest1 - rest0) as f64 / 100.0 * 1000.0 / queries.len() as f64,
        rss_mib: gw.memory_kib().1 as f64 / 1024.0,
    };
    for q in &queries {
        if let Some(e) = &q.error {
            m.errors += 1;
            m.first_error.get_or_insert_with(|| e.clone());
            continue;
        }
        let mut per = [Duration::ZERO; 3];
        let mut calls = [0; 3];
        for s in by_patient.get(&q.patient).into_iter().flatten() {
            if s.start >= q.sent && s.start <= q.done {
                per[s.community] += s.took;
                calls[s.community] += 1;
            }
        }
        if calls.iter().any(|&n| n != 2) {
            m.unmatched += 1;
            continue;
        }
        let l = q.done - q.sent;
        let worst = per.into_iter().max().unwrap_or_default();
        m.latency.push(ms(l));
        m.lag
            .push(ms(q.sent.saturating_duration_since(q.scheduled)));
        m.slowest.push(ms(worst));
        m.overhead.push(ms(l.saturating_sub(worst)));
    }
    for v in [&mut m.latency, &mut m.lag, &mut m.slowest, &mut m.overhead] {
        v.sort_by(f64::total_cmp);
    }
    m
}

fn main() {
    duo_runtime::tune_allocator();
    let rates: Vec<f64> = bed::arg("--rates")
        .unwrap_or_else(|| "100,200,300,500".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let seconds: f64 = bed::arg_or("--seconds", 20.0);
    let latency_ms: u64 = bed::arg_or("--latency-ms", 10);
    let concurrency: usize = bed::arg_or("--concurrency", 32);
    let rt = bed::runtime();
    rt.block_on(run(&rates, seconds, latency_ms, concurrency));
}

async fn run(rates: &[f64], seconds: f64, latency_ms: u64, concurrency: usize) {
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "DUO load test CA").unwrap();
    let sim_tls = TlsMaterial::load(
        &pki.plain("sims", "Simulated communities", &["localhost"])
            .unwrap(),
    )
    .unwrap();
    let transport = Transport::mutual_tls(&sim_tls).unwrap();
    let patients = bsns(PATIENTS);
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut communities = Vec::new();
    for c in 0..3 {
        communities.push(
            community(
                c,
                &patients,
                Duration::from_millis(latency_ms),
                transport.clone(),
                log.clone(),
            )
            .await,
        );
    }
    // the hospital's own community exists (the configuration needs one) but is not part of this timeline
    let own = XdsSim::new(XdsConfig::default());
    let own_run = own.start(transport.clone()).await.unwrap();

    let h = Hospital::new(
        "10000100",
        "Ziekenhuis Load",
        "urn:oid:2.16.528.1.1007.3.3.10000100.1",
    );
    let (viewer, viewer_entry) = pki
        .front_end("viewer", "Load viewer", &["viewer.load.test"])
        .unwrap();
    let mut cfg = test_config(
        &h,
        pki.hospital("gateway", &h.ura, &h.name).unwrap(),
        LocalBackend::Xds(XdsBackendConfig {
            registry_url: url(&own_run, xds::paths::ITI18),
            repositories: vec![EndpointConfig {
                unique_id: "2.16.528.1.1007.3.3.10000100.10".into(),
                url: url(&own_run, xds::paths::ITI43),
            }],
            imaging_document_sources: Vec::new(),
            deadline_ms: 5_000,
        }),
        &dir.path().join("audit.jsonl"),
        &[viewer_entry],
    );
    cfg.allow_plain_http = false;
    cfg.initiating.include_local = false;
    cfg.communities = communities
        .iter()
        .enumerate()
        .map(|(c, x)| RemoteCommunity {
            home_community_id: x.home.parse().unwrap(),
            name: format!("Ziekenhuis {c}"),
            organizations: Vec::new(),
            query_url: url(&x.run, tlb::paths::ITI38),
            retrieve_url: url(&x.run, tlb::paths::ITI39),
            imaging_retrieve_url: url(&x.run, tlb::paths::RAD75),
            connect_to: None,
            certificate_ura: None,
            trusted_issuers: Vec::new(),
            deadline_ms: 5_000,
            fronted_communities: Vec::new(),
        })
        .collect();
    let gw = GatewayProcess::start(&cfg, dir.path());
    let gw_url = gw.url("");
    let client = TlsMaterial::load(&viewer)
        .unwrap()
        .http_client(Duration::from_secs(10))
        .unwrap();

    // warm-up: connections, caches
    let warm = open_loop(&client, &gw_url, &patients, rates[0], 3.0).await;
    if let Some(e) = warm.iter().find_map(|q| q.error.clone()) {
        eprintln!("warm-up: errors, e.g. {e}");
    }
    println!(
        "timeline load: 3 communities, every call answered after {latency_ms} ms (per community ITI-38 FindDocuments, then ITI-39 for the manifests), open loop {seconds:.0} s per rate; latency from each query's send, in ms"
    );
    println!(
        "  {:>6} {:>9} {:>6} | {:>15} | {:>19} | {:>17} | {:>9} | {:>8} | {:>8} | {:>7}",
        "rate",
        "achieved",
        "errors",
        "latency p50/p99",
        "slowest comm. p50/p99",
        "overhead p50/p99",
        "lag p99",
        "gw CPU/q",
        "rest CPU/q",
        "RSS MiB"
    );
    println!(
        "  (gw CPU/q: the gateway process's CPU per query; rest CPU/q: this process's, i.e. the three simulators and the load generator)"
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for &rate in rates {
        let r = measure(&client, &gw_url, &patients, &gw, &log, rate, seconds).await;
        println!(
            "  {rate:>6.0} {:>8.0}/s {:>6} | {:>6.1} / {:>6.1} | {:>8.1} / {:>8.1} | {:>7.2} / {:>7.2} | {:>9.1} | {:>6.2}ms | {:>8.2}ms | {:>7.1}{}",
            r.achieved,
            r.errors,
            percentile(&r.latency, 50.0),
            percentile(&r.latency, 99.0),
            percentile(&r.slowest, 50.0),
            percentile(&r.slowest, 99.0),
            percentile(&r.overhead, 50.0),
            percentile(&r.overhead, 99.0),
            percentile(&r.lag, 99.0),
            r.cpu_ms,
            r.rest_cpu_ms,
            r.rss_mib,
            if r.unmatched > 0 {
                format!("  ({} queries not attributable)", r.unmatched)
            } else {
                String::new()
            },
        );
        if let Some(e) = r.first_error {
            println!("         first error: {e}");
        }
        // how much of the machine the set-up used at this rate: gateway, simulators and load
        // generator share the same CPUs, so queueing for CPU shows in every latency above
        println!(
            "         CPU busy: {:.0}% of {cpus} CPUs (gateway {:.0}%)",
            (r.cpu_ms + r.rest_cpu_ms) * r.achieved / (cpus as f64 * 10.0),
            r.cpu_ms * r.achieved / (cpus as f64 * 10.0)
        );
        if (rate - 500.0).abs() < f64::EPSILON {
            let p99 = percentile(&r.overhead, 99.0);
            println!(
                "         bar p99 overhead < 5 ms at 500/s: {}",
                if p99 < 5.0 && r.errors == 0 && r.achieved > 490.0 {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        // let queued work drain before the next rate
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let (n, cl_errors, cl_lat) =
        closed_loop(&client, &gw_url, &patients, concurrency, seconds.min(10.0)).await;
    let secs = seconds.min(10.0);
    println!(
        "closed loop, {concurrency} concurrent clients for {secs:.0} s: {:.0} queries/s, {cl_errors} errors, latency p50 {:.1} ms p99 {:.1} ms",
        n as f64 / secs,
        percentile(&cl_lat, 50.0),
        percentile(&cl_lat, 99.0)
    );
    let (hwm, _) = gw.memory_kib();
    println!(
        "  gateway peak RSS over the whole run (overloaded rates included) {:.1} MiB",
        hwm as f64 / 1024.0
    );
    drop(gw);
    own_run.stop().await;
}
