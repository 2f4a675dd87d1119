#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code: panics are the assertions
//! The authenticating layer and the `AuthUser` extractor through a router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use palisade_auth::jwt::{Jwt, JwtConfig, Revocations};
use palisade_auth::layer::{AuthLayer, AuthUser};
use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyRing};
use palisade_core::Principal;
use palisade_store::{MemoryStore, RedisOptions, Store};
use palisade_testkit::redis::RedisServer;
use tower::ServiceExt;

fn setup(store: Store) -> (Router, Arc<Jwt>, Revocations) {
    let key = HmacKey::generate(HmacAlgorithm::Hs256).unwrap();
    let config = JwtConfig::new("https://id.example", "api");
    let jwt = Arc::new(Jwt::new(KeyRing::new(key), config).unwrap());
    let revocations = Revocations::new(store, jwt.access_ttl());
    let app = Router::new()
        .route(
            "/me",
            get(|user: AuthUser| async move { user.id().to_owned() }),
        )
        .route(
            "/who",
            get(|req: Request<Body>| async move {
                req.extensions()
                    .get::<Principal>()
                    .map_or("anonymous".to_owned(), |p| p.id().to_owned())
            }),
        )
        .layer(AuthLayer::new(Arc::clone(&jwt), revocations.clone()));
    (app, jwt, revocations)
}

async fn call(
    app: &Router,
    uri: &str,
    auth: Option<&str>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::get(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn valid_tokens_pass_and_every_failure_is_the_same_401() {
    let (app, jwt, revocations) = setup(Store::memory(MemoryStore::default()));
    let token = jwt.issue("user-7", "fam-7").unwrap();
    let bearer = format!("Bearer {}", token.token());
    let (status, _, body) = call(&app, "/me", Some(&bearer)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "user-7"));
    let (_, _, who) = call(&app, "/who", Some(&bearer)).await;
    assert_eq!(who, "user-7", "the Principal is set for later layers");

    let mut bodies = Vec::new();
    let tampered = format!("Bearer {}x", token.token());
    for auth in [
        None,
        Some("Bearer"),
        Some("Basic dXNlcjpwYXNz"),
        Some(tampered.as_str()),
        Some("Bearer a.b.c"),
    ] {
        let (status, headers, body) = call(&app, "/me", auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert_eq!(headers["content-type"], "application/problem+json");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    revocations
        .revoke_token(&jwt.verify(token.token()).unwrap(), 0)
        .await
        .unwrap();
    let (status, _, _) = call(&app, "/me", Some(&bearer)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked");
    let (status, _, who) = call(&app, "/who", Some(&bearer)).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "anonymous"));
}

#[tokio::test]
async fn an_unreachable_revocation_store_fails_closed() {
    let mut server = RedisServer::start().unwrap();
    let options = RedisOptions::default().call_timeout(Duration::from_millis(500));
    let store = Store::redis(&server.url(), "redis", &options, MemoryStore::default()).unwrap();
    let (app, jwt, _) = setup(store);
    let bearer = format!("Bearer {}", jwt.issue("user-1", "f").unwrap().token());
    assert_eq!(call(&app, "/me", Some(&bearer)).await.0, StatusCode::OK);
    server.kill();
    let (status, headers, _) = call(&app, "/me", Some(&bearer)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    // Anonymous requests do not need the store.
    assert_eq!(call(&app, "/who", None).await.0, StatusCode::OK);
}
