//! The network edges of the consent gate (issue 12), over the real HTTP/TLS stack of loopback worlds:
//!
//! - defect 4: no outbound client follows a redirect (peers ITI-38 / ITI-39, Mitz's closed question, the
//!   local XDS registry, a DICOMweb PACS); a 3xx is that community's (or Mitz's) failure, named in the
//!   error, and nothing reaches the address the redirect names, over https or plain http;
//! - defect 8: a peer's ITI-38 Failure (errors in the `rim` namespace, or none) is that community's
//!   failure, never a Success with no errors;
//! - defect 9: a trusted front end is its certificate (issuer and subject, or SPKI pin), not a DNS name
//!   another CA of the trust bundle can issue;
//! - defect 10 (rotation): the gateway's audit file follows a rename.

mod gateway_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use duo_runtime::config::{
    Config, DicomwebBackendConfig, FrontEndCertificate, LocalBackend, TrustedFrontEnd,
};
use duo_runtime::consent::Decision;
use duo_runtime::ihe::ebrim::ResponseStatus;
use duo_runtime::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, ReturnType};
use duo_runtime::ihe::retrieve::{DocumentRequest, RetrieveDocumentSetRequest};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::{FaultCode, read_soap, write_soap};
use duo_runtime::pki::generate::Ca;
use duo_runtime::server::run::{self, Running};
use duo_runtime::tls::TlsMaterial;
use duo_runtime::xml::Limits;
use duo_testkit::sim::mitz::MitzSimConfig;
use duo_testkit::sim::serve::{self, RunningSim, Transport};
use gateway_support::*;

// --- small HTTP servers: a redirector and recorders ------------------------------------------------

/// Requests a test server received: (method, path, body bytes).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String, usize)>>>);

impl Seen {
    fn push(&self, method: &str, path: &str, len: usize) {
        self.0
            .lock()
            .unwrap()
            .push((method.into(), path.into(), len));
    }
    fn all(&self) -> Vec<(String, String, usize)> {
        self.0.lock().unwrap().clone()
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

async fn take(req: Request) -> (String, String, HeaderMap, Bytes) {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    (method, path, headers, body)
}

/// A server answering every request with `status` and `Location: <location>` (set per case), with a
/// SOAP body so that a client reading SOAP bodies of non-2xx answers sees one.
struct Redirector {
    sim: RunningSim,
    seen: Seen,
    to: Arc<Mutex<(u16, String)>>,
}

impl Redirector {
    async fn start(w: &World) -> Redirector {
        let (_, tls) = w
            .issue(
                "redirector",
                world::plain_spec("Redirecting peer", &["localhost"]),
            )
            .unwrap();
        let seen = Seen::default();
        let to = Arc::new(Mutex::new((307, String::new())));
        let router = {
            let (seen, to) = (seen.clone(), to.clone());
            Router::new().fallback(move |req: Request| {
                let (seen, to) = (seen.clone(), to.clone());
                async move {
                    let (method, path, _, body) = take(req).await;
                    seen.push(&method, &path, body.len());
                    let (status, location) = to.lock().unwrap().clone();
                    (
                        StatusCode::from_u16(status).unwrap(),
                        [
                            (header::LOCATION, location),
                            (header::CONTENT_TYPE, "application/soap+xml".into()),
                        ],
                        "<Envelope/>",
                    )
                        .into_response()
                }
            })
        };
        let sim = serve::start(router, Transport::mutual_tls(&tls).unwrap())
            .await
            .unwrap();
        Redirector { sim, seen, to }
    }

    /// Redirects with `status` to `location` from now on.
    fn to(&self, status: u16, location: &str) {
        *self.to.lock().unwrap() = (status, location.to_owned());
        self.seen.clear();
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.sim.addr().port())
    }
}

/// A server that records every request and answers an empty ITI-38 / ITI-18 Success (what a redirect
/// target would answer if a client followed the redirect).
struct Recorder {
    sim: RunningSim,
    seen: Seen,
    scheme: &'static str,
}

impl Recorder {
    async fn start(w: &World, name: &str, tls: bool) -> Recorder {
        let seen = Seen::default();
        let router = {
            let seen = seen.clone();
            Router::new().fallback(move |req: Request| {
                let seen = seen.clone();
                async move {
                    let (method, path, _, body) = take(req).await;
                    seen.push(&method, &path, body.len());
                    let h = read_soap::<AdhocQueryRequest>(&body, &Limits::default())
                        .map(|(h, _)| h)
                        .unwrap_or_else(|_| SoapHeader::request("urn:x", None));
                    let rh = SoapHeader::response(Transaction::Iti38.response_action(), &h);
                    (
                        [(header::CONTENT_TYPE, "application/soap+xml")],
                        write_soap(&rh, &AdhocQueryResponse::default()),
                    )
                        .into_response()
                }
            })
        };
        let (transport, scheme) = if tls {
            let (_, m) = w
                .issue(name, world::plain_spec("Redirect target", &["localhost"]))
                .unwrap();
            (Transport::mutual_tls(&m).unwrap(), "https")
        } else {
            (Transport::Plain, "http")
        };
        let sim = serve::start(router, transport).await.unwrap();
        Recorder { sim, seen, scheme }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}://localhost:{}{path}",
            self.scheme,
            self.sim.addr().port()
        )
    }
}

