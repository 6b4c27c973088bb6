//! XML Signature of ITI-40 XUA assertions: the signer of the assertions this gateway issues
//! ([`XmlDsigSigner`]) and the verifier of those it receives ([`XmlDsigVerifier`]).
//!
//! Profile (Dutch Technical Agreement for connecting XCA communities v1.2; the public Mitz client
//! `mitz-connector`; SAML 2.0 core 5.4): an enveloped `ds:Signature` as the child of the
//! `saml2:Assertion` right after its `saml2:Issuer`, one `ds:Reference` to `#<Assertion/@ID>` with the
//! transforms enveloped-signature and exclusive C14N (PrefixList `xs`, for the `xsi:type` values),
//! CanonicalizationMethod exclusive C14N, SHA-256 digest, RSA-SHA256 for RSA keys and ECDSA-SHA256 for
//! EC keys, the signing certificate (chain, leaf first) in `ds:KeyInfo/ds:X509Data`.
//!
//! Verification checks the structure first, with this crate's own hardened reader, so that the signature
//! can only cover the very element whose attributes are used: exactly one `ds:Signature`, a direct child
//! of the assertion; exactly one `ds:Reference`, whose URI is `#` + the assertion's own ID; transforms
//! exactly enveloped-signature then exclusive C14N; SHA-2 digest and signature algorithms (RSA or ECDSA)
//! only; nothing in `ds:Signature` but SignedInfo, SignatureValue and KeyInfo. Then bergshamra verifies
//! the signature with only the certificates of the issuer trust list of the calling community as
//! candidate keys (the certificate in KeyInfo is never trusted for itself), rejects duplicate IDs, and
//! must report exactly that one reference resolved to the document element. A trusted certificate counts
//! only inside its validity period.
//!
//! Canonicalisation, digests and signatures are bergshamra's (pure Rust, RustCrypto provider); this
//! module writes the signature template and checks the structure around it. The xmlsec1 interop tests
//! (`runtime/tests/xua_signature.rs`) prove both directions.

use std::path::Path;

use bergshamra_dsig::{DsigContext, VerifyResult};
use bergshamra_keys::{Key, KeysManager};
use jiff::Timestamp;

use crate::ihe::xua::{AssertionSigner, AssertionVerifier, Received, XuaError};
use crate::pki::{CertificateInfo, certificate_info, parse_certificates};
use crate::xml::{Elem, Limits, Reader, XmlError, ns};

/// Algorithm URIs (W3C XML Signature 1.1, RFC 6931).
pub mod alg {
    /// Exclusive XML Canonicalization 1.0, without comments.
    pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
    /// The enveloped-signature transform.
    pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
    /// SHA-256 digest.
    pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
    /// SHA-384 digest.
    pub const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
    /// SHA-512 digest.
    pub const SHA512: &str = "http://www.w3.org/2001/04/xmlenc#sha512";
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    pub const RSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384";
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    pub const RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";
    /// ECDSA with SHA-256.
    pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
    /// ECDSA with SHA-384.
    pub const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
    /// ECDSA with SHA-512.
    pub const ECDSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512";

    /// Signature methods a received assertion may use: RSA and ECDSA with SHA-2 (no SHA-1, no HMAC, no
    /// DSA).
    pub const ACCEPTED_SIGNATURE: &[&str] = &[
        RSA_SHA256,
        RSA_SHA384,
        RSA_SHA512,
        ECDSA_SHA256,
        ECDSA_SHA384,
        ECDSA_SHA512,
    ];
    /// Digest methods a received assertion may use: SHA-2.
    pub const ACCEPTED_DIGEST: &[&str] = &[SHA256, SHA384, SHA512];
}

fn limits() -> Limits {
    // as ihe::xua: an assertion with a certificate chain is some tens of kilobytes
    Limits {
        max_bytes: 1024 * 1024,
        max_depth: 32,
        max_elements: 10_000,
        max_namespace_bindings: 64,
    }
}

fn sig_err(msg: impl Into<String>) -> XuaError {
    XuaError::Signature(msg.into())
}

/// Signs the assertions this gateway issues: the signing key and its certificate chain (the hospital's
/// UZI server certificate by default, or a separate IdP key, `xua.signing`).
pub struct XmlDsigSigner {
    key: Key,
    method: &'static str,
    info: CertificateInfo,
}

impl std::fmt::Debug for XmlDsigSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("XmlDsigSigner")
            .field("method", &self.method)
            .field("subject", &self.info.subject)
            .finish()
    }
}

