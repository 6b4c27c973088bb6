//! `duo-testbed demo`: the main job on the embedded default.
//!
//! Starts four hospitals on loopback ([`world::Options::demo`]): three whose studies the patient
//! consented to share (two XDS affinity domains and a TLB node) and one whose imaging data Mitz denies,
//! each behind its own DUO gateway. Then, as a radiologist of the first hospital:
//! 1. asks its gateway for the patient's timeline (JSON API; localisation with Mitz; ITI-18 locally,
//!    ITI-38 to the other gateways, each asking Mitz the closed question before disclosing);
//! 2. checks the timeline: studies of three hospitals, the shared study once with two sources, nothing
//!    of the denied hospital;
//! 3. retrieves one study of the TLB hospital over RAD-69 → RAD-75 and compares every instance byte for
//!    byte (SHA-256) with what that hospital's node holds;
//! 4. collects the audit records of every gateway (the denial and its reason included);
//! 5. the DSUB registration trigger ([`dsub_step`]): with a Mitz that does not yet know the second
//!    hospital (XDS) holds the patient's data, that hospital's gateway subscribes at a DSUB broker over
//!    its registry (ITI-52); a study newly published there is not on the first hospital's timeline
//!    until the broker's Notify (ITI-53) made the gateway register the patient with Mitz; then it is.
//!
//! `--once` stops after that; otherwise it keeps serving. `--json` prints one JSON document instead of
//! tables. The exit code is non-zero when a check fails.

pub mod world;

use std::collections::{BTreeMap, HashMap};

use bytes::BytesMut;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::ihe::mtom::{MtomLimits, RetrieveItem, RetrieveResponseReader};
use crate::ihe::soap::SoapHeader;
use crate::ihe::xua::{UnsignedAssertions, XuaAssertion};
use crate::ihe::{Transaction, write_soap};
use crate::model::Requester;
use crate::sim::seed::{SeededStudy, sha256_hex};
use world::{Kind, World};

/// Demo options (the CLI flags).
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Stop after the run instead of serving.
    pub once: bool,
    /// Machine-readable output.
    pub json: bool,
}

/// One check of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

fn requester(w: &World) -> Requester {
    let a = &w.hospitals[0].spec;
    Requester {
        uzi: "900000001"
            .parse()
            .unwrap_or_else(|_| unreachable!("constant UZI number")),
        role: "01.015"
            .parse()
            .unwrap_or_else(|_| unreachable!("constant role code")),
        ura: a.ura.clone(),
        facility_type: a.facility_type.clone(),
        purpose_of_use: Default::default(),
        name: Some("Dr. R. Radioloog".into()),
    }
}

