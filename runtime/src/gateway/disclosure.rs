//! The disclosure gate of the responding side: the last point before anything of the hospital leaves
//! in an answer to another community (ITI-38, ITI-39, RAD-75). Every route of [`super::responding`]
//! builds its answer from what [`release_objects`] or [`release_stream`] let through, and nothing else.
//!
//! **Invariant** (issue 12): every object that leaves (an ExtrinsicObject, RegistryPackage, Association,
//! Classification or ObjectRef of an ITI-38 answer; a document of an ITI-39 answer; an instance of a
//! RAD-75 answer, and with it its series and study) belongs to the one patient for whom this request
//! obtained a Permit ([`Permit`], which only a disclosing [`ConsentOutcome`] can make), for this
//! requester and the configured category. Whose an object is, is judged from the hospital's own data,
//! never from the request:
//! - ITI-38: the patientId of the DocumentEntry, SubmissionSet or Folder as the registry returned it;
//!   an Association, Classification or ObjectRef belongs to the patient of the objects it names, found in
//!   the same answer or looked up in the registry by entryUUID ([`owners`]); an object whose patient
//!   cannot be established is withheld;
//! - ITI-39: the registry entry of each requested uniqueId (patient and repository);
//! - RAD-75: the KOS manifests the registry holds for the patient's study: an instance leaves only when
//!   the manifest of the requested study lists it under the requested series.
//!
//! **One patient per request.** A request that names more than one patient (query parameters and the
//! XUA assertion's resource-id together) or reaches more than one (its objects belong to several patients
//! in the registry) is answered for none: the answer looks exactly like an answer about nothing (ITI-38:
//! Success without objects; ITI-39 / RAD-75: XDSDocumentUniqueIdError for every document), so that a
//! request cannot probe whose an identifier is; the audit record says why (outcome `denied`). A RAD-75
//! request names its patient only in the assertion and reaches studies only through that patient's
//! registry entries, so a study of someone else is simply unknown to it.
//!
//! Under `consent.mode: permitAll` (test environments only: no consent is checked at all) the gate is
//! [`Gate::Unchecked`] and lets everything through, as that mode promises.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use futures::StreamExt;

use super::Gateway;
use crate::backend::{CallContext, RetrieveStream};
use crate::consent::ConsentOutcome;
use crate::ihe::ebrim::{Identifiable, ObjectRef};
use crate::ihe::mtom::RetrieveItem;
use crate::ihe::query::{AdhocQuery, AdhocQueryRequest, ReturnType, StoredQuery, param};
use crate::ihe::retrieve::DocumentResponseMeta;
use crate::ihe::transform::uuids;
use crate::model::{Bsn, HomeCommunityId};

/// `XDSFolder.patientId` (ITI TF-3 4.2.3.4).
pub const FOLDER_PATIENT_ID: &str = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a";

/// Patient-id parameters of the stored queries (ITI TF-2a 3.18.4.1.2.3.7).
pub const PATIENT_PARAMS: [&str; 4] = [
    param::DE_PATIENT_ID,
    param::SS_PATIENT_ID,
    "$XDSFolderPatientId",
    "$patientId",
];

/// A patient as an XDS patient id (CX `id^^^&oid&ISO`), compared on id and assigning authority only (so
/// `&ISO` or whitespace do not make two patients of one).
#[derive(Clone)]
pub struct PatientKey {
    id: String,
    authority: String,
    cx: String,
}

impl PatientKey {
    /// The key of CX value `cx`; `None` when it holds no id at all. A value without an assigning
    /// authority is a patient of its own (it never equals a BSN).
    pub fn from_cx(cx: &str) -> Option<PatientKey> {
        let cx = cx.trim();
        let (id, rest) = cx.split_once("^^^").unwrap_or((cx, ""));
        let authority = rest.trim_start_matches('&').split('&').next().unwrap_or("");
        let id = id.trim();
        if id.is_empty() {
            return None;
        }
        Some(PatientKey {
            id: id.to_owned(),
            authority: authority.trim().to_owned(),
            cx: cx.to_owned(),
        })
    }

