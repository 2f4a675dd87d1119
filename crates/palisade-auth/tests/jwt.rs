#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! Access tokens against the classic JWT attacks, with an injected clock.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_auth::jwt::{Jwt, JwtConfig, JwtError, RefreshToken, Revocations};
use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyEncoding, KeyRing};
use palisade_core::{Clock as _, ManualClock};
use palisade_store::{MemoryStore, RedisOptions, Store};
use palisade_testkit::redis::RedisServer;

const NOW: u64 = 1_800_000_000;

/// A deterministic, high-entropy test key per seed.
fn key(seed: u8) -> HmacKey {
    use sha2::Digest as _;
    let text = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest([seed, 7, 7]));
    HmacKey::parse(&text, HmacAlgorithm::Hs256, KeyEncoding::Raw).unwrap()
}

fn jwt_with(ring: KeyRing) -> (Arc<ManualClock>, Jwt) {
    let manual = Arc::new(ManualClock::at_unix(Duration::from_secs(NOW)));
    let shared: palisade_core::SharedClock = manual.clone();
    let jwt = Jwt::new(ring, JwtConfig::new("https://id.example", "api"))
        .unwrap()
        .with_clock(shared);
    (manual, jwt)
}

fn fresh() -> (Arc<ManualClock>, Jwt) {
    jwt_with(KeyRing::new(key(1)))
}

fn part(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn a_token_round_trips_with_every_claim() {
    let (_clock, jwt) = fresh();
    let issued = jwt.issue("user-1", "fam-1").unwrap();
    let claims = jwt.verify(issued.token()).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.exp - claims.iat, 900);
    let raw = claims_of(issued.token());
    for claim in ["sub", "iat", "nbf", "exp", "iss", "aud", "jti", "fam"] {
        assert!(raw.get(claim).is_some(), "{claim}");
    }
    assert!(!format!("{issued:?}").contains(issued.token()));
}

#[test]
fn alg_none_is_refused() {
    let (_clock, jwt) = fresh();
    let issued = jwt.issue("user-1", "fam").unwrap();
    let header = part(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": key(1).kid()}));
    let payload = issued.token().split('.').nth(1).unwrap();
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert_eq!(jwt.verify(&token), Err(JwtError::Malformed));
    }
}

#[test]
fn rs256_with_the_hmac_secret_as_public_key_is_refused() {
    // The classic confusion: a token claiming RS256 (or HS512) signed with
    // the HMAC key. Only the ring's algorithm is accepted.
    let (_clock, jwt) = fresh();
    let issued = jwt.issue("user-1", "fam").unwrap();
    let payload = issued.token().split('.').nth(1).unwrap();
    for alg in ["RS256", "HS512", "ES256", "PS256"] {
        let header = part(&serde_json::json!({"alg": alg, "typ": "JWT", "kid": key(1).kid()}));
        let sig = issued.token().split('.').nth(2).unwrap();
        assert_eq!(
            jwt.verify(&format!("{header}.{payload}.{sig}")),
            Err(JwtError::Malformed),
            "{alg}"
        );
    }
}

#[test]
fn a_wrong_key_or_tampered_claims_fail_the_signature() {
    let (_clock, jwt) = fresh();
    let (_c, other) = jwt_with(KeyRing::new(key(2)));
    let forged = other.issue("admin", "fam").unwrap();
    assert_eq!(
        jwt.verify(forged.token()),
        Err(JwtError::Signature),
        "unknown kid"
    );

    let issued = jwt.issue("user-1", "fam").unwrap();
    let mut claims = claims_of(issued.token());
    claims["sub"] = "admin".into();
    let parts: Vec<&str> = issued.token().split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], part(&claims), parts[2]);
    assert_eq!(jwt.verify(&tampered), Err(JwtError::Signature));
    // A flipped signature byte.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let bad = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(jwt.verify(&bad), Err(JwtError::Signature));
    // Garbage and oversized input.
    assert_eq!(jwt.verify("not.a.token"), Err(JwtError::Malformed));
    assert_eq!(jwt.verify(&"a".repeat(10_000)), Err(JwtError::Malformed));
}

