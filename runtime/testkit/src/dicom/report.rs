//! A radiology report per study, in the two formats a Twiin consumer must accept (docs/DOMAIN.md, "Twiin
//! technical agreements"): PDF (XDS-I formatCode `urn:ihe:rad:PDF`) and an HL7 CDA R2 document
//! (`urn:ihe:rad:TEXT`, the XDS-I CDA wrapped text report). Both name the study's accession number, which
//! links the report to its study through the DocumentEntry referenceIdList.
//!
//! The PDF is a minimal PDF 1.4 file (ISO 32000-1 7.5: header, objects, cross-reference table with exact
//! byte offsets, trailer, `%%EOF`) with the standard Helvetica font in WinAnsiEncoding. The CDA document
//! follows the CDA R2 header order (POCD_HD000040) with the accession in `inFulfillmentOf/order/id` and the
//! Study Instance UID in `documentationOf/serviceEvent/id`, as the IHE imaging report templates place
//! them. Both are written as text here; nothing in this module parses XML or PDF.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::model::{AuthorInstitution, Bsn, UziNumber};

use super::kos::study_from_instances;
use super::uid::derived_uid;
use super::{DicomError, InstanceInfo};

/// The patient as the report names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPatient {
    /// BSN.
    pub bsn: Bsn,
    /// Name in DICOM PN form (`Family^Given`).
    pub name: String,
    /// Birth date, `YYYYMMDD` (may be empty).
    pub birth_date: String,
    /// `M`, `F`, `O` or empty.
    pub sex: String,
}

/// The reporting radiologist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportAuthor {
    /// Name in DICOM PN form (`Family^Given`).
    pub name: String,
    /// UZI number, when known.
    pub uzi: Option<UziNumber>,
}

/// Everything a report says. Times are local DICOM DA/TM text plus the `+HHMM` offset when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiologyReport {
    /// The report's unique id (a UID): the CDA `id/@root` and the XDS uniqueId.
    pub document_uid: String,
    /// Study Instance UID of the reported study.
    pub study_instance_uid: String,
    /// Accession number of the study: the link between report and study.
    pub accession_number: String,
    /// OID that issued the accession number, when known.
    pub accession_authority: Option<String>,
    /// Modalities of the study (CID 29 codes).
    pub modalities: Vec<String>,
    /// Study description.
    pub study_description: String,
    /// Body part examined.
    pub body_part: String,
    /// Study date `YYYYMMDD` and time `HHMMSS`.
    pub study_date: String,
    /// Study time.
    pub study_time: String,
    /// Report date `YYYYMMDD`.
    pub report_date: String,
    /// Report time `HHMMSS`.
    pub report_time: String,
    /// Offset from UTC of the local times, `+HHMM`, or empty when unknown.
    pub timezone_offset: String,
    /// The patient.
    pub patient: ReportPatient,
    /// The radiologist.
    pub author: ReportAuthor,
    /// The reporting organisation.
    pub institution: AuthorInstitution,
    /// Findings (free text, paragraphs separated by blank lines).
    pub findings: String,
    /// Conclusion (free text).
    pub conclusion: String,
}

