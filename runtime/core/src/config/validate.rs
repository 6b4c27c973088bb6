//! Semantic validation of [`Config`](super::Config): one error, one line, naming the field.

use std::collections::HashSet;
use std::fmt;

use super::{
    Config, ConsentMode, LocalBackend, LocalizationMode, RegistrationMode, TrustedFrontEnd,
};
use crate::model::Oid;

/// A configuration error: the field path (`communities[1].queryUrl`, empty for the whole file) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field, camelCase as in the file.
    pub field: String,
    /// What is wrong, one line.
    pub message: String,
}

impl ConfigError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Turns a YAML/serde error into one line. serde-saphyr reports the position; serde's message names
    /// the field for missing and unknown fields and the value for invalid identifiers.
    pub(super) fn from_yaml(path: &str, e: serde_saphyr::Error) -> ConfigError {
        let text = e.to_string();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or("invalid YAML");
        let first = first.strip_prefix("error: ").unwrap_or(first).to_owned();
        // keep the "at line X column Y" hint when the crate puts it on a second line
        let location = if first.contains("line ") {
            None
        } else {
            text.lines().map(str::trim).find(|l| l.contains("line "))
        };
        let message = match location {
            Some(loc) => format!("{first} ({loc})"),
            None => first,
        };
        // serde_path_to_error reports "." for the root
        let field = if path == "." {
            String::new()
        } else {
            path.to_owned()
        };
        ConfigError { field, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "config: {}", self.message)
        } else {
            write!(f, "config: {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn check_url(field: &str, url: &str, allow_http: bool) -> Result<(), ConfigError> {
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("https://") {
        r
    } else if let Some(r) = lower.strip_prefix("http://") {
        if !allow_http {
            return Err(ConfigError::new(
                field,
                format!("{url:?} is plain http; use https or set allowPlainHttp: true"),
            ));
        }
        r
    } else {
        return Err(ConfigError::new(
            field,
            format!("{url:?} is not an http(s) URL"),
        ));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(ConfigError::new(field, format!("{url:?} has no host")));
    }
    Ok(())
}

/// Whether `host` is a DNS name as a URL or certificate carries it: dot-separated labels of letters,
/// digits and `-` (not first or last), 1 to 63 characters each, at most 253 in all (RFC 1123 §2.1). No
/// scheme, port, path, brackets or trailing dot.
pub fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A `connectTo` host: a DNS name (letters, digits, `-`, `.`; at most 253 characters) or an IP address,
/// without scheme, port, path or brackets, since only the addresses it resolves to are taken.
fn check_connect_to(field: &str, host: &str) -> Result<(), ConfigError> {
    if is_dns_name(host) || host.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{host:?} is not a host name or IP address (no scheme, port or path)"),
        ))
    }
}

fn check_oid(field: &str, v: &str) -> Result<(), ConfigError> {
    if Oid::is_valid(v) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{v:?} is not an OID (dotted decimal)"),
        ))
    }
}

/// Upper bound of `server.limits.maxBufferedAnswerBytes`, bytes (1 GiB): what peers' answers may hold
/// in memory at once must stay far below a pod's memory; above it a typo (a missing unit) would let a
/// few hostile answers exhaust the pod.
pub const MAX_BUFFERED_ANSWER_BYTES: u64 = 1 << 30;

