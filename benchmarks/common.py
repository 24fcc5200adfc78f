"""Shared helpers for the benchmarks: repeated timing with medians, tables, RESULTS.md rows."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Time `a` and `b` alternately; return their median times and the median of per-pair ratios t_a / t_b.

    Alternating puts both under the same background load, so the ratio is steadier than either time.
    """
    a(), b()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb), statistics.median(x / y for x, y in zip(ta, tb, strict=True))


def marginal_rate(run: Callable[[int], object], steps: int, tokens_per_step: int, repeats: int,
                  sync: Callable[[], object] | None = None) -> float:
    """Tokens/s of one more step: N steps' tokens / (time of 2N steps - time of N steps).

    Fixed per-run costs (building the optimizer, a final evaluation and checkpoint)
    cancel out, leaving the per-step cost.
    """

    def timed(n: int) -> Callable[[], None]:
        def call() -> None:
            run(n)
            if sync is not None:
                sync()

        return call

    return steps * tokens_per_step / (median_time(timed(2 * steps), repeats) - median_time(timed(steps), repeats))


def machine() -> str:
    return (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, body: str) -> None:
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(f"\n### {title} — {time.strftime('%Y-%m-%d')} ({machine()})\n\n{body}\n")


def report(title: str, blocks: list[str], keep: bool) -> None:
    """Print the result blocks (tables, notes) and, with `keep`, append them to RESULTS.md."""
    print(machine())
    print("\n\n".join(blocks))
    if keep:
        record(title, "\n\n".join(blocks))
