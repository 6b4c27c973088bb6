use super::*;
use crate::ihe::soap::SoapHeader;
use crate::ihe::transform::document_entry_from_wire;
use crate::ihe::{read_soap, write_soap};
use crate::xml::Limits;

const BSN_A: &str = "900186021";
const BSN_B: &str = "999990019";

fn entry(n: usize, patient_cx: &str) -> DocumentEntry {
    DocumentEntry {
        entry_uuid: format!("urn:uuid:00000000-0000-4000-8000-{n:012}"),
        unique_id: format!("1.2.3.4.{n}"),
        repository_unique_id: "1.2.3.10".into(),
        patient_id: patient_cx.into(),
        status: "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved".into(),
        mime_type: "application/dicom".into(),
        ..Default::default()
    }
}

fn cx(bsn: &str) -> String {
    bsn.parse::<Bsn>().unwrap().to_cx()
}

fn notify_xml(entries: &[DocumentEntry]) -> String {
    let h = SoapHeader::request(NOTIFY_ACTION, Some("https://duo.b.example/dsub/notify"));
    write_soap(
        &h,
        &Notify::full(
            "https://broker.example/subscription/1",
            Some("https://broker.example"),
            entries,
        ),
    )
}

fn read_notify(xml: &[u8]) -> Result<Notify, crate::ihe::SoapError> {
    read_soap::<Notify>(xml, &Limits::default()).map(|(_, n)| n)
}

