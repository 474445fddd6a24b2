"""Offload: the device's networks run on a GPU host while the device keeps every other step.

Only the execution backend changes: the pipeline still calls `ModelRunner`s, but each runner of
an offloaded `Models` sends its batch to the host and waits (with a timeout) for the output. A
host that is down, slow or refuses the request costs that one call a local run, never a frame
and never a published window. `OffloadPolicy` decides when to go to the host (the measured rate
stayed below the target for a while) and when to come back (the host failed).

Two transports, chosen by the scheme of `[offload] host`:
* http://HOST:8000 - the KServe v2 / Triton inference protocol (tritonclient): a stock Triton server
  loading the repository `mgs-export triton-repo` writes, or `mgs-device gpu-host --transport triton`
  (PyTriton). The model files' sha256 come from each model's config parameters.
* tcp://HOST:5555 - ZeroMQ (the paper's transport), served by `mgs-device gpu-host`.

ZeroMQ wire format (DEALER on the device, ROUTER on the host), two frames per message:
a UTF-8 JSON header and the raw C-order bytes of one numpy array (empty for errors and hello).
  request  {"v": 1, "op": "infer", "id": 7, "model": "seg_fine", "sha256": "...", "dtype": "float32", "shape": [2, 3, 96, 96]}
  reply    {"v": 1, "id": 7, "ok": true, "dtype": "uint8", "shape": [2, 96, 96]}
  error    {"v": 1, "id": 7, "ok": false, "error": "what went wrong and what to do"}
  hello    {"v": 1, "op": "hello", "id": 1}  ->  {"v": 1, "id": 1, "ok": true, "models": {...}, "providers": [...]}
The sha256 of the model file travels with every request, so a host with other models refuses
instead of returning another network's answers.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal

import numpy as np

from device.inference import MODEL_NAMES, ModelRunner, Models
from mgs_core.tomlconfig import Check, Range

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: dtypes that may cross the wire (the networks take float32; outputs are uint8 class maps or float32 scores).
WIRE_DTYPES = ("float32", "uint8", "int64", "float16")
Backend = Literal["local", "offload"]


class OffloadError(Exception):
    """The host did not answer a call in time, or answered with an error; the caller runs locally."""


def _check_host(host: str) -> None:
    if host and not host.startswith(("tcp://", "ipc://", "http://")):
        raise ValueError("must be http://HOST:8000 (Triton / KServe v2) or tcp://HOST:5555 (ZeroMQ gpu-host), or empty")


@dataclass(frozen=True)
class OffloadConfig:
    """`[offload]`: when and where this device sends its networks' work."""

    SECTION: ClassVar[str] = "offload"

    host: Annotated[str, Check(_check_host)] = field(
        default="",
        metadata={
            "doc": "GPU host: http://gpu-host.lab:8000 (Triton / KServe v2) or tcp://gpu-host.lab:5555 (ZeroMQ); empty = always score locally"
        },
    )
    timeout_s: Annotated[float, Range(0.01, 30, unit="seconds")] = field(
        default=0.5,
        metadata={
            "doc": "longest wait for one answer of the host; after it the call runs locally and the device goes back to local scoring"
        },
    )
    switch_after_s: Annotated[float, Range(0, 3600, unit="seconds")] = field(
        default=10.0,
        metadata={
            "doc": "offload when the scoring rate stayed below trigger_fraction x target_fps for this many seconds"
        },
    )
    trigger_fraction: Annotated[float, Range(0, 1, above=True)] = field(
        default=0.9, metadata={"doc": "fraction of target_fps below which the device counts as too slow"}
    )
    retry_after_s: Annotated[float, Range(0, 86400, unit="seconds")] = field(
        default=60.0, metadata={"doc": "after the host failed, wait this long before trying it again"}
    )


# --- wire format ----------------------------------------------------------------------------------


def encode(header: dict[str, Any], array: np.ndarray | None = None) -> list[bytes]:
    """One message: JSON header (+ dtype/shape of the array) and the array's raw bytes."""
    header = {"v": PROTOCOL_VERSION, **header}
    if array is None:
        return [json.dumps(header).encode(), b""]
    array = np.ascontiguousarray(array)
    header.update(dtype=array.dtype.name, shape=list(array.shape))
    return [json.dumps(header).encode(), array.tobytes()]


def decode_header(frame: bytes) -> dict[str, Any]:
    """The JSON header of a message, or ValueError with what is wrong with it."""
    try:
        header = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the first frame is not a JSON header") from None
    if not isinstance(header, dict):
        raise ValueError("the header must be a JSON object")
    if header.get("v") != PROTOCOL_VERSION:
        raise ValueError(
            f"protocol version {header.get('v')!r} is not {PROTOCOL_VERSION}; update mgs-rack on the device and the host to the same release"
        )
    return header


