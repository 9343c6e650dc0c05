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

/// Where an upper platform's subscription stands (GA/T 1400 `SubscribeStatus`, plus the
/// hub's own `dropped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// 订阅中: notifications are sent.
    Active,
    /// 已取消: the subscriber cancelled it.
    Cancelled,
    /// 已到期: its end time passed.
    Expired,
    /// The hub gave up: the receiver kept failing, or it fell behind what the hub keeps.
    Dropped,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Cancelled => "cancelled",
            SubscriptionStatus::Expired => "expired",
            SubscriptionStatus::Dropped => "dropped",
        }
    }

    /// GA/T 1400's `SubscribeStatus`: 0 订阅中, 1 已取消, 2 已到期, 9 未订阅 (dropped).
    pub fn code(self) -> u8 {
        match self {
            SubscriptionStatus::Active => 0,
            SubscriptionStatus::Cancelled => 1,
            SubscriptionStatus::Expired => 2,
            SubscriptionStatus::Dropped => 9,
        }
    }
}

/// An upper platform's subscription to records landing in its account's department.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ViidSubscription {
    /// `SubscribeID`.
    pub id: String,
    /// The subscribing account.
    pub account_id: String,
    /// Whose records it receives: the account's department.
    pub department: String,
    pub title: String,
    /// The `SubscribeDetail` codes asked for, e.g. `13` (vehicles).
    pub details: Vec<String>,
    /// Devices whose records it wants (`ResourceURI`); empty: all.
    pub devices: Vec<String>,
    /// Where notifications are posted (`ReceiveAddr`).
    pub receive_addr: String,
    pub begin_at: DateTime<Utc>,
    pub end_at: Option<DateTime<Utc>>,
    pub status: SubscriptionStatus,
    /// Why it was dropped, or the last delivery error.
    pub reason: Option<String>,
    /// Per landing dataset, the last snapshot sequence whose records were delivered.
    pub cursors: std::collections::BTreeMap<String, i64>,
    /// Failed deliveries in a row.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    /// Records delivered so far.
    pub delivered: u64,
    pub created_at: DateTime<Utc>,
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

/// Creates an account for `by` (an admin): a random password, shown once to the caller
/// and kept only as HA1. Audited.
pub async fn create_account(
    catalog: &crate::Catalog,
    audit: &crate::AuditLog,
    by: &crate::Principal,
    id: &str,
    department: &str,
) -> Result<(ViidAccount, String)> {
    crate::access::require_role(by, &[crate::Role::Admin], "creating GA/T 1400 accounts")?;
    validate_account_id(id)?;
    // 128 random bits, in characters every GA/T 1400 client's configuration accepts.
    let bytes: [u8; 16] = rand::Rng::random(&mut rand::rng());
    let password = hex::encode(bytes);
    let account = catalog
        .create_viid_account(id, department, &ha1(id, &password))
        .await?;
    let mut event = crate::AuditEvent::by(by, crate::Action::ViidAccount, crate::Outcome::Ok)
        .detail(serde_json::json!({"account": id, "event": "create", "department": department}));
    event.department = Some(department.to_string());
    audit.record(event);
    Ok((account, password))
}

/// How long a digest challenge's nonce may be answered.
pub const NONCE_LIFETIME: Duration = Duration::seconds(300);

/// A nonce for a challenge to `account` at `now`: its time and a tag only the hub can
/// make, keyed by the account's HA1. Any node of the hub checks it without shared state.
/// (An unknown account gets a nonce keyed by nothing it could know, so the challenge does
/// not reveal which ids exist.)
pub fn nonce(ha1: &str, now: DateTime<Utc>) -> String {
    let at = format!("{:x}", now.timestamp());
    format!("{at}.{}", nonce_tag(ha1, &at))
}

fn nonce_tag(ha1: &str, at: &str) -> String {
    use sha2::Sha256;
    let digest = Sha256::digest(format!("cityhub-viid-nonce:{ha1}:{at}").as_bytes());
    hex::encode(&digest[..16])
}

/// The `WWW-Authenticate` value of a challenge.
pub fn challenge(nonce: &str) -> String {
    format!("Digest realm=\"{REALM}\", qop=\"auth\", nonce=\"{nonce}\", algorithm=MD5")
}

/// The parts of an `Authorization: Digest ...` header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DigestResponse {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub algorithm: Option<String>,
}

/// Parses an `Authorization` header value `Digest k="v", k=v, ...`.
pub fn parse_digest(header: &str) -> Option<DigestResponse> {
    let rest = header.trim();
    let (scheme, rest) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut answer = DigestResponse::default();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            value
        } else {
            chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_string()
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "username" => answer.username = value,
            "realm" => answer.realm = value,
            "nonce" => answer.nonce = value,
            "uri" => answer.uri = value,
            "response" => answer.response = value.to_ascii_lowercase(),
            "qop" => answer.qop = Some(value),
            "nc" => answer.nc = Some(value),
            "cnonce" => answer.cnonce = Some(value),
            "algorithm" => answer.algorithm = Some(value),
            _ => {}
        }
    }
    (!answer.username.is_empty() && !answer.response.is_empty()).then_some(answer)
}

