//! Cross-origin request protection for cookie-authenticated applications: the
//! token-free CSRF defence of modern browsers.
//!
//! Browsers tell the server where a request comes from: `Sec-Fetch-Site` (all
//! current browsers) and `Origin` (on every non-GET request). This layer refuses
//! state-changing requests (any method but GET, HEAD and OPTIONS) that a
//! browser marks as coming from another site, with a 403 problem:
//!
//! 1. a request whose `Origin` is on the trusted list passes;
//! 2. `Sec-Fetch-Site: same-origin` or `none` (typed by the user) passes, any
//!    other value (`cross-site`, `same-site`: a sibling sub-domain is not
//!    trusted either) is refused;
//! 3. without `Sec-Fetch-Site`, a request with no `Origin` passes (not a
//!    browser, or a very old one), one whose `Origin` is the service's own
//!    passes — its scheme is the service's (`https`, unless
//!    [`served_over_http`](CrossOriginProtection::served_over_http)) and its
//!    host equals `Host` — and any other is refused: `Origin: null`, another
//!    host, and the same host over the other scheme (`http://` is another
//!    origin, and for an `https` service a page an attacker on the network can
//!    forge).
//!
//! APIs authenticated by a bearer token do not need this (a browser cannot
//! attach the token cross-site); cookie sessions do.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::post};
//! use http::Request;
//! use palisade_http::cross_origin::CrossOriginProtection;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let app = Router::new()
//!     .route("/transfer", post(|| async { "done" }))
//!     .layer(CrossOriginProtection::new().build().unwrap());
//! let attack = Request::post("/transfer")
//!     .header("sec-fetch-site", "cross-site")
//!     .header("origin", "https://evil.example")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! assert_eq!(app.oneshot(attack).await.unwrap().status(), 403);
//! # });
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, Method, Request, Response};
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture;
use palisade_core::{ConfigError, ProblemDetails, ProblemType};
use tower_layer::Layer;
use tower_service::Service;

use crate::origin::Origin;

const SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");

/// Builder of [`CrossOriginProtectionLayer`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CrossOriginProtection {
    trusted: Vec<String>,
    plain_http: bool,
}

impl CrossOriginProtection {
    /// Protection with no trusted cross origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts requests from `origin` (`https://sso.example.com`): an identity
    /// provider posting back, a sibling front-end.
    pub fn trust_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted.push(origin.into());
        self
    }

    /// The service's own pages are served over plain `http` (local
    /// development): its own origin is `http://` and `Host`, not the default
    /// `https://` and `Host`. Only browsers without `Sec-Fetch-Site` are
    /// judged by it.
    pub fn served_over_http(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// Validates and builds the layer.
    pub fn build(self) -> Result<CrossOriginProtectionLayer, ConfigError> {
        let trusted = self
            .trusted
            .iter()
            .map(|o| Origin::parse_config(o, "cross_origin.trusted_origins"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CrossOriginProtectionLayer {
            trusted: trusted.into(),
            own_scheme: if self.plain_http { "http" } else { "https" },
        })
    }
}

/// Refuses cross-site state-changing requests. Build it with [`CrossOriginProtection`].
#[derive(Debug, Clone)]
pub struct CrossOriginProtectionLayer {
    trusted: Arc<[Origin]>,
    own_scheme: &'static str,
}

impl<S> Layer<S> for CrossOriginProtectionLayer {
    type Service = CrossOriginProtectionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CrossOriginProtectionService {
            inner,
            trusted: self.trusted.clone(),
            own_scheme: self.own_scheme,
        }
    }
}

/// The service of [`CrossOriginProtectionLayer`].
#[derive(Debug, Clone)]
pub struct CrossOriginProtectionService<S> {
    inner: S,
    trusted: Arc<[Origin]>,
    own_scheme: &'static str,
}