    /// The key of a BSN.
    pub fn from_bsn(b: &Bsn) -> PatientKey {
        PatientKey {
            id: b.as_str().to_owned(),
            authority: Bsn::OID.to_owned(),
            cx: b.to_cx(),
        }
    }

    /// The CX value this key was read from.
    pub fn cx(&self) -> &str {
        &self.cx
    }

    /// The BSN, when the patient is identified by one.
    pub fn bsn(&self) -> Option<Bsn> {
        Bsn::from_cx(&self.cx)
    }
}

impl PartialEq for PatientKey {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id && self.authority == o.authority
    }
}
impl Eq for PatientKey {}
impl PartialOrd for PatientKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for PatientKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (&self.id, &self.authority).cmp(&(&o.id, &o.authority))
    }
}
impl std::hash::Hash for PatientKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.id.hash(h);
        self.authority.hash(h);
    }
}
impl fmt::Debug for PatientKey {
    // a patient id is personal data: logs show only its last three characters
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail: String = self
            .id
            .chars()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        write!(f, "PatientKey(…{tail}@{})", self.authority)
    }
}

/// Every patient a stored query names in its patient-id parameters (all slots, all values; a value that
/// cannot be read as a quoted string is taken as it stands, so it still counts as a patient).
pub fn named_patients(q: &AdhocQuery) -> BTreeSet<PatientKey> {
    let mut out = BTreeSet::new();
    for s in q
        .slots
        .iter()
        .filter(|s| PATIENT_PARAMS.contains(&s.name.as_str()))
    {
        for v in &s.values {
            let values = crate::ihe::query::parse_single(&s.name, v)
                .map(|x| vec![x])
                .or_else(|_| crate::ihe::query::parse_list(&s.name, v))
                .unwrap_or_else(|_| vec![v.clone()]);
            out.extend(values.iter().filter_map(|x| PatientKey::from_cx(x)));
        }
    }
    out
}

/// The Permit of one request for one patient: made only from a consent outcome that discloses.
#[derive(Debug, Clone)]
pub struct Permit {
    patient: PatientKey,
    consent: ConsentOutcome,
}

impl Permit {
    /// A Permit for `patient` when `consent` discloses ([`ConsentOutcome::discloses`]), else `None`.
    pub fn new(patient: PatientKey, consent: ConsentOutcome) -> Option<Permit> {
        consent.discloses().then_some(Permit { patient, consent })
    }

    /// The patient.
    pub fn patient(&self) -> &PatientKey {
        &self.patient
    }

    /// The consent decision it was made from.
    pub fn consent(&self) -> &ConsentOutcome {
        &self.consent
    }
}

/// What the gate lets through.
#[derive(Debug, Clone)]
pub enum Gate {
    /// Only what belongs to the Permit's patient.
    Checked(Permit),
    /// Everything: `consent.mode: permitAll` (no consent checked; test environments only).
    Unchecked,
}

/// Normalised id of a registry object (entryUUIDs compare case-insensitively).
fn norm(id: &str) -> String {
    id.trim().to_ascii_lowercase()
}

