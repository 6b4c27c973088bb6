//! A loopback world of hospitals for the demo and the integration tests: a demo CA with UZI-style
//! certificates, a Mitz simulator, and per hospital a community simulator (an XDS-I.b affinity domain or
//! a TLB node) seeded with synthetic DICOM studies and reports, and a DUO gateway in front of it that
//! knows the other hospitals' gateways as communities. Everything runs in this process, over mutual TLS
//! on `localhost`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    AuditConfig, CommunityOrganization, Config, ConsentConfig, ConsentMode, Endpoint,
    FrontEndCertificate, InitiatingConfig, LimitsConfig, LocalBackend, LocalizationMode,
    MitzConfig, OrganizationConfig, RemoteCommunity, ServerConfig, TlsConfig, TrustedFrontEnd,
    TrustedIssuerConfig, XcaBackendConfig, XdsBackendConfig,
};
use crate::consent::Decision;
use crate::dicom::synth::{SynthConfig, SynthPatient, generate_study};
use crate::dicom::xds::ReportFormat;
use crate::gateway::{Gateway, hooks};
use crate::model::{AuthorInstitution, Bsn, DataCategory, FacilityType, HomeCommunityId, Ura};
use crate::pki::generate::{Ca, ServerCertSpec};
use crate::server::run::{self, Running};
use crate::sim::mitz::{self, ConsentRule, LocationRule, MitzSim, MitzSimConfig};
use crate::sim::seed::{CommunitySeed, SeededStudy, seed_patient, seed_study};
use crate::sim::serve::{RunningSim, Transport};
use crate::sim::tlb::{TlbConfig, TlbSim};
use crate::sim::xds::{XdsConfig, XdsSim};
use crate::sim::{faults::SimControl, store::Store, tlb, xds};
use crate::tls::TlsMaterial;

/// What infrastructure a hospital is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A regional XDS-I.b affinity domain.
    Xds,
    /// The Twiin/TLB platform (a remote XCA-I node).
    Tlb,
}

/// One hospital of the world.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Short key, e.g. `A`.
    pub key: String,
    /// Name.
    pub name: String,
    /// URA.
    pub ura: Ura,
    /// Facility type.
    pub facility_type: FacilityType,
    /// Infrastructure.
    pub kind: Kind,
    /// Studies of the patient it holds (besides a shared study).
    pub studies: usize,
    /// What Mitz answers the closed question for its data of the configured category.
    pub consent: Decision,
}

/// How to build the world.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hospitals; the first is the one the demo asks from.
    pub hospitals: Vec<Spec>,
    /// Indices of two hospitals that both hold one extra study (same Study Instance UID and instances).
    pub shared_study: Option<(usize, usize)>,
    /// Localisation mode of every gateway.
    pub localization: LocalizationMode,
    /// Consent mode of every gateway.
    pub consent: ConsentMode,
    /// Deadline per community, ms.
    pub deadline_ms: u64,
    /// The patient.
    pub patient: SynthPatient,
    /// Seed of the synthetic data.
    pub seed: u64,
}

fn spec(
    key: &str,
    name: &str,
    ura: &str,
    facility: &str,
    kind: Kind,
    studies: usize,
    consent: Decision,
) -> Spec {
    Spec {
        key: key.into(),
        name: name.into(),
        ura: ura.parse().unwrap_or_else(|_| unreachable!("constant URA")),
        facility_type: facility
            .parse()
            .unwrap_or_else(|_| unreachable!("constant facility type")),
        kind,
        studies,
        consent,
    }
}

