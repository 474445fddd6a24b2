"""Both pipelines on frames whose right answer is known.

The plumbing tests (coordinates, batching, tracking, lost tracks) use a colour-coded scene and a
deterministic colour segmenter in place of the U-Nets, so every eye position is known to the pixel
and any difference between the pipelines is a bug, not a model's opinion. A flat drawn disc is not
an eye the confidence model knows, so these tests score every eye (min_confidence 0); abstention
has its own tests (tests/test_confidence.py). The last test runs the shipped ONNX models on a
generated rack frame.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from device.eyes import EyeConfig, find_eye_blobs
from device.inference import Models, load_models
from device.pipeline import FastPipeline, FullResolutionPipeline, PipelineConfig, images_to_batch
from device.rois import Roi
from mgs_core.manifest import load_manifest

ROIS = [Roi(60 + i * 460, 200, 430, 600) for i in range(4)]
EYE_BGR, EAR_BGR, ANIMAL_BGR = (255, 0, 0), (0, 255, 0), (128, 128, 128)
SCORE_ALL = EyeConfig(min_confidence=0.0)


def draw_scene(heads: dict[int, tuple[int, int]]) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Red rack frame; in each listed box an animal with an ear and one eye at (x, y) (full-frame px)."""
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:] = (40, 40, 180)
    for box, (ex, ey) in heads.items():
        cv2.ellipse(frame, (ex + 50, ey + 20), (90, 50), 0, 0, 360, ANIMAL_BGR, -1)
        cv2.circle(frame, (ex + 25, ey - 30), 14, EAR_BGR, -1)
        cv2.circle(frame, (ex, ey), 8, EYE_BGR, -1)
        cv2.circle(frame, (ex, ey), 2, (0, 0, 0), -1)  # a pupil: gives the patch some sharpness
    return frame, heads


class ColourSegmenter:
    """Class map by exact colour (eyes blue, ears green, animal grey); counts its calls and batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        b, g, r = batch[:, 0], batch[:, 1], batch[:, 2]
        classes = np.zeros(b.shape, np.uint8)
        classes[(np.abs(b - g) < 0.05) & (np.abs(g - r) < 0.05) & (b > 0.3)] = 1
        classes[(g > 0.8) & (b < 0.2) & (r < 0.2)] = 2
        classes[(b > 0.8) & (g < 0.2) & (r < 0.2)] = 3
        classes[(b < 0.05) & (g < 0.05) & (r < 0.05)] = 3  # the pupil is part of the eye
        return classes


def blue_fraction_score(batch: np.ndarray) -> np.ndarray:
    """A regressor stand-in whose output depends on exactly which pixels the patch holds."""
    blue = (batch[:, 0] > 0.8) & (batch[:, 1] < 0.2)
    return (blue.mean(axis=(1, 2)) * 40.0).astype(np.float32)[:, None]


def colour_models() -> Models:
    return Models(
        ColourSegmenter(), ColourSegmenter(), blue_fraction_score, model_sha256="0" * 64, coarse_size=(128, 256)
    )


def eyes_of(result) -> list[list[tuple[float, float, float]]]:
    return [[(e.x, e.y, e.score) for e in b.eyes] for b in result.boxes]


HEADS = {0: (200, 500), 1: (700, 450), 2: (1150, 600)}


def test_full_pipeline_finds_each_eye_at_its_position() -> None:
    frame, heads = draw_scene(HEADS)
    result = FullResolutionPipeline(colour_models(), ROIS, SCORE_ALL)(frame, 7, 123.0)
    assert result.frame_index == 7 and result.capture_time == 123.0
    for box in (0, 1, 2):
        (eye,) = result.boxes[box].eyes
        assert abs(eye.x - heads[box][0]) < 0.5 and abs(eye.y - heads[box][1]) < 0.5
        assert eye.quality_ok and 0 < eye.score <= 9
        assert result.boxes[box].animal_found
    assert result.boxes[3].eyes == () and not result.boxes[3].animal_found


def test_fast_pipeline_agrees_with_full_resolution_and_batches_each_stage() -> None:
    frame, _ = draw_scene(HEADS)
    models = colour_models()
    full = FullResolutionPipeline(models, ROIS, SCORE_ALL)(frame)
    fast = FastPipeline(models, ROIS, PipelineConfig(fine_crop=96, eyes=SCORE_ALL))
    result = fast(frame)
    assert eyes_of(result) == eyes_of(full)
    assert models.seg_coarse.batches == [4]  # all four ROIs in one coarse call
    assert models.seg_fine.batches[-1] == 3  # one fine call over the three heads
    assert set(result.stage_ms) >= {"resize", "unet_coarse", "unet_fine", "post", "regressor"}


def test_fast_pipeline_tracks_a_moving_head_between_coarse_passes() -> None:
    models = colour_models()
    fast = FastPipeline(models, ROIS, PipelineConfig(fine_crop=96, coarse_every=100, lost_retry=3, eyes=SCORE_ALL))
    for step in range(8):
        frame, heads = draw_scene({1: (700 + 9 * step, 450 - 5 * step)})
        (eye,) = fast(frame, step).boxes[1].eyes
        assert abs(eye.x - heads[1][0]) < 0.5 and abs(eye.y - heads[1][1]) < 0.5
    assert fast.coarse_passes == 3  # the first pass, then retries for the three empty boxes only


def test_only_eyes_in_fur_steer_the_crop() -> None:
    """A blob at the edge of the fur (little animal around it) may be scored if the verifier vouches
    for it, but the box's crop keeps following the eye in fur, not the mean of both."""
    models = colour_models()
    fast = FastPipeline(models, ROIS, PipelineConfig(fine_crop=96, coarse_every=100, eyes=SCORE_ALL))
    frame, _ = draw_scene({1: (700, 450)})
    fast(frame, 0)
    assert fast.tracks[1].centres == [(700.0, 450.0)]
    cv2.circle(frame, (667, 450), 5, EYE_BGR, -1)  # on the left end of the body: half fur, half backdrop
    decoy = [b for b in find_eye_blobs(models.seg_fine(images_to_batch([frame]))[0], SCORE_ALL) if b.x < 680]
    assert len(decoy) == 1 and SCORE_ALL.low_context_fraction <= decoy[0].context < SCORE_ALL.min_context_fraction
    fast(frame, 1)
    assert fast.tracks[1].centres == [(700.0, 450.0)]


