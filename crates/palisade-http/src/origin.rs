//! Web origins (`scheme://host[:port]`) as configured in allowlists.

use palisade_core::ConfigError;

/// A configured origin, serialised the way browsers send it: lower-case, no
/// default port, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin(String);

impl Origin {
    /// Parses a configured origin; `setting` names it in the error.
    pub(crate) fn parse_config(value: &str, setting: &'static str) -> Result<Self, ConfigError> {
        let err = |rule: &'static str| ConfigError::new(setting, rule);
        let value = value.trim().to_ascii_lowercase();
        if value == "*" || value == "null" {
            return Err(err(
                "an origin must be an exact scheme://host[:port], not `*` or `null`",
            ));
        }
        let (scheme, rest) = value
            .split_once("://")
            .ok_or_else(|| err("an origin must look like scheme://host[:port]"))?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(err("an origin's scheme is letters, digits, '+', '-', '.'"));
        }
        let (host, port) = if rest.starts_with('[') {
            let end = rest
                .find(']')
                .ok_or_else(|| err("an origin's IPv6 host needs its ']'"))?;
            let (host, after) = rest.split_at(end + 1);
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').unwrap_or("x"))),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if port.is_some_and(|p| {
            p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err()
        }) {
            return Err(err("an origin's port must be a number up to 65535"));
        }
        let host_ok = !host.is_empty()
            && if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                v6.parse::<std::net::Ipv6Addr>().is_ok()
            } else {
                host.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
                    && !host.starts_with('.')
                    && !host.ends_with('.')
            };
        if !host_ok {
            return Err(err(
                "an origin's host is a DNS name or an IP address, with no path, query, user or wildcard",
            ));
        }
        let default_port = match scheme {
            "https" => Some("443"),
            "http" => Some("80"),
            _ => None,
        };
        Ok(Self(match port {
            Some(p) if Some(p) != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        }))
    }

    /// Whether a request's `Origin` header value is this origin.
    pub(crate) fn matches(&self, header: &str) -> bool {
        self.0.eq_ignore_ascii_case(header)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises() {
        let cases = [
            ("https://App.Example.com", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://localhost:80", "http://localhost"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("http://[::1]", "http://[::1]"),
            ("capacitor://localhost", "capacitor://localhost"),
        ];
        for (input, want) in cases {
            assert_eq!(Origin::parse_config(input, "t").unwrap().as_str(), want);
        }
    }

    #[test]
    fn refuses() {
        for bad in [
            "*",
            "null",
            "",
            "example.com",
            "https://",
            "https://a.com/",
            "https://a.com/x",
            "https://*.a.com",
            "https://user@a.com",
            "https://a.com:99999",
            "https://a.com:",
            "https://a.com?x",
            "https://a.com#f",
            "1http://a.com",
            "https://.a.com",
            "https://[zz]",
        ] {
            assert!(Origin::parse_config(bad, "t").is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_accepted_origins_match_themselves(s in "[ -~]{0,40}") {
            if let Ok(o) = Origin::parse_config(&s, "t") {
                prop_assert!(o.matches(o.as_str()));
                prop_assert!(!o.as_str().contains('/') || o.as_str().matches('/').count() == 2);
            }
        }
    }
}
