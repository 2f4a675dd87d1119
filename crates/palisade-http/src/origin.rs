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

    /// How a request's `Origin` header differs from a configured origin.
    #[derive(Debug, Clone, Copy)]
    enum Mutation {
        /// What a browser sends for the configured origin (lower-case, no
        /// default port), with its letters' case changed at random.
        Same,
        /// Another scheme: `http` for `https` and the other way round.
        Scheme,
        /// One more label in front: a subdomain.
        Subdomain,
        /// The configured host as a prefix of another name.
        LongerHost,
        /// The last character of the host changed.
        HostChar,
        /// Another port, or a port added or removed.
        Port,
        /// The default port written out (browsers never send it).
        DefaultPort,
        /// A trailing dot after the host.
        TrailingDot,
        /// Userinfo before the host.
        Userinfo,
        /// A path.
        Path,
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            4 => Just(Mutation::Same),
            1 => Just(Mutation::Scheme),
            1 => Just(Mutation::Subdomain),
            1 => Just(Mutation::LongerHost),
            1 => Just(Mutation::HostChar),
            1 => Just(Mutation::Port),
            1 => Just(Mutation::DefaultPort),
            1 => Just(Mutation::TrailingDot),
            1 => Just(Mutation::Userinfo),
            1 => Just(Mutation::Path),
        ]
    }

    /// A configured origin, as parts: scheme, host (DNS name, IPv4 or
    /// bracketed IPv6), port.
    fn origin_parts() -> impl Strategy<Value = (&'static str, String, Option<u16>)> {
        let host = prop_oneof![
            4 => proptest::collection::vec("[a-z][a-z0-9-]{0,6}[a-z0-9]", 1..4)
                .prop_map(|labels| labels.join(".")),
            1 => any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("{a}.{b}.{c}.{d}")),
            1 => Just("[::1]".to_owned()),
        ];
        let port = prop_oneof![
            2 => Just(None),
            1 => Just(Some(80)),
            1 => Just(Some(443)),
            2 => (1u16..=65535).prop_map(Some),
        ];
        (
            prop::sample::select(vec!["https", "http", "capacitor"]),
            host,
            port,
        )
    }

    fn default_port(scheme: &str) -> Option<u16> {
        match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        }
    }

    /// `scheme://host[:port]`, the port left out when it is the scheme's default.
    fn serialise(scheme: &str, host: &str, port: Option<u16>) -> String {
        match port.filter(|p| Some(*p) != default_port(scheme)) {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        }
    }

    /// Upper-cases the letters picked by the bits of `mask`.
    fn recase(s: &str, mask: u64) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn never_panics(s in "[ -~]{0,40}") {
            if let Ok(o) = Origin::parse_config(&s, "t") {
                prop_assert_eq!(o.as_str().matches("://").count(), 1);
            }
        }

        /// A configured origin (any case, default port written or not)
        /// matches exactly the header a browser sends for it, in any case;
        /// a header differing in scheme, host, port, a trailing dot,
        /// userinfo or a path never does. The expected answer comes from how
        /// the header was built, not from parsing it.
        #[test]
        fn matches_exactly_the_browser_form_of_the_configured_origin(
            (scheme, host, port) in origin_parts(),
            written_port in any::<bool>(),
            config_case in any::<u64>(),
            header_case in any::<u64>(),
            mutation in mutation(),
            other_port in 1u16..=65535,
        ) {
            // The configured text: the default port may be written out.
            let configured = match port {
                None if written_port => match default_port(scheme) {
                    Some(d) => format!("{scheme}://{host}:{d}"),
                    None => format!("{scheme}://{host}"),
                },
                _ => serialise(scheme, &host, port),
            };
            let origin = Origin::parse_config(&recase(&configured, config_case), "t").unwrap();
            let browser = serialise(scheme, &host, port);
            prop_assert_eq!(origin.as_str(), browser.as_str());

            let effective = port.or(default_port(scheme));
            let authority = |h: &str| match port.filter(|p| Some(*p) != default_port(scheme)) {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            };
            let header = match mutation {
                Mutation::Same => browser.clone(),
                Mutation::Scheme => {
                    let other = if scheme == "https" { "http" } else { "https" };
                    serialise(other, &host, effective)
                }
                Mutation::Subdomain => format!("{scheme}://{}", authority(&format!("www.{host}"))),
                Mutation::LongerHost => format!("{scheme}://{}", authority(&format!("{host}x"))),
                Mutation::HostChar => {
                    let mut h = host.clone();
                    let last = h.pop().unwrap();
                    h.push(if last == 'q' { 'z' } else { 'q' });
                    format!("{scheme}://{}", authority(&h))
                }
                Mutation::Port => {
                    let taken = [effective, default_port(scheme)];
                    let new = [other_port, 1, 2, 3]
                        .into_iter()
                        .find(|p| !taken.contains(&Some(*p)))
                        .unwrap();
                    match port {
                        // An explicit port that is not the default, removed.
                        Some(p) if Some(p) != default_port(scheme) && new % 2 == 0 => {
                            format!("{scheme}://{host}")
                        }
                        _ => format!("{scheme}://{host}:{new}"),
                    }
                }
                Mutation::DefaultPort => match effective {
                    Some(p) => format!("{scheme}://{host}:{p}"),
                    None => format!("{scheme}://{host}:0"),
                },
                Mutation::TrailingDot => format!("{scheme}://{}", authority(&format!("{host}."))),
                Mutation::Userinfo => format!("{scheme}://user@{}", authority(&host)),
                Mutation::Path => format!("{browser}/"),
            };
            let expected = matches!(mutation, Mutation::Same)
                // Writing a non-default port out is the browser form itself.
                || (matches!(mutation, Mutation::DefaultPort)
                    && port.is_some_and(|p| Some(p) != default_port(scheme)));
            let header = recase(&header, header_case);
            prop_assert_eq!(origin.matches(&header), expected, "{} against {}", header, browser);
        }
    }
}
