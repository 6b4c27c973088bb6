use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::config::SyslogConfig;
use crate::consent::{ConsentOutcome, ConsentSource, Decision, MitzError};
use duo_testkit::test_pki::{Pki, requester};
use duo_wire::xml::compare::{Node, tree};

fn source() -> AuditSource {
    AuditSource {
        source_id: "urn:oid:2.16.528.1.1007.3.3.659.1".into(),
        enterprise_site_id: "00000659".into(),
    }
}

fn retrieve_record() -> AuditRecord {
    let mut r = AuditRecord::new(AuditEvent::Retrieve, Transaction::Rad75, Side::Responding);
    r.time = "2025-03-01T10:00:00Z".parse().unwrap();
    r.requester = Some((&requester("00000666")).into());
    r.patient = Some("900186021".parse().unwrap());
    r.data_holder = Some(HolderRecord {
        ura: Some("00000659".parse().unwrap()),
        home_community_id: Some("urn:oid:2.16.528.1.1007.3.3.659.1".parse().unwrap()),
    });
    r.remote_community = Some("urn:oid:2.16.528.1.1007.3.3.666.1".parse().unwrap());
    r.remote_address = Some("192.0.2.10".into());
    r.study_ids = vec!["1.2.840.113619.2.55.3.1".into()];
    r.document_ids = vec!["1.2.840.113619.2.55.3.1.1.1".into()];
    r.message_id = Some("urn:uuid:1".into());
    r
}

fn timeout_decision() -> AuditRecord {
    let o = ConsentOutcome {
        category: "GGC002".parse().unwrap(),
        decision: Decision::Indeterminate,
        source: ConsentSource::Failure(MitzError::Timeout { after_ms: 3000 }),
        detail: None,
    };
    AuditRecord::consent_decision(
        Transaction::Iti38,
        Side::Responding,
        &"900186021".parse().unwrap(),
        Some(&requester("00000666")),
        HolderRecord {
            ura: Some("00000659".parse().unwrap()),
            home_community_id: None,
        },
        &o,
    )
}

#[tokio::test]
async fn records_are_json_lines_written_before_record_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = AuditConfig {
        sink: path.display().to_string(),
        syslog: None,
    };
    let log = AuditLog::from_config(&cfg, source(), None).await.unwrap();
    log.record(&retrieve_record()).await.unwrap();
    // written by the time record() returned
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1);
    log.record(&timeout_decision()).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["time"], "2025-03-01T10:00:00Z");
    assert_eq!(v["event"], "retrieve");
    assert_eq!(v["transaction"], "RAD-75");
    assert_eq!(v["side"], "responding");
    assert_eq!(v["requester"]["ura"], "00000666");
    assert_eq!(v["requester"]["uzi"], "000095254");
    assert_eq!(v["requester"]["role"], "01.015");
    // issue 12, defect 10: the purpose of use is part of the question and of every record
    assert_eq!(v["requester"]["purposeOfUse"], "TREAT");
    assert_eq!(v["patient"], "900186021");
    assert_eq!(v["dataHolder"]["ura"], "00000659");
    assert_eq!(v["studyIds"][0], "1.2.840.113619.2.55.3.1");
    assert_eq!(v["documentIds"][0], "1.2.840.113619.2.55.3.1.1.1");
    assert_eq!(v["outcome"], "success");
    assert!(v.get("consent").is_none());
    let c: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(c["event"], "consentDecision");
    assert_eq!(c["transaction"], "ITI-38");
    assert_eq!(c["outcome"], "denied");
    assert_eq!(c["consent"]["decision"], "Indeterminate");
    assert_eq!(c["consent"]["source"], "failure");
    assert_eq!(c["consent"]["disclosed"], false);
    assert!(
        c["consent"]["reason"].as_str().unwrap().contains("timeout"),
        "{c}"
    );
    // records parse back
    let back: AuditRecord = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(back, retrieve_record());
    // appending: a second log on the same file keeps what is there
    let log2 = AuditLog::from_config(&cfg, source(), None).await.unwrap();
    log2.record(&retrieve_record()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
}

