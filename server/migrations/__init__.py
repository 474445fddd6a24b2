"""Numbered schema migrations, applied in order at start-up by `server.db.migrate`.

Each module `mNNN_<what>.py` holds one `SQL` script. A schema change is a new module with the next
number; an applied migration is never edited, because databases in the field already ran it.
"""
