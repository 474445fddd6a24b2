"""One epoch loop for every network: progress bar, per-epoch checkpoint, exact resume, precision.

The callers supply the (input, target) batches of an epoch and the loss of a prediction; this module owns what must be
identical for all of them: the checkpoint contents (weights, optimiser, RNG state, history), the
rule that a resumed run continues with the next epoch and the same random stream, and the arithmetic
of the forward pass ("bf16": convolutions in bfloat16 on channels-last tensors, weights, optimiser
and loss in float32; about 3x faster on CPUs with AVX-512 BF16 or AMX, bench/bench_train.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from export.train.options import PRECISIONS
from export.train.weights import checkpoint_path, rng_state, save_atomic, set_rng_state
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse an unknown precision; warn where bf16 would be emulated (slower than fp32, same result)."""
    if precision not in PRECISIONS:
        raise MgsError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("this CPU has no native bfloat16 (AVX-512 BF16 or AMX): --precision bf16 will be slower than fp32")


def set_memory_format(module: nn.Module, precision: str) -> None:
    """Channels-last weights for bf16 (oneDNN's fast bfloat16 convolutions), the ordinary layout for fp32."""
    module.to(memory_format=torch.channels_last if precision == "bf16" else torch.contiguous_format)


def forward(module: nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """The module's float32 prediction of `x`, computed in `precision`."""
    if precision == "fp32":
        return module(x)
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        return module(x).float()


def scheduled_lr(base_lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """Learning rate of an epoch. A pure function of the epoch (no scheduler state), so --resume
    continues the schedule exactly. "constant" is what the paper used."""
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def load_checkpoint(
    path: Path, kind: str, module: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, float]]]:
    """Restore weights, optimiser and RNG; returns (epochs already done, history)."""
    if not path.is_file():
        raise MgsError(f"--resume: no checkpoint at {path}; start without --resume")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("kind") != kind:
        raise MgsError(f"--resume: {path} is a {state.get('kind')} checkpoint, not {kind}; pick the right --out")
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    log.info("resumed %s after epoch %d", path, state["epoch"])
    return int(state["epoch"]), list(state["history"])


def run_epochs(
    *,
    kind: str,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batches: Callable[[int], Iterable[Batch]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    out: Path,
    resume: bool,
    after_epoch: Callable[[int], dict[str, float]] | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> list[dict[str, float]]:
    """Train `epochs` epochs in total (counting resumed ones), checkpointing next to `out`; returns
    per-epoch history. The module comes back in the ordinary (contiguous) memory layout."""
    check_precision(precision, next(module.parameters()).device)
    checkpoint = checkpoint_path(out)
    start, history = load_checkpoint(checkpoint, kind, module, optimizer) if resume else (0, [])
    set_memory_format(module, precision)
    for epoch in range(start, epochs):
        module.train()
        total, count = 0.0, 0
        bar = tqdm(
            batches(epoch), desc=f"{kind} epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress, leave=False
        )
        for x, y in bar:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(forward(module, x, precision), y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        entry = {"epoch": epoch + 1, "loss": total / max(count, 1)}
        if after_epoch is not None:
            module.eval()
            entry.update(after_epoch(epoch))
        history.append(entry)
        log.info(
            "%s epoch %d/%d %s",
            kind,
            epoch + 1,
            epochs,
            " ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "epoch"),
        )
        save_atomic(
            {
                "kind": kind,
                "epoch": epoch + 1,
                "module": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(),
                "history": history,
            },
            checkpoint,
        )
    set_memory_format(module, "fp32")
    return history
