//! XML foundation shared by the IHE codecs (`ihe`) and the Mitz client (`consent`): a bounded,
//! namespace-aware pull reader ([`Reader`]) and a small writer ([`Writer`]) that always produces the
//! canonical prefixes of [`ns`].

#[cfg(any(test, feature = "test-support"))]
pub mod compare;
mod read;
mod write;

pub use read::{Attr, Elem, Ns, Reader, UNDECLARED_PREFIX_NS};
pub use write::Writer;

/// Namespace URIs used on the wire (docs/DOMAIN.md "Transactions and wire facts", "Mitz").
pub mod ns {
    /// SOAP 1.2 envelope.
    pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
    /// WS-Addressing 1.0.
    pub const WSA: &str = "http://www.w3.org/2005/08/addressing";
    /// ebRS 3.0 query.
    pub const QUERY: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0";
    /// ebRIM 3.0.
    pub const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
    /// ebRS 3.0 registry services (RegistryResponse, RegistryErrorList).
    pub const RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
    /// ebRS 3.0 life cycle management.
    pub const LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";
    /// XDS.b (retrieve document set).
    pub const XDSB: &str = "urn:ihe:iti:xds-b:2007";
    /// XDS-I.b (retrieve imaging document set).
    pub const XDSI: &str = "urn:ihe:rad:xdsi-b:2009";
    /// XOP include.
    pub const XOP: &str = "http://www.w3.org/2004/08/xop/include";
    /// XML Schema instance.
    pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
    /// XML Schema.
    pub const XS: &str = "http://www.w3.org/2001/XMLSchema";
    /// The `xml:` namespace.
    pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
    /// WS-Security 1.0 extension.
    pub const WSSE: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
    /// WS-Security utility.
    pub const WSU: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
    /// SAML 2.0 assertion.
    pub const SAML2: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
    /// SAML 2.0 protocol.
    pub const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
    /// XML digital signature.
    pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
    /// XACML 3.0 core (Mitz closed question).
    pub const XACML: &str = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17";
    /// SAML profile of XACML 3.0, protocol (XACMLAuthzDecisionQuery).
    pub const XACML_SAMLP: &str =
        "urn:oasis:names:tc:xacml:3.0:profile:saml2.0:v2:schema:protocol:wd-14";
    /// SAML profile of XACML 3.0, assertion.
    pub const XACML_SAML: &str =
        "urn:oasis:names:tc:xacml:3.0:profile:saml2.0:v2:schema:assertion:wd-14";
    /// HL7 v3 (II / CV attribute values, CDA).
    pub const HL7V3: &str = "urn:hl7-org:v3";
    /// IHE XCPD (Mitz open question).
    pub const XCPD: &str = "urn:ihe:iti:xcpd:2009";

    /// Every namespace above, for cheap resolution to `&'static str`.
    pub const KNOWN: &[&str] = &[
        SOAP12,
        WSA,
        QUERY,
        RIM,
        RS,
        LCM,
        XDSB,
        XDSI,
        XOP,
        XSI,
        XS,
        XML,
        WSSE,
        WSU,
        SAML2,
        SAMLP,
        DS,
        XACML,
        XACML_SAMLP,
        XACML_SAML,
        HL7V3,
        XCPD,
    ];
}

/// Bounds on what a document may make the reader do (issue: hostile input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, bytes.
    pub max_bytes: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
    /// Most namespace declarations in scope at once.
    pub max_namespace_bindings: usize,
}

impl Default for Limits {
    /// 64 MiB, depth 64, 2,000,000 elements, 256 namespace bindings.
    fn default() -> Self {
        Limits {
            max_bytes: 64 * 1024 * 1024,
            max_depth: 64,
            max_elements: 2_000_000,
            max_namespace_bindings: 256,
        }
    }
}

/// Why a document was not read. Every variant is a peer's fault (SOAP `Sender`), none a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// A `<!DOCTYPE` was present: DTDs (and with them entity definitions) are never processed.
    #[error("XML document type declarations (DTD) are not accepted")]
    Dtd,
    /// An entity reference other than the five predefined ones or a character reference.
    #[error("undefined XML entity reference &{0};")]
    Entity(String),
    /// Nesting deeper than the limit.
    #[error("XML nested deeper than {0} elements")]
    TooDeep(usize),
    /// More elements than the limit.
    #[error("XML document has more than {0} elements")]
    TooManyElements(usize),
    /// Input larger than the limit.
    #[error("XML document larger than {0} bytes")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("XML document is not UTF-8")]
    Encoding,
    /// Not well-formed.
    #[error("malformed XML at byte {pos}: {msg}")]
    Syntax {
        /// Byte offset of the error.
        pos: u64,
        /// What the tokenizer found.
        msg: String,
    },
    /// A required element or attribute is absent.
    #[error("missing {0}")]
    Missing(String),
    /// An element other than the expected one.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the schema requires here.
        expected: String,
        /// What the document has.
        found: String,
    },
    /// A value that does not parse (an OID, a number, a status URI ...).
    #[error("invalid {field}: {msg}")]
    Invalid {
        /// The element or attribute.
        field: String,
        /// Why.
        msg: String,
    },
}

impl XmlError {
    /// An [`XmlError::Invalid`].
    pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> XmlError {
        XmlError::Invalid {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests;
