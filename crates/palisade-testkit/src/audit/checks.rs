//! The checks, written once over [`Target`].

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt as _;
use serde_json::Value;

use super::report::{CheckResult, Finding, Outcome};
use super::target::{describe_io, to_http};
use super::{Audit, Check, Profile, Target};
use crate::corpus;
use crate::http::{self, Request, Response};

/// What one check observed.
#[derive(Default)]
struct Log {
    findings: Vec<Finding>,
    notes: Vec<String>,
}

impl Log {
    fn fail(
        &mut self,
        sent: impl Into<String>,
        received: impl Into<String>,
        expected: &str,
        fix: &str,
    ) {
        self.findings.push(Finding {
            sent: sent.into(),
            received: received.into(),
            expected: expected.to_owned(),
            fix: fix.to_owned(),
        });
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// The login state shared by the checks of one run.
struct Session {
    account: Option<(String, String)>,
    token: Option<String>,
}

pub(super) struct Ctx<'a> {
    audit: &'a Audit,
    tag: String,
    session: Option<Result<Session, String>>,
}

fn random_tag() -> String {
    let mut bytes = [0u8; 9];
    let _ = getrandom::fill(&mut bytes);
    URL_SAFE_NO_PAD
        .encode(bytes)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                'x'
            }
        })
        .collect()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const SNIPPET: usize = 160;

fn clip(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.chars().count() > max {
        format!(
            "{}… ({} bytes)",
            cleaned.chars().take(max).collect::<String>(),
            text.len()
        )
    } else {
        cleaned
    }
}

/// The request as a developer reads it: method, target, headers (credentials
/// redacted, long values cut), body size.
fn show_req(req: &Request) -> String {
    let mut out = format!("{} {}", req.method(), clip(req.target(), 120));
    for (name, value) in req.headers() {
        let lower = name.to_ascii_lowercase();
        let value = match lower.as_str() {
            "authorization" => value
                .split_once(' ')
                .map_or("[redacted]".to_owned(), |(scheme, _)| {
                    format!("{scheme} [redacted]")
                }),
            "cookie" => "[redacted]".to_owned(),
            _ => clip(value, 60),
        };
        let _ = write!(out, " | {name}: {value}");
    }
    if !req.body_bytes().is_empty() {
        let _ = write!(out, " | body: {} bytes", req.body_bytes().len());
    }
    out
}

fn show_res(res: &Response, headers: &[&str]) -> String {
    let mut out = res.status.to_string();
    for name in ["content-type"].iter().chain(headers) {
        if let Some(v) = res.header(name) {
            let _ = write!(out, " | {name}: {}", clip(v, 100));
        }
    }
    if !res.body.is_empty() {
        let _ = write!(out, " | body: {}", clip(&res.text(), SNIPPET));
    }
    out
}

/// The `Retry-After` value when it is a number of seconds or an HTTP date.
fn retry_after(res: &Response) -> Option<&str> {
    res.header("retry-after").filter(|v| {
        let v = v.trim();
        v.parse::<u64>().is_ok() || (v.len() > 20 && v.ends_with("GMT"))
    })
}

/// The body length the declared-body probe announces.
const DECLARED: u64 = 1 << 30;
/// What it sends of it.
const FIRST: usize = 64 << 10;
/// The most the streamed probe sends.
const STREAMED: usize = 32 << 20;
/// Its chunk size.
const CHUNK: usize = 64 << 10;

const CANARY_PREFIX: &str = "palisade-audit canary ";

const TRAVERSAL_FIX: &str = "decode the path once, refuse `..`, separators, drive/UNC forms, NUL \
                             and device names with 400, and open files beneath the root only \
                             (palisade-fs's SafeRoot)";

impl<'a> Ctx<'a> {
    pub(super) fn new(audit: &'a Audit) -> Self {
        Self {
            audit,
            tag: random_tag(),
            session: None,
        }
    }

    fn target(&self) -> &Target {
        &self.audit.target
    }

    pub(super) async fn run(&mut self, check: Check) -> CheckResult {
        let mut log = Log::default();
        match check {
            Check::SecurityHeaders => self.security_headers(&mut log).await,
            Check::NoBanner => self.no_banner(&mut log).await,
            Check::HeadersOnErrors => self.headers_on_errors(&mut log).await,
            Check::RequestId => self.request_id(&mut log).await,
            Check::ProblemJson => self.problem_json(&mut log).await,
            Check::Cors => self.cors(&mut log).await,
            Check::BodyLimit => self.body_limit(&mut log).await,
            Check::Slowloris => self.slowloris(&mut log).await,
            Check::UnsafeMethods => self.unsafe_methods(&mut log).await,
            Check::OversizedHeaders => self.oversized_headers(&mut log).await,
            Check::FileTraversal => self.file_traversal(&mut log).await,
            Check::JwtForgeries => self.jwt_forgeries(&mut log).await,
            Check::LoginEnumeration => self.login_enumeration(&mut log).await,
            Check::LoginLockout => self.login_lockout(&mut log).await,
            Check::LoginRateLimit => self.login_rate_limit(&mut log).await,
            Check::RateLimit => self.rate_limit(&mut log).await,
        }
        CheckResult {
            check,
            outcome: if log.findings.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            findings: log.findings,
            notes: log.notes,
        }
    }

    /// `path` under the target's prefix.
    fn req(&self, method: &str, path: &str) -> Request {
        Request::new(method, &self.target().path(path))
    }

    /// Sends once; a request the target cannot carry is an error.
    async fn send_once(&self, req: &Request) -> Result<Response, String> {
        self.target().send(req.clone()).await
    }

    /// Sends, waiting out a short `Retry-After` (at most 3 times, 5 s each):
    /// checks that are not about limits must not be judged on a 429.
    async fn send(&self, req: &Request) -> Result<Response, String> {
        let mut res = self.send_once(req).await;
        for _ in 0..3 {
            let wait = match &res {
                Ok(r) if r.status == 429 => r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .filter(|s| *s <= 5),
                _ => None,
            };
            let Some(wait) = wait else { break };
            tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
            res = self.send_once(req).await;
        }
        res
    }

    /// Sends and records a finding when there is no answer at all.
    async fn exchange(&self, log: &mut Log, req: &Request, expected: &str) -> Option<Response> {
        match self.send(req).await {
            Ok(res) => Some(res),
            Err(e) => {
                log.fail(
                    show_req(req),
                    e,
                    expected,
                    "the service must answer every well-formed request",
                );
                None
            }
        }
    }

    /// [`exchange`](Self::exchange) for a probe meant to provoke an error:
    /// an answer below 400 is noted (nothing to judge) and gives `None`.
    async fn error_exchange(
        &self,
        log: &mut Log,
        req: &Request,
        expected: &str,
    ) -> Option<Response> {
        let res = self.exchange(log, req, expected).await?;
        if res.status < 400 {
            log.note(format!(
                "{} answered {}, not an error",
                show_req(req),
                res.status
            ));
            return None;
        }
        Some(res)
    }

    fn missing_path(&self) -> String {
        format!("/palisade-audit-{}-missing", self.tag)
    }