def test_lost_track_brings_back_the_coarse_search() -> None:
    models = colour_models()
    fast = FastPipeline(models, ROIS, PipelineConfig(fine_crop=96, coarse_every=100, lost_retry=2, eyes=SCORE_ALL))
    frame, _ = draw_scene({0: (200, 500), 1: (700, 450), 2: (1150, 600), 3: (1600, 500)})
    assert all(b.eyes for b in fast(frame, 0).boxes)
    empty, _ = draw_scene({})
    assert not any(b.eyes for b in fast(empty, 1).boxes)  # animals gone: tracks lost
    passes = fast.coarse_passes
    far, heads = draw_scene({2: (1300, 350)})  # reappears far from where it was
    results = [fast(far, i) for i in range(2, 5)]
    assert fast.coarse_passes == passes + 2  # frames 2 and 4: retried every lost_retry frames while boxes stay empty
    assert results[0].boxes[2].eyes  # found again by the first retry
    (eye,) = results[-1].boxes[2].eyes
    assert abs(eye.x - 1300) < 0.5 and abs(eye.y - 350) < 0.5


def test_eye_at_the_box_edge_is_reported_but_not_valid() -> None:
    frame, _ = draw_scene({0: (ROIS[0].x + 3, 500)})
    result = FullResolutionPipeline(colour_models(), ROIS, SCORE_ALL)(frame)
    assert [e.quality_ok for e in result.boxes[0].eyes] == [False]


def _shipped_models_trained() -> bool:
    manifest = load_manifest()
    return all("random" not in e.model_version for e in manifest.entries)


@pytest.mark.skipif(
    not _shipped_models_trained(),
    reason="models/ holds untrained stand-ins; trained models are committed by the toolchain",
)
def test_fast_and_full_pipeline_agree_on_a_generated_frame_with_shipped_models() -> None:
    from export.synth.rack import render_frame

    frame = render_frame(11)
    rois = [Roi(*b.roi) for b in frame.boxes]
    precision = "int8" if any(e.precision == "int8" for e in load_manifest().entries) else "fp32"
    models = load_models(precision=precision)
    full = FullResolutionPipeline(models, rois)(frame.image)
    fast = FastPipeline(models, rois)(frame.image)
    # All eyes found, before the quality check: one false eye that the two pipelines place a few
    # pixels apart can flag its box's true eye in one pipeline and not in the other.
    full_eyes = [e for b in full.boxes for e in b.eyes]
    fast_eyes = [e for b in fast.boxes for e in b.eyes]
    assert len(full_eyes) >= 2, json.dumps([b.eyes for b in frame.boxes], default=str)
    matched = 0
    for e in full_eyes:
        near = [f for f in fast_eyes if abs(f.x - e.x) < 3 and abs(f.y - e.y) < 3]
        if near:
            matched += 1
            assert abs(near[0].score - e.score) < 0.5
    assert matched >= len(full_eyes) - 1


