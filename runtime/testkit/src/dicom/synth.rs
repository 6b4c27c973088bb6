//! Deterministic synthetic imaging studies: valid DICOM Part 10 files with real tags and pixel data.
//!
//! One seed gives one study: modality, description, body part, accession number, date and time, N series
//! of M instances. Each instance is an image of its modality's IOD (PS3.3 A.3 CT, A.4 MR, A.2 CR, A.26 DX,
//! A.6 US) written in Explicit VR Little Endian with File Meta Information (PS3.10 7.1), the patient
//! identified by BSN (Patient ID, Issuer of Patient ID `NLMINBIZA`, qualifiers with the BSN OID), and a
//! MONOCHROME2 pixel matrix with a visible phantom (body outline, a structure that changes across slices,
//! a series-dependent texture). The same seed and configuration always give the same bytes.

use bytes::Bytes;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

pub(crate) use super::dataset::encode;
use super::dataset::{code_item, da, issuer_item, put_seq, put_str, tm};
use super::uid::{UidGenerator, UidRoot};
use super::{DicomError, InstanceInfo};
use crate::model::{Bsn, ImagingInstance, ImagingSeries, ImagingStudy};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = splitmix64(self.0);
        self.0
    }
    /// Uniform-enough value in `lo..=hi` (the modulo bias is irrelevant for test data).
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// The image modalities the generator writes, each as its own storage SOP class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// Computed Tomography, CT Image Storage.
    Ct,
    /// Magnetic Resonance, MR Image Storage.
    Mr,
    /// Computed Radiography, CR Image Storage.
    Cr,
    /// Digital Radiography, Digital X-Ray Image Storage - For Presentation.
    Dx,
    /// Ultrasound, Ultrasound Image Storage (8-bit).
    Us,
}

impl Modality {
    /// Every modality, in a fixed order.
    pub const ALL: [Modality; 5] = [
        Modality::Ct,
        Modality::Mr,
        Modality::Cr,
        Modality::Dx,
        Modality::Us,
    ];

    /// The DICOM Modality (0008,0060) code (CID 29).
    pub fn code(self) -> &'static str {
        match self {
            Modality::Ct => "CT",
            Modality::Mr => "MR",
            Modality::Cr => "CR",
            Modality::Dx => "DX",
            Modality::Us => "US",
        }
    }

    /// The storage SOP Class UID (PS3.4 B.5).
    pub fn sop_class_uid(self) -> &'static str {
        match self {
            Modality::Ct => "1.2.840.10008.5.1.4.1.1.2",
            Modality::Mr => "1.2.840.10008.5.1.4.1.1.4",
            Modality::Cr => "1.2.840.10008.5.1.4.1.1.1",
            Modality::Dx => "1.2.840.10008.5.1.4.1.1.1.1",
            Modality::Us => "1.2.840.10008.5.1.4.1.1.6.1",
        }
    }

    /// (study description, Body Part Examined, laterality or empty) choices.
    fn exams(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Modality::Ct => &[
                ("CT thorax met contrast", "CHEST", ""),
                ("CT abdomen blanco", "ABDOMEN", ""),
                ("CT hersenen blanco", "HEAD", ""),
            ],
            Modality::Mr => &[
                ("MRI knie links", "KNEE", "L"),
                ("MRI hersenen", "HEAD", ""),
                ("MRI lumbale wervelkolom", "LSPINE", ""),
            ],
            Modality::Cr => &[("X-thorax PA", "CHEST", ""), ("X-hand rechts", "HAND", "R")],
            Modality::Dx => &[
                ("X-thorax staand", "CHEST", ""),
                ("X-knie rechts", "KNEE", "R"),
            ],
            Modality::Us => &[("Echo abdomen", "ABDOMEN", ""), ("Echo hals", "NECK", "")],
        }
    }

    fn series_descriptions(self) -> &'static [&'static str] {
        match self {
            Modality::Ct => &["Axiaal 5 mm", "Coronaal 3 mm", "Sagittaal 3 mm"],
            Modality::Mr => &["T1 SE", "T2 TSE", "PD FS", "T1 na contrast"],
            Modality::Cr | Modality::Dx => &["PA", "Lateraal"],
            Modality::Us => &["B-mode", "B-mode transversaal"],
        }
    }

    fn cross_sectional(self) -> bool {
        matches!(self, Modality::Ct | Modality::Mr)
    }
}

