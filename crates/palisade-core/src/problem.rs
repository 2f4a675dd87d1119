//! RFC 9457 problem details: the one error body of every Palisade response.
//!
//! Every rejection a Palisade layer produces (413, 429, 503, 500...) is a
//! [`ProblemDetails`] serialised as `application/problem+json`. A problem never
//! carries a stack trace, a panic message, SQL, a file system path or a secret:
//! the `detail` texts of the built-in [`ProblemType`]s are fixed strings.
//!
//! # Example
//!
//! ```
//! use palisade_core::problem::{FieldError, ProblemDetails, ProblemType};
//!
//! let problem = ProblemDetails::new(ProblemType::VALIDATION)
//!     .with_request_id("req-1")
//!     .with_error(FieldError::new("password", "too_short", "must be at least 8 characters"));
//! let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
//! assert_eq!(json["status"], 422);
//! assert_eq!(json["type"], "urn:palisade:problem:validation");
//! assert_eq!(json["request_id"], "req-1");
//! assert_eq!(json["errors"][0]["code"], "too_short");
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::ResponseBody;
use crate::request_id::RequestId;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A kind of problem: its `type` URI, its `title` and its HTTP status.
///
/// The built-in kinds are the ones Palisade layers produce; applications can
/// declare their own with [`ProblemType::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemType {
    uri: &'static str,
    title: &'static str,
    status: StatusCode,
}

impl ProblemType {
    /// 400: the request could not be parsed (malformed JSON, bad header...).
    pub const BAD_REQUEST: Self = Self::new(
        "urn:palisade:problem:bad-request",
        "Bad request",
        StatusCode::BAD_REQUEST,
    );
    /// 401: missing or invalid credentials.
    pub const UNAUTHORIZED: Self = Self::new(
        "urn:palisade:problem:unauthorized",
        "Unauthorized",
        StatusCode::UNAUTHORIZED,
    );
    /// 403: the request is understood and refused.
    pub const FORBIDDEN: Self = Self::new(
        "urn:palisade:problem:forbidden",
        "Forbidden",
        StatusCode::FORBIDDEN,
    );
    /// 403: a CORS preflight from an origin, method or header that is not allowed.
    pub const CORS_DENIED: Self = Self::new(
        "urn:palisade:problem:cors-denied",
        "Cross-origin request not allowed",
        StatusCode::FORBIDDEN,
    );
    /// 403: an unsafe cross-site request to a cookie-authenticated application.
    pub const CROSS_ORIGIN_DENIED: Self = Self::new(
        "urn:palisade:problem:cross-origin-denied",
        "Cross-site request refused",
        StatusCode::FORBIDDEN,
    );
    /// 403: the client IP is not on the route's allowlist.
    pub const IP_DENIED: Self = Self::new(
        "urn:palisade:problem:ip-denied",
        "Client address not allowed",
        StatusCode::FORBIDDEN,
    );
    /// 404: no such resource.
    pub const NOT_FOUND: Self = Self::new(
        "urn:palisade:problem:not-found",
        "Not found",
        StatusCode::NOT_FOUND,
    );
    /// 405: the resource exists but not for this method.
    pub const METHOD_NOT_ALLOWED: Self = Self::new(
        "urn:palisade:problem:method-not-allowed",
        "Method not allowed",
        StatusCode::METHOD_NOT_ALLOWED,
    );
    /// 408: the client did not send the request body before its deadline.
    pub const BODY_TIMEOUT: Self = Self::new(
        "urn:palisade:problem:body-timeout",
        "Request body not received in time",
        StatusCode::REQUEST_TIMEOUT,
    );
    /// 409: the request conflicts with the current state (e.g. an email already taken).
    pub const CONFLICT: Self = Self::new(
        "urn:palisade:problem:conflict",
        "Conflict",
        StatusCode::CONFLICT,
    );
    /// 413: the request body is larger than the route allows.
    pub const PAYLOAD_TOO_LARGE: Self = Self::new(
        "urn:palisade:problem:payload-too-large",
        "Request body too large",
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    /// 415: the request body's media type is not accepted.
    pub const UNSUPPORTED_MEDIA_TYPE: Self = Self::new(
        "urn:palisade:problem:unsupported-media-type",
        "Unsupported media type",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    );
    /// 422: the request is well formed but its content is invalid.
    pub const VALIDATION: Self = Self::new(
        "urn:palisade:problem:validation",
        "Validation failed",
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    /// 429: too many requests.
    pub const RATE_LIMITED: Self = Self::new(
        "urn:palisade:problem:rate-limited",
        "Too many requests",
        StatusCode::TOO_MANY_REQUESTS,
    );
    /// 500: an unexpected failure inside the service (a panic, a bug).
    pub const INTERNAL: Self = Self::new(
        "urn:palisade:problem:internal",
        "Internal server error",
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    /// 503: the request took longer than its deadline.
    pub const TIMEOUT: Self = Self::new(
        "urn:palisade:problem:timeout",
        "Request timed out",
        StatusCode::SERVICE_UNAVAILABLE,
    );
    /// 503: a dependency is unavailable.
    pub const UNAVAILABLE: Self = Self::new(
        "urn:palisade:problem:unavailable",
        "Service unavailable",
        StatusCode::SERVICE_UNAVAILABLE,
    );

    /// Declares a problem type. `uri` should be an absolute URI (a URN is fine).
    pub const fn new(uri: &'static str, title: &'static str, status: StatusCode) -> Self {
        Self { uri, title, status }
    }

    /// The `type` URI.
    pub const fn uri(&self) -> &'static str {
        self.uri
    }

    /// The `title`.
    pub const fn title(&self) -> &'static str {
        self.title
    }

    /// The HTTP status.
    pub const fn status(&self) -> StatusCode {
        self.status
    }
}

/// Marks a response produced by a layer that refused the request, with the
/// reason (`payload_too_large`, `timeout`, `cors_denied`...). Metrics count
/// rejections by reason from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// A stable, low-cardinality reason.
    pub reason: &'static str,
}

