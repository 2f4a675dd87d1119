//! Forgeries of a valid JSON Web Token, generated from it: each one a
//! service must refuse.
//!
//! Without the service's signing key, the time forgeries (`expired`,
//! `future-nbf`) can only be re-signed with a wrong key, so a refusal may
//! come from the signature rather than the time check. Given the key
//! ([`forgeries`]'s `secret`, an HMAC key), they are signed exactly, and a
//! `control` token (the same claims, re-signed) shows the key is the right
//! one: the service must accept it.
//!
//! # Example
//!
//! ```
//! use palisade_testkit::corpus::jwt::{forgeries, sign_hs};
//! use serde_json::json;
//!
//! let token = sign_hs(
//!     &json!({"alg": "HS256", "typ": "JWT"}),
//!     &json!({"sub": "user-1", "exp": 4_000_000_000u64}),
//!     b"an-example-key-of-thirty-two-bytes!",
//! ).unwrap();
//! let forged = forgeries(&token, None, 1_800_000_000).unwrap();
//! let none = forged.iter().find(|f| f.name == "alg-none").unwrap();
//! assert!(none.token.ends_with('.'));
//! assert!(forged.iter().all(|f| f.token != token));
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// One forged token and what it tries.
#[derive(Clone)]
pub struct Forgery {
    /// A short stable name (`alg-none`, `wrong-key`...).
    pub name: &'static str,
    /// What was changed, for a failure message.
    pub description: String,
    /// The forged token.
    pub token: String,
    /// Whether the service must accept it (only the `control` token).
    pub must_accept: bool,
}

impl std::fmt::Debug for Forgery {
    // The token is a credential-shaped value: never in Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forgery")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("must_accept", &self.must_accept)
            .finish_non_exhaustive()
    }
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn hmac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], input: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Signs `header.payload` with HMAC under the header's `alg` (`HS256`,
/// `HS384` or `HS512`; anything else is signed with HS256).
pub fn sign_hs(header: &Value, payload: &Value, key: &[u8]) -> Result<String, String> {
    let input = format!("{}.{}", encode(header), encode(payload));
    let sig = match header.get("alg").and_then(Value::as_str) {
        Some("HS384") => hmac_with::<Hmac<sha2::Sha384>>(key, input.as_bytes()),
        Some("HS512") => hmac_with::<Hmac<sha2::Sha512>>(key, input.as_bytes()),
        _ => hmac_with::<Hmac<sha2::Sha256>>(key, input.as_bytes()),
    };
    if sig.is_empty() {
        return Err("HMAC refused the key".to_owned());
    }
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// The header and claims of `token`, without checking anything.
pub fn decode(token: &str) -> Result<(Value, Value, String), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWS compact token (three dot-separated parts)".to_owned());
    };
    let part = |text: &str, what: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("the {what} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| format!("the {what} is not JSON"))
    };
    Ok((part(h, "header")?, part(p, "payload")?, s.to_owned()))
}

fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    // A fixed key if the OS has no randomness: still not the service's key.
    if getrandom::fill(&mut key).is_err() {
        key = b"palisade-audit-wrong-key-000000000".to_vec();
    }
    key
}