/// Why a request was refused (also the log field).
fn verdict(
    method: &Method,
    headers: &HeaderMap,
    trusted: &[Origin],
    own_scheme: &str,
) -> Result<(), &'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let origin = headers.get(ORIGIN);
    if origin
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| trusted.iter().any(|t| t.matches(o)))
    {
        return Ok(());
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            _ => Err("sec_fetch_site"),
        };
    }
    let Some(origin) = origin else {
        return Ok(());
    };
    let host = headers.get(HOST).map(http::HeaderValue::as_bytes);
    let own = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .is_some_and(|(scheme, origin_host)| {
            scheme.eq_ignore_ascii_case(own_scheme)
                && host.is_some_and(|h| origin_host.as_bytes().eq_ignore_ascii_case(h))
        });
    if own { Ok(()) } else { Err("origin") }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CrossOriginProtectionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match verdict(req.method(), req.headers(), &self.trusted, self.own_scheme) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(by) => {
                tracing::info!(reason = "cross_origin", decided_by = by, "request rejected");
                ResponseFuture::early(
                    ProblemDetails::new(ProblemType::CROSS_ORIGIN_DENIED)
                        .with_detail("state-changing requests from other sites are refused")
                        .with_request_id_from(req.extensions())
                        .rejection("cross_origin_denied"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check_with(
        layer: &CrossOriginProtectionLayer,
        method: &Method,
        headers: &[(&str, &str)],
    ) -> bool {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        verdict(method, &map, &layer.trusted, layer.own_scheme).is_ok()
    }

    fn check(method: &Method, headers: &[(&str, &str)]) -> bool {
        let layer = CrossOriginProtection::new()
            .trust_origin("https://sso.example.com")
            .build()
            .unwrap();
        check_with(&layer, method, headers)
    }

    /// Issue 18 item 15: without `Sec-Fetch-Site`, the same host over the
    /// other scheme is another origin, refused in both directions: `http://`
    /// against an `https` service (a downgrade: a network attacker can serve
    /// that page) and `https://` against a service served over `http`.
    #[test]
    fn the_same_host_over_the_other_scheme_is_another_origin() {
        fn from(origin: &str) -> [(&str, &str); 2] {
            [("host", "app.example.com"), ("origin", origin)]
        }
        let host = ("host", "app.example.com");
        let https = CrossOriginProtection::new().build().unwrap();
        let http = CrossOriginProtection::new()
            .served_over_http()
            .build()
            .unwrap();
        for (layer, own, other) in [
            (&https, "https://app.example.com", "http://app.example.com"),
            (&http, "http://app.example.com", "https://app.example.com"),
        ] {
            assert!(check_with(layer, &Method::POST, &from(own)), "{own}");
            assert!(
                check_with(layer, &Method::POST, &from(&own.to_ascii_uppercase())),
                "{own} in upper case"
            );
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                assert!(
                    !check_with(layer, &method, &from(other)),
                    "{method} {other}"
                );
            }
            assert!(
                !check_with(layer, &Method::POST, &from(&other.to_ascii_uppercase())),
                "{other} in upper case"
            );
            // Browsers that send Sec-Fetch-Site decide by it, scheme included.
            assert!(!check_with(
                layer,
                &Method::POST,
                &[host, ("origin", other), ("sec-fetch-site", "cross-site")]
            ));
        }
        // A trusted origin is exact, scheme included.
        let sso = CrossOriginProtection::new()
            .trust_origin("https://sso.example.com")
            .build()
            .unwrap();
        assert!(check_with(
            &sso,
            &Method::POST,
            &from("https://sso.example.com")
        ));
        assert!(!check_with(
            &sso,
            &Method::POST,
            &from("http://sso.example.com")
        ));
    }

    type Case<'a> = (Method, &'a [(&'a str, &'a str)], bool);

    #[test]
    fn decision_table() {
        use Method as M;
        let host = ("host", "app.example.com");
        let cases: &[Case<'_>] = &[
            (M::GET, &[("sec-fetch-site", "cross-site")], true),
            (M::HEAD, &[("sec-fetch-site", "cross-site")], true),
            (M::OPTIONS, &[("sec-fetch-site", "cross-site")], true),
            (M::POST, &[("sec-fetch-site", "same-origin")], true),
            (M::POST, &[("sec-fetch-site", "none")], true),
            (M::POST, &[("sec-fetch-site", "cross-site")], false),
            (M::POST, &[("sec-fetch-site", "same-site")], false),
            (M::DELETE, &[("sec-fetch-site", "cross-site")], false),
            (M::PATCH, &[("sec-fetch-site", "garbage")], false),
            (
                M::POST,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://sso.example.com"),
                ],
                true,
            ),
            (
                M::POST,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://SSO.example.com"),
                ],
                true,
            ),
            (
                M::POST,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://sso.example.com.evil.net"),
                ],
                false,
            ),
            (M::POST, &[], true),
            (M::POST, &[host], true),
            (
                M::POST,
                &[host, ("origin", "https://app.example.com")],
                true,
            ),
            (M::POST, &[host, ("origin", "https://evil.example")], false),
            (M::POST, &[host, ("origin", "null")], false),
            (M::POST, &[("origin", "https://evil.example")], false),
            (
                M::PUT,
                &[host, ("origin", "https://app.example.com.evil.net")],
                false,
            ),
        ];
        for (method, headers, ok) in cases {
            assert_eq!(check(method, headers), *ok, "{method} {headers:?}");
        }
    }

    #[test]
    fn bad_trusted_origin_is_an_error() {
        for bad in [
            "*",
            "null",
            "sso.example.com",
            "https://sso.example.com/path",
            "https://",
        ] {
            assert!(
                CrossOriginProtection::new()
                    .trust_origin(bad)
                    .build()
                    .is_err(),
                "{bad}"
            );
        }
    }
}
