//! [`MemoryRefreshStore`]: refresh tokens in the process, for tests and
//! single-process services that accept losing sessions on restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{NewToken, RefreshStore, Rotation, Step};
use crate::StorageError;

struct Token {
    family: String,
    expires_at: u64,
    spent_at: Option<u64>,
}

struct Family {
    user_id: String,
    revoked: bool,
}

#[derive(Default)]
struct State {
    tokens: HashMap<[u8; 32], Token>,
    families: HashMap<String, Family>,
}

/// Refresh tokens and families in memory, behind one lock: every operation
/// is atomic. Sessions do not survive a restart and are not shared between
/// processes; use a database store for that.
#[derive(Default)]
pub struct MemoryRefreshStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryRefreshStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MemoryRefreshStore")
            .field("tokens", &state.tokens.len())
            .field("families", &state.families.len())
            .finish()
    }
}

impl MemoryRefreshStore {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl RefreshStore for MemoryRefreshStore {
    async fn create(
        &self,
        family: &str,
        user_id: &str,
        first: NewToken,
    ) -> Result<(), StorageError> {
        self.with(|s| {
            s.families.insert(
                family.to_owned(),
                Family {
                    user_id: user_id.to_owned(),
                    revoked: false,
                },
            );
            s.tokens.insert(
                first.hash,
                Token {
                    family: family.to_owned(),
                    expires_at: first.expires_at,
                    spent_at: None,
                },
            );
        });
        Ok(())
    }

    async fn rotate(
        &self,
        presented: [u8; 32],
        successor: NewToken,
        grace: Duration,
    ) -> Result<Rotation, StorageError> {
        let now = successor.issued_at;
        Ok(self.with(|s| {
            let Some(token) = s.tokens.get_mut(&presented) else {
                return Rotation::Refused;
            };
            let Some(family) = s.families.get_mut(&token.family) else {
                return Rotation::Refused;
            };
            let step = Step::of(
                family.revoked,
                token.spent_at.map(i128::from),
                token.expires_at.into(),
                now.into(),
                grace,
            );
            match step {
                Step::Refuse => return Rotation::Refused,
                Step::WithinGrace => return Rotation::SpentWithinGrace,
                Step::RevokeFamily => {
                    family.revoked = true;
                    return Rotation::Reused {
                        user_id: family.user_id.clone(),
                        family: token.family.clone(),
                    };
                }
                Step::Rotate => {}
            }
            token.spent_at = Some(now);
            let (user_id, family) = (family.user_id.clone(), token.family.clone());
            s.tokens.insert(
                successor.hash,
                Token {
                    family: family.clone(),
                    expires_at: successor.expires_at,
                    spent_at: None,
                },
            );
            Rotation::Rotated { user_id, family }
        }))
    }

    async fn revoke_family(&self, family: &str) -> Result<(), StorageError> {
        self.with(|s| {
            if let Some(f) = s.families.get_mut(family) {
                f.revoked = true;
            }
        });
        Ok(())
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>, StorageError> {
        Ok(self.with(|s| {
            s.families
                .iter_mut()
                .filter(|(id, f)| f.user_id == user_id && !f.revoked && Some(id.as_str()) != keep)
                .map(|(id, f)| {
                    f.revoked = true;
                    id.clone()
                })
                .collect()
        }))
    }

    async fn prune(&self, now: u64) -> Result<u64, StorageError> {
        Ok(self.with(|s| {
            let before = s.tokens.len();
            s.tokens.retain(|_, t| t.expires_at > now);
            let State { tokens, families } = s;
            let live: HashSet<&String> = tokens.values().map(|t| &t.family).collect();
            families.retain(|id, _| live.contains(id));
            u64::try_from(before - tokens.len()).unwrap_or(u64::MAX)
        }))
    }
}
