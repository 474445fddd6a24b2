"""The GPU host: serves the shipped ONNX networks to devices that cannot keep up (offload).

One ROUTER socket, one thread. Requests are grouped by (model file, input shape); a group runs as
ONE onnxruntime call when it holds `max_batch` rows or its first request has waited `max_wait_ms`,
so the ROIs of several racks share a GPU pass. Every request is checked (header, model sha256,
dtype, shape, byte count) before it joins a group; a bad one gets an error reply and the host
keeps serving everybody else. Wire format: device/offload.py.

`serve_triton` is the other transport: the same sessions behind PyTriton (a Triton server with
Python models), so devices speak KServe v2 and Triton's dynamic batcher merges their requests.
PyTriton needs numpy<2, so it lives in the GPU host's own environment (docs/offload.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from device.inference import MODEL_NAMES, OnnxRunner, onnx_runner
from device.offload import decode_array, decode_header, encode
from mgs_core.errors import MgsError
from mgs_core.tomlconfig import Check, Range, fail

log = logging.getLogger(__name__)

#: `providers` names in the config -> onnxruntime execution providers.
#: Largest message a device may send (a full-resolution ROI batch is ~11 MB); a bigger one drops
#: that connection inside ZeroMQ before anything is allocated for it.
MAX_MESSAGE_BYTES = 128 << 20

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def _check_providers(providers: list[str]) -> None:
    if not providers or any(p not in PROVIDER_NAMES for p in providers):
        raise ValueError(f"must be a non-empty list of {', '.join(PROVIDER_NAMES)}")


@dataclass
class GpuHostConfig:
    """`gpu-host.toml`: what the host serves and how it batches."""

    transport: Literal["zmq", "triton"] = field(
        default="zmq",
        metadata={"doc": "zmq (devices use tcp://HOST:5555) or triton (PyTriton; devices use http://HOST:http_port)"},
    )
    bind: str = field(
        default="tcp://0.0.0.0:5555", metadata={"doc": "ZeroMQ endpoint the devices connect to (transport zmq)"}
    )
    http_port: Annotated[int, Range(1, 65533)] = field(
        default=8000,
        metadata={"doc": "KServe v2 HTTP port (transport triton); gRPC and metrics use the next two ports"},
    )
    models_dir: Path | None = field(
        default=None,
        metadata={
            "doc": "folder with manifest.json and the ONNX files; empty = $MGS_MODELS_DIR, else the installed models/"
        },
    )
    precision: Literal["int8", "fp32", "both"] = field(
        default="both", metadata={"doc": "which shipped precisions to serve; a device asks for the file it runs itself"}
    )
    providers: Annotated[list[str], Check(_check_providers)] = field(
        default_factory=lambda: ["cuda", "cpu"],
        metadata={
            "doc": "execution providers, best first: tensorrt, cuda, cpu (those this onnxruntime lacks are skipped)"
        },
    )
    threads: Annotated[int, Range(0, 256, note="0 = all cores")] = field(
        default=0, metadata={"doc": "onnxruntime intra-op threads per network; 0 = all cores"}
    )
    max_batch: Annotated[int, Range(1, 4096)] = field(
        default=64, metadata={"doc": "most rows (ROIs, crops or eye patches) in one network call"}
    )
    max_wait_ms: Annotated[float, Range(0, 1000, unit="ms")] = field(
        default=2.0, metadata={"doc": "longest a request waits for others to share its batch"}
    )

    def check(self) -> None:
        if self.transport == "triton" and self.precision == "both":
            raise fail(
                "precision",
                self.precision,
                "transport triton serves one precision (Triton names the models seg_coarse, "
                "seg_fine, eye): choose int8 or fp32, the one the devices run",
            )


@dataclass
class ServedModel:
    name: str
    precision: str
    sha256: str
    runner: OnnxRunner
    input_dtype: str

    def check(self, shape: list[int], dtype: str, max_batch: int) -> None:
        """ValueError unless `shape`/`dtype` fit this network's input."""
        if dtype != self.input_dtype:
            raise ValueError(f"{self.name} takes {self.input_dtype}, not {dtype}")
        expected = self.runner.input_shape
        if len(shape) != len(expected):
            raise ValueError(f"{self.name} takes {len(expected)}-d input {list(expected)}, not {shape}")
        if not 1 <= shape[0] <= max_batch:
            raise ValueError(f"{self.name}: batch of {shape[0]} rows; this host takes 1-{max_batch}")
        for axis, (got, want) in enumerate(zip(shape[1:], expected[1:]), start=1):
            if (isinstance(want, int) and got != want) or got < 1:
                raise ValueError(f"{self.name} input axis {axis} is {got}, the network needs {want}")


