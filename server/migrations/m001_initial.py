"""Initial schema: devices, boxes, animals, assignments, score history with rollups, alerts, auth.

Times are Unix seconds (REAL, UTC) so range queries are plain comparisons; the ISO-8601 forms are
generated columns (no storage) for people reading the database with the sqlite3 shell. Score history
keeps a model id instead of the 64-character sha256 per row, because that table grows by ~700,000
rows per box and day at one window per second.
"""

SQL = """
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);

CREATE TABLE animals (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    strain TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    experiment_id INTEGER REFERENCES experiments(id) ON DELETE SET NULL,
    created REAL NOT NULL
);
CREATE INDEX animals_experiment ON animals(experiment_id);

CREATE TABLE devices (
    name TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    availability TEXT CHECK (availability IN ('online', 'offline')),
    availability_changed REAL,
    status_json TEXT,
    status_time REAL,
    fps REAL,
    target_fps REAL,
    backend TEXT,
    camera TEXT,
    outbox_depth INTEGER,
    skipped_frames INTEGER,
    uptime_s REAL,
    version TEXT,
    models_json TEXT,
    message TEXT,
    last_score_at REAL
);

CREATE TABLE boxes (
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    last_seq INTEGER,
    last_window_end REAL,
    last_score REAL,
    last_face_visible_fraction REAL,
    last_received_at REAL,
    device_alert TEXT CHECK (device_alert IN ('raised', 'cleared')),
    PRIMARY KEY (device, box)
);

CREATE TABLE assignments (
    id INTEGER PRIMARY KEY,
    animal_id INTEGER NOT NULL REFERENCES animals(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    note TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    CHECK (end_time IS NULL OR end_time > start_time)
);
CREATE INDEX assignments_box ON assignments(device, box, start_time);
CREATE INDEX assignments_animal ON assignments(animal_id, start_time);

CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE
);

CREATE TABLE score_windows (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    frames INTEGER NOT NULL,
    valid_eyes INTEGER NOT NULL,
    score REAL,
    median REAL,
    p90 REAL,
    face_visible_fraction REAL NOT NULL,
    model_id INTEGER NOT NULL REFERENCES models(id),
    received_at REAL NOT NULL,
    window_start_iso TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', window_start, 'unixepoch')) VIRTUAL,
    window_end_iso TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', window_end, 'unixepoch')) VIRTUAL,
    UNIQUE (device, seq)
);
CREATE INDEX score_windows_box_time ON score_windows(device, box, window_start);

CREATE TABLE rollup_minute (
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    face_windows INTEGER NOT NULL,
    score_sum REAL NOT NULL,
    score_min REAL,
    score_max REAL,
    PRIMARY KEY (device, box, bucket)
) WITHOUT ROWID;

CREATE TABLE rollup_hour (
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    face_windows INTEGER NOT NULL,
    score_sum REAL NOT NULL,
    score_min REAL,
    score_max REAL,
    PRIMARY KEY (device, box, bucket)
) WITHOUT ROWID;

CREATE TABLE alert_rules (
    id INTEGER PRIMARY KEY,
    animal_id INTEGER REFERENCES animals(id) ON DELETE CASCADE,
    experiment_id INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
    threshold REAL NOT NULL CHECK (threshold >= 0 AND threshold <= 9),
    duration_s REAL NOT NULL CHECK (duration_s >= 0),
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    CHECK ((animal_id IS NULL) <> (experiment_id IS NULL))
);

CREATE TABLE rule_state (
    rule_id INTEGER NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    animal_id INTEGER NOT NULL REFERENCES animals(id) ON DELETE CASCADE,
    above_since REAL,
    below_since REAL,
    raised INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rule_id, animal_id)
) WITHOUT ROWID;

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('device', 'server')),
    event TEXT NOT NULL CHECK (event IN ('raised', 'cleared')),
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    seq INTEGER,
    animal_id INTEGER REFERENCES animals(id) ON DELETE SET NULL,
    rule_id INTEGER REFERENCES alert_rules(id) ON DELETE SET NULL,
    time REAL NOT NULL,
    threshold REAL NOT NULL,
    duration_s REAL NOT NULL,
    score REAL,
    received_at REAL NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at REAL,
    time_iso TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', time, 'unixepoch')) VIRTUAL,
    UNIQUE (device, seq)
);
CREATE INDEX alerts_time ON alerts(time);
CREATE INDEX alerts_box ON alerts(device, box, time);
CREATE INDEX alerts_animal ON alerts(animal_id, time);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'officer', 'admin')),
    created REAL NOT NULL
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    last_used REAL
);

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
