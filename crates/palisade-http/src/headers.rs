//! Security response headers, with an `api` and an `html` profile.
//!
//! The [`api`](SecurityHeaders::api) profile sets the headers of a JSON API
//! that is never rendered by a browser: a CSP that allows nothing, no framing,
//! no referrer, `Cache-Control: no-store`. The [`html`](SecurityHeaders::html)
//! profile follows helmet's default set, with a per-request CSP nonce instead of
//! `'unsafe-inline'` for styles: handlers read it with the [`CspNonce`]
//! extension (an axum extractor too) and put it on their `<script>`/`<style>`
//! tags.
//!
//! The layer never overwrites a header the handler (or an inner layer) already
//! set, unless told to with [`overwrite`](SecurityHeaders::overwrite). That is
//! also how a route overrides the defaults: put another `SecurityHeadersLayer`
//! on that route; its values are set first and the outer layer leaves them.
//! `Server` and `X-Powered-By` are always removed.
//!
//! # Example
//!
//! ```
//! use palisade_http::headers::SecurityHeaders;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use http::{Request, Response};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(SecurityHeaders::api().build().unwrap())
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(
//!             Response::builder().header("server", "hyper/1.0").body(String::new()).unwrap(),
//!         )
//!     }));
//! let res = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(
//!     res.headers()["content-security-policy"],
//!     "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
//! );
//! assert_eq!(res.headers()["cache-control"], "no-store");
//! assert!(res.headers().get("server").is_none());
//! # });
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use palisade_core::ConfigError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
const CSP_REPORT_ONLY: HeaderName = HeaderName::from_static("content-security-policy-report-only");

/// The placeholder a CSP source list uses for the per-request nonce.
pub const NONCE_SOURCE: &str = "'nonce'";

/// A per-request CSP nonce (128 random bits, base64), in the request's
/// extensions when the policy uses [`NONCE_SOURCE`].
#[derive(Clone, PartialEq, Eq)]
pub struct CspNonce(Arc<str>);

impl CspNonce {
    fn generate() -> Option<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).ok()?;
        Some(Self(
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        ))
    }

    /// The nonce, to put in a `nonce="..."` attribute.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CspNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CspNonce(..)")
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CspNonce {
    type Rejection = palisade_core::ProblemDetails;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            tracing::error!("CspNonce extractor used on a route whose CSP has no nonce");
            palisade_core::ProblemDetails::new(palisade_core::ProblemType::INTERNAL)
                .with_request_id_from(&parts.extensions)
        })
    }
}

/// A Content-Security-Policy: an ordered list of directives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ContentSecurityPolicy {
    directives: Vec<(String, Vec<String>)>,
}

impl ContentSecurityPolicy {
    /// An empty policy (invalid until a directive is added).
    pub fn new() -> Self {
        Self {
            directives: Vec::new(),
        }
    }

    /// `default-src 'none'; frame-ancestors 'none'; base-uri 'none'`: nothing
    /// may load, nothing may frame the response.
    pub fn api() -> Self {
        Self::new()
            .directive("default-src", ["'none'"])
            .directive("frame-ancestors", ["'none'"])
            .directive("base-uri", ["'none'"])
    }

    /// helmet's default policy, with a per-request nonce for scripts and styles
    /// (no `'unsafe-inline'`).
    pub fn html() -> Self {
        Self::new()
            .directive("default-src", ["'self'"])
            .directive("base-uri", ["'self'"])
            .directive("font-src", ["'self'", "https:", "data:"])
            .directive("form-action", ["'self'"])
            .directive("frame-ancestors", ["'self'"])
            .directive("img-src", ["'self'", "data:"])
            .directive("object-src", ["'none'"])
            .directive("script-src", ["'self'", NONCE_SOURCE])
            .directive("script-src-attr", ["'none'"])
            .directive("style-src", ["'self'", NONCE_SOURCE])
            .directive("upgrade-insecure-requests", [] as [&str; 0])
    }