/// Issue 12, defect 10: log rotation renames or deletes the audit file while the gateway runs. Every
/// record after the rotation must land in a new file at the configured path, and no record may be lost:
/// a writer task records 3,000 numbered records while the file is renamed twice and deleted once
/// (after the delete, what was not yet rotated is gone by design; everything written after each step
/// must be at the path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_audit_file_is_reopened_at_its_path_and_no_record_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = AuditConfig {
        sink: path.display().to_string(),
        syslog: None,
    };
    let log = Arc::new(AuditLog::from_config(&cfg, source(), None).await.unwrap());
    let numbered = |i: usize| {
        let mut r = retrieve_record();
        r.message_id = Some(format!("urn:uuid:rotation-{i}"));
        r
    };
    let ids_in = |p: &Path| -> Vec<usize> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let r: AuditRecord = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                r.message_id.unwrap()["urn:uuid:rotation-".len()..]
                    .parse()
                    .unwrap()
            })
            .collect()
    };

    // 1. sequential: rename, then record; delete, then record
    log.record(&numbered(0)).await.unwrap();
    std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
    log.record(&numbered(1)).await.unwrap();
    assert_eq!(ids_in(&dir.path().join("audit.jsonl.1")), [0]);
    assert_eq!(
        ids_in(&path),
        [1],
        "the record after the rename is at the path"
    );
    std::fs::remove_file(&path).unwrap();
    log.record(&numbered(2)).await.unwrap();
    assert_eq!(
        ids_in(&path),
        [2],
        "the record after the delete is at the path"
    );
    std::fs::remove_file(&path).unwrap();

    // 2. concurrent: rotations while a writer records (in three runs of 1,000; a run ends only after
    //    the rotation that started during it, so each rotation happens while records are being written)
    const N: usize = 3_000;
    let (rotated_tx, rotated_rx) = tokio::sync::watch::channel(0usize);
    let writer = {
        let log = log.clone();
        let mut rx = rotated_rx;
        tokio::spawn(async move {
            for i in 10..10 + N {
                log.record(&numbered(i)).await.unwrap();
                let done = i - 9;
                if done % 1_000 == 0 && done < N {
                    let run = done / 1_000;
                    rx.wait_for(|r| *r >= run).await.unwrap();
                }
            }
        })
    };
    let non_empty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
    let mut rotated = Vec::new();
    for k in 0..2 {
        while !non_empty(&path) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let to = dir.path().join(format!("audit.jsonl.r{k}"));
        std::fs::rename(&path, &to).unwrap();
        rotated.push(to);
        rotated_tx.send(k + 1).unwrap();
    }
    writer.await.unwrap();
    let mut all: Vec<usize> = rotated.iter().flat_map(|p| ids_in(p)).collect();
    let at_path = ids_in(&path);
    assert!(
        !at_path.is_empty(),
        "records after the last rotation are at the path"
    );
    all.extend(&at_path);
    all.sort_unstable();
    assert_eq!(
        all,
        (10..10 + N).collect::<Vec<_>>(),
        "every record exactly once"
    );
    // the files hold consecutive runs in order: each rotation split the sequence once
    let mut order: Vec<usize> = rotated.iter().flat_map(|p| ids_in(p)).collect();
    order.extend(at_path);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "records in order across files"
    );
}

#[tokio::test]
async fn an_unwritable_sink_is_an_error() {
    let cfg = AuditConfig {
        sink: "/nonexistent-dir/audit.jsonl".into(),
        syslog: None,
    };
    let e = AuditLog::from_config(&cfg, source(), None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent-dir/audit.jsonl"),
        "{e}"
    );
    // syslog without an identity
    let cfg = AuditConfig {
        sink: "stdout".into(),
        syslog: Some(SyslogConfig {
            address: "127.0.0.1:6514".into(),
            server_name: None,
            trust_bundle_file: "/x".into(),
        }),
    };
    assert!(AuditLog::from_config(&cfg, source(), None).await.is_err());
}

