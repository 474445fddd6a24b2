"""Model registry and roll-out (issue 12): versions, assignments to devices, their events, history.

`model_versions` holds each uploaded set (files on disk under `[models] dir`/<version>/) with its
manifest, whose sha256 is the set's identity, and who uploaded it. `model_assignments` is the log of
what each device was told to run: a device's current assignment is its row with the highest id (the
`assignment_id` on the wire), `version` '' withdraws (back to the models shipped on the device), and
`published_at` NULL means the ingest worker still has to publish it (retained) to the device.
`model_rollouts` groups the assignments of one roll-out and holds the devices that wait for a
canary's promotion. `model_events` are the devices' reports, unique per (device, assignment_id,
event, time) so a retained re-delivery is stored once.

`score_windows.model_version` ties every score to the version that produced it ('' = the models
shipped on disk; windows stored before this migration read ''), and `model_changes` records, per
box, the first window after the model (version or sha256) changed, written by the ingest from new
rows only, so a history chart marks changes without scanning every window of its range.
"""

SQL = """
ALTER TABLE score_windows ADD COLUMN model_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN model_version TEXT;

CREATE TABLE model_versions (
    version TEXT PRIMARY KEY,
    manifest_sha256 TEXT NOT NULL UNIQUE,
    manifest_json TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT '',
    evaluate_json TEXT,
    size_bytes INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at REAL NOT NULL
);

CREATE TABLE model_rollouts (
    id INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    canary_device TEXT,
    waiting_json TEXT NOT NULL DEFAULT '[]',
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    promoted_by TEXT,
    promoted_at REAL
);

CREATE TABLE model_assignments (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL DEFAULT '',
    canary INTEGER NOT NULL DEFAULT 0 CHECK (canary IN (0, 1)),
    rollout_id INTEGER REFERENCES model_rollouts(id),
    assigned_by TEXT NOT NULL,
    assigned_at REAL NOT NULL,
    published_at REAL
);
CREATE INDEX model_assignments_device ON model_assignments(device, id);

CREATE TABLE model_events (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    assignment_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('downloading', 'active', 'failed', 'rolled_back')),
    time TEXT NOT NULL,
    event_at REAL NOT NULL,
    active_version TEXT NOT NULL DEFAULT '',
    previous_version TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    UNIQUE (device, assignment_id, event, time)
);
CREATE INDEX model_events_device ON model_events(device, assignment_id);

CREATE TABLE model_changes (
    device TEXT NOT NULL,
    box INTEGER NOT NULL,
    t REAL NOT NULL,
    model_id INTEGER NOT NULL REFERENCES models(id),
    model_version TEXT NOT NULL,
    PRIMARY KEY (device, box, t)
) WITHOUT ROWID;
"""