class AnimalOnlySegmenter(ColourSegmenter):
    """A coarse map that sees the body but not the small head parts."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        classes = super().__call__(batch)
        classes[classes >= 2] = 1
        return classes


def test_fast_pipeline_looks_at_both_body_ends_when_the_coarse_map_shows_no_head() -> None:
    models = Models(
        AnimalOnlySegmenter(), ColourSegmenter(), blue_fraction_score, model_sha256="0" * 64, coarse_size=(160, 112)
    )
    frame, heads = draw_scene({1: (700, 450)})
    result = FastPipeline(models, ROIS, PipelineConfig(fine_crop=96, eyes=SCORE_ALL))(frame)
    (eye,) = result.boxes[1].eyes
    assert abs(eye.x - 700) < 0.5 and abs(eye.y - 450) < 0.5


def test_fine_crops_grow_with_wide_boxes() -> None:
    """A closer camera (wider boxes, larger heads) gets larger fine crops, so both eyes fit one; a
    narrower box keeps its frame crop, magnified for the fine U-Net."""
    from device.pipeline import _Stopwatch

    rois = [Roi(0, 100, 300, 420), Roi(320, 100, 700, 900)]
    pipeline = FastPipeline(None, rois, PipelineConfig())  # crop placement needs no networks
    assert pipeline.views == [(136, 96), (160, 160)]  # 96 * 430 / 300 = 138 -> 136, a multiple of 8
    pipeline.tracks[0].centres, pipeline.tracks[1].centres = [(150.0, 300.0)], [(670.0, 500.0)]
    crops = pipeline._crops(_Stopwatch())
    assert [(b, w, h) for b, _, _, w, h in crops] == [(0, 96, 96), (1, 160, 160)]
    assert crops[1][1:3] == (670 - 80, 500 - 80)


def test_fine_crops_of_small_boxes_are_magnified_and_eyes_mapped_back_to_the_frame() -> None:
    """A far camera (narrow boxes, small heads): the fine U-Net sees the crop magnified, and the eye
    comes back at its frame position and frame-pixel size, as without magnification."""
    rois = [Roi(60 + i * 260, 200, 215, 420) for i in range(4)]
    frame, heads = draw_scene({1: (420, 450)})
    plain, zoomed = colour_models(), colour_models()
    base = FastPipeline(plain, rois, PipelineConfig(fine_crop=96, fine_zoom_max=1.0, eyes=SCORE_ALL))(frame)
    fast = FastPipeline(zoomed, rois, PipelineConfig(fine_crop=96, fine_zoom_max=2.0, eyes=SCORE_ALL))
    assert fast.views[1] == (192, 96)
    (eye,) = fast(frame).boxes[1].eyes
    (ref,) = base.boxes[1].eyes
    assert abs(eye.x - heads[1][0]) < 0.75 and abs(eye.y - heads[1][1]) < 0.75
    assert abs(eye.area_px - ref.area_px) <= 0.15 * ref.area_px
    (crop,) = fast.last_fine
    assert crop.classes.shape == (192, 192) and crop.scale == 0.5


def test_both_pipelines_measure_what_the_picture_shows_only_for_the_gate() -> None:
    """A blue eye on grey fur stands far apart from it; the contrast reaches the cues only with the gate on."""
    frame, _ = draw_scene(HEADS)
    models = colour_models()
    gated = EyeConfig(min_confidence=0.0, min_delta_e=6.0)
    for pipeline in (
        FullResolutionPipeline(models, ROIS, gated),
        FastPipeline(models, ROIS, PipelineConfig(fine_crop=96, eyes=gated)),
    ):
        eyes = [e for b in pipeline(frame).boxes for e in b.eyes]
        assert len(eyes) == 3 and all(e.quality_ok for e in eyes)
        assert all(e.cues is not None and e.cues.delta_e is not None and e.cues.delta_e > 30 for e in eyes)
    off = FastPipeline(models, ROIS, PipelineConfig(fine_crop=96, eyes=SCORE_ALL))(frame)
    assert all(e.cues is not None and e.cues.delta_e is None for b in off.boxes for e in b.eyes)
