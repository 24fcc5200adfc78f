"""The schedule of a run: where it stands (`Progress`), its learning rate, and when it stops.

Pure functions of the `TrainConfig` and the progress, so the loop (train.py) and the tests read
the same rules: linear warm-up then cosine decay to 10% of the peak rate, following the fraction
of the run that is done (steps, epochs or wall-clock budget, whichever ends first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from charnn.train import TrainConfig


@dataclass
class Progress:
    """Everything besides weights and optimizer that an exact resume needs."""

    step: int = 0
    epoch: int = 0
    window: int = 0  # next window of the current epoch
    tokens: int = 0
    elapsed: float = 0.0  # seconds trained, summed over sessions
    best_val: float = math.inf
    evals_since_best: int = 0
    skipped: int = 0  # non-finite steps skipped
    last_eval_step: int = -1


def lr_at(cfg: TrainConfig, step: int, done: float) -> float:
    """Warm-up over `cfg.warmup` steps, then cosine from lr to 0.1*lr as `done` goes 0 -> 1."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0))))


def fraction_done(cfg: TrainConfig, p: Progress, windows_per_epoch: int, reserve: float = 0.0) -> float:
    fractions = [0.0]
    if cfg.max_steps:
        fractions.append(p.step / cfg.max_steps)
    if cfg.epochs:
        fractions.append(p.step / (cfg.epochs * windows_per_epoch))
    if cfg.time_budget:
        fractions.append(p.elapsed / max(cfg.time_budget - reserve, 1e-9))
    return max(fractions)


def stop_reason(cfg: TrainConfig, p: Progress, windows_per_epoch: int, reserve: float = 0.0) -> str | None:
    """Why training stops now, if it does. `reserve`: seconds of the time budget kept for what follows the
    last step (the final validation pass and save), so the run as a whole ends within its budget."""
    if cfg.max_steps is not None and p.step >= cfg.max_steps:
        return "max-steps"
    if cfg.epochs is not None and p.step >= cfg.epochs * windows_per_epoch:
        return "epochs"
    if cfg.time_budget is not None and p.elapsed + reserve >= cfg.time_budget:
        return "time"
    if cfg.patience and p.evals_since_best >= cfg.patience:
        return "patience"
    return None


def final_pass_is_near(cfg: TrainConfig, elapsed: float, pass_s: float, save_s: float = 0.0) -> bool:
    """Whether a scheduled validation pass would leave too little of the time budget.

    The final pass starts when only it and the last save fit in what is left (`stop_reason`'s reserve).
    A scheduled pass that leaves less than that plus a pass of training would score nearly the weights
    the final pass scores (RECIPES.md #72): skip it and train instead.
    """
    return cfg.time_budget is not None and cfg.time_budget - elapsed < 2 * pass_s + save_s