/// One invalid field of a request: `{"field","code","message"}`.
///
/// `code` is machine-readable (`too_short`, `invalid_type`...); `message` is for
/// people. Neither may contain the submitted value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's path, e.g. `password` or `address.city` or `tags[2]`.
    pub field: String,
    /// A stable, machine-readable code.
    pub code: Cow<'static, str>,
    /// A human-readable explanation.
    pub message: Cow<'static, str>,
}

impl FieldError {
    /// A new field error.
    pub fn new(
        field: impl Into<String>,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDetails {
    /// The problem type URI.
    #[serde(rename = "type")]
    pub type_uri: Cow<'static, str>,
    /// A short summary of the problem type.
    pub title: Cow<'static, str>,
    /// The HTTP status code.
    pub status: u16,
    /// An explanation specific to this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'static, str>>,
    /// The id of the request, for correlation with logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Invalid fields, for validation problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which the client may retry (sent as `Retry-After`, not in the body).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ProblemDetails {
    /// A problem of the given type, without detail.
    pub fn new(kind: ProblemType) -> Self {
        Self {
            type_uri: Cow::Borrowed(kind.uri),
            title: Cow::Borrowed(kind.title),
            status: kind.status.as_u16(),
            detail: None,
            request_id: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// Sets `detail`.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `request_id`.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets `request_id` when there is one.
    #[must_use]
    pub fn with_optional_request_id(mut self, id: Option<&RequestId>) -> Self {
        if let Some(id) = id {
            self.request_id = Some(id.as_str().to_owned());
        }
        self
    }

    /// Sets `request_id` from the request's [`RequestId`] extension when there is one.
    #[must_use]
    pub fn with_request_id_from(self, extensions: &http::Extensions) -> Self {
        self.with_optional_request_id(extensions.get::<RequestId>())
    }

    /// Appends a field error.
    #[must_use]
    pub fn with_error(mut self, error: FieldError) -> Self {
        self.errors.push(error);
        self
    }

    /// Overrides the HTTP status (e.g. a timeout configured to answer 504).
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status.as_u16();
        self
    }

    /// Adds a `Retry-After` header (seconds) to the response.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP status, falling back to 500 for an out-of-range code.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON document.
    pub fn to_json(&self) -> Bytes {
        // Serialising this struct cannot fail: every field is a string, a number or
        // a list of strings. Fall back to a fixed document rather than panic anyway.
        serde_json::to_vec(self).map_or_else(
            |_| {
                Bytes::from_static(
                    br#"{"type":"about:blank","title":"Internal server error","status":500}"#,
                )
            },
            Bytes::from,
        )
    }

    /// The response: status, `Content-Type: application/problem+json`,
    /// `Retry-After` when set, and the JSON body.
    pub fn into_response_with<B>(self) -> Response<ResponseBody<B>> {
        self.into_bytes_response().map(ResponseBody::full)
    }

    /// The response of a layer refusing a request: the problem document,
    /// marked with a [`Rejection`] extension naming `reason` so that metrics
    /// can count refusals by cause.
    pub fn rejection(self, reason: &'static str) -> Response<Bytes> {
        let mut response = self.into_bytes_response();
        response.extensions_mut().insert(Rejection { reason });
        response
    }

    /// Like [`into_response_with`](Self::into_response_with), with the body as bytes.
    ///
    /// A problem without a `request_id` gets the id of the request being
    /// served on this thread ([`crate::request_id::current`], entered by the
    /// request-id layer), so handlers and layers never have to pass it.
    pub fn into_bytes_response(mut self) -> Response<Bytes> {
        if self.request_id.is_none() {
            self.request_id = crate::request_id::with_current(|c| c.id.as_str().to_owned());
        }
        let mut response = Response::new(self.to_json());
        *response.status_mut() = self.status_code();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ProblemType> for ProblemDetails {
    fn from(kind: ProblemType) -> Self {
        Self::new(kind)
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ProblemDetails {
    fn into_response(self) -> axum::response::Response {
        self.into_response_with::<axum::body::Body>()
            .map(axum::body::Body::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_members_are_omitted() {
        let json: serde_json::Value =
            serde_json::from_slice(&ProblemDetails::new(ProblemType::NOT_FOUND).to_json()).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 3, "{json}");
        assert_eq!(json["title"], "Not found");
    }

    #[test]
    fn response_carries_media_type_and_retry_after() {
        let response = ProblemDetails::new(ProblemType::TIMEOUT)
            .with_retry_after(7)
            .into_response_with::<http_body_util::Empty<Bytes>>();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
    }

    #[test]
    fn status_override_and_bad_status_fallback() {
        let p = ProblemDetails::new(ProblemType::TIMEOUT).with_status(StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(p.status_code(), StatusCode::GATEWAY_TIMEOUT);
        let mut bad = ProblemDetails::new(ProblemType::TIMEOUT);
        bad.status = 42;
        assert_eq!(bad.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_problem_made_while_serving_a_request_carries_its_id() {
        use crate::request_id::{RequestContext, TraceId, enter};
        let body = |p: ProblemDetails| -> serde_json::Value {
            serde_json::from_slice(p.into_bytes_response().body()).unwrap()
        };
        assert!(body(ProblemDetails::new(ProblemType::NOT_FOUND))["request_id"].is_null());
        let context = std::sync::Arc::new(RequestContext {
            id: RequestId::parse("req-7").unwrap(),
            trace_id: TraceId([7; 16]),
        });
        let scope = enter(&context);
        assert_eq!(
            body(ProblemDetails::new(ProblemType::NOT_FOUND))["request_id"],
            "req-7"
        );
        // An id set explicitly is kept.
        let explicit = ProblemDetails::new(ProblemType::NOT_FOUND).with_request_id("other");
        assert_eq!(body(explicit)["request_id"], "other");
        drop(scope);
        assert!(body(ProblemDetails::new(ProblemType::NOT_FOUND))["request_id"].is_null());
    }

    #[test]
    fn request_id_comes_from_extensions() {
        let mut ext = http::Extensions::new();
        let p = ProblemDetails::new(ProblemType::INTERNAL).with_request_id_from(&ext);
        assert!(p.request_id.is_none());
        ext.insert(RequestId::parse("abc-1").unwrap());
        let p = ProblemDetails::new(ProblemType::INTERNAL).with_request_id_from(&ext);
        assert_eq!(p.request_id.as_deref(), Some("abc-1"));
    }
}
