"""Offload over ZeroMQ with the shipped ONNX models: a real host on a loopback port, real clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from device.eyes import crop_patches, patches_to_batch
from device.gpu_host import GpuHost, GpuHostConfig, load_served_models
from device.inference import MODEL_NAMES, Models, load_models
from device.offload import OffloadClient, OffloadConfig, OffloadError, OffloadPolicy, OffloadSwitch, encode
from device.pipeline import (
    FastPipeline,
    FullResolutionPipeline,
    PipelineConfig,
    images_to_batch,
    pad_to_multiple,
    resize_for_coarse,
)
from device.rois import Roi
from mgs_core.errors import ConfigError
from mgs_core.manifest import sha256_file
from mgs_core.tomlconfig import from_dict
from tests.conftest import free_port, wait_for

PRECISION = "int8"


@pytest.fixture(scope="module")
def local() -> Models:
    return load_models(precision=PRECISION)


@pytest.fixture(scope="module")
def served():
    return load_served_models(GpuHostConfig(precision=PRECISION, providers=["cpu"], threads=1))


@pytest.fixture
def host(served) -> Iterator[GpuHost]:
    h = GpuHost(served, "tcp://127.0.0.1:*").start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def frames():
    from export.synth.rack import render_frame

    return [render_frame(11 + i) for i in range(3)]


def file_shas(models: Models) -> dict[str, str]:
    return {name: sha256_file(models.files[name]) for name in MODEL_NAMES}


def offload_switch(local: Models, endpoint: str, timeout_s: float = 5.0) -> OffloadSwitch:
    config = OffloadConfig(host=endpoint, timeout_s=timeout_s, switch_after_s=0.0, retry_after_s=60.0)
    return OffloadSwitch(
        local, file_shas(local), OffloadClient(endpoint, timeout_s), OffloadPolicy(config, target_fps=10.0)
    )


def eyes(result) -> list[tuple]:
    return [
        (b.box, b.animal_found, [(e.x, e.y, round(e.score, 4), e.quality_ok) for e in b.eyes]) for b in result.boxes
    ]


def network_inputs(models: Models, frame) -> dict[str, np.ndarray]:
    """What the pipeline feeds each network for this frame, built with the pipeline's own pre-processing."""
    rois = [Roi(*b.roi) for b in frame.boxes]
    eyes_xy = [(e.x, e.y) for b in frame.boxes for e in b.eyes]
    crops = [pad_to_multiple(frame.image[int(y) - 48 : int(y) + 48, int(x) - 48 : int(x) + 48]) for x, y in eyes_xy]
    return {
        "seg_coarse": images_to_batch(
            [resize_for_coarse(frame.image[r.y : r.y1, r.x : r.x1], models.coarse_size) for r in rois]
        ),
        "seg_fine": images_to_batch(crops),
        "eye": patches_to_batch(crop_patches(frame.image, eyes_xy)[0]),
    }


def test_offloaded_networks_and_pipelines_give_the_same_results_as_local(local, host, frames) -> None:
    switch = offload_switch(local, host.endpoint)
    switch.observe(fps=1.0, now=100.0)
    assert switch.policy.backend == "offload", switch.policy.reason
    assert "CPUExecutionProvider" in switch.policy.reason
    inputs = network_inputs(local, frames[0])
    assert len(inputs["eye"]) >= 2
    for name, batch in inputs.items():
        there, here = getattr(switch.models, name)(batch), getattr(local, name)(batch)
        assert there.dtype == here.dtype and there.shape == here.shape
        np.testing.assert_allclose(there, here, rtol=1e-5, atol=1e-5, err_msg=name)
    rois = [Roi(*b.roi) for b in frames[0].boxes]
    fast_here, fast_there = FastPipeline(local, rois), FastPipeline(switch.models, rois)
    for i, frame in enumerate(frames):
        assert eyes(fast_there(frame.image, i)) == eyes(fast_here(frame.image, i))
    full = FullResolutionPipeline(switch.models, rois)(frames[0].image)
    assert eyes(full) == eyes(FullResolutionPipeline(local, rois)(frames[0].image))
    assert switch.local_calls == 0
    assert host.stats.requests == switch.offloaded_calls >= len(inputs) + 1 + len(rois)