#[test]
fn subscribe_round_trips_with_the_spec_names() {
    let s = Subscribe::patient_independent(
        "https://duo.b.example/dsub/notify",
        TOPIC_FULL_DOCUMENT_ENTRY,
        Some("2030-01-01T00:00:00Z".parse().unwrap()),
    );
    let xml = write_soap(&SoapHeader::request(SUBSCRIBE_ACTION, None), &s);
    for needle in [
        "http://docs.oasis-open.org/wsn/bw-2/NotificationProducer/SubscribeRequest",
        "<wsnt:ConsumerReference><wsa:Address>https://duo.b.example/dsub/notify</wsa:Address>",
        "Dialect=\"http://docs.oasis-open.org/wsn/t-1/TopicExpression/Simple\">ihe:FullDocumentEntry<",
        "<rim:AdhocQuery id=\"urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79\"",
        "<wsnt:InitialTerminationTime>2030-01-01T00:00:00Z</wsnt:InitialTerminationTime>",
    ] {
        assert!(xml.contains(needle), "{needle} not in {xml}");
    }
    let (h, back) = read_soap::<Subscribe>(xml.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(h.action, SUBSCRIBE_ACTION);
    assert_eq!(back, s);
}

#[test]
fn reads_a_patient_dependent_subscribe_as_published_with_prefixes_of_its_own() {
    // the ITI-52 example's shape (patient-dependent, minimal topic), other prefixes
    let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing">
 <s:Header><a:Action>http://docs.oasis-open.org/wsn/bw-2/NotificationProducer/SubscribeRequest</a:Action>
 <a:MessageID>urn:uuid:382dcdc7-8e84-9fdc-8443-48fd83bca938</a:MessageID></s:Header>
 <s:Body><n:Subscribe xmlns:n="http://docs.oasis-open.org/wsn/b-2" xmlns:r="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <n:ConsumerReference><a:Address> https://NotificationRecipientServer/xdsBnotification </a:Address></n:ConsumerReference>
  <n:Filter><n:TopicExpression Dialect="http://docs.oasis-open.org/wsn/t-1/TopicExpression/Simple">ihe:MinimalDocumentEntry</n:TopicExpression>
   <r:AdhocQuery id="urn:uuid:aa2332d0-f8fe-11e0-be50-0800200c9a66"><r:Slot name="$XDSDocumentEntryPatientId"><r:ValueList>
    <r:Value>'st3498702^^^&amp;1.3.6.1.4.1.21367.2005.3.7&amp;ISO'</r:Value></r:ValueList></r:Slot></r:AdhocQuery></n:Filter>
  <n:InitialTerminationTime>2010-05-31T00:00:00.00000Z</n:InitialTerminationTime></n:Subscribe></s:Body></s:Envelope>"#;
    let (_, s) = read_soap::<Subscribe>(xml.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(
        s.consumer,
        "https://NotificationRecipientServer/xdsBnotification"
    );
    assert_eq!(s.topic, TOPIC_MINIMAL_DOCUMENT_ENTRY);
    assert_eq!(s.query.id, QUERY_DOCUMENT_ENTRY);
    assert_eq!(s.query.slots.len(), 1);
    // another dialect is refused, as is a Subscribe without consumer
    let other = xml.replace("t-1/TopicExpression/Simple", "t-1/TopicExpression/Full");
    assert!(read_soap::<Subscribe>(other.as_bytes(), &Limits::default()).is_err());
    let no_consumer = xml.replace(" https://NotificationRecipientServer/xdsBnotification ", "");
    assert!(read_soap::<Subscribe>(no_consumer.as_bytes(), &Limits::default()).is_err());
}

#[test]
fn subscribe_response_round_trips_and_needs_a_reference() {
    let r = SubscribeResponse {
        subscription_reference: "https://broker.example/subscription/7".into(),
        current_time: Some("2026-12-08T01:00:00Z".into()),
        termination_time: Some("2026-12-09T01:00:00Z".into()),
    };
    let req = SoapHeader::request(SUBSCRIBE_ACTION, None);
    let xml = write_soap(&SoapHeader::response(SUBSCRIBE_RESPONSE_ACTION, &req), &r);
    let (h, back) = read_soap::<SubscribeResponse>(xml.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(h.action, SUBSCRIBE_RESPONSE_ACTION);
    assert_eq!(back, r);
    let empty = xml.replace("https://broker.example/subscription/7", "");
    assert!(read_soap::<SubscribeResponse>(empty.as_bytes(), &Limits::default()).is_err());
}

#[test]
fn notify_round_trips_and_names_each_patient_once() {
    let entries = vec![entry(1, &cx(BSN_A)), entry(2, &cx(BSN_A))];
    let xml = notify_xml(&entries);
    assert!(xml.contains(NOTIFY_ACTION));
    let n = read_notify(xml.as_bytes()).unwrap();
    assert_eq!(n.messages.len(), 1);
    assert_eq!(
        n.messages[0].subscription_reference.as_deref(),
        Some("https://broker.example/subscription/1")
    );
    let back: Vec<DocumentEntry> = n.messages[0]
        .entries
        .iter()
        .map(|e| document_entry_from_wire(e).unwrap())
        .collect();
    assert_eq!(back[0].patient_id, entries[0].patient_id);
    assert_eq!(back[1].unique_id, entries[1].unique_id);
    let p = notified_patients(&n).unwrap();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].bsn.as_str(), BSN_A);
    assert_eq!(p[0].entries.len(), 2);
    assert_eq!(p[0].birth_date, None);
}

#[test]
fn a_notify_naming_two_patients_names_both() {
    let xml = notify_xml(&[entry(1, &cx(BSN_A)), entry(2, &cx(BSN_B))]);
    let p = notified_patients(&read_notify(xml.as_bytes()).unwrap()).unwrap();
    let bsns: Vec<&str> = p.iter().map(|p| p.bsn.as_str()).collect();
    assert_eq!(bsns, [BSN_A, BSN_B]);
}

#[test]
fn a_patient_id_that_is_not_a_bsn_cx_refuses_the_whole_notify_naming_it() {
    for bad in [
        "st3498702^^^&1.3.6.1.4.1.21367.2005.3.7&ISO",
        "123456789^^^&2.16.840.1.113883.2.4.6.3&ISO",
        "900186021",
        "900186021^^^&2.16.840.1.113883.2.4.6.4&ISO",
        "",
    ] {
        let xml = notify_xml(&[entry(1, &cx(BSN_A)), entry(2, bad)]);
        let n = read_notify(xml.as_bytes()).unwrap();
        let e = notified_patients(&n).unwrap_err();
        let named = matches!(&e, NotifyError::NotBsn { entry, .. } | NotifyError::NoPatient { entry }
            if entry.ends_with("000000000002"));
        assert!(named, "{bad:?}: {e:?}");
    }
}

#[test]
fn birth_date_comes_from_pid_7_when_valid() {
    let mut eo = document_entry_to_wire(&entry(1, &cx(BSN_A)));
    eo.object.slots.push(crate::ihe::ebrim::Slot::new(
        SOURCE_PATIENT_INFO,
        [
            "PID-3|900186021^^^&2.16.840.1.113883.2.4.6.3&ISO",
            "PID-7|19800229",
        ],
    ));
    let n = Notify {
        messages: vec![NotificationMessage {
            topic: TOPIC_FULL_DOCUMENT_ENTRY.into(),
            entries: vec![eo.clone()],
            ..Default::default()
        }],
    };
    let xml = write_soap(&SoapHeader::request(NOTIFY_ACTION, None), &n);
    let p = notified_patients(&read_notify(xml.as_bytes()).unwrap()).unwrap();
    assert_eq!(p[0].birth_date, Some(jiff::civil::date(1980, 2, 29)));
    // an impossible or future date is no birth date (the registration goes without it)
    for v in [
        "PID-7|19810229",
        "PID-7|20991231",
        "PID-7|1980",
        "PID-7|abcdefgh",
    ] {
        let mut e = eo.clone();
        e.object.slots.last_mut().unwrap().values[1] = v.into();
        assert_eq!(birth_date(&e), None, "{v}");
    }
}

#[test]
fn minimal_or_empty_notifications_name_no_patient() {
    let mut n = read_notify(notify_xml(&[entry(1, &cx(BSN_A))]).as_bytes()).unwrap();
    n.messages[0].topic = TOPIC_MINIMAL_DOCUMENT_ENTRY.into();
    assert!(matches!(notified_patients(&n), Err(NotifyError::Topic(_))));
    let empty = read_notify(notify_xml(&[]).as_bytes()).unwrap();
    assert_eq!(notified_patients(&empty), Err(NotifyError::Empty));
    // a Notify without any NotificationMessage is unreadable
    let xml = notify_xml(&[]);
    let start = xml.find("<wsnt:NotificationMessage>").unwrap();
    let end =
        xml.find("</wsnt:NotificationMessage>").unwrap() + "</wsnt:NotificationMessage>".len();
    let bare = format!("{}{}", &xml[..start], &xml[end..]);
    assert!(read_notify(bare.as_bytes()).is_err());
}

#[test]
fn ten_thousand_entries_are_refused_by_the_bound() {
    let entries: Vec<DocumentEntry> = (0..10_000).map(|i| entry(i, &cx(BSN_A))).collect();
    let xml = notify_xml(&entries);
    let e = read_notify(xml.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("more than 1000"), "{e}");
    // at the bound it is read
    let xml = notify_xml(&entries[..MAX_NOTIFY_ENTRIES]);
    assert_eq!(
        read_notify(xml.as_bytes()).unwrap().messages[0]
            .entries
            .len(),
        MAX_NOTIFY_ENTRIES
    );
}

#[test]
fn a_message_that_is_not_submit_objects_is_refused() {
    let xml = notify_xml(&[entry(1, &cx(BSN_A))])
        .replace("lcm:SubmitObjectsRequest", "lcm:RemoveObjectsRequest");
    assert!(read_notify(xml.as_bytes()).is_err());
}

#[test]
fn generated_mutations_never_panic_and_accepted_ones_name_only_bsns() {
    // single-byte deletions and byte flips (a fixed xorshift sequence) of a two-patient Notify:
    // read or refused, never a panic; whatever yields patients yields valid BSNs only
    let xml = notify_xml(&[entry(1, &cx(BSN_A)), entry(2, &cx(BSN_B))]);
    let b = xml.as_bytes();
    let check = |m: &[u8]| {
        if let Ok(n) = read_notify(m)
            && let Ok(p) = notified_patients(&n)
        {
            assert!(p.iter().all(|p| p.bsn.as_str().parse::<Bsn>().is_ok()));
        }
    };
    for i in (0..b.len()).step_by(5) {
        let mut m = b.to_vec();
        m.remove(i);
        check(&m);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = b.to_vec();
        let i = (x % m.len() as u64) as usize;
        m[i] = (x >> 32) as u8;
        check(&m);
    }
    for cut in (0..b.len()).step_by(11) {
        check(&b[..cut]);
    }
}
