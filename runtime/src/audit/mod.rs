//! The audit trail (NEN 7513, IHE ATNA): one [`AuditRecord`] per query, retrieve, consent decision and
//! localisation, on both sides.
//!
//! [`AuditLog::record`] writes the record as one JSON line to the configured sink (`audit.sink`: `stdout`
//! or a file path) and returns only once the line is written (handed to the operating system), so a caller
//! can record before its response leaves. A file sink follows log rotation: when the path no longer names
//! the open file (renamed or deleted), the next record reopens (creates) it. When `audit.syslog` is configured the same event also goes out
//! as an IHE ATNA audit message (ITI-20: DICOM PS3.15 A.5 `AuditMessage` XML, see [`atna`]) over syslog
//! RFC 5424 with TLS and RFC 5425 octet-counting framing ([`syslog`]), sent in the background with
//! reconnects; [`AuditLog::flush`] waits until everything queued so far has been sent.
//!
//! JSON record fields (camelCase; absent fields are left out):
//!
//! | Field | Meaning |
//! |---|---|
//! | `time` | when the event happened, RFC 3339 UTC |
//! | `event` | `query`, `retrieve`, `consentDecision` or `localization` |
//! | `transaction` | `ITI-38`, `ITI-39`, `RAD-75`, `ITI-18`, `ITI-43`, `RAD-69`, `ITI-56` (Mitz open question), `MITZ-CLOSED-QUESTION`, or another name (JSON API) |
//! | `side` | `initiating` or `responding` |
//! | `requester` | `{ura, uzi, role, facilityType?, purposeOfUse?, name?}` of the professional and organisation, with the purpose of use the request stated (or the configured default) |
//! | `patient` | the BSN |
//! | `dataHolder` | `{ura?, homeCommunityId?}` whose data was asked for |
//! | `remoteCommunity`, `remoteAddress` | the peer community and its network address, when known |
//! | `studyIds`, `documentIds` | Study Instance UIDs and document unique ids involved; on a responding query or retrieve record exactly what left (a refused study or document is not listed) |
//! | `objectIds` | ids (entryUUIDs) of every registry object a responding ITI-38 answer disclosed |
//! | `consent` | `{category, decision, source, reason?, disclosed}`, `source` = `mitz`, `cache`, `permitAll`, `failure`; `disclosed` says whether the decision *allows* disclosure (in a `consentDecision` record, outcome `success` likewise): what actually left is only in the answer's own query/retrieve record |
//! | `outcome` | `success`, `partialSuccess`, `denied` (nothing disclosed for lack of consent) or `failure` |
//! | `outcomeDetail` | why, in one line |
//! | `messageId` | the request's WS-Addressing MessageID, for correlation |

pub mod atna;
pub mod syslog;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::AsyncWriteExt;

use crate::config::AuditConfig;
use crate::consent::{ConsentOutcome, ConsentRecord};
use crate::ihe::soap::Transaction;
use crate::model::{
    Bsn, FacilityType, HomeCommunityId, PurposeOfUse, Requester, RoleCode, Ura, UziNumber,
};
use crate::tls::TlsMaterial;

pub use syslog::{SyslogSender, SyslogStats};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuditEvent {
    /// A query (ITI-38, ITI-18, timeline).
    Query,
    /// A retrieve (ITI-39, RAD-75, ITI-43, RAD-69).
    Retrieve,
    /// A consent decision (Mitz closed question, cache, permitAll or failure).
    ConsentDecision,
    /// A localisation (Mitz open question).
    Localization,
    /// A registration with Mitz as data holder (a FHIR Subscription for the patient).
    Registration,
    /// A consent notification from Mitz (the patient's cached decisions were dropped).
    ConsentNotification,
}

/// Which side of the exchange this gateway was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    /// Initiating gateway: this gateway asked.
    Initiating,
    /// Responding gateway: this gateway answered.
    Responding,
}

/// The transaction an event belongs to. Serialised as its name (`ITI-38`, `ITI-56`,
/// `MITZ-CLOSED-QUESTION`, or any other text for the JSON API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTransaction {
    /// One of the IHE SOAP transactions of [`Transaction`].
    Ihe(Transaction),
    /// The Mitz open question: an XCPD Patient Location Query, ITI-56.
    MitzOpenQuestion,
    /// The Mitz closed question (XACML authorization decision query; no IHE transaction number).
    MitzClosedQuestion,
    /// Anything else, e.g. `JSON-TIMELINE` for the JSON API.
    Other(String),
}

