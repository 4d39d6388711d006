//! Operator commands that work on the configured database directly.

use std::path::Path;

use crate::admin::{Actor, AdminService, KeyRequest};
use crate::app::{StartError, open_store};
use crate::auth::{
    KeyActor, KeyInfo, KeyPolicy, SigningKeyError, SigningKeys, load_or_create_secret,
};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::Email;
use crate::import::{ImportContext, ImportReport, import_csv};
use crate::store::MemberFilter;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Import(#[from] crate::import::ImportError),
    #[error("{0}")]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    SigningKeys(#[from] SigningKeyError),
    #[error("{0}")]
    Invalid(String),
}

/// `gatehouse import FILE.csv`: the same import as the API, with a progress bar.
pub async fn import(
    settings: &Settings,
    file: &Path,
    batch_id: Option<String>,
    dry_run: bool,
) -> Result<ImportReport, CliError> {
    let store = open_store(settings).await?;
    let open = |source| CliError::Open {
        path: file.display().to_string(),
        source,
    };
    let handle = std::fs::File::open(file).map_err(open)?;
    let size = handle.metadata().map_err(open)?.len();
    let bar = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let context = ImportContext {
        batch_id: batch_id.unwrap_or_else(|| format!("batch-{}", uuid::Uuid::now_v7())),
        source: "cli",
        actor: Some("cli".into()),
        ip: None,
        dry_run,
        now: Clock::system().now(),
    };
    let report = import_csv(&store, bar.wrap_read(handle), context).await?;
    bar.finish_and_clear();
    Ok(report)
}

/// `gatehouse apikey create EMAIL --name NAME`: prints the key once.
pub async fn create_api_key(
    settings: &Settings,
    email: &str,
    name: &str,
) -> Result<String, CliError> {
    let email = Email::parse(email).map_err(|e| CliError::Invalid(e.to_string()))?;
    let store = open_store(settings).await?;
    let clock = Clock::system();
    let filter = MemberFilter {
        q: Some(email.to_string()),
        limit: 100,
        ..Default::default()
    };
    let member = store
        .list_members(&filter, clock.now())
        .await?
        .into_iter()
        .find(|m| m.email == email)
        .ok_or_else(|| CliError::Invalid(format!("{email} is not a member")))?;
    let request = KeyRequest {
        name: name.to_owned(),
        expires_in_days: None,
        roles: None,
    };
    let (_, issued) = // No worker runs in this process; the server's polls the outbox.
    AdminService::new(store, clock, Default::default())
        .issue_key(&Actor::cli(), &member.id, &request)
        .await?;
    Ok(issued.key.expose())
}

/// The signing keys of the configured database, as the server uses them.
async fn signing_keys(settings: &Settings) -> Result<SigningKeys, CliError> {
    settings.ensure_data_dir().map_err(StartError::from)?;
    let secret = load_or_create_secret(settings.jwt_secret.as_ref(), &settings.data_dir)
        .map_err(StartError::Secret)?;
    let store = open_store(settings).await?;
    let policy = KeyPolicy::from_settings(settings);
    Ok(SigningKeys::open(store, Clock::system(), &secret, policy).await?)
}

/// `gatehouse signing-keys list`: one line per key, oldest first.
pub async fn list_signing_keys(settings: &Settings) -> Result<String, CliError> {
    let keys = signing_keys(settings).await?.list().await?;
    let mut out = String::from(
        "KID                                          ALG    STATE     ACTIVATES             RETIRES               REVOKED\n",
    );
    for key in &keys {
        out.push_str(&render_key(key));
    }
    Ok(out)
}

/// `gatehouse signing-keys rotate`: publishes a new key; prints it.
pub async fn rotate_signing_key(settings: &Settings) -> Result<String, CliError> {
    let key = signing_keys(settings)
        .await?
        .rotate(&KeyActor::new("cli", None))
        .await?;
    Ok(format!(
        "published {} ({}); it signs from {}\n",
        key.kid,
        key.alg,
        time(Some(key.activates_at))
    ))
}

/// `gatehouse signing-keys revoke KID`: its tokens are refused at once.
pub async fn revoke_signing_key(settings: &Settings, kid: &str) -> Result<String, CliError> {
    signing_keys(settings)
        .await?
        .revoke(&KeyActor::new("cli", None), kid)
        .await?;
    Ok(format!(
        "revoked {kid}: its tokens are refused and it left the JWKS\n"
    ))
}

fn render_key(key: &KeyInfo) -> String {
    format!(
        "{:<44} {:<6} {:<9} {:<21} {:<21} {}\n",
        key.kid,
        key.alg,
        key.state.as_str(),
        time(Some(key.activates_at)),
        time(key.retires_at),
        time(key.revoked_at)
    )
}

fn time(secs: Option<i64>) -> String {
    secs.and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The report as the CLI prints it.
pub fn render_report(report: &ImportReport) -> String {
    let mut out = format!(
        "batch {}{}\nrows {}  added {}  updated {}  unchanged {}  duplicates {}  invalid {}\n",
        report.batch_id,
        if report.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
        report.rows,
        report.added,
        report.updated,
        report.unchanged,
        report.duplicates,
        report.invalid_total
    );
    for row in &report.invalid {
        out.push_str(&format!(
            "  line {}: {:?}: {}\n",
            row.line, row.value, row.reason
        ));
    }
    out
}
