//! `reference-backend`: starts the service on the settings in `APP_*`.

use std::process::ExitCode;

use reference_backend::{Settings, run};
use tracing_subscriber::EnvFilter;

/// sysexits.h `EX_CONFIG`: the configuration is unusable.
const EX_CONFIG: u8 = 78;

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
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(report) => {
            eprint!("{report}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logging();
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "reference-backend failed");
            ExitCode::FAILURE
        }
    }
}
