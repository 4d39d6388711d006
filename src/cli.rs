//! Operator commands that work on the configured database directly.

use std::path::Path;

use crate::admin::{Actor, AdminService, KeyRequest};
use crate::app::{StartError, open_store};
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
