//! Strict CORS: an exact list of origins, no reflection, no wildcard with credentials.
//!
//! - A request from an allowed origin gets `Access-Control-Allow-Origin` with
//!   that origin (from the list, never copied from an unchecked header), plus
//!   `Access-Control-Allow-Credentials` when enabled and the exposed headers.
//! - A request from any other origin is served without CORS headers: the
//!   browser then hides the response from the page.
//! - A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered
//!   here: 204 with the allowed methods and headers when the origin, the method
//!   and every requested header are allowed; 403 problem without any CORS
//!   header otherwise. Preflights never reach the handlers.
//! - Every response carries `Vary: Origin` so caches keep answers apart.
//!
//! `*` is only available through [`Cors::allow_any_origin`], and building
//! fails if it is combined with credentials (browsers refuse that, and a
//! reflecting workaround would hand every site the user's session).
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::{Method, Request};
//! use palisade_http::cors::Cors;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let cors = Cors::new()
//!     .allow_origin("https://app.example.com")
//!     .allow_methods([Method::GET, Method::POST])
//!     .allow_headers(["content-type", "authorization"])
//!     .build()
//!     .unwrap();
//! let app = Router::new().route("/", get(|| async { "hi" })).layer(cors);
//! let preflight = |origin: &str| {
//!     Request::options("/")
//!         .header("origin", origin)
//!         .header("access-control-request-method", "POST")
//!         .body(axum::body::Body::empty())
//!         .unwrap()
//! };
//! let ok = app.clone().oneshot(preflight("https://app.example.com")).await.unwrap();
//! assert_eq!(ok.status(), 204);
//! assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example.com");
//! let denied = app.oneshot(preflight("https://evil.example")).await.unwrap();
//! assert_eq!(denied.status(), 403);
//! assert!(denied.headers().get("access-control-allow-origin").is_none());
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderName, HeaderValue, ORIGIN,
    VARY,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture;
use palisade_core::{ConfigError, ProblemDetails, ProblemType};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::origin::Origin;

/// Builder of [`CorsLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Cors {
    origins: Vec<String>,
    any_origin: bool,
    credentials: bool,
    methods: Vec<Method>,
    headers: Vec<String>,
    expose: Vec<String>,
    max_age: Duration,
}

impl Default for Cors {
    fn default() -> Self {
        Self::new()
    }
}

impl Cors {
    /// No allowed origin yet; methods GET, HEAD and POST; request header
    /// `content-type`; no credentials; preflights cached 10 minutes.
    pub fn new() -> Self {
        Self {
            origins: Vec::new(),
            any_origin: false,
            credentials: false,
            methods: vec![Method::GET, Method::HEAD, Method::POST],
            headers: vec!["content-type".to_owned()],
            expose: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }

    /// Allows one exact origin, e.g. `https://app.example.com`.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Allows several exact origins.
    pub fn allow_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.origins.extend(origins.into_iter().map(Into::into));
        self
    }

    /// Allows every origin with `Access-Control-Allow-Origin: *`, for public,
    /// unauthenticated resources. Cannot be combined with credentials.
    pub fn allow_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// Lets browsers send cookies and HTTP authentication (`Access-Control-Allow-Credentials: true`).
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        self.credentials = allow;
        self
    }

    /// The methods a cross-origin request may use (replaces the default list).
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// The request headers a cross-origin request may send (replaces the default list).
    pub fn allow_headers<I, S>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.headers = headers.into_iter().map(Into::into).collect();
        self
    }

    /// The response headers a page may read beyond the safelisted ones.
    pub fn expose_headers<I, S>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.expose = headers.into_iter().map(Into::into).collect();
        self
    }

    /// How long browsers may cache a preflight answer.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Validates and builds the layer.
    pub fn build(self) -> Result<CorsLayer, ConfigError> {
        if self.any_origin && self.credentials {
            return Err(ConfigError::new(
                "cors.origins",
                "any origin (`*`) cannot be combined with credentials",
            ));
        }
        if self.any_origin && !self.origins.is_empty() {
            return Err(ConfigError::new(
                "cors.origins",
                "choose either any origin or an exact list, not both",
            ));
        }
        let origins = self
            .origins
            .iter()
            .map(|o| Origin::parse_config(o, "cors.origins"))
            .collect::<Result<Vec<_>, _>>()?;
        let headers = parse_names(&self.headers, "cors.allow_headers")?;
        if self.credentials && self.headers.iter().any(|h| h == "*") {
            return Err(ConfigError::new(
                "cors.allow_headers",
                "`*` is taken literally by browsers when credentials are allowed",
            ));
        }
        let expose = parse_names(&self.expose, "cors.expose_headers")?;
        if self.methods.is_empty() {
            return Err(ConfigError::new(
                "cors.allow_methods",
                "allow at least one method",
            ));
        }
        let join = |items: Vec<String>, setting| {
            HeaderValue::from_str(&items.join(", "))
                .map_err(|_| ConfigError::new(setting, "not a valid header value"))
        };
        let allow_methods = join(
            self.methods.iter().map(ToString::to_string).collect(),
            "cors.allow_methods",
        )?;
        let allow_headers = join(
            headers.iter().map(ToString::to_string).collect(),
            "cors.allow_headers",
        )?;
        let expose_headers = (!expose.is_empty())
            .then(|| {
                join(
                    expose.iter().map(ToString::to_string).collect(),
                    "cors.expose_headers",
                )
            })
            .transpose()?;
        Ok(CorsLayer {
            config: Arc::new(Config {
                origins: if self.any_origin {
                    AllowedOrigins::Any
                } else {
                    // The header value of each origin is built once, here.
                    AllowedOrigins::List(
                        origins
                            .into_iter()
                            .map(|o| {
                                HeaderValue::from_str(o.as_str())
                                    .map(|v| (o, v))
                                    .map_err(|_| {
                                        ConfigError::new("cors.origins", "not a valid header value")
                                    })
                            })
                            .collect::<Result<_, _>>()?,
                    )
                },
                credentials: self.credentials,
                methods: self.methods,
                headers,
                allow_methods,
                allow_headers,
                expose_headers,
                max_age: HeaderValue::from(self.max_age.as_secs()),
            }),
        })
    }
}

