use super::*;
use crate::ihe::soap::{self, SoapHeader};
use crate::ihe::xua::{SignatureNotChecked, UnsignedAssertions, Validation};
use crate::model::Ura;
use crate::xml::ns;
use duo_testkit::sim::mitz::MitzSimConfig;
use duo_testkit::sim::mitz::env::SimEnv;
use duo_testkit::test_pki::{bsns, requester};
use duo_wire::xml::compare::tree;

#[test]
fn the_question_follows_iti_56_and_carries_the_assertion() {
    let patient: Bsn = "900186021".parse().unwrap();
    let a = XuaAssertion::new(
        requester("00000666"),
        "urn:oid:1.2.3",
        xua::MITZ_AUDIENCE,
        Timestamp::now(),
    );
    let block = a.security_header(&UnsignedAssertions).unwrap();
    let text = write_location_query(&patient, block, "https://mitz.example/openautorisatievraag");
    let t = tree(&text);
    assert_eq!((t.ns.as_str(), t.local.as_str()), (ns::SOAP12, "Envelope"));
    let header = &t.children[0];
    let action = &header.children[0];
    assert_eq!(
        (action.ns.as_str(), action.local.as_str()),
        (ns::WSA, "Action")
    );
    assert_eq!(action.text, ACTION);
    assert!(
        header.children.iter().any(|h| h.ns == ns::WSSE
            && h.local == "Security"
            && h.children
                .iter()
                .any(|a| a.ns == ns::SAML2 && a.local == "Assertion")),
        "{text}"
    );
    let body = &t.children[1].children[0];
    assert_eq!(
        (body.ns.as_str(), body.local.as_str()),
        (ns::XCPD, "PatientLocationQueryRequest")
    );
    let id = &body.children[0];
    assert_eq!(
        (id.ns.as_str(), id.local.as_str()),
        (ns::XCPD, "RequestedPatientId")
    );
    let attr = |k: &str| id.attrs[&(String::new(), k.to_owned())].as_str();
    assert_eq!(attr("root"), "2.16.840.1.113883.2.4.6.3");
    assert_eq!(attr("extension"), "900186021");
    assert_eq!(attr("assigningAuthorityName"), "NLMINBIZA");
    assert_eq!(id.attrs.len(), 3);

    // the receiving side reads back the patient and the requester
    let (h, requested) = read_location_query(text.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(requested.extension, "900186021");
    let mut v = Validation::now();
    v.audiences = vec![xua::MITZ_AUDIENCE.into()];
    let back = xua::from_soap_header(&h, &v, &SignatureNotChecked).unwrap();
    assert_eq!(back.requester, requester("00000666"));
}

#[test]
fn answers_are_read_tolerantly_and_broken_ones_refused() {
    let requested = InstanceId {
        root: Bsn::OID.into(),
        extension: "900186021".into(),
        assigning_authority_name: Some(BSN_AUTHORITY_NAME.into()),
    };
    let req = SoapHeader::request(ACTION, None);
    let locs = vec![
        PatientLocation {
            home_community_id: "urn:oid:1.2.3".parse().unwrap(),
            corresponding_patient_id: Some(InstanceId {
                root: "1.2.3.9".into(),
                extension: "local-42".into(),
                assigning_authority_name: None,
            }),
            source_id: Some("urn:oid:1.2.3.4".into()),
            holder_ura: Some("00000659".parse().unwrap()),
        },
        PatientLocation {
            home_community_id: "urn:oid:1.2.5".parse().unwrap(),
            corresponding_patient_id: None,
            source_id: None,
            holder_ura: None,
        },
    ];
    let text = write_location_answer(&req, &requested, &locs);
    let got = read_location_answer(text.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(got[0], locs[0]);
    // without a CorrespondingPatientId of its own, the requested id is echoed
    assert_eq!(got[1].corresponding_patient_id.as_ref(), Some(&requested));
    assert_eq!(got[1].holder_ura, None);

    // an entry with an unusable HomeCommunityId is left out, the others kept
    let bad_entry = text.replacen("urn:oid:1.2.3<", "not an oid<", 1);
    let got = read_location_answer(bad_entry.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].home_community_id.to_string(), "urn:oid:1.2.5");
    // an author-institution that is not a URA is ignored
    let not_ura = text.replace(Ura::OID, "1.2.3.4.5");
    let got = read_location_answer(not_ura.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(got[0].holder_ura, None);

    for bad in [
        "garbage".to_owned(),
        text.replace("PatientLocationQueryResponse", "Other"),
        text.replace(ns::XCPD, "urn:ihe:iti:xcpd:2008"),
    ] {
        assert!(matches!(
            read_location_answer(bad.as_bytes(), &Limits::default()),
            Err(MitzError::Unparseable(_))
        ));
    }
    let fault = soap::write_fault(
        &soap::Fault {
            code: soap::FaultCode::Sender,
            subcode: None,
            reason: "no".into(),
        },
        None,
    );
    assert_eq!(
        read_location_answer(fault.as_bytes(), &Limits::default()),
        Err(MitzError::Fault("no".into()))
    );
}

#[tokio::test]
async fn failures_are_errors_so_the_caller_asks_no_one() {
    let p = bsns(3);
    let env = SimEnv::start(
        MitzSimConfig::parse(&format!(
            r#"
faults:
  - {{ patient: "{}", delayMs: 1500 }}
  - {{ patient: "{}", httpStatus: 500 }}
  - {{ patient: "{}", garbage: true }}
"#,
            p[0], p[1], p[2]
        ))
        .unwrap(),
    )
    .await;
    let loc = LocalizationClient::new(
        mitz_client(&env, 300),
        "urn:oid:1.2.3",
        Arc::new(UnsignedAssertions),
    );
    let who = requester("00000666");
    assert!(matches!(
        loc.locate(&p[0], &who).await,
        Err(MitzError::Timeout { after_ms: 300 })
    ));
    assert!(matches!(
        loc.locate(&p[1], &who).await,
        Err(MitzError::Http { status: 500, .. })
    ));
    assert!(matches!(
        loc.locate(&p[2], &who).await,
        Err(MitzError::Unparseable(_))
    ));
    // no open question URL configured
    let mut cfg = env.mitz_config(300, 0);
    cfg.open_question_url = None;
    let client = Arc::new(MitzClient::with_tls(&cfg, &env.client_tls).unwrap());
    let loc = LocalizationClient::new(client, "urn:oid:1.2.3", Arc::new(UnsignedAssertions));
    assert!(matches!(
        loc.locate(&p[0], &who).await,
        Err(MitzError::NotConfigured(_))
    ));
    env.sim.shutdown().await;
}

/// A Mitz client of this build with the identity the simulator trusts (the test kit's own
/// `SimEnv::client` returns the library build's type, another type in this crate's unit tests).
fn mitz_client(env: &SimEnv, deadline_ms: u64) -> std::sync::Arc<crate::consent::MitzClient> {
    std::sync::Arc::new(
        crate::consent::MitzClient::with_tls(&env.mitz_config(deadline_ms, 0), &env.client_tls)
            .unwrap(),
    )
}