/// Settings shared by every generated study.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Where Study, Series, SOP Instance and Frame of Reference UIDs live.
    pub uid_root: UidRoot,
    /// Modalities to choose from (at least one).
    pub modalities: Vec<Modality>,
    /// Series per study, inclusive range.
    pub series_per_study: (u32, u32),
    /// Instances per series, inclusive range.
    pub instances_per_series: (u32, u32),
    /// Rows of every image (8..=4096).
    pub rows: u16,
    /// Columns of every image (8..=4096).
    pub columns: u16,
    /// Earliest study date.
    pub first_date: Date,
    /// Latest study date.
    pub last_date: Date,
    /// Prefix of accession numbers (the total is at most 16 characters: SH).
    pub accession_prefix: String,
    /// OID that issues the accession numbers (Issuer of Accession Number Sequence, Universal Entity ID);
    /// `None` leaves the sequence out.
    pub accession_authority: Option<String>,
    /// Institution Name (0008,0080).
    pub institution_name: String,
    /// Manufacturer (0008,0070).
    pub manufacturer: String,
    /// Station Name (0008,1010).
    pub station_name: String,
    /// Referring Physician's Name (0008,0090), PN.
    pub referring_physician: String,
    /// Local time zone of the study times; Timezone Offset From UTC (0008,0201) is written from it.
    pub time_zone: TimeZone,
}

impl Default for SynthConfig {
    /// 1..=3 series of 2..=5 instances of 64×64 pixels, any modality, studies between 2015 and 2025 in
    /// Europe/Amsterdam time (UTC when the system has no time zone database), UIDs under `2.25`.
    fn default() -> Self {
        SynthConfig {
            uid_root: UidRoot::Uuid,
            modalities: Modality::ALL.to_vec(),
            series_per_study: (1, 3),
            instances_per_series: (2, 5),
            rows: 64,
            columns: 64,
            first_date: Date::constant(2015, 1, 1),
            last_date: Date::constant(2025, 12, 31),
            accession_prefix: "DUO".into(),
            accession_authority: Some("2.16.528.1.1007.99.1.1".into()),
            institution_name: "DUO Demoziekenhuis".into(),
            manufacturer: "DUO synthetic".into(),
            station_name: "DUOSIM01".into(),
            referring_physician: "Huisarts^Hanneke".into(),
            time_zone: TimeZone::get("Europe/Amsterdam").unwrap_or(TimeZone::UTC),
        }
    }
}

/// The patient a study is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthPatient {
    /// BSN: Patient ID (0010,0020), issuer `NLMINBIZA`, authority OID `2.16.840.1.113883.2.4.6.3`.
    pub bsn: Bsn,
    /// Patient's Name, PN (`Family^Given`); any Unicode (written as UTF-8, ISO_IR 192).
    pub name: String,
    /// Patient's Birth Date, `YYYYMMDD`.
    pub birth_date: String,
    /// Patient's Sex: `M`, `F` or `O`.
    pub sex: String,
}

impl SynthPatient {
    /// A fixed test patient (BSN 999911120, a test BSN that passes the 11-check).
    pub fn example() -> SynthPatient {
        SynthPatient {
            bsn: "999911120"
                .parse()
                .unwrap_or_else(|_| unreachable!("constant BSN passes the 11-check")),
            name: "Jansen-de Vries^Eline".into(),
            birth_date: "19700312".into(),
            sex: "F".into(),
        }
    }
}

/// One generated instance: its Part 10 encoding and the facts read back from it.
#[derive(Debug, Clone)]
pub struct SyntheticInstance {
    /// What [`super::read_instance`] returns for `bytes`.
    pub info: InstanceInfo,
    /// The Part 10 file, preamble included.
    pub bytes: Bytes,
}

