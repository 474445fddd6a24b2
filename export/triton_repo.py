"""A Triton model repository for the GPU offload host, written from the manifest's verified files.

Layout (Triton's): OUT/<model>/config.pbtxt and OUT/<model>/1/model.onnx, platform
onnxruntime_onnx, so a facility that outgrows one GPU host runs a stock Triton server on it. The
batch dimension is Triton's (max_batch_size > 0), so `dims` leave it out; dynamic batching merges
the ROIs of several devices into one GPU call. Each config carries the file's sha256 and the
manifest's model version as parameters, so the host can report what it serves.

Standard library only: no protobuf needed to write the text format.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from mgs_core.manifest import Manifest, ModelEntry, TensorSpec, read_verified_model

NAMES = ("seg_coarse", "seg_fine", "eye")
_TRITON_TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64", "float16": "TYPE_FP16"}


@dataclass(frozen=True)
class Batching:
    max_batch_size: int
    preferred: tuple[int, ...]
    max_queue_delay_us: int


#: A rack sends 4 ROIs (coarse) / up to 8 head crops (fine) / up to 16 eyes per frame; a host
#: serves several racks, so the preferred sizes are multiples of one rack's batch.
BATCHING = {
    "seg_coarse": Batching(16, (4, 8, 16), 2000),
    "seg_fine": Batching(16, (4, 8, 16), 2000),
    "eye": Batching(64, (8, 16, 32), 1000),
}


def _dims(spec: TensorSpec) -> str:
    """Dims without the batch axis; symbolic sides (H, W) become -1."""
    return ", ".join(str(d) if isinstance(d, int) else "-1" for d in spec.shape[1:])


def _tensor(spec: TensorSpec) -> str:
    dtype = _TRITON_TYPES[spec.dtype]
    return f'  {{\n    name: "{spec.name}"\n    data_type: {dtype}\n    dims: [ {_dims(spec)} ]\n  }}'


def config_pbtxt(entry: ModelEntry, batching: Batching, instance_kind: str = "KIND_GPU", instances: int = 1) -> str:
    preferred = ", ".join(str(b) for b in batching.preferred)
    params = {
        "sha256": entry.sha256,
        "model_version": entry.model_version,
        "precision": entry.precision,
        "class_names": json.dumps(list(entry.class_names)),
    }
    parameters = "".join(
        f'parameters {{\n  key: "{k}"\n  value: {{ string_value: {json.dumps(v)} }}\n}}\n' for k, v in params.items()
    )
    return (
        f'name: "{entry.name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {batching.max_batch_size}\n"
        "input [\n" + ",\n".join(_tensor(t) for t in entry.inputs) + "\n]\n"
        "output [\n" + ",\n".join(_tensor(t) for t in entry.outputs) + "\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {batching.max_queue_delay_us}\n"
        "}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {instance_kind}\n  }}\n]\n" + parameters
    )


def write_repository(
    manifest: Manifest,
    out: Path,
    precision: str = "fp32",
    instance_kind: str = "KIND_GPU",
    names: tuple[str, ...] = NAMES,
) -> list[Path]:
    """Write one Triton model per network; returns the config paths.

    Every file is hash-checked before anything is written, so a bad file leaves no half-made repository.
    """
    entries = {name: manifest.entry(name, precision) for name in names}
    files = {name: read_verified_model(entry) for name, entry in entries.items()}
    written = []
    for name, entry in entries.items():
        data = files[name]
        model_dir = out / name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "1" / "model.onnx").write_bytes(data)
        config = model_dir / "config.pbtxt"
        config.write_text(config_pbtxt(entry, BATCHING[name], instance_kind), encoding="utf-8")
        written.append(config)
    return written
