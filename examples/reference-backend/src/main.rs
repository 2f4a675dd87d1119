//! `reference-backend`: starts the service on the settings in `APP_*`.
//!
//! `reference-backend --check-config` validates the configuration and exits
//! 0 (usable) or 78 (refused, every problem on stderr) without starting.
//!
//! `reference-backend --health-check` calls `/health` on the configured
//! listen address and exits 0 (healthy) or 1 (anything else, the reason on
//! stderr): a container `HEALTHCHECK` that needs no shell or curl.

use std::process::ExitCode;

use palisade::telemetry::LogConfig;
use palisade_config::EX_CONFIG;
use reference_backend::health_check::{HEALTH_CHECK_TIMEOUT, health_check};
use reference_backend::{Settings, run};

/// sysexits.h `EX_USAGE`: the command line is wrong.
const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let (check_only, probe) = match std::env::args().nth(1).as_deref() {
        None => (false, false),
        Some("--check-config") => (true, false),
        Some("--health-check") => (false, true),
        Some(_) => {
            eprintln!("usage: reference-backend [--check-config | --health-check]");
            return ExitCode::from(EX_USAGE);
        }
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        // Docker reads any status but 0 and 1 as "reserved".
        Err(report) if probe => {
            eprint!("unhealthy: {report}");
            return ExitCode::FAILURE;
        }
        Err(report) => {
            eprint!("{report}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if probe {
        return match health_check(settings.listen, HEALTH_CHECK_TIMEOUT).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if check_only {
        for w in settings.warnings.warnings() {
            eprintln!("warning: {w}");
        }
        println!("configuration ok (profile {})", settings.profile);
        return ExitCode::SUCCESS;
    }
    let logs = match palisade::telemetry::init(&LogConfig {
        format: settings.log_format,
        ..LogConfig::default()
    }) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    for w in settings.warnings.warnings() {
        tracing::warn!(setting = %w.setting, "{}", w.rule);
    }
    let code = match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "reference-backend failed");
            ExitCode::FAILURE
        }
    };
    let dropped = logs.dropped_lines();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "log lines were dropped because stdout could not keep up"
        );
    }
    // Dropping the guard flushes the queued lines before the process exits.
    drop(logs);
    code
}