/// Asks hospital 0's gateway for the timeline over the JSON API.
pub async fn fetch_timeline(w: &World) -> Result<Value, String> {
    let client = w.front_end_client(0)?;
    let r = requester(w);
    let url = format!(
        "{}/api/v1/patients/{}/timeline",
        w.hospitals[0].gateway_url(),
        w.patient.bsn
    );
    let resp = client
        .get(&url)
        .header("X-DUO-Requester-UZI", r.uzi.as_str())
        .header("X-DUO-Requester-Role", r.role.as_str())
        .header("X-DUO-Requester-Name", r.name.as_deref().unwrap_or(""))
        .send()
        .await
        .map_err(|e| format!("timeline request: {e}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("timeline answer: {e}"))?;
    if !status.is_success() {
        return Err(format!("timeline answered HTTP {status}: {body}"));
    }
    Ok(body)
}

/// Retrieves `study` (held by hospital `holder`) through hospital 0's imaging gateway (RAD-69 in,
/// RAD-75 out) and compares each instance's SHA-256 with the seeded one. Returns (instances asked,
/// instances verified, bytes).
pub async fn retrieve_and_verify(
    w: &World,
    holder: usize,
    study: &SeededStudy,
) -> Result<(usize, usize, u64), String> {
    let client = w.front_end_client(0)?;
    let home = &w.hospitals[holder].home;
    let req = study.imaging_request(
        Some(home),
        &[crate::dicom::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN],
    );
    let mut assertion = XuaAssertion::new(
        requester(w),
        w.hospitals[0].home.to_string(),
        w.hospitals[0].home.to_string(),
        jiff::Timestamp::now(),
    );
    assertion.patient = Some(w.patient.bsn.clone());
    let mut h = SoapHeader::request(
        Transaction::Rad69.request_action(),
        Some(&format!("{}/xdsi/rad69", w.hospitals[0].gateway_url())),
    );
    h.other.push(
        assertion
            .security_header(&UnsignedAssertions)
            .map_err(|e| e.to_string())?,
    );
    let xml = write_soap(&h, &req);
    let resp = client
        .post(format!("{}/xdsi/rad69", w.hospitals[0].gateway_url()))
        .header(
            "content-type",
            format!(
                "application/soap+xml; charset=UTF-8; action=\"{}\"",
                Transaction::Rad69.request_action()
            ),
        )
        .body(xml)
        .send()
        .await
        .map_err(|e| format!("RAD-69 request: {e}"))?;
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let len = resp.content_length();
    let stream = resp
        .bytes_stream()
        .map(|r| r.map_err(|e| -> crate::ihe::mtom::BoxError { Box::new(e) }));
    let reader = RetrieveResponseReader::open(&ct, len, stream, &MtomLimits::default())
        .await
        .map_err(|e| format!("RAD-69 answer: {e}"))?;
    if !reader.registry_response().errors.is_empty() {
        return Err(format!(
            "RAD-69 answer has errors: {:?}",
            reader.registry_response().errors
        ));
    }
    let metas = reader.documents().to_vec();
    let mut items = Box::pin(reader.into_items());
    let mut verified = 0;
    let mut bytes = 0u64;
    let mut cur: Option<(usize, BytesMut)> = None;
    let expected: HashMap<&str, &str> = study
        .instances
        .iter()
        .map(|i| (i.sop_instance_uid.as_str(), i.sha256.as_str()))
        .collect();
    while let Some(it) = items.next().await {
        match it.map_err(|e| format!("RAD-69 stream: {e}"))? {
            RetrieveItem::Failed(i, why) => {
                let uid = metas
                    .get(i)
                    .map(|m| m.document_unique_id.as_str())
                    .unwrap_or("");
                return Err(format!("RAD-69: instance {uid} not delivered: {why}"));
            }
            RetrieveItem::Document(i) => cur = Some((i, BytesMut::new())),
            RetrieveItem::Chunk(c) => {
                if let Some((_, b)) = &mut cur {
                    b.extend_from_slice(&c);
                }
            }
            RetrieveItem::End => {
                if let Some((i, b)) = cur.take() {
                    let uid = metas
                        .get(i)
                        .map(|m| m.document_unique_id.as_str())
                        .unwrap_or("");
                    bytes += b.len() as u64;
                    if expected.get(uid) == Some(&sha256_hex(&b).as_str()) {
                        verified += 1;
                    }
                }
            }
        }
    }
    Ok((study.instances.len(), verified, bytes))
}

fn audit_records(w: &World) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for h in &w.hospitals {
        let text = std::fs::read_to_string(&h.audit_file).unwrap_or_default();
        out.insert(
            h.spec.key.clone(),
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        );
    }
    out
}

fn studies_by_source(timeline: &Value) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in timeline["studies"].as_array().into_iter().flatten() {
        for src in s["sources"].as_array().into_iter().flatten() {
            *m.entry(src["homeCommunityId"].as_str().unwrap_or("").to_owned())
                .or_insert(0) += 1;
        }
    }
    m
}

