//! The in-memory content of a simulated community: registry metadata (DocumentEntries), repository
//! documents (per repositoryUniqueId) and the DICOM instances of its imaging document sources (one
//! [`InstanceStore`] per source uniqueId), with the stored-query semantics of ITI TF-2a 3.18.4.1.2.3.7
//! (FindDocuments, GetDocuments, FindDocumentsByReferenceId).
//!
//! The store is shared (`Arc<Store>`) between a simulator's routes and whoever seeds it; every method
//! takes `&self` and locks internally, so content can be added while the simulator serves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use bytes::Bytes;

use crate::dicom::store::{InsertError, Inserted, LookupError};
use crate::dicom::{InstanceInfo, InstanceStore, StoredInstance};
use crate::ihe::transform::uuids;
use crate::model::{Code, DocumentEntry, ReferenceId};

/// A document held by a repository: its bytes and mime type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// mimeType, e.g. `application/dicom` for a KOS manifest, `application/pdf` or `text/xml` for a report.
    pub mime_type: String,
    /// Content.
    pub bytes: Bytes,
}

/// One coded value of a stored-query parameter, `code^^scheme` (ITI TF-2a 3.18.4.1.2.3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFilter {
    /// The code.
    pub code: String,
    /// The coding scheme.
    pub scheme: String,
}

impl CodeFilter {
    fn matches(&self, c: &Code) -> bool {
        self.code == c.code && self.scheme == c.scheme
    }
}

/// FindDocuments / FindDocumentsByReferenceId parameters (ITI TF-2a Table 3.18.4.1.2.3.7.1-1,
/// 3.18.4.1.2.3.7.14) the simulator evaluates. Values of one list are OR-ed, parameters AND-ed; an
/// empty list does not constrain. Time bounds are DTM: `From` inclusive, `To` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindDocuments {
    /// `$XDSDocumentEntryPatientId` (CX), required.
    pub patient_id: String,
    /// `$XDSDocumentEntryStatus`, required (1..n status URIs).
    pub status: Vec<String>,
    /// `$XDSDocumentEntryClassCode`.
    pub class_code: Vec<CodeFilter>,
    /// `$XDSDocumentEntryTypeCode`.
    pub type_code: Vec<CodeFilter>,
    /// `$XDSDocumentEntryFormatCode`.
    pub format_code: Vec<CodeFilter>,
    /// `$XDSDocumentEntryPracticeSettingCode`.
    pub practice_setting_code: Vec<CodeFilter>,
    /// `$XDSDocumentEntryHealthcareFacilityTypeCode`.
    pub healthcare_facility_type_code: Vec<CodeFilter>,
    /// `$XDSDocumentEntryEventCodeList`: one OR-list per slot, the slots AND-ed.
    pub event_code: Vec<Vec<CodeFilter>>,
    /// `$XDSDocumentEntryConfidentialityCode`: one OR-list per slot, the slots AND-ed.
    pub confidentiality_code: Vec<Vec<CodeFilter>>,
    /// `$XDSDocumentEntryServiceStartTimeFrom`.
    pub service_start_from: Option<String>,
    /// `$XDSDocumentEntryServiceStartTimeTo`.
    pub service_start_to: Option<String>,
    /// `$XDSDocumentEntryServiceStopTimeFrom`.
    pub service_stop_from: Option<String>,
    /// `$XDSDocumentEntryServiceStopTimeTo`.
    pub service_stop_to: Option<String>,
    /// `$XDSDocumentEntryCreationTimeFrom`.
    pub creation_from: Option<String>,
    /// `$XDSDocumentEntryCreationTimeTo`.
    pub creation_to: Option<String>,
    /// `$XDSDocumentEntryType`: objectType UUIDs (stable / on-demand). Every stored entry is stable.
    pub entry_type: Vec<String>,
    /// `$XDSDocumentEntryReferenceIdList` (FindDocumentsByReferenceId): CXi values, OR.
    pub reference_ids: Vec<String>,
}

fn code_matches(filter: &[CodeFilter], code: Option<&Code>) -> bool {
    if filter.is_empty() {
        return true;
    }
    code.is_some_and(|c| filter.iter().any(|f| f.matches(c)))
}

