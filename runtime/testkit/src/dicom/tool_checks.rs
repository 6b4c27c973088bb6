//! Checks of what this module writes with tools no one here wrote: dcmtk `dcmdump`, dicom3tools `dciodvfy`
//! (IOD conformance), pydicom (`$DUO_PYTHON`), `xmllint` and pypdf.
//!
//! A missing tool fails the test when `CI` or `DUO_REQUIRE_TOOLS=1` is set (scripts/setup.sh installs them
//! all) and is skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::kos::{KosOptions, build_kos};
use super::synth::{Modality, SynthConfig, SynthPatient, generate_study};

fn tools_required() -> bool {
    let ci = std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false" && v != "0")
        .unwrap_or(false);
    ci || std::env::var("DUO_REQUIRE_TOOLS")
        .map(|v| v == "1")
        .unwrap_or(false)
}

fn missing(what: &str) -> Option<PathBuf> {
    if tools_required() {
        panic!(
            "{what} is required (CI or DUO_REQUIRE_TOOLS=1 is set); install it with scripts/setup.sh"
        );
    }
    eprintln!("SKIP: {what} not available (run scripts/setup.sh and `source .tools/env`)");
    None
}

/// The path of `name` on PATH, or `None` (after a skip message) when it is absent and not required.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    missing(&format!("`{name}`"))
}

/// `$DUO_PYTHON` (the project virtualenv with pydicom and pypdf), or `None` when unset and not required.
pub(crate) fn python() -> Option<PathBuf> {
    match std::env::var_os("DUO_PYTHON") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => missing("DUO_PYTHON (the project's Python virtualenv)"),
    }
}

/// Runs a command; returns (exit success, stdout, stderr).
pub(crate) fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Files written by [`write_samples`].
struct Samples {
    instances: Vec<PathBuf>,
    manifests: Vec<PathBuf>,
    /// (path, SOP Instance UID, Study Instance UID) of every file.
    expected: Vec<(PathBuf, String, String)>,
}

/// A sample of synthetic studies covering every modality, with their manifests, written to `dir`.
fn write_samples(dir: &Path) -> Samples {
    let patient = SynthPatient::example();
    let mut instances = Vec::new();
    let mut manifests = Vec::new();
    let mut expected = Vec::new();
    for (n, m) in Modality::ALL.iter().enumerate() {
        let cfg = SynthConfig {
            modalities: vec![*m],
            series_per_study: (2, 2),
            instances_per_series: (2, 2),
            ..Default::default()
        };
        let s = generate_study(&cfg, &patient, 100 + n as u64).unwrap();
        for (k, i) in s.instances.iter().enumerate() {
            let p = dir.join(format!("{}-{k}.dcm", m.code()));
            std::fs::write(&p, &i.bytes).unwrap();
            expected.push((
                p.clone(),
                i.info.sop_instance_uid.clone(),
                i.info.study_instance_uid.clone(),
            ));
            instances.push(p);
        }
        let opts = KosOptions {
            retrieve_location_uid: "1.3.6.1.4.1.21367.13.80.110".into(),
            description: Some("XDS-I.b manifest".into()),
            ..Default::default()
        };
        let kos = build_kos(&s.infos(), &opts).unwrap();
        let p = dir.join(format!("{}-kos.dcm", m.code()));
        std::fs::write(&p, &kos.bytes).unwrap();
        expected.push((
            p.clone(),
            kos.manifest.sop_instance_uid.clone(),
            s.study_instance_uid.clone(),
        ));
        manifests.push(p);
    }
    Samples {
        instances,
        manifests,
        expected,
    }
}

#[test]
fn dcmdump_reads_every_instance_and_manifest() {
    let Some(dcmdump) = tool("dcmdump") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Samples {
        instances,
        manifests,
        ..
    } = write_samples(dir.path());
    for p in instances.iter().chain(&manifests) {
        // +E: print parser errors; -q would hide warnings we want to see in the failure message
        let (ok, out, err) = run(Command::new(&dcmdump).arg("-dc").arg("+E").arg(p));
        assert!(ok, "dcmdump failed on {}: {err}", p.display());
        assert!(
            !err.contains("E: ") && !err.contains("W: "),
            "dcmdump complained about {}: {err}",
            p.display()
        );
        assert!(
            out.contains("(0020,000d)"),
            "no Study Instance UID in dump of {}",
            p.display()
        );
    }
    // the manifest structure as dcmtk sees it
    let (_, out, _) = run(Command::new(&dcmdump).arg(&manifests[0]));
    for needle in [
        "=KeyObjectSelectionDocumentStorage",
        "(0040,a375)",
        "(0040,e011)",
        "(0040,a370)",
        "113030",
    ] {
        assert!(out.contains(needle), "KOS dump lacks {needle}:\n{out}");
    }
}

#[test]
fn dsrdump_reads_the_manifest_content_tree() {
    let Some(dsrdump) = tool("dsrdump") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Samples { manifests, .. } = write_samples(dir.path());
    for p in &manifests {
        let (ok, out, err) = run(Command::new(&dsrdump).arg("-Ee").arg(p));
        assert!(ok, "dsrdump failed on {}: {err}", p.display());
        assert!(
            err.lines().all(|l| !l.starts_with("E:")),
            "dsrdump errors on {}: {err}",
            p.display()
        );
        assert!(out.starts_with("Key Object Selection Document"), "{out}");
        assert!(
            out.contains("<CONTAINER:(,,\"Manifest\")=SEPARATE>"),
            "{out}"
        );
        // write_samples makes 2 series x 2 instances per study, all images
        assert_eq!(out.matches("<contains IMAGE:").count(), 4, "{out}");
    }
}

#[test]
fn dciodvfy_finds_no_iod_errors() {
    let Some(dciodvfy) = tool("dciodvfy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Samples {
        instances,
        manifests,
        ..
    } = write_samples(dir.path());
    let mut failures = Vec::new();
    for p in instances.iter().chain(&manifests) {
        let (_, out, err) = run(Command::new(&dciodvfy).arg(p));
        let text = format!("{out}{err}");
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
        if !errors.is_empty() {
            failures.push(format!("{}:\n  {}", p.display(), errors.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "dciodvfy errors:\n{}",
        failures.join("\n")
    );
}

#[test]
fn pydicom_reads_the_same_uids() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Samples { expected, .. } = write_samples(dir.path());
    let script = r#"
import sys, pydicom
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)   # default strictness: raises on a broken file
    ds.remove_private_tags()
    _ = str(ds)                  # decode every element
    print(path, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.file_meta.TransferSyntaxUID, ds.PatientName, sep="|")
"#;
    let mut cmd = Command::new(py);
    cmd.arg("-c").arg(script);
    for (p, _, _) in &expected {
        cmd.arg(p);
    }
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "pydicom failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expected.len());
    for ((p, sop, study), line) in expected.iter().zip(lines) {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f[0], p.to_str().unwrap());
        assert_eq!(f[1], sop);
        assert_eq!(f[2], study);
        assert_eq!(f[3], "1.2.840.10008.1.2.1");
        assert_eq!(
            f[4], "Jansen-de Vries^Eline",
            "the UTF-8 name decoded by pydicom"
        );
    }
}
