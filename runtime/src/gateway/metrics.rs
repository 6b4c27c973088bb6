//! Prometheus metrics of the gateway (served on the ops listener at `/metrics`).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a call to one community.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommunityLabels {
    /// homeCommunityId (`urn:oid:...`) or `local`.
    pub community: String,
    /// Transaction sent, e.g. `ITI-38`.
    pub transaction: String,
}

/// Labels of a failed call to one community.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommunityErrorLabels {
    /// homeCommunityId or `local`.
    pub community: String,
    /// Transaction sent.
    pub transaction: String,
    /// Error code reported (XDSUnavailableCommunity, XDSRegistryError ...).
    pub code: String,
}

/// Labels of an inbound request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route or transaction, e.g. `ITI-38` or `timeline`.
    pub endpoint: String,
    /// Overall outcome: `Success`, `PartialSuccess`, `Failure`, `fault`.
    pub outcome: String,
}

/// Labels of a consent decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsentLabels {
    /// Permit, Deny, NotApplicable, Indeterminate.
    pub decision: String,
    /// mitz, cache, failure, permitAll.
    pub source: String,
}

/// Localisation mode as a label value, spelt as in the configuration (`initiating.localization`):
/// `mitz` or `allCommunities`, so the metric reads like the custom resource that chose it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum ModeValue {
    /// Mitz open question (`mitz`).
    Mitz,
    /// Every configured community (`allCommunities`).
    AllCommunities,
}

impl EncodeLabelValue for ModeValue {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            ModeValue::Mitz => "mitz",
            ModeValue::AllCommunities => "allCommunities",
        })
    }
}

/// Labels of the localisation mode gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// The mode.
    pub mode: ModeValue,
}

/// Labels of a refused XUA assertion.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XuaRefusalLabels {
    /// The WS-Security fault code answered, e.g. `wsse:FailedAuthentication`.
    pub code: String,
}

/// Labels of config reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `rejected`.
    pub result: String,
}

/// Labels of Mitz registrations and notifications.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Registrations: `registered`, `alreadyRegistered`, `refused`, `unavailable`. Notifications:
    /// `accepted`, `refused` (unreadable), `forbidden` (not Mitz's certificate).
    pub outcome: String,
}