impl XmlDsigSigner {
    /// A signer from PEM text: `cert_pem` the certificate chain (leaf first), `key_pem` its private key
    /// (PKCS#8, or PKCS#1 for RSA). RSA keys sign RSA-SHA256, EC P-256 keys ECDSA-SHA256.
    ///
    /// Errors ([`XuaError::Signing`]): no certificate, an unreadable or unsupported key (SEC1 EC keys:
    /// convert with `openssl pkcs8 -topk8 -nocrypt`), or a key that is not the leaf certificate's.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<XmlDsigSigner, XuaError> {
        let chain = parse_certificates(cert_pem).map_err(|e| XuaError::Signing(e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| XuaError::Signing("no certificate".into()))?;
        let info = certificate_info(leaf).map_err(|e| XuaError::Signing(e.to_string()))?;
        let text = std::str::from_utf8(key_pem)
            .map_err(|_| XuaError::Signing("private key is not PEM text".into()))?;
        if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            return Err(XuaError::Signing(
                "SEC1 EC private keys are not read; convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)"
                    .into(),
            ));
        }
        let mut key = bergshamra_keys::loader::load_pem_auto(key_pem, None)
            .map_err(|e| XuaError::Signing(format!("private key: {e}")))?;
        if !key.data.has_private_key() {
            return Err(XuaError::Signing(
                "the key file holds no private key".into(),
            ));
        }
        let method = match key.data.algorithm_name() {
            "RSA" => alg::RSA_SHA256,
            "EC-P256" => alg::ECDSA_SHA256,
            other => {
                return Err(XuaError::Signing(format!(
                    "{other} keys are not used for XUA signatures (RSA or EC P-256)"
                )));
            }
        };
        let spki = key
            .data
            .to_spki_der()
            .ok_or_else(|| XuaError::Signing("no public key".into()))?;
        if public_key_bits(&spki) != leaf_public_key_bits(leaf) {
            return Err(XuaError::Signing(format!(
                "the private key does not belong to certificate {}",
                info.subject
            )));
        }
        key.x509_chain = chain.iter().map(|c| c.as_ref().to_vec()).collect();
        Ok(XmlDsigSigner { key, method, info })
    }

    /// [`XmlDsigSigner::from_pem`] of two PEM files. Errors name the file.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<XmlDsigSigner, String> {
        let cert = std::fs::read(cert_file)
            .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?;
        let key = std::fs::read(key_file)
            .map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
        XmlDsigSigner::from_pem(&cert, &key)
            .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))
    }

    /// The signing certificate (leaf), DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.key.x509_chain[0]
    }

    /// The signing certificate (leaf) as PEM text, for a connection document or a published
    /// DuoCommunity.
    pub fn certificate_pem(&self) -> String {
        crate::pki::der_to_pem("CERTIFICATE", self.certificate_der())
    }

    /// The signing certificate's subject, validity and UZI identity.
    pub fn certificate_info(&self) -> &CertificateInfo {
        &self.info
    }

    /// The SignatureMethod URI used.
    pub fn signature_method(&self) -> &'static str {
        self.method
    }

    fn template(&self, id: &str) -> String {
        format!(
            "<ds:Signature xmlns:ds=\"{ds}\"><ds:SignedInfo>\
             <ds:CanonicalizationMethod Algorithm=\"{c14n}\"/>\
             <ds:SignatureMethod Algorithm=\"{method}\"/>\
             <ds:Reference URI=\"#{id}\"><ds:Transforms>\
             <ds:Transform Algorithm=\"{env}\"/>\
             <ds:Transform Algorithm=\"{c14n}\"><ec:InclusiveNamespaces xmlns:ec=\"{c14n}\" PrefixList=\"xs\"/></ds:Transform>\
             </ds:Transforms><ds:DigestMethod Algorithm=\"{sha}\"/><ds:DigestValue></ds:DigestValue>\
             </ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>\
             <ds:KeyInfo><ds:X509Data></ds:X509Data></ds:KeyInfo></ds:Signature>",
            ds = ns::DS,
            c14n = alg::EXC_C14N,
            env = alg::ENVELOPED,
            sha = alg::SHA256,
            method = self.method,
        )
    }
}

/// The subjectPublicKey bits of an SPKI (DER), to compare keys whatever the encoding of the parameters.
fn public_key_bits(spki: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
        .ok()
        .map(|(_, k)| k.subject_public_key.data.to_vec())
}