/// One generated study.
#[derive(Debug, Clone)]
pub struct SyntheticStudy {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Accession Number.
    pub accession_number: String,
    /// The OID scoping the accession number, when configured.
    pub accession_authority: Option<String>,
    /// The modality of every series.
    pub modality: Modality,
    /// Study Description.
    pub description: String,
    /// Body Part Examined.
    pub body_part: String,
    /// Study Date, `YYYYMMDD`.
    pub study_date: String,
    /// Study Time, `HHMMSS`.
    pub study_time: String,
    /// Timezone Offset From UTC of the study time, `+HHMM`.
    pub timezone_offset: String,
    /// Instances, series by series, in instance number order.
    pub instances: Vec<SyntheticInstance>,
}

impl SyntheticStudy {
    /// The instances' facts, in order.
    pub fn infos(&self) -> Vec<InstanceInfo> {
        self.instances.iter().map(|i| i.info.clone()).collect()
    }

    /// The study as the model describes it, with every series retrievable at `retrieve_location_uid`.
    pub fn imaging_study(&self, retrieve_location_uid: &str) -> ImagingStudy {
        let mut series: Vec<ImagingSeries> = Vec::new();
        for i in &self.instances {
            let inst = ImagingInstance {
                sop_instance_uid: i.info.sop_instance_uid.clone(),
                sop_class_uid: i.info.sop_class_uid.clone(),
            };
            match series
                .iter_mut()
                .find(|s| s.series_instance_uid == i.info.series_instance_uid)
            {
                Some(s) => s.instances.push(inst),
                None => series.push(ImagingSeries {
                    series_instance_uid: i.info.series_instance_uid.clone(),
                    modality: i.info.modality.clone(),
                    retrieve_location_uid: retrieve_location_uid.to_owned(),
                    instances: vec![inst],
                }),
            }
        }
        ImagingStudy {
            study_instance_uid: self.study_instance_uid.clone(),
            accession_number: self.accession_number.clone(),
            study_date: self.study_date.clone(),
            study_time: self.study_time.clone(),
            description: self.description.clone(),
            body_part: self.body_part.clone(),
            series,
        }
    }

    /// Total size of the instances' encodings, in bytes.
    pub fn size(&self) -> u64 {
        self.instances.iter().map(|i| i.bytes.len() as u64).sum()
    }
}

