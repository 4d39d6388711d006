//! `gatehouse check`: the effective settings, where each came from, and
//! whether the database and the mail transport answer — before a deploy, or
//! when something is wrong.
//!
//! Secrets are never printed: a secret setting shows only whether it is set,
//! and a URL only without its password.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{KEYS, MailTransportKind, Settings, Source};

/// How long each probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The parts `check` tries, by the name its report gives them.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the database failed: {0}")]
    Database(String),
    #[error("the mail transport failed: {0}")]
    Mail(String),
    #[error("the database failed: {0}; and the mail transport failed: {1}")]
    Both(String, String),
}

/// What `check` prints, and the first failure (after trying everything).
pub struct CheckReport {
    pub text: String,
    pub outcome: Result<(), CheckError>,
}

/// Prints the settings, then tries the database and the mail transport.
pub async fn check(settings: &Settings, sources: &BTreeMap<&'static str, Source>) -> CheckReport {
    let mut text = String::from("settings (name, effective value, source):\n");
    let rows: Vec<(&str, String)> = KEYS
        .iter()
        .map(|&key| (key, effective_value(settings, key)))
        .collect();
    let key_width = KEYS.iter().map(|k| k.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for (key, value) in rows {
        let source = sources.get(key).copied().unwrap_or(Source::Default);
        text.push_str(&format!(
            "  {key:<key_width$}  {value:<value_width$}  {source}\n"
        ));
    }
    let database = probe_database(settings).await;
    let mail = probe_mail(settings).await;
    for (part, result) in [("database", &database), ("mail", &mail)] {
        match result {
            Ok(what) => text.push_str(&format!("{part}: ok ({what})\n")),
            Err(why) => text.push_str(&format!("{part}: FAILED: {why}\n")),
        }
    }
    let outcome = match (database, mail) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(db), Ok(_)) => Err(CheckError::Database(db)),
        (Ok(_), Err(mail)) => Err(CheckError::Mail(mail)),
        (Err(db), Err(mail)) => Err(CheckError::Both(db, mail)),
    };
    CheckReport { text, outcome }
}

/// Opens the store (no migration) and runs a query.
async fn probe_database(settings: &Settings) -> Result<String, String> {
    let url = &settings.database_url;
    let kind = if url.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let attempt = async {
        if !url.is_postgres() {
            settings.ensure_data_dir().map_err(|e| e.to_string())?;
        }
        let store = crate::store::connect(url, 1)
            .await
            .map_err(|e| e.to_string())?;
        store.ping().await.map_err(|e| e.to_string())?;
        Ok(format!("{kind}: connected and queried"))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(result) => {
            result.map_err(|e: String| format!("{kind} at {}: {e}", redact_url(url.expose())))
        }
        Err(_) => Err(format!(
            "{kind} at {} did not answer within {PROBE_TIMEOUT:?}",
            redact_url(url.expose())
        )),
    }
}

/// Builds the transport as `serve` would and lets it try itself.
async fn probe_mail(settings: &Settings) -> Result<String, String> {
    let transport = crate::mail::transport_from_settings(settings).map_err(|e| e.to_string())?;
    match tokio::time::timeout(PROBE_TIMEOUT, transport.probe()).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer within {PROBE_TIMEOUT:?}",
            transport.name()
        )),
    }
}

const REDACTED: &str = "[redacted]";

