"""Which seqs of each device's outbox are stored: the watermark the server acknowledges.

A device deletes a message from its outbox only when the server says it is stored (`StoredAck` on
`<prefix>/<device>/stored`), never on the broker's PUBACK, so a broker that loses its queue loses
nothing the device still has. The ack names one seq per (device, epoch) and means "every seq up to
here is stored or quarantined"; seqs can arrive out of order (a broker redelivering after a
restart, a device re-publishing what was not acknowledged), so the watermark is the highest seq
reached *contiguously*, and seqs stored above a gap wait in memory until the gap is filled. A
device's status names the lowest seq still in its outbox: everything below it was stored or given
up by the device (outbox limit), so the watermark may pass gaps there, and only there.

Seq regressions, the sign that an outbox was replaced or restored, are logged and counted per
device: a new epoch for a device that had another, and a stored seq reused with other content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from server.store import IngestStore

log = logging.getLogger(__name__)


@dataclass
class _Epoch:
    """One outbox's progress: everything up to `through` is handled; `above` holds handled seqs past a gap."""

    through: int
    highest: int
    above: set[int] = field(default_factory=set)

    def add(self, seq: int) -> None:
        self.highest = max(self.highest, seq)
        if seq > self.through:
            self.above.add(seq)

    def skip_below(self, first_seq: int) -> None:
        """The device holds nothing below `first_seq`: no gap there can ever be filled."""
        if first_seq - 1 > self.through:
            self.through = first_seq - 1
            self.above = {s for s in self.above if s > self.through}

    def advance(self) -> None:
        while self.through + 1 in self.above:
            self.through += 1
            self.above.discard(self.through)


class DeliveryTracker:
    """Owned by the ingest writer thread: updated inside each batch's transaction, in step with it."""

    def __init__(self) -> None:
        self._epochs: dict[tuple[str, str], _Epoch] = {}

    def forget(self) -> None:
        """After a rolled-back transaction the in-memory state may be ahead of the database."""
        self._epochs.clear()

    def _load(self, repo: IngestStore, device: str, epoch: str, now: float) -> _Epoch:
        key = (device, epoch)
        state = self._epochs.get(key)
        if state is not None:
            return state
        stored = repo.delivery(device, epoch)
        if stored is None:
            latest = repo.latest_epoch(device)
            if latest is not None:
                what = (
                    f"new outbox epoch {epoch or '(none)'!r} after epoch {latest[0] or '(none)'!r} reached seq "
                    f"{latest[1]}: the device's outbox was replaced, its seq restarts"
                )
                log.warning("device %s: %s", device, what)
                repo.record_seq_regression(device, what, now)
            stored = (0, 0)
        state = _Epoch(stored[0], stored[1], repo.handled_seqs(device, epoch, stored[0]))
        state.advance()
        self._epochs[key] = state
        return state

    def handled(self, repo: IngestStore, device: str, epoch: str, seqs: list[int], now: float) -> None:
        """Seqs of this device's epoch that the current transaction stores or quarantines (or that
        were stored before: a redelivery)."""
        state = self._load(repo, device, epoch, now)
        for seq in seqs:
            state.add(seq)

    def outbox_starts_at(self, repo: IngestStore, device: str, epoch: str, first_seq: int, now: float) -> bool:
        """A device status: its outbox `epoch` holds nothing below `first_seq`. Returns whether the
        epoch is known (a status alone does not make an epoch)."""
        if (device, epoch) not in self._epochs and repo.delivery(device, epoch) is None:
            return False
        self._load(repo, device, epoch, now).skip_below(first_seq)
        return True

    def commit(self, repo: IngestStore, touched: set[tuple[str, str]], now: float) -> dict[tuple[str, str], int]:
        """Advance the watermarks of `touched` epochs and write them; returns (device, epoch) -> stored
        through, to be acknowledged once the transaction has committed."""
        out = {}
        for key in touched:
            state = self._epochs[key]
            state.advance()
            repo.record_delivery(key[0], key[1], state.through, state.highest, now)
            out[key] = state.through
        return out
