//! A PostgreSQL session: who it is, what it `SET`, its cursors' columns, and the key a
//! client cancels its running statement with.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use cityhub_catalog::Principal;
use cityhub_query::pg::{PgSessionCatalog, SERVER_SETTINGS, server_setting};
use datafusion::arrow::datatypes::SchemaRef;
use pgwire::messages::startup::SecretKey;
use tokio::sync::watch;

/// What a connection carries once its token is accepted (kept in pgwire's per-connection
/// session extensions).
pub struct Session {
    pub principal: Principal,
    /// The user name the client gave: free text, recorded in the audit.
    pub user: String,
    /// Moves on each cancel request for this connection.
    cancel: watch::Receiver<u64>,
    /// `SET` values, shown back by `SHOW` (they change nothing in how queries run).
    settings: Mutex<BTreeMap<String, String>>,
    /// The columns of this session's open cursors, for `FETCH`'s description.
    cursors: Mutex<HashMap<String, SchemaRef>>,
    /// This connection's `pg_catalog`, whose oids stay the same between statements.
    pub pg_catalog: Arc<PgSessionCatalog>,
    _cancel_key: CancelKeyGuard,
}

impl Session {
    pub fn new(
        principal: Principal,
        user: String,
        key: (watch::Receiver<u64>, CancelKeyGuard),
        pg_catalog: PgSessionCatalog,
    ) -> Self {
        Self {
            pg_catalog: Arc::new(pg_catalog),
            principal,
            user,
            cancel: key.0,
            settings: Mutex::default(),
            cursors: Mutex::default(),
            _cancel_key: key.1,
        }
    }

    /// A watch that fires when a cancel request arrives after this call.
    pub fn cancel_watch(&self) -> CancelWatch {
        let mut receiver = self.cancel.clone();
        receiver.mark_unchanged();
        CancelWatch(receiver)
    }

    pub fn set(&self, name: &str, value: &str) {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_ascii_lowercase(), value.to_string());
    }

    /// A setting's value as `SHOW` answers it: what the session set, else the server's.
    pub fn show(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        let set = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .cloned();
        set.or_else(|| server_setting(&name).map(str::to_string))
    }

    /// Every setting, for `SHOW ALL`.
    pub fn show_all(&self) -> Vec<(String, String)> {
        let mut all: BTreeMap<String, String> = SERVER_SETTINGS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        all.extend(
            self.settings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        );
        all.into_iter().collect()
    }

    pub fn open_cursor(&self, name: &str, schema: SchemaRef) {
        self.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), schema);
    }

    pub fn cursor(&self, name: &str) -> Option<SchemaRef> {
        self.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Forgets one cursor, or all with `None`.
    pub fn close_cursors(&self, name: Option<&str>) {
        let mut cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        match name {
            Some(name) => {
                cursors.remove(name);
            }
            None => cursors.clear(),
        }
    }
}

/// Fires once a cancel request for the connection arrives.
pub struct CancelWatch(watch::Receiver<u64>);

impl CancelWatch {
    /// Resolves when the statement is to stop; never, if the connection's keys are gone.
    pub async fn cancelled(mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The connections' cancel keys (process id and secret, sent at login), so that a
/// `CancelRequest` on a fresh connection reaches the statement it names.
#[derive(Default)]
pub struct CancelKeys {
    connections: Mutex<HashMap<(i32, Bytes), watch::Sender<u64>>>,
}

impl CancelKeys {
    /// Registers a connection's key; the guard unregisters it when the session ends.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        secret: &SecretKey,
    ) -> (watch::Receiver<u64>, CancelKeyGuard) {
        let key = (pid, secret.to_bytes());
        let (sender, receiver) = watch::channel(0);
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), sender);
        (
            receiver,
            CancelKeyGuard {
                keys: self.clone(),
                key,
            },
        )
    }

    /// Cancels what the connection with this key is running; an unknown key does nothing,
    /// as in PostgreSQL (the requester learns nothing either way).
    pub fn cancel(&self, pid: i32, secret: &SecretKey) {
        let key = (pid, secret.to_bytes());
        if let Some(sender) = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            tracing::info!(pid, "A PostgreSQL client cancelled its running statement.");
            sender.send_modify(|generation| *generation += 1);
        }
    }
}

pub struct CancelKeyGuard {
    keys: Arc<CancelKeys>,
    key: (i32, Bytes),
}

impl Drop for CancelKeyGuard {
    fn drop(&mut self) {
        self.keys
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}
