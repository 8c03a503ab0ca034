//! `api migrate`: the schema brought up to date as a step of its own, before a release's
//! processes roll (a Kubernetes Job, compose's one-shot `migrate` service). It needs the
//! database settings alone, prints each migration it applies, and exits non-zero with
//! the reason when it cannot.

use clap::Parser;
use shared::config::DatabaseConfig;
use std::process::ExitCode;

/// The settings of `api migrate`: the database's, nothing else (no `JWT_SECRET`).
#[derive(Debug, Parser)]
#[command(
    name = "api migrate",
    about = "Applies the pending migrations of this release and exits"
)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,
}

/// Whether the command line asks for `api migrate`.
pub fn requested() -> bool {
    std::env::args().nth(1).as_deref() == Some("migrate")
}

/// Runs `api migrate` (the arguments after `migrate`) and says how it ended.
pub async fn run() -> ExitCode {
    let args = MigrateArgs::parse_from(
        std::iter::once("api migrate".to_owned()).chain(std::env::args().skip(2)),
    );
    shared::tls::install_crypto_provider();
    let applied = match shared::db::pool(&args.database) {
        Ok(pool) => shared::db::migrate(&pool)
            .await
            .map_err(anyhow::Error::from),
        Err(err) => {
            Err(anyhow::Error::new(err).context("DATABASE_URL is not a valid PostgreSQL URL"))
        }
    };
    match applied {
        Ok(applied) => {
            for migration in &applied {
                println!("applied {migration}");
            }
            println!(
                "migrate: the schema is up to date ({} applied now)",
                applied.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("migrate: failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
