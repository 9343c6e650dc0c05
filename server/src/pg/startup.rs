//! Logging in: the database is `cityhub`, the password is a hub token (the user name is
//! free and only recorded), and only analyst and admin tokens may query.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use cityhub_catalog::Role;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::DATABASE;
use super::errors::fatal;
use super::session::{CancelKeys, Session};
use crate::state::AppState;

pub struct TokenStartup {
    state: AppState,
    cancels: Arc<CancelKeys>,
    keys: RandomPidSecretKeyGenerator,
    parameters: DefaultServerParameterProvider,
}

impl TokenStartup {
    pub fn new(state: AppState, cancels: Arc<CancelKeys>) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = "16.6 (cityhub)".to_string();
        parameters.search_path = cityhub_query::view::SYSTEM_SCHEMA.to_string();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.time_zone = "UTC".to_string();
        Self {
            state,
            cancels,
            keys: RandomPidSecretKeyGenerator::default(),
            parameters,
        }
    }
}

#[async_trait]
impl StartupHandler for TokenStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let database = client.metadata().get(METADATA_DATABASE).cloned();
                if let Some(database) = database.filter(|name| name != DATABASE) {
                    return Err(fatal(
                        "3D000",
                        format!(
                            "database \"{database}\" does not exist: the hub serves one database, \
                             \"{DATABASE}\" (connect with dbname={DATABASE})"
                        ),
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let token = password.into_password()?.password;
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let principal = match self.state.sharing.authenticate(token.trim()).await {
                    Ok(principal) => principal,
                    Err(err) => {
                        tracing::info!(user, peer = %client.socket_addr(), "A PostgreSQL login was refused: {err}");
                        return Err(fatal(
                            "28P01",
                            format!(
                                "password authentication failed for user \"{user}\": the \
                                 password must be a valid cityhub token ({err})"
                            ),
                        ));
                    }
                };
                if !matches!(principal.role, Role::Admin | Role::Analyst) {
                    return Err(fatal(
                        "28000",
                        format!(
                            "a {} token cannot run SQL; connect with an analyst token",
                            principal.role
                        ),
                    ));
                }
                let pg_catalog = cityhub_query::pg::PgSessionCatalog::new().map_err(|err| {
                    fatal(
                        "XX000",
                        format!("the session's pg_catalog could not be built: {err}"),
                    )
                })?;
                let (pid, secret) = self.keys.generate(client);
                let key = self.cancels.register(pid, &secret);
                client.set_pid_and_secret_key(pid, secret);
                tracing::info!(
                    user,
                    principal = principal.name,
                    department = principal.department,
                    peer = %client.socket_addr(),
                    "A PostgreSQL client logged in."
                );
                client
                    .session_extensions()
                    .insert(Session::new(principal, user, key, pg_catalog));
                finish_authentication(client, &self.parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
