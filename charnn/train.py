"""Training: `TrainConfig` and the truncated-BPTT loop.

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
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from charnn import board, checkpoint
from charnn.board import Board
from charnn.data import Streams
from charnn.device import AMP_DEVICES, amp_dtype, tune_cpu_allocator
from charnn.distributed import ProcessGroup
from charnn.ema import WeightAverage
from charnn.errors import TrainingError, WriteError
from charnn.evaluation import evaluate
from charnn.model import CharRNN, State, detach_state

MAX_BAD_STEPS = 5  # consecutive non-finite steps before giving up


@dataclass
class TrainConfig:
    batch_size: int = 64
    seq_len: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 50  # steps of linear warm-up
    clip: float = 1.0
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds of training (evaluation included); the loop keeps back the final pass's
    eval_pass_estimate: float = 0.0  # seconds one validation pass is expected to take, until one is timed (recipe)
    eval_every: int = 200
    patience: int = 0  # stop after this many evaluations without a new best (0: never)
    val_frac: float = 0.1
    seed: int = 1337
    amp: bool = False  # bf16 autocast for the training steps, on CUDA or CPU (see amp_dtype); evaluation stays fp32
    tensorboard: str | None = None  # also write TensorBoard scalars (board.log_dir); None: off
    ema: float = 0.0  # evaluate (and keep as best) an exponential moving average of the weights; 0: off
    epoch_offset: bool = True  # each epoch after the first shifts the stream layout (Streams.epoch_offset)

    def validate(self) -> list[str]:
        problems = []
        for name in ("batch_size", "seq_len", "eval_every"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"--lr {self.lr} must be a positive number")
        if self.weight_decay < 0:
            problems.append(f"--weight-decay {self.weight_decay} must be 0 or more")
        if self.warmup < 0 or self.patience < 0:
            problems.append("--warmup and --patience must be 0 or more")
        if not self.clip > 0:
            problems.append(f"--clip {self.clip} must be positive")
        if not 0.0 <= self.ema < 1.0:
            problems.append(f"--ema {self.ema} must be in [0, 1) (0: off; 0.999 averages ~1000 steps)")
        if not 0.0 < self.val_frac < 1.0:
            problems.append(f"--val-frac {self.val_frac} must be between 0 and 1 (exclusive)")
        for name, value in (("epochs", self.epochs), ("max_steps", self.max_steps), ("time", self.time_budget)):
            if value is not None and not value > 0:
                problems.append(f"--{name.replace('_', '-')} {value} must be positive")
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            problems.append("no stopping rule — give --time, --max-steps or --epochs")
        if self.tensorboard is not None and (why := board.missing()):
            problems.append(why)
        return problems


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


@dataclass
class TrainResult:
    progress: Progress
    last_val: float | None
    stopped_by: str  # "max-steps", "epochs", "time", "patience" or "interrupted"
    world_size: int = 1
    is_writer: bool = True  # rank 0 (or a single process): the one that reports
    checksum: str | None = None  # weights digest, checked identical on every rank (torchrun only)
    spent: dict[str, float] | None = None  # this session's seconds in "evaluation" passes and "saving"


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


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop finishes its step and saves."""

    def __init__(self) -> None:
        self.raised = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            self.raised = True

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def train(
    model: CharRNN,
    cfg: TrainConfig,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    run_dir: Path,
    device: torch.device,
    *,
    resume: dict[str, Any] | None = None,
    show_progress: bool = True,
    should_stop: Callable[[Progress], bool] | None = None,
    group: ProcessGroup | None = None,
    deadline: float | None = None,
) -> TrainResult:
    """Train `model` in place, writing checkpoints and metrics into `run_dir`.

    `resume` is the payload of `latest.pt`; `should_stop` is polled after each
    step (tests use it to interrupt at an exact step). `show_progress` turns on
    the tqdm bar (on a terminal) and one line per evaluation. `group` is the
    torchrun process group (None: a single process). `deadline` (a `time.perf_counter()`
    reading) makes `cfg.time_budget` wall clock: the loop's budget is what is left of it.
    """
    world = group or ProcessGroup.solo(device)
    writer = world.is_writer
    show_progress = show_progress and writer
    if device.type == "cpu":
        tune_cpu_allocator()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the head's matmul; cuDNN RNNs allow TF32 by default
        torch.backends.cudnn.allow_tf32 = True
    assert not cfg.amp or device.type in AMP_DEVICES, "api checks --amp against the device before any write"
    streams = Streams(train_ids, cfg.batch_size, cfg.seq_len, world.block(cfg.batch_size))
    model.to(device).train()
    net = world.wrap(model)  # DDP under torchrun: backward averages gradients over ranks
    if cfg.amp and show_progress:
        ran = str(amp_dtype(model, device)).removeprefix("torch.")
        tqdm.write("amp: bf16 autocast; " + ("the recurrent layers multiply in bf16 and return float32" if
                                             device.type == "cpu" else f"the recurrent kernel runs in {ran}"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    p = Progress()
    state: State = model.init_state(streams.rows, device)
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        if average is not None:
            average.load(resume.get("ema"))
        p = Progress(**resume["progress"])
        state = tuple(s[:, streams.block].to(device) for s in resume["state"])  # (L, B, H) -> this rank's (L, b, H)
        _restore_rng(resume, world.rank, cfg.seed, device)
    else:
        torch.manual_seed(cfg.seed + world.rank)  # rank 0 = the single-process stream; others draw their own masks

    def epoch_offset() -> int:  # where the current epoch's layout starts (the same on every rank and resume)
        return streams.epoch_offset(cfg.seed, p.epoch) if cfg.epoch_offset else 0

    offset = epoch_offset()
    if writer:
        checkpoint.truncate_metrics(run_dir, p.step)  # records a killed process wrote after its last full save
    flag = _StopFlag()
    last_val: float | None = None
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    # The bar counts thousandths of the run, so its ETA works for step, epoch and time limits alike.
    bar = tqdm(total=1000, disable=None if show_progress else True,
               bar_format="{percentage:3.0f}%|{bar:20}| {elapsed}<{remaining}{postfix}", dynamic_ncols=True)
    shown_at = 0.0
    session_start = time.perf_counter() - p.elapsed
    # A wall-clock budget: what is left of it now, as rank 0 reads it, is the loop's; so whatever came before
    # (the first optimizer imports torch's compiler, ~1 s) counts too, and every rank stops at the same step.
    if deadline is not None:
        cfg.time_budget = world.broadcast(p.elapsed + deadline - time.perf_counter())
    rate_mark = (time.perf_counter(), p.tokens)

    spent = {"evaluation": 0.0, "saving": 0.0}  # this session's seconds in validation passes and in writes
    save_s = 0.0  # how long the writes after a validation pass took (best, metrics, latest), agreed by the ranks
    writes_s = 0.0  # the same, as this process measured it after the last pass

    def save_latest() -> None:
        # Collective: every rank hands over its streams' state and its RNG; rank 0 writes them in
        # the single-process layout (L, B, H), so any number of processes can resume from it.
        started = time.perf_counter()
        full_state = tuple(world.gather_rows(s) for s in state)
        rngs = world.gather_objects(torch.get_rng_state())
        cuda_rngs = world.gather_objects(torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
        if writer:
            checkpoint.save_tensors(run_dir / checkpoint.LATEST, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": p.step,
                "progress": vars(p).copy(), "state": full_state, "rng": rngs[0], "cuda_rng": cuda_rngs[0],
                "world_size": world.world_size, "rng_ranks": rngs, "cuda_rng_ranks": cuda_rngs,
                "ema": average.state() if average is not None else None,
            })
        spent["saving"] += time.perf_counter() - started

    pass_s = cfg.eval_pass_estimate  # how long the last validation pass took (the same on every rank)

    def run_eval() -> None:
        nonlocal last_val, loss_sum, loss_count, rate_mark, pass_s, save_s, writes_s
        started = time.perf_counter()
        with average.applied() if average is not None else nullcontext():  # best.pt gets what was evaluated
            val = evaluate(model, val_ids, cfg.seq_len, device, world)
            best_weights = {k: v.clone() for k, v in model.state_dict().items()} if val < p.best_val and writer else None
        last_val = val
        now = time.perf_counter()
        tps = (p.tokens - rate_mark[1]) / max(now - rate_mark[0], 1e-9)
        # The pass's duration rides along as the ranks' mean, so all of them skip the same passes.
        # The writer's time for the last pass's writes rides along too (the others add 0): every rank keeps
        # back the same time for the final pass and save, so all of them stop at the same step.
        summed_loss, summed_count, summed_s, save_s = world.sum([float(loss_sum), float(loss_count), now - started,
                                                                 writes_s if writer else 0.0])
        pass_s = summed_s / world.world_size
        spent["evaluation"] += pass_s
        writes = time.perf_counter()
        record = {
            "step": p.step, "epoch": round(p.epoch + p.window / streams.n_windows, 4), "tokens": p.tokens,
            "elapsed": round(p.elapsed, 3), "train_loss": summed_loss / summed_count if summed_count else None,
            "val_loss": val, "val_bpc": val / math.log(2), "lr": optimizer.param_groups[0]["lr"],
            "tokens_per_s": round(tps, 1),
        }
        if val < p.best_val:
            p.best_val, p.evals_since_best = val, 0
            if best_weights is not None:
                checkpoint.save_tensors(run_dir / checkpoint.BEST, {"model": best_weights, "step": p.step,
                                                                     "val_loss": val})
        else:
            p.evals_since_best += 1
        if writer:
            checkpoint.append_metrics(run_dir, record)
            if events is not None:
                events.record(record)
        p.last_eval_step = p.step
        save_latest()
        writes_s = time.perf_counter() - writes
        if show_progress:
            train_loss = record["train_loss"] if record["train_loss"] is not None else float("nan")
            tqdm.write(f"step {p.step:>6}  train {train_loss:.4f}  val {val:.4f} nats ({record['val_bpc']:.3f} bpc)"
                       f"  {tps:,.0f} tok/s  lr {record['lr']:.2e}")
        loss_sum, loss_count = torch.zeros((), device=device), 0
        rate_mark = (time.perf_counter(), p.tokens)

    stopped_by = "interrupted"
    bad_in_row = 0
    events = Board(board.log_dir(cfg.tensorboard, run_dir), p.step) if writer and cfg.tensorboard is not None else None
    if events is not None and show_progress:
        tqdm.write(f"tensorboard: {events.folder} (view with: tensorboard --logdir {events.folder})")
    with flag.installed(), bar, events.writer if events is not None else nullcontext(), _resumable(run_dir):
        while True:
            reserve = (pass_s if p.last_eval_step != p.step else 0.0) + save_s
            if (reason := stop_reason(cfg, p, streams.n_windows, reserve)) is not None:
                stopped_by = reason
                if p.last_eval_step != p.step:
                    run_eval()
                break
            if p.window >= streams.n_windows:  # new epoch: streams restart, state resets
                p.epoch, p.window = p.epoch + 1, 0
                state = model.init_state(streams.rows, device)
                offset = epoch_offset()
            lr = lr_at(cfg, p.step, fraction_done(cfg, p, streams.n_windows, pass_s + save_s))
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            x, y = streams.window(p.window, offset=offset)
            if device.type == "cuda":  # pinned pages let the copy run asynchronously
                x, y = x.pin_memory(), y.pin_memory()
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                logits, new_state = net(x, state)  # (b, T, V)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            # The norm of the all-reduced gradients is the same number on every rank, and a
            # non-finite loss always gives non-finite gradients: every rank skips the same steps.
            if torch.isfinite(grad_norm):
                optimizer.step()
                if average is not None:
                    average.update()
                state = detach_state(new_state)
                loss_sum += loss.detach()
                loss_count += 1
                bad_in_row = 0
            else:  # skip: weights and state stay as they were
                p.skipped += 1
                bad_in_row += 1
                if bad_in_row >= MAX_BAD_STEPS:
                    save_latest()
                    raise TrainingError(
                        f"the loss diverged ({bad_in_row} non-finite steps in a row at step {p.step}) — lower --lr "
                        f"(now {cfg.lr:g}) or --clip and resume; best/latest hold the last finite weights")
            p.step += 1
            p.window += 1
            p.tokens += cfg.batch_size * cfg.seq_len  # all ranks' streams
            stop_asked = flag.raised or (should_stop is not None and should_stop(p))
            stop_asked, p.elapsed = world.agree(stop_asked, time.perf_counter() - session_start)
            if p.step % cfg.eval_every == 0 and not final_pass_is_near(cfg, p.elapsed, pass_s, save_s):
                run_eval()
            now = time.perf_counter()
            if now - shown_at > 0.5 and not bar.disable:
                shown_at = now
                done = fraction_done(cfg, p, streams.n_windows)
                bar.n = min(1000, int(done * 1000))
                tps = (p.tokens - rate_mark[1]) / max(now - rate_mark[0], 1e-9)
                bar.set_postfix_str(f"step {p.step} loss {loss.item():.3f} val "
                                    f"{'-' if last_val is None else f'{last_val:.3f}'} {tps:,.0f} tok/s lr {lr:.2e}")
            if stop_asked:
                save_latest()
                break
    checksum = world.weights_checksum(model) if world.active else None
    return TrainResult(p, last_val, stopped_by, world.world_size, writer, checksum, spent)


@contextmanager
def _resumable(run_dir: Path) -> Iterator[None]:
    """A failed write (disk full, read-only, quota) ends the run with the command that continues it."""
    try:
        yield
    except WriteError as e:
        default = run_dir.parent.resolve() == Path("checkpoints").resolve()
        raise WriteError(f"{e} — then continue the run with: charnn train --resume "
                         f"{run_dir.name if default else run_dir}") from None


def _restore_rng(resume: dict[str, Any], rank: int, seed: int, device: torch.device) -> None:
    """This rank's RNG as saved; a rank the saved run did not have starts a stream of its own.

    Resuming on another number of processes is therefore correct but not bit-exact: the
    dropout masks of the re-sharded streams differ from the ones the old layout would draw.
    """
    rngs = resume.get("rng_ranks") or [resume["rng"]]
    cuda_rngs = resume.get("cuda_rng_ranks") or [resume.get("cuda_rng")]
    if rank < len(rngs):
        torch.set_rng_state(rngs[rank])
    else:
        torch.manual_seed(seed + rank + 1_000_003 * int(resume["progress"]["step"]))
    if device.type == "cuda" and rank < len(cuda_rngs) and cuda_rngs[rank] is not None:
        torch.cuda.set_rng_state(cuda_rngs[rank], device)