fn child<'a>(n: &'a Node, local: &str) -> Vec<&'a Node> {
    n.children.iter().filter(|c| c.local == local).collect()
}

fn a<'a>(n: &'a Node, k: &str) -> &'a str {
    n.attrs
        .get(&(String::new(), k.to_owned()))
        .map(String::as_str)
        .unwrap_or("")
}

#[test]
fn atna_messages_follow_the_dicom_audit_message_format() {
    let x = atna::audit_message(&retrieve_record(), &source());
    let t = tree(&x);
    assert_eq!(t.local, "AuditMessage");
    assert_eq!(t.ns, "");
    let order: Vec<&str> = t.children.iter().map(|c| c.local.as_str()).collect();
    assert_eq!(
        order,
        vec![
            "EventIdentification",
            "ActiveParticipant",
            "ActiveParticipant",
            "ActiveParticipant",
            "AuditSourceIdentification",
            "ParticipantObjectIdentification",
            "ParticipantObjectIdentification",
            "ParticipantObjectIdentification"
        ]
    );
    let ev = &t.children[0];
    assert_eq!(a(ev, "EventActionCode"), "R");
    assert_eq!(a(ev, "EventOutcomeIndicator"), "0");
    assert_eq!(a(ev, "EventDateTime"), "2025-03-01T10:00:00.000Z");
    let id = child(ev, "EventID")[0];
    assert_eq!(
        (a(id, "csd-code"), a(id, "codeSystemName")),
        ("110106", "DCM")
    );
    let ty = child(ev, "EventTypeCode")[0];
    assert_eq!(
        (a(ty, "csd-code"), a(ty, "codeSystemName")),
        ("RAD-75", "IHE Transactions")
    );
    let purpose = child(ev, "PurposeOfUse")[0];
    assert_eq!(
        (a(purpose, "csd-code"), a(purpose, "codeSystemName")),
        ("TREAT", "2.16.840.1.113883.1.11.20448")
    );
    let names: Vec<&str> = ev.children.iter().map(|c| c.local.as_str()).collect();
    assert_eq!(names.last(), Some(&"PurposeOfUse"), "after the event types");
    // responding side: the source is the calling community, the destination this gateway
    let src = &t.children[1];
    assert_eq!(a(src, "UserID"), "urn:oid:2.16.528.1.1007.3.3.666.1");
    assert_eq!(a(src, "UserIsRequestor"), "true");
    assert_eq!(a(src, "NetworkAccessPointID"), "192.0.2.10");
    assert_eq!(a(src, "NetworkAccessPointTypeCode"), "2");
    assert_eq!(a(child(src, "RoleIDCode")[0], "csd-code"), "110153");
    let human = &t.children[2];
    assert_eq!(a(human, "UserID"), "000095254");
    assert_eq!(a(child(human, "RoleIDCode")[0], "csd-code"), "01.015");
    let dst = &t.children[3];
    assert_eq!(a(dst, "UserID"), "urn:oid:2.16.528.1.1007.3.3.659.1");
    assert_eq!(a(child(dst, "RoleIDCode")[0], "csd-code"), "110152");
    let src_id = &t.children[4];
    assert_eq!(a(src_id, "AuditEnterpriseSiteID"), "00000659");
    let patient = &t.children[5];
    assert_eq!(
        a(patient, "ParticipantObjectID"),
        "900186021^^^&2.16.840.1.113883.2.4.6.3&ISO"
    );
    assert_eq!(
        (
            a(patient, "ParticipantObjectTypeCode"),
            a(patient, "ParticipantObjectTypeCodeRole")
        ),
        ("1", "1")
    );
    let study = &t.children[6];
    assert_eq!(
        a(child(study, "ParticipantObjectIDTypeCode")[0], "csd-code"),
        "110180"
    );
    let doc = &t.children[7];
    assert_eq!(
        a(child(doc, "ParticipantObjectIDTypeCode")[0], "csd-code"),
        "9"
    );
    let detail = child(doc, "ParticipantObjectDetail")[0];
    assert_eq!(a(detail, "type"), "ihe:homeCommunityID");
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(a(detail, "value"))
            .unwrap(),
        b"urn:oid:2.16.528.1.1007.3.3.659.1"
    );

    // the initiating side imports; queries are E/110112; consent decisions carry both event types
    let mut init = retrieve_record();
    init.side = Side::Initiating;
    let t = tree(&atna::audit_message(&init, &source()));
    assert_eq!(a(&t.children[0], "EventActionCode"), "C");
    assert_eq!(a(child(&t.children[0], "EventID")[0], "csd-code"), "110107");
    assert_eq!(
        a(&t.children[1], "UserID"),
        "urn:oid:2.16.528.1.1007.3.3.659.1"
    );
    let t = tree(&atna::audit_message(&timeout_decision(), &source()));
    let ev = &t.children[0];
    assert_eq!(a(ev, "EventActionCode"), "E");
    assert_eq!(a(ev, "EventOutcomeIndicator"), "4");
    assert_eq!(a(child(ev, "EventID")[0], "csd-code"), "110112");
    let types: Vec<&str> = child(ev, "EventTypeCode")
        .iter()
        .map(|c| a(c, "csd-code"))
        .collect();
    assert_eq!(types, vec!["MITZ-CLOSED-QUESTION", "ITI-38"]);
    assert!(
        child(ev, "EventOutcomeDescription")[0]
            .text
            .contains("timeout")
    );
}

