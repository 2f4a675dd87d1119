//! The Palisade reference backend: the template of a hardened axum service.
//!
//! Its HTTP contract — settings, endpoints, limits, logs — is `API.md` in
//! this crate's directory. This crate is a library
//! (the router, the settings, the server loop) plus a thin `main`, so that its
//! pieces can be tested in-process as well as black-box.

pub mod auth;
pub mod db;
pub mod files;
pub mod health_check;
pub mod metrics;
pub mod settings;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use palisade::core::ConfigError;
use palisade::prelude::*;
use palisade::ratelimit::{ClientConcurrencyLayer, KeyBy, Policy, RateLimit, RateLimitLayer};
use palisade::serve::Server;
use palisade::store::{FailPolicy, MemoryStore, Quota, RedisOptions, Store};
use palisade::telemetry::{Metrics, Readiness};
use palisade_auth::pwned::PwnedCheck;
use palisade_auth::{
    AuthLayer, Hasher, Jwt, JwtConfig, Lockout, LockoutPolicy, Login, PasswordPolicy, Revocations,
    Sessions,
};
use palisade_config::ExposeSecret;
use palisade_config::keys::KeyRing;
use palisade_resilience::supervisor::{CancellationToken, Supervisor, Task};
use serde_json::json;

use db::{Db, RefreshStore};

use metrics::{MetricsEndpoint, Tokenless};
pub use palisade_config::Profile;
pub use settings::Settings;

/// How long in-flight requests may run after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The deadline of each readiness check.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the maintenance job deletes expired rows.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The longest one maintenance pass may take (a hung pass is a failure).
pub const PRUNE_TIMEOUT: Duration = Duration::from_secs(300);
/// The maintenance job's name (logs, metrics, `/ready`).
pub const PRUNE_TASK: &str = "prune-expired";
/// How long background tasks get to stop once the drain is over.
pub const TASKS_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    readiness: Readiness,
    supervisor: Supervisor,
    metrics: Metrics,
    store: Store,
    auth: auth::AuthState,
    files: files::FilesState,
}

impl AppState {
    /// State over an open database and the store, with their readiness
    /// checks registered: `database` (critical), `store` (degradable: its
    /// memory fallback serves while Redis is away) and `tasks` (red when a
    /// critical background task was given up, degraded for an optional one).
    ///
    /// # Errors
    ///
    /// The auth services refused their configuration.
    pub fn new(db: &Db, store: Store, settings: &Settings) -> Result<Self, ConfigError> {
        Self::with_clock(db, store, settings, palisade::core::SystemClock::shared())
    }

    /// Like [`AppState::new`], with the clock of tokens and refresh times
    /// (tests move it instead of sleeping).
    ///
    /// # Errors
    ///
    /// The auth services refused their configuration.
    pub fn with_clock(
        db: &Db,
        store: Store,
        settings: &Settings,
        clock: palisade::core::SharedClock,
    ) -> Result<Self, ConfigError> {
        let auth = build_auth(settings, db, &store, clock)?;
        let readiness = Readiness::new();
        let ready_store = store.clone();
        readiness.register_degradable("store", READY_CHECK_TIMEOUT, move || {
            let store = ready_store.clone();
            async move { store.check().await.map_err(|e| e.to_string()) }
        });
        let pool = db.clone();
        let file = DatabaseFile::of(settings);
        readiness.register("database", READY_CHECK_TIMEOUT, move || {
            let (pool, file) = (pool.clone(), file.clone());
            async move {
                if let Some(file) = file {
                    file.check().await?;
                }
                pool.ping().await.map_err(|_| "query failed".to_owned())
            }
        });
        let supervisor = Supervisor::new();
        supervisor.register_readiness(&readiness);
        Ok(Self {
            readiness,
            supervisor,
            metrics: Metrics::new(),
            store,
            auth,
            files: files::FilesState::open(settings, db).map_err(|_| {
                ConfigError::new("APP_DATA_DIR", "the files directory could not be opened")
            })?,
        })
    }

    /// The store of limits (and, later, lockouts and revocations).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sessions (refresh tokens, logout).
    pub fn sessions(&self) -> &Sessions<RefreshStore> {
        &self.auth.sessions
    }

    /// The supervisor of the background tasks.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Marks the service as draining: `/ready` answers 503 from now on, and
    /// the background tasks are told to stop.
    pub fn begin_shutdown(&self) {
        self.readiness.begin_shutdown();
        self.supervisor.cancel();
    }

