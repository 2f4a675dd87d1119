//! `/metrics`: who may read it, on the main listener and on the optional
//! internal one (`APP_METRICS_LISTEN`).
//!
//! - With `APP_METRICS_TOKEN`: `Authorization: Bearer <token>` only, on
//!   either listener (compared in constant time).
//! - Without it, on the main listener: in `dev`, only when the TCP peer is a
//!   loopback address, is not a trusted proxy, and the request carries no
//!   `X-Forwarded-For`, `Forwarded` or `X-Real-IP` — a same-host reverse
//!   proxy makes every client look like 127.0.0.1, and must not open the
//!   metrics to them; in `prod`, never.
//! - Without it, on the internal listener: whoever can reach that address.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use ipnet::IpNet;
use palisade::core::client_ip::peer_of;
use palisade::core::{ProblemDetails, ProblemType};
use palisade::telemetry::Metrics;
use palisade_config::{ExposeSecret, SecretString};

/// Who may read the metrics without the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenless {
    /// A loopback peer that is not a trusted proxy and forwards nothing.
    LocalOnly,
    /// No one (the main listener in `prod`).
    Nobody,
    /// Anyone who can reach the listener (the internal metrics listener).
    Anyone,
}

/// The `/metrics` endpoint of one listener.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    metrics: Metrics,
    token: Option<Arc<SecretString>>,
    tokenless: Tokenless,
    trusted_proxies: Arc<[IpNet]>,
}

const FORWARDING: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

impl MetricsEndpoint {
    /// The endpoint serving `metrics` under these rules.
    pub fn new(
        metrics: Metrics,
        token: Option<SecretString>,
        tokenless: Tokenless,
        trusted_proxies: &[IpNet],
    ) -> Self {
        Self {
            metrics,
            token: token.map(Arc::new),
            tokenless,
            trusted_proxies: trusted_proxies.into(),
        }
    }

    /// A router serving `GET /metrics` alone.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(self)
    }

    fn allows(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        if let Some(token) = &self.token {
            return headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                .is_some_and(|given| constant_time_eq(given, token.expose_secret().as_bytes()));
        }
        match self.tokenless {
            Tokenless::Anyone => true,
            Tokenless::Nobody => false,
            Tokenless::LocalOnly => peer.is_some_and(|ip| {
                ip.is_loopback()
                    && !self.trusted_proxies.iter().any(|n| n.contains(&ip))
                    && !FORWARDING.iter().any(|h| headers.contains_key(*h))
            }),
        }
    }
}

/// Compares without an early exit on the first differing byte, so response
/// time does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Prometheus metrics, for the clients [`MetricsEndpoint`] allows.
async fn metrics(
    State(endpoint): State<MetricsEndpoint>,
    request: axum::extract::Request,
) -> Result<impl IntoResponse, ProblemDetails> {
    // The TCP peer, not the resolved client: the rule is about the socket.
    let peer = peer_of(request.extensions());
    if !endpoint.allows(peer, request.headers()) {
        return Err(ProblemDetails::new(ProblemType::FORBIDDEN)
            .with_detail("metrics are not served to this client"));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        endpoint.metrics.encode(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(token: Option<&str>, tokenless: Tokenless, trusted: &[&str]) -> MetricsEndpoint {
        let trusted: Vec<IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        MetricsEndpoint::new(
            Metrics::new(),
            token.map(SecretString::from),
            tokenless,
            &trusted,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn without_a_token_only_a_direct_loopback_peer_reads_them() {
        let e = endpoint(None, Tokenless::LocalOnly, &[]);
        assert!(e.allows(LOOPBACK, &HeaderMap::new()));
        assert!(e.allows(Some("::1".parse().unwrap()), &HeaderMap::new()));
        assert!(!e.allows(Some("192.0.2.1".parse().unwrap()), &HeaderMap::new()));
        assert!(!e.allows(None, &HeaderMap::new()));
        // A same-host proxy forwards a client: not loopback any more.
        for h in FORWARDING {
            assert!(!e.allows(LOOPBACK, &headers(&[(h, "198.51.100.7")])), "{h}");
        }
        // A loopback peer that is a trusted proxy is a proxy, not a local client.
        let e = endpoint(None, Tokenless::LocalOnly, &["127.0.0.0/8"]);
        assert!(!e.allows(LOOPBACK, &HeaderMap::new()));
    }

    #[test]
    fn with_a_token_only_the_token_counts_and_prod_needs_it() {
        let e = endpoint(Some("a-long-metrics-token"), Tokenless::LocalOnly, &[]);
        assert!(!e.allows(LOOPBACK, &HeaderMap::new()));
        assert!(!e.allows(
            LOOPBACK,
            &headers(&[("authorization", "Bearer a-long-metrics-tokeN")])
        ));
        let ok = headers(&[("authorization", "Bearer a-long-metrics-token")]);
        assert!(e.allows(Some("192.0.2.1".parse().unwrap()), &ok));
        assert!(!endpoint(None, Tokenless::Nobody, &[]).allows(LOOPBACK, &HeaderMap::new()));
        assert!(endpoint(None, Tokenless::Anyone, &[]).allows(None, &HeaderMap::new()));
    }
}
