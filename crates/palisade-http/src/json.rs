//! `ValidatedJson<T>`: a JSON body, size-capped, deserialised and validated,
//! with every failure a problem document.
//!
//! | failure | status | body |
//! | --- | --- | --- |
//! | `Content-Type` not JSON | 415 | problem |
//! | body over the cap (1 MiB by default, the `LIMIT` parameter) | 413 | problem |
//! | malformed JSON | 400 | problem with the line and column |
//! | wrong type, missing field | 422 | `errors[{field, code, message}]` |
//! | unknown field | 422 | the same, at the parent's path, with the line and column |
//! | `validator::Validate` fails | 422 | `errors[{field, code, message}]` |
//!
//! Error messages never echo submitted values (serde's messages do, so they
//! are not used): a password sent as a number must not come back in a response.
//! Nor do they echo names the client chose: an unknown field (with
//! `#[serde(deny_unknown_fields)]`) is reported at its parent's path with its
//! line and column, not its name, and a path segment that is not a plain name
//! (1–64 of `[A-Za-z0-9_-]`, e.g. a map key with markup or a long string) is
//! written `?`. Map keys that are plain names do appear in paths: do not key
//! a map by a secret.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::post};
//! use http::Request;
//! use palisade_http::json::ValidatedJson;
//! use serde::Deserialize;
//! use tower::ServiceExt;
//! use validator::Validate;
//!
//! #[derive(Deserialize, Validate)]
//! struct Signup {
//!     #[validate(email(code = "invalid_email"))]
//!     email: String,
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let app = Router::new().route("/", post(|ValidatedJson(s): ValidatedJson<Signup>| async move { s.email }));
//! let req = Request::post("/")
//!     .header("content-type", "application/json")
//!     .body(axum::body::Body::from(r#"{"email":"not-an-email"}"#))
//!     .unwrap();
//! let res = app.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 422);
//! let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
//! let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(json["errors"][0]["field"], "email");
//! assert_eq!(json["errors"][0]["code"], "invalid_email");
//! # });
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

use axum::extract::{FromRequest, Request};
use http::header::CONTENT_TYPE;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use palisade_core::{FieldError, ProblemDetails, ProblemType};
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

/// The default body cap of [`ValidatedJson`]: 1 MiB.
pub const DEFAULT_JSON_LIMIT: usize = 1 << 20;

/// A JSON request body of type `T`, at most `LIMIT` bytes, that passed
/// `T::validate()`. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidatedJson<T, const LIMIT: usize = DEFAULT_JSON_LIMIT>(pub T);

impl<T, S, const LIMIT: usize> FromRequest<S> for ValidatedJson<T, LIMIT>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ProblemDetails;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let problem = |kind| ProblemDetails::new(kind).with_request_id_from(&parts.extensions);
        if !is_json(parts.headers.get(CONTENT_TYPE)) {
            return Err(problem(ProblemType::UNSUPPORTED_MEDIA_TYPE)
                .with_detail("send the body as application/json"));
        }
        let bytes = match Limited::new(body, LIMIT).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<LengthLimitError>() => {
                return Err(problem(ProblemType::PAYLOAD_TOO_LARGE)
                    .with_detail("the JSON body is larger than this route accepts"));
            }
            // A body guard (limit, deadline) failed: its layer replaces this answer.
            Err(_) => {
                return Err(problem(ProblemType::BAD_REQUEST)
                    .with_detail("the request body could not be read"));
            }
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value: T = match serde_path_to_error::deserialize(&mut de) {
            Ok(value) => value,
            Err(err) => return Err(deserialize_problem(&err, problem)),
        };
        de.end().map_err(|e| {
            problem(ProblemType::BAD_REQUEST).with_detail(format!(
                "malformed JSON: trailing characters at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        value.validate().map_err(|errors| {
            let mut problem =
                problem(ProblemType::VALIDATION).with_detail("one or more fields are invalid");
            problem.errors = field_errors(&errors);
            problem
        })?;
        Ok(Self(value))
    }
}

fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

fn deserialize_problem(
    err: &serde_path_to_error::Error<serde_json::Error>,
    problem: impl Fn(ProblemType) -> ProblemDetails,
) -> ProblemDetails {
    let inner = err.inner();
    if !inner.is_data() {
        return problem(ProblemType::BAD_REQUEST).with_detail(format!(
            "malformed JSON at line {} column {}",
            inner.line(),
            inner.column()
        ));
    }
    // serde's messages quote what was sent (unknown field and variant names,
    // invalid values): the text is only matched against fixed prefixes,
    // never copied into the answer.
    let message = inner.to_string();
    let segments = err.path().iter();
    let error = if message.starts_with("unknown field `") {
        // The path ends with the unknown name itself: report its parent and
        // where the name is, not the name.
        let parent = segments.len().saturating_sub(1);
        FieldError::new(
            field_path(segments.take(parent), None),
            "unknown_field",
            format!(
                "a field that is not accepted, at line {} column {}",
                inner.line(),
                inner.column()
            ),
        )
    } else if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        // A missing field is reported at its parent's path; its name is one
        // of the type's own (a `&'static str` of the derive).
        FieldError::new(
            field_path(segments, Some(name)),
            "required",
            "this field is required",
        )
    } else {
        FieldError::new(
            field_path(segments, None),
            "invalid_type",
            "this value has the wrong type or format",
        )
    };
    problem(ProblemType::VALIDATION)
        .with_detail("one or more fields are invalid")
        .with_error(error)
}

/// The longest path segment written as it is.
const MAX_SEGMENT: usize = 64;

/// `address.city`, `tags[2].name`: the segments of a path, each written only
/// when it is a plain name (1–64 of `[A-Za-z0-9_-]`), else as `?`. Struct
/// fields are plain names; a map key is whatever the client sent, so markup,
/// quotes, control characters or a long string never come back.
fn field_path<'a>(
    segments: impl Iterator<Item = &'a serde_path_to_error::Segment>,
    last: Option<&str>,
) -> String {
    use serde_path_to_error::Segment;
    fn push_name(out: &mut String, name: &str) {
        if !out.is_empty() {
            out.push('.');
        }
        let plain = (1..=MAX_SEGMENT).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        out.push_str(if plain { name } else { "?" });
    }
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => {
                // Writing to a `String` cannot fail.
                let _ = write!(out, "[{index}]");
            }
            Segment::Map { key } | Segment::Enum { variant: key } => push_name(&mut out, key),
            Segment::Unknown => push_name(&mut out, "?"),
        }
    }
    if let Some(name) = last {
        push_name(&mut out, name);
    }
    out
}

/// Flattens nested validation errors into `field` paths (`address.city`,
/// `items[2].name`), sorted for stable output.
fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    fn walk(prefix: &str, errors: &ValidationErrors, out: &mut Vec<FieldError>) {
        for (field, kind) in errors.errors() {
            let path = if prefix.is_empty() {
                field.to_string()
            } else {
                format!("{prefix}.{field}")
            };
            match kind {
                ValidationErrorsKind::Field(list) => {
                    for e in list {
                        let message: Cow<'static, str> = e
                            .message
                            .clone()
                            .unwrap_or(Cow::Borrowed("this value is invalid"));
                        out.push(FieldError::new(path.clone(), e.code.clone(), message));
                    }
                }
                ValidationErrorsKind::Struct(inner) => walk(&path, inner, out),
                ValidationErrorsKind::List(items) => {
                    for (index, inner) in items {
                        walk(&format!("{path}[{index}]"), inner, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", errors, &mut out);
    out.sort_by(|a, b| (&a.field, &a.code).cmp(&(&b.field, &b.code)));
    out
}

#[cfg(test)]
mod tests;