impl AuditTransaction {
    /// The name written in records.
    pub fn name(&self) -> &str {
        match self {
            AuditTransaction::Ihe(t) => t.name(),
            AuditTransaction::MitzOpenQuestion => "ITI-56",
            AuditTransaction::MitzClosedQuestion => "MITZ-CLOSED-QUESTION",
            AuditTransaction::Other(s) => s,
        }
    }
}

impl From<Transaction> for AuditTransaction {
    fn from(t: Transaction) -> Self {
        AuditTransaction::Ihe(t)
    }
}

impl fmt::Display for AuditTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AuditTransaction {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(t) = Transaction::ALL.into_iter().find(|t| t.name() == s) {
            return Ok(AuditTransaction::Ihe(t));
        }
        Ok(match s {
            "ITI-56" => AuditTransaction::MitzOpenQuestion,
            "MITZ-CLOSED-QUESTION" => AuditTransaction::MitzClosedQuestion,
            other => AuditTransaction::Other(other.to_owned()),
        })
    }
}

impl Serialize for AuditTransaction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for AuditTransaction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or(AuditTransaction::Other(s)))
    }
}

/// How the event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Done as asked.
    Success,
    /// Some communities answered, some did not.
    PartialSuccess,
    /// Nothing disclosed for lack of consent (Deny, NotApplicable, Indeterminate, a Mitz failure).
    Denied,
    /// The event failed (error, timeout, bad request).
    Failure,
}

/// The requester as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequesterRecord {
    /// URA of the requesting organisation.
    pub ura: Ura,
    /// UZI number of the professional.
    pub uzi: UziNumber,
    /// UZI role code.
    pub role: RoleCode,
    /// Facility type of the organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility_type: Option<FacilityType>,
    /// Purpose of use of the request (`urn:oasis:names:tc:xspa:1.0:subject:purposeofuse`, e.g. `TREAT`),
    /// as stated in the assertion or the configured default; part of the consent question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<PurposeOfUse>,
    /// Name of the professional, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl From<&Requester> for RequesterRecord {
    fn from(r: &Requester) -> Self {
        RequesterRecord {
            ura: r.ura.clone(),
            uzi: r.uzi.clone(),
            role: r.role.clone(),
            facility_type: Some(r.facility_type.clone()),
            purpose_of_use: Some(r.purpose_of_use.clone()),
            name: r.name.clone(),
        }
    }
}

/// The organisation whose data was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HolderRecord {
    /// Its URA, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ura: Option<Ura>,
    /// Its community, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_community_id: Option<HomeCommunityId>,
}

/// One audit record (see the module documentation for the fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// When the event happened.
    pub time: Timestamp,
    /// What happened.
    pub event: AuditEvent,
    /// Within which transaction.
    pub transaction: AuditTransaction,
    /// Which side this gateway was on.
    pub side: Side,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<RequesterRecord>,
    /// About whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Bsn>,
    /// Whose data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_holder: Option<HolderRecord>,
    /// The peer community.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_community: Option<HomeCommunityId>,
    /// The peer's network address (IP or host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// Study Instance UIDs involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub study_ids: Vec<String>,
    /// Document unique ids involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub document_ids: Vec<String>,
    /// Ids (entryUUIDs) of the registry objects disclosed (responding ITI-38: DocumentEntries,
    /// SubmissionSets, Folders, Associations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_ids: Vec<String>,
    /// The consent decision that applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentRecord>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_detail: Option<String>,
    /// The request's WS-Addressing MessageID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl AuditRecord {
    /// A record of `event` in `transaction` on `side`, now, outcome success, everything else empty.
    pub fn new(
        event: AuditEvent,
        transaction: impl Into<AuditTransaction>,
        side: Side,
    ) -> AuditRecord {
        AuditRecord {
            time: Timestamp::now(),
            event,
            transaction: transaction.into(),
            side,
            requester: None,
            patient: None,
            data_holder: None,
            remote_community: None,
            remote_address: None,
            study_ids: Vec::new(),
            document_ids: Vec::new(),
            object_ids: Vec::new(),
            consent: None,
            outcome: Outcome::Success,
            outcome_detail: None,
            message_id: None,
        }
    }

    /// The record of a consent decision taken for a request in `transaction`: requester, patient, the
    /// data holder, the decision with its source and reason; outcome success when it discloses, denied
    /// otherwise. `requester` is `None` when the request carried no identity (a decision that fails
    /// closed before Mitz is asked).
    pub fn consent_decision(
        transaction: impl Into<AuditTransaction>,
        side: Side,
        patient: &Bsn,
        requester: Option<&Requester>,
        holder: HolderRecord,
        outcome: &ConsentOutcome,
    ) -> AuditRecord {
        let mut r = AuditRecord::new(AuditEvent::ConsentDecision, transaction, side);
        r.patient = Some(patient.clone());
        r.requester = requester.map(Into::into);
        r.data_holder = Some(holder);
        let c = ConsentRecord::from(outcome);
        r.outcome = if c.disclosed {
            Outcome::Success
        } else {
            Outcome::Denied
        };
        r.outcome_detail = Some(outcome.reason());
        r.consent = Some(c);
        r
    }
}