/// Generates the study of `patient` for `seed`.
///
/// The same configuration, patient and seed always give byte-identical files; different seeds (or
/// patients) give different UIDs. Errors: [`DicomError::InvalidOption`] for an empty modality list, image
/// sizes outside 8..=4096, an inverted date range or a UID root that is too long.
pub fn generate_study(
    cfg: &SynthConfig,
    patient: &SynthPatient,
    seed: u64,
) -> Result<SyntheticStudy, DicomError> {
    if cfg.modalities.is_empty() {
        return Err(DicomError::InvalidOption(
            "no modalities to choose from".into(),
        ));
    }
    for (name, v) in [("rows", cfg.rows), ("columns", cfg.columns)] {
        if !(8..=4096).contains(&v) {
            return Err(DicomError::InvalidOption(format!(
                "{name} = {v}: expected 8..=4096"
            )));
        }
    }
    if cfg.last_date < cfg.first_date {
        return Err(DicomError::InvalidOption(
            "last_date is before first_date".into(),
        ));
    }
    // One stream per (seed, patient): the same seed for two patients gives two different studies.
    let mut mix = seed;
    for b in patient.bsn.as_str().bytes() {
        mix = splitmix64(mix ^ u64::from(b));
    }
    let mut rng = Rng(mix);
    let mut uids = UidGenerator::new(cfg.uid_root.clone(), mix)?;

    let modality = *rng.pick(&cfg.modalities);
    let (description, body_part, laterality) = *rng.pick(modality.exams());
    let days = cfg
        .first_date
        .until(cfg.last_date)
        .map(|s| s.get_days())
        .unwrap_or(0)
        .max(0) as u32;
    let date = cfg
        .first_date
        .checked_add(jiff::Span::new().days(i64::from(rng.range(0, days))))
        .map_err(|e| DicomError::InvalidOption(e.to_string()))?;
    let minute = rng.range(7 * 60 + 30, 18 * 60);
    let time = Time::new(
        (minute / 60) as i8,
        (minute % 60) as i8,
        rng.range(0, 59) as i8,
        0,
    )
    .map_err(|e| DicomError::InvalidOption(e.to_string()))?;
    let start = DateTime::from_parts(date, time);
    let timezone_offset = offset_text(&cfg.time_zone, start);
    let accession_number = format!("{}{:08}", cfg.accession_prefix, rng.next() % 100_000_000);
    if accession_number.len() > 16 {
        return Err(DicomError::InvalidOption(format!(
            "accession prefix {:?} makes accession numbers longer than 16 characters",
            cfg.accession_prefix
        )));
    }
    let study = StudyCtx {
        cfg,
        patient,
        modality,
        study_uid: uids.next_uid(),
        accession_number,
        description,
        body_part,
        laterality,
        start,
        timezone_offset,
        study_id: format!("{}", rng.range(1, 99_999)),
    };

    let n_series = rng.range(cfg.series_per_study.0.max(1), cfg.series_per_study.1.max(1));
    let mut instances = Vec::new();
    for s in 0..n_series {
        let series = SeriesCtx {
            uid: uids.next_uid(),
            frame_of_reference_uid: uids.next_uid(),
            number: (s + 1) as i32,
            description: modality.series_descriptions()
                [s as usize % modality.series_descriptions().len()],
            texture: rng.range(0, 3),
        };
        let n = rng.range(
            cfg.instances_per_series.0.max(1),
            cfg.instances_per_series.1.max(1),
        );
        for k in 0..n {
            let sop_uid = uids.next_uid();
            let obj = instance_object(&study, &series, k, n, &sop_uid, &mut rng);
            let bytes = encode(obj)?;
            let info = super::read_instance(&bytes)?;
            instances.push(SyntheticInstance {
                info,
                bytes: Bytes::from(bytes),
            });
        }
    }
    Ok(SyntheticStudy {
        study_instance_uid: study.study_uid.clone(),
        accession_number: study.accession_number.clone(),
        accession_authority: cfg.accession_authority.clone(),
        modality,
        description: description.to_owned(),
        body_part: body_part.to_owned(),
        study_date: da(start.date()),
        study_time: tm(start.time()),
        timezone_offset: study.timezone_offset.clone(),
        instances,
    })
}

/// `count` studies for one patient, seeds `seed`, `seed + 1`, ...
pub fn generate_studies(
    cfg: &SynthConfig,
    patient: &SynthPatient,
    seed: u64,
    count: usize,
) -> Result<Vec<SyntheticStudy>, DicomError> {
    (0..count as u64)
        .map(|i| generate_study(cfg, patient, seed.wrapping_add(i)))
        .collect()
}

struct StudyCtx<'a> {
    cfg: &'a SynthConfig,
    patient: &'a SynthPatient,
    modality: Modality,
    study_uid: String,
    accession_number: String,
    description: &'static str,
    body_part: &'static str,
    laterality: &'static str,
    start: DateTime,
    timezone_offset: String,
    study_id: String,
}

struct SeriesCtx {
    uid: String,
    frame_of_reference_uid: String,
    number: i32,
    description: &'static str,
    texture: u32,
}

/// SplitMix64 step (Steele, Lea, Flood 2014): a tiny, fixed PRNG so that a seed gives the same study in every
/// version of this program (a general-purpose RNG crate does not promise stable streams across versions).
pub fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `+HHMM` offset of `local` in `tz` (DICOM Timezone Offset From UTC, PS3.3 C.12.1.1.8).
pub(crate) fn offset_text(tz: &TimeZone, local: DateTime) -> String {
    let secs = tz
        .to_ambiguous_zoned(local)
        .compatible()
        .map(|z| z.offset().seconds())
        .unwrap_or(0);
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.unsigned_abs() / 60;
    format!("{sign}{:02}{:02}", m / 60, m % 60)
}

fn ds(v: f64) -> String {
    // DS is at most 16 characters; three decimals is plenty for mm and ms.
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_owned()
    }
}

