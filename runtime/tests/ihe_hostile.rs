//! Acceptance (issue 2): the hostile-input corpus (`tests/hostile/`, plus generated cases) ends in a
//! typed error within the limits of the default runtime configuration, and that error is a SOAP fault
//! a peer can be answered with. Never a panic, never unbounded memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use duo_runtime::config::LimitsConfig;
use duo_runtime::ihe::mtom::{self, MtomError, MtomLimits, RetrieveResponseReader};
use duo_runtime::ihe::query::AdhocQueryRequest;
use duo_runtime::ihe::retrieve::RetrieveDocumentSetRequest;
use duo_runtime::ihe::soap::{SoapError, write_fault};
use duo_runtime::ihe::{FaultCode, read_soap};
use duo_runtime::xml::{Limits, XmlError};
use futures::StreamExt;
use futures::executor::block_on;

fn corpus(name: &str) -> Vec<u8> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/");
    std::fs::read(format!("{p}{name}")).unwrap()
}

fn cfg() -> LimitsConfig {
    LimitsConfig::default()
}

fn xml_limits() -> Limits {
    duo_runtime::limits::xml_limits(&cfg())
}

fn xml_error(e: SoapError) -> XmlError {
    // every refusal answers the peer with a Sender fault that can be written
    let f = e.to_fault();
    assert_eq!(f.code, FaultCode::Sender, "{e}");
    assert!(write_fault(&f, None).contains("soap:Sender"));
    match e {
        SoapError::Xml(x) => x,
        other => panic!("expected an XML error, got {other:?}"),
    }
}

#[test]
fn xxe_is_refused() {
    let e = read_soap::<AdhocQueryRequest>(&corpus("xxe.xml"), &xml_limits()).unwrap_err();
    assert_eq!(xml_error(e), XmlError::Dtd);
}

#[test]
fn entity_expansion_is_refused() {
    let e =
        read_soap::<AdhocQueryRequest>(&corpus("billion-laughs.xml"), &xml_limits()).unwrap_err();
    assert_eq!(xml_error(e), XmlError::Dtd);
    let e = read_soap::<RetrieveDocumentSetRequest>(&corpus("undefined-entity.xml"), &xml_limits())
        .unwrap_err();
    assert_eq!(xml_error(e), XmlError::Entity("lol9".into()));
}

#[test]
fn ten_thousand_deep_nesting_is_refused() {
    let open = "<x>".repeat(10_000);
    let close = "</x>".repeat(10_000);
    for doc in [
        // inside the query payload
        format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><q:AdhocQueryRequest xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0">{open}{close}</q:AdhocQueryRequest></s:Body></s:Envelope>"#
        ),
        // inside a header block the gateway only passes on
        format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header><v:H xmlns:v="urn:v">{open}{close}</v:H></s:Header><s:Body/></s:Envelope>"#
        ),
    ] {
        let e = read_soap::<AdhocQueryRequest>(doc.as_bytes(), &xml_limits()).unwrap_err();
        assert_eq!(xml_error(e), XmlError::TooDeep(cfg().max_xml_depth));
    }
}

#[test]
fn element_flood_is_refused() {
    let c = LimitsConfig {
        max_xml_elements: 100_000,
        ..cfg()
    };
    let doc = format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><q:AdhocQueryRequest xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0">{}</q:AdhocQueryRequest></s:Body></s:Envelope>"#,
        "<a/>".repeat(200_000)
    );
    let e = read_soap::<AdhocQueryRequest>(doc.as_bytes(), &duo_runtime::limits::xml_limits(&c))
        .unwrap_err();
    assert_eq!(xml_error(e), XmlError::TooManyElements(100_000));
}

#[test]
fn oversized_document_is_refused() {
    let c = LimitsConfig {
        max_body_bytes: 1024,
        ..cfg()
    };
    let doc = format!("<a>{}</a>", "x".repeat(2000));
    let e = read_soap::<AdhocQueryRequest>(doc.as_bytes(), &duo_runtime::limits::xml_limits(&c))
        .unwrap_err();
    assert_eq!(xml_error(e), XmlError::TooLarge(1024));
}

/// A stream that never ends, counting what is pulled from it.
fn endless(
    pulled: Arc<AtomicU64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    futures::stream::repeat_with(move || {
        pulled.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(chunk.clone())
    })
}

