//! Acceptance (issue 2): each real-world quirk has a test. Reading is tolerant, writing canonical.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use bytes::Bytes;
use duo_runtime::ihe::ebrim::{ErrorCode, Identifiable, ResponseStatus};
use duo_runtime::ihe::mtom::{self, MtomLimits, RetrieveResponseReader};
use duo_runtime::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, ReturnType, param};
use duo_runtime::ihe::retrieve::{
    Content, RetrieveDocumentSetRequest, RetrieveDocumentSetResponse,
};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::transform::{document_entry_from_wire, missing_home};
use duo_runtime::ihe::{read_bare, read_soap, write_bare, write_soap};
use duo_runtime::xml::Limits;
use futures::executor::block_on;

fn limits() -> Limits {
    Limits::default()
}

/// An ITI-38 request the way Epic writes it: prefixes `urn`, `urn1`, `urn2` for query, rim and the
/// envelope; reads to exactly what the canonical form reads to.
#[test]
fn other_prefixes_urn1_style() {
    let epic = br#"<?xml version="1.0" encoding="utf-8"?>
<urn2:Envelope xmlns:urn2="http://www.w3.org/2003/05/soap-envelope" xmlns:urn3="http://www.w3.org/2005/08/addressing">
 <urn2:Header><urn3:Action urn2:mustUnderstand="true">urn:ihe:iti:2007:CrossGatewayQuery</urn3:Action><urn3:MessageID>urn:uuid:1</urn3:MessageID></urn2:Header>
 <urn2:Body>
  <urn:AdhocQueryRequest xmlns:urn="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:urn1="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
   <urn:ResponseOption returnType="ObjectRef" returnComposedObjects="true"/>
   <urn1:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d" home="urn:oid:1.2.3">
    <urn1:Slot name="$XDSDocumentEntryPatientId"><urn1:ValueList><urn1:Value>'999911120^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO'</urn1:Value></urn1:ValueList></urn1:Slot>
    <urn1:Slot name="$XDSDocumentEntryStatus"><urn1:ValueList><urn1:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</urn1:Value></urn1:ValueList></urn1:Slot>
   </urn1:AdhocQuery>
  </urn:AdhocQueryRequest>
 </urn2:Body>
</urn2:Envelope>"#;
    let (h, q): (SoapHeader, AdhocQueryRequest) = read_soap(epic, &limits()).unwrap();
    assert_eq!(
        Transaction::from_request_action(&h.action),
        Some(Transaction::Iti38)
    );
    assert_eq!(q.response_option.return_type, ReturnType::ObjectRef);
    assert_eq!(
        q.query.single(param::DE_PATIENT_ID).unwrap().as_deref(),
        Some("999911120^^^&2.16.840.1.113883.2.4.6.3&ISO")
    );
    // canonical form: our prefixes, same content
    let canon = write_soap(&h, &q);
    assert!(canon.contains("<query:AdhocQueryRequest") && canon.contains("<rim:Slot"));
    let (h2, q2): (SoapHeader, AdhocQueryRequest) = read_soap(canon.as_bytes(), &limits()).unwrap();
    assert_eq!((h2.action, q2), (h.action, q));
    // a prefix bound to another namespace is not mistaken for the real element
    let wrong = String::from_utf8_lossy(epic).replace(
        "xmlns:urn1=\"urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0\"",
        "xmlns:urn1=\"urn:example:not-rim\"",
    );
    let e = read_soap::<AdhocQueryRequest>(wrong.as_bytes(), &limits()).unwrap_err();
    assert!(e.to_string().contains("rim:AdhocQuery"), "{e}");
}