    // ---- headers -------------------------------------------------------

    async fn security_headers(&mut self, log: &mut Log) {
        let req = self.req("GET", "/");
        let Some(res) = self
            .exchange(log, &req, "an answer with security headers")
            .await
        else {
            return;
        };
        let shown = show_res(
            &res,
            &[
                "content-security-policy",
                "strict-transport-security",
                "x-content-type-options",
                "x-frame-options",
                "referrer-policy",
                "cache-control",
            ],
        );
        for (problem, fix) in header_problems(&res, self.audit.profile) {
            log.fail(show_req(&req), shown.clone(), &problem, fix);
        }
    }

    async fn no_banner(&mut self, log: &mut Log) {
        for path in ["/".to_owned(), self.missing_path()] {
            let req = self.req("GET", &path);
            let Some(res) = self.exchange(log, &req, "an answer without a banner").await else {
                continue;
            };
            for name in [
                "server",
                "x-powered-by",
                "x-aspnet-version",
                "x-aspnetmvc-version",
                "x-runtime",
            ] {
                if let Some(v) = res.header(name) {
                    log.fail(
                        show_req(&req),
                        format!("{} | {name}: {v}", res.status),
                        &format!("no `{name}` header"),
                        "remove the header (it tells an attacker which software and version to target)",
                    );
                }
            }
        }
    }

    async fn headers_on_errors(&mut self, log: &mut Log) {
        let probes = [
            self.req("GET", &self.missing_path()),
            self.req("PATCH", "/"),
        ];
        let mut errors = 0;
        for req in probes {
            let Some(res) = self
                .error_exchange(log, &req, "an error answer with nosniff and a CSP")
                .await
            else {
                continue;
            };
            errors += 1;
            let shown = show_res(&res, &["x-content-type-options", "content-security-policy"]);
            if !res
                .header("x-content-type-options")
                .is_some_and(|v| v.eq_ignore_ascii_case("nosniff"))
            {
                log.fail(
                    show_req(&req),
                    shown.clone(),
                    "`X-Content-Type-Options: nosniff` on error answers too",
                    "set the security headers in the outermost layer, so 404, 405 and errors from \
                     inner layers carry them (palisade-http's SecurityHeadersLayer does)",
                );
            }
            if res.header("content-security-policy").is_none() {
                log.fail(
                    show_req(&req),
                    shown,
                    "a Content-Security-Policy on error answers too",
                    "set the security headers in the outermost layer, so error pages carry them",
                );
            }
        }
        if errors == 0 {
            log.note("no probe produced an error answer; nothing to judge");
        }
    }

    // ---- request ids ---------------------------------------------------

    async fn request_id(&mut self, log: &mut Log) {
        let fix_missing = "set an X-Request-Id on every answer: the incoming one when it is 1-128 \
                           characters of [A-Za-z0-9._-], else a new UUIDv7 \
                           (palisade-telemetry's RequestIdLayer)";
        let req = self.req("GET", "/");
        if let Some(res) = self.exchange(log, &req, "an X-Request-Id").await {
            match res.header("x-request-id") {
                Some(id) if !id.is_empty() => log.note(format!(
                    "without an incoming id the service answered id `{}`",
                    clip(id, 60)
                )),
                _ => log.fail(
                    show_req(&req),
                    show_res(&res, &["x-request-id"]),
                    "a generated X-Request-Id on the answer",
                    fix_missing,
                ),
            }
        }
        let valid = format!("palisade-audit.{}_1-2", self.tag);
        let req = self.req("GET", "/").header("x-request-id", &valid);
        if let Some(res) = self.exchange(log, &req, "the id echoed").await
            && res.header("x-request-id") != Some(valid.as_str())
        {
            {
                log.fail(
                    show_req(&req),
                    show_res(&res, &["x-request-id"]),
                    &format!("`X-Request-Id: {valid}` echoed (a valid id joins the caller's logs to the service's)"),
                    fix_missing,
                );
            }
        }
        for bad in corpus::invalid_request_ids() {
            let req = self.req("GET", "/").header("x-request-id", &bad);
            match self.send(&req).await {
                Ok(res) => self.judge_replaced(log, &req, &res, &bad),
                Err(e) if e.contains("in process") => log.note(format!("{}: {e}", show_req(&req))),
                Err(e) => log.fail(
                    show_req(&req),
                    e,
                    "an answer with a fresh id",
                    "the service must answer",
                ),
            }
        }
        // A bare CR inside the value, on the wire only (no client library
        // can build it).
        if let Some((addr, authority)) = self.target().wire() {
            let path = self.target().path("/");
            let bytes = format!(
                "GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\nx-request-id: audit\rx-injected: 1\r\n\r\n"
            );
            let sent = format!("GET {path} | x-request-id: audit<CR>x-injected: 1 (a bare CR)");
            match tokio::task::spawn_blocking(move || http::raw(addr, bytes.as_bytes())).await {
                Ok(Ok(res)) if res.status == 400 && res.header("x-request-id").is_none() => {
                    log.note("a bare CR in the id: refused with 400");
                }
                Ok(Ok(res)) => {
                    self.judge_replaced(log, &Request::get(&sent), &res, "audit\rx-injected: 1");
                }
                Ok(Err(_)) | Err(_) => {
                    log.note("a bare CR in the id: the server closed the connection (safe)");
                }
            }
        }
    }

    #[allow(clippy::unused_self)]
    fn judge_replaced(&self, log: &mut Log, req: &Request, res: &Response, bad: &str) {
        let fix = "validate incoming ids (1-128 characters of [A-Za-z0-9._-]) and replace the \
                   others with a generated one: an echoed id carries attacker text into logs and \
                   answers";
        if res.status >= 500 {
            log.fail(
                show_req(req),
                show_res(res, &["x-request-id"]),
                "a normal answer with a fresh id, never a 5xx",
                fix,
            );
            return;
        }
        if res.header("x-injected").is_some() {
            log.fail(
                show_req(req),
                show_res(res, &["x-injected"]),
                "no injected header in the answer",
                fix,
            );
        }
        match res.header("x-request-id") {
            Some(id) if id == bad || (id.contains(bad.trim()) && !bad.trim().is_empty()) => log
                .fail(
                    show_req(req),
                    show_res(res, &["x-request-id"]),
                    "the invalid id replaced by a fresh one",
                    fix,
                ),
            Some(id) if !id.is_empty() => {}
            _ => log.fail(
                show_req(req),
                show_res(res, &["x-request-id"]),
                "a fresh X-Request-Id",
                fix,
            ),
        }
    }

    // ---- errors --------------------------------------------------------