fn instance_object(
    st: &StudyCtx<'_>,
    se: &SeriesCtx,
    k: u32,
    n: u32,
    sop_uid: &str,
    rng: &mut Rng,
) -> InMemDicomObject {
    let cfg = st.cfg;
    let m = st.modality;
    let mut o = InMemDicomObject::new_empty();
    let content = st.start
        + jiff::Span::new()
            .minutes(i64::from(se.number))
            .seconds(i64::from(k) * 2);
    let (content_date, content_time) = (da(content.date()), tm(content.time()));

    // SOP Common (C.12.1)
    put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, m.sop_class_uid());
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &content_date);
    put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &content_time);
    put_str(
        &mut o,
        tags::TIMEZONE_OFFSET_FROM_UTC,
        VR::SH,
        &st.timezone_offset,
    );

    // Patient (C.7.1.1)
    put_str(&mut o, tags::PATIENT_NAME, VR::PN, &st.patient.name);
    put_str(&mut o, tags::PATIENT_ID, VR::LO, st.patient.bsn.as_str());
    put_str(&mut o, tags::ISSUER_OF_PATIENT_ID, VR::LO, "NLMINBIZA");
    put_seq(
        &mut o,
        tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE,
        vec![issuer_item(Bsn::OID)],
    );
    put_str(
        &mut o,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &st.patient.birth_date,
    );
    put_str(&mut o, tags::PATIENT_SEX, VR::CS, &st.patient.sex);

    // General Study (C.7.2.1)
    put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &st.study_uid);
    put_str(&mut o, tags::STUDY_DATE, VR::DA, &da(st.start.date()));
    put_str(&mut o, tags::STUDY_TIME, VR::TM, &tm(st.start.time()));
    put_str(
        &mut o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &cfg.referring_physician,
    );
    put_str(&mut o, tags::STUDY_ID, VR::SH, &st.study_id);
    put_str(&mut o, tags::ACCESSION_NUMBER, VR::SH, &st.accession_number);
    if let Some(auth) = &cfg.accession_authority {
        put_seq(
            &mut o,
            tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
            vec![issuer_item(auth)],
        );
    }
    put_str(&mut o, tags::STUDY_DESCRIPTION, VR::LO, st.description);

    // General Series (C.7.3.1) and the modality's series module
    put_str(&mut o, tags::MODALITY, VR::CS, m.code());
    put_str(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &se.uid);
    put_str(&mut o, tags::SERIES_NUMBER, VR::IS, &se.number.to_string());
    put_str(&mut o, tags::SERIES_DATE, VR::DA, &content_date);
    put_str(&mut o, tags::SERIES_TIME, VR::TM, &content_time);
    put_str(&mut o, tags::SERIES_DESCRIPTION, VR::LO, se.description);
    put_str(&mut o, tags::BODY_PART_EXAMINED, VR::CS, st.body_part);
    if !st.laterality.is_empty() && m != Modality::Dx {
        put_str(&mut o, tags::LATERALITY, VR::CS, st.laterality);
    }
    if m.cross_sectional() {
        put_str(&mut o, tags::PATIENT_POSITION, VR::CS, "HFS");
    }

    // Frame of Reference (C.7.4.1)
    if m.cross_sectional() {
        put_str(
            &mut o,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &se.frame_of_reference_uid,
        );
        put_str(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    }

    // General Equipment (C.7.5.1)
    put_str(&mut o, tags::MANUFACTURER, VR::LO, &cfg.manufacturer);
    put_str(
        &mut o,
        tags::INSTITUTION_NAME,
        VR::LO,
        &cfg.institution_name,
    );
    put_str(&mut o, tags::STATION_NAME, VR::SH, &cfg.station_name);
    put_str(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "DUO phantom");
    put_str(
        &mut o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );

    // General Image (C.7.6.1)
    put_str(&mut o, tags::INSTANCE_NUMBER, VR::IS, &(k + 1).to_string());
    put_str(&mut o, tags::CONTENT_DATE, VR::DA, &content_date);
    put_str(&mut o, tags::CONTENT_TIME, VR::TM, &content_time);
    put_str(&mut o, tags::ACQUISITION_NUMBER, VR::IS, "1");
    put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    if !m.cross_sectional() {
        put_str(&mut o, tags::PATIENT_ORIENTATION, VR::CS, "L\\F");
    }

    let (rows, cols) = (cfg.rows, cfg.columns);
    // Image Plane (C.7.6.2) for cross-sectional images: a 350 mm field of view.
    if m.cross_sectional() {
        let spacing = 350.0 / f64::from(cols.max(rows));
        let thickness = if m == Modality::Ct { 5.0 } else { 4.0 };
        let z = f64::from(k) * thickness;
        put_str(
            &mut o,
            tags::PIXEL_SPACING,
            VR::DS,
            &format!("{}\\{}", ds(spacing), ds(spacing)),
        );
        put_str(
            &mut o,
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            "1\\0\\0\\0\\1\\0",
        );
        put_str(
            &mut o,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("{}\\{}\\{}", ds(-175.0), ds(-175.0), ds(z)),
        );
        put_str(&mut o, tags::SLICE_THICKNESS, VR::DS, &ds(thickness));
        put_str(&mut o, tags::SLICE_LOCATION, VR::DS, &ds(z));
    }

    // Modality image modules
    let eight_bit = m == Modality::Us;
    match m {
        Modality::Ct => {
            put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL");
            put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
            put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
            put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "HU");
            put_str(&mut o, tags::KVP, VR::DS, "120");
            put_str(&mut o, tags::CONVOLUTION_KERNEL, VR::SH, "STANDARD");
        }
        Modality::Mr => {
            put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\OTHER");
            put_str(&mut o, tags::SCANNING_SEQUENCE, VR::CS, "SE");
            put_str(&mut o, tags::SEQUENCE_VARIANT, VR::CS, "NONE");
            put_str(&mut o, tags::SCAN_OPTIONS, VR::CS, "");
            put_str(&mut o, tags::MR_ACQUISITION_TYPE, VR::CS, "2D");
            put_str(&mut o, tags::REPETITION_TIME, VR::DS, "500");
            put_str(&mut o, tags::ECHO_TIME, VR::DS, "15");
            put_str(&mut o, tags::ECHO_TRAIN_LENGTH, VR::IS, "1");
            put_str(&mut o, tags::IMAGED_NUCLEUS, VR::SH, "1H");
            put_str(&mut o, tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "1.5");
            put_str(&mut o, tags::SEQUENCE_NAME, VR::SH, "se2d1");
        }
        Modality::Cr => {
            put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY");
            put_str(
                &mut o,
                tags::VIEW_POSITION,
                VR::CS,
                if se.number == 1 { "PA" } else { "LL" },
            );
            put_str(&mut o, tags::KVP, VR::DS, "110");
        }
        Modality::Dx => {
            put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY");
            put_str(
                &mut o,
                tags::PRESENTATION_INTENT_TYPE,
                VR::CS,
                "FOR PRESENTATION",
            );
            put_str(
                &mut o,
                tags::IMAGE_LATERALITY,
                VR::CS,
                if st.laterality.is_empty() {
                    "U"
                } else {
                    st.laterality
                },
            );
            // CID 4009 "DX Anatomy Imaged"
            let region = match st.body_part {
                "KNEE" => ("72696002", "Knee"),
                _ => ("43799004", "Chest"),
            };
            put_seq(
                &mut o,
                tags::ANATOMIC_REGION_SEQUENCE,
                vec![code_item(region.0, "SCT", region.1)],
            );
            put_str(&mut o, tags::PIXEL_INTENSITY_RELATIONSHIP, VR::CS, "LIN");
            o.put(DataElement::new(
                tags::PIXEL_INTENSITY_RELATIONSHIP_SIGN,
                VR::SS,
                dicom_value!(I16, [1]),
            ));
            put_str(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "0");
            put_str(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
            put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "US");
            put_str(&mut o, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
            put_str(&mut o, tags::DETECTOR_TYPE, VR::CS, "DIRECT");
            put_str(&mut o, tags::IMAGER_PIXEL_SPACING, VR::DS, "0.2\\0.2");
            put_seq(&mut o, tags::ACQUISITION_CONTEXT_SEQUENCE, Vec::new());
            // DX Positioning (C.8.11.5)
            put_str(&mut o, tags::POSITIONER_TYPE, VR::CS, "COLUMN");
            // CID 4010 "DX View"
            let view = if se.number == 1 {
                ("PA", "399348003", "postero-anterior")
            } else {
                ("LL", "399173006", "left lateral")
            };
            put_str(&mut o, tags::VIEW_POSITION, VR::CS, view.0);
            put_seq(
                &mut o,
                tags::VIEW_CODE_SEQUENCE,
                vec![code_item(view.1, "SCT", view.2)],
            );
            put_str(&mut o, tags::KVP, VR::DS, "110");
        }
        Modality::Us => {
            put_str(
                &mut o,
                tags::IMAGE_TYPE,
                VR::CS,
                "ORIGINAL\\PRIMARY\\ABDOMINAL",
            );
        }
    }

    // Image Pixel (C.7.6.3) and VOI LUT (C.11.2)
    let bits_stored: u16 = if eight_bit { 8 } else { 12 };
    o.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        dicom_value!(U16, [1]),
    ));
    put_str(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    o.put(DataElement::new(
        tags::ROWS,
        VR::US,
        dicom_value!(U16, [rows]),
    ));
    o.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        dicom_value!(U16, [cols]),
    ));
    o.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        dicom_value!(U16, [if eight_bit { 8 } else { 16 }]),
    ));
    o.put(DataElement::new(
        tags::BITS_STORED,
        VR::US,
        dicom_value!(U16, [bits_stored]),
    ));
    o.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        dicom_value!(U16, [bits_stored - 1]),
    ));
    o.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        dicom_value!(U16, [0]),
    ));
    let (center, width) = match m {
        Modality::Ct => ("40", "400"),
        Modality::Us => ("128", "256"),
        _ => ("2048", "4096"),
    };
    put_str(&mut o, tags::WINDOW_CENTER, VR::DS, center);
    put_str(&mut o, tags::WINDOW_WIDTH, VR::DS, width);

    let pixels = phantom(m, rows, cols, k, n, se.texture, rng);
    if eight_bit {
        let v: Vec<u8> = pixels.iter().map(|&p| (p >> 4) as u8).collect();
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(v.into()),
        ));
    } else {
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.into()),
        ));
    }
    o
}

