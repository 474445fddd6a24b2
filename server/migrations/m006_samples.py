"""Device HTTP credentials and the expert-review samples they upload.

A device token authenticates an edge box, not a person: it may call only the device endpoints
(sample upload, model download) and always acts as its own device, whatever a request body says.

A sample is what a device kept of one moment for expert review: the full-resolution ROI and the
face crop (`sample_images`), the device's own per-eye positions, scores and confidences
(`meta_json`), and which model produced them. `(device, sample_key)` is unique, so an upload that
is retried after a lost answer is stored once. Raters' scores live in `sample_ratings`, one row per
rater and sample, so a sample is never rated twice by the same person.
"""

SQL = """
CREATE TABLE device_tokens (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_used REAL
);
CREATE INDEX device_tokens_device ON device_tokens(device);

CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    sample_key TEXT NOT NULL,
    box INTEGER NOT NULL,
    animal_id INTEGER REFERENCES animals(id) ON DELETE SET NULL,
    taken_at REAL NOT NULL,
    reason TEXT NOT NULL,
    model_version TEXT NOT NULL DEFAULT '',
    model_sha256 TEXT NOT NULL DEFAULT '',
    model_score REAL,
    meta_json TEXT NOT NULL DEFAULT '{}',
    received_at REAL NOT NULL,
    UNIQUE (device, sample_key)
);
CREATE INDEX samples_taken ON samples(taken_at);

CREATE TABLE sample_images (
    sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('roi', 'face')),
    mime TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (sample_id, kind)
);

CREATE TABLE sample_ratings (
    id INTEGER PRIMARY KEY,
    sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    rated_at REAL NOT NULL,
    scorable INTEGER NOT NULL CHECK (scorable IN (0, 1)),
    ot_score REAL CHECK (ot_score IS NULL OR (ot_score >= 0 AND ot_score <= 9)),
    mgs_score INTEGER CHECK (mgs_score IS NULL OR mgs_score IN (0, 1, 2)),
    eyes_json TEXT NOT NULL DEFAULT '[]',
    UNIQUE (sample_id, username)
);
CREATE INDEX sample_ratings_user ON sample_ratings(username);
"""
