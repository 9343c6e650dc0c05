-- The camera catalogue's change feed (see the SQLite migration 0013 for the meaning of each
-- column). Transactions here commit in another order than they write, so `seq` is given by
-- the first reader after the commit, under an advisory lock, in `id` order: a consumer's
-- cursor never skips a change that committed late. Changes of one channel are written
-- under its row lock, so their `id` order is their order.
CREATE TABLE camera_changes (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq                bigint UNIQUE,
    camera_id          text COLLATE "C" NOT NULL,
    at                 bigint NOT NULL,
    change             text NOT NULL,
    region_code        text COLLATE "C" NOT NULL,
    civil_code         text COLLATE "C",
    civil_code_before  text COLLATE "C",
    record             text,
    longitude          double precision,
    latitude           double precision,
    complete           boolean,
    registered_at      bigint,
    updated_at         bigint,
    notified           text,
    last_seen_at       bigint,
    recorded_status    text,
    recorded_since     bigint,
    cause              text
);
CREATE INDEX camera_changes_unsequenced ON camera_changes (id) WHERE seq IS NULL;

CREATE TABLE camera_change_state (
    id              integer PRIMARY KEY CHECK (id = 1),
    purged_through  bigint NOT NULL
);
INSERT INTO camera_change_state (id, purged_through) VALUES (1, 0);
