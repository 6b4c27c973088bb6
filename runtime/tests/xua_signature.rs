//! Signed XUA assertions out, verified assertions in (issue 13), with real parts:
//!
//! - xmlsec1 (Debian `xmlsec1`) verifies every kind of assertion the gateway signs (RSA 2048 / 4096 and
//!   EC P-256 keys made by `openssl`), both as the signer makes them and as they travel on the wire
//!   (ITI-38 / ITI-39 / RAD-75 to a community, the assertion to the local TLB node, the Mitz open
//!   question);
//! - the gateway's verifier accepts what xmlsec1 signs (also inside a SOAP envelope whose namespace
//!   declarations the signature depends on), and refuses it when xmlsec1 signed with a key that is not in
//!   the trust list;
//! - a corpus of forged assertions is refused by a running responding gateway with the right
//!   WS-Security fault code, audited with the reason, counted, and Mitz is never asked.
//!
//! Without xmlsec1 / openssl the tests that need them say so and skip; with `CI` or
//! `DUO_REQUIRE_TOOLS=1` they fail.

mod common;
mod gateway_support;
mod sim_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use duo_runtime::audit::Outcome;
use duo_runtime::consent::Decision;
use duo_runtime::ihe::FaultCode;
use duo_runtime::ihe::query::ReturnType;
use duo_runtime::ihe::retrieve::{
    DocumentRequest, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest, SeriesRequest,
    StudyRequest,
};
use duo_runtime::ihe::soap::Transaction;
use duo_runtime::ihe::xua::{
    self, MITZ_AUDIENCE, Validation, XuaAssertion, XuaError, security_block,
};
use duo_runtime::ihe::xua_dsig::{TrustedIssuer, XmlDsigSigner, XmlDsigVerifier};
use duo_runtime::model::{Bsn, Requester};
use gateway_support::*;
use jiff::{SignedDuration, Timestamp};
use sim_support::tool;

const SAML_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion";

/// A key pair made by openssl: `kind` is `rsa:2048`, `rsa:4096` or `ec`.
struct KeyPair {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

impl KeyPair {
    fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert).unwrap()
    }
    fn signer(&self) -> XmlDsigSigner {
        XmlDsigSigner::from_files(&self.cert, &self.key).unwrap()
    }
    fn trusted(&self, issuer: &str) -> TrustedIssuer {
        TrustedIssuer::from_pem(issuer, &self.cert_pem()).unwrap()
    }
}

