//! One consumer of a feed: a consumer thread that polls librdkafka and batches messages per
//! partition, and a flusher thread that decodes, writes and commits the batches in order.
//!
//! Exactly-once rests on the catalog: each partition's next offset is stored with the
//! snapshot holding its rows, and a commit names the offset it continues from. On
//! assignment the worker seeks to the stored offset; a worker that lost a partition in a
//! rebalance cannot commit it any more (its expected offset is stale), and when that happens
//! it re-reads the catalog and seeks again. Kafka's group offsets are committed after the
//! catalog, only for monitoring tools.
//!
//! Backpressure: the flusher takes one batch at a time from a channel of one; when storage
//! or the catalog is slow, the consumer thread blocks on the hand-off and stops polling, so
//! memory stays within two batches per partition plus librdkafka's own bounded queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cityhub_catalog::camera::status::Liveness;
use cityhub_catalog::camera::{CameraFeed, CameraStreamCommit};
use cityhub_catalog::{
    Action, AuditEvent, CatalogError, DatasetName, OffsetAdvance, Outcome, StreamProgress,
};
use cityhub_config::KafkaFeed;
use rdkafka::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::batch::{Batch, Message, MessageFormat, decode_batch, decode_camera_batch};
use super::status::StatusBoard;
use super::{OffsetsOf, catalog_offsets};
use crate::{Ingest, IngestError};

/// How long a rebalance waits for the flush of revoked partitions.
const REVOKE_FLUSH_WAIT: Duration = Duration::from_secs(30);
/// How long a stopping worker keeps retrying a commit that fails.
const STOP_RETRY_LIMIT: Duration = Duration::from_secs(10);
/// Statistics rounds (one a second) without any broker up before the feed's brokers count
/// as unreachable: a worker that has just started is still connecting for the first ones.
const DOWN_ROUNDS: u32 = 3;

/// A running worker.
pub struct Worker {
    shared: Arc<Shared>,
    consumer_thread: Option<JoinHandle<()>>,
    flusher_thread: Option<JoinHandle<()>>,
}

struct FlushRequest {
    batch: Batch,
    /// Answered once the batch is committed (or given up); used by revoke and shutdown.
    done: Option<SyncSender<()>>,
}

struct PartitionState {
    topic: String,
    /// The catalog's next offset once every batch handed over commits.
    committed_next: Option<i64>,
    /// The next offset to accept: lower ones are redeliveries after a seek.
    consume_from: Option<i64>,
    batch: Batch,
}

/// Where a feed's messages go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Rows of a dataset, committed as snapshots.
    Dataset { name: DatasetName, id: i64 },
    /// Registrations, keepalives or events of the camera registry.
    Cameras {
        feed: CameraFeed,
        liveness: Liveness,
    },
}

struct Shared {
    ingest: Ingest,
    feed: KafkaFeed,
    sink: Sink,
    format: MessageFormat,
    name: String,
    runtime: tokio::runtime::Handle,
    board: StatusBoard,
    partitions: Mutex<HashMap<i32, PartitionState>>,
    flushes: Mutex<Option<SyncSender<FlushRequest>>>,
    stop: AtomicBool,
    /// Stop without flushing: what a crash looks like (tests).
    abandon: AtomicBool,
    resync: AtomicBool,
    /// The kinds of trouble being reported, so that each is logged once per episode (a
    /// broker outage brings several at once, every poll).
    trouble: Mutex<std::collections::BTreeSet<String>>,
    /// Statistics rounds in a row in which no broker was up.
    down_rounds: AtomicU32,
}

/// The consumer's context: rebalances and statistics come through here, on the consumer
/// thread, while it polls.
struct FeedContext {
    shared: Arc<Shared>,
}

type FeedConsumer = BaseConsumer<FeedContext>;

