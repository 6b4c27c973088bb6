//! The Mitz open question ("open autorisatievraag") on the wire: an IHE XCPD Patient Location Query
//! (ITI-56, IHE ITI TF-2b 3.56) and its answer, read and written. The client that asks it is the gateway's
//! `localization` module; the Mitz simulator answers with [`write_location_answer`].
//!
//! The question: SOAP 1.2 with `wsa:Action` `urn:ihe:iti:2009:PatientLocationQuery`, body
//! `PatientLocationQueryRequest` (namespace `urn:ihe:iti:xcpd:2009`) with one `RequestedPatientId` (HL7 v3
//! II: root `2.16.840.1.113883.2.4.6.3`, extension the BSN, `assigningAuthorityName="NLMINBIZA"` as the Mitz
//! manual requires per the public client bastion365/nl-generic-functions `mitz-connector`), and the
//! requester's XUA assertion in the WS-Security header.
//!
//! The answer is a `PatientLocationQueryResponse` with zero or more `PatientLocationResponse` elements.
//! ITI-56 defines `HomeCommunityId`, `RequestedPatientId` and `CorrespondingPatientId` in each; Mitz adds
//! `SourceId` and `author-institution` (II with the holder's URA) in the same namespace, as the public
//! Mitz clients read them (bastion365 `mitz-connector`). There is no sample of the open question in
//! `testdata/`: element names follow ITI-56 and those clients exactly.

use crate::ihe::soap::{self, SoapError, SoapHeader};
use crate::model::{Bsn, HomeCommunityId, Ura};
use crate::xml::{Elem, Limits, Reader, Writer, XmlError, ns};

/// `wsa:Action` of the open question (ITI-56 request).
pub const ACTION: &str = "urn:ihe:iti:2009:PatientLocationQuery";
/// `wsa:Action` of its answer (ITI-56 response).
pub const RESPONSE_ACTION: &str = "urn:ihe:iti:2009:PatientLocationQueryResponse";
/// `assigningAuthorityName` of the requested BSN (Mitz manual, via the public Mitz clients).
pub const BSN_AUTHORITY_NAME: &str = "NLMINBIZA";

/// An HL7 v3 instance identifier (II) as it appears in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceId {
    /// `@root` (OID).
    pub root: String,
    /// `@extension`.
    pub extension: String,
    /// `@assigningAuthorityName`, when present.
    pub assigning_authority_name: Option<String>,
}

/// One community that holds data for the patient (one `PatientLocationResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientLocation {
    /// `HomeCommunityId`: the community to query.
    pub home_community_id: HomeCommunityId,
    /// `CorrespondingPatientId`: the patient's id in that community, when given.
    pub corresponding_patient_id: Option<InstanceId>,
    /// `SourceId`: the source system within the community (`urn:oid:...`), when given.
    pub source_id: Option<String>,
    /// `author-institution` with root `2.16.528.1.1007.3.3`: the data holder's URA, when given.
    pub holder_ura: Option<Ura>,
}

/// Writes the open question envelope for `patient` with `security_header` (a `wsse:Security` block from
/// [`XuaAssertion::security_header`]) among the SOAP headers; `to` is the endpoint.
pub fn write_location_query(patient: &Bsn, security_header: String, to: &str) -> String {
    let mut h = SoapHeader::request(ACTION, Some(to));
    h.other.push(security_header);
    soap::write_envelope(&h, |w| {
        w.start("xcpd:PatientLocationQueryRequest")
            .attr("xmlns:xcpd", ns::XCPD);
        w.start("xcpd:RequestedPatientId")
            .attr("root", Bsn::OID)
            .attr("extension", patient.as_str())
            .attr("assigningAuthorityName", BSN_AUTHORITY_NAME)
            .end();
        w.end();
    })
}

/// Reads the requested patient id of an open question (the simulator's side): (header, root, extension).
/// Errors: not SOAP 1.2, malformed, not a `PatientLocationQueryRequest` with a `RequestedPatientId`.
pub fn read_location_query(
    body: &[u8],
    limits: &Limits,
) -> Result<(SoapHeader, InstanceId), SoapError> {
    soap::read_envelope(body, limits, |r, el| {
        if !el.is(ns::XCPD, "PatientLocationQueryRequest") {
            return Err(XmlError::Unexpected {
                expected: "PatientLocationQueryRequest".into(),
                found: el.qualified(),
            });
        }
        let mut id = None;
        while let Some(c) = r.child(&el)? {
            if c.is(ns::XCPD, "RequestedPatientId") {
                id = Some(instance_id(&c));
            }
        }
        id.ok_or_else(|| XmlError::Missing("PatientLocationQueryRequest/RequestedPatientId".into()))
    })
}

