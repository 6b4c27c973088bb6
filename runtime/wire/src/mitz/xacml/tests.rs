use super::*;
use crate::xml::compare::{diff, tree};

fn sample(rel: &str) -> String {
    let p = format!("{}/../../testdata/mitz/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

const IGNORED: &[&str] = &["MessageID", "To"];

#[test]
fn built_question_matches_the_sample_structurally() {
    let ours = write_closed_question(
        &sample_question(),
        "urn:uuid:00000000-0000-0000-0000-000000000001",
        "https://mitz.example/geslotenautorisatievraag/xacml3",
    );
    let expected = tree(&sample("xacml/example.xml"));
    let got = tree(&ours);
    assert_eq!(diff(&got, &expected, "", IGNORED), None, "\n{ours}");
}

#[test]
fn the_comparison_catches_any_changed_id_type_or_oid() {
    // The structural comparison must fail on any change of attribute id, data type or OID: mutate the
    // sample one value at a time and require a difference each time.
    let text = sample("xacml/example.xml");
    let ours = tree(&write_closed_question(
        &sample_question(),
        "urn:uuid:1",
        "x",
    ));
    for (from, to) in [
        ("urn:hl7-org:v3#II", "urn:hl7-org:v3#CV"),
        ("urn:hl7-org:v3#CV", "urn:hl7-org:v3#CE"),
        ("2.16.840.1.113883.2.4.6.3", "2.16.840.1.113883.2.4.6.4"),
        ("2.16.528.1.1007.3.3", "2.16.528.1.1007.3.4"),
        ("2.16.528.1.1007.3.1\"", "2.16.528.1.1007.3.2\""),
        (
            "2.16.840.1.113883.2.4.15.1060",
            "2.16.840.1.113883.2.4.15.1061",
        ),
        (
            "2.16.840.1.113883.2.4.15.111",
            "2.16.840.1.113883.2.4.15.112",
        ),
        (
            "2.16.840.1.113883.2.4.3.111.5.10.1",
            "2.16.840.1.113883.2.4.3.111.5.10.2",
        ),
        (
            "2.16.840.1.113883.1.11.20448",
            "2.16.840.1.113883.1.11.20449",
        ),
        ("urn:ihe:iti:xua:2017:subject:provider-identifier", "urn:x"),
        (
            "urn:nl:otv:names:tc:1.0:subject:provider-institution",
            "urn:x",
        ),
        ("urn:ihe:iti:appc:2016:author-institution:id", "urn:x"),
        ("resource-id", "resource-idx"),
        ("xml:id=\"action0\"", "xml:id=\"action1\""),
        ("XACMLAuthorizationDecisionQueryRequest", "Other"),
        ("wd-17", "wd-18"),
        ("xmlns=\"urn:hl7-org:v3\"/>", "xmlns=\"urn:hl7-org:v2\"/>"),
        ("assigningAuthorityName=\"CIBG\" ", ""),
    ] {
        assert!(text.contains(from), "sample lacks {from}");
        let mutated = tree(&text.replacen(from, to, 1));
        assert!(
            diff(&ours, &mutated, "", IGNORED).is_some(),
            "changing {from} to {to} went unnoticed"
        );
    }
}

#[test]
fn one_action_per_category_in_order() {
    let mut q = sample_question();
    q.categories = vec!["GGC002".parse().unwrap(), "GGC007".parse().unwrap()];
    let t = tree(&write_closed_question(&q, "urn:uuid:1", "x"));
    let request = &t.children[1].children[0].children[0];
    assert_eq!(request.local, "Request");
    let actions: Vec<(&str, &str)> = request
        .children
        .iter()
        .filter(|a| {
            a.attrs
                .get(&(String::new(), "Category".into()))
                .map(String::as_str)
                == Some(category::ACTION)
        })
        .map(|a| {
            (
                a.attrs[&(ns::XML.to_owned(), "id".to_owned())].as_str(),
                a.children[0].children[0].children[0].attrs[&(String::new(), "code".to_owned())]
                    .as_str(),
            )
        })
        .collect();
    assert_eq!(actions, vec![("action0", "GGC002"), ("action1", "GGC007")]);
    // the mandated professional goes into the subject when present
    q.mandated = Some("123456782".parse().unwrap());
    let text = write_closed_question(&q, "urn:uuid:1", "x");
    assert!(text.contains(attr::MANDATED));
}

#[test]
fn the_simulator_side_reads_the_sample_question() {
    let (h, q) =
        read_closed_question(sample("xacml/example.xml").as_bytes(), &Limits::default()).unwrap();
    assert_eq!(h.action, ACTION);
    assert_eq!(q.categories, vec!["GGC002"]);
    assert_eq!(q.get(attr::RESOURCE_ID), Some("900186021"));
    assert_eq!(q.get(attr::HOLDER_URA), Some("00000659"));
    assert_eq!(q.get(attr::PROVIDER_INSTITUTION), Some("00000666"));
    assert_eq!(q.get(attr::ROLE), Some("01.015"));
}

fn ggc(c: &str) -> DataCategory {
    c.parse().unwrap()
}

/// The sample question, asking these categories.
fn asking(categories: &[DataCategory]) -> ClosedQuestion {
    ClosedQuestion {
        categories: categories.to_vec(),
        ..sample_question()
    }
}

#[test]
fn reads_the_derived_permit_and_deny_samples() {
    let l = Limits::default();
    let p = read_closed_answer(
        sample("xacml/derived/xacml-response-permit.xml").as_bytes(),
        &asking(&[ggc("GGC002")]),
        &l,
    )
    .unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].decision, Decision::Permit);
    assert_eq!(p[0].status_code.as_deref(), Some(STATUS_OK));
    assert_eq!(p[0].status_message.as_deref(), Some("Consent granted"));
    let d = read_closed_answer(
        sample("xacml/derived/xacml-response-deny.xml").as_bytes(),
        &asking(&[ggc("GGC002")]),
        &l,
    )
    .unwrap();
    assert_eq!(d[0].decision, Decision::Deny);
    assert_eq!(d[0].status_message.as_deref(), Some("No consent found"));
}