#[test]
fn home_without_urn_oid_is_accepted_and_written_canonical() {
    let doc = br#"<q:AdhocQueryRequest xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><q:ResponseOption returnType="LeafClass" returnComposedObjects="true"/><AdhocQuery id="urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4" home=" 1.3.6.1.4.1.21367.13.70.201 "><Slot name="$XDSDocumentEntryEntryUUID"><ValueList><Value>('urn:uuid:1')</Value></ValueList></Slot></AdhocQuery></q:AdhocQueryRequest>"#;
    let q: AdhocQueryRequest = read_bare(doc, &limits()).unwrap();
    assert_eq!(q.query.home, Some(fixtures::home()));
    assert!(write_bare(&q).contains(r#"home="urn:oid:1.3.6.1.4.1.21367.13.70.201""#));
    // the same on returned objects and in retrieve requests
    let resp = r#"<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"><rim:RegistryObjectList><rim:ObjectRef id="urn:uuid:1" home="1.3.6.1.4.1.21367.13.70.201"/></rim:RegistryObjectList></query:AdhocQueryResponse>"#;
    let r: AdhocQueryResponse = read_bare(resp.as_bytes(), &limits()).unwrap();
    assert_eq!(r.objects[0].home(), Some(&fixtures::home()));
    let rr = br#"<RetrieveDocumentSetRequest xmlns="urn:ihe:iti:xds-b:2007"><DocumentRequest><HomeCommunityId>1.3.6.1.4.1.21367.13.70.201</HomeCommunityId><RepositoryUniqueId>1.2</RepositoryUniqueId><DocumentUniqueId>1.3</DocumentUniqueId></DocumentRequest></RetrieveDocumentSetRequest>"#;
    let rr: RetrieveDocumentSetRequest = read_bare(rr, &limits()).unwrap();
    assert!(write_bare(&rr).contains("<xdsb:HomeCommunityId>urn:oid:1.3.6.1.4.1.21367.13.70.201<"));
    // not an OID at all: a clear error naming the attribute
    let bad = String::from_utf8_lossy(doc).replace(" 1.3.6.1.4.1.21367.13.70.201 ", "community-a");
    let e = read_bare::<AdhocQueryRequest>(bad.as_bytes(), &limits()).unwrap_err();
    assert!(e.to_string().contains("AdhocQuery/@home"), "{e}");
}

#[test]
fn action_with_newlines() {
    let doc = b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><a:Action s:mustUnderstand=\"1\">\n\r\n\t  urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet \n</a:Action></s:Header><s:Body><xdsiB:RetrieveImagingDocumentSetRequest xmlns:xdsiB=\"urn:ihe:rad:xdsi-b:2009\"><xdsiB:StudyRequest studyInstanceUID=\"1.2\"><xdsiB:SeriesRequest seriesInstanceUID=\"1.2.3\"><xdsb:DocumentRequest xmlns:xdsb=\"urn:ihe:iti:xds-b:2007\"><xdsb:HomeCommunityId>urn:oid:1.2.3</xdsb:HomeCommunityId><xdsb:RepositoryUniqueId>1.2.4</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>1.2.5</xdsb:DocumentUniqueId></xdsb:DocumentRequest></xdsiB:SeriesRequest></xdsiB:StudyRequest><xdsiB:TransferSyntaxUIDList><xdsiB:TransferSyntaxUID>1.2.840.10008.1.2.1</xdsiB:TransferSyntaxUID></xdsiB:TransferSyntaxUIDList></xdsiB:RetrieveImagingDocumentSetRequest></s:Body></s:Envelope>";
    let (h, r): (
        SoapHeader,
        duo_runtime::ihe::retrieve::RetrieveImagingDocumentSetRequest,
    ) = read_soap(doc, &limits()).unwrap();
    assert_eq!(
        h.action,
        "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet"
    );
    assert_eq!(
        Transaction::from_request_action(&h.action),
        Some(Transaction::Rad75)
    );
    assert!(r.validate(true).is_empty());
}

/// A peer answers MTOM to a plain SOAP request (query and retrieve): both are read.
#[test]
fn mtom_answer_to_a_plain_request() {
    let resp = fixtures::query_response(3);
    let h = SoapHeader::request(Transaction::Iti38.response_action(), None);
    let plain = write_soap(&h, &resp);
    let (ct, body) = mtom::wrap_root(&plain, &h.action);
    // with LF-only line ends and trailing spaces, as in the Axis2 capture
    let lf = String::from_utf8(body).unwrap().replace("\r\n", " \n");
    let (root, parts) = mtom::soap_envelope(&ct, Bytes::from(lf), &MtomLimits::default()).unwrap();
    assert!(parts.is_empty());
    let (_, back): (SoapHeader, AdhocQueryResponse) = read_soap(&root, &limits()).unwrap();
    assert_eq!(back.objects.len(), resp.objects.len());
    assert_eq!(back.status, ResponseStatus::PartialSuccess);
    // a retrieve: MTOM with attachments where plain SOAP was asked for
    let r = fixtures::retrieve_response(2, 3000, true);
    let (ct, body) = mtom::RetrieveResponseWriter::write_all(&h, &r).unwrap();
    let (_, back) =
        mtom::read_retrieve_response(&ct, Bytes::from(body), &MtomLimits::default()).unwrap();
    assert_eq!(back, r);
}

/// base64 documents inside the MTOM root part, next to an xop:Include in the same message.
#[test]
fn base64_inside_mtom() {
    let r = fixtures::retrieve_response(2, 2000, true);
    let h = SoapHeader::request(Transaction::Rad69.response_action(), None);
    // root: document 0 inline base64, document 1 by xop:Include to a part
    let mut mixed = r.clone();
    mixed.documents[1].content = Content::Include("doc1@peer".into());
    let root = write_soap(&h, &mixed);
    let Content::Inline(bytes1) = &r.documents[1].content else {
        unreachable!()
    };
    let mut body = format!("--B\r\nContent-Type: application/xop+xml; type=\"application/soap+xml\"\r\nContent-ID: <root@peer>\r\n\r\n{root}\r\n--B\r\nContent-Type: application/dicom\r\nContent-ID: <doc1@peer>\r\n\r\n").into_bytes();
    body.extend_from_slice(bytes1);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let ct = "multipart/related; type=\"application/xop+xml\"; boundary=B; start=\"<root@peer>\"";
    let (_, back) =
        mtom::read_retrieve_response(ct, Bytes::from(body.clone()), &MtomLimits::default())
            .unwrap();
    assert_eq!(back, r);
    // streaming: the inline one first, then the attachment
    let order = block_on(async {
        let s = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
        let mut rd = RetrieveResponseReader::open(ct, None, s, &MtomLimits::default())
            .await
            .unwrap();
        let mut order = Vec::new();
        while let Some(i) = rd.next_document().await.unwrap() {
            let mut d = Vec::new();
            while let Some(c) = rd.chunk().await.unwrap() {
                d.extend_from_slice(&c);
            }
            assert_eq!(Content::Inline(Bytes::from(d)), r.documents[i].content);
            order.push(i);
        }
        order
    });
    assert_eq!(order, [0, 1]);
}

#[test]
fn missing_home_is_reported_as_xds_missing_home_community_id() {
    // query response objects without home (the NIST ObjectRef sample has home="")
    let doc = common::read("ihe/samples/messagevalidator/sq-resp-objectref.xml");
    let r: AdhocQueryResponse = read_bare(&doc, &limits()).unwrap();
    let from = fixtures::home();
    let errs = r.missing_home_errors(Some(&from));
    assert_eq!(errs.len(), 6);
    assert!(
        errs.iter()
            .all(|e| e.error_code == ErrorCode::XDSMissingHomeCommunityId
                && e.location.as_deref() == Some(fixtures::HOME))
    );
    let doc = common::read("ihe/samples/messagevalidator/sq-resp-lc.xml");
    let r: AdhocQueryResponse = read_bare(&doc, &limits()).unwrap();
    for o in &r.objects {
        if let Identifiable::ExtrinsicObject(eo) = o {
            let d = document_entry_from_wire(eo).unwrap();
            assert_eq!(d.home_community_id, None);
            let e = missing_home(&d, Some(&from)).unwrap();
            assert_eq!(e.error_code, ErrorCode::XDSMissingHomeCommunityId);
        }
    }
    assert!(r.objects_missing_home().count() >= 2);
    // with home: nothing to report
    assert!(
        fixtures::query_response(3)
            .missing_home_errors(None)
            .is_empty()
    );
    // a retrieve response without HomeCommunityId
    let doc = common::read("ihe/samples/messagevalidator/soap-xret-resp-homeless.xml");
    let (_, r): (SoapHeader, RetrieveDocumentSetResponse) = read_soap(&doc, &limits()).unwrap();
    assert_eq!(
        r.missing_home_errors()[0].error_code,
        ErrorCode::XDSMissingHomeCommunityId
    );
    // an ITI-39 request without HomeCommunityId (NIST 12312 missing_home)
    let doc = common::read("ihe/samples/testkit/12312/missing_home/query.xml");
    let q: RetrieveDocumentSetRequest = read_bare(&doc, &limits()).unwrap();
    let e = q.missing_home_errors();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].error_code, ErrorCode::XDSMissingHomeCommunityId);
    // an ITI-18 GetDocuments to an initiating gateway without home (NIST 15815 MissingCommunity)
    let doc = common::read("ihe/samples/testkit/15815/MissingCommunity/query.xml");
    let q: AdhocQueryRequest = read_bare(&doc, &limits()).unwrap();
    assert_eq!(q.query.home, None);
}

