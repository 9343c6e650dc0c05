//! The dashboard result cache: results in memory, bounded in bytes, one computation per key.
//!
//! A key is the hash of everything a result depends on (endpoint version, parameter values,
//! the snapshot of every table it read, ...), so an entry never goes stale: a commit makes a
//! new key, and the entries that depended on the old snapshot are dropped by
//! [`ResultCache::retain_current`]. Concurrent requests for a missing key wait for one
//! computation (single flight) instead of each running the query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::{Bytes, BytesMut};
use cityhub_query::ResultFormat;
use cityhub_query::encode::encode;
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// A cache key: the first 128 bits of a SHA-256 over what the result depends on.
pub type Key = [u8; 16];

/// What a cached result depends on, to tell when it is no longer current.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dep {
    /// A dataset read at a snapshot (`None`: before its first commit).
    Dataset(i64, Option<i64>),
    /// The catalog's listings at a change count.
    Catalog(u64),
    /// A live source's time bucket, current until this Unix time in ms.
    LiveUntil(i64),
    /// The owner's grants, by fingerprint.
    Access(String, u64),
    /// The endpoint's definition version.
    Endpoint(String, i64),
}

/// One computed result, with its encodings made on first use.
pub struct CachedResult {
    pub key: Key,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Whether the result holds columns tagged as personal data (each delivery is audited).
    pub sensitive: bool,
    /// A hash of the JSON encoding: equal results have equal hashes even under new keys.
    pub content_hash: u64,
    json: Bytes,
    csv: OnceCell<Bytes>,
    arrow: OnceCell<Bytes>,
    /// Bytes of the batches and the JSON encoding.
    base_size: usize,
}

impl CachedResult {
    /// Encodes a computed result as JSON at once (the default format, and what server-sent
    /// events carry).
    pub async fn new(
        key: Key,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        sensitive: bool,
    ) -> Result<Self, ApiError> {
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let json = encode_all(ResultFormat::Json, &schema, &batches).await?;
        let content_hash = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            json.hash(&mut hasher);
            hasher.finish()
        };
        let base_size = batches
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum::<usize>()
            + json.len();
        Ok(Self {
            key,
            schema,
            batches,
            rows,
            sensitive,
            content_hash,
            json,
            csv: OnceCell::new(),
            arrow: OnceCell::new(),
            base_size,
        })
    }

    /// The result in `format` (JSON, CSV or Arrow IPC), encoded once; `true` when this call
    /// made the encoding (the entry grew).
    pub async fn body(&self, format: ResultFormat) -> Result<(Bytes, bool), ApiError> {
        let cell = match format {
            ResultFormat::Json => return Ok((self.json.clone(), false)),
            ResultFormat::Csv => &self.csv,
            ResultFormat::ArrowIpc => &self.arrow,
            other => {
                return Err(ApiError::new(
                    axum::http::StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    format!(
                        "endpoints answer in JSON, CSV or Arrow IPC, not {}",
                        other.content_type()
                    ),
                ));
            }
        };
        let existed = cell.initialized();
        let bytes = cell
            .get_or_try_init(|| encode_all(format, &self.schema, &self.batches))
            .await?
            .clone();
        Ok((bytes, !existed))
    }

    /// The JSON encoding.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// Bytes this entry holds: batches and every encoding made so far.
    fn size(&self) -> usize {
        self.base_size
            + self.csv.get().map_or(0, Bytes::len)
            + self.arrow.get().map_or(0, Bytes::len)
    }
}

