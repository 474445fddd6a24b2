"""Static INT8 quantization of the FP32 ONNX files, calibrated on what the device really feeds them.

Calibration inputs are built from labelled frames with the device's own preprocessing
(device.pipeline / device.eyes), so the ranges match: seg_coarse sees whole boxes shrunk to its
input, seg_fine sees full-resolution crops around heads plus a few at random places, the regressor
sees 50x50 patches at (slightly jittered) eye centres. The set's size, source and sha256 go into the
INT8 file's metadata and the manifest, so a result can be traced to the frames it was calibrated on.

Recipe (onnxruntime's quantization guide): `quant_pre_process` first, then `quantize_static` with QDQ,
signed int8 per-channel weights and, by default, UNSIGNED int8 activations (U8S8). With signed
activations (S8S8) the CPU provider fuses only some convolutions into QLinearConv, leaves MaxPool and
Concat in float and wraps every QLinearConv in Transposes, so the INT8 graph is no faster than FP32;
with U8S8 the whole U-Net becomes QLinearConv/int8 MaxPool/QLinearConcat (docs/export.md has the
measurements). Signed activations stay available (`activations="int8"`) for execution providers that want S8S8.

What stays float is decided by measurement (`quantize_network`): a U-Net's class head is quantized
unless the in-graph argmax then disagrees with FP32 on calibration pixels, and if it still disagrees
with the head in float, the input layer is kept in float as well; the regressor's last
layer stays float; any layer whose quantized output falls below MIN_LAYER_SQNR_DB against float
(per-layer comparison, onnxruntime's qdq_loss_debug) is put back to float. The decisions and the
per-layer summary are recorded in the manifest.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from device.eyes import crop_patches, patches_to_batch
from device.pipeline import PipelineConfig, fine_zoom, images_to_batch, pad_to_multiple, resize_for_coarse
from export.dataset import Box, open_dataset
from export.onnx_export import manifest_record, onnx_session, read_metadata, set_metadata
from mgs_core.errors import MgsError
from mgs_core.manifest import Manifest, ModelEntry, save_entry, sha256_file, verify_model_file

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 8
#: Samples per network for the per-layer comparison (enough to rank layers; it runs both graphs).
LAYER_SAMPLES = 16
#: A quantized activation this far below float (signal-to-quantization-noise, dB) is kept in float.
#: Healthy layers measure ~35-50 dB here; 20 dB is a 10 % RMS error.
MIN_LAYER_SQNR_DB = 20.0
#: A U-Net's class head is quantized only if the argmax still agrees with FP32 on this share of
#: calibration pixels (the verify gate asks 99 % on held-out frames; this leaves margin).
MIN_HEAD_AGREEMENT = 0.995


#: A calibration frame: the BGR image and its labelled boxes (export.dataset.Box: roi, eyes).
LabelledFrame = tuple[np.ndarray, Sequence[Box]]
#: Synthetic calibration frames are those of `mgs-export synth --seed 900 --randomise none`: a dataset seed of their
#: own, so they share no frame with training, validation or verification sets made with other seeds.
CALIBRATION_SEED = 900


@dataclass
class CalibrationSet:
    """Per-network input arrays and where they came from.

    `extra` holds batches of other shapes (seg_fine on whole boxes) that are fed one by one.
    """

    inputs: dict[str, np.ndarray]
    source: str
    frames: int
    extra: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def sha256(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.inputs):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.inputs[name]).tobytes())
            for batch in self.extra.get(name, []):
                h.update(np.ascontiguousarray(batch).tobytes())
        return h.hexdigest()

    def reader(self, name: str, input_name: str) -> ArrayReader:
        return ArrayReader(input_name, self.inputs[name], self.extra.get(name, []))

    def describe(self, name: str) -> dict:
        return {
            "source": self.source,
            "frames": self.frames,
            "samples": int(len(self.inputs[name])),
            "shape": list(self.inputs[name].shape[1:]),
            "sha256": self.sha256(),
        }


def _clamped_crop(
    frame: np.ndarray, roi: tuple[int, int, int, int], cx: float, cy: float, side: int, zoom: float = 1.0
) -> np.ndarray:
    """A side x side crop centred near (cx, cy), shifted to stay inside the box (as FastPipeline does);
    with zoom > 1, side / zoom frame pixels magnified to side: the device's pixel scale for a narrow box
    (device.pipeline.fine_view), over a smaller part of the frame so every crop keeps one size and
    the calibration crops stack into one batch."""
    if zoom > 1.0:
        small = _clamped_crop(frame, roi, cx, cy, max(1, int(round(side / zoom))))
        return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    x, y, w, h = roi
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, x), max(x, x + w - side))
    y0 = min(max(y0, y), max(y, y + h - side))
    crop = frame[y0 : y0 + side, x0 : x0 + side]
    if crop.shape[:2] != (side, side):
        crop = np.pad(crop, ((0, side - crop.shape[0]), (0, side - crop.shape[1]), (0, 0)), mode="edge")
    return crop


def build_calibration(
    frames: Iterable[LabelledFrame],
    coarse_size: tuple[int, int],
    fine_crop: int,
    whole_roi_every: int = 4,
    seed: int = 0,
    source: str = "",
    fine_zoom_max: float = PipelineConfig.fine_zoom_max,
) -> CalibrationSet:
    """Device-preprocessed inputs for all three networks from labelled frames.

    seg_fine runs on crops (magnified in narrow boxes, as the device feeds them: a magnified crop is
    smoother than any unmagnified one) and (FullResolutionPipeline) on whole boxes; whole boxes are big, so only
    every `whole_roi_every`-th frame contributes one, fed as its own calibration batch. The eye model
    gets patches at the eyes and one anywhere in each box with eyes.
    """
    rng = np.random.default_rng(seed)
    coarse, fine, patches, whole = [], [], [], []
    n = 0
    for n, (img, boxes) in enumerate(frames, start=1):
        for box in boxes:
            x, y, w, h = (int(round(v)) for v in box.roi)
            coarse.append(resize_for_coarse(img[y : y + h, x : x + w], coarse_size))
            zoom = fine_zoom(fine_zoom_max, w)
            centres = [(e.x, e.y) for e in box.eyes if e.visible]
            if centres:
                hx, hy = np.mean(centres, axis=0)
                fine.append(_clamped_crop(img, (x, y, w, h), hx, hy, fine_crop, zoom))
                jitter = rng.uniform(-4, 4, size=(len(centres), 2))
                patches.extend(
                    crop_patches(img, [(cx + dx, cy + dy) for (cx, cy), (dx, dy) in zip(centres, jitter)])[0]
                )
            fine.append(_clamped_crop(img, (x, y, w, h), x + rng.uniform(0, w), y + rng.uniform(0, h), fine_crop, zoom))
            if centres:  # the eye verifier also sees candidates that are no eye: cover their range too
                patches.extend(crop_patches(img, [(x + rng.uniform(0, w), y + rng.uniform(0, h))])[0])
        if boxes and n % whole_roi_every == 1:
            x, y, w, h = (int(round(v)) for v in boxes[0].roi)
            whole.append(images_to_batch([pad_to_multiple(img[y : y + h, x : x + w])]))
    if not coarse or not patches:
        raise MgsError(
            f"the calibration frames ({source}) have no labelled boxes with eyes; use frames with animals in view"
        )
    inputs = {
        "seg_coarse": images_to_batch(coarse),
        "seg_fine": images_to_batch(fine),
        "eye": patches_to_batch(np.stack(patches)),
    }
    return CalibrationSet(inputs=inputs, source=source, frames=n, extra={"seg_fine": whole})


def synthetic_frames(count: int, seed: int = CALIBRATION_SEED) -> tuple[Iterator[LabelledFrame], str]:
    """Rendered rack frames (export.synth), lazily, and a description of where they came from."""
    from export.synth.rack import render_frame
    from export.synth.writer import frame_seed

    frames = ((f.image, f.boxes) for f in (render_frame(frame_seed(seed, i)) for i in range(count)))
    return (
        frames,
        f"synthetic: the first {count} frames of `mgs-export synth --seed {seed} --randomise none` (rendered in memory)",
    )


def dataset_frames(root: Path, count: int) -> tuple[Iterator[LabelledFrame], str]:
    """The first `count` images of a dataset folder (docs/dataset.md format), e.g. a facility's own frames."""
    dataset = open_dataset(root)
    chosen = dataset.frames[:count]
    labels = sha256_file(Path(root) / "labels.jsonl")
    return (
        (dataset.read_image(f), f.boxes) for f in chosen
    ), f"dataset: {root} (labels.jsonl sha256 {labels[:12]}), first {len(chosen)} images"