fn check_positive(field: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::new(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// `initiating.trustedFrontEnd`: no DNS names (removed, with the way to migrate), and every certificate
/// entry in exactly one form (issue 12, defect 9).
fn check_front_ends(t: &TrustedFrontEnd) -> Result<(), ConfigError> {
    if !t.certificate_dns_names.is_empty() {
        return Err(ConfigError::new(
            "initiating.trustedFrontEnd.certificateDnsNames",
            "no longer supported: a DNS name matches a certificate of any CA in the trust bundle; \
             list each front end's certificate in initiating.trustedFrontEnd.certificates as \
             {issuer, subject} (RFC 4514, `openssl x509 -noout -issuer -subject -nameopt RFC2253`) \
             or {spkiSha256} (base64 SHA-256 of its public key), and remove certificateDnsNames",
        ));
    }
    for (i, e) in t.certificates.iter().enumerate() {
        let field = format!("initiating.trustedFrontEnd.certificates[{i}]");
        match (&e.issuer, &e.subject, &e.spki_sha256) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (None, None, None) => {
                return Err(ConfigError::new(
                    field,
                    "set issuer and subject, or spkiSha256",
                ));
            }
            (_, _, Some(_)) => {
                return Err(ConfigError::new(
                    field,
                    "ambiguous: set either issuer and subject, or spkiSha256, not both (one entry per \
                     certificate form; list the front end twice to accept either)",
                ));
            }
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err(ConfigError::new(
                    field,
                    "issuer and subject go together: a subject alone matches any CA's certificate, \
                     an issuer alone any certificate of that CA",
                ));
            }
        }
    }
    Ok(())
}

/// Most CRL URLs in `revocation.crlUrls`.
const MAX_CRL_URLS: usize = 32;

