//! Unit tests of the revocation checks with certificates, CRLs and OCSP answers made here (rcgen, the
//! x509-ocsp types), including hostile answers. The end-to-end tests with `openssl ca`, `openssl ocsp`
//! and a running gateway are in `runtime/tests/revocation.rs`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_cert::der::asn1::{BitString, Ia5String, OctetString};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::oid::db::rfc5912::ECDSA_WITH_SHA_256;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspResponse, OcspResponseStatus,
    ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
};

use super::*;
use crate::config::{RevocationConfig, RevocationFallback};

// --- material --------------------------------------------------------------------------------

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(p, key),
    }
}

fn aia(urls: &[&str]) -> CustomExtension {
    let aia = AuthorityInfoAccessSyntax(
        urls.iter()
            .map(|u| x509_cert::ext::pkix::AccessDescription {
                access_method: x509_cert::der::oid::db::rfc5280::ID_AD_OCSP,
                access_location: GeneralName::UniformResourceIdentifier(
                    Ia5String::new(*u).unwrap(),
                ),
            })
            .collect(),
    );
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], aia.to_der().unwrap())
}

/// A server/client certificate of `ca` with serial `serial`, naming these CRL URLs and OCSP responders.
fn leaf(ca: &Ca, serial: u64, dps: &[&str], ocsp: &[&str]) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, format!("leaf {serial}"));
    p.serial_number = Some(SerialNumber::from(serial));
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if !dps.is_empty() {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: dps.iter().map(|s| (*s).to_owned()).collect(),
        }];
    }
    if !ocsp.is_empty() {
        p.custom_extensions.push(aia(ocsp));
    }
    p.signed_by(&key, &ca.issuer).unwrap().der().clone()
}

fn roots(ca: &Ca) -> RootCertStore {
    let mut r = RootCertStore::empty();
    r.add(ca.der.clone()).unwrap();
    r
}

/// rcgen takes `time::OffsetDateTime`; x509-parser converts to it (as in `pki::generate`), so the
/// `time` crate need not be named: now plus `$offset` seconds.
macro_rules! at {
    ($offset:expr) => {
        x509_parser::time::ASN1Time::from_timestamp(jiff::Timestamp::now().as_second() + $offset)
            .unwrap()
            .to_datetime()
    };
}

fn crl(ca: &Ca, revoked: &[u64], next_update_in: i64) -> Vec<u8> {
    crl_at(ca, revoked, -60, next_update_in)
}

/// A CRL of `ca` revoking `revoked`, thisUpdate `this_update_in` seconds from now.
fn crl_at(ca: &Ca, revoked: &[u64], this_update_in: i64, next_update_in: i64) -> Vec<u8> {
    let params = CertificateRevocationListParams {
        this_update: at!(this_update_in),
        next_update: at!(next_update_in),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: at!(-120),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&ca.issuer).unwrap().der().to_vec()
}

fn issuer(ca: &Ca) -> ocsp::Issuer {
    let cert = x509_cert::Certificate::from_der(ca.der.as_ref()).unwrap();
    ocsp::Issuer {
        spki: cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap(),
        anchor: webpki::anchor_from_trusted_cert(&ca.der)
            .unwrap()
            .to_owned(),
    }
}

fn query(ca: &Ca, ee: &CertificateDer<'_>) -> ocsp::Query {
    let cert = x509_cert::Certificate::from_der(ee.as_ref()).unwrap();
    ocsp::query(
        &cert.tbs_certificate.issuer.to_der().unwrap(),
        cert.tbs_certificate.serial_number.as_bytes(),
        issuer(ca),
    )
    .unwrap()
}

fn gt(offset_secs: i64) -> OcspGeneralizedTime {
    let t = SystemTime::now();
    let t = if offset_secs >= 0 {
        t + Duration::from_secs(offset_secs as u64)
    } else {
        t - Duration::from_secs((-offset_secs) as u64)
    };
    OcspGeneralizedTime::try_from(t).unwrap()
}