fn codes_match(and_of_or: &[Vec<CodeFilter>], codes: &[Code]) -> bool {
    and_of_or
        .iter()
        .all(|or| or.is_empty() || codes.iter().any(|c| or.iter().any(|f| f.matches(c))))
}

/// DTM key for comparison: the digits, padded to 14 with zeros (a shorter value means its start).
fn dtm_key(s: &str) -> String {
    let mut d: String = s.chars().filter(char::is_ascii_digit).take(14).collect();
    while d.len() < 14 {
        d.push('0');
    }
    d
}

fn in_range(value: &str, from: &Option<String>, to: &Option<String>) -> bool {
    if from.is_none() && to.is_none() {
        return true;
    }
    if value.is_empty() {
        // ITI TF-2a 3.18.4.1.2.3.6: an entry without the attribute does not match a time constraint
        return false;
    }
    let v = dtm_key(value);
    from.as_ref().is_none_or(|f| v >= dtm_key(f)) && to.as_ref().is_none_or(|t| v < dtm_key(t))
}

impl FindDocuments {
    /// Whether `e` satisfies every parameter.
    pub fn matches(&self, e: &DocumentEntry) -> bool {
        same_patient(&self.patient_id, &e.patient_id)
            && (self.status.is_empty() || self.status.iter().any(|s| s.trim() == e.status))
            && code_matches(&self.class_code, e.class_code.as_ref())
            && code_matches(&self.type_code, e.type_code.as_ref())
            && code_matches(&self.format_code, e.format_code.as_ref())
            && code_matches(
                &self.practice_setting_code,
                e.practice_setting_code.as_ref(),
            )
            && code_matches(
                &self.healthcare_facility_type_code,
                e.healthcare_facility_type_code.as_ref(),
            )
            && codes_match(&self.event_code, &e.event_codes)
            && codes_match(&self.confidentiality_code, &e.confidentiality_codes)
            && in_range(
                &e.service_start_time,
                &self.service_start_from,
                &self.service_start_to,
            )
            && in_range(
                &e.service_stop_time,
                &self.service_stop_from,
                &self.service_stop_to,
            )
            && in_range(&e.creation_time, &self.creation_from, &self.creation_to)
            && (self.entry_type.is_empty()
                || self
                    .entry_type
                    .iter()
                    .any(|t| t.trim() == uuids::DOCUMENT_ENTRY_STABLE))
            && (self.reference_ids.is_empty()
                || e.reference_ids
                    .iter()
                    .any(|r| self.reference_ids.iter().any(|f| reference_matches(f, r))))
    }
}

/// CX equality on id and assigning authority OID (`id^^^&oid&ISO`), ignoring surrounding whitespace and
/// the authority's type.
pub fn same_patient(a: &str, b: &str) -> bool {
    fn key(s: &str) -> (&str, &str) {
        let s = s.trim();
        let (id, rest) = s.split_once("^^^").unwrap_or((s, ""));
        let oid = rest.trim_start_matches('&').split('&').next().unwrap_or("");
        (id.trim(), oid.trim())
    }
    key(a) == key(b)
}

/// A referenceIdList filter value (CXi) matches on id and type; an empty authority in the filter matches
/// any.
fn reference_matches(filter: &str, r: &ReferenceId) -> bool {
    match ReferenceId::parse_cxi(filter) {
        Some(f) => {
            f.id == r.id
                && f.id_type == r.id_type
                && (f.assigning_authority.is_empty()
                    || f.assigning_authority == r.assigning_authority)
        }
        None => false,
    }
}

/// The outcome of looking up an instance in a community's imaging document sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceLookup {
    /// The instance (cheap clone: the encodings are reference-counted [`Bytes`]).
    Found(Box<StoredInstance>),
    /// The source is known but does not hold this instance under this study and series, or not in an
    /// acceptable transfer syntax (see [`StoredInstance::select_encoding`]).
    Missing(LookupError),
    /// No imaging document source with this uniqueId.
    UnknownSource,
}

/// Registry, repositories and imaging document sources of one simulated community.
#[derive(Default)]
pub struct Store {
    inner: RwLock<Inner>,
    /// Who is told of every DocumentEntry registered from now on ([`Store::watch`]): the DSUB broker.
    watchers: std::sync::Mutex<Vec<Watcher>>,
}