def decode_array(header: dict[str, Any], data: bytes, max_elements: int = 1 << 26) -> np.ndarray:
    """The array a header describes, or ValueError when dtype, shape and byte count disagree."""
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(WIRE_DTYPES)}")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ValueError(f"shape {shape!r} must be a non-empty list of non-negative integers")
    count = int(np.prod(shape, dtype=np.int64))
    if count > max_elements:
        raise ValueError(f"shape {shape} has {count} elements, more than the {max_elements} allowed")
    expected = count * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise ValueError(f"{len(data)} data bytes for {dtype}{shape}, expected {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


# --- client ---------------------------------------------------------------------------------------


class OffloadClient:
    """One device's connection to a GPU host. Used from one thread (the pipeline's)."""

    def __init__(self, endpoint: str, timeout_s: float = 0.5, context: Any = None) -> None:
        import zmq

        self._zmq = zmq
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._socket = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        # Queue only on a live connection: with the host down a send waits (and times out) instead
        # of piling requests up that a restarted host would answer long after anybody waits.
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        self._socket.setsockopt(zmq.SNDHWM, 16)
        self._socket.connect(endpoint)
        self._next_id = 0

    def close(self) -> None:
        self._socket.close(linger=0)

    def hello(self) -> dict[str, Any]:
        """The host's description: the models it serves by sha256, its execution providers."""
        return self._call({"op": "hello"}, None)[0]

    def infer(self, model: str, sha256: str, batch: np.ndarray) -> np.ndarray:
        header, data = self._call({"op": "infer", "model": model, "sha256": sha256}, batch)
        try:
            return decode_array(header, data)
        except ValueError as exc:
            raise OffloadError(f"host {self.endpoint} sent a bad {model} answer: {exc}") from None

    def _call(self, header: dict[str, Any], array: np.ndarray | None) -> tuple[dict[str, Any], bytes]:
        zmq = self._zmq
        self._next_id += 1
        request_id = self._next_id
        deadline = time.monotonic() + self.timeout_s
        if not self._socket.poll(self._ms_left(deadline), zmq.POLLOUT):
            raise OffloadError(
                f"host {self.endpoint} not reachable within {self.timeout_s:g} s (is `mgs-device gpu-host` running there?)"
            )
        try:
            self._socket.send_multipart(encode({**header, "id": request_id}, array), flags=zmq.NOBLOCK)
        except zmq.Again:
            raise OffloadError(f"host {self.endpoint} is not accepting requests (connection lost)") from None
        while True:
            if not self._socket.poll(self._ms_left(deadline), zmq.POLLIN):
                raise OffloadError(f"host {self.endpoint} did not answer within {self.timeout_s:g} s")
            frames = self._socket.recv_multipart()
            try:
                reply = decode_header(frames[0])
            except ValueError as exc:
                raise OffloadError(f"host {self.endpoint} sent a bad reply: {exc}") from None
            if reply.get("id") != request_id:
                continue  # the late answer to a call that already timed out and ran locally
            if not reply.get("ok"):
                raise OffloadError(f"host {self.endpoint} refused: {reply.get('error', 'no reason given')}")
            return reply, frames[1] if len(frames) > 1 else b""

    @staticmethod
    def _ms_left(deadline: float) -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))


class KServeClient:
    """The same calls over the KServe v2 / Triton HTTP protocol (tritonclient), to a Triton server.

    A Triton model has no per-request file check, so `hello()` reads each model's config: the
    `sha256` parameter (written by `mgs-export triton-repo`) must be there and match, or the switch
    refuses the host. Input/output names come from the same configs.
    """

    def __init__(self, endpoint: str, timeout_s: float = 0.5) -> None:
        import tritonclient.http as triton_http

        self._http = triton_http
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._client = triton_http.InferenceServerClient(
            endpoint.removeprefix("http://"), connection_timeout=timeout_s, network_timeout=timeout_s
        )
        self._io: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        self._client.close()

    def hello(self) -> dict[str, Any]:
        from tritonclient.utils import InferenceServerException

        models: dict[str, str] = {}
        try:
            for name in MODEL_NAMES:
                config = self._client.get_model_config(name)
                sha = config.get("parameters", {}).get("sha256", {}).get("string_value", "")
                if not sha:
                    raise OffloadError(
                        f"Triton host {self.endpoint}: model {name} has no sha256 parameter; serve the "
                        "repository written by `mgs-export triton-repo`"
                    )
                models[sha] = name
                self._io[name] = (config["input"][0]["name"], config["output"][0]["name"])
        except (InferenceServerException, OSError) as exc:
            raise OffloadError(f"Triton host {self.endpoint} not usable: {exc}") from None
        return {"models": models, "providers": ["Triton (KServe v2)"]}

    def infer(self, model: str, sha256: str, batch: np.ndarray) -> np.ndarray:
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        if model not in self._io:
            self.hello()
        input_name, output_name = self._io[model]
        tensor = self._http.InferInput(input_name, list(batch.shape), np_to_triton_dtype(batch.dtype))
        tensor.set_data_from_numpy(np.ascontiguousarray(batch), binary_data=True)
        try:
            result = self._client.infer(
                model, [tensor], outputs=[self._http.InferRequestedOutput(output_name, binary_data=True)]
            )
        except (InferenceServerException, OSError) as exc:
            raise OffloadError(f"Triton host {self.endpoint}: {model} failed: {exc}") from None
        return result.as_numpy(output_name)


