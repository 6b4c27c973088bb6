//! An XDS-I.b affinity domain as a community: Document Registry (ITI-18), Document Repositories
//! (ITI-43) and Imaging Document Sources (RAD-69), each addressed by its unique id (ITI TF-2a 3.18,
//! ITI TF-2b 3.43, RAD TF-3 4.69).

use std::collections::BTreeMap;

use super::soap_client::SoapClient;
use super::{BackendError, BoxFut, CallContext, Community, RetrieveStream};
use crate::config::Endpoint;
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse};
use crate::ihe::retrieve::{
    RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest,
};
use crate::ihe::{ErrorCode, RegistryError, Transaction};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct XdsCommunity {
    registry_url: String,
    repositories: BTreeMap<String, String>,
    sources: BTreeMap<String, String>,
    client: SoapClient,
}

impl XdsCommunity {
    /// An affinity domain with these endpoints, reached through `client`.
    pub fn new(
        registry_url: &str,
        repositories: &[Endpoint],
        sources: &[Endpoint],
        client: SoapClient,
    ) -> XdsCommunity {
        XdsCommunity {
            registry_url: registry_url.to_owned(),
            repositories: repositories
                .iter()
                .map(|e| (e.unique_id.clone(), e.url.clone()))
                .collect(),
            sources: sources
                .iter()
                .map(|e| (e.unique_id.clone(), e.url.clone()))
                .collect(),
            client,
        }
    }
}

/// Splits an imaging request by RepositoryUniqueId, keeping each study/series structure.
pub fn split_imaging_request(
    req: &RetrieveImagingDocumentSetRequest,
) -> BTreeMap<String, RetrieveImagingDocumentSetRequest> {
    let mut out: BTreeMap<String, RetrieveImagingDocumentSetRequest> = BTreeMap::new();
    for st in &req.studies {
        for se in &st.series {
            for d in &se.documents {
                let sub = out
                    .entry(d.repository_unique_id.clone())
                    .or_insert_with(|| RetrieveImagingDocumentSetRequest {
                        studies: Vec::new(),
                        transfer_syntaxes: req.transfer_syntaxes.clone(),
                    });
                let sti = match sub
                    .studies
                    .iter()
                    .position(|s| s.study_instance_uid == st.study_instance_uid)
                {
                    Some(i) => i,
                    None => {
                        sub.studies.push(StudyRequest {
                            study_instance_uid: st.study_instance_uid.clone(),
                            series: Vec::new(),
                        });
                        sub.studies.len() - 1
                    }
                };
                let study = &mut sub.studies[sti];
                let sei = match study
                    .series
                    .iter()
                    .position(|s| s.series_instance_uid == se.series_instance_uid)
                {
                    Some(i) => i,
                    None => {
                        study.series.push(SeriesRequest {
                            series_instance_uid: se.series_instance_uid.clone(),
                            documents: Vec::new(),
                        });
                        study.series.len() - 1
                    }
                };
                study.series[sei].documents.push(d.clone());
            }
        }
    }
    out
}

/// Calls inside the affinity domain carry no XUA header blocks: its actors trust the gateway by its TLS
/// identity, and a registry that does not process WS-Security would fault on a mustUnderstand header.
fn inside(ctx: CallContext) -> CallContext {
    CallContext {
        header_blocks: Default::default(),
        ..ctx
    }
}

impl Community for XdsCommunity {
    fn query(
        &self,
        ctx: CallContext,
        mut req: AdhocQueryRequest,
    ) -> BoxFut<'_, Result<AdhocQueryResponse, BackendError>> {
        let ctx = inside(ctx);
        Box::pin(async move {
            // a registry inside the affinity domain does not know homeCommunityIds
            req.query.home = None;
            self.client
                .call(&self.registry_url, Transaction::Iti18, &ctx, &req)
                .await
        })
    }

    fn retrieve(
        &self,
        ctx: CallContext,
        req: RetrieveDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        let ctx = inside(ctx);
        Box::pin(async move {
            let mut by_repo: BTreeMap<String, RetrieveDocumentSetRequest> = BTreeMap::new();
            let mut errors = Vec::new();
            for d in req.documents {
                if self.repositories.contains_key(&d.repository_unique_id) {
                    let mut d = d;
                    d.home_community_id = None;
                    by_repo
                        .entry(d.repository_unique_id.clone())
                        .or_default()
                        .documents
                        .push(d);
                } else {
                    errors.push(
                        RegistryError::new(
                            ErrorCode::XDSUnknownRepositoryId,
                            format!("unknown repository {}", d.repository_unique_id),
                        )
                        .at(d.repository_unique_id.clone()),
                    );
                }
            }
            let calls = by_repo.into_iter().map(|(repo, sub)| {
                let url = self.repositories[&repo].clone();
                let ctx = ctx.clone();
                async move {
                    (
                        repo,
                        self.client
                            .retrieve(&url, Transaction::Iti43, &ctx, &sub, true)
                            .await,
                    )
                }
            });
            let mut parts = Vec::new();
            for (repo, res) in futures::future::join_all(calls).await {
                match res {
                    Ok(s) => parts.push(s),
                    Err(e) => errors.push(e.to_registry_error(Transaction::Iti43, &repo)),
                }
            }
            Ok(RetrieveStream::combine(parts, errors))
        })
    }

    fn retrieve_images(
        &self,
        ctx: CallContext,
        req: RetrieveImagingDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        let ctx = inside(ctx);
        Box::pin(async move {
            let mut errors = Vec::new();
            let mut calls = Vec::new();
            for (ids, mut sub) in split_imaging_request(&req) {
                let Some(url) = self.sources.get(&ids).cloned() else {
                    for (_, _, d) in sub.documents() {
                        errors.push(
                            RegistryError::new(
                                ErrorCode::XDSIUnknownIdsUid,
                                format!("unknown imaging document source {ids}"),
                            )
                            .at(d.document_unique_id.clone()),
                        );
                    }
                    continue;
                };
                for st in &mut sub.studies {
                    for se in &mut st.series {
                        for d in &mut se.documents {
                            d.home_community_id = None;
                        }
                    }
                }
                let ctx = ctx.clone();
                calls.push(async move {
                    (
                        ids,
                        self.client
                            .retrieve(&url, Transaction::Rad69, &ctx, &sub, true)
                            .await,
                    )
                });
            }
            let mut parts = Vec::new();
            for (ids, res) in futures::future::join_all(calls).await {
                match res {
                    Ok(s) => parts.push(s),
                    Err(e) => errors.push(e.to_registry_error(Transaction::Rad69, &ids)),
                }
            }
            Ok(RetrieveStream::combine(parts, errors))
        })
    }
}
