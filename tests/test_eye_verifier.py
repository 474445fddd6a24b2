"""The eye verifier: a second output of the eye model that says whether a candidate is an eye at all.

Device side with stand-in runners (what the pipeline keeps and drops), training side on a tiny
generated dataset (the verifier learns, the weight file and its ONNX export carry both outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from device import eyes as device_eyes
from device.eyes import EyeBlob, EyeConfig, score_blobs, select_eyes
from export.dataset import open_dataset
from export.onnx_export import export_network, load_checkpoint
from export.synth.writer import write_dataset
from export.train.eye import EyeRecipe, predict, train_eye, verifier_accuracy
from export.train.samples import NON_EYE_CLEARANCE, eye_samples, non_eye_regions
from export.train.weights import load_network, read_record, save_atomic, weight_record
from models.eye_regressor import VERIFIER_COLUMN, EyeRegressor, has_verifier, with_verifier

CPU = torch.device("cpu")


def brightness_verifier(batch: np.ndarray) -> np.ndarray:
    """Score 3 for everything; eye logit from the patch's mean brightness (bright = eye-like)."""
    logit = (batch.mean(axis=(1, 2, 3)) - 0.5) * 40.0
    return np.stack([np.full(len(batch), 3.0, np.float32), logit.astype(np.float32)], axis=1)


def frame_with_patches(levels: list[float]) -> tuple[np.ndarray, list[EyeBlob]]:
    """One 60x60 square per level along a row, with blobs of falling area at their centres."""
    frame = np.zeros((100, 80 * len(levels) + 40, 3), np.uint8)
    blobs = []
    for i, level in enumerate(levels):
        x = 60 + 80 * i
        frame[20:80, x - 30 : x + 30] = int(level * 255)
        blobs.append(EyeBlob(x, 50, 400 - 50 * i, False))
    return frame, blobs


def test_the_verifier_drops_non_eyes_and_keeps_the_most_eye_like() -> None:
    frame, blobs = frame_with_patches([0.2, 0.7, 0.9, 0.8])  # the largest blob is the least eye-like
    judged = score_blobs(frame, blobs, brightness_verifier, EyeConfig(min_confidence=0.0))
    assert judged[0] is None  # rejected (eyeness below min_eyeness) although it is the largest
    assert judged[1] is None  # eye-like, but third of three: a box keeps two eyes
    kept = [e for e in judged if e is not None]
    assert [e.x for e in kept] == [blobs[2].x, blobs[3].x]
    assert all(e.cues is not None and e.cues.eyeness is not None and e.cues.eyeness > 0.9 for e in kept)
    everything = score_blobs(frame, blobs, brightness_verifier, EyeConfig(min_eyeness=0.0, max_eyes_per_box=4))
    assert all(e is not None for e in everything)


def test_without_a_verifier_the_largest_blobs_of_each_box_are_kept() -> None:
    frame, blobs = frame_with_patches([0.2, 0.7, 0.9, 0.8])
    one_output = lambda batch: np.full((len(batch), 1), 4.0, np.float32)  # noqa: E731 - a stand-in regressor
    judged = score_blobs(frame, blobs, one_output, EyeConfig(min_confidence=0.0), groups=[0, 0, 0, 1])
    assert [e is not None for e in judged] == [True, True, False, True]
    assert all(e.cues.eyeness is None for e in judged if e is not None and e.cues is not None)
    assert select_eyes(blobs, None, [0, 0, 0, 0], EyeConfig(max_eyes_per_box=1)) == [0]