impl Worker {
    /// Connects a consumer for `feed` and starts its threads.
    pub fn start(
        ingest: Ingest,
        feed: KafkaFeed,
        sink: Sink,
        name: String,
        board: StatusBoard,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, IngestError> {
        let format = match feed.format.as_str() {
            "csv" => MessageFormat::Csv,
            _ => MessageFormat::Json,
        };
        let (sender, receiver) = sync_channel::<FlushRequest>(1);
        let shared = Arc::new(Shared {
            ingest,
            feed,
            sink,
            format,
            name,
            runtime,
            board,
            partitions: Mutex::new(HashMap::new()),
            flushes: Mutex::new(Some(sender)),
            stop: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            trouble: Mutex::new(Default::default()),
            down_rounds: AtomicU32::new(0),
        });
        shared.board.worker_joining(
            &shared.name,
            &shared.feed.dataset,
            &shared.feed.topic,
            &shared.feed.group_id,
            chrono::Utc::now(),
        );
        let consumer: Arc<FeedConsumer> = Arc::new(
            consumer_config(&shared.feed)
                .create_with_context(FeedContext {
                    shared: shared.clone(),
                })
                .map_err(|err| IngestError::Invalid {
                    field: "ingest.kafka".into(),
                    message: format!("cannot create a consumer for {}: {err}", shared.feed.topic),
                })?,
        );
        consumer
            .subscribe(&[&shared.feed.topic])
            .map_err(|err| IngestError::Invalid {
                field: "ingest.kafka.topic".into(),
                message: format!("cannot subscribe to {}: {err}", shared.feed.topic),
            })?;
        let flusher_thread = {
            let shared = shared.clone();
            let consumer = consumer.clone();
            std::thread::Builder::new()
                .name(format!("kafka-flush-{}", shared.name))
                .spawn(move || flush_loop(&shared, &consumer, receiver))
                .map_err(|err| IngestError::Internal(format!("cannot start a thread: {err}")))?
        };
        let consumer_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("kafka-consume-{}", shared.name))
                .spawn(move || consume_loop(&shared, consumer))
                .map_err(|err| IngestError::Internal(format!("cannot start a thread: {err}")))?
        };
        tracing::info!(worker = %shared.name, topic = %shared.feed.topic, dataset = %shared.feed.dataset, "Started a Kafka worker.");
        Ok(Self {
            shared,
            consumer_thread: Some(consumer_thread),
            flusher_thread: Some(flusher_thread),
        })
    }

    /// Stops consuming, commits what was consumed, leaves the group and waits for both
    /// threads. Blocking: call from a blocking context.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.join();
    }

    /// Stops at once without committing what is batched, as a crash would (for tests of
    /// recovery; nothing is lost, it is consumed again from the catalog's offsets).
    pub fn abandon(mut self) {
        self.shared.abandon.store(true, Ordering::SeqCst);
        self.shared.stop.store(true, Ordering::SeqCst);
        self.join();
    }

    fn join(&mut self) {
        if let Some(thread) = self.consumer_thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.flusher_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.join();
    }
}

fn consumer_config(feed: &KafkaFeed) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("statistics.interval.ms", "1000")
        // Answer fetches after at most 100 ms without data (librdkafka waits 500 ms), so a
        // quiet topic's messages reach the hub about one flush age after they are produced.
        .set("fetch.wait.max.ms", "100")
        // Large fetches: at hundreds of thousands of small messages a second, the default
        // 1 MiB per partition makes the broker answer far more requests than it needs to.
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "104857600");
    // The feed's own librdkafka settings (security, tuning) override those defaults ...
    for (key, value) in &feed.properties {
        config.set(key, value);
    }
    // ... but not what exactly-once rests on.
    config
        .set("bootstrap.servers", &feed.bootstrap_servers)
        .set("group.id", &feed.group_id)
        .set("auto.offset.reset", &feed.start)
        // Offsets are the catalog's business; Kafka's copy is written after each commit.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Eager rebalancing: every revoke is a full one, answered by a full flush.
        .set("partition.assignment.strategy", "range,roundrobin");
    config
}

