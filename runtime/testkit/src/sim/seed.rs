//! Filling a simulated community with synthetic studies: each study generated with
//! [`crate::dicom::synth`], published with [`crate::dicom::xds::publish_study`] (a KOS manifest
//! DocumentEntry and a report DocumentEntry, PDF or CDA), and stored: entries in the registry, KOS and
//! report bytes in the repository, instances in the imaging document source.
//!
//! The returned [`SeededStudy`] describes what was stored (UIDs, accession number, SHA-256 of every
//! instance's bytes) so that a demo or test can verify a retrieve byte for byte. One study can be seeded
//! into two communities ([`seed_study`] twice with the same [`SyntheticStudy`]): the same Study Instance
//! UID and instance bytes, a KOS manifest per community (its UID derives from the retrieve location).

use bytes::Bytes;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use jiff::tz::TimeZone;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dicom::kos::KosOptions;
use crate::dicom::report::ReportAuthor;
use crate::dicom::store::InsertError;
use crate::dicom::synth::{SynthConfig, SynthPatient, SyntheticStudy, generate_studies};
use crate::dicom::xds::{Publisher, ReportFormat, publish_study};
use crate::dicom::{DicomError, InstanceInfo, StoredInstance, read_instance, transfer_syntax};
use crate::ihe::retrieve::{
    DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest,
};
use crate::model::{AuthorInstitution, Bsn, FacilityType, HomeCommunityId};

use super::store::{Store, StoredDocument};

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Generating or publishing the study failed.
    #[error(transparent)]
    Dicom(#[from] DicomError),
    /// An instance is already held (the same study seeded twice into one community).
    #[error(transparent)]
    Insert(#[from] InsertError),
}

/// How one community publishes: who, where its documents and instances live.
#[derive(Debug, Clone)]
pub struct CommunitySeed {
    /// Institution, facility type, repositoryUniqueId, homeCommunityId, language and time zone of the
    /// published DocumentEntries.
    pub publisher: Publisher,
    /// uniqueId of the imaging document source holding the instances: the KOS Retrieve Location UID,
    /// which consumers send as RepositoryUniqueId in RAD-69 / RAD-75.
    pub source_unique_id: String,
    /// The radiologist who signs the reports.
    pub report_author: ReportAuthor,
}

impl CommunitySeed {
    /// A community of `institution` with the given facility type, repository and imaging document source
    /// uniqueIds and (for a community reached over XCA) homeCommunityId; language `nl-NL`, time zone
    /// Europe/Amsterdam, reports by `Radioloog^Renske`.
    pub fn new(
        institution: AuthorInstitution,
        facility_type: FacilityType,
        repository_unique_id: &str,
        source_unique_id: &str,
        home_community_id: Option<HomeCommunityId>,
    ) -> CommunitySeed {
        CommunitySeed {
            publisher: Publisher {
                institution,
                facility_type,
                repository_unique_id: repository_unique_id.to_owned(),
                home_community_id,
                language_code: "nl-NL".into(),
                time_zone: TimeZone::get("Europe/Amsterdam").unwrap_or(TimeZone::UTC),
            },
            source_unique_id: source_unique_id.to_owned(),
            report_author: ReportAuthor {
                name: "Radioloog^Renske".into(),
                uzi: None,
            },
        }
    }
}

/// A stored document: identifiers, size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeededDocument {
    /// The DocumentEntry's entryUUID.
    pub entry_uuid: String,
    /// The DocumentEntry's uniqueId (for the KOS its SOP Instance UID).
    pub unique_id: String,
    /// mimeType.
    pub mime_type: String,
    /// Size, bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
}

/// A stored instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeededInstance {
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID (the RAD-69 / RAD-75 DocumentUniqueId).
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Transfer syntax of the stored encoding.
    pub transfer_syntax_uid: String,
    /// Size, bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the Part 10 bytes.
    pub sha256: String,
}

/// What [`seed_study`] stored for one study in one community.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeededStudy {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Accession Number.
    pub accession_number: String,
    /// Modalities, as in the manifest's eventCodeList.
    pub modalities: Vec<String>,
    /// Study Description.
    pub description: String,
    /// Study Date `YYYYMMDD` and Time `HHMMSS` (local).
    pub study_date: String,
    /// Study Time.
    pub study_time: String,
    /// The patient id of the entries (BSN as CX).
    pub patient_id: String,
    /// homeCommunityId of the publishing community, when it has one.
    pub home_community_id: Option<String>,
    /// Repository holding KOS and report.
    pub repository_unique_id: String,
    /// Imaging document source holding the instances.
    pub source_unique_id: String,
    /// The KOS manifest.
    pub manifest: SeededDocument,
    /// The report.
    pub report: SeededDocument,
    /// `pdf` or `cda`.
    pub report_format: String,
    /// The instances, series by series.
    pub instances: Vec<SeededInstance>,
}