impl Options {
    /// The embedded default: Ziekenhuis Oost (XDS, where the clinician asks), Ziekenhuis West (another XDS
    /// affinity domain), Kliniek Noord (TLB) and Diagnostisch Centrum Zuid (XDS) whose imaging data the
    /// patient did not consent to share; one study reachable through West and Noord.
    pub fn demo() -> Options {
        Options {
            hospitals: vec![
                spec(
                    "A",
                    "Ziekenhuis Oost",
                    "10000001",
                    "V6",
                    Kind::Xds,
                    2,
                    Decision::Permit,
                ),
                spec(
                    "B",
                    "Ziekenhuis West",
                    "10000002",
                    "V6",
                    Kind::Xds,
                    2,
                    Decision::Permit,
                ),
                spec(
                    "C",
                    "Kliniek Noord",
                    "10000003",
                    "Z4",
                    Kind::Tlb,
                    2,
                    Decision::Permit,
                ),
                spec(
                    "D",
                    "Diagnostisch Centrum Zuid",
                    "10000004",
                    "Z5",
                    Kind::Xds,
                    1,
                    Decision::Deny,
                ),
            ],
            shared_study: Some((1, 2)),
            localization: LocalizationMode::Mitz,
            consent: ConsentMode::Mitz,
            deadline_ms: 5_000,
            patient: SynthPatient::example(),
            seed: 2026,
        }
    }
}

/// A hospital of a running world.
pub struct Hospital {
    /// Its spec.
    pub spec: Spec,
    /// The gateway's homeCommunityId.
    pub home: HomeCommunityId,
    /// The TLB node's own homeCommunityId (TLB hospitals).
    pub node_home: Option<HomeCommunityId>,
    /// The community simulator's content.
    pub store: Arc<Store>,
    /// The community simulator's faults and request log.
    pub control: SimControl,
    /// The community simulator.
    pub sim: RunningSim,
    /// The gateway.
    pub gateway: Running,
    /// Its configuration (with the communities).
    pub config: Config,
    /// Studies seeded into its community.
    pub studies: Vec<SeededStudy>,
    /// Its audit JSON-lines file.
    pub audit_file: PathBuf,
    /// Certificate and key of the hospital's viewer front end (a trusted front end of its gateway).
    pub front_end: TlsMaterial,
    /// How its community publishes (institution, repository, imaging document source): what
    /// [`World::publish_study`] publishes as.
    pub publisher: CommunitySeed,
}

impl Hospital {
    /// `https://localhost:<port>` of its gateway.
    pub fn gateway_url(&self) -> String {
        format!("https://localhost:{}", self.gateway.addr.port())
    }

    /// `http://localhost:<port>` of its gateway's ops listener.
    pub fn ops_url(&self) -> String {
        format!("http://localhost:{}", self.gateway.ops_addr.port())
    }
}

/// The running world.
pub struct World {
    /// The patient.
    pub patient: SynthPatient,
    /// The hospitals in spec order.
    pub hospitals: Vec<Hospital>,
    /// The Mitz simulator.
    pub mitz: MitzSim,
    /// The study reachable through two hospitals, when configured.
    pub shared: Option<SeededStudy>,
    /// The demo CA (trust bundle of everyone).
    pub ca_pem: String,
    /// The demo CA itself, to issue further identities for test set-ups ([`World::issue`]).
    pub ca: Ca,
    /// The CA certificate file (the trust bundle every participant uses).
    pub ca_file: PathBuf,
    /// The consents, locations and faults the Mitz simulator was started with (tests extend a copy for
    /// a simulator of their own).
    pub mitz_config: MitzSimConfig,
    /// Working folder (certificates, audit files); removed when the world is dropped.
    pub dir: tempfile::TempDir,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes `text` to `dir/name`, readable by the owner only (private keys among them).
fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&p)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

fn identity(
    dir: &Path,
    ca: &Ca,
    ca_file: &Path,
    name: &str,
    spec: ServerCertSpec,
) -> Result<(TlsConfig, TlsMaterial), String> {
    let c = ca.issue(&spec).map_err(err)?;
    let tls = TlsConfig {
        cert_file: write(dir, &format!("{name}.crt"), &c.cert_pem)?,
        key_file: write(dir, &format!("{name}.key"), &c.key_pem)?,
        trust_bundle_file: ca_file.to_path_buf(),
    };
    let m = TlsMaterial::load(&tls).map_err(err)?;
    Ok((tls, m))
}