#[test]
fn a_permit_with_an_error_status_is_indeterminate() {
    let permit = sample("xacml/derived/xacml-response-permit.xml");
    assert!(permit.contains(STATUS_OK));
    for status in [
        STATUS_PROCESSING_ERROR,
        STATUS_MISSING_ATTRIBUTE,
        "urn:example:odd",
    ] {
        let answer = permit.replacen(STATUS_OK, status, 1);
        let d = read_closed_answer(
            answer.as_bytes(),
            &asking(&[ggc("GGC002")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d[0].decision, Decision::Indeterminate, "{status}");
        assert_eq!(d[0].status_code.as_deref(), Some(status));
    }
}

#[test]
fn a_single_decision_answer_is_written_exactly_like_the_derived_samples() {
    for (file, decision, msg) in [
        (
            "xacml-response-permit.xml",
            Decision::Permit,
            "Consent granted",
        ),
        (
            "xacml-response-deny.xml",
            Decision::Deny,
            "No consent found",
        ),
    ] {
        let ours = write_closed_answer(
            &[CategoryDecision {
                category: ggc("GGC002"),
                decision,
                status_code: None,
                status_message: Some(msg.into()),
            }],
            false,
        );
        let expected = tree(&sample(&format!("xacml/derived/{file}")));
        assert_eq!(diff(&tree(&ours), &expected, "", &[]), None, "{ours}");
    }
}

#[test]
fn every_decision_round_trips_and_echoes_map_categories() {
    let l = Limits::default();
    let asked = [ggc("GGC002"), ggc("GGC007"), ggc("GGC012")];
    let results: Vec<CategoryDecision> = [
        (Decision::NotApplicable, "GGC007"),
        (Decision::Permit, "GGC002"),
        (Decision::Indeterminate, "GGC012"),
    ]
    .into_iter()
    .map(|(d, c)| CategoryDecision {
        category: ggc(c),
        decision: d,
        status_code: None,
        status_message: None,
    })
    .collect();
    let got = read_closed_answer(
        write_closed_answer(&results, true).as_bytes(),
        &asking(&asked),
        &l,
    )
    .unwrap();
    let pairs: Vec<(&str, Decision)> = got
        .iter()
        .map(|c| (c.category.as_str(), c.decision))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("GGC002", Decision::Permit),
            ("GGC007", Decision::NotApplicable),
            ("GGC012", Decision::Indeterminate)
        ]
    );
    // an asked category the answer does not mention is Indeterminate
    let got = read_closed_answer(
        write_closed_answer(&results[..1], true).as_bytes(),
        &asking(&[ggc("GGC002"), ggc("GGC007")]),
        &l,
    )
    .unwrap();
    assert_eq!(got[0].decision, Decision::Indeterminate);
    assert_eq!(got[1].decision, Decision::NotApplicable);
    // several Results without echoes cannot be attributed: all Indeterminate, never a Permit
    let mut permits = results.clone();
    for r in &mut permits {
        r.decision = Decision::Permit;
    }
    let got = read_closed_answer(
        write_closed_answer(&permits, false).as_bytes(),
        &asking(&asked),
        &l,
    )
    .unwrap();
    assert!(got.iter().all(|c| c.decision == Decision::Indeterminate));
}