/// An OCSP answer for `singles` signed by `signer`, carrying `certs`.
fn answer(
    singles: Vec<SingleResponse>,
    signer: &KeyPair,
    certs: Option<Vec<x509_cert::Certificate>>,
) -> Vec<u8> {
    let tbs = ResponseData {
        version: Default::default(),
        responder_id: ResponderId::ByKey(OctetString::new(vec![1; 20]).unwrap()),
        produced_at: gt(0),
        responses: singles,
        response_extensions: None,
    };
    use rcgen::SigningKey;
    let sig = signer.sign(&tbs.to_der().unwrap()).unwrap();
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA_256,
            parameters: None,
        },
        signature: BitString::from_bytes(&sig).unwrap(),
        certs,
    };
    OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: BasicOcspResponse::OID,
            response: OctetString::new(basic.to_der().unwrap()).unwrap(),
        }),
    }
    .to_der()
    .unwrap()
}

fn single(q: &ocsp::Query, status: CertStatus, this: i64, next: Option<i64>) -> SingleResponse {
    SingleResponse {
        cert_id: q.cert_id.clone(),
        cert_status: status,
        this_update: gt(this),
        next_update: next.map(gt),
        single_extensions: None,
    }
}

fn revoked_status() -> CertStatus {
    CertStatus::Revoked(RevokedInfo {
        revocation_time: gt(-600),
        revocation_reason: None,
    })
}

fn now() -> UnixTime {
    UnixTime::now()
}

// --- OCSP answers ----------------------------------------------------------------------------

#[test]
fn ocsp_good_and_revoked_answers_signed_by_the_issuer_are_read() {
    let ca = new_ca("CA");
    let ee = leaf(&ca, 0x1234, &[], &["http://127.0.0.1:1/"]);
    let q = query(&ca, &ee);
    let good = answer(
        vec![single(&q, CertStatus::good(), -60, Some(3600))],
        ca.issuer.key(),
        None,
    );
    let a = ocsp::check(&good, &q, now()).unwrap();
    assert_eq!(a.status, ocsp::Status::Good);
    assert!(a.next_update.is_some());
    let bad = answer(
        vec![single(&q, revoked_status(), -60, Some(3600))],
        ca.issuer.key(),
        None,
    );
    assert_eq!(
        ocsp::check(&bad, &q, now()).unwrap().status,
        ocsp::Status::Revoked
    );
    let unknown = answer(
        vec![single(&q, CertStatus::unknown(), -60, None)],
        ca.issuer.key(),
        None,
    );
    assert_eq!(
        ocsp::check(&unknown, &q, now()).unwrap().status,
        ocsp::Status::Unknown
    );
}

#[test]
fn hostile_ocsp_answers_are_refused() {
    let ca = new_ca("CA");
    let other = new_ca("Other CA");
    let ee = leaf(&ca, 0x42, &[], &["http://127.0.0.1:1/"]);
    let sibling = leaf(&ca, 0x43, &[], &[]);
    let q = query(&ca, &ee);
    let q_sibling = query(&ca, &sibling);
    let good = || vec![single(&q, CertStatus::good(), -60, Some(3600))];

    // signed by a key that is not the issuer's
    let e = ocsp::check(&answer(good(), other.issuer.key(), None), &q, now()).unwrap_err();
    assert!(e.contains("not signed"), "{e}");
    // about another certificate (same issuer, other serial)
    let e = ocsp::check(
        &answer(
            vec![single(&q_sibling, CertStatus::good(), -60, Some(3600))],
            ca.issuer.key(),
            None,
        ),
        &q,
        now(),
    )
    .unwrap_err();
    assert!(e.contains("another certificate"), "{e}");
    // the certificate twice, good and revoked: ambiguous
    let e = ocsp::check(
        &answer(
            vec![
                single(&q, CertStatus::good(), -60, Some(3600)),
                single(&q, revoked_status(), -60, Some(3600)),
            ],
            ca.issuer.key(),
            None,
        ),
        &q,
        now(),
    )
    .unwrap_err();
    assert!(e.contains("twice"), "{e}");
    // thisUpdate an hour ahead
    let e = ocsp::check(
        &answer(
            vec![single(&q, CertStatus::good(), 3600, Some(7200))],
            ca.issuer.key(),
            None,
        ),
        &q,
        now(),
    )
    .unwrap_err();
    assert!(e.contains("future"), "{e}");
    // nextUpdate before thisUpdate
    let e = ocsp::check(
        &answer(
            vec![single(&q, CertStatus::good(), -60, Some(-120))],
            ca.issuer.key(),
            None,
        ),
        &q,
        now(),
    )
    .unwrap_err();
    assert!(e.contains("before thisUpdate"), "{e}");
    // one signature byte changed
    let mut tampered = answer(good(), ca.issuer.key(), None);
    let n = tampered.len();
    tampered[n - 3] ^= 0x55;
    assert!(ocsp::check(&tampered, &q, now()).is_err());
    // a status byte changed after signing (good -> unknown: [0] -> [2])
    let signed = answer(good(), ca.issuer.key(), None);
    let pos = signed
        .windows(2)
        .position(|w| w == [0x80, 0x00])
        .expect("good status");
    let mut flipped = signed.clone();
    flipped[pos] = 0x82;
    assert!(ocsp::check(&flipped, &q, now()).is_err());
    // not successful, garbage, empty, oversized
    let try_later = OcspResponse::try_later().to_der().unwrap();
    assert!(
        ocsp::check(&try_later, &q, now())
            .unwrap_err()
            .contains("TryLater")
    );
    assert!(ocsp::check(b"<html>hello</html>", &q, now()).is_err());
    assert!(ocsp::check(&[], &q, now()).is_err());
    assert!(
        ocsp::check(&vec![0u8; ocsp::MAX_RESPONSE_BYTES + 1], &q, now())
            .unwrap_err()
            .contains("larger")
    );
    // truncated at every length: an error, never a panic
    for cut in 0..signed.len() {
        assert!(ocsp::check(&signed[..cut], &q, now()).is_err());
    }
}