#[allow(clippy::too_many_lines)] // one list of forgeries, read top to bottom
/// Forgeries of `token` (a valid token the service accepts), at the Unix
/// time `now`. With `secret` (the service's HMAC key), the time forgeries
/// are signed exactly and a `control` that must be accepted is added.
pub fn forgeries(token: &str, secret: Option<&[u8]>, now: u64) -> Result<Vec<Forgery>, String> {
    let (header, claims, sig) = decode(token)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("HS256")
        .to_owned();
    let with = |mut v: Value, key: &str, value: Value| {
        if let Some(map) = v.as_object_mut() {
            map.insert(key.to_owned(), value);
        }
        v
    };
    let unsigned = |h: &Value, c: &Value| format!("{}.{}.", encode(h), encode(c));
    let keep_sig = |h: &Value, c: &Value| format!("{}.{}.{sig}", encode(h), encode(c));
    let wrong = random_key();
    let hs_alg = if alg.starts_with("HS") {
        alg.clone()
    } else {
        "HS256".to_owned()
    };
    let hs_header = with(header.clone(), "alg", json!(hs_alg));
    let mut out = Vec::new();
    let mut push = |name, description: String, token: String| {
        out.push(Forgery {
            name,
            description,
            token,
            must_accept: false,
        });
    };

    for (name, none) in [
        ("alg-none", "none"),
        ("alg-None", "None"),
        ("alg-NONE", "NONE"),
    ] {
        let h = with(header.clone(), "alg", json!(none));
        push(
            name,
            format!("header alg `{none}`, signature removed"),
            unsigned(&h, &claims),
        );
    }
    let h = with(header.clone(), "alg", json!("none"));
    push(
        "alg-none-two-parts",
        "header alg `none`, no signature part at all".to_owned(),
        format!("{}.{}", encode(&h), encode(&claims)),
    );
    push(
        "signature-stripped",
        format!("header alg `{alg}` kept, signature removed"),
        unsigned(&header, &claims),
    );
    push(
        "wrong-key",
        format!("same claims re-signed with {hs_alg} under a random key"),
        sign_hs(&hs_header, &claims, &wrong)?,
    );
    push(
        "empty-key",
        format!("same claims re-signed with {hs_alg} under an empty key"),
        sign_hs(&hs_header, &claims, b"")?,
    );
    for other in ["RS256", "ES256", "PS256", "HS512", "HS256"] {
        if other == alg {
            continue;
        }
        let h = with(header.clone(), "alg", json!(other));
        let name = match other {
            "RS256" => "alg-confusion-RS256",
            "ES256" => "alg-confusion-ES256",
            "PS256" => "alg-confusion-PS256",
            "HS512" => "alg-confusion-HS512",
            _ => "alg-confusion-HS256",
        };
        push(
            name,
            format!("header alg switched from `{alg}` to `{other}`, original signature kept"),
            keep_sig(&h, &claims),
        );
    }
    push(
        "tampered-sub",
        "claim `sub` changed to `admin`, original signature kept".to_owned(),
        keep_sig(&header, &with(claims.clone(), "sub", json!("admin"))),
    );
    let far = now.saturating_add(10 * 365 * 86_400);
    push(
        "tampered-exp",
        "claim `exp` moved ten years ahead, original signature kept".to_owned(),
        keep_sig(&header, &with(claims.clone(), "exp", json!(far))),
    );
    push(
        "tampered-role",
        "claims `role: admin` and `admin: true` added, original signature kept".to_owned(),
        keep_sig(
            &header,
            &with(
                with(claims.clone(), "role", json!("admin")),
                "admin",
                json!(true),
            ),
        ),
    );
    push(
        "unknown-kid",
        "header kid set to an id the service never issued, original signature kept".to_owned(),
        keep_sig(
            &with(header.clone(), "kid", json!("palisade-audit-unknown-kid")),
            &claims,
        ),
    );
    push(
        "kid-injection",
        "header kid `../../../../../../dev/null` and an HMAC under an empty key (a service that \
         reads its key from a file named by kid verifies it)"
            .to_owned(),
        sign_hs(
            &with(
                hs_header.clone(),
                "kid",
                json!("../../../../../../dev/null"),
            ),
            &claims,
            b"",
        )?,
    );
    let jwk = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(&wrong)});
    push(
        "embedded-jwk",
        "the attacker's own key embedded in the header (`jwk`) and used to sign".to_owned(),
        sign_hs(&with(hs_header.clone(), "jwk", jwk), &claims, &wrong)?,
    );
    push(
        "jku-header",
        "header `jku` pointing at an attacker's key set, signed under a random key".to_owned(),
        sign_hs(
            &with(
                hs_header.clone(),
                "jku",
                json!("http://palisade-audit.invalid/jwks.json"),
            ),
            &claims,
            &wrong,
        )?,
    );

    let expired = with(
        with(
            with(claims.clone(), "exp", json!(now.saturating_sub(3_600))),
            "iat",
            json!(now.saturating_sub(7_200)),
        ),
        "nbf",
        json!(now.saturating_sub(7_200)),
    );
    let future = with(
        with(
            with(claims.clone(), "nbf", json!(now + 3_600)),
            "iat",
            json!(now + 3_600),
        ),
        "exp",
        json!(now + 7_200),
    );
    if let Some(key) = secret {
        push(
            "expired",
            "`exp` an hour ago, signed with the service's own key".to_owned(),
            sign_hs(&header, &expired, key)?,
        );
        push(
            "future-nbf",
            "`nbf` an hour ahead, signed with the service's own key".to_owned(),
            sign_hs(&header, &future, key)?,
        );
        let issued = claims.get("iat").and_then(Value::as_u64).unwrap_or(now);
        let fresh = with(
            with(
                with(claims.clone(), "iat", json!(issued)),
                "nbf",
                json!(issued),
            ),
            "exp",
            json!(now + 600),
        );
        out.push(Forgery {
            name: "control",
            description: "the same claims re-signed with the given key: the service must \
                              accept it, or the key is not the service's"
                .to_owned(),
            token: sign_hs(&header, &fresh, key)?,
            must_accept: true,
        });
    } else {
        push(
            "expired",
            "`exp` an hour ago; without the service's key it is signed with a random key \
                 (pass --jwt-secret-file for an exactly signed one)"
                .to_owned(),
            sign_hs(&hs_header, &expired, &wrong)?,
        );
        push(
            "future-nbf",
            "`nbf` an hour ahead; without the service's key it is signed with a random key \
                 (pass --jwt-secret-file for an exactly signed one)"
                .to_owned(),
            sign_hs(&hs_header, &future, &wrong)?,
        );
    }
    Ok(out)
}