    /// Starts the background tasks under the supervisor: the maintenance
    /// job ([`PRUNE_TASK`]), at once and then every [`PRUNE_EVERY`], each
    /// pass bounded by [`PRUNE_TIMEOUT`]; restarted with backoff when it
    /// fails, given up after its restart budget (`/ready` then says
    /// `degraded`: the service works without it).
    ///
    /// # Errors
    ///
    /// The tasks were already started.
    pub fn start_tasks(&self) -> Result<(), ConfigError> {
        let state = self.clone();
        self.supervisor.spawn(
            Task::periodic(PRUNE_TASK, PRUNE_EVERY, move |ctx| {
                let state = state.clone();
                async move { state.prune_expired(ctx.token()).await }
            })
            .non_critical()
            .attempt_timeout(PRUNE_TIMEOUT),
        )
    }

    /// One maintenance pass: expired refresh tokens and their empty
    /// families, then the stale file rows of every user (see
    /// [`files::FilesState::reconcile_stale`]).
    ///
    /// # Errors
    ///
    /// What could not be pruned (no secret in it).
    pub async fn prune_expired(&self, token: &CancellationToken) -> Result<(), String> {
        let tokens = self
            .auth
            .sessions
            .prune()
            .await
            .map_err(|e| format!("refresh tokens: {e}"))?;
        let users = self.files.reconcile_stale(token).await?;
        tracing::info!(
            refresh_tokens = tokens,
            users_reconciled = users,
            "expired rows pruned"
        );
        Ok(())
    }
}

/// The SQLite file the pool opened, as it was then. SQLite keeps reading
/// and writing through its open descriptors when the file is deleted or
/// replaced (a volume unmounted, a directory removed): every write would go
/// to a file nobody will open again. Its readiness check is red then.
#[derive(Debug, Clone)]
struct DatabaseFile {
    path: PathBuf,
    id: (u64, u64),
}

