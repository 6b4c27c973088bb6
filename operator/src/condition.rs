//! The status conditions the operator writes, typed: condition types ([`ConditionType`]), their status
//! ([`ConditionStatus`]) and every reason ([`Reason`]), in the manner of Stackable's operator-rs.
//!
//! The wire values are the CamelCase strings of [`ConditionType::as_str`] and [`Reason::as_str`]; they are
//! what `kubectl`, the README's status table, the charts, dashboards and the integration tests read, so a
//! variant's string never changes. The status types in `crd.rs` keep Kubernetes' `Condition` (strings), so
//! the CRD schema does not change either: these enums only decide what is written into it.
//!
//! A new condition type or reason is a new variant here, with a doc comment saying when it is set; the
//! place that sets it is `reconcile.rs` (or `validate.rs` / `build.rs` for the reasons they return).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// An enum whose variants are written as fixed CamelCase strings: `as_str`, `Display`, and `ALL` (every
/// variant, for the tests that pin the strings).
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string written into the status (and events): CamelCase, never changed.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Type of a condition in `status.conditions` of a DuoGateway (all of them) or a MitzConnection
    /// (`Ready` only).
    pub enum ConditionType {
        /// DuoGateway: `True` when the children of the current spec are applied and the Deployment has
        /// rolled out to `spec.replicas` available pods; `False` while rolling out and whenever the spec
        /// cannot be applied (the reason is then the [`Problem`](crate::reconcile::Problem) reason).
        /// MitzConnection: `True` when its client certificate and trust bundle are usable.
        Ready => "Ready",
        /// DuoGateway: `True` while a rollout is under way; `False` when it is complete, when the spec
        /// cannot be applied, and while reconciliation is paused ([`Reason::Paused`]).
        Progressing => "Progressing",
        /// DuoGateway: `True` when the current spec cannot be applied (nothing was changed, the last good
        /// children keep running); `False` ([`Reason::Reconciled`]) when it is applied.
        Degraded => "Degraded",
        /// DuoGateway: `True` from 30 days before the TLS certificate's end (and after it, with
        /// [`Reason::CertificateExpired`]); `False` ([`Reason::CertificateValid`]) before.
        CertificateExpiring => "CertificateExpiring",
        /// DuoGateway: whether the gateway's own certificate is revoked: `True`, `False`, or `Unknown`
        /// when its CRL / OCSP responder could not tell (see [`crate::validate::OwnRevocation`]).
        CertificateRevoked => "CertificateRevoked",
        /// DuoGateway: `True` when selected DuoCommunities were left out of the configuration (invalid,
        /// or a homeCommunityId that is the gateway's own or used by another selected community); the
        /// message names each one (`namespace/name`) and the field.
        CommunitiesSkipped => "CommunitiesSkipped",
    }
}

impl ConditionType {
    /// Whether `c` is a condition of this type.
    pub fn is(self, c: &Condition) -> bool {
        c.type_ == self.as_str()
    }

    /// The condition of this type in `conditions`, if any.
    pub fn find(self, conditions: &[Condition]) -> Option<&Condition> {
        conditions.iter().find(|c| self.is(c))
    }
}