#[test]
fn one_gib_declared_body_is_refused_before_reading() {
    let limit = cfg().max_body_bytes as usize;
    let pulled = Arc::new(AtomicU64::new(0));
    let e = block_on(mtom::collect_body(
        Some(1 << 30),
        endless(pulled.clone()),
        limit,
    ))
    .unwrap_err();
    assert_eq!(
        e,
        MtomError::DeclaredTooLarge {
            declared: 1 << 30,
            limit: limit as u64
        }
    );
    assert_eq!(pulled.load(Ordering::Relaxed), 0, "nothing may be read");
    assert_eq!(e.to_fault().code, FaultCode::Sender);
    // a plain SOAP retrieve response announcing 1 GiB
    let pulled = Arc::new(AtomicU64::new(0));
    let e = block_on(RetrieveResponseReader::open(
        "application/soap+xml",
        Some(1 << 30),
        endless(pulled.clone()),
        &duo_runtime::limits::mtom_limits(&cfg()),
    ))
    .err()
    .unwrap();
    assert!(matches!(e, MtomError::DeclaredTooLarge { .. }), "{e}");
    assert_eq!(pulled.load(Ordering::Relaxed), 0);
    // an undeclared endless body is cut off just past the limit
    let pulled = Arc::new(AtomicU64::new(0));
    let e = block_on(mtom::collect_body(None, endless(pulled.clone()), limit)).unwrap_err();
    assert_eq!(
        e,
        MtomError::TooLarge {
            limit: limit as u64
        }
    );
    assert!(pulled.load(Ordering::Relaxed) <= limit as u64 + 64 * 1024);
}

#[test]
fn endless_multipart_part_headers_and_root_are_bounded() {
    let limits = duo_runtime::limits::mtom_limits(&cfg());
    // part headers that never end
    let pulled = Arc::new(AtomicU64::new(0));
    let head = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
        b"--b\r\nX-Junk: ",
    ))]);
    let body = head.chain(endless(pulled.clone()));
    let e = block_on(RetrieveResponseReader::open(
        "multipart/related; boundary=b",
        None,
        body,
        &limits,
    ))
    .err()
    .unwrap();
    assert_eq!(e, MtomError::HeaderTooLarge(limits.max_header_bytes));
    assert!(pulled.load(Ordering::Relaxed) <= (limits.max_header_bytes + 64 * 1024) as u64);
    // a root part that never ends
    let small = MtomLimits {
        max_root_bytes: 1 << 20,
        ..limits
    };
    let pulled = Arc::new(AtomicU64::new(0));
    let head = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
        b"--b\r\nContent-ID: <r>\r\n\r\n",
    ))]);
    let body = head.chain(endless(pulled.clone()));
    let e = block_on(RetrieveResponseReader::open(
        "multipart/related; boundary=b",
        None,
        body,
        &small,
    ))
    .err()
    .unwrap();
    assert_eq!(e, MtomError::TooLarge { limit: 1 << 20 });
    assert!(pulled.load(Ordering::Relaxed) <= (1 << 20) + 128 * 1024);
}

#[test]
fn truncated_multipart_is_an_error() {
    let body = corpus("truncated-mtom.txt");
    let ct = r#"multipart/related; type="application/xop+xml"; boundary="MIMEBoundary_x"; start="<root@x>""#;
    let limits = duo_runtime::limits::mtom_limits(&cfg());
    // buffered
    let e = mtom::soap_envelope(ct, Bytes::from(body.clone()), &limits).unwrap_err();
    assert_eq!(e, MtomError::Truncated);
    assert_eq!(e.to_fault().code, FaultCode::Sender);
    // streaming: the root is read, the document starts, then the stream ends inside it
    let got = block_on(async {
        let s = futures::stream::iter(
            body.chunks(10)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let mut r = RetrieveResponseReader::open(ct, None, s, &limits).await?;
        assert_eq!(r.documents().len(), 1);
        let i = r.next_document().await?;
        assert_eq!(i, Some(0));
        while r.chunk().await?.is_some() {}
        Ok::<(), MtomError>(())
    });
    assert_eq!(got.unwrap_err(), MtomError::Truncated);
}

#[test]
fn malformed_multipart_framing_is_an_error() {
    let limits = duo_runtime::limits::mtom_limits(&cfg());
    let cases: [(&str, &[u8]); 5] = [
        ("multipart/related", b"--b\r\n\r\nx\r\n--b--"),
        ("multipart/related; boundary=\"unterminated", b"x"),
        ("multipart/related; boundary=zz", b"--b\r\n\r\nx\r\n--b--"),
        (
            "multipart/related; boundary=b",
            b"--bogus\r\n\r\nx\r\n--b--",
        ),
        (
            "multipart/related; boundary=b",
            b"--b\r\nno colon here\r\n\r\nx\r\n--b--",
        ),
    ];
    for (ct, body) in cases {
        let e = mtom::soap_envelope(ct, Bytes::from_static(body), &limits).unwrap_err();
        assert!(
            matches!(e, MtomError::ContentType { .. } | MtomError::Malformed(_)),
            "{ct}: {e:?}"
        );
        assert_eq!(e.to_fault().code, FaultCode::Sender);
    }
    // random garbage in every position never panics
    let good =
        b"--b\r\nContent-ID: <r>\r\n\r\n<a/>\r\n--b\r\nContent-ID: <p>\r\n\r\nxy\r\n--b--\r\n";
    for i in 0..good.len() {
        for byte in [b'\r', b'\n', b'-', b'b', 0xff, b' '] {
            let mut v = good.to_vec();
            v[i] = byte;
            let _ = mtom::soap_envelope("multipart/related; boundary=b", Bytes::from(v), &limits);
        }
    }
}
