//! Each audit check against a deliberately weakened in-process service
//! (it must fail, naming the problem) and against the same service with the
//! protection in place (it must pass): a check that cannot fail, or cannot
//! pass, proves nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // test code

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use palisade_testkit::audit::{Audit, Check, CheckResult, Login, Target};
use palisade_testkit::corpus::jwt::{decode, sign_hs};
use serde_json::{Value, json};

async fn run(audit: Audit, check: Check) -> CheckResult {
    let report = audit.only(&[check]).run().await;
    report.result(check).unwrap().clone()
}

fn assert_fails(result: &CheckResult, needle: &str) {
    assert!(
        result.is_fail(),
        "expected {} to fail:\n{result}",
        result.check
    );
    let text = result.to_string();
    assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    for part in ["sent:", "received:", "expected:", "fix:"] {
        assert!(text.contains(part), "{part} missing:\n{text}");
    }
}

#[tokio::test]
async fn a_bare_service_fails_headers_request_id_problems_and_limits() {
    let app = Router::new().route("/", get(|| async { "hello" }));
    let report = Audit::new(Target::service(app)).flood(100).run().await;
    let failed = report.failed();
    for check in [
        "security-headers",
        "headers-on-errors",
        "request-id",
        "problem-json",
        "body-limit",
        "rate-limit",
    ] {
        assert!(
            failed.contains(&check),
            "{check} should fail: {}",
            report.table()
        );
    }
    for check in ["no-banner", "cors", "unsafe-methods", "oversized-headers"] {
        assert!(
            !failed.contains(&check),
            "{check} should pass: {}",
            report.table()
        );
    }
    // Options not given: skipped, and the report says which option.
    let files = report.result(Check::FileTraversal).unwrap();
    assert!(files.to_string().contains("--files"), "{files}");
    assert!(report.table().contains("Content-Security-Policy"));
    let json = report.to_json();
    assert_eq!(json["passed"], false);
    assert_eq!(json["checks"].as_array().unwrap().len(), Check::ALL.len());
}

#[tokio::test]
async fn header_and_request_id_checks_pass_once_the_service_sets_them() {
    let app = Router::new().route(
        "/",
        get(|headers: HeaderMap| async move {
            let id = headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    !v.is_empty()
                        && v.len() <= 128
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                })
                .unwrap_or("fresh-id")
                .to_owned();
            (
                [
                    (
                        "content-security-policy",
                        "default-src 'none'; frame-ancestors 'none'",
                    ),
                    (
                        "strict-transport-security",
                        "max-age=63072000; includeSubDomains",
                    ),
                    ("x-content-type-options", "nosniff"),
                    ("x-frame-options", "DENY"),
                    ("referrer-policy", "no-referrer"),
                    ("cache-control", "no-store"),
                ],
                [("x-request-id", id)],
                "hello",
            )
        }),
    );
    let audit = Audit::new(Target::service(app.clone()));
    run(audit.clone(), Check::SecurityHeaders)
        .await
        .assert_passed();
    run(audit, Check::RequestId).await.assert_passed();

    // One header weakened at a time: each is named.
    for (name, value, needle) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'",
            "unsafe-inline",
        ),
        (
            "strict-transport-security",
            "max-age=86400",
            "max-age >= 31536000",
        ),
    ] {
        let weak = app.clone().layer(axum::middleware::map_response(
            move |mut res: Response| async move {
                res.headers_mut().insert(name, value.parse().unwrap());
                res
            },
        ));
        assert_fails(
            &run(Audit::new(Target::service(weak)), Check::SecurityHeaders).await,
            needle,
        );
    }
    // An id echoed whatever it is.
    let echo = Router::new().route(
        "/",
        get(|headers: HeaderMap| async move {
            let id = headers
                .get("x-request-id")
                .cloned()
                .unwrap_or_else(|| "fresh".parse().unwrap());
            (
                [(header::HeaderName::from_static("x-request-id"), id)],
                "hello",
            )
        }),
    );
    assert_fails(
        &run(Audit::new(Target::service(echo)), Check::RequestId).await,
        "replaced by a fresh one",
    );
}

#[tokio::test]
async fn the_body_limit_check_catches_a_service_that_reads_bodies_whole() {
    let handler = post(|body: Bytes| async move { format!("{} bytes", body.len()) });
    let limited = Router::new()
        .route("/upload", handler.clone())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1 << 20));
    let audit = |app: Router| Audit::new(Target::service(app)).body_path("/upload");
    let result = run(audit(limited), Check::BodyLimit).await;
    result.assert_passed();
    assert!(
        result.notes.iter().any(|n| n.contains("streamed")),
        "{result}"
    );

    // No limit at all: the declared body is awaited, the stream read whole.
    let unlimited = Router::new()
        .route("/upload", handler)
        .layer(axum::extract::DefaultBodyLimit::disable());
    let result = run(audit(unlimited), Check::BodyLimit).await;
    assert_fails(&result, "waiting for the rest of the body");
    assert_fails(
        &result,
        "200 | content-type: text/plain; charset=utf-8 | body: 33554432 bytes",
    );
}

