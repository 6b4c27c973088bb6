use super::*;
use crate::ihe::ebrim::{ErrorCode, RegistryError, ResponseStatus};
use crate::ihe::retrieve::DocumentResponse;
use futures::executor::block_on;

fn chunks(
    data: &[u8],
    size: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let v: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(size.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(v)
}

fn scan_all(
    boundary: &str,
    data: &[u8],
    step: usize,
) -> Result<Vec<(PartHeaders, Vec<u8>)>, MtomError> {
    let mut sc = Scanner::new(boundary, &MtomLimits::default());
    let mut out: Vec<(PartHeaders, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    loop {
        match sc.next_event()? {
            ScanEvent::NeedMore => {
                if pos >= data.len() {
                    sc.finish();
                } else {
                    let end = (pos + step).min(data.len());
                    sc.feed(&data[pos..end]);
                    pos = end;
                }
            }
            ScanEvent::PartStart(h) => out.push((h, Vec::new())),
            ScanEvent::Data(d) => {
                assert!(!d.is_empty());
                out.last_mut()
                    .expect("data inside a part")
                    .1
                    .extend_from_slice(&d);
            }
            ScanEvent::PartEnd => {}
            ScanEvent::Done => return Ok(out),
        }
    }
}

const MSG: &[u8] = b"preamble\r\n--b+x=1\r\nContent-Type: application/xop+xml; type=\"application/soap+xml\"\r\nContent-ID: <root@x>\r\n\r\n<a/>\r\n--b+x=1 \t\r\ncontent-id:<p1@x> \r\nContent-Type: application/dicom\r\n\r\n\r\n--b+x\r\n\x00\xff\r\n\r\n--b+x=1\r\nContent-ID: <empty@x>\r\n\r\n\r\n--b+x=1--\r\nepilogue";

#[test]
fn scans_at_every_chunk_size_with_crlf_and_lf() {
    let mut lf = Vec::new();
    let mut i = 0;
    while i < MSG.len() {
        if MSG[i..].starts_with(b"\r\n") {
            i += 1;
            continue;
        }
        lf.push(MSG[i]);
        i += 1;
    }
    for data in [MSG.to_vec(), lf] {
        for step in 1..data.len() + 1 {
            let parts =
                scan_all("b+x=1", &data, step).unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(parts.len(), 3, "step {step}");
            assert_eq!(parts[0].0.content_id(), Some("root@x"));
            assert_eq!(parts[0].1, b"<a/>");
            assert_eq!(parts[1].0.content_id(), Some("p1@x"));
            assert_eq!(parts[1].0.content_type(), Some("application/dicom"));
            // the part body contains a near-boundary and binary bytes; only the final CRLF/LF is delimiter
            let nl: &[u8] = if data.len() == MSG.len() {
                b"\r\n"
            } else {
                b"\n"
            };
            let expected = [nl, b"--b+x", nl, b"\x00\xff", nl].concat();
            assert_eq!(parts[1].1, expected, "step {step}");
            assert_eq!(parts[2].1, b"");
        }
    }
}

/// Fuzz finding (`mtom_multipart`, scanner events depended on chunking): once the scanner had dropped
/// preamble bytes, a `--boundary` at the start of what it kept was taken as a delimiter although it sat
/// mid-line, so a message split differently by the network was read with different parts.
#[test]
fn a_boundary_mid_line_in_the_preamble_is_no_delimiter_at_any_chunking() {
    let body = b"x--b\r\n\r\nhello\r\n--b--\r\n";
    for step in 1..=body.len() {
        let parts = scan_all("b", body, step).unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert!(parts.is_empty(), "step {step}: {parts:?}");
    }
    // the fuzzer's input, minimised: boundaries mid-line between binary bytes, no line end before any
    let boundary = "MIMEBoundary_duo_90165bbb3fd045ecb3ec6f457544baa9";
    let crash = b"--Mb3eapplicatioaaEBoundary_duo_90165bbb3fd045ecb3(/644baa9\xfe\xff\xff\xff\xff\xff\xff\xff\xff\xff\r/xop--MIMEBoundary_duo_90165bbb3fd045ecb3ec6f457544baa9\xffp--MIMEBoundary_duo_90165bbb3fd045ecb3ec6f457544baa9\xff";
    let whole = scan_all(boundary, crash, crash.len());
    assert_eq!(
        whole,
        Err(MtomError::Malformed(
            "the boundary given in Content-Type does not occur in the body".into()
        ))
    );
    for step in 1..crash.len() {
        assert_eq!(scan_all(boundary, crash, step), whole, "step {step}");
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let close = MSG
        .windows(9)
        .position(|w| w == b"--b+x=1--")
        .expect("closing boundary");
    for cut in 0..close + 2 {
        let r = scan_all("b+x=1", &MSG[..cut], 7);
        assert!(r.is_err(), "cut at {cut} must fail, got {r:?}");
    }
    assert!(scan_all("b+x=1", MSG, 7).is_ok());
}

#[test]
fn hostile_framing_is_bounded() {
    // a header block that never ends
    let mut big = b"--b\r\nX-A: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100_000));
    assert_eq!(
        scan_all("b", &big, 4096).unwrap_err(),
        MtomError::HeaderTooLarge(16 * 1024)
    );
    // thousands of empty parts beyond the part limit
    let limits = MtomLimits {
        max_parts: 10,
        ..MtomLimits::default()
    };
    let many = format!("{}--b--", "--b\r\n\r\n\r\n".repeat(20));
    let ct = ContentType::parse("multipart/related; boundary=b").unwrap();
    assert_eq!(
        read_multipart(&ct, many.as_bytes(), &limits).unwrap_err(),
        MtomError::TooManyParts(10)
    );
    // a boundary that never occurs
    assert!(matches!(
        scan_all("zz", b"--b\r\n\r\nx\r\n--b--", 3),
        Err(MtomError::Malformed(_))
    ));
    // garbage after a delimiter
    assert!(matches!(
        scan_all("b", b"--bX\r\n\r\nx\r\n--b--", 3),
        Err(MtomError::Malformed(_))
    ));
    // the scanner never holds more than a chunk plus a boundary of body data
    let mut body = b"--b\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 1 << 20));
    body.extend(b"\r\n--b--");
    let mut sc = Scanner::new("b", &MtomLimits::default());
    let mut max = 0;
    let mut pos = 0;
    loop {
        match sc.next_event().unwrap() {
            ScanEvent::NeedMore => {
                if pos == body.len() {
                    sc.finish();
                } else {
                    let end = (pos + 1000).min(body.len());
                    sc.feed(&body[pos..end]);
                    pos = end;
                }
                max = max.max(sc.buffered());
            }
            ScanEvent::Done => break,
            _ => {}
        }
    }
    assert!(max <= 1000 + 4, "buffered {max}");
}

#[test]
fn content_types_of_real_peers() {
    let hdr = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/ihe/samples/httpParser/boundryTest/request_hdr.txt"
    ))
    .unwrap();
    let value = hdr
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap();
    let ct = ContentType::parse(value).unwrap();
    assert!(ct.is_multipart_related());
    assert_eq!(
        ct.boundary().unwrap(),
        "uuid:898b3ded-c057-48c5-9f07-43a15680b58d+id=5"
    );
    assert_eq!(ct.start(), Some("http://tempuri.org/0"));
    assert_eq!(ct.param("type"), Some("application/xop+xml"));
    assert_eq!(ct.param("START-INFO"), Some("application/soap+xml"));
    // JAX-WS: escaped quotes inside a quoted start-info, no spaces
    let jax = r#"multipart/related;start="<rootpart*a8@example.jaxws.sun.com>";type="application/xop+xml";boundary="uuid:a8";start-info="application/soap+xml;action=\"urn:ihe:iti:2007:RetrieveDocumentSet\"""#;
    let ct = ContentType::parse(jax).unwrap();
    assert_eq!(ct.boundary().unwrap(), "uuid:a8");
    assert_eq!(
        ct.param("start-info"),
        Some(r#"application/soap+xml;action="urn:ihe:iti:2007:RetrieveDocumentSet""#)
    );
    // unquoted boundary with '=' and a trailing space (Axis2 capture)
    let ct = ContentType::parse(
        "Multipart/Related; boundary=MIMEBoundary_a=b; type=\"application/xop+xml\" ",
    )
    .unwrap();
    assert_eq!(ct.boundary().unwrap(), "MIMEBoundary_a=b");
    assert!(ContentType::parse("multipart/related; boundary=\"x").is_err());
    assert!(
        ContentType::parse("multipart/related")
            .unwrap()
            .boundary()
            .is_err()
    );
}

fn sample_response(n: usize, size: usize) -> RetrieveDocumentSetResponse {
    RetrieveDocumentSetResponse {
        response: RegistryResponse::derive(
            vec![RegistryError::new(ErrorCode::XDSDocumentUniqueIdError, "unknown").at("1.2.9")],
            n,
        ),
        documents: (0..n)
            .map(|i| DocumentResponse {
                meta: DocumentResponseMeta {
                    home_community_id: Some("urn:oid:1.2.3".parse().unwrap()),
                    repository_unique_id: "1.2.4".into(),
                    document_unique_id: format!("1.2.5.{i}"),
                    mime_type: "application/dicom".into(),
                    ..Default::default()
                },
                content: Content::Inline(Bytes::from(
                    (0..size)
                        .map(|j| (i * 31 + j * 7) as u8)
                        .collect::<Vec<_>>(),
                )),
            })
            .collect(),
    }
}

#[test]
fn streaming_writer_and_reader_round_trip() {
    let resp = sample_response(5, 70_000);
    let header = SoapHeader::request(crate::ihe::Transaction::Rad69.response_action(), None);
    let (ct, body) = RetrieveResponseWriter::write_all(&header, &resp).unwrap();
    for step in [1usize, 13, 4096, body.len()] {
        let (h, back) = block_on(async {
            let mut r = RetrieveResponseReader::open(
                &ct,
                None,
                chunks(&body, step),
                &MtomLimits::default(),
            )
            .await
            .unwrap();
            assert_eq!(r.registry_response().status, ResponseStatus::PartialSuccess);
            let metas = r.documents().to_vec();
            let mut docs = vec![Vec::new(); metas.len()];
            while let Some(i) = r.next_document().await.unwrap() {
                while let Some(c) = r.chunk().await.unwrap() {
                    docs[i].extend_from_slice(&c);
                }
            }
            let h = r.header().clone();
            (h, (metas, docs))
        });
        assert_eq!(h.action, header.action);
        for (i, d) in resp.documents.iter().enumerate() {
            assert_eq!(back.0[i], d.meta);
            assert_eq!(
                Content::Inline(Bytes::from(back.1[i].clone())),
                d.content,
                "doc {i} step {step}"
            );
        }
    }
}

#[test]
fn relay_pipes_reader_into_writer() {
    let resp = sample_response(3, 10_000);
    let header = SoapHeader::request(crate::ihe::Transaction::Rad75.response_action(), None);
    let (ct, body) = RetrieveResponseWriter::write_all(&header, &resp).unwrap();
    let (ct2, body2) = block_on(async {
        let r = RetrieveResponseReader::open(
            &ct,
            Some(body.len() as u64),
            chunks(&body, 500),
            &MtomLimits::default(),
        )
        .await
        .unwrap();
        let w = RetrieveResponseWriter::new(r.header(), r.registry_response(), r.documents());
        let ct2 = w.content_type();
        let out: Vec<Result<Bytes, MtomError>> = w.into_body(r.into_items(), None).collect().await;
        let mut body2 = Vec::new();
        for c in out {
            body2.extend_from_slice(&c.unwrap());
        }
        (ct2, body2)
    });
    let (_, back) =
        read_retrieve_response(&ct2, Bytes::from(body2), &MtomLimits::default()).unwrap();
    assert_eq!(back, resp);
}

#[test]
fn plain_soap_and_base64_inside_mtom_are_read() {
    let resp = sample_response(2, 1000);
    let header = SoapHeader::request(crate::ihe::Transaction::Iti43.response_action(), None);
    let plain = crate::ihe::write_soap(&header, &resp);
    let (_, back) = read_retrieve_response(
        "application/soap+xml; charset=UTF-8",
        Bytes::from(plain.clone()),
        &MtomLimits::default(),
    )
    .unwrap();
    assert_eq!(back, resp);
    // the same envelope as the root part of an MTOM message (base64 inside MTOM)
    let (ct, body) = wrap_root(&plain, &header.action);
    let (_, back) =
        read_retrieve_response(&ct, Bytes::from(body.clone()), &MtomLimits::default()).unwrap();
    assert_eq!(back, resp);
    // and streaming, in both forms
    for (ct, body) in [
        ("application/soap+xml".to_owned(), plain.into_bytes()),
        (ct, body),
    ] {
        let got = block_on(async {
            let mut r =
                RetrieveResponseReader::open(&ct, None, chunks(&body, 64), &MtomLimits::default())
                    .await
                    .unwrap();
            let mut n = 0;
            while let Some(i) = r.next_document().await.unwrap() {
                let mut d = Vec::new();
                while let Some(c) = r.chunk().await.unwrap() {
                    d.extend_from_slice(&c);
                }
                assert_eq!(Content::Inline(Bytes::from(d)), resp.documents[i].content);
                n += 1;
            }
            n
        });
        assert_eq!(got, 2);
    }
}

#[test]
fn declared_size_is_refused_before_reading() {
    let never = futures::stream::poll_fn(
        |_| -> std::task::Poll<Option<Result<Bytes, std::io::Error>>> {
            panic!("the body must not be read")
        },
    );
    let e = block_on(collect_body(Some(1 << 30), never, 10 * 1024 * 1024)).unwrap_err();
    assert_eq!(
        e,
        MtomError::DeclaredTooLarge {
            declared: 1 << 30,
            limit: 10 * 1024 * 1024
        }
    );
    let never = futures::stream::poll_fn(
        |_| -> std::task::Poll<Option<Result<Bytes, std::io::Error>>> {
            panic!("the body must not be read")
        },
    );
    let e = block_on(RetrieveResponseReader::open(
        "application/soap+xml",
        Some(1 << 30),
        never,
        &MtomLimits::default(),
    ))
    .err()
    .unwrap();
    assert!(matches!(e, MtomError::DeclaredTooLarge { .. }), "{e}");
    // an undeclared body is cut off at the limit
    let e = block_on(collect_body(None, chunks(&[b'x'; 5000], 100), 1000)).unwrap_err();
    assert_eq!(e, MtomError::TooLarge { limit: 1000 });
}

#[test]
fn missing_and_unreferenced_parts() {
    let resp = sample_response(2, 100);
    let header = SoapHeader::request("urn:ihe:iti:2007:RetrieveDocumentSetResponse", None);
    let (ct, body) = RetrieveResponseWriter::write_all(&header, &resp).unwrap();
    // drop the last attachment part: the reader names the missing cid
    let text = body.clone();
    let boundary = ContentType::parse(&ct)
        .unwrap()
        .boundary()
        .unwrap()
        .to_owned();
    let delim = format!("\r\n--{boundary}");
    let positions: Vec<usize> = text
        .windows(delim.len())
        .enumerate()
        .filter(|(_, w)| *w == delim.as_bytes())
        .map(|(i, _)| i)
        .collect();
    let mut cut = text[..positions[1]].to_vec();
    cut.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-ID: <other@x>\r\n\r\nxyz\r\n--{boundary}--\r\n")
            .as_bytes(),
    );
    let e = block_on(async {
        let mut r =
            RetrieveResponseReader::open(&ct, None, chunks(&cut, 100), &MtomLimits::default())
                .await?;
        while r.next_document().await?.is_some() {}
        Ok::<(), MtomError>(())
    })
    .unwrap_err();
    assert!(matches!(e, MtomError::MissingPart(_)), "{e}");
    // a truncated stream
    let e = block_on(async {
        let mut r = RetrieveResponseReader::open(
            &ct,
            None,
            chunks(&body[..body.len() - 40], 100),
            &MtomLimits::default(),
        )
        .await?;
        while r.next_document().await?.is_some() {
            while r.chunk().await?.is_some() {}
        }
        Ok::<(), MtomError>(())
    })
    .unwrap_err();
    assert_eq!(e, MtomError::Truncated);
}

/// Runs `items` through a writer for `resp`'s documents and reads the output back strictly: every part
/// (the message must have its closing boundary), the document parts by index, and the final-status
/// part's RegistryResponse when there is one.
fn write_and_read(
    resp: &RetrieveDocumentSetResponse,
    items: Vec<Result<RetrieveItem, MtomError>>,
) -> (Vec<MimePart>, Vec<Option<Bytes>>, Option<RegistryResponse>) {
    let metas: Vec<_> = resp.documents.iter().map(|d| d.meta.clone()).collect();
    let header = SoapHeader::request("x", None);
    let w = RetrieveResponseWriter::new(&header, &resp.response, &metas);
    let ct = ContentType::parse(&w.content_type()).unwrap();
    let out: Vec<Result<Bytes, MtomError>> = block_on(
        w.into_body(futures::stream::iter(items), None)
            .collect::<Vec<_>>(),
    );
    let mut body = Vec::new();
    for c in out {
        body.extend_from_slice(&c.expect("the writer never ends with an error"));
    }
    let parts = read_multipart(&ct, &body, &MtomLimits::default()).expect("well formed");
    let (_, root) = crate::ihe::read_soap::<RetrieveDocumentSetResponse>(
        &parts[0].body,
        &crate::xml::Limits::default(),
    )
    .unwrap();
    let docs = root
        .documents
        .iter()
        .map(|d| match &d.content {
            Content::Include(cid) => {
                let found: Vec<&MimePart> = parts
                    .iter()
                    .filter(|p| p.headers.content_id() == Some(cid.as_str()))
                    .collect();
                assert_eq!(found.len(), 1, "exactly one part for {cid}");
                Some(found[0].body.clone())
            }
            Content::Inline(_) => None,
        })
        .collect();
    let status = parts
        .iter()
        .find(|p| p.headers.get("content-description") == Some("final-status"))
        .map(|p| {
            let mut r = crate::xml::Reader::new(&p.body, &crate::xml::Limits::default()).unwrap();
            let el = r.root().unwrap();
            assert!(el.is(crate::xml::ns::RS, "RegistryResponse"));
            RegistryResponse::read(&mut r, &el).unwrap()
        });
    (parts, docs, status)
}

#[test]
fn writer_ends_properly_and_reports_items_out_of_order() {
    let resp = sample_response(2, 10);
    use RetrieveItem::*;
    let b = |s: &'static [u8]| Bytes::from_static(s);
    let located = |r: &RegistryResponse| -> Vec<String> {
        r.errors
            .iter()
            .filter(|e| e.error_code == ErrorCode::XDSRepositoryError)
            .filter_map(|e| e.location.clone())
            .collect()
    };
    // a chunk outside a document: both documents fail, each with an (empty) part
    let (_, docs, st) = write_and_read(&resp, vec![Ok(Chunk(b(b"x")))]);
    assert_eq!(docs, vec![Some(Bytes::new()), Some(Bytes::new())]);
    let st = st.expect("final status");
    assert_eq!(st.status, ResponseStatus::Failure);
    assert_eq!(located(&st), ["1.2.5.0", "1.2.5.1"]);
    // a document without End, one never given content
    let (_, docs, st) = write_and_read(&resp, vec![Ok(Document(0)), Ok(Chunk(b(b"ab")))]);
    assert_eq!(docs[0].as_deref(), Some(&b"ab"[..]));
    assert_eq!(located(&st.unwrap()), ["1.2.5.1", "1.2.5.0"]);
    // a repeated index, an unknown one
    for bad in [
        vec![Ok(Document(0)), Ok(End), Ok(Document(0))],
        vec![Ok(Document(7))],
    ] {
        let (_, _, st) = write_and_read(&resp, bad);
        assert!(st.unwrap().status != ResponseStatus::Success);
    }
    // a source error in the middle of document 1 after document 0 was whole: PartialSuccess, the
    // root's own error kept
    let (_, docs, st) = write_and_read(
        &resp,
        vec![
            Ok(Document(0)),
            Ok(Chunk(b(b"a"))),
            Ok(End),
            Ok(Document(1)),
            Ok(Chunk(b(b"b"))),
            Err(MtomError::Truncated),
        ],
    );
    assert_eq!(docs[0].as_deref(), Some(&b"a"[..]));
    assert_eq!(
        docs[1].as_deref(),
        Some(&b"b"[..]),
        "its part ends where its bytes stopped"
    );
    let st = st.unwrap();
    assert_eq!(st.status, ResponseStatus::PartialSuccess);
    assert_eq!(st.errors[0].error_code, ErrorCode::XDSDocumentUniqueIdError);
    assert_eq!(located(&st), ["1.2.5.1"]);
    // Failed for a document not started while another part is open: its empty part comes after
    let (_, docs, st) = write_and_read(
        &resp,
        vec![
            Ok(Document(0)),
            Ok(Chunk(b(b"a"))),
            Ok(Failed(1, "gone".into())),
            Ok(Chunk(b(b"c"))),
            Ok(End),
        ],
    );
    assert_eq!(docs[0].as_deref(), Some(&b"ac"[..]));
    assert_eq!(docs[1].as_deref(), Some(&b""[..]));
    assert_eq!(located(&st.unwrap()), ["1.2.5.1"]);
    // in any order, all whole: no final-status part, the plain IHE answer
    let (parts, _, st) = write_and_read(
        &resp,
        vec![
            Ok(Document(1)),
            Ok(End),
            Ok(Document(0)),
            Ok(Chunk(b(b"a"))),
            Ok(End),
        ],
    );
    assert!(st.is_none());
    assert_eq!(parts.len(), 3);
}

#[test]
fn finish_hook_sees_what_was_delivered_and_its_failure_leaves_the_message_open() {
    let resp = sample_response(2, 10);
    let metas: Vec<_> = resp.documents.iter().map(|d| d.meta.clone()).collect();
    let header = SoapHeader::request("x", None);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let items = || {
        futures::stream::iter(vec![
            Ok::<_, MtomError>(RetrieveItem::Document(1)),
            Ok(RetrieveItem::Chunk(Bytes::from_static(b"z"))),
            Ok(RetrieveItem::End),
            Ok(RetrieveItem::Failed(0, "cut".into())),
        ])
    };
    let s2 = seen.clone();
    let hook: FinishHook = Box::new(move |r| {
        Box::pin(async move {
            *s2.lock().unwrap() = Some(r);
            Ok(())
        })
    });
    let w = RetrieveResponseWriter::new(&header, &resp.response, &metas);
    let out: Vec<_> = block_on(w.into_body(items(), Some(hook)).collect::<Vec<_>>());
    assert!(out.iter().all(Result::is_ok));
    let report = seen.lock().unwrap().take().unwrap();
    assert_eq!(report.delivered, vec![1]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, 0);
    assert_eq!(report.response.status, ResponseStatus::PartialSuccess);
    // the hook fails (the audit trail is down): the closing boundary is not written
    let hook: FinishHook = Box::new(|_| Box::pin(async { Err("audit down".to_string()) }));
    let w = RetrieveResponseWriter::new(&header, &resp.response, &metas);
    let ct = ContentType::parse(&w.content_type()).unwrap();
    let out: Vec<_> = block_on(w.into_body(items(), Some(hook)).collect::<Vec<_>>());
    assert!(matches!(out.last(), Some(Err(MtomError::Source(_)))));
    let body: Vec<u8> = out
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|b| b.iter().copied())
        .collect();
    assert_eq!(
        read_multipart(&ct, &body, &MtomLimits::default()).unwrap_err(),
        MtomError::Truncated
    );
}

