#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! `CatchPanicLayer` learns a panic's location from the process's panic hook.
//! This file holds one test, so that replacing the hook (process-wide)
//! disturbs no other test.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use palisade_http::CatchPanicLayer;
use tower::{ServiceBuilder, ServiceExt};

/// Each event as `name=value` pairs.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Lines {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::new();
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                let _ = write!(line, "{}={value:?} ", field.name());
            },
        );
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_replaced_hook_costs_one_location_then_is_wrapped_again() {
    let lines = Lines::default();
    let _default = tracing::subscriber::set_default(lines.clone());
    let svc = ServiceBuilder::new()
        .layer(CatchPanicLayer::new())
        .service_fn(|_: Request<Full<Bytes>>| async move {
            panic!("secret {}", 7);
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        });
    let panic_once = || async {
        let res = svc
            .clone()
            .oneshot(Request::get("/").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
    };
    panic_once().await;
    // Another library replaces the hook after the layer was built.
    std::panic::set_hook(Box::new(|_| {}));
    panic_once().await;
    panic_once().await;
    let lines = lines.0.lock().unwrap().clone();
    let located: Vec<bool> = lines
        .iter()
        .filter(|l| l.contains("handler panicked"))
        .map(|l| {
            assert!(!l.contains("secret 7"), "{l}");
            assert!(l.contains("panic=[redacted: 8 bytes]"), "{l}");
            l.contains(&format!("location=\"{}:", file!()))
        })
        .collect();
    assert_eq!(located, [true, false, true], "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("location=\"unknown\"")));
}
