//! Fault and quirk injection for the simulators, changeable while they serve, plus a record of the
//! requests they received.
//!
//! The gateway's tests use these to show that it tolerates real peers (other prefixes, plain SOAP or
//! base64 retrieves, objects without `home`) and reports failures right (slow, down, broken or faulting
//! communities). Each simulator owns one [`SimControl`]; clones share it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::ihe::soap::{SoapHeader, Transaction};

/// One endpoint of a simulator, for scoping faults and counting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// ITI-18 Registry Stored Query (XDS registry).
    Iti18,
    /// ITI-38 Cross Gateway Query (TLB node).
    Iti38,
    /// ITI-39 Cross Gateway Retrieve (TLB node).
    Iti39,
    /// ITI-43 Retrieve Document Set (XDS repository).
    Iti43,
    /// RAD-69 Retrieve Imaging Document Set (XDS imaging document source).
    Rad69,
    /// RAD-75 Cross Gateway Retrieve Imaging Document Set (TLB node).
    Rad75,
    /// DICOMweb QIDO-RS searches (TLB node).
    Qido,
    /// DICOMweb WADO-RS retrieves (TLB node).
    Wado,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Iti18,
        Endpoint::Iti38,
        Endpoint::Iti39,
        Endpoint::Iti43,
        Endpoint::Rad69,
        Endpoint::Rad75,
        Endpoint::Qido,
        Endpoint::Wado,
    ];

    /// The SOAP transaction of this endpoint (`None` for DICOMweb).
    pub fn transaction(self) -> Option<Transaction> {
        match self {
            Endpoint::Iti18 => Some(Transaction::Iti18),
            Endpoint::Iti38 => Some(Transaction::Iti38),
            Endpoint::Iti39 => Some(Transaction::Iti39),
            Endpoint::Iti43 => Some(Transaction::Iti43),
            Endpoint::Rad69 => Some(Transaction::Rad69),
            Endpoint::Rad75 => Some(Transaction::Rad75),
            Endpoint::Qido | Endpoint::Wado => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Transaction> for Endpoint {
    fn from(t: Transaction) -> Endpoint {
        match t {
            Transaction::Iti18 => Endpoint::Iti18,
            Transaction::Iti38 => Endpoint::Iti38,
            Transaction::Iti39 => Endpoint::Iti39,
            Transaction::Iti43 => Endpoint::Iti43,
            Transaction::Rad69 => Endpoint::Rad69,
            Transaction::Rad75 => Endpoint::Rad75,
        }
    }
}

/// How a retrieve response (ITI-39 / ITI-43 / RAD-69 / RAD-75) carries its documents. IHE requires MTOM
/// with one part per document (ITI TF-2 V.3.6, RAD TF-3 4.69.4.2.2); the other two are what some real
/// peers send instead (docs/DOMAIN.md "accept all three").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetrieveEncoding {
    /// MTOM/XOP: root part with `xop:Include`s, one binary part per document (streamed).
    #[default]
    Mtom,
    /// Plain SOAP (`application/soap+xml`) with each document inline as base64.
    PlainSoapBase64,
    /// MTOM framing, but the documents inline as base64 inside the root part (no attachment parts).
    MtomBase64Root,
}

/// What a simulator does wrong on purpose. The default is a well-behaved peer.
///
/// Order of application to a request on an affected endpoint: the request is recorded, then
/// `delay_ms`, then the first of `http_500`, `garbage_body`, `soap_fault` that is set answers instead
/// of the simulator; otherwise the request is processed (a query answered by `registry_error` when
/// set) and the response shaped by `omit_home`, `retrieve_encoding` and `foreign_prefixes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Faults {
    /// Wait this long (milliseconds) before answering; for deadline and `XDSUnavailableCommunity` tests.
    pub delay_ms: u64,
    /// Answer HTTP 500 with a plain-text body (a crashed peer or a proxy error page).
    pub http_500: bool,
    /// Answer HTTP 200 with a body that is not XML (nor DICOM JSON / multipart for DICOMweb), under the
    /// content type the endpoint normally uses.
    pub garbage_body: bool,
    /// Answer with a SOAP 1.2 `Receiver` fault, HTTP 500 (SOAP endpoints; DICOMweb answers HTTP 500).
    pub soap_fault: bool,
    /// Answer stored queries (ITI-18, ITI-38) with a well-formed Failure carrying one RegistryError of
    /// this code instead of the result (a community whose registry fails, NIST 15814 `XDSRegistryError`).
    pub registry_error: Option<crate::ihe::ErrorCode>,
    /// Leave `home` off returned ExtrinsicObjects / ObjectRefs / RegistryPackages and HomeCommunityId off
    /// DocumentResponses (a peer breaking ITI TF-2b 3.38.4.1.2.1 / 3.39.4.2.2).
    pub omit_home: bool,
    /// How retrieve responses carry documents.
    pub retrieve_encoding: RetrieveEncoding,
    /// Write responses with other namespace prefixes (`urn:`, `urn1:`, ... as Epic does, `S:` for SOAP)
    /// and the ebRIM namespace as default namespace; the XML infoset is unchanged.
    pub foreign_prefixes: bool,
    /// Endpoints these faults apply to; empty means all.
    pub only: Vec<Endpoint>,
}