/// What [`RetrieveResponseReader::into_items`] made of a message: each document's bytes when it was
/// delivered whole, `None` when it failed. Panics when a document is left unaccounted or accounted
/// twice, or the stream ends with an error.
fn relay_items(ct: &str, body: &[u8], step: usize) -> Vec<Option<Vec<u8>>> {
    block_on(async {
        let r = RetrieveResponseReader::open(ct, None, chunks(body, step), &MtomLimits::default())
            .await
            .unwrap();
        let n = r.documents().len();
        let mut out: Vec<Option<Option<Vec<u8>>>> = vec![None; n];
        let mut cur: Option<(usize, Vec<u8>)> = None;
        let items: Vec<_> = r.into_items().collect().await;
        for it in items {
            match it.expect("never an error") {
                RetrieveItem::Document(i) => {
                    assert!(cur.is_none());
                    cur = Some((i, Vec::new()));
                }
                RetrieveItem::Chunk(c) => cur.as_mut().unwrap().1.extend_from_slice(&c),
                RetrieveItem::End => {
                    let (i, b) = cur.take().unwrap();
                    assert!(out[i].is_none(), "document {i} twice");
                    out[i] = Some(Some(b));
                }
                RetrieveItem::Failed(i, why) => {
                    assert!(!why.is_empty());
                    if cur.as_ref().is_some_and(|(c, _)| *c == i) {
                        cur = None;
                    }
                    assert!(out[i].is_none(), "document {i} twice: {why}");
                    out[i] = Some(None);
                }
            }
        }
        assert!(cur.is_none());
        out.into_iter()
            .enumerate()
            .map(|(i, o)| o.unwrap_or_else(|| panic!("document {i} unaccounted")))
            .collect()
    })
}

