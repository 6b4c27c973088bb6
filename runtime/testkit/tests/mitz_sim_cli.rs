//! `duo-testbed mitz-sim` as a process: it starts from a consents file and PEM files, answers the sample
//! closed question of `testdata/mitz/xacml/example.xml` over mutual TLS, and refuses bad input with a
//! one-line reason and a non-zero exit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use duo_runtime::config::{MitzConfig, TlsConfig};
use duo_runtime::consent::xacml::{self, Decision};
use duo_runtime::consent::{ConsentService, ConsentSource, MitzClient};
use duo_runtime::tls::TlsMaterial;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a CA, a server and a client certificate into `dir`; returns (server, client) TLS configs.
fn pki(dir: &Path) -> (TlsConfig, TlsConfig) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "CLI test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, sans: &[&str]| {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        TlsConfig {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
            trust_bundle_file: dir.join("ca.crt"),
        }
    };
    let server = leaf("server", &["localhost", "127.0.0.1"]);
    let client = leaf("client", &["client.test"]);
    (server, client)
}

fn sim_command(config: &Path, listen: &str, tls: &TlsConfig) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duo-testbed"));
    c.arg("mitz-sim")
        .arg("--config")
        .arg(config)
        .args(["--listen", listen])
        .arg("--cert")
        .arg(&tls.cert_file)
        .arg("--key")
        .arg(&tls.key_file)
        .arg("--trust-bundle")
        .arg(&tls.trust_bundle_file);
    c
}

#[tokio::test]
async fn the_subcommand_serves_the_sample_question() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = pki(dir.path());
    let consents = dir.path().join("consents.yaml");
    std::fs::write(
        &consents,
        "consents:\n  - { patient: \"900186021\", holder: \"00000659\", decision: Deny }\n",
    )
    .unwrap();
    let mut child = sim_command(&consents, "127.0.0.1:0", &server)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("mitz-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();

    duo_runtime::tls::install_crypto_provider();
    let tls = TlsMaterial::load(&client).unwrap();
    let http = tls.http_client(Duration::from_secs(5)).unwrap();
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/mitz/xacml/example.xml"
    ))
    .unwrap();
    let resp = http
        .post(format!("{base}/geslotenautorisatievraag/xacml3"))
        .header("content-type", "application/soap+xml")
        .body(sample)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    // the question of the sample, typed (the answer is read against it)
    let question = xacml::ClosedQuestion {
        patient: "900186021".parse().unwrap(),
        holder_ura: "00000659".parse().unwrap(),
        holder_facility_type: "Z3".parse().unwrap(),
        categories: vec!["GGC002".parse().unwrap()],
        requester: duo_runtime::model::Requester {
            uzi: "000095254".parse().unwrap(),
            role: "01.015".parse().unwrap(),
            ura: "00000666".parse().unwrap(),
            facility_type: "Z3".parse().unwrap(),
            purpose_of_use: "TREAT".parse().unwrap(),
            name: None,
        },
        mandated: None,
    };
    let got =
        xacml::read_closed_answer(&body, &question, &duo_runtime::xml::Limits::default()).unwrap();
    assert_eq!(got[0].decision, Decision::Deny);

    // the consent service against the running process
    let cfg = MitzConfig {
        closed_question_url: format!("{base}/geslotenautorisatievraag/xacml3"),
        open_question_url: None,
        subscription_url: None,
        tls: client.clone(),
        deadline_ms: 3000,
        cache_seconds: 0,
        notification_client_names: Vec::new(),
    };
    let svc = ConsentService::new(
        duo_runtime::config::ConsentMode::Mitz,
        "GGC002".parse().unwrap(),
        "00000659".parse().unwrap(),
        "V6".parse().unwrap(),
        Some(std::sync::Arc::new(MitzClient::new(&cfg).unwrap())),
        Duration::ZERO,
    );
    let who = duo_runtime::model::Requester {
        uzi: "000095254".parse().unwrap(),
        role: "01.015".parse().unwrap(),
        ura: "00000666".parse().unwrap(),
        facility_type: "Z3".parse().unwrap(),
        purpose_of_use: Default::default(),
        name: None,
    };
    let o = svc.check(&"900186021".parse().unwrap(), &who).await;
    assert_eq!(
        (o.decision, &o.source),
        (Decision::Deny, &ConsentSource::Mitz)
    );
    assert!(!o.discloses());
}

#[test]
fn bad_input_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = pki(dir.path());
    let consents = dir.path().join("consents.yaml");
    std::fs::write(
        &consents,
        "consents:\n  - { patient: \"123\", holder: \"00000659\", decision: Permit }\n",
    )
    .unwrap();
    let out = sim_command(&consents, "127.0.0.1:0", &server)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("consents[0].patient"), "{err}");

    std::fs::write(&consents, "consents: []\n").unwrap();
    let mut missing = server.clone();
    missing.key_file = dir.path().join("nope.key");
    let out = sim_command(&consents, "127.0.0.1:0", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nope.key"), "{err}");
}
