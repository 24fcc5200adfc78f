"""Where a training session's progress goes: the observers of the loop's evaluation record.

Every validation pass makes one record (`metrics.jsonl`'s layout: step, epoch, tokens, elapsed, train and
validation loss, lr, tokens/s, and `val_voices` in a voiced run). The `Reporter` hands it to each observer:
the metrics file and TensorBoard (rank 0 only), the printed line (when progress is shown). Between passes it
keeps the bar (thousandths of the run, so its ETA works for step, epoch and time limits alike) and the
tokens/s measurement. The loop (train/loop.py) only makes records; it never writes or prints them itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from charnn.run import checkpoint
from charnn.training import board
from charnn.training.board import Board


class Reporter:
    """The observers of one session: `writer` (rank 0) writes the records, `show` prints and draws the bar."""

    def __init__(self, run_dir: Path, writer: bool, show: bool, tensorboard: str | None, step: int):
        self.run_dir, self.writer, self.show = run_dir, writer, show
        self.board = Board(board.log_dir(tensorboard, run_dir), step) if writer and tensorboard is not None else None
        self.bar: tqdm | None = None
        self.shown_at = 0.0
        self.rate_mark = (time.perf_counter(), 0)  # (clock, tokens) when the tokens/s measurement began
        # Each takes a record and the line that replaces the usual printed one (None: the usual).
        self.observers: list[Callable[[dict[str, Any], str | None], None]] = []
        if writer:
            self.observers.append(lambda record, _: checkpoint.append_metrics(run_dir, record))
        if (tensorboard_writer := self.board) is not None:
            self.observers.append(lambda record, _: tensorboard_writer.record(record))
        if show:
            self.observers.append(lambda record, line: tqdm.write(printed(record, line)))

    @contextmanager
    def opened(self, tokens: int) -> Iterator[Reporter]:
        """The bar and the TensorBoard writer for the session; tokens/s counts from `tokens`."""
        if self.board is not None:
            self.say(f"tensorboard: {self.board.folder} (view with: tensorboard --logdir {self.board.folder})")
        self.bar = tqdm(total=1000, disable=None if self.show else True,
                        bar_format="{percentage:3.0f}%|{bar:20}| {elapsed}<{remaining}{postfix}", dynamic_ncols=True)
        self.restart_rate(tokens)
        try:
            with self.bar:
                yield self
        finally:
            if self.board is not None:
                self.board.close()

    def say(self, line: str) -> None:
        """A line above the bar, when progress is shown."""
        if self.show:
            tqdm.write(line)

    def restart_rate(self, tokens: int) -> None:
        self.rate_mark = (time.perf_counter(), tokens)

    def tokens_per_s(self, tokens: int) -> float:
        """Training throughput since the last validation pass (or the session's start)."""
        return (tokens - self.rate_mark[1]) / max(time.perf_counter() - self.rate_mark[0], 1e-9)

    def tick(self, fraction: float, step: int, loss: Any, last_val: float | None, tokens: int, lr: float) -> None:
        """The bar, at most twice a second (reading `loss`, a 0-d tensor, waits for the step to finish)."""
        if self.bar is None or self.bar.disable or time.perf_counter() - self.shown_at <= 0.5:
            return
        self.shown_at = time.perf_counter()
        self.bar.n = min(1000, int(fraction * 1000))
        val = "-" if last_val is None else f"{last_val:.3f}"
        self.bar.set_postfix_str(f"step {step} loss {loss.item():.3f} val {val} {self.tokens_per_s(tokens):,.0f} "
                                 f"tok/s lr {lr:.2e}")

    def evaluated(self, record: dict[str, Any], line: str | None = None) -> None:
        """A validation pass's record, to every observer: the metrics file and TensorBoard (rank 0) and the printed
        line (`line`, formatted with the pass's `val` and `bpc`, replaces the usual one)."""
        for observe in self.observers:
            observe(record, line)


def printed(record: dict[str, Any], line: str | None = None) -> str:
    """The line a validation pass prints: `line` formatted with its `val` and `bpc`, or the usual one."""
    val, bpc = record["val_loss"], record["val_bpc"]
    if line:
        return line.format(val=val, bpc=bpc)
    train = record["train_loss"] if record["train_loss"] is not None else float("nan")
    return (f"step {record['step']:>6}  train {train:.4f}  val {val:.4f} nats ({bpc:.3f} bpc)"
            f"  {record['tokens_per_s']:,.0f} tok/s  lr {record['lr']:.2e}")