impl RadiologyReport {
    /// A deterministic report for the study the `instances` make up (texts chosen by body part and `seed`),
    /// written two hours after the study on the same day (at most 23:59:59). Patient name, birth date and
    /// sex, modalities, time zone and accession issuer come from the instances; the patient is identified
    /// by `bsn`. The document UID is derived from the Study Instance UID and seed.
    ///
    /// Errors: [`DicomError::Inconsistent`] when `instances` is empty.
    pub fn for_study(
        instances: &[InstanceInfo],
        bsn: Bsn,
        author: ReportAuthor,
        institution: AuthorInstitution,
        seed: u64,
    ) -> Result<RadiologyReport, DicomError> {
        let first = instances
            .first()
            .ok_or_else(|| DicomError::Inconsistent("no instances to report on".into()))?;
        let study = study_from_instances(instances, "");
        let mut modalities: Vec<String> = Vec::new();
        for i in instances {
            if !i.modality.is_empty() && !modalities.contains(&i.modality) {
                modalities.push(i.modality.clone());
            }
        }
        let accession_authority = instances
            .iter()
            .map(|i| i.accession_authority.clone())
            .find(|a| !a.is_empty());
        let patient = ReportPatient {
            bsn,
            name: first.patient_name.clone(),
            birth_date: first.patient_birth_date.clone(),
            sex: first.patient_sex.clone(),
        };
        let timezone_offset = first.timezone_offset.as_str();
        let findings = match study.body_part.as_str() {
            "CHEST" => {
                "Normale grootte van hart en mediastinum. Geen infiltratieve afwijkingen. Geen pleuravocht, geen pneumothorax."
            }
            "ABDOMEN" => {
                "Lever, milt, pancreas en beide nieren zonder afwijkingen. Geen vrij vocht. Geen vergrote lymfeklieren."
            }
            "HEAD" | "BRAIN" => {
                "Geen aanwijzingen voor een intracraniële bloeding of een recent infarct. Ventrikels en sulci normaal van grootte."
            }
            "KNEE" => {
                "Intacte voorste en achterste kruisband. Geen meniscusscheur. Geringe hydrops, verder geen afwijkingen."
            }
            "LSPINE" => {
                "Normale uitlijning. Discusdegeneratie L4-L5 met geringe uitpuiling, zonder compressie van zenuwwortels."
            }
            "HAND" => "Geen fractuur, geen luxatie. Normale gewrichtsspleten.",
            "NECK" => {
                "Schildklier normaal van grootte en echostructuur, zonder noduli. Geen pathologische lymfeklieren."
            }
            _ => "Het onderzoek is beoordeeld; er zijn geen bijzonderheden.",
        };
        let conclusions = [
            "Geen afwijkingen.",
            "Geen acute pathologie. Controle niet nodig.",
            "Bevindingen passend bij de klinische vraagstelling; vergelijking met eerder onderzoek aanbevolen.",
        ];
        let conclusion =
            conclusions[(super::synth::splitmix64(seed) % conclusions.len() as u64) as usize];
        let (report_date, report_time) = later_same_day(&study.study_date, &study.study_time, 2);
        Ok(RadiologyReport {
            document_uid: derived_uid(
                "duo-report",
                &format!("{}|{seed}", study.study_instance_uid),
            ),
            study_instance_uid: study.study_instance_uid.clone(),
            accession_number: study.accession_number.clone(),
            accession_authority,
            modalities: modalities.to_vec(),
            study_description: study.description.clone(),
            body_part: study.body_part.clone(),
            study_date: study.study_date.clone(),
            study_time: study.study_time.clone(),
            report_date,
            report_time,
            timezone_offset: timezone_offset.to_owned(),
            patient,
            author,
            institution,
            findings: findings.to_owned(),
            conclusion: conclusion.to_owned(),
        })
    }

    /// The title used in both formats and as the DocumentEntry title.
    pub fn title(&self) -> String {
        if self.study_description.is_empty() {
            "Radiologieverslag".to_owned()
        } else {
            format!("Radiologieverslag {}", self.study_description)
        }
    }

    /// The report as text lines (what both formats show).
    fn lines(&self) -> Vec<(Style, String)> {
        let mut l = vec![(Style::Title, self.title()), (Style::Plain, String::new())];
        let kv = |k: &str, v: &str| (Style::Plain, format!("{k}: {v}"));
        l.push(kv("Patiënt", &pn_display(&self.patient.name)));
        l.push(kv("BSN", self.patient.bsn.as_str()));
        if !self.patient.birth_date.is_empty() {
            l.push(kv("Geboortedatum", &da_display(&self.patient.birth_date)));
        }
        l.push(kv("Accessionnummer", &self.accession_number));
        l.push(kv("Onderzoek", &self.study_description));
        l.push(kv("Modaliteit", &self.modalities.join(", ")));
        l.push(kv(
            "Onderzoeksdatum",
            &format!(
                "{} {}",
                da_display(&self.study_date),
                tm_display(&self.study_time)
            ),
        ));
        l.push(kv("Study Instance UID", &self.study_instance_uid));
        l.push((Style::Plain, String::new()));
        l.push((Style::Heading, "Bevindingen".into()));
        for line in wrap(&self.findings, 90) {
            l.push((Style::Plain, line));
        }
        l.push((Style::Plain, String::new()));
        l.push((Style::Heading, "Conclusie".into()));
        for line in wrap(&self.conclusion, 90) {
            l.push((Style::Plain, line));
        }
        l.push((Style::Plain, String::new()));
        l.push(kv(
            "Verslag",
            &format!(
                "{} {}, {}, {}",
                da_display(&self.report_date),
                tm_display(&self.report_time),
                pn_display(&self.author.name),
                self.institution.name
            ),
        ));
        l
    }
}