/// A header block the gateway does not process, with an attribute whose prefix is declared nowhere: it
/// is accepted, passed on, and what is passed on is namespace-well-formed (xmllint validates it).
#[test]
fn undeclared_attribute_prefix_in_an_unprocessed_header() {
    let doc = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action>urn:ihe:iti:2007:CrossGatewayRetrieve</a:Action><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" wsu:Id="sec-1"><vendor:Trace xmlns:vendor="urn:vendor" foo:hop="3">x</vendor:Trace></wsse:Security></s:Header><s:Body><RetrieveDocumentSetRequest xmlns="urn:ihe:iti:xds-b:2007"><DocumentRequest><HomeCommunityId>urn:oid:1.2.3</HomeCommunityId><RepositoryUniqueId>1.2.4</RepositoryUniqueId><DocumentUniqueId>1.2.5</DocumentUniqueId></DocumentRequest></RetrieveDocumentSetRequest></s:Body></s:Envelope>"#;
    let (h, r): (SoapHeader, RetrieveDocumentSetRequest) = read_soap(doc, &limits()).unwrap();
    assert_eq!(r.documents.len(), 1);
    assert_eq!(h.other.len(), 1);
    let block = &h.other[0];
    assert!(
        block.contains(r#"wsu:Id="sec-1""#) && block.contains(r#"foo:hop="3""#),
        "{block}"
    );
    let out = write_soap(&h, &r);
    common::assert_valid("soap12/soap-1.2-envelope.xsd", &out, "passed-on header");
    let (h2, _): (SoapHeader, RetrieveDocumentSetRequest) =
        read_soap(out.as_bytes(), &limits()).unwrap();
    // a header block carries the namespace declarations in scope where it stood (so that a signed
    // element in it digests the same apart from its envelope): the first pass adds the declarations of
    // this gateway's envelope, and nothing else; passing it on again changes nothing
    let ours = |b: &str| {
        b.replace(r#" xmlns:wsa="http://www.w3.org/2005/08/addressing""#, "")
            .replace(
                r#" xmlns:soap="http://www.w3.org/2003/05/soap-envelope""#,
                "",
            )
    };
    assert_eq!(
        h2.other.iter().map(|b| ours(b)).collect::<Vec<_>>(),
        h.other,
        "the first pass adds only the envelope's declarations"
    );
    let out2 = write_soap(&h2, &r);
    let (h3, _): (SoapHeader, RetrieveDocumentSetRequest) =
        read_soap(out2.as_bytes(), &limits()).unwrap();
    assert_eq!(h3.other, h2.other, "passing it on again changes nothing");
}

/// Unknown extra elements and attributes anywhere are skipped (or, in a RegistryObjectList, kept as
/// raw XML and passed on).
#[test]
fn unknown_extra_elements_are_tolerated() {
    let doc = br#"<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" xmlns:v="urn:vendor" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:PartialSuccess" v:trace="1">
<v:Debug>ignored</v:Debug>
<rim:RegistryObjectList>
 <rim:ExtrinsicObject id="urn:uuid:e1" home="urn:oid:1.2.3" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1" status="urn:oasis:names:tc:ebxml-regrep:StatusType:Approved" mimeType="application/dicom" v:x="y">
  <v:Extra><rim:Slot name="hidden"><rim:ValueList><rim:Value>no</rim:Value></rim:ValueList></rim:Slot></v:Extra>
  <rim:Slot name="creationTime"><rim:ValueList><rim:Value>2024</rim:Value><v:Note/></rim:ValueList></rim:Slot>
  <rim:ExternalIdentifier id="i1" registryObject="urn:uuid:e1" identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="1.2.3.4"/>
  <rim:ExternalIdentifier id="i2" registryObject="urn:uuid:e1" identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" value="p^^^&amp;1.2&amp;ISO"/>
 </rim:ExtrinsicObject>
 <rim:ExternalLink id="urn:uuid:l1" externalURI="http://example.org"/>
</rim:RegistryObjectList>
</query:AdhocQueryResponse>"#;
    let r: AdhocQueryResponse = read_bare(doc, &limits()).unwrap();
    // the urn:oasis form of PartialSuccess is read ...
    assert_eq!(r.status, ResponseStatus::PartialSuccess);
    assert_eq!(r.objects.len(), 2);
    let Identifiable::ExtrinsicObject(eo) = &r.objects[0] else {
        panic!()
    };
    assert_eq!(eo.object.slots.len(), 1);
    let d = document_entry_from_wire(eo).unwrap();
    assert_eq!(
        (d.unique_id.as_str(), d.creation_time.as_str()),
        ("1.2.3.4", "2024")
    );
    assert!(matches!(&r.objects[1], Identifiable::Other(x) if x.contains("ExternalLink")));
    // ... and the IHE form written; the unknown member passed on
    let out = write_bare(&r);
    assert!(out.contains("urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"));
    assert!(out.contains("<rim:ExternalLink"));
    common::assert_valid("schema/ebRS30/query.xsd", &out, "tolerated extras");
}
