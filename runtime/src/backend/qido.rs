//! QIDO-RS results (DICOM PS3.18 10.6, DICOM JSON model PS3.18 F.2) mapped to the domain model.
//!
//! Only the attributes the timeline needs are read; a missing attribute is empty, a malformed result is
//! an error naming the attribute.

use serde_json::Value;

use crate::model::{ImagingInstance, ImagingSeries, ImagingStudy};

/// A study-level QIDO-RS result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QidoStudy {
    /// The study (without series; see [`parse_series`] / [`parse_instances`]).
    pub study: ImagingStudy,
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Modalities in Study (0008,0061).
    pub modalities: Vec<String>,
    /// Number of Study Related Series (0020,1206).
    pub number_of_series: Option<usize>,
    /// Number of Study Related Instances (0020,1208).
    pub number_of_instances: Option<usize>,
}

/// Why a QIDO-RS answer was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QidoError {
    /// The body is not a JSON array of datasets.
    #[error("QIDO-RS answer is not a DICOM JSON array: {0}")]
    NotDicomJson(String),
    /// A required attribute is missing.
    #[error("QIDO-RS result lacks {0}")]
    Missing(&'static str),
}

/// The first value of attribute `tag` (8 hex digits) as text: strings as is, numbers formatted, person
/// names by their Alphabetic component.
fn first(ds: &Value, tag: &str) -> Option<String> {
    let v = ds.get(tag)?.get("Value")?.as_array()?.first()?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn all(ds: &Value, tag: &str) -> Vec<String> {
    ds.get(tag)
        .and_then(|a| a.get("Value"))
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn datasets(body: &[u8]) -> Result<Vec<Value>, QidoError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        // 204 No Content / empty body: no matches
        return Ok(Vec::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(_) => Err(QidoError::NotDicomJson("not an array".into())),
        Err(e) => Err(QidoError::NotDicomJson(e.to_string())),
    }
}

/// Parses `GET {base}/studies?...` results.
pub fn parse_studies(body: &[u8]) -> Result<Vec<QidoStudy>, QidoError> {
    datasets(body)?
        .iter()
        .map(|ds| {
            let uid =
                first(ds, "0020000D").ok_or(QidoError::Missing("StudyInstanceUID (0020,000D)"))?;
            Ok(QidoStudy {
                study: ImagingStudy {
                    study_instance_uid: uid,
                    accession_number: first(ds, "00080050").unwrap_or_default(),
                    study_date: first(ds, "00080020").unwrap_or_default(),
                    study_time: first(ds, "00080030").unwrap_or_default(),
                    description: first(ds, "00081030").unwrap_or_default(),
                    body_part: first(ds, "00180015").unwrap_or_default(),
                    series: Vec::new(),
                },
                patient_id: first(ds, "00100020").unwrap_or_default(),
                modalities: all(ds, "00080061"),
                number_of_series: first(ds, "00201206").and_then(|s| s.parse().ok()),
                number_of_instances: first(ds, "00201208").and_then(|s| s.parse().ok()),
            })
        })
        .collect()
}

/// Parses `GET {base}/studies/{study}/series` results into series without instances.
pub fn parse_series(body: &[u8]) -> Result<Vec<ImagingSeries>, QidoError> {
    datasets(body)?
        .iter()
        .map(|ds| {
            Ok(ImagingSeries {
                series_instance_uid: first(ds, "0020000E")
                    .ok_or(QidoError::Missing("SeriesInstanceUID (0020,000E)"))?,
                modality: first(ds, "00080060").unwrap_or_default(),
                retrieve_location_uid: String::new(),
                instances: Vec::new(),
            })
        })
        .collect()
}

/// Parses `GET {base}/studies/{study}/series/{series}/instances` results.
pub fn parse_instances(body: &[u8]) -> Result<Vec<ImagingInstance>, QidoError> {
    datasets(body)?
        .iter()
        .map(|ds| {
            Ok(ImagingInstance {
                sop_instance_uid: first(ds, "00080018")
                    .ok_or(QidoError::Missing("SOPInstanceUID (0008,0018)"))?,
                sop_class_uid: first(ds, "00080016").unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shape as Orthanc's DICOMweb plugin answers QIDO-RS (DICOM JSON model, PS3.18 F.2).
    const STUDIES: &str = r#"[{"00080020":{"vr":"DA","Value":["20240105"]},"00080030":{"vr":"TM","Value":["101500"]},
      "00080050":{"vr":"SH","Value":["ACC1"]},"00080061":{"vr":"CS","Value":["CT","SR"]},
      "00081030":{"vr":"LO","Value":["CT thorax"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^John"}]},
      "00100020":{"vr":"LO","Value":["900186021"]},"0020000D":{"vr":"UI","Value":["1.2.840.1"]},
      "00201206":{"vr":"IS","Value":[2]},"00201208":{"vr":"IS","Value":[31]}}]"#;

    #[test]
    fn studies() {
        let s = parse_studies(STUDIES.as_bytes()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].study.study_instance_uid, "1.2.840.1");
        assert_eq!(s[0].study.accession_number, "ACC1");
        assert_eq!(s[0].modalities, vec!["CT", "SR"]);
        assert_eq!(s[0].number_of_instances, Some(31));
        assert_eq!(s[0].patient_id, "900186021");
        assert!(parse_studies(b"").unwrap().is_empty());
        assert!(parse_studies(b"{}").is_err());
        assert!(parse_studies(b"[{}]").is_err());
        assert!(parse_studies(b"not json").is_err());
    }

    #[test]
    fn series_and_instances() {
        let se = parse_series(br#"[{"0020000E":{"vr":"UI","Value":["1.2.3"]},"00080060":{"vr":"CS","Value":["CT"]}}]"#).unwrap();
        assert_eq!(se[0].modality, "CT");
        let i = parse_instances(br#"[{"00080018":{"vr":"UI","Value":["1.2.3.4"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]}}]"#).unwrap();
        assert_eq!(i[0].sop_instance_uid, "1.2.3.4");
    }
}