wire_enum! {
    /// Status of a condition (Kubernetes API conventions).
    pub enum ConditionStatus {
        /// The condition holds.
        True => "True",
        /// The condition does not hold.
        False => "False",
        /// It is not known whether the condition holds (only `CertificateRevoked`).
        Unknown => "Unknown",
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> ConditionStatus {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

wire_enum! {
    /// Reason of a condition (and of the Warning event published with it). The README's "What the status
    /// says" table lists them for users.
    pub enum Reason {
        // --- Ready / Progressing / Degraded when the spec is applied ------------------------------
        /// `Ready=True`: the Deployment's pods are available.
        Available => "Available",
        /// `Progressing=False`: the rollout is complete.
        Complete => "Complete",
        /// `Ready=False`, `Progressing=True`: the Deployment is rolling out (or does not exist yet).
        RollingOut => "RollingOut",
        /// `Degraded=False`: the current spec is applied.
        Reconciled => "Reconciled",
        /// `Progressing=False`: reconciliation is paused by annotation; other conditions are kept.
        Paused => "Paused",
        /// `Progressing=True`: a new operator image would roll this gateway's pods, and as many other
        /// gateways as `--max-concurrent-rollouts` allows are rolling out now; the running pods stay as
        /// they are until one finishes.
        RolloutQueued => "RolloutQueued",

        // --- a spec that cannot be applied: Degraded=True, Ready=False, Progressing=False ---------
        // (also a MitzConnection's Ready=False; the reason of a Problem)
        /// A Secret the spec names does not exist.
        SecretMissing => "SecretMissing",
        /// A Secret the spec names lacks a key (named in the message) or it is empty.
        SecretIncomplete => "SecretIncomplete",
        /// A trust bundle's ConfigMap or Secret, or its key, does not exist.
        TrustBundleMissing => "TrustBundleMissing",
        /// A trust bundle holds no parseable certificate.
        TrustBundleInvalid => "TrustBundleInvalid",
        /// The spec (or a MitzConnection it uses) breaks a rule; the message names the field.
        InvalidSpec => "InvalidSpec",
        /// The MitzConnection `spec.mitz.connectionName` names does not exist.
        MitzConnectionMissing => "MitzConnectionMissing",
        /// A certificate or key does not parse, or cannot sign XUA assertions.
        CertificateInvalid => "CertificateInvalid",
        /// A private key does not belong to its certificate.
        CertificateKeyMismatch => "CertificateKeyMismatch",
        /// A certificate's `notAfter` has passed. Also `CertificateExpiring=True` for the TLS certificate.
        CertificateExpired => "CertificateExpired",
        /// A certificate's `notBefore` is in the future.
        CertificateNotYetValid => "CertificateNotYetValid",
        /// The TLS certificate's URA is not `spec.organization.ura` (or it carries none).
        CertificateUraMismatch => "CertificateUraMismatch",
        /// An object with a child's name exists and is not owned by this gateway; nothing was applied.
        ChildConflict => "ChildConflict",
        /// The API server refused a child (every child is dry-run first, so none was changed); retried
        /// after 30 s, and `observedGeneration` stays at the last applied generation.
        ApplyFailed => "ApplyFailed",
        /// A DuoCommunity with the gateway's name exists and was not published for it; the gateway is
        /// not published.
        PublishConflict => "PublishConflict",
        /// The TLS certificate names no dNSName that covers the published host (`spec.publish.address`,
        /// default the Service's name): peers would refuse the connection.
        CertificateNameMismatch => "CertificateNameMismatch",
        /// A MitzConnection endpoint's host is a reserved documentation name (`.example`, `.invalid`,
        /// `example.com`, ...: RFC 2606), i.e. a placeholder left from an example; it is never Ready.
        PlaceholderEndpoint => "PlaceholderEndpoint",

        // --- CertificateExpiring ------------------------------------------------------------------
        /// `CertificateExpiring=True` (and its Warning event): 30 days or less left.
        CertificateExpiresSoon => "CertificateExpiresSoon",
        /// `CertificateExpiring=False`: more than 30 days left. Also a MitzConnection's `Ready=True`.
        CertificateValid => "CertificateValid",

        // --- CertificateRevoked -------------------------------------------------------------------
        /// `CertificateRevoked=True` (and its Warning event): the CRL or OCSP responder says so.
        CertificateRevoked => "CertificateRevoked",
        /// `CertificateRevoked=False`: usable revocation data says not revoked.
        CertificateNotRevoked => "CertificateNotRevoked",
        /// `CertificateRevoked=Unknown`: no usable CRL / OCSP answer.
        RevocationUnavailable => "RevocationUnavailable",
        /// `CertificateRevoked=Unknown`: the certificate names no CRL or OCSP responder and no
        /// configured CRL covers it.
        NoRevocationSource => "NoRevocationSource",
        /// `CertificateRevoked=Unknown`: the chain does not verify against `spec.tls.trustBundle`.
        ChainNotVerified => "ChainNotVerified",
        /// `CertificateRevoked=Unknown`: `spec.revocation.enabled` is false.
        RevocationCheckDisabled => "RevocationCheckDisabled",

        // --- CommunitiesSkipped -------------------------------------------------------------------
        /// `CommunitiesSkipped=False`: every selected community is in the configuration.
        AllCommunitiesUsed => "AllCommunitiesUsed",
        /// `CommunitiesSkipped=True`: a selected DuoCommunity does not parse or validate.
        CommunityInvalid => "CommunityInvalid",
        /// `CommunitiesSkipped=True`: a selected DuoCommunity's homeCommunityId is the gateway's own or
        /// another selected community's.
        DuplicateHomeCommunityId => "DuplicateHomeCommunityId",
        /// `CommunitiesSkipped=True`: `spec.communities.namespaces` names a namespace outside the
        /// operator's `--watch-namespaces`; its DuoCommunities cannot be seen.
        NamespaceNotWatched => "NamespaceNotWatched",

        // --- events only --------------------------------------------------------------------------
        /// Warning event when `CommunitiesSkipped` turns `True` or its message changes (the condition's
        /// own reason is the first skipped community's).
        CommunitySkipped => "CommunitySkipped",
        /// Normal event when a gateway that was Degraded has its current spec applied again (the
        /// problem named in the previous Warning event is gone).
        Recovered => "Recovered",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings are the wire values (README, charts, tests, users' alerts read them): pinned here
    /// so that renaming a variant cannot change one.
    #[test]
    fn wire_strings_are_pinned() {
        let types: Vec<_> = ConditionType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "Ready",
                "Progressing",
                "Degraded",
                "CertificateExpiring",
                "CertificateRevoked",
                "CommunitiesSkipped"
            ]
        );
        let statuses: Vec<_> = ConditionStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, ["True", "False", "Unknown"]);
        let reasons: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "Available",
                "Complete",
                "RollingOut",
                "Reconciled",
                "Paused",
                "RolloutQueued",
                "SecretMissing",
                "SecretIncomplete",
                "TrustBundleMissing",
                "TrustBundleInvalid",
                "InvalidSpec",
                "MitzConnectionMissing",
                "CertificateInvalid",
                "CertificateKeyMismatch",
                "CertificateExpired",
                "CertificateNotYetValid",
                "CertificateUraMismatch",
                "ChildConflict",
                "ApplyFailed",
                "PublishConflict",
                "CertificateNameMismatch",
                "PlaceholderEndpoint",
                "CertificateExpiresSoon",
                "CertificateValid",
                "CertificateRevoked",
                "CertificateNotRevoked",
                "RevocationUnavailable",
                "NoRevocationSource",
                "ChainNotVerified",
                "RevocationCheckDisabled",
                "AllCommunitiesUsed",
                "CommunityInvalid",
                "DuplicateHomeCommunityId",
                "NamespaceNotWatched",
                "CommunitySkipped",
                "Recovered",
            ]
        );
    }

    /// Kubernetes requires a condition reason to match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`
    /// (at most 1024 characters); the operator's are CamelCase letters, and each is written once.
    #[test]
    fn reasons_are_valid_camel_case_and_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(s.starts_with(|c: char| c.is_ascii_uppercase()), "{s}");
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
            assert_eq!(r.to_string(), s);
            assert!(seen.insert(s), "{s} twice");
        }
        assert_eq!(ConditionStatus::from(true), ConditionStatus::True);
        assert_eq!(ConditionStatus::from(false), ConditionStatus::False);
    }

    #[test]
    fn find_by_type() {
        let c = |t: &str| Condition {
            type_: t.into(),
            status: "True".into(),
            reason: "Available".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
        };
        let all = [c("Ready"), c("Degraded")];
        assert_eq!(
            ConditionType::Degraded.find(&all).map(|c| c.type_.as_str()),
            Some("Degraded")
        );
        assert!(ConditionType::Progressing.find(&all).is_none());
    }
}
