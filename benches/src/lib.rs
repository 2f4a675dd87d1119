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
        .cors(Cors::new().allow_origin("https://app.example.com"))
        .build()
        .expect("the default stack is valid")
        .apply(routes())
}

/// A GET request as the server would see it (with a peer address).
///
/// # Panics
///
/// Never: the request is well formed.
#[allow(clippy::expect_used)]
pub fn get_request(uri: &str) -> Request<Body> {
    let mut req = Request::get(uri)
        .header("origin", "https://app.example.com")
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
