//! Helpers shared by the wire-conformance tests: test data paths, xmllint, body extraction.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use duo_runtime::xml::{Limits, Reader, ns};

/// `testdata/` of the repository this crate is in.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// Reads a file under `testdata/`.
pub fn read(rel: &str) -> Vec<u8> {
    let p = testdata().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file under `testdata/<rel>` (recursively), sorted.
pub fn files_under(rel: &str) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        } else {
            out.push(p.to_owned());
        }
    }
    let mut out = Vec::new();
    walk(&testdata().join(rel), &mut out);
    out
}

/// Path of `p` relative to `testdata/`, for messages.
pub fn rel(p: &Path) -> String {
    p.strip_prefix(testdata())
        .unwrap_or(p)
        .display()
        .to_string()
}

/// The xmllint binary; fails the test clearly when it is not installed (scripts/setup.sh installs it).
pub fn xmllint() -> &'static str {
    let ok = Command::new("xmllint")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "xmllint is not on PATH: run scripts/setup.sh (Debian package libxml2-utils)"
    );
    "xmllint"
}

/// Validates `xml` against `testdata/ihe/schema/<schema>` with xmllint. `Err` carries xmllint's output.
pub fn validate(schema: &str, xml: &str, label: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!(
        "{}.xml",
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    std::fs::write(&file, xml).unwrap();
    let xsd = testdata().join("ihe/schema").join(schema);
    let out = Command::new(xmllint())
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.contains("validates") {
        Ok(())
    } else {
        Err(format!(
            "{label} does not validate against {schema} (exit {:?}):\n{stderr}\n--- document ---\n{xml}",
            out.status.code()
        ))
    }
}

/// Asserts validation.
pub fn assert_valid(schema: &str, xml: &str, label: &str) {
    if let Err(e) = validate(schema, xml, label) {
        panic!("{e}");
    }
}

/// The SOAP Body's payload element of `envelope` as a self-contained document (namespace declarations
/// of the envelope it uses carried over), exactly as it was on the wire.
pub fn body_of(envelope: &[u8]) -> String {
    let limits = Limits::default();
    let mut r = Reader::new(envelope, &limits).unwrap();
    let env = r.root().unwrap();
    while let Some(part) = r.child(&env).unwrap() {
        if part.is(ns::SOAP12, "Body") {
            let payload = r.child(&part).unwrap().expect("body payload");
            return r.raw_fragment(&payload).unwrap();
        }
    }
    panic!("no SOAP Body");
}
