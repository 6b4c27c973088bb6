//! The in-memory content of a simulated community: registry metadata, repository documents and the
//! DICOM instances of its imaging document sources, with the stored-query semantics of ITI TF-2a
//! 3.18.4.1.2.3.7 (FindDocuments, GetDocuments, FindDocumentsByReferenceId).

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;

use crate::model::DocumentEntry;

/// A document held by a repository: its bytes and mime type.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    /// mimeType.
    pub mime_type: String,
    /// Content.
    pub bytes: Bytes,
}

/// A DICOM instance held by an imaging document source.
#[derive(Debug, Clone)]
pub struct StoredInstance {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Transfer syntax the instance is stored in (the source does not transcode).
    pub transfer_syntax_uid: String,
    /// Unique id of the imaging document source holding it (RepositoryUniqueId in RAD-69).
    pub source_unique_id: String,
    /// The Part 10 file.
    pub bytes: Bytes,
}

/// FindDocuments parameters (ITI TF-2a Table 3.18.4.1.2.3.7.1-1) the simulator evaluates. Lists are OR,
/// parameters are AND; an empty list does not constrain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindDocuments {
    /// `$XDSDocumentEntryPatientId` (CX), required.
    pub patient_id: String,
    /// `$XDSDocumentEntryStatus`, required (1..n status URIs).
    pub status: Vec<String>,
    /// `$XDSDocumentEntryClassCode` as `code^^scheme`.
    pub class_code: Vec<String>,
    /// `$XDSDocumentEntryTypeCode`.
    pub type_code: Vec<String>,
    /// `$XDSDocumentEntryFormatCode`.
    pub format_code: Vec<String>,
    /// `$XDSDocumentEntryEventCodeList` (OR within the list).
    pub event_code: Vec<String>,
    /// `$XDSDocumentEntryServiceStartTimeFrom` (DTM, inclusive).
    pub service_start_from: Option<String>,
    /// `$XDSDocumentEntryServiceStartTimeTo` (DTM, exclusive).
    pub service_start_to: Option<String>,
    /// `$XDSDocumentEntryCreationTimeFrom`.
    pub creation_from: Option<String>,
    /// `$XDSDocumentEntryCreationTimeTo`.
    pub creation_to: Option<String>,
    /// `$XDSDocumentEntryReferenceIdList` (FindDocumentsByReferenceId): CXi values, OR.
    pub reference_ids: Vec<String>,
}

fn code_matches(filter: &[String], code: Option<&crate::model::Code>) -> bool {
    if filter.is_empty() {
        return true;
    }
    let Some(c) = code else { return false };
    filter.iter().any(|f| code_value_matches(f, c))
}

/// `code^^scheme` (ITI TF-2a 3.18.4.1.2.3.4 coded values), or a bare `code`.
fn code_value_matches(f: &str, c: &crate::model::Code) -> bool {
    let mut parts = f.split("^^");
    let code = parts.next().unwrap_or("");
    let scheme = parts.next();
    code == c.code && scheme.is_none_or(|s| s == c.scheme)
}

/// DTM comparison on the common prefix length semantics of XDS: values are compared after padding.
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
        return false;
    }
    let v = dtm_key(value);
    from.as_ref().is_none_or(|f| v >= dtm_key(f)) && to.as_ref().is_none_or(|t| v < dtm_key(t))
}

impl FindDocuments {
    /// Whether `e` satisfies every parameter.
    pub fn matches(&self, e: &DocumentEntry) -> bool {
        same_patient(&self.patient_id, &e.patient_id)
            && (self.status.is_empty() || self.status.iter().any(|s| s == &e.status))
            && code_matches(&self.class_code, e.class_code.as_ref())
            && code_matches(&self.type_code, e.type_code.as_ref())
            && code_matches(&self.format_code, e.format_code.as_ref())
            && (self.event_code.is_empty()
                || e.event_codes
                    .iter()
                    .any(|c| self.event_code.iter().any(|f| code_value_matches(f, c))))
            && in_range(
                &e.service_start_time,
                &self.service_start_from,
                &self.service_start_to,
            )
            && in_range(&e.creation_time, &self.creation_from, &self.creation_to)
            && (self.reference_ids.is_empty()
                || e.reference_ids
                    .iter()
                    .any(|r| self.reference_ids.iter().any(|f| reference_matches(f, r))))
    }
}

/// CX equality on id and assigning authority (`id^^^&oid&ISO`), ignoring surrounding whitespace.
pub fn same_patient(a: &str, b: &str) -> bool {
    fn key(s: &str) -> (String, String) {
        let s = s.trim();
        let (id, rest) = s.split_once("^^^").unwrap_or((s, ""));
        let oid = rest.trim_start_matches('&').split('&').next().unwrap_or("");
        (id.to_owned(), oid.to_owned())
    }
    key(a) == key(b)
}

