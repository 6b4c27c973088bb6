//! rustls certificate verifiers with revocation checking: rustls' own `WebPkiClientVerifier` /
//! `WebPkiServerVerifier` built `with_crls` from the checker's current CRLs (rebuilt when they
//! change) verify the chain and refuse a certificate a cached CRL lists; then
//! [`Checker::decide`](super::Checker::decide) applies the revocation policy (usable data, OCSP,
//! `whenUnavailable`). A refusal is a TLS alert (`certificate_revoked` or `certificate_unknown`) and a
//! log line naming the certificate.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

use super::{Checker, Usage, Verdict};

/// Subject of a certificate for log lines (never fails: `?` when unreadable).
fn subject(der: &CertificateDer<'_>) -> String {
    crate::pki::certificate_info(der.as_ref())
        .map(|i| i.subject)
        .unwrap_or_else(|_| "?".into())
}

/// Counts and logs a refusal by rustls' own verifier when it is a revocation (a cached CRL lists the
/// certificate or one of its CAs); other chain errors are rustls' to report.
fn inner_refusal(e: Error, ee: &CertificateDer<'_>, side: &str) -> Error {
    if matches!(e, Error::InvalidCertificate(CertificateError::Revoked)) {
        super::METRICS.check("revoked");
        tracing::warn!(certificate = %subject(ee), side, "certificate refused: revoked (CRL)");
    }
    e
}

/// The TLS outcome of a verdict, logged.
fn conclude(verdict: Verdict, ee: &CertificateDer<'_>, side: &str) -> Result<(), Error> {
    match &verdict {
        Verdict::Good(_) | Verdict::Unchecked { accepted: true } => Ok(()),
        Verdict::Revoked(_) => {
            tracing::warn!(certificate = %subject(ee), side, %verdict, "certificate refused: revoked");
            Err(Error::InvalidCertificate(CertificateError::Revoked))
        }
        Verdict::Unavailable { accepted: true, .. } => {
            tracing::warn!(certificate = %subject(ee), side, %verdict, "certificate accepted without revocation data (whenUnavailable: accept)");
            Ok(())
        }
        Verdict::Unavailable {
            accepted: false, ..
        }
        | Verdict::Unchecked { accepted: false } => {
            tracing::warn!(certificate = %subject(ee), side, %verdict, "certificate refused: no usable revocation data");
            Err(Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus,
            ))
        }
    }
}

/// Checks a client chain (leaf first) again with the data the checker holds now: the chain must still
/// verify against `roots` (not expired) and pass the revocation policy. For open connections after
/// [`Checker::generation`](super::Checker::generation) changed. Errors: why it is refused (one line).
pub fn recheck_client(
    checker: &Checker,
    roots: &RootCertStore,
    chain: &[CertificateDer<'static>],
) -> Result<(), String> {
    let (ee, rest) = chain.split_first().ok_or("no client certificate")?;
    let verdict = checker
        .decide(roots, ee, rest, Usage::Client, &[], UnixTime::now())
        .map_err(|e| e.to_string())?;
    let text = verdict.to_string();
    conclude(verdict, ee, "client").map_err(|_| text)
}

/// Verifies TLS clients (the listener's peers and the trusted front end): chain to `roots`, then
/// revocation.
pub struct ClientVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    checker: Checker,
    hints: Vec<DistinguishedName>,
    inner: Mutex<(u64, Arc<dyn ClientCertVerifier>)>,
}

impl std::fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientVerifier").finish_non_exhaustive()
    }
}

fn build_client(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    checker: &Checker,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(checker.crl_ders())
        // usable data and the unavailable policy are decided by the checker afterwards
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| e.to_string())
}

impl ClientVerifier {
    /// A verifier for `roots` with `checker`'s CRLs. Errors: no usable trust anchor.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        checker: Checker,
    ) -> Result<ClientVerifier, String> {
        checker.register_anchors(&roots);
        let generation = checker.crl_generation();
        let inner = build_client(&roots, &provider, &checker)?;
        Ok(ClientVerifier {
            hints: roots.subjects(),
            roots,
            provider,
            checker,
            inner: Mutex::new((generation, inner)),
        })
    }

    /// The rustls verifier with the current CRLs (rebuilt when they changed; on failure the last one
    /// stays).
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let generation = self.checker.crl_generation();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != generation {
            match build_client(&self.roots, &self.provider, &self.checker) {
                Ok(v) => *g = (generation, v),
                Err(e) => {
                    tracing::error!(error = %e, "revocation: CRLs not taken into the TLS verifier")
                }
            }
        }
        g.1.clone()
    }

    /// Verifies a client chain again (an open connection after revocation data changed).
    pub fn recheck(&self, chain: &[CertificateDer<'static>]) -> Result<(), Error> {
        let (ee, rest) = chain.split_first().ok_or(Error::NoCertificatesPresented)?;
        self.verify_client_cert(ee, rest, UnixTime::now())
            .map(|_| ())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| inner_refusal(e, end_entity, "client"))?;
        let verdict = self
            .checker
            .decide(
                &self.roots,
                end_entity,
                intermediates,
                Usage::Client,
                &[],
                now,
            )
            .map_err(|e| Error::General(format!("revocation: {e}")))?;
        conclude(verdict, end_entity, "client")?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies TLS servers (peers, Mitz, the local infrastructure, the audit repository): chain to
/// `roots` and name, then revocation; a stapled OCSP answer counts.
pub struct ServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    checker: Checker,
    inner: Mutex<(u64, Arc<WebPkiServerVerifier>)>,
}

impl std::fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerVerifier").finish_non_exhaustive()
    }
}

fn build_server(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    checker: &Checker,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(checker.crl_ders())
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| e.to_string())
}

impl ServerVerifier {
    /// A verifier for `roots` with `checker`'s CRLs. Errors: no usable trust anchor.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        checker: Checker,
    ) -> Result<ServerVerifier, String> {
        checker.register_anchors(&roots);
        let generation = checker.crl_generation();
        let inner = build_server(&roots, &provider, &checker)?;
        Ok(ServerVerifier {
            roots,
            provider,
            checker,
            inner: Mutex::new((generation, inner)),
        })
    }

    fn current(&self) -> Arc<WebPkiServerVerifier> {
        let generation = self.checker.crl_generation();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != generation {
            match build_server(&self.roots, &self.provider, &self.checker) {
                Ok(v) => *g = (generation, v),
                Err(e) => {
                    tracing::error!(error = %e, "revocation: CRLs not taken into the TLS verifier")
                }
            }
        }
        g.1.clone()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.current()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| inner_refusal(e, end_entity, "server"))?;
        let verdict = self
            .checker
            .decide(
                &self.roots,
                end_entity,
                intermediates,
                Usage::Server,
                ocsp_response,
                now,
            )
            .map_err(|e| Error::General(format!("revocation: {e}")))?;
        conclude(verdict, end_entity, "server")?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
