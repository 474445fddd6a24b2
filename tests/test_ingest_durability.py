"""A hard kill of `mgs-server run` mid-stream loses no score window: the server acknowledges a
message to the broker only after the batch holding it is committed, so whatever was received but
not yet written is delivered again by the broker after the restart, and stored exactly once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

from bench.bench_ingest import RawPublisher
from tests.conftest import Broker, free_port, wait_for
from tests.ingest_support import publish, running_worker, score_message, window
from tests.test_server_run import CLI, write_config

N = 40_000  # eight default batches: the kill lands between the first commit and the last


def stored(db: Path, device: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute("SELECT COUNT(*) FROM score_windows WHERE device = ?", [device]).fetchone()[0]
    except sqlite3.OperationalError:  # the server has not created the database yet
        return 0


def start_server(config: Path, log: Path, db: Path, probe_seq: int, broker: Broker) -> subprocess.Popen[bytes]:
    """Start `mgs-server run` and return once its ingest stores what is published (a probe window
    of another device: the session must exist before the windows under test are published)."""
    with open(log, "ab") as out:
        server = subprocess.Popen(CLI + ["run", "--config", str(config)], stdout=out, stderr=out, cwd=config.parent)
    probe = [score_message(window(device="probe", seq=probe_seq))]

    def probe_stored() -> bool:
        assert server.poll() is None, log.read_text()[-3000:]
        publish(broker, probe)
        return stored(db, "probe") > probe_seq

    wait_for(probe_stored, timeout=60, interval=0.5, what="the server to store a probe window")
    return server


def test_sigkill_while_ingesting_loses_nothing_and_stores_each_window_once(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, broker.port, free_port())
    db, log = tmp_path / "server.sqlite", tmp_path / "server.log"
    server = start_server(config, log, db, 0, broker)
    publisher = RawPublisher(broker.host, broker.port, "durability-publisher")
    assert (
        publisher.publish_all(
            RawPublisher.encode([score_message(window(seq=seq, t=1_750_000_000.0 + seq)) for seq in range(N)])
        )
        == N
    )
    try:
        at_kill = wait_for(lambda: stored(db, "rack1"), timeout=120, interval=0.01, what="the first batch to commit")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    after_kill = stored(db, "rack1")
    assert 0 < at_kill <= after_kill < N, f"the kill must land mid-stream: {at_kill}, {after_kill} of {N} stored"

    server = start_server(config, log, db, 1, broker)
    try:
        wait_for(lambda: stored(db, "rack1") >= N, timeout=120, interval=0.1, what=f"all {N} windows after the restart")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with sqlite3.connect(db) as conn:
        count, distinct, first, last = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM score_windows WHERE device = 'rack1'"
        ).fetchone()
    assert (count, distinct, first, last) == (N, N, 0, N - 1)
    assert server.returncode == 0, log.read_text()[-3000:]


def test_a_clean_stop_mid_stream_leaves_the_unwritten_rest_in_the_broker(tmp_path: Path, broker: Broker) -> None:
    """`stop()` while messages are arriving: it writes what it took in and acknowledges nothing
    else, so the next start stores exactly what is missing. The broker delivers in order: once a
    marker published after the restart is stored, the whole backlog has been through the writer."""
    db, n = tmp_path / "server.db", 20_000
    with running_worker(broker, db, client_id="clean-stop") as worker:
        publisher = RawPublisher(broker.host, broker.port, "clean-stop-publisher")
        assert (
            publisher.publish_all(
                RawPublisher.encode([score_message(window(seq=seq, t=1_750_000_000.0 + seq)) for seq in range(n)])
            )
            == n
        )
        wait_for(lambda: worker.stats().get("stored", 0), timeout=60, interval=0.01, what="the first batch")
    first = stored(db, "rack1")
    assert worker.stats()["queued"] == 0, "stop() wrote everything it took in"
    with running_worker(broker, db, client_id="clean-stop") as worker:
        publish(broker, [score_message(window(device="marker"))])
        wait_for(lambda: stored(db, "marker"), timeout=60, what="the marker after the backlog")
    # Counted after stop(): the writer adds a batch's counts just after its commit, so a row can be
    # in the database a moment before it is in stats().
    assert 0 < first < n, f"the stop must land mid-stream: {first} of {n} stored"
    assert worker.stats()["stored"] == n - first + 1
    assert stored(db, "rack1") == n
