//! Kafka ingest benchmark: a pre-filled topic consumed into committed snapshots, against a
//! bare librdkafka consume loop over the same topic on the same broker, in one run.
//!
//! 1. a topic of `--partitions` partitions is filled with `--messages` JSON messages of
//!    ~230 bytes and 10 fields (the `push_load` rows);
//! 2. **baseline**: one `BaseConsumer` in a fresh group reads every message and decodes
//!    nothing;
//! 3. the hub's feed (`--workers` consumers, default flush policy unless told otherwise)
//!    consumes the topic into a dataset; the clock stops when the catalog's offsets cover
//!    every message, i.e. when every row is committed and queryable;
//! 4. latency at the default flush policy: single messages produced one at a time, each
//!    timed from `send` to the commit that makes it queryable.
//!
//! The broker is librdkafka's in-process mock cluster unless `--bootstrap` names a real one
//! (e.g. tansu on 127.0.0.1:9092).
//!
//! Run: `cargo run --release -p cityhub-benches --bin kafka_bench`

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cityhub_benches::{Hub, percentile, rows_ndjson, schema_json};
use cityhub_catalog::DatasetName;
use cityhub_config::KafkaFeed;
use cityhub_ingest::kafka::KafkaFeeds;
use clap::Parser;
use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[derive(Parser)]
struct Args {
    /// Messages in the pre-filled topic.
    #[arg(long, default_value_t = 2_000_000)]
    messages: usize,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Consumers of the hub's feed.
    #[arg(long, default_value_t = 2)]
    workers: u64,
    /// Rows per batch (the default flush policy is 100,000 rows, 64 MiB or 1 s).
    #[arg(long, default_value_t = 100_000)]
    flush_rows: u64,
    /// Latency samples at the default flush policy.
    #[arg(long, default_value_t = 20)]
    latency_samples: usize,
    /// A real broker instead of the in-process mock cluster.
    #[arg(long)]
    bootstrap: Option<String>,
}

