//! A test CA run with the real `openssl ca` (Debian `openssl`, installed by scripts/setup.sh): RSA keys,
//! leaf certificates shaped like UZI server certificates (subjectAltName otherName `2.5.5.5` with the
//! UZI string, DNS and IP names), CRL distribution points and OCSP responders on loopback, revocation
//! with `openssl ca -revoke`, CRLs with `openssl ca -gencrl` published by `python3 -m http.server`, and
//! `openssl ocsp` as responder. Also: gateway configurations for these certificates.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duo_runtime::config::{Config, RevocationConfig, TlsConfig, TlsVersion};

/// Whether a missing tool fails the test (CI, or DUO_REQUIRE_TOOLS=1) instead of skipping it.
pub fn require_tools() -> bool {
    std::env::var_os("CI").is_some() || std::env::var("DUO_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Whether `openssl` and `python3` are there; otherwise says why and (outside CI) lets the test skip.
pub fn tools_present() -> bool {
    let ok = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let present = ok("openssl", "version") && ok("python3", "--version");
    if !present {
        assert!(
            !require_tools(),
            "openssl and python3 are required (CI / DUO_REQUIRE_TOOLS=1): run scripts/setup.sh"
        );
        eprintln!("skipped: openssl or python3 not installed (scripts/setup.sh installs them)");
    }
    present
}

/// A free loopback port (bound and released), never the same one twice in this process: tests run in
/// parallel, and a CA's CRL and OCSP ports are fixed in its certificates before anything listens on them,
/// so a port handed to two CAs made one test fetch the other's CRL ("BadSignature").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until something listens on `port` (at most 10 s).
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A leaf certificate and key written by `openssl ca`.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Certificate, PEM.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, RSA).
    pub key: PathBuf,
}

/// What a leaf certificate names.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// RSA key size.
    pub bits: u32,
    /// URA in the UZI otherName (card type `S`); `None` for a plain certificate.
    pub ura: Option<String>,
    /// DNS names (IP address 127.0.0.1 is always added).
    pub dns: Vec<String>,
    /// Name the CA's CRL distribution point.
    pub crl: bool,
    /// Name the CA's OCSP responder.
    pub ocsp: bool,
}

impl LeafSpec {
    /// A UZI-shaped server certificate for `ura`, RSA `bits`, naming the CRL distribution point.
    pub fn uzi(ura: &str, bits: u32) -> LeafSpec {
        LeafSpec {
            bits,
            ura: Some(ura.into()),
            dns: vec!["localhost".into()],
            crl: true,
            ocsp: false,
        }
    }
}

/// The CA: its directory (openssl's database), and where it publishes.
pub struct OpensslCa {
    /// Working directory: `ca.crt`, `ca.key`, `index.txt`, `www/ca.crl`.
    pub dir: PathBuf,
    /// Port of the CRL web server.
    pub crl_port: u16,
    /// Port of the OCSP responder.
    pub ocsp_port: u16,
    next: std::cell::Cell<u32>,
}

impl OpensslCa {
    /// A new RSA CA in `dir` (created), publishing on fresh loopback ports.
    pub fn new(dir: &Path, bits: u32) -> OpensslCa {
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        let cnf = format!(
            r#"[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/ca.crt
private_key = $dir/ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_hours = 1
policy = policy_any
unique_subject = no
[ policy_any ]
commonName = supplied
organizationName = optional
countryName = optional
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("ca.cnf"), cnf).unwrap();
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey"])
            .arg(format!("rsa:{bits}"))
            .args(["-nodes", "-days", "3650", "-sha256", "-extensions", "v3_ca"])
            .args([
                "-subj",
                "/C=NL/O=DUO test/CN=DUO test UZI-register Server CA",
            ])
            .arg("-config")
            .arg(dir.join("ca.cnf"))
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.crt")));
        OpensslCa {
            dir: dir.to_owned(),
            crl_port: free_port(),
            ocsp_port: free_port(),
            next: std::cell::Cell::new(90000100),
        }
    }

    /// The trust bundle: the CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// URL of the CRL the leaves name.
    pub fn crl_url(&self) -> String {
        format!("http://127.0.0.1:{}/ca.crl", self.crl_port)
    }

