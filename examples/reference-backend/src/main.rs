//! `reference-backend`: starts the service on the settings in `APP_*`.
//!
//! `reference-backend --check-config` validates the configuration and exits
//! 0 (usable) or 78 (refused, every problem on stderr) without starting.

use std::process::ExitCode;

use palisade_config::EX_CONFIG;
use reference_backend::{Settings, run};
use tracing_subscriber::EnvFilter;

/// sysexits.h `EX_USAGE`: the command line is wrong.
const EX_USAGE: u8 = 64;

fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let check_only = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check-config") => true,
        Some(_) => {
            eprintln!("usage: reference-backend [--check-config]");
            return ExitCode::from(EX_USAGE);
        }
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(report) => {
            eprint!("{report}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if check_only {
        for w in settings.warnings.warnings() {
            eprintln!("warning: {w}");
        }
        println!("configuration ok (profile {})", settings.profile);
        return ExitCode::SUCCESS;
    }
    init_logging();
    for w in settings.warnings.warnings() {
        tracing::warn!(setting = %w.setting, "{}", w.rule);
    }
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "reference-backend failed");
            ExitCode::FAILURE
        }
    }
}
