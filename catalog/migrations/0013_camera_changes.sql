-- cityhub catalog, version 13: the camera catalogue's change feed.

-- Every change a consumer of GET /api/v1/cameras/changes needs to keep an exact copy of
-- the registry: registrations, updates, restorations and curations (with the channel's
-- shown values), deletions, and changes of status or NOTIFY state. `seq` is the feed's
-- order and the consumers' cursor: every writer is the single SQLite writer, so the next
-- number is given as the row is written, and it is the table's key. (PostgreSQL, where
-- transactions commit in another order than they start, gives it when the row is first
-- read, and keeps the write order in `id`; here `id` stays empty.)
CREATE TABLE camera_changes (
    seq                INTEGER PRIMARY KEY,
    id                 INTEGER,
    camera_id          TEXT NOT NULL,
    at                 INTEGER NOT NULL,     -- when the hub recorded it, Unix ms
    change             TEXT NOT NULL,        -- registered | updated | restored | curated | status | deleted
    -- Where the channel was, so that a region-scoped consumer sees only its own channels:
    -- the id's current county-level region and the civil code shown at the time, and for
    -- an update that changed the civil code, the one before (it left a town's scope).
    region_code        TEXT NOT NULL,
    civil_code         TEXT,
    civil_code_before  TEXT,
    -- The shown values (JSON) of registrations, updates and curations; the coordinates
    -- also as numbers, because JSON text does not bring every double back bit for bit.
    record             TEXT,
    longitude          REAL,
    latitude           REAL,
    complete           INTEGER,
    registered_at      INTEGER,
    updated_at         INTEGER,
    -- The liveness evidence after the change: the status shown is computed from it at `at`.
    notified           TEXT,
    last_seen_at       INTEGER,
    recorded_status    TEXT,
    recorded_since     INTEGER,
    cause              TEXT                  -- what changed the status: keepalive, keepalive_timeout, ON, OFF, ...
);

-- The last sequence number retention deleted: a consumer whose cursor is before it missed
-- changes and must read the registry again.
CREATE TABLE camera_change_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    purged_through  INTEGER NOT NULL
);
INSERT INTO camera_change_state (id, purged_through) VALUES (1, 0);
