//! Typed settings: built-in defaults, then an optional TOML file, then `GATEHOUSE_*`
//! environment variables, each layer overriding the one before.
//!
//! The TOML keys are the variable names without the `GATEHOUSE_` prefix, in lower
//! case (`public_url = "https://id.example.org"`), so one table in the README
//! documents both. Unknown keys are an error: a typo must not silently fall back
//! to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::{Email, SigningAlg};

const ENV_PREFIX: &str = "GATEHOUSE_";

/// Every setting's name, in the order the README lists them.
pub const KEYS: &[&str] = &[
    "bind",
    "public_url",
    "data_dir",
    "database_url",
    "db_max_connections",
    "mail_transport",
    "smtp_url",
    "mail_from",
    "mail_api_key",
    "mail_api_url",
    "templates_dir",
    "org_name",
    "support_email",
    "mail_timeout_secs",
    "mail_retry_base_ms",
    "mail_max_attempts",
    "jwt_secret",
    "jwt_issuer",
    "jwt_audience",
    "jwt_alg",
    "jwks_max_age_secs",
    "signing_key_publish_delay_secs",
    "signing_key_rotate_days",
    "access_ttl_secs",
    "refresh_ttl_days",
    "link_ttl_secs",
    "bootstrap_admins",
    "allowed_redirects",
    "public_eligibility",
    "rate_limit_window_secs",
    "rate_limit_per_email",
    "rate_limit_per_ip",
    "trusted_proxies",
    "max_body_bytes",
    "max_import_bytes",
    "console_idle_minutes",
    "webhooks_allow_insecure",
    "webhooks_timeout_secs",
    "webhooks_retry_base_ms",
    "webhooks_max_attempts",
    "webhooks_disable_after_hours",
    "audit_retention_days",
    "log",
    "log_format",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("unknown setting `{0}` in the config file")]
    UnknownKey(String),
    #[error("setting `{key}` has an invalid value: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A database URL whose `Debug` hides any password in it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres:") || self.0.starts_with("postgresql:")
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("redacted"));
                write!(f, "DatabaseUrl({url})")
            }
            _ => write!(f, "DatabaseUrl({})", self.0),
        }
    }
}

/// How mail leaves the building.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailTransportKind {
    /// Writes each mail as an `.eml` file under `<data dir>/mail`.
    File,
    Smtp,
    Postmark,
    Resend,
}

#[derive(Clone, Debug)]
pub struct MailSettings {
    pub transport: MailTransportKind,
    pub smtp_url: Option<Secret>,
    /// The `From` mailbox; may carry a display name (`Club <noreply@club.org>`).
    pub from: lettre::message::Mailbox,
    pub api_key: Option<Secret>,
    pub api_url: Option<String>,
    pub templates_dir: Option<PathBuf>,
    pub org_name: String,
    pub support_email: Option<Email>,
    /// How long one delivery attempt (an SMTP conversation for one message, or
    /// one provider HTTP request) may take before it counts as a transient
    /// failure (default 15 s). Short, so a hung server costs a retry rather
    /// than a stuck worker.
    pub timeout: Duration,
    /// The delay before the first retry (default 2 s); each further retry waits
    /// twice as long, capped at 15 minutes, with jitter. Tests shorten it.
    pub retry_base: Duration,
    /// Attempts before a mail that keeps failing transiently is marked `failed`
    /// (default 12, about 50 minutes of retrying with the default base).
    pub max_attempts: u32,
}

/// How webhooks are delivered.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Allows http and internal addresses: for local receivers and tests, never production.
    pub allow_insecure: bool,
    /// The most one attempt may take.
    pub timeout: Duration,
    /// The first retry's delay; each next one doubles (capped at 4 h), with jitter.
    pub retry_base: Duration,
    /// Attempts before a delivery is `failed`.
    pub max_attempts: u32,
    /// An endpoint whose every attempt has failed for this long is disabled.
    pub disable_after: Duration,
}

/// How log lines are written: text for people (the default), or JSON, one
/// object per line, for a log pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Environment,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::File => "file",
            Self::Environment => "environment",
        })
    }
}