def test_a_blob_with_little_fur_around_needs_the_verifiers_stronger_word() -> None:
    """On an unfamiliar rack the segmenter misses fur more often than eyes: a blob with 0.35-0.65
    animal around it stays a candidate but is kept only at eyeness >= low_context_eyeness."""
    config = EyeConfig(max_eyes_per_box=4, min_eyeness=0.5)  # the rule's two words apart, whatever the default
    in_fur, sparse, bare = (EyeBlob(10 * i, 0, 100, False, context=c) for i, c in enumerate((0.8, 0.5, 0.5)))
    blobs = [in_fur, sparse, bare]
    assert select_eyes(blobs, np.array([0.7, 0.9, 0.7]), [0, 0, 0], config) == [0, 1]
    assert select_eyes(blobs, np.array([0.4, 0.95, 0.9]), [0, 0, 0], config) == [1, 2]
    assert select_eyes(blobs, None, [0, 0, 0], config) == [0]  # no verifier to ask: as before
    assert select_eyes(blobs, np.array([0.7, 0.9, 0.7]), [0, 0, 0], EyeConfig(low_context_eyeness=1.0)) == [0]


def test_the_context_rule_has_a_floor() -> None:
    classes = np.zeros((60, 60), np.uint8)
    classes[10:50, 10:50] = device_eyes.ANIMAL
    classes[27:33, 27:33] = device_eyes.EYES
    classes[10:50, 10:27] = 0  # the fur on one side missed: context 0.58
    assert [round(b.context, 2) for b in device_eyes.find_eye_blobs(classes, EyeConfig(min_area_px=1))] == [0.58]
    assert device_eyes.find_eye_blobs(classes, EyeConfig(min_area_px=1, low_context_fraction=0.65)) == []
    classes[classes == device_eyes.ANIMAL] = 0  # no fur at all: a hole in the wall
    assert device_eyes.find_eye_blobs(classes, EyeConfig(min_area_px=1)) == []


def test_candidates_per_box_must_cover_the_eyes_kept() -> None:
    from mgs_core.errors import ConfigError
    from mgs_core.tomlconfig import from_dict

    with pytest.raises(ConfigError, match="max_candidates_per_box"):
        from_dict(EyeConfig, {"max_eyes_per_box": 3, "max_candidates_per_box": 2})


def test_device_and_training_agree_on_the_verifier_column() -> None:
    assert device_eyes.VERIFIER_COLUMN == VERIFIER_COLUMN


def test_adding_a_verifier_keeps_the_scores() -> None:
    torch.manual_seed(0)
    base = EyeRegressor(arch="wide").eval()
    both = with_verifier(base).eval()
    patch = torch.rand(5, 3, 50, 50)
    assert has_verifier(both) and not has_verifier(base)
    out = both(patch)
    assert out.shape == (5, 2)
    assert torch.allclose(out[:, 0], base(patch)[:, 0], atol=1e-5)
    assert torch.allclose(out[:, VERIFIER_COLUMN], torch.zeros(5))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny", frames=4, seed=11, progress=False)


def test_non_eye_regions_lie_away_from_every_eye(tiny: Path) -> None:
    data = open_dataset(tiny)
    regions = non_eye_regions(data, 3, np.random.default_rng(0))
    boxes = sum(len(f.boxes) for f in data.frames if f.mask is not None and any(b.eyes for b in f.boxes))
    assert regions.shape == (3 * boxes, 90, 90, 3)
    eyes = eye_samples(data)
    # an eye region is darkest at its centre (the pupil); non-eye regions are not the eye regions
    assert not any(np.array_equal(r, e) for r in regions[:6] for e in eyes.regions)
    assert NON_EYE_CLEARANCE > 12  # beyond the pipeline's match radius


def test_training_the_verifier_separates_eyes_from_non_eyes(tiny: Path, tmp_path: Path) -> None:
    data = open_dataset(tiny)
    samples = eye_samples(data)
    non_eyes = non_eye_regions(data, 3, np.random.default_rng(1))
    recipe = EyeRecipe(epochs=40, batch=4, optimizer="adam", lr=0.002, augment=False, negatives_per_box=3)
    module, history = train_eye(
        samples, recipe, tmp_path / "eye.pt", CPU, val=samples, non_eyes=non_eyes, val_non_eyes=non_eyes, progress=False
    )
    assert has_verifier(module)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    accuracy = [h["val_verifier_accuracy"] for h in history]
    # on the training patches (a dozen eyes, noisy batch statistics): it learns, from chance
    assert accuracy[0] <= 0.55 and max(accuracy) > 0.8 and accuracy[-1] > 0.6
    assert verifier_accuracy(module, samples.regions, non_eyes, CPU) == pytest.approx(
        history[-1]["val_verifier_accuracy"]
    )
    assert predict(module, samples.regions[:, 20:70, 20:70], CPU).shape == (len(samples),)

    path = tmp_path / "verified.pt"
    save_atomic(weight_record(module, "eye", (50, 50), "abc", "mgs-export train-eye", {}), path)
    assert read_record(path)["class_names"] == ["orbital_tightening", "eye_logit"]
    assert has_verifier(load_network(path)[0])
    output = export_network(load_checkpoint("eye", path), tmp_path / "eye.onnx").graph.output[0]
    assert output.type.tensor_type.shape.dim[1].dim_value == 2


