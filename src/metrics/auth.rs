//! The sign-in funnel, the rate limits in front of it, and API-key checks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Argon2 at the default cost takes tens of milliseconds; more means a busy
/// machine or a costlier hash.
const ARGON2_BUCKETS: [f64; 10] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

/// Why a sign-in link or code was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyFailure {
    /// Not even shaped like a token or a six-digit code.
    Malformed,
    /// A code that matches none of the address's live codes.
    WrongCode,
    /// No live link (unknown, expired, used, or its code out of attempts), or
    /// the address may no longer sign in.
    NotRedeemable,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    /// Sign-in attempts from one client address.
    Ip,
    /// Links requested for one address.
    Email,
    /// Failed API-key attempts from one client address.
    ApiKeyFailures,
}

/// How a presented API key was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyCheck {
    /// Verified before and remembered: no Argon2.
    Remembered,
    /// Hashed with Argon2 now.
    Hashed,
}

impl VerifyFailure {
    fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongCode => "wrong_code",
            Self::NotRedeemable => "not_redeemable",
        }
    }
}

impl RateLimit {
    fn label(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Email => "email",
            Self::ApiKeyFailures => "api_key_failures",
        }
    }
}

impl ApiKeyCheck {
    fn label(self) -> &'static str {
        match self {
            Self::Remembered => "remembered",
            Self::Hashed => "hashed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    eligible: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    method: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    check: &'static str,
    valid: bool,
}

pub struct AuthMetrics {
    links: Family<LinkLabels, Counter>,
    sign_ins: Family<MethodLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    refresh_reuse: Counter,
    rate_limited: Family<LimitLabels, Counter>,
    keys: Family<KeyLabels, Counter>,
    argon2_seconds: Histogram,
}

impl Default for AuthMetrics {
    fn default() -> Self {
        Self {
            links: Family::default(),
            sign_ins: Family::default(),
            failures: Family::default(),
            refresh_reuse: Counter::default(),
            rate_limited: Family::default(),
            keys: Family::default(),
            argon2_seconds: Histogram::new(ARGON2_BUCKETS),
        }
    }
}

impl AuthMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "sign_in_links_requested",
            "Sign-in links requested and not rate limited, by whether the address may sign in (mail is sent only if so)",
            self.links.clone(),
        );
        registry.register(
            "sign_ins",
            "Sessions opened, by how: the mailed link or the mailed code",
            self.sign_ins.clone(),
        );
        registry.register(
            "sign_in_failures",
            "Links and codes refused at verification, by method and reason",
            self.failures.clone(),
        );
        registry.register(
            "refresh_token_reuse",
            "Rotated refresh tokens presented again; each revoked its session",
            self.refresh_reuse.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by the limit",
            self.rate_limited.clone(),
        );
        registry.register(
            "api_key_verifications",
            "API keys checked, by whether the secret was remembered or hashed now, and the outcome",
            self.keys.clone(),
        );
        registry.register(
            "api_key_argon2_seconds",
            "Time spent hashing one presented API key with Argon2",
            self.argon2_seconds.clone(),
        );
    }

    pub fn link_requested(&self, eligible: bool) {
        self.links.get_or_create(&LinkLabels { eligible }).inc();
    }

    /// `method` is `link` or `code`.
    pub fn signed_in(&self, method: &'static str) {
        self.sign_ins.get_or_create(&MethodLabels { method }).inc();
    }

    pub fn verify_failed(&self, method: &'static str, reason: VerifyFailure) {
        self.failures
            .get_or_create(&FailureLabels {
                method,
                reason: reason.label(),
            })
            .inc();
    }

    pub fn refresh_reused(&self) {
        self.refresh_reuse.inc();
    }

    pub fn rate_limited(&self, limit: RateLimit) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: limit.label(),
            })
            .inc();
    }

    pub fn api_key_checked(&self, check: ApiKeyCheck, valid: bool) {
        self.keys
            .get_or_create(&KeyLabels {
                check: check.label(),
                valid,
            })
            .inc();
    }

    pub fn argon2(&self, seconds: f64) {
        self.argon2_seconds.observe(seconds);
    }
}
