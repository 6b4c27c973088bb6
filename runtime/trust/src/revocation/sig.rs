//! Signature checks of CRLs, OCSP responses and OCSP responder certificates with the signature
//! algorithms rustls uses for certificates (`ring`), so a CRL or OCSP answer is held to the same
//! algorithms as the chains it speaks about. Nothing is parsed by hand: the DER comes from the `der`,
//! `spki` and `x509-cert` crates, the algorithms from rustls' crypto provider.

use x509_cert::der::asn1::AnyRef;
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};

/// The value bytes (without tag and length) of a DER TLV, as rustls names algorithms.
fn value_of(tlv: &[u8]) -> Result<Vec<u8>, String> {
    AnyRef::from_der(tlv)
        .map(|a| a.value().to_vec())
        .map_err(|e| format!("DER: {e}"))
}

/// Verifies `signature` over `message` by the key of `spki_der` (a whole SubjectPublicKeyInfo,
/// DER) with the algorithm `algorithm` names. Errors: unsupported algorithm or key type, or a
/// signature that does not verify (one line).
pub(crate) fn verify(
    spki_der: &[u8],
    algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| format!("key: {e}"))?;
    let key_alg = value_of(&spki.algorithm.to_der().map_err(|e| e.to_string())?)?;
    let sig_alg = value_of(&algorithm.to_der().map_err(|e| e.to_string())?)?;
    let key = spki.subject_public_key.raw_bytes();
    let provider = rustls::crypto::ring::default_provider();
    let mut supported = false;
    for alg in provider.signature_verification_algorithms.all {
        if alg.signature_alg_id().as_ref() != sig_alg.as_slice()
            || alg.public_key_alg_id().as_ref() != key_alg.as_slice()
        {
            continue;
        }
        supported = true;
        if alg.verify_signature(key, message, signature).is_ok() {
            return Ok(());
        }
    }
    if supported {
        Err("signature does not verify".into())
    } else {
        Err(format!(
            "unsupported signature algorithm {} for this key",
            algorithm.oid
        ))
    }
}