fn responder(signer: &Ca, eku: bool) -> (x509_cert::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "OCSP responder");
    if eku {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    }
    let cert = p.signed_by(&key, &signer.issuer).unwrap();
    (
        x509_cert::Certificate::from_der(cert.der().as_ref()).unwrap(),
        key,
    )
}

#[test]
fn delegated_responder_must_be_issued_by_the_ca_for_ocsp_signing() {
    let ca = new_ca("CA");
    let other = new_ca("Other CA");
    let ee = leaf(&ca, 7, &[], &["http://127.0.0.1:1/"]);
    let q = query(&ca, &ee);
    let good = || vec![single(&q, CertStatus::good(), -60, Some(3600))];
    let (cert, key) = responder(&ca, true);
    let a = ocsp::check(&answer(good(), &key, Some(vec![cert])), &q, now()).unwrap();
    assert_eq!(a.status, ocsp::Status::Good);
    // without id-kp-OCSPSigning
    let (cert, key) = responder(&ca, false);
    assert!(ocsp::check(&answer(good(), &key, Some(vec![cert])), &q, now()).is_err());
    // issued by another CA
    let (cert, key) = responder(&other, true);
    assert!(ocsp::check(&answer(good(), &key, Some(vec![cert])), &q, now()).is_err());
    // a good responder certificate, but the answer signed by another key
    let (cert, _) = responder(&ca, true);
    let stranger = KeyPair::generate().unwrap();
    assert!(ocsp::check(&answer(good(), &stranger, Some(vec![cert])), &q, now()).is_err());
}

// --- CRLs ------------------------------------------------------------------------------------

fn spki(ca: &Ca) -> Vec<u8> {
    issuer(ca).spki
}

fn name(ca: &Ca) -> Vec<u8> {
    x509_cert::Certificate::from_der(ca.der.as_ref())
        .unwrap()
        .tbs_certificate
        .subject
        .to_der()
        .unwrap()
}

#[test]
fn crl_must_be_signed_by_the_issuer_it_names() {
    let ca = new_ca("CA");
    let other = new_ca("Other CA");
    let body = crl(&ca, &[5, 6], 3600);
    let c = crl::read(&body, Some(&name(&ca)), &[spki(&ca)]).unwrap();
    assert_eq!(c.serials.len(), 2);
    assert!(c.next_update.is_some());
    // PEM is read too
    let pem = format!(
        "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body)
    );
    assert!(crl::read(pem.as_bytes(), Some(&name(&ca)), &[spki(&ca)]).is_ok());
    // another CA's key
    let e = crl::read(&body, Some(&name(&ca)), &[spki(&other)]).unwrap_err();
    assert!(e.contains("signature"), "{e}");
    // the certificate's issuer is another CA
    let e = crl::read(&body, Some(&name(&other)), &[spki(&ca)]).unwrap_err();
    assert!(e.contains("not of the certificate's issuer"), "{e}");
    // the other CA's CRL offered for this CA
    let foreign = crl(&other, &[], 3600);
    assert!(crl::read(&foreign, Some(&name(&ca)), &[spki(&ca)]).is_err());
    // tampered, garbage, truncated
    let mut t = body.clone();
    let n = t.len();
    t[n - 5] ^= 1;
    assert!(crl::read(&t, Some(&name(&ca)), &[spki(&ca)]).is_err());
    assert!(crl::read(b"not a crl", None, &[spki(&ca)]).is_err());
    for cut in 0..body.len() {
        assert!(crl::read(&body[..cut], Some(&name(&ca)), &[spki(&ca)]).is_err());
    }
}