#[derive(Clone, Debug)]
pub struct RateLimitSettings {
    pub window: Duration,
    pub per_email: u32,
    pub per_ip: u32,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: SocketAddr,
    /// Base of every link in mail, without a trailing slash; `None` means
    /// `http://<the address actually bound>`. Never taken from a request's Host header.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub db_max_connections: u32,
    pub mail: MailSettings,
    pub jwt_secret: Option<Secret>,
    /// The `iss` claim; `None` means the public URL.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: String,
    /// The algorithm new tokens are signed with; `None` keeps an existing
    /// installation's and gives a new one ES256 (see `auth/signing_keys.rs`).
    pub jwt_alg: Option<SigningAlg>,
    /// How long verifiers may cache `/.well-known/jwks.json` (default 300 s).
    pub jwks_max_age: Duration,
    /// How long a rotated-in key is published before it signs (default 600 s);
    /// longer than `jwks_max_age`, so every cache has it before it is needed.
    pub signing_key_publish_delay: Duration,
    /// Rotate the signing key automatically every so many days; `None`: never.
    pub signing_key_rotate_days: Option<u32>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub link_ttl: Duration,
    pub bootstrap_admins: Vec<Email>,
    /// Origins (`scheme://host[:port]`) that `redirect_to` may point at.
    pub allowed_redirects: Vec<url::Origin>,
    pub public_eligibility: bool,
    pub rate_limits: RateLimitSettings,
    pub trusted_proxies: Vec<IpAddr>,
    pub max_body_bytes: usize,
    pub max_import_bytes: usize,
    /// An admin console session ends after this long without a request.
    pub console_idle: Duration,
    pub webhooks: WebhookSettings,
    /// Audit rows older than this many days are deleted by housekeeping;
    /// `None` (the default) keeps the log forever.
    pub audit_retention_days: Option<u32>,
    pub log: String,
    pub log_format: LogFormat,
}

