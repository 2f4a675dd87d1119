//! Helpers shared by the palisade-auth integration tests.

use argon2::password_hash::{PasswordHasher, SaltString};
use palisade_auth::HashParams;

/// A PHC string of `password` hashed exactly as typed (no NFKC), as stored
/// before passwords were normalised.
pub(crate) fn unnormalised_hash(password: &str, p: HashParams) -> String {
    let params = argon2::Params::new(p.m_kib, p.t, p.p, Some(32)).unwrap_or_else(|e| panic!("{e}"));
    let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap_or_else(|e| panic!("{e}"));
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}