    async fn problem_json(&mut self, log: &mut Log) {
        let mut probes = vec![
            self.req("GET", &self.missing_path()),
            self.req(
                "GET",
                &format!("{}/%2e%2e%2f%2e%2e%2fetc%2fpasswd", self.missing_path()),
            ),
            self.req("PATCH", "/"),
        ];
        if let Some(login) = &self.audit.login {
            probes.push(
                self.req("POST", &login.path)
                    .header("content-type", "application/json")
                    .body(r#"{"palisade-audit": [1, 2"#),
            );
        }
        for req in probes {
            let Some(res) = self.error_exchange(log, &req, "a problem+json error").await else {
                continue;
            };
            let ct = res.header("content-type").unwrap_or_default();
            if !ct
                .to_ascii_lowercase()
                .starts_with("application/problem+json")
            {
                log.fail(
                    show_req(&req),
                    show_res(&res, &[]),
                    "Content-Type: application/problem+json with {type, title, status, detail} (RFC 9457)",
                    "answer every error, 404 and 405 included, with one problem type \
                     (palisade-core's ProblemDetails; SecureStack's fallback turns bare 404/405 into problems)",
                );
            } else if res
                .json()
                .ok()
                .and_then(|v| v.get("status").and_then(Value::as_u64))
                != Some(u64::from(res.status))
            {
                log.fail(
                    show_req(&req),
                    show_res(&res, &[]),
                    "a JSON body whose `status` is the HTTP status",
                    "serialise the problem with its status (RFC 9457 section 3.1.2)",
                );
            }
            if let Some(leak) = leak_in(&res.text()) {
                log.fail(
                    show_req(&req),
                    show_res(&res, &[]),
                    &format!("no internals in an error (found {leak})"),
                    "log the detail with the request id and answer a generic problem",
                );
            }
        }
    }

    // ---- CORS ----------------------------------------------------------

    async fn cors(&mut self, log: &mut Log) {
        let origin = "https://palisade-audit.invalid";
        let fix = "allow exact origins from configuration only; never reflect the Origin header, \
                   never pair `*` with credentials (palisade-http's CorsLayer)";
        let probes = [
            self.req("GET", "/").header("origin", origin),
            self.req("GET", "/").header("origin", "null"),
            self.req("OPTIONS", "/")
                .header("origin", origin)
                .header("access-control-request-method", "DELETE")
                .header("access-control-request-headers", "authorization"),
        ];
        for req in probes {
            let Some(res) = self
                .exchange(log, &req, "no CORS permission for a foreign origin")
                .await
            else {
                continue;
            };
            let sent_origin = req
                .headers()
                .iter()
                .find(|(n, _)| n == "origin")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let shown = show_res(
                &res,
                &[
                    "access-control-allow-origin",
                    "access-control-allow-credentials",
                    "access-control-allow-methods",
                ],
            );
            let acao = res.header("access-control-allow-origin");
            let creds = res
                .header("access-control-allow-credentials")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            if res.status >= 500 {
                log.fail(
                    show_req(&req),
                    shown.clone(),
                    "a 4xx or an answer without CORS headers, never a 5xx",
                    fix,
                );
            }
            if acao == Some(sent_origin.as_str()) {
                log.fail(
                    show_req(&req),
                    shown.clone(),
                    &format!("`{sent_origin}` not allowed (not in Access-Control-Allow-Origin)"),
                    fix,
                );
            }
            if acao == Some("*") && creds {
                log.fail(
                    show_req(&req),
                    shown.clone(),
                    "never `Access-Control-Allow-Origin: *` with credentials",
                    fix,
                );
            }
            if req.method() == "OPTIONS" && acao == Some("*") {
                log.fail(
                    show_req(&req),
                    shown,
                    "a preflight from a foreign origin refused (no `*` permission)",
                    fix,
                );
            }
        }
    }

    // ---- body limit and slow heads ---------------------------------------

    fn body_route(&self) -> String {
        self.audit
            .body_path
            .clone()
            .or_else(|| self.audit.login.as_ref().map(|l| l.path.clone()))
            .unwrap_or_else(|| "/".to_owned())
    }

    async fn body_limit(&mut self, log: &mut Log) {
        let path = self.target().path(&self.body_route());
        let fix = "refuse a Content-Length above the route's limit with 413 before reading, and \
                   stop streamed bodies at the limit (palisade-http's body limit; axum's \
                   DefaultBodyLimit only applies to extractors)";
        let sent = format!(
            "POST {path} | content-type: application/json | content-length: {DECLARED} | then \
             {FIRST} bytes of body, and no more"
        );
        let expected = "413 Payload Too Large, answered before the rest of the body is sent";
        match self.declared_body(&path).await {
            Ok(res) if res.status == 413 => {
                log.note(format!("413 after {FIRST} of {DECLARED} declared bytes"));
            }
            Ok(res) => log.fail(sent, show_res(&res, &[]), expected, fix),
            Err(e) => log.fail(sent, e, expected, fix),
        }
        let sent = format!(
            "POST {path} | content-type: application/json | transfer-encoding: chunked | \
             64 KiB chunks, up to {STREAMED} bytes"
        );
        let expected = "413 once the stream passes the limit, before it ends";
        match self.streamed_body(&path).await {
            Ok((res, bytes)) if res.status == 413 && bytes < STREAMED => {
                log.note(format!("413 after {bytes} streamed bytes"));
            }
            Ok((res, bytes)) => log.fail(
                sent,
                format!("{} after {bytes} bytes were sent", show_res(&res, &[])),
                expected,
                fix,
            ),
            Err(e) => log.fail(sent, e, expected, fix),
        }
    }

    /// A declared 1 GiB body of which only the first 64 KiB come.
    async fn declared_body(&self, path: &str) -> Result<Response, String> {
        let Some((addr, authority)) = self.target().wire() else {
            let first = bytes::Bytes::from(vec![b' '; FIRST]);
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::pending());
            let req = to_http(
                &Request::post(path)
                    .header("content-type", "application/json")
                    .header("content-length", &DECLARED.to_string()),
                Body::from_stream(stream),
            )?;
            return match self.target().send_http(req).await {
                Some(res) => {
                    res.map_err(|e| format!("{e}: the service is waiting for the rest of the body"))
                }
                None => Err("not an in-process target".to_owned()),
            };
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {DECLARED}\r\n\r\n"
        );
        tokio::task::spawn_blocking(move || -> Result<Response, String> {
            let mut stream = http::connect(addr).map_err(|e| describe_io(&e))?;
            let mut bytes = head.into_bytes();
            bytes.extend(std::iter::repeat_n(b' ', FIRST));
            // The server may answer and close before reading it all.
            let _ = stream.write_all(&bytes);
            http::read_response(&mut stream).map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "no answer within {} s: the server is waiting for the rest of the body",
                    http::READ_TIMEOUT.as_secs()
                ),
                _ => describe_io(&e),
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A chunked body of up to 32 MiB; the answer and how much was sent
    /// before it came.
    async fn streamed_body(&self, path: &str) -> Result<(Response, usize), String> {
        let Some((addr, authority)) = self.target().wire() else {
            let produced = Arc::new(AtomicUsize::new(0));
            let counter = produced.clone();
            let piece = bytes::Bytes::from(vec![b' '; CHUNK]);
            let stream = futures_util::stream::iter(0..STREAMED / CHUNK).map(move |_| {
                counter.fetch_add(CHUNK, Ordering::SeqCst);
                Ok::<_, std::io::Error>(piece.clone())
            });
            let req = to_http(
                &Request::post(path).header("content-type", "application/json"),
                Body::from_stream(stream),
            )?;
            return match self.target().send_http(req).await {
                Some(res) => res.map(|r| (r, produced.load(Ordering::SeqCst))),
                None => Err("not an in-process target".to_owned()),
            };
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        tokio::task::spawn_blocking(move || -> Result<(Response, usize), String> {
            let mut stream = http::connect(addr).map_err(|e| describe_io(&e))?;
            stream
                .write_all(head.as_bytes())
                .map_err(|e| describe_io(&e))?;
            let chunk = http::chunk(&vec![b' '; CHUNK]);
            let mut sent = 0;
            let mut peek = [0u8; 1];
            while sent < STREAMED {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                sent += CHUNK;
                // Stop as soon as the server answers: writing on would make
                // it reset the connection and lose the answer.
                stream.set_nonblocking(true).map_err(|e| e.to_string())?;
                let early = stream.peek(&mut peek);
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                match early {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => break,
                }
            }
            if sent >= STREAMED {
                let _ = stream.write_all(b"0\r\n\r\n");
            }
            let res = http::read_response(&mut stream).map_err(|e| describe_io(&e))?;
            Ok((res, sent))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn slowloris(&mut self, log: &mut Log) {
        let Some((addr, authority)) = self.target().wire() else {
            return;
        };
        let bound = self.audit.head_timeout;
        let path = self.target().path("/");
        let result = tokio::task::spawn_blocking(move || -> Result<(Duration, String), String> {
            let mut stream = http::connect(addr).map_err(|e| describe_io(&e))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
            let start = Instant::now();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\n").as_bytes())
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1024];
            let mut line = 0u32;
            while start.elapsed() <= bound + Duration::from_secs(2) {
                match stream.read(&mut buf) {
                    Ok(0) => return Ok((start.elapsed(), "closed the connection".to_owned())),
                    Ok(n) => {
                        let text =
                            String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
                        let status = text.lines().next().unwrap_or_default().to_owned();
                        return Ok((start.elapsed(), format!("answered `{}`", clip(&status, 60))));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        line += 1;
                        if stream
                            .write_all(format!("x-palisade-audit-{line}: a\r\n").as_bytes())
                            .is_err()
                        {
                            return Ok((
                                start.elapsed(),
                                "stopped reading (write failed)".to_owned(),
                            ));
                        }
                    }
                    Err(_) => return Ok((start.elapsed(), "reset the connection".to_owned())),
                }
            }
            Err(format!(
                "still open after {} s, one header line a second",
                start.elapsed().as_secs()
            ))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let sent = "a request head, then one more header line every second, never the final CRLF"
            .to_owned();
        let fix = "bound the time a whole request head may take (palisade::serve: 10 s by default; \
                   hyper's header_read_timeout), not only the gap between reads";
        let expected = format!("the connection cut within {} s", bound.as_secs());
        match result {
            Ok((elapsed, what)) if elapsed <= bound => log.note(format!(
                "the server {what} after {} ms",
                elapsed.as_millis()
            )),
            Ok((elapsed, what)) => log.fail(
                sent,
                format!("the server {what} after {} ms", elapsed.as_millis()),
                &expected,
                fix,
            ),
            Err(e) => log.fail(sent, e, &expected, fix),
        }
    }

    // ---- methods and headers ----------------------------------------------

    async fn unsafe_methods(&mut self, log: &mut Log) {
        let marker = format!("palisade-audit-marker-{}", self.tag);
        for method in ["TRACE", "TRACK", "PALISADEAUDIT"] {
            let req = self
                .req(method, "/")
                .header("x-palisade-audit", &marker)
                .header("cookie", &format!("palisade_audit={marker}"));
            match self.send(&req).await {
                Ok(res) => judge_safe(
                    log,
                    &req,
                    &res,
                    &marker,
                    "refuse methods the service does not route (405 or 501), never reflect a request",
                ),
                Err(e) => log.note(format!("{method}: {e} (no echo)")),
            }
        }
    }

    async fn oversized_headers(&mut self, log: &mut Log) {
        let marker = format!("palisade-audit-marker-{}", self.tag);
        let big = self.req("GET", "/").header(
            "x-palisade-audit",
            &format!("{}{marker}", "a".repeat(64 << 10)),
        );
        let mut many = self.req("GET", "/");
        for i in 0..500 {
            many = many.header(
                &format!("x-palisade-audit-{i}"),
                &format!("{}{marker}", "b".repeat(64)),
            );
        }
        for req in [big, many] {
            match self.send(&req).await {
                Ok(res) => judge_safe(
                    log,
                    &req,
                    &res,
                    &marker,
                    "cap the request head (431 or 400) and never reflect it",
                ),
                Err(e) => log.note(format!(
                    "{}: {e} (refused at the parser)",
                    clip(&show_req(&req), 80)
                )),
            }
        }
    }

    // ---- sessions -------------------------------------------------------

    /// Registers and logs in once per run when a check needs it.
    async fn session(&mut self) -> Result<&Session, String> {
        if self.session.is_none() {
            let session = self.open_session().await;
            self.session = Some(session);
        }
        match &self.session {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no session".to_owned()),
        }
    }

    async fn open_session(&self) -> Result<Session, String> {
        let token = self
            .audit
            .token
            .as_ref()
            .map(|t| String::from_utf8_lossy(&t.0).into_owned());
        let Some(login) = &self.audit.login else {
            return Ok(Session {
                account: None,
                token,
            });
        };
        let account = match (&login.account, &login.register) {
            (Some(account), _) => Some(account.clone()),
            (None, Some(register)) => {
                let user = format!("palisade-audit-{}@example.com", self.tag);
                let mut raw = [0u8; 18];
                getrandom::fill(&mut raw)
                    .map_err(|e| format!("no randomness for a password: {e}"))?;
                let password = format!("Pa-{}", URL_SAFE_NO_PAD.encode(raw));
                let req = self
                    .req("POST", register)
                    .header("content-type", "application/json")
                    .body(login.body(&user, &password));
                let res = self
                    .send(&req)
                    .await
                    .map_err(|e| format!("registering an audit account: {e}"))?;
                if !(200..300).contains(&res.status) {
                    return Err(format!(
                        "registering an audit account ({}) answered {}",
                        show_req(&req),
                        show_res(&res, &[])
                    ));
                }
                Some((user, password))
            }
            (None, None) => None,
        };
        let needs_token = token.is_none()
            && (self.audit.files.is_some() || self.audit.protected.is_some())
            && self
                .audit
                .selected
                .iter()
                .any(|c| matches!(c, Check::FileTraversal | Check::JwtForgeries));
        let token = match (&account, token) {
            (Some((user, password)), None) if needs_token => {
                let req = self.login_req(user, password);
                let res = self
                    .send(&req)
                    .await
                    .map_err(|e| format!("logging in: {e}"))?;
                if !(200..300).contains(&res.status) {
                    return Err(format!(
                        "logging in with the audit account answered {}",
                        show_res(&res, &[])
                    ));
                }
                let pointer = &login.token_pointer;
                let token = res
                    .json()
                    .ok()
                    .and_then(|v| {
                        v.pointer(pointer)
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .ok_or_else(|| {
                        format!(
                            "the login answer has no string at `{pointer}` (set the token pointer)"
                        )
                    })?;
                Some(token)
            }
            (_, token) => token,
        };
        Ok(Session { account, token })
    }

    fn login_req(&self, user: &str, password: &str) -> Request {
        let login = self.audit.login.as_ref();
        let path = login.map_or("/", |l| l.path.as_str());
        let body = login.map(|l| l.body(user, password)).unwrap_or_default();
        self.req("POST", path)
            .header("content-type", "application/json")
            .body(body)
    }

    fn show_login(&self, user: &str, which: &str) -> String {
        let path = self.audit.login.as_ref().map_or("/", |l| l.path.as_str());
        format!(
            "POST {} with user `{user}` and {which}",
            self.target().path(path)
        )
    }

    async fn token(&mut self, log: &mut Log) -> Option<String> {
        match self.session().await {
            Ok(Session { token: Some(t), .. }) => Some(t.clone()),
            Ok(_) => {
                log.fail(
                    "(setup)",
                    "no token",
                    "a valid bearer token",
                    "pass --token, or a login with an account",
                );
                None
            }
            Err(e) => {
                log.fail(
                    "(setup)",
                    e,
                    "a logged-in audit session",
                    "check the login options",
                );
                None
            }
        }
    }

    // ---- files ------------------------------------------------------------

    async fn file_traversal(&mut self, log: &mut Log) {
        let Some(token) = self.token(log).await else {
            return;
        };
        let Some(files) = self.audit.files.clone() else {
            return;
        };
        let bearer = format!("Bearer {token}");
        let canary = format!("{CANARY_PREFIX}{}\n", self.tag);
        // Control: the route works and the audit can see a file it stored.
        if !self.traversal_control(log, &files, &bearer, &canary).await {
            return;
        }
        // Writes through traversal: a canary planted outside the root.
        let (writes, stored_anywhere) = self.traversal_writes(log, &files, &bearer, &canary).await;
        // Reads through the corpus: no system file, no canary, no 5xx.
        let reads = self.traversal_reads(log, &files, &bearer).await;
        log.note(format!(
            "{writes} traversal writes ({stored_anywhere} stored anywhere), {reads} traversal reads from the corpus"
        ));
    }

    async fn traversal_control(
        &self,
        log: &mut Log,
        files: &str,
        bearer: &str,
        canary: &str,
    ) -> bool {
        let file = |name: &str| format!("{files}/{name}");
        let control = format!("palisade-audit-{}-control.txt", self.tag);
        let put = self
            .req("PUT", &file(&control))
            .header("authorization", bearer)
            .header("content-type", "text/plain")
            .body(canary);
        let get = self
            .req("GET", &file(&control))
            .header("authorization", bearer);
        let stored = self.send(&put).await;
        let read = self.send(&get).await;
        match (&stored, &read) {
            (Ok(s), Ok(r))
                if (200..300).contains(&s.status)
                    && r.status == 200
                    && r.body == canary.as_bytes() =>
            {
                log.note(format!(
                    "control file stored and read back at {}",
                    file(&control)
                ));
            }
            _ => {
                let got = |r: &Result<Response, String>| {
                    r.as_ref().map_or_else(Clone::clone, |r| show_res(r, &[]))
                };
                log.fail(
                    format!("{} then {}", show_req(&put), show_req(&get)),
                    format!("{} then {}", got(&stored), got(&read)),
                    "the control file stored (2xx) and read back (200, same bytes)",
                    "give the audit a file route where PUT stores the raw body and GET returns it",
                );
                return false;
            }
        }
        let _ = self
            .send(
                &self
                    .req("DELETE", &file(&control))
                    .header("authorization", bearer),
            )
            .await;
        true
    }

    async fn traversal_writes(
        &self,
        log: &mut Log,
        files: &str,
        bearer: &str,
        canary: &str,
    ) -> (usize, usize) {
        let fix = TRAVERSAL_FIX;
        let file = |name: &str| format!("{files}/{name}");
        let escapes = [
            "../",
            "..%2f",
            "%2e%2e/",
            "%2e%2e%2f",
            "..%5c",
            "..%255c",
            "%252e%252e%252f",
            "..%c0%af",
            "....//",
            "..;/",
        ];
        let mut stored_anywhere = 0;
        for (i, escape) in escapes.iter().enumerate() {
            let name = format!("palisade-audit-{}-w{i}.txt", self.tag);
            let target = file(&format!("{escape}{name}"));
            let put = self
                .req("PUT", &target)
                .header("authorization", bearer)
                .header("content-type", "text/plain")
                .body(canary);
            let Ok(res) = self.send(&put).await else {
                continue;
            };
            if res.status >= 500 {
                log.fail(
                    show_req(&put),
                    show_res(&res, &[]),
                    "400 for a traversal path, never a 5xx",
                    fix,
                );
                continue;
            }
            if res.status == 429 {
                unanswered(log, &put, &res);
            }
            if !(200..300).contains(&res.status) {
                continue;
            }
            stored_anywhere += 1;
            let inside = self
                .req("GET", &file(&name))
                .header("authorization", bearer);
            let inside_res = self.send(&inside).await;
            if inside_res
                .as_ref()
                .is_ok_and(|r| r.status == 200 && r.body == canary.as_bytes())
            {
                log.note(format!(
                    "{} was stored inside the root as `{name}` (the `..` was dropped)",
                    show_req(&put)
                ));
                let _ = self
                    .send(
                        &self
                            .req("DELETE", &file(&name))
                            .header("authorization", bearer),
                    )
                    .await;
            } else {
                let back = self.req("GET", &target).header("authorization", bearer);
                let back_res = self.send(&back).await;
                let read_back = back_res
                    .as_ref()
                    .is_ok_and(|r| r.status == 200 && r.body == canary.as_bytes());
                log.fail(
                    show_req(&put),
                    format!(
                        "{}; the canary is not inside the root{}",
                        show_res(&res, &[]),
                        if read_back {
                            ", and reads back through the same traversal path"
                        } else {
                            ""
                        }
                    ),
                    "400 for a path with `..`: the canary was stored outside the root",
                    fix,
                );
                let _ = self
                    .send(&self.req("DELETE", &target).header("authorization", bearer))
                    .await;
            }
        }
        (escapes.len(), stored_anywhere)
    }

    async fn traversal_reads(&self, log: &mut Log, files: &str, bearer: &str) -> usize {
        let fix = TRAVERSAL_FIX;
        let file = |name: &str| format!("{files}/{name}");
        let sample = traversal_sample();
        for payload in &sample {
            let target = file(&crate::corpus::request_path(payload));
            let req = self.req("GET", &target).header("authorization", bearer);
            let res = match self.send(&req).await {
                Ok(r) => r,
                Err(e) if e.contains("in process") => continue,
                Err(e) => {
                    log.fail(show_req(&req), e, "a 4xx answer", fix);
                    continue;
                }
            };
            if res.status == 429 {
                unanswered(log, &req, &res);
            } else if res.status >= 500 {
                log.fail(
                    show_req(&req),
                    show_res(&res, &[]),
                    "400 (unsafe path) or 404, never a 5xx",
                    fix,
                );
            } else if res.status == 200 {
                let text = res.text();
                if let Some(what) = outside_file(&text) {
                    log.fail(
                        show_req(&req),
                        show_res(&res, &[]),
                        &format!("no file from outside the root (this is {what})"),
                        fix,
                    );
                }
            }
        }
        sample.len()
    }

    // ---- JWT ---------------------------------------------------------------

    async fn jwt_forgeries(&mut self, log: &mut Log) {
        let Some(token) = self.token(log).await else {
            return;
        };
        let Some(path) = self.audit.protected.clone() else {
            return;
        };
        let fix = "verify with an algorithm allowlist and the service's own keys only (never the \
                   token's alg, kid, jwk or jku), require exp/nbf/iat with a small leeway \
                   (palisade-auth's Jwt)";
        let control = self
            .req("GET", &path)
            .header("authorization", &format!("Bearer {token}"));
        match self.send(&control).await {
            Ok(res) if (200..300).contains(&res.status) => {}
            Ok(res) => {
                log.fail(
                    show_req(&control),
                    show_res(&res, &[]),
                    "2xx for the valid token (the control)",
                    "give a route the valid token opens",
                );
                return;
            }
            Err(e) => {
                log.fail(
                    show_req(&control),
                    e,
                    "2xx for the valid token (the control)",
                    "give a route the valid token opens",
                );
                return;
            }
        }
        let secret = self.audit.jwt_secret.as_ref().map(|k| k.0.as_slice());
        let forged = match corpus::jwt::forgeries(&token, secret, now_unix()) {
            Ok(f) => f,
            Err(e) => {
                log.fail(
                    "(setup)",
                    format!("the token cannot be forged: {e}"),
                    "a JWS compact token",
                    "give a JWT",
                );
                return;
            }
        };
        for forgery in &forged {
            let req = self
                .req("GET", &path)
                .header("authorization", &format!("Bearer {}", forgery.token));
            let sent = format!(
                "{} ({}: {})",
                show_req(&req),
                forgery.name,
                forgery.description
            );
            match self.send(&req).await {
                Ok(res) if forgery.must_accept => {
                    if !(200..300).contains(&res.status) {
                        log.fail(
                            sent,
                            show_res(&res, &[]),
                            "2xx: the given key signs tokens the service accepts",
                            "pass the service's signing key",
                        );
                    }
                }
                Ok(res) if matches!(res.status, 400 | 401 | 403) => {}
                Ok(res) => log.fail(sent, show_res(&res, &[]), "401 for a forged token", fix),
                Err(e) => log.fail(sent, e, "401 for a forged token", fix),
            }
        }
        log.note(format!(
            "{} forgeries sent to {}",
            forged.len(),
            self.target().path(&path)
        ));
    }

    // ---- login ---------------------------------------------------------------

    async fn account(&mut self, log: &mut Log) -> Option<(String, String)> {
        match self.session().await {
            Ok(Session {
                account: Some(a), ..
            }) => Some(a.clone()),
            Ok(_) => {
                log.fail(
                    "(setup)",
                    "no account",
                    "a known account",
                    "pass --user/--password or --register",
                );
                None
            }
            Err(e) => {
                log.fail(
                    "(setup)",
                    e,
                    "a registered or given account",
                    "check the login options",
                );
                None
            }
        }
    }

    fn wrong_password(&self) -> String {
        format!("wrong-{}-Password", self.tag)
    }

    async fn login_enumeration(&mut self, log: &mut Log) {
        let Some((user, _)) = self.account(log).await else {
            return;
        };
        let unknown = format!("palisade-audit-nobody-{}@example.com", self.tag);
        let wrong = self.wrong_password();
        let known_req = self.login_req(&user, &wrong);
        let unknown_req = self.login_req(&unknown, &wrong);
        let (Ok(known), Ok(other)) = (self.send(&known_req).await, self.send(&unknown_req).await)
        else {
            log.fail(
                "two failed logins",
                "no answer",
                "two answers",
                "the service must answer",
            );
            return;
        };
        let sent = format!(
            "{} then {}",
            self.show_login(&user, "a wrong password"),
            self.show_login(
                &unknown,
                "the same wrong password (an account that does not exist)"
            )
        );
        let received = format!(
            "known: {} / unknown: {}",
            show_res(&known, &[]),
            show_res(&other, &[])
        );
        let fix = "answer a wrong password and an unknown account alike (same status, body and \
                   headers), and hash a dummy password for unknown accounts so timing matches too \
                   (palisade-auth's Login)";
        if known.status == 429 || other.status == 429 {
            log.fail(
                sent,
                received,
                "two comparable answers (the login limit answered first)",
                "run this check before the login budget is spent, or raise the limit",
            );
            return;
        }
        if known.status != other.status {
            log.fail(sent, received, "the same status for both", fix);
        } else if normalised(&known) != normalised(&other) {
            log.fail(
                sent,
                received,
                "the same body for both (request ids aside)",
                fix,
            );
        } else if header_names(&known) != header_names(&other) {
            log.fail(
                sent,
                received,
                &format!(
                    "the same headers for both ({:?} vs {:?})",
                    header_names(&known),
                    header_names(&other)
                ),
                fix,
            );
        }
    }

    async fn login_lockout(&mut self, log: &mut Log) {
        let Some((user, password)) = self.account(log).await else {
            return;
        };
        let failures = self.audit.login.as_ref().map_or(5, |l| l.lockout_after);
        let wrong = self.wrong_password();
        let mut statuses = Vec::new();
        for _ in 0..failures {
            match self.send_once(&self.login_req(&user, &wrong)).await {
                Ok(res) => statuses.push(res.status),
                Err(e) => {
                    log.fail(
                        self.show_login(&user, "a wrong password"),
                        e,
                        "401",
                        "the service must answer",
                    );
                    return;
                }
            }
        }
        let req = self.login_req(&user, &password);
        let sent = format!(
            "{failures} x {}, then the correct password",
            self.show_login(&user, "a wrong password")
        );
        match self.send_once(&req).await {
            Ok(res) if (200..300).contains(&res.status) => log.fail(
                sent,
                format!("failures answered {statuses:?}; the correct password then: {}", show_res(&res, &[])),
                "the correct password refused (429 or 423 with Retry-After) while the account is locked",
                "count failures per (account, client) and refuse every attempt, the right \
                 password included, after the threshold (palisade-auth's Lockout)",
            ),
            Ok(res) => {
                log.note(format!(
                    "failures answered {statuses:?}; the correct password then {}",
                    res.status
                ));
                // Which protection refused: a login for another account from
                // the same address right after tells the per-IP limit (also
                // refused) from the account's lockout (answered normally).
                let other = format!("palisade-audit-nobody-control-{}@example.com", self.tag);
                match self.send_once(&self.login_req(&other, &wrong)).await {
                    Ok(control) if control.status == 429 => log.note(
                        "another account's login from this address is refused too: the per-IP \
                         login limit answered, so from one address the check cannot tell whether \
                         the lockout would have",
                    ),
                    Ok(control) => log.note(format!(
                        "another account's login from this address is answered {}: the refusal \
                         was the account's lockout",
                        control.status
                    )),
                    Err(_) => {}
                }
            }
            Err(e) => log.fail(sent, e, "an answer", "the service must answer"),
        }
    }

    async fn login_rate_limit(&mut self, log: &mut Log) {
        let limit = self.audit.login.as_ref().map_or(5, |l| l.limit);
        let wrong = self.wrong_password();
        let mut statuses = Vec::new();
        for i in 0..=limit {
            let user = format!("palisade-audit-nobody-{i}-{}@example.com", self.tag);
            let req = self.login_req(&user, &wrong);
            let res = match self.send_once(&req).await {
                Ok(r) => r,
                Err(e) => {
                    log.fail(
                        self.show_login(&user, "a wrong password"),
                        e,
                        "an answer",
                        "the service must answer",
                    );
                    return;
                }
            };
            statuses.push(res.status);
            if res.status == 429 {
                if retry_after(&res).is_some() {
                    log.note(format!(
                        "429 after {} attempts ({statuses:?})",
                        statuses.len()
                    ));
                } else {
                    log.fail(
                        self.show_login(&user, "a wrong password"),
                        show_res(&res, &["retry-after"]),
                        "429 with Retry-After (seconds or an HTTP date)",
                        "say when the client may try again (palisade-ratelimit sets Retry-After)",
                    );
                }
                return;
            }
        }
        log.fail(
            format!(
                "{} logins for fresh unknown accounts with a wrong password",
                limit + 1
            ),
            format!("statuses {statuses:?}, no 429"),
            &format!("429 with Retry-After within {} attempts", limit + 1),
            "limit login attempts per client IP (palisade-ratelimit's per-route policy; 5 a \
             minute in the reference backend), answering 429 with Retry-After",
        );
    }

    // ---- rate limit --------------------------------------------------------

    async fn rate_limit(&mut self, log: &mut Log) {
        let req = self.req("GET", "/");
        let start = Instant::now();
        for i in 1..=self.audit.flood {
            match self.send_once(&req).await {
                Ok(res) if res.status == 429 => {
                    if retry_after(&res).is_some() {
                        log.note(format!(
                            "429 after {i} requests in {} ms",
                            start.elapsed().as_millis()
                        ));
                    } else {
                        log.fail(
                            show_req(&req),
                            show_res(&res, &["retry-after"]),
                            "429 with Retry-After",
                            "say when the client may try again",
                        );
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    log.fail(
                        format!("request {i}: {}", show_req(&req)),
                        e,
                        "an answer",
                        "the service must answer (or refuse with 429)",
                    );
                    return;
                }
            }
        }
        log.fail(
            format!("{} x {} from one client", self.audit.flood, show_req(&req)),
            format!(
                "all answered in {} ms, none refused",
                start.elapsed().as_millis()
            ),
            "429 with Retry-After once the client exceeds its budget",
            "limit requests per client IP (palisade-ratelimit; 30/s with a burst of 50 in the \
             reference backend), answering 429 with Retry-After",
        );
    }
}

/// A payload a rate limit answered was not tested: the check cannot pass on
/// it.
fn unanswered(log: &mut Log, req: &Request, res: &Response) {
    log.fail(
        show_req(req),
        show_res(res, &["retry-after"]),
        "an answer to the payload itself (a 429 tests nothing)",
        "raise the audit account's request limit, or run file-traversal on its own (--only)",
    );
}

/// A 5xx or an echo of the marker is unsafe.
fn judge_safe(log: &mut Log, req: &Request, res: &Response, marker: &str, fix: &str) {
    if res.status >= 500 {
        log.fail(
            show_req(req),
            show_res(res, &[]),
            "a 4xx (405, 501, 431 or 400), never a 5xx",
            fix,
        );
    }
    let echoed = res.text().contains(marker) || res.headers.iter().any(|(_, v)| v.contains(marker));
    if echoed {
        log.fail(
            show_req(req),
            show_res(res, &[]),
            "the request never reflected in the answer (cross-site tracing)",
            fix,
        );
    }
}

/// What is wrong with a response's security headers.
fn header_problems(res: &Response, profile: Profile) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let csp = res.header("content-security-policy");
    let fix_csp = "send `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'; \
                   base-uri 'none'` for APIs, or a nonce-based script policy for pages \
                   (palisade-http's SecurityHeadersLayer)";
    match csp {
        None => out.push(("a Content-Security-Policy header".to_owned(), fix_csp)),
        Some(csp) => {
            let directive = |name: &str| {
                csp.split(';')
                    .map(str::trim)
                    .find(|d| {
                        d.split_whitespace()
                            .next()
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                    })
                    .map(str::to_ascii_lowercase)
            };
            let scripts = directive("script-src").or_else(|| directive("default-src"));
            match scripts {
                None => out.push((
                    "a CSP that restricts scripts (script-src or default-src)".to_owned(),
                    fix_csp,
                )),
                Some(d)
                    if d.contains("'unsafe-inline'")
                        && !d.contains("'nonce-")
                        && !d.contains("'sha256-")
                        && !d.contains("'sha384-")
                        && !d.contains("'sha512-") =>
                {
                    out.push((
                        "no 'unsafe-inline' for scripts without a nonce or hash".to_owned(),
                        fix_csp,
                    ));
                }
                Some(_) => {}
            }
            if profile == Profile::Api && directive("default-src").is_none() {
                out.push((
                    "a CSP with default-src (APIs: default-src 'none')".to_owned(),
                    fix_csp,
                ));
            }
        }
    }
    let hsts = res
        .header("strict-transport-security")
        .map(str::to_ascii_lowercase);
    let max_age = hsts.as_deref().and_then(|v| {
        v.split(';')
            .filter_map(|p| p.trim().strip_prefix("max-age="))
            .find_map(|n| n.trim_matches('"').parse::<u64>().ok())
    });
    if max_age.is_none_or(|age| age < 31_536_000) {
        out.push((
            format!(
                "Strict-Transport-Security with max-age >= 31536000 (one year); got {}",
                hsts.as_deref().unwrap_or("none")
            ),
            "send `Strict-Transport-Security: max-age=63072000; includeSubDomains`",
        ));
    }
    if !res
        .header("x-content-type-options")
        .is_some_and(|v| v.eq_ignore_ascii_case("nosniff"))
    {
        out.push((
            "X-Content-Type-Options: nosniff".to_owned(),
            "send `X-Content-Type-Options: nosniff`",
        ));
    }
    let framing = res
        .header("x-frame-options")
        .is_some_and(|v| v.eq_ignore_ascii_case("deny") || v.eq_ignore_ascii_case("sameorigin"))
        || csp.is_some_and(|c| c.to_ascii_lowercase().contains("frame-ancestors"));
    if !framing {
        out.push((
            "framing denied (X-Frame-Options: DENY or CSP frame-ancestors)".to_owned(),
            "send `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`",
        ));
    }
    match res.header("referrer-policy") {
        Some(v) if !v.eq_ignore_ascii_case("unsafe-url") => {}
        _ => out.push((
            "a Referrer-Policy (not unsafe-url)".to_owned(),
            "send `Referrer-Policy: no-referrer`",
        )),
    }
    if profile == Profile::Api
        && !res
            .header("cache-control")
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-store"))
    {
        out.push((
            "Cache-Control: no-store on API answers".to_owned(),
            "send `Cache-Control: no-store` on API answers (they may carry personal data)",
        ));
    }
    out
}

/// The first sign of internals in an error body.
fn leak_in(body: &str) -> Option<&'static str> {
    let lower = body.to_ascii_lowercase();
    [
        ("panicked at", "a Rust panic message"),
        ("stack backtrace", "a backtrace"),
        ("traceback (most recent call last)", "a Python traceback"),
        ("\tat ", "a stack trace"),
        (".rs:", "a Rust source location"),
        ("sqlite", "a database name"),
        ("sqlx", "a database driver name"),
        ("syntax error at or near", "an SQL error"),
        ("select * from", "SQL"),
        ("insert into", "SQL"),
        ("/home/", "a file system path"),
        ("/usr/", "a file system path"),
        ("/var/", "a file system path"),
        ("/tmp/", "a file system path"),
        ("/etc/passwd", "a file system path"),
        ("c:\\", "a Windows path"),
        ("/src/", "a source path"),
    ]
    .into_iter()
    .find(|(needle, _)| lower.contains(needle))
    .map(|(_, what)| what)
}

/// Which outside file a body is, if it is one.
fn outside_file(body: &str) -> Option<&'static str> {
    if body.starts_with(CANARY_PREFIX) {
        Some("the audit's canary, read through a traversal path")
    } else if body.contains("root:") && body.contains(":0:0:") {
        Some("/etc/passwd")
    } else if body.contains("[fonts]")
        || body.contains("[extensions]")
        || body.contains("for 16-bit app support")
    {
        Some("win.ini")
    } else if body.contains("[boot loader]") {
        Some("boot.ini")
    } else {
        None
    }
}

/// A deterministic sample of the traversal corpus small enough to stay
/// within per-user limits: every 12th payload, every NUL payload and the
/// deepest `../` chain.
fn traversal_sample() -> Vec<&'static str> {
    let all: Vec<&str> = corpus::traversal().collect();
    let deepest = all
        .iter()
        .filter(|p| p.starts_with("../../../../../../") && p.ends_with("etc/passwd"))
        .max_by_key(|p| p.len())
        .copied();
    let mut out: Vec<&str> = all
        .iter()
        .enumerate()
        .filter(|(i, p)| i % 12 == 0 || p.contains("%00"))
        .map(|(_, p)| *p)
        .filter(|p| !corpus::TRAVERSAL_BENIGN.contains(p))
        .collect();
    out.extend(deepest);
    out.dedup();
    out
}

fn normalised(res: &Response) -> Value {
    match res.json() {
        Ok(Value::Object(mut map)) => {
            for key in [
                "request_id",
                "requestId",
                "instance",
                "trace_id",
                "traceId",
                "timestamp",
            ] {
                map.remove(key);
            }
            Value::Object(map)
        }
        Ok(other) => other,
        Err(_) => Value::String(res.text()),
    }
}

fn header_names(res: &Response) -> Vec<String> {
    let volatile = ["date", "x-request-id", "content-length", "traceparent"];
    let mut names: Vec<String> = res
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| {
            !volatile.contains(&n.as_str())
                && !n.starts_with("ratelimit")
                && !n.starts_with("x-ratelimit")
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: Vec::new(),
        }
    }

    const GOOD: &[(&str, &str)] = &[
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ];

    fn with(name: &str, value: Option<&str>) -> Response {
        let mut headers: Vec<(&str, &str)> =
            GOOD.iter().copied().filter(|(n, _)| *n != name).collect();
        if let Some(v) = value {
            headers.push((name, v));
        }
        response(&headers)
    }

    #[test]
    fn the_contract_headers_pass_and_each_weakening_is_named() {
        assert_eq!(header_problems(&response(GOOD), Profile::Api), vec![]);
        let named = |res: &Response, profile| {
            header_problems(res, profile)
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (name, value, needle) in [
            ("content-security-policy", None, "a Content-Security-Policy"),
            (
                "content-security-policy",
                Some("default-src 'self'; script-src 'self' 'unsafe-inline'"),
                "unsafe-inline",
            ),
            (
                "strict-transport-security",
                Some("max-age=86400"),
                "max-age >= 31536000",
            ),
            ("strict-transport-security", None, "got none"),
            ("x-content-type-options", Some("sniff"), "nosniff"),
            ("referrer-policy", Some("unsafe-url"), "Referrer-Policy"),
            ("cache-control", Some("public, max-age=60"), "no-store"),
        ] {
            let problems = named(&with(name, value), Profile::Api);
            assert!(problems.contains(needle), "{name} {value:?}: {problems}");
        }
        // A nonce makes 'unsafe-inline' inert (CSP3); pages need no no-store.
        let nonce = with(
            "content-security-policy",
            Some(
                "default-src 'self'; script-src 'nonce-abc' 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        assert_eq!(named(&nonce, Profile::Api), "");
        assert_eq!(named(&with("cache-control", None), Profile::Html), "");
        // Framing: either header is enough, neither is a finding.
        let no_xfo = with("x-frame-options", None);
        assert_eq!(named(&no_xfo, Profile::Api), "");
        let mut neither = with("x-frame-options", None);
        neither
            .headers
            .retain(|(n, _)| n != "content-security-policy");
        neither.headers.push((
            "content-security-policy".to_owned(),
            "default-src 'none'".to_owned(),
        ));
        assert!(named(&neither, Profile::Api).contains("framing"));
    }

    #[test]
    fn leaks_and_outside_files_are_recognised() {
        assert_eq!(
            leak_in("thread 'tokio' panicked at src/main.rs:3:5"),
            Some("a Rust panic message")
        );
        assert_eq!(
            leak_in("error returned from database: (code: 1) SQLITE_ERROR"),
            Some("a database name")
        );
        assert_eq!(leak_in(r#"{"title":"Not Found","status":404}"#), None);
        assert_eq!(
            outside_file("root:x:0:0:root:/root:/bin/bash\n"),
            Some("/etc/passwd")
        );
        assert_eq!(
            outside_file("; for 16-bit app support\n[fonts]\n"),
            Some("win.ini")
        );
        assert!(outside_file(&format!("{CANARY_PREFIX}abc")).is_some());
        assert_eq!(outside_file("hello"), None);
    }

    #[test]
    fn the_traversal_sample_covers_every_family_and_stays_small() {
        let sample = traversal_sample();
        assert!((40..=100).contains(&sample.len()), "{}", sample.len());
        for needle in ["%00", "%252e", "%c0%af", "\\", "%5c", "CON", "C:", "\\\\"] {
            assert!(
                sample.iter().any(|p| p.contains(needle)),
                "no payload with {needle:?} in the sample"
            );
        }
        assert!(sample.iter().any(|p| p.matches("../").count() >= 20));
        assert!(sample.iter().all(|p| !corpus::TRAVERSAL_BENIGN.contains(p)));
    }
}