/// The patient ids an object states itself: DocumentEntry patientId, SubmissionSet or Folder patientId.
fn stated_patients(o: &Identifiable) -> Vec<PatientKey> {
    let object = match o {
        Identifiable::ExtrinsicObject(e) => &e.object,
        Identifiable::RegistryPackage(p) => &p.object,
        _ => return Vec::new(),
    };
    let mut v: Vec<PatientKey> = object
        .external_identifiers
        .iter()
        .filter(|x| {
            matches!(
                x.identification_scheme.as_str(),
                uuids::PATIENT_ID | uuids::SUBMISSION_SET_PATIENT_ID | FOLDER_PATIENT_ID
            )
        })
        .filter_map(|x| PatientKey::from_cx(&x.value))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Whose the objects of a local ITI-18 answer are.
#[derive(Debug, Default)]
pub struct Owners {
    /// Object id (normalised) → its one patient.
    by_id: HashMap<String, PatientKey>,
    /// Every patient any object belongs to or names (an object stating two patients adds both).
    pub reached: BTreeSet<PatientKey>,
}

impl Owners {
    /// The patient of object `o`, when established.
    pub fn of(&self, o: &Identifiable) -> Option<&PatientKey> {
        o.id().and_then(|id| self.by_id.get(&norm(id)))
    }
}

/// Most entryUUIDs looked up in one GetDocuments when the owners of references are resolved.
const MAX_LOOKUP: usize = 1000;

/// Establishes whose each object of `objects` (the local community's answer) is, from the registry's
/// metadata: DocumentEntries, SubmissionSets and Folders by their patientId; Associations,
/// Classifications and ObjectRefs by the objects they name (in `objects`, or looked up in the registry
/// with GetDocuments by entryUUID through `ctx`). An Association whose two ends belong to different
/// patients reaches both. A lookup that fails leaves the references unresolved (withheld).
pub async fn owners(g: &Gateway, ctx: CallContext, objects: &[Identifiable]) -> Owners {
    let mut out = Owners::default();
    for o in objects {
        let stated = stated_patients(o);
        out.reached.extend(stated.iter().cloned());
        if let (Some(id), [p]) = (o.id(), stated.as_slice()) {
            out.by_id.insert(norm(id), p.clone());
        }
    }
    // references to objects not in the answer: look them up (DocumentEntries only)
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for o in objects {
        let refs: Vec<&str> = match o {
            Identifiable::Association(a) => vec![&a.source_object, &a.target_object],
            Identifiable::Classification(c) => vec![&c.classified_object],
            Identifiable::ObjectRef(r) => vec![&r.id],
            _ => Vec::new(),
        };
        for r in refs {
            let n = norm(r);
            if !n.is_empty() && !out.by_id.contains_key(&n) {
                wanted.insert(r.trim().to_owned());
            }
        }
    }
    if !wanted.is_empty() {
        let ids: Vec<String> = wanted.into_iter().take(MAX_LOOKUP).collect();
        let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
        q.add_list(param::DE_ENTRY_UUID, &ids);
        q.home = super::responding::local_home(g);
        let wanted: HashSet<String> = ids.iter().map(|i| norm(i)).collect();
        match g
            .local
            .query(ctx, AdhocQueryRequest::new(q, ReturnType::LeafClass))
            .await
        {
            Ok(resp) => {
                for o in &resp.objects {
                    let Some(id) = o.id().map(norm) else { continue };
                    if !wanted.contains(&id) || out.by_id.contains_key(&id) {
                        continue;
                    }
                    let stated = stated_patients(o);
                    out.reached.extend(stated.iter().cloned());
                    if let [p] = stated.as_slice() {
                        out.by_id.insert(id, p.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking up the owners of referenced objects failed: they are withheld");
            }
        }
    }
    // references take the patient of what they name
    for o in objects {
        let Some(id) = o.id().map(norm) else { continue };
        if out.by_id.contains_key(&id) {
            continue;
        }
        let owner = |r: &str| out.by_id.get(&norm(r)).cloned();
        let patient = match o {
            Identifiable::Association(a) => {
                match (owner(&a.source_object), owner(&a.target_object)) {
                    (Some(s), Some(t)) if s == t => Some(s),
                    (s, t) => {
                        // an association between two patients' objects reaches both
                        out.reached.extend(s);
                        out.reached.extend(t);
                        None
                    }
                }
            }
            Identifiable::Classification(c) => owner(&c.classified_object),
            Identifiable::ObjectRef(r) => owner(&r.id),
            _ => None,
        };
        if let Some(p) = patient {
            out.reached.insert(p.clone());
            out.by_id.insert(id, p);
        }
    }
    out
}

/// The objects of an ITI-38 answer that may leave: under [`Gate::Checked`] those whose owner
/// ([`Owners::of`]) is the Permit's patient, every other one withheld; as ObjectRefs when the requester
/// asked for `ObjectRef`; `home` set on each. Returns the released objects and how many were withheld.
pub fn release_objects(
    gate: &Gate,
    objects: Vec<Identifiable>,
    owners: &Owners,
    return_type: ReturnType,
    home: &HomeCommunityId,
) -> (Vec<Identifiable>, usize) {
    let total = objects.len();
    let kept: Vec<Identifiable> = match gate {
        Gate::Unchecked => objects,
        Gate::Checked(p) => objects
            .into_iter()
            .filter(|o| owners.of(o) == Some(&p.patient))
            .collect(),
    };
    let withheld = total - kept.len();
    let out = kept
        .into_iter()
        .filter_map(|o| match (gate, return_type, o) {
            (Gate::Checked(_), ReturnType::ObjectRef, o) => o.id().map(|id| {
                Identifiable::ObjectRef(ObjectRef {
                    id: id.to_owned(),
                    home: Some(home.clone()),
                    slots: Vec::new(),
                })
            }),
            (_, _, mut o) => {
                match &mut o {
                    Identifiable::ExtrinsicObject(e) => e.object.home = Some(home.clone()),
                    Identifiable::RegistryPackage(p) => p.object.home = Some(home.clone()),
                    Identifiable::ObjectRef(r) => r.home = Some(home.clone()),
                    _ => {}
                }
                Some(o)
            }
        })
        .collect();
    (out, withheld)
}

/// The documents of a retrieve answer that may leave: under [`Gate::Checked`] only those whose
/// DocumentUniqueId is in `allowed` (what the registry or the KOS manifests tied to the Permit's
/// patient), every other one withheld with its content, whatever the backend sent; the contents
/// re-indexed. Returns the answer and the uniqueIds withheld.
pub fn release_stream(
    gate: &Gate,
    s: RetrieveStream,
    allowed: &BTreeSet<String>,
) -> (RetrieveStream, Vec<String>) {
    if matches!(gate, Gate::Unchecked) {
        return (s, Vec::new());
    }
    let RetrieveStream {
        mut response,
        documents,
        items,
    } = s;
    let mut kept: Vec<DocumentResponseMeta> = Vec::new();
    let mut withheld = Vec::new();
    // old index → new index of the documents kept
    let mut index: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, d) in documents.into_iter().enumerate() {
        if allowed.contains(d.document_unique_id.trim()) {
            index.insert(i, kept.len());
            kept.push(d);
        } else {
            withheld.push(d.document_unique_id);
        }
    }
    if !withheld.is_empty() {
        tracing::warn!(
            withheld = withheld.len(),
            "the local community returned documents this request may not disclose: withheld"
        );
    }
    let n = kept.len();
    // contents of withheld documents (and of indices never declared) are dropped
    let items = items
        .scan(None::<usize>, move |current, it| {
            // `current`: the old index of the document whose bytes pass, when it is kept
            let out = match it {
                Ok(RetrieveItem::Document(i)) => match index.get(&i) {
                    Some(&j) => {
                        *current = Some(i);
                        Some(Ok(RetrieveItem::Document(j)))
                    }
                    None => {
                        *current = None;
                        None
                    }
                },
                Ok(item @ (RetrieveItem::Chunk(_) | RetrieveItem::End)) => {
                    current.is_some().then_some(Ok(item))
                }
                Ok(RetrieveItem::Failed(i, why)) => {
                    if *current == Some(i) {
                        *current = None;
                    }
                    // a withheld document's failure is not reported either: it was never asked for
                    index.get(&i).map(|&j| Ok(RetrieveItem::Failed(j, why)))
                }
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(Some(out))
        })
        .filter_map(futures::future::ready)
        .boxed();
    response = crate::ihe::retrieve::RegistryResponse::derive(response.errors, n);
    (
        RetrieveStream {
            response,
            documents: kept,
            items,
        },
        withheld,
    )
}
