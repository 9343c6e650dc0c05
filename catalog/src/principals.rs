//! A short-lived cache of who holds which token, so that a busy client (a dashboard wall,
//! a camera platform sending keepalives) does not cost a catalog read per request.
//!
//! Revoking a token through this process forgets it at once. Another process sharing the
//! catalog sees a revocation within [`TTL`]; expiry is checked on every request from the
//! cached expiry time, so it is exact.

use std::time::Duration;

use moka::sync::Cache;

use crate::model::Principal;

/// How long a token's principal is trusted without reading the catalog again.
pub const TTL: Duration = Duration::from_secs(2);
/// Tokens held at most (it only saves reads; it is never needed).
const MAX_ENTRIES: u64 = 100_000;

/// Principals by token hash, each for at most [`TTL`].
#[derive(Clone)]
pub struct PrincipalCache {
    entries: Cache<String, Principal>,
}

impl Default for PrincipalCache {
    fn default() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(TTL)
                .build(),
        }
    }
}

impl PrincipalCache {
    /// The principal of a token hash, if read from the catalog less than [`TTL`] ago.
    pub fn get(&self, token_hash: &str) -> Option<Principal> {
        self.entries.get(token_hash)
    }

    pub fn insert(&self, token_hash: String, principal: Principal) {
        self.entries.insert(token_hash, principal);
    }

    /// Forgets a principal's tokens at once (it was revoked).
    pub fn forget(&self, principal_id: i64) {
        // Revocations are rare and the cache holds a few thousand entries: a scan is fine.
        let held: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, principal)| principal.id == principal_id)
            .map(|(hash, _)| hash)
            .collect();
        for hash in held {
            self.entries.invalidate(hash.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn principal(id: i64) -> Principal {
        Principal {
            id,
            name: format!("p{id}"),
            department: "gongan".into(),
            role: Role::Analyst,
            created_at: chrono::Utc::now(),
            expires_at: None,
            revoked_at: None,
            rate_limit_per_second: None,
            region: None,
        }
    }

    #[test]
    fn a_cached_principal_is_forgotten_on_revocation_and_after_its_time() {
        let cache = PrincipalCache::default();
        cache.insert("a".into(), principal(1));
        cache.insert("b".into(), principal(2));
        assert_eq!(cache.get("a").map(|p| p.id), Some(1));
        cache.forget(1);
        assert!(cache.get("a").is_none(), "revoked: forgotten at once");
        assert_eq!(cache.get("b").map(|p| p.id), Some(2));
        std::thread::sleep(TTL + Duration::from_millis(100));
        assert!(cache.get("b").is_none(), "read again after the TTL");
    }
}
