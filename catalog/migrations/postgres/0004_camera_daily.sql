-- Daily roll-ups of the camera status history (see the SQLite migration 0011 for the
-- meaning of each table).
CREATE TABLE camera_daily (
    day            integer NOT NULL,
    camera_id      text COLLATE "C" NOT NULL,
    region_code    text COLLATE "C" NOT NULL,
    industry       integer NOT NULL,
    type_code      integer NOT NULL,
    position_type  integer,
    department     text COLLATE "C",
    observed_ms    bigint NOT NULL,
    online_ms      bigint NOT NULL,
    transitions    bigint NOT NULL,
    complete       boolean NOT NULL,
    PRIMARY KEY (day, camera_id)
);
CREATE INDEX camera_daily_camera ON camera_daily (camera_id, day);

CREATE TABLE camera_daily_groups (
    day            integer NOT NULL,
    region_code    text COLLATE "C" NOT NULL,
    industry       integer NOT NULL,
    type_code      integer NOT NULL,
    position_type  integer,
    department     text COLLATE "C",
    channels       bigint NOT NULL,
    observed_ms    bigint NOT NULL,
    online_ms      bigint NOT NULL
);
CREATE INDEX camera_daily_groups_day ON camera_daily_groups (day);

CREATE TABLE camera_daily_days (
    day        integer PRIMARY KEY,
    rolled_at  bigint NOT NULL
);
CREATE TABLE camera_daily_state (
    id           integer PRIMARY KEY CHECK (id = 1),
    history_seq  bigint NOT NULL
);

-- The first registration bounds the days to roll up; every roll-up asks for it.
CREATE INDEX camera_live_registered ON camera_live (registered_at);
