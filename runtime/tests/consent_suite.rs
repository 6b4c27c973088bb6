//! The generated adversarial suite of the consent gate (issue 12).
//!
//! A seeded community holds six patients, each with studies (KOS manifest, report, instances), a
//! SubmissionSet, a Folder and their HasMember Associations. Mitz (in process, through the consent
//! service's transport seam, every answer read by the real XACML reader) knows for each patient one of:
//! Permit (for the requesting hospital's radiologist, purpose TREAT, only), Deny, nothing on record, or
//! fails. For every case proptest generates:
//!
//! - a request of one transaction: ITI-38 with any stored query the gateway accepts (and some it does
//!   not), random mixes of patient slots, ids of other patients, entryUUIDs, uniqueIds, reference ids,
//!   `home` and return type; ITI-39 with documents of any patient, unknown ones, wrong repositories;
//!   RAD-75 with studies, series and instances of any patient and study, unknown ones;
//! - one or two XUA assertions (requesters of this hospital with various UZI numbers and purposes of
//!   use, or of another organisation than the client certificate's), naming any patient or none;
//! - per patient a Mitz answer: clean (with or without echoed attributes) or hostile (two decisions,
//!   echoes of another patient, requester or category, duplicated or unattributable Results, a Permit
//!   with an error status, garbage, a SOAP fault);
//! - how the local community misbehaves: ignoring the query, adding objects of other patients
//!   (DocumentEntries, SubmissionSets, Folders, Associations across patients, ObjectRefs,
//!   Classifications, unknown elements), answering ObjectRefs only, adding documents to a retrieve,
//!   delivering instances of other studies and series.
//!
//! The property, checked on every response byte and every audit record: nothing of a patient leaves
//! unless Mitz said a clean Permit for that patient, this requester (the first assertion's, all its
//! attributes) and the configured category; at most one patient's data leaves per request; a RAD-75
//! instance leaves only under the study and series it belongs to; no consent record claims a disclosure
//! Mitz did not permit; every answer has exactly one query/retrieve record, and it names exactly what
//! left (objects, documents, studies), the patient, the requester and the purpose of use.
//!
//! Cases run in process (the responding handlers with the request bytes and a client certificate), and a
//! sample over real HTTPS with mutual TLS. `DUO_CONSENT_CASES` (default 10,000),
//! `DUO_CONSENT_TLS_CASES` (default 200) and `DUO_CONSENT_SEED` (hex or decimal; default fixed) change
//! the run; `scripts/consent-suite.sh` runs many more with a fresh seed. The counts are printed.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{
    Config as PropConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

use duo_runtime::audit::{AuditEvent, AuditRecord, MemoryAudit, Side};
use duo_runtime::backend::BoxFut;
use duo_runtime::config::ConsentMode;
use duo_runtime::consent::xacml::{self, ClosedQuestion, Decision};
use duo_runtime::consent::{ClosedQuestionTransport, ConsentService, MitzError};
use duo_runtime::gateway::{Gateway, Shared};
use duo_runtime::ihe::ebrim::Identifiable;
use duo_runtime::ihe::mtom::{self, MtomLimits};
use duo_runtime::ihe::query::{
    AdhocQuery, AdhocQueryRequest, AdhocQueryResponse, ReturnType, format_list, format_single,
    param, stored_query,
};
use duo_runtime::ihe::retrieve::{
    Content, DocumentRequest, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest,
    SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::transform::uuids;
use duo_runtime::ihe::xua::{UnsignedAssertions, XuaAssertion};
use duo_runtime::ihe::{read_soap, write_soap};
use duo_runtime::model::{Bsn, DataCategory, Requester, reference_type};
use duo_runtime::tls::TlsMaterial;
use duo_runtime::xml::Limits;
use duo_testkit::sim::seed::sha256_hex;

mod disclosure_support;
use disclosure_support::*;

// ---------------------------------------------------------------------------------------------------
// Mitz, answering as generated

/// How Mitz answers a question about one patient.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The true decision, `Decision` and `Status` only (the nuts-knooppunt mock's form).
    Plain,
    /// The true decision, echoing every attribute of the question.
    EchoAll,
    /// The true decision, echoing its category only.
    EchoCategory,
    /// Two decisions in one Result (the first, then the second).
    TwoDecisions(bool, bool),
    /// A Permit echoing another patient's resource-id.
    EchoPatient(Index),
    /// A Permit echoing another requesting organisation.
    EchoRequester,
    /// A Permit echoing another purpose of use.
    EchoPurpose,
    /// A Permit and a Deny Result without echoes.
    TwoResults,
    /// The same Permit Result twice, with its category.
    Duplicated,
    /// A Permit with a processing-error status.
    PermitBadStatus,
    /// A Permit whose processing-error Status is followed by an ok one.
    StatusErrorThenOk,
    /// A full Permit Response, then a Deny Response in the same Body.
    TwoResponses,
    /// A full Permit Response, then a SOAP fault in the same Body.
    PermitThenFault,
    /// A Permit echoing a category that was not asked.
    UnaskedCategory,
    /// Not XML.
    Garbage,
    /// A SOAP fault.
    Fault,
}

impl Answer {
    /// Whether this answer, to a question whose true decision is Permit, is a clean Permit.
    fn clean(self) -> bool {
        matches!(self, Answer::Plain | Answer::EchoAll | Answer::EchoCategory)
    }
}

/// A question Mitz got, and whether it answered it with a clean Permit.
#[derive(Debug, Clone)]
struct Asked {
    patient: Bsn,
    requester: Requester,
    categories: Vec<DataCategory>,
    clean_permit: bool,
}

struct ScriptedMitz {
    model: Arc<Model>,
    answers: Vec<Answer>,
    log: Mutex<Vec<Asked>>,
}

/// One echoed attribute of a generated Mitz answer: (category, attribute id, value, system, II or CV).
type Echoed = (String, String, String, String, bool);

