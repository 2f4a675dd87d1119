use super::*;
use axum::body::Body;
use http::Request;
use palisade::core::client_ip::PeerAddr;
use std::os::unix::fs::PermissionsExt;
use tower::ServiceExt;

/// The SQLite pool under `db` (these in-process tests run on the default
/// database; the black-box tests run on both).
fn sqlite(db: &Db) -> sqlx::SqlitePool {
    match db.pool() {
        db::Pool::Sqlite(pool) => pool.clone(),
        db::Pool::Postgres(_) => panic!("the in-process tests run on SQLite"),
    }
}

async fn app(dir: &Path) -> (Router, AppState, sqlx::SqlitePool) {
    let settings = Settings::from_vars([("APP_DATA_DIR", dir.display().to_string())]).unwrap();
    let db = open_database(&settings).await.unwrap();
    let state = AppState::new(&db, open_store(&settings).unwrap(), &settings).unwrap();
    (router(&state, &settings).unwrap(), state, sqlite(&db))
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
async fn ready_lists_the_database_the_store_and_the_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (app, state, _db) = app(dir.path()).await;
    state.start_tasks().unwrap();
    assert!(state.start_tasks().is_err(), "started once");
    // The maintenance job runs at once.
    for _ in 0..200 {
        let status = state.supervisor().status(PRUNE_TASK).unwrap();
        if status.last_success.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = state.supervisor().status(PRUNE_TASK).unwrap();
    assert!(status.last_success.is_some(), "{status:?}");
    assert!(!status.critical);
    let (status, body) = get_json(app, "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for check in ["database", "store", "tasks"] {
        assert_eq!(body["checks"][check]["status"], "up", "{body}");
    }
    let stopped = state.supervisor().shutdown(Duration::from_secs(5)).await;
    assert_eq!(stopped.stopped, [PRUNE_TASK]);
}

#[tokio::test]
async fn ready_is_503_when_the_database_file_is_removed() {
    // SQLite keeps working through its open descriptors: without the file
    // check, the instance would stay ready and write into a deleted file.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (app, _state, db) = app(&data).await;
    std::fs::remove_dir_all(&data).unwrap();
    sqlx::query("SELECT count(*) FROM users")
        .execute(&db)
        .await
        .expect("the pool itself still answers");
    let (status, body) = get_json(app, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert_eq!(
        body["checks"]["database"]["reason"],
        "database file missing"
    );
}

#[tokio::test]
async fn ready_is_503_when_the_database_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _state, _db) = app(dir.path()).await;
    let file = dir.path().join("app.db");
    std::fs::rename(&file, dir.path().join("moved.db")).unwrap();
    std::fs::write(&file, b"not the database").unwrap();
    let (status, body) = get_json(app, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["checks"]["database"]["reason"],
        "database file replaced"
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
        state: AppState,
        db: sqlx::SqlitePool,
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
            state,
            db: sqlite(&db),
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
    async fn the_maintenance_pass_prunes_expired_refresh_tokens_and_stale_file_rows() {
        const TOKENS: &str = "SELECT count(*) FROM palisade_refresh_tokens";
        const FILES: &str = "SELECT count(*) FROM files";
        let env = env().await;
        let tokens = signed_in(&env.app).await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let (_, me) = call(&env.app, "GET", "/me", Some(&access), None).await;
        let user = me["id"].as_str().unwrap().to_owned();
        let count = |sql: &'static str| {
            let db = env.db.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&db)
                    .await
                    .unwrap()
            }
        };
        // An upload cut by a crash an hour ago, of a user who never comes
        // back: no file, a `pending` row holding 100 bytes of quota.
        let an_hour_ago = i64::try_from(
            (std::time::SystemTime::now() - Duration::from_secs(3600))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        sqlx::query(
            "INSERT INTO files (user_id, path, size, state, token, created_at, updated_at) \
             VALUES (?, 'lost.bin', 100, 'pending', 'crashed', ?, ?)",
        )
        .bind(&user)
        .bind(an_hour_ago)
        .bind(an_hour_ago)
        .execute(&env.db)
        .await
        .unwrap();
        assert_eq!((count(TOKENS).await, count(FILES).await), (1, 1));

        let token = CancellationToken::new();
        env.state.prune_expired(&token).await.unwrap();
        assert_eq!(count(TOKENS).await, 1, "not expired yet");
        assert_eq!(count(FILES).await, 0, "the stale reservation was released");

        env.clock.advance(Duration::from_secs(15 * 24 * 3600));
        env.state.prune_expired(&token).await.unwrap();
        assert_eq!(count(TOKENS).await, 0, "expired after 14 days");
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

    /// The traversal corpus of palisade-testkit through the real router, with
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

        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        let mut requests = 0;
        for line in palisade_testkit::corpus::traversal() {
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

/// Issue 17 item 6: the per-user storage quota (bytes and files, atomic with
/// concurrent uploads, given back by deletes and by failed or cancelled
/// uploads), the listing from the stored rows, and its pagination.
mod files_quota {
    use super::*;
    use palisade::core::ManualClock;
    use palisade::store::{MemoryStore, Store};
    use std::os::fd::OwnedFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    const PASSWORD: &str = "violet quartz harbor timber";
    const PNG: &[u8] = &[
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, b'I', b'H', b'D', b'R', 0,
        0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
    ];
    const QUOTA_TYPE: &str = "urn:palisade:problem:quota-exceeded";

    struct Env {
        app: Router,
        db: sqlx::SqlitePool,
        data: std::path::PathBuf,
        limits: Arc<ManualClock>,
        _dir: tempfile::TempDir,
    }

    struct User {
        token: String,
        id: String,
    }

    /// The backend with `vars`; the limits' clock moves before every request
    /// (these tests are about the quota, not the rate limits), the tokens'
    /// clock stands still.
    async fn env(vars: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut all = vec![("APP_DATA_DIR".to_owned(), data.display().to_string())];
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let settings = Settings::from_vars(all).unwrap();
        let db = open_database(&settings).await.unwrap();
        let (limits, limits_clock) = ManualClock::shared();
        let store = Store::memory(MemoryStore::builder().clock(limits_clock).build());
        let tokens = Arc::new(ManualClock::at_unix(Duration::from_secs(1_800_000_000)));
        let state = AppState::with_clock(&db, store, &settings, tokens).unwrap();
        Env {
            app: router(&state, &settings).unwrap(),
            db: sqlite(&db),
            data,
            limits,
            _dir: dir,
        }
    }

    /// A body of unknown length (like a chunked upload): `bytes`, then the end.
    fn streamed(bytes: &[u8]) -> Body {
        let (body, mut writer) = pipe_body();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = writer.write_all(&bytes);
        });
        body
    }

    /// A body of unknown length fed through a pipe: it ends when the writer
    /// is dropped, and waits for more until then.
    fn pipe_body() -> (Body, std::io::PipeWriter) {
        let (reader, writer) = std::io::pipe().unwrap();
        let file = std::fs::File::from(OwnedFd::from(reader));
        (
            Body::new(palisade_fs::serve::file_body(file, u64::MAX)),
            writer,
        )
    }

    impl Env {
        fn request(
            &self,
            method: &str,
            uri: &str,
            token: Option<&str>,
            body: Body,
        ) -> Request<Body> {
            // A new client address per request: the per-IP limits stay out of the way.
            static NEXT: AtomicU32 = AtomicU32::new(1);
            self.limits.advance(Duration::from_secs(2));
            let n = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            // No declared type: the extension and the content decide.
            let mut req = req.body(body).unwrap();
            req.extensions_mut()
                .insert(PeerAddr(([10, n[1], n[2], n[3]], 9).into()));
            req
        }

        async fn send(&self, req: Request<Body>) -> (u16, serde_json::Value) {
            let res = self.app.clone().oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice(&bytes).unwrap_or_default())
        }

        async fn user(&self, email: &str) -> User {
            let creds = json!({"email": email, "password": PASSWORD}).to_string();
            let json_req = |uri: &str| {
                let mut req = self.request("POST", uri, None, Body::from(creds.clone()));
                req.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/json"),
                );
                req
            };
            let (status, body) = self.send(json_req("/auth/register")).await;
            assert_eq!(status, 201, "{body}");
            let (status, tokens) = self.send(json_req("/auth/login")).await;
            assert_eq!(status, 200, "{tokens}");
            let token = tokens["access_token"].as_str().unwrap().to_owned();
            let (status, me) = self
                .send(self.request("GET", "/me", Some(&token), Body::empty()))
                .await;
            assert_eq!(status, 200, "{me}");
            User {
                token,
                id: me["id"].as_str().unwrap().to_owned(),
            }
        }

        /// `PUT` with a `Content-Length` (an exact size).
        async fn put(&self, user: &User, path: &str, bytes: &[u8]) -> (u16, serde_json::Value) {
            let uri = format!("/files/{path}");
            self.send(self.request("PUT", &uri, Some(&user.token), Body::from(bytes.to_vec())))
                .await
        }

        /// `PUT` of a body of unknown length (chunked).
        async fn put_streamed(
            &self,
            user: &User,
            path: &str,
            bytes: &[u8],
        ) -> (u16, serde_json::Value) {
            let uri = format!("/files/{path}");
            self.send(self.request("PUT", &uri, Some(&user.token), streamed(bytes)))
                .await
        }

        async fn delete(&self, user: &User, path: &str) -> u16 {
            let uri = format!("/files/{path}");
            self.send(self.request("DELETE", &uri, Some(&user.token), Body::empty()))
                .await
                .0
        }

        async fn list(&self, user: &User, query: &str) -> (u16, serde_json::Value) {
            self.send(self.request(
                "GET",
                &format!("/files{query}"),
                Some(&user.token),
                Body::empty(),
            ))
            .await
        }

        /// Every page of the listing, in order.
        async fn list_all(&self, user: &User) -> Vec<serde_json::Value> {
            let mut files = Vec::new();
            let mut query = String::new();
            loop {
                let (status, page) = self.list(user, &query).await;
                assert_eq!(status, 200, "{page}");
                files.extend(page["files"].as_array().unwrap().iter().cloned());
                match page["next_cursor"].as_str() {
                    Some(cursor) => query = format!("?cursor={cursor}"),
                    None => return files,
                }
            }
        }

        /// The user's files on disk: (total bytes, count), temporary files
        /// included.
        fn on_disk(&self, user: &User) -> (u64, u64) {
            let mut stack = vec![self.data.join("files").join(&user.id)];
            let (mut bytes, mut count) = (0, 0);
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries {
                    let entry = entry.unwrap();
                    let meta = entry.metadata().unwrap();
                    if meta.is_dir() {
                        stack.push(entry.path());
                    } else {
                        bytes += meta.len();
                        count += 1;
                    }
                }
            }
            (bytes, count)
        }

        /// What the database accounts to the user: (bytes, files).
        async fn accounted(&self, user: &User) -> (i64, i64) {
            sqlx::query_as("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM files WHERE user_id = ?")
                .bind(&user.id)
                .fetch_one(&self.db)
                .await
                .unwrap()
        }
    }

    fn assert_quota_problem(body: &serde_json::Value, code: &str, env: &Env, user: &User) {
        assert_eq!(body["type"], QUOTA_TYPE, "{body}");
        assert_eq!(body["status"], 413, "{body}");
        assert_eq!(body["errors"][0]["code"], code, "{body}");
        let text = body.to_string();
        assert!(!text.contains(&user.id), "no user id: {text}");
        assert!(!text.contains(".txt"), "no path: {text}");
        assert!(
            !text.contains(&*env.data.to_string_lossy()),
            "no directory: {text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_past_the_count_and_the_byte_past_the_quota_are_refused() {
        let env = env(&[("APP_FILES_MAX_BYTES", "100"), ("APP_FILES_MAX_COUNT", "3")]).await;
        let alice = env.user("alice@example.com").await;
        let bob = env.user("bob@example.com").await;

        assert_eq!(env.put(&alice, "a.txt", &[b'a'; 60]).await.0, 201);
        // 60 + 41 crosses 100: refused before a byte is read, nothing stored.
        let (status, body) = env.put(&alice, "b.txt", &[b'b'; 41]).await;
        assert_eq!(status, 413, "{body}");
        assert_quota_problem(&body, "quota_bytes", &env, &alice);
        // The same without a length: stopped at the byte that crosses.
        let (status, body) = env.put_streamed(&alice, "b.txt", &[b'b'; 41]).await;
        assert_eq!(status, 413, "{body}");
        assert_quota_problem(&body, "quota_bytes", &env, &alice);
        // Failed uploads take nothing: exactly up to the limit still fits.
        let (status, body) = env
            .put(&alice, "evil.png", b"<html><script>x</script>")
            .await;
        assert_eq!(status, 415, "{body}");
        let (status, body) = env.put_streamed(&alice, "b.txt", &[b'b'; 40]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(env.accounted(&alice).await, (100, 2));
        // At the limit, one more byte is refused, with or without a length.
        assert_eq!(env.put(&alice, "c.txt", b"c").await.0, 413);
        assert_eq!(env.put_streamed(&alice, "c.txt", b"c").await.0, 413);
        // The quota is per user.
        assert_eq!(env.put(&bob, "a.txt", &[b'z'; 100]).await.0, 201);

        // A delete gives its bytes and its slot back.
        assert_eq!(env.delete(&alice, "a.txt").await, 204);
        assert_eq!(env.accounted(&alice).await, (40, 1));
        assert_eq!(env.put(&alice, "c.txt", &[b'c'; 30]).await.0, 201);
        assert_eq!(env.put(&alice, "d.txt", &[b'd'; 30]).await.0, 201);
        // The fourth file is refused, whatever its size.
        let (status, body) = env.put(&alice, "e.txt", b"").await;
        assert_eq!(status, 413, "{body}");
        assert_quota_problem(&body, "quota_files", &env, &alice);
        let (status, body) = env.put(&alice, "nested/e.txt", b"e").await;
        assert_eq!(status, 413, "{body}");

        assert_eq!(env.accounted(&alice).await, (100, 3));
        assert_eq!(env.on_disk(&alice), (100, 3));
        assert_eq!(env.on_disk(&bob), (100, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twenty_parallel_uploads_never_leave_usage_above_the_quota() {
        let env = Arc::new(env(&[("APP_FILES_MAX_BYTES", "10000")]).await);
        for (email, streamed) in [("alice@example.com", false), ("bob@example.com", true)] {
            let user = Arc::new(env.user(email).await);
            let mut tasks = Vec::new();
            for i in 0..20 {
                let (env, user) = (Arc::clone(&env), Arc::clone(&user));
                tasks.push(tokio::spawn(async move {
                    let path = format!("p{i:02}.txt");
                    let body = [b'x'; 1000];
                    if streamed {
                        env.put_streamed(&user, &path, &body).await
                    } else {
                        env.put(&user, &path, &body).await
                    }
                }));
            }
            let mut created = 0_i64;
            for task in tasks {
                let (status, body) = task.await.unwrap();
                match status {
                    201 => created += 1,
                    413 => assert_eq!(body["type"], QUOTA_TYPE, "{body}"),
                    other => panic!("{other}: {body}"),
                }
            }
            let (on_disk, files) = env.on_disk(&user);
            assert!(on_disk <= 10_000, "{email}: {on_disk} bytes stored");
            let (bytes, count) = env.accounted(&user).await;
            assert_eq!((bytes, count), (created * 1000, created), "{email}");
            assert_eq!(
                (on_disk, files),
                (u64::try_from(bytes).unwrap(), u64::try_from(count).unwrap()),
                "{email}: the disk agrees with the accounting"
            );
            assert!(created >= 1, "{email}");
            if !streamed {
                // Exact lengths reserve exactly: every byte of the quota is used.
                assert_eq!(created, 10, "{email}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_upload_gives_its_reservation_back() {
        let env = env(&[("APP_FILES_MAX_BYTES", "1000")]).await;
        let alice = env.user("alice@example.com").await;

        // An upload of unknown length starts, sends 100 bytes and stalls.
        let (body, mut writer) = pipe_body();
        std::io::Write::write_all(&mut writer, &[b'a'; 100]).unwrap();
        let req = env.request("PUT", "/files/slow.txt", Some(&alice.token), body);
        let upload = tokio::spawn(env.app.clone().oneshot(req));

        // While it is in flight it holds the rest of the quota (a probe that
        // ran while it reserved would leave it short of the whole quota:
        // wait for its reservation before probing).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let reserved: Option<i64> = sqlx::query_scalar(
                "SELECT size FROM files WHERE user_id = ? AND path = 'slow.txt'",
            )
            .bind(&alice.id)
            .fetch_optional(&env.db)
            .await
            .unwrap();
            if let Some(reserved) = reserved {
                assert_eq!(reserved, 1000, "the rest of the quota");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the in-flight upload never held a reservation"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, body) = env.put(&alice, "probe.txt", b"p").await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["type"], QUOTA_TYPE, "{body}");

        // The client goes away: the handler future is dropped mid-stream.
        upload.abort();
        assert!(upload.await.unwrap_err().is_cancelled());

        // The reservation comes back: the whole quota fits again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = env.put(&alice, "full.txt", &[b'f'; 1000]).await;
            if status == 201 {
                break;
            }
            assert_eq!(status, 413, "{body}");
            assert!(
                std::time::Instant::now() < deadline,
                "the cancelled upload kept its reservation"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(writer);
        assert_eq!(env.accounted(&alice).await, (1000, 1));
        // Nothing of the cancelled upload is left on disk.
        assert_eq!(env.on_disk(&alice), (1000, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listing_pages_cover_every_file_exactly_once() {
        let env = env(&[]).await;
        let alice = env.user("alice@example.com").await;
        let mut expected = std::collections::BTreeSet::new();
        for i in 0..250 {
            let path = if i % 5 == 0 {
                format!("dir{}/f{i:03}.txt", i % 3)
            } else {
                format!("f{i:03}.txt")
            };
            let (status, body) = env.put(&alice, &path, format!("file {i}").as_bytes()).await;
            assert_eq!(status, 201, "{body}");
            expected.insert(path);
        }

        let (status, first) = env.list(&alice, "").await;
        assert_eq!(status, 200, "{first}");
        let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["files", "next_cursor"]);
        let page = first["files"].as_array().unwrap();
        assert_eq!(page.len(), 100);
        let entry = page[0].as_object().unwrap();
        let mut keys: Vec<&String> = entry.keys().collect();
        keys.sort();
        assert_eq!(keys, ["content_type", "path", "size"]);
        assert_eq!(entry["content_type"], "text/plain; charset=utf-8");
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        // The same cursor gives the same page.
        let (_, again) = env.list(&alice, &format!("?cursor={cursor}")).await;
        let (_, twice) = env.list(&alice, &format!("?cursor={cursor}")).await;
        assert_eq!(again, twice);

        // Changes between pages: a file removed ahead of the cursor is not
        // listed, one added behind it is not either, one added ahead is.
        let removed = expected.iter().nth(150).unwrap().clone();
        assert_eq!(env.delete(&alice, &removed).await, 204);
        expected.remove(&removed);
        assert_eq!(env.put(&alice, "a-new.txt", b"new").await.0, 201);
        assert_eq!(env.put(&alice, "zz-new.txt", b"new").await.0, 201);
        expected.insert("zz-new.txt".to_owned());

        let mut listed: Vec<String> = page
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect();
        let mut query = format!("?cursor={cursor}");
        let mut pages = 1;
        loop {
            let (status, page) = env.list(&alice, &query).await;
            assert_eq!(status, 200, "{page}");
            let files = page["files"].as_array().unwrap();
            assert!(files.len() <= 100);
            listed.extend(files.iter().map(|f| f["path"].as_str().unwrap().to_owned()));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(next) => query = format!("?cursor={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let unique: std::collections::BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "a file listed twice");
        assert!(listed.is_sorted());
        assert_eq!(unique, expected);
        assert_eq!(env.list_all(&alice).await.len(), 251);

        // Bad cursors: 400 problems that do not echo them.
        for bad in [
            "!!!",
            "%00",
            "Zm9v=",
            "Li4vZXRj", // "../etc"
            "_w",       // not UTF-8
            "Zm9vYmFyCg%20",
            &"QUFB".repeat(2000),
        ] {
            let (status, body) = env.list(&alice, &format!("?cursor={bad}")).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["errors"][0]["field"], "cursor", "{body}");
            assert!(!body.to_string().contains(bad), "{body}");
        }
        // An empty cursor is the first page.
        assert_eq!(
            env.list(&alice, "?cursor=").await.1,
            env.list(&alice, "").await.1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listing_returns_the_stored_type_without_opening_files() {
        let env = env(&[]).await;
        let alice = env.user("alice@example.com").await;
        assert_eq!(env.put(&alice, "pic.png", PNG).await.0, 201);
        assert_eq!(env.put(&alice, "notes/a.txt", b"hello").await.0, 201);
        // The bytes change on disk behind the service's back.
        let root = env.data.join("files").join(&alice.id);
        std::fs::write(root.join("pic.png"), "now some longer text, not an image").unwrap();
        std::fs::remove_file(root.join("notes/a.txt")).unwrap();
        std::fs::create_dir(root.join("notes/a.txt")).unwrap();

        let (status, page) = env.list(&alice, "").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page,
            json!({"files": [
                {"path": "notes/a.txt", "size": 5, "content_type": "text/plain; charset=utf-8"},
                {"path": "pic.png", "size": 33, "content_type": "image/png"},
            ], "next_cursor": null})
        );
    }

    /// The process died between the disk and the row (or between the row and
    /// the disk): once stale, the rows are made to match the disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_between_the_disk_and_the_row_is_reconciled() {
        let env = env(&[("APP_FILES_MAX_BYTES", "100000")]).await;
        let alice = env.user("alice@example.com").await;
        assert_eq!(env.put(&alice, "kept.png", PNG).await.0, 201);
        assert_eq!(env.put(&alice, "gone.txt", b"to be deleted").await.0, 201);
        let root = env.data.join("files").join(&alice.id);
        // kept.png: renamed into place, then the process died before the
        // reservation (5000 bytes) was settled.
        sqlx::query(
            "UPDATE files SET state = 'pending', size = 5000, content_type = NULL, \
             updated_at = 0 WHERE user_id = ? AND path = 'kept.png'",
        )
        .bind(&alice.id)
        .execute(&env.db)
        .await
        .unwrap();
        // gone.txt: marked for deletion, the process died before the unlink.
        sqlx::query(
            "UPDATE files SET state = 'deleting', updated_at = 0 \
             WHERE user_id = ? AND path = 'gone.txt'",
        )
        .bind(&alice.id)
        .execute(&env.db)
        .await
        .unwrap();
        // ghost.txt: reserved, the process died before the rename.
        // live.txt: an upload in flight right now (not stale): left alone.
        for (path, updated_at) in [("ghost.txt", 0_i64), ("live.txt", i64::MAX)] {
            sqlx::query(
                "INSERT INTO files (user_id, path, size, content_type, state, token, created_at, updated_at) \
                 VALUES (?, ?, 700, NULL, 'pending', 'crashed', 0, ?)",
            )
            .bind(&alice.id)
            .bind(path)
            .bind(updated_at)
            .execute(&env.db)
            .await
            .unwrap();
        }
        assert_eq!(env.accounted(&alice).await, (5000 + 13 + 700 + 700, 4));

        let (status, page) = env.list(&alice, "").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["files"],
            json!([{"path": "kept.png", "size": 33, "content_type": "image/png"}])
        );
        assert!(!root.join("gone.txt").exists());
        assert_eq!(env.accounted(&alice).await, (33 + 700, 2));
    }

    /// Files stored before the table existed are indexed on the user's
    /// first request and count against the quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_stored_before_the_accounting_are_indexed_once() {
        let env = env(&[("APP_FILES_MAX_COUNT", "2")]).await;
        let alice = env.user("alice@example.com").await;
        let root = env.data.join("files").join(&alice.id);
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("old.txt"), "legacy").unwrap();
        std::fs::write(root.join("docs/old.png"), PNG).unwrap();

        let files = env.list_all(&alice).await;
        assert_eq!(
            files,
            [
                json!({"path": "docs/old.png", "size": 33, "content_type": "image/png"}),
                json!({"path": "old.txt", "size": 6, "content_type": "text/plain; charset=utf-8"}),
            ]
        );
        let (status, body) = env.put(&alice, "new.txt", b"x").await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["errors"][0]["code"], "quota_files", "{body}");
        assert_eq!(env.delete(&alice, "old.txt").await, 204);
        assert_eq!(env.put(&alice, "new.txt", b"x").await.0, 201);
        assert_eq!(env.accounted(&alice).await, (34, 2));
    }
}
