//! The access log through a real axum router: one line per request, by route.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code: a failed step is a failed test

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use palisade_core::client_ip::PeerAddr;
use palisade_core::{ClientIpLayer, ClientIpResolver};
use palisade_telemetry::{AccessLogLayer, JsonFormat, RequestIdLayer, RequestIdRecorder, spawn};
use palisade_testkit::logs::Capture;
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::prelude::*;

async fn handler() -> &'static str {
    tracing::info!("in handler");
    spawn(async { tracing::info!("in spawned task") })
        .await
        .unwrap();
    "ok"
}

#[test]
fn one_line_per_request_by_route_with_the_request_id() {
    let buf = Capture::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::registry().with(RequestIdRecorder).with(
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat::default())
            .with_writer(move || writer.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = Router::new().route("/users/{id}", get(handler)).layer(
        ServiceBuilder::new()
            .layer(RequestIdLayer::new())
            .layer(ClientIpLayer::new(ClientIpResolver::default()))
            .layer(AccessLogLayer::new()),
    );
    rt.block_on(async {
        for (uri, id) in [
            ("/users/12345?token=abc", "rid-1"),
            ("/wp-admin.php", "rid-2"),
        ] {
            let mut req = Request::get(uri)
                .header("x-request-id", id)
                .body(Body::empty())
                .unwrap();
            req.extensions_mut()
                .insert(PeerAddr("192.0.2.7:4000".parse().unwrap()));
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.headers()["x-request-id"], id);
        }
    });
    let text = buf.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every line of the first request carries its id, the spawned task's too.
    let first: Vec<_> = lines
        .iter()
        .filter(|l| l["request_id"] == "rid-1")
        .collect();
    let messages: Vec<_> = first
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["in handler", "in spawned task", "request"]);
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "palisade::access")
        .collect();
    assert_eq!(access.len(), 2);
    assert_eq!(access[0]["route"], "/users/{id}");
    assert_eq!(access[0]["method"], "GET");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["client_ip"], "192.0.2.7");
    assert!(access[0]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(access[1]["route"], "<unmatched>");
    assert_eq!(access[1]["status"], 404);
    assert_eq!(access[1]["request_id"], "rid-2");
    assert!(
        !text.contains("12345") && !text.contains("abc") && !text.contains("wp-admin"),
        "{text}"
    );
}
