//! Cost of the Mitz and audit codecs on the request path: writing the closed question, reading its
//! answer, building and parsing an XUA assertion, signing and verifying it (RSA 2048 / 4096 and EC P-256
//! keys made by `openssl`, when it is installed), and building an ATNA audit message.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use duo_runtime::audit::{AuditEvent, AuditRecord, AuditSource, Side, atna};
use duo_runtime::consent::xacml::{self, ClosedQuestion};
use duo_runtime::ihe::soap::Transaction;
use duo_runtime::ihe::xua::{
    self, SignatureNotChecked, UnsignedAssertions, Validation, XuaAssertion,
};
use duo_runtime::ihe::xua_dsig::{TrustedIssuer, XmlDsigSigner, XmlDsigVerifier};
use duo_runtime::model::Requester;
use duo_runtime::xml::Limits;

fn requester() -> Requester {
    Requester {
        uzi: "000095254".parse().unwrap(),
        role: "01.015".parse().unwrap(),
        ura: "00000666".parse().unwrap(),
        facility_type: "Z3".parse().unwrap(),
        purpose_of_use: Default::default(),
        name: None,
    }
}

fn bench(c: &mut Criterion) {
    let q = ClosedQuestion {
        patient: "900186021".parse().unwrap(),
        holder_ura: "00000659".parse().unwrap(),
        holder_facility_type: "Z3".parse().unwrap(),
        categories: vec!["GGC002".parse().unwrap()],
        requester: requester(),
        mandated: None,
    };
    c.bench_function("xacml_write_closed_question", |b| {
        b.iter(|| xacml::write_closed_question(black_box(&q), "urn:uuid:1", "https://mitz/x"))
    });
    let answer = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/mitz/xacml/derived/xacml-response-permit.xml"
    ))
    .unwrap();
    let limits = Limits::default();
    c.bench_function("xacml_read_closed_answer", |b| {
        b.iter(|| xacml::read_closed_answer(black_box(&answer), &q, &limits).unwrap())
    });
    let now = jiff::Timestamp::now();
    c.bench_function("xua_build_security_header", |b| {
        b.iter(|| {
            XuaAssertion::new(requester(), "urn:oid:1.2.3", xua::MITZ_AUDIENCE, now)
                .security_header(&UnsignedAssertions)
                .unwrap()
        })
    });
    let block = XuaAssertion::new(requester(), "urn:oid:1.2.3", xua::MITZ_AUDIENCE, now)
        .security_header(&UnsignedAssertions)
        .unwrap();
    let v = Validation::at(now);
    c.bench_function("xua_parse_security_header", |b| {
        b.iter(|| xua::parse_security_header(black_box(&block), &v, &SignatureNotChecked).unwrap())
    });
    xua_signatures(c, now);
    let mut rec = AuditRecord::new(AuditEvent::Query, Transaction::Iti38, Side::Responding);
    rec.requester = Some((&requester()).into());
    rec.patient = Some("900186021".parse().unwrap());
    rec.document_ids = (0..20).map(|i| format!("1.2.3.{i}")).collect();
    let source = AuditSource {
        source_id: "urn:oid:1.2.3".into(),
        enterprise_site_id: "00000659".into(),
    };
    c.bench_function("atna_audit_message_20_documents", |b| {
        b.iter(|| atna::audit_message(black_box(&rec), &source))
    });
    c.bench_function("audit_record_json_20_documents", |b| {
        b.iter(|| serde_json::to_string(black_box(&rec)).unwrap())
    });
}

/// Signing an assertion (every outbound request) and verifying one (every inbound request).
fn xua_signatures(c: &mut Criterion, now: jiff::Timestamp) {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("rsa2048", &["-newkey", "rsa:2048"][..]),
        ("rsa4096", &["-newkey", "rsa:4096"][..]),
        (
            "ec_p256",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
    ] {
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=bench"])
            .args(args)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output();
        if !made.is_ok_and(|o| o.status.success()) {
            eprintln!("openssl not available: no signature benchmarks");
            return;
        }
        let signer = XmlDsigSigner::from_files(&cert, &key).unwrap();
        let a = XuaAssertion::new(requester(), "urn:oid:1.2.3", xua::MITZ_AUDIENCE, now);
        c.bench_function(&format!("xua_sign_{name}"), |b| {
            b.iter(|| black_box(&a).security_header(&signer).unwrap())
        });
        let block = a.security_header(&signer).unwrap();
        let trusted =
            TrustedIssuer::from_pem("urn:oid:1.2.3", &std::fs::read_to_string(&cert).unwrap())
                .unwrap();
        let verifier = XmlDsigVerifier {
            issuers: vec![&trusted],
            allow_unsigned: false,
            now,
        };
        let v = Validation::at(now);
        c.bench_function(&format!("xua_verify_{name}"), |b| {
            b.iter(|| xua::parse_security_header(black_box(&block), &v, &verifier).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
