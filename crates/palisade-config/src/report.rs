//! Every configuration problem at once, one line each, naming the setting
//! and the rule and never the value.
//!
//! # Example
//!
//! ```
//! use palisade_config::Report;
//!
//! let mut report = Report::default();
//! report.problem("APP_JWT_SECRET", "too short: needs at least 32 bytes (RFC 7518 §3.2)");
//! report.problem("APP_CORS_ORIGINS", "`*` is not allowed in prod");
//! assert_eq!(report.problems().len(), 2);
//! assert!(report.to_string().lines().any(|l| l.starts_with("  APP_CORS_ORIGINS: ")));
//! ```

use std::fmt;

use validator::{ValidationErrors, ValidationErrorsKind};

/// The exit status of a process refusing its configuration (sysexits.h `EX_CONFIG`).
pub const EX_CONFIG: u8 = 78;

/// One problem: a setting and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting, as the operator writes it (e.g. `APP_JWT_SECRET`).
    pub setting: String,
    /// The rule it breaks.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.rule)
    }
}

/// The problems and warnings found in a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Report {
    /// Records a problem: the configuration cannot be used.
    pub fn problem(&mut self, setting: impl Into<String>, rule: impl Into<String>) {
        self.problems.push(Problem {
            setting: setting.into(),
            rule: rule.into(),
        });
    }

    /// Records a warning: the configuration is usable, the operator should know.
    pub fn warn(&mut self, setting: impl Into<String>, rule: impl Into<String>) {
        self.warnings.push(Problem {
            setting: setting.into(),
            rule: rule.into(),
        });
    }

    /// The problems.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The warnings.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// Whether there is no problem (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Appends another report's problems and warnings.
    pub fn merge(&mut self, other: Report) {
        self.problems.extend(other.problems);
        self.warnings.extend(other.warnings);
    }

    /// Records `validator` errors, naming each field as `<prefix>_<FIELD>`.
    /// The rule is the error's message, or its code.
    pub fn validation(&mut self, prefix: &str, errors: &ValidationErrors) {
        fn walk(report: &mut Report, path: &str, errors: &ValidationErrors) {
            let mut fields: Vec<_> = errors.errors().iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            for (field, kind) in fields {
                let path = format!("{path}_{}", field.to_ascii_uppercase());
                match kind {
                    ValidationErrorsKind::Field(list) => {
                        for e in list {
                            let rule = e
                                .message
                                .as_ref()
                                .map_or_else(|| e.code.to_string(), ToString::to_string);
                            report.problem(path.clone(), rule);
                        }
                    }
                    ValidationErrorsKind::Struct(inner) => walk(report, &path, inner),
                    ValidationErrorsKind::List(items) => {
                        for (i, inner) in items {
                            walk(report, &format!("{path}_{i}"), inner);
                        }
                    }
                }
            }
        }
        walk(self, prefix.trim_end_matches('_'), errors);
    }

    /// `Ok(value)` when there is no problem, the report otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_ok() { Ok(value) } else { Err(self) }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "configuration refused: {} problem(s)",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Prints `report` to stderr and exits with status 78 (`EX_CONFIG`).
pub fn exit_with(report: &Report) -> ! {
    eprint!("{report}");
    std::process::exit(i32::from(EX_CONFIG))
}
