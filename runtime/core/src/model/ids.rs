//! Validated identifiers: OIDs, homeCommunityId, BSN, URA, UZI number, role and facility codes.
//!
//! Every type parses from the forms peers send (see docs/DOMAIN.md "Identifiers") and displays in the one
//! canonical form this gateway writes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was rejected. The message names the identifier kind and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value is not a dotted-decimal ISO OID (ITU-T X.660: arcs of digits, no leading zeros).
    #[error("invalid OID {0:?}: expected dotted decimal arcs such as 2.16.840.1.113883")]
    Oid(String),
    /// The homeCommunityId is longer than 64 characters in its `urn:oid:` form (ITI TF-3 4.2.3.2.12).
    #[error("invalid homeCommunityId {0:?}: at most 64 characters as urn:oid:<OID>")]
    HomeCommunityTooLong(String),
    /// BSN is not 9 digits or fails the elfproef (11-check).
    #[error("invalid BSN {0:?}: expected 9 digits passing the 11-check (elfproef)")]
    Bsn(String),
    /// URA is not 8 digits.
    #[error("invalid URA {0:?}: expected 8 digits")]
    Ura(String),
    /// UZI number is not 1 to 12 digits.
    #[error("invalid UZI number {0:?}: expected digits")]
    Uzi(String),
    /// A code value (role, facility type, data category) is empty or holds characters codes never hold.
    #[error("invalid {kind} code {value:?}")]
    Code {
        /// Which code system the value was meant for.
        kind: &'static str,
        /// The rejected value.
        value: String,
    },
}

macro_rules! string_newtype_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string" })
            }
        }
    };
}

/// An ISO object identifier in dotted decimal form, e.g. `2.16.840.1.113883.2.4.6.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(String);

impl Oid {
    /// The dotted-decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` is a dotted-decimal OID: at least two arcs, digits only, no leading zeros.
    pub fn is_valid(s: &str) -> bool {
        let mut arcs = 0;
        for arc in s.split('.') {
            arcs += 1;
            if arc.is_empty() || !arc.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            if arc.len() > 1 && arc.starts_with('0') {
                return false;
            }
        }
        arcs >= 2
    }
}

impl FromStr for Oid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let t = s.trim();
        if Oid::is_valid(t) {
            Ok(Oid(t.to_owned()))
        } else {
            Err(IdError::Oid(s.to_owned()))
        }
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_newtype_serde!(Oid);

/// A community's homeCommunityId (ITI TF-3 4.2.3.2.12, CP-429).
///
/// Parses `urn:oid:<OID>` and, because real peers omit the prefix, a bare `<OID>`; always displays and
/// serialises as `urn:oid:<OID>`, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HomeCommunityId(Oid);

impl HomeCommunityId {
    /// The OID without the `urn:oid:` prefix.
    pub fn oid(&self) -> &Oid {
        &self.0
    }

    /// Wraps an OID.
    pub fn from_oid(oid: Oid) -> Result<Self, IdError> {
        if oid.as_str().len() + 8 > 64 {
            return Err(IdError::HomeCommunityTooLong(oid.0));
        }
        Ok(HomeCommunityId(oid))
    }
}

impl FromStr for HomeCommunityId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let t = s.trim();
        let bare = t
            .strip_prefix("urn:oid:")
            .or_else(|| t.strip_prefix("URN:OID:"))
            .unwrap_or(t);
        let oid: Oid = bare.parse().map_err(|_| IdError::Oid(s.to_owned()))?;
        HomeCommunityId::from_oid(oid)
    }
}

impl fmt::Display for HomeCommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "urn:oid:{}", self.0)
    }
}
string_newtype_serde!(HomeCommunityId);

/// CX.1 (the id) and the universal id of CX.4 (the assigning authority OID) of a patient id written
/// `id^^^&oid&ISO` (white space around it ignored); `None` when either is empty or the id holds a `^`.
pub fn cx_parts(cx: &str) -> Option<(&str, &str)> {
    let (id, rest) = cx.trim().split_once("^^^")?;
    let oid = rest.trim_start_matches('&').split('&').next()?;
    (!id.is_empty() && !oid.is_empty() && !id.contains('^')).then_some((id, oid))
}

/// Burgerservicenummer: the Dutch citizen service number identifying the patient.
///
/// 9 digits passing the elfproef: `9*d1 + 8*d2 + ... + 2*d8 - 1*d9` is divisible by 11 (and not zero).
/// Assigning authority OID [`Bsn::OID`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bsn(String);

impl Bsn {
    /// Assigning authority of the BSN (NLMINBIZA).
    pub const OID: &'static str = "2.16.840.1.113883.2.4.6.3";

    /// The 9 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The patient id in HL7v2 CX form as used in XDS `$XDSDocumentEntryPatientId`:
    /// `<bsn>^^^&2.16.840.1.113883.2.4.6.3&ISO`.
    pub fn to_cx(&self) -> String {
        format!("{}^^^&{}&ISO", self.0, Self::OID)
    }