fn consume_loop(shared: &Arc<Shared>, consumer: Arc<FeedConsumer>) {
    let age = Duration::from_millis(shared.feed.flush_age_ms);
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.resync.swap(false, Ordering::SeqCst) {
            shared.resync(&consumer);
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Ok(message)) => {
                shared.recovered();
                let copy = Message {
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    timestamp_ms: message.timestamp().to_millis(),
                };
                if let Some(full) = shared.add(message.partition(), copy) {
                    shared.hand_off(full, None);
                }
            }
            Some(Err(err)) => shared.troubled("consuming", &err.to_string()),
        }
        for batch in shared.take_batches(|batch| batch.started.elapsed() >= age) {
            shared.hand_off(batch, None);
        }
    }
    if !shared.abandon.load(Ordering::SeqCst) {
        shared.flush_all_and_wait();
        shared
            .board
            .worker_stopped(&shared.name, chrono::Utc::now());
    }
    // Closing the channel ends the flusher once it has done what it holds.
    if let Ok(mut flushes) = shared.flushes.lock() {
        flushes.take();
    }
    drop(consumer);
    tracing::info!(worker = %shared.name, "Stopped a Kafka worker.");
}

impl Shared {
    /// Adds a message to its partition's batch; returns the batch if it is now full.
    fn add(&self, partition: i32, message: Message) -> Option<Batch> {
        let mut partitions = self.partitions.lock().ok()?;
        let state = partitions.get_mut(&partition)?;
        if state.consume_from.is_some_and(|from| message.offset < from) {
            return None;
        }
        state.consume_from = Some(message.offset + 1);
        state.batch.push(message);
        let full = state.batch.messages.len() as u64 >= self.feed.flush_rows
            || state.batch.bytes as u64 >= self.feed.flush_bytes;
        full.then(|| take_batch(state))
    }

    /// Takes the non-empty batches that `due` selects, leaving fresh ones.
    fn take_batches(&self, due: impl Fn(&Batch) -> bool) -> Vec<Batch> {
        let Ok(mut partitions) = self.partitions.lock() else {
            return Vec::new();
        };
        partitions
            .values_mut()
            .filter(|state| !state.batch.messages.is_empty() && due(&state.batch))
            .map(take_batch)
            .collect()
    }

    /// Gives a batch to the flusher, blocking while it is busy with the previous one.
    fn hand_off(&self, batch: Batch, done: Option<SyncSender<()>>) {
        let sender = self.flushes.lock().ok().and_then(|f| f.clone());
        if let Some(sender) = sender {
            let _ = sender.send(FlushRequest { batch, done });
        }
    }

    /// Hands every batch over and waits until the last one is committed.
    fn flush_all_and_wait(&self) {
        let batches = self.take_batches(|_| true);
        let count = batches.len();
        for (index, batch) in batches.into_iter().enumerate() {
            if index + 1 == count {
                let (done, wait) = sync_channel(1);
                self.hand_off(batch, Some(done));
                if wait.recv_timeout(REVOKE_FLUSH_WAIT).is_err() {
                    tracing::warn!(worker = %self.name, "A flush did not finish in time; the catalog's offsets decide what is consumed again.");
                }
            } else {
                self.hand_off(batch, None);
            }
        }
    }

