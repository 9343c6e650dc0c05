//! The object store that holds the Parquet files, opened from the configured URL.
//!
//! `object_store`'s local backend does not fsync, while a successful PUT to S3 is durable.
//! The hub acknowledges a push only after its file is durable, so for local folders this
//! module syncs the written file and its directory itself.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::IngestError;

/// Where the Parquet files live.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The root folder when the store is a local folder (for fsync).
    local_root: Option<PathBuf>,
    url: String,
}

impl Storage {
    /// Opens `file:///abs/path`, `memory://` or `s3://bucket/prefix` (credentials and region
    /// from the usual `AWS_*` environment variables).
    pub fn open(url: &str) -> Result<Self, IngestError> {
        let bad = |why: String| IngestError::Storage(format!("storage URL {url:?}: {why}"));
        if let Some(path) = url.strip_prefix("file://") {
            let root = PathBuf::from(path);
            std::fs::create_dir_all(&root)
                .map_err(|err| bad(format!("cannot create {}: {err}", root.display())))?;
            let store = LocalFileSystem::new_with_prefix(&root)
                .map_err(|err| bad(err.to_string()))?
                .with_automatic_cleanup(true);
            return Ok(Self {
                store: Arc::new(store),
                local_root: Some(root),
                url: url.to_string(),
            });
        }
        if url.starts_with("memory://") {
            return Ok(Self {
                store: Arc::new(InMemory::new()),
                local_root: None,
                url: url.to_string(),
            });
        }
        if url.starts_with("s3://") || url.starts_with("s3a://") {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(|err| bad(err.to_string()))?;
            // The prefix after the bucket becomes part of every key.
            let prefix = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('/'))
                .map(|(_, prefix)| prefix.trim_matches('/').to_string())
                .unwrap_or_default();
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            };
            return Ok(Self {
                store,
                local_root: None,
                url: url.to_string(),
            });
        }
        Err(bad("use file://, memory:// or s3://".into()))
    }

    /// The store, for readers.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes a new object, refusing to overwrite one that exists, and returns once the
    /// bytes are durable.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), IngestError> {
        let location = ObjectPath::from(key);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(&location, PutPayload::from(bytes), options)
            .await
            .map_err(|err| IngestError::Storage(format!("writing {key} failed: {err}")))?;
        if let Some(root) = &self.local_root {
            let (root, path) = (root.clone(), root.join(key));
            tokio::task::spawn_blocking(move || sync_file_and_folders(&root, &path))
                .await
                .map_err(|err| IngestError::Storage(err.to_string()))?
                .map_err(|err| IngestError::Storage(format!("syncing {key} failed: {err}")))?;
        }
        Ok(())
    }

    /// Removes an object; a missing one is not an error (used to clean up after failures).
    pub async fn delete(&self, key: &str) {
        if let Err(err) = self.store.delete(&ObjectPath::from(key)).await
            && !matches!(err, object_store::Error::NotFound { .. })
        {
            tracing::warn!(key, error = %err, "Could not remove an uncommitted file; it stays as an orphan.");
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, IngestError> {
        let location = ObjectPath::from(key);
        let result = self
            .store
            .get(&location)
            .await
            .map_err(|err| IngestError::Storage(format!("reading {key} failed: {err}")))?;
        result
            .bytes()
            .await
            .map_err(|err| IngestError::Storage(format!("reading {key} failed: {err}")))
    }
}

/// Syncs a new file, then every folder from its own up to the store's root: the entry of a
/// new file (or of a folder made for it) is durable only once its containing folder is.
/// One stored object, as a listing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub bytes: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

impl Storage {
    /// Every object under `prefix` (slow on object stores: for garbage collection only;
    /// readers take their file lists from the catalog).
    pub async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, IngestError> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(prefix);
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| StoredObject {
                key: meta.location.to_string(),
                bytes: meta.size,
                modified: meta.last_modified,
            })
            .try_collect()
            .await
            .map_err(|err| IngestError::Storage(format!("listing {prefix} failed: {err}")))
    }

    /// The bytes `range` of an object.
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, IngestError> {
        self.store
            .get_range(&ObjectPath::from(key), range)
            .await
            .map_err(|err| IngestError::Storage(format!("reading {key} failed: {err}")))
    }

    /// The folders directly under `prefix` (which ends in `/`), as full prefixes.
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>, IngestError> {
        let location = ObjectPath::from(prefix);
        let listing = self
            .store
            .list_with_delimiter(Some(&location))
            .await
            .map_err(|err| IngestError::Storage(format!("listing {prefix} failed: {err}")))?;
        Ok(listing
            .common_prefixes
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    /// Deletes an object, saying whether it failed (garbage collection counts failures).
    pub async fn remove(&self, key: &str) -> Result<(), IngestError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(IngestError::Storage(format!(
                "deleting {key} failed: {err}"
            ))),
        }
    }
}

fn sync_file_and_folders(root: &std::path::Path, path: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    for folder in path.ancestors().skip(1) {
        std::fs::File::open(folder)?.sync_all()?;
        if folder == root {
            break;
        }
    }
    Ok(())
}