def resolve_providers(names: list[str]) -> tuple[str, ...]:
    """The configured providers this onnxruntime has, best first; says which ones are missing."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = [PROVIDER_NAMES[n] for n in names]
    chosen = tuple(p for p in wanted if p in available)
    missing = [p for p in wanted if p not in available]
    if not chosen:
        raise MgsError(
            f"none of the providers {', '.join(wanted)} is in this onnxruntime ({', '.join(sorted(available))}); "
            "install onnxruntime-gpu on the GPU host or add cpu to providers"
        )
    if missing:
        log.warning(
            "%s not available in this onnxruntime (install onnxruntime-gpu with a matching CUDA for the GPU); serving with %s",
            ", ".join(missing),
            ", ".join(chosen),
        )
    return chosen


def load_served_models(config: GpuHostConfig) -> dict[str, ServedModel]:
    """Every configured precision of the three networks, hash-checked, keyed by file sha256."""
    from mgs_core.manifest import load_manifest, read_verified_model

    providers = resolve_providers(config.providers)
    threads = config.threads or os.cpu_count() or 1
    manifest = load_manifest(config.models_dir)
    precisions = ("int8", "fp32") if config.precision == "both" else (config.precision,)
    served: dict[str, ServedModel] = {}
    for precision in precisions:
        for name in MODEL_NAMES:
            try:
                entry = manifest.entry(name, precision)
            except MgsError:
                if config.precision == "both":
                    log.warning("no %s %s model in %s: not served", precision, name, manifest.path)
                    continue
                raise
            runner = onnx_runner(entry.path, providers, threads, read_verified_model(entry))
            served[entry.sha256] = ServedModel(name, precision, entry.sha256, runner, entry.input.dtype)
    if not served:
        raise MgsError(f"no models to serve in {manifest.path}; install a models/ release there")
    return served


@dataclass
class _Request:
    identity: bytes
    request_id: Any
    model: ServedModel
    batch: np.ndarray


@dataclass
class HostStats:
    requests: int = 0
    rejected: int = 0
    batches: int = 0
    rows: int = 0
    senders_per_batch: list[int] = field(default_factory=list)


class GpuHost:
    """Binds at construction (so a busy port fails at start-up), serves in `serve()` or a thread."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        bind: str,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        context: Any = None,
    ) -> None:
        import zmq

        self._zmq = zmq
        self.models = models
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = HostStats()
        self._socket = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        try:
            self._socket.bind(bind)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise MgsError(f"cannot listen on {bind}: {exc}; pick a free address/port with --bind") from None
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pending: dict[tuple, list[_Request]] = defaultdict(list)
        self._first_at: dict[tuple, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        providers = sorted({p for m in models.values() for p in m.runner.session.get_providers()})
        self.providers = [
            p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider") if p in providers
        ]

    # --- running --------------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until `stop()`; the socket is closed on the way out."""
        try:
            while not self._stop.is_set():
                self.receive(self._wait_s())
                self.run_due(time.monotonic())
        finally:
            self._socket.close(linger=0)

    def start(self) -> GpuHost:
        self._thread = threading.Thread(target=self.serve, name="gpu-host", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        elif not self._socket.closed:
            self._socket.close(linger=0)  # never served in a thread: the caller drove it step by step

    def describe(self) -> dict[str, Any]:
        s = self.stats
        return {
            "models": {sha: f"{m.name} {m.precision}" for sha, m in self.models.items()},
            "providers": self.providers,
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_s * 1000.0,
            "stats": {"requests": s.requests, "rejected": s.rejected, "batches": s.batches, "rows": s.rows},
        }

    # --- steps (public so a test can drive batching deterministically) --------------------------

    def receive(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for requests, then take every one already queued; returns how many."""
        zmq = self._zmq
        if not self._socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            return 0
        count = 0
        while True:
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return count
            count += 1
            self._accept(frames)

    def pending_requests(self) -> int:
        return sum(len(group) for group in self._pending.values())

    def run_due(self, now: float, force: bool = False) -> None:
        """Run every group that is full or has waited long enough (all of them with `force`)."""
        for key in list(self._pending):
            group = self._pending[key]
            if (
                force
                or sum(len(r.batch) for r in group) >= self.max_batch
                or now - self._first_at[key] >= self.max_wait_s
            ):
                self._run_group(key)

    # --- inside ---------------------------------------------------------------------------------

    def _wait_s(self) -> float:
        if not self._first_at:
            return 0.1
        return max(0.0, min(self._first_at.values()) + self.max_wait_s - time.monotonic())

    def _accept(self, frames: list[bytes]) -> None:
        identity = frames[0]
        request_id = None
        try:
            if len(frames) != 3:
                raise ValueError(f"expected a JSON header and one data frame, got {len(frames) - 1} frame(s)")
            header = decode_header(frames[1])
            request_id = header.get("id")
            op = header.get("op")
            if op == "hello":
                self._send(identity, {"id": request_id, "ok": True, **self.describe()})
                return
            if op != "infer":
                raise ValueError(f"unknown op {op!r}; expected infer or hello")
            model = self._model_for(header)
            batch = decode_array(header, frames[2])
            model.check(list(batch.shape), batch.dtype.name, self.max_batch)
        except ValueError as exc:
            self.stats.rejected += 1
            log.info("refused a request from %s: %s", identity.hex(), exc)
            self._send(identity, {"id": request_id, "ok": False, "error": str(exc)})
            return
        self.stats.requests += 1
        key = (model.sha256, batch.shape[1:])
        if key not in self._first_at:
            self._first_at[key] = time.monotonic()
        self._pending[key].append(_Request(identity, request_id, model, batch))
        if sum(len(r.batch) for r in self._pending[key]) >= self.max_batch:
            self._run_group(key)

    def _model_for(self, header: dict[str, Any]) -> ServedModel:
        name, sha = header.get("model"), header.get("sha256")
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
        model = self.models.get(sha) if isinstance(sha, str) else None
        if model is None or model.name != name:
            have = ", ".join(f"{m.precision} {m.sha256[:12]}" for m in self.models.values() if m.name == name) or "none"
            raise ValueError(
                f"model {name} with sha256 {str(sha)[:12]} is not served here (this host has {name}: {have}); "
                "install the same models/ release on the device and the GPU host"
            )
        return model

    def _run_group(self, key: tuple) -> None:
        group = self._pending.pop(key)
        self._first_at.pop(key, None)
        while group:
            taken: list[_Request] = []
            rows = 0
            while group and (not taken or rows + len(group[0].batch) <= self.max_batch):
                rows += len(group[0].batch)
                taken.append(group.pop(0))
            self._run_batch(taken, rows)

    def _run_batch(self, requests: list[_Request], rows: int) -> None:
        model = requests[0].model
        batch = requests[0].batch if len(requests) == 1 else np.concatenate([r.batch for r in requests])
        try:
            out = model.runner(batch)
            if out.shape[:1] != (rows,):
                raise ValueError(f"output shape {out.shape} does not start with the {rows} input rows")
        except Exception as exc:  # onnxruntime's errors are untyped; every waiting device must hear about it
            log.error("%s failed on a batch of %d rows: %s", model.name, rows, exc)
            for r in requests:
                self._send(
                    r.identity, {"id": r.request_id, "ok": False, "error": f"{model.name} failed on the host: {exc}"}
                )
            return
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.senders_per_batch.append(len({r.identity for r in requests}))
        del self.stats.senders_per_batch[:-1000]
        start = 0
        for r in requests:
            n = len(r.batch)
            self._send(r.identity, {"id": r.request_id, "ok": True}, out[start : start + n])
            start += n

    def _send(self, identity: bytes, header: dict[str, Any], array: np.ndarray | None = None) -> None:
        try:
            self._socket.send_multipart([identity, *encode(header, array)], flags=self._zmq.NOBLOCK)
        except (
            self._zmq.ZMQError
        ) as exc:  # the device went away or its queue is full: its call times out and runs locally
            log.info("cannot answer %s: %s", identity.hex(), exc)


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(uint8)": np.uint8,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
}


def _triton_tensor(node: Any) -> Any:
    from pytriton.model_config import Tensor

    return Tensor(
        name=node.name,
        dtype=_ORT_TYPES[node.type],
        shape=tuple(d if isinstance(d, int) else -1 for d in node.shape[1:]),
    )


def serve_triton(models: dict[str, ServedModel], config: GpuHostConfig, stop: threading.Event) -> None:
    """Serve the sessions over KServe v2 with PyTriton until `stop` is set.

    Each model's Triton config carries its file sha256 as a parameter, as `mgs-export triton-repo`
    writes it, so devices check the host the same way against either kind of Triton.
    """
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise MgsError(
            "transport triton needs PyTriton on the GPU host: pip install nvidia-pytriton (it needs numpy<2, "
            "so use a separate environment; see docs/offload.md), or use transport zmq"
        ) from None

    def infer_function(model: ServedModel):
        session = model.runner.session
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            return {output_name: model.runner(np.ascontiguousarray(inputs[input_name]))}

        return infer

    triton_config = TritonConfig(
        http_port=config.http_port, grpc_port=config.http_port + 1, metrics_port=config.http_port + 2
    )
    triton = Triton(config=triton_config)  # not entered yet: bound models load at run(), with the sha256 in place
    try:
        for model in models.values():
            session = model.runner.session
            triton.bind(
                model_name=model.name,
                infer_func=infer_function(model),
                inputs=[_triton_tensor(session.get_inputs()[0])],
                outputs=[_triton_tensor(session.get_outputs()[0])],
                config=ModelConfig(
                    max_batch_size=config.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=int(config.max_wait_ms * 1000)),
                ),
                strict=True,
            )
            _publish_sha256(triton, model)
        triton.run()
        stop.wait()
    finally:
        triton.stop()


def _publish_sha256(triton: Any, model: ServedModel) -> None:
    """Put the file's sha256 into the generated Triton config's parameters.

    PyTriton has no public setting for config parameters, so this reaches into its model manager
    and rewrites the config it generated at bind time; if a PyTriton release moves these, the host
    says so and devices refuse it (no silent mismatch).
    """
    try:
        manager = triton._model_manager
        bound = next(m for m in manager.models if m.model_name == model.name)
        bound._get_triton_model_config().backend_parameters["sha256"] = model.sha256
        if manager._model_store_path is not None:
            bound.generate_model(manager._model_store_path)
    except (AttributeError, StopIteration, TypeError) as exc:
        log.error(
            "this PyTriton does not let the host publish the sha256 of %s (%s); devices will refuse it", model.name, exc
        )
