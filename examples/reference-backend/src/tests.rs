use super::*;
use axum::body::Body;
use http::Request;
use palisade::core::client_ip::PeerAddr;
use std::os::unix::fs::PermissionsExt;
use tower::ServiceExt;

async fn app(dir: &Path) -> (Router, AppState, SqlitePool) {
    let settings = Settings::from_vars([("APP_DATA_DIR", dir.display().to_string())]).unwrap();
    let db = open_database(&settings).await.unwrap();
    let state = AppState::new(&db, open_store(&settings).unwrap(), &settings).unwrap();
    (router(&state, &settings).unwrap(), state, db)
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

mod auth_flow {
    use super::*;
    use palisade::core::ManualClock;
    use std::sync::Arc;

    struct Env {
        app: Router,
        clock: Arc<ManualClock>,
        _dir: tempfile::TempDir,
    }

    async fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let settings =
            Settings::from_vars([("APP_DATA_DIR", dir.path().display().to_string())]).unwrap();
        let db = open_database(&settings).await.unwrap();
        let clock = Arc::new(ManualClock::at_unix(Duration::from_secs(1_800_000_000)));
        let shared: palisade::core::SharedClock = clock.clone();
        let state =
            AppState::with_clock(&db, open_store(&settings).unwrap(), &settings, shared).unwrap();
        Env {
            app: router(&state, &settings).unwrap(),
            clock,
            _dir: dir,
        }
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        bearer: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        // A new client address per request: these tests are about the auth
        // flow, not the per-IP limits (tested black-box).
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).unwrap();
        let octet = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        req.extensions_mut()
            .insert(PeerAddr(([10, 0, 0, octet], 9).into()));
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    const PASSWORD: &str = "violet quartz harbor timber";

    async fn signed_in(app: &Router) -> serde_json::Value {
        let creds = serde_json::json!({"email": "Ada@Example.com", "password": PASSWORD});
        let (status, body) = call(app, "POST", "/auth/register", None, Some(creds.clone())).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["email"], "ada@example.com");
        let (status, tokens) = call(app, "POST", "/auth/login", None, Some(creds)).await;
        assert_eq!(status, 200, "{tokens}");
        tokens
    }

    #[tokio::test]
    async fn refresh_rotates_and_a_replayed_token_revokes_the_family() {
        let env = env().await;
        let first = signed_in(&env.app).await;
        let refresh =
            |t: &serde_json::Value| serde_json::json!({"refresh_token": t["refresh_token"]});
        let (status, second) = call(
            &env.app,
            "POST",
            "/auth/refresh",
            None,
            Some(refresh(&first)),
        )
        .await;
        assert_eq!(status, 200, "{second}");
        assert_ne!(second["refresh_token"], first["refresh_token"]);
        // Within the grace window a replay is refused but harmless.
        let (status, _) = call(
            &env.app,
            "POST",
            "/auth/refresh",
            None,
            Some(refresh(&first)),
        )
        .await;
        assert_eq!(status, 401);
        let (status, third) = call(
            &env.app,
            "POST",
            "/auth/refresh",
            None,
            Some(refresh(&second)),
        )
        .await;
        assert_eq!(status, 200, "{third}");
        let access = third["access_token"].as_str().unwrap().to_owned();
        assert_eq!(
            call(&env.app, "GET", "/me", Some(&access), None).await.0,
            200
        );
        // After it, a replay of a spent token revokes the whole family.
        env.clock
            .advance(palisade_auth::session::REUSE_GRACE + Duration::from_secs(1));
        let (status, _) = call(
            &env.app,
            "POST",
            "/auth/refresh",
            None,
            Some(refresh(&first)),
        )
        .await;
        assert_eq!(status, 401);
        let (status, _) = call(
            &env.app,
            "POST",
            "/auth/refresh",
            None,
            Some(refresh(&third)),
        )
        .await;
        assert_eq!(status, 401, "the newest token of the family is revoked too");
        assert_eq!(
            call(&env.app, "GET", "/me", Some(&access), None).await.0,
            401
        );
    }

    #[tokio::test]
    async fn logout_stops_the_access_token_and_the_refresh_family() {
        let env = env().await;
        let tokens = signed_in(&env.app).await;
        let access = tokens["access_token"].as_str().unwrap();
        let (status, me) = call(&env.app, "GET", "/me", Some(access), None).await;
        assert_eq!(status, 200);
        assert_eq!(me["email"], "ada@example.com");
        assert!(
            me["created_at"]
                .as_str()
                .unwrap()
                .starts_with("2027-01-15T"),
            "{me}"
        );
        assert_eq!(
            call(&env.app, "POST", "/auth/logout", Some(access), None)
                .await
                .0,
            204
        );
        assert_eq!(
            call(&env.app, "GET", "/me", Some(access), None).await.0,
            401
        );
        assert_eq!(
            call(&env.app, "POST", "/auth/logout", Some(access), None)
                .await
                .0,
            401
        );
        let refresh = serde_json::json!({"refresh_token": tokens["refresh_token"]});
        assert_eq!(
            call(&env.app, "POST", "/auth/refresh", None, Some(refresh))
                .await
                .0,
            401
        );
    }

    #[tokio::test]
    async fn access_tokens_expire_after_fifteen_minutes() {
        let env = env().await;
        let tokens = signed_in(&env.app).await;
        assert_eq!(tokens["expires_in"], 900);
        assert_eq!(tokens["token_type"], "Bearer");
        let access = tokens["access_token"].as_str().unwrap();
        env.clock.advance(Duration::from_secs(900 + 4));
        assert_eq!(
            call(&env.app, "GET", "/me", Some(access), None).await.0,
            200,
            "leeway"
        );
        env.clock.advance(Duration::from_secs(1));
        assert_eq!(
            call(&env.app, "GET", "/me", Some(access), None).await.0,
            401
        );
    }

    #[tokio::test]
    async fn registration_validates_and_refuses_duplicates() {
        let env = env().await;
        let reg = |email: &str, password: &str| {
            Some(serde_json::json!({"email": email, "password": password}))
        };
        let (status, body) = call(
            &env.app,
            "POST",
            "/auth/register",
            None,
            reg("not-an-email", PASSWORD),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(body["errors"][0]["field"], "email");
        for (password, code) in [
            ("Zq7#k", "too_short"),
            ("password123", "too_common"),
            ("grace-hopper-rules", "contains_identifier"),
            (&"x".repeat(129) as &str, "too_long"),
        ] {
            let (status, body) = call(
                &env.app,
                "POST",
                "/auth/register",
                None,
                reg("grace.hopper@example.com", password),
            )
            .await;
            assert_eq!(status, 422, "{password}: {body}");
            assert_eq!(body["errors"][0]["field"], "password");
            assert_eq!(body["errors"][0]["code"], code, "{body}");
            assert!(
                !body.to_string().contains(password),
                "the password is not echoed"
            );
        }
        let (status, _) = call(
            &env.app,
            "POST",
            "/auth/register",
            None,
            reg("grace@example.com", PASSWORD),
        )
        .await;
        assert_eq!(status, 201);
        let (status, body) = call(
            &env.app,
            "POST",
            "/auth/register",
            None,
            reg("GRACE@Example.com", PASSWORD),
        )
        .await;
        assert_eq!(status, 409, "{body}");
    }
}

