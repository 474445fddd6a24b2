"""Records for the welfare officer: acknowledgement notes, an audit log, humane-endpoint criteria.

An acknowledgement row belongs to one raised alert; acknowledging an episode writes one row per
raised alert in it with the same note, so the episode can be rebuilt from alerts at any time.
The audit log keeps old and new values as JSON text, written by the web views that make changes.
"""

SQL = """
ALTER TABLE animals ADD COLUMN humane_endpoint TEXT NOT NULL DEFAULT '';

CREATE TABLE acknowledgements (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    time REAL NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX acknowledgements_alert ON acknowledgements(alert_id);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    username TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    old_json TEXT,
    new_json TEXT
);
CREATE INDEX audit_log_time ON audit_log(time);
CREATE INDEX audit_log_target ON audit_log(target, time);
"""
