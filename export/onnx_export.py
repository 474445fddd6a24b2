"""Export the three trained networks to ONNX with fixed I/O names, folded BatchNorm and metadata.

The device codes against the I/O contract below, not against PyTorch: U-Nets take "image" float32
[N, 3, H, W] (BGR, [0, 1]) and return "classes" uint8 [N, H, W] with the argmax taken inside the
graph (which spares the device a numpy argmax per frame, docs/export.md); the eye regressor takes "patch"
float32 [N, 3, 50, 50] and returns "score" float32 [N, 1]. Everything the device must check about a
file (version, input size, normalisation, class names, training-data fingerprint, toolchain) is
written into the file's `metadata_props` as well as into models/manifest.json.

Imports torch at module level: only the torch-needing commands import this module.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from export.train.weights import EYE_CLASS_NAMES, NORMALISATION, load_network
from mgs_core.errors import MgsError
from mgs_core.manifest import decode_metadata, sha256_file
from models.eye_regressor import PATCH_SIZE, EyeRegressor
from models.unet import CLASS_NAMES, UNet, UNetEnsemble

log = logging.getLogger(__name__)

OPSET = 18


@dataclass(frozen=True)
class NetworkSpec:
    """What the device expects of one network: I/O names, which sides are dynamic, and defaults.

    `random_config` / `random_input_size` only describe the stand-in network used before a trained
    checkpoint exists, so device code can be written and tested against real files.
    """

    name: str
    kind: str  # "unet" | "eye"
    input_name: str
    output_name: str
    dynamic_hw: bool
    random_config: dict
    random_input_size: tuple[int, int]


NETWORKS: dict[str, NetworkSpec] = {
    s.name: s
    for s in (
        NetworkSpec("seg_fine", "unet", "image", "classes", True, {"base": 16, "depth": 4}, (128, 128)),
        NetworkSpec("seg_coarse", "unet", "image", "classes", False, {"base": 8, "depth": 4}, (160, 112)),
        NetworkSpec("eye", "eye", "patch", "score", False, {}, (PATCH_SIZE, PATCH_SIZE)),
    )
}


@dataclass
class Checkpoint:
    """A trained network plus what the toolchain must carry into the ONNX file and manifest."""

    name: str
    module: nn.Module
    input_size: tuple[int, int]
    normalisation: dict
    class_names: list[str]
    data_fingerprint: str
    command: str
    version: str
    source: str
    config: dict = field(default_factory=dict)

    @property
    def spec(self) -> NetworkSpec:
        return NETWORKS[self.name]


def random_checkpoint(name: str, seed: int = 0) -> Checkpoint:
    """A randomly initialised stand-in with non-trivial BatchNorm statistics (so folding is exercised)."""
    spec = NETWORKS[name]
    torch.manual_seed(seed)
    module = UNet(**spec.random_config) if spec.kind == "unet" else EyeRegressor(**spec.random_config)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return Checkpoint(
        name=name,
        module=module.eval(),
        input_size=spec.random_input_size,
        normalisation=dict(NORMALISATION),
        class_names=list(CLASS_NAMES) if spec.kind == "unet" else list(EYE_CLASS_NAMES),
        data_fingerprint="untrained",
        command="random initialisation (no trained weight file)",
        version=f"random-seed{seed}",
        source="random",
        config=dict(module.config),
    )


def load_checkpoint(name: str, path: Path) -> Checkpoint:
    """Read a weight file written by the training commands (models/<name>.pt, export.train.weights)."""
    module, record = load_network(path)
    expected = (EyeRegressor,) if NETWORKS[name].kind == "eye" else (UNet, UNetEnsemble)
    if not isinstance(module, expected):
        raise MgsError(
            f"{path} holds a {type(module).__name__}, but {name} must be a {expected[0].__name__}; check --models"
        )
    return Checkpoint(
        name=name,
        module=module.eval(),
        input_size=(int(record["input_size"][0]), int(record["input_size"][1])),
        normalisation=dict(record["normalisation"]),
        class_names=list(record["class_names"]),
        data_fingerprint=str(record["data_fingerprint"]),
        command=str(record["command"]),
        version=sha256_file(path)[:12],
        source=str(path),
        config=dict(record["config"]),
    )


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Return an eval-mode copy with every Conv2d->BatchNorm2d / Linear->BatchNorm1d pair folded.

    Folding in PyTorch (rather than trusting the exporter's optimiser) means the graph we compare
    against is the graph we ship; export_network then checks no BatchNormalization node is left.
    """
    folded = copy.deepcopy(module).eval()
    for parent in folded.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules)
        for a, b in zip(keys, keys[1:]):
            first, second = parent._modules[a], parent._modules[b]
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                parent._modules[a] = fuse_conv_bn_eval(first, second)
            elif isinstance(first, nn.Linear) and isinstance(second, nn.BatchNorm1d):
                parent._modules[a] = fuse_linear_bn_eval(first, second)
            else:
                continue
            parent._modules[b] = nn.Identity()
    return folded


