//! Acceptance (issue 2): everything the codec writes, requests and responses of all six transactions,
//! validates with xmllint against the schema set testdata/README.md names for it; the SOAP envelopes
//! against the SOAP 1.2 envelope schema. The body is taken out of the written envelope exactly as it
//! is on the wire.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use bytes::Bytes;
use duo_runtime::ihe::mtom::{self, MtomLimits, RetrieveResponseWriter};
use duo_runtime::ihe::query::ReturnType;
use duo_runtime::ihe::soap::{SoapHeader, Transaction, write_fault};
use duo_runtime::ihe::{Fault, FaultCode, Message, write_soap};

/// IPF query schema (compiles alone under xmllint) and the NIST copy.
const QUERY_IPF: &str = "schema/ebRS30/query.xsd";
const QUERY_NIST: &str = "nist-v3/query.xsd";
/// IPF XDS.b set through the driver schema.
const XDSB_IPF: &str = "xmllint/xds-b-all.xsd";
/// NIST XDS.b repository schema (retrieve responses).
const XDSB_NIST: &str = "nist-v3/XDS.b_DocumentRepository.xsd";
/// NIST XDS-I.b schema (RAD-69 / RAD-75; IPF's has DocumentRequest in the wrong namespace).
const XDSI_NIST: &str = "nist-v3/XDSI.b_ImagingDocumentSource.xsd";
const SOAP: &str = "soap12/soap-1.2-envelope.xsd";

fn check<T: Message>(tx: Transaction, response: bool, body: &T, schemas: &[&str]) {
    let action = if response {
        tx.response_action()
    } else {
        tx.request_action()
    };
    let mut h = SoapHeader::request(action, Some("https://rg.example.org/xca"));
    // a WS-Security header block the gateway passes on untouched
    h.other.push(
        r#"<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a" Version="2.0" IssueInstant="2024-01-15T09:00:00Z"><saml2:Issuer>x</saml2:Issuer></saml2:Assertion></wsse:Security>"#
            .to_owned(),
    );
    if response {
        h = SoapHeader::response(action, &h);
    }
    let env = write_soap(&h, body);
    let label = format!("{tx} {}", if response { "response" } else { "request" });
    common::assert_valid(SOAP, &env, &format!("{label} envelope"));
    let body_xml = common::body_of(env.as_bytes());
    for s in schemas {
        common::assert_valid(s, &body_xml, &label);
    }
}

#[test]
fn query_transactions_validate() {
    for tx in [Transaction::Iti18, Transaction::Iti38] {
        for rt in [ReturnType::LeafClass, ReturnType::ObjectRef] {
            check(
                tx,
                false,
                &fixtures::query_request(rt),
                &[QUERY_IPF, QUERY_NIST, XDSB_IPF],
            );
        }
        check(
            tx,
            true,
            &fixtures::query_response(12),
            &[QUERY_IPF, QUERY_NIST, XDSB_IPF],
        );
        check(
            tx,
            true,
            &fixtures::object_ref_response(3),
            &[QUERY_IPF, QUERY_NIST],
        );
        // an empty Failure still carries the (required) RegistryObjectList
        let failure = duo_runtime::ihe::query::AdhocQueryResponse::new(
            Vec::new(),
            vec![duo_runtime::ihe::RegistryError::new(
                duo_runtime::ihe::ErrorCode::XDSUnknownPatientId,
                "patient unknown",
            )],
        );
        assert_eq!(failure.status, duo_runtime::ihe::ResponseStatus::Failure);
        check(tx, true, &failure, &[QUERY_IPF, QUERY_NIST]);
    }
}

#[test]
fn retrieve_transactions_validate() {
    for tx in [Transaction::Iti39, Transaction::Iti43] {
        check(
            tx,
            false,
            &fixtures::retrieve_request(),
            &[XDSB_IPF, XDSB_NIST],
        );
        check(
            tx,
            true,
            &fixtures::retrieve_response(3, 200, true),
            &[XDSB_NIST, XDSB_IPF],
        );
    }
    for tx in [Transaction::Rad69, Transaction::Rad75] {
        check(
            tx,
            false,
            &fixtures::imaging_request(tx == Transaction::Rad75),
            &[XDSI_NIST],
        );
        check(
            tx,
            true,
            &fixtures::retrieve_response(3, 200, true),
            &[XDSB_NIST],
        );
    }
}

/// The MTOM form: the root part validates as an envelope, and its body validates once the
/// `xop:Include`s are replaced by the base64 of their parts (the XOP infoset, XOP 1.0 §3.2).
#[test]
fn mtom_retrieve_response_validates() {
    for tx in [
        Transaction::Iti39,
        Transaction::Iti43,
        Transaction::Rad69,
        Transaction::Rad75,
    ] {
        let resp = fixtures::retrieve_response(4, 5000, true);
        let h = SoapHeader::request(tx.response_action(), None);
        let (ct, body) = RetrieveResponseWriter::write_all(&h, &resp).unwrap();
        let (root, parts) =
            mtom::soap_envelope(&ct, Bytes::from(body), &MtomLimits::default()).unwrap();
        let root = String::from_utf8(root.to_vec()).unwrap();
        common::assert_valid(SOAP, &root, &format!("{tx} MTOM root"));
        let mut body_xml = common::body_of(root.as_bytes());
        assert_eq!(body_xml.matches("<xop:Include").count(), 4);
        while let Some(start) = body_xml.find("<xop:Include") {
            let end = start + body_xml[start..].find("/>").unwrap() + 2;
            let tag = &body_xml[start..end];
            let href = tag
                .split("href=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let cid = duo_runtime::ihe::retrieve::cid_from_href(href);
            let part = parts
                .iter()
                .find(|p| p.headers.content_id() == Some(cid.as_str()))
                .unwrap();
            let b64 = duo_runtime::ihe::retrieve::encode_base64(&part.body);
            body_xml.replace_range(start..end, &b64);
        }
        common::assert_valid(
            XDSB_NIST,
            &body_xml,
            &format!("{tx} MTOM body (XOP infoset)"),
        );
    }
}

#[test]
fn faults_validate() {
    let f = Fault {
        code: FaultCode::Sender,
        subcode: None,
        reason: "XML document type declarations (DTD) are not accepted".into(),
    };
    common::assert_valid(SOAP, &write_fault(&f, None), "fault");
}

#[test]
fn xmllint_rejects_what_the_schema_forbids() {
    // the validation is real: a response without status fails
    let bad = r#"<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"><rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"/></query:AdhocQueryResponse>"#;
    assert!(common::validate(QUERY_IPF, bad, "negative").is_err());
}
