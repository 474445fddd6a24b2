"""Training speed in fp32 vs bf16 (`--precision`) on this CPU: one optimiser step of each network.

    .venv/bin/python bench/bench_train.py [--steps N] [--threads N] [--json FILE]

Training runs for hours on the 2-core development CPU, so the arithmetic of the forward pass is the
largest lever on what can be trained here. Each case is one step of the training loop
(export.train.loop.forward, loss, backward, Adam) at the batch the recipes in models/TRAINING.md use:
seg_fine (base-16 U-Net, 64 crops of 96x96), seg_coarse (base 16, 16 ROIs at its input size 160x112) and the
wide eye regressor (64 patches of 50x50). fp32 and bf16 alternate step by step, so a noisy neighbour
slows both alike and the ratio stays fair. Needs the [train] extra (torch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, print_load_average, write_report  # noqa: E402
from export.train.loop import forward, set_memory_format  # noqa: E402
from export.train.options import PRECISIONS  # noqa: E402
from models.eye_regressor import PATCH_SIZE, EyeRegressor  # noqa: E402
from models.unet import UNet  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    shape: tuple[int, int, int, int]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    target: Callable[[torch.Tensor], torch.Tensor]


def seg_target(x: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 4, (x.shape[0], x.shape[2], x.shape[3]))


def eye_target(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape[0]) * 9


def eye_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.l1_loss(prediction[:, 0], target)


def unet_case(name: str, shape: tuple[int, int, int, int]) -> Case:
    """A base-16 U-Net step (the shipped size of both segmenters) on batches of `shape`."""
    return Case(name, lambda: UNet(base=16, depth=4), shape, torch.nn.functional.cross_entropy, seg_target)


CASES = (
    unet_case("seg_fine 64 x 96x96", (64, 3, 96, 96)),
    unet_case("seg_coarse 16 x 160x112", (16, 3, 160, 112)),
    Case(
        "eye wide 64 x 50x50", lambda: EyeRegressor(arch="wide"), (64, 3, PATCH_SIZE, PATCH_SIZE), eye_loss, eye_target
    ),
)


def measure(case: Case, steps: int, batch: int | None = None) -> dict[str, list[float]]:
    """Seconds per training step of each precision, interleaved after one warm-up step each;
    `batch` replaces the case's batch size."""
    torch.manual_seed(0)
    x = torch.rand((batch or case.shape[0], *case.shape[1:]))
    y = case.target(x)
    nets = {p: case.build().train() for p in PRECISIONS}
    for p, net in nets.items():
        set_memory_format(net, p)
    optimisers = {p: torch.optim.Adam(nets[p].parameters(), lr=1e-3) for p in PRECISIONS}
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for step in range(steps + 1):
        for p in PRECISIONS:
            started = time.perf_counter()
            optimisers[p].zero_grad(set_to_none=True)
            case.loss(forward(nets[p], x, p), y).backward()
            optimisers[p].step()
            if step:
                times[p].append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case and precision (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, as the recipes train)")
    parser.add_argument("--batch", type=int, help="one batch size for every case (default: each recipe's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    print(f"{'case':<26} {'fp32 s/step':>11} {'bf16 s/step':>11} {'bf16/fp32':>9} {'speed-up':>8}")
    for case in CASES:
        times = measure(case, args.steps, args.batch)
        median = {p: statistics.median(t) for p, t in times.items()}
        ratio = median["bf16"] / median["fp32"]
        results.append(
            {
                "case": case.name,
                "shape": [args.batch or case.shape[0], *case.shape[1:]],
                "fp32_s_per_step": round(median["fp32"], 5),
                "bf16_s_per_step": round(median["bf16"], 5),
                "bf16_over_fp32": round(ratio, 3),
                "speedup": round(1 / ratio, 2),
            }
        )
        print(f"{case.name:<26} {median['fp32']:>11.3f} {median['bf16']:>11.3f} {ratio:>9.2f} {1 / ratio:>7.2f}x")
    report = {
        "machine": machine(torch=torch.__version__, native_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())),
        "threads": args.threads,
        "steps": args.steps,
        "results": results,
    }
    if args.json:
        write_report(args.json, report)
    print_load_average("other processes slow both precisions alike")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
