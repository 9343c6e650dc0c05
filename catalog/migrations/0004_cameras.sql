-- cityhub catalog, version 4: the camera registry and its status history.

-- One row per GB/T 28181 channel (or device, or platform): what it is. The shown
-- (effective) values are columns so that searches read no JSON; `reported` and `curated`
-- keep the two sources apart (the curated value wins), and every write recomputes the columns.
CREATE TABLE cameras (
    id                 TEXT PRIMARY KEY,
    parent_id          TEXT,
    name               TEXT,
    department         TEXT REFERENCES departments(code),
    civil_code         TEXT,
    address            TEXT,
    longitude          REAL,
    latitude           REAL,
    manufacturer       TEXT,
    model              TEXT,
    ptz_type           INTEGER,
    position_type      INTEGER,
    room_type          INTEGER,
    use_type           INTEGER,
    supply_light_type  INTEGER,
    resolution         TEXT,
    streams            TEXT,             -- JSON object of explicit URLs, or NULL
    tags               TEXT,             -- JSON array, or NULL
    -- Decoded from the id: the current county-level region (511028 is stored as 511083).
    region_code        TEXT NOT NULL,
    industry           INTEGER NOT NULL,
    type_code          INTEGER NOT NULL,
    network            INTEGER NOT NULL,
    complete           INTEGER NOT NULL, -- 建档: name, location, camera type and owner filled
    reported           TEXT NOT NULL,    -- JSON: what the platform reported
    curated            TEXT NOT NULL,    -- JSON: operators' overrides
    updated_at         INTEGER NOT NULL
);
CREATE INDEX cameras_parent ON cameras (parent_id);
CREATE INDEX cameras_region ON cameras (region_code, id);

-- One narrow row per channel: whether it is alive. Keepalives (tens of thousands a second)
-- and statistics (every channel at once) touch only this table, so they read and write a
-- few dozen bytes per channel instead of the whole record. The grouping columns of the
-- statistics are copied here from `cameras` by every registration.
CREATE TABLE camera_live (
    id                 TEXT PRIMARY KEY,
    type_code          INTEGER NOT NULL,
    region_code        TEXT NOT NULL,
    industry           INTEGER NOT NULL,
    position_type      INTEGER,
    department         TEXT,
    complete           INTEGER NOT NULL,
    registered_at      INTEGER NOT NULL,
    deleted_at         INTEGER,
    -- Liveness evidence (Unix milliseconds); the status is computed from it when read.
    notified           TEXT,             -- ON | OFF | VLOST | DEFECT
    notified_at        INTEGER,
    last_seen_at       INTEGER,
    recorded_status    TEXT,             -- the last status appended to the history
    recorded_since     INTEGER
) WITHOUT ROWID;
-- The sweeper looks for channels recorded online whose evidence has timed out.
CREATE INDEX camera_live_recorded_online ON camera_live (last_seen_at)
    WHERE recorded_status = 'online';

-- Every status transition, appended and never changed.
CREATE TABLE camera_status_events (
    seq        INTEGER PRIMARY KEY,
    camera_id  TEXT NOT NULL,
    at         INTEGER NOT NULL,
    previous   TEXT NOT NULL,
    status     TEXT NOT NULL,
    cause      TEXT NOT NULL
);
CREATE INDEX camera_status_events_at ON camera_status_events (at);
CREATE INDEX camera_status_events_camera ON camera_status_events (camera_id, at);
CREATE TRIGGER camera_status_events_append_only_update BEFORE UPDATE ON camera_status_events
BEGIN
    SELECT RAISE(ABORT, 'the camera status history is append-only');
END;

-- Offsets of Kafka feeds that write to the registry instead of a dataset; they advance in
-- the transaction that applies the messages, like stream_offsets.
CREATE TABLE camera_stream_offsets (
    feed         TEXT NOT NULL,          -- registrations | keepalives | events
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    next_offset  INTEGER NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (feed, topic, partition)
);

-- Messages of those feeds that could not be applied (undecodable, invalid, or refused by
-- the registry), with their raw payload and why; readable by admins as hub.rejected_records.
CREATE TABLE camera_rejected_records (
    id          INTEGER PRIMARY KEY,
    feed        TEXT NOT NULL,
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    key         BLOB,
    payload     BLOB NOT NULL,
    error       TEXT NOT NULL,
    at          TEXT NOT NULL
);
