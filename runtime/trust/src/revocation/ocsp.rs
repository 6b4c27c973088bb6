//! OCSP (RFC 6960): the request for one certificate and the checks on the answer, with RustCrypto's
//! `x509-ocsp` codec.
//!
//! An answer counts only when it is a successful basic response, names exactly the certificate asked
//! about (same CertID), and is signed either by the CA that issued that certificate or by a responder
//! certificate that CA issued directly with the `id-kp-OCSPSigning` purpose (RFC 6960 4.2.2.2),
//! valid now. Its thisUpdate may not lie in the future (beyond [`CLOCK_SKEW_SECONDS`]); whether it
//! is still fresh enough is the caller's policy. No nonce is sent: most responders, PKIoverheid's
//! among them, answer from pre-signed responses; freshness is bounded by thisUpdate / nextUpdate.

use jiff::Timestamp;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha1::{Digest, Sha1};
use x509_cert::der::asn1::{Null, ObjectIdentifier, OctetString};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::oid::db::rfc5280::ID_KP_OCSP_SIGNING;
use x509_cert::der::oid::db::rfc5912::ID_SHA_1;
use x509_cert::der::{Decode, Encode};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest,
};

use super::sig;

/// Seconds a responder's clock may run ahead of ours.
pub(crate) const CLOCK_SKEW_SECONDS: i64 = 300;
/// Largest OCSP answer read, bytes.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most certificates an answer may carry to find its responder certificate among.
const MAX_RESPONDER_CERTS: usize = 4;

/// `id-kp-OCSPSigning`, as webpki names a required extended key usage (the OID's value bytes).
static OCSP_SIGNING: ObjectIdentifier = ID_KP_OCSP_SIGNING;

/// The CA that issued the certificate asked about: its public key (SubjectPublicKeyInfo DER) signs
/// answers itself or issues the responder certificate that does.
#[derive(Debug, Clone)]
pub(crate) struct Issuer {
    /// SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// The same CA as a webpki trust anchor, to verify a delegated responder certificate against.
    pub anchor: TrustAnchor<'static>,
}

/// One certificate's OCSP question.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// The CertID asked about (SHA-1, as RFC 5019 and every public responder expect).
    pub cert_id: CertId,
    /// DER of `cert_id`: the cache key.
    pub key: Vec<u8>,
    /// The OCSPRequest to POST, DER.
    pub request: Vec<u8>,
    /// Who may answer.
    pub issuer: Issuer,
}

/// What a checked answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not revoked.
    Good,
    /// Revoked.
    Revoked,
    /// The responder does not know the certificate.
    Unknown,
}

/// A checked answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The certificate's status.
    pub status: Status,
    /// thisUpdate.
    pub this_update: Timestamp,
    /// nextUpdate, when the responder gives one.
    pub next_update: Option<Timestamp>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The question for the certificate whose issuer Name is `issuer_name` (DER with header) and serial
/// `serial` (INTEGER value bytes), issued by `issuer`.
pub(crate) fn query(issuer_name: &[u8], serial: &[u8], issuer: Issuer) -> Result<Query, String> {
    let spki = SubjectPublicKeyInfoRef::from_der(&issuer.spki).map_err(err)?;
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA_1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(Sha1::digest(issuer_name).to_vec()).map_err(err)?,
        issuer_key_hash: OctetString::new(
            Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec(),
        )
        .map_err(err)?,
        serial_number: SerialNumber::new(serial).map_err(err)?,
    };
    let request = OcspRequest {
        tbs_request: TbsRequest {
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            ..TbsRequest::default()
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(err)?;
    Ok(Query {
        key: cert_id.to_der().map_err(err)?,
        cert_id,
        request,
        issuer,
    })
}

fn ts(t: &x509_ocsp::OcspGeneralizedTime) -> Result<Timestamp, String> {
    let secs = i64::try_from(t.0.to_unix_duration().as_secs()).map_err(|_| "date out of range")?;
    Timestamp::from_second(secs).map_err(err)
}

/// Whether `basic` is signed by the issuer itself or by a responder certificate in it that the issuer
/// authorised (issued directly, `id-kp-OCSPSigning`, valid at `now`).
fn check_signer(basic: &BasicOcspResponse, issuer: &Issuer, now: UnixTime) -> Result<(), String> {
    let tbs = basic.tbs_response_data.to_der().map_err(err)?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or("signature is not a whole number of bytes")?;
    if sig::verify(&issuer.spki, &basic.signature_algorithm, &tbs, signature).is_ok() {
        return Ok(());
    }
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let anchors = [issuer.anchor.clone()];
    for cert in basic.certs.iter().flatten().take(MAX_RESPONDER_CERTS) {
        let der = CertificateDer::from(cert.to_der().map_err(err)?);
        let Ok(ee) = webpki::EndEntityCert::try_from(&der) else {
            continue;
        };
        let authorised = ee.verify_for_usage(
            algs,
            &anchors,
            &[],
            now,
            webpki::KeyUsage::required(OCSP_SIGNING.as_bytes()),
            None,
            None,
        );
        if authorised.is_err() {
            continue;
        }
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(err)?;
        if sig::verify(&spki, &basic.signature_algorithm, &tbs, signature).is_ok() {
            return Ok(());
        }
    }
    Err("not signed by the certificate's issuer or a responder it authorised".into())
}

/// Checks an OCSP answer (`body`, DER) to `q` at `now`. Errors: one line saying what is wrong.
pub(crate) fn check(body: &[u8], q: &Query, now: UnixTime) -> Result<Answer, String> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
    }
    let resp = OcspResponse::from_der(body).map_err(|e| format!("not an OCSP response: {e}"))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(format!("responder answered {:?}", resp.response_status));
    }
    let bytes = resp
        .response_bytes
        .ok_or("successful answer without response")?;
    if bytes.response_type != BasicOcspResponse::OID {
        return Err(format!(
            "response type {} is not basic",
            bytes.response_type
        ));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("basic response: {e}"))?;
    let mut ours = basic
        .tbs_response_data
        .responses
        .iter()
        .filter(|r| r.cert_id == q.cert_id);
    let single = ours
        .next()
        .ok_or("the answer is about another certificate")?;
    if ours.next().is_some() {
        return Err("the answer names the certificate twice".into());
    }
    check_signer(&basic, &q.issuer, now)?;
    let this_update = ts(&single.this_update)?;
    let next_update = single.next_update.as_ref().map(ts).transpose()?;
    let now_ts =
        Timestamp::from_second(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)).map_err(err)?;
    if this_update.as_second() > now_ts.as_second() + CLOCK_SKEW_SECONDS {
        return Err(format!("thisUpdate {this_update} lies in the future"));
    }
    if let Some(n) = next_update
        && n < this_update
    {
        return Err(format!("nextUpdate {n} before thisUpdate {this_update}"));
    }
    let status = match single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Revoked(_) => Status::Revoked,
        CertStatus::Unknown(_) => Status::Unknown,
    };
    Ok(Answer {
        status,
        this_update,
        next_update,
    })
}