/// All gateway metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// `duo_community_request_duration_seconds{community,transaction}`: latency per community call.
    pub community_latency: Family<CommunityLabels, Histogram>,
    /// `duo_community_errors_total{community,transaction,code}`.
    pub community_errors: Family<CommunityErrorLabels, Counter>,
    /// `duo_fanout_size`: communities asked per initiating query.
    pub fanout_size: Histogram,
    /// `duo_requests_total{endpoint,outcome}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `duo_consent_decisions_total{decision,source}`.
    pub consent_decisions: Family<ConsentLabels, Counter>,
    /// `duo_localization_mode{mode}`: 1 for the configured mode (`mitz` / `allCommunities`), 0 for the other.
    pub localization_mode: Family<ModeLabels, Gauge>,
    /// `duo_disclosures_total`: responses that disclosed data after a Permit.
    pub disclosures: Counter,
    /// `duo_config_reloads_total{result}`.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// `duo_foreign_patient_objects_total{community,transaction}`: objects a community returned for a
    /// query about another patient than the one asked for, left out by the initiating gateway.
    pub foreign_patient_objects: Family<CommunityLabels, Counter>,
    /// `duo_xua_unsigned_allowed`: 1 when `xua.allowUnsigned` accepts unsigned or absent assertions
    /// (a conformance harness), 0 otherwise.
    pub xua_unsigned_allowed: Gauge,
    /// `duo_xua_refusals_total{code}`: requests refused for their XUA assertion, by WS-Security fault code.
    pub xua_refusals: Family<XuaRefusalLabels, Counter>,
    /// `duo_mitz_registrations_total{outcome}`: registrations with Mitz as data holder.
    pub mitz_registrations: Family<OutcomeLabels, Counter>,
    /// `duo_mitz_notifications_total{outcome}`: consent notifications received from Mitz.
    pub mitz_notifications: Family<OutcomeLabels, Counter>,
    /// `duo_dsub_notifications_total{outcome}`: ITI-53 Document Metadata Notify requests received
    /// from the XDS notification broker (`accepted`, `forbidden`, `refused`, `unregistered`).
    pub dsub_notifications: Family<OutcomeLabels, Counter>,
    /// `duo_dsub_subscriptions_total{outcome}`: ITI-52 Subscribe attempts (`subscribed`, `failed`).
    pub dsub_subscriptions: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counts one answered request of `endpoint` (a transaction name such as `ITI-38`, or `timeline`)
    /// with its `outcome` (a response status name, `refused` or `fault`): `duo_requests_total`.
    pub fn count_request(&self, endpoint: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Registers every metric under the `duo` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("duo");
        let community_latency = Family::<CommunityLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.002, 2.0, 14))
        });
        registry.register(
            "community_request_duration_seconds",
            "Latency of calls to a community",
            community_latency.clone(),
        );
        let community_errors = Family::<CommunityErrorLabels, Counter>::default();
        registry.register(
            "community_errors",
            "Failed calls to a community by error code",
            community_errors.clone(),
        );
        let fanout_size = Histogram::new([0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 50.0]);
        registry.register(
            "fanout_size",
            "Communities asked per initiating query",
            fanout_size.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Inbound requests by endpoint and outcome",
            requests.clone(),
        );
        let consent_decisions = Family::<ConsentLabels, Counter>::default();
        registry.register(
            "consent_decisions",
            "Consent decisions by decision and source",
            consent_decisions.clone(),
        );
        let localization_mode = Family::<ModeLabels, Gauge>::default();
        registry.register(
            "localization_mode",
            "Configured localisation mode (1 = active)",
            localization_mode.clone(),
        );
        let disclosures = Counter::default();
        registry.register(
            "disclosures",
            "Responses that disclosed data after a Permit",
            disclosures.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration and certificate reloads",
            config_reloads.clone(),
        );
        let foreign_patient_objects = Family::<CommunityLabels, Counter>::default();
        registry.register(
            "foreign_patient_objects",
            "Objects of another patient than asked for, returned by a community and left out",
            foreign_patient_objects.clone(),
        );
        let xua_unsigned_allowed = Gauge::default();
        registry.register(
            "xua_unsigned_allowed",
            "1 when unsigned or absent XUA assertions are accepted (xua.allowUnsigned, conformance harness)",
            xua_unsigned_allowed.clone(),
        );
        let xua_refusals = Family::<XuaRefusalLabels, Counter>::default();
        registry.register(
            "xua_refusals",
            "Requests refused for their XUA assertion, by WS-Security fault code",
            xua_refusals.clone(),
        );
        let mitz_registrations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "mitz_registrations",
            "Registrations with Mitz as data holder, by outcome",
            mitz_registrations.clone(),
        );
        let mitz_notifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "mitz_notifications",
            "Consent notifications received from Mitz, by outcome",
            mitz_notifications.clone(),
        );
        let dsub_notifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "dsub_notifications",
            "ITI-53 Document Metadata Notify requests received from the notification broker, by outcome",
            dsub_notifications.clone(),
        );
        let dsub_subscriptions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "dsub_subscriptions",
            "ITI-52 Document Metadata Subscribe attempts at the notification broker, by outcome",
            dsub_subscriptions.clone(),
        );
        crate::revocation::METRICS.register(&mut registry);
        Metrics {
            registry,
            dsub_notifications,
            dsub_subscriptions,
            mitz_registrations,
            mitz_notifications,
            xua_unsigned_allowed,
            xua_refusals,
            community_latency,
            community_errors,
            fanout_size,
            requests,
            consent_decisions,
            localization_mode,
            disclosures,
            config_reloads,
            foreign_patient_objects,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // encoding into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one registration (`duo_mitz_registrations_total`) or notification
    /// (`duo_mitz_notifications_total`) outcome.
    pub fn count_mitz(&self, family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records the configured localisation mode (exactly one mode is 1).
    pub fn set_localization_mode(&self, mitz: bool) {
        self.localization_mode
            .get_or_create(&ModeLabels {
                mode: ModeValue::Mitz,
            })
            .set(i64::from(mitz));
        self.localization_mode
            .get_or_create(&ModeLabels {
                mode: ModeValue::AllCommunities,
            })
            .set(i64::from(!mitz));
    }
}
