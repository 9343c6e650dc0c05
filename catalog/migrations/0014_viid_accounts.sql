-- cityhub catalog, version 14: GA/T 1400 视图库 accounts.

-- The platforms and devices that may send records to /VIID/: their 20-digit id, the
-- department whose viid_* datasets the records land in, HA1 of their password for the
-- digest realm (never the password), and their registration: when they last registered
-- (NULL once unregistered) and when they were last heard (registration or keepalive).
CREATE TABLE viid_accounts (
    id             TEXT PRIMARY KEY,
    department     TEXT NOT NULL REFERENCES departments(code),
    ha1            TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    registered_at  TEXT,
    last_seen_at   TEXT
);

-- Upper platforms' subscriptions to the hub's records (POST /VIID/Subscribes): who
-- subscribed, its state, and the whole subscription with its delivery cursors as JSON (read
-- and written whole by the one node that delivers notifications).
CREATE TABLE viid_subscriptions (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES viid_accounts(id),
    status      TEXT NOT NULL,
    record      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
