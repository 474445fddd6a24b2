"""One epoch loop for every network: progress bar, per-epoch checkpoint, exact resume.

The callers supply the (input, target) batches of an epoch and the loss of a prediction; this module owns what must be
identical for all of them: the checkpoint contents (weights, optimiser, RNG state, history) and the
rule that a resumed run continues with the next epoch and the same random stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from export.train.weights import checkpoint_path, rng_state, save_atomic, set_rng_state
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


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
) -> list[dict[str, float]]:
    """Train `epochs` epochs in total (counting resumed ones), checkpointing next to `out`; returns
    per-epoch history."""
    checkpoint = checkpoint_path(out)
    start, history = load_checkpoint(checkpoint, kind, module, optimizer) if resume else (0, [])
    for epoch in range(start, epochs):
        module.train()
        total, count = 0.0, 0
        bar = tqdm(
            batches(epoch), desc=f"{kind} epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress, leave=False
        )
        for x, y in bar:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(x), y)
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
    return history
