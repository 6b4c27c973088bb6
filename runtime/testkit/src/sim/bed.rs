//! A loopback test bed: a throwaway PKI written to a folder, and gateway configurations with test
//! environment defaults. Used by the NIST scenario runner, the real-input tests, the zeep interop set-up
//! and the performance test beds (`duo-testbed`), so each builds its gateways the same way as
//! [`crate::demo::world`] does.

use std::path::{Path, PathBuf};

use crate::config::{
    AuditConfig, Config, ConsentConfig, ConsentMode, FrontEndCertificate, InitiatingConfig,
    LimitsConfig, LocalBackend, LocalizationMode, OrganizationConfig, ServerConfig, TlsConfig,
    TrustedFrontEnd, XuaConfig,
};
use crate::model::{FacilityType, HomeCommunityId, Ura};
use crate::pki::generate::{Ca, ServerCertSpec};

/// A CA and the certificates it issued, as PEM files in one folder.
pub struct Pki {
    dir: PathBuf,
    ca: Ca,
    /// The CA certificate file (everyone's trust bundle).
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/ca.crt`.
    ///
    /// Errors: certificate generation or the file write, as one line.
    pub fn new(dir: &Path, name: &str) -> Result<Pki, String> {
        let ca = Ca::new(name).map_err(err)?;
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, &ca.cert_pem)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_file,
        })
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, stem: &str, spec: &ServerCertSpec) -> Result<TlsConfig, String> {
        let c = self.ca.issue(spec).map_err(err)?;
        let cert_file = self.dir.join(format!("{stem}.crt"));
        let key_file = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_file, &c.cert_pem)
            .map_err(|e| format!("{}: {e}", cert_file.display()))?;
        std::fs::write(&key_file, &c.key_pem)
            .map_err(|e| format!("{}: {e}", key_file.display()))?;
        Ok(TlsConfig {
            cert_file,
            key_file,
            trust_bundle_file: self.ca_file.clone(),
        })
    }

    /// A UZI server certificate of organisation `ura` for `localhost` (a hospital's gateway identity),
    /// files `stem.crt` / `stem.key`, valid 30 days.
    pub fn hospital(&self, stem: &str, ura: &Ura, organization: &str) -> Result<TlsConfig, String> {
        self.write(
            stem,
            &ServerCertSpec::uzi(ura.clone(), organization, &["localhost"], 30),
        )
    }

    /// A front end's certificate ([`Pki::plain`]) and the entry that trusts it by issuer and subject
    /// (for [`test_config`]'s `front_ends`).
    pub fn front_end(
        &self,
        stem: &str,
        organization: &str,
        dns_names: &[&str],
    ) -> Result<(TlsConfig, FrontEndCertificate), String> {
        let tls = self.plain(stem, organization, dns_names)?;
        let pem = std::fs::read(&tls.cert_file)
            .map_err(|e| format!("{}: {e}", tls.cert_file.display()))?;
        let der = crate::pki::parse_certificates(&pem).map_err(err)?;
        let entry = FrontEndCertificate::issuer_and_subject_of(der[0].as_ref()).map_err(err)?;
        Ok((tls, entry))
    }

    /// A plain TLS certificate (no UZI identity) for `dns_names`: a simulator, a viewer front end or a
    /// peer that is not a hospital.
    pub fn plain(
        &self,
        stem: &str,
        organization: &str,
        dns_names: &[&str],
    ) -> Result<TlsConfig, String> {
        let mut spec = ServerCertSpec::uzi(
            "00000000".parse().map_err(err)?,
            organization,
            dns_names,
            30,
        );
        spec.ura = None;
        self.write(stem, &spec)
    }
}

/// The identity of a test hospital.
#[derive(Debug, Clone)]
pub struct Hospital {
    /// URA.
    pub ura: Ura,
    /// Name.
    pub name: String,
    /// homeCommunityId its gateway answers as.
    pub home: HomeCommunityId,
    /// Facility type (`V6`, general hospital).
    pub facility_type: FacilityType,
}

impl Hospital {
    /// A hospital; `ura` and `home` must be valid (panics otherwise: test-bed constants only).
    pub fn new(ura: &str, name: &str, home: &str) -> Hospital {
        Hospital {
            ura: ura
                .parse()
                .unwrap_or_else(|e| panic!("test-bed URA {ura}: {e}")),
            name: name.into(),
            home: home
                .parse()
                .unwrap_or_else(|e| panic!("test-bed homeCommunityId {home}: {e}")),
            facility_type: "V6"
                .parse()
                .unwrap_or_else(|_| unreachable!("constant facility type")),
        }
    }
}

/// A gateway configuration for a test environment: listeners on `127.0.0.1` ports the OS picks,
/// consent `permitAll`, localisation `allCommunities`, no XUA assertion required of local callers (the
/// NIST tools and zeep send none) and unsigned or absent assertions accepted from peers
/// (`xua.allowUnsigned`, shown in `/metrics`), plain `http://` allowed (simulators without TLS), audit to
/// `audit_file`, no remote communities yet, and `front_ends` (see [`Pki::front_end`]) trusted as local
/// callers.
pub fn test_config(
    h: &Hospital,
    tls: TlsConfig,
    local: LocalBackend,
    audit_file: &Path,
    front_ends: &[FrontEndCertificate],
) -> Config {
    Config {
        organization: OrganizationConfig {
            ura: h.ura.clone(),
            name: h.name.clone(),
            facility_type: h.facility_type.clone(),
            home_community_id: h.home.clone(),
        },
        server: ServerConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls,
            limits: LimitsConfig::default(),
            reload_interval_seconds: 3600,
        },
        local,
        communities: Vec::new(),
        initiating: InitiatingConfig {
            localization: LocalizationMode::AllCommunities,
            include_local: true,
            manifest_details: true,
            trusted_front_end: TrustedFrontEnd {
                certificates: front_ends.to_vec(),
                certificate_dns_names: Vec::new(),
            },
            require_assertion: false,
        },
        consent: ConsentConfig {
            mode: ConsentMode::PermitAll,
            category: Default::default(),
            default_purpose_of_use: Default::default(),
        },
        mitz: None,
        registration: Default::default(),
        audit: AuditConfig {
            sink: audit_file.to_string_lossy().into_owned(),
            syslog: None,
        },
        allow_plain_http: true,
        // a conformance harness (NIST tools, zeep) cannot sign its assertions: explicitly allowed here
        xua: XuaConfig {
            allow_unsigned: true,
            ..XuaConfig::default()
        },
        tls_policy: Default::default(),
        revocation: Default::default(),
    }
}