/// Why a digest answer was not accepted, in words for the log and the sender.
pub fn check_digest(
    account: &ViidAccount,
    answer: &DigestResponse,
    method: &str,
    path: &str,
    now: DateTime<Utc>,
) -> std::result::Result<(), &'static str> {
    if answer.username != account.id {
        return Err("the digest username is not the account id");
    }
    if answer.realm != REALM {
        return Err("the digest realm is not the hub's");
    }
    if answer
        .algorithm
        .as_deref()
        .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
    {
        return Err("only the MD5 digest algorithm is offered");
    }
    // The answer must be for this request's path, so it cannot be replayed elsewhere.
    let uri_path = answer.uri.split('?').next().unwrap_or_default();
    let uri_path = uri_path
        .find("/VIID/")
        .map(|at| &uri_path[at..])
        .unwrap_or(uri_path);
    if uri_path != path {
        return Err("the digest uri is not this request's");
    }
    let Some((at, tag)) = answer.nonce.split_once('.') else {
        return Err("the nonce is not one the hub gave");
    };
    let issued = i64::from_str_radix(at, 16)
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0));
    let Some(issued) = issued else {
        return Err("the nonce is not one the hub gave");
    };
    if !constant_time_eq(tag, &nonce_tag(&account.ha1, at)) {
        return Err("the nonce is not one the hub gave");
    }
    if now - issued > NONCE_LIFETIME || issued - now > Duration::seconds(5) {
        return Err("the nonce is stale; answer a new challenge");
    }
    let ha2 = md5_hex(&format!("{method}:{}", answer.uri));
    let expected = match (&answer.qop, &answer.nc, &answer.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => md5_hex(&format!(
            "{}:{}:{nc}:{cnonce}:{qop}:{ha2}",
            account.ha1, answer.nonce
        )),
        (None, _, _) => md5_hex(&format!("{}:{}:{ha2}", account.ha1, answer.nonce)),
        _ => return Err("qop needs nc and cnonce"),
    };
    if constant_time_eq(&expected, &answer.response) {
        Ok(())
    } else {
        Err("the password is wrong")
    }
}

/// Compares two strings in time that does not depend on where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> ViidAccount {
        ViidAccount {
            id: "51100000001190000001".into(),
            department: "gaj".into(),
            ha1: ha1("51100000001190000001", "pw"),
            created_at: DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
            registered_at: None,
            last_seen_at: None,
        }
    }

    /// What a GA/T 1400 client sends after a challenge (RFC 2617, qop=auth).
    fn client_answer(password: &str, nonce: &str, uri: &str) -> String {
        let ha1 = ha1("51100000001190000001", password);
        let ha2 = md5_hex(&format!("POST:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:abcdef:auth:{ha2}"));
        format!(
            "Digest username=\"51100000001190000001\", realm=\"{REALM}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", algorithm=MD5, response=\"{response}\", qop=auth, nc=00000001, \
             cnonce=\"abcdef\""
        )
    }

    #[test]
    fn a_digest_answer_is_checked_for_password_path_and_age() {
        let account = account();
        let now = DateTime::from_timestamp(1_800_000_100, 0).expect("time");
        let nonce = nonce(&account.ha1, now);
        let path = "/VIID/System/Register";
        let ok = parse_digest(&client_answer("pw", &nonce, path)).expect("parsed");
        assert_eq!(check_digest(&account, &ok, "POST", path, now), Ok(()));
        let wrong = parse_digest(&client_answer("nope", &nonce, path)).expect("parsed");
        assert_eq!(
            check_digest(&account, &wrong, "POST", path, now),
            Err("the password is wrong")
        );
        let elsewhere = parse_digest(&client_answer("pw", &nonce, "/VIID/Faces")).expect("parsed");
        assert!(check_digest(&account, &elsewhere, "POST", path, now).is_err());
        let later = now + NONCE_LIFETIME + Duration::seconds(1);
        assert_eq!(
            check_digest(&account, &ok, "POST", path, later),
            Err("the nonce is stale; answer a new challenge")
        );
        let forged = nonce.replace('.', ".0");
        let forged = parse_digest(&client_answer("pw", &forged, path)).expect("parsed");
        assert!(check_digest(&account, &forged, "POST", path, now).is_err());
        assert!(parse_digest("Basic dXNlcjpwdw==").is_none());
        assert!(parse_digest("Digest").is_none());
    }

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