#[derive(Clone, Copy)]
enum Style {
    Title,
    Heading,
    Plain,
}

fn later_same_day(date: &str, time: &str, hours: u32) -> (String, String) {
    let h: u32 = time.get(0..2).and_then(|s| s.parse().ok()).unwrap_or(12);
    let rest = time.get(2..6).unwrap_or("0000");
    let h2 = (h + hours).min(23);
    let t = if h + hours > 23 {
        "235959".to_owned()
    } else {
        format!("{h2:02}{rest}")
    };
    (date.to_owned(), t)
}

fn pn_display(pn: &str) -> String {
    // Family^Given^Middle^Prefix^Suffix → "Prefix Given Middle Family Suffix"
    let p: Vec<&str> = pn.split('=').next().unwrap_or("").split('^').collect();
    let get = |i: usize| p.get(i).copied().unwrap_or("").trim();
    [get(3), get(1), get(2), get(0), get(4)]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn da_display(d: &str) -> String {
    // Input comes from DICOM files: slice only when all parts are there (never panic on odd text).
    match (d.get(0..4), d.get(4..6), d.get(6..8)) {
        (Some(y), Some(m), Some(day)) if d.len() == 8 => format!("{day}-{m}-{y}"),
        _ => d.to_owned(),
    }
}

fn tm_display(t: &str) -> String {
    match (t.get(0..2), t.get(2..4)) {
        (Some(h), Some(m)) => format!("{h}:{m}"),
        _ => t.to_owned(),
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push(line);
    }
    out
}

/// Windows-1252 byte for a character (WinAnsiEncoding, ISO 32000-1 Annex D); `?` when it has none.
fn win_ansi(c: char) -> u8 {
    match c as u32 {
        0x20..=0x7E | 0xA0..=0xFF => c as u32 as u8,
        0x20AC => 0x80,
        0x2018 => 0x91,
        0x2019 => 0x92,
        0x201C => 0x93,
        0x201D => 0x94,
        0x2013 => 0x96,
        0x2014 => 0x97,
        _ => b'?',
    }
}

/// A PDF literal string `( ... )` in WinAnsi bytes, with `\`, `(` and `)` escaped (ISO 32000-1 7.3.4.2).
fn pdf_string(s: &str) -> Vec<u8> {
    let mut v = vec![b'('];
    for c in s.chars() {
        let b = win_ansi(c);
        if matches!(b, b'(' | b')' | b'\\') {
            v.push(b'\\');
        }
        v.push(b);
    }
    v.push(b')');
    v
}

const LINES_PER_PAGE: usize = 56;

/// The report as a PDF 1.4 file: A4 pages of Helvetica text, an Info dictionary with Title, Author,
/// Subject (the accession number) and CreationDate, and a cross-reference table whose offsets are exact.
pub fn pdf(report: &RadiologyReport) -> Vec<u8> {
    let lines = report.lines();
    let pages: Vec<&[(Style, String)]> = lines.chunks(LINES_PER_PAGE).collect();
    let n_pages = pages.len();
    // Object numbers: 1 catalog, 2 pages, 3 and 4 fonts, 5 info, then per page: page, content.
    let page_obj = |i: usize| 6 + 2 * i;
    let mut objects: Vec<Vec<u8>> = Vec::new();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    let kids: Vec<String> = (0..n_pages)
        .map(|i| format!("{} 0 R", page_obj(i)))
        .collect();
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n_pages} >>",
            kids.join(" ")
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    let mut info = b"<< /Title ".to_vec();
    info.extend(pdf_string(&report.title()));
    info.extend(b" /Author ");
    info.extend(pdf_string(&format!(
        "{}, {}",
        pn_display(&report.author.name),
        report.institution.name
    )));
    info.extend(b" /Subject ");
    info.extend(pdf_string(&format!(
        "Accession {}",
        report.accession_number
    )));
    info.extend(b" /Producer (DUO gateway) /CreationDate ");
    info.extend(pdf_string(&pdf_date(
        &report.report_date,
        &report.report_time,
        &report.timezone_offset,
    )));
    info.extend(b" >>");
    objects.push(info);
    for (i, page) in pages.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
                page_obj(i) + 1
            )
            .into_bytes(),
        );
        let mut content = b"BT\n50 792 Td\n".to_vec();
        for (style, text) in page.iter() {
            let (font, size, lead) = match style {
                Style::Title => ("F2", 16, 24),
                Style::Heading => ("F2", 12, 18),
                Style::Plain => ("F1", 10, 14),
            };
            content.extend(format!("/{font} {size} Tf\n").into_bytes());
            content.extend(pdf_string(text));
            content.extend(format!(" Tj\n0 -{lead} Td\n").into_bytes());
        }
        content.extend(
            format!(
                "ET\nBT /F1 8 Tf 50 30 Td (Pagina {} van {n_pages}) Tj ET\n",
                i + 1
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend(content);
        stream.extend(b"\nendstream");
        objects.push(stream);
    }

    // %PDF header plus a comment of four bytes > 127 so transfer tools treat the file as binary (7.5.2).
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).into_bytes());
        out.extend(body);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    let mut table = format!("xref\n0 {}\n0000000000 65535 f\r\n", objects.len() + 1);
    for o in &offsets {
        // each entry is exactly 20 bytes (7.5.4)
        let _ = write!(table, "{o:010} 00000 n\r\n");
    }
    out.extend(table.into_bytes());
    let id = &report.document_uid;
    let id_hex: String = super::uid::derived_uuid(&[id.as_bytes()])
        .simple()
        .to_string();
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 5 0 R /ID [<{id_hex}> <{id_hex}>] >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .into_bytes(),
    );
    out
}