/// A plain TLS certificate (no UZI identity) for organisation `org` and DNS names `dns`, valid from an
/// hour ago for 30 days: simulators, Mitz, viewer front ends.
pub fn plain_spec(org: &str, dns: &[&str]) -> ServerCertSpec {
    let now = jiff::Timestamp::now();
    ServerCertSpec {
        ura: None,
        uzi_number: String::new(),
        uzi_name: false,
        permanent_identifier: false,
        organization: org.into(),
        dns_names: dns.iter().map(|s| s.to_string()).collect(),
        not_before: now
            .checked_sub(jiff::SignedDuration::from_hours(1))
            .unwrap_or(now),
        not_after: now
            .checked_add(jiff::SignedDuration::from_hours(24 * 30))
            .unwrap_or(now),
    }
}

fn oid(ura: &Ura, suffix: &str) -> String {
    format!("2.16.528.1.1007.3.3.{ura}.{suffix}")
}

fn local_url(sim: &RunningSim, path: &str) -> String {
    format!("https://localhost:{}{path}", sim.addr().port())
}

/// Builds and starts the world. Errors name the step that failed.
pub async fn build(opts: Options) -> Result<World, String> {
    crate::tls::install_crypto_provider();
    let dir = tempfile::tempdir().map_err(err)?;
    let d = dir.path().to_path_buf();
    let ca = Ca::new("DUO demo CA").map_err(err)?;
    let ca_file = write(&d, "ca.crt", &ca.cert_pem)?;
    let bsn: Bsn = opts.patient.bsn.clone();
    let category = DataCategory::default();

    // Mitz: consents of every holder, and locations for the open question
    let (_, mitz_tls) = identity(
        &d,
        &ca,
        &ca_file,
        "mitz",
        plain_spec("Mitz simulator", &["localhost"]),
    )?;
    let mut consents = Vec::new();
    let mut locations = Vec::new();
    for s in &opts.hospitals {
        let home: HomeCommunityId = oid(&s.ura, "1").parse().map_err(err)?;
        // the open question lists a hospital when its category-less rule permits; the closed question
        // for the imaging category follows the spec's decision
        consents.push(ConsentRule {
            patient: bsn.clone(),
            holder: s.ura.clone(),
            requester: None,
            category: None,
            decision: Decision::Permit,
        });
        consents.push(ConsentRule {
            patient: bsn.clone(),
            holder: s.ura.clone(),
            requester: None,
            category: Some(category.clone()),
            decision: s.consent,
        });
        locations.push(LocationRule {
            patient: bsn.clone(),
            home_community_id: home,
            holder: s.ura.clone(),
            source_id: None,
            category: None,
        });
    }
    let mitz_cfg = MitzSimConfig {
        consents,
        locations,
        ..MitzSimConfig::default()
    };
    let mitz = mitz::start(
        mitz_cfg.clone(),
        "127.0.0.1:0".parse().map_err(err)?,
        &mitz_tls,
    )
    .await
    .map_err(err)?;
    let mitz_port = mitz.local_addr().port();

    // the shared study is generated once and seeded into two communities
    let synth = SynthConfig::default();
    let shared_study = match opts.shared_study {
        Some(_) => {
            Some(generate_study(&synth, &opts.patient, opts.seed.wrapping_add(999)).map_err(err)?)
        }
        None => None,
    };

    let mut hospitals = Vec::new();
    let mut shared_seeded = None;
    for (i, s) in opts.hospitals.iter().enumerate() {
        let home: HomeCommunityId = oid(&s.ura, "1").parse().map_err(err)?;
        let repo = oid(&s.ura, "10");
        let ids = oid(&s.ura, "11");
        let (sim_tls_cfg, sim_tls) = identity(
            &d,
            &ca,
            &ca_file,
            &format!("sim-{}", s.key),
            plain_spec(&format!("{} community", s.name), &["localhost"]),
        )?;
        let _ = sim_tls_cfg;
        let store = Arc::new(Store::new());
        let node_home: Option<HomeCommunityId> = match s.kind {
            Kind::Tlb => Some(oid(&s.ura, "2").parse().map_err(err)?),
            Kind::Xds => None,
        };
        let seed_cfg = CommunitySeed::new(
            AuthorInstitution {
                name: s.name.clone(),
                ura: Some(s.ura.clone()),
            },
            s.facility_type.clone(),
            &repo,
            &ids,
            node_home.clone(),
        );
        let mut studies = seed_patient(
            &store,
            &seed_cfg,
            &synth,
            &opts.patient,
            opts.seed.wrapping_add(100 * i as u64),
            s.studies,
        )
        .map_err(err)?;
        if let (Some((x, y)), Some(st)) = (opts.shared_study, &shared_study)
            && (x == i || y == i)
        {
            let seeded = seed_study(
                &store,
                &seed_cfg,
                &bsn,
                st,
                ReportFormat::Pdf,
                opts.seed.wrapping_add(7),
            )
            .map_err(err)?;
            shared_seeded.get_or_insert_with(|| seeded.clone());
            studies.push(seeded);
        }
        let (sim, control) = match s.kind {
            Kind::Xds => {
                let x = XdsSim::with_store(XdsConfig::default(), store.clone());
                (
                    x.start(Transport::mutual_tls(&sim_tls).map_err(err)?)
                        .await
                        .map_err(err)?,
                    x.control.clone(),
                )
            }
            Kind::Tlb => {
                let nh = node_home
                    .clone()
                    .ok_or("TLB node without homeCommunityId")?;
                let t = TlbSim::with_store(TlbConfig::new(nh), store.clone());
                (
                    t.start(Transport::mutual_tls(&sim_tls).map_err(err)?)
                        .await
                        .map_err(err)?,
                    t.control.clone(),
                )
            }
        };
        let local = match s.kind {
            Kind::Xds => LocalBackend::Xds(XdsBackendConfig {
                registry_url: local_url(&sim, xds::paths::ITI18),
                repositories: vec![Endpoint {
                    unique_id: repo.clone(),
                    url: local_url(&sim, xds::paths::ITI43),
                }],
                imaging_document_sources: vec![Endpoint {
                    unique_id: ids.clone(),
                    url: local_url(&sim, xds::paths::RAD69),
                }],
                deadline_ms: opts.deadline_ms,
            }),
            Kind::Tlb => LocalBackend::Xca(XcaBackendConfig {
                home_community_id: node_home
                    .clone()
                    .ok_or("TLB node without homeCommunityId")?,
                query_url: local_url(&sim, tlb::paths::ITI38),
                retrieve_url: local_url(&sim, tlb::paths::ITI39),
                imaging_retrieve_url: local_url(&sim, tlb::paths::RAD75),
                dicomweb_url: Some(local_url(&sim, "/dicomweb")),
                deadline_ms: opts.deadline_ms,
            }),
        };
        let mut gw_spec = ServerCertSpec::uzi(s.ura.clone(), &s.name, &["localhost"], 30);
        gw_spec.uzi_number = format!("9{:08}", i + 1);
        let (gw_tls, _) = identity(&d, &ca, &ca_file, &format!("gateway-{}", s.key), gw_spec)?;
        let front_dns = format!("viewer.{}.demo", s.key.to_lowercase());
        let (_, front_end) = identity(
            &d,
            &ca,
            &ca_file,
            &format!("viewer-{}", s.key),
            plain_spec(&format!("{} viewer", s.name), &[front_dns.as_str()]),
        )?;
        let audit_file = d.join(format!("audit-{}.jsonl", s.key));
        let config = Config {
            organization: OrganizationConfig {
                ura: s.ura.clone(),
                name: s.name.clone(),
                facility_type: s.facility_type.clone(),
                home_community_id: home.clone(),
            },
            server: ServerConfig {
                listen: "127.0.0.1:0".parse().map_err(err)?,
                ops_listen: "127.0.0.1:0".parse().map_err(err)?,
                tls: gw_tls.clone(),
                limits: LimitsConfig::default(),
                reload_interval_seconds: 3600,
            },
            local,
            communities: Vec::new(),
            initiating: InitiatingConfig {
                localization: opts.localization,
                include_local: true,
                manifest_details: true,
                trusted_front_end: TrustedFrontEnd {
                    // the viewer by the names of its certificate, not by its DNS name (issue 12)
                    certificates: vec![
                        FrontEndCertificate::issuer_and_subject_of(front_end.chain[0].as_ref())
                            .map_err(err)?,
                    ],
                    certificate_dns_names: Vec::new(),
                },
                require_assertion: true,
            },
            consent: ConsentConfig {
                mode: opts.consent,
                category: category.clone(),
                default_purpose_of_use: Default::default(),
            },
            mitz: Some(MitzConfig {
                closed_question_url: format!(
                    "https://localhost:{mitz_port}/geslotenautorisatievraag/xacml3"
                ),
                open_question_url: Some(format!(
                    "https://localhost:{mitz_port}/openautorisatievraag"
                )),
                subscription_url: Some(format!(
                    "https://localhost:{mitz_port}/abonnementen/fhir/Subscription"
                )),
                tls: gw_tls,
                deadline_ms: 3_000,
                cache_seconds: 60,
                notification_client_names: Vec::new(),
            }),
            registration: Default::default(),
            audit: AuditConfig {
                sink: audit_file.to_string_lossy().into_owned(),
                syslog: None,
            },
            allow_plain_http: false,
            xua: Default::default(),
            tls_policy: Default::default(),
            revocation: Default::default(),
        };
        let gateway = run::start(config.clone(), None, run::default_hooks())
            .await
            .map_err(|e| format!("gateway {}: {e}", s.key))?;
        hospitals.push(Hospital {
            spec: s.clone(),
            home,
            node_home,
            store,
            control,
            sim,
            gateway,
            config,
            studies,
            audit_file,
            front_end,
            publisher: seed_cfg,
        });
    }

    // now that every gateway listens, each learns the others as communities, and trusts each other's
    // XUA issuer (the gateway's own certificate signs, as by default)
    let mut remotes: Vec<RemoteCommunity> = Vec::with_capacity(hospitals.len());
    for h in &hospitals {
        let (cert_file, _) = h.config.xua_signing_files();
        let pem = std::fs::read_to_string(cert_file).map_err(err)?;
        remotes.push(RemoteCommunity {
            home_community_id: h.home.clone(),
            name: h.spec.name.clone(),
            organizations: vec![CommunityOrganization {
                ura: h.spec.ura.clone(),
                name: h.spec.name.clone(),
            }],
            query_url: format!("{}/xca/iti38", h.gateway_url()),
            retrieve_url: format!("{}/xca/iti39", h.gateway_url()),
            imaging_retrieve_url: format!("{}/xcai/rad75", h.gateway_url()),
            connect_to: None,
            certificate_ura: Some(h.spec.ura.clone()),
            trusted_issuers: vec![TrustedIssuerConfig {
                issuer: h.config.xua_issuer(),
                certificates: pem,
            }],
            deadline_ms: opts.deadline_ms,
            fronted_communities: Vec::new(),
        });
    }
    for h in &mut hospitals {
        h.config.communities = remotes
            .iter()
            .filter(|r| r.home_community_id != h.home)
            .cloned()
            .collect();
        swap_snapshot(h).await?;
    }
    Ok(World {
        patient: opts.patient,
        hospitals,
        mitz,
        shared: shared_seeded,
        ca_pem: ca.cert_pem.clone(),
        ca,
        ca_file,
        mitz_config: mitz_cfg,
        dir,
    })
}

