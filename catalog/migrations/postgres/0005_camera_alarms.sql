-- GB/T 28181 alarms and mobile positions (see the SQLite migration 0012 for the meaning of
-- each column).
CREATE TABLE camera_alarms (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    camera_id    text COLLATE "C" NOT NULL,
    at           bigint NOT NULL,
    priority     smallint NOT NULL,
    method       smallint NOT NULL,
    alarm_type   smallint,
    description  text,
    longitude    double precision,
    latitude     double precision,
    received_at  bigint NOT NULL
);
CREATE UNIQUE INDEX camera_alarms_report
    ON camera_alarms (camera_id, at, method, coalesce(alarm_type, 0));
CREATE INDEX camera_alarms_at ON camera_alarms (at);

CREATE TABLE camera_positions (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    camera_id    text COLLATE "C" NOT NULL,
    at           bigint NOT NULL,
    longitude    double precision NOT NULL,
    latitude     double precision NOT NULL,
    speed        double precision,
    direction    double precision,
    altitude     double precision,
    received_at  bigint NOT NULL,
    UNIQUE (camera_id, at)
);
CREATE INDEX camera_positions_at ON camera_positions (at);