fn validate_revocation(r: &super::RevocationConfig) -> Result<(), ConfigError> {
    if !(1..=3600).contains(&r.refresh_interval_seconds) {
        return Err(ConfigError::new(
            "revocation.refreshIntervalSeconds",
            format!(
                "{} is out of range 1..=3600 (revocation data is refreshed at least hourly)",
                r.refresh_interval_seconds
            ),
        ));
    }
    if r.grace_seconds > 7 * 24 * 3600 {
        return Err(ConfigError::new(
            "revocation.graceSeconds",
            "must be at most 604800 (7 days)",
        ));
    }
    if !(100..=60_000).contains(&r.fetch_timeout_ms) {
        return Err(ConfigError::new(
            "revocation.fetchTimeoutMs",
            format!("{} is out of range 100..=60000", r.fetch_timeout_ms),
        ));
    }
    if !(1024..=512 * 1024 * 1024).contains(&r.max_crl_bytes) {
        return Err(ConfigError::new(
            "revocation.maxCrlBytes",
            format!("{} is out of range 1024..=536870912", r.max_crl_bytes),
        ));
    }
    if r.crl_urls.len() > MAX_CRL_URLS {
        return Err(ConfigError::new(
            "revocation.crlUrls",
            format!("at most {MAX_CRL_URLS} URLs"),
        ));
    }
    for (i, u) in r.crl_urls.iter().enumerate() {
        if !super::is_fetchable_url(u) {
            return Err(ConfigError::new(
                format!("revocation.crlUrls[{i}]"),
                format!(
                    "{u:?} is not a plain http:// URL with a host (CRLs are signed; they are fetched over http, never https or ldap)"
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    let http = c.allow_plain_http;
    validate_revocation(&c.revocation)?;
    if c.organization.name.trim().is_empty() {
        return Err(ConfigError::new("organization.name", "must not be empty"));
    }
    let l = &c.server.limits;
    check_positive("server.limits.maxBodyBytes", l.max_body_bytes)?;
    check_positive("server.limits.maxXmlDepth", l.max_xml_depth as u64)?;
    check_positive("server.limits.maxXmlElements", l.max_xml_elements as u64)?;
    check_positive(
        "server.limits.requestTimeoutSeconds",
        l.request_timeout_seconds,
    )?;
    check_positive(
        "server.limits.maxBufferedAnswerBytes",
        l.max_buffered_answer_bytes,
    )?;
    if l.max_buffered_answer_bytes > MAX_BUFFERED_ANSWER_BYTES {
        return Err(ConfigError::new(
            "server.limits.maxBufferedAnswerBytes",
            format!(
                "{} is more than {MAX_BUFFERED_ANSWER_BYTES} (1 GiB): the gateway holds this much of peers' answers in memory at once; MTOM documents stream and need none of it",
                l.max_buffered_answer_bytes
            ),
        ));
    }
    let root = super::root_bytes_for_inline(l.max_inline_document_bytes) as u64;
    if root > l.max_buffered_answer_bytes {
        return Err(ConfigError::new(
            "server.limits.maxInlineDocumentBytes",
            format!(
                "{} bytes inline need a root of {root} bytes (base64 and envelope), more than server.limits.maxBufferedAnswerBytes ({})",
                l.max_inline_document_bytes, l.max_buffered_answer_bytes
            ),
        ));
    }
    if l.retrieve_lookahead_bytes > l.max_buffered_answer_bytes {
        return Err(ConfigError::new(
            "server.limits.retrieveLookaheadBytes",
            format!(
                "{} is more than server.limits.maxBufferedAnswerBytes ({})",
                l.retrieve_lookahead_bytes, l.max_buffered_answer_bytes
            ),
        ));
    }
    check_positive(
        "server.reloadIntervalSeconds",
        c.server.reload_interval_seconds,
    )?;
    if c.server.listen == c.server.ops_listen && c.server.listen.port() != 0 {
        return Err(ConfigError::new(
            "server.opsListen",
            "must differ from server.listen",
        ));
    }
    check_positive("local.deadlineMs", c.local.deadline_ms())?;
    match &c.local {
        LocalBackend::Xds(x) => {
            check_url("local.registryUrl", &x.registry_url, http)?;
            let mut seen = HashSet::new();
            for (i, r) in x.repositories.iter().enumerate() {
                check_oid(&format!("local.repositories[{i}].uniqueId"), &r.unique_id)?;
                check_url(&format!("local.repositories[{i}].url"), &r.url, http)?;
                if !seen.insert(&r.unique_id) {
                    return Err(ConfigError::new(
                        format!("local.repositories[{i}].uniqueId"),
                        "duplicate",
                    ));
                }
            }
            let mut seen = HashSet::new();
            for (i, r) in x.imaging_document_sources.iter().enumerate() {
                check_oid(
                    &format!("local.imagingDocumentSources[{i}].uniqueId"),
                    &r.unique_id,
                )?;
                check_url(
                    &format!("local.imagingDocumentSources[{i}].url"),
                    &r.url,
                    http,
                )?;
                if !seen.insert(&r.unique_id) {
                    return Err(ConfigError::new(
                        format!("local.imagingDocumentSources[{i}].uniqueId"),
                        "duplicate",
                    ));
                }
            }
        }
        LocalBackend::Xca(x) => {
            check_url("local.queryUrl", &x.query_url, http)?;
            check_url("local.retrieveUrl", &x.retrieve_url, http)?;
            check_url("local.imagingRetrieveUrl", &x.imaging_retrieve_url, http)?;
            if let Some(d) = &x.dicomweb_url {
                check_url("local.dicomwebUrl", d, http)?;
            }
        }
        LocalBackend::Dicomweb(d) => {
            check_url("local.baseUrl", &d.base_url, http)?;
            check_oid("local.repositoryUniqueId", &d.repository_unique_id)?;
        }
    }
    let mut seen = HashSet::new();
    for (i, rc) in c.communities.iter().enumerate() {
        let f = |n: &str| format!("communities[{i}].{n}");
        if !seen.insert(&rc.home_community_id) {
            return Err(ConfigError::new(
                f("homeCommunityId"),
                format!("duplicate {}", rc.home_community_id),
            ));
        }
        if rc.home_community_id == c.organization.home_community_id {
            return Err(ConfigError::new(
                f("homeCommunityId"),
                "is this gateway's own homeCommunityId",
            ));
        }
        check_url(&f("queryUrl"), &rc.query_url, http)?;
        check_url(&f("retrieveUrl"), &rc.retrieve_url, http)?;
        check_url(&f("imagingRetrieveUrl"), &rc.imaging_retrieve_url, http)?;
        check_positive(&f("deadlineMs"), rc.deadline_ms)?;
        if let Some(host) = &rc.connect_to {
            check_connect_to(&f("connectTo"), host)?;
        }
        let mut issuers = HashSet::new();
        for (j, t) in rc.trusted_issuers.iter().enumerate() {
            let g = |n: &str| format!("communities[{i}].trustedIssuers[{j}].{n}");
            if t.issuer.trim().is_empty() {
                return Err(ConfigError::new(g("issuer"), "must not be empty"));
            }
            if !issuers.insert(t.issuer.trim()) {
                return Err(ConfigError::new(
                    g("issuer"),
                    format!("duplicate {:?}", t.issuer),
                ));
            }
            crate::pki::check_xua_signature_certificates(&t.certificates)
                .map_err(|e| ConfigError::new(g("certificates"), e))?;
        }
    }
    // fronted communities (target communities): each id behind exactly one community, and never a
    // community that is configured on its own or this gateway itself, so that which gateway is asked
    // for a homeCommunityId Mitz names is never ambiguous
    let mut fronted_by: std::collections::HashMap<&crate::model::HomeCommunityId, usize> =
        std::collections::HashMap::new();
    for (i, rc) in c.communities.iter().enumerate() {
        for (j, h) in rc.fronted_communities.iter().enumerate() {
            let f = format!("communities[{i}].frontedCommunities[{j}]");
            if h == &c.organization.home_community_id {
                return Err(ConfigError::new(f, "is this gateway's own homeCommunityId"));
            }
            if let Some(k) = c.communities.iter().position(|o| &o.home_community_id == h) {
                return Err(ConfigError::new(
                    f,
                    format!("{h} is the homeCommunityId of communities[{k}]"),
                ));
            }
            if let Some(k) = fronted_by.insert(h, i) {
                return Err(ConfigError::new(
                    f,
                    if k == i {
                        format!("duplicate {h}")
                    } else {
                        format!("{h} is already fronted by communities[{k}]")
                    },
                ));
            }
        }
    }
    let x = &c.xua;
    if x.clock_skew_seconds > 300 {
        return Err(ConfigError::new(
            "xua.clockSkewSeconds",
            "must be at most 300 (a larger skew stretches every assertion's validity)",
        ));
    }
    check_positive("xua.maxLifetimeSeconds", x.max_lifetime_seconds)?;
    if x.max_lifetime_seconds > 86_400 {
        return Err(ConfigError::new(
            "xua.maxLifetimeSeconds",
            "must be at most 86400 (one day; Twiin asks 600)",
        ));
    }
    for (i, p) in x.allowed_purposes_of_use.iter().enumerate() {
        // the HL7 v3 PurposeOfUse codes are upper case (TREAT, ETREAT, HRESCH ...); compared exactly
        if !p.as_str().bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(
                format!("xua.allowedPurposesOfUse[{i}]"),
                format!(
                    "{:?} is not a PurposeOfUse code: codes are upper case letters, e.g. TREAT",
                    p.as_str()
                ),
            ));
        }
    }
    if x.allowed_purposes_of_use.is_empty() {
        return Err(ConfigError::new(
            "xua.allowedPurposesOfUse",
            "must name at least one purpose of use",
        ));
    }
    if x.issuer.as_ref().is_some_and(|i| i.trim().is_empty()) {
        return Err(ConfigError::new("xua.issuer", "must not be empty"));
    }
    if x.audiences.iter().any(|a| a.trim().is_empty()) {
        return Err(ConfigError::new(
            "xua.audiences",
            "must not hold an empty audience",
        ));
    }
    if x.audiences.iter().any(|a| a.trim() != a) {
        return Err(ConfigError::new(
            "xua.audiences",
            "an audience has spaces around it (a received audience is compared trimmed, so it would never match)",
        ));
    }
    // the calling community is found by its certificate's URA: two communities with one URA would
    // make whose issuer trust list applies ambiguous
    let mut uras = HashSet::new();
    for (i, rc) in c.communities.iter().enumerate() {
        if let Some(u) = &rc.certificate_ura
            && !uras.insert(u.as_str())
        {
            return Err(ConfigError::new(
                format!("communities[{i}].certificateUra"),
                format!(
                    "{} is already the certificateUra of another community",
                    u.as_str()
                ),
            ));
        }
    }
    check_front_ends(&c.initiating.trusted_front_end)?;
    let needs_mitz =
        c.consent.mode == ConsentMode::Mitz || c.initiating.localization == LocalizationMode::Mitz;
    match &c.mitz {
        None if needs_mitz => {
            return Err(ConfigError::new(
                "mitz",
                "required when consent.mode is mitz or initiating.localization is mitz",
            ));
        }
        Some(m) => {
            check_url("mitz.closedQuestionUrl", &m.closed_question_url, http)?;
            match &m.open_question_url {
                Some(u) => check_url("mitz.openQuestionUrl", u, http)?,
                None if c.initiating.localization == LocalizationMode::Mitz => {
                    return Err(ConfigError::new(
                        "mitz.openQuestionUrl",
                        "required when initiating.localization is mitz",
                    ));
                }
                None => {}
            }
            if let Some(u) = &m.subscription_url {
                check_url("mitz.subscriptionUrl", u, http)?;
            }
            check_positive("mitz.deadlineMs", m.deadline_ms)?;
            for (i, n) in m.notification_client_names.iter().enumerate() {
                if !is_dns_name(n) {
                    return Err(ConfigError::new(
                        format!("mitz.notificationClientNames[{i}]"),
                        format!("{n:?} is not a DNS name"),
                    ));
                }
            }
        }
        None => {}
    }
    if c.registration.mode == RegistrationMode::Mitz {
        let Some(m) = &c.mitz else {
            return Err(ConfigError::new(
                "mitz",
                "required when registration.mode is mitz",
            ));
        };
        if m.subscription_url.is_none() {
            return Err(ConfigError::new(
                "mitz.subscriptionUrl",
                "required when registration.mode is mitz",
            ));
        }
        match &c.registration.notification_endpoint {
            Some(u) => check_url("registration.notificationEndpoint", u, http)?,
            None => {
                return Err(ConfigError::new(
                    "registration.notificationEndpoint",
                    "required when registration.mode is mitz (Mitz delivers consent changes there)",
                ));
            }
        }
        if m.notification_client_names.is_empty() {
            return Err(ConfigError::new(
                "mitz.notificationClientNames",
                "required when registration.mode is mitz: the DNS names of Mitz's client certificate, \
                 without which its consent notifications are refused",
            ));
        }
        if !(1..=20).contains(&c.registration.max_attempts) {
            return Err(ConfigError::new(
                "registration.maxAttempts",
                "must be between 1 and 20",
            ));
        }
    }
    if let Some(d) = &c.registration.dsub {
        if c.registration.mode != RegistrationMode::Mitz {
            return Err(ConfigError::new(
                "registration.dsub",
                "needs registration.mode mitz (a notification is acknowledged only once Mitz \
                 accepted the registration)",
            ));
        }
        check_url("registration.dsub.brokerUrl", &d.broker_url, http)?;
        check_url("registration.dsub.recipientUrl", &d.recipient_url, http)?;
        if d.broker_client_names.is_empty() {
            return Err(ConfigError::new(
                "registration.dsub.brokerClientNames",
                "required: the DNS names of the broker's client certificate, without which every \
                 notification is refused",
            ));
        }
        for (i, n) in d.broker_client_names.iter().enumerate() {
            if !is_dns_name(n) {
                return Err(ConfigError::new(
                    format!("registration.dsub.brokerClientNames[{i}]"),
                    format!("{n:?} is not a DNS name"),
                ));
            }
        }
        if d.topic != super::DsubTopic::FullDocumentEntry {
            return Err(ConfigError::new(
                "registration.dsub.topic",
                "only fullDocumentEntry is supported: a MinimalDocumentEntry notification names no \
                 patient",
            ));
        }
        if !(60..=31_536_000).contains(&d.renew_seconds) {
            return Err(ConfigError::new(
                "registration.dsub.renewSeconds",
                "must be between 60 and 31536000",
            ));
        }
    }
    if c.audit.sink.trim().is_empty() {
        return Err(ConfigError::new(
            "audit.sink",
            "must be stdout or a file path",
        ));
    }
    if let Some(s) = &c.audit.syslog
        && s.address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
    {
        return Err(ConfigError::new(
            "audit.syslog.address",
            format!("{:?} is not host:port", s.address),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn example() -> Config {
        Config::parse(include_str!("../../../examples/gateway.yaml")).unwrap()
    }

    fn refused(c: &Config) -> String {
        c.validate().expect_err("accepted").to_string()
    }

    #[test]
    fn xua_settings_that_could_never_match_are_refused() {
        // found by the breaking run of issue 13: each of these was accepted and silently never matched
        // (or matched the wrong thing)
        assert!(example().validate().is_ok());
        let mut c = example();
        c.xua.allowed_purposes_of_use = vec!["treat".parse().unwrap()];
        assert!(refused(&c).contains("xua.allowedPurposesOfUse[0]"));
        let mut c = example();
        c.xua.audiences = vec![" urn:oid:1.2.3 ".into()];
        assert!(refused(&c).contains("xua.audiences"));
        let mut c = example();
        c.xua.max_lifetime_seconds = 1_000_000_000_000;
        assert!(refused(&c).contains("xua.maxLifetimeSeconds"));
        let mut c = example();
        let mut second = c.communities[0].clone();
        second.home_community_id = "urn:oid:2.16.528.1.1007.3.3.87654399.1".parse().unwrap();
        c.communities[0].certificate_ura = Some("87654321".parse().unwrap());
        second.certificate_ura = Some("87654321".parse().unwrap());
        c.communities.push(second);
        assert!(refused(&c).contains("communities[1].certificateUra"));
    }

    /// The example with registration on and a valid `registration.dsub` read from YAML.
    fn with_dsub() -> Config {
        let mut c = example();
        let m = c.mitz.as_mut().expect("the example has a mitz connection");
        m.subscription_url = Some("https://mitz.example/abonnementen/fhir/Subscription".into());
        m.notification_client_names = vec!["mitz.example".into()];
        c.registration = serde_saphyr::from_str(
            "mode: mitz\n\
             notificationEndpoint: https://duo.example/mitz/notifications\n\
             dsub:\n\
             \x20 brokerUrl: https://xds.example/dsub/iti52\n\
             \x20 recipientUrl: https://duo.example/dsub/notify\n\
             \x20 brokerClientNames: [xds-broker.example]\n",
        )
        .unwrap();
        c
    }

    #[test]
    fn dsub_settings_are_checked() {
        let c = with_dsub();
        c.validate().unwrap();
        let d = c.registration.dsub.as_ref().unwrap();
        assert_eq!(d.topic, super::super::DsubTopic::FullDocumentEntry);
        assert_eq!(d.renew_seconds, 86_400);
        let change = |f: &dyn Fn(&mut Config)| {
            let mut c = with_dsub();
            f(&mut c);
            refused(&c)
        };
        assert!(
            change(&|c| c.registration.mode = super::RegistrationMode::Off)
                .contains("registration.dsub")
        );
        assert!(
            change(&|c| c.registration.dsub.as_mut().unwrap().broker_url =
                "http://xds.example/dsub".into())
            .contains("registration.dsub.brokerUrl")
        );
        assert!(
            change(&|c| c.registration.dsub.as_mut().unwrap().recipient_url =
                "duo.example/dsub/notify".into())
            .contains("registration.dsub.recipientUrl")
        );
        assert!(
            change(&|c| c.registration.dsub.as_mut().unwrap().broker_client_names = Vec::new())
                .contains("registration.dsub.brokerClientNames")
        );
        assert!(
            change(
                &|c| c.registration.dsub.as_mut().unwrap().broker_client_names =
                    vec!["not a name".into()]
            )
            .contains("registration.dsub.brokerClientNames[0]")
        );
        assert!(
            change(&|c| c.registration.dsub.as_mut().unwrap().topic =
                super::super::DsubTopic::MinimalDocumentEntry)
            .contains("registration.dsub.topic")
        );
        assert!(
            change(&|c| c.registration.dsub.as_mut().unwrap().renew_seconds = 5)
                .contains("registration.dsub.renewSeconds")
        );
        // plain http only with the opt-in
        let mut c = with_dsub();
        c.allow_plain_http = true;
        c.registration.dsub.as_mut().unwrap().broker_url = "http://xds.example/dsub".into();
        c.validate().unwrap();
        // unknown fields are refused when read
        assert!(
            serde_saphyr::from_str::<super::super::DsubConfig>(
                "brokerUrl: a\nrecipientUrl: b\nbrokerClientNames: [c]\nbrokerUri: d\n"
            )
            .is_err()
        );
    }

    #[test]
    fn fronted_communities_are_unambiguous() {
        let hc = |s: &str| -> crate::model::HomeCommunityId { s.parse().unwrap() };
        let mut c = example();
        c.communities[0].fronted_communities =
            vec![hc("urn:oid:1.2.3.4.1"), hc("urn:oid:1.2.3.4.2")];
        assert!(c.validate().is_ok());
        // the same id twice in one list
        let mut d = c.clone();
        d.communities[0]
            .fronted_communities
            .push(hc("urn:oid:1.2.3.4.1"));
        let e = refused(&d);
        assert!(
            e.contains("communities[0].frontedCommunities[2]") && e.contains("duplicate"),
            "{e}"
        );
        // our own id
        let mut d = c.clone();
        d.communities[0].fronted_communities[1] = d.organization.home_community_id.clone();
        let e = refused(&d);
        assert!(
            e.contains("communities[0].frontedCommunities[1]") && e.contains("own"),
            "{e}"
        );
        // another community's own id, and an id fronted by two communities
        let mut second = c.communities[0].clone();
        second.home_community_id = "urn:oid:2.16.528.1.1007.3.3.87654399.1".parse().unwrap();
        second.fronted_communities = vec![hc("urn:oid:1.2.3.4.2")];
        let mut d = c.clone();
        d.communities.push(second.clone());
        let e = refused(&d);
        assert!(
            e.contains("communities[1].frontedCommunities[0]")
                && e.contains("already fronted by communities[0]"),
            "{e}"
        );
        let mut d = c.clone();
        second.fronted_communities = vec![];
        d.communities[0].fronted_communities[0] = second.home_community_id.clone();
        d.communities.push(second);
        let e = refused(&d);
        assert!(
            e.contains("communities[0].frontedCommunities[0]") && e.contains("communities[1]"),
            "{e}"
        );
    }

    #[test]
    fn buffered_answer_bytes_are_bounded_above() {
        let mut c = example();
        c.server.limits.max_buffered_answer_bytes = super::MAX_BUFFERED_ANSWER_BYTES;
        assert!(c.validate().is_ok());
        // a size given in KiB where bytes were meant, or no limit at all
        c.server.limits.max_buffered_answer_bytes = super::MAX_BUFFERED_ANSWER_BYTES + 1;
        assert!(refused(&c).contains("server.limits.maxBufferedAnswerBytes"));
        c.server.limits.max_buffered_answer_bytes = u64::MAX;
        assert!(refused(&c).contains("server.limits.maxBufferedAnswerBytes"));
    }
}