#[test]
fn expiry_and_not_before_hold_at_the_clock_edges() {
    let (clock, jwt) = fresh();
    let issued = jwt.issue("user-1", "fam").unwrap();
    // Valid until exp + 5 s leeway.
    clock.advance(Duration::from_secs(900 + 4));
    assert!(jwt.verify(issued.token()).is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(jwt.verify(issued.token()), Err(JwtError::Time));

    // A token from the future (nbf 60 s ahead).
    let (clock2, jwt2) = fresh();
    clock2.advance(Duration::from_secs(60));
    let future = jwt2.issue("user-1", "fam").unwrap();
    let (now, verifier) = fresh();
    assert_eq!(verifier.verify(future.token()), Err(JwtError::Time));
    // Within the 5 s leeway it is accepted.
    now.advance(Duration::from_secs(55));
    assert!(verifier.verify(future.token()).is_ok());
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let (_clock, jwt) = fresh();
    for (iss, aud) in [
        ("https://evil.example", "api"),
        ("https://id.example", "other"),
    ] {
        let other = Jwt::new(KeyRing::new(key(1)), JwtConfig::new(iss, aud))
            .unwrap()
            .with_clock(Arc::new(ManualClock::at_unix(Duration::from_secs(NOW))));
        let token = other.issue("user-1", "fam").unwrap();
        assert_eq!(
            jwt.verify(token.token()),
            Err(JwtError::Claims),
            "{iss} {aud}"
        );
    }
}

#[test]
fn rotated_keys_verify_within_their_overlap_and_not_after() {
    let (_old_clock, old) = jwt_with(KeyRing::new(key(1)));
    let before = old.issue("user-1", "fam").unwrap();
    let ring = KeyRing::new(key(2)).with_previous(key(1), Some(NOW + 900));
    let (clock, rotated) = jwt_with(ring);
    assert!(rotated.verify(before.token()).is_ok(), "within the overlap");
    let after = rotated.issue("user-1", "fam").unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(after.token().split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], key(2).kid());
    clock.advance(Duration::from_secs(900));
    assert_eq!(
        rotated.verify(before.token()),
        Err(JwtError::Signature),
        "retired"
    );
    assert!(rotated.verify(after.token()).is_ok());
}

#[test]
fn leeway_is_capped() {
    let config = JwtConfig::new("i", "a").leeway(Duration::from_secs(60));
    assert!(Jwt::new(KeyRing::new(key(1)), config).is_err());
}

#[test]
fn refresh_tokens_are_random_hashed_and_hidden() {
    let a = RefreshToken::generate().unwrap();
    let b = RefreshToken::generate().unwrap();
    assert_ne!(a.as_str(), b.as_str());
    assert_eq!(URL_SAFE_NO_PAD.decode(a.as_str()).unwrap().len(), 32);
    assert_eq!(a.hash(), RefreshToken::hash_presented(a.as_str()));
    assert!(!format!("{a:?}").contains(a.as_str()));
}

#[tokio::test]
async fn logout_on_one_instance_revokes_on_another_sharing_redis() {
    let server = RedisServer::start().unwrap();
    let options = RedisOptions::default().call_timeout(Duration::from_secs(1));
    let store =
        |_: u8| Store::redis(&server.url(), "redis", &options, MemoryStore::default()).unwrap();
    let (_clock, jwt) = fresh();
    let a = Revocations::new(store(1), jwt.access_ttl());
    let b = Revocations::new(store(2), jwt.access_ttl());
    let first = jwt
        .verify(jwt.issue("user-1", "fam-1").unwrap().token())
        .unwrap();
    let second = jwt
        .verify(jwt.issue("user-1", "fam-2").unwrap().token())
        .unwrap();
    assert!(!b.is_revoked(&first).await.unwrap());
    a.revoke_token(&first, NOW).await.unwrap();
    assert!(b.is_revoked(&first).await.unwrap());
    assert!(!b.is_revoked(&second).await.unwrap());
    a.revoke_family("fam-2").await.unwrap();
    assert!(b.is_revoked(&second).await.unwrap());
    // Revocations expire with the tokens.
    let palisade_testkit::redis::Reply::Array(keys) = server.command(&["KEYS", "*"]).unwrap()
    else {
        panic!("KEYS");
    };
    for key in keys {
        let key = key.as_str().unwrap().to_owned();
        let palisade_testkit::redis::Reply::Integer(ttl) = server.command(&["PTTL", &key]).unwrap()
        else {
            panic!("PTTL");
        };
        assert!(ttl > 0 && ttl <= 905_000, "{key}: {ttl}");
    }
}

#[test]
fn access_token_lifetimes_are_bounded() {
    let ok = JwtConfig::new("i", "a").access_ttl(Duration::from_secs(8 * 3600));
    assert!(Jwt::new(KeyRing::new(key(1)), ok).is_ok());
    for ttl in [0, 8 * 3600 + 1, 30 * 86_400] {
        let config = JwtConfig::new("i", "a").access_ttl(Duration::from_secs(ttl));
        assert!(Jwt::new(KeyRing::new(key(1)), config).is_err(), "{ttl}");
    }
}

