"""`mgs-export`: make data, train, evaluate, export and quantize the models the devices run."""

from __future__ import annotations

from collections.abc import Sequence

from mgs_core.clitools import Command, dispatch

COMMANDS = [
    Command("synth", "export.commands.synth", "generate a labelled synthetic rack dataset"),
    Command(
        "synth-video", "export.commands.synth_video", "generate a rack video with score trajectories and ground truth"
    ),
    Command(
        "render-independent",
        "export.commands.render_independent",
        "render evaluation-only rack frames with the independent renderer",
    ),
    Command(
        "render-choice",
        "export.commands.render_choice",
        "render rack frames in a third style, for choosing between model variants only",
    ),
    Command("validate", "export.commands.validate", "check a dataset folder against the dataset format"),
    Command("train-seg", "export.commands.train_seg", "train the segmentation U-Net(s)"),
    Command("train-eye", "export.commands.train_eye", "train the orbital-tightening eye regressor"),
    Command(
        "average-weights",
        "export.commands.average_weights",
        "average networks fine-tuned from one start into one (a model soup)",
    ),
    Command(
        "ensemble",
        "export.commands.ensemble",
        "join U-Nets trained apart into one network that averages their outputs",
    ),
    Command("evaluate", "export.commands.evaluate", "run the full pipeline on a dataset and write an accuracy report"),
    Command("crossval", "export.commands.crossval", "K-fold cross-validation of the eye regressor (the paper used 30)"),
    Command("onnx", "export.commands.onnx", "export the trained networks to ONNX with metadata"),
    Command("quantize", "export.commands.quantize", "static INT8 quantization of the ONNX models"),
    Command("verify", "export.commands.verify", "parity report: PyTorch vs FP32 ONNX vs INT8 ONNX"),
    Command("package", "export.commands.package", "pack a verified models folder into a model set for roll-out"),
    Command("triton-repo", "export.commands.triton_repo", "write a Triton model repository for the GPU host"),
]


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("mgs-export", "mgs-rack training and export toolchain", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
