use super::*;
use axum::body::Body;
use http::Request;
use palisade::core::client_ip::PeerAddr;
use std::os::unix::fs::PermissionsExt;
use tower::ServiceExt;

async fn app(dir: &Path) -> (Router, AppState, SqlitePool) {
    let settings = Settings::from_vars([("APP_DATA_DIR", dir.display().to_string())]).unwrap();
    let db = open_database(&settings).await.unwrap();
    let state = AppState::new(&db, open_store(&settings).unwrap(), None);
    (router(state.clone(), &settings).unwrap(), state, db)
}

async fn get_json(app: Router, uri: &str) -> (u16, serde_json::Value) {
    let mut req = Request::get(uri).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(PeerAddr("127.0.0.1:9".parse().unwrap()));
    let res = app.oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn ready_reports_the_database_and_flips_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (app, state, _db) = app(dir.path()).await;
    let (status, body) = get_json(app.clone(), "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert!(body["checks"]["database"]["latency_ms"].is_number());

    state.begin_shutdown();
    let (status, body) = get_json(app.clone(), "/ready").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not_ready");
    // Liveness is unaffected.
    assert_eq!(
        get_json(app, "/health").await,
        (200, json!({"status": "ok"}))
    );
}

#[tokio::test]
async fn ready_is_503_when_the_database_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _state, db) = app(dir.path()).await;
    db.close().await;
    let (status, body) = get_json(app, "/ready").await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert_eq!(body["checks"]["database"]["reason"], "query failed");
}

#[tokio::test]
async fn database_is_created_private_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let (_, _, db) = app(&data).await;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(data.join("app.db").exists());
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'users'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(tables.len(), 1);
}
