//! GA/T 1400 视图库 accounts: the lower platforms and collection devices that may send
//! video-derived records (vehicles, faces, persons) to the hub's `/VIID/` receiver.
//!
//! An account is the platform's 20-digit id, the department whose datasets its records
//! land in, and the digest of its password. GA/T 1400 registers with HTTP digest
//! authentication (RFC 2617, MD5), which needs `HA1 = MD5(id:realm:password)` on the
//! server side; the hub keeps only that, never the password. HA1 is as good as the
//! password for this realm, so the accounts table is as secret as the token hashes.
//!
//! A registered platform stays registered while its keepalives come in: one that has sent
//! neither a registration nor a keepalive for [`REGISTRATION_LAPSES_AFTER`] must register
//! again (the standard's clients keep alive every 30 to 60 seconds).

use chrono::{DateTime, Duration, Utc};
use md5::{Digest, Md5};
use serde::Serialize;

use crate::error::{CatalogError, Result};

/// The digest realm every account's HA1 is computed for. Changing it invalidates every
/// stored HA1, so it is a constant, not a setting.
pub const REALM: &str = "cityhub-viid";

/// How long a registration lasts without a keepalive.
pub const REGISTRATION_LAPSES_AFTER: Duration = Duration::seconds(180);

/// One GA/T 1400 account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViidAccount {
    /// The platform's or device's 20-digit id (its `User-Identify` header).
    pub id: String,
    /// The department whose `viid_*` datasets its records land in.
    pub department: String,
    #[serde(skip)]
    pub ha1: String,
    pub created_at: DateTime<Utc>,
    /// When it last registered; `None` when it never did or unregistered since.
    pub registered_at: Option<DateTime<Utc>>,
    /// Its last registration or keepalive.
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl ViidAccount {
    /// Whether it is registered at `now`: it registered and has not gone quiet for longer
    /// than [`REGISTRATION_LAPSES_AFTER`].
    pub fn registered(&self, now: DateTime<Utc>) -> bool {
        match (self.registered_at, self.last_seen_at) {
            (Some(_), Some(seen)) => now - seen <= REGISTRATION_LAPSES_AFTER,
            _ => false,
        }
    }
}

/// Checks a GA/T 1400 id: exactly 20 ASCII digits.
pub fn validate_account_id(id: &str) -> Result<()> {
    if id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(CatalogError::invalid(
            "id",
            format!(
                "{id:?} is not a GA/T 1400 id: use the platform's 20-digit id (region code, \
                 industry, type, network, serial), e.g. 51100000001190000001"
            ),
        ))
    }
}

/// `MD5(id:realm:password)` in lower-case hex, as RFC 2617 defines HA1.
pub fn ha1(id: &str, password: &str) -> String {
    md5_hex(&format!("{id}:{REALM}:{password}"))
}

/// Lower-case hex MD5 of `text`.
pub fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_follows_rfc_2617() {
        // RFC 2617 section 3.5's example: Mufasa / testrealm@host.com / Circle Of Life.
        assert_eq!(
            md5_hex("Mufasa:testrealm@host.com:Circle Of Life"),
            "939e7578ed9e3c518a452acee763bce9"
        );
        assert_eq!(
            ha1("51100000001190000001", "pw"),
            md5_hex("51100000001190000001:cityhub-viid:pw")
        );
    }

    #[test]
    fn a_registration_lapses_without_keepalives() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
        let mut account = ViidAccount {
            id: "51100000001190000001".into(),
            department: "gaj".into(),
            ha1: String::new(),
            created_at: at,
            registered_at: None,
            last_seen_at: None,
        };
        assert!(!account.registered(at));
        account.registered_at = Some(at);
        account.last_seen_at = Some(at);
        assert!(account.registered(at + Duration::seconds(180)));
        assert!(!account.registered(at + Duration::seconds(181)));
    }

    #[test]
    fn ids_are_twenty_digits() {
        assert!(validate_account_id("51100000001190000001").is_ok());
        for bad in [
            "5110000000119000000",
            "5110000000119000000x",
            "",
            "511000000011900000011",
        ] {
            let err = validate_account_id(bad).expect_err("refused");
            assert!(err.to_string().starts_with("id: "), "{err}");
        }
    }
}