impl Settings {
    /// Loads defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_sources(file).map(|(settings, _)| settings)
    }

    /// [`Settings::load`], and where each setting's value came from.
    pub fn load_with_sources(
        file: Option<&Path>,
    ) -> Result<(Self, BTreeMap<&'static str, Source>), ConfigError> {
        let mut raw = BTreeMap::new();
        if let Some(path) = file {
            raw.extend(read_toml(path)?);
        }
        let from_file = raw.clone();
        let env: BTreeMap<String, String> = std::env::vars()
            .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase(), v)))
            .collect();
        raw.extend(env.clone());
        let settings = Self::from_map(&raw)?;
        // As in `from_map`, a blank value counts as absent.
        let given = |map: &BTreeMap<String, String>, key: &str| {
            map.get(key).is_some_and(|v| !v.trim().is_empty())
        };
        let sources = KEYS
            .iter()
            .map(|&key| {
                let source = if given(&env, key) {
                    Source::Environment
                } else if given(&from_file, key) {
                    Source::File
                } else {
                    Source::Default
                };
                (key, source)
            })
            .collect();
        Ok((settings, sources))
    }

    /// Builds settings from raw `key -> value` pairs; keys absent take their default.
    /// Unknown keys are ignored here (environment variables of other tools share the
    /// prefix space); the TOML reader rejects them.
    pub fn from_map(raw: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let get = |key: &'static str| raw.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());

        let bind: SocketAddr = parse_or(get("bind"), "bind", "127.0.0.1:8080".parse().ok())?;
        let public_url = get("public_url").map(parse_public_url).transpose()?;
        let data_dir = PathBuf::from(get("data_dir").unwrap_or("./data"));
        let database_url =
            DatabaseUrl::new(get("database_url").map(str::to_owned).unwrap_or_else(|| {
                format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("gatehouse.db").display()
                )
            }));

        let transport = match get("mail_transport").unwrap_or("file") {
            "file" => MailTransportKind::File,
            "smtp" => MailTransportKind::Smtp,
            "postmark" => MailTransportKind::Postmark,
            "resend" => MailTransportKind::Resend,
            other => {
                return Err(invalid(
                    "mail_transport",
                    format!("`{other}` is not one of file, smtp, postmark, resend"),
                ));
            }
        };
        let smtp_url = get("smtp_url").map(Secret::new);
        if transport == MailTransportKind::Smtp && smtp_url.is_none() {
            return Err(invalid(
                "smtp_url",
                "required when mail_transport is smtp".into(),
            ));
        }
        let api_key = get("mail_api_key").map(Secret::new);
        if matches!(
            transport,
            MailTransportKind::Postmark | MailTransportKind::Resend
        ) && api_key.is_none()
        {
            return Err(invalid(
                "mail_api_key",
                "required for an HTTP mail provider".into(),
            ));
        }
        let mail = MailSettings {
            transport,
            smtp_url,
            from: get("mail_from")
                .unwrap_or("gatehouse@localhost")
                .parse()
                .map_err(|e| invalid("mail_from", format!("not a mailbox: {e}")))?,
            api_key,
            api_url: get("mail_api_url").map(|u| u.trim_end_matches('/').to_owned()),
            templates_dir: get("templates_dir").map(PathBuf::from),
            org_name: get("org_name").unwrap_or("gatehouse").to_owned(),
            support_email: get("support_email")
                .map(|e| parse_email(e, "support_email"))
                .transpose()?,
            timeout: secs(
                parse_or::<u64>(get("mail_timeout_secs"), "mail_timeout_secs", Some(15))?.max(1),
            ),
            retry_base: Duration::from_millis(parse_or(
                get("mail_retry_base_ms"),
                "mail_retry_base_ms",
                Some(2000),
            )?),
            max_attempts: parse_or::<u32>(get("mail_max_attempts"), "mail_max_attempts", Some(12))?
                .max(1),
        };

        let jwt_secret = get("jwt_secret").map(Secret::new);
        if let Some(secret) = &jwt_secret
            && secret.expose().len() < 32
        {
            return Err(invalid("jwt_secret", "must be at least 32 bytes".into()));
        }

        let jwt_alg = get("jwt_alg")
            .map(|alg| alg.parse::<SigningAlg>())
            .transpose()
            .map_err(|e| invalid("jwt_alg", e.to_string()))?;
        let jwks_max_age = secs(parse_or(
            get("jwks_max_age_secs"),
            "jwks_max_age_secs",
            Some(300),
        )?);
        let signing_key_publish_delay = secs(parse_or(
            get("signing_key_publish_delay_secs"),
            "signing_key_publish_delay_secs",
            Some(600),
        )?);
        if signing_key_publish_delay <= jwks_max_age {
            return Err(invalid(
                "signing_key_publish_delay_secs",
                format!(
                    "must be longer than jwks_max_age_secs ({}), or verifiers could meet a key before their cached JWKS has it",
                    jwks_max_age.as_secs()
                ),
            ));
        }
        let signing_key_rotate_days = parse_or::<u32>(
            get("signing_key_rotate_days"),
            "signing_key_rotate_days",
            Some(0),
        )?;

        let bootstrap_admins = split_list(get("bootstrap_admins"))
            .map(|e| parse_email(e, "bootstrap_admins"))
            .collect::<Result<_, _>>()?;
        let allowed_redirects = split_list(get("allowed_redirects"))
            .map(parse_origin)
            .collect::<Result<_, _>>()?;
        let trusted_proxies = split_list(get("trusted_proxies"))
            .map(|ip| {
                ip.parse::<IpAddr>()
                    .map_err(|_| invalid("trusted_proxies", format!("`{ip}` is not an IP address")))
            })
            .collect::<Result<_, _>>()?;

        Ok(Self {
            bind,
            jwt_issuer: get("jwt_issuer").map(str::to_owned),
            public_url,
            data_dir,
            database_url,
            db_max_connections: parse_or(
                get("db_max_connections"),
                "db_max_connections",
                Some(10),
            )?,
            mail,
            jwt_secret,
            jwt_audience: get("jwt_audience").unwrap_or("gatehouse").to_owned(),
            jwt_alg,
            jwks_max_age,
            signing_key_publish_delay,
            signing_key_rotate_days: (signing_key_rotate_days > 0)
                .then_some(signing_key_rotate_days),
            access_ttl: secs(parse_or(
                get("access_ttl_secs"),
                "access_ttl_secs",
                Some(900),
            )?),
            refresh_ttl: secs(
                parse_or::<u64>(get("refresh_ttl_days"), "refresh_ttl_days", Some(30))? * 86_400,
            ),
            link_ttl: secs(parse_or(get("link_ttl_secs"), "link_ttl_secs", Some(600))?),
            bootstrap_admins,
            allowed_redirects,
            public_eligibility: parse_bool(get("public_eligibility"), "public_eligibility")?,
            rate_limits: RateLimitSettings {
                window: secs(parse_or(
                    get("rate_limit_window_secs"),
                    "rate_limit_window_secs",
                    Some(900),
                )?),
                per_email: parse_or(get("rate_limit_per_email"), "rate_limit_per_email", Some(5))?,
                per_ip: parse_or(get("rate_limit_per_ip"), "rate_limit_per_ip", Some(100))?,
            },
            trusted_proxies,
            max_body_bytes: parse_or(get("max_body_bytes"), "max_body_bytes", Some(64 * 1024))?,
            max_import_bytes: parse_or(
                get("max_import_bytes"),
                "max_import_bytes",
                Some(256 << 20),
            )?,
            console_idle: secs(
                parse_or::<u64>(
                    get("console_idle_minutes"),
                    "console_idle_minutes",
                    Some(30),
                )? * 60,
            ),
            webhooks: WebhookSettings {
                allow_insecure: parse_bool(
                    get("webhooks_allow_insecure"),
                    "webhooks_allow_insecure",
                )?,
                timeout: secs(
                    parse_or::<u64>(
                        get("webhooks_timeout_secs"),
                        "webhooks_timeout_secs",
                        Some(10),
                    )?
                    .max(1),
                ),
                retry_base: Duration::from_millis(parse_or(
                    get("webhooks_retry_base_ms"),
                    "webhooks_retry_base_ms",
                    Some(5000),
                )?),
                max_attempts: parse_or::<u32>(
                    get("webhooks_max_attempts"),
                    "webhooks_max_attempts",
                    Some(15),
                )?
                .max(1),
                disable_after: secs(
                    parse_or::<u64>(
                        get("webhooks_disable_after_hours"),
                        "webhooks_disable_after_hours",
                        Some(120),
                    )? * 3600,
                ),
            },
            audit_retention_days: get("audit_retention_days")
                .map(parse_audit_retention)
                .transpose()?,
            log: get("log").unwrap_or("info").to_owned(),
            log_format: match get("log_format").map(str::to_ascii_lowercase).as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(invalid(
                        "log_format",
                        format!("`{other}` is not one of text, json"),
                    ));
                }
            },
        })
    }

    /// Creates the data directory if it is missing.
    pub fn ensure_data_dir(&self) -> Result<(), ConfigError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| ConfigError::DataDir {
            path: self.data_dir.clone(),
            source,
        })
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.data_dir.join("mail")
    }
}

