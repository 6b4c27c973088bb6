//! Who a certificate is, in the two forms a configuration can pin a client certificate by (issue 12,
//! defect 9: a DNS name alone matched any certificate of any CA in the trust bundle):
//!
//! - [`DistinguishedName`]: the issuer and subject names, written as RFC 4514 strings
//!   (`openssl x509 -noout -issuer -subject -nameopt RFC2253` prints them in this form);
//! - [`SpkiSha256`]: the SHA-256 of the certificate's DER `SubjectPublicKeyInfo`, base64 (the
//!   `pin-sha256` of RFC 7469 §2.4; `openssl x509 -noout -pubkey | openssl pkey -pubin -outform der |
//!   openssl dgst -sha256 -binary | base64`).
//!
//! Matching is deliberately strict, failing closed: the names must have the same RDNs in the same
//! order, each with the same attribute types, and the values must be equal character for character
//! (no case folding or space folding of RFC 4518); only values of the string types NumericString,
//! PrintableString, UTF8String and IA5String are read from a certificate, a name holding another type
//! never matches (pin such a certificate by its SPKI).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use super::PkiError;

/// Short names of the attribute types this module reads and writes (RFC 4514 §3, RFC 5280 Appendix A,
/// X.520); other types are written and accepted as dotted OIDs.
const SHORT_NAMES: &[(&str, &[u64])] = &[
    ("CN", &[2, 5, 4, 3]),
    ("SN", &[2, 5, 4, 4]),
    ("serialNumber", &[2, 5, 4, 5]),
    ("C", &[2, 5, 4, 6]),
    ("L", &[2, 5, 4, 7]),
    ("ST", &[2, 5, 4, 8]),
    ("STREET", &[2, 5, 4, 9]),
    ("O", &[2, 5, 4, 10]),
    ("OU", &[2, 5, 4, 11]),
    ("title", &[2, 5, 4, 12]),
    ("GN", &[2, 5, 4, 42]),
    ("organizationIdentifier", &[2, 5, 4, 97]),
    ("DC", &[0, 9, 2342, 19200300, 100, 1, 25]),
    ("UID", &[0, 9, 2342, 19200300, 100, 1, 1]),
    ("emailAddress", &[1, 2, 840, 113549, 1, 9, 1]),
];

/// Longest name text accepted, characters (a configuration value, not a place for a document).
const MAX_NAME_CHARS: usize = 4096;

/// An X.509 distinguished name: its RDNs in certificate (DER) order, each a set of attribute type
/// (OID arcs) and value pairs, kept sorted so that a multi-valued RDN compares as a set.
///
/// Text form ([`FromStr`], [`fmt::Display`]): RFC 4514, most specific RDN first, e.g.
/// `CN=viewer.oost.example,O=Ziekenhuis Oost,C=NL`. Parsing accepts attribute types by the short names
/// of this module (any case) or as dotted OIDs, `\`-escapes of a special character or of two hex digits
/// (UTF-8 bytes), `+` between the parts of a multi-valued RDN and spaces after `,` `+` and around `=`
/// (dropped; an escaped space is kept). Errors: an empty name, an empty or unknown attribute type, a
/// dangling or malformed escape, a `#`-hex (BER) value, more than 4,096 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DistinguishedName(Vec<Vec<(Vec<u64>, String)>>);

/// Why a distinguished name text was refused (see [`DistinguishedName`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 4514 distinguished name ({0}), e.g. CN=viewer.example,O=Hospital,C=NL")]
pub struct NameError(String);

impl DistinguishedName {
    /// The name of a parsed certificate field. Errors when a value is not of a string type this module
    /// reads (see the module documentation) or an attribute type is not a valid OID.
    pub fn from_x509(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
        let mut rdns = Vec::new();
        for rdn in name.iter_rdn() {
            let mut set = Vec::new();
            for atv in rdn.iter() {
                let arcs: Vec<u64> =
                    atv.attr_type().iter().map(|i| i.collect()).ok_or_else(|| {
                        PkiError::Certificate("name attribute type too large".into())
                    })?;
                let value = atv.as_str().map_err(|_| {
                    PkiError::Certificate(format!(
                        "name attribute {} is not a NumericString, PrintableString, UTF8String or IA5String",
                        type_name(&arcs)
                    ))
                })?;
                set.push((arcs, value.to_owned()));
            }
            set.sort();
            rdns.push(set);
        }
        Ok(DistinguishedName(rdns))
    }
}