fn instance_id(e: &Elem<'_>) -> InstanceId {
    InstanceId {
        root: e.attr("root").unwrap_or("").trim().to_owned(),
        extension: e.attr("extension").unwrap_or("").trim().to_owned(),
        assigning_authority_name: e
            .attr("assigningAuthorityName")
            .map(|s| s.trim().to_owned()),
    }
}

/// Writes an answer (the simulator's side): Action [`RESPONSE_ACTION`], RelatesTo the question, one
/// `PatientLocationResponse` per location with `HomeCommunityId`, `RequestedPatientId`,
/// `CorrespondingPatientId` (ITI-56 order), then `SourceId` and `author-institution` (Mitz).
pub fn write_location_answer(
    request: &SoapHeader,
    requested: &InstanceId,
    locations: &[PatientLocation],
) -> String {
    let h = SoapHeader::response(RESPONSE_ACTION, request);
    let ii = |w: &mut Writer, name: &str, id: &InstanceId| {
        w.start(name)
            .attr("root", &id.root)
            .attr("extension", &id.extension)
            .attr_opt(
                "assigningAuthorityName",
                id.assigning_authority_name.as_deref(),
            )
            .end();
    };
    soap::write_envelope(&h, |w| {
        w.start("xcpd:PatientLocationQueryResponse")
            .attr("xmlns:xcpd", ns::XCPD);
        for l in locations {
            w.start("xcpd:PatientLocationResponse");
            w.leaf("xcpd:HomeCommunityId", &l.home_community_id.to_string());
            ii(w, "xcpd:RequestedPatientId", requested);
            ii(
                w,
                "xcpd:CorrespondingPatientId",
                l.corresponding_patient_id.as_ref().unwrap_or(requested),
            );
            if let Some(s) = &l.source_id {
                w.leaf("xcpd:SourceId", s);
            }
            if let Some(u) = &l.holder_ura {
                w.start("xcpd:author-institution")
                    .attr("root", Ura::OID)
                    .attr("extension", u.as_str())
                    .end();
            }
            w.end();
        }
        w.end();
    })
}

/// Reads an answer into its locations, in document order. An entry whose `HomeCommunityId` is missing or
/// not an OID cannot be queried and is left out (logged); an `author-institution` that is not a URA is
/// ignored. Errors: [`SoapError::Fault`] for a SOAP fault; any other [`SoapError`] for malformed XML or
/// a body that is not a `PatientLocationQueryResponse`.
pub fn read_location_answer(
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<PatientLocation>, SoapError> {
    soap::read_envelope(body, limits, |r, el| {
        if !el.is(ns::XCPD, "PatientLocationQueryResponse") {
            return Err(XmlError::Unexpected {
                expected: "PatientLocationQueryResponse".into(),
                found: el.qualified(),
            });
        }
        let mut out = Vec::new();
        while let Some(entry) = r.child(&el)? {
            if entry.is(ns::XCPD, "PatientLocationResponse")
                && let Some(l) = read_entry(r, &entry)?
            {
                out.push(l);
            }
        }
        Ok(out)
    })
    .map(|(_, v)| v)
}

fn read_entry<'i>(
    r: &mut Reader<'i>,
    entry: &Elem<'i>,
) -> Result<Option<PatientLocation>, XmlError> {
    let mut hcid = None;
    let mut corresponding = None;
    let mut source = None;
    let mut holder = None;
    while let Some(c) = r.child(entry)? {
        if c.ns.uri() != ns::XCPD {
            continue;
        }
        match c.local {
            "HomeCommunityId" => hcid = Some(r.text(&c)?.trim().to_owned()),
            "CorrespondingPatientId" => corresponding = Some(instance_id(&c)),
            "SourceId" => source = Some(r.text(&c)?.trim().to_owned()).filter(|s| !s.is_empty()),
            "author-institution" => {
                let id = instance_id(&c);
                if id.root == Ura::OID {
                    holder = id.extension.parse::<Ura>().ok();
                }
            }
            _ => {}
        }
    }
    let Some(text) = hcid else {
        tracing::warn!("Mitz location without HomeCommunityId ignored");
        return Ok(None);
    };
    match text.parse::<HomeCommunityId>() {
        Ok(home_community_id) => Ok(Some(PatientLocation {
            home_community_id,
            corresponding_patient_id: corresponding,
            source_id: source,
            holder_ura: holder,
        })),
        Err(e) => {
            tracing::warn!(error = %e, "Mitz location with an invalid HomeCommunityId ignored");
            Ok(None)
        }
    }
}
