//! `cityhub viid account create|list`: the GA/T 1400 platforms that may send records.

use cityhub_catalog::{AuditLog, Principal};
use cityhub_config::Config;

/// Creates an account and prints its password (and nothing else) on stdout, once: the hub
/// keeps only its digest.
pub async fn create_account(config: Config, id: &str, department: &str) -> anyhow::Result<()> {
    let catalog = cityhub_catalog::open(&config).await?;
    let audit = AuditLog::start(catalog.clone());
    let (account, password) = cityhub_catalog::viid::create_account(
        &catalog,
        &audit,
        &Principal::local_operator(),
        id,
        department,
    )
    .await?;
    audit.flush().await;
    eprintln!(
        "Created GA/T 1400 account {} for department {}. Its password follows; it is shown \
         this once. The platform registers at POST /VIID/System/Register with HTTP digest \
         authentication (username {}, realm {}).",
        account.id,
        account.department,
        account.id,
        cityhub_catalog::viid::REALM
    );
    println!("{password}");
    Ok(())
}

/// Lists the accounts: id, department, and whether and since when each is registered.
pub async fn list_accounts(config: Config) -> anyhow::Result<()> {
    let catalog = cityhub_catalog::open(&config).await?;
    let now = chrono::Utc::now();
    println!(
        "{:<20}  {:<12}  {:<10}  last seen",
        "id", "department", "state"
    );
    for account in catalog.viid_accounts().await? {
        let state = if account.registered(now) {
            "registered"
        } else if account.registered_at.is_some() {
            "lapsed"
        } else {
            "-"
        };
        let seen = account
            .last_seen_at
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<20}  {:<12}  {:<10}  {seen}",
            account.id, account.department, state
        );
    }
    Ok(())
}
