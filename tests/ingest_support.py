"""Helpers shared by the server data tests: synthetic windows, a QoS 1 publisher, a running worker."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from mgs_core.messages import ScoreWindow, score_topic, utc_iso
from server.ingest import IngestConfig, IngestWorker
from tests.conftest import wait_for

SHA = "ab" * 32
T0 = 1_750_000_000.0


def window(device: str = "rack1", box: int = 0, seq: int = 0, t: float = T0, score: float | None = 3.0) -> ScoreWindow:
    face = score is not None
    return ScoreWindow(
        device=device,
        box=box,
        seq=seq,
        window_start=utc_iso(t),
        window_end=utc_iso(t + 1.0),
        frames=10,
        valid_eyes=2 if face else 0,
        score=score,
        median=score,
        p90=None if score is None else min(9.0, score + 0.5),
        face_visible_fraction=0.9 if face else 0.0,
        model_sha256=SHA,
    )


def score_message(w: ScoreWindow, prefix: str = "mgs") -> tuple[str, bytes]:
    return score_topic(w.device, w.box, prefix), w.to_json()


def publish(broker: Any, messages: Sequence[tuple[str, bytes]], qos: int = 1, retain: bool = False) -> None:
    """Publish and wait until the broker acknowledged every message."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos, retain=retain) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def running_worker(broker: Any, db_path: Path, **overrides: Any) -> Iterator[IngestWorker]:
    config = IngestConfig(**{"host": broker.host, "port": broker.port, "flush_interval_s": 0.05, **overrides})
    worker = IngestWorker(config, db_path)
    worker.start()
    try:
        wait_for(worker.connected.is_set, timeout=10, what="ingest to connect and subscribe")
        yield worker
    finally:
        worker.stop()