    /// Parses a CX value (`id^^^&oid&ISO`), accepting it only when the assigning authority is the BSN OID.
    pub fn from_cx(cx: &str) -> Option<Bsn> {
        let (id, oid) = cx_parts(cx)?;
        if oid != Self::OID {
            return None;
        }
        id.parse().ok()
    }

    /// The BSN 11-check: 9·d1 + 8·d2 + … + 2·d8 − 1·d9 divisible by 11. A weighted sum of 0 passes
    /// (e.g. 100000009); only all zeros, which no one is issued, is refused.
    fn elfproef(d: &[u8]) -> bool {
        if d.iter().all(|b| *b == b'0') {
            return false;
        }
        let mut sum: i64 = 0;
        for (i, b) in d.iter().enumerate() {
            let v = i64::from(b - b'0');
            let w = if i == 8 { -1 } else { 9 - i as i64 };
            sum += v * w;
        }
        sum % 11 == 0
    }
}

impl fmt::Debug for Bsn {
    // A BSN is personal data: debug output (logs of internal state) shows only the last three digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bsn(******{})", &self.0[6..])
    }
}

impl FromStr for Bsn {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let t = s.trim();
        let b = t.as_bytes();
        if b.len() == 9 && b.iter().all(u8::is_ascii_digit) && Bsn::elfproef(b) {
            Ok(Bsn(t.to_owned()))
        } else {
            Err(IdError::Bsn(s.to_owned()))
        }
    }
}

impl fmt::Display for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_newtype_serde!(Bsn);

/// UZI-register subscriber number ("URA") of a healthcare organisation: 8 digits, OID [`Ura::OID`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ura(String);

impl Ura {
    /// Assigning authority of the URA.
    pub const OID: &'static str = "2.16.528.1.1007.3.3";

    /// The 8 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Ura {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let t = s.trim();
        if t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Ura(t.to_owned()))
        } else {
            Err(IdError::Ura(s.to_owned()))
        }
    }
}

impl fmt::Display for Ura {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_newtype_serde!(Ura);

/// UZI number of a healthcare professional (OID [`UziNumber::OID`]), digits only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UziNumber(String);

impl UziNumber {
    /// Assigning authority of UZI numbers.
    pub const OID: &'static str = "2.16.528.1.1007.3.1";

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UziNumber {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let t = s.trim();
        if (1..=12).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()) {
            Ok(UziNumber(t.to_owned()))
        } else {
            Err(IdError::Uzi(s.to_owned()))
        }
    }
}

impl fmt::Display for UziNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_newtype_serde!(UziNumber);

