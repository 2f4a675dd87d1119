//! Turns bare error responses into problem documents.
//!
//! Routers answer unknown paths (404) and wrong methods (405) with an empty
//! body, and handlers often return a bare `StatusCode::FORBIDDEN`. Behind
//! [`ProblemFallbackLayer`], any 4xx or 5xx response that has **no body and
//! no `Content-Type`** gets an `application/problem+json` body for its status
//! (with the request id when the request-id layer is outside), keeping its
//! headers (`Allow`, `WWW-Authenticate`, `Retry-After`...). Responses with a
//! body of their own — a fallback the application set, an HTML error page —
//! pass untouched, so a service keeps its own fallback.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::Request;
//! use palisade_http::problem_fallback::ProblemFallbackLayer;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let app = Router::new().route("/", get(|| async { "home" })).layer(ProblemFallbackLayer::new());
//! let res = app.clone().oneshot(Request::get("/nope").body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 404);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! let res = app.oneshot(Request::delete("/").body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 405);
//! assert_eq!(res.headers()["allow"], "GET,HEAD");
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! # });
//! ```

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body::Body;
use palisade_core::body::ResponseBody;
use palisade_core::{ProblemDetails, ProblemType};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Gives bare error responses a problem body. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemFallbackLayer;

impl ProblemFallbackLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for ProblemFallbackLayer {
    type Service = ProblemFallback<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProblemFallback { inner }
    }
}

/// The service of [`ProblemFallbackLayer`].
#[derive(Debug, Clone)]
pub struct ProblemFallback<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ProblemFallback<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ProblemFallbackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ProblemFallbackFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The future of [`ProblemFallback`].
    pub struct ProblemFallbackFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResBody, E> Future for ProblemFallbackFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().inner.poll(cx))?;
        let status = response.status();
        let bare = (status.is_client_error() || status.is_server_error())
            && !response.headers().contains_key(CONTENT_TYPE)
            && response.body().size_hint().exact() == Some(0);
        if !bare {
            return Poll::Ready(Ok(response.map(ResponseBody::inner)));
        }
        let (mut parts, _) = response.into_parts();
        let problem = problem_for(status).into_bytes_response();
        let (problem_parts, body) = problem.into_parts();
        parts.headers.extend(problem_parts.headers);
        Poll::Ready(Ok(Response::from_parts(parts, ResponseBody::full(body))))
    }
}

/// The problem of a bare status: the known types by status, `about:blank`
/// with the reason phrase for the others.
fn problem_for(status: StatusCode) -> ProblemDetails {
    let known = [
        ProblemType::BAD_REQUEST,
        ProblemType::UNAUTHORIZED,
        ProblemType::FORBIDDEN,
        ProblemType::NOT_FOUND,
        ProblemType::METHOD_NOT_ALLOWED,
        ProblemType::CONFLICT,
        ProblemType::PAYLOAD_TOO_LARGE,
        ProblemType::UNSUPPORTED_MEDIA_TYPE,
        ProblemType::VALIDATION,
        ProblemType::RATE_LIMITED,
        ProblemType::INTERNAL,
        ProblemType::UNAVAILABLE,
    ];
    if let Some(kind) = known.into_iter().find(|k| k.status() == status) {
        return ProblemDetails::new(kind);
    }
    let mut problem = ProblemDetails::new(ProblemType::INTERNAL).with_status(status);
    problem.type_uri = Cow::Borrowed("about:blank");
    problem.title = Cow::Borrowed(status.canonical_reason().unwrap_or("Error"));
    problem
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ALLOW, WWW_AUTHENTICATE};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceExt, service_fn};

    async fn through(response: Response<Full<bytes::Bytes>>) -> (Response<()>, serde_json::Value) {
        let svc = ProblemFallbackLayer::new().layer(service_fn(move |_req: Request<()>| {
            let response = response.clone();
            async move { Ok::<_, std::convert::Infallible>(response) }
        }));
        let res = svc
            .oneshot(Request::new(()))
            .await
            .unwrap_or_else(|e| match e {});
        let (parts, body) = res.into_parts();
        let bytes = body
            .collect()
            .await
            .unwrap_or_else(|e| match e {})
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, ()), json)
    }

    fn bare(status: StatusCode) -> http::response::Builder {
        Response::builder().status(status)
    }

    #[tokio::test]
    async fn bare_errors_become_problems_keeping_their_headers() {
        let res = bare(StatusCode::METHOD_NOT_ALLOWED)
            .header(ALLOW, "GET,HEAD")
            .body(Full::default())
            .unwrap_or_default();
        let (res, json) = through(res).await;
        assert_eq!(res.headers()[ALLOW], "GET,HEAD");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(json["status"], 405);
        let res = bare(StatusCode::UNAUTHORIZED)
            .header(WWW_AUTHENTICATE, "Bearer")
            .body(Full::default())
            .unwrap_or_default();
        let (res, json) = through(res).await;
        assert_eq!(res.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(json["type"], ProblemType::UNAUTHORIZED.uri());
        // A status without a type of its own.
        let (res, json) = through(
            bare(StatusCode::IM_A_TEAPOT)
                .body(Full::default())
                .unwrap_or_default(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(
            (json["type"].as_str(), json["status"].as_u64()),
            (Some("about:blank"), Some(418))
        );
    }

    #[tokio::test]
    async fn responses_with_a_body_or_a_type_and_successes_pass_untouched() {
        for res in [
            bare(StatusCode::NOT_FOUND).body(Full::from("my own page")),
            bare(StatusCode::NOT_FOUND)
                .header(CONTENT_TYPE, "text/html")
                .body(Full::default()),
            bare(StatusCode::NO_CONTENT).body(Full::default()),
            bare(StatusCode::OK).body(Full::default()),
        ] {
            let res = res.unwrap_or_default();
            let (status, headers) = (res.status(), res.headers().clone());
            let (after, json) = through(res).await;
            assert_eq!((after.status(), after.headers()), (status, &headers));
            assert!(json.is_null() || json.is_string());
        }
    }
}
