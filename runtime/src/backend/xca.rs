//! A remote XCA / XCA-I responding gateway as a community: a TLB node or another DUO gateway.
//! Queries go out as ITI-38, retrieves as ITI-39 and RAD-75 (ITI TF-2b 3.38, 3.39; RAD TF-3 4.75).

use super::soap_client::SoapClient;
use super::{BackendError, BoxFut, CallContext, Community, RetrieveStream};
use crate::ihe::Transaction;
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse};
use crate::ihe::retrieve::{RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest};
use crate::model::HomeCommunityId;

/// Endpoints of a responding gateway.
#[derive(Debug, Clone)]
pub struct XcaEndpoints {
    /// The community's homeCommunityId: put in `AdhocQuery/@home` and in every DocumentRequest.
    pub home_community_id: HomeCommunityId,
    /// ITI-38 URL.
    pub query_url: String,
    /// ITI-39 URL.
    pub retrieve_url: String,
    /// RAD-75 URL.
    pub imaging_retrieve_url: String,
    /// The homeCommunityIds its responding gateway fronts besides its own (a platform,
    /// `communities[].frontedCommunities`): a DocumentRequest naming one of them keeps it, so the
    /// platform retrieves from that community; every other DocumentRequest gets `home_community_id`.
    pub fronted_communities: Vec<HomeCommunityId>,
}

impl XcaEndpoints {
    /// The HomeCommunityId a DocumentRequest for `asked` carries to this gateway: `asked` when it is one
    /// the gateway fronts, else the gateway's own.
    fn home_for(&self, asked: Option<&HomeCommunityId>) -> HomeCommunityId {
        match asked {
            Some(h) if self.fronted_communities.contains(h) => h.clone(),
            _ => self.home_community_id.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct XcaCommunity {
    endpoints: XcaEndpoints,
    client: SoapClient,
}

impl XcaCommunity {
    /// A community reached through `client` (which carries the hospital's TLS identity).
    pub fn new(endpoints: XcaEndpoints, client: SoapClient) -> XcaCommunity {
        XcaCommunity { endpoints, client }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &XcaEndpoints {
        &self.endpoints
    }
}

impl Community for XcaCommunity {
    fn query(
        &self,
        ctx: CallContext,
        mut req: AdhocQueryRequest,
    ) -> BoxFut<'_, Result<AdhocQueryResponse, BackendError>> {
        Box::pin(async move {
            // ITI TF-2b 3.38.4.1.2: the initiating gateway names the community it asks
            req.query.home = Some(self.endpoints.home_community_id.clone());
            self.client
                .call(&self.endpoints.query_url, Transaction::Iti38, &ctx, &req)
                .await
        })
    }

    fn retrieve(
        &self,
        ctx: CallContext,
        mut req: RetrieveDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        Box::pin(async move {
            for d in &mut req.documents {
                d.home_community_id = Some(self.endpoints.home_for(d.home_community_id.as_ref()));
            }
            self.client
                .retrieve(
                    &self.endpoints.retrieve_url,
                    Transaction::Iti39,
                    &ctx,
                    &req,
                    true,
                )
                .await
        })
    }

    fn retrieve_images(
        &self,
        ctx: CallContext,
        mut req: RetrieveImagingDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>> {
        Box::pin(async move {
            for st in &mut req.studies {
                for se in &mut st.series {
                    for d in &mut se.documents {
                        d.home_community_id =
                            Some(self.endpoints.home_for(d.home_community_id.as_ref()));
                    }
                }
            }
            self.client
                .retrieve(
                    &self.endpoints.imaging_retrieve_url,
                    Transaction::Rad75,
                    &ctx,
                    &req,
                    true,
                )
                .await
        })
    }
}
