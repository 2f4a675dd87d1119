//! [`AuthLayer`] authenticates bearer tokens before the handler (and before
//! the rate limiter, so per-user limits know the user); [`AuthUser`] is the
//! extractor that requires it.
//!
//! For a request with `Authorization: Bearer <token>`, the layer verifies the
//! token ([`Jwt::verify`]) and checks, in one store round trip, that neither
//! the token nor its family was revoked, nor its user's sessions ended
//! ([`Revocations::end_sessions`]). On success it inserts the
//! [`AuthUser`] and the [`Principal`]; on any failure it inserts nothing and
//! the [`AuthUser`] extractor answers 401 (problem+json, `WWW-Authenticate:
//! Bearer`, the same body whatever went wrong). When the revocation store is
//! unreachable the request is answered 503: a revoked token must not work
//! because Redis is down. Requests without a bearer token pass untouched.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_auth::jwt::{Jwt, JwtConfig, Revocations};
//! use palisade_auth::layer::{AuthLayer, AuthUser};
//! use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyRing};
//! use palisade_store::{MemoryStore, Store};
//!
//! let jwt = Jwt::new(
//!     KeyRing::new(HmacKey::generate(HmacAlgorithm::Hs256).unwrap()),
//!     JwtConfig::new("https://id.example", "api"),
//! )
//! .unwrap();
//! let jwt = std::sync::Arc::new(jwt);
//! let revocations = Revocations::new(Store::memory(MemoryStore::default()), jwt.access_ttl());
//! let app: Router = Router::new()
//!     .route("/me", get(|user: AuthUser| async move { user.id().to_owned() }))
//!     .layer(AuthLayer::new(jwt, revocations));
//! # let _ = app;
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use palisade_core::body::ResponseBody;
use palisade_core::{Principal, ProblemDetails, ProblemType};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::jwt::{Claims, Jwt, Revocations};

/// The authenticated caller: verified, not revoked.
#[derive(Clone, Debug)]
pub struct AuthUser {
    claims: Arc<Claims>,
}

impl AuthUser {
    /// The user id (`sub`).
    pub fn id(&self) -> &str {
        &self.claims.sub
    }

    /// Every claim of the access token.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
}

struct Inner {
    jwt: Arc<Jwt>,
    revocations: Revocations,
}

/// Authenticates bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct AuthLayer {
    inner: Arc<Inner>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("jwt", &self.inner.jwt)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// Tokens verified by `jwt` (shared with the handlers that issue them),
    /// revocations looked up in `revocations`.
    pub fn new(jwt: Arc<Jwt>, revocations: Revocations) -> Self {
        Self {
            inner: Arc::new(Inner { jwt, revocations }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            auth: Arc::clone(&self.inner),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    auth: Arc<Inner>,
}

impl<S> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // No bearer token, or one that fails verification: nothing to look
        // up, call straight through (no allocation).
        let Some(Ok(claims)) = bearer(&req).map(|t| self.auth.jwt.verify(t)) else {
            return AuthFuture {
                kind: Kind::Direct {
                    future: self.inner.call(req),
                },
            };
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        let future = Box::pin(async move {
            match auth.revocations.is_revoked(&claims).await {
                Ok(false) => {
                    req.extensions_mut()
                        .insert(Principal::new(claims.sub.as_str()));
                    req.extensions_mut().insert(AuthUser {
                        claims: Arc::new(claims),
                    });
                }
                Ok(true) => {}
                Err(_) => {
                    let response: Response<Bytes> = ProblemDetails::new(ProblemType::UNAVAILABLE)
                        .with_detail("authentication is temporarily unavailable")
                        .with_retry_after(1)
                        .with_request_id_from(req.extensions())
                        .rejection("auth_store_unavailable");
                    return Ok(response.map(ResponseBody::full));
                }
            }
            let response = inner.call(req).await?;
            Ok(response.map(ResponseBody::inner))
        });
        AuthFuture {
            kind: Kind::Verified { future },
        }
    }
}

pin_project! {
    /// The response future of [`Auth`]: the inner service's future when
    /// there is nothing to look up, a boxed one around the revocation check.
    pub struct AuthFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Direct { #[pin] future: F },
        Verified { future: BoxFuture<Result<Response<ResponseBody<B>>, E>> },
    }
}

impl<F, B, E> fmt::Debug for AuthFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthFuture")
    }
}

impl<F, B, E> Future for AuthFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(ResponseBody::inner))),
            KindProj::Verified { future } => future.as_mut().poll(cx),
        }
    }
}

/// The 401 of every authentication failure: one body, whatever the cause.
pub fn unauthorized(extensions: &http::Extensions) -> Response<Bytes> {
    let mut response = ProblemDetails::new(ProblemType::UNAUTHORIZED)
        .with_detail("a valid bearer token is required")
        .with_request_id_from(extensions)
        .rejection("unauthenticated");
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AuthUser {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthUser>()
            .cloned()
            .ok_or_else(|| unauthorized(&parts.extensions).map(axum::body::Body::from))
    }
}
