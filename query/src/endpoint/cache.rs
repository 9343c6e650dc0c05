//! The dashboard result cache: results in memory, bounded in bytes, one computation per key.
//!
//! A key is the hash of everything a result depends on (endpoint version, parameter values,
//! the snapshot of every table it read, ...), so an entry never goes stale: a commit makes a
//! new key, and the entries that depended on the old snapshot are dropped by
//! [`ResultCache::retain_current`]. Concurrent requests for a missing key wait for one
//! computation (single flight, moka's `try_get_with`) instead of each running the query.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use tokio::sync::OnceCell;

use super::EndpointError;
use crate::ResultFormat;
use crate::encode::encode;

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
    /// What the result depends on: it is dropped when one of these moves.
    pub deps: Vec<Dep>,
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
        deps: Vec<Dep>,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        sensitive: bool,
    ) -> Result<Self, EndpointError> {
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
            deps,
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
    async fn body(&self, format: ResultFormat) -> Result<(Bytes, bool), EndpointError> {
        let cell = match format {
            ResultFormat::Json => return Ok((self.json.clone(), false)),
            ResultFormat::Csv => &self.csv,
            ResultFormat::ArrowIpc => &self.arrow,
            other => {
                return Err(EndpointError::NotAcceptable(format!(
                    "endpoints answer in JSON, CSV or Arrow IPC, not {}",
                    other.content_type()
                )));
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
) -> Result<Bytes, EndpointError> {
    // The encoder wants batches it owns; cloning a batch clones pointers, not data.
    let owned: Vec<RecordBatch> = batches.to_vec();
    let stream = futures::stream::iter(owned.into_iter().map(Ok));
    let mut chunks = std::pin::pin!(encode(format, schema.clone(), stream));
    let mut out = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk.map_err(EndpointError::Query)?);
    }
    Ok(out.freeze())
}

type Outcome = Result<Arc<CachedResult>, EndpointError>;

/// How long a failure is answered from the cache: a thousand screens polling an endpoint
/// whose query fails (a revoked grant, a dropped column) must not each re-plan it.
pub const FAILURE_KEPT: Duration = Duration::from_secs(1);

/// Results by key, bounded in bytes, least recently used evicted first; failures for
/// [`FAILURE_KEPT`].
pub struct ResultCache {
    results: Cache<Key, Arc<CachedResult>>,
    failures: Cache<Key, EndpointError>,
}

impl ResultCache {
    pub fn new(limit_bytes: u64) -> Self {
        let results = Cache::builder()
            .max_capacity(limit_bytes)
            // Weights are u32: a result over 4 GiB counts as 4 GiB (it would not fit anyway).
            .weigher(|_key, result: &Arc<CachedResult>| {
                u32::try_from(result.size()).unwrap_or(u32::MAX)
            })
            // Dashboards poll the same few results all day: recency is the right signal,
            // and an admission filter would refuse a new endpoint's first result.
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(|_key, _result, cause| {
                if cause == RemovalCause::Size {
                    metrics::counter!("cityhub_endpoint_cache_evictions_total").increment(1);
                }
            })
            .build();
        let failures = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(FAILURE_KEPT)
            .build();
        Self { results, failures }
    }

    /// A cached result, if it has been computed (no waiting, no computing).
    pub async fn peek(&self, key: &Key) -> Option<Arc<CachedResult>> {
        self.results.get(key).await
    }

    /// The result under `key`, computing it with `compute` if nobody has; concurrent
    /// callers for one key share one computation, and its failure. A failure is the answer
    /// for [`FAILURE_KEPT`]; the first call after that computes again.
    pub async fn get_or_compute<F, Fut>(&self, key: Key, compute: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        if let Some(failure) = self.failures.get(&key).await {
            metrics::counter!("cityhub_endpoint_cache_hits_total").increment(1);
            return Err(failure);
        }
        let computed_here = AtomicBool::new(false);
        let outcome = self
            .results
            .try_get_with(key, async {
                computed_here.store(true, Ordering::Relaxed);
                compute().await
            })
            .await
            .map_err(|shared| (*shared).clone());
        if !computed_here.load(Ordering::Relaxed) {
            metrics::counter!("cityhub_endpoint_cache_hits_total").increment(1);
            return outcome;
        }
        metrics::counter!("cityhub_endpoint_cache_misses_total").increment(1);
        if let Err(failure) = &outcome {
            self.failures.insert(key, failure.clone()).await;
        }
        // Misses are rare (one per key per commit): settle the bound now, so the gauges
        // and the next reader see it.
        self.results.run_pending_tasks().await;
        self.publish();
        outcome
    }

    /// The result in `format`, encoded once; an entry that grew by a new encoding is
    /// weighed again.
    pub async fn body(
        &self,
        result: &Arc<CachedResult>,
        format: ResultFormat,
    ) -> Result<Bytes, EndpointError> {
        let (bytes, grew) = result.body(format).await?;
        if grew && self.results.contains_key(&result.key) {
            self.results.insert(result.key, result.clone()).await;
            self.results.run_pending_tasks().await;
            self.publish();
        }
        Ok(bytes)
    }

    /// Drops every entry whose dependencies are no longer current; answers how many.
    pub async fn retain_current(&self, is_current: impl Fn(&Dep) -> bool) -> usize {
        let moved: Vec<Key> = self
            .results
            .iter()
            .filter(|(_, result)| !result.deps.iter().all(&is_current))
            .map(|(key, _)| *key)
            .collect();
        for key in &moved {
            self.results.invalidate(key).await;
        }
        if !moved.is_empty() {
            self.publish();
        }
        moved.len()
    }

    /// Results and bytes held, once pending evictions are done.
    pub async fn usage(&self) -> (u64, u64) {
        self.results.run_pending_tasks().await;
        (self.results.entry_count(), self.results.weighted_size())
    }

    fn publish(&self) {
        metrics::gauge!("cityhub_endpoint_cache_entries").set(self.results.entry_count() as f64);
        metrics::gauge!("cityhub_endpoint_cache_bytes").set(self.results.weighted_size() as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    async fn result(key: u8, deps: Vec<Dep>, rows: i64) -> Outcome {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
        let batch = RecordBatch::try_new(schema.clone(), vec![column]).expect("batch");
        Ok(Arc::new(
            CachedResult::new([key; 16], deps, schema, vec![batch], false).await?,
        ))
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bytes_dropping_the_least_recently_used() {
        let one = result(0, vec![], 10_000).await.expect("result").size();
        // Room for two results of this size, not three.
        let cache = ResultCache::new((one * 5 / 2) as u64);
        for key in [1u8, 2] {
            cache
                .get_or_compute([key; 16], || result(key, vec![], 10_000))
                .await
                .expect("computed");
        }
        assert!(cache.peek(&[1; 16]).await.is_some()); // 1 is now more recent than 2
        cache
            .get_or_compute([3; 16], || result(3, vec![], 10_000))
            .await
            .expect("computed");
        assert!(
            cache.peek(&[2; 16]).await.is_none(),
            "the least recently used went"
        );
        assert!(cache.peek(&[1; 16]).await.is_some());
        assert!(cache.peek(&[3; 16]).await.is_some());
        let (entries, bytes) = cache.usage().await;
        assert_eq!(entries, 2);
        assert!(bytes <= (one * 5 / 2) as u64, "{bytes}");

        // A CSV encoding counts too.
        let three = cache.peek(&[3; 16]).await.expect("cached");
        let before = cache.usage().await.1;
        cache.body(&three, ResultFormat::Csv).await.expect("csv");
        let after = cache.usage().await.1;
        assert!(after > before, "{before} -> {after}");
    }

    #[tokio::test]
    async fn failures_are_shared_and_kept_for_a_second() {
        let cache = ResultCache::new(1 << 20);
        let runs = AtomicUsize::new(0);
        let failing = || async {
            runs.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(EndpointError::BadCall("no".into()))
        };
        let (a, b) = tokio::join!(
            cache.get_or_compute([9; 16], failing),
            cache.get_or_compute([9; 16], failing)
        );
        assert!(a.is_err() && b.is_err());
        assert_eq!(runs.load(Ordering::Relaxed), 1, "one run for both callers");
        let again = cache.get_or_compute([9; 16], failing).await;
        assert!(again.is_err());
        assert_eq!(
            runs.load(Ordering::Relaxed),
            1,
            "the failure is the answer for now"
        );
        assert_eq!(
            cache.usage().await,
            (0, 0),
            "a failure holds no result bytes"
        );
        tokio::time::sleep(FAILURE_KEPT).await;
        let _ = cache.get_or_compute([9; 16], failing).await;
        assert_eq!(
            runs.load(Ordering::Relaxed),
            2,
            "tried again after a second"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_compute_once() {
        let cache = ResultCache::new(1 << 20);
        let runs = AtomicUsize::new(0);
        let slow = || async {
            runs.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            result(4, vec![], 3).await
        };
        let calls: Vec<_> = (0..16)
            .map(|_| cache.get_or_compute([4; 16], slow))
            .collect();
        for outcome in futures::future::join_all(calls).await {
            assert_eq!(outcome.expect("computed").rows, 3);
        }
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn entries_whose_dependencies_moved_are_dropped() {
        let cache = ResultCache::new(1 << 20);
        cache
            .get_or_compute([1; 16], || result(1, vec![Dep::Dataset(1, Some(5))], 3))
            .await
            .expect("computed");
        cache
            .get_or_compute([2; 16], || result(2, vec![Dep::Dataset(2, Some(7))], 3))
            .await
            .expect("computed");
        let dropped = cache
            .retain_current(|dep| *dep != Dep::Dataset(1, Some(5)))
            .await;
        assert_eq!(dropped, 1);
        assert!(cache.peek(&[1; 16]).await.is_none());
        assert!(cache.peek(&[2; 16]).await.is_some());
    }
}
