//! An IP allowlist for webhook, admin and internal routes.
//!
//! The decision uses the [`ClientIp`] that
//! [`ClientIpLayer`](palisade_core::ClientIpLayer) resolved (so a spoofed
//! `X-Forwarded-For` from an untrusted peer cannot get in); put that layer
//! outside this one. A request without a resolved client IP is refused and
//! logged as a misconfiguration: an allowlist must fail closed.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::post};
//! use http::Request;
//! use palisade_core::{ClientIpLayer, ClientIpResolver, client_ip::PeerAddr};
//! use palisade_http::allowlist::IpAllowlist;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let app = Router::new()
//!     .route("/webhook", post(|| async { "ok" }))
//!     .layer(IpAllowlist::new(["192.0.2.0/24"]).build().unwrap())
//!     .layer(ClientIpLayer::new(ClientIpResolver::default()));
//! let from = |peer: &str| {
//!     let mut req = Request::post("/webhook").body(axum::body::Body::empty()).unwrap();
//!     req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
//!     req
//! };
//! assert_eq!(app.clone().oneshot(from("192.0.2.10:4000")).await.unwrap().status(), 200);
//! assert_eq!(app.oneshot(from("198.51.100.1:4000")).await.unwrap().status(), 403);
//! # });
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use ipnet::IpNet;
use palisade_core::body::ResponseBody;
use palisade_core::client_ip::parse_network;
use palisade_core::future::ResponseFuture;
use palisade_core::{ClientIp, ConfigError, ProblemDetails, ProblemType};
use tower_layer::Layer;
use tower_service::Service;

/// Builder of [`IpAllowlistLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct IpAllowlist {
    networks: Vec<String>,
    hide: bool,
}

impl IpAllowlist {
    /// Allows clients in `networks` (CIDRs or single addresses).
    pub fn new<I, S>(networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            networks: networks.into_iter().map(Into::into).collect(),
            hide: false,
        }
    }

    /// Answers refused clients 404 instead of 403, so the route's existence is not revealed.
    pub fn hide_route(mut self, hide: bool) -> Self {
        self.hide = hide;
        self
    }

    /// Validates and builds the layer. An empty list is an error: it would
    /// refuse everyone, which is never what a configuration means.
    pub fn build(self) -> Result<IpAllowlistLayer, ConfigError> {
        let networks = self
            .networks
            .iter()
            .map(|n| parse_network(n, "allowlist.networks"))
            .collect::<Result<Arc<[IpNet]>, _>>()?;
        if networks.is_empty() {
            return Err(ConfigError::new(
                "allowlist.networks",
                "list at least one network",
            ));
        }
        Ok(IpAllowlistLayer {
            networks,
            hide: self.hide,
        })
    }
}

/// Refuses clients outside the allowlist. Build it with [`IpAllowlist`].
#[derive(Debug, Clone)]
pub struct IpAllowlistLayer {
    networks: Arc<[IpNet]>,
    hide: bool,
}

impl<S> Layer<S> for IpAllowlistLayer {
    type Service = IpAllowlistService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IpAllowlistService {
            inner,
            networks: self.networks.clone(),
            hide: self.hide,
        }
    }
}

/// The service of [`IpAllowlistLayer`].
#[derive(Debug, Clone)]
pub struct IpAllowlistService<S> {
    inner: S,
    networks: Arc<[IpNet]>,
    hide: bool,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IpAllowlistService<S>
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
        let Some(client) = req.extensions().get::<ClientIp>() else {
            tracing::error!("IpAllowlistLayer without ClientIpLayer outside it: refusing");
            return ResponseFuture::early(
                ProblemDetails::new(ProblemType::INTERNAL)
                    .with_request_id_from(req.extensions())
                    .rejection("no_client_ip"),
            );
        };
        let ip = client.ip();
        if self.networks.iter().any(|n| n.contains(&ip)) {
            return ResponseFuture::inner(self.inner.call(req));
        }
        tracing::info!(reason = "ip_denied", client_ip = %ip, "request rejected");
        let problem = if self.hide {
            ProblemDetails::new(ProblemType::NOT_FOUND)
        } else {
            ProblemDetails::new(ProblemType::IP_DENIED)
        };
        ResponseFuture::early(
            problem
                .with_request_id_from(req.extensions())
                .rejection("ip_denied"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use palisade_core::client_ip::PeerAddr;
    use palisade_core::{ClientIpLayer, ClientIpResolver};
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt};

    async fn status(
        allow: IpAllowlist,
        resolver: ClientIpResolver,
        peer: &str,
        xff: Option<&str>,
    ) -> http::StatusCode {
        let svc = ServiceBuilder::new()
            .layer(ClientIpLayer::new(resolver))
            .layer(allow.build().unwrap())
            .service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("in")))
            });
        let mut req = Request::new(Full::default());
        req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        if let Some(xff) = xff {
            req.headers_mut()
                .insert("x-forwarded-for", xff.parse().unwrap());
        }
        svc.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn allows_and_refuses() {
        let allow = || IpAllowlist::new(["192.0.2.0/24", "2001:db8::/32"]);
        let direct = ClientIpResolver::default;
        assert_eq!(status(allow(), direct(), "192.0.2.9:1", None).await, 200);
        assert_eq!(
            status(allow(), direct(), "[2001:db8::5]:1", None).await,
            200
        );
        assert_eq!(
            status(allow(), direct(), "[::ffff:192.0.2.9]:1", None).await,
            200
        );
        assert_eq!(status(allow(), direct(), "198.51.100.1:1", None).await, 403);
        assert_eq!(
            status(allow().hide_route(true), direct(), "198.51.100.1:1", None).await,
            404
        );
        // A spoofed header from an untrusted peer does not get in.
        assert_eq!(
            status(allow(), direct(), "198.51.100.1:1", Some("192.0.2.9")).await,
            403
        );
        // Behind a trusted proxy, the forwarded client decides.
        let proxied = || {
            ClientIpResolver::builder()
                .trusted_proxy("10.0.0.0/8")
                .build()
                .unwrap()
        };
        assert_eq!(
            status(allow(), proxied(), "10.0.0.1:1", Some("192.0.2.9")).await,
            200
        );
        assert_eq!(
            status(
                allow(),
                proxied(),
                "10.0.0.1:1",
                Some("192.0.2.9, 198.51.100.1")
            )
            .await,
            403
        );
    }

    #[tokio::test]
    async fn without_client_ip_fails_closed() {
        let svc = ServiceBuilder::new()
            .layer(IpAllowlist::new(["0.0.0.0/0"]).build().unwrap())
            .service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("in")))
            });
        assert_eq!(
            svc.oneshot(Request::new(Full::default()))
                .await
                .unwrap()
                .status(),
            500
        );
    }

    #[test]
    fn configuration_errors() {
        assert!(IpAllowlist::new(Vec::<String>::new()).build().is_err());
        let err = IpAllowlist::new(["10.0.0.0/8", "nope"])
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "allowlist.networks");
        assert!(IpAllowlist::new(["10.0.0.1"]).build().is_ok());
    }
}
