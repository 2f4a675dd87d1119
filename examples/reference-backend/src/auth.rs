//! `/auth/*` and `/me`: registration, login with lockout, rotating refresh
//! tokens, logout, the current user.
//!
//! A login is: rate limit (the layer, 5/min per client IP) → lockout
//! reservation (before the password check) → the user's hash, or the dummy
//! hash when the account does not exist (same work, same answer) → settle the
//! reservation → rehash if weaker than policy → an access token and a refresh
//! token of a new family. Refresh tokens are stored as SHA-256, rotated on
//! every use; a spent one presented again (after a 10 s grace for a benign
//! race) revokes its whole family. Logout revokes the access token and the
//! family on every instance at once (marks in the shared store).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use palisade::core::{ClientIp, ProblemDetails, ProblemType, RequestId, SharedClock};
use palisade::http::ValidatedJson;
use palisade::ratelimit::normalize_identifier;
use palisade_auth::hash::{HashError, Hasher};
use palisade_auth::jwt::{Jwt, RefreshToken, Revocations, random_id};
use palisade_auth::layer::AuthUser;
use palisade_auth::lockout::{Lockout, LockoutError, Settlement};
use palisade_auth::password::PasswordPolicy;
use palisade_config::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sqlx::SqlitePool;
use validator::Validate;

/// How long a refresh token lives.
pub const REFRESH_TTL: Duration = Duration::from_secs(14 * 86_400);
/// A spent refresh token presented again within this window is refused
/// without revoking its family (two tabs refreshing at once).
pub const REUSE_GRACE: Duration = Duration::from_secs(10);
/// The service name refused inside passwords.
pub const SERVICE_NAME: &str = "palisade";

/// Everything the auth handlers need.
#[derive(Debug)]
pub struct Auth {
    /// Issues and verifies access tokens.
    pub jwt: Arc<Jwt>,
    /// Revoked tokens and families, shared between instances.
    pub revocations: Revocations,
    /// Login lockout.
    pub lockout: Lockout,
    /// The password hashing pool.
    pub hasher: Hasher,
    /// The password policy.
    pub policy: PasswordPolicy,
    /// The clock of token and refresh times (tests inject one).
    pub clock: SharedClock,
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// The auth services.
    pub auth: Arc<Auth>,
    /// The database.
    pub db: SqlitePool,
}

/// `POST /auth/register` and `POST /auth/login` bodies.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The email address (normalised: trimmed, lower-cased).
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

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: SecretString,
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn problem(kind: ProblemType, detail: &'static str, id: Option<&RequestId>) -> Response {
    ProblemDetails::new(kind)
        .with_detail(detail)
        .with_optional_request_id(id)
        .into_response()
}

fn invalid_credentials(id: Option<&RequestId>) -> Response {
    problem(ProblemType::UNAUTHORIZED, "invalid credentials", id)
}

fn busy(id: Option<&RequestId>) -> Response {
    ProblemDetails::new(ProblemType::UNAVAILABLE)
        .with_detail("the service is busy; retry shortly")
        .with_retry_after(1)
        .with_optional_request_id(id)
        .into_response()
}

fn internal(id: Option<&RequestId>, what: &'static str, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "{what}");
    problem(ProblemType::INTERNAL, "internal error", id)
}

/// `POST /auth/register`.
pub async fn register(
    State(state): State<AuthState>,
    id: Option<RequestId>,
    ValidatedJson(body): ValidatedJson<Credentials>,
) -> Response {
    let id = id.as_ref();
    let email = normalize_identifier(&body.email);
    let local = email.split('@').next().unwrap_or_default().to_owned();
    let policy = state.auth.policy.clone();
    let password = body.password.clone();
    // The strength estimate takes milliseconds: keep it off the runtime.
    let checked = tokio::task::spawn_blocking(move || {
        policy.check(password.expose_secret(), &[local.as_str()])
    })
    .await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(violations)) => {
            let problem = violations.iter().fold(
                ProblemDetails::new(ProblemType::VALIDATION)
                    .with_detail("the password does not meet the policy"),
                |p, v| p.with_error(v.field_error("password")),
            );
            return problem.with_optional_request_id(id).into_response();
        }
        Err(e) => return internal(id, "password policy task failed", &e),
    }
    let hash = match state.auth.hasher.hash(&body.password).await {
        Ok(h) => h,
        Err(HashError::Busy) => return busy(id),
        Err(e) => return internal(id, "hashing failed", &e),
    };
    let user_id = uuid::Uuid::now_v7().to_string();
    let created_at = palisade::core::clock::rfc3339_seconds(state.auth.clock.unix_now().as_secs());
    let inserted =
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(&user_id)
            .bind(&email)
            .bind(&hash)
            .bind(&created_at)
            .execute(&state.db)
            .await;
    match inserted {
        Ok(_) => (
            StatusCode::CREATED,
            Json(json!({ "id": user_id, "email": email })),
        )
            .into_response(),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => problem(
            ProblemType::CONFLICT,
            "an account with this email already exists",
            id,
        ),
        Err(e) => internal(id, "could not store the user", &e),
    }
}