/// Validates `h.config`, builds its hooks and a gateway snapshot from it and makes that the current one
/// (requests in flight finish on the old one), as a reload does. The listener's server certificate is
/// the one the gateway started with.
async fn swap_snapshot(h: &Hospital) -> Result<(), String> {
    h.config
        .validate()
        .map_err(|e| format!("gateway {}: {e}", h.spec.key))?;
    let hk = hooks::from_config(&h.config).await?;
    let metrics = h.gateway.shared.current().metrics.clone();
    let g = Gateway::build(h.config.clone(), hk, metrics).map_err(err)?;
    h.gateway.shared.replace(g);
    Ok(())
}

impl World {
    /// Issues a certificate of the world's CA for `spec`, written into the world's folder as
    /// `<name>.crt` / `<name>.key` with the world's CA file as trust bundle. Errors name the step.
    pub fn issue(
        &self,
        name: &str,
        spec: ServerCertSpec,
    ) -> Result<(TlsConfig, TlsMaterial), String> {
        identity(self.dir.path(), &self.ca, &self.ca_file, name, spec)
    }

    /// Changes hospital `i`'s gateway configuration with `change` and swaps its gateway snapshot
    /// (consent, localisation and audit services rebuilt; requests in flight finish on the old one).
    /// Errors: the changed configuration is invalid or unusable (the running snapshot stays).
    pub async fn reconfigure(
        &mut self,
        i: usize,
        change: impl FnOnce(&mut Config),
    ) -> Result<(), String> {
        let h = self
            .hospitals
            .get_mut(i)
            .ok_or_else(|| format!("no hospital {i}"))?;
        let before = h.config.clone();
        change(&mut h.config);
        if let Err(e) = swap_snapshot(h).await {
            h.config = before;
            return Err(e);
        }
        Ok(())
    }

