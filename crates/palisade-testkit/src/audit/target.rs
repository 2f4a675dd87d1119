//! What the audit talks to: a running service at a base URL, or a tower
//! service in process.

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt as _;

use crate::http::{Request, Response};

/// How long one exchange may take before the audit gives up on it.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response body the in-process target collects.
const MAX_BODY: usize = 4 << 20;

type Call = dyn Fn(http::Request<Body>) -> Pin<Box<dyn Future<Output = Result<Response, String>> + Send>>
    + Send
    + Sync;

/// A service under audit.
///
/// - [`Target::url`]: a running service at `http://host:port[/prefix]`,
///   reached over plain HTTP/1.1 with the crate's raw client. The host is
///   resolved once; every request goes to that address and nowhere else, and
///   redirects are reported, never followed. `https` is not supported: audit
///   the plain-HTTP listener behind the TLS terminator (inside the compose
///   network, or the pod's port).
/// - [`Target::service`]: any `tower::Service<http::Request<axum::body::Body>>`
///   (an axum `Router`, a layered or boxed stack) called in process, no
///   network; a service error (instead of a response) is reported as a
///   finding. Each
///   request carries axum's `ConnectInfo` with the peer `127.0.0.1:40000`, so
///   client-IP rules see a loopback client. Checks about the connection
///   itself (slow heads, the wire-level body limit) need a URL and are
///   skipped.
#[derive(Clone)]
pub struct Target {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Url {
        addr: SocketAddr,
        authority: String,
        prefix: String,
    },
    Service(Arc<Call>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why a base URL cannot be audited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl Target {
    /// A running service at `base` (`http://host:port` with an optional path
    /// prefix every route is appended to).
    pub fn url(base: &str) -> Result<Self, UrlError> {
        let err = |m: &str| UrlError(format!("`{base}`: {m}"));
        if base.starts_with("https://") {
            return Err(err(
                "https is not supported: audit the plain-HTTP listener behind the TLS \
                 terminator (e.g. the service's port inside the compose network)",
            ));
        }
        let Some(rest) = base.strip_prefix("http://") else {
            return Err(err("expected http://host:port[/prefix]"));
        };
        if rest.contains(['?', '#', '@']) {
            return Err(err("a base URL has no query, fragment or user info"));
        }
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err(err("no host"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| err(&format!("cannot resolve the host: {e}")))?
            .next()
            .ok_or_else(|| err("the host resolves to no address"))?;
        Ok(Self {
            inner: Inner::Url {
                addr,
                authority: authority.to_owned(),
                prefix: prefix.trim_end_matches('/').to_owned(),
            },
        })
    }

    /// A tower service called in process.
    pub fn service<S, B>(service: S) -> Self
    where
        S: tower_service::Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Error: fmt::Display,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A mutex only to clone from, so services that are not `Sync`
        // (boxed stacks) can be audited too.
        let service = Mutex::new(service);
        let call = move |mut req: http::Request<Body>| {
            let mut svc = service
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(SocketAddr::from((
                    [127, 0, 0, 1],
                    40_000,
                ))));
            let fut: Pin<Box<dyn Future<Output = Result<Response, String>> + Send>> =
                Box::pin(async move {
                    std::future::poll_fn(|cx| svc.poll_ready(cx))
                        .await
                        .map_err(|e| format!("the service is not ready: {e}"))?;
                    let res = svc.call(req).await.map_err(|e| {
                        format!("the service returned an error instead of a response: {e}")
                    })?;
                    let (parts, body) = res.into_parts();
                    let body = http_body_util::Limited::new(body, MAX_BODY)
                        .collect()
                        .await
                        .map_err(|e| format!("reading the response body failed: {e}"))?
                        .to_bytes();
                    Ok(Response {
                        status: parts.status.as_u16(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.as_str().to_owned(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                        body: body.to_vec(),
                    })
                });
            fut
        };
        Self {
            inner: Inner::Service(Arc::new(call)),
        }
    }

    /// `url` for a base URL, `in-process service` otherwise.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Url {
                authority, prefix, ..
            } => format!("http://{authority}{prefix}"),
            Inner::Service(_) => "in-process service".to_owned(),
        }
    }

    /// The address and `Host` of a URL target (for checks on the connection
    /// itself); `None` in process.
    pub(crate) fn wire(&self) -> Option<(SocketAddr, String)> {
        match &self.inner {
            Inner::Url {
                addr, authority, ..
            } => Some((*addr, authority.clone())),
            Inner::Service(_) => None,
        }
    }