fn openssl_key(dir: &Path, openssl: &Path, name: &str, kind: &str) -> KeyPair {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let mut cmd = Command::new(openssl);
    cmd.args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/O=Test IdP/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    if kind == "ec" {
        cmd.args([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-sha256",
        ]);
    } else {
        cmd.args(["-newkey", kind, "-sha256"]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "openssl req {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    KeyPair {
        name: name.into(),
        cert,
        key,
    }
}

/// Runs xmlsec1 `--verify` on `file` with `trusted` as the only trusted certificate; the signature is
/// found by the assertion's `ID` attribute. Returns (success, output).
fn xmlsec_verify(xmlsec1: &Path, file: &Path, trusted: &Path) -> (bool, String) {
    let out = Command::new(xmlsec1)
        .args(["--verify", "--id-attr:ID", SAML_ASSERTION, "--trusted-pem"])
        .arg(trusted)
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn professional() -> Requester {
    Requester {
        uzi: "000095254".parse().unwrap(),
        role: "01.039".parse().unwrap(),
        ura: "00000666".parse().unwrap(),
        facility_type: "V6".parse().unwrap(),
        purpose_of_use: Default::default(),
        name: Some("Dr. A. de Vries & \"zn\" <radioloog> — ë".into()),
    }
}

/// The shapes of assertion the gateway issues (initiating.rs, responding.rs, localization): to a
/// community for a query (patient and data category) or a retrieve (patient), to the local TLB node,
/// to Mitz (no patient), and one with a mandating professional.
fn kinds(issuer: &str) -> Vec<(&'static str, XuaAssertion)> {
    // SAML instants are written in milliseconds
    let now = Timestamp::now().round(jiff::Unit::Millisecond).unwrap();
    let bsn: Bsn = "900186021".parse().unwrap();
    let community = |aud: &str| XuaAssertion::new(professional(), issuer, aud, now);
    let mut query = community("urn:oid:1.2.3.4.2");
    query.patient = Some(bsn.clone());
    query.event_codes = vec!["GGC002".parse().unwrap()];
    let mut retrieve = community("urn:oid:1.2.3.4.2");
    retrieve.patient = Some(bsn.clone());
    let mut tlb = community("urn:oid:1.2.3.4.99");
    tlb.patient = Some(bsn);
    let mitz = community(MITZ_AUDIENCE);
    let mut mandated = community("urn:oid:1.2.3.4.2");
    mandated.mandated = Some("123456782".parse().unwrap());
    vec![
        ("ITI-38 to a community", query),
        ("ITI-39 / RAD-75 to a community", retrieve),
        ("to the local TLB node", tlb),
        ("Mitz open question", mitz),
        ("with a mandating professional", mandated),
    ]
}

fn keys(dir: &Path) -> Option<Vec<KeyPair>> {
    let openssl = tool("openssl")?;
    Some(vec![
        openssl_key(dir, &openssl, "rsa2048", "rsa:2048"),
        openssl_key(dir, &openssl, "rsa4096", "rsa:4096"),
        openssl_key(dir, &openssl, "ec-p256", "ec"),
    ])
}

#[test]
fn xmlsec1_verifies_every_kind_of_assertion_the_gateway_signs() {
    let Some(xmlsec1) = tool("xmlsec1") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(keys) = keys(dir.path()) else { return };
    let issuer = "urn:oid:1.2.3.4.1";
    for k in &keys {
        let signer = k.signer();
        let other = keys.iter().find(|o| o.name != k.name).unwrap();
        for (kind, a) in kinds(issuer) {
            let block = a.security_header(&signer).unwrap();
            let file = dir.path().join(format!("{}-{}.xml", k.name, kind.len()));
            std::fs::write(&file, &block).unwrap();
            let (ok, out) = xmlsec_verify(&xmlsec1, &file, &k.cert);
            assert!(
                ok,
                "{} / {kind}: xmlsec1 refused our signature: {out}",
                k.name
            );
            // xmlsec1 really checks: another certificate does not verify it
            let (ok, _) = xmlsec_verify(&xmlsec1, &file, &other.cert);
            assert!(
                !ok,
                "{} / {kind}: xmlsec1 verified with the wrong key",
                k.name
            );
            // and our own verifier reads back exactly what was signed
            let trusted = k.trusted(issuer);
            let v = XmlDsigVerifier {
                issuers: vec![&trusted],
                allow_unsigned: false,
                now: Timestamp::now(),
            };
            let back = xua::parse_security_header(&block, &Validation::now(), &v).unwrap();
            assert_eq!(back, a, "{} / {kind}", k.name);
        }
        let expected = if k.name.starts_with("rsa") {
            "rsa-sha256"
        } else {
            "ecdsa-sha256"
        };
        assert!(signer.signature_method().ends_with(expected), "{}", k.name);
    }
}

/// A signature template in another implementation's shape: prefix `dsig`, declared on the Signature, an
/// X509Certificate to be filled in, and (when `prefix_list`) exclusive C14N with PrefixList `xs`.
fn xmlsec_template(id: &str, method: &str, prefix_list: bool) -> String {
    let incl = if prefix_list {
        r#"<InclusiveNamespaces xmlns="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/>"#
    } else {
        ""
    };
    format!(
        r##"<dsig:Signature xmlns:dsig="http://www.w3.org/2000/09/xmldsig#"><dsig:SignedInfo><dsig:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><dsig:SignatureMethod Algorithm="{method}"/><dsig:Reference URI="#{id}"><dsig:Transforms><dsig:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><dsig:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#">{incl}</dsig:Transform></dsig:Transforms><dsig:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><dsig:DigestValue/></dsig:Reference></dsig:SignedInfo><dsig:SignatureValue/><dsig:KeyInfo><dsig:X509Data><dsig:X509Certificate/></dsig:X509Data></dsig:KeyInfo></dsig:Signature>"##
    )
}

fn method_of(k: &KeyPair) -> &'static str {
    if k.name.starts_with("rsa") {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    } else {
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    }
}

/// Inserts `template` after the assertion's `</saml2:Issuer>`.
fn with_template(assertion_xml: &str, template: &str) -> String {
    let at = assertion_xml.find("</saml2:Issuer>").unwrap() + "</saml2:Issuer>".len();
    format!("{}{template}{}", &assertion_xml[..at], &assertion_xml[at..])
}

fn xmlsec_sign(xmlsec1: &Path, dir: &Path, k: &KeyPair, doc: &str) -> String {
    let input = dir.join(format!("template-{}.xml", k.name));
    let output = dir.join(format!("signed-{}.xml", k.name));
    std::fs::write(&input, doc).unwrap();
    let out = Command::new(xmlsec1)
        .arg("--sign")
        .arg("--privkey-pem")
        .arg(format!("{},{}", k.key.display(), k.cert.display()))
        .args(["--id-attr:ID", SAML_ASSERTION, "--output"])
        .arg(&output)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xmlsec1 --sign ({}): {}",
        k.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = std::fs::read_to_string(&output).unwrap();
    // xmlsec1 writes an XML declaration; the header block is an element
    match signed.find("?>") {
        Some(i) if signed.starts_with("<?xml") => signed[i + 2..].trim_start().to_owned(),
        _ => signed,
    }
}

#[test]
fn the_gateway_verifies_what_xmlsec1_signs_and_refuses_an_untrusted_key() {
    let Some(xmlsec1) = tool("xmlsec1") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(keys) = keys(dir.path()) else { return };
    let issuer = "urn:oid:1.2.3.4.1";
    for k in &keys {
        let other = keys.iter().find(|o| o.name != k.name).unwrap();
        let (_, a) = kinds(issuer).remove(0);
        let doc = with_template(&a.to_xml(), &xmlsec_template(&a.id, method_of(k), true));
        let signed = xmlsec_sign(&xmlsec1, dir.path(), k, &doc);
        let block = security_block(&signed);
        let trusted = k.trusted(issuer);
        let ok = XmlDsigVerifier {
            issuers: vec![&trusted],
            allow_unsigned: false,
            now: Timestamp::now(),
        };
        let back = xua::parse_security_header(&block, &Validation::now(), &ok)
            .unwrap_or_else(|e| panic!("{}: xmlsec1's signature refused: {e}", k.name));
        assert_eq!(back, a, "{}", k.name);

        // the same issuer name, but the trust list holds another key: refused
        let wrong = other.trusted(issuer);
        let refuse = XmlDsigVerifier {
            issuers: vec![&wrong],
            allow_unsigned: false,
            now: Timestamp::now(),
        };
        let e = xua::parse_security_header(&block, &Validation::now(), &refuse).unwrap_err();
        assert_eq!(
            e.wsse_fault_code(),
            "wsse:FailedAuthentication",
            "{}: {e}",
            k.name
        );
        // a trusted key under another issuer name does not make this issuer trusted
        let renamed = k.trusted("urn:oid:9.9.9");
        let v = XmlDsigVerifier {
            issuers: vec![&renamed],
            allow_unsigned: false,
            now: Timestamp::now(),
        };
        let e = xua::parse_security_header(&block, &Validation::now(), &v).unwrap_err();
        assert!(matches!(e, XuaError::UntrustedIssuer(_)), "{}: {e}", k.name);
    }

    // signed in place inside a SOAP envelope that declares `xs` (named in the PrefixList) and `saml2`
    // for the assertion: the gateway reads the header block out of the envelope and still verifies it
    let k = &keys[0];
    let (_, a) = kinds(issuer).remove(0);
    let assertion = a
        .to_xml()
        .replacen(
            " xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\"",
            "",
            1,
        )
        .replacen(" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\"", "", 1);
    let assertion = with_template(&assertion, &xmlsec_template(&a.id, method_of(k), true));
    let envelope = format!(
        r#"<S:Envelope xmlns:S="http://www.w3.org/2003/05/soap-envelope" xmlns:A="http://www.w3.org/2005/08/addressing" xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs="http://www.w3.org/2001/XMLSchema"><S:Header><A:Action S:mustUnderstand="true">urn:ihe:iti:2007:CrossGatewayQuery</A:Action><A:MessageID>urn:uuid:1</A:MessageID><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">{assertion}</wsse:Security></S:Header><S:Body><q:AdhocQueryRequest xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"/></S:Body></S:Envelope>"#
    );
    let signed = xmlsec_sign(&xmlsec1, dir.path(), k, &envelope);
    let (h, _) = duo_runtime::ihe::soap::read_envelope(
        signed.as_bytes(),
        &duo_runtime::xml::Limits::default(),
        |r, e| r.skip(&e),
    )
    .unwrap();
    let trusted = k.trusted(issuer);
    let v = XmlDsigVerifier {
        issuers: vec![&trusted],
        allow_unsigned: false,
        now: Timestamp::now(),
    };
    let back = xua::from_soap_header(&h, &Validation::now(), &v)
        .unwrap_or_else(|e| panic!("signed inside an envelope: {e}"));
    assert_eq!(back, a);
}

// --- the forged corpus, against a running responding gateway --------------------------------------

/// A signature of `k` over `assertion` as the gateway writes it.
fn sign_with(signer: &XmlDsigSigner, a: &XuaAssertion) -> String {
    a.security_header(signer).unwrap()
}

/// Replaces the first `from` in `block` (which must hold it).
fn tamper(block: &str, from: &str, to: &str) -> String {
    assert!(block.contains(from), "{from:?} not in {block}");
    block.replacen(from, to, 1)
}

/// The assertion element of a Security block.
fn assertion_in(block: &str) -> &str {
    let start = block.find("<saml2:Assertion").unwrap();
    let end = block.rfind("</saml2:Assertion>").unwrap() + "</saml2:Assertion>".len();
    &block[start..end]
}

#[tokio::test]
async fn forged_assertions_are_refused_with_the_right_fault_and_mitz_is_not_asked() {
    let Some(openssl) = tool("openssl") else {
        return;
    };
    let w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 1, Decision::Permit),
            spec("C", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::AllCommunities,
    ))
    .await;
    let (a_i, b_i, c_i) = (0, 1, 2);
    let bsn = w.patient.bsn.clone();
    let r = requester(&w, b_i);
    let aud = w.hospitals[a_i].home.to_string();
    let query = find_documents(&bsn, None, ReturnType::LeafClass);
    let url = format!("{}/xca/iti38", w.hospitals[a_i].gateway_url());
    let send = |blocks: Vec<String>| {
        let client = gateway_client(&w, b_i);
        let url = url.clone();
        let query = query.clone();
        async move { soap(&client, &url, Transaction::Iti38, blocks, &query).await }
    };

    // the baseline: B's gateway signs, A trusts B's issuer: served, after Mitz was asked
    let before = w.mitz.stats().closed_questions;
    let good = send(vec![signed_xua(&w, b_i, &r, Some(&bsn), &aud)]).await;
    let resp = good.query(Transaction::Iti38);
    assert!(!resp.objects.is_empty(), "the signed request is served");
    let asked = w.mitz.stats().closed_questions;
    assert!(asked > before, "Mitz asked for the signed request");

    let b_signer = signer_of(&w, b_i);
    let c_signer = signer_of(&w, c_i);
    let base = assertion_of(&w, b_i, &r, Some(&bsn), &aud);
    let signed = sign_with(&b_signer, &base);
    let dir = tempfile::tempdir().unwrap();
    let stranger = openssl_key(dir.path(), &openssl, "stranger", "rsa:2048").signer();
    let with = |f: &dyn Fn(&mut XuaAssertion)| {
        let mut a = base.clone();
        a.id = format!("_{}", uuid::Uuid::new_v4().simple());
        f(&mut a);
        sign_with(&b_signer, &a)
    };
    let now = Timestamp::now();
    let mins = |m: i64| SignedDuration::from_mins(m);
    let sig_value = {
        let s = signed.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
        signed[s..s + 8].to_owned()
    };
    let evil = {
        let mut e = base.clone();
        e.id = "_evil".into();
        e.requester.uzi = "999999990".parse().unwrap();
        e.to_xml()
    };
    let signed_assertion = assertion_in(&signed).to_owned();

    const FAILED: &str = "wsse:FailedAuthentication";
    const INVALID: &str = "wsse:InvalidSecurityToken";
    const UNAVAILABLE: &str = "wsse:SecurityTokenUnavailable";
    let cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            "no Security header",
            vec![],
            UNAVAILABLE,
            "no WS-Security header",
        ),
        (
            "Security without an assertion",
            vec![tamper(&signed, &signed_assertion, "")],
            UNAVAILABLE,
            "holds no SAML",
        ),
        (
            "unsigned",
            vec![security_block(&base.to_xml())],
            FAILED,
            "not signed",
        ),
        (
            "garbage ds:Signature",
            vec![security_block(&with_template(
                &base.to_xml(),
                r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">garbage</ds:Signature>"#,
            ))],
            FAILED,
            "signature",
        ),
        (
            "wrong signature value",
            vec![tamper(
                &signed,
                &format!("<ds:SignatureValue>{sig_value}"),
                &format!(
                    "<ds:SignatureValue>{}",
                    sig_value.chars().rev().collect::<String>()
                ),
            )],
            FAILED,
            "signature",
        ),
        (
            "attribute changed after signing (another UZI number)",
            vec![tamper(
                &signed,
                "extension=\"900000002\"",
                "extension=\"999999990\"",
            )],
            FAILED,
            "digest",
        ),
        (
            "signed by a key not in the trust list",
            vec![sign_with(&stranger, &base)],
            FAILED,
            "signature",
        ),
        (
            "signed by another community's trusted key, under B's issuer name",
            vec![sign_with(&c_signer, &base)],
            FAILED,
            "signature",
        ),
        (
            "issuer of another community, signed by its own key, sent over B's connection",
            vec![sign_with(&c_signer, &{
                let mut a = base.clone();
                a.issuer = w.hospitals[c_i].config.xua_issuer();
                a
            })],
            FAILED,
            "not trusted",
        ),
        (
            "unknown issuer",
            vec![with(&|a| {
                a.issuer = "urn:oid:2.16.840.1.113883.2.4.3.999".into()
            })],
            FAILED,
            "not trusted",
        ),
        (
            "two assertions side by side (XSW: the evil one first)",
            vec![tamper(
                &signed,
                "<saml2:Assertion",
                &format!("{evil}<saml2:Assertion"),
            )],
            INVALID,
            "2 SAML assertions",
        ),
        (
            "XSW: the signed assertion wrapped inside the evil one (saml2:Advice)",
            vec![security_block(&tamper(
                &evil,
                "<saml2:Subject>",
                &format!("<saml2:Advice>{signed_assertion}</saml2:Advice><saml2:Subject>"),
            ))],
            INVALID,
            "2 SAML assertions",
        ),
        (
            "XSW: evil assertion carrying the signed one's signature, the original hidden in ds:Object",
            vec![{
                let sig_start = signed_assertion.find("<ds:Signature").unwrap();
                let sig_end =
                    signed_assertion.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
                let sig = &signed_assertion[sig_start..sig_end];
                let hidden = sig.replace(
                    "</ds:Signature>",
                    &format!("<ds:Object>{signed_assertion}</ds:Object></ds:Signature>"),
                );
                let evil_same_id = evil.replace("ID=\"_evil\"", &format!("ID=\"{}\"", base.id));
                security_block(&with_template(&evil_same_id, &hidden))
            }],
            INVALID,
            "2 SAML assertions",
        ),
        (
            "XSW: two wsse:Security blocks, the evil one unsigned",
            vec![security_block(&evil), signed.clone()],
            INVALID,
            "more than one wsse:Security",
        ),
        (
            "XSW: reference to the whole document instead of the assertion's ID",
            vec![tamper(
                &signed,
                &format!("URI=\"#{}\"", base.id),
                "URI=\"\"",
            )],
            FAILED,
            "reference URI",
        ),
        (
            "XSW: reference to another element's ID inside the assertion",
            vec![tamper(
                &tamper(
                    &signed,
                    &format!("URI=\"#{}\"", base.id),
                    "URI=\"#_subject\"",
                ),
                "<saml2:Subject>",
                "<saml2:Subject ID=\"_subject\">",
            )],
            FAILED,
            "reference URI",
        ),
        (
            "XSW: an XPath transform added",
            vec![tamper(
                &signed,
                "<ds:Transforms>",
                "<ds:Transforms><ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"><ds:XPath>1</ds:XPath></ds:Transform>",
            )],
            FAILED,
            "Transform",
        ),
        (
            "HMAC signature method",
            vec![tamper(
                &signed,
                b_signer.signature_method(),
                "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
            )],
            FAILED,
            "SignatureMethod",
        ),
        (
            "wrong audience",
            vec![with(&|a| a.audiences = vec!["urn:oid:1.2.3.4.5.6".into()])],
            INVALID,
            "audience",
        ),
        (
            "expired",
            vec![with(&|a| {
                a.issue_instant = now - mins(30);
                a.not_before = now - mins(30);
                a.not_on_or_after = now - mins(20);
            })],
            INVALID,
            "expired",
        ),
        (
            "not yet valid",
            vec![with(&|a| {
                a.issue_instant = now + mins(20);
                a.not_before = now + mins(20);
                a.not_on_or_after = now + mins(25);
            })],
            INVALID,
            "not valid before",
        ),
        (
            "too long-lived (ten years)",
            vec![with(&|a| {
                a.not_on_or_after = now + SignedDuration::from_hours(24 * 3650);
            })],
            INVALID,
            "lifetime",
        ),
        (
            "unknown role",
            vec![with(&|a| a.requester.role = "01.999".parse().unwrap())],
            INVALID,
            "RoleCodeNL",
        ),
        (
            "purpose of use HRESCH",
            vec![with(&|a| {
                a.requester.purpose_of_use = "HRESCH".parse().unwrap()
            })],
            INVALID,
            "purpose of use",
        ),
        (
            "purpose of use EMER",
            vec![with(&|a| {
                a.requester.purpose_of_use = "EMER".parse().unwrap()
            })],
            INVALID,
            "purpose of use",
        ),
    ];
    let mut report = Vec::new();
    for (name, blocks, code, reason) in &cases {
        let a = send(blocks.clone()).await;
        let verdict = if a.status == 400 {
            let f = a.fault();
            let ok = f.code == FaultCode::Sender
                && f.subcode.as_deref() == Some(*code)
                && f.reason.contains(reason);
            (ok, format!("{:?} {}", f.subcode, f.reason))
        } else {
            (false, format!("HTTP {}: {}", a.status, a.text()))
        };
        report.push(format!(
            "{:<5} {name:<90} expected {code}: {}",
            if verdict.0 { "ok" } else { "FAIL" },
            verdict.1
        ));
        if !verdict.0 {
            eprintln!("{}", report.join("\n"));
            panic!("{name}: expected {code} ({reason}), got {}", verdict.1);
        }
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(
        w.mitz.stats().closed_questions,
        asked,
        "Mitz was asked for a refused request"
    );
    // every refusal is audited at A with its reason, and counted by fault code
    let audit = audit(&w.hospitals[a_i]);
    let refused: Vec<_> = audit
        .iter()
        .filter(|r| r.outcome == Outcome::Failure)
        .filter_map(|r| r.outcome_detail.clone())
        .filter(|d| d.starts_with("refused: XUA assertion"))
        .collect();
    assert_eq!(refused.len(), cases.len(), "{refused:#?}");
    assert!(
        refused.iter().any(|d| d.contains("lifetime")),
        "{refused:#?}"
    );
    let m = metrics_text(&w.hospitals[a_i]).await;
    let total: f64 = [FAILED, INVALID, UNAVAILABLE]
        .iter()
        .map(|c| metric(&m, "duo_xua_refusals_total", &[("code", c)]))
        .sum();
    assert_eq!(total as usize, cases.len());
    assert_eq!(metric(&m, "duo_xua_unsigned_allowed", &[]), 0.0);
    w.stop().await;
}