macro_rules! code_newtype {
    ($(#[$m:meta])* $t:ident, $kind:literal, $oid:literal, $valid:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $t(String);

        impl $t {
            /// Code system OID.
            pub const CODE_SYSTEM: &'static str = $oid;

            /// The code value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let t = s.trim();
                let valid: fn(&str) -> bool = $valid;
                if valid(t) {
                    Ok($t(t.to_owned()))
                } else {
                    Err(IdError::Code { kind: $kind, value: s.to_owned() })
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        string_newtype_serde!($t);
    };
}

fn is_simple_code(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// RoleCodeNL form: two digits, a dot, three digits (`01.015`).
fn is_role_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && b[2] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
}

code_newtype!(
    /// UZI role code (RoleCodeNL, `NN.NNN`), e.g. `01.015` radiologist; code system
    /// `2.16.840.1.113883.2.4.15.111`.
    RoleCode,
    "UZI role",
    "2.16.840.1.113883.2.4.15.111",
    is_role_code
);
code_newtype!(
    /// Zorgaanbiedercategorie (healthcare facility type), e.g. `V6` general hospital, `Z4` independent clinic;
    /// code system `2.16.840.1.113883.2.4.15.1060`.
    FacilityType,
    "facility type",
    "2.16.840.1.113883.2.4.15.1060",
    is_simple_code
);
code_newtype!(
    /// Mitz data category (gegevenscategorie), e.g. `GGC002` Behandelgegevens, `GGC007` Medische Beelden;
    /// code system `2.16.840.1.113883.2.4.3.111.5.10.1`.
    DataCategory,
    "data category",
    "2.16.840.1.113883.2.4.3.111.5.10.1",
    is_simple_code
);
code_newtype!(
    /// Purpose of use, e.g. `TREAT`; code system `2.16.840.1.113883.1.11.20448`.
    PurposeOfUse,
    "purpose of use",
    "2.16.840.1.113883.1.11.20448",
    is_simple_code
);

/// The codes of the RoleCodeNL value set (UZI-register role codes, code system
/// `2.16.840.1.113883.2.4.15.111`): `01.nnn` physicians and medical specialists, `02.nnn` dentists,
/// `03.000` midwife, ... `99.000` other care provider. As published by the UZI register and reproduced
/// in Nictiz's conversion tables and public UZI clients (the same 82 codes in each); sorted, for
/// [`RoleCode::is_role_code_nl`].
pub const ROLE_CODE_NL: &[&str] = &[
    "01.000", "01.002", "01.003", "01.004", "01.008", "01.010", "01.011", "01.012", "01.013",
    "01.014", "01.015", "01.016", "01.018", "01.019", "01.020", "01.021", "01.022", "01.023",
    "01.024", "01.025", "01.026", "01.030", "01.031", "01.032", "01.033", "01.034", "01.035",
    "01.039", "01.040", "01.041", "01.042", "01.045", "01.046", "01.047", "01.048", "01.050",
    "01.055", "01.056", "01.062", "01.070", "01.071", "01.074", "02.000", "02.053", "02.054",
    "03.000", "04.000", "16.000", "17.000", "17.060", "17.075", "25.000", "25.061", "25.063",
    "30.000", "30.065", "30.066", "30.067", "30.068", "30.069", "31.000", "79.000", "80.000",
    "81.000", "82.000", "83.000", "84.000", "85.000", "86.000", "87.000", "88.000", "89.000",
    "90.000", "91.000", "92.000", "93.000", "94.000", "95.000", "96.000", "97.000", "98.000",
    "99.000",
];

impl RoleCode {
    /// Whether the code is one of the RoleCodeNL value set ([`ROLE_CODE_NL`]); a well-formed code such
    /// as `01.999` that the UZI register does not issue is not.
    pub fn is_role_code_nl(&self) -> bool {
        ROLE_CODE_NL.binary_search(&self.0.as_str()).is_ok()
    }
}

impl Default for DataCategory {
    /// `GGC002`: which category imaging needs is not public (docs/DOMAIN.md); GGC002 is the configured default.
    fn default() -> Self {
        DataCategory("GGC002".into())
    }
}

impl Default for PurposeOfUse {
    /// `TREAT`, the purpose of use of the DUO pull use case.
    fn default() -> Self {
        PurposeOfUse("TREAT".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsn_elfproef() {
        // 900186021 is the test BSN in the Mitz sample (testdata/mitz/xacml/example.xml)
        assert!("900186021".parse::<Bsn>().is_ok());
        assert!("111222333".parse::<Bsn>().is_ok());
        assert!("123456782".parse::<Bsn>().is_ok());
        assert!("123456789".parse::<Bsn>().is_err());
        assert!("000000000".parse::<Bsn>().is_err());
        assert!(
            "100000009".parse::<Bsn>().is_ok(),
            "weighted sum 0 passes the 11-check"
        );
        assert!("12345678".parse::<Bsn>().is_err());
        assert!("12345678a".parse::<Bsn>().is_err());
        assert!("".parse::<Bsn>().is_err());
    }

    #[test]
    fn bsn_cx_round_trip() {
        let b: Bsn = "900186021".parse().unwrap();
        assert_eq!(b.to_cx(), "900186021^^^&2.16.840.1.113883.2.4.6.3&ISO");
        assert_eq!(Bsn::from_cx(&b.to_cx()), Some(b));
        assert_eq!(Bsn::from_cx("900186021^^^&1.2.3&ISO"), None);
        assert!(
            !format!(
                "{:?}",
                Bsn::from_cx("900186021^^^&2.16.840.1.113883.2.4.6.3&ISO").unwrap()
            )
            .contains("900186")
        );
    }

    #[test]
    fn home_community_id_forms() {
        let a: HomeCommunityId = "urn:oid:1.2.3".parse().unwrap();
        let b: HomeCommunityId = " 1.2.3 ".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "urn:oid:1.2.3");
        assert!("urn:oid:".parse::<HomeCommunityId>().is_err());
        assert!("urn:oid:1.02.3".parse::<HomeCommunityId>().is_err());
        let long = format!("1.{}", "1.".repeat(40)) + "1";
        assert!(long.parse::<HomeCommunityId>().is_err());
    }

    #[test]
    fn ura_and_codes() {
        assert!("00000659".parse::<Ura>().is_ok());
        assert!("0000065".parse::<Ura>().is_err());
        assert!("01.015".parse::<RoleCode>().is_ok());
        // the value set is sorted (binary search) and holds the radiologist; a made-up code is not in it
        assert!(ROLE_CODE_NL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ROLE_CODE_NL.len(), 82);
        assert!("01.039".parse::<RoleCode>().unwrap().is_role_code_nl());
        assert!(!"01.999".parse::<RoleCode>().unwrap().is_role_code_nl());
        assert!(!"00.000".parse::<RoleCode>().unwrap().is_role_code_nl());
        for bad in ["zz", "1.015", "01015", "01.0155", "ab.cde"] {
            assert!(bad.parse::<RoleCode>().is_err(), "{bad}");
        }
        assert!("V6".parse::<FacilityType>().is_ok());
        assert!("V 6".parse::<FacilityType>().is_err());
        assert_eq!(DataCategory::default().as_str(), "GGC002");
    }
}