/// Issues an access token and a refresh token of `family` for `user_id`.
async fn token_pair(
    state: &AuthState,
    user_id: &str,
    family: &str,
    id: Option<&RequestId>,
) -> Response {
    let Ok(refresh) = RefreshToken::generate() else {
        return internal(id, "no randomness", &"getrandom");
    };
    let now = state.auth.clock.unix_now().as_secs();
    let stored = sqlx::query(
        "INSERT INTO refresh_tokens (hash, family, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(refresh.hash().as_slice())
    .bind(family)
    .bind(user_id)
    .bind(i64_of(now))
    .bind(i64_of(now + REFRESH_TTL.as_secs()))
    .execute(&state.db)
    .await;
    if let Err(e) = stored {
        return internal(id, "could not store the refresh token", &e);
    }
    match state.auth.jwt.issue(user_id, family) {
        Ok(access) => Json(json!({
            "access_token": access.token(),
            "token_type": "Bearer",
            "expires_in": access.expires_in().as_secs(),
            "refresh_token": refresh.as_str(),
        }))
        .into_response(),
        Err(e) => internal(id, "could not sign the access token", &e),
    }
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<AuthState>,
    client: ClientIp,
    id: Option<RequestId>,
    ValidatedJson(body): ValidatedJson<LoginRequest>,
) -> Response {
    let id = id.as_ref();
    let email = normalize_identifier(&body.email);
    // Shed a flood before it costs a lockout slot or a database read.
    if state.auth.hasher.saturated() {
        return busy(id);
    }
    let attempt = match state.auth.lockout.reserve(&email, client.key()).await {
        Ok(a) => a,
        Err(LockoutError::Locked { retry_after }) => {
            return ProblemDetails::new(ProblemType::RATE_LIMITED)
                .with_detail("too many failed logins; retry later")
                .with_retry_after(retry_after.as_secs().max(1))
                .with_optional_request_id(id)
                .into_response();
        }
        Err(LockoutError::Unavailable(_)) => return busy(id),
    };
    let user: Result<Option<(String, String)>, sqlx::Error> =
        sqlx::query_as("SELECT id, password_hash FROM users WHERE email = ?")
            .bind(&email)
            .fetch_optional(&state.db)
            .await;
    let user = match user {
        Ok(u) => u,
        Err(e) => {
            state
                .auth
                .lockout
                .settle(attempt, Settlement::Cancelled)
                .await;
            return internal(id, "could not read the user", &e);
        }
    };
    let hasher = &state.auth.hasher;
    let verified = match &user {
        Some((_, hash)) => hasher.verify(&body.password, hash).await,
        // The same work for an account that does not exist.
        None => hasher.verify_dummy(&body.password).await.map(|()| false),
    };
    let ok = match verified {
        Ok(ok) => ok,
        Err(HashError::Busy) => {
            // Not checked: give the slots back, count nothing.
            state
                .auth
                .lockout
                .settle(attempt, Settlement::Cancelled)
                .await;
            return busy(id);
        }
        Err(HashError::TooLong) => false,
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash could not be verified");
            false
        }
    };
    let (Some((user_id, hash)), true) = (user, ok) else {
        state
            .auth
            .lockout
            .settle(attempt, Settlement::Failure)
            .await;
        return invalid_credentials(id);
    };
    state
        .auth
        .lockout
        .settle(attempt, Settlement::Success)
        .await;
    if hasher.needs_rehash(&hash)
        && let Ok(new_hash) = hasher.hash(&body.password).await
    {
        let updated = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(&new_hash)
            .bind(&user_id)
            .execute(&state.db)
            .await;
        if let Err(e) = updated {
            tracing::warn!(error = %e, "could not store the rehashed password");
        }
    }
    let Ok(family) = random_id() else {
        return internal(id, "no randomness", &"getrandom");
    };
    token_pair(&state, &user_id, &family, id).await
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

/// `family, user_id, expires_at, spent_at, revoked` of a refresh token.
type RefreshRow = (String, String, i64, Option<i64>, i64);

/// `POST /auth/refresh`.
pub async fn refresh(
    State(state): State<AuthState>,
    id: Option<RequestId>,
    ValidatedJson(body): ValidatedJson<RefreshRequest>,
) -> Response {
    let id = id.as_ref();
    let presented = body.refresh_token.expose_secret();
    if presented.len() > 128 {
        return invalid_credentials(id);
    }
    let hash = RefreshToken::hash_presented(presented);
    let now = state.auth.clock.unix_now().as_secs();
    let row: Result<Option<RefreshRow>, sqlx::Error> = sqlx::query_as(
        "SELECT family, user_id, expires_at, spent_at, revoked FROM refresh_tokens WHERE hash = ?",
    )
    .bind(hash.as_slice())
    .fetch_optional(&state.db)
    .await;
    let (family, user_id, expires_at, spent_at, revoked) = match row {
        Ok(Some(row)) => row,
        Ok(None) => return invalid_credentials(id),
        Err(e) => return internal(id, "could not read the refresh token", &e),
    };
    if revoked != 0 || expires_at <= i64_of(now) {
        return invalid_credentials(id);
    }
    if let Some(spent) = spent_at {
        if i64_of(now) - spent > i64_of(REUSE_GRACE.as_secs()) {
            // A spent token came back: it was stolen, or the client is
            // replaying. Either way the family is no longer trustworthy.
            if let Err(e) = revoke_family(&state, &family).await {
                return internal(id, "could not revoke a token family", &e);
            }
            tracing::warn!(
                target: "palisade::audit",
                event = "refresh_reuse",
                user_id = %user_id,
                "a spent refresh token was presented again; its family is revoked"
            );
        }
        return invalid_credentials(id);
    }
    let spent = sqlx::query(
        "UPDATE refresh_tokens SET spent_at = ? WHERE hash = ? AND spent_at IS NULL AND revoked = 0",
    )
    .bind(i64_of(now))
    .bind(hash.as_slice())
    .execute(&state.db)
    .await;
    match spent {
        // Another request spent it first (a race): refuse this one.
        Ok(r) if r.rows_affected() != 1 => return invalid_credentials(id),
        Ok(_) => {}
        Err(e) => return internal(id, "could not rotate the refresh token", &e),
    }
    token_pair(&state, &user_id, &family, id).await
}

async fn revoke_family(state: &AuthState, family: &str) -> Result<(), String> {
    sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?")
        .bind(family)
        .execute(&state.db)
        .await
        .map_err(|e| e.to_string())?;
    state
        .auth
        .revocations
        .revoke_family(family)
        .await
        .map_err(|e| e.to_string())
}

/// `POST /auth/logout`.
pub async fn logout(
    State(state): State<AuthState>,
    id: Option<RequestId>,
    user: AuthUser,
) -> Response {
    let id = id.as_ref();
    let claims = user.claims();
    if let Err(e) = state
        .auth
        .revocations
        .revoke_token(claims, state.auth.clock.unix_now().as_secs())
        .await
    {
        return match e {
            palisade::store::StoreError::Unavailable(_) => busy(id),
            other => internal(id, "could not revoke the token", &other),
        };
    }
    if let Err(e) = revoke_family(&state, &claims.fam).await {
        return internal(id, "could not revoke the token family", &e);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /me`.
pub async fn me(State(state): State<AuthState>, id: Option<RequestId>, user: AuthUser) -> Response {
    let id = id.as_ref();
    let row: Result<Option<(String, String, String)>, sqlx::Error> =
        sqlx::query_as("SELECT id, email, created_at FROM users WHERE id = ?")
            .bind(user.id())
            .fetch_optional(&state.db)
            .await;
    match row {
        Ok(Some((uid, email, created_at))) => {
            Json(json!({ "id": uid, "email": email, "created_at": created_at })).into_response()
        }
        // The account is gone: the token no longer names anyone.
        Ok(None) => invalid_credentials(id),
        Err(e) => internal(id, "could not read the user", &e),
    }
}
