-- cityhub catalog, version 12: GB/T 28181 alarms and mobile positions.

-- Alarms (报警) of registered channels and devices, in the order they were received. A
-- report sent twice is kept once: an alarm is known by its source, time, method and type.
CREATE TABLE camera_alarms (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so readers page by it
    camera_id    TEXT NOT NULL,
    at           INTEGER NOT NULL,                   -- AlarmTime, Unix ms
    priority     INTEGER NOT NULL,                   -- AlarmPriority 1-4
    method       INTEGER NOT NULL,                   -- AlarmMethod 1-7
    alarm_type   INTEGER,                            -- AlarmType of methods 2, 5 and 6
    description  TEXT,
    longitude    REAL,                               -- WGS-84
    latitude     REAL,
    received_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX camera_alarms_report
    ON camera_alarms (camera_id, at, method, ifnull(alarm_type, 0));
-- Retention deletes by time.
CREATE INDEX camera_alarms_at ON camera_alarms (at);

-- MobilePosition reports of mobile devices; one per device and time.
CREATE TABLE camera_positions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id    TEXT NOT NULL,
    at           INTEGER NOT NULL,
    longitude    REAL NOT NULL,                      -- WGS-84
    latitude     REAL NOT NULL,
    speed        REAL,                               -- km/h
    direction    REAL,                               -- degrees clockwise from north
    altitude     REAL,                               -- metres
    received_at  INTEGER NOT NULL,
    UNIQUE (camera_id, at)
);
CREATE INDEX camera_positions_at ON camera_positions (at);