/// `key`'s effective value as printed; secrets show only whether they are set.
fn effective_value(s: &Settings, key: &str) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "(unset)".into());
    let secret = |set: bool| if set { REDACTED } else { "(unset)" }.to_owned();
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items.join(",")
        }
    };
    let mail = &s.mail;
    match key {
        "bind" => s.bind.to_string(),
        "public_url" => opt(s.public_url.clone()),
        "data_dir" => s.data_dir.display().to_string(),
        "database_url" => redact_url(s.database_url.expose()),
        "db_max_connections" => s.db_max_connections.to_string(),
        "mail_transport" => match mail.transport {
            MailTransportKind::File => "file",
            MailTransportKind::Smtp => "smtp",
            MailTransportKind::Postmark => "postmark",
            MailTransportKind::Resend => "resend",
        }
        .to_owned(),
        "smtp_url" => opt(mail.smtp_url.as_ref().map(|u| redact_url(u.expose()))),
        "mail_from" => mail.from.to_string(),
        "mail_api_key" => secret(mail.api_key.is_some()),
        "mail_api_url" => opt(mail.api_url.clone()),
        "templates_dir" => opt(mail.templates_dir.as_ref().map(|d| d.display().to_string())),
        "org_name" => mail.org_name.clone(),
        "support_email" => opt(mail.support_email.as_ref().map(|e| e.to_string())),
        "mail_timeout_secs" => mail.timeout.as_secs().to_string(),
        "mail_retry_base_ms" => mail.retry_base.as_millis().to_string(),
        "mail_max_attempts" => mail.max_attempts.to_string(),
        "jwt_secret" => match &s.jwt_secret {
            Some(_) => REDACTED.to_owned(),
            None => "(unset: generated once into the data directory)".to_owned(),
        },
        "jwt_issuer" => opt(s.jwt_issuer.clone()),
        "jwt_audience" => s.jwt_audience.clone(),
        "access_ttl_secs" => s.access_ttl.as_secs().to_string(),
        "refresh_ttl_days" => (s.refresh_ttl.as_secs() / 86_400).to_string(),
        "link_ttl_secs" => s.link_ttl.as_secs().to_string(),
        "bootstrap_admins" => list(s.bootstrap_admins.iter().map(|e| e.to_string()).collect()),
        "allowed_redirects" => list(
            s.allowed_redirects
                .iter()
                .map(|o| o.ascii_serialization())
                .collect(),
        ),
        "public_eligibility" => s.public_eligibility.to_string(),
        "rate_limit_window_secs" => s.rate_limits.window.as_secs().to_string(),
        "rate_limit_per_email" => s.rate_limits.per_email.to_string(),
        "rate_limit_per_ip" => s.rate_limits.per_ip.to_string(),
        "trusted_proxies" => list(s.trusted_proxies.iter().map(|ip| ip.to_string()).collect()),
        "max_body_bytes" => s.max_body_bytes.to_string(),
        "max_import_bytes" => s.max_import_bytes.to_string(),
        "jwt_alg" => match s.jwt_alg {
            Some(alg) => alg.to_string(),
            None => "(unset: ES256 for a new installation, else the current key's)".to_owned(),
        },
        "jwks_max_age_secs" => s.jwks_max_age.as_secs().to_string(),
        "signing_key_publish_delay_secs" => s.signing_key_publish_delay.as_secs().to_string(),
        "signing_key_rotate_days" => opt(s.signing_key_rotate_days.map(|d| d.to_string())),
        "console_idle_minutes" => (s.console_idle.as_secs() / 60).to_string(),
        "webhooks_allow_insecure" => s.webhooks.allow_insecure.to_string(),
        "webhooks_timeout_secs" => s.webhooks.timeout.as_secs().to_string(),
        "webhooks_retry_base_ms" => s.webhooks.retry_base.as_millis().to_string(),
        "webhooks_max_attempts" => s.webhooks.max_attempts.to_string(),
        "webhooks_disable_after_hours" => (s.webhooks.disable_after.as_secs() / 3600).to_string(),
        "audit_retention_days" => match s.audit_retention_days {
            Some(days) => days.to_string(),
            None => "(unset: the audit log is kept forever)".to_owned(),
        },
        "log" => s.log.clone(),
        "log_format" => format!("{:?}", s.log_format).to_ascii_lowercase(),
        // A setting this report does not know yet: not printed, in case it is secret.
        _ => "(not shown)".to_owned(),
    }
}

/// `url` with any password replaced.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Unparseable: it might still hold a password.
        Err(_) => REDACTED.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_shown_and_no_secret_is() {
        let raw: BTreeMap<String, String> = [
            ("jwt_secret", "0123456789abcdef0123456789abcdef-very-secret"),
            ("database_url", "postgres://app:hunter2@db/gatehouse"),
            ("mail_transport", "smtp"),
            ("smtp_url", "smtp://mailer:mail-pass@smtp.example.org:587"),
            ("mail_api_key", "pm-key-123"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Settings::from_map(&raw).unwrap();
        let mut shown = String::new();
        for key in KEYS {
            let value = effective_value(&settings, key);
            assert_ne!(value, "(not shown)", "{key} has no rendering");
            shown.push_str(&value);
        }
        for secret in ["very-secret", "hunter2", "mail-pass", "pm-key-123"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("postgres://app:redacted@db/gatehouse"));
    }
}