#[test]
fn syslog_frames_are_octet_counted_rfc_5424() {
    let f = syslog::frame("<AuditMessage/>", "2025-03-01T10:00:00Z".parse().unwrap());
    let s = String::from_utf8(f).unwrap();
    let (len, msg) = s.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), msg.len());
    assert!(msg.starts_with("<85>1 2025-03-01T10:00:00.000Z "), "{msg}");
    let fields: Vec<&str> = msg.splitn(8, ' ').collect();
    assert_eq!(fields[3], "duo-gateway");
    assert_eq!(fields[4], std::process::id().to_string());
    assert_eq!(fields[5], "IHE+RFC-3881");
    assert_eq!(fields[6], "-");
    assert_eq!(fields[7], "\u{FEFF}<AuditMessage/>");
}

/// An rsyslogd of our own, receiving RFC 5425 (TLS, gtls driver) on a loopback port and writing
/// `pri|app-name|msgid|msg` lines to a file.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rsyslogd() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DUO_RSYSLOGD") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new("/usr/sbin/rsyslogd");
    if p.exists() {
        return Some(p.to_path_buf());
    }
    None
}

fn tools_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var("DUO_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

fn start_rsyslog(bin: &Path, dir: &Path, pki: &Pki) -> Rsyslog {
    let server = pki.leaf("syslog.test", &["localhost", "127.0.0.1"]);
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.join("audit.log");
    let d = dir.display();
    let conf = format!(
        r#"global(
  workDirectory="{d}"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{d}/ca.pem"
  defaultNetstreamDriverCertFile="{d}/server.pem"
  defaultNetstreamDriverKeyFile="{d}/server.key"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
template(name="audit" type="string" string="%pri%|%app-name%|%msgid%|%msg%\n")
ruleset(name="audit") {{
  action(type="omfile" file="{out}" template="audit")
}}
input(type="imtcp" port="{port}" ruleset="audit")
"#,
        out = out.display()
    );
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let check = Command::new(bin)
        .args(["-N1", "-f"])
        .arg(&conf_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "rsyslog config check failed: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf_path)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Rsyslog { child, out, port }
}

#[tokio::test]
async fn atna_messages_reach_a_real_rsyslog_over_tls() {
    let Some(bin) = rsyslogd() else {
        assert!(
            !tools_required(),
            "rsyslogd is required (CI / DUO_REQUIRE_TOOLS=1) but not found"
        );
        eprintln!("SKIP: rsyslogd not found (install rsyslog rsyslog-gnutls or set DUO_RSYSLOGD)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Audit test CA");
    let syslog = start_rsyslog(&bin, dir.path(), &pki);
    let gateway = pki.leaf("gateway.test", &["gateway.test"]);
    let cfg = AuditConfig {
        sink: dir.path().join("audit.jsonl").display().to_string(),
        syslog: Some(SyslogConfig {
            address: format!("127.0.0.1:{}", syslog.port),
            server_name: None,
            trust_bundle_file: dir.path().join("ca.pem"),
        }),
    };
    let log = AuditLog::from_config(&cfg, source(), Some(&pki.material(&gateway)))
        .await
        .unwrap();
    let records = [retrieve_record(), timeout_decision(), retrieve_record()];
    for r in &records {
        log.record(r).await.unwrap();
    }
    log.flush().await;
    assert_eq!(
        log.syslog_stats(),
        Some(SyslogStats {
            sent: 3,
            failed: 0,
            dropped: 0
        })
    );
    // rsyslog writes asynchronously: wait for the three lines
    let deadline = Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let text = std::fs::read_to_string(&syslog.out).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lines.len(), 3, "rsyslog received: {lines:?}");
    for (line, rec) in lines.iter().zip(&records) {
        let mut parts = line.splitn(4, '|');
        assert_eq!(parts.next(), Some("85"), "{line}");
        assert_eq!(parts.next(), Some("duo-gateway"), "{line}");
        assert_eq!(parts.next(), Some("IHE+RFC-3881"), "{line}");
        let msg = parts.next().unwrap().trim_start_matches('\u{FEFF}');
        // the message is the complete audit message of the record
        assert_eq!(msg, atna::audit_message(rec, &source()), "{line}");
    }
    assert!(lines[1].contains("MITZ-CLOSED-QUESTION") && lines[1].contains("timeout"));
}

#[tokio::test]
async fn an_unreachable_syslog_never_blocks_the_json_record() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Audit test CA");
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = SyslogConfig {
        address: format!("127.0.0.1:{port}"),
        server_name: None,
        trust_bundle_file: dir.path().join("ca.pem"),
    };
    let gateway = pki.leaf("gateway.test", &["gateway.test"]);
    let sender = SyslogSender::start(&cfg, &pki.material(&gateway)).unwrap();
    let (log, mem) = AuditLog::memory(source(), Some(sender));
    log.record(&retrieve_record()).await.unwrap();
    assert_eq!(mem.records().len(), 1);
    log.flush().await;
    assert_eq!(
        log.syslog_stats(),
        Some(SyslogStats {
            sent: 0,
            failed: 1,
            dropped: 0
        })
    );
}

#[tokio::test]
async fn a_fifo_at_the_audit_path_is_refused_not_waited_on() {
    // found by the breaking run of issue 12: a FIFO put at the audit path held every request (and
    // the shutdown) waiting for a reader
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let p = path.to_str().unwrap().to_owned();
    let opened = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        super::AuditFile::open(&p),
    )
    .await
    .expect("opening the FIFO blocked");
    let e = opened.err().expect("a FIFO accepted as the audit file");
    assert!(
        e.to_string().contains("not a regular file") || e.raw_os_error() == Some(libc::ENXIO),
        "{e}"
    );
    // a regular file is fine
    let f = dir.path().join("plain.jsonl");
    assert!(super::AuditFile::open(f.to_str().unwrap()).await.is_ok());
}