/// A three-document MTOM message (documents `i` = 2,000 bytes of `i*7+j`) and its parts' positions.
fn three() -> (String, Vec<u8>, String, RetrieveDocumentSetResponse) {
    let resp = sample_response(3, 2000);
    let header = SoapHeader::request("urn:ihe:iti:2007:RetrieveDocumentSetResponse", None);
    let (ct, body) = RetrieveResponseWriter::write_all(&header, &resp).unwrap();
    let boundary = ContentType::parse(&ct)
        .unwrap()
        .boundary()
        .unwrap()
        .to_owned();
    (ct, body, boundary, resp)
}

fn content(resp: &RetrieveDocumentSetResponse, i: usize) -> Vec<u8> {
    match &resp.documents[i].content {
        Content::Inline(b) => b.to_vec(),
        Content::Include(_) => unreachable!(),
    }
}

/// `body` with the first `from` replaced by `to` (bytes: the message holds binary parts).
fn replaced(body: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = memmem::find(body, from).unwrap();
    let mut out = body[..at].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&body[at + from.len()..]);
    out
}

/// Where document `i`'s bytes start in a [`three`] message.
fn start_of(body: &[u8], boundary: &str, i: usize) -> usize {
    let needle = format!("\r\n--{boundary}\r\n");
    let mut from = 0;
    // the message opens with `--boundary` (no line end before it): the first delimiter found here is
    // the one before document 0
    for _ in 0..=i {
        from += memmem::find(&body[from..], needle.as_bytes()).unwrap() + needle.len();
    }
    from + memmem::find(&body[from..], b"\r\n\r\n").unwrap() + 4
}

