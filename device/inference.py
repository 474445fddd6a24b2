"""Execution backends: turn the shipped ONNX files into plain `array -> array` callables.

The pipeline only ever sees `ModelRunner`s, so the same pre- and post-processing runs on the edge
box (onnxruntime CPU), on a Jetson (CUDA / TensorRT execution providers) and behind the offload
host. The backend is chosen by the `type` of `[backend]` in the device config, Frigate-style.

On a 2-core box onnxruntime's spinning worker threads fight OpenCV and the video decoder
(docs/device-pipeline.md), so spinning is switched off and the thread count is explicit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np

from mgs_core.errors import MgsError
from mgs_core.manifest import decode_metadata
from mgs_core.tomlconfig import Range

log = logging.getLogger(__name__)

ModelRunner = Callable[[np.ndarray], np.ndarray]

MODEL_NAMES = ("seg_coarse", "seg_fine", "eye")
BackendType = Literal["cpu", "cuda", "tensorrt"]
Precision = Literal["int8", "fp32"]

# Execution providers per backend type, best first; CPU stays last as onnxruntime's own fallback
# for operators the accelerator lacks.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


@dataclass
class BackendConfig:
    """`[backend]`: where the networks run on this box."""

    SECTION: ClassVar[str] = "backend"

    type: BackendType = field(
        default="cpu",
        metadata={"doc": "cpu (onnxruntime), cuda or tensorrt (Jetson with the GPU build of onnxruntime)"},
    )
    precision: Precision = field(
        default="int8", metadata={"doc": "int8 (quantized, the default on CPUs with VNNI) or fp32"}
    )
    threads: Annotated[int, Range(1, 64)] = field(
        default=2,
        metadata={"doc": "onnxruntime intra-op threads per network; the number of CPU cores is right on an edge box"},
    )


class OnnxRunner:
    """One onnxruntime session with a single input and a single output."""

    def __init__(
        self,
        path: Path,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        threads: int = 2,
        data: bytes | None = None,
    ) -> None:
        """`data`, when given, are the file's already verified bytes: what was checked is what runs."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                data if data is not None else str(path), sess_options=opts, providers=list(providers)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable graphs
            raise MgsError(f"cannot load model {path}: {exc}; reinstall the models folder from a release") from None
        self.path = Path(path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape)
        self.output_name = self.session.get_outputs()[0].name
        try:
            self.metadata = decode_metadata(self.session.get_modelmeta().custom_metadata_map.items())
        except ValueError:
            raise MgsError(f"model {path}: its metadata is not JSON; re-export it with `mgs-export onnx`") from None

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """Fixed (H, W) of the input, or None when the graph takes any size."""
        h, w = self.input_shape[2:4]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def eye_width_of(network_config: Mapping[str, Any] | None) -> float:
    """The eye width (patch px) an eye model was trained at, from its network config (ONNX metadata
    or weight file): 0 = fixed crops, the models before issue 10's fifth step."""
    return float((network_config or {}).get("eye_width", 0.0))


def onnx_runner(
    path: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 2, data: bytes | None = None
) -> OnnxRunner:
    return OnnxRunner(path, providers, threads, data)


def providers_for(backend: BackendType) -> tuple[str, ...]:
    """The execution providers for a backend type, or a message that says what is missing."""
    import onnxruntime as ort

    wanted = _PROVIDERS[backend]
    available = set(ort.get_available_providers())
    if wanted[0] not in available:
        raise MgsError(
            f"backend type {backend!r} needs onnxruntime's {wanted[0]}, but this onnxruntime offers only "
            f"{', '.join(sorted(available))}; install the GPU build of onnxruntime for this board "
            '(e.g. onnxruntime-gpu from the Jetson Zoo) or set [backend] type = "cpu"'
        )
    return tuple(p for p in wanted if p in available)


@dataclass
class Models:
    """The three networks of the method, ready to call, and the fingerprint published with scores.

    `coarse_size` is the fixed (H, W) input of seg_coarse: ROIs are resized to it for the head search.
    `eye_width` > 0: the eye model was trained on scale-normalised patches, an eye that many pixels
    wide whatever its size in the frame, and the pipeline must cut them so (`device.eyes.patch_zooms`).
    """

    seg_coarse: ModelRunner
    seg_fine: ModelRunner
    eye: ModelRunner
    model_sha256: str
    coarse_size: tuple[int, int] = (128, 256)
    files: dict[str, Path] = field(default_factory=dict)
    eye_width: float = 0.0


def model_set_sha256(file_shas: dict[str, str]) -> str:
    """One sha256 for the set of three files: what a score was computed with, in one field."""
    text = "".join(f"{name}:{file_shas[name]}\n" for name in MODEL_NAMES)
    return hashlib.sha256(text.encode()).hexdigest()


def load_models(
    models_dir: Path | None = None, precision: Precision | None = None, backend: BackendConfig | None = None
) -> Models:
    """Verify the shipped files against models/manifest.json and open them on the chosen backend.

    `precision` overrides the backend config's; `models_dir` None means $MGS_MODELS_DIR or models/.
    """
    from mgs_core.manifest import load_manifest, read_verified_model

    backend = backend or BackendConfig()
    precision = precision or backend.precision
    providers = providers_for(backend.type)
    manifest = load_manifest(models_dir)
    paths: dict[str, Path] = {}
    data: dict[str, bytes] = {}
    for name in MODEL_NAMES:
        entry = manifest.entry(name, precision)
        if not entry.accepted:
            log.warning(
                "model %s (%s) is %s: run `mgs-export verify` before relying on its scores",
                entry.file,
                precision,
                entry.status,
            )
        data[name] = read_verified_model(entry)
        paths[name] = entry.path
    return open_models(paths, providers, backend.threads, data)


def open_models(
    paths: dict[str, Path],
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    threads: int = 2,
    data: dict[str, bytes] | None = None,
) -> Models:
    """Open three ONNX files; `data` are their bytes already checked against the manifest, if any."""
    data = data or {name: Path(paths[name]).read_bytes() for name in MODEL_NAMES}
    runners = {name: onnx_runner(paths[name], providers, threads, data[name]) for name in MODEL_NAMES}
    model_sha256 = model_set_sha256({name: hashlib.sha256(data[name]).hexdigest() for name in MODEL_NAMES})
    coarse_size = runners["seg_coarse"].input_hw
    if coarse_size is None:
        raise MgsError(
            f"{paths['seg_coarse']}: seg_coarse must have a fixed input size; re-export it with `mgs-export`"
        )
    log.info(
        "models: %s on %s, %d threads", ", ".join(f"{n}={p.name}" for n, p in paths.items()), providers[0], threads
    )
    return Models(
        runners["seg_coarse"],
        runners["seg_fine"],
        runners["eye"],
        model_sha256,
        coarse_size,
        dict(paths),
        eye_width_of(runners["eye"].metadata.get("network_config")),
    )