/// Why a record could not be written or the log not opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The JSON-lines sink failed.
    #[error("audit.sink {sink}: {err}")]
    Sink {
        /// `stdout` or the file.
        sink: String,
        /// The error.
        err: std::io::Error,
    },
    /// The syslog connection could not be set up.
    #[error("audit.syslog: {0}")]
    Syslog(String),
}

/// The identity of this gateway in ATNA messages (`AuditSourceIdentification`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSource {
    /// `AuditSourceID`: this gateway, e.g. its homeCommunityId.
    pub source_id: String,
    /// `AuditEnterpriseSiteID`: the hospital, e.g. its URA.
    pub enterprise_site_id: String,
}

enum JsonSink {
    Stdout(tokio::sync::Mutex<tokio::io::Stdout>),
    File {
        path: String,
        file: tokio::sync::Mutex<AuditFile>,
    },
    Memory(Arc<std::sync::Mutex<Vec<String>>>),
}

/// The open JSON-lines file and the identity (device, inode) of the file it was opened as.
///
/// Log rotation renames or deletes the file at the configured path (logrotate `create`, a log shipper
/// that moves the file away); a handle kept open would write to the vanished inode forever (issue 12,
/// defect 10). Before every line, [`AuditFile::ensure_current`] compares the path's (device, inode) with
/// the open file's and reopens the path (creating it) when they differ or the path is gone. A rotation
/// between that check and the write puts the line into the just-renamed file, which still exists: no
/// line is lost. A `copytruncate` rotation keeps the inode; the file is opened for appending, so lines
/// continue at the new end.
struct AuditFile {
    file: tokio::fs::File,
    id: (u64, u64),
}

impl AuditFile {
    /// Opens `path` for appending, creating it when absent. Errors: the path is not a regular file (a
    /// FIFO, a device, a directory): opened without blocking and refused, so that a FIFO put at the
    /// path cannot hold every request waiting for a reader. A symbolic link is followed.
    async fn open(path: &str) -> std::io::Result<AuditFile> {
        use std::os::unix::fs::MetadataExt;
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .await?;
        let m = file.metadata().await?;
        if !m.is_file() {
            return Err(std::io::Error::other(format!(
                "{path} is not a regular file"
            )));
        }
        Ok(AuditFile {
            file,
            id: (m.dev(), m.ino()),
        })
    }

    /// Reopens `path` when it no longer names the open file (renamed, deleted or replaced). Errors: the
    /// path cannot be opened; the caller then fails the record rather than write it where no one reads it.
    async fn ensure_current(&mut self, path: &str) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let current = match tokio::fs::metadata(path).await {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if current != Some(self.id) {
            let reopened = AuditFile::open(path).await?;
            tracing::info!(path, "audit file was rotated away; reopened at its path");
            *self = reopened;
        }
        Ok(())
    }
}

/// Records written to memory, for tests of callers (see [`AuditLog::memory`]).
#[derive(Clone, Debug, Default)]
pub struct MemoryAudit(Arc<std::sync::Mutex<Vec<String>>>);

