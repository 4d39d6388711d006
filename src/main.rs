use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::app::{Application, open_store};
use gatehouse::config::Settings;

/// gatehouse: passwordless, invite-only membership.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML file of settings (keys: the GATEHOUSE_* names without the prefix, lowercased).
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI spec (JSON) and exit.
    Openapi,
    /// Print the effective settings (secrets redacted) and where each came
    /// from, then try the database and the mail transport; exits non-zero,
    /// naming the part, if one fails.
    Check,
    /// Import a roster CSV into the allowlist, in one transaction.
    Import {
        file: PathBuf,
        /// Groups the upload so it can be listed and withdrawn; generated when absent.
        #[arg(long)]
        batch_id: Option<String>,
        /// Report what would happen without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage API keys.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Manage the keys that sign access tokens.
    SigningKeys {
        #[command(subcommand)]
        command: SigningKeysCommand,
    },
}

#[derive(Subcommand)]
enum SigningKeysCommand {
    /// List every key with its state and dates.
    List,
    /// Publish a new key now; it signs after the publish delay.
    Rotate,
    /// Withdraw a key at once: its tokens are refused and it leaves the JWKS.
    Revoke { kid: String },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Issue a key for a member (with all their roles) and print it once.
    Create {
        email: String,
        #[arg(long)]
        name: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (settings, sources) = match Settings::load_with_sources(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("gatehouse: {error}");
            return ExitCode::from(2);
        }
    };
    gatehouse::telemetry::init_logging(&settings.log, settings.log_format);
    let outcome = match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Import {
            file,
            batch_id,
            dry_run,
        } => gatehouse::cli::import(&settings, &file, batch_id, dry_run)
            .await
            .map(|report| print!("{}", gatehouse::cli::render_report(&report)))
            .map_err(Into::into),
        Command::Apikey {
            command: ApikeyCommand::Create { email, name },
        } => gatehouse::cli::create_api_key(&settings, &email, &name)
            .await
            .map(|key| println!("{key}"))
            .map_err(Into::into),
        Command::SigningKeys { command } => {
            let printed = match command {
                SigningKeysCommand::List => gatehouse::cli::list_signing_keys(&settings).await,
                SigningKeysCommand::Rotate => gatehouse::cli::rotate_signing_key(&settings).await,
                SigningKeysCommand::Revoke { kid } => {
                    gatehouse::cli::revoke_signing_key(&settings, &kid).await
                }
            };
            printed.map(|text| print!("{text}")).map_err(Into::into)
        }
        Command::Check => {
            let report = gatehouse::check::check(&settings, &sources).await;
            print!("{}", report.text);
            report.outcome.map_err(Into::into)
        }
        Command::Openapi => {
            let server = settings
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", settings.bind));
            println!("{}", gatehouse::api::spec(&server));
            Ok(())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("gatehouse: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

async fn migrate(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    settings.ensure_data_dir()?;
    open_store(&settings).await?;
    println!("migrations applied");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
