-- What every node's Kafka workers last said about themselves (state, broker trouble, the
-- partitions they hold), so that any node answers GET /api/v1/ingest/status for the whole
-- cluster. Each node replaces its own rows every few seconds.
CREATE TABLE feed_workers (
    worker                    TEXT PRIMARY KEY,
    node                      TEXT NOT NULL,
    dataset                   TEXT NOT NULL,
    topic                     TEXT NOT NULL,
    group_id                  TEXT NOT NULL,
    state                     TEXT NOT NULL,
    state_since               TEXT NOT NULL,
    broker_unreachable_since  TEXT,
    last_error                TEXT,
    last_error_at             TEXT,
    -- JSON: [{topic, partition, high_watermark, last_flush_at, rows_total, ...}]
    partitions                TEXT NOT NULL,
    reported_at               TEXT NOT NULL
);
CREATE INDEX feed_workers_node ON feed_workers (node);
