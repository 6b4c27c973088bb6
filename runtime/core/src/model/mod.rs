//! Domain types: validated identifiers, DocumentEntry with imaging metadata, studies, organisations and
//! the identity of whoever asks. Knows nothing of XML, HTTP or Kubernetes.

mod document;
mod ids;

pub use document::*;
pub use ids::*;

use serde::{Deserialize, Serialize};

/// Who asks for data: the professional and the organisation on whose behalf a request is made.
///
/// At a responding gateway this comes from the request's XUA (ITI-40) SAML assertion; at an initiating
/// gateway from the local request (its assertion, or the trusted front end's headers for the JSON API).
/// Attribute names in the comments are the XUA / Mitz attribute ids (docs/DOMAIN.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// `urn:ihe:iti:xua:2017:subject:provider-identifier`: UZI number of the professional.
    pub uzi: UziNumber,
    /// `urn:oasis:names:tc:xacml:2.0:subject:role`: UZI role code.
    pub role: RoleCode,
    /// `urn:nl:otv:names:tc:1.0:subject:provider-institution`: URA of the requesting organisation.
    pub ura: Ura,
    /// `urn:nl:otv:names:tc:1.0:subject:consulting-healthcare-facility-type-code`.
    pub facility_type: FacilityType,
    /// `urn:oasis:names:tc:xspa:1.0:subject:purposeofuse`.
    pub purpose_of_use: PurposeOfUse,
    /// Display name of the professional, when known (audit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
