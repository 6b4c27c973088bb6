//! TLS for every connection the gateway makes or accepts: mutual TLS with the hospital's certificate
//! (UZI server or PKIoverheid), peers verified against a configured trust bundle.
//!
//! TLS 1.2 and 1.3 only (NCSC guidelines as the Twiin agreements require: 1.2 required, 1.3 alongside),
//! with the `ring` provider. Revocation checking (CRL/OCSP) is not done yet.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// Why TLS material could not be loaded or used. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM object.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        msg: String,
    },
    /// rustls refused the material (key does not match certificate, unsupported key type ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built from the trust bundle.
    #[error("trust bundle: {0}")]
    Verifier(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// A certificate chain, its private key and the trust bundle, loaded from PEM files.
#[derive(Debug)]
pub struct TlsMaterial {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: PrivateKeyDer<'static>,
    /// CA certificates peers must chain to.
    pub roots: Arc<RootCertStore>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
        }
    }
}

fn file_err(path: &Path, msg: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Reads every certificate in a PEM file; an empty result is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e.to_string()))?
        .collect();
    let certs = certs.map_err(|e| file_err(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(path, "no CERTIFICATE in PEM file"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no usable private key: {e}")))
}

/// Reads a trust bundle into a root store; fails when no certificate in it is usable as a trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        return Err(file_err(path, "no usable CA certificate"));
    }
    Ok(store)
}

impl TlsMaterial {
    /// Loads the files of a [`TlsConfig`].
    pub fn load(cfg: &TlsConfig) -> Result<TlsMaterial, TlsError> {
        Ok(TlsMaterial {
            chain: load_certs(&cfg.cert_file)?,
            key: load_key(&cfg.key_file)?,
            roots: Arc::new(load_roots(&cfg.trust_bundle_file)?),
        })
    }

    /// Server side: present the chain; require and verify a client certificate against the roots.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Client side: verify the server against the roots, present the chain as client certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(cfg))
    }

    /// An HTTP client presenting this identity, with a connect timeout; per-request deadlines are set by
    /// the caller. Built by [`outbound_client`]: redirects are never followed, HTTP/1.1 only (IHE SOAP
    /// peers), no proxies from the environment.
    pub fn http_client(&self, connect_timeout: Duration) -> Result<OutboundClient, TlsError> {
        let mut cfg = (*self.client_config()?).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        outbound_client(connect_timeout, Some(cfg))
    }
}

/// Makes `ring` the process-wide rustls provider (idempotent). reqwest builds default TLS settings even for
/// clients that never use TLS and needs a process provider for that.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for plain `http://` endpoints (only used when the configuration opts in). Built by
/// [`outbound_client`]: redirects are never followed.
pub fn plain_http_client(connect_timeout: Duration) -> Result<OutboundClient, TlsError> {
    outbound_client(connect_timeout, None)
}

/// An outbound HTTP client of the gateway (peers, Mitz, the local XDS / DICOMweb backends, test
/// clients). The only way to get one is [`outbound_client`] (through [`TlsMaterial::http_client`] or
/// [`plain_http_client`]); the components that talk to other parties ([`crate::backend::soap_client`],
/// [`crate::consent::MitzClient`]) accept nothing else, and `clippy.toml` forbids building a
/// `reqwest::Client` anywhere else in the workspace.
///
/// Dereferences to the `reqwest::Client` for sending; the redirect policy is fixed when it is built, so
/// the inner client cannot be made to follow redirects afterwards.
#[derive(Clone, Debug)]
pub struct OutboundClient(reqwest::Client);

impl std::ops::Deref for OutboundClient {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.0
    }
}

impl From<OutboundClient> for reqwest::Client {
    fn from(c: OutboundClient) -> reqwest::Client {
        c.0
    }
}

/// The one constructor of every outbound HTTP client (issue 12, defect 4): **no redirect is ever
/// followed** (`redirect::Policy::none()`): a 3xx answer comes back to the caller as it is, and the
/// caller reports it as that community's (or Mitz's) failure. Following one would re-send an ITI-38 body
/// with its assertion and BSN to whatever address the peer names, possibly over plain `http://`
/// (bypassing `allowPlainHttp: false`), and would take a Mitz decision from a server that was not asked.
///
/// Also: a connect timeout (`connect_timeout`), HTTP/1.1 only, no proxies from the environment, idle
/// connections closed after 60 s. `tls`: the rustls client configuration (mutual TLS); `None` for a
/// client of plain `http://` endpoints. Errors: [`TlsError::Client`] when reqwest refuses the settings.
#[allow(clippy::disallowed_methods)] // the one place that may build a reqwest client (clippy.toml)
pub fn outbound_client(
    connect_timeout: Duration,
    tls: Option<ClientConfig>,
) -> Result<OutboundClient, TlsError> {
    // reqwest builds default TLS settings even for clients that never use TLS
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .http1_only()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(cfg) = tls {
        b = b.tls_backend_preconfigured(cfg);
    }
    b.build()
        .map(OutboundClient)
        .map_err(|e| TlsError::Client(e.to_string()))
}
