//! A short-lived cache of who holds which token, so that a busy client (a dashboard wall,
//! a camera platform sending keepalives) does not cost a catalog read per request.
//!
//! Revoking a token through this process forgets it at once. Another process sharing the
//! catalog sees a revocation within [`TTL`]; expiry is checked on every request from the
//! cached expiry time, so it is exact.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cityhub_catalog::Principal;

/// How long a token's principal is trusted without reading the catalog again.
pub const TTL: Duration = Duration::from_secs(2);
/// Beyond this many tokens the cache starts over (it only saves reads; it is never needed).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct PrincipalCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl PrincipalCache {
    /// The principal of a token hash, if read from the catalog less than [`TTL`] ago.
    pub fn get(&self, token_hash: &str) -> Option<Principal> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(token_hash)
            .filter(|(_, read_at)| read_at.elapsed() < TTL)
            .map(|(principal, _)| principal.clone())
    }

    pub fn insert(&self, token_hash: String, principal: Principal) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(token_hash, (principal, Instant::now()));
        }
    }

    /// Forgets a principal's token at once (it was revoked).
    pub fn forget(&self, principal_id: i64) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (principal, _)| principal.id != principal_id);
        }
    }
}
