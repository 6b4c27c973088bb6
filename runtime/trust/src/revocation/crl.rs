//! Certificate revocation lists (RFC 5280 section 5): reading a fetched CRL, checking its signature
//! against the key of the CA that issued the certificates it speaks about, and its dates.
//!
//! The CRL is decoded twice, by libraries: `x509-cert` for its dates, issuer and signature, and
//! rustls-webpki (`OwnedCertRevocationList`) for the lookups the certificate checks make, so a CRL
//! webpki cannot use is refused when it arrives rather than when a peer connects.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;
use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode};

use super::sig;

/// A CRL as fetched, checked and kept.
#[derive(Debug)]
pub(crate) struct Crl {
    /// The DER, as rustls' verifier builders take it.
    pub der: CertificateRevocationListDer<'static>,
    /// The same CRL read by webpki, for the per-certificate checks.
    pub list: Arc<webpki::CertRevocationList<'static>>,
    /// thisUpdate.
    pub this_update: Timestamp,
    /// nextUpdate; a CRL without one is treated as due at its fetch time plus the refresh interval.
    pub next_update: Option<Timestamp>,
    /// Serial numbers listed (as `x509-cert` gives them: big-endian, no leading zeros), to see whether
    /// a new CRL revokes a certificate the previous one did not.
    pub serials: HashSet<Vec<u8>>,
}

fn ts(t: x509_cert::time::Time) -> Result<Timestamp, String> {
    let secs = i64::try_from(t.to_unix_duration().as_secs()).map_err(|_| "date out of range")?;
    Timestamp::from_second(secs).map_err(|e| format!("date out of range: {e}"))
}

fn decode(body: &[u8]) -> Result<(CertificateRevocationListDer<'static>, CertificateList), String> {
    let der: CertificateRevocationListDer<'static> = if body.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::from_pem_slice(body).map_err(|e| format!("PEM: {e}"))?
    } else {
        CertificateRevocationListDer::from(body.to_vec())
    };
    let parsed = CertificateList::from_der(der.as_ref()).map_err(|e| format!("not a CRL: {e}"))?;
    Ok((der, parsed))
}

/// The issuer Name (DER) of a CRL (DER or PEM), unchecked: to find the keys that may have signed it.
pub(crate) fn issuer_of(body: &[u8]) -> Result<Vec<u8>, String> {
    let (_, parsed) = decode(body)?;
    parsed
        .tbs_cert_list
        .issuer
        .to_der()
        .map_err(|e| e.to_string())
}

/// Reads a CRL (DER, or PEM `X509 CRL`) and checks that its signature verifies with one of
/// `issuer_keys` (SubjectPublicKeyInfo DER each) and that its issuer is `expected_issuer` when given
/// (the issuer name of the certificate that named this CRL). Errors: one line.
pub(crate) fn read(
    body: &[u8],
    expected_issuer: Option<&[u8]>,
    issuer_keys: &[Vec<u8>],
) -> Result<Crl, String> {
    let (der, parsed) = decode(body)?;
    let tbs = &parsed.tbs_cert_list;
    let issuer = tbs.issuer.to_der().map_err(|e| e.to_string())?;
    if let Some(expected) = expected_issuer
        && expected != issuer.as_slice()
    {
        return Err(format!(
            "CRL of issuer {} is not of the certificate's issuer",
            tbs.issuer
        ));
    }
    let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
    let signature = parsed
        .signature
        .as_bytes()
        .ok_or("signature is not a whole number of bytes")?;
    let mut last = Err(format!("no key of issuer {} is known", tbs.issuer));
    for key in issuer_keys {
        last = sig::verify(key, &parsed.signature_algorithm, &tbs_der, signature);
        if last.is_ok() {
            break;
        }
    }
    last.map_err(|e| format!("CRL signature: {e}"))?;
    let list = webpki::OwnedCertRevocationList::from_der(der.as_ref())
        .map_err(|e| format!("CRL not usable: {e:?}"))?;
    let serials = tbs
        .revoked_certificates
        .iter()
        .flatten()
        .map(|r| r.serial_number.as_bytes().to_vec())
        .collect();
    Ok(Crl {
        this_update: ts(tbs.this_update)?,
        next_update: tbs.next_update.map(ts).transpose()?,
        serials,
        list: Arc::new(list.into()),
        der,
    })
}
