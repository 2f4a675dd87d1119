//! Shared fixtures of the Palisade benchmarks: the same application served
//! bare and behind Palisade, so that every number is a ratio against a
//! baseline measured in the same run.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::{get, post};
use palisade::core::client_ip::PeerAddr;
use palisade::prelude::*;

/// A small JSON API: a GET and a POST echo.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/echo", post(|body: String| async move { body }))
}

/// The application with no protection at all (the baseline).
pub fn bare() -> Router {
    routes()
}

/// The application behind the whole secure-defaults stack.
///
/// # Panics
///
/// Never: the default stack is valid.
#[allow(clippy::expect_used)]
pub fn secured() -> Router {
    SecureStack::api()
        .cors(Cors::new().allow_origin(ORIGIN))
        .build()
        .expect("the default stack is valid")
        .apply(routes())
}

/// A part of the secure stack, served alone by the load harness's
/// `--breakdown` to show what each part costs under real serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The security headers (the `api` profile).
    Headers,
    /// Request ids: `X-Request-Id` on the response, the id in the extensions
    /// and in the request context.
    RequestId,
    /// Request ids, the client address and the access log (line and metrics).
    Observe,
    /// CORS, cross-origin protection, the panic catcher, the timeout and the body limit.
    Guards,
}

impl Part {
    /// Every part, outermost first.
    pub const ALL: [Self; 4] = [Self::Headers, Self::RequestId, Self::Observe, Self::Guards];

    /// The routes behind this part only, in the order the stack uses, in
    /// one `Router::layer` call as `SecureLayer` does: each call of its own
    /// would add axum's per-layer costs (a boxed service cloned, a boxed
    /// future and a boxed body per request) that the stack does not pay.
    ///
    /// # Panics
    ///
    /// Never: the default configurations are valid.
    #[allow(clippy::expect_used)]
    pub fn around_routes(self) -> Router {
        use palisade::core::client_ip::ClientIpLayer;
        use palisade::http::{CrossOriginProtection, SecurityHeaders, TimeoutLayer};
        use tower::ServiceBuilder;
        let routes = routes();
        match self {
            Self::Headers => routes.layer(SecurityHeaders::api().build().expect("valid")),
            Self::RequestId => routes.layer(RequestIdLayer::new()),
            Self::Observe => routes.layer(
                ServiceBuilder::new()
                    .layer(RequestIdLayer::new())
                    .layer(ClientIpLayer::new(ClientIpResolver::default()))
                    .layer(AccessLogLayer::new()),
            ),
            Self::Guards => routes.layer(
                ServiceBuilder::new()
                    .layer(Cors::new().allow_origin(ORIGIN).build().expect("valid"))
                    .layer(
                        CrossOriginProtection::new()
                            .trust_origin(ORIGIN)
                            .build()
                            .expect("valid"),
                    )
                    .layer(CatchPanicLayer::new())
                    .layer(TimeoutLayer::default())
                    .layer(BodyLimitLayer::new(1 << 20)),
            ),
        }
    }
}

/// The browser origin the benchmarks' CORS policies allow.
const ORIGIN: &str = "https://app.example.com";

/// The same protections assembled by hand from tower-http (the baseline a
/// team would otherwise write): request ids (`SetRequestId` with UUIDs,
/// `PropagateRequestId`), `TraceLayer` with one INFO line per response, nine
/// `SetResponseHeader`s, CORS with an exact origin, a panic catcher, a body
/// limit and a timeout.
pub fn tower_http() -> Router {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use std::time::Duration;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::set_header::SetResponseHeaderLayer;
    use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    let x_request_id = HeaderName::from_static("x-request-id");
    routes().layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(
                x_request_id.clone(),
                MakeRequestUuid,
            ))
            .layer(PropagateRequestIdLayer::new(x_request_id))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                    .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
            )
            .layer(set(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
            ))
            .layer(set(
                header::STRICT_TRANSPORT_SECURITY,
                "max-age=63072000; includeSubDomains",
            ))
            .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .layer(set(header::X_FRAME_OPTIONS, "DENY"))
            .layer(set(header::REFERRER_POLICY, "no-referrer"))
            .layer(set(
                HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            ))
            .layer(set(
                HeaderName::from_static("cross-origin-resource-policy"),
                "same-origin",
            ))
            .layer(set(
                HeaderName::from_static("permissions-policy"),
                "camera=(), microphone=(), geolocation=()",
            ))
            .layer(set(header::CACHE_CONTROL, "no-store"))
            .layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(HeaderValue::from_static(ORIGIN))
                    .allow_methods([Method::GET, Method::POST]),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::new())
            .layer(tower_http::limit::RequestBodyLimitLayer::new(1 << 20))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(30),
            )),
    )
}

/// A GET request as the server would see it (with a peer address).
///
/// # Panics
///
/// Never: the request is well formed.
#[allow(clippy::expect_used)]
pub fn get_request(uri: &str) -> Request<Body> {
    let mut req = Request::get(uri)
        .header("origin", ORIGIN)
        .body(Body::empty())
        .expect("valid request");
    req.extensions_mut()
        .insert(PeerAddr(([127, 0, 0, 1], 40_000).into()));
    req
}

/// A POST request with a JSON body of `size` bytes.
///
/// # Panics
///
/// Never: the request is well formed.
#[allow(clippy::expect_used)]
pub fn post_request(size: usize) -> Request<Body> {
    let mut req = Request::post("/echo")
        .header("content-type", "application/json")
        .body(Body::from(vec![b'x'; size]))
        .expect("valid request");
    req.extensions_mut()
        .insert(PeerAddr(([127, 0, 0, 1], 40_000).into()));
    req
}

/// A subscriber with palisade's JSON format (and its request-id recorder),
/// as `palisade_telemetry::init` builds it, writing lines at `filter` or
/// above to `writer`.
pub fn json_subscriber<W>(
    filter: tracing_subscriber::filter::LevelFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(filter)
        .with(palisade::telemetry::RequestIdRecorder)
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(palisade::telemetry::JsonFormat::default())
                .with_writer(writer),
        )
}

/// [`json_subscriber`] writing every INFO line to a sink: the access line
/// is formatted in full and thrown away.
pub fn json_to_sink() -> impl tracing::Subscriber + Send + Sync {
    json_subscriber(tracing_subscriber::filter::LevelFilter::INFO, std::io::sink)
}

/// Pins the calling thread to `cpu`, as `taskset` would: threads it spawns
/// afterwards (log writers, blocking pools) inherit the mask. Returns false,
/// changing nothing, when the CPU is not online or the call is refused.
pub fn pin_to_cpu(cpu: usize) -> bool {
    use rustix::thread::{CpuSet, sched_setaffinity};
    if cpu >= CpuSet::MAX_CPU {
        return false;
    }
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).is_ok()
}

/// Serves the router `app` builds, on a 2-worker runtime in a thread of its
/// own, over loopback; returns the address.
///
/// # Panics
///
/// When the runtime or the listener cannot be set up.
#[allow(clippy::panic)] // a benchmark that cannot set up stops loudly
pub fn serve<F, Fut>(app: F) -> std::net::SocketAddr
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = axum::Router>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let app = app().await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = tx.send(listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        });
    });
    rx.recv().unwrap_or_else(|e| panic!("{e}"))
}