    /// Sets a directive, replacing an earlier one of the same name. Use
    /// [`NONCE_SOURCE`] as a source for the per-request nonce.
    pub fn directive<I, S>(mut self, name: &str, sources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let name = name.to_ascii_lowercase();
        let sources = sources.into_iter().map(Into::into).collect();
        if let Some(slot) = self.directives.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = sources;
        } else {
            self.directives.push((name, sources));
        }
        self
    }

    /// Removes a directive.
    pub fn without(mut self, name: &str) -> Self {
        self.directives
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn has_reporting(&self) -> bool {
        self.directives
            .iter()
            .any(|(n, s)| (n == "report-uri" || n == "report-to") && !s.is_empty())
    }

    fn uses_nonce(&self) -> bool {
        self.directives
            .iter()
            .any(|(_, s)| s.iter().any(|s| s == NONCE_SOURCE))
    }

    /// Validates and splits the policy around its nonce placeholders.
    fn compile(&self) -> Result<CompiledCsp, ConfigError> {
        const SETTING: &str = "headers.content_security_policy";
        // NUL cannot occur in a valid source, so it marks where nonces go.
        const MARK: char = '\0';
        if self.directives.is_empty() {
            return Err(ConfigError::new(
                SETTING,
                "a policy needs at least one directive",
            ));
        }
        let mut out = String::new();
        for (name, sources) in &self.directives {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return Err(ConfigError::new(
                    SETTING,
                    "directive names are lower-case letters and '-'",
                ));
            }
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(name);
            for source in sources {
                out.push(' ');
                if source == NONCE_SOURCE {
                    out.push_str("'nonce-");
                    out.push(MARK);
                    out.push('\'');
                } else if !source.is_empty()
                    && source
                        .bytes()
                        .all(|b| (0x21..0x7f).contains(&b) && b != b';' && b != b',')
                {
                    out.push_str(source);
                } else {
                    return Err(ConfigError::new(
                        SETTING,
                        "sources are visible ASCII without ';' or ','",
                    ));
                }
            }
        }
        if out.contains(MARK) {
            Ok(CompiledCsp::Nonce(
                out.split(MARK).map(str::to_owned).collect(),
            ))
        } else {
            HeaderValue::from_str(&out)
                .map(CompiledCsp::Static)
                .map_err(|_| ConfigError::new(SETTING, "not a valid header value"))
        }
    }
}

impl Default for ContentSecurityPolicy {
    fn default() -> Self {
        Self::api()
    }
}

#[derive(Debug, Clone)]
enum CompiledCsp {
    Static(HeaderValue),
    /// Literal parts; a nonce goes between each consecutive pair.
    Nonce(Arc<[String]>),
}

impl CompiledCsp {
    fn render(&self, nonce: Option<&CspNonce>) -> Option<HeaderValue> {
        match self {
            Self::Static(v) => Some(v.clone()),
            Self::Nonce(parts) => {
                let nonce = nonce?;
                let mut out =
                    String::with_capacity(parts.iter().map(String::len).sum::<usize>() + 32);
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push_str(nonce.as_str());
                    }
                    out.push_str(part);
                }
                HeaderValue::from_str(&out).ok()
            }
        }
    }
}

/// Builder of [`SecurityHeadersLayer`]. Start from [`api`](Self::api) or
/// [`html`](Self::html).
#[derive(Debug, Clone)]
#[must_use]
pub struct SecurityHeaders {
    csp: Option<ContentSecurityPolicy>,
    csp_report_only: bool,
    hsts: Option<Hsts>,
    headers: Vec<(String, String)>,
    overwrite: bool,
}

/// `Strict-Transport-Security` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    /// `max-age` in seconds.
    pub max_age: u64,
    /// `includeSubDomains`.
    pub include_subdomains: bool,
    /// `preload` (requires a max-age of at least one year and `includeSubDomains`).
    pub preload: bool,
}

impl Default for Hsts {
    /// Two years, sub-domains included, no preload.
    fn default() -> Self {
        Self {
            max_age: 63_072_000,
            include_subdomains: true,
            preload: false,
        }
    }
}