/// See [`Store::watch`].
type Watcher = Box<dyn Fn(&DocumentEntry) + Send + Sync>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<DocumentEntry>,
    documents: HashMap<(String, String), StoredDocument>,
    repositories: BTreeSet<String>,
    sources: BTreeMap<String, InstanceStore>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `on_entry` with every DocumentEntry registered after this call ([`Store::add_document`],
    /// [`Store::add_entry`]), in registration order, on the registering thread (after the entry is
    /// stored): what a notification broker (ITI-53) notifies. `on_entry` must not block.
    pub fn watch(&self, on_entry: impl Fn(&DocumentEntry) + Send + Sync + 'static) {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(on_entry));
    }

    fn announce(&self, entry: &DocumentEntry) {
        for w in self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            w(entry);
        }
    }

    /// Declares a repository (known even while it holds no document: ITI-43 then answers
    /// XDSDocumentUniqueIdError rather than XDSUnknownRepositoryId).
    pub fn add_repository(&self, repository_unique_id: &str) {
        self.write()
            .repositories
            .insert(repository_unique_id.trim().to_owned());
    }

    /// Declares an imaging document source (known even while empty).
    pub fn add_source(&self, source_unique_id: &str) {
        self.write()
            .sources
            .entry(source_unique_id.trim().to_owned())
            .or_default();
    }

    /// Registers a DocumentEntry and stores its content in its repository (`repository_unique_id`,
    /// declared if new). An entry with the same entryUUID is replaced.
    pub fn add_document(&self, entry: DocumentEntry, content: StoredDocument) {
        let mut g = self.write();
        g.repositories.insert(entry.repository_unique_id.clone());
        g.documents.insert(
            (entry.repository_unique_id.clone(), entry.unique_id.clone()),
            content,
        );
        g.entries.retain(|e| e.entry_uuid != entry.entry_uuid);
        g.entries.push(entry.clone());
        drop(g);
        self.announce(&entry);
    }

    /// Stores a document's content in repository `repository_unique_id` (declared if new) without
    /// registering an entry: a document only retrievable by id (e.g. a fixture of a wire test).
    pub fn add_content(
        &self,
        repository_unique_id: &str,
        unique_id: &str,
        content: StoredDocument,
    ) {
        let mut g = self.write();
        g.repositories
            .insert(repository_unique_id.trim().to_owned());
        g.documents.insert(
            (
                repository_unique_id.trim().to_owned(),
                unique_id.trim().to_owned(),
            ),
            content,
        );
    }

    /// Registers a DocumentEntry without content (metadata only; a retrieve then gets
    /// XDSDocumentUniqueIdError).
    pub fn add_entry(&self, entry: DocumentEntry) {
        let mut g = self.write();
        g.entries.retain(|e| e.entry_uuid != entry.entry_uuid);
        g.entries.push(entry.clone());
        drop(g);
        self.announce(&entry);
    }

    /// Stores a DICOM instance (or another encoding of one) in imaging document source
    /// `source_unique_id` (declared if new).
    ///
    /// Errors: [`InsertError`] for a duplicate encoding or a SOP Instance UID held under another study or
    /// series of this source.
    pub fn add_instance(
        &self,
        source_unique_id: &str,
        info: InstanceInfo,
        bytes: Bytes,
    ) -> Result<Inserted, InsertError> {
        self.write()
            .sources
            .entry(source_unique_id.trim().to_owned())
            .or_default()
            .insert(info, bytes)
    }

    /// FindDocuments / FindDocumentsByReferenceId: the matching entries in registration order.
    pub fn find_documents(&self, q: &FindDocuments) -> Vec<DocumentEntry> {
        self.read()
            .entries
            .iter()
            .filter(|e| q.matches(e))
            .cloned()
            .collect()
    }

    /// GetDocuments by entryUUID or uniqueId. Unknown ids are simply absent (ITI TF-2a 3.18.4.1.2.3.7.5:
    /// Success with what is found).
    pub fn get_documents(
        &self,
        entry_uuids: &[String],
        unique_ids: &[String],
    ) -> Vec<DocumentEntry> {
        self.read()
            .entries
            .iter()
            .filter(|e| {
                entry_uuids
                    .iter()
                    .any(|u| u.trim().eq_ignore_ascii_case(&e.entry_uuid))
                    || unique_ids.iter().any(|u| u.trim() == e.unique_id)
            })
            .cloned()
            .collect()
    }

    /// The document `unique_id` of repository `repository_unique_id`.
    pub fn document(&self, repository_unique_id: &str, unique_id: &str) -> Option<StoredDocument> {
        self.read()
            .documents
            .get(&(
                repository_unique_id.trim().to_owned(),
                unique_id.trim().to_owned(),
            ))
            .cloned()
    }

    /// Whether repository `repository_unique_id` is known.
    pub fn has_repository(&self, repository_unique_id: &str) -> bool {
        self.read()
            .repositories
            .contains(repository_unique_id.trim())
    }

    /// Whether imaging document source `source_unique_id` is known.
    pub fn has_source(&self, source_unique_id: &str) -> bool {
        self.read().sources.contains_key(source_unique_id.trim())
    }

    /// The uniqueIds of the imaging document sources, sorted.
    pub fn sources(&self) -> Vec<String> {
        self.read().sources.keys().cloned().collect()
    }

    /// The instance a RAD-69 / RAD-75 DocumentRequest names, in source `source_unique_id`.
    pub fn instance(
        &self,
        source_unique_id: &str,
        study_uid: &str,
        series_uid: &str,
        sop_uid: &str,
    ) -> InstanceLookup {
        let g = self.read();
        match g.sources.get(source_unique_id.trim()) {
            None => InstanceLookup::UnknownSource,
            Some(s) => match s.get(study_uid, series_uid, sop_uid) {
                Ok(i) => InstanceLookup::Found(Box::new(i.clone())),
                Err(e) => InstanceLookup::Missing(e),
            },
        }
    }

    /// Calls `f` with every instance of every source (source uniqueId, instance), sources in uniqueId
    /// order, instances in insertion order. The store is read-locked meanwhile: `f` must not call back
    /// into the store.
    pub fn for_each_instance(&self, mut f: impl FnMut(&str, &StoredInstance)) {
        let g = self.read();
        for (uid, s) in &g.sources {
            for i in s.instances() {
                f(uid, i);
            }
        }
    }

    /// Number of registered DocumentEntries.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of instances over all imaging document sources.
    pub fn instance_count(&self) -> usize {
        self.read().sources.values().map(InstanceStore::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reference_type;

    const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";

    fn entry(uid: &str, pid: &str, class: &str, start: &str) -> DocumentEntry {
        DocumentEntry {
            entry_uuid: format!("urn:uuid:{uid}"),
            unique_id: uid.into(),
            patient_id: pid.into(),
            status: APPROVED.into(),
            class_code: Some(Code::new(class, "2.16.840.1.113883.6.96", "")),
            event_codes: vec![Code::new("CT", "DCM", ""), Code::new("HEAD", "SNM", "")],
            service_start_time: start.into(),
            repository_unique_id: "1.2.3".into(),
            reference_ids: vec![ReferenceId {
                id: format!("S{uid}"),
                assigning_authority: String::new(),
                id_type: reference_type::STUDY_INSTANCE_UID.into(),
            }],
            ..Default::default()
        }
    }

    fn doc() -> StoredDocument {
        StoredDocument {
            mime_type: "x".into(),
            bytes: Bytes::new(),
        }
    }

    fn code(c: &str, s: &str) -> CodeFilter {
        CodeFilter {
            code: c.into(),
            scheme: s.into(),
        }
    }

    #[test]
    fn find_documents_semantics() {
        let s = Store::new();
        let p = "900186021^^^&2.16.840.1.113883.2.4.6.3&ISO";
        s.add_document(entry("1", p, "IMAGES", "20240101"), doc());
        s.add_document(entry("2", p, "OTHER", "20230101"), doc());
        s.add_document(entry("3", "1^^^&1.2&ISO", "IMAGES", "20240101"), doc());
        let mut q = FindDocuments {
            patient_id: " 900186021^^^&2.16.840.1.113883.2.4.6.3&ISO ".into(),
            status: vec![APPROVED.into()],
            ..Default::default()
        };
        assert_eq!(s.find_documents(&q).len(), 2);
        q.class_code = vec![code("IMAGES", "2.16.840.1.113883.6.96")];
        assert_eq!(s.find_documents(&q).len(), 1);
        // same code, another scheme: no match
        q.class_code = vec![code("IMAGES", "1.2.3")];
        assert!(s.find_documents(&q).is_empty());
        q.class_code.clear();
        q.service_start_from = Some("2024".into());
        assert_eq!(s.find_documents(&q).len(), 1);
        q.service_start_from = None;
        q.service_start_to = Some("20240101".into());
        assert_eq!(s.find_documents(&q)[0].unique_id, "2", "To is exclusive");
        q.service_start_to = None;
        // event codes: AND over slots, OR within one
        q.event_code = vec![vec![code("MR", "DCM"), code("CT", "DCM")]];
        assert_eq!(s.find_documents(&q).len(), 2);
        q.event_code.push(vec![code("HEAD", "SNM")]);
        assert_eq!(s.find_documents(&q).len(), 2);
        q.event_code.push(vec![code("MR", "DCM")]);
        assert!(s.find_documents(&q).is_empty());
        q.event_code.clear();
        q.entry_type = vec![uuids::DOCUMENT_ENTRY_ON_DEMAND.into()];
        assert!(s.find_documents(&q).is_empty());
        q.entry_type.clear();
        q.reference_ids = vec!["S2^^^^urn:ihe:iti:xds:2016:studyInstanceUID".into()];
        assert_eq!(s.find_documents(&q)[0].unique_id, "2");
        q.reference_ids = vec!["S2^^^^urn:ihe:iti:xds:2013:accession".into()];
        assert!(s.find_documents(&q).is_empty());
        q.reference_ids.clear();
        q.status = vec!["urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated".into()];
        assert!(s.find_documents(&q).is_empty());
    }

    #[test]
    fn get_documents_and_repositories() {
        let s = Store::new();
        s.add_document(entry("1", "1^^^&1.2&ISO", "IMAGES", "2024"), doc());
        assert_eq!(s.get_documents(&["URN:UUID:1".into()], &[]).len(), 1);
        assert_eq!(s.get_documents(&[], &["1".into()]).len(), 1);
        assert!(s.get_documents(&["urn:uuid:nope".into()], &[]).is_empty());
        assert!(s.document("1.2.3", "1").is_some());
        assert!(s.document("1.2.4", "1").is_none());
        assert!(s.has_repository("1.2.3"));
        assert!(!s.has_repository("1.2.4"));
        s.add_repository("1.2.4");
        assert!(s.has_repository("1.2.4"));
        // re-registering an entryUUID replaces it
        s.add_document(entry("1", "1^^^&1.2&ISO", "OTHER", "2024"), doc());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn instances_per_source() {
        let s = Store::new();
        let info = InstanceInfo {
            study_instance_uid: "1".into(),
            series_instance_uid: "1.1".into(),
            sop_instance_uid: "1.1.1".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            ..Default::default()
        };
        s.add_instance("9.9", info, Bytes::from_static(b"x"))
            .unwrap();
        s.add_source("9.8");
        assert_eq!(s.sources(), vec!["9.8".to_owned(), "9.9".to_owned()]);
        assert!(matches!(
            s.instance("9.9", "1", "1.1", "1.1.1"),
            InstanceLookup::Found(_)
        ));
        assert!(matches!(
            s.instance("9.9", "1", "1.2", "1.1.1"),
            InstanceLookup::Missing(LookupError::UnknownInstance { .. })
        ));
        // the instance lives in another source
        assert!(matches!(
            s.instance("9.8", "1", "1.1", "1.1.1"),
            InstanceLookup::Missing(_)
        ));
        assert_eq!(
            s.instance("9.7", "1", "1.1", "1.1.1"),
            InstanceLookup::UnknownSource
        );
        assert_eq!(s.instance_count(), 1);
        let mut n = 0;
        s.for_each_instance(|src, i| {
            assert_eq!(src, "9.9");
            assert_eq!(i.info.sop_instance_uid, "1.1.1");
            n += 1;
        });
        assert_eq!(n, 1);
    }
}
