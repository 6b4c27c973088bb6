//! A DICOMweb PACS (QIDO-RS, WADO-RS; DICOM PS3.18) presented to the gateway as an XDS-I.b source.
//!
//! - FindDocuments / FindDocumentsByReferenceId: QIDO-RS `studies?PatientID=<BSN>`; each study becomes
//!   the DocumentEntry of a KOS manifest whose uniqueId is derived from the Study Instance UID (so it is
//!   stable across queries and gateways), authored by this hospital.
//! - GetDocuments by uniqueId and Retrieve Document Set of such a manifest: the study is found again
//!   from the uniqueIds this backend handed out (kept in memory, bounded); the KOS is built on demand
//!   from QIDO-RS series and instance listings.
//! - Retrieve Imaging Document Set: QIDO-RS lists the instances that exist (unknown ones get
//!   XDSDocumentUniqueIdError before anything is streamed), then WADO-RS
//!   `studies/{s}/series/{se}/instances/{i}` streams each instance as it is stored
//!   (`transfer-syntax=*`); a PACS does not transcode on request here, so the requested transfer
//!   syntax list is not checked against the stored one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::qido::{self, QidoStudy};
use super::soap_client::SoapClient;
use super::{BackendError, BoxFut, CallContext, Community, RetrieveStream};
use crate::config::OrganizationConfig;
use crate::dicom::{InstanceInfo, KosOptions, KosPatient, build_kos};
use crate::ihe::ebrim::Identifiable;
use crate::ihe::mtom::{ContentType, MtomError, MultipartReader, RetrieveItem};
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, ReturnType, StoredQuery, param};
use crate::ihe::retrieve::{
    DocumentResponseMeta, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveImagingDocumentSetRequest,
};
use crate::ihe::transform::document_entry_to_wire;
use crate::ihe::{ErrorCode, RegistryError};
use crate::model::{AuthorInstitution, Bsn, Code, DocumentEntry, ReferenceId, reference_type};

/// How many manifest uniqueIds are remembered for GetDocuments / retrieve.
const REMEMBERED: usize = 100_000;

/// See the module documentation.
pub struct DicomwebCommunity {
    base: String,
    repository_unique_id: String,
    org: OrganizationConfig,
    client: SoapClient,
    /// manifest uniqueId → (Study Instance UID, patient CX)
    manifests: Mutex<HashMap<String, (String, String)>>,
}

impl std::fmt::Debug for DicomwebCommunity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomwebCommunity")
            .field("base", &self.base)
            .finish()
    }
}

fn manifest_uid(study_uid: &str) -> String {
    crate::dicom::uid::derived_uid("duo-dicomweb-kos", study_uid)
}