// ---- login ---------------------------------------------------------------

const USER: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// A login route with switchable protections.
#[derive(Clone, Copy)]
struct Protections {
    /// Attempts allowed per client before 429.
    per_client: Option<u32>,
    /// Consecutive failures that lock an account.
    lockout: Option<u32>,
    /// Unknown accounts answer like wrong passwords.
    uniform: bool,
}

#[derive(Default)]
struct Counters {
    attempts: u32,
    failures: HashMap<String, u32>,
}

fn login_service(p: Protections) -> Router {
    let counters = Arc::new(Mutex::new(Counters::default()));
    Router::new()
        .route(
            "/auth/login",
            post(
                move |State(c): State<Arc<Mutex<Counters>>>, body: Bytes| async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let (user, password) = (
                        body["email"].as_str().unwrap_or(""),
                        body["password"].as_str().unwrap_or(""),
                    );
                    let mut c = c.lock().unwrap();
                    c.attempts += 1;
                    let limited = [(header::RETRY_AFTER, "60")];
                    if p.per_client.is_some_and(|max| c.attempts > max) {
                        return (StatusCode::TOO_MANY_REQUESTS, limited, "slow down")
                            .into_response();
                    }
                    let failures = c.failures.get(user).copied().unwrap_or(0);
                    if p.lockout.is_some_and(|max| failures >= max) {
                        return (StatusCode::TOO_MANY_REQUESTS, limited, "locked").into_response();
                    }
                    if user == USER && password == PASSWORD {
                        c.failures.remove(user);
                        return axum::Json(json!({"access_token": "t"})).into_response();
                    }
                    *c.failures.entry(user.to_owned()).or_default() += 1;
                    if user != USER && !p.uniform {
                        return (StatusCode::NOT_FOUND, "no such user").into_response();
                    }
                    (StatusCode::UNAUTHORIZED, "invalid credentials").into_response()
                },
            ),
        )
        .with_state(counters)
}

fn login_audit(p: Protections) -> Audit {
    Audit::new(Target::service(login_service(p))).login(
        Login::new(
            "/auth/login",
            r#"{"email":"{user}","password":"{password}"}"#,
        )
        .account(USER, PASSWORD),
    )
}

const SAFE: Protections = Protections {
    per_client: Some(5),
    lockout: Some(5),
    uniform: true,
};

#[tokio::test]
async fn the_login_limit_check_catches_a_service_without_one() {
    run(login_audit(SAFE), Check::LoginRateLimit)
        .await
        .assert_passed();
    let off = Protections {
        per_client: None,
        ..SAFE
    };
    assert_fails(
        &run(login_audit(off), Check::LoginRateLimit).await,
        "no 429",
    );
}

#[tokio::test]
async fn the_lockout_check_catches_a_service_without_one() {
    // A per-client limit above the threshold, so only the lockout can refuse.
    let safe = Protections {
        per_client: Some(100),
        ..SAFE
    };
    let result = run(login_audit(safe), Check::LoginLockout).await;
    result.assert_passed();
    assert!(
        result
            .notes
            .iter()
            .any(|n| n.contains("was the account's lockout")),
        "{result}"
    );
    // With the per-client limit at the threshold, the note says the check
    // cannot tell which protection answered.
    let result = run(login_audit(SAFE), Check::LoginLockout).await;
    result.assert_passed();
    assert!(
        result.notes.iter().any(|n| n.contains("cannot tell")),
        "{result}"
    );
    let off = Protections {
        lockout: None,
        ..safe
    };
    assert_fails(
        &run(login_audit(off), Check::LoginLockout).await,
        "correct password refused",
    );
}

#[tokio::test]
async fn the_enumeration_check_catches_a_service_that_names_unknown_accounts() {
    run(login_audit(SAFE), Check::LoginEnumeration)
        .await
        .assert_passed();
    let leaky = Protections {
        uniform: false,
        ..SAFE
    };
    assert_fails(
        &run(login_audit(leaky), Check::LoginEnumeration).await,
        "no such user",
    );
}

// ---- files ---------------------------------------------------------------

/// `PUT/GET/DELETE /files/{*path}` under `root`; `strict` refuses every
/// path that is not plain names.
fn file_service(root: PathBuf, strict: bool) -> Router {
    let resolve = move |path: &str| -> Result<PathBuf, StatusCode> {
        if strict {
            let plain = path.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && !c.contains(['\\', ':', '\0', '%', ';'])
                    && !c.chars().any(|ch| !ch.is_ascii() || ch.is_ascii_control())
            });
            if !plain {
                return Err(StatusCode::BAD_REQUEST);
            }
        }
        Ok(root.join(path)) // the weak version: a join without rules
    };
    let r1 = resolve.clone();
    let r2 = resolve.clone();
    Router::new().route(
        "/files/{*path}",
        put(move |Path(path): Path<String>, body: Bytes| async move {
            let file = r1(&path)?;
            std::fs::write(file, body).map_err(|_| StatusCode::NOT_FOUND)?;
            Ok::<_, StatusCode>(StatusCode::CREATED)
        })
        .get(move |Path(path): Path<String>| async move {
            let file = r2(&path)?;
            std::fs::read(file).map_err(|_| StatusCode::NOT_FOUND)
        })
        .delete(move |Path(path): Path<String>| async move {
            let file = resolve(&path)?;
            std::fs::remove_file(file).map_err(|_| StatusCode::NOT_FOUND)?;
            Ok::<_, StatusCode>(StatusCode::NO_CONTENT)
        }),
    )
}

