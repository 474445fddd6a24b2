"""Times and durations as people in the facility read them: ISO dates in the facility's zone.

Every time on a page, in a report or in an export names its zone, because a welfare officer
comparing the dashboard with a cage card must never have to guess whether 09:12 is UTC.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def moment(ts: float, zone: str = "UTC") -> datetime | None:
    """None for a time a datetime cannot hold (a row stored before times were bounded): a page
    shows "invalid time" for it rather than failing."""
    try:
        return datetime.fromtimestamp(ts, tz=ZoneInfo(zone))
    except (OverflowError, OSError, ValueError):
        return None


def local_time(ts: float | None, zone: str, seconds: bool = False) -> str:
    """'2026-12-02 09:12 CET' (with ':SS' when asked); '–' for no time."""
    if ts is None:
        return "–"
    at = moment(ts, zone)
    if at is None:
        return f"invalid time {ts!r}"
    return at.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def local_time_short(ts: float, zone: str, now: float) -> str:
    """'09:12 CET' on the day of `now` in the facility, else the full '2026-12-01 09:12 CET'."""
    at = moment(ts, zone)
    if at is None:
        return f"invalid time {ts!r}"
    if at.date() == datetime.fromtimestamp(now, tz=ZoneInfo(zone)).date():
        return at.strftime("%H:%M %Z")
    return at.strftime("%Y-%m-%d %H:%M %Z")


def local_naive(ts: float, zone: str) -> datetime:
    """The wall-clock time in `zone` without a zone attached (what a spreadsheet cell holds)."""
    return datetime.fromtimestamp(ts, tz=ZoneInfo(zone)).replace(tzinfo=None)


def duration(seconds: float | None) -> str:
    """'42 s', '6 min', '1 h 12 min', '2 d 3 h': exact enough to act on, short enough to scan."""
    if seconds is None:
        return "–"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{m} min" if m >= 10 or not rest else f"{m} min {rest} s"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def parse_local(text: str, zone: str) -> float:
    """'2026-12-02T09:12' (a datetime-local form field) in the facility zone -> Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()
