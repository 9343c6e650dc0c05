-- cityhub catalog, version 3: Kafka offsets and the dead-letter table.

-- The next offset to consume per dataset, topic and partition. It advances in the same
-- transaction as the snapshot holding the consumed rows, and only from the offset the
-- committing worker expected, so a worker that lost its partition cannot commit.
CREATE TABLE stream_offsets (
    dataset_id   INTEGER NOT NULL REFERENCES datasets(id),
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    next_offset  INTEGER NOT NULL,
    snapshot_id  INTEGER,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (dataset_id, topic, partition)
);

-- Messages that could not become rows, kept with their raw payload and why.
CREATE TABLE rejected_records (
    id          INTEGER PRIMARY KEY,
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id),
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    key         BLOB,
    payload     BLOB NOT NULL,
    error       TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX rejected_records_dataset ON rejected_records (dataset_id, id);