impl DatabaseFile {
    /// The file of `settings`' SQLite URL, when it is a file that exists.
    fn of(settings: &Settings) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        if settings.database.kind != db::Kind::Sqlite {
            return None;
        }
        let options =
            sqlx::sqlite::SqliteConnectOptions::from_str(settings.database.url.expose_secret())
                .ok()?;
        let path = options.get_filename().to_path_buf();
        let meta = std::fs::metadata(&path).ok()?;
        Some(Self {
            path,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// `Err` when the file is gone or another file took its place.
    async fn check(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => Ok(()),
            Ok(_) => Err("database file replaced".to_owned()),
            Err(_) => Err("database file missing".to_owned()),
        }
    }
}

/// Why the server could not run.
#[derive(Debug)]
pub enum RunError {
    /// The database could not be opened or migrated.
    Database(db::OpenError),
    /// The data directory could not be created.
    DataDir(std::io::Error),
    /// The listen address could not be bound.
    Bind(std::io::Error),
    /// The HTTP stack refused the configuration.
    Config(ConfigError),
    /// The server could not run (its settings, its signal handlers).
    Serve(palisade::serve::ServeError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Database(e) => write!(f, "database: {e}"),
            Self::DataDir(e) => write!(f, "data directory: {e}"),
            Self::Bind(e) => write!(f, "cannot listen: {e}"),
            Self::Config(e) => write!(f, "{e}"),
            Self::Serve(e) => write!(f, "server: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Creates the data directory, opens the database (creating a SQLite file
/// on first run) and applies the embedded migrations and the refresh-token
/// store's schema.
pub async fn open_database(settings: &Settings) -> Result<Db, RunError> {
    create_private_dir(&settings.data_dir).map_err(RunError::DataDir)?;
    Db::open(&settings.database)
        .await
        .map_err(RunError::Database)
}

/// Creates `dir` readable by its owner only (it holds the database and uploads).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The JWT issuer of the reference backend.
pub const JWT_ISSUER: &str = "palisade-reference-backend";
/// The JWT audience of the reference backend.
pub const JWT_AUDIENCE: &str = "palisade-reference-api";

/// The auth flows: tokens signed with `APP_JWT_SECRET`; lockout and
/// revocations in the shared store; the hashing pool at OWASP parameters
/// (one thread per core, queue bounded by 2 s of work); the password policy;
/// users and refresh tokens in the database.
pub fn build_auth(
    settings: &Settings,
    db: &Db,
    store: &Store,
    clock: palisade::core::SharedClock,
) -> Result<auth::AuthState, ConfigError> {
    let jwt = Jwt::new(
        KeyRing::new(settings.jwt_key.clone()),
        JwtConfig::new(JWT_ISSUER, JWT_AUDIENCE),
    )?
    .with_clock(std::sync::Arc::clone(&clock));
    let jwt = std::sync::Arc::new(jwt);
    let revocations = Revocations::new(store.clone(), jwt.access_ttl());
    let mut login = Login::with_policy(
        auth::Users::new(db.clone()),
        Hasher::builder().build()?,
        Lockout::new(store.clone(), LockoutPolicy::default()),
        PasswordPolicy::default().service_name(auth::SERVICE_NAME),
    );
    if let Some(url) = &settings.pwned_api_url {
        let check = PwnedCheck::new(url)
            .map_err(|e| ConfigError::new("APP_PWNED_API_URL", e.to_string()))?;
        login = login.breach_check(check);
    }
    let sessions = Sessions::new(db.refresh_store(), jwt, revocations);
    Ok(auth::AuthState {
        login,
        sessions,
        db: db.clone(),
        clock,
    })
}

/// The shared store: Redis when `APP_REDIS_URL` is set (with a local memory
/// store for routes that fall back), else memory. No I/O: Redis is reached on
/// first use, so the service starts while Redis is down and says so on `/ready`.
pub fn open_store(settings: &Settings) -> Result<Store, ConfigError> {
    let local = MemoryStore::default();
    match &settings.redis_url {
        None => Ok(Store::memory(local)),
        Some(url) => Store::redis(
            url.expose_secret(),
            "APP_REDIS_URL",
            &RedisOptions::default().call_timeout(settings.redis_timeout),
            local,
        )
        .map_err(|e| match e {
            palisade::store::StoreError::Config(c) => c,
            other => ConfigError::new("APP_REDIS_URL", other.to_string()),
        }),
    }
}

/// The routes a user defends the account with: never under the per-user
/// quota, which anyone holding one of the user's tokens can drain.
pub const SELF_DEFENCE_ROUTES: [&str; 4] = [
    "/auth/logout",
    "/auth/logout-all",
    "/auth/refresh",
    "/auth/password",
];

/// The contract's rate limits ("Default limits"): any request 30/s burst 50
/// per client IP; logins 5/min and registrations 3/min per client IP (fail
/// closed when Redis is down, quota not advertised); authenticated API
/// requests 100/min per user (once an auth layer sets the `Principal`),
/// except the self-defence routes, which have their own per-IP quota.
pub fn rate_limits(store: Store) -> Result<RateLimitLayer, ConfigError> {
    let post = || [axum::http::Method::POST];
    RateLimit::new(store)
        .policy(Policy::new("global", Quota::per_second(30).with_burst(50)))
        .policy(
            Policy::new("login", Quota::per_minute(5))
                .routes(["/auth/login"])
                .methods(post())
                .fail(FailPolicy::FailClosed)
                .hide_headers(),
        )
        .policy(
            Policy::new("register", Quota::per_minute(3))
                .routes(["/auth/register"])
                .methods(post())
                .fail(FailPolicy::FailClosed)
                .hide_headers(),
        )
        .policy(
            Policy::new("session", Quota::per_minute(30))
                .routes(SELF_DEFENCE_ROUTES)
                .methods(post()),
        )
        .policy(
            Policy::new("api", Quota::per_minute(100))
                .key(KeyBy::user())
                .except_routes(SELF_DEFENCE_ROUTES),
        )
        .build()
}

/// Requests in flight per client address (the contract's default limits).
pub const MAX_IN_FLIGHT_PER_CLIENT: u32 = 20;

/// The application: routes wrapped in the Palisade secure stack, composed
/// once — auth and limits in their slots, so every request counts, 404s,
/// 405s and preflights included.
pub fn router(state: &AppState, settings: &Settings) -> Result<Router, ConfigError> {
    let client_ip = ClientIpResolver::builder()
        .trusted_networks(settings.trusted_proxies.iter().copied())
        .build()?;
    let cors = Cors::new()
        .allow_origins(settings.cors_origins.iter().cloned())
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::DELETE,
        ])
        .allow_headers(["authorization", "content-type", "x-request-id"])
        .expose_headers(["x-request-id", "retry-after"]);
    let limits = rate_limits(state.store.clone())?;
    state.metrics.register(|registry| {
        limits.register_metrics(registry);
        state.store.register_metrics(registry);
        state.supervisor.register_metrics(registry);
        state.auth.login.lockout().register_metrics(registry);
        if let Some(check) = state.auth.login.breach() {
            check.register_metrics(registry);
        }
    });
    let auth_layer = AuthLayer::new(
        std::sync::Arc::clone(state.auth.sessions.jwt()),
        state.auth.sessions.revocations().clone(),
    );
    let auth_routes = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/logout-all", post(auth::logout_all))
        .route("/auth/password", post(auth::change_password))
        .route("/me", get(auth::me))
        .with_state(state.auth.clone());
    // Uploads may be 10 MiB; the JSON routes keep the stack's 1 MiB.
    let file_routes = Router::new()
        .route(
            "/files/{*path}",
            get(files::get).put(files::put).delete(files::delete),
        )
        .route("/files", get(files::list))
        .with_state(state.files.clone())
        .layer(palisade::http::BodyLimitLayer::new(files::MAX_UPLOAD));
    let mut routes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state.clone())
        .merge(auth_routes)
        .merge(file_routes);
    // With an internal metrics listener, the main one has no /metrics (404).
    if settings.metrics_listen.is_none() {
        // Only `dev` serves local peers without the token.
        let tokenless = match settings.profile {
            Profile::Dev => Tokenless::LocalOnly,
            _ => Tokenless::Nobody,
        };
        routes = routes.merge(
            MetricsEndpoint::new(
                state.metrics.clone(),
                settings.metrics_token.clone(),
                tokenless,
                &settings.trusted_proxies,
            )
            .router(),
        );
    }
    let limits = tower::ServiceBuilder::new()
        .layer(limits)
        .layer(ClientConcurrencyLayer::new(MAX_IN_FLIGHT_PER_CLIENT));
    Ok(SecureStack::api()
        .client_ip(client_ip)
        .cors(cors)
        .metrics(state.metrics.clone())
        .auth(auth_layer)
        .rate_limit(limits)
        .build()?
        .apply(routes))
}

/// The internal metrics listener's application (`APP_METRICS_LISTEN`):
/// `/metrics` alone, for whoever reaches the address (or the token holder
/// when `APP_METRICS_TOKEN` is set), behind the security headers and
/// request ids.
pub fn metrics_router(state: &AppState, settings: &Settings) -> Result<Router, ConfigError> {
    Ok(SecureStack::api().build()?.apply(
        MetricsEndpoint::new(
            state.metrics.clone(),
            settings.metrics_token.clone(),
            Tokenless::Anyone,
            &settings.trusted_proxies,
        )
        .router(),
    ))
}

/// Liveness: the process is up. Checks nothing else.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: every registered check answers within its deadline, and the
/// process is not shutting down.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.readiness.check().await;
    (report.status(), Json(report.to_json()))
}

