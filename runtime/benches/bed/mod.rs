//! Shared by the gateway load benches (`timeline_load`, `gateway_relay`): a `duo-gateway serve` child
//! process started from a written configuration, its addresses read from its start-up log line, and its
//! memory read from `/proc/<pid>/status`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use duo_runtime::config::Config;

/// The `duo-gateway` binary: `DUO_GATEWAY_BIN`, else `$CARGO_TARGET_DIR/release/duo-gateway`, else the
/// workspace's `target/release/duo-gateway`. `scripts/perf.sh` builds it first.
pub fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DUO_GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/duo-gateway")
}

/// A running `duo-gateway serve` process; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// Its mutual-TLS listener.
    pub addr: SocketAddr,
    /// Its ops listener (`/metrics`).
    pub ops_addr: SocketAddr,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Writes `config` to `dir/gateway.yaml` and starts `duo-gateway serve` on it (its logs go to
    /// `dir/gateway.log`, audit lines wherever the config says). Panics with the log when it does not
    /// come up within 30 s.
    pub fn start(config: &Config, dir: &Path) -> GatewayProcess {
        let file = dir.join("gateway.yaml");
        std::fs::write(&file, config.to_yaml()).unwrap();
        let bin = gateway_bin();
        assert!(
            bin.is_file(),
            "{} missing: cargo build --release --bin duo-gateway (scripts/perf.sh does)",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn,duo_gateway=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().unwrap();
        let log_file = dir.join("gateway.log");
        let (tx, rx) = mpsc::channel();
        // reads the log: reports the start-up line, keeps draining so the child never blocks on stderr
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(&log_file).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["fields"]["message"] == "duo-gateway serving"
                {
                    let parse = |k: &str| v["fields"][k].as_str().and_then(|s| s.parse().ok());
                    if let (Some(a), Some(o)) = (parse("listen"), parse("ops")) {
                        let _ = tx.send((a, o));
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((addr, ops_addr)) => GatewayProcess {
                child,
                addr,
                ops_addr,
            },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "duo-gateway did not start; log:\n{}",
                    std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
                );
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://localhost:<port>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Peak resident set (`VmHWM`) and current resident set (`VmRSS`), KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.pid())
    }
}

/// `VmHWM` and `VmRSS` of process `pid`, KiB (0 when unreadable).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Percentile `p` (0..=100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The command line after `--` (cargo bench passes `--bench` to harness-less benches): `--name value`
/// pairs.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The value after `name` on the command line parsed as `T`, or `default` when absent or unparsable.
pub fn arg_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The benchmarks' tokio runtime: two workers, as many as the development machine has CPUs.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// CPU time (user + system) of process `pid` so far, in clock ticks of 10 ms (`/proc/<pid>/stat`
/// fields 14 and 15); 0 when unreadable.
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name in parentheses, which may itself hold spaces
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}
