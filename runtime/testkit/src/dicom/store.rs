//! What an imaging document source holds: instances by SOP Instance UID, each in one or more transfer
//! syntaxes, and the two lookups RAD-69 / RAD-75 need (RAD TF-3 4.69.4.1.3): find the instance a
//! DocumentRequest names (study, series, SOP instance), then pick an encoding from the request's
//! TransferSyntaxUIDList. The mapping of failures to registry errors is the caller's:
//! [`LookupError::UnknownInstance`] → XDSDocumentUniqueIdError, [`LookupError::NoTransferSyntax`] →
//! XDSRepositoryError with the SOP Instance UID as location (docs/DOMAIN.md "Imaging specifics").

use std::collections::HashMap;

use bytes::Bytes;

use super::InstanceInfo;
use super::synth::SyntheticInstance;

/// One encoding of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Transfer Syntax UID of `bytes`.
    pub transfer_syntax_uid: String,
    /// The Part 10 file.
    pub bytes: Bytes,
}

/// An instance with the encodings it is available in (the first is the one it was loaded from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    /// The instance's facts (from its first encoding).
    pub info: InstanceInfo,
    /// Available encodings, at least one, transfer syntaxes distinct.
    pub encodings: Vec<Encoding>,
}

impl StoredInstance {
    /// An instance with one encoding.
    pub fn new(info: InstanceInfo, bytes: Bytes) -> StoredInstance {
        let transfer_syntax_uid = info.transfer_syntax_uid.clone();
        StoredInstance {
            info,
            encodings: vec![Encoding {
                transfer_syntax_uid,
                bytes,
            }],
        }
    }

    /// The first encoding whose transfer syntax is in `requested` (order of preference: the request's order).
    ///
    /// Errors: [`LookupError::NoTransferSyntax`] naming the SOP Instance UID, the requested and the
    /// available syntaxes.
    pub fn select_encoding<S: AsRef<str>>(
        &self,
        requested: &[S],
    ) -> Result<&Encoding, LookupError> {
        for r in requested {
            let r = r.as_ref().trim();
            if let Some(e) = self.encodings.iter().find(|e| e.transfer_syntax_uid == r) {
                return Ok(e);
            }
        }
        Err(LookupError::NoTransferSyntax {
            sop_instance_uid: self.info.sop_instance_uid.clone(),
            requested: requested
                .iter()
                .map(|s| s.as_ref().trim().to_owned())
                .collect(),
            available: self
                .encodings
                .iter()
                .map(|e| e.transfer_syntax_uid.clone())
                .collect(),
        })
    }

    /// Transfer syntaxes this instance is available in.
    pub fn transfer_syntaxes(&self) -> impl Iterator<Item = &str> {
        self.encodings
            .iter()
            .map(|e| e.transfer_syntax_uid.as_str())
    }
}

impl From<SyntheticInstance> for StoredInstance {
    fn from(s: SyntheticInstance) -> Self {
        StoredInstance::new(s.info, s.bytes)
    }
}

/// Why a requested instance cannot be returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No instance with this SOP Instance UID in this study and series (RAD-69: XDSDocumentUniqueIdError).
    #[error(
        "unknown SOP instance {sop_instance_uid} in study {study_instance_uid}, series {series_instance_uid}"
    )]
    UnknownInstance {
        /// The requested Study Instance UID.
        study_instance_uid: String,
        /// The requested Series Instance UID.
        series_instance_uid: String,
        /// The requested SOP Instance UID (DocumentUniqueId).
        sop_instance_uid: String,
    },
    /// The instance exists but in none of the requested transfer syntaxes (RAD-69: XDSRepositoryError).
    #[error(
        "SOP instance {sop_instance_uid} is not available in any requested transfer syntax ({}); available: {}",
        requested.join(", "),
        available.join(", ")
    )]
    NoTransferSyntax {
        /// The SOP Instance UID (the error's location).
        sop_instance_uid: String,
        /// What the request listed.
        requested: Vec<String>,
        /// What is held.
        available: Vec<String>,
    },
}

/// Instances indexed by SOP Instance UID.
#[derive(Debug, Clone, Default)]
pub struct InstanceStore {
    instances: Vec<StoredInstance>,
    by_sop: HashMap<String, usize>,
}

/// Result of [`InstanceStore::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new instance.
    New,
    /// A new encoding (another transfer syntax) of an instance already held.
    AlternateEncoding,
}

/// Why [`InstanceStore::insert`] refused an instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The SOP Instance UID is held with the same transfer syntax already.
    #[error("duplicate of SOP instance {0} in transfer syntax {1} already held")]
    Duplicate(String, String),
    /// The SOP Instance UID is held under another study or series: UIDs must be unique (PS3.5 9.1).
    #[error("SOP instance {0} is already held in another study or series")]
    Conflict(String),
}

impl InstanceStore {
    /// An empty store.
    pub fn new() -> InstanceStore {
        InstanceStore::default()
    }

    /// Adds an instance, or another encoding of one already held (same study, series and SOP Instance UID,
    /// different transfer syntax).
    pub fn insert(&mut self, info: InstanceInfo, bytes: Bytes) -> Result<Inserted, InsertError> {
        if let Some(&i) = self.by_sop.get(&info.sop_instance_uid) {
            let held = &mut self.instances[i];
            if held.info.study_instance_uid != info.study_instance_uid
                || held.info.series_instance_uid != info.series_instance_uid
            {
                return Err(InsertError::Conflict(info.sop_instance_uid));
            }
            if held
                .encodings
                .iter()
                .any(|e| e.transfer_syntax_uid == info.transfer_syntax_uid)
            {
                return Err(InsertError::Duplicate(
                    info.sop_instance_uid,
                    info.transfer_syntax_uid,
                ));
            }
            held.encodings.push(Encoding {
                transfer_syntax_uid: info.transfer_syntax_uid,
                bytes,
            });
            return Ok(Inserted::AlternateEncoding);
        }
        self.by_sop
            .insert(info.sop_instance_uid.clone(), self.instances.len());
        self.instances.push(StoredInstance::new(info, bytes));
        Ok(Inserted::New)
    }