fn read_toml(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
        path: path.to_owned(),
        source,
    })?;
    table
        .into_iter()
        .map(|(key, value)| {
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey(key));
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Ok((key, text))
        })
        .collect()
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn parse_or<T: std::str::FromStr>(
    value: Option<&str>,
    key: &'static str,
    default: Option<T>,
) -> Result<T, ConfigError> {
    match value {
        Some(v) => v
            .parse()
            .map_err(|_| invalid(key, format!("cannot parse `{v}`"))),
        None => default.ok_or_else(|| invalid(key, "missing".into())),
    }
}

/// A number of days, at least one: 0 would delete each audit row as soon as
/// it is written, which is never what an operator wants from a log.
fn parse_audit_retention(value: &str) -> Result<u32, ConfigError> {
    match value.parse::<u32>() {
        Ok(0) => Err(invalid(
            "audit_retention_days",
            "0 would delete the audit log as it is written; leave it unset to keep the log forever"
                .into(),
        )),
        Ok(days) => Ok(days),
        Err(_) => Err(invalid(
            "audit_retention_days",
            format!("`{value}` is not a number of days"),
        )),
    }
}

fn parse_bool(value: Option<&str>, key: &'static str) -> Result<bool, ConfigError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some(other) => Err(invalid(key, format!("`{other}` is not true or false"))),
    }
}

fn parse_email(value: &str, key: &'static str) -> Result<Email, ConfigError> {
    Email::parse(value).map_err(|e| invalid(key, format!("`{value}`: {e}")))
}