/// A referenceIdList filter value (CXi) matches on id and type; an empty authority in the filter matches any.
fn reference_matches(filter: &str, r: &crate::model::ReferenceId) -> bool {
    match crate::model::ReferenceId::parse_cxi(filter) {
        Some(f) => {
            f.id == r.id
                && f.id_type == r.id_type
                && (f.assigning_authority.is_empty()
                    || f.assigning_authority == r.assigning_authority)
        }
        None => false,
    }
}

/// Registry, repositories and imaging document sources of one simulated community.
#[derive(Debug, Default)]
pub struct Store {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<DocumentEntry>,
    documents: HashMap<(String, String), StoredDocument>,
    instances: HashMap<String, StoredInstance>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Registers a DocumentEntry and stores its content in its repository (`repository_unique_id`).
    pub fn add_document(&self, entry: DocumentEntry, content: StoredDocument) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.documents.insert(
            (entry.repository_unique_id.clone(), entry.unique_id.clone()),
            content,
        );
        g.entries.push(entry);
    }

    /// Stores a DICOM instance in its imaging document source.
    pub fn add_instance(&self, i: StoredInstance) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.instances.insert(i.sop_instance_uid.clone(), i);
    }

    /// FindDocuments / FindDocumentsByReferenceId.
    pub fn find_documents(&self, q: &FindDocuments) -> Vec<DocumentEntry> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.entries.iter().filter(|e| q.matches(e)).cloned().collect()
    }

    /// GetDocuments by entryUUID or uniqueId (unknown ids are simply absent: ITI TF-2a 3.18.4.1.2.3.7.5).
    pub fn get_documents(
        &self,
        entry_uuids: &[String],
        unique_ids: &[String],
    ) -> Vec<DocumentEntry> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.entries
            .iter()
            .filter(|e| {
                entry_uuids.iter().any(|u| u == &e.entry_uuid)
                    || unique_ids.iter().any(|u| u == &e.unique_id)
            })
            .cloned()
            .collect()
    }

    /// The document `unique_id` of repository `repository_unique_id`.
    pub fn document(&self, repository_unique_id: &str, unique_id: &str) -> Option<StoredDocument> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.documents
            .get(&(repository_unique_id.to_owned(), unique_id.to_owned()))
            .cloned()
    }

    /// Whether any document is held by repository `repository_unique_id`.
    pub fn has_repository(&self, repository_unique_id: &str) -> bool {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.documents.keys().any(|(r, _)| r == repository_unique_id)
    }

    /// The instance with this SOP Instance UID.
    pub fn instance(&self, sop_instance_uid: &str) -> Option<StoredInstance> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.instances.get(sop_instance_uid).cloned()
    }

    /// Number of registered DocumentEntries.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Code, ReferenceId, reference_type};

    fn entry(uid: &str, pid: &str, class: &str, start: &str) -> DocumentEntry {
        DocumentEntry {
            entry_uuid: format!("urn:uuid:{uid}"),
            unique_id: uid.into(),
            patient_id: pid.into(),
            status: "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved".into(),
            class_code: Some(Code::new(class, "2.16.840.1.113883.6.96", "")),
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

    #[test]
    fn find_documents_semantics() {
        let s = Store::new();
        let p = "900186021^^^&2.16.840.1.113883.2.4.6.3&ISO";
        s.add_document(
            entry("1", p, "IMAGES", "20240101"),
            StoredDocument {
                mime_type: "x".into(),
                bytes: Bytes::new(),
            },
        );
        s.add_document(
            entry("2", p, "OTHER", "20230101"),
            StoredDocument {
                mime_type: "x".into(),
                bytes: Bytes::new(),
            },
        );
        s.add_document(
            entry("3", "1^^^&1.2&ISO", "IMAGES", "20240101"),
            StoredDocument {
                mime_type: "x".into(),
                bytes: Bytes::new(),
            },
        );
        let mut q = FindDocuments {
            patient_id: p.into(),
            status: vec!["urn:oasis:names:tc:ebxml-regrep:StatusType:Approved".into()],
            ..Default::default()
        };
        assert_eq!(s.find_documents(&q).len(), 2);
        q.class_code = vec!["IMAGES^^2.16.840.1.113883.6.96".into()];
        assert_eq!(s.find_documents(&q).len(), 1);
        q.class_code.clear();
        q.service_start_from = Some("2024".into());
        assert_eq!(s.find_documents(&q).len(), 1);
        q.service_start_from = None;
        q.reference_ids = vec!["S2^^^^urn:ihe:iti:xds:2016:studyInstanceUID".into()];
        assert_eq!(s.find_documents(&q)[0].unique_id, "2");
        q.status = vec!["urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated".into()];
        assert!(s.find_documents(&q).is_empty());
        assert_eq!(s.get_documents(&["urn:uuid:3".into()], &[]).len(), 1);
        assert!(s.get_documents(&["urn:uuid:nope".into()], &[]).is_empty());
        assert!(s.document("1.2.3", "1").is_some());
        assert!(s.document("1.2.4", "1").is_none());
    }
}