#[test]
fn relay_items_report_each_damaged_document_and_deliver_the_rest() {
    let (ct, body, boundary, resp) = three();
    let whole = |i| Some(content(&resp, i));
    for step in [7, 64, 4096] {
        // undamaged
        assert_eq!(
            relay_items(&ct, &body, step),
            vec![whole(0), whole(1), whole(2)]
        );
        // an xop:Include naming no part of the message
        let cid1 = b"1.urn%3Auuid%3A";
        let bad = replaced(&body, cid1, b"1.urn%3Auuid%3Anowhere");
        assert_eq!(relay_items(&ct, &bad, step), vec![whole(0), None, whole(2)]);
        // a non-cid URL
        let bad = replaced(&body, b"href=\"cid:1.", b"href=\"http://evil.example/1.");
        assert_eq!(relay_items(&ct, &bad, step), vec![whole(0), None, whole(2)]);
        // no closing boundary: the last part's end cannot be confirmed
        let end = body.len() - format!("\r\n--{boundary}--\r\n").len();
        assert_eq!(
            relay_items(&ct, &body[..end], step),
            vec![whole(0), whole(1), None]
        );
        // a part cut short
        let s1 = start_of(&body, &boundary, 1);
        assert_eq!(
            relay_items(&ct, &body[..s1 + 500], step),
            vec![whole(0), None, None]
        );
        // a boundary inside document 1's bytes, then a line end or the closing dashes
        for tail in ["\r\n", "--"] {
            let mut bad = body[..s1 + 300].to_vec();
            bad.extend_from_slice(format!("\r\n--{boundary}{tail}").as_bytes());
            bad.extend_from_slice(&body[s1 + 300..]);
            assert_eq!(
                relay_items(&ct, &bad, step),
                vec![whole(0), None, None],
                "tail {tail:?}"
            );
        }
        // part headers missing on document 2's part
        let s2 = start_of(&body, &boundary, 2);
        let line = format!("\r\n--{boundary}\r\n");
        let h2 = memmem::rfind(&body[..s2], line.as_bytes()).unwrap() + line.len();
        let mut bad = body[..h2].to_vec();
        bad.extend_from_slice(&body[s2..]);
        assert_eq!(relay_items(&ct, &bad, step), vec![whole(0), None, None]);
        // base64 declared on a binary part
        let s1h = memmem::rfind(&body[..s1], line.as_bytes()).unwrap() + line.len();
        let mut bad = body[..s1h].to_vec();
        bad.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
        bad.extend_from_slice(&body[s1h..]);
        assert_eq!(relay_items(&ct, &bad, step), vec![whole(0), None, whole(2)]);
        // no binary part at all
        let s0 = start_of(&body, &boundary, 0);
        let r0 = memmem::rfind(&body[..s0], line.as_bytes()).unwrap();
        let mut bad = body[..r0].to_vec();
        bad.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        assert_eq!(relay_items(&ct, &bad, step), vec![None, None, None]);
        // two xop:Includes naming the same part: the second fails
        let bad = replaced(&body, cid1, b"0.urn%3Auuid%3A");
        assert_eq!(relay_items(&ct, &bad, step), vec![whole(0), None, whole(2)]);
    }
}

