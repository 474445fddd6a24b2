"""Recorded videos: imported score sessions and the upload queue.

An imported video becomes a pseudo-device `rec-<fingerprint>` whose windows sit in `score_windows`
next to live ones (so an animal's history, rollups and exports need no second path); this table
says which devices are recordings, of which file, and who imported them. `seq` of an imported
window is `window index * 16 + box`, so UNIQUE (device, seq) is the natural key video fingerprint +
box + window start, and importing the same video twice stores nothing twice.
"""

SQL = """
CREATE TABLE video_imports (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    device TEXT NOT NULL UNIQUE,
    video_name TEXT NOT NULL,
    recorded_start REAL NOT NULL,
    recorded_end REAL NOT NULL,
    start_from TEXT NOT NULL DEFAULT '',
    window_s REAL NOT NULL,
    model_id INTEGER NOT NULL REFERENCES models(id),
    software_version TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL CHECK (source IN ('api', 'upload')),
    imported_by TEXT NOT NULL DEFAULT '',
    imported_at REAL NOT NULL
);

CREATE TABLE video_import_boxes (
    import_id INTEGER NOT NULL REFERENCES video_imports(id) ON DELETE CASCADE,
    box INTEGER NOT NULL,
    animal_id INTEGER REFERENCES animals(id) ON DELETE SET NULL,
    group_name TEXT NOT NULL DEFAULT '',
    timepoint TEXT NOT NULL DEFAULT '',
    assignment_id INTEGER REFERENCES assignments(id) ON DELETE SET NULL,
    mean_score REAL,
    coverage REAL,
    PRIMARY KEY (import_id, box)
) WITHOUT ROWID;

CREATE TABLE video_jobs (
    id INTEGER PRIMARY KEY,
    filename TEXT NOT NULL,
    stored_path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    animals_json TEXT NOT NULL DEFAULT '{}',
    start_time REAL,
    submitted_by TEXT NOT NULL DEFAULT '',
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    import_id INTEGER REFERENCES video_imports(id) ON DELETE SET NULL,
    result_dir TEXT NOT NULL DEFAULT ''
);
CREATE INDEX video_jobs_state ON video_jobs(state, id);
"""
