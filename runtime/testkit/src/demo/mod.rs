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
//! 4. collects the audit records of every gateway (the denial and its reason included).
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

/// Runs the demo. Returns the process exit status (0 when every check holds).
pub async fn run(opts: DemoOptions) -> i32 {
    let world = match world::build(world::Options::demo()).await {
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
    let (checks, report) = exercise(&world).await;
    let ok = !checks.is_empty() && checks.iter().all(|c| c.ok);
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_table(&report, &checks);
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
    world.stop().await;
    if ok { 0 } else { 1 }
}
