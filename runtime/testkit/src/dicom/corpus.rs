//! Loading a folder of real DICOM files (a PACS export, pydicom's test files) for an imaging document
//! source: readable instances grouped by Study Instance UID, one KOS manifest per study, and a load report
//! that names every file it skipped and why. Nothing in the folder can stop the load: unreadable files,
//! files without Study Instance UID, duplicates and oversized files are reported and skipped (issue 7).

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::kos::{Kos, KosOptions, build_kos};
use super::store::{InsertError, InstanceStore, StoredInstance};
use super::{DicomError, read_instance};

/// How to load.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// Manifest options for every study (retrieve location, patient identity to publish under, ...).
    /// SOP and Series Instance UIDs of the manifests are always derived per study: any given here are ignored.
    pub kos: KosOptions,
    /// Files larger than this many bytes are skipped unread (default 512 MiB).
    pub max_file_size: u64,
}

impl CorpusOptions {
    /// Options with the given retrieve location (the imaging document source's uniqueId).
    pub fn new(retrieve_location_uid: &str) -> CorpusOptions {
        CorpusOptions {
            kos: KosOptions {
                retrieve_location_uid: retrieve_location_uid.to_owned(),
                ..Default::default()
            },
            max_file_size: 512 * 1024 * 1024,
        }
    }
}

/// One study of the corpus.
#[derive(Debug, Clone)]
pub struct CorpusStudy {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Its instances (each with every encoding found), in load order.
    pub instances: Vec<StoredInstance>,
    /// Where each instance's first encoding came from (same order as `instances`).
    pub paths: Vec<PathBuf>,
    /// The manifest built for it.
    pub kos: Kos,
}

/// A file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// One-line reason, e.g. `missing Study Instance UID (0020,000D)`.
    pub reason: String,
}

/// The outcome of a load.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Loaded studies, ordered by Study Instance UID.
    pub studies: Vec<CorpusStudy>,
    /// Skipped files, in path order.
    pub skipped: Vec<SkippedFile>,
    /// Regular files seen.
    pub files: usize,
    /// Files loaded as another transfer syntax of an instance already held.
    pub alternate_encodings: usize,
}

impl LoadReport {
    /// Number of instances loaded.
    pub fn instances(&self) -> usize {
        self.studies.iter().map(|s| s.instances.len()).sum()
    }

    /// A human-readable summary: counts, then one line per skipped file.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} files: {} studies, {} instances ({} alternate encodings), {} skipped\n",
            self.files,
            self.studies.len(),
            self.instances(),
            self.alternate_encodings,
            self.skipped.len()
        );
        for k in &self.skipped {
            s.push_str(&format!("  skipped {}: {}\n", k.path.display(), k.reason));
        }
        s
    }
}

/// Loads every regular file under `dir` (recursively, symbolic links not followed, in path order).
///
/// Errors: only [`DicomError::Io`] when `dir` itself cannot be listed; anything wrong with a file or a
/// sub-folder is a [`SkippedFile`].
pub fn load_dir(dir: &Path, opts: &CorpusOptions) -> Result<LoadReport, DicomError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let top = std::fs::read_dir(dir).map_err(|e| DicomError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut pending: Vec<PathBuf> = top.filter_map(|e| e.ok().map(|e| e.path())).collect();
    while let Some(p) = pending.pop() {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(&p) {
                Ok(rd) => pending.extend(rd.filter_map(|e| e.ok().map(|e| e.path()))),
                Err(e) => skipped.push(SkippedFile {
                    path: p,
                    reason: format!("cannot list folder: {e}"),
                }),
            },
            Ok(m) if m.is_file() => files.push((p, m.len())),
            Ok(_) => {}
            Err(e) => skipped.push(SkippedFile {
                path: p,
                reason: format!("cannot stat: {e}"),
            }),
        }
    }
    files.sort();
    let mut loaded = Vec::new();
    let mut unread_files = 0;
    for (path, len) in files {
        if len > opts.max_file_size {
            skipped.push(SkippedFile {
                path,
                reason: format!("{len} bytes, more than the limit of {}", opts.max_file_size),
            });
            unread_files += 1;
            continue;
        }
        match std::fs::read(&path) {
            Ok(bytes) => loaded.push((path, bytes)),
            Err(e) => {
                skipped.push(SkippedFile {
                    path,
                    reason: format!("cannot read: {e}"),
                });
                unread_files += 1;
            }
        }
    }
    let mut report = load_files(loaded, opts);
    report.files += unread_files;
    report.skipped.extend(skipped);
    report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// Loads files given as (name, bytes), in the order given.
