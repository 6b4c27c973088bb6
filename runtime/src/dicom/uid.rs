//! DICOM UIDs (PS3.5 9): deterministic generation from a seed, either under `2.25` from a UUID
//! (PS3.5 B.2) or under an organisation root with a counter.

use sha2::{Digest, Sha256};

use super::DicomError;
use crate::model::Oid;

/// Longest UID DICOM allows (UI, PS3.5 9.1).
pub const MAX_UID_LEN: usize = 64;

/// Where generated UIDs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidRoot {
    /// `2.25.<UUID as unsigned decimal integer>` (PS3.5 B.2); the UUID is a version 8 (name-based,
    /// SHA-256) UUID of the seed and a counter, so no registered root is needed.
    Uuid,
    /// `<root>.<seed>.<counter>` under an OID the organisation controls. The root must leave room for the
    /// seed (up to 20 digits) and the counter (up to 10) within 64 characters: at most 31 characters.
    Org(Oid),
}

/// Deterministic UID source: the same root, seed and call order give the same UIDs.
#[derive(Debug, Clone)]
pub struct UidGenerator {
    root: UidRoot,
    seed: u64,
    counter: u32,
}

impl UidGenerator {
    /// A generator for `root` and `seed`.
    ///
    /// Errors: [`DicomError::InvalidOption`] when an organisation root is longer than 31 characters, so that
    /// UIDs could exceed 64 characters.
    pub fn new(root: UidRoot, seed: u64) -> Result<UidGenerator, DicomError> {
        if let UidRoot::Org(oid) = &root
            && oid.as_str().len() > MAX_UID_LEN - 33
        {
            return Err(DicomError::InvalidOption(format!(
                "UID root {oid} is {} characters; at most {} leave room for seed and counter in a 64-character UID",
                oid.as_str().len(),
                MAX_UID_LEN - 33
            )));
        }
        Ok(UidGenerator {
            root,
            seed,
            counter: 0,
        })
    }

    /// The next UID.
    pub fn next_uid(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        match &self.root {
            UidRoot::Uuid => uuid_uid(&[&self.seed.to_be_bytes(), &self.counter.to_be_bytes()]),
            UidRoot::Org(oid) => format!("{oid}.{}.{}", self.seed, self.counter),
        }
    }
}

/// A UID derived from a name: `2.25.<v8 UUID of SHA-256(namespace, name)>`. Used for objects whose UID must
/// be stable for the same input (a study's manifest, a DocumentEntry's entryUUID source).
pub fn derived_uid(namespace: &str, name: &str) -> String {
    uuid_uid(&[namespace.as_bytes(), &[0], name.as_bytes()])
}

/// A version 8 UUID (RFC 9562 5.8) from the SHA-256 of the given parts.
pub fn derived_uuid(parts: &[&[u8]]) -> uuid::Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

fn uuid_uid(parts: &[&[u8]]) -> String {
    format!("2.25.{}", derived_uuid(parts).as_u128())
}

/// Whether `s` is a valid DICOM UID: 1..=64 characters, digits and dots, components without leading zeros.
pub fn is_valid_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_UID_LEN && Oid::is_valid(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_uids_are_valid_distinct_and_deterministic() {
        let mut a = UidGenerator::new(UidRoot::Uuid, 42).unwrap();
        let mut b = UidGenerator::new(UidRoot::Uuid, 42).unwrap();
        let mut c = UidGenerator::new(UidRoot::Uuid, 43).unwrap();
        let xs: Vec<String> = (0..100).map(|_| a.next_uid()).collect();
        let ys: Vec<String> = (0..100).map(|_| b.next_uid()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], c.next_uid());
        let set: std::collections::HashSet<_> = xs.iter().collect();
        assert_eq!(set.len(), 100);
        for u in &xs {
            assert!(u.starts_with("2.25."), "{u}");
            assert!(is_valid_uid(u), "{u}");
        }
    }

    #[test]
    fn org_root_uids_and_length_limit() {
        let mut g = UidGenerator::new(UidRoot::Org("1.2.3.4".parse().unwrap()), 7).unwrap();
        assert_eq!(g.next_uid(), "1.2.3.4.7.1");
        assert_eq!(g.next_uid(), "1.2.3.4.7.2");
        let long: Oid = "1.2.840.113619.2.55.3.604688119.9999.12".parse().unwrap();
        assert!(matches!(
            UidGenerator::new(UidRoot::Org(long), 1),
            Err(DicomError::InvalidOption(_))
        ));
        let max: Oid = "1.2.3.4.5.6.7.8.9.10.11.12.1345".parse().unwrap();
        assert_eq!(max.as_str().len(), 31);
        let mut g = UidGenerator::new(UidRoot::Org(max), u64::MAX).unwrap();
        g.counter = u32::MAX - 1;
        assert!(is_valid_uid(&g.next_uid()));
    }

    #[test]
    fn derived_uids_depend_on_both_parts() {
        assert_eq!(derived_uid("kos", "1.2.3"), derived_uid("kos", "1.2.3"));
        assert_ne!(derived_uid("kos", "1.2.3"), derived_uid("kos", "1.2.4"));
        assert_ne!(
            derived_uid("kos", "1.2.3"),
            derived_uid("kos-series", "1.2.3")
        );
        assert!(is_valid_uid(&derived_uid("a", "b")));
        assert!(!is_valid_uid("1.02.3"));
        assert!(!is_valid_uid(&"1.".repeat(40)));
    }
}
