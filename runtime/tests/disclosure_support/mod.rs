//! The community of the consent tests (`consent_suite`, `gateway_disclosure`): six patients with
//! studies, SubmissionSets, Folders and Associations in a simulator store, a local community in process
//! that misbehaves as told ([`Hostility`]), and gateways built around it, called in process or over
//! HTTPS with mutual TLS.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};

use duo_runtime::audit::{AuditLog, AuditSource, MemoryAudit};
use duo_runtime::backend::{BackendError, BoxFut, CallContext, Community, RetrieveStream};
use duo_runtime::config::{ConsentMode, LocalBackend, XdsBackendConfig};
use duo_runtime::consent::ConsentService;
use duo_runtime::gateway::reply::SoapReply;
use duo_runtime::gateway::{Gateway, Hooks, responding};
use duo_runtime::ihe::ebrim::{
    Association, Classification, ExternalIdentifier, Identifiable, ObjectRef, RegistryObject,
    RegistryPackage, association_type,
};
use duo_runtime::ihe::mtom::{MtomError, RetrieveItem};
use duo_runtime::ihe::query::{
    AdhocQueryRequest, AdhocQueryResponse, ReturnType, StoredQuery, param,
};
use duo_runtime::ihe::retrieve::{
    DocumentResponseMeta, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveImagingDocumentSetRequest,
};
use duo_runtime::ihe::soap::Transaction;
use duo_runtime::ihe::transform::{document_entry_to_wire, uuids};
use duo_runtime::ihe::{ErrorCode, RegistryError};
use duo_runtime::model::{AuthorInstitution, Bsn, DocumentEntry};
use duo_runtime::server::listener::PeerCertificate;
use duo_runtime::server::metrics::Metrics;
use duo_runtime::tls::TlsMaterial;
use duo_testkit::dicom::synth::{Modality, SynthConfig, SynthPatient};
use duo_testkit::sim::bed::{Hospital, Pki, test_config};
use duo_testkit::sim::registry::run_query;
use duo_testkit::sim::seed::{CommunitySeed, seed_patient};
use duo_testkit::sim::store::{InstanceLookup, Store};

// ---------------------------------------------------------------------------------------------------
// The world

/// The requesting hospital (the client certificate's organisation).
pub const ORG_X: &str = "10000001";
/// Another organisation.
pub const ORG_Y: &str = "10000002";
/// The responding hospital (data holder).
pub const HOLDER: &str = "10000009";
pub const HOME: &str = "urn:oid:2.16.528.1.1007.99.9.1";
pub const OTHER_HOME: &str = "urn:oid:2.16.528.1.1007.99.8.1";
pub const REPO: &str = "2.16.528.1.1007.99.9.2";
pub const SOURCE: &str = "2.16.528.1.1007.99.9.3";
pub const CATEGORY: &str = "GGC002";
pub const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
pub const FOLDER_PATIENT_ID: &str = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// What Mitz knows about a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Permit for the requesting hospital's radiologist 000095254, purpose TREAT; Deny for everyone else.
    Permit,
    Deny,
    /// Nothing on record: NotApplicable.
    Nothing,
    /// Mitz does not answer (transport error).
    Fails,
}

pub const CONSENTS: [Consent; 6] = [
    Consent::Permit,
    Consent::Permit,
    Consent::Deny,
    Consent::Nothing,
    Consent::Fails,
    Consent::Deny,
];

#[derive(Debug, Clone)]
pub struct Doc {
    pub entry_uuid: String,
    pub unique_id: String,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub study: String,
    pub series: String,
    pub sop: String,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Package {
    pub id: String,
    pub unique_id: String,
}

#[derive(Debug, Clone)]
pub struct Assoc {
    pub id: String,
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone)]
pub struct Patient {
    pub bsn: Bsn,
    pub consent: Consent,
    pub docs: Vec<Doc>,
    pub entries: Vec<DocumentEntry>,
    pub studies: Vec<String>,
    pub accessions: Vec<String>,
    pub series: Vec<(String, String)>,
    pub instances: Vec<Instance>,
    pub submission_set: Package,
    pub folder: Package,
    pub assocs: Vec<Assoc>,
    /// A Classification id per entry (hostile extras classify the patient's entries).
    pub classifications: Vec<String>,
}