fn echo(out: &mut String, category: &str, id: &str, value: &str, root: &str, ii: bool) {
    let v = if ii {
        format!(r#"<InstanceIdentifier xmlns="urn:hl7-org:v3" extension="{value}" root="{root}"/>"#)
    } else {
        format!(r#"<CodedValue xmlns="urn:hl7-org:v3" code="{value}" codeSystem="{root}"/>"#)
    };
    out.push_str(&format!(
        r#"<Attributes Category="{category}"><Attribute AttributeId="{id}" IncludeInResult="true"><AttributeValue DataType="urn:hl7-org:v3#II">{v}</AttributeValue></Attribute></Attributes>"#
    ));
}

/// A Result: decisions, status code, and the echoes as (category, id, value, root, ii).
type ResultSpec = (
    Vec<&'static str>,
    &'static str,
    Vec<(String, String, String, String, bool)>,
);

fn answer_body(results: &[ResultSpec]) -> String {
    let mut x = String::from(
        r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><Response xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17">"#,
    );
    for (decisions, status, echoes) in results {
        x.push_str("<Result>");
        for d in decisions {
            x.push_str(&format!("<Decision>{d}</Decision>"));
        }
        x.push_str(&format!(
            r#"<Status><StatusCode Value="{status}"/></Status>"#
        ));
        for (c, id, v, r, ii) in echoes {
            echo(&mut x, c, id, v, r, *ii);
        }
        x.push_str("</Result>");
    }
    x.push_str("</Response></s:Body></s:Envelope>");
    x
}

fn full_echo(q: &ClosedQuestion, category: &str) -> Vec<(String, String, String, String, bool)> {
    use xacml::{attr, category as cat};
    let r = &q.requester;
    let s = |x: &str| x.to_owned();
    vec![
        (
            s(cat::RESOURCE),
            s(attr::RESOURCE_ID),
            s(q.patient.as_str()),
            s(Bsn::OID),
            true,
        ),
        (
            s(cat::RESOURCE),
            s(attr::HOLDER_URA),
            s(q.holder_ura.as_str()),
            s("2.16.528.1.1007.3.3"),
            true,
        ),
        (
            s(cat::ACTION),
            s(attr::EVENT_CODE),
            s(category),
            s("2.16.840.1.113883.2.4.3.111.5.10.1"),
            false,
        ),
        (
            s(cat::ACCESS_SUBJECT),
            s(attr::PROVIDER_IDENTIFIER),
            s(r.uzi.as_str()),
            s("2.16.528.1.1007.3.1"),
            true,
        ),
        (
            s(cat::ACCESS_SUBJECT),
            s(attr::PROVIDER_INSTITUTION),
            s(r.ura.as_str()),
            s("2.16.528.1.1007.3.3"),
            true,
        ),
        (
            s(cat::ENVIRONMENT),
            s(attr::PURPOSE_OF_USE),
            s(r.purpose_of_use.as_str()),
            s("2.16.840.1.113883.1.11.20448"),
            false,
        ),
    ]
}

impl ScriptedMitz {
    /// The true decision for `q` (one category).
    fn truth(&self, q: &ClosedQuestion) -> Option<Decision> {
        let Some(p) = self.model.patients.iter().find(|p| p.bsn == q.patient) else {
            return Some(Decision::NotApplicable);
        };
        let r = &q.requester;
        Some(match p.consent {
            Consent::Permit
                if r.ura.as_str() == ORG_X
                    && r.uzi.as_str() == "000095254"
                    && r.purpose_of_use.as_str() == "TREAT"
                    && q.holder_ura.as_str() == HOLDER =>
            {
                Decision::Permit
            }
            Consent::Permit | Consent::Deny => Decision::Deny,
            Consent::Nothing => Decision::NotApplicable,
            Consent::Fails => return None,
        })
    }
}

impl ClosedQuestionTransport for ScriptedMitz {
    fn send<'a>(&'a self, q: &'a ClosedQuestion) -> BoxFut<'a, Result<Bytes, MitzError>> {
        Box::pin(async move {
            let idx = self.model.patients.iter().position(|p| p.bsn == q.patient);
            let answer = idx.map_or(Answer::Plain, |i| self.answers[i]);
            let truth = self.truth(q);
            let clean_permit = truth == Some(Decision::Permit)
                && answer.clean()
                && q.categories.len() == 1
                && q.categories[0].as_str() == CATEGORY;
            self.log.lock().unwrap().push(Asked {
                patient: q.patient.clone(),
                requester: q.requester.clone(),
                categories: q.categories.clone(),
                clean_permit,
            });
            let Some(truth) = truth else {
                return Err(MitzError::Transport(
                    "connection refused (generated)".into(),
                ));
            };
            const OK: &str = "urn:oasis:names:tc:xacml:1.0:status:ok";
            let cat = q
                .categories
                .first()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default();
            let d = truth.as_str();
            let with = |f: &dyn Fn(&mut Vec<Echoed>)| {
                let mut e = full_echo(q, &cat);
                f(&mut e);
                e
            };
            let body = match answer {
                Answer::Plain => answer_body(&[(vec![d], OK, Vec::new())]),
                Answer::EchoAll => answer_body(&[(vec![d], OK, full_echo(q, &cat))]),
                Answer::EchoCategory => answer_body(&[(
                    vec![d],
                    OK,
                    full_echo(q, &cat)
                        .into_iter()
                        .filter(|e| e.1 == xacml::attr::EVENT_CODE)
                        .collect(),
                )]),
                Answer::TwoDecisions(a, b) => {
                    let pick = |x: bool| if x { "Permit" } else { d };
                    answer_body(&[(vec![pick(a), pick(b)], OK, Vec::new())])
                }
                Answer::EchoPatient(i) => {
                    let others: Vec<&Patient> = self
                        .model
                        .patients
                        .iter()
                        .filter(|p| p.bsn != q.patient)
                        .collect();
                    let other = others[i.index(others.len())].bsn.as_str().to_owned();
                    answer_body(&[(vec!["Permit"], OK, with(&|e| e[0].2 = other.clone()))])
                }
                Answer::EchoRequester => {
                    // always another organisation than the question's
                    let other = if q.requester.ura.as_str() == ORG_Y {
                        ORG_X
                    } else {
                        ORG_Y
                    };
                    answer_body(&[(vec!["Permit"], OK, with(&|e| e[4].2 = other.into()))])
                }
                Answer::EchoPurpose => {
                    // always another purpose than the question's
                    let other = if q.requester.purpose_of_use.as_str() == "TREAT" {
                        "EMERGENCY"
                    } else {
                        "TREAT"
                    };
                    answer_body(&[(vec!["Permit"], OK, with(&|e| e[5].2 = other.into()))])
                }
                Answer::TwoResults => answer_body(&[
                    (vec!["Permit"], OK, Vec::new()),
                    (vec!["Deny"], OK, Vec::new()),
                ]),
                Answer::Duplicated => answer_body(&[
                    (vec!["Permit"], OK, full_echo(q, &cat)),
                    (vec!["Permit"], OK, full_echo(q, &cat)),
                ]),
                Answer::PermitBadStatus => answer_body(&[(
                    vec!["Permit"],
                    "urn:oasis:names:tc:xacml:1.0:status:processing-error",
                    Vec::new(),
                )]),
                Answer::StatusErrorThenOk => answer_body(&[(
                    vec!["Permit"],
                    "urn:oasis:names:tc:xacml:1.0:status:processing-error",
                    full_echo(q, &cat),
                )])
                .replacen(
                    "</Status>",
                    &format!(r#"</Status><Status><StatusCode Value="{OK}"/></Status>"#),
                    1,
                ),
                Answer::TwoResponses | Answer::PermitThenFault => {
                    let permit = answer_body(&[(vec!["Permit"], OK, full_echo(q, &cat))]);
                    let second = if matches!(answer, Answer::TwoResponses) {
                        let deny = answer_body(&[(vec!["Deny"], OK, full_echo(q, &cat))]);
                        let from = deny.find("<Response").unwrap_or(0);
                        let to = deny.rfind("</Response>").map_or(deny.len(), |i| i + 11);
                        deny[from..to].to_owned()
                    } else {
                        r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text xml:lang="en">generated</s:Text></s:Reason></s:Fault>"#.to_owned()
                    };
                    permit.replacen("</Response>", &format!("</Response>{second}"), 1)
                }
                Answer::UnaskedCategory => {
                    answer_body(&[(vec!["Permit"], OK, with(&|e| e[2].2 = "GGC007".into()))])
                }
                Answer::Garbage => "<<< not xacml &&&".to_owned(),
                Answer::Fault => duo_runtime::ihe::soap::write_fault(
                    &duo_runtime::ihe::Fault {
                        code: duo_runtime::ihe::FaultCode::Receiver,
                        subcode: None,
                        reason: "generated fault".into(),
                    },
                    None,
                ),
            };
            Ok(Bytes::from(body))
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Generated cases

/// A reference to an identifier of the model (or none of it), resolved per case.
#[derive(Debug, Clone)]
struct IdRef {
    kind: u8,
    patient: P,
    item: Index,
}

/// Whose identifier: the case's main patient (most of the time, for coherent requests) or any.
#[derive(Debug, Clone, Copy)]
enum P {
    Main,
    Of(usize),
}

/// A patient index, biased to the two patients with a Permit.
fn patient_index() -> impl Strategy<Value = usize> {
    prop_oneof![1 => 0usize..2, 1 => 0usize..CONSENTS.len()]
}

fn p_ref() -> impl Strategy<Value = P> {
    prop_oneof![7 => Just(P::Main), 3 => patient_index().prop_map(P::Of)]
}

const ID_KINDS: u8 = 17;

/// Requesters: 0 the permitted radiologist; 1 a colleague (other UZI number); 2 the radiologist for
/// another purpose of use; 3 another role; 4 the radiologist of another organisation than the
/// certificate's (refused).
const REQUESTERS: usize = 5;

fn requester(i: usize) -> Requester {
    let mut r = Requester {
        uzi: "000095254".parse().unwrap(),
        role: "01.015".parse().unwrap(),
        ura: ORG_X.parse().unwrap(),
        facility_type: "V6".parse().unwrap(),
        purpose_of_use: "TREAT".parse().unwrap(),
        name: Some("Dr. Generated".into()),
    };
    match i {
        1 => r.uzi = "000012345".parse().unwrap(),
        2 => r.purpose_of_use = "EMERGENCY".parse().unwrap(),
        3 => r.role = "01.039".parse().unwrap(),
        4 => r.ura = ORG_Y.parse().unwrap(),
        _ => {}
    }
    r
}

#[derive(Debug, Clone)]
struct Who {
    requester: usize,
    /// The resource-id: none, or a patient (possibly one of whom nothing is held).
    claim: Option<P>,
}

#[derive(Debug, Clone)]
struct SlotSpec {
    name: u8,
    values: Vec<IdRef>,
    list: bool,
}

#[derive(Debug, Clone)]
struct QuerySpec {
    kind: u8,
    home: u8,
    object_ref: bool,
    /// The well-formed core of the query (about the main patient), when it has one.
    base: Option<Index>,
    slots: Vec<SlotSpec>,
}

#[derive(Debug, Clone)]
struct DocSpec {
    doc: IdRef,
    repo: u8,
    home: u8,
}

#[derive(Debug, Clone)]
struct SeriesSpec {
    series: IdRef,
    docs: Vec<IdRef>,
}

#[derive(Debug, Clone)]
struct StudySpec {
    study: IdRef,
    series: Vec<SeriesSpec>,
}

#[derive(Debug, Clone)]
enum Req {
    Iti38(QuerySpec),
    Iti39(Vec<DocSpec>),
    Rad75(Vec<StudySpec>, u8, u8),
}

#[derive(Debug, Clone)]
struct Case {
    /// The patient the request is mostly about.
    main: usize,
    who: Who,
    /// A second assertion: in a second Security header (false) or the same one (true).
    second: Option<(Who, bool)>,
    answers: Vec<Answer>,
    hostility: Hostility,
    req: Req,
}

fn id_ref() -> impl Strategy<Value = IdRef> {
    (0..ID_KINDS, p_ref(), any::<Index>()).prop_map(|(kind, patient, item)| IdRef {
        kind,
        patient,
        item,
    })
}

/// A reference of one kind, to any patient.
fn id_of(kind: u8) -> impl Strategy<Value = IdRef> {
    (p_ref(), any::<Index>()).prop_map(move |(patient, item)| IdRef {
        kind,
        patient,
        item,
    })
}

fn who() -> impl Strategy<Value = Who> {
    (
        prop_oneof![7 => Just(0usize), 3 => 1..REQUESTERS],
        prop_oneof![
            1 => Just(None),
            3 => Just(Some(P::Main)),
            1 => (0usize..CONSENTS.len() + 1).prop_map(|i| Some(P::Of(i)))
        ],
    )
        .prop_map(|(requester, claim)| Who { requester, claim })
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        5 => Just(Answer::Plain),
        4 => Just(Answer::EchoAll),
        3 => Just(Answer::EchoCategory),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Answer::TwoDecisions(a, b)),
        1 => any::<Index>().prop_map(Answer::EchoPatient),
        1 => Just(Answer::EchoRequester),
        1 => Just(Answer::EchoPurpose),
        1 => Just(Answer::TwoResults),
        1 => Just(Answer::Duplicated),
        1 => Just(Answer::PermitBadStatus),
        1 => Just(Answer::StatusErrorThenOk),
        1 => Just(Answer::TwoResponses),
        1 => Just(Answer::PermitThenFault),
        1 => Just(Answer::UnaskedCategory),
        1 => Just(Answer::Garbage),
        1 => Just(Answer::Fault),
    ]
}

fn extra() -> impl Strategy<Value = Extra> {
    let i = || any::<usize>();
    prop_oneof![
        (i(), i()).prop_map(|(a, b)| Extra::Entry(a, b)),
        i().prop_map(Extra::SubmissionSet),
        i().prop_map(Extra::Folder),
        (i(), i()).prop_map(|(a, b)| Extra::Assoc(a, b)),
        (i(), i()).prop_map(|(a, b)| Extra::Cross(a, b)),
        (i(), i()).prop_map(|(a, b)| Extra::Ref(a, b)),
        (i(), i()).prop_map(|(a, b)| Extra::Classification(a, b)),
        (i(), i()).prop_map(|(a, b)| Extra::Other(a, b)),
    ]
}

fn hostility() -> impl Strategy<Value = Hostility> {
    let pair = || (any::<usize>(), any::<usize>());
    prop_oneof![
        // a faithful community
        2 => Just(Hostility::default()),
        3 => (
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            prop::collection::vec(extra(), 0..4),
            prop::collection::vec(pair(), 0..2),
            prop::bool::weighted(0.5),
            prop::collection::vec(pair(), 0..2),
        )
            .prop_map(
                |(ignore_query, object_refs, extras, retrieve_extra, images_anywhere, images_extra)| {
                    Hostility {
                        ignore_query,
                        object_refs,
                        extras,
                        retrieve_extra,
                        images_anywhere,
                        images_extra,
                    }
                }
            ),
    ]
}

/// Stored query ids: the five the gateway accepts and four it does not.
const QUERIES: [&str; 9] = [
    stored_query::FIND_DOCUMENTS,
    stored_query::FIND_DOCUMENTS_BY_REFERENCE_ID,
    stored_query::GET_DOCUMENTS,
    stored_query::GET_ASSOCIATIONS,
    stored_query::FIND_SUBMISSION_SETS,
    // GetSubmissionSetAndContents, GetFolders, GetRelatedDocuments, FindFolders
    "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83",
    "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4",
    "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6",
    "urn:uuid:958f3006-baad-4929-a4de-ff1114824431",
];

const PARAMS: [&str; 14] = [
    param::DE_PATIENT_ID,
    param::SS_PATIENT_ID,
    "$XDSFolderPatientId",
    "$patientId",
    param::DE_STATUS,
    param::DE_ENTRY_UUID,
    param::DE_UNIQUE_ID,
    param::DE_REFERENCE_ID_LIST,
    param::UUID,
    param::SS_STATUS,
    param::HOME_COMMUNITY_ID,
    "$XDSSubmissionSetEntryUUID",
    "$XDSFolderEntryUUID",
    "$XDSDocumentEntryEventCodeList",
];

fn slot() -> impl Strategy<Value = SlotSpec> {
    (
        0..PARAMS.len() as u8,
        prop::collection::vec(id_ref(), 1..4),
        any::<bool>(),
    )
        .prop_map(|(name, values, list)| SlotSpec { name, values, list })
}

fn query() -> impl Strategy<Value = QuerySpec> {
    (
        prop_oneof![9 => 0u8..5, 1 => 5u8..9],
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        any::<bool>(),
        prop_oneof![1 => Just(None), 4 => any::<Index>().prop_map(Some)],
        prop_oneof![1 => Just(Vec::new()), 1 => prop::collection::vec(slot(), 1..3)],
    )
        .prop_map(|(kind, home, object_ref, base, slots)| QuerySpec {
            kind,
            home,
            object_ref,
            base,
            slots,
        })
}

fn doc_spec() -> impl Strategy<Value = DocSpec> {
    (
        prop_oneof![6 => id_of(2), 1 => id_of(13), 1 => id_ref()],
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![12 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(|(doc, repo, home)| DocSpec { doc, repo, home })
}

fn series_spec() -> impl Strategy<Value = SeriesSpec> {
    (
        prop_oneof![6 => id_of(100), 2 => id_of(10), 1 => id_ref()],
        prop::collection::vec(
            prop_oneof![6 => id_of(101), 2 => id_of(11), 1 => id_ref()],
            1..4,
        ),
    )
        .prop_map(|(series, docs)| SeriesSpec { series, docs })
}

fn study_spec() -> impl Strategy<Value = StudySpec> {
    (
        prop_oneof![6 => id_of(7), 1 => id_of(13), 1 => id_ref()],
        prop::collection::vec(series_spec(), 1..3),
    )
        .prop_map(|(study, series)| StudySpec { study, series })
}

fn case() -> impl Strategy<Value = Case> {
    (
        patient_index(),
        who(),
        prop_oneof![4 => Just(None), 1 => (who(), any::<bool>()).prop_map(Some)],
        prop::collection::vec(answer(), CONSENTS.len()),
        hostility(),
        prop_oneof![
            4 => query().prop_map(Req::Iti38),
            3 => prop::collection::vec(doc_spec(), 1..5).prop_map(Req::Iti39),
            3 => (
                prop::collection::vec(study_spec(), 1..3),
                prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
                prop_oneof![12 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            )
                .prop_map(|(s, ts, home)| Req::Rad75(s, ts, home)),
        ],
    )
        .prop_map(|(main, who, second, answers, hostility, req)| Case {
            main,
            who,
            second,
            answers,
            hostility,
            req,
        })
}

// ---------------------------------------------------------------------------------------------------
// Resolving a case into request bytes

/// Context while resolving one case: the study a series reference should come from, for coherent
/// requests most of the time.
struct Resolve<'a> {
    m: &'a Model,
    main: usize,
    study: Option<(usize, String)>,
    series: Option<(usize, String)>,
}

impl<'a> Resolve<'a> {
    fn new(m: &'a Model, main: usize) -> Resolve<'a> {
        Resolve {
            m,
            main,
            study: None,
            series: None,
        }
    }

    fn patient(&self, i: &P) -> usize {
        match i {
            P::Main => self.main % self.m.patients.len(),
            P::Of(k) => k % self.m.patients.len(),
        }
    }

    fn id(&self, r: &IdRef) -> String {
        let pi = self.patient(&r.patient);
        let p = &self.m.patients[pi];
        let pick = |v: &[String]| v[r.item.index(v.len())].clone();
        match r.kind {
            0 => p.bsn.to_cx(),
            1 => p.docs[r.item.index(p.docs.len())].entry_uuid.clone(),
            2 => p.docs[r.item.index(p.docs.len())].unique_id.clone(),
            3 => p.submission_set.id.clone(),
            4 => p.submission_set.unique_id.clone(),
            5 => p.folder.id.clone(),
            6 => p.assocs[r.item.index(p.assocs.len())].id.clone(),
            7 => pick(&p.studies),
            8 => format!(
                "{}^^^^{}",
                pick(&p.studies),
                reference_type::STUDY_INSTANCE_UID
            ),
            9 => format!("{}^^^^{}", pick(&p.accessions), reference_type::ACCESSION),
            10 => p.series[r.item.index(p.series.len())].1.clone(),
            11 => p.instances[r.item.index(p.instances.len())].sop.clone(),
            12 => format!(
                "urn:uuid:{}",
                uuid::Uuid::from_u128(r.item.index(usize::MAX) as u128)
            ),
            13 => format!("2.25.{}", 900_000_000_000u64 + r.item.index(1000) as u64),
            14 => format!("P{}^^^&1.3.6.1.4.1.21367.13.20.1000&ISO", r.item.index(100)),
            15 => "'); DROP TABLE x; --".to_owned(),
            16 => APPROVED.to_owned(),
            // a series of the study chosen just before (else of this patient)
            100 => match &self.study {
                Some((sp, st)) => {
                    let p = &self.m.patients[*sp];
                    let of: Vec<&(String, String)> =
                        p.series.iter().filter(|(s, _)| s == st).collect();
                    if of.is_empty() {
                        p.series[r.item.index(p.series.len())].1.clone()
                    } else {
                        of[r.item.index(of.len())].1.clone()
                    }
                }
                None => p.series[r.item.index(p.series.len())].1.clone(),
            },
            // an instance of the series chosen just before (else of this patient)
            101 => match &self.series {
                Some((sp, se)) => {
                    let p = &self.m.patients[*sp];
                    let of: Vec<&Instance> =
                        p.instances.iter().filter(|i| &i.series == se).collect();
                    if of.is_empty() {
                        p.instances[r.item.index(p.instances.len())].sop.clone()
                    } else {
                        of[r.item.index(of.len())].sop.clone()
                    }
                }
                None => p.instances[r.item.index(p.instances.len())].sop.clone(),
            },
            _ => unreachable!("kind {}", r.kind),
        }
    }
}

fn query_request(m: &Model, main: usize, q: &QuerySpec) -> AdhocQueryRequest {
    let r = Resolve::new(m, main);
    let mut aq = AdhocQuery {
        id: QUERIES[q.kind as usize].to_owned(),
        home: match q.home {
            0 => Some(HOME.parse().unwrap()),
            1 => None,
            _ => Some(OTHER_HOME.parse().unwrap()),
        },
        slots: Vec::new(),
    };
    if let Some(item) = &q.base {
        let p = &m.patients[main % m.patients.len()];
        let doc = &p.docs[item.index(p.docs.len())];
        match q.kind {
            0 | 1 => {
                aq.set_single(param::DE_PATIENT_ID, &p.bsn.to_cx());
                aq.add_list(param::DE_STATUS, &[APPROVED]);
                if q.kind == 1 {
                    let st = &p.studies[item.index(p.studies.len())];
                    aq.add_list(
                        param::DE_REFERENCE_ID_LIST,
                        &[format!("{st}^^^^{}", reference_type::STUDY_INSTANCE_UID)],
                    );
                }
            }
            2 => {
                if item.index(2) == 0 {
                    aq.add_list(param::DE_ENTRY_UUID, std::slice::from_ref(&doc.entry_uuid));
                } else {
                    aq.add_list(param::DE_UNIQUE_ID, std::slice::from_ref(&doc.unique_id));
                }
            }
            3 => {
                let id = if item.index(2) == 0 {
                    p.submission_set.id.clone()
                } else {
                    doc.entry_uuid.clone()
                };
                aq.add_list(param::UUID, &[id]);
            }
            4 => {
                aq.set_single(param::SS_PATIENT_ID, &p.bsn.to_cx());
                aq.add_list(param::SS_STATUS, &[APPROVED]);
            }
            _ => {
                aq.add_list(
                    "$XDSSubmissionSetEntryUUID",
                    std::slice::from_ref(&p.submission_set.id),
                );
            }
        }
    }
    for s in &q.slots {
        let values: Vec<String> = s.values.iter().map(|v| r.id(v)).collect();
        let value = if s.list {
            format_list(&values)
        } else {
            format_single(&values[0])
        };
        aq.slots.push(duo_runtime::ihe::ebrim::Slot::new(
            PARAMS[s.name as usize],
            [value],
        ));
    }
    AdhocQueryRequest::new(
        aq,
        if q.object_ref {
            ReturnType::ObjectRef
        } else {
            ReturnType::LeafClass
        },
    )
}

fn home_of(h: u8) -> Option<duo_runtime::model::HomeCommunityId> {
    match h {
        0 => Some(HOME.parse().unwrap()),
        1 => None,
        _ => Some(OTHER_HOME.parse().unwrap()),
    }
}

fn retrieve_request(m: &Model, main: usize, docs: &[DocSpec]) -> RetrieveDocumentSetRequest {
    let r = Resolve::new(m, main);
    RetrieveDocumentSetRequest {
        documents: docs
            .iter()
            .map(|d| DocumentRequest {
                home_community_id: home_of(d.home),
                repository_unique_id: match d.repo {
                    0 => REPO.into(),
                    1 => SOURCE.into(),
                    _ => "1.2.3.4.5".into(),
                },
                document_unique_id: r.id(&d.doc),
            })
            .collect(),
    }
}

fn imaging_request(
    m: &Model,
    main: usize,
    studies: &[StudySpec],
    ts: u8,
    home: u8,
) -> RetrieveImagingDocumentSetRequest {
    let mut r = Resolve::new(m, main);
    let mut out = Vec::new();
    for s in studies {
        let study = r.id(&s.study);
        r.study = Some((r.patient(&s.study.patient), study.clone()));
        let mut series = Vec::new();
        for se in &s.series {
            let uid = r.id(&se.series);
            // the patient whose series this is, for the instance references that follow
            let owner = m
                .patients
                .iter()
                .position(|p| p.series.iter().any(|(_, x)| x == &uid));
            r.series = owner.map(|o| (o, uid.clone()));
            let docs = se
                .docs
                .iter()
                .map(|d| DocumentRequest {
                    home_community_id: home_of(home),
                    repository_unique_id: SOURCE.into(),
                    document_unique_id: r.id(d),
                })
                .collect();
            series.push(SeriesRequest {
                series_instance_uid: uid,
                documents: docs,
            });
        }
        out.push(StudyRequest {
            study_instance_uid: study,
            series,
        });
    }
    RetrieveImagingDocumentSetRequest {
        studies: out,
        transfer_syntaxes: match ts {
            0 => vec![EXPLICIT_LE.into()],
            1 => vec!["1.2.840.10008.1.2.4.70".into(), EXPLICIT_LE.into()],
            _ => vec!["1.2.840.10008.1.2.4.90".into()],
        },
    }
}

fn assertion(m: &Model, main: usize, w: &Who) -> XuaAssertion {
    let mut a = XuaAssertion::new(
        requester(w.requester),
        "urn:oid:2.16.528.1.1007.99.1",
        HOME,
        jiff::Timestamp::now(),
    );
    a.patient = w.claim.as_ref().map(|i| {
        // one index past the patients: someone of whom nothing is held
        let n = m.patients.len();
        match i {
            P::Main => m.patients[main % n].bsn.clone(),
            P::Of(k) if *k < n => m.patients[*k].bsn.clone(),
            P::Of(_) => "999911120".parse().unwrap(),
        }
    });
    a
}

fn header_blocks(m: &Model, c: &Case) -> Vec<String> {
    let first = assertion(m, c.main, &c.who)
        .security_header(&UnsignedAssertions)
        .unwrap();
    match &c.second {
        None => vec![first],
        Some((w, false)) => vec![
            first,
            assertion(m, c.main, w)
                .security_header(&UnsignedAssertions)
                .unwrap(),
        ],
        Some((w, true)) => {
            // a second Assertion inside the same Security header
            let xml = assertion(m, c.main, w).to_xml();
            let at = first.rfind("</").unwrap();
            vec![format!("{}{}{}", &first[..at], xml, &first[at..])]
        }
    }
}

fn tx_of(r: &Req) -> Transaction {
    match r {
        Req::Iti38(_) => Transaction::Iti38,
        Req::Iti39(_) => Transaction::Iti39,
        Req::Rad75(..) => Transaction::Rad75,
    }
}

/// The request envelope of a case.
fn request_bytes(m: &Model, c: &Case) -> String {
    let tx = tx_of(&c.req);
    let mut h = SoapHeader::request(tx.request_action(), Some("https://localhost/xca"));
    h.other = header_blocks(m, c);
    match &c.req {
        Req::Iti38(q) => write_soap(&h, &query_request(m, c.main, q)),
        Req::Iti39(d) => write_soap(&h, &retrieve_request(m, c.main, d)),
        Req::Rad75(s, ts, home) => write_soap(&h, &imaging_request(m, c.main, s, *ts, *home)),
    }
}

/// The gateway of one case: the template's configuration and identity, this case's community, Mitz
/// and audit log.
fn case_gateway(w: &World, c: &Case) -> (Gateway, Arc<ScriptedMitz>, MemoryAudit) {
    let mitz = Arc::new(ScriptedMitz {
        model: w.model.clone(),
        answers: c.answers.clone(),
        log: Mutex::new(Vec::new()),
    });
    let consent = ConsentService::with_transport(
        ConsentMode::Mitz,
        CATEGORY.parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        Some(mitz.clone() as Arc<dyn ClosedQuestionTransport>),
        Limits::default(),
        Duration::from_secs(60),
    );
    let (g, mem) = gateway_with(w, local(w, c.hostility.clone()), consent);
    (g, mitz, mem)
}

// ---------------------------------------------------------------------------------------------------
// The property

#[derive(Debug, Default, Clone)]
struct Stats {
    cases: u64,
    iti38: u64,
    iti39: u64,
    rad75: u64,
    /// Answers that disclosed something.
    disclosures: u64,
    /// ... of which ITI-38, ITI-39, RAD-75.
    disclosed_by: [u64; 3],
    /// Objects, documents and instances that left.
    items: u64,
    /// Cases where Mitz gave a clean Permit to this requester for some patient.
    permitted: u64,
    /// Refused requests (SOAP faults).
    faults: u64,
}

fn same_requester(a: &Requester, b: &Requester) -> bool {
    a.uzi == b.uzi
        && a.role == b.role
        && a.ura == b.ura
        && a.facility_type == b.facility_type
        && a.purpose_of_use == b.purpose_of_use
}

/// What left, as established from the answer.
struct Left {
    /// Patient of every item that left.
    patients: BTreeSet<usize>,
    /// ITI-38: ids of the objects; retrieves: empty.
    object_ids: BTreeSet<String>,
    /// ITI-38: uniqueIds of the DocumentEntries; retrieves: the DocumentUniqueIds.
    document_ids: BTreeSet<String>,
    /// RAD-75: the studies of the instances.
    studies: BTreeSet<String>,
}

fn check(
    m: &Model,
    c: &Case,
    request: &str,
    reply: &Reply,
    audit: &[AuditRecord],
    asked: &[Asked],
    stats: &mut Stats,
) -> Result<(), String> {
    let tx = tx_of(&c.req);
    let me = requester(c.who.requester);
    // the patients Mitz said a clean Permit for, to this requester, for the configured category
    let permitted: BTreeSet<usize> = asked
        .iter()
        .filter(|a| {
            a.clean_permit
                && same_requester(&a.requester, &me)
                && a.categories.iter().all(|x| x.as_str() == CATEGORY)
        })
        .filter_map(|a| m.patients.iter().position(|p| p.bsn == a.patient))
        .collect();
    let owner_of = |id: &str| m.owner.get(&norm(id)).copied();
    let mut left = Left {
        patients: BTreeSet::new(),
        object_ids: BTreeSet::new(),
        document_ids: BTreeSet::new(),
        studies: BTreeSet::new(),
    };
    let is_fault = reply.status != 200;
    if is_fault {
        stats.faults += 1;
    } else {
        match &c.req {
            Req::Iti38(_) => {
                let (_, resp) = read_soap::<AdhocQueryResponse>(&reply.body, &Limits::default())
                    .map_err(|e| format!("ITI-38 answer unreadable: {e}"))?;
                for o in &resp.objects {
                    let id = o
                        .id()
                        .ok_or_else(|| format!("an object without id left: {}", o.kind()))?;
                    match owner_of(id) {
                        Some(Owner::One(p)) => {
                            left.patients.insert(p);
                        }
                        Some(Owner::Two(a, b)) => {
                            return Err(format!(
                                "an association between patients {a} and {b} left: {id}"
                            ));
                        }
                        None => return Err(format!("an object nobody holds left: {id}")),
                    }
                    if o.requires_home() && o.home().map(|h| h.to_string()).as_deref() != Some(HOME)
                    {
                        return Err(format!("{} {id} without home {HOME}", o.kind()));
                    }
                    left.object_ids.insert(id.to_owned());
                    if let Identifiable::ExtrinsicObject(e) = o
                        && let Some(u) = e.object.external_id(uuids::UNIQUE_ID)
                    {
                        left.document_ids.insert(u.to_owned());
                    }
                }
            }
            Req::Iti39(_) | Req::Rad75(..) => {
                let (_, resp) = mtom::read_retrieve_response(
                    &reply.content_type,
                    reply.body.clone(),
                    &MtomLimits::default(),
                )
                .map_err(|e| format!("{tx} answer unreadable: {e}"))?;
                // RAD-75: the (study, series, SOP) triples the request asked
                let asked_triples: HashSet<(String, String, String)> = match &c.req {
                    Req::Rad75(s, ts, home) => imaging_request(m, c.main, s, *ts, *home)
                        .documents()
                        .map(|(a, b, d)| (a.to_owned(), b.to_owned(), d.document_unique_id.clone()))
                        .collect(),
                    _ => HashSet::new(),
                };
                for d in &resp.documents {
                    let uid = d.meta.document_unique_id.clone();
                    if d.meta
                        .home_community_id
                        .as_ref()
                        .map(|h| h.to_string())
                        .as_deref()
                        != Some(HOME)
                    {
                        return Err(format!("document {uid} without HomeCommunityId {HOME}"));
                    }
                    let Content::Inline(bytes) = &d.content else {
                        return Err(format!("document {uid} without content"));
                    };
                    let sha = sha256_hex(bytes);
                    if tx == Transaction::Iti39 {
                        let Some((p, doc)) = m.doc.get(&uid) else {
                            return Err(format!("a document nobody holds left: {uid}"));
                        };
                        if doc.sha256 != sha {
                            return Err(format!("document {uid} left with other bytes"));
                        }
                        left.patients.insert(*p);
                    } else {
                        let Some((p, inst)) = m.instance.get(&uid) else {
                            return Err(format!("an instance nobody holds left: {uid}"));
                        };
                        if inst.sha256 != sha {
                            return Err(format!("instance {uid} left with other bytes"));
                        }
                        // defect 6: only under the study and series it belongs to, as asked
                        if !asked_triples.contains(&(
                            inst.study.clone(),
                            inst.series.clone(),
                            uid.clone(),
                        )) {
                            return Err(format!(
                                "instance {uid} left though the request did not ask it under its own study and series"
                            ));
                        }
                        left.patients.insert(*p);
                        left.studies.insert(inst.study.clone());
                    }
                    left.document_ids.insert(uid);
                }
            }
        }
    }
    // nothing of a patient without a clean Permit for exactly this requester and category
    if let Some(p) = left.patients.iter().find(|p| !permitted.contains(p)) {
        return Err(format!(
            "data of patient {p} ({:?}) left without a clean Permit for this requester (permitted: {permitted:?})",
            m.patients[*p].consent
        ));
    }
    if left.patients.len() > 1 {
        return Err(format!(
            "data of several patients left: {:?}",
            left.patients
        ));
    }
    // every byte: no identifier of a patient without Permit, unless the request itself carried it
    for (i, p) in m.patients.iter().enumerate() {
        if permitted.contains(&i) {
            continue;
        }
        for t in p.tokens() {
            if request.contains(&t) {
                continue;
            }
            if memchr::memmem::find(&reply.body, t.as_bytes()).is_some() {
                return Err(format!(
                    "the answer holds {t} of patient {i} ({:?}), who has no Permit for this requester",
                    p.consent
                ));
            }
        }
    }
    // the audit trail
    let event = match tx {
        Transaction::Iti38 => AuditEvent::Query,
        _ => AuditEvent::Retrieve,
    };
    let records: Vec<&AuditRecord> = audit
        .iter()
        .filter(|r| r.event == event && r.side == Side::Responding)
        .collect();
    if records.len() != 1 {
        return Err(format!(
            "{} {event:?} records for one request: {records:#?}",
            records.len()
        ));
    }
    let r = records[0];
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
    if set(&r.document_ids) != left.document_ids {
        return Err(format!(
            "the record names documents {:?}, what left is {:?}",
            r.document_ids, left.document_ids
        ));
    }
    if set(&r.object_ids) != left.object_ids {
        return Err(format!(
            "the record names objects {:?}, what left is {:?}",
            r.object_ids, left.object_ids
        ));
    }
    if set(&r.study_ids) != left.studies {
        return Err(format!(
            "the record names studies {:?}, what left is of {:?}",
            r.study_ids, left.studies
        ));
    }
    if let Some(p) = left.patients.first() {
        stats.disclosures += 1;
        stats.disclosed_by[match tx {
            Transaction::Iti38 => 0,
            Transaction::Iti39 => 1,
            _ => 2,
        }] += 1;
        stats.items += left.document_ids.len().max(left.object_ids.len()) as u64;
        if r.patient.as_ref() != Some(&m.patients[*p].bsn) {
            return Err(format!("the record names patient {:?}, not {p}", r.patient));
        }
        let c = r
            .consent
            .as_ref()
            .ok_or("a disclosure record without its consent")?;
        if !c.disclosed || c.decision != Decision::Permit {
            return Err(format!("a disclosure recorded with consent {c:?}"));
        }
        let q = r
            .requester
            .as_ref()
            .ok_or("a disclosure record without requester")?;
        if q.uzi != me.uzi
            || q.ura != me.ura
            || q.role != me.role
            || q.purpose_of_use.as_ref() != Some(&me.purpose_of_use)
        {
            return Err(format!("the record names requester {q:?}, not {me:?}"));
        }
    }
    // no record claims a disclosure Mitz did not permit
    for r in audit {
        if let Some(c) = &r.consent
            && c.disclosed
        {
            let p = r
                .patient
                .as_ref()
                .and_then(|b| m.patients.iter().position(|p| &p.bsn == b));
            if !p.is_some_and(|p| permitted.contains(&p)) {
                return Err(format!(
                    "a record claims a disclosing consent Mitz did not give: {r:?}"
                ));
            }
        }
    }
    if !permitted.is_empty() {
        stats.permitted += 1;
    }
    stats.cases += 1;
    match tx {
        Transaction::Iti38 => stats.iti38 += 1,
        Transaction::Iti39 => stats.iti39 += 1,
        _ => stats.rad75 += 1,
    }
    Ok(())
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            v.strip_prefix("0x")
                .map(|h| u64::from_str_radix(h, 16))
                .unwrap_or_else(|| v.parse())
                .unwrap_or_else(|e| panic!("{name}={v}: {e}"))
        }
        _ => default,
    }
}

fn runner(cases: u64, seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        PropConfig {
            cases: cases as u32,
            failure_persistence: None,
            max_shrink_iters: 512,
            ..PropConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

fn report(what: &str, s: &Stats, seed: u64, took: Duration) {
    use std::io::Write as _;
    // written to stderr directly, not with eprintln!: the test harness captures the macros' output of a
    // passing test, and the case count is to be seen in the test command's output
    let _ = writeln!(
        std::io::stderr().lock(),
        "consent suite ({what}): {} cases (ITI-38 {}, ITI-39 {}, RAD-75 {}), {} with a clean Permit for \
         the requester, {} disclosing answers (ITI-38 {}, ITI-39 {}, RAD-75 {}; {} items), {} refused; \
         0 violations; seed {seed:#x}; {:.1} s",
        s.cases,
        s.iti38,
        s.iti39,
        s.rad75,
        s.permitted,
        s.disclosures,
        s.disclosed_by[0],
        s.disclosed_by[1],
        s.disclosed_by[2],
        s.items,
        s.faults,
        took.as_secs_f64()
    );
}

#[test]
fn nothing_of_a_patient_leaves_without_a_permit_for_that_patient_and_requester() {
    let cases = env_number("DUO_CONSENT_CASES", 10_000);
    let tls_cases = env_number("DUO_CONSENT_TLS_CASES", 200);
    let seed = env_number("DUO_CONSENT_SEED", 0x12c0_75e7);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w = world();
    let strategy = case();

    // in process: the responding handlers with the request bytes and the client certificate
    let stats = Mutex::new(Stats::default());
    let started = Instant::now();
    let result = runner(cases, seed).run(&strategy, |c| {
        let request = request_bytes(&w.model, &c);
        let (g, mitz, mem) = case_gateway(&w, &c);
        let reply = rt.block_on(in_process(
            Arc::new(g),
            w.peer.clone(),
            tx_of(&c.req),
            request.clone(),
        ));
        let asked = mitz.log.lock().unwrap().clone();
        let mut s = stats.lock().unwrap();
        check(
            &w.model,
            &c,
            &request,
            &reply,
            &mem.records(),
            &asked,
            &mut s,
        )
        .map_err(TestCaseError::fail)
    });
    let s = stats.into_inner().unwrap();
    if let Err(e) = result {
        panic!("consent suite (in process), seed {seed:#x}: {e}");
    }
    report("in process", &s, seed, started.elapsed());
    assert!(s.cases >= cases, "{} cases run, {cases} asked", s.cases);
    assert!(
        s.disclosed_by.iter().all(|n| *n > 0) && s.faults > 0,
        "the generator must reach disclosures of every transaction and refusals: {s:?}"
    );

    // a sample over real HTTPS with mutual TLS
    let started = Instant::now();
    let (shared, addr, token) = rt.block_on(async {
        let (g, ..) = case_gateway(&w, &rt_dummy_case());
        let shared = Arc::new(Shared::new(g));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(w.template.tls.server_config().unwrap());
        let token = tokio_util::sync::CancellationToken::new();
        let router = duo_runtime::server::app::router(shared.clone());
        tokio::spawn(duo_runtime::server::listener::serve_tls(
            listener,
            rx,
            router,
            token.clone(),
            None,
        ));
        (shared, addr, token)
    });
    let client = TlsMaterial::load(&w.client_tls)
        .unwrap()
        .http_client(Duration::from_secs(10))
        .unwrap();
    let stats = Mutex::new(Stats::default());
    let result = runner(tls_cases, seed ^ 0x7153).run(&strategy, |c| {
        let request = request_bytes(&w.model, &c);
        let (g, mitz, mem) = case_gateway(&w, &c);
        shared.replace(g);
        let reply = rt.block_on(over_https(&client, addr, tx_of(&c.req), request.clone()));
        let asked = mitz.log.lock().unwrap().clone();
        let mut s = stats.lock().unwrap();
        check(
            &w.model,
            &c,
            &request,
            &reply,
            &mem.records(),
            &asked,
            &mut s,
        )
        .map_err(TestCaseError::fail)
    });
    token.cancel();
    let s = stats.into_inner().unwrap();
    if let Err(e) = result {
        panic!("consent suite (HTTPS), seed {seed:#x}: {e}");
    }
    report("over HTTPS", &s, seed, started.elapsed());
    assert!(s.cases >= tls_cases);
}

/// A case that touches nothing (the gateway the HTTPS server starts with).
fn rt_dummy_case() -> Case {
    Case {
        main: 0,
        who: Who {
            requester: 0,
            claim: None,
        },
        second: None,
        answers: vec![Answer::Plain; CONSENTS.len()],
        hostility: Hostility::default(),
        req: Req::Iti39(Vec::new()),
    }
}