impl Faults {
    /// Whether the faults apply to `e`.
    pub fn applies_to(&self, e: Endpoint) -> bool {
        self.only.is_empty() || self.only.contains(&e)
    }
}

/// One request as a simulator received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// `Content-Type`, when given.
    pub content_type: Option<String>,
    /// The body as received (SOAP or MTOM; empty for DICOMweb GETs).
    pub body: Bytes,
    /// The SOAP header when the envelope could be read (Action, MessageID, WS-Security blocks ...).
    pub soap_header: Option<SoapHeader>,
}

/// How many requests [`SimControl`] keeps (the oldest are dropped first); counters are not bounded.
pub const MAX_RECORDED: usize = 256;

#[derive(Debug, Default)]
struct Log {
    counts: [u64; Endpoint::ALL.len()],
    recent: VecDeque<RecordedRequest>,
}

/// The shared, run-time changeable fault settings and request log of one simulator. Cheap to clone;
/// clones share state.
#[derive(Debug, Clone, Default)]
pub struct SimControl {
    faults: Arc<RwLock<Faults>>,
    log: Arc<Mutex<Log>>,
}

impl SimControl {
    /// Well-behaved, empty log.
    pub fn new() -> SimControl {
        SimControl::default()
    }

    /// The current settings.
    pub fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the settings; applies to requests that arrive from now on.
    pub fn set_faults(&self, f: Faults) {
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = f;
    }

    /// Changes the settings in place.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// Back to well-behaved.
    pub fn reset_faults(&self) {
        self.set_faults(Faults::default());
    }

    fn with_log<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        f(&mut self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn record(&self, r: RecordedRequest) {
        self.with_log(|l| {
            l.counts[r.endpoint.index()] += 1;
            if l.recent.len() == MAX_RECORDED {
                l.recent.pop_front();
            }
            l.recent.push_back(r);
        });
    }

    pub(crate) fn set_last_soap_header(&self, h: &SoapHeader) {
        self.with_log(|l| {
            if let Some(last) = l.recent.back_mut() {
                last.soap_header = Some(h.clone());
            }
        });
    }

    /// Requests received on `e` since start (or [`SimControl::clear_log`]), whatever their outcome.
    pub fn requests(&self, e: Endpoint) -> u64 {
        self.with_log(|l| l.counts[e.index()])
    }

    /// Requests received on all endpoints.
    pub fn total_requests(&self) -> u64 {
        self.with_log(|l| l.counts.iter().sum())
    }

    /// The most recent requests (at most [`MAX_RECORDED`]), oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.with_log(|l| l.recent.iter().cloned().collect())
    }

    /// Clears counters and recorded requests.
    pub fn clear_log(&self) {
        self.with_log(|l| *l = Log::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_is_shared_and_scoped() {
        let c = SimControl::new();
        let c2 = c.clone();
        c2.update_faults(|f| {
            f.delay_ms = 5;
            f.only = vec![Endpoint::Rad75];
        });
        assert_eq!(c.faults().delay_ms, 5);
        assert!(c.faults().applies_to(Endpoint::Rad75));
        assert!(!c.faults().applies_to(Endpoint::Iti38));
        c.reset_faults();
        assert!(c2.faults().applies_to(Endpoint::Iti38));
        for i in 0..MAX_RECORDED + 3 {
            c.record(RecordedRequest {
                endpoint: if i % 2 == 0 {
                    Endpoint::Iti38
                } else {
                    Endpoint::Qido
                },
                method: "POST".into(),
                uri: format!("/{i}"),
                content_type: None,
                body: Bytes::new(),
                soap_header: None,
            });
        }
        assert_eq!(c2.total_requests(), MAX_RECORDED as u64 + 3);
        assert_eq!(c2.requests(Endpoint::Iti38), (MAX_RECORDED as u64 + 4) / 2);
        let rec = c2.recorded();
        assert_eq!(rec.len(), MAX_RECORDED);
        assert_eq!(rec[0].uri, "/3");
        c.clear_log();
        assert_eq!(c2.total_requests(), 0);
    }
}
