"""Training: the truncated-BPTT loop (its `TrainConfig` is run/config.py's, beside the record that keeps it).

AdamW; linear warm-up then cosine decay to 10% of the peak rate, following the
fraction of the run that is done (steps, epochs or wall-clock budget, whichever
ends first); global-norm clipping; a full pass over the validation split every
`eval_every` steps (`evaluation.evaluate`); `best` kept by validation loss and `latest` (with the whole
training state) saved at every evaluation. SIGINT/SIGTERM finish the current
step, save `latest` and return, so `--resume` continues bit-for-bit (CPU).

Under torchrun the same loop runs on every rank (`distributed.ProcessGroup`): each
rank trains its contiguous block of the B streams inside DistributedDataParallel,
all ranks agree once per step whether to stop (and on rank 0's clock), evaluation
is sharded and summed, and rank 0 alone writes files and prints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from charnn.device import AMP_DEVICES, tune_for
from charnn.distributed import ProcessGroup
from charnn.errors import TrainingError
from charnn.model.evaluation import evaluate, evaluate_voices
from charnn.model.network import CharRNN, amp_dtype
from charnn.run import checkpoint
from charnn.run.config import TrainConfig
from charnn.training import snapshot
from charnn.training.cursor import Cursor
from charnn.training.interrupt import StopFlag, resumable
from charnn.training.reporter import Reporter
from charnn.training.schedule import Keeper, Progress, fraction_done, patience_line, scored
from charnn.training.update import Update

MAX_BAD_STEPS = 5  # consecutive non-finite steps before giving up


@dataclass
class TrainResult:
    progress: Progress
    last_val: float | None
    stopped_by: str  # "max-steps", "epochs", "time", "patience" or "interrupted"
    world_size: int = 1
    is_writer: bool = True  # rank 0 (or a single process): the one that reports
    checksum: str | None = None  # weights digest, checked identical on every rank (torchrun only)
    spent: dict[str, float] | None = None  # this session's seconds in "evaluation" passes and "saving"


@dataclass
class Fresh:
    """Start from the random weights the model was built with (seeded by the caller)."""


@dataclass
class FromParent:
    """Start from a parent run's weights (already in the model, the vocabulary grown): the first
    validation pass scores them before step 1, so metrics begin with the head start."""

    name: str


@dataclass
class Resume:
    """Continue from `latest.pt`: `payload` is its content (`Trainer.payload`'s layout)."""

    payload: dict[str, Any]


Start = Fresh | FromParent | Resume


def train(
    model: CharRNN,
    cfg: TrainConfig,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    run_dir: Path,
    device: torch.device,
    *,
    start: Start | None = None,
    show_progress: bool = True,
    should_stop: Callable[[Progress], bool] | None = None,
    group: ProcessGroup | None = None,
    deadline: float | None = None,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
    preview: Callable[[CharRNN], str] | None = None,
) -> TrainResult:
    """Train `model` in place, writing checkpoints and metrics into `run_dir`.

    `start` says how the run begins (default `Fresh`); `should_stop` is polled after each
    step (tests use it to interrupt at an exact step). `show_progress` turns on
    the tqdm bar (on a terminal) and one line per evaluation. `group` is the
    torchrun process group (None: a single process). `deadline` (a `time.perf_counter()`
    reading) makes `cfg.time_budget` wall clock: the loop's budget is what is left of it. A voiced model
    trains on `labels`: the voice of every character of the training and the validation split (voices.py).
    `preview(model)` is shown after each validation pass: what the model writes now (session.py's `previewer`).
    """
    trainer = Trainer(model, cfg, train_ids, val_ids, run_dir, device, show_progress=show_progress,
                      should_stop=should_stop, group=group, labels=labels, preview=preview)
    return trainer.run(start or Fresh(), deadline)


class Trainer:
    """One session of a run, as the algorithm: `begin` one of three ways, then `step` until a stop reason, with
    `evaluate` (which also `save`s) every `eval_every` steps and once at the end.

    Its parts: the `Cursor` (cursor.py: the window each step reads, the streams' hidden state), the `Update`
    (update.py: one step's arithmetic, the optimizer and the weight average, the training-loss tally), the
    `Keeper` (schedule.py: the time budget's reserve, rate and skipped passes), the `Reporter` (reporter.py: the
    observers of each evaluation record) and `snapshot.snapshot`/`restore` (latest.pt's training state).
    """

    def __init__(self, model: CharRNN, cfg: TrainConfig, train_ids: np.ndarray, val_ids: np.ndarray,
                 run_dir: Path, device: torch.device, *, show_progress: bool = True,
                 should_stop: Callable[[Progress], bool] | None = None, group: ProcessGroup | None = None,
                 labels: tuple[np.ndarray, np.ndarray] | None = None,
                 preview: Callable[[CharRNN], str] | None = None):
        self.world = group or ProcessGroup.solo(device)
        self.preview = preview  # what the model writes, shown after each pass (a single process only)
        self.writer = self.world.is_writer
        self.show = show_progress and self.writer
        self.model, self.cfg, self.val_ids, self.run_dir, self.device = model, cfg, val_ids, run_dir, device
        self.should_stop = should_stop
        tune_for(device)
        assert not cfg.amp or device.type in AMP_DEVICES, "api checks --amp against the device before any write"
        self.cursor = Cursor(model, train_ids, labels[0] if labels else None, batch_size=cfg.batch_size,
                             seq_len=cfg.seq_len, block=self.world.block(cfg.batch_size), seed=cfg.seed,
                             epoch_offset=cfg.epoch_offset, no_voice_share=cfg.no_voice_share, device=device)
        self.val_labels = labels[1] if labels else None
        model.to(device).train()
        self.net = self.world.wrap(model)  # DDP under torchrun: backward averages gradients over ranks
        if cfg.amp and self.show:
            ran = str(amp_dtype(model, device)).removeprefix("torch.")
            tqdm.write("amp: bf16 autocast; " + ("the recurrent layers multiply in bf16 and return float32" if
                                                 device.type == "cpu" else f"the recurrent kernel runs in {ran}"))
        self.update = Update(model, self.net, lr=cfg.lr, weight_decay=cfg.weight_decay, clip=cfg.clip, amp=cfg.amp,
                             ema=cfg.ema)
        self.p = Progress()
        self.last_val: float | None = None
        self.keeper = Keeper(pass_s=cfg.eval_pass_estimate)
        self.report = Reporter(run_dir, self.writer, self.show, None, 0)  # run() opens the session's own

    def begin(self, start: Start) -> None:
        if isinstance(start, Resume):
            self.p, state = snapshot.restore(start.payload, self.update.optimizer, self.update.average, self.world,
                                               self.cfg.seed, self.device)
            self.cursor.restore(state)
        else:
            torch.manual_seed(self.cfg.seed + self.world.rank)  # rank 0 = the single-process stream
        self.cursor.start(self.p)
        if self.writer:
            checkpoint.truncate_metrics(self.run_dir, self.p.step)  # records a killed process wrote after its last save

    def run(self, start: Start, deadline: float | None = None) -> TrainResult:
        self.begin(start)
        flag = StopFlag()
        report = self.report = Reporter(self.run_dir, self.writer, self.show, self.cfg.tensorboard, self.p.step)
        session_start = time.perf_counter() - self.p.elapsed
        # A wall-clock budget: what is left of it now, as rank 0 reads it, is the loop's; so whatever came before
        # (the first optimizer imports torch's compiler, ~1 s) counts too, and every rank stops at the same step.
        if deadline is not None:
            self.cfg = replace(self.cfg, time_budget=self.world.broadcast(self.p.elapsed + deadline - time.perf_counter()))
        cfg, p, keeper, windows = self.cfg, self.p, self.keeper, self.cursor.n_windows
        stopped_by = "interrupted"
        with flag.installed(), report.opened(p.tokens), resumable(self.run_dir):
            if cfg.stops_after and not isinstance(start, Resume):
                report.say(patience_line(cfg.stops_after))
            if isinstance(start, FromParent):
                self.evaluate(f"from {start.name}: val {{val:.4f}} nats ({{bpc:.3f}} bpc) on the new text "
                              "before fine-tuning")
            while (reason := keeper.stop_reason(cfg, p, windows)) is None:
                loss = self.step()
                stop_asked = flag.raised or (self.should_stop is not None and self.should_stop(p))
                stop_asked, p.elapsed = self.world.agree(stop_asked, time.perf_counter() - session_start)
                if keeper.evaluates(cfg, p):
                    self.evaluate()
                report.tick(fraction_done(cfg, p, windows), p.step, loss, self.last_val, p.tokens, self.update.lr)
                if stop_asked:
                    self.save()
                    break
            else:
                stopped_by = reason
                if p.last_eval_step != p.step:
                    self.evaluate()
                if reason == "patience":
                    self.end_on_best()
        checksum = self.world.weights_checksum(self.model) if self.world.active else None
        return TrainResult(p, self.last_val, stopped_by, self.world.world_size, self.writer, checksum, keeper.spent)

    def step(self) -> torch.Tensor:
        """One optimizer step on the next window of every stream; returns its loss (a 0-d tensor)."""
        cfg, p = self.cfg, self.p
        x, y, voices = self.cursor.next(p)  # turns the epoch first where a pass ended
        lr = self.keeper.learning_rate(cfg, p, self.cursor.n_windows)
        loss, new_state = self.update(x, y, self.cursor.state, voices, lr)
        if new_state is not None:
            self.cursor.state = new_state
        else:  # skipped: weights and state stay as they were
            p.skipped += 1
            if self.update.bad_in_row >= MAX_BAD_STEPS:
                self.save()
                raise TrainingError(
                    f"the loss diverged ({self.update.bad_in_row} non-finite steps in a row at step {p.step}) — lower "
                    f"--lr (now {cfg.lr:g}) or --clip and resume; best/latest hold the last finite weights")
        p.step += 1
        p.window += 1
        p.tokens += cfg.batch_size * cfg.seq_len  # all ranks' streams
        return loss

    def evaluate(self, line: str | None = None) -> None:
        """A full validation pass: its record to the reporters, `best` kept, `latest` saved.

        `line` replaces the usual printed line (formatted with the pass's `val` and `bpc`)."""
        p, world, keeper = self.p, self.world, self.keeper
        started = time.perf_counter()
        val, by_voice, best_weights = self._score()
        self.last_val = val
        tps = self.report.tokens_per_s(p.tokens)
        # The pass's duration rides along as the ranks' mean, so all of them skip the same passes; the writer's
        # time for the last pass's writes too (the others add 0), so every rank keeps back the same time for the
        # final pass and save and all of them stop at the same step.
        loss_sum, loss_count = self.update.train_loss()
        summed_loss, summed_count, summed_s, save_s = world.sum(
            [loss_sum, float(loss_count), time.perf_counter() - started, keeper.writes_s if self.writer else 0.0])
        keeper.timed_pass(summed_s / world.world_size, save_s)
        writes = time.perf_counter()
        record: dict[str, Any] = {
            "step": p.step, "epoch": round(p.epoch + p.window / self.cursor.n_windows, 4), "tokens": p.tokens,
            "elapsed": round(p.elapsed, 3), "train_loss": summed_loss / summed_count if summed_count else None,
            "val_loss": val, "val_bpc": val / math.log(2), "lr": self.update.lr, "tokens_per_s": round(tps, 1),
            **({"val_voices": by_voice} if by_voice else {}),
        }
        if scored(self.cfg, p, val, self.update.lr) and best_weights is not None:
            checkpoint.save_tensors(self.run_dir / checkpoint.BEST, {"model": best_weights, "step": p.step,
                                                                     "val_loss": val})
        self.report.evaluated(record, line)
        if self.preview is not None and self.show and not self.world.active:
            self.report.say(f"  writes: {self.written()!r}")
        self.save()
        keeper.writes_s = time.perf_counter() - writes
        self.report.restart_rate(p.tokens)

    def written(self) -> str:
        """A few characters of what the weights `best.pt` would get write now (`preview`); the training stream, its
        random state and the model's mode are left as they were (the preview draws from its own generator)."""
        assert self.preview is not None
        with self.update.average.applied() if self.update.average is not None else nullcontext():
            try:
                return self.preview(self.model)
            finally:
                self.model.train()

    def _score(self) -> tuple[float, dict[str, float], dict[str, torch.Tensor] | None]:
        """The validation loss of the weights `best.pt` would get (the average's, where there is one); in a
        voiced run each character read in its own voice, and each voice's loss; and a copy of those weights
        (on the writer) where they are a new best."""
        with self.update.average.applied() if self.update.average is not None else nullcontext():
            if self.val_labels is None:
                val, by_voice = evaluate(self.model, self.val_ids, self.cfg.seq_len, self.device, self.world), {}
            else:
                val, rows = evaluate_voices(self.model, self.val_ids, self.val_labels, self.cfg.seq_len, self.device,
                                            self.world)
                by_voice = {name: loss for name, loss in zip(self.model.config.voices, rows[1:], strict=True)
                            if loss is not None}
            best = val < self.p.best_val and self.writer
            return val, by_voice, {k: v.clone() for k, v in self.model.state_dict().items()} if best else None

    def end_on_best(self) -> None:
        """After an early stop: the model (and so `latest.pt`) set back to `best.pt`'s weights, marked, so that
        `--resume` explains instead of continuing an optimizer that has moved on."""
        self.world.barrier()  # the writer saved best.pt in its last pass; every rank reads it after that
        best = checkpoint.load_tensors(self.run_dir / checkpoint.BEST)
        self.model.load_state_dict(best["model"])
        self.p.stopped_early = True
        self.save()

    def save(self) -> None:
        """Write `latest.pt` (collective under torchrun: `snapshot.snapshot`)."""
        started = time.perf_counter()
        payload = snapshot.snapshot(self.model, self.update.optimizer, self.update.average, self.p,
                                      self.cursor.state, self.world)
        if self.writer:
            checkpoint.save_tensors(self.run_dir / checkpoint.LATEST, payload)
        self.keeper.saved(time.perf_counter() - started)