fn type_name(arcs: &[u64]) -> String {
    match SHORT_NAMES.iter().find(|(_, o)| *o == arcs) {
        Some((n, _)) => (*n).to_owned(),
        None => arcs
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    }
}

fn parse_type(t: &str) -> Result<Vec<u64>, NameError> {
    if t.is_empty() {
        return Err(NameError("an attribute type is empty".into()));
    }
    if let Some((_, arcs)) = SHORT_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)) {
        return Ok(arcs.to_vec());
    }
    let t = t
        .strip_prefix("OID.")
        .or_else(|| t.strip_prefix("oid."))
        .unwrap_or(t);
    let arcs: Option<Vec<u64>> = t.split('.').map(|a| a.parse().ok()).collect();
    match arcs {
        Some(a) if a.len() >= 2 && t.chars().all(|c| c.is_ascii_digit() || c == '.') => Ok(a),
        _ => Err(NameError(format!("unknown attribute type {t:?}"))),
    }
}

/// One lexical piece of a name text.
enum Piece {
    /// A character of a type or value; `true` when it was escaped.
    Char(char, bool),
    /// `=`.
    Equals,
    /// `+`.
    Plus,
    /// `,` (or `;`, the old separator RFC 4514 §2.1 still mentions for readers).
    Comma,
}

fn lex(s: &str) -> Result<Vec<Piece>, NameError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    return Err(NameError("a '\\' at the end".into()));
                };
                if n.is_ascii_hexdigit() {
                    // a run of \XX escapes is UTF-8 bytes
                    let Some(m) = chars.next().filter(char::is_ascii_hexdigit) else {
                        return Err(NameError(format!("'\\{n}' is not followed by a hex digit")));
                    };
                    let mut bytes = vec![hex_byte(n, m)];
                    loop {
                        let mut look = chars.clone();
                        match (look.next(), look.next(), look.next()) {
                            (Some('\\'), Some(a), Some(b))
                                if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() =>
                            {
                                bytes.push(hex_byte(a, b));
                                chars = look;
                            }
                            _ => break,
                        }
                    }
                    let text = String::from_utf8(bytes)
                        .map_err(|_| NameError("hex escapes that are not UTF-8".into()))?;
                    out.extend(text.chars().map(|c| Piece::Char(c, true)));
                } else if matches!(
                    n,
                    ' ' | '"' | '#' | '+' | ',' | ';' | '<' | '=' | '>' | '\\'
                ) {
                    out.push(Piece::Char(n, true));
                } else {
                    return Err(NameError(format!("'\\{n}' is not an escape")));
                }
            }
            '=' => out.push(Piece::Equals),
            '+' => out.push(Piece::Plus),
            ',' | ';' => out.push(Piece::Comma),
            c => out.push(Piece::Char(c, false)),
        }
    }
    Ok(out)
}

fn hex_byte(a: char, b: char) -> u8 {
    let d = |c: char| c.to_digit(16).unwrap_or(0) as u8;
    d(a) << 4 | d(b)
}

/// Collects the characters of a type or value, dropping unescaped spaces at both ends.
fn text(chars: &[(char, bool)]) -> String {
    let start = chars
        .iter()
        .position(|&(c, esc)| esc || c != ' ')
        .unwrap_or(chars.len());
    let end = chars
        .iter()
        .rposition(|&(c, esc)| esc || c != ' ')
        .map_or(start, |i| i + 1);
    chars[start..end.max(start)]
        .iter()
        .map(|&(c, _)| c)
        .collect()
}