async fn encode_all(
    format: ResultFormat,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Bytes, ApiError> {
    // The encoder wants batches it owns; cloning a batch clones pointers, not data.
    let owned: Vec<RecordBatch> = batches.to_vec();
    let stream = futures::stream::iter(owned.into_iter().map(Ok));
    let mut chunks = std::pin::pin!(encode(format, schema.clone(), stream));
    let mut out = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

type Outcome = Result<Arc<CachedResult>, ApiError>;

struct Slot {
    cell: Arc<OnceCell<Outcome>>,
    deps: Arc<Vec<Dep>>,
    last_used: AtomicU64,
    /// For a failed computation: when the next call may try again.
    retry_after: Option<std::time::Instant>,
}

/// How long a failure is answered from the cache: a thousand screens polling an endpoint
/// whose query fails (a revoked grant, a dropped column) must not each re-plan it.
const FAILURE_KEPT: std::time::Duration = std::time::Duration::from_secs(1);

/// Results by key, bounded in bytes, least recently used evicted first.
pub struct ResultCache {
    slots: Mutex<HashMap<Key, Slot>>,
    limit: usize,
    tick: AtomicU64,
}

impl ResultCache {
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            slots: Mutex::default(),
            limit: usize::try_from(limit_bytes).unwrap_or(usize::MAX),
            tick: AtomicU64::new(0),
        }
    }

    /// A cached result, if it has been computed (no waiting, no computing).
    pub fn peek(&self, key: &Key) -> Option<Arc<CachedResult>> {
        let slots = self.lock();
        let slot = slots.get(key)?;
        match slot.cell.get() {
            Some(Ok(result)) => {
                slot.last_used
                    .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                Some(result.clone())
            }
            _ => None,
        }
    }

    /// The result under `key`, computing it with `compute` if nobody has; concurrent
    /// callers for one key share one computation. A failure is the answer for a second
    /// ([`FAILURE_KEPT`]); the first call after that computes again.
    pub async fn get_or_compute<F, Fut>(&self, key: Key, deps: Vec<Dep>, compute: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let cell = {
            let mut slots = self.lock();
            let tick = self.tick.fetch_add(1, Ordering::Relaxed);
            let mut deps = Some(deps);
            let mut fresh = || Slot {
                cell: Arc::new(OnceCell::new()),
                deps: Arc::new(deps.take().unwrap_or_default()),
                last_used: AtomicU64::new(tick),
                retry_after: None,
            };
            let slot = slots.entry(key).or_insert_with(&mut fresh);
            if slot
                .retry_after
                .is_some_and(|at| std::time::Instant::now() >= at)
            {
                *slot = fresh();
            }
            slot.last_used.store(tick, Ordering::Relaxed);
            slot.cell.clone()
        };
        if let Some(outcome) = cell.get() {
            metrics::counter!("cityhub_endpoint_cache_hits_total").increment(1);
            return outcome.clone();
        }
        let computed_here = std::sync::atomic::AtomicBool::new(false);
        let outcome = cell
            .get_or_init(|| {
                computed_here.store(true, Ordering::Relaxed);
                compute()
            })
            .await
            .clone();
        if !computed_here.load(Ordering::Relaxed) {
            metrics::counter!("cityhub_endpoint_cache_hits_total").increment(1);
            return outcome;
        }
        metrics::counter!("cityhub_endpoint_cache_misses_total").increment(1);
        match &outcome {
            Ok(_) => self.evict(Some(&key)),
            Err(_) => {
                let mut slots = self.lock();
                if let Some(slot) = slots.get_mut(&key)
                    && Arc::ptr_eq(&slot.cell, &cell)
                {
                    slot.retry_after = Some(std::time::Instant::now() + FAILURE_KEPT);
                }
            }
        }
        self.publish();
        outcome
    }

    /// Re-checks the bound after an entry grew (a CSV or Arrow encoding was added).
    pub fn grew(&self) {
        self.evict(None);
        self.publish();
    }

    /// Drops every entry whose dependencies are no longer current.
    pub fn retain_current(&self, is_current: impl Fn(&Dep) -> bool) -> usize {
        let mut dropped = 0;
        {
            let mut slots = self.lock();
            slots.retain(|_, slot| {
                // Entries still being computed stay: their callers are waiting on them.
                let done = slot.cell.initialized();
                let keep = !done || slot.deps.iter().all(&is_current);
                if !keep {
                    dropped += 1;
                }
                keep
            });
        }
        self.publish();
        dropped
    }

    /// Entries and bytes held.
    pub fn usage(&self) -> (usize, usize) {
        let slots = self.lock();
        (slots.len(), Self::bytes(&slots))
    }

    /// Bytes held: summed when asked (after a computation, not per hit), so that entries
    /// growing or leaving can never make the count drift.
    fn bytes(slots: &HashMap<Key, Slot>) -> usize {
        slots
            .values()
            .filter_map(|slot| match slot.cell.get() {
                Some(Ok(result)) => Some(result.size()),
                _ => None,
            })
            .sum()
    }

    /// Evicts least recently used results until the cache fits, sparing `keep`.
    fn evict(&self, keep: Option<&Key>) {
        let mut slots = self.lock();
        let mut bytes = Self::bytes(&slots);
        if bytes <= self.limit {
            return;
        }
        let mut ready: Vec<(u64, Key, usize)> = slots
            .iter()
            .filter(|(key, _)| Some(*key) != keep)
            .filter_map(|(key, slot)| match slot.cell.get() {
                Some(Ok(result)) => {
                    Some((slot.last_used.load(Ordering::Relaxed), *key, result.size()))
                }
                _ => None,
            })
            .collect();
        ready.sort_unstable();
        for (_, key, size) in ready {
            if bytes <= self.limit {
                break;
            }
            slots.remove(&key);
            bytes -= size;
            metrics::counter!("cityhub_endpoint_cache_evictions_total").increment(1);
        }
    }

    fn publish(&self) {
        let (entries, bytes) = self.usage();
        metrics::gauge!("cityhub_endpoint_cache_entries").set(entries as f64);
        metrics::gauge!("cityhub_endpoint_cache_bytes").set(bytes as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    async fn result(key: u8, rows: i64) -> Outcome {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
        let batch = RecordBatch::try_new(schema.clone(), vec![column]).expect("batch");
        Ok(Arc::new(
            CachedResult::new([key; 16], schema, vec![batch], false).await?,
        ))
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bytes_dropping_the_least_recently_used() {
        let one = result(0, 10_000).await.expect("result").size();
        // Room for two results of this size, not three.
        let cache = ResultCache::new((one * 5 / 2) as u64);
        for key in [1u8, 2] {
            cache
                .get_or_compute([key; 16], vec![], || result(key, 10_000))
                .await
                .expect("computed");
        }
        assert!(cache.peek(&[1; 16]).is_some()); // 1 is now more recent than 2
        cache
            .get_or_compute([3; 16], vec![], || result(3, 10_000))
            .await
            .expect("computed");
        assert!(
            cache.peek(&[2; 16]).is_none(),
            "the least recently used went"
        );
        assert!(cache.peek(&[1; 16]).is_some());
        assert!(cache.peek(&[3; 16]).is_some());
        let (entries, bytes) = cache.usage();
        assert_eq!(entries, 2);
        assert!(bytes <= one * 5 / 2, "{bytes}");

        // A CSV encoding counts too.
        let three = cache.peek(&[3; 16]).expect("cached");
        let (_, grew) = three.body(ResultFormat::Csv).await.expect("csv");
        assert!(grew);
        assert!(cache.usage().1 > 2 * one);
    }

    #[tokio::test]
    async fn failures_are_shared_and_kept_for_a_second() {
        let cache = ResultCache::new(1 << 20);
        let runs = AtomicUsize::new(0);
        let failing = || async {
            runs.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Err(ApiError::bad_request("no"))
        };
        let (a, b) = tokio::join!(
            cache.get_or_compute([9; 16], vec![], failing),
            cache.get_or_compute([9; 16], vec![], failing)
        );
        assert!(a.is_err() && b.is_err());
        assert_eq!(runs.load(Ordering::Relaxed), 1, "one run for both callers");
        let again = cache.get_or_compute([9; 16], vec![], failing).await;
        assert!(again.is_err());
        assert_eq!(
            runs.load(Ordering::Relaxed),
            1,
            "the failure is the answer for now"
        );
        assert_eq!(cache.usage(), (1, 0), "a failure holds no bytes");
        tokio::time::sleep(FAILURE_KEPT).await;
        let _ = cache.get_or_compute([9; 16], vec![], failing).await;
        assert_eq!(
            runs.load(Ordering::Relaxed),
            2,
            "tried again after a second"
        );
    }

    #[tokio::test]
    async fn entries_whose_dependencies_moved_are_dropped() {
        let cache = ResultCache::new(1 << 20);
        cache
            .get_or_compute([1; 16], vec![Dep::Dataset(1, Some(5))], || result(1, 3))
            .await
            .expect("computed");
        cache
            .get_or_compute([2; 16], vec![Dep::Dataset(2, Some(7))], || result(2, 3))
            .await
            .expect("computed");
        let dropped = cache.retain_current(|dep| *dep != Dep::Dataset(1, Some(5)));
        assert_eq!(dropped, 1);
        assert!(cache.peek(&[1; 16]).is_none());
        assert!(cache.peek(&[2; 16]).is_some());
    }
}
