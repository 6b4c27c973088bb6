//! Localisation at the initiating side: the Mitz open question ("open autorisatievraag"), which names the
//! communities that hold data for a patient and that the requester may see.
//!
//! The question is an IHE XCPD Patient Location Query (ITI-56, IHE ITI TF-2b 3.56): SOAP 1.2 with
//! `wsa:Action` `urn:ihe:iti:2009:PatientLocationQuery`, body `PatientLocationQueryRequest`
//! (namespace `urn:ihe:iti:xcpd:2009`) with one `RequestedPatientId` (HL7 v3 II: root
//! `2.16.840.1.113883.2.4.6.3`, extension the BSN, `assigningAuthorityName="NLMINBIZA"` as the Mitz manual
//! requires per the public client bastion365/nl-generic-functions `mitz-connector`), and the requester's
//! XUA assertion in the WS-Security header (audience [`xua::MITZ_AUDIENCE`]).
//!
//! The answer is a `PatientLocationQueryResponse` with zero or more `PatientLocationResponse` elements.
//! ITI-56 defines `HomeCommunityId`, `RequestedPatientId` and `CorrespondingPatientId` in each; Mitz adds
//! `SourceId` and `author-institution` (II with the holder's URA) in the same namespace, as the public
//! Mitz clients read them (bastion365 `mitz-connector`). There is no sample of the open question in
//! `testdata/`: element names follow ITI-56 and those clients exactly.
//!
//! Failure (timeout, TLS, HTTP, SOAP fault, unparseable answer) is an error ([`MitzError`]); the caller
//! then asks no one (no broadcast).

use std::sync::Arc;

use jiff::Timestamp;

use crate::ihe::soap::SoapError;
use crate::ihe::xua::{self, AssertionSigner, XuaAssertion};
use crate::mitz::{MitzClient, MitzError};
use crate::model::{Bsn, Requester};
use crate::xml::Limits;

// The codec of the question and its answer lives in the wire layer; its names stay reachable here.
pub use duo_wire::mitz::location::{
    ACTION, BSN_AUTHORITY_NAME, InstanceId, PatientLocation, RESPONSE_ACTION, read_location_query,
    write_location_answer, write_location_query,
};

/// Reads Mitz's answer to the open question ([`duo_wire::mitz::location::read_location_answer`]) with the
/// errors of a Mitz call: a SOAP fault is [`MitzError::Fault`], anything else unreadable
/// [`MitzError::Unparseable`].
pub fn read_location_answer(
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<PatientLocation>, MitzError> {
    match duo_wire::mitz::location::read_location_answer(body, limits) {
        Ok(v) => Ok(v),
        Err(SoapError::Fault(f)) => Err(MitzError::Fault(f.reason)),
        Err(e) => Err(MitzError::Unparseable(e.to_string())),
    }
}
/// Asks Mitz the open question on behalf of a requester.
#[derive(Clone)]
pub struct LocalizationClient {
    mitz: Arc<MitzClient>,
    issuer: String,
    signer: Arc<dyn AssertionSigner>,
}

impl std::fmt::Debug for LocalizationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalizationClient")
            .field("mitz", &self.mitz)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl LocalizationClient {
    /// `issuer` is the `saml2:Issuer` of the assertions this gateway builds (its organisation or
    /// community, e.g. `urn:oid:<homeCommunityId OID>`); `signer` signs them ([`xua::UnsignedAssertions`]
    /// until signing exists).
    pub fn new(
        mitz: Arc<MitzClient>,
        issuer: impl Into<String>,
        signer: Arc<dyn AssertionSigner>,
    ) -> LocalizationClient {
        LocalizationClient {
            mitz,
            issuer: issuer.into(),
            signer,
        }
    }

    /// Which communities hold data of `patient` that `requester` may see. An empty list means none (or
    /// nothing permitted). Errors: every [`MitzError`]; the caller then asks no one.
    pub async fn locate(
        &self,
        patient: &Bsn,
        requester: &Requester,
    ) -> Result<Vec<PatientLocation>, MitzError> {
        let Some(url) = self.mitz.open_question_url() else {
            return Err(MitzError::NotConfigured(
                "mitz.openQuestionUrl is not set".into(),
            ));
        };
        let assertion = XuaAssertion::new(
            requester.clone(),
            self.issuer.clone(),
            xua::MITZ_AUDIENCE,
            Timestamp::now(),
        );
        let header = assertion
            .security_header(self.signer.as_ref())
            .map_err(|e| MitzError::NotConfigured(e.to_string()))?;
        let envelope = write_location_query(patient, header, url);
        let body = self.mitz.post(url, envelope).await?;
        read_location_answer(&body, self.mitz.limits())
    }
}

#[cfg(test)]
mod tests;
