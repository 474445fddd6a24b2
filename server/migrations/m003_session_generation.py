"""Per-user session generation: logging out or changing a password ends every session of that user.

Sessions live in signed cookies, so a copied cookie would stay valid until it expires. Each session
carries the generation it was issued under; logout and a password change or reset increment it.
"""

SQL = """
ALTER TABLE users ADD COLUMN session_generation INTEGER NOT NULL DEFAULT 0;
"""