fn parse_names(names: &[String], setting: &'static str) -> Result<Vec<HeaderName>, ConfigError> {
    names
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.trim().as_bytes())
                .map_err(|_| ConfigError::new(setting, "not a valid header name"))
        })
        .collect()
}

#[derive(Debug)]
enum AllowedOrigins {
    Any,
    List(Vec<(Origin, HeaderValue)>),
}

#[derive(Debug)]
struct Config {
    origins: AllowedOrigins,
    credentials: bool,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

impl Config {
    /// The `Access-Control-Allow-Origin` value for a request's origin, if allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        match &self.origins {
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(list) => {
                let value = origin.to_str().ok()?;
                list.iter()
                    .find(|(o, _)| o.matches(value))
                    .map(|(_, v)| v.clone())
            }
        }
    }

    fn preflight_allowed(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let allow_origin = self.allow_origin(headers.get(ORIGIN))?;
        let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        if !self.methods.contains(&method) {
            return None;
        }
        for line in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            for name in line.to_str().ok()?.split(',') {
                let name = name.trim();
                if name.is_empty() {
                    continue;
                }
                if !self
                    .headers
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(name))
                {
                    return None;
                }
            }
        }
        Some(allow_origin)
    }

    fn add_vary(headers: &mut HeaderMap, preflight: bool) {
        let value = if preflight {
            "origin, access-control-request-method, access-control-request-headers"
        } else {
            "origin"
        };
        let present = headers.get_all(VARY).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("origin") || p.trim() == "*")
            })
        });
        if !present {
            headers.append(VARY, HeaderValue::from_static(value));
        }
    }

    fn add_actual(&self, headers: &mut HeaderMap, allow_origin: HeaderValue) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    fn preflight(&self, req_headers: &HeaderMap, extensions: &http::Extensions) -> Response<Bytes> {
        let Some(allow_origin) = self.preflight_allowed(req_headers) else {
            tracing::info!(reason = "cors_denied", "preflight rejected");
            let mut response = ProblemDetails::new(ProblemType::CORS_DENIED)
                .with_detail("this origin, method or header is not allowed")
                .with_request_id_from(extensions)
                .rejection("cors_denied");
            Self::add_vary(response.headers_mut(), true);
            return response;
        };
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Self::add_vary(headers, true);
        response
    }
}

/// Applies the CORS policy. Build it with [`Cors`].
#[derive(Debug, Clone)]
pub struct CorsLayer {
    config: Arc<Config>,
}

impl CorsLayer {
    /// The exact origins this policy allows (empty for "any origin" or none).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        let list = match &self.config.origins {
            AllowedOrigins::List(list) => list.as_slice(),
            AllowedOrigins::Any => &[],
        };
        list.iter().map(|(o, _)| o.as_str())
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`CorsLayer`].
#[derive(Debug, Clone)]
pub struct CorsService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CorsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let headers = req.headers();
        if req.method() == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            let response = self.config.preflight(headers, req.extensions());
            return CorsFuture {
                future: ResponseFuture::early(response),
                config: self.config.clone(),
                allow_origin: None,
            };
        }
        let allow_origin = self.config.allow_origin(headers.get(ORIGIN));
        CorsFuture {
            future: ResponseFuture::inner(self.inner.call(req)),
            config: self.config.clone(),
            allow_origin: Some(allow_origin),
        }
    }
}

pin_project! {
    /// The response future of [`CorsService`].
    pub struct CorsFuture<F> {
        #[pin]
        future: ResponseFuture<F>,
        config: Arc<Config>,
        // `None` for a preflight (answered whole); `Some(None)` for a request
        // from an origin that is not allowed.
        allow_origin: Option<Option<HeaderValue>>,
    }
}

impl<F, B, E> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.future.poll(cx))?;
        if let Some(allow_origin) = this.allow_origin.take() {
            if let Some(value) = allow_origin {
                this.config.add_actual(response.headers_mut(), value);
            }
            Config::add_vary(response.headers_mut(), false);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests;