impl SeededStudy {
    /// A RAD-69 / RAD-75 request for every instance of the study from its imaging document source, in
    /// series order, asking for `transfer_syntaxes` (in order of preference). `home` is written on every
    /// DocumentRequest (required for RAD-75, ITI TF-2b / RAD TF-3 4.75.4.1.2).
    pub fn imaging_request(
        &self,
        home: Option<&HomeCommunityId>,
        transfer_syntaxes: &[&str],
    ) -> RetrieveImagingDocumentSetRequest {
        let mut series: Vec<SeriesRequest> = Vec::new();
        for i in &self.instances {
            let d = DocumentRequest {
                home_community_id: home.cloned(),
                repository_unique_id: self.source_unique_id.clone(),
                document_unique_id: i.sop_instance_uid.clone(),
            };
            match series
                .iter_mut()
                .find(|s| s.series_instance_uid == i.series_instance_uid)
            {
                Some(s)
                    if !s
                        .documents
                        .iter()
                        .any(|x| x.document_unique_id == d.document_unique_id) =>
                {
                    s.documents.push(d)
                }
                Some(_) => {}
                None => series.push(SeriesRequest {
                    series_instance_uid: i.series_instance_uid.clone(),
                    documents: vec![d],
                }),
            }
        }
        RetrieveImagingDocumentSetRequest {
            studies: vec![StudyRequest {
                study_instance_uid: self.study_instance_uid.clone(),
                series,
            }],
            transfer_syntaxes: transfer_syntaxes.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// The stored instance with this SOP Instance UID (the first encoding listed), to verify a retrieved
    /// one against: `sha256_hex(bytes) == instance.sha256`.
    pub fn instance(&self, sop_instance_uid: &str) -> Option<&SeededInstance> {
        self.instances
            .iter()
            .find(|i| i.sop_instance_uid == sop_instance_uid)
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn seeded_document(entry_uuid: &str, unique_id: &str, mime: &str, bytes: &[u8]) -> SeededDocument {
    SeededDocument {
        entry_uuid: entry_uuid.to_owned(),
        unique_id: unique_id.to_owned(),
        mime_type: mime.to_owned(),
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

/// Publishes `study` of patient `bsn` into `store` as community `community` publishes it: the KOS
/// manifest (retrieve location = `community.source_unique_id`) and a report in `format` (its texts and
/// document UID chosen by `seed`) in the repository and the registry, the instances in the imaging
/// document source.
///
/// Errors: [`SeedError::Dicom`] from publishing, [`SeedError::Insert`] when the store already holds one of
/// the instances (nothing of the study is registered then: instances go in first).
pub fn seed_study(
    store: &Store,
    community: &CommunitySeed,
    bsn: &Bsn,
    study: &SyntheticStudy,
    format: ReportFormat,
    seed: u64,
) -> Result<SeededStudy, SeedError> {
    let instances: Vec<StoredInstance> = study
        .instances
        .iter()
        .cloned()
        .map(StoredInstance::from)
        .collect();
    let mut s = seed_instances(store, community, bsn, instances, format, seed)?;
    s.study_instance_uid = study.study_instance_uid.clone();
    s.accession_number = study.accession_number.clone();
    s.description = study.description.clone();
    s.study_date = study.study_date.clone();
    s.study_time = study.study_time.clone();
    Ok(s)
}

/// Publishes one study's `instances` (e.g. a [`crate::dicom::corpus::CorpusStudy`] of real files, every
/// encoding kept) of patient `bsn` as [`seed_study`] does; study facts (accession number, description,
/// date) come from the first instance.
///
/// Errors: as [`seed_study`]; [`DicomError::Inconsistent`] for an empty list.
pub fn seed_instances(
    store: &Store,
    community: &CommunitySeed,
    bsn: &Bsn,
    instances: Vec<StoredInstance>,
    format: ReportFormat,
    seed: u64,
) -> Result<SeededStudy, SeedError> {
    let first = instances
        .first()
        .map(|i| i.info.clone())
        .ok_or_else(|| DicomError::Inconsistent("a study without instances".into()))?;
    let kos = KosOptions {
        retrieve_location_uid: community.source_unique_id.clone(),
        institution_name: Some(community.publisher.institution.name.clone()),
        ..Default::default()
    };
    let published = publish_study(
        &community.publisher,
        bsn,
        instances,
        &kos,
        community.report_author.clone(),
        format,
        seed,
    )?;
    let mut seeded_instances = Vec::with_capacity(published.instances.len());
    store.add_source(&community.source_unique_id);
    for i in &published.instances {
        for e in &i.encodings {
            let mut info = i.info.clone();
            info.transfer_syntax_uid = e.transfer_syntax_uid.clone();
            store.add_instance(&community.source_unique_id, info, e.bytes.clone())?;
            seeded_instances.push(SeededInstance {
                series_instance_uid: i.info.series_instance_uid.clone(),
                sop_instance_uid: i.info.sop_instance_uid.clone(),
                sop_class_uid: i.info.sop_class_uid.clone(),
                transfer_syntax_uid: e.transfer_syntax_uid.clone(),
                size: e.bytes.len() as u64,
                sha256: sha256_hex(&e.bytes),
            });
        }
    }
    let m = &published.manifest_entry;
    let r = &published.report_entry;
    let manifest = seeded_document(
        &m.entry_uuid,
        &m.unique_id,
        &m.mime_type,
        &published.kos.bytes,
    );
    let report = seeded_document(
        &r.entry_uuid,
        &r.unique_id,
        &r.mime_type,
        &published.report_bytes,
    );
    store.add_document(
        m.clone(),
        StoredDocument {
            mime_type: m.mime_type.clone(),
            bytes: Bytes::from(published.kos.bytes.clone()),
        },
    );
    store.add_document(
        r.clone(),
        StoredDocument {
            mime_type: r.mime_type.clone(),
            bytes: Bytes::from(published.report_bytes.clone()),
        },
    );
    Ok(SeededStudy {
        study_instance_uid: first.study_instance_uid.clone(),
        accession_number: first.accession_number.clone(),
        modalities: m.modalities().map(str::to_owned).collect(),
        description: first.study_description.clone(),
        study_date: first.study_date.clone(),
        study_time: first.study_time.clone(),
        patient_id: m.patient_id.clone(),
        home_community_id: community
            .publisher
            .home_community_id
            .as_ref()
            .map(ToString::to_string),
        repository_unique_id: community.publisher.repository_unique_id.clone(),
        source_unique_id: community.source_unique_id.clone(),
        manifest,
        report,
        report_format: match format {
            ReportFormat::Pdf => "pdf",
            ReportFormat::Cda => "cda",
        }
        .into(),
        instances: seeded_instances,
    })
}

/// Generates `count` studies of `patient` with `synth` (seeds `seed`, `seed + 1`, ...) and seeds each
/// into `store` with [`seed_study`]; reports alternate PDF (even positions) and CDA (odd positions).
///
/// Errors: those of [`generate_studies`] and [`seed_study`].
pub fn seed_patient(
    store: &Store,
    community: &CommunitySeed,
    synth: &SynthConfig,
    patient: &SynthPatient,
    seed: u64,
    count: usize,
) -> Result<Vec<SeededStudy>, SeedError> {
    let studies = generate_studies(synth, patient, seed, count)?;
    studies
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let format = if k % 2 == 0 {
                ReportFormat::Pdf
            } else {
                ReportFormat::Cda
            };
            seed_study(
                store,
                community,
                &patient.bsn,
                s,
                format,
                seed.wrapping_add(k as u64),
            )
        })
        .collect()
}

/// A copy of a Part 10 file with other Study, Series and SOP Instance UIDs (File Meta Information
/// rewritten to match), e.g. to hold the instances a NIST test plan names. The result is Explicit VR
/// Little Endian.
///
/// Errors: [`DicomError`] when `bytes` is not readable, or is encoded in a transfer syntax other than
/// Explicit / Implicit VR Little Endian (encapsulated pixel data cannot be re-encoded here).
pub fn with_uids(
    bytes: &[u8],
    study_uid: &str,
    series_uid: &str,
    sop_uid: &str,
) -> Result<(InstanceInfo, Bytes), DicomError> {
    let obj = crate::dicom::instance::open(bytes, false)?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    if ts != transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN
        && ts != transfer_syntax::IMPLICIT_VR_LITTLE_ENDIAN
    {
        return Err(DicomError::UnsupportedTransferSyntax(format!(
            "{ts}: only native little-endian files can be re-stamped"
        )));
    }
    let mut inner = obj.into_inner();
    for (tag, v) in [
        (tags::STUDY_INSTANCE_UID, study_uid),
        (tags::SERIES_INSTANCE_UID, series_uid),
        (tags::SOP_INSTANCE_UID, sop_uid),
    ] {
        inner.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(v)));
    }
    let out = crate::dicom::synth::encode(inner)?;
    let info = read_instance(&out)?;
    Ok((info, Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::synth::generate_study;
    use crate::dicom::{InstanceStore, parse_kos};
    use crate::model::DocumentKind;

    pub(crate) fn community(repo: &str, source: &str, home: Option<&str>) -> CommunitySeed {
        CommunitySeed::new(
            AuthorInstitution {
                name: "Ziekenhuis Oost".into(),
                ura: Some("12345678".parse().unwrap()),
            },
            "V6".parse().unwrap(),
            repo,
            source,
            home.map(|h| h.parse().unwrap()),
        )
    }

    #[test]
    fn seeds_entries_documents_and_instances() {
        let store = Store::new();
        let c = community("1.2.3.1", "1.2.3.2", Some("urn:oid:1.2.3"));
        let p = SynthPatient::example();
        let studies = seed_patient(&store, &c, &SynthConfig::default(), &p, 7, 3).unwrap();
        assert_eq!(studies.len(), 3);
        assert_eq!(store.len(), 6, "a manifest and a report per study");
        assert_eq!(studies[0].report_format, "pdf");
        assert_eq!(studies[1].report_format, "cda");
        let n: usize = studies.iter().map(|s| s.instances.len()).sum();
        assert_eq!(store.instance_count(), n);
        for s in &studies {
            let kos = store.document("1.2.3.1", &s.manifest.unique_id).unwrap();
            assert_eq!(sha256_hex(&kos.bytes), s.manifest.sha256);
            let m = parse_kos(&kos.bytes).unwrap();
            assert_eq!(m.study().unwrap().study_instance_uid, s.study_instance_uid);
            assert_eq!(
                m.study().unwrap().series[0].retrieve_location_uid,
                "1.2.3.2"
            );
            let rep = store.document("1.2.3.1", &s.report.unique_id).unwrap();
            assert_eq!(rep.mime_type, s.report.mime_type);
            assert_eq!(sha256_hex(&rep.bytes), s.report.sha256);
            let entries = store.get_documents(&[], std::slice::from_ref(&s.manifest.unique_id));
            assert_eq!(entries[0].kind(), DocumentKind::ImagingManifest);
            for i in &s.instances {
                match store.instance(
                    "1.2.3.2",
                    &s.study_instance_uid,
                    &i.series_instance_uid,
                    &i.sop_instance_uid,
                ) {
                    super::super::store::InstanceLookup::Found(x) => {
                        assert_eq!(sha256_hex(&x.encodings[0].bytes), i.sha256);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        // seeding the same study into the same community again is refused, not duplicated
        let again = seed_patient(&store, &c, &SynthConfig::default(), &p, 7, 1);
        assert!(matches!(again, Err(SeedError::Insert(_))));
    }

    #[test]
    fn one_study_in_two_communities() {
        let p = SynthPatient::example();
        let study = generate_study(&SynthConfig::default(), &p, 11).unwrap();
        let (a, b) = (Store::new(), Store::new());
        let ca = community("1.2.3.1", "1.2.3.2", None);
        let cb = community("1.2.4.1", "1.2.4.2", Some("urn:oid:1.2.4"));
        let sa = seed_study(&a, &ca, &p.bsn, &study, ReportFormat::Pdf, 1).unwrap();
        let sb = seed_study(&b, &cb, &p.bsn, &study, ReportFormat::Cda, 2).unwrap();
        assert_eq!(sa.study_instance_uid, sb.study_instance_uid);
        assert_ne!(
            sa.manifest.unique_id, sb.manifest.unique_id,
            "a KOS per community"
        );
        let ha: Vec<_> = sa.instances.iter().map(|i| &i.sha256).collect();
        let hb: Vec<_> = sb.instances.iter().map(|i| &i.sha256).collect();
        assert_eq!(ha, hb, "the same instance bytes");
        assert_eq!(sb.home_community_id.as_deref(), Some("urn:oid:1.2.4"));
    }

    #[test]
    fn restamped_instances() {
        let p = SynthPatient::example();
        let study = generate_study(&SynthConfig::default(), &p, 3).unwrap();
        let (info, bytes) =
            with_uids(&study.instances[0].bytes, "1.2.3", "1.2.3.4", "1.2.3.4.5").unwrap();
        assert_eq!(info.study_instance_uid, "1.2.3");
        assert_eq!(info.series_instance_uid, "1.2.3.4");
        assert_eq!(info.sop_instance_uid, "1.2.3.4.5");
        assert_eq!(info.patient_id, study.instances[0].info.patient_id);
        let mut s = InstanceStore::new();
        s.insert(info, bytes).unwrap();
        assert!(s.get("1.2.3", "1.2.3.4", "1.2.3.4.5").is_ok());
        assert!(with_uids(b"not dicom", "1", "2", "3").is_err());
    }
}