impl Patient {
    /// Every identifier of the patient's data, for the byte scan (the BSN, ids, uids, accessions).
    pub fn tokens(&self) -> Vec<String> {
        let mut t = vec![self.bsn.as_str().to_owned()];
        for d in &self.docs {
            t.push(d.entry_uuid.clone());
            t.push(d.unique_id.clone());
        }
        t.extend(self.studies.iter().cloned());
        t.extend(self.accessions.iter().filter(|a| a.len() >= 6).cloned());
        t.extend(self.series.iter().map(|(_, s)| s.clone()));
        t.extend(self.instances.iter().map(|i| i.sop.clone()));
        for p in [&self.submission_set, &self.folder] {
            t.push(p.id.clone());
            t.push(p.unique_id.clone());
        }
        t.extend(self.assocs.iter().map(|a| a.id.clone()));
        t.extend(self.classifications.iter().cloned());
        t
    }
}

/// Whose an object is, in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    One(usize),
    /// A cross-patient object (an association between two patients' entries).
    Two(usize, usize),
}

pub struct Model {
    pub patients: Vec<Patient>,
    /// Normalised object id or uniqueId → owner.
    pub owner: HashMap<String, Owner>,
    /// SOP Instance UID → (patient, instance).
    pub instance: HashMap<String, (usize, Instance)>,
    /// Document uniqueId → (patient, doc).
    pub doc: HashMap<String, (usize, Doc)>,
    /// Cross-patient associations, by (patient a, patient b).
    pub cross: BTreeMap<(usize, usize), Assoc>,
}

pub fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

pub fn uuid_n(kind: u32, n: u64) -> String {
    format!("urn:uuid:{kind:08x}-0000-4000-8000-{n:012x}")
}

/// The first `n` valid BSNs (11-check) from 100000000 upwards, skipping a few.
pub fn bsns(n: usize) -> Vec<Bsn> {
    (100_000_000u32..)
        .step_by(7)
        .filter_map(|x| x.to_string().parse::<Bsn>().ok())
        .take(n)
        .collect()
}