#[test]
fn broken_answers_are_errors() {
    let l = Limits::default();
    let asked = [ggc("GGC002")];
    let permit = sample("xacml/derived/xacml-response-permit.xml");
    for bad in [
        "".to_owned(),
        "not xml at all".to_owned(),
        "<html><body>502 Bad Gateway</body></html>".to_owned(),
        permit.replace("<Decision>Permit</Decision>", "<Decision>permit</Decision>"),
        permit.replace(
            "<Decision>Permit</Decision>",
            "<Decision>Permit, Deny</Decision>",
        ),
        permit.replace("<Decision>Permit</Decision>", ""),
        permit.replace(
            "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17",
            "urn:other",
        ),
        permit[..permit.len() / 2].to_owned(),
        permit.replace("</Status>", "</Statsu>"),
        soap::write_fault(
            &soap::Fault {
                code: soap::FaultCode::Receiver,
                subcode: None,
                reason: "down".into(),
            },
            None,
        ),
    ] {
        assert!(
            read_closed_answer(bad.as_bytes(), &asking(&asked), &l).is_err(),
            "accepted {bad:?}"
        );
    }
    // an answer with a Result but an empty Response is an error too
    let empty =
        permit.split("<Result>").next().unwrap().to_owned() + "</Response></s:Body></s:Envelope>";
    assert!(read_closed_answer(empty.as_bytes(), &asking(&asked), &l).is_err());
}