/// Every outbound assertion as it travels: ITI-38, ITI-39 and RAD-75 to a community (a TLB node
/// simulator configured as a remote community records them), the assertion a TLB hospital's gateway
/// sends its local node, and the Mitz open question; each envelope exactly as received is verified by
/// xmlsec1 with the sending gateway's certificate as the only trusted one.
#[tokio::test]
async fn xmlsec1_verifies_the_assertions_on_the_wire() {
    let Some(xmlsec1) = tool("xmlsec1") else {
        return;
    };
    let mut w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Tlb, 1, Decision::Permit),
        ],
        LocalizationMode::Mitz,
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bsn = w.patient.bsn.clone();
    clear_logs(&w);
    let r = requester(&w, 0);
    // the timeline asks Mitz (open question), then B, whose gateway asks its TLB node
    let t = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let open = w.mitz.last_open_question().expect("an open question");
    // B's node simulator as an extra community of A, recording what A sends it
    let node = node_community(&w, 1, 5_000);
    w.reconfigure(0, |c| {
        c.initiating.localization = LocalizationMode::AllCommunities;
        c.communities.push(node.clone());
    })
    .await
    .unwrap();
    let t = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(t.status, 200, "{}", t.text());
    // RAD-69 and ITI-43 for a document of the node, routed as RAD-75 / ITI-39 to it
    let doc = DocumentRequest {
        home_community_id: Some(node.home_community_id.clone()),
        repository_unique_id: "1.2.3.4".into(),
        document_unique_id: "1.2.3.1.1".into(),
    };
    let req = RetrieveImagingDocumentSetRequest {
        studies: vec![StudyRequest {
            study_instance_uid: "1.2.3".into(),
            series: vec![SeriesRequest {
                series_instance_uid: "1.2.3.1".into(),
                documents: vec![doc.clone()],
            }],
        }],
        transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
    };
    let _ = local(&w, 0, Transaction::Rad69, Some(&r), Some(&bsn), &req).await;
    let iti43 = RetrieveDocumentSetRequest {
        documents: vec![doc],
    };
    let _ = local(&w, 0, Transaction::Iti43, Some(&r), Some(&bsn), &iti43).await;

    // xmlsec1 checks the signature with the KeyInfo certificate, which must chain to the demo CA; that
    // certificate must be the sending gateway's own
    let check = |what: &str, body: &[u8], cert: &Path| {
        let file = dir
            .path()
            .join(format!("{}.xml", what.replace([' ', '/'], "_")));
        std::fs::write(&file, body).unwrap();
        let (ok, out) = xmlsec_verify(&xmlsec1, &file, &w.ca_file);
        assert!(
            ok,
            "{what}: xmlsec1 refused the assertion on the wire: {out}"
        );
        let pem = std::fs::read_to_string(cert).unwrap();
        let leaf = duo_runtime::pki::parse_certificates(pem.as_bytes()).unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(leaf[0].as_ref());
        let text = String::from_utf8_lossy(body);
        assert!(
            text.contains(&format!("X509Certificate>{b64}<")),
            "{what}: KeyInfo does not hold the sender's certificate"
        );
    };
    let a_cert = w.hospitals[0].config.server.tls.cert_file.clone();
    let b_cert = w.hospitals[1].config.server.tls.cert_file.clone();
    // A's requests to the recording node (a remote community of A)
    let mut seen = std::collections::BTreeSet::new();
    for rec in w.hospitals[1].control.recorded() {
        let Some(h) = &rec.soap_header else { continue };
        let blocks = h.other.iter().filter(|b| b.contains("Assertion")).count();
        if blocks == 0 {
            continue;
        }
        // the node is both B's local node and A's remote community: the issuer says who sent it
        let body = String::from_utf8_lossy(&rec.body).into_owned();
        let from_a = body.contains(&format!(
            "<saml2:Issuer>{}</saml2:Issuer>",
            w.hospitals[0].config.xua_issuer()
        ));
        let cert = if from_a { &a_cert } else { &b_cert };
        let what = format!(
            "{} from {} {:?}",
            if from_a {
                "community"
            } else {
                "local TLB node"
            },
            if from_a { "A" } else { "B" },
            rec.endpoint
        );
        // the root part of an MTOM request, the body itself otherwise
        let (root, _) = duo_runtime::ihe::mtom::soap_envelope(
            rec.content_type
                .as_deref()
                .unwrap_or("application/soap+xml"),
            rec.body.clone(),
            &duo_runtime::ihe::mtom::MtomLimits::default(),
        )
        .unwrap();
        check(&what, &root, cert);
        seen.insert(format!(
            "{} {:?}",
            if from_a { "A" } else { "B" },
            rec.endpoint
        ));
    }
    for must in ["A Iti38", "A Iti39", "A Rad75", "B Iti38"] {
        assert!(
            seen.contains(must),
            "no signed {must} request recorded: {seen:?}"
        );
    }
    // the Mitz open question A asked
    check("Mitz open question", &open, &a_cert);
    w.stop().await;
}
