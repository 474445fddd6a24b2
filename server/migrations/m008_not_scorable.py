"""Abstained eyes: "not scorable" (a face seen, the model not confident) kept apart from "no face".

A device counts in `abstained_eyes` the eyes it found but would not score (docs/confidence.md). A
window with no score and abstained eyes is "not scorable": the camera saw a face, so hours of it
mean someone should look at the animal or the camera, which "no face visible" does not. Windows
stored before this migration, and those of devices that do not send the field, read 0.
`boxes.last_abstained_eyes` is that count for the box's newest window (the overview tile), and the
rollups count not-scorable windows per bucket so a month-long chart still tells the two apart.
"""

SQL = """
ALTER TABLE score_windows ADD COLUMN abstained_eyes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boxes ADD COLUMN last_abstained_eyes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_minute ADD COLUMN not_scorable_windows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_hour ADD COLUMN not_scorable_windows INTEGER NOT NULL DEFAULT 0;
"""