mod files_corpus {
    use super::*;
    use palisade::core::ManualClock;
    use palisade::store::{MemoryStore, Store};
    use std::sync::Arc;

    /// The traversal corpus of palisade-fs through the real router, with
    /// the limits' clock moved between requests so they never interfere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_corpus_payload_escapes_the_users_root_or_causes_a_5xx() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let settings = Settings::from_vars([("APP_DATA_DIR", data.display().to_string())]).unwrap();
        let db = open_database(&settings).await.unwrap();
        // The limits' clock moves; the tokens' clock does not (tokens stay valid).
        let (clock, limits_clock) = ManualClock::shared();
        let store = Store::memory(MemoryStore::builder().clock(limits_clock).build());
        let tokens_clock = Arc::new(ManualClock::at_unix(Duration::from_secs(1_800_000_000)));
        let state = AppState::with_clock(&db, store, &settings, tokens_clock).unwrap();
        let app = router(&state, &settings).unwrap();
        // A canary next to the users' roots and one in the data dir.
        std::fs::write(data.join("canary.txt"), "CANARY-DATA").unwrap();
        std::fs::write(data.join("files").join("canary.txt"), "CANARY-FILES").unwrap();

        let send = |method: &str, uri: &str, token: Option<&str>, body: &str| {
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let req = req.header(
                "content-type",
                if body.starts_with('{') {
                    "application/json"
                } else {
                    "text/plain"
                },
            );
            let mut req = req.body(Body::from(body.to_owned())).ok()?;
            req.extensions_mut()
                .insert(PeerAddr("127.0.0.1:9".parse().unwrap()));
            Some(app.clone().oneshot(req))
        };
        let creds = r#"{"email":"eve@example.com","password":"violet quartz harbor timber"}"#;
        assert_eq!(
            send("POST", "/auth/register", None, creds)
                .unwrap()
                .await
                .unwrap()
                .status(),
            201
        );
        let res = send("POST", "/auth/login", None, creds)
            .unwrap()
            .await
            .unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let tokens: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let token = tokens["access_token"].as_str().unwrap().to_owned();

        let corpus = include_str!("../../../crates/palisade-fs/tests/data/traversal.txt");
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        let mut requests = 0;
        for line in corpus
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            for method in ["GET", "PUT", "DELETE"] {
                clock.advance(Duration::from_secs(2));
                let Some(fut) = send(method, &format!("/files/{line}"), Some(&token), "payload")
                else {
                    continue; // not a valid request target: hyper would answer 400
                };
                let res = fut.await.unwrap();
                let status = res.status().as_u16();
                let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap();
                assert!(status < 500, "{method} {line:?}: {status}");
                assert!(
                    !String::from_utf8_lossy(&body).contains("CANARY"),
                    "{method} {line:?}"
                );
                *statuses.entry(status).or_default() += 1;
                requests += 1;
            }
        }
        assert!(requests > 1500, "{requests} requests");
        assert!(
            !statuses.contains_key(&429) && !statuses.contains_key(&401),
            "{statuses:?}"
        );
        // Every file on disk is one of ours or inside the user's root.
        let root = data.join("files");
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path != root.join("canary.txt") {
                    let rel = path.strip_prefix(&root).unwrap();
                    assert!(rel.components().count() >= 2, "{}", path.display());
                }
            }
        }
        for entry in std::fs::read_dir(&data).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                ["files", "canary.txt"].contains(&name.as_str()) || name.starts_with("app.db"),
                "{name}"
            );
        }
        println!("corpus statuses: {statuses:?}");
    }
}