/// Runs the demo checks on a built world; returns the checks and the JSON report.
pub async fn exercise(w: &World) -> (Vec<Check>, Value) {
    let mut checks = Vec::new();
    let timeline = match fetch_timeline(w).await {
        Ok(t) => t,
        Err(e) => {
            checks.push(Check {
                name: "timeline".into(),
                ok: false,
                detail: e,
            });
            return (checks, json!({}));
        }
    };
    let by_source = studies_by_source(&timeline);
    let permitted: Vec<&world::Hospital> = w
        .hospitals
        .iter()
        .filter(|h| h.spec.consent == crate::consent::Decision::Permit)
        .collect();
    let denied: Vec<&world::Hospital> = w
        .hospitals
        .iter()
        .filter(|h| h.spec.consent != crate::consent::Decision::Permit)
        .collect();
    let present: Vec<String> = permitted
        .iter()
        .filter(|h| by_source.get(&h.home.to_string()).copied().unwrap_or(0) > 0)
        .map(|h| h.spec.name.clone())
        .collect();
    checks.push(Check {
        name: format!("studies from the {} consenting hospitals", permitted.len()),
        ok: present.len() == permitted.len(),
        detail: format!("present: {}", present.join(", ")),
    });
    let expected_studies: usize =
        permitted.iter().map(|h| h.studies.len()).sum::<usize>() - usize::from(w.shared.is_some());
    let n = timeline["studies"].as_array().map(Vec::len).unwrap_or(0);
    checks.push(Check {
        name: "every study once".into(),
        ok: n == expected_studies,
        detail: format!("{n} studies on the timeline, {expected_studies} expected"),
    });
    if let Some(shared) = &w.shared {
        let entry = timeline["studies"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["studyInstanceUid"] == shared.study_instance_uid.as_str());
        let sources = entry
            .and_then(|e| e["sources"].as_array())
            .map(Vec::len)
            .unwrap_or(0);
        checks.push(Check {
            name: "shared study once with two sources".into(),
            ok: sources == 2,
            detail: format!("{} has {sources} source(s)", shared.study_instance_uid),
        });
    }
    for d in &denied {
        let leaked = by_source.get(&d.home.to_string()).copied().unwrap_or(0);
        let uids: Vec<&str> = d
            .studies
            .iter()
            .map(|s| s.study_instance_uid.as_str())
            .collect();
        let any = timeline["studies"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| uids.contains(&s["studyInstanceUid"].as_str().unwrap_or("")));
        checks.push(Check {
            name: format!("{} (no consent) absent", d.spec.name),
            ok: leaked == 0 && !any,
            detail: format!("{leaked} study source(s) from it"),
        });
    }
    let counts_ok = timeline["studies"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|s| s["numberOfInstances"].as_u64().unwrap_or(0) > 0);
    checks.push(Check {
        name: "series/instance counts from the KOS manifests".into(),
        ok: counts_ok,
        detail: String::new(),
    });
    let reports = timeline["studies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["reports"].as_array().is_some_and(|r| !r.is_empty()))
        .count();
    checks.push(Check {
        name: "a report per study".into(),
        ok: reports == n,
        detail: format!("{reports} of {n} studies have their report"),
    });

    // retrieve a study of the TLB hospital (not the shared one)
    let mut retrieve = json!(null);
    if let Some((idx, h)) = w.hospitals.iter().enumerate().find(|(_, h)| {
        h.spec.kind == Kind::Tlb && h.spec.consent == crate::consent::Decision::Permit
    }) {
        let study = h
            .studies
            .iter()
            .find(|s| {
                w.shared
                    .as_ref()
                    .is_none_or(|x| x.study_instance_uid != s.study_instance_uid)
            })
            .or(h.studies.first());
        if let Some(study) = study {
            match retrieve_and_verify(w, idx, study).await {
                Ok((asked, verified, bytes)) => {
                    checks.push(Check {
                        name: format!(
                            "RAD-75 retrieve from {} verified byte for byte",
                            h.spec.name
                        ),
                        ok: asked > 0 && asked == verified,
                        detail: format!("{verified}/{asked} instances, {bytes} bytes"),
                    });
                    retrieve = json!({"holder": h.spec.name, "studyInstanceUid": study.study_instance_uid, "instances": asked, "verified": verified, "bytes": bytes});
                }
                Err(e) => checks.push(Check {
                    name: format!("RAD-75 retrieve from {}", h.spec.name),
                    ok: false,
                    detail: e,
                }),
            }
        }
    }
    // the denial is audited with its reason at the denied hospital's gateway
    let audit = audit_records(w);
    for d in &denied {
        let recs = audit.get(&d.spec.key).cloned().unwrap_or_default();
        let denial = recs
            .iter()
            .find(|r| r["event"] == "consentDecision" && r["consent"]["disclosed"] == false);
        checks.push(Check {
            name: format!("denial audited at {}", d.spec.name),
            ok: denial.is_some(),
            detail: denial
                .map(|r| r["outcomeDetail"].as_str().unwrap_or("").to_owned())
                .unwrap_or_else(|| "no consent decision record".into()),
        });
    }
    // every peer accepted the asking gateway's signed assertions: it asked Mitz (a consent decision is
    // audited) and refused none; no gateway accepts unsigned ones
    let peers = &w.hospitals[1..];
    let verified = peers
        .iter()
        .filter(|h| {
            audit
                .get(&h.spec.key)
                .is_some_and(|recs| recs.iter().any(|r| r["event"] == "consentDecision"))
        })
        .count();
    let refused: usize = audit
        .values()
        .flatten()
        .filter(|r| {
            r["outcomeDetail"]
                .as_str()
                .is_some_and(|d| d.starts_with("refused: XUA assertion"))
        })
        .count();
    let unsigned_allowed = w
        .hospitals
        .iter()
        .filter(|h| h.config.xua.allow_unsigned)
        .count();
    checks.push(Check {
        name: "signed XUA assertions verified by every peer".into(),
        ok: verified == peers.len() && refused == 0 && unsigned_allowed == 0,
        detail: format!(
            "{verified}/{} peers verified {}'s signatures against their issuer trust lists; {refused} refused; unsigned accepted by {unsigned_allowed} gateways",
            peers.len(),
            w.hospitals[0].spec.name
        ),
    });
    let report = json!({
        "patient": {"bsn": w.patient.bsn.to_string(), "name": w.patient.name},
        "hospitals": w.hospitals.iter().map(|h| json!({
            "key": h.spec.key, "name": h.spec.name, "ura": h.spec.ura.to_string(), "kind": h.spec.kind,
            "homeCommunityId": h.home.to_string(), "gateway": h.gateway_url(), "ops": h.ops_url(),
            "consent": h.spec.consent.to_string(), "studiesHeld": h.studies.len(),
        })).collect::<Vec<_>>(),
        "timeline": timeline,
        "retrieve": retrieve,
        "checks": checks,
        "audit": audit,
    });
    (checks, report)
}

fn print_table(report: &Value, checks: &[Check]) {
    println!(
        "\nTimeline of {} (BSN {}) as asked at {}:\n",
        report["patient"]["name"].as_str().unwrap_or(""),
        report["patient"]["bsn"].as_str().unwrap_or(""),
        report["hospitals"][0]["name"].as_str().unwrap_or("")
    );
    let names: HashMap<String, String> = report["hospitals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["homeCommunityId"].as_str().unwrap_or("").to_owned(),
                h["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    println!(
        "{:<10} {:<9} {:<32} {:>6} {:>5}  {:<14} sources",
        "date", "modality", "description", "series", "inst", "accession"
    );
    for s in report["timeline"]["studies"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let date = s["date"].as_str().unwrap_or("");
        let date = if date.len() >= 8 {
            format!("{}-{}-{}", &date[0..4], &date[4..6], &date[6..8])
        } else {
            date.to_owned()
        };
        let mods: Vec<&str> = s["modalities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let srcs: Vec<String> = s["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                names
                    .get(x["homeCommunityId"].as_str().unwrap_or(""))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let desc: String = s["description"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(32)
            .collect();
        println!(
            "{:<10} {:<9} {:<32} {:>6} {:>5}  {:<14} {}{}",
            date,
            mods.join(","),
            desc,
            s["numberOfSeries"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            s["numberOfInstances"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            s["accessionNumber"].as_str().unwrap_or(""),
            srcs.join(" + "),
            if s["reports"].as_array().is_some_and(|r| !r.is_empty()) {
                "  [report]"
            } else {
                ""
            }
        );
    }
    println!(
        "\nstatus {}; communities asked:",
        report["timeline"]["status"].as_str().unwrap_or("")
    );
    for c in report["timeline"]["communities"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<28} {:<15} {:>4} ms {:>3} documents",
            c["name"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["durationMs"],
            c["documents"]
        );
    }
    println!("\nChecks:");
    for c in checks {
        println!(
            "  [{}] {}{}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            if c.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", c.detail)
            }
        );
    }
}

/// What [`dsub_step`] started and keeps running with the world.
pub struct DsubStep {
    /// The step's report (JSON).
    pub report: Value,
    /// The Mitz simulator the step switched hospitals A and B to.
    pub mitz: Option<crate::sim::mitz::MitzSim>,
    /// The DSUB broker over hospital B's registry.
    pub broker: Option<crate::sim::serve::RunningSim>,
}

impl DsubStep {
    /// Stops what the step started.
    pub async fn stop(self) {
        if let Some(b) = self.broker {
            b.stop().await;
        }
        if let Some(m) = self.mitz {
            m.shutdown().await;
        }
    }
}

/// Waits up to 10 s for `done`, polling every 20 ms; whether it came true.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// Whether `timeline` shows study `uid` with a source of community `home`.
fn shows(timeline: &Value, uid: &str, home: &str) -> bool {
    timeline["studies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["studyInstanceUid"] == uid)
        .flat_map(|s| s["sources"].as_array().into_iter().flatten())
        .any(|x| x["homeCommunityId"] == home)
}

/// Step 5, the DSUB registration trigger of hospital 1 (an XDS hospital): a Mitz simulator that knows
/// every location but hospital 1's (it has not registered the patient), hospitals 0 and 1 switched to
/// it; hospital 1 in registration mode `mitz` with `registration.dsub` at a DSUB broker over its
/// registry; a study published at hospital 1 with the broker's Notify held: not on hospital 0's
/// timeline; the Notify released: hospital 1 registers the patient with Mitz, acknowledges, and the
/// study is on the timeline. Pushes its checks; `print` narrates.
pub async fn dsub_step(w: &mut World, checks: &mut Vec<Check>, print: bool) -> DsubStep {
    let mut step = DsubStep {
        report: json!({}),
        mitz: None,
        broker: None,
    };
    let fail = |checks: &mut Vec<Check>, e: String| {
        checks.push(Check {
            name: "DSUB registration trigger".into(),
            ok: false,
            detail: e,
        });
    };
    let b = 1;
    if w.hospitals.get(b).is_none_or(|h| h.spec.kind != Kind::Xds) {
        fail(checks, "the second hospital is not an XDS hospital".into());
        return step;
    }
    let b_name = w.hospitals[b].spec.name.clone();
    let a_name = w.hospitals[0].spec.name.clone();
    let b_home = w.hospitals[b].home.to_string();
    let b_ura = w.hospitals[b].spec.ura.clone();
    // a Mitz that does not know hospital 1 holds the patient's data
    let mut cfg = w.mitz_config.clone();
    cfg.locations.retain(|l| l.holder != b_ura);
    let started = async {
        let (_, tls) = w.issue(
            "mitz-dsub",
            world::plain_spec("Mitz simulator (DSUB step)", &["localhost", "mitz.demo"]),
        )?;
        let listen = "127.0.0.1:0"
            .parse()
            .map_err(|e: std::net::AddrParseError| e.to_string())?;
        crate::sim::mitz::start(cfg, listen, &tls)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let mitz = match started {
        Ok(m) => m,
        Err(e) => {
            fail(checks, format!("Mitz simulator: {e}"));
            return step;
        }
    };
    let port = mitz.local_addr().port();
    let (broker, broker_sim) = match w
        .start_broker(
            b,
            &["broker.west.demo"],
            std::time::Duration::from_millis(200),
        )
        .await
    {
        Ok(x) => x,
        Err(e) => {
            fail(checks, format!("broker: {e}"));
            mitz.shutdown().await;
            return step;
        }
    };
    let broker_url = broker.subscribe_url();
    step.mitz = Some(mitz);
    step.broker = Some(broker_sim);
    for i in [0, b] {
        let gw = w.hospitals[i].gateway_url();
        let broker_url = broker_url.clone();
        let r = w
            .reconfigure(i, |c| {
                if let Some(m) = c.mitz.as_mut() {
                    m.closed_question_url =
                        format!("https://localhost:{port}/geslotenautorisatievraag/xacml3");
                    m.open_question_url =
                        Some(format!("https://localhost:{port}/openautorisatievraag"));
                    m.subscription_url = Some(format!(
                        "https://localhost:{port}/abonnementen/fhir/Subscription"
                    ));
                    m.notification_client_names = vec!["mitz.demo".into()];
                }
                if i == b {
                    c.registration = crate::config::RegistrationConfig {
                        mode: crate::config::RegistrationMode::Mitz,
                        notification_endpoint: Some(format!("{gw}/mitz/notifications")),
                        source_system: None,
                        max_attempts: 3,
                        dsub: Some(crate::config::DsubConfig {
                            broker_url,
                            recipient_url: format!("{gw}/dsub/notify"),
                            broker_client_names: vec!["broker.west.demo".into()],
                            topic: Default::default(),
                            renew_seconds: 86_400,
                        }),
                    };
                }
            })
            .await;
        if let Err(e) = r {
            fail(
                checks,
                format!("reconfiguring {}: {e}", w.hospitals[i].spec.name),
            );
            return step;
        }
    }
    let subscribed = eventually(|| broker.stats().subscriptions >= 1).await;
    checks.push(Check {
        name: format!("{b_name} subscribed at its DSUB broker (ITI-52)"),
        ok: subscribed,
        detail: broker
            .subscriptions()
            .first()
            .map(|s| format!("{} -> {} ({})", s.reference, s.consumer, s.topic))
            .unwrap_or_else(|| "no subscription".into()),
    });
    if print {
        println!(
            "
DSUB registration trigger ({b_name}, XDS):"
        );
        println!(
            "  {b_name}'s gateway subscribed at {broker_url} (ITI-52, every new DocumentEntry, ihe:FullDocumentEntry): {}",
            if subscribed { "yes" } else { "NO" }
        );
    }
    broker.hold(true);
    let study = match w.publish_study(b, 7_777) {
        Ok(s) => s,
        Err(e) => {
            broker.hold(false);
            fail(checks, format!("publishing a study at {b_name}: {e}"));
            return step;
        }
    };
    let held = eventually(|| broker.stats().pending >= 1).await;
    let before = fetch_timeline(w).await;
    let shown_before = before
        .as_ref()
        .map(|t| shows(t, &study.study_instance_uid, &b_home));
    if print {
        println!(
            "  published study {} ({}) at {b_name}; on {a_name}'s timeline before the notification: {}",
            study.study_instance_uid,
            study.description,
            match &shown_before {
                Ok(true) => "shown".to_owned(),
                Ok(false) => "not found (not registered with Mitz)".to_owned(),
                Err(e) => format!("error: {e}"),
            }
        );
    }
    let registrations_before = step
        .mitz
        .as_ref()
        .map(|m| m.stats().registrations)
        .unwrap_or(0);
    broker.hold(false);
    let settled = tokio::time::timeout(std::time::Duration::from_secs(30), broker.settled())
        .await
        .is_ok();
    let registrations = step
        .mitz
        .as_ref()
        .map(|m| m.stats().registrations)
        .unwrap_or(0);
    let stats = broker.stats();
    let after = fetch_timeline(w).await;
    let shown_after = after
        .as_ref()
        .map(|t| shows(t, &study.study_instance_uid, &b_home));
    if print {
        println!(
            "  broker's ITI-53 Notify delivered {} time(s), {} refused attempt(s); {b_name} registered the patient with Mitz: {} registration(s)",
            stats.delivered, stats.failed_attempts, registrations
        );
        println!(
            "  on {a_name}'s timeline after the notification: {}",
            match &shown_after {
                Ok(true) => format!("shown (source {b_name})"),
                Ok(false) => "NOT FOUND".to_owned(),
                Err(e) => format!("error: {e}"),
            }
        );
    }
    checks.push(Check {
        name: format!("a study new at {b_name}: not found before its DSUB notification, found after"),
        ok: held
            && settled
            && shown_before == Ok(false)
            && shown_after == Ok(true)
            && registrations_before == 0
            && registrations == 1,
        detail: format!(
            "before {shown_before:?}, after {shown_after:?}; Mitz registrations {registrations_before} -> {registrations}; Notify delivered {}, refused {}",
            stats.delivered, stats.failed_attempts
        ),
    });
    step.report = json!({
        "hospital": b_name,
        "broker": broker_url,
        "study": study.study_instance_uid,
        "shownBefore": shown_before.ok(),
        "shownAfter": shown_after.ok(),
        "mitzRegistrations": registrations,
        "notifyDelivered": stats.delivered,
        "notifyRefused": stats.failed_attempts,
    });
    step
}

/// Runs the demo. Returns the process exit status (0 when every check holds).
pub async fn run(opts: DemoOptions) -> i32 {
    let mut world = match world::build(world::Options::demo()).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("demo: {e}");
            return 1;
        }
    };
    if !opts.json {
        println!(
            "DUO demo: four hospitals on loopback, each with its own gateway (mutual TLS, demo CA)"
        );
        for h in &world.hospitals {
            println!(
                "  {} {:<28} URA {} {:<4} gateway {}  ops {}  community {}",
                h.spec.key,
                h.spec.name,
                h.spec.ura,
                match h.spec.kind {
                    Kind::Xds => "XDS",
                    Kind::Tlb => "TLB",
                },
                h.gateway_url(),
                h.ops_url(),
                h.home
            );
        }
        println!(
            "  Mitz simulator https://localhost:{}",
            world.mitz.local_addr().port()
        );
    }
    let (mut checks, mut report) = exercise(&world).await;
    if !opts.json {
        print_table(&report, &checks);
    }
    let before = checks.len();
    let dsub = dsub_step(&mut world, &mut checks, !opts.json).await;
    report["dsub"] = dsub.report.clone();
    report["checks"] = json!(checks);
    let ok = !checks.is_empty() && checks.iter().all(|c| c.ok);
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for c in &checks[before..] {
            println!(
                "  [{}] {}: {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let denied = report["audit"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|r| r["outcome"] == "denied")
                    .count()
            })
            .unwrap_or(0);
        println!(
            "\nAudit: {} records written ({} denials); files in {}{}",
            report["audit"]
                .as_object()
                .map(|m| m
                    .values()
                    .map(|v| v.as_array().map(Vec::len).unwrap_or(0))
                    .sum::<usize>())
                .unwrap_or(0),
            denied,
            world.dir.path().display(),
            if opts.once { " (removed on exit)" } else { "" }
        );
    }
    if !opts.once {
        if !opts.json {
            println!(
                "\nServing until Ctrl-C. Try: curl --cacert {0}/ca.crt --cert {0}/viewer-A.crt --key {0}/viewer-A.key -H 'X-DUO-Requester-UZI: 900000001' -H 'X-DUO-Requester-Role: 01.015' {1}/api/v1/patients/{2}/timeline",
                world.dir.path().display(),
                world.hospitals[0].gateway_url(),
                world.patient.bsn
            );
        }
        crate::server::run::shutdown_signal().await;
    }
    dsub.stop().await;
    world.stop().await;
    if ok { 0 } else { 1 }
}
