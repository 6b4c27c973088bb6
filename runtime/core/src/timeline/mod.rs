//! The patient's imaging timeline: per-community query results merged into one list of studies.
//!
//! Rules (docs/DOMAIN.md "Imaging specifics", Twiin "every study, image and report once"):
//! - one entry per Study Instance UID, whatever the number of communities it is reachable through; every
//!   source is kept (organisation, homeCommunityId, manifest reference);
//! - an imaging manifest without a Study Instance UID in its referenceIdList falls back to the study
//!   described by its KOS (when retrieved), else it is keyed by its own uniqueId so it is never lost;
//! - reports are DocumentEntries linked to their study through the accession number in the
//!   referenceIdList; a report whose accession matches no study is listed as an unmatched report;
//! - newest first (by study date/time, then Study Instance UID for a stable order).
//!
//! Knows nothing of transport: the gateway hands in [`CommunityResult`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DocumentEntry, DocumentKind, HomeCommunityId, ImagingStudy, Organization};

/// Where a study or report is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// homeCommunityId of the community that returned it.
    pub home_community_id: HomeCommunityId,
    /// Community display name.
    pub community: String,
    /// The organisation that made it (author institution, else the community's organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<Organization>,
    /// repositoryUniqueId of the manifest / report.
    pub repository_unique_id: String,
    /// uniqueId of the manifest / report DocumentEntry (ITI-39 DocumentUniqueId).
    pub document_unique_id: String,
}

/// A series as the viewer retrieves it over RAD-75 / RAD-69.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesReference {
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Modality, when the manifest names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modality: String,
    /// RepositoryUniqueId of RAD-69/RAD-75 requests (the imaging document source).
    pub repository_unique_id: String,
    /// SOP Instance UIDs (the DocumentUniqueIds of RAD-69/RAD-75).
    pub sop_instance_uids: Vec<String>,
}

/// The retrieve references of one study at one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveReference {
    /// homeCommunityId to put in RAD-75 DocumentRequests.
    pub home_community_id: HomeCommunityId,
    /// Series with their instances.
    pub series: Vec<SeriesReference>,
}

/// A radiology report linked to a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Title of the DocumentEntry.
    pub title: String,
    /// mimeType (`application/pdf`, `text/xml` for CDA ...).
    pub mime_type: String,
    /// formatCode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format_code: String,
    /// Accession number it was linked by.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accession_number: String,
    /// creationTime (DTM).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creation_time: String,
    /// Where to retrieve it (ITI-39 with a source's HomeCommunityId, RepositoryUniqueId,
    /// DocumentUniqueId): every community that returned this report (same uniqueId), listed once.
    pub sources: Vec<Source>,
}

/// Adds `r` to `list`, or its source to the report with the same document uniqueId already there.
fn add_report(list: &mut Vec<Report>, r: Report) {
    let uid = r
        .sources
        .first()
        .map(|s| s.document_unique_id.clone())
        .unwrap_or_default();
    match list
        .iter_mut()
        .find(|x| x.sources.iter().any(|s| s.document_unique_id == uid))
    {
        Some(existing) => {
            for s in r.sources {
                if !existing.sources.contains(&s) {
                    existing.sources.push(s);
                }
            }
        }
        None => list.push(r),
    }
}

/// One study on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// Study Instance UID (or, when no community gave one, the manifest's uniqueId).
    pub study_instance_uid: String,
    /// Study date/time as DTM `YYYYMMDD[hhmm[ss]]` (serviceStartTime, else the KOS study date/time).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub date: String,
    /// Modalities (eventCodeList, else the manifest's series), sorted, unique.
    pub modalities: Vec<String>,
    /// Study description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Accession number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accession_number: String,
    /// Body part, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body_part: String,
    /// Number of series (from the manifest), when retrieved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_series: Option<usize>,
    /// Number of instances (from the manifest), when retrieved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_instances: Option<usize>,
    /// Every community the study was found in.
    pub sources: Vec<Source>,
    /// Retrieve references per source whose manifest was read.
    pub retrieve: Vec<RetrieveReference>,
    /// Linked radiology reports.
    pub reports: Vec<Report>,
}

/// What one community contributed, or why it did not.
#[derive(Debug, Clone, Default)]
pub struct CommunityResult {
    /// The community.
    pub home_community_id: Option<HomeCommunityId>,
    /// Its display name.
    pub name: String,
    /// The organisation it represents (used when an entry names no author institution).
    pub organization: Option<Organization>,
    /// DocumentEntries it returned.
    pub entries: Vec<DocumentEntry>,
    /// Manifest content by the manifest's uniqueId, for manifests the gateway retrieved and decoded.
    pub manifests: BTreeMap<String, ImagingStudy>,
}

