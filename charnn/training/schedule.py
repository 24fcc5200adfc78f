"""The schedule of a run: where it stands (`Progress`), its learning rate, and when it stops.

Pure functions of the run's limits (`Limits`: the fields of `TrainConfig` they read) and the
progress, so the loop (loop.py) and the tests read the same rules: linear warm-up then cosine
decay to 10% of the peak rate, following the fraction of the run that is done (steps, epochs or
wall-clock budget, whichever ends first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol


class Limits(Protocol):
    """What the schedule reads of a `TrainConfig` (run/config.py): a protocol, so a test can hand the rules
    any object with these fields."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup(self) -> int: ...
    @property
    def eval_every(self) -> int: ...
    @property
    def stops_after(self) -> int: ...
    @property
    def max_steps(self) -> int | None: ...
    @property
    def epochs(self) -> float | None: ...
    @property
    def time_budget(self) -> float | None: ...


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
    best_step: int = -1  # the step of the best validation loss
    cooldown_from: int = -1  # patience ran out at this step: the rate anneals from here (-1: not yet)
    cooldown_lr: float = 0.0  # the rate at that step
    stopped_early: bool = False  # the run ended by patience, its model set back to the best weights


def lr_at(cfg: Limits, step: int, done: float) -> float:
    """Warm-up over `cfg.warmup` steps, then cosine from lr to 0.1*lr as `done` goes 0 -> 1."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0))))


def learning_rate(cfg: Limits, p: Progress, windows_per_epoch: int, reserve: float = 0.0) -> float:
    """The schedule's rate now, or, once patience has run out, the cool-down's: from the rate at that step
    linearly down to the schedule's floor (0.1 x lr) over one evaluation interval, so the run ends annealed
    instead of cut off at a high rate."""
    if p.cooldown_from < 0:
        return lr_at(cfg, p.step, fraction_done(cfg, p, windows_per_epoch, reserve))
    floor = min(0.1 * cfg.lr, p.cooldown_lr)
    t = min(1.0, (p.step - p.cooldown_from) / max(1, cfg.eval_every))
    return p.cooldown_lr + (floor - p.cooldown_lr) * t


def patience_line(patience: int) -> str:
    """The line a run with patience starts with."""
    return (f"patience: after {patience} validation passes without a new best, the rate anneals for one more "
            "interval, then the run stops on its best weights (--patience 0: off)")


def patience_ran_out(cfg: Limits, p: Progress) -> bool:
    """After a validation pass: `cfg.stops_after` passes in a row without a new best, and no cool-down yet."""
    return bool(cfg.stops_after) and p.evals_since_best >= cfg.stops_after and p.cooldown_from < 0


def fraction_done(cfg: Limits, p: Progress, windows_per_epoch: int, reserve: float = 0.0) -> float:
    fractions = [0.0]
    if cfg.max_steps:
        fractions.append(p.step / cfg.max_steps)
    if cfg.epochs:
        fractions.append(p.step / (cfg.epochs * windows_per_epoch))
    if cfg.time_budget:
        fractions.append(p.elapsed / max(cfg.time_budget - reserve, 1e-9))
    return max(fractions)


def stop_reason(cfg: Limits, p: Progress, windows_per_epoch: int, reserve: float = 0.0) -> str | None:
    """Why training stops now, if it does. `reserve`: seconds of the time budget kept for what follows the
    last step (the final validation pass and save), so the run as a whole ends within its budget."""
    if cfg.max_steps is not None and p.step >= cfg.max_steps:
        return "max-steps"
    if cfg.epochs is not None and p.step >= cfg.epochs * windows_per_epoch:
        return "epochs"
    if cfg.time_budget is not None and p.elapsed + reserve >= cfg.time_budget:
        return "time"
    if p.cooldown_from >= 0 and p.step - p.cooldown_from >= max(1, cfg.eval_every):
        return "patience"  # the cool-down after patience ran out is over
    return None


def final_pass_is_near(cfg: Limits, elapsed: float, pass_s: float, save_s: float = 0.0) -> bool:
    """Whether a scheduled validation pass would leave too little of the time budget.

    The final pass starts when only it and the last save fit in what is left (`stop_reason`'s reserve).
    A scheduled pass that leaves less than that plus a pass of training would score nearly the weights
    the final pass scores (RECIPES.md #72): skip it and train instead.
    """
    return cfg.time_budget is not None and cfg.time_budget - elapsed < 2 * pass_s + save_s


def scored(cfg: Limits, p: Progress, val: float, lr: float) -> bool:
    """A validation pass scored `val` at rate `lr`: keep the best, count the passes since it, and start the
    cool-down where patience ran out. Whether `val` is a new best."""
    best = val < p.best_val
    if best:
        p.best_val, p.evals_since_best, p.best_step = val, 0, p.step
    else:
        p.evals_since_best += 1
    if patience_ran_out(cfg, p):
        p.cooldown_from, p.cooldown_lr = p.step, lr
    p.last_eval_step = p.step
    return best


@dataclass
class Keeper:
    """The time budget's keeper for one session: how long a validation pass and the writes after it take, so
    the loop keeps back the final pass and save, skips a pass that would crowd them, and anneals to the time
    that is really left. Without a time budget it only counts (`spent`)."""

    pass_s: float = 0.0  # the last validation pass (the ranks' mean), or the recipe's estimate until one is timed
    save_s: float = 0.0  # the writes after the last pass (best, metrics, latest), as rank 0 timed them
    writes_s: float = 0.0  # the same, as this process timed them (agreed into save_s at the next pass)
    spent: dict[str, float] = field(default_factory=lambda: {"evaluation": 0.0, "saving": 0.0})

    def reserve(self, p: Progress) -> float:
        """Seconds kept back from the budget for what follows the last step: the final pass (unless this
        step was just scored) and the last save."""
        return (self.pass_s if p.last_eval_step != p.step else 0.0) + self.save_s

    def stop_reason(self, cfg: Limits, p: Progress, windows_per_epoch: int) -> str | None:
        return stop_reason(cfg, p, windows_per_epoch, self.reserve(p))

    def learning_rate(self, cfg: Limits, p: Progress, windows_per_epoch: int) -> float:
        return learning_rate(cfg, p, windows_per_epoch, self.pass_s + self.save_s)

    def evaluates(self, cfg: Limits, p: Progress) -> bool:
        """Whether this step is a scheduled validation pass that the budget leaves room for."""
        return p.step % cfg.eval_every == 0 and not final_pass_is_near(cfg, p.elapsed, self.pass_s, self.save_s)

    def timed_pass(self, pass_s: float, save_s: float) -> None:
        """The pass just made took `pass_s` (the ranks' mean); the writes after the one before took `save_s`."""
        self.pass_s, self.save_s = pass_s, save_s
        self.spent["evaluation"] += pass_s

    def saved(self, seconds: float) -> None:
        self.spent["saving"] += seconds