pub fn build_model(store: &Store) -> Model {
    let community = CommunitySeed::new(
        AuthorInstitution {
            name: "Ziekenhuis Holder".into(),
            ura: Some(HOLDER.parse().unwrap()),
        },
        "V6".parse().unwrap(),
        REPO,
        SOURCE,
        None,
    );
    let synth = SynthConfig {
        modalities: vec![Modality::Ct, Modality::Mr],
        series_per_study: (1, 2),
        instances_per_series: (1, 2),
        rows: 8,
        columns: 8,
        ..SynthConfig::default()
    };
    let mut patients = Vec::new();
    let mut owner = HashMap::new();
    let mut instance = HashMap::new();
    let mut doc = HashMap::new();
    let mut n = 0u64;
    for (i, (bsn, consent)) in bsns(CONSENTS.len()).into_iter().zip(CONSENTS).enumerate() {
        let sp = SynthPatient {
            bsn: bsn.clone(),
            name: format!("Patient^{i}"),
            birth_date: "19700101".into(),
            sex: "O".into(),
        };
        let studies = seed_patient(store, &community, &synth, &sp, 1000 + i as u64, 2).unwrap();
        let mut p = Patient {
            bsn: bsn.clone(),
            consent,
            docs: Vec::new(),
            entries: Vec::new(),
            studies: Vec::new(),
            accessions: Vec::new(),
            series: Vec::new(),
            instances: Vec::new(),
            submission_set: Package {
                id: uuid_n(0x55, i as u64),
                unique_id: format!("2.25.{}", 7_000_000_000u64 + i as u64),
            },
            folder: Package {
                id: uuid_n(0xf0, i as u64),
                unique_id: format!("2.25.{}", 8_000_000_000u64 + i as u64),
            },
            assocs: Vec::new(),
            classifications: Vec::new(),
        };
        for s in &studies {
            p.studies.push(s.study_instance_uid.clone());
            p.accessions.push(s.accession_number.clone());
            for d in [&s.manifest, &s.report] {
                p.docs.push(Doc {
                    entry_uuid: d.entry_uuid.clone(),
                    unique_id: d.unique_id.clone(),
                    sha256: d.sha256.clone(),
                });
            }
            for inst in &s.instances {
                if !p
                    .series
                    .iter()
                    .any(|(_, se)| se == &inst.series_instance_uid)
                {
                    p.series.push((
                        s.study_instance_uid.clone(),
                        inst.series_instance_uid.clone(),
                    ));
                }
                p.instances.push(Instance {
                    study: s.study_instance_uid.clone(),
                    series: inst.series_instance_uid.clone(),
                    sop: inst.sop_instance_uid.clone(),
                    sha256: inst.sha256.clone(),
                });
            }
        }
        let uids: Vec<String> = p.docs.iter().map(|d| d.unique_id.clone()).collect();
        p.entries = store.get_documents(&[], &uids);
        assert_eq!(p.entries.len(), p.docs.len());
        for d in &p.docs {
            for (from, k) in [(&p.submission_set.id, 0x5a), (&p.folder.id, 0xfa)] {
                n += 1;
                p.assocs.push(Assoc {
                    id: uuid_n(k, n),
                    source: from.clone(),
                    target: d.entry_uuid.clone(),
                });
            }
            n += 1;
            p.classifications.push(uuid_n(0xc1, n));
        }
        for t in p.docs.iter() {
            owner.insert(norm(&t.entry_uuid), Owner::One(i));
            owner.insert(norm(&t.unique_id), Owner::One(i));
            doc.insert(t.unique_id.clone(), (i, t.clone()));
        }
        for x in [&p.submission_set, &p.folder] {
            owner.insert(norm(&x.id), Owner::One(i));
            owner.insert(norm(&x.unique_id), Owner::One(i));
        }
        for a in &p.assocs {
            owner.insert(norm(&a.id), Owner::One(i));
        }
        for c in &p.classifications {
            owner.insert(norm(c), Owner::One(i));
        }
        for inst in &p.instances {
            instance.insert(inst.sop.clone(), (i, inst.clone()));
        }
        patients.push(p);
    }
    let mut cross = BTreeMap::new();
    for a in 0..patients.len() {
        for b in 0..patients.len() {
            if a != b {
                n += 1;
                let x = Assoc {
                    id: uuid_n(0xcc, n),
                    source: patients[a].docs[0].entry_uuid.clone(),
                    target: patients[b].docs[0].entry_uuid.clone(),
                };
                owner.insert(norm(&x.id), Owner::Two(a, b));
                cross.insert((a, b), x);
            }
        }
    }
    let m = Model {
        patients,
        owner,
        instance,
        doc,
        cross,
    };
    distinct_tokens(&m, store);
    m
}

