//! Stored-query evaluation for the simulated registry (ITI-18) and responding gateway (ITI-38):
//! parameter rules of ITI TF-2a 3.18.4.1.2.3 and the result shapes of 3.18.4.1.2.3.2 (LeafClass,
//! ObjectRef).

use crate::ihe::ebrim::{ErrorCode, Identifiable, ObjectRef};
use crate::ihe::query::{
    AdhocQuery, AdhocQueryRequest, AdhocQueryResponse, ParamError, ReturnType, StoredQuery, param,
    parse_code,
};
use crate::ihe::transform::document_entry_to_wire;
use crate::model::{DocumentEntry, HomeCommunityId};

use super::store::{CodeFilter, FindDocuments, Store};

/// Every value of every slot named `name`, each slot value a `('a','b')` list: an OR over all of them.
fn union_list(q: &AdhocQuery, name: &str) -> Result<Vec<String>, ParamError> {
    Ok(q.and_lists(name)?.into_iter().flatten().collect())
}

fn codes(name: &str, values: Vec<String>) -> Result<Vec<CodeFilter>, ParamError> {
    values
        .iter()
        .map(|v| parse_code(name, v).map(|(code, scheme)| CodeFilter { code, scheme }))
        .collect()
}

fn and_codes(q: &AdhocQuery, name: &str) -> Result<Vec<Vec<CodeFilter>>, ParamError> {
    q.and_lists(name)?
        .into_iter()
        .map(|or| codes(name, or))
        .collect()
}

fn required_single(q: &AdhocQuery, name: &str) -> Result<String, ParamError> {
    q.single(name)?.ok_or_else(|| ParamError {
        code: ErrorCode::XDSStoredQueryMissingParam,
        message: format!("parameter {name} is required"),
    })
}

/// The FindDocuments / FindDocumentsByReferenceId parameters of `q`.
///
/// Errors: XDSStoredQueryMissingParam, XDSStoredQueryParamNumber (a single-valued parameter given twice),
/// XDSRegistryError for syntax (unquoted values, lists without brackets, codes without scheme).
pub fn find_documents_params(q: &AdhocQuery) -> Result<FindDocuments, ParamError> {
    use param::*;
    let time = |name: &str| q.single(name);
    Ok(FindDocuments {
        patient_id: required_single(q, DE_PATIENT_ID)?,
        status: union_list(q, DE_STATUS)?,
        class_code: codes(DE_CLASS_CODE, union_list(q, DE_CLASS_CODE)?)?,
        type_code: codes(DE_TYPE_CODE, union_list(q, DE_TYPE_CODE)?)?,
        format_code: codes(DE_FORMAT_CODE, union_list(q, DE_FORMAT_CODE)?)?,
        practice_setting_code: codes(
            DE_PRACTICE_SETTING_CODE,
            union_list(q, DE_PRACTICE_SETTING_CODE)?,
        )?,
        healthcare_facility_type_code: codes(
            DE_HEALTHCARE_FACILITY_TYPE_CODE,
            union_list(q, DE_HEALTHCARE_FACILITY_TYPE_CODE)?,
        )?,
        event_code: and_codes(q, DE_EVENT_CODE_LIST)?,
        confidentiality_code: and_codes(q, DE_CONFIDENTIALITY_CODE)?,
        service_start_from: time(DE_SERVICE_START_TIME_FROM)?,
        service_start_to: time(DE_SERVICE_START_TIME_TO)?,
        service_stop_from: time("$XDSDocumentEntryServiceStopTimeFrom")?,
        service_stop_to: time("$XDSDocumentEntryServiceStopTimeTo")?,
        creation_from: time(DE_CREATION_TIME_FROM)?,
        creation_to: time(DE_CREATION_TIME_TO)?,
        entry_type: union_list(q, DE_TYPE)?,
        reference_ids: union_list(q, DE_REFERENCE_ID_LIST)?,
    })
}

/// Evaluates a stored query against `store`. `home` is written on every returned object (required for
/// ITI-38, ITI TF-2b 3.38.4.1.2.1; optional for ITI-18).
///
/// Semantics: FindDocuments and FindDocumentsByReferenceId filter the registered DocumentEntries;
/// GetDocuments returns the entries named by `$XDSDocumentEntryEntryUUID` or
/// `$XDSDocumentEntryUniqueId` (not both: XDSStoredQueryParamNumber), unknown ids are left out and the
/// answer stays Success; FindSubmissionSets and GetAssociations answer Success with no objects (the
/// simulated registry stores DocumentEntries only). Parameter errors answer Failure with the error of
/// [`ParamError`]; unknown query ids XDSUnknownStoredQuery. Parameters the simulator does not evaluate
/// (e.g. `$XDSDocumentEntryAuthorPerson`) are ignored.
pub fn run_query(
    store: &Store,
    req: &AdhocQueryRequest,
    home: Option<&HomeCommunityId>,
) -> AdhocQueryResponse {
    match evaluate(store, &req.query) {
        Err(e) => AdhocQueryResponse::new(Vec::new(), vec![e.to_registry_error()]),
        Ok(entries) => {
            let objects = entries
                .into_iter()
                .map(|mut e| {
                    e.home_community_id = home.cloned();
                    match req.response_option.return_type {
                        ReturnType::LeafClass => {
                            Identifiable::ExtrinsicObject(document_entry_to_wire(&e))
                        }
                        ReturnType::ObjectRef => Identifiable::ObjectRef(ObjectRef {
                            id: e.entry_uuid,
                            home: e.home_community_id,
                            slots: Vec::new(),
                        }),
                    }
                })
                .collect();
            AdhocQueryResponse::new(objects, Vec::new())
        }
    }
}

fn evaluate(store: &Store, q: &AdhocQuery) -> Result<Vec<DocumentEntry>, ParamError> {
    match q.check_required()? {
        StoredQuery::FindDocuments | StoredQuery::FindDocumentsByReferenceId => {
            Ok(store.find_documents(&find_documents_params(q)?))
        }
        StoredQuery::GetDocuments => {
            let uuids = union_list(q, param::DE_ENTRY_UUID)?;
            let uids = union_list(q, param::DE_UNIQUE_ID)?;
            if !uuids.is_empty() && !uids.is_empty() {
                return Err(ParamError {
                    code: ErrorCode::XDSStoredQueryParamNumber,
                    message: format!(
                        "GetDocuments takes {} or {}, not both",
                        param::DE_ENTRY_UUID,
                        param::DE_UNIQUE_ID
                    ),
                });
            }
            // $homeCommunityId, when given, must at least be well-formed
            if let Some(h) = q.single(param::HOME_COMMUNITY_ID)? {
                h.parse::<HomeCommunityId>().map_err(|e| ParamError {
                    code: ErrorCode::XDSRegistryError,
                    message: format!("parameter {}: {e}", param::HOME_COMMUNITY_ID),
                })?;
            }
            Ok(store.get_documents(&uuids, &uids))
        }
        StoredQuery::FindSubmissionSets => {
            q.single(param::SS_PATIENT_ID)?;
            union_list(q, param::SS_STATUS)?;
            Ok(Vec::new())
        }
        StoredQuery::GetAssociations => {
            union_list(q, param::UUID)?;
            Ok(Vec::new())
        }
    }
}

/// Whether a stored query is addressed by object ids rather than by patient, so that an ITI-38 request
/// must name the community in `AdhocQuery/@home` (ITI TF-2b 3.38.4.1.2.1: GetDocuments,
/// GetAssociations ...).
pub fn requires_home(q: StoredQuery) -> bool {
    matches!(q, StoredQuery::GetDocuments | StoredQuery::GetAssociations)
}
