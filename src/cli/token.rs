//! `cityhub token create`: a principal and its token, printed once on stdout.

use cityhub_catalog::clock::Clock;
use cityhub_catalog::sharing::NewToken;
use cityhub_catalog::versions::DataVersions;
use cityhub_catalog::{AuditLog, Principal, Role, SharingService};
use cityhub_config::Config;

/// Creates the principal through the same service as `POST /api/v1/tokens` (so it is
/// audited the same way) and prints the token and nothing else.
pub async fn create(
    config: Config,
    department: String,
    role: &str,
    name: Option<String>,
    expires_in_days: Option<u32>,
    region: Option<String>,
) -> anyhow::Result<()> {
    let role: Role = role.parse()?;
    let catalog = cityhub_catalog::open(&config).await?;
    let audit = AuditLog::start(catalog.clone());
    let sharing = SharingService::new(
        catalog,
        audit.clone(),
        std::sync::Arc::new(DataVersions::default()),
        Clock::system(),
        config.sharing.answer_within_working_days as u32,
    );
    let expires_at =
        expires_in_days.map(|days| chrono::Utc::now() + chrono::Duration::days(i64::from(days)));
    let new = NewToken {
        department,
        role,
        name,
        expires_at,
        rate_limit_per_second: None,
        region,
    };
    let (_, token) = sharing
        .create_token(&Principal::local_operator(), new, "cli")
        .await?;
    audit.flush().await;
    println!("{}", token.plaintext);
    Ok(())
}
