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
        "/../testdata/ihe/samples/httpParser/boundryTest/request_hdr.txt"
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
        let out: Vec<Result<Bytes, MtomError>> = w.into_body(r.into_items()).collect().await;
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

#[test]
fn writer_refuses_items_out_of_order() {
    let resp = sample_response(2, 10);
    let metas: Vec<_> = resp.documents.iter().map(|d| d.meta.clone()).collect();
    let header = SoapHeader::request("x", None);
    let run = |items: Vec<RetrieveItem>| {
        let w = RetrieveResponseWriter::new(&header, &resp.response, &metas);
        let s = futures::stream::iter(items.into_iter().map(Ok::<_, MtomError>));
        block_on(w.into_body(s).collect::<Vec<_>>())
            .into_iter()
            .find_map(Result::err)
    };
    use RetrieveItem::*;
    assert!(matches!(
        run(vec![Chunk(Bytes::from_static(b"x"))]),
        Some(MtomError::Sequence(_))
    ));
    assert!(matches!(
        run(vec![Document(0), End]),
        Some(MtomError::Sequence(_))
    ));
    assert!(matches!(
        run(vec![Document(0), End, Document(0)]),
        Some(MtomError::Sequence(_))
    ));
    assert!(matches!(
        run(vec![Document(7)]),
        Some(MtomError::Sequence(_))
    ));
    assert_eq!(
        run(vec![
            Document(1),
            End,
            Document(0),
            Chunk(Bytes::from_static(b"a")),
            End
        ]),
        None
    );
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