fn leaf_public_key_bits(cert: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(cert)
        .ok()
        .map(|(_, c)| c.public_key().subject_public_key.data.to_vec())
}

/// Whether `s` can be an XML ID (an NCName of the characters this gateway writes and peers use).
fn is_plain_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Where the `saml2:Issuer` child of the assertion ends (byte offset in `xml`) and the assertion's ID.
fn issuer_end(xml: &str) -> Result<(usize, String), XuaError> {
    let mut r = Reader::new(xml.as_bytes(), &limits())?;
    let root = r.root()?;
    if !root.is(ns::SAML2, "Assertion") {
        return Err(XuaError::Signing("not a saml2:Assertion".into()));
    }
    let id = root.required_attr("ID")?.to_owned();
    let first = r
        .child(&root)?
        .ok_or_else(|| XuaError::Signing("assertion has no saml2:Issuer".into()))?;
    if !first.is(ns::SAML2, "Issuer") {
        return Err(XuaError::Signing(
            "the first child of the assertion is not saml2:Issuer".into(),
        ));
    }
    let raw = r.raw(&first)?;
    let end = raw.as_ptr() as usize - xml.as_ptr() as usize + raw.len();
    Ok((end, id))
}

impl AssertionSigner for XmlDsigSigner {
    /// Puts the signature template after `saml2:Issuer` (the place SAML 2.0 core's schema gives
    /// `ds:Signature`) and has bergshamra fill in digest, signature value and certificate.
    fn sign(&self, assertion_xml: String) -> Result<String, XuaError> {
        let (end, id) = issuer_end(&assertion_xml)?;
        if !is_plain_ncname(&id) {
            return Err(XuaError::Signing(format!(
                "assertion ID {id:?} is not an NCName"
            )));
        }
        let template = self.template(&id);
        let mut doc = String::with_capacity(assertion_xml.len() + template.len() + 4096);
        doc.push_str(&assertion_xml[..end]);
        doc.push_str(&template);
        doc.push_str(&assertion_xml[end..]);
        let mut km = KeysManager::new();
        km.add_key(self.key.clone());
        let ctx = DsigContext::new(km);
        bergshamra_dsig::sign::sign_owned(&ctx, doc).map_err(|e| XuaError::Signing(e.to_string()))
    }
}

/// One entry of an issuer trust list (the connection document's IdP issuer and certificate): the
/// `saml2:Issuer` value and the certificates whose keys may sign that issuer's assertions.
#[derive(Clone)]
pub struct TrustedIssuer {
    /// The `saml2:Issuer` value, compared exactly (after trimming).
    pub issuer: String,
    certificates: Vec<TrustedCertificate>,
}