#[test]
fn a_response_nested_in_a_saml_wrapper_is_found() {
    let doc = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol"><a:Assertion xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion"><x:XACMLAuthzDecisionStatement xmlns:x="urn:oasis:names:tc:xacml:3.0:profile:saml2.0:v2:schema:assertion:wd-14"><c:Response xmlns:c="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"><c:Result><c:Decision>Deny</c:Decision></c:Result></c:Response></x:XACMLAuthzDecisionStatement></a:Assertion></p:Response></e:Body></e:Envelope>"#;
    let got = read_closed_answer(
        doc.as_bytes(),
        &asking(&[ggc("GGC002")]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(got[0].decision, Decision::Deny);
}

/// An answer envelope with one `Result` per item: its `Decision` elements in order, and the attributes it
/// echoes as (category, attribute id, II extension / CV code, root / codeSystem, II or CV).
/// One echoed attribute: (category, attribute id, II extension / CV code, root / codeSystem, II or CV).
type EchoSpec<'a> = (&'a str, &'a str, &'a str, &'a str, bool);

fn answer_with(results: &[(&[&str], &[EchoSpec<'_>])]) -> String {
    let mut x = String::from(
        r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><Response xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17">"#,
    );
    for (decisions, echoes) in results {
        x.push_str("<Result>");
        for d in *decisions {
            x.push_str(&format!("<Decision>{d}</Decision>"));
        }
        x.push_str(
            r#"<Status><StatusCode Value="urn:oasis:names:tc:xacml:1.0:status:ok"/></Status>"#,
        );
        for (cat, id, value, system, is_ii) in *echoes {
            let v = if *is_ii {
                format!(
                    r#"<InstanceIdentifier xmlns="urn:hl7-org:v3" extension="{value}" root="{system}"/>"#
                )
            } else {
                format!(
                    r#"<CodedValue xmlns="urn:hl7-org:v3" code="{value}" codeSystem="{system}"/>"#
                )
            };
            x.push_str(&format!(
                r#"<Attributes Category="{cat}"><Attribute AttributeId="{id}" IncludeInResult="true"><AttributeValue DataType="urn:hl7-org:v3#II">{v}</AttributeValue></Attribute></Attributes>"#
            ));
        }
        x.push_str("</Result>");
    }
    x.push_str("</Response></s:Body></s:Envelope>");
    x
}

/// Every attribute of the sample question as a Result echoes it (XACML 3.0 §5.47), for `category`.
fn full_echo(category: &str) -> Vec<(&'static str, &'static str, String, &'static str, bool)> {
    let q = sample_question();
    let r = &q.requester;
    vec![
        (
            category::RESOURCE,
            attr::RESOURCE_ID,
            q.patient.as_str().to_owned(),
            Bsn::OID,
            true,
        ),
        (
            category::RESOURCE,
            attr::HOLDER_FACILITY_TYPE,
            q.holder_facility_type.as_str().to_owned(),
            FacilityType::CODE_SYSTEM,
            false,
        ),
        (
            category::RESOURCE,
            attr::HOLDER_URA,
            q.holder_ura.as_str().to_owned(),
            Ura::OID,
            true,
        ),
        (
            category::ACTION,
            attr::EVENT_CODE,
            category.to_owned(),
            DataCategory::CODE_SYSTEM,
            false,
        ),
        (
            category::ACCESS_SUBJECT,
            attr::ROLE,
            r.role.as_str().to_owned(),
            RoleCode::CODE_SYSTEM,
            false,
        ),
        (
            category::ACCESS_SUBJECT,
            attr::PROVIDER_IDENTIFIER,
            r.uzi.as_str().to_owned(),
            UziNumber::OID,
            true,
        ),
        (
            category::ACCESS_SUBJECT,
            attr::PROVIDER_INSTITUTION,
            r.ura.as_str().to_owned(),
            Ura::OID,
            true,
        ),
        (
            category::ACCESS_SUBJECT,
            attr::CONSULTING_FACILITY_TYPE,
            r.facility_type.as_str().to_owned(),
            FacilityType::CODE_SYSTEM,
            false,
        ),
        (
            category::ENVIRONMENT,
            attr::PURPOSE_OF_USE,
            r.purpose_of_use.as_str().to_owned(),
            PurposeOfUse::CODE_SYSTEM,
            false,
        ),
    ]
}

fn borrowed<'a>(
    v: &'a [(&'static str, &'static str, String, &'static str, bool)],
) -> Vec<(&'static str, &'static str, &'a str, &'static str, bool)> {
    v.iter()
        .map(|(c, a, x, s, ii)| (*c, *a, x.as_str(), *s, *ii))
        .collect()
}

fn decide(answer: &str, categories: &[&str]) -> Vec<Decision> {
    let cats: Vec<DataCategory> = categories.iter().map(|c| ggc(c)).collect();
    read_closed_answer(answer.as_bytes(), &asking(&cats), &Limits::default())
        .unwrap()
        .into_iter()
        .map(|d| d.decision)
        .collect()
}

#[test]
fn a_result_with_two_decisions_decides_nothing() {
    // issue 12, defect 2: Deny then Permit in one Result was read as Permit (the last one won)
    let permit = sample("xacml/derived/xacml-response-permit.xml");
    for two in [
        "<Decision>Deny</Decision><Decision>Permit</Decision>",
        "<Decision>Permit</Decision><Decision>Deny</Decision>",
        "<Decision>Permit</Decision><Decision>Permit</Decision>",
    ] {
        let answer = permit.replace("<Decision>Permit</Decision>", two);
        let got = read_closed_answer(
            answer.as_bytes(),
            &asking(&[ggc("GGC002")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(got[0].decision, Decision::Indeterminate, "{two}");
        assert!(
            got[0]
                .status_message
                .as_deref()
                .unwrap_or("")
                .contains("2 decisions"),
            "{:?}",
            got[0]
        );
    }
    // the same with echoed categories
    let full = full_echo("GGC002");
    let echo = borrowed(&full);
    assert_eq!(
        decide(&answer_with(&[(&["Deny", "Permit"], &echo)]), &["GGC002"]),
        [Decision::Indeterminate]
    );
}

#[test]
fn an_answer_echoing_the_question_is_accepted_and_one_contradicting_it_is_not() {
    let echo = full_echo("GGC002");
    // every attribute echoed as asked: the Permit stands
    assert_eq!(
        decide(
            &answer_with(&[(&["Permit"], &borrowed(&echo))]),
            &["GGC002"]
        ),
        [Decision::Permit]
    );
    // issue 12, defect 2: a Permit whose echoed resource-id names another patient was accepted
    let other_patient = "123456782";
    let q = sample_question();
    let r = &q.requester;
    let contradictions: Vec<(&str, String, Option<&str>)> = vec![
        (attr::RESOURCE_ID, other_patient.into(), None),
        (
            attr::RESOURCE_ID,
            q.patient.as_str().into(),
            Some("2.16.840.1.113883.2.4.6.4"),
        ),
        (attr::HOLDER_URA, "00000777".into(), None),
        (attr::HOLDER_FACILITY_TYPE, "V6".into(), None),
        (attr::ROLE, "01.039".into(), None),
        (
            attr::ROLE,
            r.role.as_str().into(),
            Some("2.16.840.1.113883.2.4.15.112"),
        ),
        (attr::PROVIDER_IDENTIFIER, "000012345".into(), None),
        (attr::PROVIDER_INSTITUTION, "00000777".into(), None),
        (attr::CONSULTING_FACILITY_TYPE, "B1".into(), None),
        (attr::PURPOSE_OF_USE, "EMERGENCY".into(), None),
        (attr::EVENT_CODE, "GGC007".into(), None),
    ];
    for (id, value, root) in &contradictions {
        let mut e = echo.clone();
        let item = e.iter_mut().find(|x| x.1 == *id).unwrap();
        item.2 = value.clone();
        if let Some(root) = root {
            item.3 = root;
        }
        assert_eq!(
            decide(&answer_with(&[(&["Permit"], &borrowed(&e))]), &["GGC002"]),
            [Decision::Indeterminate],
            "{id} = {value} ({root:?}) went unnoticed"
        );
    }
    // a mandating professional the question did not name
    let mut e = echo.clone();
    e.push((
        category::ACCESS_SUBJECT,
        attr::MANDATED,
        "123456782".into(),
        UziNumber::OID,
        true,
    ));
    assert_eq!(
        decide(&answer_with(&[(&["Permit"], &borrowed(&e))]), &["GGC002"]),
        [Decision::Indeterminate]
    );
    // a contradiction in one Result leaves every category undecided, also those of clean Results
    let mut bad = full_echo("GGC007");
    bad[0].2 = other_patient.into();
    let got = decide(
        &answer_with(&[
            (&["Permit"], &borrowed(&echo)),
            (&["Permit"], &borrowed(&bad)),
        ]),
        &["GGC002", "GGC007"],
    );
    assert_eq!(got, [Decision::Indeterminate, Decision::Indeterminate]);
    // a plain string value (no HL7 type) naming another patient is a contradiction too
    let plain = sample("xacml/derived/xacml-response-permit.xml").replace(
        "</Status>",
        &format!(
            r#"</Status><Attributes Category="{}"><Attribute AttributeId="{}"><AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{other_patient}</AttributeValue></Attribute></Attributes>"#,
            category::RESOURCE,
            attr::RESOURCE_ID
        ),
    );
    assert_eq!(decide(&plain, &["GGC002"]), [Decision::Indeterminate]);
}

#[test]
fn exactly_one_result_per_asked_category() {
    let e2 = full_echo("GGC002");
    let e7 = full_echo("GGC007");
    // one Result each: both decided
    assert_eq!(
        decide(
            &answer_with(&[(&["Deny"], &borrowed(&e7)), (&["Permit"], &borrowed(&e2))]),
            &["GGC002", "GGC007"]
        ),
        [Decision::Permit, Decision::Deny]
    );
    // a duplicated Result for one category (even agreeing): that category is undecided
    assert_eq!(
        decide(
            &answer_with(&[
                (&["Permit"], &borrowed(&e2)),
                (&["Permit"], &borrowed(&e2)),
                (&["Deny"], &borrowed(&e7))
            ]),
            &["GGC002", "GGC007"]
        ),
        [Decision::Indeterminate, Decision::Deny]
    );
    // a Result naming two categories decides neither
    let mut both = e2.clone();
    both.push((
        category::ACTION,
        attr::EVENT_CODE,
        "GGC007".into(),
        DataCategory::CODE_SYSTEM,
        false,
    ));
    assert_eq!(
        decide(
            &answer_with(&[(&["Permit"], &borrowed(&both))]),
            &["GGC002", "GGC007"]
        ),
        [Decision::Indeterminate, Decision::Indeterminate]
    );
    // a Result naming no category beside one that does: it could be for either, so neither is decided
    assert_eq!(
        decide(
            &answer_with(&[(&["Permit"], &borrowed(&e2)), (&["Deny"], &[])]),
            &["GGC002", "GGC007"]
        ),
        [Decision::Indeterminate, Decision::Indeterminate]
    );
    assert_eq!(
        decide(
            &answer_with(&[(&["Permit"], &borrowed(&e2)), (&["Deny"], &[])]),
            &["GGC002"]
        ),
        [Decision::Indeterminate]
    );
    // two Results without echoes for one category: not attributable
    assert_eq!(
        decide(
            &answer_with(&[(&["Permit"], &[]), (&["Permit"], &[])]),
            &["GGC002"]
        ),
        [Decision::Indeterminate]
    );
    // the nuts-knooppunt mock's answer (Decision and Status only) for one category stands
    assert_eq!(
        decide(&answer_with(&[(&["Permit"], &[])]), &["GGC002"]),
        [Decision::Permit]
    );
}

/// The permit sample's Body payload (the XACML Response element), for building answers around it.
fn permit_response() -> String {
    let permit = sample("xacml/derived/xacml-response-permit.xml");
    let start = permit.find("<Response").unwrap();
    let end = permit.find("</Response>").unwrap() + "</Response>".len();
    permit[start..end].to_owned()
}

fn envelope(body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

#[test]
fn an_answer_with_more_than_one_response_or_a_trailing_fault_decides_nothing() {
    // found by the breaking run of issue 12: the reader took the first Response of the Body and never
    // looked at the rest, so "Permit, then Deny" (or a Permit echoing another patient in a second
    // Response, or a Fault after the Response) disclosed
    let permit = permit_response();
    let deny = permit.replace("<Decision>Permit</Decision>", "<Decision>Deny</Decision>");
    let full = full_echo("GGC002");
    let echo = borrowed(&full);
    // a fully echoing Permit for another patient (the question's patient replaced)
    let other_response = {
        let a = answer_with(&[(&["Permit"], &echo)]);
        let s = a.find("<s:Body>").unwrap() + "<s:Body>".len();
        let e = a.find("</s:Body>").unwrap();
        a[s..e].replace(sample_question().patient.as_str(), "999911120")
    };
    let fault = r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text xml:lang="en">down</s:Text></s:Reason></s:Fault>"#;
    for (name, body) in [
        ("Permit then Deny", format!("{permit}{deny}")),
        ("Deny then Permit", format!("{deny}{permit}")),
        ("Permit twice", format!("{permit}{permit}")),
        (
            "Permit then another patient's Permit",
            format!("{permit}{other_response}"),
        ),
        ("Permit then a Fault", format!("{permit}{fault}")),
        (
            "two Responses in one wrapper",
            format!(r#"<w:Wrap xmlns:w="urn:example">{permit}{deny}</w:Wrap>"#),
        ),
    ] {
        let got = read_closed_answer(
            envelope(&body).as_bytes(),
            &asking(&[ggc("GGC002")]),
            &Limits::default(),
        );
        assert!(
            got.as_ref().is_err()
                || got
                    .as_ref()
                    .unwrap()
                    .iter()
                    .all(|d| d.decision != Decision::Permit),
            "{name}: {got:?}"
        );
    }
    // one Response is still read
    let got = read_closed_answer(
        envelope(&permit).as_bytes(),
        &asking(&[ggc("GGC002")]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(got[0].decision, Decision::Permit);
}

#[test]
fn a_saml_wrapper_with_a_failing_status_decides_nothing() {
    let permit = permit_response();
    let wrapped = |code: &str| {
        envelope(&format!(
            r#"<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol"><p:Status><p:StatusCode Value="{code}"/></p:Status><a:Assertion xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion">{permit}</a:Assertion></p:Response>"#
        ))
    };
    for code in [
        "urn:oasis:names:tc:SAML:2.0:status:Responder",
        "urn:oasis:names:tc:SAML:2.0:status:Requester",
        "",
    ] {
        assert!(
            read_closed_answer(
                wrapped(code).as_bytes(),
                &asking(&[ggc("GGC002")]),
                &Limits::default()
            )
            .is_err(),
            "SAML status {code:?} accepted"
        );
    }
    let ok = read_closed_answer(
        wrapped("urn:oasis:names:tc:SAML:2.0:status:Success").as_bytes(),
        &asking(&[ggc("GGC002")]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(ok[0].decision, Decision::Permit);
}

#[test]
fn several_statuses_or_obligations_make_a_permit_indeterminate() {
    let ok = r#"<StatusCode Value="urn:oasis:names:tc:xacml:1.0:status:ok"/>"#;
    let err = r#"<StatusCode Value="urn:oasis:names:tc:xacml:1.0:status:processing-error"/>"#;
    let permit = permit_response();
    let status_start = permit.find("<Status>").unwrap();
    let status_end = permit.find("</Status>").unwrap() + "</Status>".len();
    let with_status =
        |s: &str| format!("{}{}{}", &permit[..status_start], s, &permit[status_end..]);
    for (name, body) in [
        (
            "error status, then ok",
            with_status(&format!("<Status>{err}</Status><Status>{ok}</Status>")),
        ),
        (
            "two codes in one Status",
            with_status(&format!("<Status>{err}{ok}</Status>")),
        ),
        (
            "ok, then error",
            with_status(&format!("<Status>{ok}</Status><Status>{err}</Status>")),
        ),
        (
            "obligations",
            with_status(&format!(
                r#"<Status>{ok}</Status><Obligations><Obligation ObligationId="urn:example:log"/></Obligations>"#
            )),
        ),
    ] {
        let got = read_closed_answer(
            envelope(&body).as_bytes(),
            &asking(&[ggc("GGC002")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(got[0].decision, Decision::Indeterminate, "{name}");
    }
}
