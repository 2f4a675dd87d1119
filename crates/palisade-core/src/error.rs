//! The error every fallible Palisade builder returns.
//!
//! # Example
//!
//! ```
//! use palisade_core::ConfigError;
//!
//! let err = ConfigError::new("cors.origins", "`*` cannot be combined with credentials");
//! assert_eq!(err.setting(), "cors.origins");
//! assert_eq!(
//!     err.to_string(),
//!     "invalid setting `cors.origins`: `*` cannot be combined with credentials"
//! );
//! ```

use std::borrow::Cow;
use std::fmt;

/// A configuration mistake found while building a layer or a resolver.
///
/// The message names the setting and the rule it breaks. It never contains the
/// rejected value: configuration often carries secrets, and errors end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: Cow<'static, str>,
    rule: Cow<'static, str>,
}

impl ConfigError {
    /// A new error for `setting` (a dotted name such as `headers.hsts`) breaking `rule`.
    pub fn new(setting: impl Into<Cow<'static, str>>, rule: impl Into<Cow<'static, str>>) -> Self {
        Self {
            setting: setting.into(),
            rule: rule.into(),
        }
    }

    /// The setting that is wrong.
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// The rule the setting breaks.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting `{}`: {}", self.setting, self.rule)
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("setting", &self.setting)
            .field("rule", &self.rule)
            .finish()
    }
}

impl std::error::Error for ConfigError {}