/// PDF date `D:YYYYMMDDHHmmSS+HH'mm'` (ISO 32000-1 7.9.4).
fn pdf_date(date: &str, time: &str, offset: &str) -> String {
    let t = format!("{time:0<6}");
    let mut s = format!("D:{date}{}", t.get(0..6).unwrap_or("000000"));
    if offset.len() == 5 && offset.is_char_boundary(3) {
        s.push_str(&format!("{}'{}'", &offset[0..3], &offset[3..5]));
    }
    s
}

fn x(s: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// HL7 TS value with the offset when known.
fn ts(date: &str, time: &str, offset: &str) -> String {
    let t: String = time.chars().take_while(|c| c.is_ascii_digit()).collect();
    format!("{date}{t}{offset}")
}

/// The report as an HL7 CDA R2 `ClinicalDocument` (namespace `urn:hl7-org:v3`, UTF-8): header with
/// patient (BSN, root `2.16.840.1.113883.2.4.6.3`), author and custodian (URA, root `2.16.528.1.1007.3.3`),
/// the accession number in `inFulfillmentOf/order/id`, the study in `documentationOf/serviceEvent`, and a
/// structured body with the findings (DCM 121070) and conclusion (DCM 121076) sections.
pub fn cda(report: &RadiologyReport) -> Vec<u8> {
    let r = report;
    let mut s = String::new();
    let bsn_oid = Bsn::OID;
    let ura_oid = crate::model::Ura::OID;
    let (family, given) = {
        let p: Vec<&str> = r
            .patient
            .name
            .split('=')
            .next()
            .unwrap_or("")
            .split('^')
            .collect();
        (
            p.first().copied().unwrap_or("").to_owned(),
            p.get(1).copied().unwrap_or("").to_owned(),
        )
    };
    let effective = ts(&r.report_date, &r.report_time, &r.timezone_offset);
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(s, r#"<ClinicalDocument xmlns="urn:hl7-org:v3">"#);
    let _ = writeln!(s, r#"  <realmCode code="NL"/>"#);
    let _ = writeln!(
        s,
        r#"  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>"#
    );
    let _ = writeln!(s, r#"  <id root="{}"/>"#, x(&r.document_uid));
    let _ = writeln!(
        s,
        r#"  <code code="18748-4" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Diagnostic imaging study"/>"#
    );
    let _ = writeln!(s, "  <title>{}</title>", x(&r.title()));
    let _ = writeln!(s, r#"  <effectiveTime value="{}"/>"#, x(&effective));
    let _ = writeln!(
        s,
        r#"  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>"#
    );
    let _ = writeln!(s, r#"  <languageCode code="nl-NL"/>"#);
    let _ = writeln!(s, "  <recordTarget>\n    <patientRole>");
    let _ = writeln!(
        s,
        r#"      <id root="{bsn_oid}" extension="{}"/>"#,
        x(r.patient.bsn.as_str())
    );
    let _ = writeln!(s, "      <patient>");
    let _ = writeln!(
        s,
        "        <name><given>{}</given><family>{}</family></name>",
        x(&given),
        x(&family)
    );
    match r.patient.sex.as_str() {
        "M" | "F" => {
            let _ = writeln!(
                s,
                r#"        <administrativeGenderCode code="{}" codeSystem="2.16.840.1.113883.5.1"/>"#,
                r.patient.sex
            );
        }
        "O" => {
            let _ = writeln!(
                s,
                r#"        <administrativeGenderCode code="UN" codeSystem="2.16.840.1.113883.5.1"/>"#
            );
        }
        _ => {
            let _ = writeln!(s, r#"        <administrativeGenderCode nullFlavor="UNK"/>"#);
        }
    }
    if r.patient.birth_date.is_empty() {
        let _ = writeln!(s, r#"        <birthTime nullFlavor="UNK"/>"#);
    } else {
        let _ = writeln!(
            s,
            r#"        <birthTime value="{}"/>"#,
            x(&r.patient.birth_date)
        );
    }
    let _ = writeln!(s, "      </patient>\n    </patientRole>\n  </recordTarget>");
    let org_id = match &r.institution.ura {
        Some(u) => format!(r#"<id root="{ura_oid}" extension="{u}"/>"#),
        None => r#"<id nullFlavor="UNK"/>"#.to_owned(),
    };
    let _ = writeln!(s, "  <author>");
    let _ = writeln!(s, r#"    <time value="{}"/>"#, x(&effective));
    let _ = writeln!(s, "    <assignedAuthor>");
    match &r.author.uzi {
        Some(u) => {
            let _ = writeln!(
                s,
                r#"      <id root="2.16.528.1.1007.3.1" extension="{u}"/>"#
            );
        }
        None => {
            let _ = writeln!(s, r#"      <id nullFlavor="UNK"/>"#);
        }
    }
    let _ = writeln!(
        s,
        "      <assignedPerson><name>{}</name></assignedPerson>",
        x(&pn_display(&r.author.name))
    );
    let _ = writeln!(
        s,
        "      <representedOrganization>{org_id}<name>{}</name></representedOrganization>",
        x(&r.institution.name)
    );
    let _ = writeln!(s, "    </assignedAuthor>\n  </author>");
    let _ = writeln!(
        s,
        "  <custodian><assignedCustodian><representedCustodianOrganization>{org_id}<name>{}</name></representedCustodianOrganization></assignedCustodian></custodian>",
        x(&r.institution.name)
    );
    let acc_root = match &r.accession_authority {
        Some(a) if !a.is_empty() => format!(r#"root="{}""#, x(a)),
        _ => r#"nullFlavor="NI""#.to_owned(),
    };
    let _ = writeln!(
        s,
        r#"  <inFulfillmentOf><order><id {acc_root} extension="{}"/></order></inFulfillmentOf>"#,
        x(&r.accession_number)
    );
    let _ = writeln!(s, r#"  <documentationOf>"#);
    let _ = writeln!(s, r#"    <serviceEvent classCode="ACT">"#);
    let _ = writeln!(s, r#"      <id root="{}"/>"#, x(&r.study_instance_uid));
    if let Some(m) = r.modalities.first() {
        let _ = writeln!(
            s,
            r#"      <code code="{}" codeSystem="1.2.840.10008.2.16.4" codeSystemName="DCM" displayName="{}"/>"#,
            x(m),
            x(&r.study_description)
        );
    }
    let _ = writeln!(
        s,
        r#"      <effectiveTime value="{}"/>"#,
        x(&ts(&r.study_date, &r.study_time, &r.timezone_offset))
    );
    let _ = writeln!(s, "    </serviceEvent>\n  </documentationOf>");
    let _ = writeln!(s, "  <component>\n    <structuredBody>");
    for (code, meaning, title, text) in [
        ("121070", "Findings", "Bevindingen", &r.findings),
        ("121076", "Conclusions", "Conclusie", &r.conclusion),
    ] {
        let _ = writeln!(s, "      <component>\n        <section>");
        let _ = writeln!(
            s,
            r#"          <code code="{code}" codeSystem="1.2.840.10008.2.16.4" codeSystemName="DCM" displayName="{meaning}"/>"#
        );
        let _ = writeln!(s, "          <title>{title}</title>");
        let _ = writeln!(s, "          <text>");
        for p in text.split("\n\n") {
            let _ = writeln!(s, "            <paragraph>{}</paragraph>", x(p.trim()));
        }
        let _ = writeln!(
            s,
            "          </text>\n        </section>\n      </component>"
        );
    }
    let _ = writeln!(
        s,
        "    </structuredBody>\n  </component>\n</ClinicalDocument>"
    );
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::synth::{SynthConfig, SynthPatient, generate_study};
    use crate::dicom::tool_checks::{python, run, tool};
    use std::process::Command;

    fn sample() -> RadiologyReport {
        let p = SynthPatient::example();
        let s = generate_study(&SynthConfig::default(), &p, 21).unwrap();
        RadiologyReport::for_study(
            &s.infos(),
            p.bsn,
            ReportAuthor {
                name: "de Boer^Pieter".into(),
                uzi: Some("123456789".parse().unwrap()),
            },
            AuthorInstitution {
                name: "Ziekenhuis \"A&B\" <Noord>".into(),
                ura: Some("12345678".parse().unwrap()),
            },
            21,
        )
        .unwrap()
    }

    fn find(h: &[u8], n: &[u8]) -> Option<usize> {
        h.windows(n.len()).position(|w| w == n)
    }

    fn number_at(b: &[u8]) -> usize {
        let digits: Vec<u8> = b.iter().copied().take_while(u8::is_ascii_digit).collect();
        std::str::from_utf8(&digits).unwrap().parse().unwrap()
    }

    /// Checks the PDF structure on the bytes: header, every xref entry points at its `n 0 obj`, startxref
    /// points at `xref`, the file ends with `%%EOF`, and each stream's /Length is its byte count.
    fn check_pdf_structure(pdf: &[u8]) {
        assert!(pdf.starts_with(b"%PDF-1.4\n"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        let sx = pdf.windows(10).rposition(|w| w == b"startxref\n").unwrap();
        let xref_at = number_at(&pdf[sx + 10..]);
        assert!(pdf[xref_at..].starts_with(b"xref\n0 "));
        let count = number_at(&pdf[xref_at + 7..]);
        let first_entry = xref_at + find(&pdf[xref_at..], b"0000000000 65535 f\r\n").unwrap();
        // entries are exactly 20 bytes each (ISO 32000-1 7.5.4)
        for i in 1..count {
            let e = &pdf[first_entry + 20 * i..first_entry + 20 * (i + 1)];
            assert_eq!(&e[10..20], b" 00000 n\r\n");
            let off = number_at(e);
            assert!(
                pdf[off..].starts_with(format!("{i} 0 obj\n").as_bytes()),
                "object {i} not at {off}"
            );
        }
        assert!(pdf[first_entry + 20 * count..].starts_with(b"trailer\n"));
        let mut at = 0;
        let mut streams = 0;
        while let Some(i) = find(&pdf[at..], b"/Length ") {
            let i = at + i;
            let len = number_at(&pdf[i + 8..]);
            let start = i + find(&pdf[i..], b"stream\n").unwrap() + 7;
            assert!(
                pdf[start + len..].starts_with(b"\nendstream"),
                "stream length {len} wrong"
            );
            at = start + len;
            streams += 1;
        }
        assert!(streams >= 1);
    }

    #[test]
    fn pdf_structure_is_exact() {
        let r = sample();
        let pdf = pdf(&r);
        check_pdf_structure(&pdf);
        let text = String::from_utf8_lossy(&pdf);
        assert!(
            text.contains(&format!("({})", r.accession_number))
                || text.contains(&r.accession_number)
        );
        // a long report spans several pages and stays exact
        let mut long = r.clone();
        long.findings = "Lange tekst met (haakjes) en \\backslash. ".repeat(400);
        let p = super::pdf(&long);
        check_pdf_structure(&p);
        let pages = long.lines().len().div_ceil(LINES_PER_PAGE);
        assert!(pages > 1);
        let t = String::from_utf8_lossy(&p);
        assert!(
            t.contains(&format!("/Count {pages} ")),
            "page tree counts {pages} pages"
        );
        assert_eq!(t.matches("/Type /Page ").count(), pages);
    }

    #[test]
    fn pypdf_reads_the_pdf_text() {
        let Some(py) = python() else { return };
        let r = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.pdf");
        std::fs::write(&path, pdf(&r)).unwrap();
        let script = "import sys, pypdf\nr = pypdf.PdfReader(sys.argv[1], strict=True)\nprint(len(r.pages))\nprint(r.metadata.title)\nprint(''.join(p.extract_text() for p in r.pages))";
        let (ok, out, err) = run(Command::new(py).arg("-c").arg(script).arg(&path));
        assert!(ok, "pypdf failed: {err}");
        assert!(
            !err.contains("Warning") && !err.contains("warn"),
            "pypdf warned: {err}"
        );
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("1"));
        assert_eq!(lines.next(), Some(r.title().as_str()));
        assert!(
            out.contains(&format!("Accessionnummer: {}", r.accession_number)),
            "{out}"
        );
        assert!(
            out.contains("Patiënt: Eline Jansen-de Vries"),
            "WinAnsi ë decoded: {out}"
        );
        assert!(out.contains(&r.conclusion), "{out}");
    }

    #[test]
    fn cda_is_well_formed_and_names_the_accession() {
        let r = sample();
        let doc = cda(&r);
        let text = String::from_utf8(doc.clone()).unwrap();
        assert!(text.contains(r#"<ClinicalDocument xmlns="urn:hl7-org:v3">"#));
        assert!(
            text.contains("&quot;A&amp;B&quot; &lt;Noord&gt;"),
            "escaped institution name"
        );
        let Some(xmllint) = tool("xmllint") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.xml");
        std::fs::write(&path, &doc).unwrap();
        let (ok, _, err) = run(Command::new(&xmllint).arg("--noout").arg(&path));
        assert!(ok, "not well-formed: {err}");
        let q = |xpath: &str| {
            let (ok, out, err) = run(Command::new(&xmllint).arg("--xpath").arg(xpath).arg(&path));
            assert!(ok, "{xpath}: {err}");
            out.trim().to_owned()
        };
        let ns = "/*[local-name()='ClinicalDocument' and namespace-uri()='urn:hl7-org:v3']";
        assert_eq!(
            q(&format!(
                "string({ns}/*[local-name()='inFulfillmentOf']/*[local-name()='order']/*[local-name()='id']/@extension)"
            )),
            r.accession_number
        );
        assert_eq!(
            q(&format!(
                "string({ns}/*[local-name()='inFulfillmentOf']/*[local-name()='order']/*[local-name()='id']/@root)"
            )),
            r.accession_authority.clone().unwrap()
        );
        assert_eq!(
            q(&format!(
                "string({ns}/*[local-name()='documentationOf']/*[local-name()='serviceEvent']/*[local-name()='id']/@root)"
            )),
            r.study_instance_uid
        );
        assert_eq!(
            q(&format!(
                "string({ns}/*[local-name()='recordTarget']//*[local-name()='id']/@extension)"
            )),
            "999911120"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(pn_display("Jansen-de Vries^Eline"), "Eline Jansen-de Vries");
        assert_eq!(pn_display("Boer^Pieter^^dr."), "dr. Pieter Boer");
        assert_eq!(
            later_same_day("20200101", "223000", 2),
            ("20200101".into(), "235959".into())
        );
        assert_eq!(
            later_same_day("20200101", "093000", 2),
            ("20200101".into(), "113000".into())
        );
        assert_eq!(
            pdf_date("20200101", "0930", "+0100"),
            "D:20200101093000+01'00'"
        );
        assert_eq!(pdf_string("a(b)\\ë€☃"), b"(a\\(b\\)\\\\\xEB\x80?)".to_vec());
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(da_display("20240131"), "31-01-2024");
        assert_eq!(da_display("2€01010"), "2€01010");
        assert_eq!(tm_display("0930"), "09:30");
        assert_eq!(tm_display("0€"), "0€");
    }
}