    /// URL of the OCSP responder the leaves name.
    pub fn ocsp_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ocsp_port)
    }

    /// Issues `name` (`<name>.crt`, `<name>.key` in the CA directory) with `openssl req` + `openssl ca`.
    pub fn issue(&self, name: &str, spec: &LeafSpec) -> Leaf {
        let d = &self.dir;
        let uzi = self.next.get();
        self.next.set(uzi + 1);
        let mut san = Vec::new();
        if let Some(ura) = &spec.ura {
            san.push(format!(
                "otherName:2.5.5.5;IA5STRING:2.16.528.1.1003.1.3.5.5.2-1-{uzi}-S-{ura}-00.000-00000000"
            ));
        }
        san.extend(spec.dns.iter().map(|d| format!("DNS:{d}")));
        san.push("IP:127.0.0.1".into());
        let mut ext = format!(
            "[ leaf ]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {}\nauthorityKeyIdentifier = keyid\n",
            san.join(",")
        );
        if spec.crl {
            ext.push_str(&format!("crlDistributionPoints = URI:{}\n", self.crl_url()));
        }
        if spec.ocsp {
            ext.push_str(&format!(
                "authorityInfoAccess = OCSP;URI:{}\n",
                self.ocsp_url()
            ));
        }
        let extfile = d.join(format!("{name}.ext"));
        std::fs::write(&extfile, ext).unwrap();
        let key = d.join(format!("{name}.key"));
        let csr = d.join(format!("{name}.csr"));
        let cert = d.join(format!("{name}.crt"));
        let cn = spec.dns.first().cloned().unwrap_or_else(|| name.to_owned());
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey"])
            .arg(format!("rsa:{}", spec.bits))
            .args(["-nodes", "-subj"])
            .arg(format!("/C=NL/O=Ziekenhuis {name}/CN={cn}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args([
                "ca",
                "-batch",
                "-notext",
                "-days",
                "30",
                "-extensions",
                "leaf",
            ])
            .arg("-config")
            .arg(d.join("ca.cnf"))
            .arg("-extfile")
            .arg(&extfile)
            .arg("-in")
            .arg(&csr)
            .arg("-out")
            .arg(&cert));
        Leaf { cert, key }
    }

    /// Revokes `leaf` in the CA's database (`openssl ca -revoke`, reason keyCompromise).
    pub fn revoke(&self, leaf: &Leaf) {
        run(Command::new("openssl")
            .args(["ca", "-crl_reason", "keyCompromise", "-config"])
            .arg(self.dir.join("ca.cnf"))
            .arg("-revoke")
            .arg(&leaf.cert));
    }

    /// Writes a new CRL (`openssl ca -gencrl`, nextUpdate in `valid_seconds`) to `www/ca.crl` (DER).
    pub fn publish_crl(&self, valid_seconds: u64) {
        let pem = self.dir.join("ca.crl.pem");
        run(Command::new("openssl")
            .args(["ca", "-gencrl", "-crlsec"])
            .arg(valid_seconds.to_string())
            .arg("-config")
            .arg(self.dir.join("ca.cnf"))
            .arg("-out")
            .arg(&pem));
        let tmp = self.dir.join("www/ca.crl.tmp");
        run(Command::new("openssl")
            .args(["crl", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&tmp));
        std::fs::rename(tmp, self.dir.join("www/ca.crl")).unwrap();
    }

    /// Serves `www/` over HTTP on the CRL port (`python3 -m http.server`).
    pub fn serve_crl(&self) -> Proc {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(self.dir.join("www"))
            .arg(self.crl_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        wait_listening(self.crl_port);
        let mut child = Proc(child);
        // something else may hold the port (then the server exits and another process answered the probe)
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            matches!(child.0.try_wait(), Ok(None)),
            "the CRL server could not listen on port {}",
            self.crl_port
        );
        child
    }

    /// Runs `openssl ocsp` as responder for this CA on the OCSP port (answers valid 60 minutes,
    /// signed with the CA key).
    pub fn serve_ocsp(&self) -> Proc {
        let d = &self.dir;
        let mut child = Command::new("openssl")
            .args(["ocsp", "-nmin", "60", "-port"])
            .arg(self.ocsp_port.to_string())
            .arg("-index")
            .arg(d.join("index.txt"))
            .arg("-CA")
            .arg(d.join("ca.crt"))
            .arg("-rsigner")
            .arg(d.join("ca.crt"))
            .arg("-rkey")
            .arg(d.join("ca.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl ocsp");
        // openssl ocsp serves one connection at a time and stalls on one that sends nothing, so it is
        // not probed: its "waiting for OCSP client connections" line says it listens
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut told = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !told && line.contains("waiting for OCSP client connections") {
                    let _ = tx.send(());
                    told = true;
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("openssl ocsp did not start");
        Proc(child)
    }

    /// TLS files of `leaf` with this CA as trust bundle.
    pub fn tls(&self, leaf: &Leaf) -> TlsConfig {
        TlsConfig {
            cert_file: leaf.cert.clone(),
            key_file: leaf.key.clone(),
            trust_bundle_file: self.ca_file(),
        }
    }
}

/// A gateway configuration for organisation `ura` with `tls`, listening on loopback (ports picked by
/// the system), no Mitz (permitAll, every community), a local XDS registry that is never reached, the
/// front end `OpensslCa::issue("frontend", ..)` with DNS name `frontend.local` trusted (by issuer and
/// subject), and this revocation and TLS policy.
pub fn gateway_config(
    dir: &Path,
    ura: &str,
    tls: TlsConfig,
    revocation: RevocationConfig,
    min_version: TlsVersion,
) -> Config {
    let yaml = format!(
        r#"
organization:
  ura: "{ura}"
  name: Ziekenhuis Test
  facilityType: V6
  homeCommunityId: urn:oid:2.16.528.1.1007.3.3.{arc}.1
server:
  listen: 127.0.0.1:0
  opsListen: 127.0.0.1:0
  tls:
    certFile: {cert}
    keyFile: {key}
    trustBundleFile: {ca}
local:
  kind: xds
  registryUrl: https://127.0.0.1:9/registry
initiating:
  localization: allCommunities
  trustedFrontEnd:
    certificates:
      # the certificate OpensslCa::issue("frontend", ..) makes with DNS name frontend.local
      - issuer: CN=DUO test UZI-register Server CA,O=DUO test,C=NL
        subject: CN=frontend.local,O=Ziekenhuis frontend,C=NL
consent:
  mode: permitAll
audit:
  sink: {audit}
"#,
        arc = ura.trim_start_matches('0'),
        cert = tls.cert_file.display(),
        key = tls.key_file.display(),
        ca = tls.trust_bundle_file.display(),
        audit = dir.join("audit.jsonl").display(),
    );
    let mut c = Config::parse(&yaml).unwrap();
    c.revocation = revocation;
    c.tls_policy.min_version = min_version;
    c.validate().unwrap();
    c
}