impl MemoryAudit {
    /// The JSON lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The records written so far, parsed back.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The audit log. Share it (`Arc`) between requests.
pub struct AuditLog {
    sink: JsonSink,
    syslog: Option<SyslogSender>,
    source: AuditSource,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sink = match &self.sink {
            JsonSink::Stdout(_) => "stdout".to_owned(),
            JsonSink::File { path, .. } => path.clone(),
            JsonSink::Memory(_) => "memory".to_owned(),
        };
        f.debug_struct("AuditLog")
            .field("sink", &sink)
            .field("syslog", &self.syslog.is_some())
            .field("source", &self.source)
            .finish()
    }
}

impl AuditLog {
    /// Opens the sinks of `cfg`: the JSON-lines sink (`stdout` or a file opened for appending, created
    /// when absent) and, when `cfg.syslog` is set, the ATNA syslog sender, which presents `identity` (the
    /// gateway's certificate) as client certificate and trusts `syslog.trustBundleFile`.
    /// Errors: the file cannot be opened; syslog configured without `identity` or with unusable TLS files.
    pub async fn from_config(
        cfg: &AuditConfig,
        source: AuditSource,
        identity: Option<&TlsMaterial>,
    ) -> Result<AuditLog, AuditError> {
        let sink = if cfg.sink == "stdout" {
            JsonSink::Stdout(tokio::sync::Mutex::new(tokio::io::stdout()))
        } else {
            let file = AuditFile::open(&cfg.sink)
                .await
                .map_err(|err| AuditError::Sink {
                    sink: cfg.sink.clone(),
                    err,
                })?;
            JsonSink::File {
                path: cfg.sink.clone(),
                file: tokio::sync::Mutex::new(file),
            }
        };
        let syslog = match &cfg.syslog {
            None => None,
            Some(s) => {
                let Some(id) = identity else {
                    return Err(AuditError::Syslog(
                        "audit.syslog needs the gateway's TLS identity as client certificate"
                            .into(),
                    ));
                };
                Some(SyslogSender::start(s, id)?)
            }
        };
        Ok(AuditLog {
            sink,
            syslog,
            source,
        })
    }

    /// A log that keeps its JSON lines in memory (tests of callers), optionally with a syslog sender.
    pub fn memory(source: AuditSource, syslog: Option<SyslogSender>) -> (AuditLog, MemoryAudit) {
        let m = MemoryAudit::default();
        (
            AuditLog {
                sink: JsonSink::Memory(m.0.clone()),
                syslog,
                source,
            },
            m,
        )
    }

    /// Writes `record` as one JSON line and returns once it is written; queues its ATNA message for
    /// syslog when configured (a full queue drops the ATNA message and counts it, never the JSON line).
    /// Errors: the JSON sink failed (the caller should then not disclose).
    pub async fn record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_string(record).unwrap_or_else(|e| {
            // plain data always serialises; keep a trace of the impossible rather than lose the event
            format!("{{\"auditSerializationError\":{:?}}}", e.to_string())
        });
        line.push('\n');
        match &self.sink {
            JsonSink::Stdout(out) => {
                let mut o = out.lock().await;
                write_line(&mut *o, &line)
                    .await
                    .map_err(|err| AuditError::Sink {
                        sink: "stdout".into(),
                        err,
                    })?;
            }
            JsonSink::File { path, file } => {
                let mut f = file.lock().await;
                let sink_err = |err| AuditError::Sink {
                    sink: path.clone(),
                    err,
                };
                f.ensure_current(path).await.map_err(sink_err)?;
                write_line(&mut f.file, &line).await.map_err(sink_err)?;
            }
            JsonSink::Memory(m) => {
                line.pop();
                m.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        }
        if let Some(s) = &self.syslog {
            let xml = atna::audit_message(record, &self.source);
            s.send(syslog::frame(&xml, record.time));
        }
        Ok(())
    }

    /// Waits until every ATNA message queued so far has been sent or given up (no-op without syslog).
    pub async fn flush(&self) {
        if let Some(s) = &self.syslog {
            s.flush().await;
        }
    }

    /// Counters of the syslog sender, when configured.
    pub fn syslog_stats(&self) -> Option<SyslogStats> {
        self.syslog.as_ref().map(SyslogSender::stats)
    }
}

async fn write_line<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    line: &str,
) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.flush().await
}

#[cfg(test)]
mod tests;
