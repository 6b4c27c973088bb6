//! An [`AuditRecord`] as an IHE ATNA audit message (ITI-20): the DICOM PS3.15 A.5.1 `AuditMessage` XML
//! (the successor of the RFC 3881 schema), coded values written as `csd-code` / `codeSystemName` /
//! `originalText`.
//!
//! Event identification per transaction (IHE ITI TF-2 audit sections of each transaction; DICOM PS3.16
//! CID 400 / 403):
//!
//! | Event | EventID | EventActionCode | EventTypeCode |
//! |---|---|---|---|
//! | query (ITI-38, ITI-18, other) | 110112 Query | E | the transaction (`IHE Transactions`) |
//! | retrieve, responding side | 110106 Export | R | the transaction |
//! | retrieve, initiating side | 110107 Import | C | the transaction |
//! | localization (ITI-56, Mitz open question) | 110112 Query | E | `ITI-56` Patient Location Query |
//! | consent decision | 110112 Query | E | `MITZ-CLOSED-QUESTION` (code system `DUO`) and the transaction it was for |
//!
//! No IHE event is defined for a consent decision and the NTA's ATNA specifics are not public (docs/DOMAIN.md):
//! the Mitz closed question is recorded as the query it is, with a project-defined event type code.
//!
//! `EventOutcomeIndicator`: 0 success, 4 partial success or denied (nothing disclosed for lack of
//! consent), 8 failure; `EventOutcomeDescription` holds the outcome detail (for a consent decision its
//! decision, source and reason). Participants: the source and destination gateway (roles 110153 / 110152,
//! this gateway named by its [`AuditSource`]), the human requestor (UZI number, role code RoleCodeNL). Objects: the
//! patient (BSN as CX with the BSN OID, type 1 role 1 id type 2), studies (type 2 role 3, DCM 110180 Study
//! Instance UID) and documents (type 2 role 3, RFC-3881 9 Report Number, with `ihe:homeCommunityID` of the
//! data holder). The query parameters (`ParticipantObjectQuery`) are not part of [`AuditRecord`] and not
//! written.

use base64::Engine;

use super::{AuditEvent, AuditRecord, AuditSource, AuditTransaction, Outcome, Side};
use crate::ihe::soap::Transaction;
use crate::ihe::xua::format_instant;
use crate::model::{PurposeOfUse, RoleCode};
use crate::xml::Writer;

fn transaction_title(t: &AuditTransaction) -> &'static str {
    match t {
        AuditTransaction::Ihe(Transaction::Iti18) => "Registry Stored Query",
        AuditTransaction::Ihe(Transaction::Iti38) => "Cross Gateway Query",
        AuditTransaction::Ihe(Transaction::Iti39) => "Cross Gateway Retrieve",
        AuditTransaction::Ihe(Transaction::Iti43) => "Retrieve Document Set",
        AuditTransaction::Ihe(Transaction::Rad69) => "Retrieve Imaging Document Set",
        AuditTransaction::Ihe(Transaction::Rad75) => "Cross Gateway Retrieve Imaging Document Set",
        AuditTransaction::MitzOpenQuestion => "Patient Location Query",
        AuditTransaction::MitzClosedQuestion => "Mitz closed question (consent)",
        AuditTransaction::Other(_) => "DUO gateway API",
    }
}

/// (code, code system name, display) of the transaction's EventTypeCode.
fn transaction_code(t: &AuditTransaction) -> (String, &'static str, &'static str) {
    let system = match t {
        AuditTransaction::Ihe(_) | AuditTransaction::MitzOpenQuestion => "IHE Transactions",
        AuditTransaction::MitzClosedQuestion | AuditTransaction::Other(_) => "DUO",
    };
    (t.name().to_owned(), system, transaction_title(t))
}

fn coded(w: &mut Writer, name: &str, code: &str, system: &str, display: &str) {
    w.start(name)
        .attr("csd-code", code)
        .attr("codeSystemName", system)
        .attr("originalText", display)
        .end();
}

