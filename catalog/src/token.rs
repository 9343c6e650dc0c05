//! Bearer tokens: random, shown once, stored only as a hash.
//!
//! Tokens carry 256 random bits, so a plain SHA-256 is enough to make a stolen catalog
//! useless for logging in; a slow password hash would only slow down every request.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Prefix that makes cityhub tokens recognisable to secret scanners and people.
pub const TOKEN_PREFIX: &str = "chub_";

/// A freshly made token; the plaintext exists only until it is shown to the user.
pub struct Token {
    pub plaintext: String,
    pub hash: String,
}

impl Token {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        let plaintext = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let hash = hash_token(&plaintext);
        Self { plaintext, hash }
    }
}

/// The stored form of a token.
pub fn hash_token(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(a.plaintext.starts_with(TOKEN_PREFIX));
        assert_eq!(a.plaintext.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a.plaintext), a.hash);
        assert_ne!(a.hash, a.plaintext);
    }
}
