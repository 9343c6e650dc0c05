-- What every node's Kafka workers last said about themselves (state, broker trouble, the
-- partitions they hold), so that any node answers GET /api/v1/ingest/status for the whole
-- cluster. Each node replaces its own rows every few seconds.
CREATE TABLE feed_workers (
    worker                    text COLLATE "C" PRIMARY KEY,
    node                      text NOT NULL,
    dataset                   text NOT NULL,
    topic                     text NOT NULL,
    group_id                  text NOT NULL,
    state                     text NOT NULL,
    state_since               timestamptz NOT NULL,
    broker_unreachable_since  timestamptz,
    last_error                text,
    last_error_at             timestamptz,
    -- JSON: [{topic, partition, high_watermark, last_flush_at, rows_total, ...}]
    partitions                text NOT NULL,
    reported_at               timestamptz NOT NULL
);
CREATE INDEX feed_workers_node ON feed_workers (node);
