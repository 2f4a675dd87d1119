//! `palisade-audit <base-url>`: audits a running service and exits non-zero
//! when a protection is missing. Exit 0: every check passed (or was
//! skipped); 1: a check failed; 2: usage error.
//!
//! It sends requests to the given URL only (plain HTTP; audit the listener
//! behind the TLS terminator) and never follows redirects.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use palisade_testkit::audit::{Audit, Check, Login, Profile, Target};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    Api,
    Html,
}

/// Audits a running HTTP service for missing security protections.
///
/// Checks: security-headers, no-banner, headers-on-errors, request-id,
/// problem-json, cors, body-limit, slowloris, unsafe-methods,
/// oversized-headers, file-traversal, jwt-forgeries, login-enumeration,
/// login-lockout, login-rate-limit, rate-limit. Those needing options that
/// were not given are skipped. Exit status: 0 passed, 1 a check failed, 2
/// usage.
#[derive(Debug, Parser)]
#[command(name = "palisade-audit", version)]
#[allow(clippy::struct_excessive_bools)]
struct Args {
    /// The service's base URL: http://host:port[/prefix] (https is not
    /// supported: audit the plain-HTTP listener behind the TLS terminator).
    base_url: String,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,

    /// Run only these checks (comma-separated names).
    #[arg(long, value_delimiter = ',', value_parser = parse_check)]
    only: Vec<Check>,

    /// Leave these checks out (comma-separated names).
    #[arg(long, value_delimiter = ',', value_parser = parse_check)]
    skip: Vec<Check>,

    /// Which security headers to expect.
    #[arg(long, value_enum, default_value = "api")]
    profile: ProfileArg,

    /// A route that takes a request body, for body-limit (default: the login
    /// route, else /).
    #[arg(long)]
    body_path: Option<String>,

    /// Seconds a trickled request head may stay open (slowloris).
    #[arg(long, default_value_t = 15)]
    head_timeout: u64,

    /// Requests rate-limit sends at most before expecting a 429.
    #[arg(long, default_value_t = 200)]
    flood: u32,

    /// The login route (POST), e.g. /auth/login.
    #[arg(long)]
    login: Option<String>,

    /// The login body, with {user} and {password} placeholders.
    #[arg(long, default_value = r#"{"email":"{user}","password":"{password}"}"#)]
    login_body: String,

    /// A known account's user name (the lockout check leaves it locked).
    #[arg(long, requires = "login")]
    user: Option<String>,

    /// That account's password; prefer the `PALISADE_AUDIT_PASSWORD` variable (command
    /// lines are visible to other users of the machine).
    #[arg(long, env = "PALISADE_AUDIT_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// A register route (POST, same body template): the audit registers a
    /// fresh account instead of using --user.
    #[arg(long, requires = "login")]
    register: Option<String>,

    /// JSON pointer of the access token in the login answer.
    #[arg(long, default_value = "/access_token")]
    token_pointer: String,

    /// Consecutive failures after which the service locks an account.
    #[arg(long, default_value_t = 5)]
    lockout_after: u32,

    /// Login attempts per client before the service answers 429.
    #[arg(long, default_value_t = 5)]
    login_limit: u32,

    /// The file route prefix (PUT/GET/DELETE PREFIX/PATH), e.g. /files.
    #[arg(long)]
    files: Option<String>,

    /// A route that needs a bearer token, e.g. /me.
    #[arg(long)]
    protected: Option<String>,

    /// A valid bearer token; prefer the `PALISADE_AUDIT_TOKEN` variable (otherwise one is
    /// obtained through the login).
    #[arg(long, env = "PALISADE_AUDIT_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// A file holding the service's HMAC signing key, for exactly signed
    /// expired and not-yet-valid forgeries.
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,
}

fn parse_check(s: &str) -> Result<Check, String> {
    s.parse()
}

fn usage(message: &str) -> ExitCode {
    eprintln!("palisade-audit: {message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let target = match Target::url(&args.base_url) {
        Ok(t) => t,
        Err(e) => return usage(&e.to_string()),
    };
    if args.user.is_some() && args.password.is_none() {
        return usage("--user needs --password (or PALISADE_AUDIT_PASSWORD)");
    }
    let mut audit = Audit::new(target)
        .profile(match args.profile {
            ProfileArg::Api => Profile::Api,
            ProfileArg::Html => Profile::Html,
        })
        .head_timeout(Duration::from_secs(args.head_timeout))
        .flood(args.flood);
    if let Some(path) = &args.body_path {
        audit = audit.body_path(path);
    }
    if let Some(path) = &args.login {
        let mut login = Login::new(path, &args.login_body)
            .token_pointer(&args.token_pointer)
            .lockout_after(args.lockout_after)
            .limit(args.login_limit);
        if let (Some(user), Some(password)) = (&args.user, &args.password) {
            login = login.account(user, password);
        }
        if let Some(register) = &args.register {
            login = login.register(register);
        }
        audit = audit.login(login);
    }
    if let Some(files) = &args.files {
        audit = audit.files(files);
    }
    if let Some(path) = &args.protected {
        audit = audit.protected(path);
    }
    if let Some(token) = &args.token {
        audit = audit.token(token);
    }
    if let Some(path) = &args.jwt_secret_file {
        match std::fs::read(path) {
            Ok(key) => audit = audit.jwt_secret(key.trim_ascii()),
            Err(e) => {
                return usage(&format!(
                    "cannot read --jwt-secret-file {}: {e}",
                    path.display()
                ));
            }
        }
    }
    if !args.only.is_empty() {
        for check in &args.only {
            if let Some(missing) = audit.missing_option(*check) {
                return usage(&format!("--only {check} needs {missing}"));
            }
        }
        audit = audit.only(&args.only);
    }
    audit = audit.skip(&args.skip);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade-audit: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(audit.run());
    if args.json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
