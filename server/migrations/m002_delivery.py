"""End-to-end delivery: outbox epochs, the stored-ack watermark, and seq regressions per device.

A device's seq restarts at 1 when its outbox is replaced, so a message is identified by (device,
epoch, seq), where the epoch is the random id of the outbox that numbered it; rows stored before
epochs existed get epoch ''. SQLite cannot change a table's UNIQUE constraint in place, so
score_windows and alerts are rebuilt (ids kept). `delivery` holds, per device and epoch, the seq
up to which everything is stored or quarantined: what the server acknowledges to the device.
Quarantined messages keep the device, epoch and seq they claimed, so a message the server refused
still counts as handled for that watermark.
"""

SQL = """
CREATE TABLE score_windows_new (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    epoch TEXT NOT NULL DEFAULT '',
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
    UNIQUE (device, epoch, seq)
);
INSERT INTO score_windows_new (id, device, box, epoch, seq, window_start, window_end, frames, valid_eyes, score,
                               median, p90, face_visible_fraction, model_id, received_at)
SELECT id, device, box, '', seq, window_start, window_end, frames, valid_eyes, score, median, p90,
       face_visible_fraction, model_id, received_at FROM score_windows;
DROP TABLE score_windows;
ALTER TABLE score_windows_new RENAME TO score_windows;
CREATE INDEX score_windows_box_time ON score_windows(device, box, window_start);

CREATE TABLE alerts_new (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('device', 'server')),
    event TEXT NOT NULL CHECK (event IN ('raised', 'cleared')),
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    epoch TEXT NOT NULL DEFAULT '',
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
    UNIQUE (device, epoch, seq)
);
INSERT INTO alerts_new (id, source, event, device, box, epoch, seq, animal_id, rule_id, time, threshold, duration_s,
                        score, received_at, acknowledged_by, acknowledged_at)
SELECT id, source, event, device, box, '', seq, animal_id, rule_id, time, threshold, duration_s, score, received_at,
       acknowledged_by, acknowledged_at FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
CREATE INDEX alerts_time ON alerts(time);
CREATE INDEX alerts_box ON alerts(device, box, time);
CREATE INDEX alerts_animal ON alerts(animal_id, time);

ALTER TABLE quarantine ADD COLUMN device TEXT;
ALTER TABLE quarantine ADD COLUMN epoch TEXT;
ALTER TABLE quarantine ADD COLUMN seq INTEGER;
CREATE INDEX quarantine_seq ON quarantine(device, epoch, seq);

CREATE TABLE delivery (
    device TEXT NOT NULL,
    epoch TEXT NOT NULL,
    stored_through INTEGER NOT NULL,
    highest_seq INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (device, epoch)
) WITHOUT ROWID;
INSERT INTO delivery (device, epoch, stored_through, highest_seq, first_seen, last_seen)
SELECT device, '', MAX(seq), MAX(seq), MIN(received_at), MAX(received_at)
FROM (SELECT device, seq, received_at FROM score_windows
      UNION ALL SELECT device, seq, received_at FROM alerts WHERE source = 'device' AND seq IS NOT NULL)
GROUP BY device;

ALTER TABLE devices ADD COLUMN seq_regressions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN last_regression TEXT;
ALTER TABLE devices ADD COLUMN last_regression_at REAL;
"""