/// Ending a user's sessions refuses every token issued up to the cut-off, of
/// that user only, and admits those issued after; the entry expires with the
/// last token it could affect.
async fn end_sessions_cuts_at_the_second(
    clock: &ManualClock,
    jwt: &Jwt,
    ending: &Revocations,
    checking: &Revocations,
) {
    let token = |sub: &str| jwt.verify(jwt.issue(sub, "fam").unwrap().token()).unwrap();
    let early = token("user-1");
    clock.advance(Duration::from_secs(600));
    let same_second = token("user-1");
    let other_user = token("user-2");
    assert!(!checking.is_revoked(&early).await.unwrap());
    let cut = clock.unix_now().as_secs();
    ending.end_sessions("user-1", cut).await.unwrap();
    assert!(checking.is_revoked(&early).await.unwrap());
    assert!(checking.is_revoked(&same_second).await.unwrap());
    assert!(!checking.is_revoked(&other_user).await.unwrap());
    // An older cut-off arriving late does not reopen anything.
    ending.end_sessions("user-1", cut - 300).await.unwrap();
    assert!(checking.is_revoked(&same_second).await.unwrap());
    clock.advance(Duration::from_secs(1));
    let after = token("user-1");
    assert!(!checking.is_revoked(&after).await.unwrap());
}

#[tokio::test]
async fn ending_a_users_sessions_in_memory_expires_with_the_tokens() {
    let (clock, jwt) = fresh();
    let store = Store::memory(MemoryStore::builder().clock(clock.clone()).build());
    let revocations = Revocations::new(store, jwt.access_ttl());
    end_sessions_cuts_at_the_second(&clock, &jwt, &revocations, &revocations).await;
    // The cut-off outlives the last token it covers (15 min + leeway)...
    let covered = jwt.verify(jwt.issue("user-1", "fam").unwrap().token());
    assert!(covered.is_ok());
    revocations
        .end_sessions("user-1", clock.unix_now().as_secs())
        .await
        .unwrap();
    let covered = covered.unwrap();
    clock.advance(jwt.access_ttl() + Duration::from_secs(5));
    assert!(revocations.is_revoked(&covered).await.unwrap());
    // ...and then goes away.
    clock.advance(Duration::from_secs(6));
    assert!(!revocations.is_revoked(&covered).await.unwrap());
}

#[tokio::test]
async fn ending_a_users_sessions_on_one_instance_holds_on_another_sharing_redis() {
    let server = RedisServer::start().unwrap();
    let options = RedisOptions::default().call_timeout(Duration::from_secs(1));
    let store = || Store::redis(&server.url(), "redis", &options, MemoryStore::default()).unwrap();
    let (clock, jwt) = fresh();
    let a = Revocations::new(store(), jwt.access_ttl());
    let b = Revocations::new(store(), jwt.access_ttl());
    end_sessions_cuts_at_the_second(&clock, &jwt, &a, &b).await;
    let palisade_testkit::redis::Reply::Array(keys) = server.command(&["KEYS", "*"]).unwrap()
    else {
        panic!("KEYS");
    };
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_str().unwrap().to_owned();
    let palisade_testkit::redis::Reply::Integer(ttl) = server.command(&["PTTL", &key]).unwrap()
    else {
        panic!("PTTL");
    };
    assert!(ttl > 900_000 && ttl <= 910_000, "{key}: {ttl}");
}

/// Issue 18: "every claim required" had no test with a correctly signed
/// token that lacks a claim. The same claims, correctly signed, verify; with
/// any one of them removed, they do not.
#[test]
fn a_correctly_signed_token_missing_any_claim_is_refused() {
    let (_clock, jwt) = fresh();
    let signing = key(1);
    let full = serde_json::json!({
        "sub": "user-1", "iat": NOW, "nbf": NOW, "exp": NOW + 900,
        "iss": "https://id.example", "aud": "api", "jti": "j-1", "fam": "fam-1",
    });
    let sign = |claims: &serde_json::Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(signing.kid().to_owned());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_secret(signing.bytes()),
        )
        .unwrap()
    };
    assert_eq!(
        jwt.verify(&sign(&full)).unwrap().sub,
        "user-1",
        "the control verifies"
    );
    for claim in ["exp", "nbf", "iat", "jti", "iss", "aud", "sub", "fam"] {
        let mut partial = full.clone();
        partial.as_object_mut().unwrap().remove(claim);
        assert_eq!(
            jwt.verify(&sign(&partial)),
            Err(JwtError::Malformed),
            "a token without {claim} was accepted"
        );
    }
}