#[test]
fn relay_items_of_plain_soap_with_an_include_fail_that_document_only() {
    let mut resp = sample_response(2, 100);
    resp.documents[1].content = Content::Include("p@x".into());
    let header = SoapHeader::request("urn:ihe:iti:2007:RetrieveDocumentSetResponse", None);
    let plain = crate::ihe::write_soap(&header, &resp);
    let got = relay_items("application/soap+xml", plain.as_bytes(), 64);
    assert_eq!(got, vec![Some(content(&resp, 0)), None]);
}

#[test]
fn random_damage_never_breaks_the_relay() {
    // a byte changed, removed or inserted anywhere after the root (deterministic pseudo-random walk):
    // every document is accounted for exactly once, and one delivered whole has its original bytes
    // unless the damage fell in its own region (its part, from the delimiter before it to the end of
    // the next one: bytes there can be taken for its content, which MIME cannot tell)
    let (ct, body, boundary, resp) = three();
    let line = format!("\r\n--{boundary}\r\n");
    let regions: Vec<usize> = (0..3)
        .map(|i| memmem::rfind(&body[..start_of(&body, &boundary, i)], line.as_bytes()).unwrap())
        .collect();
    // damage to the delimiter after a part can join the next part to it: that delimiter belongs to
    // both regions
    let in_region = |p: usize, i: usize| {
        p >= regions[i] && regions.get(i + 1).is_none_or(|n| p < n + line.len())
    };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut delivered = 0;
    for _ in 0..400 {
        let mut bad = body.clone();
        // after the delimiter that ends the root (damage there can join document 0 to the root: the
        // root no longer reads and the whole answer is that community's error, tested elsewhere)
        let from = regions[0] + line.len();
        let p = from + (next() as usize) % (bad.len() - from);
        match next() % 3 {
            0 => bad[p] = next() as u8,
            1 => {
                bad.remove(p);
            }
            _ => bad.insert(p, b"\r\n-"[(next() % 3) as usize]),
        }
        let got = relay_items(&ct, &bad, 1 + (next() as usize) % 500);
        for (i, g) in got.iter().enumerate() {
            if let Some(b) = g {
                delivered += 1;
                if !in_region(p, i) {
                    assert_eq!(*b, content(&resp, i), "document {i}, damage at {p}");
                }
            }
        }
    }
    assert!(delivered > 0);
}