impl FromStr for DistinguishedName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.chars().count() > MAX_NAME_CHARS {
            return Err(NameError(format!(
                "longer than {MAX_NAME_CHARS} characters"
            )));
        }
        if s.trim().is_empty() {
            return Err(NameError("empty".into()));
        }
        let mut rdns: Vec<Vec<(Vec<u64>, String)>> = Vec::new();
        let mut set = Vec::new();
        let mut typ: Option<Vec<u64>> = None;
        let mut cur: Vec<(char, bool)> = Vec::new();
        let finish_atv = |typ: &mut Option<Vec<u64>>,
                          cur: &mut Vec<(char, bool)>,
                          set: &mut Vec<(Vec<u64>, String)>|
         -> Result<(), NameError> {
            let Some(t) = typ.take() else {
                let what = text(cur);
                return Err(NameError(if what.is_empty() {
                    "an empty RDN".into()
                } else {
                    format!("{what:?} has no '='")
                }));
            };
            if cur.first().is_some_and(|&(c, esc)| c == '#' && !esc) {
                return Err(NameError(
                    "'#'-hex (BER) values are not supported; write the value as text".into(),
                ));
            }
            set.push((t, text(cur)));
            cur.clear();
            Ok(())
        };
        for p in lex(s)? {
            match p {
                Piece::Char(c, esc) => cur.push((c, esc)),
                Piece::Equals if typ.is_none() => {
                    if cur.iter().any(|&(_, esc)| esc) {
                        return Err(NameError("an escape in an attribute type".into()));
                    }
                    typ = Some(parse_type(&text(&cur))?);
                    cur.clear();
                }
                Piece::Equals => {
                    return Err(NameError("an unescaped '=' in a value".into()));
                }
                Piece::Plus => finish_atv(&mut typ, &mut cur, &mut set)?,
                Piece::Comma => {
                    finish_atv(&mut typ, &mut cur, &mut set)?;
                    set.sort();
                    rdns.push(std::mem::take(&mut set));
                }
            }
        }
        finish_atv(&mut typ, &mut cur, &mut set)?;
        set.sort();
        rdns.push(set);
        // the text lists the most specific RDN first, the certificate the least specific
        rdns.reverse();
        Ok(DistinguishedName(rdns))
    }
}

/// Writes a value with the escapes RFC 4514 §2.4 requires (and `\XX` for control characters).
fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => write!(f, "\\{c}")?,
            '#' if i == 0 => f.write_str("\\#")?,
            ' ' if i == 0 || i + 1 == n => f.write_str("\\ ")?,
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(f, "\\{b:02X}")?;
                }
            }
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, (t, v)) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}=", type_name(t))?;
                write_value(f, v)?;
            }
        }
        Ok(())
    }
}

/// The SHA-256 of a certificate's DER `SubjectPublicKeyInfo` (RFC 7469 `pin-sha256`). Text form: the
/// 32 bytes in standard base64 with padding (44 characters). Errors: anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiSha256(pub [u8; 32]);

/// Why an SPKI pin text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a SHA-256 SPKI pin: expected the 32-byte digest in base64 (44 characters), as `openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64` prints it"
)]
pub struct PinError;

impl SpkiSha256 {
    /// The pin of a DER `SubjectPublicKeyInfo`.
    pub fn of_spki(spki_der: &[u8]) -> SpkiSha256 {
        SpkiSha256(Sha256::digest(spki_der).into())
    }
}

impl FromStr for SpkiSha256 {
    type Err = PinError;
    fn from_str(s: &str) -> Result<Self, PinError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| PinError)?;
        Ok(SpkiSha256(bytes.try_into().map_err(|_| PinError)?))
    }
}

impl fmt::Display for SpkiSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

macro_rules! serde_via_text {
    ($t:ty, $what:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "description": $what})
            }
        }
    };
}

serde_via_text!(
    DistinguishedName,
    "An X.509 distinguished name in RFC 4514 form, most specific RDN first"
);
serde_via_text!(
    SpkiSha256,
    "SHA-256 of the certificate's DER SubjectPublicKeyInfo, base64 (44 characters)"
);

/// The identity of one certificate: issuer, subject and SPKI pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The issuer's name. `None` when it holds a value this module does not read.
    pub issuer: Option<DistinguishedName>,
    /// The subject's name. `None` when it holds a value this module does not read.
    pub subject: Option<DistinguishedName>,
    /// SHA-256 of the DER `SubjectPublicKeyInfo`.
    pub spki_sha256: SpkiSha256,
}