/// The byte scan of the property looks for each patient's identifiers in answers: none of them may
/// occur inside another patient's data by chance (a BSN inside a UID, say), or a clean answer would
/// look like a leak.
pub fn distinct_tokens(m: &Model, store: &Store) {
    for (j, other) in m.patients.iter().enumerate() {
        let mut blob: Vec<u8> = Vec::new();
        for e in &other.entries {
            blob.extend(format!("{:?}", document_entry_to_wire(e)).bytes());
            if let Some(d) = store.document(REPO, &e.unique_id) {
                blob.extend_from_slice(&d.bytes);
            }
        }
        for i in &other.instances {
            if let InstanceLookup::Found(x) = store.instance(SOURCE, &i.study, &i.series, &i.sop) {
                blob.extend_from_slice(&x.encodings[0].bytes);
            }
        }
        for t in other.tokens() {
            blob.extend(t.bytes());
            blob.push(b' ');
        }
        for (i, p) in m.patients.iter().enumerate() {
            if i == j {
                continue;
            }
            for t in p.tokens() {
                assert!(
                    memchr::memmem::find(&blob, t.as_bytes()).is_none(),
                    "token {t} of patient {i} occurs in the data of patient {j}: choose other seeds"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Registry objects of the model

pub fn external(object: &str, scheme: &str, value: &str, n: &str) -> ExternalIdentifier {
    ExternalIdentifier {
        object: RegistryObject::with_id(format!("{object}-{n}")),
        registry_object: object.to_owned(),
        identification_scheme: scheme.to_owned(),
        value: value.to_owned(),
    }
}

pub fn package(p: &Patient, folder: bool) -> Identifiable {
    let (x, pid, uid) = if folder {
        (
            &p.folder,
            FOLDER_PATIENT_ID,
            "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a",
        )
    } else {
        (
            &p.submission_set,
            uuids::SUBMISSION_SET_PATIENT_ID,
            uuids::SUBMISSION_SET_UNIQUE_ID,
        )
    };
    let mut o = RegistryObject::with_id(x.id.clone());
    o.status = Some(APPROVED.into());
    o.external_identifiers = vec![
        external(&x.id, pid, &p.bsn.to_cx(), "pid"),
        external(&x.id, uid, &x.unique_id, "uid"),
    ];
    Identifiable::RegistryPackage(RegistryPackage { object: o })
}

pub fn association(a: &Assoc) -> Identifiable {
    Identifiable::Association(Association {
        object: RegistryObject::with_id(a.id.clone()),
        association_type: association_type::HAS_MEMBER.into(),
        source_object: a.source.clone(),
        target_object: a.target.clone(),
    })
}

pub fn entry_object(e: &DocumentEntry) -> Identifiable {
    Identifiable::ExtrinsicObject(document_entry_to_wire(e))
}

/// An object the hostile community adds to every query answer.
#[derive(Debug, Clone)]
pub enum Extra {
    Entry(usize, usize),
    SubmissionSet(usize),
    Folder(usize),
    Assoc(usize, usize),
    Cross(usize, usize),
    Ref(usize, usize),
    Classification(usize, usize),
    /// An element the reader does not know, holding the patient's BSN and a document's uniqueId.
    Other(usize, usize),
}

pub fn extra_object(m: &Model, e: &Extra) -> Identifiable {
    let pat = |i: &usize| &m.patients[i % m.patients.len()];
    match e {
        Extra::Entry(p, d) => {
            let p = pat(p);
            entry_object(&p.entries[d % p.entries.len()])
        }
        Extra::SubmissionSet(p) => package(pat(p), false),
        Extra::Folder(p) => package(pat(p), true),
        Extra::Assoc(p, a) => {
            let p = pat(p);
            association(&p.assocs[a % p.assocs.len()])
        }
        Extra::Cross(a, b) => {
            let n = m.patients.len();
            let (a, mut b) = (a % n, b % n);
            if a == b {
                b = (b + 1) % n;
            }
            association(&m.cross[&(a, b)])
        }
        Extra::Ref(p, d) => {
            let p = pat(p);
            Identifiable::ObjectRef(ObjectRef {
                id: p.docs[d % p.docs.len()].entry_uuid.clone(),
                home: None,
                slots: Vec::new(),
            })
        }
        Extra::Classification(p, d) => {
            let p = pat(p);
            let k = d % p.docs.len();
            Identifiable::Classification(Classification {
                object: RegistryObject::with_id(p.classifications[k].clone()),
                classification_scheme: Some(uuids::CLASS_CODE.into()),
                classified_object: p.docs[k].entry_uuid.clone(),
                classification_node: None,
                node_representation: Some("IMAGES".into()),
            })
        }
        Extra::Other(p, d) => {
            let p = pat(p);
            Identifiable::Other(format!(
                r#"<x:Note xmlns:x="urn:example:note" patient="{}" document="{}"/>"#,
                p.bsn.to_cx(),
                p.docs[d % p.docs.len()].unique_id
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The local community, misbehaving as generated

#[derive(Debug, Clone, Default)]
pub struct Hostility {
    /// Answer every DocumentEntry of every patient, whatever the query.
    pub ignore_query: bool,
    /// Answer ObjectRefs whatever was asked.
    pub object_refs: bool,
    /// Objects added to every query answer.
    pub extras: Vec<Extra>,
    /// Documents (patient, doc) added to every retrieve answer.
    pub retrieve_extra: Vec<(usize, usize)>,
    /// The imaging document source finds an instance by SOP Instance UID alone.
    pub images_anywhere: bool,
    /// Instances (patient, instance) added to every imaging answer.
    pub images_extra: Vec<(usize, usize)>,
}

pub struct Local {
    pub model: Arc<Model>,
    pub store: Arc<Store>,
    pub h: Hostility,
}

pub fn refs(objects: Vec<Identifiable>) -> Vec<Identifiable> {
    objects
        .into_iter()
        .filter_map(|o| {
            o.id().map(|id| {
                Identifiable::ObjectRef(ObjectRef {
                    id: id.to_owned(),
                    home: None,
                    slots: Vec::new(),
                })
            })
        })
        .collect()
}

pub fn content_stream(parts: Vec<Bytes>) -> BoxStream<'static, Result<RetrieveItem, MtomError>> {
    let mut items = Vec::new();
    for (i, b) in parts.into_iter().enumerate() {
        items.push(Ok(RetrieveItem::Document(i)));
        // two chunks, so the gate's re-indexing of content is exercised
        let half = b.len() / 2;
        items.push(Ok(RetrieveItem::Chunk(b.slice(..half))));
        items.push(Ok(RetrieveItem::Chunk(b.slice(half..))));
        items.push(Ok(RetrieveItem::End));
    }
    stream::iter(items).boxed()
}

pub fn unknown(uid: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::XDSDocumentUniqueIdError,
        format!("document {uid} not found"),
    )
    .at(uid.to_owned())
}

impl Community for Local {
    fn query(
        &self,
        _ctx: CallContext,
        req: AdhocQueryRequest,
    ) -> BoxFut<'_, Result<AdhocQueryResponse, BackendError>> {
        Box::pin(async move {
            let m = &self.model;
            let q = &req.query;
            let mut resp = if self.h.ignore_query {
                AdhocQueryResponse::new(
                    m.patients
                        .iter()
                        .flat_map(|p| p.entries.iter().map(entry_object))
                        .collect(),
                    Vec::new(),
                )
            } else {
                match q.stored_query() {
                    Some(
                        StoredQuery::FindDocuments
                        | StoredQuery::FindDocumentsByReferenceId
                        | StoredQuery::GetDocuments,
                    ) => {
                        let mut leaf = req.clone();
                        leaf.response_option.return_type = ReturnType::LeafClass;
                        run_query(&self.store, &leaf, None)
                    }
                    Some(StoredQuery::FindSubmissionSets) => {
                        let pid = q.single(param::SS_PATIENT_ID).ok().flatten();
                        AdhocQueryResponse::new(
                            m.patients
                                .iter()
                                .filter(|p| {
                                    pid.as_deref().is_some_and(|x| x.trim() == p.bsn.to_cx())
                                })
                                .map(|p| package(p, false))
                                .collect(),
                            Vec::new(),
                        )
                    }
                    Some(StoredQuery::GetAssociations) => {
                        let ids: HashSet<String> = q
                            .and_lists(param::UUID)
                            .unwrap_or_default()
                            .into_iter()
                            .flatten()
                            .map(|x| norm(&x))
                            .collect();
                        AdhocQueryResponse::new(
                            m.patients
                                .iter()
                                .flat_map(|p| p.assocs.iter())
                                .filter(|a| {
                                    ids.contains(&norm(&a.source)) || ids.contains(&norm(&a.target))
                                })
                                .map(association)
                                .collect(),
                            Vec::new(),
                        )
                    }
                    None => AdhocQueryResponse::new(
                        Vec::new(),
                        vec![RegistryError::new(
                            ErrorCode::XDSUnknownStoredQuery,
                            "unknown stored query",
                        )],
                    ),
                }
            };
            resp.objects
                .extend(self.h.extras.iter().map(|e| extra_object(m, e)));
            if self.h.object_refs || req.response_option.return_type == ReturnType::ObjectRef {
                resp.objects = refs(std::mem::take(&mut resp.objects));
            }
            resp.status = resp.derive_status();
            Ok(resp)
        })
    }

    fn retrieve(
        &self,
        _ctx: CallContext,
        req: RetrieveDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        Box::pin(async move {
            let m = &self.model;
            let mut wanted: Vec<(String, String)> = req
                .documents
                .iter()
                .map(|d| (d.repository_unique_id.clone(), d.document_unique_id.clone()))
                .collect();
            for (p, d) in &self.h.retrieve_extra {
                let p = &m.patients[p % m.patients.len()];
                wanted.push((REPO.into(), p.docs[d % p.docs.len()].unique_id.clone()));
            }
            let mut metas = Vec::new();
            let mut parts = Vec::new();
            let mut errors = Vec::new();
            for (repo, uid) in wanted {
                match self.store.document(&repo, &uid) {
                    Some(doc) => {
                        metas.push(DocumentResponseMeta {
                            home_community_id: None,
                            repository_unique_id: repo,
                            document_unique_id: uid,
                            new_repository_unique_id: None,
                            new_document_unique_id: None,
                            mime_type: doc.mime_type.clone(),
                        });
                        parts.push(doc.bytes.clone());
                    }
                    None => errors.push(unknown(&uid)),
                }
            }
            Ok(RetrieveStream {
                response: RegistryResponse::derive(errors, metas.len()),
                documents: metas,
                items: content_stream(parts),
            })
        })
    }

    fn retrieve_images(
        &self,
        _ctx: CallContext,
        req: RetrieveImagingDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        Box::pin(async move {
            let m = &self.model;
            let mut wanted: Vec<(String, String, String)> = req
                .documents()
                .map(|(st, se, d)| (st.to_owned(), se.to_owned(), d.document_unique_id.clone()))
                .collect();
            for (p, i) in &self.h.images_extra {
                let p = &m.patients[p % m.patients.len()];
                let x = &p.instances[i % p.instances.len()];
                wanted.push((x.study.clone(), x.series.clone(), x.sop.clone()));
            }
            let mut metas = Vec::new();
            let mut parts = Vec::new();
            let mut errors = Vec::new();
            for (st, se, sop) in wanted {
                let at = if self.h.images_anywhere {
                    m.instance
                        .get(&sop)
                        .map(|(_, x)| (x.study.clone(), x.series.clone()))
                } else {
                    Some((st, se))
                };
                let found =
                    at.and_then(
                        |(st, se)| match self.store.instance(SOURCE, &st, &se, &sop) {
                            InstanceLookup::Found(x) => Some(x.encodings[0].bytes.clone()),
                            _ => None,
                        },
                    );
                match found {
                    Some(b) => {
                        metas.push(DocumentResponseMeta {
                            home_community_id: None,
                            repository_unique_id: SOURCE.into(),
                            document_unique_id: sop,
                            new_repository_unique_id: None,
                            new_document_unique_id: None,
                            mime_type: "application/dicom".into(),
                        });
                        parts.push(b);
                    }
                    None => errors.push(unknown(&sop)),
                }
            }
            Ok(RetrieveStream {
                response: RegistryResponse::derive(errors, metas.len()),
                documents: metas,
                items: content_stream(parts),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Running a case

pub struct World {
    pub model: Arc<Model>,
    pub store: Arc<Store>,
    pub template: Gateway,
    pub peer: PeerCertificate,
    pub client_tls: duo_runtime::config::TlsConfig,
    /// The responding gateway's own certificate (also its Mitz client certificate).
    pub holder_tls: duo_runtime::config::TlsConfig,
    /// The CA of every certificate.
    pub pki: Pki,
    pub _dir: tempfile::TempDir,
}

pub fn world() -> World {
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "Consent suite CA").unwrap();
    let holder = Hospital::new(HOLDER, "Ziekenhuis Holder", HOME);
    let tls = pki.hospital("holder", &holder.ura, &holder.name).unwrap();
    let client_tls = pki
        .hospital("asker", &ORG_X.parse().unwrap(), "Ziekenhuis Vrager")
        .unwrap();
    let local = LocalBackend::Xds(XdsBackendConfig {
        registry_url: "https://registry.invalid/iti18".into(),
        repositories: Vec::new(),
        imaging_document_sources: Vec::new(),
        deadline_ms: 1000,
    });
    let holder_tls = tls.clone();
    let mut config = test_config(&holder, tls, local, &dir.path().join("audit.jsonl"), &[]);
    config.consent.mode = ConsentMode::Mitz;
    config.consent.category = CATEGORY.parse().unwrap();
    let (audit, _) = AuditLog::memory(source(), None);
    let hooks = Hooks {
        consent: Arc::new(ConsentService::new(
            ConsentMode::Mitz,
            CATEGORY.parse().unwrap(),
            HOLDER.parse().unwrap(),
            "V6".parse().unwrap(),
            None,
            Duration::ZERO,
        )),
        localize: None,
        audit: Arc::new(audit),
        registrar: None,
    };
    let template = Gateway::build(config, hooks, Arc::new(Metrics::new())).unwrap();
    let store = Store::new();
    let model = build_model(&store);
    let asker = TlsMaterial::load(&client_tls).unwrap();
    let peer = PeerCertificate {
        chain: Arc::new(vec![asker.chain[0].clone()]),
        remote: Some("127.0.0.1:40000".parse().unwrap()),
    };
    World {
        model: Arc::new(model),
        store: Arc::new(store),
        template,
        peer,
        client_tls,
        holder_tls,
        pki,
        _dir: dir,
    }
}

pub fn source() -> AuditSource {
    AuditSource {
        source_id: HOME.into(),
        enterprise_site_id: HOLDER.into(),
    }
}

/// An answer as bytes.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

pub async fn in_process(
    g: Arc<Gateway>,
    peer: PeerCertificate,
    tx: Transaction,
    body: String,
) -> Reply {
    let ct = format!(
        "application/soap+xml; charset=UTF-8; action=\"{}\"",
        tx.request_action()
    );
    let body = Bytes::from(body);
    let reply = match tx {
        Transaction::Iti38 => responding::iti38(g, Some(peer), ct, body).await,
        Transaction::Iti39 => responding::iti39(g, Some(peer), ct, body).await,
        _ => responding::rad75(g, Some(peer), ct, body).await,
    };
    match reply {
        SoapReply::Xml(x) => Reply {
            status: 200,
            content_type: "application/soap+xml; charset=UTF-8".into(),
            body: Bytes::from(x),
        },
        SoapReply::Fault(x, s) => Reply {
            status: s,
            content_type: "application/soap+xml; charset=UTF-8".into(),
            body: Bytes::from(x),
        },
        SoapReply::Stream { content_type, body } => {
            let parts: Vec<Bytes> = body
                .map(|r| r.unwrap_or_else(|e| panic!("answer stream failed: {e}")))
                .collect()
                .await;
            Reply {
                status: 200,
                content_type,
                body: Bytes::from(parts.concat()),
            }
        }
    }
}

pub async fn over_https(
    client: &reqwest::Client,
    addr: SocketAddr,
    tx: Transaction,
    body: String,
) -> Reply {
    let path = match tx {
        Transaction::Iti38 => "/xca/iti38",
        Transaction::Iti39 => "/xca/iti39",
        _ => "/xcai/rad75",
    };
    let resp = client
        .post(format!("https://localhost:{}{path}", addr.port()))
        .header(
            "content-type",
            format!(
                "application/soap+xml; charset=UTF-8; action=\"{}\"",
                tx.request_action()
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Reply {
        status,
        content_type,
        body: resp.bytes().await.unwrap(),
    }
}

/// A gateway of the world's configuration and identity around `local`, `consent` and an audit log in
/// memory (returned).
pub fn gateway_with(
    w: &World,
    local: Arc<dyn Community>,
    consent: ConsentService,
) -> (Gateway, MemoryAudit) {
    let (audit, mem) = AuditLog::memory(source(), None);
    let t = &w.template;
    let g = Gateway {
        config: t.config.clone(),
        home: t.home.clone(),
        local,
        remotes: Vec::new(),
        hooks: Hooks {
            consent: Arc::new(consent),
            localize: None,
            audit: Arc::new(audit),
            registrar: None,
        },
        metrics: t.metrics.clone(),
        xml_limits: t.xml_limits.clone(),
        mtom_limits: t.mtom_limits.clone(),
        tls: t.tls.clone(),
        signer: t.signer.clone(),
        timelines: t.timelines.clone(),
    };
    (g, mem)
}

/// The local community of the world, misbehaving as `h` says.
pub fn local(w: &World, h: Hostility) -> Arc<Local> {
    Arc::new(Local {
        model: w.model.clone(),
        store: w.store.clone(),
        h,
    })
}