#[derive(Clone)]
struct TrustedCertificate {
    key: Key,
    info: CertificateInfo,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("issuer", &self.issuer)
            .field(
                "certificates",
                &self
                    .certificates
                    .iter()
                    .map(|c| c.info.subject.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TrustedIssuer {
    /// An issuer and its certificates (PEM text, one or more `CERTIFICATE` blocks: several during a key
    /// rollover). Errors: one line naming what is wrong (no certificate, unreadable, a key type that
    /// cannot sign XUA assertions).
    pub fn from_pem(issuer: &str, certificates_pem: &str) -> Result<TrustedIssuer, String> {
        let issuer = issuer.trim();
        if issuer.is_empty() {
            return Err("issuer is empty".into());
        }
        let ders = parse_certificates(certificates_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut certificates = Vec::with_capacity(ders.len());
        for der in &ders {
            let info = certificate_info(der).map_err(|e| e.to_string())?;
            let key = bergshamra_keys::loader::load_x509_cert_der(der)
                .map_err(|e| format!("certificate {}: {e}", info.subject))?;
            match key.data.algorithm_name() {
                "RSA" | "EC-P256" | "EC-P384" | "EC-P521" => {}
                other => {
                    return Err(format!(
                        "certificate {}: {other} keys are not accepted for XUA signatures",
                        info.subject
                    ));
                }
            }
            certificates.push(TrustedCertificate { key, info });
        }
        Ok(TrustedIssuer {
            issuer: issuer.to_owned(),
            certificates,
        })
    }

    /// Subjects and validity of the certificates, for logs and status.
    pub fn certificates(&self) -> impl Iterator<Item = &CertificateInfo> {
        self.certificates.iter().map(|c| &c.info)
    }
}

/// Verifies received assertions against the issuer trust list of the calling community (see the module
/// documentation for every rule).
pub struct XmlDsigVerifier<'a> {
    /// The trust list of the calling community (empty: nobody is trusted).
    pub issuers: Vec<&'a TrustedIssuer>,
    /// Accept an assertion without any `ds:Signature` (a conformance harness that cannot sign; the
    /// gateway's `xua.allowUnsigned`). A signature that is present is verified all the same.
    pub allow_unsigned: bool,
    /// The time the trusted certificates must be valid at.
    pub now: Timestamp,
}

impl AssertionVerifier for XmlDsigVerifier<'_> {
    fn verify(&self, a: &Received<'_>) -> Result<(), XuaError> {
        if !a.has_signature {
            return if self.allow_unsigned {
                Ok(())
            } else {
                Err(XuaError::Unsigned)
            };
        }
        check_structure(a.xml, a.id)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == a.issuer)
            .ok_or_else(|| XuaError::UntrustedIssuer(a.issuer.to_owned()))?;
        let mut km = KeysManager::new();
        let mut expired = Vec::new();
        for c in &issuer.certificates {
            if c.info.is_valid_at(self.now) {
                km.add_key(c.key.clone());
            } else {
                expired.push(c.info.subject.as_str());
            }
        }
        if km.is_empty() {
            return Err(sig_err(format!(
                "no certificate of issuer {:?} is valid now ({})",
                issuer.issuer,
                expired.join("; ")
            )));
        }
        // secure defaults: only the trust list's keys, strict reference positions, duplicate IDs refused,
        // every reference digested locally; no base directory, so no file is ever read
        let ctx = DsigContext::new(km);
        let doc = uppsala::parse(a.xml).map_err(|e| sig_err(format!("not verified: {e}")))?;
        let result = bergshamra_dsig::verify::verify_document_with_source(&ctx, &doc, Some(a.xml))
            .map_err(|e| sig_err(format!("not verified: {e}")))?;
        match result {
            VerifyResult::Invalid { reason } => Err(sig_err(reason)),
            VerifyResult::Valid {
                signature_node,
                references,
                ..
            } => {
                // the one reference must be the document element (the assertion itself), and the
                // signature its child: what bergshamra checked is what ihe::xua reads
                let [only] = references.as_slice() else {
                    return Err(sig_err(format!(
                        "{} references verified, exactly one expected",
                        references.len()
                    )));
                };
                let root = doc.document_element();
                if !only.digest_verified
                    || root.is_none()
                    || only.resolved_node != root
                    || doc.parent(signature_node) != root
                {
                    return Err(sig_err(
                        "the signature does not cover the assertion element itself",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The structural rules of the module documentation, checked before any cryptography.
fn check_structure(xml: &str, id: &str) -> Result<(), XuaError> {
    if !is_plain_ncname(id) {
        return Err(sig_err(format!("assertion ID {id:?} is not an NCName")));
    }
    let mut r = Reader::new(xml.as_bytes(), &limits())?;
    let root = r.root()?;
    let mut signature = None;
    let mut signatures_below = 0;
    while let Some(el) = r.child(&root)? {
        if el.is(ns::DS, "Signature") {
            if signature.is_some() {
                return Err(XuaError::Ambiguous(
                    "SAML assertion holds more than one ds:Signature".into(),
                ));
            }
            signature = Some(read_signature(&mut r, &el)?);
        } else {
            signatures_below += count_signatures(&mut r, &el)?;
        }
    }
    if signatures_below > 0 {
        return Err(sig_err(
            "a ds:Signature inside the assertion's content: only one, as the assertion's child, is accepted",
        ));
    }
    let s = signature.ok_or(XuaError::Unsigned)?;
    if s.c14n.as_deref() != Some(alg::EXC_C14N) {
        return Err(sig_err(format!(
            "CanonicalizationMethod {:?} is not exclusive C14N",
            s.c14n.unwrap_or_default()
        )));
    }
    match s.method.as_deref() {
        Some(m) if alg::ACCEPTED_SIGNATURE.contains(&m) => {}
        m => {
            return Err(sig_err(format!(
                "SignatureMethod {:?} is not RSA or ECDSA with SHA-2",
                m.unwrap_or_default()
            )));
        }
    }
    let [reference] = s.references.as_slice() else {
        return Err(sig_err(format!(
            "SignedInfo holds {} references, exactly one (to the assertion) is accepted",
            s.references.len()
        )));
    };
    let expected = format!("#{id}");
    if reference.uri.as_deref() != Some(expected.as_str()) {
        return Err(sig_err(format!(
            "the reference URI {:?} is not the assertion's ID {expected:?}",
            reference.uri.as_deref().unwrap_or("(none)")
        )));
    }
    if reference.transforms != [alg::ENVELOPED, alg::EXC_C14N] {
        return Err(sig_err(format!(
            "transforms {:?}: exactly enveloped-signature then exclusive C14N are accepted",
            reference.transforms
        )));
    }
    match reference.digest.as_deref() {
        Some(d) if alg::ACCEPTED_DIGEST.contains(&d) => Ok(()),
        d => Err(sig_err(format!(
            "DigestMethod {:?} is not SHA-2",
            d.unwrap_or_default()
        ))),
    }
}

struct SignatureParts {
    c14n: Option<String>,
    method: Option<String>,
    references: Vec<ReferenceParts>,
}

struct ReferenceParts {
    uri: Option<String>,
    transforms: Vec<String>,
    digest: Option<String>,
}

fn count_signatures<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<usize, XmlError> {
    let mut n = 0;
    while let Some(c) = r.child(el)? {
        if c.is(ns::DS, "Signature") {
            n += 1;
        }
        n += count_signatures(r, &c)?;
    }
    Ok(n)
}

fn algorithm(el: &Elem<'_>) -> Option<String> {
    el.attr("Algorithm").map(|a| a.trim().to_owned())
}

fn read_signature<'i>(r: &mut Reader<'i>, sig: &Elem<'i>) -> Result<SignatureParts, XuaError> {
    let mut parts = SignatureParts {
        c14n: None,
        method: None,
        references: Vec::new(),
    };
    let mut seen_signed_info = false;
    while let Some(el) = r.child(sig)? {
        if el.is(ns::DS, "SignedInfo") && !seen_signed_info {
            seen_signed_info = true;
            while let Some(c) = r.child(&el)? {
                if c.is(ns::DS, "CanonicalizationMethod") && parts.c14n.is_none() {
                    parts.c14n = algorithm(&c);
                    r.skip(&c)?;
                } else if c.is(ns::DS, "SignatureMethod") && parts.method.is_none() {
                    parts.method = algorithm(&c);
                    r.skip(&c)?;
                } else if c.is(ns::DS, "Reference") {
                    parts.references.push(read_reference(r, &c)?);
                } else {
                    return Err(sig_err(format!(
                        "unexpected {} in ds:SignedInfo",
                        c.qualified()
                    )));
                }
            }
        } else if el.is(ns::DS, "SignatureValue") || el.is(ns::DS, "KeyInfo") {
            r.skip(&el)?;
        } else {
            // ds:Object and anything else could carry content a reference might point into
            return Err(sig_err(format!(
                "unexpected {} in ds:Signature",
                el.qualified()
            )));
        }
    }
    if !seen_signed_info {
        return Err(sig_err("ds:Signature has no ds:SignedInfo"));
    }
    Ok(parts)
}

fn read_reference<'i>(
    r: &mut Reader<'i>,
    reference: &Elem<'i>,
) -> Result<ReferenceParts, XuaError> {
    let mut parts = ReferenceParts {
        uri: reference.attr("URI").map(str::to_owned),
        transforms: Vec::new(),
        digest: None,
    };
    while let Some(c) = r.child(reference)? {
        if c.is(ns::DS, "Transforms") {
            while let Some(t) = r.child(&c)? {
                if !t.is(ns::DS, "Transform") {
                    return Err(sig_err(format!(
                        "unexpected {} in ds:Transforms",
                        t.qualified()
                    )));
                }
                parts.transforms.push(algorithm(&t).unwrap_or_default());
                // only exclusive C14N's InclusiveNamespaces may parameterise a transform
                while let Some(p) = r.child(&t)? {
                    if !p.is(alg::EXC_C14N, "InclusiveNamespaces") {
                        return Err(sig_err(format!(
                            "unexpected {} in ds:Transform",
                            p.qualified()
                        )));
                    }
                    r.skip(&p)?;
                }
            }
        } else if c.is(ns::DS, "DigestMethod") {
            parts.digest = algorithm(&c);
            r.skip(&c)?;
        } else if c.is(ns::DS, "DigestValue") {
            r.skip(&c)?;
        } else {
            return Err(sig_err(format!(
                "unexpected {} in ds:Reference",
                c.qualified()
            )));
        }
    }
    Ok(parts)
}