#[test]
fn base64_transfer_encoded_part() {
    let body = "--b\r\nContent-Type: application/xop+xml\r\nContent-ID: <r>\r\n\r\n<x/>\r\n--b\r\nContent-ID: <p>\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8g\r\nd29y\r\nbGQ=\r\n--b--\r\n";
    let ct = ContentType::parse("multipart/related; boundary=b").unwrap();
    let parts = read_multipart(&ct, body.as_bytes(), &MtomLimits::default()).unwrap();
    assert_eq!(parts[1].body, Bytes::from_static(b"hello world"));
    let got = block_on(async {
        let mut r =
            MultipartReader::new(&ct, chunks(body.as_bytes(), 3), &MtomLimits::default()).unwrap();
        r.next_part().await.unwrap();
        r.next_part().await.unwrap();
        r.collect_part(100).await.unwrap()
    });
    assert_eq!(got, Bytes::from_static(b"hello world"));
}

#[test]
fn a_peers_action_or_mime_type_with_quotes_cannot_break_the_relayed_content_type() {
    // From fuzzing the relay: an Action holding `"` was copied into the quoted `action` parameter, and
    // the relayed answer's Content-Type no longer parsed.
    let mut resp = sample_response(1, 100);
    resp.documents[0].meta.mime_type = "application/dicom\"; boundary=\"x\\".into();
    for action in [
        "ur\"\"\"n:ihe:iti:2007:CrossGatewayRetrieveResponse",
        "a\\\"; start=\"<evil>\"",
    ] {
        let header = SoapHeader::request(action, None);
        let (ct, _) = wrap_root(&crate::ihe::write_soap(&header, &resp), action);
        let parsed = ContentType::parse(&ct).unwrap_or_else(|e| panic!("{ct}: {e:?}"));
        assert_eq!(parsed.params.len(), 5, "{ct}");
        let metas: Vec<_> = resp.documents.iter().map(|d| d.meta.clone()).collect();
        let w = RetrieveResponseWriter::new(&header, &resp.response, &metas);
        let ct = w.content_type();
        let parsed = ContentType::parse(&ct).unwrap_or_else(|e| panic!("{ct}: {e:?}"));
        let start = parsed.params.iter().find(|(k, _)| k == "start").unwrap();
        assert_eq!(start.1, format!("<{}>", w.root_cid), "{ct}");
        let items = futures::stream::iter(vec![
            Ok::<_, MtomError>(RetrieveItem::Document(0)),
            Ok(RetrieveItem::Chunk(Bytes::from_static(b"dicom"))),
            Ok(RetrieveItem::End),
        ]);
        let out: Vec<_> = block_on(w.into_body(items, None).collect::<Vec<_>>());
        let body: Vec<u8> = out.into_iter().flat_map(|b| b.unwrap().to_vec()).collect();
        let (_, back) =
            read_retrieve_response(&ct, Bytes::from(body), &MtomLimits::default()).unwrap();
        assert_eq!(back.documents.len(), 1);
        // the XML keeps the peer's mimeType as it was (escaped there); only the part header drops quotes
        assert_eq!(
            back.documents[0].meta.mime_type,
            resp.documents[0].meta.mime_type
        );
        assert_eq!(
            back.documents[0].content,
            Content::Inline(Bytes::from_static(b"dicom"))
        );
    }
}