class SegmentationClasses(nn.Module):
    """U-Net + argmax over classes, so the device receives a uint8 class map straight from the graph."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.argmax(self.unet(image), dim=1).to(torch.uint8)


def exportable(ckpt: Checkpoint) -> nn.Module:
    """The folded, eval-mode module whose graph goes into the ONNX file."""
    folded = fold_batchnorm(ckpt.module)
    return (SegmentationClasses(folded) if ckpt.spec.kind == "unet" else folded).eval()


def example_input(ckpt: Checkpoint, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *ckpt.input_size, generator=g)


def toolchain_versions() -> dict[str, str]:
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def set_metadata(model: onnx.ModelProto, props: dict[str, object]) -> None:
    """Replace metadata_props with `props`, every value JSON-encoded so it reads back with its type."""
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value, sort_keys=True)


def read_metadata(model: onnx.ModelProto) -> dict[str, object]:
    return decode_metadata((p.key, p.value) for p in model.metadata_props)


def checkpoint_metadata(ckpt: Checkpoint, precision: str) -> dict[str, object]:
    return {
        "model_name": ckpt.name,
        "model_version": ckpt.version,
        "precision": precision,
        "input_size": list(ckpt.input_size),
        "dynamic_hw": ckpt.spec.dynamic_hw,
        "normalisation": ckpt.normalisation,
        "class_names": ckpt.class_names,
        "data_fingerprint": ckpt.data_fingerprint,
        "network_config": ckpt.config,
        "training_command": ckpt.command,
        "checkpoint": ckpt.source,
        "toolchain": toolchain_versions(),
    }


def _name_dims(value: onnx.ValueInfoProto, names: dict[int, str]) -> None:
    dims = value.type.tensor_type.shape.dim
    for index, name in names.items():
        dims[index].Clear()
        dims[index].dim_param = name


def _quiet_exporter() -> None:
    """The dynamo exporter logs every optimiser pass at INFO and warns about torchvision; not news here."""
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def export_network(ckpt: Checkpoint, path: Path) -> onnx.ModelProto:
    """Export one network with the device's I/O contract; returns the checked, saved model."""
    _quiet_exporter()
    spec = ckpt.spec
    module = exportable(ckpt)
    x = example_input(ckpt)
    with torch.no_grad():
        module(x)  # twice, as exporters do: the first call may settle lazily built state
        module(x)
    batch = torch.export.Dim("N", min=1, max=1024)
    dims: dict[int, object] = {0: batch}
    if spec.dynamic_hw:
        dims[2] = 8 * torch.export.Dim("h8", min=1, max=512)
        dims[3] = 8 * torch.export.Dim("w8", min=1, max=512)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecation noise
        program = torch.onnx.export(
            module,
            (x,),
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes=(dims,),
            verbose=False,
        )
    model = program.model_proto
    # The exporter names symbolic sides after internal symbols ("8*((s53//8))"); give the
    # contract's names and drop intermediate shapes, which quant_pre_process re-infers.
    model.graph.ClearField("value_info")
    in_names = {0: "N", 2: "H", 3: "W"} if spec.dynamic_hw else {0: "N"}
    out_names = ({0: "N", 1: "H", 2: "W"} if spec.dynamic_hw else {0: "N"}) if spec.kind == "unet" else {0: "N"}
    _name_dims(model.graph.input[0], in_names)
    _name_dims(model.graph.output[0], out_names)
    leftover = [n.name for n in model.graph.node if n.op_type == "BatchNormalization"]
    if leftover:
        raise MgsError(f"BatchNorm folding failed for {ckpt.name}: {leftover} remain in the graph")
    set_metadata(model, checkpoint_metadata(ckpt, "fp32"))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    log.info("exported %s -> %s", ckpt.name, path)
    return model