impl SecurityHeaders {
    /// The headers of a JSON API (the reference backend's contract).
    pub fn api() -> Self {
        Self {
            csp: Some(ContentSecurityPolicy::api()),
            csp_report_only: false,
            hsts: Some(Hsts::default()),
            headers: [
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer"),
                ("cross-origin-opener-policy", "same-origin"),
                ("cross-origin-resource-policy", "same-origin"),
                (
                    "permissions-policy",
                    "camera=(), microphone=(), geolocation=()",
                ),
                ("cache-control", "no-store"),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
            overwrite: false,
        }
    }

    /// The headers of server-rendered HTML pages: helmet's set, with a CSP nonce.
    pub fn html() -> Self {
        Self {
            csp: Some(ContentSecurityPolicy::html()),
            csp_report_only: false,
            hsts: Some(Hsts::default()),
            headers: [
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "SAMEORIGIN"),
                ("referrer-policy", "no-referrer"),
                ("cross-origin-opener-policy", "same-origin"),
                ("cross-origin-resource-policy", "same-origin"),
                ("origin-agent-cluster", "?1"),
                (
                    "permissions-policy",
                    "camera=(), microphone=(), geolocation=()",
                ),
                ("x-dns-prefetch-control", "off"),
                ("x-download-options", "noopen"),
                ("x-permitted-cross-domain-policies", "none"),
                ("x-xss-protection", "0"),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
            overwrite: false,
        }
    }

    /// Replaces the Content-Security-Policy.
    pub fn content_security_policy(mut self, csp: ContentSecurityPolicy) -> Self {
        self.csp = Some(csp);
        self
    }

    /// Sends the CSP as `Content-Security-Policy-Report-Only` (the policy must
    /// have a `report-uri` or `report-to` directive, or nobody learns anything).
    pub fn csp_report_only(mut self, report_only: bool) -> Self {
        self.csp_report_only = report_only;
        self
    }

    /// Sends no Content-Security-Policy at all.
    pub fn without_content_security_policy(mut self) -> Self {
        self.csp = None;
        self
    }

    /// Replaces the `Strict-Transport-Security` settings.
    pub fn hsts(mut self, hsts: Hsts) -> Self {
        self.hsts = Some(hsts);
        self
    }

    /// Sends no `Strict-Transport-Security` (only for services never reached over HTTPS).
    pub fn without_hsts(mut self) -> Self {
        self.hsts = None;
        self
    }

    /// Sets (or replaces) a header of the profile.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Removes a header from the profile.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Overwrites headers the handler already set (default: keep the handler's).
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<SecurityHeadersLayer, ConfigError> {
        let mut fixed = Vec::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::new("headers", "a header name is not valid"))?;
            if matches!(
                name,
                header::CONTENT_SECURITY_POLICY | header::STRICT_TRANSPORT_SECURITY
            ) || name == CSP_REPORT_ONLY
            {
                return Err(ConfigError::new(
                    "headers",
                    "set CSP and HSTS with content_security_policy() and hsts()",
                ));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| ConfigError::new("headers", "a header value is not visible ASCII"))?;
            fixed.push((name, value));
        }
        if let Some(hsts) = self.hsts {
            fixed.push((header::STRICT_TRANSPORT_SECURITY, hsts_value(hsts)?));
        }
        let csp = match &self.csp {
            Some(csp) => {
                if self.csp_report_only && !csp.has_reporting() {
                    return Err(ConfigError::new(
                        "headers.csp_report_only",
                        "a report-only policy needs a report-uri or report-to directive",
                    ));
                }
                Some(CspHeader {
                    name: if self.csp_report_only {
                        CSP_REPORT_ONLY
                    } else {
                        header::CONTENT_SECURITY_POLICY
                    },
                    value: csp.compile()?,
                    nonce: csp.uses_nonce(),
                })
            }
            None if self.csp_report_only => {
                return Err(ConfigError::new(
                    "headers.csp_report_only",
                    "report-only mode needs a policy",
                ));
            }
            None => None,
        };
        Ok(SecurityHeadersLayer {
            config: Arc::new(Config::new(fixed, csp, self.overwrite)),
        })
    }
}

fn hsts_value(hsts: Hsts) -> Result<HeaderValue, ConfigError> {
    if hsts.preload && (hsts.max_age < 31_536_000 || !hsts.include_subdomains) {
        return Err(ConfigError::new(
            "headers.hsts",
            "preload requires max-age of at least 31536000 and includeSubDomains",
        ));
    }
    let mut value = format!("max-age={}", hsts.max_age);
    if hsts.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if hsts.preload {
        value.push_str("; preload");
    }
    HeaderValue::from_str(&value)
        .map_err(|_| ConfigError::new("headers.hsts", "not a valid header value"))
}

#[derive(Debug)]
struct CspHeader {
    name: HeaderName,
    value: CompiledCsp,
    nonce: bool,
}

/// `text`, leaked once per process: later layers with the same
/// configuration reuse it, so the memory is bounded by the configuration,
/// never by traffic.
fn intern(text: &str) -> &'static str {
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = seen.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// The same header with `'static` bytes. A name or value built at run time
/// is reference-counted: cloning it onto every response and dropping it
/// after costs two atomic operations; a static one costs none.
fn interned(name: &HeaderName, value: &HeaderValue) -> (HeaderName, HeaderValue) {
    // A parsed name is lowercase and valid: `from_static` accepts it.
    let name = HeaderName::from_static(intern(name.as_str()));
    // Only visible ASCII converts (and `from_static` accepts it); anything
    // else stays as it was.
    let value = match value.to_str() {
        Ok(text) => {
            let mut out = HeaderValue::from_static(intern(text));
            out.set_sensitive(value.is_sensitive());
            out
        }
        Err(_) => value.clone(),
    };
    (name, value)
}

/// How many headers of its own a response can bring before merging them
/// into a clone of the template has to grow its index.
const RESPONSE_HEADERS_ROOM: usize = 16;

#[derive(Debug)]
struct Config {
    /// Every header the layer sets that is the same on every response (the
    /// fixed ones, and the policy when it has no nonce), ready to clone.
    template: HeaderMap,
    csp: Option<CspHeader>,
    overwrite: bool,
}