impl DicomwebCommunity {
    /// A PACS at `base` (the DICOMweb root, e.g. `http://pacs:8042/dicom-web`), presented with
    /// `repository_unique_id` as repository and imaging document source id, on behalf of `org`.
    pub fn new(
        base: &str,
        repository_unique_id: &str,
        org: &OrganizationConfig,
        client: SoapClient,
    ) -> DicomwebCommunity {
        DicomwebCommunity {
            base: base.trim_end_matches('/').to_owned(),
            repository_unique_id: repository_unique_id.to_owned(),
            org: org.clone(),
            client,
            manifests: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, uid: &str, study: &str, patient: &str) {
        let mut m = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= REMEMBERED {
            m.clear();
        }
        m.insert(uid.to_owned(), (study.to_owned(), patient.to_owned()));
    }

    fn recall(&self, uid: &str) -> Option<(String, String)> {
        self.manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    async fn get_json(
        &self,
        path_and_query: &str,
        ctx: &CallContext,
    ) -> Result<Bytes, BackendError> {
        let url = format!("{}/{}", self.base, path_and_query);
        let resp = self
            .client
            .get(&url, "application/dicom+json", ctx.deadline)
            .await?;
        resp.bytes()
            .await
            .map_err(|e| BackendError::Transport(e.to_string()))
    }

    async fn studies(
        &self,
        ctx: &CallContext,
        query: &str,
    ) -> Result<Vec<QidoStudy>, BackendError> {
        let body = self.get_json(&format!("studies?{query}&includefield=00081030&includefield=00180015&includefield=00201206&includefield=00201208&includefield=00080061"), ctx).await?;
        qido::parse_studies(&body).map_err(|e| BackendError::Protocol(e.to_string()))
    }

    fn entry_for(&self, s: &QidoStudy, patient_cx: &str) -> DocumentEntry {
        let uid = manifest_uid(&s.study.study_instance_uid);
        self.remember(&uid, &s.study.study_instance_uid, patient_cx);
        let mut refs = vec![ReferenceId {
            id: s.study.study_instance_uid.clone(),
            assigning_authority: String::new(),
            id_type: reference_type::STUDY_INSTANCE_UID.into(),
        }];
        if !s.study.accession_number.is_empty() {
            refs.push(ReferenceId {
                id: s.study.accession_number.clone(),
                assigning_authority: String::new(),
                id_type: reference_type::ACCESSION.into(),
            });
        }
        let time: String = s
            .study
            .study_time
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .take(6)
            .collect();
        DocumentEntry {
            entry_uuid: format!("urn:uuid:{}", uuid::Uuid::from_u128(u128_of(&uid))),
            unique_id: uid,
            home_community_id: Some(self.org.home_community_id.clone()),
            repository_unique_id: self.repository_unique_id.clone(),
            patient_id: patient_cx.to_owned(),
            status: "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved".into(),
            mime_type: "application/dicom".into(),
            title: if s.study.description.is_empty() {
                "Imaging study".into()
            } else {
                s.study.description.clone()
            },
            class_code: Some(Code::new(
                crate::dicom::codes::IMAGES_CLASS_CODE,
                crate::dicom::codes::IHE_CLASS_CODE_SCHEME,
                "Images",
            )),
            type_code: Some(Code::new(
                "18748-4",
                crate::dicom::codes::LOINC,
                "Diagnostic imaging study",
            )),
            format_code: Some(Code::new(
                crate::model::KOS_SOP_CLASS,
                crate::model::KOS_FORMAT_SCHEME,
                "Key Object Selection Document",
            )),
            healthcare_facility_type_code: Some(Code::new(
                self.org.facility_type.as_str(),
                crate::model::FacilityType::CODE_SYSTEM,
                "",
            )),
            confidentiality_codes: vec![Code::new("N", "2.16.840.1.113883.5.25", "normal")],
            event_codes: s
                .modalities
                .iter()
                .filter(|m| *m != "SR" && *m != "KO")
                .map(|m| Code::new(m, "DCM", m))
                .collect(),
            service_start_time: format!("{}{}", s.study.study_date, time),
            language_code: "nl-NL".into(),
            author_institutions: vec![AuthorInstitution {
                name: self.org.name.clone(),
                ura: Some(self.org.ura.clone()),
            }],
            reference_ids: refs,
            source_patient_id: patient_cx.to_owned(),
            ..DocumentEntry::default()
        }
    }

    /// Every instance of a study, by series: (series UID, modality, [(SOP Instance UID, SOP Class UID)]).
    async fn instances(
        &self,
        ctx: &CallContext,
        study: &str,
    ) -> Result<Vec<(String, String, Vec<(String, String)>)>, BackendError> {
        let series = qido::parse_series(
            &self
                .get_json(&format!("studies/{study}/series"), ctx)
                .await?,
        )
        .map_err(|e| BackendError::Protocol(e.to_string()))?;
        let mut out = Vec::new();
        for s in series {
            let body = self
                .get_json(
                    &format!("studies/{study}/series/{}/instances", s.series_instance_uid),
                    ctx,
                )
                .await?;
            let inst =
                qido::parse_instances(&body).map_err(|e| BackendError::Protocol(e.to_string()))?;
            out.push((
                s.series_instance_uid,
                s.modality,
                inst.into_iter()
                    .map(|i| (i.sop_instance_uid, i.sop_class_uid))
                    .collect(),
            ));
        }
        Ok(out)
    }

    async fn build_manifest(
        &self,
        ctx: &CallContext,
        uid: &str,
        study: &str,
        patient_cx: &str,
    ) -> Result<Vec<u8>, BackendError> {
        let found = self
            .studies(ctx, &format!("StudyInstanceUID={study}"))
            .await?;
        let s = found
            .first()
            .ok_or_else(|| BackendError::Protocol(format!("study {study} is gone")))?;
        let mut infos = Vec::new();
        for (series, modality, inst) in self.instances(ctx, study).await? {
            for (sop, class) in inst {
                infos.push(InstanceInfo {
                    sop_class_uid: class,
                    sop_instance_uid: sop,
                    study_instance_uid: study.to_owned(),
                    series_instance_uid: series.clone(),
                    modality: modality.clone(),
                    patient_id: s.patient_id.clone(),
                    study_date: s.study.study_date.clone(),
                    study_time: s.study.study_time.clone(),
                    study_description: s.study.description.clone(),
                    accession_number: s.study.accession_number.clone(),
                    body_part: s.study.body_part.clone(),
                    is_image: true,
                    ..InstanceInfo::default()
                });
            }
        }
        let bsn = Bsn::from_cx(patient_cx);
        let opts = KosOptions {
            retrieve_location_uid: self.repository_unique_id.clone(),
            sop_instance_uid: Some(uid.to_owned()),
            manufacturer: "DUO gateway".into(),
            institution_name: Some(self.org.name.clone()),
            patient: bsn.map(|b| KosPatient {
                id: b.to_string(),
                issuer: "NLMINBIZA".into(),
                authority_oid: Bsn::OID.into(),
                name: None,
            }),
            ..KosOptions::default()
        };
        build_kos(&infos, &opts)
            .map(|k| k.bytes)
            .map_err(|e| BackendError::Protocol(format!("KOS for {study}: {e}")))
    }
}

fn u128_of(uid: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(uid.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    // RFC 9562 version 8 / variant bits so the value is a well-formed UUID
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    u128::from_be_bytes(b)
}

fn not_found(uid: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::XDSDocumentUniqueIdError,
        format!("document {uid} not found"),
    )
    .at(uid.to_owned())
}

impl Community for DicomwebCommunity {
    fn query(
        &self,
        ctx: CallContext,
        req: AdhocQueryRequest,
    ) -> BoxFut<'_, Result<AdhocQueryResponse, BackendError>> {
        Box::pin(async move {
            let q = &req.query;
            let kind = q
                .stored_query()
                .ok_or_else(|| BackendError::Unsupported(format!("stored query {}", q.id)))?;
            let bad = |e: crate::ihe::query::ParamError| BackendError::Protocol(e.to_string());
            let entries: Vec<DocumentEntry> = match kind {
                StoredQuery::FindDocuments | StoredQuery::FindDocumentsByReferenceId => {
                    let cx = q
                        .single(param::DE_PATIENT_ID)
                        .map_err(bad)?
                        .unwrap_or_default();
                    let Some(bsn) = Bsn::from_cx(&cx) else {
                        return Ok(AdhocQueryResponse::new(Vec::new(), Vec::new()));
                    };
                    let mut studies = self.studies(&ctx, &format!("PatientID={bsn}")).await?;
                    if kind == StoredQuery::FindDocumentsByReferenceId {
                        let wanted = q.list(param::DE_REFERENCE_ID_LIST).map_err(bad)?;
                        let refs: Vec<ReferenceId> = wanted
                            .iter()
                            .filter_map(|w| ReferenceId::parse_cxi(w))
                            .collect();
                        studies.retain(|s| {
                            refs.iter().any(|r| {
                                (r.id_type == reference_type::STUDY_INSTANCE_UID
                                    && r.id == s.study.study_instance_uid)
                                    || (r.id_type == reference_type::ACCESSION
                                        && r.id == s.study.accession_number)
                            })
                        });
                    }
                    studies.iter().map(|s| self.entry_for(s, &cx)).collect()
                }
                StoredQuery::GetDocuments => {
                    let uids = q.list(param::DE_UNIQUE_ID).map_err(bad)?;
                    let mut out = Vec::new();
                    for u in uids {
                        if let Some((study, patient)) = self.recall(&u)
                            && let Some(s) = self
                                .studies(&ctx, &format!("StudyInstanceUID={study}"))
                                .await?
                                .first()
                        {
                            out.push(self.entry_for(s, &patient));
                        }
                    }
                    out
                }
                other => {
                    return Err(BackendError::Unsupported(format!(
                        "{} on a DICOMweb PACS",
                        other.name()
                    )));
                }
            };
            let objects: Vec<Identifiable> = match req.response_option.return_type {
                ReturnType::ObjectRef => entries
                    .iter()
                    .map(|e| {
                        Identifiable::ObjectRef(crate::ihe::ebrim::ObjectRef {
                            id: e.entry_uuid.clone(),
                            home: e.home_community_id.clone(),
                            slots: Vec::new(),
                        })
                    })
                    .collect(),
                _ => entries
                    .iter()
                    .map(|e| Identifiable::ExtrinsicObject(document_entry_to_wire(e)))
                    .collect(),
            };
            Ok(AdhocQueryResponse::new(objects, Vec::new()))
        })
    }

    fn retrieve(
        &self,
        ctx: CallContext,
        req: RetrieveDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        Box::pin(async move {
            let mut errors = Vec::new();
            let mut docs = Vec::new();
            for d in &req.documents {
                if d.repository_unique_id != self.repository_unique_id {
                    errors.push(
                        RegistryError::new(
                            ErrorCode::XDSUnknownRepositoryId,
                            format!("unknown repository {}", d.repository_unique_id),
                        )
                        .at(d.repository_unique_id.clone()),
                    );
                    continue;
                }
                let Some((study, patient)) = self.recall(&d.document_unique_id) else {
                    errors.push(not_found(&d.document_unique_id));
                    continue;
                };
                match self
                    .build_manifest(&ctx, &d.document_unique_id, &study, &patient)
                    .await
                {
                    Ok(bytes) => docs.push((
                        DocumentResponseMeta {
                            home_community_id: None,
                            repository_unique_id: self.repository_unique_id.clone(),
                            document_unique_id: d.document_unique_id.clone(),
                            mime_type: "application/dicom".into(),
                            ..DocumentResponseMeta::default()
                        },
                        Bytes::from(bytes),
                    )),
                    Err(e) => {
                        errors.push(e.to_registry_error(crate::ihe::Transaction::Iti43, &self.base))
                    }
                }
            }
            let metas: Vec<DocumentResponseMeta> = docs.iter().map(|(m, _)| m.clone()).collect();
            let items: Vec<Result<RetrieveItem, MtomError>> = docs
                .into_iter()
                .enumerate()
                .flat_map(|(i, (_, b))| {
                    [
                        Ok(RetrieveItem::Document(i)),
                        Ok(RetrieveItem::Chunk(b)),
                        Ok(RetrieveItem::End),
                    ]
                })
                .collect();
            let n = metas.len();
            Ok(RetrieveStream {
                response: RegistryResponse::derive(errors, n),
                documents: metas,
                items: stream::iter(items).boxed(),
            })
        })
    }

    fn retrieve_images(
        &self,
        ctx: CallContext,
        req: RetrieveImagingDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        Box::pin(async move {
            let mut errors = Vec::new();
            // what exists, per (study, series): one QIDO-RS call each
            let mut existing: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            let mut wanted = Vec::new();
            for (st, se, d) in req.documents() {
                if d.repository_unique_id != self.repository_unique_id {
                    errors.push(
                        RegistryError::new(
                            ErrorCode::XDSIUnknownIdsUid,
                            format!("unknown imaging document source {}", d.repository_unique_id),
                        )
                        .at(d.document_unique_id.clone()),
                    );
                    continue;
                }
                let key = (st.to_owned(), se.to_owned());
                if !existing.contains_key(&key) {
                    let list = match self
                        .get_json(&format!("studies/{st}/series/{se}/instances"), &ctx)
                        .await
                    {
                        Ok(body) => qido::parse_instances(&body)
                            .map_err(|e| BackendError::Protocol(e.to_string()))?,
                        Err(BackendError::Http { status: 404, .. }) => Vec::new(),
                        Err(e) => return Err(e),
                    };
                    existing.insert(
                        key.clone(),
                        list.into_iter().map(|i| i.sop_instance_uid).collect(),
                    );
                }
                if existing[&key].contains(&d.document_unique_id) {
                    wanted.push((st.to_owned(), se.to_owned(), d.document_unique_id.clone()));
                } else {
                    errors.push(not_found(&d.document_unique_id));
                }
            }
            let metas: Vec<DocumentResponseMeta> = wanted
                .iter()
                .map(|(_, _, sop)| DocumentResponseMeta {
                    home_community_id: None,
                    repository_unique_id: self.repository_unique_id.clone(),
                    document_unique_id: sop.clone(),
                    mime_type: "application/dicom".into(),
                    ..DocumentResponseMeta::default()
                })
                .collect();
            let n = metas.len();
            let base = self.base.clone();
            let client = self.client.clone();
            let deadline = ctx.deadline;
            let limits = client.limits().clone();
            // one WADO-RS request per instance, opened only when its turn comes: memory stays bounded
            let items = stream::iter(wanted.into_iter().enumerate())
                .then(move |(i, (st, se, sop))| {
                    let client = client.clone();
                    let base = base.clone();
                    let limits = limits.clone();
                    async move {
                        let url = format!("{base}/studies/{st}/series/{se}/instances/{sop}");
                        let resp = client
                            .get(
                                &url,
                                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
                                deadline,
                            )
                            .await
                            .map_err(|e| MtomError::Source(format!("WADO-RS {sop}: {e}")))?;
                        let ct = resp
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = resp
                            .bytes_stream()
                            .map_err(|e| -> crate::ihe::mtom::BoxError { Box::new(e) });
                        let ct = ContentType::parse(&ct)?;
                        let mut mp = MultipartReader::new(&ct, body, &limits)?;
                        mp.next_part().await?.ok_or_else(|| {
                            MtomError::Malformed(format!("WADO-RS {sop}: no part"))
                        })?;
                        let chunks = stream::unfold(Some(mp), |st| async move {
                            let mut mp = st?;
                            match mp.chunk().await {
                                Ok(Some(c)) => Some((Ok(RetrieveItem::Chunk(c)), Some(mp))),
                                Ok(None) => Some((Ok(RetrieveItem::End), None)),
                                Err(e) => Some((Err(e), None)),
                            }
                        });
                        Ok::<_, MtomError>(
                            stream::once(async move { Ok(RetrieveItem::Document(i)) })
                                .chain(chunks),
                        )
                    }
                })
                .try_flatten()
                .boxed();
            Ok(RetrieveStream {
                response: RegistryResponse::derive(errors, n),
                documents: metas,
                items,
            })
        })
    }
}
