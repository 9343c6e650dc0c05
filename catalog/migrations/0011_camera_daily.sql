-- cityhub catalog, version 11: daily roll-ups of the camera status history.

-- Per video channel per Beijing-time day (days since 1970-01-01 at +08:00): how long it was
-- registered (observed) and online, how often its status changed, and its statistics groups
-- as they were that day. Computed from camera_status_events alone, so any day can be
-- recomputed and checked; rewritten whenever a late signal changes a day already rolled up.
CREATE TABLE camera_daily (
    day            INTEGER NOT NULL,
    camera_id      TEXT NOT NULL,
    region_code    TEXT NOT NULL,
    industry       INTEGER NOT NULL,
    type_code      INTEGER NOT NULL,
    position_type  INTEGER,
    department     TEXT,
    observed_ms    INTEGER NOT NULL,
    online_ms      INTEGER NOT NULL,
    transitions    INTEGER NOT NULL,
    complete       INTEGER NOT NULL,     -- observed the whole day
    PRIMARY KEY (day, camera_id)
) WITHOUT ROWID;
CREATE INDEX camera_daily_camera ON camera_daily (camera_id, day);

-- The same added up per day and group of channels: what weekly and monthly availability
-- read (a few hundred rows a day instead of one per channel).
CREATE TABLE camera_daily_groups (
    day            INTEGER NOT NULL,
    region_code    TEXT NOT NULL,
    industry       INTEGER NOT NULL,
    type_code      INTEGER NOT NULL,
    position_type  INTEGER,
    department     TEXT,
    channels       INTEGER NOT NULL,
    observed_ms    INTEGER NOT NULL,
    online_ms      INTEGER NOT NULL
);
CREATE INDEX camera_daily_groups_day ON camera_daily_groups (day);

-- The days rolled up, and the last history row the latest roll-up saw: a transition
-- appended after it with a time inside a rolled-up day makes that day stale.
CREATE TABLE camera_daily_days (
    day        INTEGER PRIMARY KEY,
    rolled_at  INTEGER NOT NULL
);
CREATE TABLE camera_daily_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    history_seq  INTEGER NOT NULL
);

-- The first registration bounds the days to roll up; every roll-up asks for it.
CREATE INDEX camera_live_registered ON camera_live (registered_at);