    /// `path` under the target's prefix.
    pub(crate) fn path(&self, path: &str) -> String {
        match &self.inner {
            Inner::Url { prefix, .. } => format!("{prefix}{path}"),
            Inner::Service(_) => path.to_owned(),
        }
    }

    /// Sends one request (its target already prefixed by [`Self::path`]).
    pub(crate) async fn send(&self, req: Request) -> Result<Response, String> {
        match &self.inner {
            Inner::Url {
                addr, authority, ..
            } => {
                let addr = *addr;
                let req = req.header("host", authority);
                tokio::task::spawn_blocking(move || req.send(addr))
                    .await
                    .map_err(|e| format!("the client thread failed: {e}"))?
                    .map_err(|e| describe_io(&e))
            }
            Inner::Service(call) => {
                let req = to_http(&req, Body::from(req.body_bytes().to_vec()))?;
                self.call_service(call, req).await
            }
        }
    }

    /// Sends an `http::Request` with any body to an in-process target.
    pub(crate) async fn send_http(
        &self,
        req: http::Request<Body>,
    ) -> Option<Result<Response, String>> {
        match &self.inner {
            Inner::Service(call) => Some(self.call_service(call, req).await),
            Inner::Url { .. } => None,
        }
    }

    #[allow(clippy::unused_self)] // a method so both send paths read alike
    async fn call_service(
        &self,
        call: &Arc<Call>,
        req: http::Request<Body>,
    ) -> Result<Response, String> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, call(req))
            .await
            .map_err(|_| format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs()))?
    }
}

/// A raw-client error as a sentence.
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::UnexpectedEof => "the server closed the connection without an answer".to_owned(),
        K::ConnectionReset => "the server reset the connection".to_owned(),
        K::WouldBlock | K::TimedOut => {
            format!("no answer within {} s", crate::http::READ_TIMEOUT.as_secs())
        }
        K::ConnectionRefused => {
            "connection refused (is the service running at that address?)".to_owned()
        }
        _ => e.to_string(),
    }
}

/// The testkit request as an `http::Request`; a request the `http` crate
/// cannot express (a method or header it refuses) is an error.
pub(crate) fn to_http(req: &Request, body: Body) -> Result<http::Request<Body>, String> {
    let mut builder = http::Request::builder()
        .method(
            http::Method::from_bytes(req.method().as_bytes())
                .map_err(|_| "invalid method in process")?,
        )
        .uri(req.target());
    let mut has_host = false;
    for (name, value) in req.headers() {
        has_host |= name.eq_ignore_ascii_case("host");
        builder = builder.header(
            name.as_str(),
            http::HeaderValue::from_bytes(value.as_bytes())
                .map_err(|_| format!("the header `{name}` cannot be expressed in process"))?,
        );
    }
    if !has_host {
        builder = builder.header("host", "localhost");
    }
    builder
        .body(body)
        .map_err(|e| format!("cannot build the request in process: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_http_with_an_optional_prefix() {
        let t = Target::url("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.wire().unwrap().0, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path("/health"), "/health");
        let t = Target::url("http://127.0.0.1:9/api/").unwrap();
        assert_eq!(t.path("/health"), "/api/health");
        assert_eq!(t.describe(), "http://127.0.0.1:9/api");
        assert_eq!(
            Target::url("http://[::1]")
                .unwrap()
                .wire()
                .unwrap()
                .0
                .port(),
            80
        );
        for (bad, why) in [
            ("https://127.0.0.1:1", "https is not supported"),
            ("127.0.0.1:1", "expected http://"),
            (
                "http://user:pw@127.0.0.1:1",
                "no query, fragment or user info",
            ),
            ("http://127.0.0.1:1/?x=1", "no query"),
            ("http:///x", "no host"),
        ] {
            let err = Target::url(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn requests_the_http_crate_refuses_are_errors_in_process() {
        let req = Request::get("/").header("x-a", "a\rb");
        assert!(
            to_http(&req, Body::empty())
                .unwrap_err()
                .contains("in process")
        );
        let req = to_http(&Request::get("/x").header("x-a", "1"), Body::empty()).unwrap();
        assert_eq!(req.headers()["host"], "localhost");
        assert_eq!(req.headers()["x-a"], "1");
    }
}