def test_two_devices_share_one_batch(local, served) -> None:
    host = GpuHost(served, "tcp://127.0.0.1:*", max_batch=64)  # driven step by step below, no thread
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 3, 50, 50), dtype=np.float32) for n in (3, 5)]
    sha = sha256_file(local.files["eye"])
    answers: dict[int, np.ndarray] = {}
    clients = [OffloadClient(host.endpoint, timeout_s=30.0) for _ in batches]

    def ask(i: int) -> None:
        answers[i] = clients[i].infer("eye", sha, batches[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: host.receive(0.05) >= 0 and host.pending_requests() == 2,
            timeout=20,
            what="both requests queued on the host",
        )
        host.run_due(0.0, force=True)
        for t in threads:
            t.join(timeout=20)
    finally:
        host.stop()
        for c in clients:
            c.close()
    assert host.stats.batches == 1 and host.stats.senders_per_batch == [2] and host.stats.rows == 8
    for i, batch in enumerate(batches):
        np.testing.assert_allclose(answers[i], local.eye(batch), rtol=1e-5, atol=1e-5)


def test_host_going_down_costs_one_local_call_and_the_status_says_why(local, served, frames) -> None:
    host = GpuHost(served, "tcp://127.0.0.1:*").start()
    switch = offload_switch(local, host.endpoint, timeout_s=1.0)
    switch.observe(fps=1.0, now=100.0)
    rois = [Roi(*b.roi) for b in frames[0].boxes]
    every_frame = PipelineConfig(coarse_every=1, lost_retry=1)  # every frame calls the networks
    here, there = FastPipeline(local, rois, every_frame), FastPipeline(switch.models, rois, every_frame)
    assert eyes(there(frames[0].image, 0)) == eyes(here(frames[0].image, 0))
    host.stop()
    assert eyes(there(frames[1].image, 1)) == eyes(here(frames[1].image, 1))
    assert switch.policy.backend == "local"
    assert "offload host failed" in switch.policy.reason and host.endpoint in switch.policy.reason
    assert switch.local_calls >= 1
    # Still slow, but the retry pause holds it local; after the pause the host is asked first.
    failed_at = time.monotonic()
    switch.observe(fps=1.0, now=failed_at + 30)
    assert switch.policy.backend == "local" and "next try in 60 s" in switch.policy.reason
    switch.observe(fps=1.0, now=failed_at + 61)
    assert switch.policy.backend == "local" and "not reachable" in switch.policy.reason


def test_no_host_at_all_keeps_scoring_locally(local, frames) -> None:
    switch = offload_switch(local, f"tcp://127.0.0.1:{free_port()}", timeout_s=0.3)
    switch.policy.offloaded(fps=1.0)  # as if it had switched and the host vanished before the first frame
    rois = [Roi(*b.roi) for b in frames[0].boxes]
    assert eyes(FastPipeline(switch.models, rois)(frames[0].image)) == eyes(FastPipeline(local, rois)(frames[0].image))
    assert switch.policy.backend == "local" and "not reachable within 0.3 s" in switch.policy.reason
    assert switch.offloaded_calls == 0


def raw_request(endpoint: str, frames: list[bytes]) -> dict:
    import json

    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(10_000), "the host did not answer a bad request"
        return json.loads(sock.recv_multipart()[0])
    finally:
        sock.close()


def test_bad_requests_get_an_error_reply_and_the_host_keeps_serving(local, host) -> None:
    sha = sha256_file(local.files["seg_coarse"])
    h, w = local.coarse_size
    good = {"op": "infer", "id": 1, "model": "seg_coarse", "sha256": sha}
    cases = [
        ([b"\x00\xffgarbage"], "expected a JSON header and one data frame"),
        ([b"not json", b""], "not a JSON header"),
        (encode({"op": "dance", "id": 1}), "unknown op"),
        ([b'{"v": 99, "op": "hello"}', b""], "protocol version 99"),
        (encode(good, np.zeros((1, 3, h, w), np.float64)), "dtype 'float64'"),
        (encode(good, np.zeros((1, 3, h + 1, w), np.float32)), f"axis 2 is {h + 1}, the network needs {h}"),
        (encode(good, np.zeros((1, 3, h, w), np.float32))[:1] + [b"\x00" * 12], "data bytes"),
        (encode(good, np.zeros((65, 3, h, w), np.float32)), "batch of 65 rows"),
        (encode({**good, "model": "nose"}, np.zeros((1, 3, h, w), np.float32)), "unknown model 'nose'"),
    ]
    for frames, message in cases:
        reply = raw_request(host.endpoint, frames)
        assert reply["ok"] is False and message in reply["error"], (message, reply)
    assert host.stats.rejected == len(cases)
    host_port = int(host.endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", host_port), timeout=5) as raw:  # not ZeroMQ at all
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 64)
    batch = np.random.default_rng(1).random((2, 3, h, w), dtype=np.float32)
    out = OffloadClient(host.endpoint, 10.0).infer("seg_coarse", sha, batch)
    np.testing.assert_array_equal(out, local.seg_coarse(batch))


def test_a_host_with_other_model_files_is_refused(local) -> None:
    fp32_only = load_served_models(GpuHostConfig(precision="fp32", providers=["cpu"], threads=1))
    host = GpuHost(fp32_only, "tcp://127.0.0.1:*").start()
    try:
        with pytest.raises(
            OffloadError, match=r"model eye with sha256 \w{12} is not served here .*fp32.*same models/ release"
        ):
            OffloadClient(host.endpoint, 10.0).infer(
                "eye", sha256_file(local.files["eye"]), np.zeros((1, 3, 50, 50), np.float32)
            )
        switch = offload_switch(local, host.endpoint)
        switch.observe(fps=1.0, now=100.0)
        assert switch.policy.backend == "local"
        assert "does not serve this device's model files" in switch.policy.reason
    finally:
        host.stop()


def test_policy_offloads_only_after_staying_slow_and_waits_after_a_failure() -> None:
    policy = OffloadPolicy(
        OffloadConfig(host="tcp://gpu:5555", switch_after_s=10, retry_after_s=60, trigger_fraction=0.9), target_fps=10
    )
    assert not policy.wants_offload(0.0, 5.0)
    assert not policy.wants_offload(9.0, 5.0)
    assert not policy.wants_offload(9.5, 9.5)  # fast enough again: the slow spell starts over
    assert not policy.wants_offload(10.0, 5.0) and not policy.wants_offload(19.0, 5.0)
    assert policy.wants_offload(20.0, 5.0)
    policy.offloaded(5.0)
    assert policy.backend == "offload" and "below the target of 10" in policy.reason
    policy.host_failed(25.0, "host gone")
    assert policy.backend == "local" and "host gone" in policy.reason and policy.failures == 1
    assert not policy.wants_offload(26.0, 5.0) and not policy.wants_offload(80.0, 5.0)
    assert policy.wants_offload(86.0, 5.0)
    assert not OffloadPolicy(OffloadConfig(), 10).wants_offload(1e6, 0.0)


def test_offload_and_host_configs_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="offload.host.*http://HOST:8000"):
        from_dict(OffloadConfig, {"host": "gpu-host:5555"})
    with pytest.raises(ConfigError, match="offload.timeout_s"):
        from_dict(OffloadConfig, {"host": "tcp://gpu:5555", "timeout_s": 0})
    with pytest.raises(ConfigError, match="providers.*tensorrt, cuda, cpu"):
        from_dict(GpuHostConfig, {"providers": ["rocm"]})