#: Export parity gates (PyTorch eval module vs the FP32 ONNX file on the same inputs).
MAX_SCORE_DIFF = 1e-4
MIN_CLASS_AGREEMENT = 0.999


def onnx_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def fp32_parity(ckpt: Checkpoint, path: Path, batch: int = 4) -> dict[str, float]:
    """Compare the original (unfolded) PyTorch module with the ONNX file; raise MgsError past the gates.

    U-Nets are compared on the argmax class map (what the graph returns); a second, non-square
    input size checks the dynamic sides of seg_fine.
    """
    module = ckpt.module.eval()
    session = onnx_session(path)
    sizes = [ckpt.input_size]
    if ckpt.spec.dynamic_hw:
        sizes.append((ckpt.input_size[0] + 16, ckpt.input_size[1] * 2))
    metrics: dict[str, float] = {}
    for i, (h, w) in enumerate(sizes):
        x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(100 + i))
        with torch.no_grad():
            ref = module(x)
        got = session.run(None, {ckpt.spec.input_name: x.numpy()})[0]
        if ckpt.spec.kind == "unet":
            agree = float(np.mean(ref.argmax(1).numpy().astype(np.uint8) == got))
            metrics["onnx_vs_torch_class_agreement"] = min(agree, metrics.get("onnx_vs_torch_class_agreement", 1.0))
        else:
            diff = float(np.abs(ref.numpy() - got).max())
            metrics["onnx_vs_torch_max_abs_diff"] = max(diff, metrics.get("onnx_vs_torch_max_abs_diff", 0.0))
    if (
        metrics.get("onnx_vs_torch_class_agreement", 1.0) < MIN_CLASS_AGREEMENT
        or metrics.get("onnx_vs_torch_max_abs_diff", 0.0) > MAX_SCORE_DIFF
    ):
        raise MgsError(
            f"{path} does not reproduce the PyTorch model ({metrics}); the export is broken, please report it"
        )
    return metrics


def _tensor_spec(value: onnx.ValueInfoProto) -> dict:
    t = value.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
    return {"name": value.name, "dtype": dtype, "shape": shape}


def manifest_record(path: Path, models_dir: Path, status: str, metrics: dict, command: str) -> dict:
    """The manifest entry for an ONNX file, built from the file itself (graph I/O and metadata_props)."""
    model = onnx.load(path)
    meta = read_metadata(model)
    return {
        "name": meta["model_name"],
        "precision": meta["precision"],
        "file": str(path.resolve().relative_to(models_dir.resolve())),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "status": status,
        "inputs": [_tensor_spec(v) for v in model.graph.input],
        "outputs": [_tensor_spec(v) for v in model.graph.output],
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "input_size": meta["input_size"],
        "dynamic_hw": meta["dynamic_hw"],
        "class_names": meta["class_names"],
        "normalisation": meta["normalisation"],
        "data_fingerprint": meta["data_fingerprint"],
        "model_version": meta["model_version"],
        "network_config": meta["network_config"],
        "calibration": meta.get("calibration_set"),
        "metrics": metrics,
        "toolchain": meta["toolchain"],
        "training_command": meta["training_command"],
        "command": command,
    }