def test_hard_negatives_are_the_pipelines_false_eyes_and_it_measures_the_true_ones(tiny: Path) -> None:
    from device.inference import load_models
    from export.train.samples import device_view, eye_training_samples

    data = open_dataset(tiny)
    models = load_models(precision="int8")
    view = device_view(data, models, eye_width=20.0)
    assert view.false_eyes.ndim == 4 and view.false_eyes.shape[1:] == (90, 90, 3)
    assert view.widths and all(3 <= w <= 100 for w in view.widths.values())
    empty = device_view(data, models, frames=0)
    assert len(empty.false_eyes) == 0 and not empty.widths
    # an eye the device measured twice as wide is cut at half the zoom: it looks half as wide
    doubled = {key: 2 * w for key, w in view.widths.items()}
    own = eye_training_samples(data, eye_width=20.0, device_widths=view.widths)[0]
    wide = eye_training_samples(data, eye_width=20.0, device_widths=doubled)[0]
    assert len(own) == len(wide) and not np.array_equal(own.regions, wide.regions)


def test_hard_negatives_need_the_verifier(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export.cli import main as mgs_export

    args = ["train-eye", "--data", str(tiny), "--out", str(tmp_path / "e.pt"), "--hard-negatives", "models"]
    assert mgs_export(args) != 0
    assert "--negatives-per-box" in capsys.readouterr().err
    assert not (tmp_path / "e.pt").exists()


def test_fine_tuning_on_eyes_alone_keeps_the_verifiers_verdict(tiny: Path, tmp_path: Path) -> None:
    data = open_dataset(tiny)
    samples = eye_samples(data)
    non_eyes = non_eye_regions(data, 3, np.random.default_rng(1))
    recipe = EyeRecipe(epochs=20, batch=4, optimizer="adam", lr=0.002, augment=False, negatives_per_box=3)
    trained, _ = train_eye(samples, recipe, tmp_path / "v.pt", CPU, non_eyes=non_eyes, progress=False)
    # a facility's fine-tuning: eyes only, head re-fitted with a high learning rate, scores shifted by 3
    shifted = type(samples)(samples.regions, np.clip(samples.scores + 3, 0, 9), samples.image_ids)
    tune = EyeRecipe(epochs=10, batch=4, optimizer="adam", lr=0.01, augment=False, freeze_features=True)
    tuned, _ = train_eye(shifted, tune, tmp_path / "t.pt", CPU, init=trained, non_eyes=non_eyes, progress=False)
    assert has_verifier(tuned)
    patches = np.concatenate([samples.regions, non_eyes])[:, 20:70, 20:70]
    before = predict(trained, patches, CPU, column=VERIFIER_COLUMN)
    after = predict(tuned, patches, CPU, column=VERIFIER_COLUMN)
    assert np.mean((after > 0) == (before > 0)) >= 0.9
    assert np.corrcoef(before, after)[0, 1] > 0.8


def test_sweeping_eye_settings_reports_each(tiny: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_eyes", Path(__file__).parent.parent / "scripts/sweep_eyes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    strict, loose = module.sweep(tiny, Path("models"), "int8", [{"min_eyeness": 1.0}, {"min_eyeness": 0.0}])
    assert strict["setting"] == {"min_eyeness": 1.0}
    assert loose["found_recall"] >= strict["found_recall"]