impl Config {
    fn new(fixed: Vec<(HeaderName, HeaderValue)>, csp: Option<CspHeader>, overwrite: bool) -> Self {
        let fixed = fixed.into_iter().map(|(n, v)| interned(&n, &v));
        let csp = csp.map(|c| {
            let (name, value) = match c.value {
                CompiledCsp::Static(v) => {
                    let (name, value) = interned(&c.name, &v);
                    (name, CompiledCsp::Static(value))
                }
                nonce @ CompiledCsp::Nonce(_) => (c.name, nonce),
            };
            CspHeader { name, value, ..c }
        });
        // Room for the response's own headers: a clone keeps the index
        // size, so merging them never rehashes the clone.
        let mut template = HeaderMap::with_capacity(fixed.len() + 1 + RESPONSE_HEADERS_ROOM);
        template.extend(fixed);
        if let Some(CspHeader {
            name,
            value: CompiledCsp::Static(value),
            ..
        }) = &csp
        {
            template.insert(name.clone(), value.clone());
        }
        Self {
            template,
            csp,
            overwrite,
        }
    }

    /// Starts from a clone of the template and moves the response's own
    /// headers in: one clone and a few inserts instead of a hash lookup and
    /// an insert per security header (responses carry few headers of their
    /// own). The response's value wins unless `overwrite`; `Server` and
    /// `X-Powered-By` are dropped.
    fn apply(&self, headers: &mut HeaderMap, nonce: Option<&CspNonce>) {
        let own_csp = headers.contains_key(header::CONTENT_SECURITY_POLICY)
            || headers.contains_key(CSP_REPORT_ONLY);
        let mut merged = self.template.clone();
        if let Some(csp) = &self.csp {
            if own_csp && !self.overwrite {
                merged.remove(&csp.name);
            } else if !matches!(csp.value, CompiledCsp::Static(_)) {
                if let Some(value) = csp.value.render(nonce) {
                    merged.insert(csp.name.clone(), value);
                } else {
                    // No nonce could be drawn: send the policy without its nonce
                    // sources, which only makes it stricter.
                    merged.insert(csp.name.clone(), csp.value.strict_fallback());
                }
            }
        }
        let mut current: Option<HeaderName> = None;
        for (name, value) in std::mem::take(headers) {
            if let Some(name) = name {
                let ours = self.template.contains_key(&name)
                    || self.csp.as_ref().is_some_and(|c| c.name == name);
                let dropped = name == header::SERVER || name == X_POWERED_BY;
                current = if dropped || (ours && self.overwrite) {
                    None
                } else {
                    if ours {
                        merged.remove(&name);
                    }
                    Some(name)
                };
            }
            if let Some(name) = &current {
                merged.append(name.clone(), value);
            }
        }
        *headers = merged;
    }
}

impl CompiledCsp {
    fn strict_fallback(&self) -> HeaderValue {
        match self {
            Self::Static(v) => v.clone(),
            Self::Nonce(_) => HeaderValue::from_static("default-src 'none'"),
        }
    }
}

/// Adds security headers to every response. Build it with [`SecurityHeaders`].
#[derive(Debug, Clone)]
pub struct SecurityHeadersLayer {
    config: Arc<Config>,
}

impl Default for SecurityHeadersLayer {
    /// The [`api`](SecurityHeaders::api) profile.
    fn default() -> Self {
        Self::api()
    }
}

impl SecurityHeadersLayer {
    /// The [`api`](SecurityHeaders::api) profile with its defaults.
    pub fn api() -> Self {
        // The built-in profile is valid; the fallback keeps this infallible.
        SecurityHeaders::api().build().unwrap_or_else(|_| Self {
            config: Arc::new(Config::new(
                Vec::new(),
                Some(CspHeader {
                    name: header::CONTENT_SECURITY_POLICY,
                    value: CompiledCsp::Static(HeaderValue::from_static("default-src 'none'")),
                    nonce: false,
                }),
                false,
            )),
        })
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeadersService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeadersService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`SecurityHeadersLayer`].
#[derive(Debug, Clone)]
pub struct SecurityHeadersService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SecurityHeadersService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = SecurityHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let nonce = if self.config.csp.as_ref().is_some_and(|c| c.nonce) {
            let nonce = CspNonce::generate();
            if let Some(nonce) = &nonce {
                req.extensions_mut().insert(nonce.clone());
            }
            nonce
        } else {
            None
        };
        SecurityHeadersFuture {
            future: self.inner.call(req),
            config: self.config.clone(),
            nonce,
        }
    }
}

pin_project! {
    /// The response future of [`SecurityHeadersService`].
    pub struct SecurityHeadersFuture<F> {
        #[pin]
        future: F,
        config: Arc<Config>,
        nonce: Option<CspNonce>,
    }
}

impl<F, B, E> Future for SecurityHeadersFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.future.poll(cx))?;
        this.config
            .apply(response.headers_mut(), this.nonce.as_ref());
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests;