fn redirect_errors(errors: &[duo_runtime::ihe::RegistryError], at: &str) -> Vec<String> {
    errors
        .iter()
        .filter(|e| e.location.as_deref() == Some(at))
        .map(|e| format!("{} {}", e.error_code.as_str(), e.code_context))
        .collect()
}

const STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// Issue 12, defect 4: no client follows 301/302/303/307/308, to https or to plain http. The target
/// never sees a request (so no ITI-38 body with its assertion and BSN is re-sent anywhere, and
/// `allowPlainHttp: false` is not bypassed), the redirecting server sees exactly one, and the failure is
/// that community's (or Mitz's, failing closed), named in the error.
#[tokio::test]
async fn no_outbound_client_follows_a_redirect() {
    let mut w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 2, Decision::Permit),
        ],
        LocalizationMode::AllCommunities,
    ))
    .await;
    let bsn = w.patient.bsn.clone();
    let r = requester(&w, 0);
    let b_home = w.hospitals[1].home.to_string();
    let find = find_documents(&bsn, None, ReturnType::LeafClass);
    let redirector = Redirector::start(&w).await;
    let https_target = Recorder::start(&w, "target", true).await;
    let http_target = Recorder::start(&w, "plain-target", false).await;
    // a Mitz that would say Permit: if a redirect to it were followed, B would disclose
    let permit_mitz = start_mitz(
        &w,
        "mitz-target",
        MitzSimConfig {
            default_decision: Decision::Permit,
            ..MitzSimConfig::default()
        },
    )
    .await;
    let original = w.hospitals[0].config.communities.clone();
    let b_original = w.hospitals[1].config.clone();
    let targets = [(&https_target, "https"), (&http_target, "http")];
    let mut cases = 0;

    // 1. a peer's ITI-38 endpoint redirects (to a copy of the request's path at the target)
    w.reconfigure(0, |c| {
        c.communities[0].query_url = redirector.url("/xca/iti38");
        c.communities[0].retrieve_url = redirector.url("/xca/iti39");
    })
    .await
    .unwrap();
    for status in STATUSES {
        for (t, scheme) in targets {
            redirector.to(status, &t.url("/xca/iti38"));
            let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
                .await
                .query(Transaction::Iti18);
            let e = redirect_errors(&a.errors, &b_home);
            assert!(
                e.len() == 1
                    && e[0].starts_with("XDSUnavailableCommunity")
                    && e[0].contains(&format!("HTTP {status} redirect"))
                    && e[0].contains("never followed"),
                "{status} to {scheme}: {e:?}"
            );
            assert_eq!(
                a.status,
                ResponseStatus::PartialSuccess,
                "A's own data stays"
            );
            assert!(
                a.objects
                    .iter()
                    .all(|o| o.home() != Some(&w.hospitals[1].home)),
                "nothing of B"
            );
            assert_eq!(
                t.seen.all(),
                [],
                "{status} to {scheme}: the target saw nothing"
            );
            let via = redirector.seen.all();
            assert_eq!(via.len(), 1, "{status}: one request, no retry: {via:?}");
            assert_eq!(
                (via[0].0.as_str(), via[0].1.as_str()),
                ("POST", "/xca/iti38")
            );
            cases += 1;
        }
    }
    // ITI-43 → ITI-39 to the same peer
    let retrieve = RetrieveDocumentSetRequest {
        documents: vec![DocumentRequest {
            home_community_id: Some(w.hospitals[1].home.clone()),
            repository_unique_id: "1.2.3".into(),
            document_unique_id: "1.2.3.4".into(),
        }],
    };
    for status in [307, 308] {
        for (t, scheme) in targets {
            redirector.to(status, &t.url("/xca/iti39"));
            let a = local(&w, 0, Transaction::Iti43, Some(&r), Some(&bsn), &retrieve)
                .await
                .retrieve(Transaction::Iti43);
            let e = redirect_errors(&a.response.errors, &b_home);
            assert!(
                e.len() == 1 && e[0].contains(&format!("HTTP {status} redirect")),
                "ITI-39 {status} to {scheme}: {e:?}"
            );
            assert!(a.documents.is_empty());
            assert_eq!(t.seen.all(), [], "ITI-39 {status} to {scheme}");
            assert_eq!(redirector.seen.all().len(), 1);
            cases += 1;
        }
    }
    w.reconfigure(0, |c| c.communities = original.clone())
        .await
        .unwrap();

    // 2. Mitz's closed question redirects (B is the data holder): no consent, nothing disclosed, the
    //    Permit of the redirect target never asked for
    let mitz_https = permit_mitz
        .closed_question_url()
        .replace("127.0.0.1", "localhost");
    w.reconfigure(1, |c| {
        c.mitz.as_mut().unwrap().closed_question_url =
            redirector.url("/geslotenautorisatievraag/xacml3");
    })
    .await
    .unwrap();
    for status in STATUSES {
        for (location, scheme) in [
            (mitz_https.clone(), "https"),
            (http_target.url("/geslotenautorisatievraag/xacml3"), "http"),
        ] {
            redirector.to(status, &location);
            // a fresh consent cache per case: the reconfiguration rebuilds the consent service
            w.reconfigure(1, |_| {}).await.unwrap();
            let before = audit(&w.hospitals[1]).len();
            let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
                .await
                .query(Transaction::Iti18);
            assert!(
                a.objects
                    .iter()
                    .all(|o| o.home() != Some(&w.hospitals[1].home)),
                "Mitz {status} to {scheme}: B disclosed"
            );
            assert_eq!(permit_mitz.stats().closed_questions, 0, "{status} {scheme}");
            assert_eq!(http_target.seen.all(), [], "{status} {scheme}");
            assert_eq!(redirector.seen.all().len(), 1, "{status} {scheme}");
            let records = audit(&w.hospitals[1]);
            let decision = records[before..]
                .iter()
                .find(|x| x.consent.is_some())
                .unwrap_or_else(|| panic!("no consent record at B: {records:?}"));
            let c = serde_json::to_value(decision.consent.as_ref().unwrap()).unwrap();
            assert_eq!(c["source"], "failure", "{c}");
            assert_eq!(c["disclosed"], false, "{c}");
            let reason = c["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains(&format!("HTTP {status} redirect")),
                "{status} {scheme}: {reason}"
            );
            cases += 1;
        }
    }
    w.reconfigure(1, |c| *c = b_original.clone()).await.unwrap();

    // 3. B's own infrastructure redirects: its XDS registry, then a DICOMweb PACS
    for (status, (t, scheme)) in [307, 308].into_iter().zip(targets) {
        w.reconfigure(1, |c| {
            let LocalBackend::Xds(x) = &mut c.local else {
                unreachable!()
            };
            x.registry_url = redirector.url("/xds/iti18");
        })
        .await
        .unwrap();
        redirector.to(status, &t.url("/xds/iti18"));
        let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
            .await
            .query(Transaction::Iti18);
        let e = redirect_errors(&a.errors, &b_home);
        assert!(
            e.iter()
                .any(|e| e.contains("local community failed (redirect)")),
            "registry {status} to {scheme}: {e:?}"
        );
        assert_eq!(t.seen.all(), [], "registry {status} to {scheme}");
        assert_eq!(redirector.seen.all().len(), 1);
        cases += 1;

        w.reconfigure(1, |c| {
            c.local = LocalBackend::Dicomweb(DicomwebBackendConfig {
                base_url: redirector.url("/dicom-web"),
                repository_unique_id: "1.2.3.4.5".into(),
                deadline_ms: 5_000,
            });
        })
        .await
        .unwrap();
        redirector.to(status, &t.url("/dicom-web/studies"));
        let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
            .await
            .query(Transaction::Iti18);
        let e = redirect_errors(&a.errors, &b_home);
        assert!(
            e.iter()
                .any(|e| e.contains("local community failed (redirect)")),
            "DICOMweb {status} to {scheme}: {e:?}"
        );
        assert_eq!(t.seen.all(), [], "DICOMweb {status} to {scheme}");
        let via = redirector.seen.all();
        assert!(
            !via.is_empty()
                && via
                    .iter()
                    .all(|(m, p, _)| m == "GET" && p.starts_with("/dicom-web")),
            "{via:?}"
        );
        cases += 1;
        w.reconfigure(1, |c| *c = b_original.clone()).await.unwrap();
    }
    println!("redirect cases: {cases}, none followed");
    permit_mitz.shutdown().await;
    w.stop().await;
}