pub fn load_files(
    files: impl IntoIterator<Item = (PathBuf, Vec<u8>)>,
    opts: &CorpusOptions,
) -> LoadReport {
    let mut store = InstanceStore::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut report = LoadReport::default();
    for (path, bytes) in files {
        report.files += 1;
        let info = match read_instance(&bytes) {
            Ok(i) => i,
            Err(e) => {
                report.skipped.push(SkippedFile {
                    path,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        match store.insert(info, Bytes::from(bytes)) {
            Ok(super::store::Inserted::New) => paths.push(path),
            Ok(super::store::Inserted::AlternateEncoding) => report.alternate_encodings += 1,
            Err(e @ (InsertError::Duplicate(..) | InsertError::Conflict(..))) => {
                report.skipped.push(SkippedFile {
                    path,
                    reason: e.to_string(),
                })
            }
        }
    }
    let mut by_study: std::collections::BTreeMap<String, (Vec<StoredInstance>, Vec<PathBuf>)> =
        Default::default();
    for (inst, path) in store.instances().iter().zip(paths) {
        let e = by_study
            .entry(inst.info.study_instance_uid.clone())
            .or_default();
        e.0.push(inst.clone());
        e.1.push(path);
    }
    let kos_opts = KosOptions {
        sop_instance_uid: None,
        series_instance_uid: None,
        ..opts.kos.clone()
    };
    for (study_uid, (instances, paths)) in by_study {
        let infos: Vec<_> = instances.iter().map(|i| i.info.clone()).collect();
        match build_kos(&infos, &kos_opts) {
            Ok(kos) => report.studies.push(CorpusStudy {
                study_instance_uid: study_uid,
                instances,
                paths,
                kos,
            }),
            Err(e) => {
                for path in paths {
                    report.skipped.push(SkippedFile {
                        path,
                        reason: format!("study {study_uid}: cannot build its manifest: {e}"),
                    });
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::kos::parse_kos;
    use crate::dicom::synth::{SynthConfig, SynthPatient, generate_study};
    use crate::dicom::tool_checks::{python, run};
    use std::collections::{BTreeSet, HashMap};
    use std::process::Command;

    type Key = (String, String, String);

    fn keys_of(study: &CorpusStudy) -> BTreeSet<Key> {
        study
            .instances
            .iter()
            .map(|i| {
                (
                    i.info.study_instance_uid.clone(),
                    i.info.series_instance_uid.clone(),
                    i.info.sop_instance_uid.clone(),
                )
            })
            .collect()
    }

    fn keys_of_kos(bytes: &[u8]) -> BTreeSet<Key> {
        let m = parse_kos(bytes).unwrap();
        m.studies
            .iter()
            .flat_map(|st| {
                st.series.iter().flat_map(move |se| {
                    se.instances.iter().map(move |i| {
                        (
                            st.study_instance_uid.clone(),
                            se.series_instance_uid.clone(),
                            i.sop_instance_uid.clone(),
                        )
                    })
                })
            })
            .collect()
    }

    #[test]
    fn synthetic_folder_with_junk() {
        let dir = tempfile::tempdir().unwrap();
        let p = SynthPatient::example();
        let cfg = SynthConfig::default();
        let mut expected = 0;
        for seed in 0..3 {
            let s = generate_study(&cfg, &p, seed).unwrap();
            let sub = dir.path().join(format!("s{seed}"));
            std::fs::create_dir(&sub).unwrap();
            for (k, i) in s.instances.iter().enumerate() {
                std::fs::write(sub.join(format!("{k}.dcm")), &i.bytes).unwrap();
                expected += 1;
            }
        }
        let one = generate_study(&cfg, &p, 0).unwrap();
        std::fs::write(dir.path().join("zz-copy.dcm"), &one.instances[0].bytes).unwrap();
        std::fs::write(dir.path().join("readme.txt"), b"not dicom").unwrap();
        std::fs::write(dir.path().join("cut.dcm"), &one.instances[0].bytes[..700]).unwrap();
        let report = load_dir(dir.path(), &CorpusOptions::new("1.2.3.4")).unwrap();
        assert_eq!(report.studies.len(), 3);
        assert_eq!(report.instances(), expected);
        assert_eq!(report.files, expected + 3);
        let reasons: HashMap<String, String> = report
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_string_lossy().into_owned(),
                    s.reason.clone(),
                )
            })
            .collect();
        assert!(reasons["zz-copy.dcm"].contains("duplicate"), "{reasons:?}");
        assert!(
            reasons["readme.txt"].starts_with("not a DICOM Part 10 file"),
            "{reasons:?}"
        );
        assert!(reasons["cut.dcm"].starts_with("malformed"), "{reasons:?}");
        for s in &report.studies {
            assert_eq!(keys_of_kos(&s.kos.bytes), keys_of(s));
        }
        assert!(report.summary().contains("3 studies"));
        assert!(matches!(
            load_dir(&dir.path().join("absent"), &CorpusOptions::new("1.2.3")),
            Err(DicomError::Io { .. })
        ));
    }

    /// pydicom's shipped test files (issue 7 item 1): real CT/MR/RT/SR/secondary capture files in many transfer
    /// syntaxes, DICOMDIRs, and deliberately broken files.
    #[test]
    fn pydicom_test_files() {
        let Some(py) = python() else { return };
        let (ok, out, err) = run(Command::new(&py).arg("-c").arg(
            "import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
        ));
        assert!(ok, "pydicom not importable from DUO_PYTHON: {err}");
        let dir = PathBuf::from(out.trim());
        assert!(dir.is_dir(), "{} is not a folder", dir.display());
        let report = load_dir(&dir, &CorpusOptions::new("1.3.6.1.4.1.21367.13.80.110")).unwrap();
        eprintln!("{}", report.summary());

        assert!(
            report.studies.len() >= 20,
            "only {} studies loaded",
            report.studies.len()
        );
        assert!(
            report.instances() >= 80,
            "only {} instances loaded",
            report.instances()
        );
        assert!(
            report.alternate_encodings >= 5,
            "MR_small in several transfer syntaxes shares one SOP Instance UID"
        );

        let reason = |name: &str| {
            report
                .skipped
                .iter()
                .find(|s| s.path.file_name().is_some_and(|n| n == name))
                .map(|s| s.reason.clone())
                .unwrap_or_else(|| panic!("{name} was not skipped"))
        };
        // deliberately broken or not Part 10
        assert!(
            reason("MR_truncated.dcm").starts_with("malformed"),
            "{}",
            reason("MR_truncated.dcm")
        );
        assert!(
            reason("rtplan_truncated.dcm").starts_with("malformed"),
            "{}",
            reason("rtplan_truncated.dcm")
        );
        assert!(reason("no_meta.dcm").starts_with("not a DICOM Part 10 file"));
        assert!(reason("ExplVR_LitEndNoMeta.dcm").starts_with("not a DICOM Part 10 file"));
        assert!(reason("meta_missing_tsyntax.dcm").contains("Transfer Syntax UID (0002,0010)"));
        assert!(reason("README.txt").starts_with("not a DICOM Part 10 file"));
        // readable, but no Study Instance UID: a DICOMDIR is a directory, not an instance
        assert_eq!(reason("DICOMDIR"), "missing Study Instance UID (0020,000D)");

        // every manifest parses back to exactly the instances it was built from
        for s in &report.studies {
            assert_eq!(
                keys_of_kos(&s.kos.bytes),
                keys_of(s),
                "study {}",
                s.study_instance_uid
            );
            assert_eq!(
                s.kos
                    .manifest
                    .study()
                    .map(|x| x.study_instance_uid.as_str()),
                Some(s.study_instance_uid.as_str())
            );
        }

        // pydicom (default strictness) reads every file we loaded, with the same UIDs
        let script = r#"
import sys, pydicom
for p in sys.argv[1:]:
    ds = pydicom.dcmread(p)
    print(p, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, sep="|")
"#;
        let mut cmd = Command::new(&py);
        cmd.arg("-c").arg(script);
        let mut expected = Vec::new();
        for s in &report.studies {
            for (i, p) in s.instances.iter().zip(&s.paths) {
                cmd.arg(p);
                expected.push(format!(
                    "{}|{}|{}|{}",
                    p.display(),
                    i.info.study_instance_uid,
                    i.info.series_instance_uid,
                    i.info.sop_instance_uid
                ));
            }
        }
        let (ok, out, err) = run(&mut cmd);
        assert!(ok, "pydicom could not read a file we loaded: {err}");
        assert_eq!(out.lines().collect::<Vec<_>>(), expected);

        // Files we skipped that pydicom reads and finds a Study Instance UID in: each must be a duplicate, an
        // encoding the parser does not support, or broken in a way pydicom tolerates (truncated, wrong VR
        // coding); never "missing ..." or "not Part 10" when the data is there.
        let script = r#"
import sys, warnings, pydicom
warnings.simplefilter("ignore")
for p in sys.argv[1:]:
    try:
        ds = pydicom.dcmread(p)
        print(p, ds.get("StudyInstanceUID", ""), sep="|")
    except Exception as e:
        print(p, "", sep="|")
"#;
        let mut cmd = Command::new(&py);
        cmd.arg("-c").arg(script);
        for k in &report.skipped {
            cmd.arg(&k.path);
        }
        let (ok, out, err) = run(&mut cmd);
        assert!(ok, "{err}");
        let mut readable_by_pydicom = Vec::new();
        for (line, k) in out.lines().zip(&report.skipped) {
            let (_, study) = line.split_once('|').unwrap();
            if !study.is_empty() {
                readable_by_pydicom.push(format!("{}: {}", k.path.display(), k.reason));
                let r = &k.reason;
                assert!(
                    r.starts_with("duplicate of")
                        || r.starts_with("unsupported")
                        || (r.starts_with("malformed")
                            && (r.contains("remain") || r.contains("implicit VR"))),
                    "{}: pydicom reads it (study {study}) but we skipped it: {r}",
                    k.path.display()
                );
            }
        }
        eprintln!(
            "skipped although pydicom reads them:\n  {}",
            readable_by_pydicom.join("\n  ")
        );
    }
}
