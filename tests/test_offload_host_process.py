"""`mgs-device gpu-host` as a process: ZeroMQ always; Triton (KServe v2) where PyTriton is installed.

PyTriton pins numpy<2, so it cannot live in the project's environment; set MGS_PYTRITON_PYTHON
to the interpreter of an environment that has it (docs/offload.md) to run the Triton tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device.inference import MODEL_NAMES, Models, load_models
from device.offload import KServeClient, OffloadClient, OffloadConfig, OffloadError, OffloadPolicy, OffloadSwitch
from device.pipeline import FastPipeline, PipelineConfig
from device.rois import Roi
from mgs_core.manifest import sha256_file
from tests.conftest import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
PYTRITON_PYTHON = os.environ.get("MGS_PYTRITON_PYTHON", "")


def start_host(python: str, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [python, "-m", "device.cli", "gpu-host", "--precision", "int8", "--providers", "cpu", "--threads", "1", *args],
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def stop_host(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def answered(client: OffloadClient | KServeClient) -> dict | None:
    try:
        return client.hello()
    except OffloadError:
        return None


@pytest.fixture(scope="module")
def local() -> Models:
    return load_models(precision="int8")


def test_zmq_host_process_serves_says_its_provider_and_stops_cleanly(local, tmp_path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / "host.log"
    process = start_host(sys.executable, "--bind", endpoint, log=log)
    try:
        client = OffloadClient(endpoint, timeout_s=1.0)
        info = wait_for(
            lambda: answered(client) or process.poll() is not None, timeout=60, what="the gpu-host to answer"
        )
        assert process.poll() is None, log.read_text()
        assert info["providers"] == ["CPUExecutionProvider"]
        batch = np.random.default_rng(2).random((3, 3, 50, 50), dtype=np.float32)
        np.testing.assert_allclose(
            client.infer("eye", sha256_file(local.files["eye"]), batch), local.eye(batch), rtol=1e-5, atol=1e-5
        )
        client.close()
    finally:
        rc = stop_host(process)
    text = log.read_text()
    assert rc == 0, text
    assert f"gpu-host listening on {endpoint} with CPUExecutionProvider" in text
    assert "gpu-host stopped after 1 request(s)" in text


def test_host_refuses_a_bad_setting_with_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "gpu-host", "--providers", "rocm"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "providers" in result.stderr and "tensorrt, cuda, cpu" in result.stderr and "Traceback" not in result.stderr
    config = tmp_path / "gpu-host.toml"
    config.write_text('bind = "tcp://127.0.0.1:5555"\nmax_batch = 0\n')
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "gpu-host", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "max_batch" in result.stderr and "from 1 to 4096" in result.stderr, result.stderr


def test_triton_transport_without_pytriton_says_what_to_install() -> None:
    try:
        import pytriton  # noqa: F401

        pytest.skip("PyTriton is installed here")
    except ImportError:
        pass
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "device.cli",
            "gpu-host",
            "--transport",
            "triton",
            "--precision",
            "int8",
            "--providers",
            "cpu",
            "--threads",
            "1",
            "--http-port",
            str(free_port()),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "pip install nvidia-pytriton" in result.stderr, result.stderr


def test_an_unreachable_triton_host_is_an_offload_error_not_a_crash() -> None:
    with pytest.raises(OffloadError, match="not usable"):
        KServeClient(f"http://127.0.0.1:{free_port()}", timeout_s=1.0).hello()


@pytest.fixture(scope="module")
def triton_host(tmp_path_factory) -> Iterator[str]:
    if not PYTRITON_PYTHON or not Path(PYTRITON_PYTHON).exists():
        pytest.skip("set MGS_PYTRITON_PYTHON to a Python with nvidia-pytriton to test the Triton transport")
    port = free_port()
    log = tmp_path_factory.mktemp("triton") / "host.log"
    process = start_host(PYTRITON_PYTHON, "--transport", "triton", "--http-port", str(port), log=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = KServeClient(endpoint, timeout_s=2.0)
        wait_for(
            lambda: answered(client) or process.poll() is not None, timeout=120, what="PyTriton to serve the models"
        )
        assert process.poll() is None, log.read_bytes()[-3000:]
        client.close()
        yield endpoint
    finally:
        assert stop_host(process) == 0, log.read_bytes()[-3000:]


def test_triton_offload_gives_the_same_results_as_local(local, triton_host) -> None:
    from export.synth.rack import render_frame

    shas = {name: sha256_file(local.files[name]) for name in MODEL_NAMES}
    policy = OffloadPolicy(OffloadConfig(host=triton_host, timeout_s=10.0, switch_after_s=0.0), target_fps=10.0)
    switch = OffloadSwitch(local, shas, KServeClient(triton_host, 10.0), policy)
    switch.observe(fps=1.0, now=100.0)
    assert policy.backend == "offload", policy.reason
    frame = render_frame(11)
    rois = [Roi(*b.roi) for b in frame.boxes]
    every_frame = PipelineConfig(coarse_every=1, lost_retry=1)
    here, there = (
        FastPipeline(local, rois, every_frame)(frame.image),
        FastPipeline(switch.models, rois, every_frame)(frame.image),
    )
    assert [(b.box, b.eyes) for b in there.boxes] == [(b.box, b.eyes) for b in here.boxes]
    batch = np.random.default_rng(3).random((5, 3, 50, 50), dtype=np.float32)
    np.testing.assert_allclose(switch.models.eye(batch), local.eye(batch), rtol=1e-5, atol=1e-5)
    assert switch.offloaded_calls >= 2 and switch.local_calls == 0


def test_a_triton_host_with_other_models_is_refused(triton_host) -> None:
    fp32 = load_models(precision="fp32")
    shas = {name: sha256_file(fp32.files[name]) for name in MODEL_NAMES}
    policy = OffloadPolicy(OffloadConfig(host=triton_host, switch_after_s=0.0), target_fps=10.0)
    switch = OffloadSwitch(fp32, shas, KServeClient(triton_host, 10.0), policy)
    switch.observe(fps=1.0, now=100.0)
    assert policy.backend == "local" and "does not serve this device's model files" in policy.reason