fn split_list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn parse_public_url(value: &str) -> Result<String, ConfigError> {
    let url =
        url::Url::parse(value).map_err(|e| invalid("public_url", format!("`{value}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            "public_url",
            "must be an http(s) URL with a host".into(),
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_origin(value: &str) -> Result<url::Origin, ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| invalid("allowed_redirects", format!("`{value}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            "allowed_redirects",
            format!("`{value}` is not an http(s) origin"),
        ));
    }
    Ok(url.origin())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::from_map(&BTreeMap::new()).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_url, None);
        assert!(s.database_url.expose().starts_with("sqlite://"));
        assert_eq!(s.mail.transport, MailTransportKind::File);
        assert_eq!(s.link_ttl, Duration::from_secs(600));
        assert_eq!(s.rate_limits.per_email, 5);
        assert!(!s.public_eligibility);
        assert_eq!(
            s.audit_retention_days, None,
            "the audit log is kept forever"
        );
    }

    #[test]
    fn audit_retention_is_days_and_never_zero() {
        let s = Settings::from_map(&map(&[("audit_retention_days", "400")])).unwrap();
        assert_eq!(s.audit_retention_days, Some(400));
        for refused in ["0", "-1", "a year"] {
            let error = Settings::from_map(&map(&[("audit_retention_days", refused)])).unwrap_err();
            assert!(
                matches!(
                    error,
                    ConfigError::Invalid {
                        key: "audit_retention_days",
                        ..
                    }
                ),
                "{refused}: {error}"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Settings::from_map(&map(&[
            ("jwt_secret", "0123456789abcdef0123456789abcdef-very-secret"),
            ("database_url", "postgres://app:hunter2@db/gatehouse"),
        ]))
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("very-secret"));
        assert!(!debug.contains("hunter2"));
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn rejects_short_jwt_secret_and_bad_values() {
        assert!(Settings::from_map(&map(&[("jwt_secret", "short")])).is_err());
        assert!(Settings::from_map(&map(&[("bind", "nonsense")])).is_err());
        assert!(Settings::from_map(&map(&[("mail_transport", "pigeon")])).is_err());
        assert!(Settings::from_map(&map(&[("mail_transport", "smtp")])).is_err());
        assert!(Settings::from_map(&map(&[("allowed_redirects", "javascript:alert(1)")])).is_err());
        assert!(Settings::from_map(&map(&[("log_format", "xml")])).is_err());
        let json = Settings::from_map(&map(&[("log_format", "JSON")])).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(Settings::from_map(&map(&[("jwt_alg", "none")])).is_err());
        assert!(
            Settings::from_map(&map(&[("signing_key_publish_delay_secs", "300")])).is_err(),
            "a key must be published longer than the JWKS may be cached"
        );
    }

    #[test]
    fn signing_settings_have_safe_defaults() {
        let s = Settings::from_map(&BTreeMap::new()).unwrap();
        assert_eq!(s.jwt_alg, None);
        assert!(s.signing_key_publish_delay > s.jwks_max_age);
        assert_eq!(s.signing_key_rotate_days, None);
        let s = Settings::from_map(&map(&[
            ("jwt_alg", "EdDSA"),
            ("signing_key_rotate_days", "90"),
        ]))
        .unwrap();
        assert_eq!(s.jwt_alg, Some(SigningAlg::EdDsa));
        assert_eq!(s.signing_key_rotate_days, Some(90));
    }

    #[test]
    fn toml_file_is_overridden_by_environment_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, "bind = \"127.0.0.1:9000\"\nbootstrap_admins = [\"a@example.org\", \"b@example.org\"]\n").unwrap();
        let mut raw = read_toml(&path).unwrap();
        raw.insert("bind".into(), "127.0.0.1:9001".into());
        let s = Settings::from_map(&raw).unwrap();
        assert_eq!(s.bind.port(), 9001);
        assert_eq!(s.bootstrap_admins.len(), 2);

        std::fs::write(&path, "bnid = \"x\"\n").unwrap();
        assert!(matches!(read_toml(&path), Err(ConfigError::UnknownKey(k)) if k == "bnid"));
    }
}
