//! Retrieve evaluation shared by the XDS repository / imaging document source and the TLB node:
//! which DocumentRequests are answered with which bytes, and the RegistryErrors for the others
//! (ITI TF-2b 3.39.4.1.3, 3.43.4.1.3; RAD TF-3 4.69.4.1.3, 4.75.4.1.3).

use bytes::Bytes;

use crate::dicom::LookupError;
use crate::ihe::ebrim::{ErrorCode, RegistryError};
use crate::ihe::retrieve::{
    DocumentRequest, DocumentResponseMeta, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveImagingDocumentSetRequest,
};
use crate::model::HomeCommunityId;

use super::store::{InstanceLookup, Store};

/// Where the documents are retrieved: a community's own actor (XDS: no home checks, the request's
/// HomeCommunityId echoed) or a responding gateway (XCA: HomeCommunityId required and checked, its own
/// written on every DocumentResponse).
#[derive(Debug, Clone)]
pub(crate) enum Side {
    /// XDS repository / imaging document source.
    Local,
    /// XCA / XCA-I responding gateway of this community.
    Gateway(HomeCommunityId),
}

impl Side {
    /// Checks a DocumentRequest's HomeCommunityId; returns the one to write in the response.
    fn check_home(&self, d: &DocumentRequest) -> Result<Option<HomeCommunityId>, RegistryError> {
        match self {
            Side::Local => Ok(d.home_community_id.clone()),
            Side::Gateway(home) => match &d.home_community_id {
                None => Err(RegistryError::new(
                    ErrorCode::XDSMissingHomeCommunityId,
                    format!(
                        "DocumentRequest for {} has no HomeCommunityId",
                        d.document_unique_id
                    ),
                )
                .at(d.document_unique_id.clone())),
                Some(h) if h != home => Err(RegistryError::new(
                    ErrorCode::XDSUnknownCommunity,
                    format!("community {h} is not known here (this is {home})"),
                )
                .at(h.to_string())),
                Some(_) => Ok(Some(home.clone())),
            },
        }
    }
}

/// The documents answered and the status/errors, for [`super::wire::retrieve_response`].
pub(crate) type Outcome = (RegistryResponse, Vec<(DocumentResponseMeta, Bytes)>);

/// ITI-43 / ITI-39: each DocumentRequest answered from repository `RepositoryUniqueId` of `store`.
/// Unknown repository → XDSUnknownRepositoryId (location the repository id); unknown document →
/// XDSDocumentUniqueIdError (location the document id). Status from errors and documents.
pub(crate) fn documents(store: &Store, req: &RetrieveDocumentSetRequest, side: &Side) -> Outcome {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for d in &req.documents {
        let home = match side.check_home(d) {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !store.has_repository(&d.repository_unique_id) {
            errors.push(
                RegistryError::new(
                    ErrorCode::XDSUnknownRepositoryId,
                    format!("unknown repository {}", d.repository_unique_id),
                )
                .at(d.repository_unique_id.clone()),
            );
            continue;
        }
        match store.document(&d.repository_unique_id, &d.document_unique_id) {
            None => errors.push(
                RegistryError::new(
                    ErrorCode::XDSDocumentUniqueIdError,
                    format!(
                        "document {} is not in repository {}",
                        d.document_unique_id, d.repository_unique_id
                    ),
                )
                .at(d.document_unique_id.clone()),
            ),
            Some(doc) => docs.push((
                DocumentResponseMeta {
                    home_community_id: home,
                    repository_unique_id: d.repository_unique_id.clone(),
                    document_unique_id: d.document_unique_id.clone(),
                    new_repository_unique_id: None,
                    new_document_unique_id: None,
                    mime_type: doc.mime_type,
                },
                doc.bytes,
            )),
        }
    }
    (RegistryResponse::derive(errors, docs.len()), docs)
}

/// RAD-69 / RAD-75: each instance answered from imaging document source `RepositoryUniqueId`, in the
/// first transfer syntax of the request's list that the source holds.
///
/// A malformed request (empty Study or Series Instance UID: XDSIRequestError; an empty
/// TransferSyntaxUID: XDSRepositoryError) fails as a whole, as `ids_4812` cases 5–8 expect. Per
/// instance: unknown source → `unknown_source` (XDSUnknownRepositoryId for an IDS, `ids_4812` case 1;
/// XDSIUnknownIdsUid for a responding imaging gateway, `rig_5426`); an instance not in that study and
/// series → XDSDocumentUniqueIdError (location the SOP Instance UID); no acceptable transfer syntax →
/// XDSRepositoryError (location the SOP Instance UID).
pub(crate) fn instances(
    store: &Store,
    req: &RetrieveImagingDocumentSetRequest,
    side: &Side,
    unknown_source: ErrorCode,
) -> Outcome {
    let request_errors: Vec<RegistryError> = req
        .validate(false)
        .into_iter()
        .filter(|e| e.error_code != ErrorCode::XDSMissingHomeCommunityId)
        .collect();
    if !request_errors.is_empty() {
        return (RegistryResponse::derive(request_errors, 0), Vec::new());
    }
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for (study, series, d) in req.documents() {
        let home = match side.check_home(d) {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let sop = d.document_unique_id.as_str();
        match store.instance(&d.repository_unique_id, study, series, sop) {
            InstanceLookup::UnknownSource => errors.push(
                RegistryError::new(
                    unknown_source.clone(),
                    format!("unknown imaging document source {}", d.repository_unique_id),
                )
                .at(d.repository_unique_id.clone()),
            ),
            InstanceLookup::Missing(e) => errors.push(lookup_error(&e, sop)),
            InstanceLookup::Found(i) => match i.select_encoding(&req.transfer_syntaxes) {
                Err(e) => errors.push(lookup_error(&e, sop)),
                Ok(enc) => docs.push((
                    DocumentResponseMeta {
                        home_community_id: home,
                        repository_unique_id: d.repository_unique_id.clone(),
                        document_unique_id: sop.to_owned(),
                        new_repository_unique_id: None,
                        new_document_unique_id: None,
                        mime_type: "application/dicom".into(),
                    },
                    enc.bytes.clone(),
                )),
            },
        }
    }
    (RegistryResponse::derive(errors, docs.len()), docs)
}

fn lookup_error(e: &LookupError, sop: &str) -> RegistryError {
    let code = match e {
        LookupError::UnknownInstance { .. } => ErrorCode::XDSDocumentUniqueIdError,
        LookupError::NoTransferSyntax { .. } => ErrorCode::XDSRepositoryError,
    };
    RegistryError::new(code, e.to_string()).at(sop.to_owned())
}
