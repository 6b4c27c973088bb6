//! Peak memory of the streaming retrieve relay (issue 2 bar: peak RSS < 64 MiB for 1 GiB): relays a
//! 1 GiB MTOM retrieve response (2,048 DICOM-sized parts) reader → writer once and prints throughput
//! and the process's peak resident set (`VmHWM` of /proc/self/status). Exits non-zero above the bar.
//!
//! `cargo bench -p duo-runtime --bench ihe_rss`

use std::time::Instant;

mod relay;

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    duo_runtime::tune_allocator();
    // `cargo bench` passes `--bench`; nothing to configure
    const PARTS: usize = 2048;
    const PART: usize = 512 * 1024;
    let before = vm_hwm_kib().unwrap_or(0);
    let t = Instant::now();
    let (read, written, n) = futures::executor::block_on(relay::relay(PARTS, PART));
    let secs = t.elapsed().as_secs_f64();
    let peak = vm_hwm_kib().unwrap_or(0);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "relay: {n} parts, {:.1} MiB in, {:.1} MiB out, {:.2} s, {:.0} MiB/s ({:.0} MB/s)",
        mib(read),
        mib(written),
        secs,
        mib(read) / secs,
        read as f64 / 1e6 / secs
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB (before the relay: {:.1} MiB)",
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    if peak > 64 * 1024 {
        eprintln!("peak RSS above the 64 MiB bar");
        std::process::exit(1);
    }
}