/// The DICOM `AuditMessage` for `r` (no XML declaration; one line, so it fits one syslog message).
pub fn audit_message(r: &AuditRecord, source: &AuditSource) -> String {
    let mut w = Writer::with_capacity(2048);
    w.start("AuditMessage");

    let (event_id, event_name, action) = match (r.event, r.side) {
        (AuditEvent::Retrieve, Side::Responding) => ("110106", "Export", "R"),
        (AuditEvent::Retrieve, Side::Initiating) => ("110107", "Import", "C"),
        // DCM 110110 Patient Record: a registration creates Mitz's record that this hospital holds
        // data of the patient; a notification updates what the gateway knows of the patient's consent
        (AuditEvent::Registration, _) => ("110110", "Patient Record", "C"),
        (AuditEvent::ConsentNotification, _) => ("110110", "Patient Record", "U"),
        _ => ("110112", "Query", "E"),
    };
    let outcome = match r.outcome {
        Outcome::Success => "0",
        Outcome::PartialSuccess | Outcome::Denied => "4",
        Outcome::Failure => "8",
    };
    w.start("EventIdentification")
        .attr("EventActionCode", action)
        .attr("EventDateTime", &format_instant(r.time))
        .attr("EventOutcomeIndicator", outcome);
    coded(&mut w, "EventID", event_id, "DCM", event_name);
    if r.event == AuditEvent::ConsentDecision {
        let (c, s, d) = transaction_code(&AuditTransaction::MitzClosedQuestion);
        coded(&mut w, "EventTypeCode", &c, s, d);
        if r.transaction != AuditTransaction::MitzClosedQuestion {
            let (c, s, d) = transaction_code(&r.transaction);
            coded(&mut w, "EventTypeCode", &c, s, d);
        }
    } else {
        let (c, s, d) = transaction_code(&r.transaction);
        coded(&mut w, "EventTypeCode", &c, s, d);
    }
    let description = match (&r.outcome_detail, &r.consent) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(c)) => Some(format!("{} from {}", c.decision, c.source)),
        _ => None,
    };
    if let Some(d) = description {
        w.leaf("EventOutcomeDescription", &d);
    }
    // DICOM PS3.15 A.5.1: EventIdentification/PurposeOfUse (after EventOutcomeDescription)
    if let Some(p) = r.requester.as_ref().and_then(|q| q.purpose_of_use.as_ref()) {
        coded(
            &mut w,
            "PurposeOfUse",
            p.as_str(),
            PurposeOfUse::CODE_SYSTEM,
            p.as_str(),
        );
    }
    w.end();

    // source and destination: this gateway and its peer
    let local = source.source_id.as_str();
    let remote = r
        .remote_community
        .as_ref()
        .map(|h| h.to_string())
        .or_else(|| r.remote_address.clone())
        .unwrap_or_else(|| "unknown".to_owned());
    let (src, src_addr, dst, dst_addr) = match r.side {
        Side::Initiating => (local.to_owned(), None, remote, r.remote_address.clone()),
        Side::Responding => (remote, r.remote_address.clone(), local.to_owned(), None),
    };
    participant(
        &mut w,
        &src,
        true,
        src_addr.as_deref(),
        ("110153", "Source Role ID"),
    );
    if let Some(req) = &r.requester {
        w.start("ActiveParticipant")
            .attr("UserID", req.uzi.as_str())
            .attr("AlternativeUserID", &format!("URA {}", req.ura))
            .attr_opt("UserName", req.name.as_deref())
            .attr("UserIsRequestor", "true");
        coded(
            &mut w,
            "RoleIDCode",
            req.role.as_str(),
            RoleCode::CODE_SYSTEM,
            "RoleCodeNL",
        );
        w.end();
    }
    participant(
        &mut w,
        &dst,
        false,
        dst_addr.as_deref(),
        ("110152", "Destination Role ID"),
    );

    w.start("AuditSourceIdentification")
        .attr("AuditEnterpriseSiteID", &source.enterprise_site_id)
        .attr("AuditSourceID", &source.source_id);
    coded(
        &mut w,
        "AuditSourceTypeCode",
        "4",
        "DCM",
        "Application Server",
    );
    w.end();

    if let Some(p) = &r.patient {
        w.start("ParticipantObjectIdentification")
            .attr("ParticipantObjectID", &p.to_cx())
            .attr("ParticipantObjectTypeCode", "1")
            .attr("ParticipantObjectTypeCodeRole", "1");
        coded(
            &mut w,
            "ParticipantObjectIDTypeCode",
            "2",
            "RFC-3881",
            "Patient Number",
        );
        w.end();
    }
    for s in &r.study_ids {
        w.start("ParticipantObjectIdentification")
            .attr("ParticipantObjectID", s)
            .attr("ParticipantObjectTypeCode", "2")
            .attr("ParticipantObjectTypeCodeRole", "3");
        coded(
            &mut w,
            "ParticipantObjectIDTypeCode",
            "110180",
            "DCM",
            "Study Instance UID",
        );
        w.end();
    }
    let hcid = r
        .data_holder
        .as_ref()
        .and_then(|h| h.home_community_id.as_ref())
        .map(|h| h.to_string());
    for d in &r.document_ids {
        w.start("ParticipantObjectIdentification")
            .attr("ParticipantObjectID", d)
            .attr("ParticipantObjectTypeCode", "2")
            .attr("ParticipantObjectTypeCodeRole", "3");
        coded(
            &mut w,
            "ParticipantObjectIDTypeCode",
            "9",
            "RFC-3881",
            "Report Number",
        );
        if let Some(h) = &hcid {
            w.start("ParticipantObjectDetail")
                .attr("type", "ihe:homeCommunityID")
                .attr(
                    "value",
                    &base64::engine::general_purpose::STANDARD.encode(h.as_bytes()),
                )
                .end();
        }
        w.end();
    }
    w.end();
    w.finish()
}

fn participant(
    w: &mut Writer,
    user: &str,
    requestor: bool,
    address: Option<&str>,
    role: (&str, &str),
) {
    w.start("ActiveParticipant")
        .attr("UserID", user)
        .attr("UserIsRequestor", if requestor { "true" } else { "false" });
    if let Some(a) = address {
        // 2 = IP address, 1 = machine name (DICOM PS3.15 A.5.1)
        let kind = if a.parse::<std::net::IpAddr>().is_ok() {
            "2"
        } else {
            "1"
        };
        w.attr("NetworkAccessPointID", a)
            .attr("NetworkAccessPointTypeCode", kind);
    }
    coded(w, "RoleIDCode", role.0, "DCM", role.1);
    w.end();
}