// --- defect 8: a peer's Failure ----------------------------------------------------------------------

/// An ITI-38 answer as some peers write it: `status` given, the RegistryErrorList (when any) in the
/// `rim` namespace, prefixes of their own.
fn peer_answer(relates_to: &str, status: &str, errors: Option<&str>) -> String {
    let list = errors.map_or(String::new(), |codes| {
        format!(
            r#"<rim:RegistryErrorList highestSeverity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"><rim:RegistryError codeContext="registry down: {codes}" errorCode="{codes}" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rim:RegistryErrorList>"#
        )
    });
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">urn:ihe:iti:2007:CrossGatewayQueryResponse</a:Action><a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body><q:AdhocQueryResponse xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" status="{status}">{list}<rim:RegistryObjectList/></q:AdhocQueryResponse></s:Body></s:Envelope>"#
    )
}

/// Issue 12, defect 8: a community answering ITI-38 with status Failure whose RegistryErrorList sits in
/// the rim namespace, or is absent, is that community's failure (its errors read, or one synthesised
/// naming it), on the SOAP and JSON sides; likewise a PartialSuccess without errors.
#[tokio::test]
async fn a_peers_failure_is_never_read_as_success() {
    let mut w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::AllCommunities,
    ))
    .await;
    let bsn = w.patient.bsn.clone();
    let r = requester(&w, 0);
    let b_home = w.hospitals[1].home.to_string();
    let answer = Arc::new(Mutex::new((String::new(), None::<String>)));
    let (_, tls) = w
        .issue(
            "failing-peer",
            world::plain_spec("Failing peer", &["localhost"]),
        )
        .unwrap();
    let peer = {
        let answer = answer.clone();
        let router = Router::new().fallback(move |req: Request| {
            let answer = answer.clone();
            async move {
                let (_, _, _, body) = take(req).await;
                let (h, _) = read_soap::<AdhocQueryRequest>(&body, &Limits::default()).unwrap();
                let (status, errors) = answer.lock().unwrap().clone();
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")
                    .body(axum::body::Body::from(peer_answer(
                        h.message_id.as_deref().unwrap_or(""),
                        &status,
                        errors.as_deref(),
                    )))
                    .unwrap()
            }
        });
        serve::start(router, Transport::mutual_tls(&tls).unwrap())
            .await
            .unwrap()
    };
    w.reconfigure(0, |c| {
        c.communities[0].query_url = format!("https://localhost:{}/xca/iti38", peer.addr().port());
    })
    .await
    .unwrap();
    let find = find_documents(&bsn, None, ReturnType::LeafClass);
    let failure = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
    let partial = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess";
    for (status, errors, expect) in [
        (
            failure,
            Some("XDSRegistryError"),
            "registry down: XDSRegistryError",
        ),
        (
            failure,
            Some("XDSUnknownPatientId"),
            "registry down: XDSUnknownPatientId",
        ),
        (failure, None, "answered Failure without a RegistryError"),
        (
            partial,
            None,
            "answered PartialSuccess without a RegistryError",
        ),
    ] {
        *answer.lock().unwrap() = (status.to_owned(), errors.map(str::to_owned));
        let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
            .await
            .query(Transaction::Iti18);
        let e = redirect_errors(&a.errors, &b_home);
        assert!(
            e.iter().any(|e| e.contains(expect)),
            "{status} {errors:?}: B's error missing: {:?}",
            a.errors
        );
        assert_eq!(
            a.status,
            ResponseStatus::PartialSuccess,
            "{status} {errors:?}: A's own entries and B's failure"
        );
        // the timeline says the same: B failed, with its error
        let t = timeline(&w, 0, &r, bsn.as_str()).await.json();
        let b = t["communities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["homeCommunityId"] == b_home.as_str())
            .unwrap_or_else(|| panic!("{t}"));
        assert_eq!(b["status"], "Failure", "{status} {errors:?}: {b}");
        assert!(
            timeline_errors(&t).iter().any(|(_, at)| at == &b_home),
            "{status} {errors:?}: {t}"
        );
    }
    peer.stop().await;
    w.stop().await;
}

