//! Prometheus metrics of the operator (served on `/metrics` of the `--metrics-addr` listener):
//! reconciliations and errors per kind, reconcile durations, leadership, and gateways per localisation
//! and consent mode (issue 4: the localisation choice is visible in metrics).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-kind counters and histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `DuoGateway` or `MitzConnection`.
    pub kind: String,
}

/// Labels of the reconcile outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Resource kind.
    pub kind: String,
    /// `applied`, `degraded` (a condition explains why nothing was applied), `paused` or `error`.
    pub outcome: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Resource kind.
    pub kind: String,
    /// Short error class, e.g. `kube`, `finalizer`.
    pub reason: String,
}

/// Labels of the gateway gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// `mitz` or `allCommunities`.
    pub localization: String,
    /// `mitz` or `permitAll`.
    pub consent: String,
}

/// All operator metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<OutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    gateways: Family<ModeLabels, Gauge>,
    gateway_modes: Mutex<HashMap<String, ModeLabels>>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `duo_operator_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("duo_operator");
        let reconciliations = Family::<OutcomeLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let gateways = Family::<ModeLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations by kind and outcome",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed with an error, by kind and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation in seconds",
            duration.clone(),
        );
        registry.register(
            "gateways",
            "DuoGateways by localisation mode and consent mode",
            gateways.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            errors,
            duration,
            gateways,
            gateway_modes: Mutex::new(HashMap::new()),
            leader,
        }
    }

    /// Counts one reconciliation of `kind` with `outcome`, taking `elapsed`.
    pub fn reconciled(&self, kind: &str, outcome: &str, elapsed: Duration) {
        self.reconciliations
            .get_or_create(&OutcomeLabels {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one failed reconciliation.
    pub fn error(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Records the modes of gateway `key` (`namespace/name`); `None` when it is gone.
    pub fn set_gateway_modes(&self, key: &str, modes: Option<ModeLabels>) {
        let Ok(mut map) = self.gateway_modes.lock() else {
            return;
        };
        match modes {
            Some(m) => map.insert(key.to_owned(), m),
            None => map.remove(key),
        };
        let mut counts: HashMap<ModeLabels, i64> = HashMap::new();
        for loc in ["mitz", "allCommunities"] {
            for consent in ["mitz", "permitAll"] {
                counts.insert(
                    ModeLabels {
                        localization: loc.into(),
                        consent: consent.into(),
                    },
                    0,
                );
            }
        }
        for m in map.values() {
            *counts.entry(m.clone()).or_default() += 1;
        }
        for (labels, n) in counts {
            self.gateways.get_or_create(&labels).set(n);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counts_and_modes() {
        let m = Metrics::new();
        m.reconciled("DuoGateway", "applied", Duration::from_millis(20));
        m.error("DuoGateway", "kube");
        m.set_gateway_modes(
            "a/x",
            Some(ModeLabels {
                localization: "allCommunities".into(),
                consent: "mitz".into(),
            }),
        );
        m.set_gateway_modes(
            "a/y",
            Some(ModeLabels {
                localization: "mitz".into(),
                consent: "mitz".into(),
            }),
        );
        m.set_gateway_modes("a/y", None);
        let text = m.encode();
        assert!(
            text.contains(
                r#"duo_operator_reconciliations_total{kind="DuoGateway",outcome="applied"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"duo_operator_reconcile_errors_total{kind="DuoGateway",reason="kube"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"duo_operator_gateways{localization="allCommunities",consent="mitz"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"duo_operator_gateways{localization="mitz",consent="mitz"} 0"#),
            "{text}"
        );
        assert!(
            text.contains("duo_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
