//! `/auth/*` and `/me`: wiring only. The flows — login with lockout, the
//! dummy hash, rehash, rotating refresh tokens with reuse detection, logout,
//! password change — are `palisade_auth`'s [`Login`] and [`Sessions`]; this
//! module gives them the service's users table ([`Users`]) and turns
//! their outcomes into responses.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use palisade::core::{ClientIp, ProblemDetails, ProblemType, normalize_identifier};
use palisade::http::ValidatedJson;
use palisade_auth::{
    AuthUser, Login, Sessions, StorageError, StoredUser, TokenPair, UserDirectory,
};
use palisade_config::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use validator::Validate;

use crate::db::{Db, RefreshStore};
use crate::on_db;

/// The service name refused inside passwords.
pub const SERVICE_NAME: &str = "palisade";

/// The users table, as the login flow sees it.
#[derive(Debug, Clone)]
pub struct Users {
    db: Db,
}

impl Users {
    /// The users of `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

type UserRow = (String, String, String);

fn user((id, email, hash): UserRow) -> StoredUser {
    StoredUser::new(id, email, hash)
}

impl UserDirectory for Users {
    async fn find(&self, identifier: &str) -> Result<Option<StoredUser>, StorageError> {
        let row: Option<UserRow> = on_db!(&self.db, |pool| sqlx::query_as(
            "SELECT id, email, password_hash FROM users WHERE email = $1"
        )
        .bind(identifier)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(user))
    }

    async fn find_by_id(&self, id: &str) -> Result<Option<StoredUser>, StorageError> {
        let row: Option<UserRow> = on_db!(&self.db, |pool| sqlx::query_as(
            "SELECT id, email, password_hash FROM users WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(user))
    }

    async fn set_password_hash(&self, id: &str, phc: &str) -> Result<(), StorageError> {
        on_db!(&self.db, |pool| sqlx::query(
            "UPDATE users SET password_hash = $1 WHERE id = $2"
        )
        .bind(phc)
        .bind(id)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }
}

/// What the auth handlers share.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// Logins, new passwords and password changes.
    pub login: Login<Users>,
    /// Token pairs, refresh, logout.
    pub sessions: Sessions<RefreshStore>,
    /// The database (registration, `/me`).
    pub db: Db,
    /// The clock of `created_at` (tests inject one).
    pub clock: palisade::core::SharedClock,
}

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The email address (normalised: trimmed, NFKC, lower-cased).
    #[validate(email(code = "invalid_email", message = "must be an email address"))]
    #[validate(length(
        max = 254,
        code = "too_long",
        message = "must be at most 254 characters"
    ))]
    email: String,
    /// The password; never logged, never echoed.
    password: SecretString,
}

/// `POST /auth/login` body: any email-ish string is accepted (unknown and
/// malformed accounts fail like wrong passwords).
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[validate(length(
        min = 1,
        max = 254,
        code = "invalid_email",
        message = "must be an email address"
    ))]
    email: String,
    password: SecretString,
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: SecretString,
}

/// `POST /auth/password` body.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: SecretString,
    new_password: SecretString,
}

/// `POST /auth/register`.
pub async fn register(
    State(state): State<AuthState>,
    ValidatedJson(body): ValidatedJson<Credentials>,
) -> Result<impl IntoResponse, ProblemDetails> {
    let email = normalize_identifier(&body.email);
    let hash = state
        .login
        .new_password_hash(&email, &body.password)
        .await
        .map_err(|e| e.problem("password"))?;
    let user_id = uuid::Uuid::now_v7().to_string();
    let created_at = palisade::core::clock::rfc3339_seconds(state.clock.unix_now().as_secs());
    on_db!(&state.db, |pool| sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)"
    )
    .bind(&user_id)
    .bind(&email)
    .bind(&hash)
    .bind(&created_at)
    .execute(pool)
    .await
    .map(drop))
    .map_err(|e| match e {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            ProblemDetails::new(ProblemType::CONFLICT)
                .with_detail("an account with this email already exists")
        }
        other => crate::db::problem("could not store the user", other),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": user_id, "email": email })),
    ))
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<AuthState>,
    client: ClientIp,
    ValidatedJson(body): ValidatedJson<LoginRequest>,
) -> Result<TokenPair, ProblemDetails> {
    let user = state
        .login
        .attempt(&body.email, &body.password, &client)
        .await?;
    Ok(state.sessions.issue(user.id()).await?)
}

/// `POST /auth/refresh`.
pub async fn refresh(
    State(state): State<AuthState>,
    ValidatedJson(body): ValidatedJson<RefreshRequest>,
) -> Result<TokenPair, ProblemDetails> {
    Ok(state
        .sessions
        .refresh(body.refresh_token.expose_secret())
        .await?)
}

/// `POST /auth/logout`.
pub async fn logout(
    State(state): State<AuthState>,
    user: AuthUser,
) -> Result<StatusCode, ProblemDetails> {
    state.sessions.logout(user.claims()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/logout-all`.
pub async fn logout_all(
    State(state): State<AuthState>,
    user: AuthUser,
) -> Result<StatusCode, ProblemDetails> {
    state.sessions.end_all(user.id()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/password`.
pub async fn change_password(
    State(state): State<AuthState>,
    client: ClientIp,
    user: AuthUser,
    ValidatedJson(body): ValidatedJson<PasswordChange>,
) -> Result<StatusCode, ProblemDetails> {
    state
        .login
        .change_password(
            &state.sessions,
            user.claims(),
            &body.current_password,
            &body.new_password,
            &client,
        )
        .await
        .map_err(|e| e.problem("new_password"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /me`.
pub async fn me(
    State(state): State<AuthState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ProblemDetails> {
    let row: Option<(String, String, String)> = on_db!(&state.db, |pool| sqlx::query_as(
        "SELECT id, email, created_at FROM users WHERE id = $1"
    )
    .bind(user.id())
    .fetch_optional(pool)
    .await)
    .map_err(|e| crate::db::problem("could not read the user", e))?;
    // The account is gone: the token no longer names anyone.
    let (id, email, created_at) = row.ok_or_else(|| {
        ProblemDetails::new(ProblemType::UNAUTHORIZED).with_detail("invalid credentials")
    })?;
    Ok(Json(
        json!({ "id": id, "email": email, "created_at": created_at }),
    ))
}