/// A 12-bit phantom: air/background, an elliptic body, a disc that grows and shrinks across the instances
/// of a series (a sphere cut in slices), a texture chosen per series, and a little deterministic noise.
fn phantom(
    m: Modality,
    rows: u16,
    cols: u16,
    k: u32,
    n: u32,
    texture: u32,
    rng: &mut Rng,
) -> Vec<u16> {
    let (r, c) = (f64::from(rows), f64::from(cols));
    // CT values are stored as HU + 1024: air 24, soft tissue ~1064, bone ~1724.
    let (air, tissue, dense) = match m {
        Modality::Ct => (24.0, 1064.0, 1724.0),
        Modality::Mr => (0.0, 1400.0, 3000.0),
        Modality::Cr | Modality::Dx => (3800.0, 1900.0, 600.0),
        Modality::Us => (0.0, 1600.0, 3600.0),
    };
    let phase = if n > 1 {
        f64::from(k) / f64::from(n - 1)
    } else {
        0.5
    };
    let disc_r = 0.08 + 0.17 * (std::f64::consts::PI * phase).sin();
    let mut out = Vec::with_capacity(usize::from(rows) * usize::from(cols));
    for y in 0..rows {
        for x in 0..cols {
            let nx = (f64::from(x) + 0.5) / c - 0.5;
            let ny = (f64::from(y) + 0.5) / r - 0.5;
            let body = (nx / 0.42).powi(2) + (ny / 0.34).powi(2) <= 1.0;
            let disc = (nx - 0.1).powi(2) + (ny + 0.05).powi(2) <= disc_r * disc_r;
            let mut v = if disc {
                dense
            } else if body {
                let t = match texture {
                    0 => 60.0 * ((nx * 25.0).sin() * (ny * 25.0).cos()),
                    1 => 80.0 * (((x / 4 + y / 4) % 2) as f64 - 0.5),
                    2 => 120.0 * (ny + 0.5),
                    _ => 0.0,
                };
                tissue + t
            } else {
                air
            };
            v += (rng.next() % 17) as f64 - 8.0;
            out.push(v.clamp(0.0, 4095.0) as u16);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_uids() {
        let cfg = SynthConfig::default();
        let p = SynthPatient::example();
        let a = generate_study(&cfg, &p, 11).unwrap();
        let b = generate_study(&cfg, &p, 11).unwrap();
        let c = generate_study(&cfg, &p, 12).unwrap();
        assert_eq!(a.instances.len(), b.instances.len());
        for (x, y) in a.instances.iter().zip(&b.instances) {
            assert_eq!(x.bytes, y.bytes);
        }
        assert_ne!(a.study_instance_uid, c.study_instance_uid);
        let mut other = p.clone();
        other.bsn = "111222333".parse().unwrap();
        assert_ne!(
            generate_study(&cfg, &other, 11).unwrap().study_instance_uid,
            a.study_instance_uid
        );
    }

    #[test]
    fn studies_are_consistent_and_cover_every_modality() {
        let cfg = SynthConfig::default();
        let p = SynthPatient::example();
        let studies = generate_studies(&cfg, &p, 1000, 40).unwrap();
        let mut seen = std::collections::HashSet::new();
        for s in &studies {
            seen.insert(s.modality);
            assert!(!s.instances.is_empty());
            assert!(s.accession_number.len() <= 16);
            let mut sop = std::collections::HashSet::new();
            for i in &s.instances {
                assert_eq!(i.info.study_instance_uid, s.study_instance_uid);
                assert_eq!(i.info.accession_number, s.accession_number);
                assert_eq!(i.info.modality, s.modality.code());
                assert_eq!(i.info.sop_class_uid, s.modality.sop_class_uid());
                assert_eq!(i.info.patient_name, p.name);
                assert_eq!(i.info.study_date, s.study_date);
                assert!(
                    i.info.study_date.as_str() >= "20150101"
                        && i.info.study_date.as_str() <= "20251231"
                );
                assert!(sop.insert(i.info.sop_instance_uid.clone()));
                // 128 preamble + meta + header + 64*64 pixels of 1 or 2 bytes
                assert!(i.bytes.len() > 64 * 64, "{}", i.bytes.len());
            }
            let study = s.imaging_study("1.2.3");
            assert_eq!(study.number_of_instances(), s.instances.len());
        }
        for m in Modality::ALL {
            assert!(
                seen.contains(&m),
                "modality {m:?} never chosen in 40 studies"
            );
        }
    }

    #[test]
    fn pixel_data_has_a_visible_pattern() {
        let cfg = SynthConfig {
            modalities: vec![Modality::Ct],
            ..SynthConfig::default()
        };
        let s = generate_study(&cfg, &SynthPatient::example(), 3).unwrap();
        let obj = crate::dicom::instance::open(&s.instances[0].bytes, false).unwrap();
        let px = obj.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(px.len(), 64 * 64 * 2);
        let vals: Vec<u16> = px
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let centre = vals[32 * 64 + 32];
        let corner = vals[0];
        assert!(corner < 100, "air in the corner: {corner}");
        assert!(centre > 900, "tissue in the centre: {centre}");
        assert!(vals.iter().all(|&v| v < 4096), "12 bits stored");
    }

    #[test]
    fn bad_options_are_named() {
        let p = SynthPatient::example();
        let cfg = SynthConfig {
            modalities: vec![],
            ..SynthConfig::default()
        };
        assert!(matches!(
            generate_study(&cfg, &p, 1),
            Err(DicomError::InvalidOption(_))
        ));
        let cfg = SynthConfig {
            rows: 2,
            ..SynthConfig::default()
        };
        assert!(
            generate_study(&cfg, &p, 1)
                .unwrap_err()
                .to_string()
                .contains("rows")
        );
        let cfg = SynthConfig {
            accession_prefix: "A-VERY-LONG-PREFIX".into(),
            ..SynthConfig::default()
        };
        assert!(
            generate_study(&cfg, &p, 1)
                .unwrap_err()
                .to_string()
                .contains("16")
        );
    }
}