/// Merges community results into timeline entries and unmatched reports. See the module rules.
pub fn merge(results: &[CommunityResult]) -> (Vec<TimelineEntry>, Vec<Report>) {
    let mut studies: BTreeMap<String, TimelineEntry> = BTreeMap::new();
    let mut reports: Vec<Report> = Vec::new();

    for cr in results {
        let Some(home) = cr
            .home_community_id
            .clone()
            .or_else(|| cr.entries.first().and_then(|e| e.home_community_id.clone()))
        else {
            continue;
        };
        for e in &cr.entries {
            let home = e.home_community_id.clone().unwrap_or_else(|| home.clone());
            let source = Source {
                home_community_id: home.clone(),
                community: cr.name.clone(),
                organization: organization_of(e, cr),
                repository_unique_id: e.repository_unique_id.clone(),
                document_unique_id: e.unique_id.clone(),
            };
            match e.kind() {
                DocumentKind::ImagingManifest => {
                    let manifest = cr.manifests.get(&e.unique_id);
                    let uid = e
                        .study_instance_uid()
                        .map(str::to_owned)
                        .or_else(|| {
                            manifest
                                .map(|m| m.study_instance_uid.clone())
                                .filter(|s| !s.is_empty())
                        })
                        .unwrap_or_else(|| e.unique_id.clone());
                    let entry = studies.entry(uid.clone()).or_insert_with(|| TimelineEntry {
                        study_instance_uid: uid,
                        date: String::new(),
                        modalities: Vec::new(),
                        description: String::new(),
                        accession_number: String::new(),
                        body_part: String::new(),
                        number_of_series: None,
                        number_of_instances: None,
                        sources: Vec::new(),
                        retrieve: Vec::new(),
                        reports: Vec::new(),
                    });
                    absorb(entry, e, manifest, source, home);
                }
                DocumentKind::Report => reports.push(Report {
                    title: e.title.clone(),
                    mime_type: e.mime_type.clone(),
                    format_code: e
                        .format_code
                        .as_ref()
                        .map(|c| c.code.clone())
                        .unwrap_or_default(),
                    accession_number: e.accession_number().unwrap_or("").to_owned(),
                    creation_time: e.creation_time.clone(),
                    sources: vec![source],
                }),
                DocumentKind::Other => {}
            }
        }
    }

    let mut unmatched = Vec::new();
    for r in reports {
        let target = if r.accession_number.is_empty() {
            None
        } else {
            studies
                .values_mut()
                .find(|s| s.accession_number == r.accession_number)
        };
        match target {
            Some(s) => add_report(&mut s.reports, r),
            None => add_report(&mut unmatched, r),
        }
    }

    let mut list: Vec<TimelineEntry> = studies.into_values().collect();
    for e in &mut list {
        e.modalities.sort();
        e.modalities.dedup();
        e.sources
            .sort_by(|a, b| a.home_community_id.cmp(&b.home_community_id));
    }
    list.sort_by(|a, b| {
        normalize_dtm(&b.date)
            .cmp(&normalize_dtm(&a.date))
            .then_with(|| a.study_instance_uid.cmp(&b.study_instance_uid))
    });
    (list, unmatched)
}

fn organization_of(e: &DocumentEntry, cr: &CommunityResult) -> Option<Organization> {
    let from_author = e.author_institutions.iter().find_map(|a| {
        a.ura.as_ref().map(|ura| Organization {
            ura: ura.clone(),
            name: a.name.clone(),
            facility_type: None,
            home_community_id: e
                .home_community_id
                .clone()
                .or_else(|| cr.home_community_id.clone()),
        })
    });
    from_author.or_else(|| cr.organization.clone())
}

fn absorb(
    t: &mut TimelineEntry,
    e: &DocumentEntry,
    manifest: Option<&ImagingStudy>,
    source: Source,
    home: HomeCommunityId,
) {
    let fill = |field: &mut String, v: &str| {
        if field.is_empty() && !v.trim().is_empty() {
            *field = v.trim().to_owned();
        }
    };
    fill(&mut t.date, &e.service_start_time);
    fill(&mut t.accession_number, e.accession_number().unwrap_or(""));
    fill(&mut t.description, &e.title);
    fill(&mut t.description, &e.comments);
    for m in e.modalities() {
        t.modalities.push(m.to_owned());
    }
    if let Some(m) = manifest {
        fill(
            &mut t.date,
            &format!(
                "{}{}",
                m.study_date,
                m.study_time.split('.').next().unwrap_or("")
            ),
        );
        fill(&mut t.accession_number, &m.accession_number);
        fill(&mut t.description, &m.description);
        fill(&mut t.body_part, &m.body_part);
        for s in &m.series {
            if !s.modality.is_empty() {
                t.modalities.push(s.modality.clone());
            }
        }
        // counts: the largest manifest wins (a community may hold a subset)
        if t.number_of_instances
            .is_none_or(|n| n < m.number_of_instances())
        {
            t.number_of_series = Some(m.number_of_series());
            t.number_of_instances = Some(m.number_of_instances());
        }
        if !t.retrieve.iter().any(|r| r.home_community_id == home) {
            t.retrieve.push(RetrieveReference {
                home_community_id: home,
                series: m
                    .series
                    .iter()
                    .map(|s| SeriesReference {
                        series_instance_uid: s.series_instance_uid.clone(),
                        modality: s.modality.clone(),
                        repository_unique_id: if s.retrieve_location_uid.is_empty() {
                            e.repository_unique_id.clone()
                        } else {
                            s.retrieve_location_uid.clone()
                        },
                        sop_instance_uids: s
                            .instances
                            .iter()
                            .map(|i| i.sop_instance_uid.clone())
                            .collect(),
                    })
                    .collect(),
            });
        }
    }
    if !t.sources.contains(&source) {
        t.sources.push(source);
    }
}

/// DTM normalised for ordering: digits only, padded to 14 so `2024` sorts before `20240101`.
fn normalize_dtm(s: &str) -> String {
    let mut d: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    while d.len() < 14 {
        d.push('0');
    }
    d
}

#[cfg(test)]
mod tests;