    /// The catalog's stored offsets of this feed's topic, retried until the catalog answers
    /// (or the worker stops).
    fn stored_offsets(&self) -> Option<HashMap<i32, i64>> {
        let mut pause = Duration::from_millis(100);
        while !self.stop.load(Ordering::SeqCst) {
            let target = match &self.sink {
                Sink::Dataset { id, .. } => OffsetsOf::Dataset(*id),
                Sink::Cameras { feed, .. } => OffsetsOf::Cameras(*feed),
            };
            let read = self.runtime.block_on(catalog_offsets(
                &self.ingest.catalog,
                target,
                &self.feed.topic,
            ));
            match read {
                Ok(offsets) => return Some(offsets.into_iter().collect()),
                Err(err) => {
                    self.troubled("reading offsets from the catalog", &err.to_string());
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        None
    }

    fn start_offset(&self, stored: Option<i64>) -> Offset {
        match (stored, self.feed.start.as_str()) {
            (Some(next), _) => Offset::Offset(next),
            (None, "latest") => Offset::End,
            (None, _) => Offset::Beginning,
        }
    }

    /// Takes partitions over at the catalog's offsets.
    fn assign(&self, consumer: &FeedConsumer, assignment: &mut TopicPartitionList) {
        let stored = self.stored_offsets().unwrap_or_default();
        let mut partitions = match self.partitions.lock() {
            Ok(p) => p,
            Err(_) => return,
        };
        for element in assignment.elements() {
            let partition = element.partition();
            let next = stored.get(&partition).copied();
            partitions.insert(
                partition,
                PartitionState {
                    topic: element.topic().to_string(),
                    committed_next: next,
                    consume_from: next,
                    batch: Batch::new(element.topic(), partition, next),
                },
            );
            self.board
                .update(&self.feed.dataset, element.topic(), partition, |status| {
                    status.worker = Some(self.name.clone());
                    status.node = Some(self.board.node().to_string());
                    status.catalog_offset = next;
                });
        }
        drop(partitions);
        self.board
            .worker_assigned(&self.name, &partitions_of(assignment), chrono::Utc::now());
        let topic = self.feed.topic.clone();
        for (partition, next) in assignment
            .elements()
            .iter()
            .map(|e| (e.partition(), stored.get(&e.partition()).copied()))
            .collect::<Vec<_>>()
        {
            let _ = assignment.set_partition_offset(&topic, partition, self.start_offset(next));
        }
        tracing::info!(worker = %self.name, topic = %topic, partitions = ?partitions_of(assignment), "Took partitions over at the catalog's offsets.");
        if let Err(err) = consumer.assign(assignment) {
            self.troubled("taking partitions over", &err.to_string());
        }
    }

    /// Gives partitions up: what was consumed is committed first.
    fn revoke(&self, consumer: &FeedConsumer) {
        self.flush_all_and_wait();
        if let Ok(mut partitions) = self.partitions.lock() {
            for (partition, state) in partitions.drain() {
                self.board
                    .update(&self.feed.dataset, &state.topic, partition, |status| {
                        status.worker = None;
                        status.node = None;
                    });
            }
        }
        self.board.worker_joining(
            &self.name,
            &self.feed.dataset,
            &self.feed.topic,
            &self.feed.group_id,
            chrono::Utc::now(),
        );
        tracing::info!(worker = %self.name, topic = %self.feed.topic, "Gave partitions up after committing what was consumed.");
        if let Err(err) = consumer.unassign() {
            self.troubled("giving partitions up", &err.to_string());
        }
    }

    /// After a refused commit: drop what is batched, re-read the catalog and seek there.
    fn resync(&self, consumer: &FeedConsumer) {
        let Some(stored) = self.stored_offsets() else {
            return;
        };
        let Ok(mut partitions) = self.partitions.lock() else {
            return;
        };
        for (partition, state) in partitions.iter_mut() {
            let next = stored.get(partition).copied();
            state.committed_next = next;
            state.consume_from = next;
            state.batch = Batch::new(&state.topic, *partition, next);
            if let Err(err) = consumer.seek(
                &state.topic,
                *partition,
                self.start_offset(next),
                Duration::from_secs(5),
            ) {
                // Try again on the next round.
                self.resync.store(true, Ordering::SeqCst);
                self.troubled("seeking to the catalog's offset", &err.to_string());
            }
        }
        tracing::info!(worker = %self.name, "Re-read the catalog's offsets after a refused commit and sought there.");
    }

    /// Logs a kind of trouble once per episode, and shows the latest in the feed's status.
    fn troubled(&self, doing: &str, error: &str) {
        self.board
            .worker_error(&self.name, &format!("{doing}: {error}"), chrono::Utc::now());
        let Ok(mut trouble) = self.trouble.lock() else {
            return;
        };
        if trouble.insert(doing.to_string()) {
            tracing::warn!(worker = %self.name, topic = %self.feed.topic, error, "Trouble {doing}; retrying with backoff (logged once until it recovers).");
        }
        metrics::counter!("cityhub_kafka_errors_total", "topic" => self.feed.topic.clone())
            .increment(1);
    }

    fn recovered(&self) {
        if let Ok(mut trouble) = self.trouble.lock()
            && !trouble.is_empty()
        {
            let doing: Vec<String> = std::mem::take(&mut *trouble).into_iter().collect();
            tracing::info!(worker = %self.name, topic = %self.feed.topic, "Recovered from trouble {}.", doing.join(" and "));
        }
    }
}

fn partitions_of(assignment: &TopicPartitionList) -> Vec<i32> {
    assignment
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Takes a partition's batch, leaving an empty one that continues where it ends.
fn take_batch(state: &mut PartitionState) -> Batch {
    let next = state.batch.next_offset().or(state.committed_next);
    let fresh = Batch::new(&state.topic, state.batch.partition, next);
    state.committed_next = next;
    std::mem::replace(&mut state.batch, fresh)
}

impl ClientContext for FeedContext {
    fn stats(&self, statistics: Statistics) {
        let shared = &self.shared;
        // Real brokers only: librdkafka also lists internal and logical ones.
        let reachable = statistics
            .brokers
            .values()
            .filter(|broker| broker.source == "learned" || broker.source == "configured")
            .any(|broker| broker.state == "UP");
        let down_rounds = if reachable {
            shared.down_rounds.store(0, Ordering::SeqCst);
            0
        } else {
            shared.down_rounds.fetch_add(1, Ordering::SeqCst) + 1
        };
        if reachable || down_rounds >= DOWN_ROUNDS {
            shared
                .board
                .worker_brokers_reachable(&shared.name, reachable, chrono::Utc::now());
        }
        for (topic, details) in &statistics.topics {
            for (partition, details) in &details.partitions {
                if *partition < 0 || details.hi_offset < 0 {
                    continue;
                }
                shared
                    .board
                    .update(&shared.feed.dataset, topic, *partition, |status| {
                        status.high_watermark = Some(details.hi_offset);
                    });
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.shared.board.worker_brokers_reachable(
                &self.shared.name,
                false,
                chrono::Utc::now(),
            );
        }
        self.shared
            .troubled("talking to the brokers", &format!("{error}: {reason}"));
    }
}

impl ConsumerContext for FeedContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        assignment: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.shared.assign(consumer, assignment);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.shared.revoke(consumer),
            other => {
                self.shared.troubled("rebalancing", &format!("{other:?}"));
                let _ = consumer.unassign();
            }
        }
    }
}

fn flush_loop(shared: &Arc<Shared>, consumer: &FeedConsumer, receiver: Receiver<FlushRequest>) {
    for request in receiver {
        let mut pause = Duration::from_millis(100);
        let mut giving_up: Option<Instant> = None;
        loop {
            match flush(shared, consumer, &request.batch) {
                Ok(()) => {
                    shared.recovered();
                    break;
                }
                Err(IngestError::Catalog(CatalogError::OffsetConflict { .. })) => {
                    tracing::info!(worker = %shared.name, topic = %request.batch.topic, partition = request.batch.partition, "Another worker took this partition over; dropping the batch and re-reading the catalog.");
                    metrics::counter!("cityhub_kafka_offset_conflicts_total").increment(1);
                    shared.resync.store(true, Ordering::SeqCst);
                    break;
                }
                Err(err) => {
                    shared.troubled("committing a batch", &err.to_string());
                    // A stopping worker keeps trying for a while, then leaves the batch to
                    // be consumed again from the catalog's offset after the restart.
                    let stopping = shared.stop.load(Ordering::SeqCst);
                    let stop_since = *giving_up.get_or_insert_with(Instant::now);
                    if shared.abandon.load(Ordering::SeqCst)
                        || (stopping && stop_since.elapsed() > STOP_RETRY_LIMIT)
                    {
                        tracing::warn!(worker = %shared.name, topic = %request.batch.topic, partition = request.batch.partition, "Stopping without committing a batch; it will be consumed again.");
                        break;
                    }
                    if !stopping {
                        giving_up = None;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Some(done) = request.done {
            let _ = done.send(());
        }
    }
}

/// Decodes and commits one batch with its offset and dead letters.
fn flush(shared: &Shared, consumer: &FeedConsumer, batch: &Batch) -> Result<(), IngestError> {
    let (Some(first), Some(next)) = (batch.first_offset(), batch.next_offset()) else {
        return Ok(());
    };
    let started = Instant::now();
    let advance = OffsetAdvance {
        topic: batch.topic.clone(),
        partition: batch.partition,
        expected: batch.expected,
        next,
    };
    let (rows, rejected) =
        match &shared.sink {
            Sink::Dataset { name, .. } => flush_rows(shared, name, batch, first, advance)?,
            Sink::Cameras { feed, liveness } => {
                let max = shared.feed.max_message_bytes as usize;
                let now = cityhub_catalog::camera::now_ms();
                let (items, rejected) = decode_camera_batch(*feed, batch, max, now);
                let outcome =
                    shared
                        .runtime
                        .block_on(shared.ingest.catalog.commit_camera_stream(
                            CameraStreamCommit {
                                feed: *feed,
                                items,
                                rejected,
                                offset: advance,
                                liveness: *liveness,
                                at: now,
                            },
                        ))?;
                (outcome.applied, outcome.rejected)
            }
        };

    // Acknowledged writes are audited whichever door they came through.
    shared.ingest.audit.record(
        AuditEvent::by_hub(Action::KafkaFlush, Outcome::Ok)
            .dataset(shared.feed.dataset.clone())
            .detail(serde_json::json!({
                "feed": shared.name,
                "topic": batch.topic,
                "partition": batch.partition,
                "first_offset": first,
                "next_offset": next,
                "rows": rows,
                "rejected": rejected,
            })),
    );

    // Kafka's copy of the offset, for monitoring tools; the catalog's is the one that counts.
    let mut offsets = TopicPartitionList::new();
    let _ = offsets.add_partition_offset(&batch.topic, batch.partition, Offset::Offset(next));
    let _ = consumer.commit(&offsets, CommitMode::Async);

    let seconds = started.elapsed().as_secs_f64();
    let labels = [
        ("dataset", shared.feed.dataset.clone()),
        ("topic", batch.topic.clone()),
    ];
    metrics::counter!("cityhub_kafka_rows_total", &labels).increment(rows as u64);
    metrics::counter!("cityhub_kafka_rejected_total", &labels).increment(rejected as u64);
    metrics::histogram!("cityhub_kafka_flush_seconds").record(seconds);
    let span = batch.started.elapsed().as_secs_f64().max(0.001);
    shared.board.update(
        &shared.feed.dataset,
        &batch.topic,
        batch.partition,
        |status| {
            status.catalog_offset = Some(next);
            status.last_flush_at = Some(chrono::Utc::now());
            status.rows_total += rows as u64;
            status.rejected_total += rejected as u64;
            status.rows_per_second = batch.messages.len() as f64 / span;
        },
    );
    tracing::debug!(worker = %shared.name, topic = %batch.topic, partition = batch.partition, first, next, rows, rejected, seconds, "Committed a Kafka batch.");
    Ok(())
}

/// Writes a dataset batch's rows as a file and commits it with the offset and dead letters.
fn flush_rows(
    shared: &Shared,
    name: &DatasetName,
    batch: &Batch,
    first: i64,
    advance: OffsetAdvance,
) -> Result<(usize, usize), IngestError> {
    let next = advance.next;
    let ingest = &shared.ingest;
    let dataset = shared
        .runtime
        .block_on(ingest.catalog.dataset(name))?
        .ok_or_else(|| IngestError::DatasetNotFound(name.to_string()))?;
    let _busy = ingest.foreground_write();
    let decoded = decode_batch(
        &dataset,
        batch,
        shared.format,
        shared.feed.max_message_bytes as usize,
    )?;
    let rows = decoded.rows.as_ref().map_or(0, |r| r.num_rows());
    let rejected = decoded.rejected.len();
    let mut files = Vec::new();
    if let Some(rows) = decoded.rows {
        let label = format!("{}.{}.{first}-{}", batch.topic, batch.partition, next - 1);
        files.push(shared.runtime.block_on(ingest.write_file_labelled(
            &dataset,
            vec![rows],
            &label,
        ))?);
    }
    let progress = StreamProgress {
        offsets: vec![advance],
        rejected: decoded.rejected,
    };
    shared
        .runtime
        .block_on(ingest.commit_stream(&dataset, files, progress))?;
    Ok((rows, rejected))
}