class ArrayReader(CalibrationDataReader):
    """Feeds fixed-shape arrays in batches, then any extra (differently shaped) batches one by one."""

    def __init__(
        self, input_name: str, data: np.ndarray, extra: Sequence[np.ndarray] = (), batch: int = CALIBRATION_BATCH
    ) -> None:
        self._batches = [data[i : i + batch] for i in range(0, len(data), batch)] + list(extra)
        self._name = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {self._name: self._batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


@dataclass(frozen=True)
class AnswerNodes:
    """The nodes that turn features into the network's answer: the head (the last compute node) and
    the shape/argmax/cast nodes after it, which have nothing to quantize."""

    head: str
    after: tuple[str, ...]


def answer_nodes(model: onnx.ModelProto) -> AnswerNodes:
    by_output = {o: n for n in model.graph.node for o in n.output}
    passthrough = {"ArgMax", "Cast", "Reshape", "Flatten", "Identity"}
    after: list[str] = []
    node = by_output[model.graph.output[0].name]
    while node.op_type in passthrough:
        after.append(node.name)
        node = by_output[node.input[0]]
    return AnswerNodes(head=node.name, after=tuple(after))


def input_nodes(model: onnx.ModelProto) -> tuple[str, ...]:
    """The nodes that read the network's input image (a U-Net's first convolution)."""
    image = model.graph.input[0].name
    return tuple(n.name for n in model.graph.node if image in n.input)


ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


def quantize_file(
    fp32: Path,
    int8: Path,
    reader: ArrayReader,
    calibration: dict,
    quantize_head: bool,
    extra_float: Sequence[str] = (),
    activations: str = "uint8",
    quantize_input_layer: bool = True,
) -> list[str]:
    """FP32 ONNX -> INT8 QDQ ONNX with metadata; returns the nodes kept in float."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), auto_merge=True)
        model = onnx.load(prepared)
        answer = answer_nodes(model)
        excluded = [
            *([] if quantize_input_layer else input_nodes(model)),
            *answer.after,
            *([] if quantize_head else [answer.head]),
            *extra_float,
        ]
        reader.rewind()
        quantize_static(
            str(prepared),
            str(int8),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=ACTIVATION_TYPES[activations],
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    meta = read_metadata(onnx.load(fp32))
    quantized = onnx.load(int8)
    meta.update(
        precision="int8",
        calibration_set=calibration,
        kept_float=excluded,
        quantized_from=fp32.name,
        quantization={
            "format": "QDQ",
            "activations": activations,
            "weights": "int8 per-channel symmetric",
            "method": "static MinMax",
        },
    )
    set_metadata(quantized, meta)
    onnx.checker.check_model(quantized)
    onnx.save(quantized, int8)
    return excluded


def layer_errors(fp32: Path, int8: Path, reader: ArrayReader) -> dict[str, float]:
    """SQNR (dB) of every quantized activation against float, from onnxruntime's qdq_loss_debug."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        f_aug, q_aug = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(f_aug))
        modify_model_output_intermediate_tensors(str(int8), str(q_aug))
        reader.rewind()
        float_acts = collect_activations(str(f_aug), reader)
        reader.rewind()
        quant_acts = collect_activations(str(q_aug), reader)
    matched = create_activation_matching(quant_acts, float_acts)
    errors = compute_activation_error(matched)
    return {name: float(err["xmodel_err"]) for name, err in errors.items() if "xmodel_err" in err}


def weak_nodes(int8_model: onnx.ModelProto, errors: dict[str, float]) -> list[str]:
    """Nodes whose quantized output falls below MIN_LAYER_SQNR_DB against float: they go back to float."""
    producer = {o: n.name for n in int8_model.graph.node for o in n.output}
    return sorted({producer[t] for t, db in errors.items() if db < MIN_LAYER_SQNR_DB and t in producer})


def summarise_layer_errors(errors: dict[str, float]) -> dict:
    if not errors:
        return {}
    worst = min(errors, key=errors.get)
    return {
        "layers": len(errors),
        "min_sqnr_db": round(errors[worst], 2),
        "worst_layer": worst,
        "median_sqnr_db": round(float(np.median(list(errors.values()))), 2),
    }


def calibration_agreement(fp32: Path, int8: Path, data: np.ndarray) -> dict[str, float]:
    """INT8 vs FP32 on the calibration inputs: a quick sanity check (verify uses held-out frames)."""
    a = onnx_session(fp32)
    b = onnx_session(int8)
    name = a.get_inputs()[0].name
    ref = np.concatenate(
        [a.run(None, {name: data[i : i + CALIBRATION_BATCH]})[0] for i in range(0, len(data), CALIBRATION_BATCH)]
    )
    got = np.concatenate(
        [b.run(None, {name: data[i : i + CALIBRATION_BATCH]})[0] for i in range(0, len(data), CALIBRATION_BATCH)]
    )
    if ref.dtype == np.uint8:
        return {"calibration_class_agreement": float(np.mean(ref == got))}
    return {
        "calibration_max_abs_diff": float(np.abs(ref - got).max()),
        "calibration_mean_abs_diff": float(np.abs(ref - got).mean()),
    }


def quantize_network(entry: ModelEntry, calibration: CalibrationSet, activations: str = "uint8") -> dict:
    """Quantize one FP32 entry to <name>.int8.onnx, deciding by measurement what stays float.

    1. A U-Net's class head is quantized first: with it in float the graph ends in Dequantize ->
       float Conv -> layout reorders, which cost a base-8 U-Net most of its INT8 gain. If the
       in-graph argmax then agrees with FP32 on fewer than MIN_HEAD_AGREEMENT of the calibration
       pixels, the head goes back to float. The regressor's head always stays float (the score
       is read directly on 0-9 and the layer costs nothing).
    2. If the argmax still falls short with the head in float, the input layer goes back to float
       too. A U-Net's first convolution feeds the skip connection into the last decoder stage, so
       its quantization error lands on the full-resolution detail that small eyes are made of: for
       the base-16 seg_fine of issue 10 every layer measured above 22 dB SQNR, yet its argmax
       agreed on 95.8 % of calibration pixels with the input layer quantized and 99.7 % without.
    3. Any layer below MIN_LAYER_SQNR_DB (qdq_loss_debug) goes back to float.
    Returns the figures for the manifest and the CLI table.
    """
    fp32 = verify_model_file(entry)
    int8 = fp32.with_name(f"{entry.name}.int8.onnx")
    reader = calibration.reader(entry.name, entry.input.name)
    sample = ArrayReader(entry.input.name, calibration.inputs[entry.name][:LAYER_SAMPLES])
    describe = calibration.describe(entry.name)
    segmentation = entry.output.dtype == "uint8"
    data = calibration.inputs[entry.name]

    quantize_head = segmentation
    kept = quantize_file(fp32, int8, reader, describe, quantize_head, activations=activations)
    agreement = calibration_agreement(fp32, int8, data)
    head_agreement = agreement.get("calibration_class_agreement")
    if segmentation and head_agreement < MIN_HEAD_AGREEMENT:
        log.info(
            "%s: argmax agreement %.4f with a quantized head, keeping the head in float", entry.name, head_agreement
        )
        quantize_head = False
        kept = quantize_file(fp32, int8, reader, describe, quantize_head, activations=activations)
        agreement = calibration_agreement(fp32, int8, data)
    quantize_input = True
    input_agreement = agreement.get("calibration_class_agreement")
    if segmentation and input_agreement < MIN_HEAD_AGREEMENT:
        log.info(
            "%s: argmax agreement %.4f with the head in float, keeping the input layer in float too",
            entry.name,
            input_agreement,
        )
        quantize_input = False
        kept = quantize_file(fp32, int8, reader, describe, quantize_head, (), activations, quantize_input)
        agreement = calibration_agreement(fp32, int8, data)
    per_layer = layer_errors(fp32, int8, sample)
    weak = weak_nodes(onnx.load(int8), per_layer)
    if weak:
        log.info("%s: %s below %.0f dB SQNR, kept in float", entry.name, ", ".join(weak), MIN_LAYER_SQNR_DB)
        kept = quantize_file(fp32, int8, reader, describe, quantize_head, weak, activations, quantize_input)
        per_layer = layer_errors(fp32, int8, sample)
        agreement = calibration_agreement(fp32, int8, data)
    return {
        "path": int8,
        "kept_float": kept,
        "metrics": {
            "layer_sqnr": summarise_layer_errors(per_layer),
            "head_quantized": quantize_head,
            "head_quantized_agreement": head_agreement,
            "input_layer_quantized": quantize_input,
            "input_layer_quantized_agreement": input_agreement if segmentation else None,
            "kept_float_for_sqnr": weak,
            **agreement,
        },
    }


def quantize_networks(
    manifest: Manifest, calibration: CalibrationSet, names: Sequence[str], command: str, activations: str = "uint8"
) -> list[dict]:
    """Quantize each named FP32 entry, record its INT8 entry as "unverified"; rows for the CLI table."""
    rows = []
    for name in names:
        result = quantize_network(manifest.entry(name, "fp32"), calibration, activations)
        metrics = result["metrics"]
        save_entry(
            manifest.models_dir, manifest_record(result["path"], manifest.models_dir, "unverified", metrics, command)
        )
        agreement = metrics.get("calibration_class_agreement")
        rows.append(
            {
                "name": name,
                "samples": len(calibration.inputs[name]),
                "kept_float": result["kept_float"],
                "min_sqnr_db": metrics["layer_sqnr"].get("min_sqnr_db"),
                "agreement": f"{agreement:.4f}"
                if agreement is not None
                else f"max|d|={metrics['calibration_max_abs_diff']:.3g}",
            }
        )
    return rows