def connect(endpoint: str, timeout_s: float) -> OffloadClient | KServeClient:
    """The client for an `[offload] host` value: http:// is Triton / KServe v2, tcp:// and ipc:// ZeroMQ."""
    if endpoint.startswith("http://"):
        return KServeClient(endpoint, timeout_s)
    return OffloadClient(endpoint, timeout_s)


# --- when to offload ------------------------------------------------------------------------------


class OffloadPolicy:
    """Local or offload, and why. Pure logic over the measured rate and the host's failures.

    Local -> offload when a host is configured, the retry pause after its last failure is over, and
    the rate stayed below trigger_fraction x target for switch_after_s. Offload -> local when the
    host fails (timeout, refusal, unreachable); the device then scores locally at its own rate.
    """

    def __init__(self, config: OffloadConfig, target_fps: float) -> None:
        self.config = config
        self.target_fps = target_fps
        self.backend: Backend = "local"
        self.reason = "" if config.host else "no offload host configured"
        self.failures = 0
        self._slow_since: float | None = None
        self._retry_at = 0.0

    def wants_offload(self, now: float, fps: float) -> bool:
        """Feed one rate measurement; True when the device should try the host now."""
        if self.backend == "offload" or not self.config.host:
            return False
        if fps >= self.config.trigger_fraction * self.target_fps:
            self._slow_since = None
            return False
        if self._slow_since is None:
            self._slow_since = now
        return now - self._slow_since >= self.config.switch_after_s and now >= self._retry_at

    def offloaded(self, fps: float, detail: str = "") -> None:
        self.backend = "offload"
        self._slow_since = None
        self.reason = (
            f"offloading to {self.config.host}: local scoring ran {fps:.1f} fps, below the target of "
            f"{self.target_fps:g}" + (f" ({detail})" if detail else "")
        )
        log.warning("%s", self.reason)

    def host_failed(self, now: float, error: str) -> None:
        self.failures += 1
        self._retry_at = now + self.config.retry_after_s
        self._slow_since = None
        was = self.backend
        self.backend = "local"
        self.reason = f"scoring locally: offload host failed ({error}); next try in {self.config.retry_after_s:g} s"
        if was == "offload":
            log.warning("%s", self.reason)


class OffloadRunner:
    """A `ModelRunner` that runs on the host while the policy says offload, else (or on failure) locally."""

    def __init__(self, switch: OffloadSwitch, name: str, sha256: str, local: ModelRunner) -> None:
        self.switch = switch
        self.name = name
        self.sha256 = sha256
        self.local = local

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.switch.policy.backend == "offload":
            try:
                out = self.switch.client.infer(self.name, self.sha256, batch)
                self.switch.offloaded_calls += 1
                return out
            except OffloadError as exc:
                self.switch.call_failed(str(exc))
        self.switch.local_calls += 1
        return self.local(batch)


class OffloadSwitch:
    """The device's models behind the offload policy: `models` is what the pipeline gets.

    The runner calls `observe(fps)` once per frame; a switch to the host first asks it (hello)
    whether it serves exactly these model files, so a mismatch is refused before any frame.
    """

    def __init__(
        self, local: Models, file_sha256: dict[str, str], client: OffloadClient | KServeClient, policy: OffloadPolicy
    ) -> None:
        self.local = local
        self.client = client
        self.policy = policy
        self.file_sha256 = file_sha256
        self.offloaded_calls = 0
        self.local_calls = 0
        self.host_providers: list[str] = []
        runners = {name: OffloadRunner(self, name, file_sha256[name], getattr(local, name)) for name in MODEL_NAMES}
        self.models = replace(
            local,
            seg_coarse=runners["seg_coarse"],
            seg_fine=runners["seg_fine"],
            eye=runners["eye"],
            files=dict(local.files),
        )

    def observe(self, fps: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.policy.wants_offload(now, fps):
            try:
                self._check_host()
            except OffloadError as exc:
                self.policy.host_failed(now, str(exc))
                log.warning("%s", self.policy.reason)
                return
            self.policy.offloaded(fps, f"host runs {', '.join(self.host_providers)}")

    def call_failed(self, error: str) -> None:
        self.policy.host_failed(time.monotonic(), error)

    def _check_host(self) -> None:
        info = self.client.hello()
        served = info.get("models", {})
        missing = [
            f"{name} {sha[:12]}" for name, sha in self.file_sha256.items() if name in MODEL_NAMES and sha not in served
        ]
        if missing:
            raise OffloadError(
                f"host {self.client.endpoint} does not serve this device's model files ({', '.join(missing)}); "
                "install the same models/ release on the device and the GPU host"
            )
        self.host_providers = list(info.get("providers", []))


def offload_switch(
    local: Models, file_sha256: dict[str, str], config: OffloadConfig, target_fps: float
) -> OffloadSwitch | None:
    """The switch for a device config, or None when no host is configured."""
    if not config.host:
        return None
    return OffloadSwitch(local, file_sha256, connect(config.host, config.timeout_s), OffloadPolicy(config, target_fps))