/// Reads the [`CertificateIdentity`] of one DER certificate. Errors: not an X.509 certificate.
pub fn certificate_identity(der: &[u8]) -> Result<CertificateIdentity, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    Ok(CertificateIdentity {
        issuer: DistinguishedName::from_x509(cert.issuer()).ok(),
        subject: DistinguishedName::from_x509(cert.subject()).ok(),
        spki_sha256: SpkiSha256::of_spki(cert.tbs_certificate.subject_pki.raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc4514_text_round_trips_and_compares_by_rdn() {
        let a = dn("CN=viewer.a.demo,O=Ziekenhuis Oost,C=NL");
        assert_eq!(a.to_string(), "CN=viewer.a.demo,O=Ziekenhuis Oost,C=NL");
        // spaces after separators and around '=', any case of the short names, OIDs for types
        assert_eq!(dn("cn = viewer.a.demo, o=Ziekenhuis Oost ,  2.5.4.6=NL"), a);
        assert_eq!(dn("CN=viewer.a.demo;O=Ziekenhuis Oost;C=NL"), a);
        // order matters, and values compare exactly
        assert_ne!(dn("O=Ziekenhuis Oost,CN=viewer.a.demo,C=NL"), a);
        assert_ne!(dn("CN=Viewer.a.demo,O=Ziekenhuis Oost,C=NL"), a);
        assert_ne!(dn("CN=viewer.a.demo,O=Ziekenhuis Oost"), a);
        // a multi-valued RDN is a set
        assert_eq!(dn("CN=x+OU=y,C=NL"), dn("OU=y+CN=x,C=NL"));
        assert_ne!(dn("CN=x+OU=y,C=NL"), dn("CN=x,OU=y,C=NL"));
        // escapes: specials, hex UTF-8, leading '#' and edge spaces kept
        let e = dn(r"CN=a\,b\+c\\d\=e,O=\23x\20,L=Z\C3\BCrich,OU=\ lead");
        assert_eq!(
            e.to_string(),
            r"CN=a\,b\+c\\d\=e,O=\#x\ ,L=Zürich,OU=\ lead"
        );
        assert_eq!(dn(&e.to_string()), e);
        assert_eq!(
            dn("2.16.528.1.1007.99.1=x,C=NL").to_string(),
            "2.16.528.1.1007.99.1=x,C=NL"
        );
    }

    #[test]
    fn hostile_or_malformed_names_are_refused() {
        for bad in [
            "",
            "   ",
            "CN",
            "CN=a,",
            ",CN=a",
            "CN=a,,O=b",
            "=a",
            "XX=a",
            "1=a",
            "2.5.4.x=a",
            "CN=a=b",
            "CN=a\\",
            "CN=a\\q",
            "CN=a\\4",
            "CN=a\\FF",
            "CN=#04024869",
            "C\\N=a",
            "CN=a+",
        ] {
            assert!(
                bad.parse::<DistinguishedName>().is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(
            "CN=".parse::<DistinguishedName>().is_ok(),
            "empty value is a value"
        );
        let long = format!("CN={}", "a".repeat(5000));
        assert!(long.parse::<DistinguishedName>().is_err());
        // generated noise never panics, and whatever parses prints to a text that parses to the same
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet: Vec<char> = "CNO=,+;\\ #\"<>aZ09.éC3BF".chars().collect();
        for _ in 0..20_000 {
            let len = (x % 24) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(n) = s.parse::<DistinguishedName>() {
                assert_eq!(
                    n.to_string().parse::<DistinguishedName>().as_ref(),
                    Ok(&n),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn spki_pin_text() {
        let p = SpkiSha256::of_spki(b"spki");
        let t = p.to_string();
        assert_eq!(t.len(), 44);
        assert_eq!(t.parse::<SpkiSha256>(), Ok(p));
        for bad in [
            "",
            "abc",
            "AAAA",
            &"A".repeat(43),
            &format!("{t}AAAA"),
            "!!!!",
        ] {
            assert!(bad.parse::<SpkiSha256>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn certificate_identity_matches_openssl_names() {
        use crate::pki::generate::{Ca, ServerCertSpec};
        let ca = Ca::new("DUO test CA").unwrap();
        let spec = ServerCertSpec::uzi("12345678".parse().unwrap(), "Ziekenhuis", &["gw.test"], 1);
        let c = ca.issue(&spec).unwrap();
        let der = crate::pki::parse_certificates(c.cert_pem.as_bytes()).unwrap();
        let id = certificate_identity(der[0].as_ref()).unwrap();
        // rcgen writes CN before O: RFC 4514 text lists the last RDN first
        assert_eq!(id.issuer, Some(dn("O=DUO test PKI,CN=DUO test CA")));
        let (_, cert) = X509Certificate::from_der(der[0].as_ref()).unwrap();
        assert_eq!(
            id.spki_sha256,
            SpkiSha256::of_spki(cert.tbs_certificate.subject_pki.raw)
        );
        assert!(id.subject.is_some());
    }
}