const TOPIC: &str = "bench.events";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mock = match &args.bootstrap {
        Some(_) => None,
        None => Some(MockCluster::new(1).context("mock cluster")?),
    };
    let bootstrap = match (&args.bootstrap, &mock) {
        (Some(servers), _) => servers.clone(),
        (None, Some(cluster)) => {
            cluster.create_topic(TOPIC, args.partitions, 1)?;
            cluster.bootstrap_servers()
        }
        (None, None) => bail!("no broker"),
    };
    println!(
        "machine: {} cores; broker: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.bootstrap
            .as_deref()
            .unwrap_or("librdkafka mock cluster (in-process)")
    );

    let started = Instant::now();
    let bytes = fill(&bootstrap, args.partitions, args.messages)?;
    println!(
        "filled {TOPIC}: {} messages, {:.0} bytes each on average, in {:.1} s",
        args.messages,
        bytes as f64 / args.messages as f64,
        started.elapsed().as_secs_f64()
    );

    let baseline = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        let total = args.messages;
        move || bare_consume(&bootstrap, total)
    })
    .await??;
    println!(
        "baseline, bare rdkafka consume loop (no decoding): {:.0} messages/s",
        baseline
    );

    let hub = Hub::start().await?;
    hub.register("bench.events", schema_json()).await?;
    let dataset = hub
        .state
        .catalog
        .dataset(&DatasetName::parse("bench.events")?)
        .await?
        .context("dataset")?;
    let feed = KafkaFeed {
        workers: args.workers,
        flush_rows: args.flush_rows,
        group_id: format!("cityhub-bench-{}", std::process::id()),
        ..KafkaFeed::new(&bootstrap, TOPIC, "bench.events")
    };
    let started = Instant::now();
    let feeds = KafkaFeeds::start(
        &hub.state.ingest,
        &[feed],
        hub.state.kafka.clone(),
        Default::default(),
    )
    .await?;
    let total = args.messages as i64;
    wait_committed(&hub, dataset.id, total, Duration::from_secs(600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = args.messages as f64 / seconds;
    let rows = hub
        .sql_rows(&hub.admin, "SELECT id FROM bench.events")
        .await?;
    if rows != args.messages {
        bail!("{rows} rows queryable, {} produced", args.messages);
    }
    println!(
        "hub feed ({} workers, flush {} rows / 64 MiB / 1 s): {} messages committed in {seconds:.2} s = {rate:.0} messages/s ({:.2}x the bare loop); all {rows} rows queryable",
        args.workers,
        args.flush_rows,
        args.messages,
        rate / baseline
    );

    // The hub's own ceiling: the same messages, already in memory, decoded, written and
    // committed batch by batch on one thread, with no broker in the way.
    let ceiling = pipeline_ceiling(&hub, args.messages.min(1_000_000)).await?;
    println!(
        "hub pipeline without a broker (decode, Parquet, commit; 1 thread): {ceiling:.0} messages/s"
    );

    // Latency at the default flush policy: one message at a time, from send to the commit
    // that makes it queryable.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "0")
        .create()?;
    let mut latencies = Vec::new();
    for sample in 0..args.latency_samples {
        let payload = rows_ndjson(args.messages + sample, 1);
        let payload = payload.trim_end();
        let partition = (sample as i32) % args.partitions;
        let sent = Instant::now();
        producer
            .send(
                BaseRecord::<(), str>::to(TOPIC)
                    .partition(partition)
                    .payload(payload),
            )
            .map_err(|(err, _)| err)?;
        producer.flush(Duration::from_secs(10))?;
        wait_committed(
            &hub,
            dataset.id,
            total + sample as i64 + 1,
            Duration::from_secs(30),
        )
        .await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "produce -> queryable latency at the default flush policy ({} samples): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        percentile(&mut latencies.clone(), 0.5),
        percentile(&mut latencies.clone(), 0.99),
        latencies.iter().cloned().fold(0.0, f64::max)
    );
    feeds.stop().await;
    hub.stop().await;
    Ok(())
}

/// Decodes, writes and commits `messages` messages in batches of 100,000 straight from
/// memory, as a feed's committing thread does; returns messages/s.
async fn pipeline_ceiling(hub: &Hub, messages: usize) -> anyhow::Result<f64> {
    use cityhub_catalog::{OffsetAdvance, StreamProgress};
    use cityhub_ingest::kafka::batch::{Batch, Message, MessageFormat, decode_batch};
    hub.register("bench.ceiling", schema_json()).await?;
    let dataset = hub
        .state
        .catalog
        .dataset(&DatasetName::parse("bench.ceiling")?)
        .await?
        .context("dataset")?;
    let batch_size = 100_000;
    let mut batches = Vec::new();
    for first in (0..messages).step_by(batch_size) {
        let mut batch = Batch::new("ceiling", 0, (first > 0).then_some(first as i64));
        for (i, line) in rows_ndjson(first, batch_size.min(messages - first))
            .lines()
            .enumerate()
        {
            batch.push(Message {
                offset: (first + i) as i64,
                key: None,
                payload: Some(line.as_bytes().to_vec()),
                timestamp_ms: Some(0),
            });
        }
        batches.push(batch);
    }
    let started = Instant::now();
    for batch in &batches {
        let current = hub
            .state
            .catalog
            .dataset(&dataset.name)
            .await?
            .context("dataset")?;
        let decoded = decode_batch(&current, batch, MessageFormat::Json, 1 << 20)?;
        let rows = decoded.rows.context("rows")?;
        let file = hub
            .state
            .ingest
            .write_file_labelled(&current, vec![rows], "ceiling")
            .await?;
        hub.state
            .ingest
            .commit_stream(
                &current,
                vec![file],
                StreamProgress {
                    offsets: vec![OffsetAdvance {
                        topic: "ceiling".into(),
                        partition: 0,
                        expected: batch.expected,
                        next: batch.next_offset().context("offsets")?,
                    }],
                    rejected: decoded.rejected,
                },
            )
            .await?;
    }
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}

/// Fills the topic round-robin; returns the payload bytes written.
fn fill(bootstrap: &str, partitions: i32, messages: usize) -> anyhow::Result<usize> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()?;
    let mut bytes = 0;
    let chunk = 10_000;
    for first in (0..messages).step_by(chunk) {
        let text = rows_ndjson(first, chunk.min(messages - first));
        for (offset, line) in text.lines().enumerate() {
            bytes += line.len();
            let partition = ((first + offset) % partitions as usize) as i32;
            let mut record = BaseRecord::<(), str>::to(TOPIC)
                .partition(partition)
                .payload(line);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.poll(Duration::from_millis(5));
                        record = back;
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(bytes)
}

/// Reads `total` messages with a plain consumer; returns messages/s.
fn bare_consume(bootstrap: &str, total: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bare-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // The fetch sizes the hub's consumers use, so that both read alike.
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "104857600")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    // Timed from the subscription, like the hub's feed (both include joining the group).
    let started = Instant::now();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < total {
        if Instant::now() > deadline {
            bail!("the bare consumer read only {seen} of {total} messages");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            // Copy the payload out, as the hub does, but decode nothing.
            std::hint::black_box(message.payload().map(<[u8]>::to_vec));
            seen += 1;
        }
    }
    Ok(total as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

async fn wait_committed(
    hub: &Hub,
    dataset_id: i64,
    total: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let done: i64 = hub
            .state
            .catalog
            .stream_offsets(dataset_id)
            .await?
            .iter()
            .map(|o| o.next_offset)
            .sum();
        if done >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {done} of {total} messages committed");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