// --- defect 9: the trusted front end is its certificate ----------------------------------------------

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl (scripts/setup.sh installs it)");
    c.stdin
        .take()
        .unwrap()
        .write_all(input.unwrap_or_default())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

/// The front end's entries as an operator makes them with the openssl commands the configuration
/// documents: `{issuer, subject}` and `{spkiSha256}`.
fn entries_by_openssl(cert: &Path) -> (FrontEndCertificate, FrontEndCertificate) {
    let p = cert.to_str().unwrap();
    let name = |what: &str| {
        let out = openssl(
            &["x509", "-in", p, "-noout", what, "-nameopt", "RFC2253"],
            None,
        );
        let line = String::from_utf8(out).unwrap();
        let (_, v) = line.trim().split_once('=').unwrap();
        v.parse().unwrap_or_else(|e| panic!("{v}: {e}"))
    };
    let pubkey = openssl(&["x509", "-in", p, "-noout", "-pubkey"], None);
    let der = openssl(&["pkey", "-pubin", "-outform", "der"], Some(&pubkey));
    let digest = openssl(&["dgst", "-sha256", "-binary"], Some(&der));
    let b64 = openssl(&["base64"], Some(&digest));
    let pin = String::from_utf8(b64).unwrap().trim().parse().unwrap();
    (
        FrontEndCertificate {
            issuer: Some(name("-issuer")),
            subject: Some(name("-subject")),
            spki_sha256: None,
        },
        FrontEndCertificate {
            issuer: None,
            subject: None,
            spki_sha256: Some(pin),
        },
    )
}

