//! What an audit found: per check, a verdict and findings a developer can
//! act on without reading the audit's source.

use std::fmt::{self, Write as _};

use serde_json::{Value, json};

use super::Check;

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every probe got a safe answer.
    Pass,
    /// At least one finding.
    Fail,
    /// Not run, and why (an option it needs was not given).
    Skipped(String),
}

/// One unsafe answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The request, as sent (tokens and passwords redacted).
    pub sent: String,
    /// The answer, as received (status, relevant headers, start of body).
    pub received: String,
    /// What a protected service answers instead.
    pub expected: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "    sent:     {}\n    received: {}\n    expected: {}\n    fix:      {}",
            self.sent, self.received, self.expected, self.fix
        )
    }
}

/// The result of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Which check.
    pub check: Check,
    /// Its verdict.
    pub outcome: Outcome,
    /// Why it failed (empty when it passed).
    pub findings: Vec<Finding>,
    /// What it observed along the way (requests sent, limits met).
    pub notes: Vec<String>,
}

impl CheckResult {
    pub(crate) fn skipped(check: Check, why: String) -> Self {
        Self {
            check,
            outcome: Outcome::Skipped(why),
            findings: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Whether it passed.
    pub fn is_pass(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    /// Whether it failed.
    pub fn is_fail(&self) -> bool {
        self.outcome == Outcome::Fail
    }

    /// Panics with every finding unless the check passed.
    ///
    /// # Panics
    ///
    /// When the check failed or was skipped.
    #[track_caller]
    #[allow(clippy::panic)] // an assertion: panicking is how it fails a test
    pub fn assert_passed(&self) {
        assert!(self.is_pass(), "{self}");
    }

    /// Machine-readable form.
    pub fn to_json(&self) -> Value {
        let (status, reason) = match &self.outcome {
            Outcome::Pass => ("pass", None),
            Outcome::Fail => ("fail", None),
            Outcome::Skipped(why) => ("skipped", Some(why.clone())),
        };
        json!({
            "check": self.check.name(),
            "description": self.check.description(),
            "status": status,
            "skipped_because": reason,
            "findings": self.findings.iter().map(|f| json!({
                "sent": f.sent, "received": f.received, "expected": f.expected, "fix": f.fix,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match &self.outcome {
            Outcome::Pass => "PASS".to_owned(),
            Outcome::Fail => "FAIL".to_owned(),
            Outcome::Skipped(why) => format!("SKIPPED ({why})"),
        };
        writeln!(
            f,
            "{}: {verdict} — {}",
            self.check.name(),
            self.check.description()
        )?;
        for (i, finding) in self.findings.iter().enumerate() {
            writeln!(f, "  finding {}:\n{finding}", i + 1)?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

/// Every check's result.
#[derive(Debug, Clone)]
pub struct Report {
    /// The audited target.
    pub target: String,
    /// In run order.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Whether no check failed (skipped checks do not fail an audit).
    pub fn passed(&self) -> bool {
        !self.results.iter().any(CheckResult::is_fail)
    }

    /// The result of `check`, if it was selected.
    pub fn result(&self, check: Check) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.check == check)
    }

    /// The names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| r.is_fail())
            .map(|r| r.check.name())
            .collect()
    }

    /// Panics with every failed check's findings unless the audit passed.
    ///
    /// # Panics
    ///
    /// When a check failed.
    #[track_caller]
    #[allow(clippy::panic)] // an assertion: panicking is how it fails a test
    pub fn assert_passed(&self) {
        if !self.passed() {
            let mut text = format!(
                "security audit of {} failed: {}\n",
                self.target,
                self.failed().join(", ")
            );
            for r in self.results.iter().filter(|r| r.is_fail()) {
                let _ = write!(text, "\n{r}");
            }
            panic!("{text}");
        }
    }

    /// A table of every check, then the findings of the failed ones.
    pub fn table(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|r| r.check.name().len())
            .max()
            .unwrap_or(5);
        let mut out = format!(
            "palisade-audit {}\n\n{:<width$}  RESULT   WHAT IT CHECKS\n",
            self.target, "CHECK"
        );
        for r in &self.results {
            let verdict = match r.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Skipped(_) => "skipped",
            };
            let _ = writeln!(
                out,
                "{:<width$}  {verdict:<7}  {}",
                r.check.name(),
                r.check.description()
            );
        }
        for r in &self.results {
            match &r.outcome {
                Outcome::Fail => {
                    let _ = write!(out, "\n{r}");
                }
                Outcome::Skipped(why) => {
                    let _ = write!(out, "\n{}: skipped, {why}\n", r.check.name());
                }
                Outcome::Pass => {}
            }
        }
        let failed = self.failed();
        let _ = write!(
            out,
            "\n{} checks: {} passed, {} failed, {} skipped\n",
            self.results.len(),
            self.results.iter().filter(|r| r.is_pass()).count(),
            failed.len(),
            self.results
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
                .count(),
        );
        out
    }

    /// Machine-readable form: `{"target", "passed", "checks": [...]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "passed": self.passed(),
            "checks": self.results.iter().map(CheckResult::to_json).collect::<Vec<_>>(),
        })
    }
}