/// Runs the server until SIGTERM or SIGINT, then drains (readiness red
/// first, in-flight requests finish within [`SHUTDOWN_GRACE`], idle and hung
/// connections closed) and returns.
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let db = open_database(&settings).await?;
    let store = open_store(&settings).map_err(RunError::Config)?;
    let state = AppState::new(&db, store, &settings).map_err(RunError::Config)?;
    let app = router(&state, &settings).map_err(RunError::Config)?;
    state.start_tasks().map_err(RunError::Config)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(RunError::Bind)?;
    let addr = listener.local_addr().map_err(RunError::Bind)?;
    let internal = match settings.metrics_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(RunError::Bind)?;
            let app = metrics_router(&state, &settings).map_err(RunError::Config)?;
            tracing::info!(addr = %at, "serving /metrics on the internal listener");
            Some(tokio::spawn(
                Server::from_listener(listener)
                    .drain_timeout(SHUTDOWN_GRACE)
                    .serve(app),
            ))
        }
        None => None,
    };
    tracing::info!(addr = %addr, profile = %settings.profile, "listening");
    let draining = state.clone();
    Server::from_listener(listener)
        .drain_timeout(SHUTDOWN_GRACE)
        .on_shutdown(move || {
            // Readiness turns red before the drain, so load balancers stop
            // sending; the background tasks wind down during the drain.
            draining.begin_shutdown();
            tracing::info!("shutting down: draining in-flight requests");
        })
        .serve(app)
        .await
        .map_err(RunError::Serve)?;
    if let Some(internal) = internal {
        match internal.await {
            Ok(result) => result.map_err(RunError::Serve)?,
            Err(e) => tracing::warn!(error = %e, "the metrics listener's task failed"),
        }
    }
    // Logs the tasks that did not stop in time (they are aborted).
    state.supervisor.shutdown(TASKS_SHUTDOWN_GRACE).await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