/// A second gateway for hospital A of `w` whose trust bundle holds the world's CA and `other` (as a
/// hospital trusting several UZI / PKIoverheid CAs does), trusting `front_ends`.
async fn gateway_trusting(
    w: &World,
    bundle: &Path,
    front_ends: Vec<FrontEndCertificate>,
) -> Result<Running, String> {
    let mut c: Config = w.hospitals[0].config.clone();
    c.server.tls.trust_bundle_file = bundle.to_owned();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.ops_listen = "127.0.0.1:0".parse().unwrap();
    c.audit.sink = w.dir.path().join("audit-A2.jsonl").display().to_string();
    c.initiating.trusted_front_end = TrustedFrontEnd {
        certificates: front_ends,
        certificate_dns_names: Vec::new(),
    };
    c.validate().map_err(|e| e.to_string())?;
    run::start(c, None, run::default_hooks())
        .await
        .map_err(|e| e.to_string())
}

/// The HTTP statuses the JSON API (timeline) and the three local SOAP routes (ITI-18, ITI-43, RAD-69)
/// answer `client`; a refused SOAP request must be the Sender fault naming the certificate.
async fn local_routes(w: &World, g: &Running, client: &reqwest::Client) -> Vec<u16> {
    let base = format!("https://localhost:{}", g.addr.port());
    let r = requester(w, 0);
    let bsn = w.patient.bsn.clone();
    let t = client
        .get(format!("{base}/api/v1/patients/{bsn}/timeline"))
        .header("X-DUO-Requester-UZI", r.uzi.as_str())
        .header("X-DUO-Requester-Role", r.role.as_str())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let mut out = vec![t];
    let block = xua(&r, Some(&bsn), &w.hospitals[0].home.to_string());
    let find = find_documents(&bsn, None, ReturnType::LeafClass);
    let a = soap(
        client,
        &format!("{base}/xds/iti18"),
        Transaction::Iti18,
        vec![block.clone()],
        &find,
    )
    .await;
    out.push(refused_or_ok(&a));
    let retrieve = RetrieveDocumentSetRequest {
        documents: vec![DocumentRequest {
            home_community_id: Some(w.hospitals[1].home.clone()),
            repository_unique_id: "1.2.3".into(),
            document_unique_id: "1.2.3.4".into(),
        }],
    };
    let a = soap(
        client,
        &format!("{base}/xds/iti43"),
        Transaction::Iti43,
        vec![block.clone()],
        &retrieve,
    )
    .await;
    out.push(refused_or_ok(&a));
    let mut rad69 = duo_runtime::ihe::retrieve::RetrieveImagingDocumentSetRequest {
        studies: Vec::new(),
        transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
    };
    duo_runtime::gateway::responding::push_document(
        &mut rad69,
        "1.2.3",
        "1.2.3.1",
        DocumentRequest {
            home_community_id: Some(w.hospitals[1].home.clone()),
            repository_unique_id: "1.2.3".into(),
            document_unique_id: "1.2.3.1.1".into(),
        },
    );
    let a = soap(
        client,
        &format!("{base}/xdsi/rad69"),
        Transaction::Rad69,
        vec![block],
        &rad69,
    )
    .await;
    out.push(refused_or_ok(&a));
    out
}