#[tokio::test]
async fn the_traversal_check_catches_a_path_join_without_rules() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("deep").join("root");
    std::fs::create_dir_all(&root).unwrap();
    let audit = |strict| {
        Audit::new(Target::service(file_service(root.clone(), strict)))
            .files("/files")
            .token("unused")
    };

    run(audit(true), Check::FileTraversal).await.assert_passed();
    let result = run(audit(false), Check::FileTraversal).await;
    assert_fails(&result, "outside the root");
    assert!(result.to_string().contains("/etc/passwd"), "{result}");
    // The canary written outside the root was removed again.
    let litter: Vec<_> = std::fs::read_dir(dir.path().join("deep"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(litter, ["root"]);
}

#[tokio::test]
async fn payloads_a_rate_limit_answered_do_not_count_as_tested() {
    let dir = tempfile::tempdir().unwrap();
    let served = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let limited = file_service(dir.path().to_owned(), true).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let served = served.clone();
            async move {
                if served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 20 {
                    return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "60")])
                        .into_response();
                }
                next.run(req).await
            }
        },
    ));
    let audit = Audit::new(Target::service(limited))
        .files("/files")
        .token("unused");
    assert_fails(
        &run(audit, Check::FileTraversal).await,
        "a 429 tests nothing",
    );
}

// ---- JWT -----------------------------------------------------------------

const KEY: &[u8] = b"an audit test key of at least 32 bytes";

/// How much of a JWT the verifier checks.
#[derive(Clone, Copy)]
enum Verifier {
    Strict,
    AcceptsNone,
    IgnoresExpiry,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn verify(token: &str, how: Verifier) -> bool {
    let Ok((header, claims, _)) = decode(token) else {
        return false;
    };
    if matches!(how, Verifier::AcceptsNone)
        && header["alg"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case("none"))
    {
        return true;
    }
    if header["alg"] != "HS256"
        || header
            .as_object()
            .unwrap()
            .keys()
            .any(|k| !["alg", "typ"].contains(&k.as_str()))
    {
        return false;
    }
    // Re-sign the decoded parts: the JSON is re-serialised the same way by
    // serde_json, so an untouched token matches exactly.
    if sign_hs(&header, &claims, KEY).ok().as_deref() != Some(token) {
        return false;
    }
    let t = now();
    matches!(how, Verifier::IgnoresExpiry)
        || (claims["exp"].as_u64().is_some_and(|e| t < e)
            && claims["nbf"].as_u64().is_some_and(|n| n <= t))
}

fn jwt_service(how: Verifier) -> Router {
    Router::new().route(
        "/me",
        get(move |headers: HeaderMap| async move {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if verify(token, how) {
                (StatusCode::OK, "me")
            } else {
                (StatusCode::UNAUTHORIZED, "no")
            }
        }),
    )
}

fn valid_token() -> String {
    let t = now();
    sign_hs(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "u1", "iat": t, "nbf": t, "exp": t + 900}),
        KEY,
    )
    .unwrap()
}

fn jwt_audit(how: Verifier) -> Audit {
    Audit::new(Target::service(jwt_service(how)))
        .protected("/me")
        .token(&valid_token())
        .jwt_secret(KEY)
}

#[tokio::test]
async fn the_jwt_check_catches_a_verifier_accepting_none_or_ignoring_expiry() {
    run(jwt_audit(Verifier::Strict), Check::JwtForgeries)
        .await
        .assert_passed();
    assert_fails(
        &run(jwt_audit(Verifier::AcceptsNone), Check::JwtForgeries).await,
        "alg-none",
    );
    let result = run(jwt_audit(Verifier::IgnoresExpiry), Check::JwtForgeries).await;
    assert_fails(&result, "expired");
    assert!(result.to_string().contains("future-nbf"), "{result}");
    // The token never appears in a report.
    assert!(!result.to_string().contains(&valid_token()[..40]));
}

/// A service that fails instead of answering (an `Error` other than
/// `Infallible`, and not `Sync`).
#[derive(Clone)]
struct Failing(std::marker::PhantomData<std::cell::Cell<()>>);

impl tower_service::Service<axum::http::Request<axum::body::Body>> for Failing {
    type Response = axum::http::Response<axum::body::Body>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: axum::http::Request<axum::body::Body>) -> Self::Future {
        std::future::ready(Err(std::io::Error::other("backend down")))
    }
}

#[tokio::test]
async fn a_service_error_is_a_finding_not_a_crash() {
    let result = run(
        Audit::new(Target::service(Failing(std::marker::PhantomData))),
        Check::SecurityHeaders,
    )
    .await;
    assert_fails(
        &result,
        "returned an error instead of a response: backend down",
    );
}