#[test]
fn fetchable_urls_are_plain_http_with_a_host() {
    assert!(is_fetchable_url("http://crl.uzi-register.nl/uzi.crl"));
    assert!(is_fetchable_url("HTTP://127.0.0.1:8080/ca.crl"));
    for bad in [
        "https://crl.example/ca.crl",
        "ldap://ldap.example/cn=CA?certificateRevocationList",
        "http://",
        "http:///ca.crl",
        "http://user:pw@crl.example/ca.crl",
        "http://crl.example/a b",
        "http://crl.example/\u{0}",
        "file:///etc/passwd",
        "",
    ] {
        assert!(!is_fetchable_url(bad), "{bad:?}");
    }
    assert!(!is_fetchable_url(&format!(
        "http://crl.example/{}",
        "a".repeat(crate::config::MAX_FETCH_URL_LEN)
    )));
}

// --- the decision, with a loopback HTTP server ------------------------------------------------

/// Answers every request for a path with the body set for it (404 when none), counting requests.
#[derive(Clone, Default)]
struct Web {
    bodies: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    port: u16,
}

impl Web {
    fn start() -> Web {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let web = Web {
            port: l.local_addr().unwrap().port(),
            ..Web::default()
        };
        let w = web.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let w = w.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    let n = s.read(&mut buf).unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    *w.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let body = w.bodies.lock().unwrap().get(&path).cloned();
                    let resp = match body {
                        Some(b) => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(&b);
                            r
                        }
                        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = s.write_all(&resp);
                });
            }
        });
        web
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, body: Option<Vec<u8>>) {
        let mut b = self.bodies.lock().unwrap();
        match body {
            Some(v) => b.insert(path.to_owned(), v),
            None => b.remove(path),
        };
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn cfg() -> RevocationConfig {
    RevocationConfig {
        fetch_timeout_ms: 2_000,
        ..RevocationConfig::default()
    }
}

fn decide(c: &Checker, r: &RootCertStore, ee: &CertificateDer<'_>) -> Verdict {
    c.decide(r, ee, &[], Usage::Server, &[], now()).unwrap()
}

#[test]
fn crl_decides_revoked_and_good_and_waits_for_the_first_fetch() {
    let web = Web::start();
    let ca = new_ca("CA");
    let r = roots(&ca);
    let url = web.url("/ca.crl");
    let good = leaf(&ca, 10, &[&url], &[]);
    let bad = leaf(&ca, 11, &[&url], &[]);
    web.set("/ca.crl", Some(crl(&ca, &[11], 3600)));
    let c = Checker::new(cfg());
    assert_eq!(
        decide(&c, &r, &good),
        Verdict::Good(Source::Crl(url.clone()))
    );
    assert_eq!(
        decide(&c, &r, &bad),
        Verdict::Revoked(Source::Crl(url.clone()))
    );
    // cached: no second fetch for the second decision
    assert_eq!(web.hits("/ca.crl"), 1);
}

#[test]
fn unavailable_crl_follows_the_policy_and_a_stale_revocation_still_refuses() {
    let web = Web::start();
    let ca = new_ca("CA");
    let r = roots(&ca);
    let url = web.url("/none.crl");
    let ee = leaf(&ca, 12, &[&url], &[]);
    let refuse = Checker::new(cfg());
    match decide(&refuse, &r, &ee) {
        Verdict::Unavailable { accepted, detail } => {
            assert!(!accepted);
            assert!(detail.contains("HTTP 404"), "{detail}");
        }
        v => panic!("{v:?}"),
    }
    let accept = Checker::new(RevocationConfig {
        when_unavailable: RevocationFallback::Accept,
        ..cfg()
    });
    assert!(matches!(
        decide(&accept, &r, &ee),
        Verdict::Unavailable { accepted: true, .. }
    ));

    // a CRL past nextUpdate with no grace: not usable for "good", still enough for "revoked"
    let url = web.url("/short.crl");
    web.set("/short.crl", Some(crl(&ca, &[14], 1)));
    let good = leaf(&ca, 13, &[&url], &[]);
    let bad = leaf(&ca, 14, &[&url], &[]);
    let c = Checker::new(RevocationConfig {
        grace_seconds: 0,
        ..cfg()
    });
    assert!(matches!(decide(&c, &r, &good), Verdict::Good(_)));
    web.set("/short.crl", None);
    std::thread::sleep(Duration::from_millis(2_100));
    match decide(&c, &r, &good) {
        Verdict::Unavailable { accepted, detail } => {
            assert!(!accepted);
            assert!(detail.contains("past its grace"), "{detail}");
        }
        v => panic!("{v:?}"),
    }
    assert!(matches!(decide(&c, &r, &bad), Verdict::Revoked(_)));
    // with a grace, the same stale CRL still vouches
    let lenient = Checker::new(RevocationConfig {
        grace_seconds: 3600,
        ..cfg()
    });
    web.set("/short.crl", Some(crl(&ca, &[14], 1)));
    assert!(matches!(decide(&lenient, &r, &good), Verdict::Good(_)));
}

#[test]
fn ocsp_decides_when_no_crl_is_named() {
    let web = Web::start();
    let ca = new_ca("CA");
    let r = roots(&ca);
    let good = leaf(&ca, 20, &[], &[&web.url("/ocsp")]);
    let c = Checker::new(cfg());
    let q = query(&ca, &good);
    web.set(
        "/ocsp",
        Some(answer(
            vec![single(&q, CertStatus::good(), -60, Some(3600))],
            ca.issuer.key(),
            None,
        )),
    );
    assert_eq!(
        decide(&c, &r, &good),
        Verdict::Good(Source::Ocsp(web.url("/ocsp")))
    );
    // a stapled answer decides without a fetch
    let stapled_ee = leaf(&ca, 21, &[], &[&web.url("/never")]);
    let q = query(&ca, &stapled_ee);
    let stapled = answer(
        vec![single(&q, revoked_status(), -60, Some(3600))],
        ca.issuer.key(),
        None,
    );
    let v = c
        .decide(&r, &stapled_ee, &[], Usage::Server, &stapled, now())
        .unwrap();
    assert_eq!(v, Verdict::Revoked(Source::Ocsp("stapled".into())));
    assert_eq!(web.hits("/never"), 0);
    // an answer signed by a stranger is no answer
    let other = new_ca("Other");
    let forged_ee = leaf(&ca, 22, &[], &[&web.url("/forged")]);
    let q = query(&ca, &forged_ee);
    web.set(
        "/forged",
        Some(answer(
            vec![single(&q, CertStatus::good(), -60, Some(3600))],
            other.issuer.key(),
            None,
        )),
    );
    match decide(&c, &r, &forged_ee) {
        Verdict::Unavailable {
            accepted: false,
            detail,
        } => {
            assert!(detail.contains("not signed"), "{detail}")
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn certificate_without_sources_follows_without_source() {
    let ca = new_ca("CA");
    let r = roots(&ca);
    let ee = leaf(&ca, 30, &[], &[]);
    let c = Checker::new(cfg());
    assert_eq!(decide(&c, &r, &ee), Verdict::Unchecked { accepted: true });
    let strict = Checker::new(RevocationConfig {
        without_source: RevocationFallback::Refuse,
        ..cfg()
    });
    assert_eq!(
        decide(&strict, &r, &ee),
        Verdict::Unchecked { accepted: false }
    );
}

#[test]
fn urls_of_unverified_chains_are_never_fetched() {
    let web = Web::start();
    let ca = new_ca("CA");
    let stranger = new_ca("Stranger");
    let ee = leaf(&stranger, 40, &[&web.url("/x.crl")], &[&web.url("/x-ocsp")]);
    let c = Checker::new(cfg());
    assert!(
        c.decide(&roots(&ca), &ee, &[], Usage::Server, &[], now())
            .is_err()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(web.hits("/x.crl") + web.hits("/x-ocsp"), 0);
}

#[test]
fn configured_crl_covers_certificates_without_distribution_point() {
    let web = Web::start();
    let ca = new_ca("CA");
    let r = roots(&ca);
    web.set("/conf.crl", Some(crl(&ca, &[51], 3600)));
    let c = Checker::new(RevocationConfig {
        crl_urls: vec![web.url("/conf.crl")],
        ..cfg()
    });
    // the verifier registers the trust anchors (as ClientVerifier::new / ServerVerifier::new do)
    c.register_anchors(&r);
    let good = leaf(&ca, 50, &[], &[]);
    let bad = leaf(&ca, 51, &[], &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !matches!(decide(&c, &r, &good), Verdict::Good(_)) {
        assert!(
            std::time::Instant::now() < deadline,
            "configured CRL never used"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        decide(&c, &r, &bad),
        Verdict::Revoked(Source::Crl(web.url("/conf.crl")))
    );
}

#[test]
fn new_revocation_changes_the_generation() {
    let web = Web::start();
    let ca = new_ca("CA");
    let r = roots(&ca);
    let url = web.url("/g.crl");
    web.set("/g.crl", Some(crl(&ca, &[], 3600)));
    let ee = leaf(&ca, 60, &[&url], &[]);
    let c = Checker::new(RevocationConfig {
        refresh_interval_seconds: 1,
        ..cfg()
    });
    assert!(matches!(decide(&c, &r, &ee), Verdict::Good(_)));
    let before = c.generation();
    web.set("/g.crl", Some(crl(&ca, &[60], 3600)));
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while c.generation() == before {
        assert!(std::time::Instant::now() < deadline, "refresh never seen");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(decide(&c, &r, &ee), Verdict::Revoked(_)));
}

/// Waits until `path` was fetched at least `n` times (the refresh interval is one second).
fn wait_hits(web: &Web, path: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while web.hits(path) < n {
        assert!(std::time::Instant::now() < deadline, "{path}: no refresh");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_older_crl_or_ocsp_answer_never_brings_a_revoked_certificate_back() {
    // found by the breaking run of issue 13: CRLs and OCSP answers come over plain http, and a replayed
    // older CRL (or a "good" OCSP answer made before the revocation) replaced the newer one
    let web = Web::start();
    let ca = new_ca("CA");
    let r = roots(&ca);
    let url = web.url("/roll.crl");
    let ee = leaf(&ca, 70, &[&url], &[]);
    let c = Checker::new(RevocationConfig {
        refresh_interval_seconds: 1,
        ..cfg()
    });
    web.set("/roll.crl", Some(crl_at(&ca, &[70], -60, 3600)));
    assert!(matches!(decide(&c, &r, &ee), Verdict::Revoked(_)));
    // the CRL of ten minutes earlier, before the revocation
    web.set("/roll.crl", Some(crl_at(&ca, &[], -600, 3600)));
    let seen = web.hits("/roll.crl");
    wait_hits(&web, "/roll.crl", seen + 2);
    assert!(
        matches!(decide(&c, &r, &ee), Verdict::Revoked(_)),
        "an older CRL replaced the newer one"
    );
    // a genuinely newer CRL is taken (it may drop an expired certificate's entry)
    web.set("/roll.crl", Some(crl_at(&ca, &[71], -30, 3600)));
    let seen = web.hits("/roll.crl");
    wait_hits(&web, "/roll.crl", seen + 2);
    let other = leaf(&ca, 71, &[&url], &[]);
    assert!(matches!(decide(&c, &r, &other), Verdict::Revoked(_)));

    // OCSP: revoked, then a replayed older "good", then a newer "good": revoked throughout
    let oee = leaf(&ca, 80, &[], &[&web.url("/ocsp-roll")]);
    let q = query(&ca, &oee);
    let say = |status: CertStatus, this: i64| {
        answer(
            vec![single(&q, status, this, Some(3600))],
            ca.issuer.key(),
            None,
        )
    };
    web.set("/ocsp-roll", Some(say(revoked_status(), -60)));
    assert!(matches!(decide(&c, &r, &oee), Verdict::Revoked(_)));
    for (status, this) in [(CertStatus::good(), -600), (CertStatus::good(), -10)] {
        web.set("/ocsp-roll", Some(say(status, this)));
        let seen = web.hits("/ocsp-roll");
        wait_hits(&web, "/ocsp-roll", seen + 2);
        assert!(
            matches!(decide(&c, &r, &oee), Verdict::Revoked(_)),
            "a good answer (thisUpdate {this}) replaced the revocation"
        );
    }
}