/// The status of a local SOAP answer; a refusal must be the Sender fault naming the certificate.
fn refused_or_ok(a: &Answer) -> u16 {
    if a.status != 200 {
        let f = a.fault();
        assert_eq!(f.code, FaultCode::Sender, "{}", f.reason);
        assert!(
            f.reason.contains("may not use the initiating gateway"),
            "{}",
            f.reason
        );
    }
    a.status
}

/// Issue 12, defect 9: another CA of the trust bundle issues a certificate with the front end's DNS
/// name (and subject): it is refused on the JSON API and on the local SOAP routes (ITI-18, ITI-43,
/// RAD-69), whether the front end is configured by issuer and subject or by SPKI pin, each computed with
/// openssl as the configuration documents. The removed DNS-name field and ambiguous entries are refused
/// with a clear message.
#[tokio::test]
async fn a_front_end_is_its_certificate_not_its_dns_name() {
    let w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::AllCommunities,
    ))
    .await;
    let dir = w.dir.path();
    let viewer_cert = dir.join("viewer-A.crt");
    let viewer_pem = std::fs::read_to_string(&viewer_cert).unwrap();
    let viewer_der = duo_runtime::pki::parse_certificates(viewer_pem.as_bytes()).unwrap();
    let viewer_info = duo_runtime::pki::certificate_info(viewer_der[0].as_ref()).unwrap();
    // another CA the hospital trusts, and what it issues with the viewer's DNS name and organisation
    let other = Ca::new("Other trusted CA").unwrap();
    let bundle = dir.join("two-cas.crt");
    std::fs::write(&bundle, format!("{}{}", w.ca_pem, other.cert_pem)).unwrap();
    let mut impostor_spec =
        world::plain_spec("Ziekenhuis A viewer", &[viewer_info.dns_names[0].as_str()]);
    impostor_spec.organization = "Ziekenhuis A viewer".into();
    let impostor = other.issue(&impostor_spec).unwrap();
    std::fs::write(dir.join("impostor.crt"), &impostor.cert_pem).unwrap();
    std::fs::write(dir.join("impostor.key"), &impostor.key_pem).unwrap();
    let impostor_client: reqwest::Client = TlsMaterial::load(&duo_runtime::config::TlsConfig {
        cert_file: dir.join("impostor.crt"),
        key_file: dir.join("impostor.key"),
        trust_bundle_file: w.ca_file.clone(),
    })
    .unwrap()
    .http_client(std::time::Duration::from_secs(5))
    .unwrap()
    .into();
    let impostor_info = duo_runtime::pki::certificate_info(
        duo_runtime::pki::parse_certificates(impostor.cert_pem.as_bytes()).unwrap()[0].as_ref(),
    )
    .unwrap();
    assert_eq!(
        impostor_info.dns_names, viewer_info.dns_names,
        "same DNS name"
    );
    assert_eq!(impostor_info.subject, viewer_info.subject, "same subject");
    assert_ne!(
        duo_runtime::pki::certificate_identity(viewer_der[0].as_ref())
            .unwrap()
            .issuer,
        duo_runtime::pki::certificate_identity(
            duo_runtime::pki::parse_certificates(impostor.cert_pem.as_bytes()).unwrap()[0].as_ref()
        )
        .unwrap()
        .issuer,
        "another CA"
    );
    let viewer_client = front_end(&w, 0);

    let (by_names, by_pin) = entries_by_openssl(&viewer_cert);
    assert_eq!(
        by_names,
        FrontEndCertificate::issuer_and_subject_of(viewer_der[0].as_ref()).unwrap(),
        "openssl's RFC 2253 names read as ours"
    );
    assert_eq!(
        by_pin,
        FrontEndCertificate::pin_of(viewer_der[0].as_ref()).unwrap()
    );
    let mut results = BTreeMap::new();
    for (label, entry) in [("issuer+subject", by_names), ("spkiSha256", by_pin)] {
        let g = gateway_trusting(&w, &bundle, vec![entry]).await.unwrap();
        let ok = local_routes(&w, &g, &viewer_client).await;
        assert_eq!(ok, [200, 200, 200, 200], "{label}: the viewer");
        let refused = local_routes(&w, &g, &impostor_client).await;
        assert_eq!(refused, [403, 400, 400, 400], "{label}: the impostor");
        results.insert(label, (ok, refused));
        g.stop().await;
    }
    // nothing trusted: the viewer is refused too (it is not the hospital's own certificate)
    let g = gateway_trusting(&w, &bundle, Vec::new()).await.unwrap();
    assert_eq!(
        local_routes(&w, &g, &viewer_client).await,
        [403, 400, 400, 400]
    );
    g.stop().await;
    println!("front end routes (timeline, ITI-18, ITI-43, RAD-69): {results:?}");

    // found by the breaking run: another CA of the bundle issues an intermediate named like the viewer's
    // CA, and under it a certificate with the viewer's subject (the client sends leaf + intermediate):
    // the names match, but the bundle CA of that name did not issue it
    let viewer_issuer = duo_runtime::pki::certificate_identity(viewer_der[0].as_ref())
        .unwrap()
        .issuer
        .unwrap();
    let issuer_cn = viewer_issuer
        .to_string()
        .split(',')
        .find_map(|rdn| rdn.strip_prefix("CN=").map(str::to_owned))
        .unwrap();
    let sub = other.intermediate(&issuer_cn).unwrap();
    let sub_impostor = sub.issue(&impostor_spec).unwrap();
    std::fs::write(
        dir.join("sub-impostor.crt"),
        format!("{}{}", sub_impostor.cert_pem, sub.cert_pem),
    )
    .unwrap();
    std::fs::write(dir.join("sub-impostor.key"), &sub_impostor.key_pem).unwrap();
    let sub_der = duo_runtime::pki::parse_certificates(sub_impostor.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        FrontEndCertificate::issuer_and_subject_of(sub_der[0].as_ref()).unwrap(),
        FrontEndCertificate::issuer_and_subject_of(viewer_der[0].as_ref()).unwrap(),
        "the same issuer and subject names"
    );
    let sub_client: reqwest::Client = TlsMaterial::load(&duo_runtime::config::TlsConfig {
        cert_file: dir.join("sub-impostor.crt"),
        key_file: dir.join("sub-impostor.key"),
        trust_bundle_file: w.ca_file.clone(),
    })
    .unwrap()
    .http_client(std::time::Duration::from_secs(5))
    .unwrap()
    .into();
    let named_entry = FrontEndCertificate::issuer_and_subject_of(viewer_der[0].as_ref()).unwrap();
    let g = gateway_trusting(&w, &bundle, vec![named_entry])
        .await
        .unwrap();
    assert_eq!(
        local_routes(&w, &g, &viewer_client).await,
        [200, 200, 200, 200],
        "the viewer"
    );
    assert_eq!(
        local_routes(&w, &g, &sub_client).await,
        [403, 400, 400, 400],
        "a same-named intermediate of another bundle CA"
    );
    g.stop().await;

    // the removed field, and ambiguous entries, are refused with the way out
    let legacy = TrustedFrontEnd {
        certificates: Vec::new(),
        certificate_dns_names: viewer_info.dns_names.clone(),
    };
    let mut c = w.hospitals[0].config.clone();
    c.initiating.trusted_front_end = legacy;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("initiating.trustedFrontEnd.certificateDnsNames")
            && e.contains("no longer supported")
            && e.contains("spkiSha256"),
        "{e}"
    );
    let named = FrontEndCertificate::issuer_and_subject_of(viewer_der[0].as_ref()).unwrap();
    let pinned = FrontEndCertificate::pin_of(viewer_der[0].as_ref()).unwrap();
    for (entry, says) in [
        (
            FrontEndCertificate {
                spki_sha256: pinned.spki_sha256,
                ..named.clone()
            },
            "ambiguous",
        ),
        (
            FrontEndCertificate {
                issuer: None,
                ..named.clone()
            },
            "issuer and subject go together",
        ),
        (
            FrontEndCertificate {
                subject: None,
                ..named.clone()
            },
            "issuer and subject go together",
        ),
        (
            FrontEndCertificate::default(),
            "set issuer and subject, or spkiSha256",
        ),
    ] {
        let e = gateway_trusting(&w, &bundle, vec![entry.clone()])
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted {entry:?}"));
        assert!(
            e.contains("initiating.trustedFrontEnd.certificates[0]") && e.contains(says),
            "{e}"
        );
    }
    // a trust bundle with two CAs of the configured issuer's name: issuer and subject would not say
    // which CA vouches for the front end
    let twin = Ca::new("DUO demo CA").unwrap();
    let twins = dir.join("twin-cas.crt");
    std::fs::write(&twins, format!("{}{}", w.ca_pem, twin.cert_pem)).unwrap();
    let e = gateway_trusting(&w, &twins, vec![named])
        .await
        .err()
        .expect("accepted twin CAs");
    assert!(e.contains("ambiguous") && e.contains("spkiSha256"), "{e}");
    let g = gateway_trusting(&w, &twins, vec![pinned]).await;
    assert!(g.is_ok(), "a pin is unambiguous: {:?}", g.as_ref().err());
    g.unwrap().stop().await;
    w.stop().await;
}

// --- defect 10: the gateway's audit file follows a rename ---------------------------------------------

/// Issue 12, defect 10 (rotation): after the gateway's audit file is renamed (logrotate), the next
/// request's records are in a new file at the configured path; the renamed file keeps the earlier ones.
#[tokio::test]
async fn the_gateways_audit_file_follows_a_rename() {
    let w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::AllCommunities,
    ))
    .await;
    let bsn = w.patient.bsn.clone();
    let r = requester(&w, 0);
    let find = find_documents(&bsn, None, ReturnType::LeafClass);
    let a = &w.hospitals[0];
    local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
        .await
        .query(Transaction::Iti18);
    let before = audit(a).len();
    assert!(before > 0);
    let rotated = a.audit_file.with_extension("jsonl.1");
    std::fs::rename(&a.audit_file, &rotated).unwrap();
    local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
        .await
        .query(Transaction::Iti18);
    let after = audit(a);
    assert_eq!(
        after.len(),
        before,
        "the same request's records are in a new file at the path"
    );
    let kept = std::fs::read_to_string(&rotated).unwrap().lines().count();
    assert_eq!(
        kept, before,
        "the renamed file keeps exactly the earlier records"
    );
    w.stop().await;
}