    /// The instance a RAD-69 / RAD-75 DocumentRequest names: its SOP Instance UID must be held under the
    /// given study and series.
    pub fn get(
        &self,
        study_uid: &str,
        series_uid: &str,
        sop_uid: &str,
    ) -> Result<&StoredInstance, LookupError> {
        find_in(
            self.by_sop
                .get(sop_uid)
                .map(|&i| std::slice::from_ref(&self.instances[i]))
                .unwrap_or(&[]),
            study_uid,
            series_uid,
            sop_uid,
        )
    }

    /// Every instance, in insertion order.
    pub fn instances(&self) -> &[StoredInstance] {
        &self.instances
    }

    /// The instances of one study, in insertion order.
    pub fn study(&self, study_uid: &str) -> Vec<&StoredInstance> {
        self.instances
            .iter()
            .filter(|i| i.info.study_instance_uid == study_uid)
            .collect()
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

/// Finds the instance (study, series, SOP instance) in a slice, e.g. one study's instances.
pub fn find_in<'a>(
    instances: &'a [StoredInstance],
    study_uid: &str,
    series_uid: &str,
    sop_uid: &str,
) -> Result<&'a StoredInstance, LookupError> {
    let (study_uid, series_uid, sop_uid) = (study_uid.trim(), series_uid.trim(), sop_uid.trim());
    instances
        .iter()
        .find(|i| {
            i.info.sop_instance_uid == sop_uid
                && i.info.series_instance_uid == series_uid
                && i.info.study_instance_uid == study_uid
        })
        .ok_or_else(|| LookupError::UnknownInstance {
            study_instance_uid: study_uid.to_owned(),
            series_instance_uid: series_uid.to_owned(),
            sop_instance_uid: sop_uid.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(study: &str, series: &str, sop: &str, ts: &str) -> InstanceInfo {
        InstanceInfo {
            study_instance_uid: study.into(),
            series_instance_uid: series.into(),
            sop_instance_uid: sop.into(),
            transfer_syntax_uid: ts.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lookup_by_study_series_sop() {
        let mut s = InstanceStore::new();
        assert_eq!(
            s.insert(
                info("1", "1.1", "1.1.1", "1.2.840.10008.1.2.1"),
                Bytes::from_static(b"a")
            ),
            Ok(Inserted::New)
        );
        assert_eq!(
            s.insert(
                info("1", "1.1", "1.1.2", "1.2.840.10008.1.2.1"),
                Bytes::from_static(b"b")
            ),
            Ok(Inserted::New)
        );
        assert_eq!(
            s.get("1", "1.1", "1.1.2").unwrap().encodings[0].bytes,
            Bytes::from_static(b"b")
        );
        // right SOP UID, wrong series or study: unknown (RAD-69 XDSDocumentUniqueIdError)
        assert!(matches!(
            s.get("1", "9.9", "1.1.2"),
            Err(LookupError::UnknownInstance { .. })
        ));
        assert!(matches!(
            s.get("2", "1.1", "1.1.2"),
            Err(LookupError::UnknownInstance { .. })
        ));
        assert!(matches!(
            s.get("1", "1.1", "1.1.3"),
            Err(LookupError::UnknownInstance { .. })
        ));
        assert_eq!(s.study("1").len(), 2);
        assert_eq!(
            find_in(s.instances(), "1", "1.1", " 1.1.1 ")
                .unwrap()
                .info
                .sop_instance_uid,
            "1.1.1"
        );
    }

    #[test]
    fn transfer_syntax_selection_and_alternates() {
        let mut s = InstanceStore::new();
        s.insert(
            info("1", "1.1", "1.1.1", "1.2.840.10008.1.2.1"),
            Bytes::from_static(b"explicit"),
        )
        .unwrap();
        assert_eq!(
            s.insert(
                info("1", "1.1", "1.1.1", "1.2.840.10008.1.2.5"),
                Bytes::from_static(b"rle")
            ),
            Ok(Inserted::AlternateEncoding)
        );
        assert!(matches!(
            s.insert(
                info("1", "1.1", "1.1.1", "1.2.840.10008.1.2.5"),
                Bytes::new()
            ),
            Err(InsertError::Duplicate(..))
        ));
        assert!(matches!(
            s.insert(info("2", "1.1", "1.1.1", "1.2.840.10008.1.2"), Bytes::new()),
            Err(InsertError::Conflict(..))
        ));
        let i = s.get("1", "1.1", "1.1.1").unwrap();
        assert_eq!(
            i.select_encoding(&["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1"])
                .unwrap()
                .bytes,
            Bytes::from_static(b"rle")
        );
        assert_eq!(
            i.select_encoding(&["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"])
                .unwrap()
                .bytes,
            Bytes::from_static(b"explicit")
        );
        let e = i.select_encoding(&["1.2.840.10008.1.2.4.50"]).unwrap_err();
        assert!(
            matches!(&e, LookupError::NoTransferSyntax { sop_instance_uid, .. } if sop_instance_uid == "1.1.1")
        );
        assert!(e.to_string().contains("1.2.840.10008.1.2.4.50"), "{e}");
        assert!(i.select_encoding::<&str>(&[]).is_err());
        assert_eq!(i.transfer_syntaxes().count(), 2);
    }
}