    /// Publishes a new synthetic study of the world's patient (chosen by `seed`, report in PDF) at
    /// hospital `i`'s community, as its modality and PACS would: the instances, then the KOS manifest
    /// and report registered together (a DSUB broker watching the store notifies them). Errors: one
    /// line naming the step.
    pub fn publish_study(&mut self, i: usize, seed: u64) -> Result<SeededStudy, String> {
        let h = self
            .hospitals
            .get_mut(i)
            .ok_or_else(|| format!("no hospital {i}"))?;
        let study = generate_study(&SynthConfig::default(), &self.patient, seed).map_err(err)?;
        let seeded = seed_study(
            &h.store,
            &h.publisher,
            &self.patient.bsn,
            &study,
            ReportFormat::Pdf,
            seed,
        )
        .map_err(err)?;
        h.studies.push(seeded.clone());
        Ok(seeded)
    }

    /// Starts a DSUB notification broker ([`crate::sim::dsub::Broker`]) over hospital `i`'s community
    /// store, with a certificate of the world's CA for `localhost` and `dns_names` (the names its
    /// client certificate presents when it notifies), re-sending refused notifications every `retry`.
    /// Errors: one line naming the step.
    pub async fn start_broker(
        &self,
        i: usize,
        dns_names: &[&str],
        retry: Duration,
    ) -> Result<(crate::sim::dsub::Broker, RunningSim), String> {
        let h = self
            .hospitals
            .get(i)
            .ok_or_else(|| format!("no hospital {i}"))?;
        let mut names = vec!["localhost"];
        names.extend_from_slice(dns_names);
        let (_, tls) = self.issue(
            &format!("broker-{}", h.spec.key),
            plain_spec(&format!("{} XDS notification broker", h.spec.name), &names),
        )?;
        let broker = crate::sim::dsub::Broker::new(h.store.clone(), &tls, retry)?;
        let sim = broker
            .start(Transport::mutual_tls(&tls).map_err(err)?)
            .await
            .map_err(err)?;
        Ok((broker, sim))
    }

    /// An HTTPS client of hospital `i`'s viewer front end (trusted by its gateway), trusting the demo CA.
    pub fn front_end_client(&self, i: usize) -> Result<crate::tls::OutboundClient, String> {
        self.hospitals[i]
            .front_end
            .http_client(Duration::from_secs(5))
            .map_err(err)
    }

    /// Stops every gateway and simulator.
    pub async fn stop(self) {
        for h in self.hospitals {
            h.gateway.stop().await;
            h.sim.stop().await;
        }
        self.mitz.shutdown().await;
    }
}
