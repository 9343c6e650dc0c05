//! The object store that holds the Parquet files, opened from the configured URL.
//!
//! `object_store`'s local backend does not fsync, while a successful PUT to S3 is durable.
//! The hub acknowledges a push only after its file is durable, so for local folders this
//! module writes new files itself and syncs them and their folders.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// Set when the store is a local folder: new files are written and synced here, not
    /// by `object_store`.
    local: Option<Arc<LocalFolder>>,
    url: String,
}

/// A local folder the store lives in.
#[derive(Debug)]
struct LocalFolder {
    root: PathBuf,
    store: Arc<LocalFileSystem>,
    /// Folders whose own entries are known synced, up to the root: a new file in one of
    /// them needs only that folder synced, not every folder above it (which cost the
    /// GA/T 1400 receiver five folder syncs per file).
    durable: Mutex<HashSet<PathBuf>>,
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
            let store = Arc::new(
                LocalFileSystem::new_with_prefix(&root)
                    .map_err(|err| bad(err.to_string()))?
                    .with_automatic_cleanup(true),
            );
            return Ok(Self {
                store: store.clone(),
                local: Some(Arc::new(LocalFolder {
                    root,
                    store,
                    durable: Mutex::new(HashSet::new()),
                })),
                url: url.to_string(),
            });
        }
        if url.starts_with("memory://") {
            return Ok(Self {
                store: Arc::new(InMemory::new()),
                local: None,
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
                local: None,
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
    pub async fn put_new(
        &self,
        key: &str,
        payload: impl Into<PutPayload>,
    ) -> Result<(), IngestError> {
        let payload: PutPayload = payload.into();
        let location = ObjectPath::from(key);
        if let Some(local) = &self.local {
            let path = local
                .store
                .path_to_filesystem(&location)
                .map_err(|err| IngestError::Storage(format!("writing {key} failed: {err}")))?;
            let local = local.clone();
            return tokio::task::spawn_blocking(move || local.write_new_file(&path, &payload))
                .await
                .map_err(|err| IngestError::Storage(err.to_string()))?
                .map_err(|err| IngestError::Storage(format!("writing {key} failed: {err}")));
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(&location, payload, options)
            .await
            .map_err(|err| IngestError::Storage(format!("writing {key} failed: {err}")))?;
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

impl LocalFolder {
    /// Writes a new file at `path` (under the root) and syncs it and its folder, then each
    /// folder above that is not known synced into its own parent: the entry of a new file
    /// (or of a folder made for it) is durable only once its containing folder is.
    ///
    /// The file is created at its final name (`O_EXCL`, so an existing one is never
    /// overwritten) rather than staged and linked as `object_store` does: the staged file's
    /// removal leaves a recently deleted inode behind, and on ext4 without a journal every
    /// later file creation scans past those (`find_inode_bit`, `recently_deleted`): up to
    /// a fifth of the GA/T 1400 receiver's CPU in one profile. A half-written file is never read:
    /// readers take their files from the catalog, which names a file only after this
    /// returns; a crash mid-write leaves an orphan that garbage collection removes after
    /// its grace.
    fn write_new_file(&self, path: &Path, payload: &PutPayload) -> std::io::Result<()> {
        let folder = path.parent().unwrap_or(&self.root);
        self.forget_missing_folders(folder);
        std::fs::create_dir_all(folder)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(err) = write_chunks(&mut file, payload.as_ref()).and_then(|()| file.sync_all()) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(err);
        }
        std::fs::File::open(folder)?.sync_all()?;
        let mut synced_now = Vec::new();
        let mut below = folder;
        while below != self.root && !self.durable_folders().contains(below) {
            let Some(above) = below.parent() else { break };
            std::fs::File::open(above)?.sync_all()?;
            synced_now.push(below.to_path_buf());
            below = above;
        }
        self.durable_folders().extend(synced_now);
        Ok(())
    }

    /// Forgets `folder` and the folders above it that do not exist (any more): made now,
    /// or made again after garbage collection emptied and removed them, they are not
    /// synced yet, whatever was known of their earlier selves.
    fn forget_missing_folders(&self, folder: &Path) {
        let mut missing = folder;
        while missing != self.root && !missing.exists() {
            self.durable_folders().remove(missing);
            missing = missing.parent().unwrap_or(&self.root);
        }
    }

    fn durable_folders(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        // The set only saves syncs: one left by a panicking writer is still correct.
        self.durable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes `chunks` one after the other with as few system calls as the kernel allows (an
/// image pack is a hundred or more images, each its own buffer: gathering them into one
/// buffer first would copy every image once more).
fn write_chunks(file: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut unwritten = &mut slices[..];
    IoSlice::advance_slices(&mut unwritten, 0);
    while !unwritten.is_empty() {
        match file.write_vectored(unwritten) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut unwritten, written),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_storage() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().expect("test setup");
        let storage =
            Storage::open(&format!("file://{}", dir.path().display())).expect("test setup");
        (dir, storage)
    }

    #[tokio::test]
    async fn a_payload_of_many_chunks_is_written_whole_and_in_order() {
        let (_dir, storage) = local_storage();
        // More chunks than one writev takes (1,024 on Linux), some of them empty, as an
        // image pack is written.
        let chunks: Vec<Bytes> = (0..3_000u32)
            .map(|i| match i % 7 {
                0 => Bytes::new(),
                _ => Bytes::from(vec![(i % 251) as u8; (i % 13) as usize * 97 + 1]),
            })
            .collect();
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let payload: PutPayload = chunks.into_iter().collect();
        storage
            .put_new("viid/d/2026-12-06/z.pack", payload)
            .await
            .expect("written");
        let read = storage
            .get("viid/d/2026-12-06/z.pack")
            .await
            .expect("read back");
        assert_eq!(read.len(), whole.len());
        assert!(read == whole, "the bytes differ");
        // An empty payload is an empty file, not an error.
        storage
            .put_new("viid/d/2026-12-06/empty.pack", PutPayload::new())
            .await
            .expect("written");
        assert!(
            storage
                .get("viid/d/2026-12-06/empty.pack")
                .await
                .expect("read back")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_new_local_file_is_read_back_through_the_object_store_at_its_key() {
        let (_dir, storage) = local_storage();
        let key = "landing/hub.cameras/2026-12-06/part 1.parquet";
        storage
            .put_new(key, Bytes::from_static(b"first"))
            .await
            .expect("test setup");
        assert_eq!(
            storage.get(key).await.expect("test setup"),
            Bytes::from_static(b"first")
        );
        let listed = storage.list("landing").await.expect("test setup");
        assert_eq!(
            listed.len(),
            1,
            "no staged file is left beside it: {listed:?}"
        );
        assert_eq!(listed[0].key, key);
        assert_eq!(listed[0].bytes, 5);
    }

    #[tokio::test]
    async fn an_existing_key_is_refused_and_its_bytes_are_kept() {
        let (_dir, storage) = local_storage();
        storage
            .put_new("a/b.parquet", Bytes::from_static(b"first"))
            .await
            .expect("test setup");
        let err = storage
            .put_new("a/b.parquet", Bytes::from_static(b"second"))
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains("writing a/b.parquet failed"),
            "{err}"
        );
        assert_eq!(
            storage.get("a/b.parquet").await.expect("test setup"),
            Bytes::from_static(b"first")
        );
    }

    #[tokio::test]
    async fn a_write_that_cannot_happen_leaves_nothing_behind() {
        let (dir, storage) = local_storage();
        // A file stands where the new file's folder would be.
        storage
            .put_new("a", Bytes::from_static(b"a file, not a folder"))
            .await
            .expect("test setup");
        let err = storage
            .put_new("a/b.parquet", Bytes::from_static(b"x"))
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains("writing a/b.parquet failed"),
            "{err}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("test setup")
            .map(|entry| entry.expect("test setup").file_name())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[tokio::test]
    async fn folders_are_synced_into_their_parents_once_and_again_when_made_anew() {
        let (dir, storage) = local_storage();
        let local = storage.local.clone().expect("test setup");
        let root = local.root.clone();
        storage
            .put_new("viid/d/2026-12-06/x.pack", Bytes::from_static(b"1"))
            .await
            .expect("test setup");
        let expected: HashSet<PathBuf> = ["viid", "viid/d", "viid/d/2026-12-06"]
            .iter()
            .map(|folder| root.join(folder))
            .collect();
        assert_eq!(*local.durable_folders(), expected);
        // Garbage collection empties and removes a folder: what was known of it and of the
        // folders in it is forgotten, and a later file makes and syncs them again.
        std::fs::remove_dir_all(dir.path().join("viid/d")).expect("test setup");
        local.forget_missing_folders(&root.join("viid/d/2026-12-06"));
        assert_eq!(*local.durable_folders(), HashSet::from([root.join("viid")]));
        storage
            .put_new("viid/d/2026-12-06/y.pack", Bytes::from_static(b"2"))
            .await
            .expect("test setup");
        assert_eq!(
            storage
                .get("viid/d/2026-12-06/y.pack")
                .await
                .expect("test setup"),
            Bytes::from_static(b"2")
        );
        assert_eq!(*local.durable_folders(), expected);
    }

    #[tokio::test]
    async fn the_memory_store_also_refuses_an_existing_key() {
        let storage = Storage::open("memory://").expect("test setup");
        storage
            .put_new("a/b.parquet", Bytes::from_static(b"first"))
            .await
            .expect("test setup");
        assert!(
            storage
                .put_new("a/b.parquet", Bytes::from_static(b"second"))
                .await
                .is_err()
        );
    }
}
