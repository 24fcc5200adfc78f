"""Training overhead: charnn's real training loop against a bare loop of the same shape, same process.

    python benchmarks/training.py [--repeats 3] [--record] [--sizes small,medium,large,gru]

bare: embedding -> nn.LSTM/GRU -> linear -> cross-entropy -> AdamW on random ids, nothing else.
charnn: `train.train` for the same number of steps: windows read from a memory-mapped
cache, state carry, clipping, schedule, metrics, checkpoints and (disabled) bar.
Rates are marginal: tokens of N steps / (time of 2N steps - time of N steps), so
per-run fixed costs (building the optimizer, the final evaluation and checkpoint,
which a real run pays once per --eval-every steps) cancel out of both loops.
Both run after `tune_cpu_allocator()` (charnn applies it when training on CPU); a
separate row shows the bare loop in a fresh process with glibc's default allocator.
Also: 1 vs 2 threads and oneDNN on/off for the medium model.

`--compare-with DIR` (e.g. a `git worktree` of an older commit) instead times the whole `charnn train` command
of this checkout and of DIR's, alternating, on the same text file: the default model and schedule written out
as options (GRU 2x384, embed 64, batch 64 x 64, dropout 0.1, average 0.995), at two step counts; marginal
steps/s = extra steps / extra wall time (medians), so start-up, the corpus and the final pass and save cancel
out. "Not slower than before" is then one ratio from one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", message="TF32")

from benchmarks.common import marginal_rate, median_time, report, table  # noqa: E402
from charnn.device import tune_cpu_allocator  # noqa: E402
from charnn.model.network import CharRNN, ModelConfig  # noqa: E402
from charnn.run import checkpoint  # noqa: E402
from charnn.run.config import TrainConfig  # noqa: E402
from charnn.text.tokenizer import CharTokenizer  # noqa: E402
from charnn.training.loop import train  # noqa: E402

VOCAB = 65
# name: (cell, layers, hidden, embed, batch, seq, steps)
SIZES = {
    "small": ("lstm", 2, 128, 64, 64, 128, 30),
    "medium": ("lstm", 2, 512, 128, 64, 128, 8),
    "large": ("lstm", 3, 1024, 128, 32, 64, 4),
    "gru": ("gru", 2, 512, 128, 64, 128, 8),
}


def bare_loop(cell: str, layers: int, hidden: int, embed: int, batch: int, seq: int, steps: int) -> None:
    torch.manual_seed(0)
    rnn_cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    emb, rnn, head = torch.nn.Embedding(VOCAB, embed), rnn_cls(embed, hidden, layers, batch_first=True), \
        torch.nn.Linear(hidden, VOCAB)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(steps):
        ids = torch.randint(0, VOCAB, (batch, seq + 1))
        out, _ = rnn(emb(ids[:, :-1]))
        loss = F.cross_entropy(head(out).flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def charnn_loop(cell: str, layers: int, hidden: int, embed: int, batch: int, seq: int, steps: int,
                ids: np.ndarray, val: np.ndarray, run_dir: Path, amp: bool = False) -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=VOCAB, cell=cell, layers=layers, hidden=hidden, embed=embed, dropout=0.0))
    cfg = TrainConfig(batch_size=batch, seq_len=seq, max_steps=steps, eval_every=10**9, amp=amp, ema=0.0)  # as the bare loop
    train(model, cfg, ids, val, run_dir, torch.device("cpu"), show_progress=False)


# `charnn train`'s defaults (config.py's ModelConfig/TrainConfig at 12cf33b), as options both checkouts take.
DEFAULT_RUN = ["--cell", "gru", "--layers", "2", "--hidden", "384", "--embed", "64", "--dropout", "0.1",
               "--batch-size", "64", "--seq-len", "64", "--ema", "0.995", "--val-frac", "0.02", "--eval-every", "100000"]


def ab_command(other: Path, steps: tuple[int, int], repeats: int) -> tuple[float, float, list[float]]:
    """Marginal steps/s of `charnn train TEXT --max-steps N` from this checkout and from `other`, each round's four
    commands back to back (this short, this long, other short, other long); and each round's ratio of the
    two checkouts' extra time (other / this: above 1, this checkout is faster)."""
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)  # 2 MB of words: speed does not depend on what the text says
        words = ["".join(chr(97 + c) for c in rng.integers(0, 26, size=n)) for n in rng.integers(1, 9, size=2000)]
        (work / "text.txt").write_text(" ".join(rng.choice(words, size=400_000)) + "\n", encoding="utf-8")
        times: dict[Path, tuple[list[float], list[float]]] = {here: ([], []), other: ([], [])}
        for _ in range(repeats + 1):  # the first round (caches, page cache) is not counted
            for source in (here, other):
                for k, n in enumerate(steps):
                    cmd = [sys.executable, "-m", "charnn", "train", "text.txt", "--max-steps", str(n), *DEFAULT_RUN,
                           "--name", "ab", "--overwrite", "--quiet", "--checkpoints-dir", str(work / "checkpoints"),
                           "--corpora-dir", str(work / f"corpora-{source.name}")]  # each checkout its own cache
                    start = time.perf_counter()
                    subprocess.run(cmd, cwd=work, env={**os.environ, "PYTHONPATH": str(source)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                    times[source][k].append(time.perf_counter() - start)
        extra = {s: [b - a for a, b in zip(t[0][1:], t[1][1:], strict=True)] for s, t in times.items()}
    rate = {s: (steps[1] - steps[0]) / statistics.median(e) for s, e in extra.items()}
    return rate[here], rate[other], [o / h for h, o in zip(extra[here], extra[other], strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="small,medium,large,gru")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    parser.add_argument("--bare-only", nargs=7, help=argparse.SUPPRESS)  # child process: glibc defaults
    parser.add_argument("--compare-with", type=Path, help="another checkout whose `charnn train` to time beside this one")
    parser.add_argument("--steps", default="10,40", help="--compare-with: the two step counts")
    args = parser.parse_args()
    if args.compare_with is not None:
        counts = tuple(int(n) for n in args.steps.split(","))
        mine, theirs, ratios = ab_command(args.compare_with.resolve(), (counts[0], counts[1]), args.repeats)
        rows = [["charnn train, this checkout", f"{mine:.3f}"],
                [f"charnn train, {args.compare_with}", f"{theirs:.3f}"],
                ["this checkout / it (marginal rates)", f"**{mine / theirs:.3f}x**"],
                ["per round (its extra time / this one's)", ", ".join(f"{r:.3f}" for r in ratios)]]
        note = (f"Whole `charnn train TEXT --max-steps N` (2 MB of words, {' '.join(DEFAULT_RUN)}) for N = {counts[0]} and "
                f"{counts[1]}, the two checkouts alternating, {args.repeats} rounds after one uncounted; marginal steps/s "
                "= extra steps / the median extra wall time.")
        report("Training, the command A/B (benchmarks/training.py --compare-with)",
               [table(["whole process", "marginal steps/s"], rows), note], args.record)
        return 0
    if args.bare_only:
        cell, *nums = args.bare_only
        shape = (cell, *map(int, nums))
        t = median_time(lambda: bare_loop(*shape), args.repeats)
        print(shape[4] * shape[5] * shape[6] / t)
        return 0
    work = Path(tempfile.mkdtemp(prefix="charnn-bench-"))
    rng = np.random.default_rng(0)
    ids = np.memmap(work / "ids", dtype=np.uint8, mode="w+", shape=(4_000_000,))
    ids[:] = rng.integers(0, VOCAB, size=len(ids), dtype=np.uint8)
    ids.flush()
    ids = np.memmap(work / "ids", dtype=np.uint8, mode="r", shape=(4_000_000,))
    tok = CharTokenizer("".join(chr(32 + i) for i in range(VOCAB)))
    run_dir = work / "run"
    checkpoint.create(run_dir, {"model": {}, "train": {}}, tok, overwrite=False)
    tune_cpu_allocator()
    rows = []
    for name in args.sizes.split(","):
        shape = SIZES[name]
        cell, layers, hidden, _, batch, seq, steps = shape
        val = ids[: batch * seq + 1]
        bare = marginal_rate(lambda k, s=shape[:6]: bare_loop(*s, k), steps, batch * seq, args.repeats)
        ours = marginal_rate(lambda k, s=shape[:6], v=val: charnn_loop(*s, k, ids, v, run_dir), steps, batch * seq,
                             args.repeats)
        child = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--bare-only",
                                *map(str, shape)], capture_output=True, text=True, check=True)
        default_alloc = float(child.stdout.strip().splitlines()[-1])
        rows.append([name, f"{cell} {layers}x{hidden}", f"{batch}x{seq}", f"{bare:,.0f}", f"{ours:,.0f}",
                     f"{ours / bare:.3f}x", f"{default_alloc:,.0f}"])
    overhead = table(["size", "model", "batch", "bare (tok/s)", "charnn (tok/s)", "charnn / bare",
                      "bare, glibc default malloc"], rows)
    medium = SIZES["medium"]
    tokens = medium[4] * medium[5] * medium[6]
    knob_rows = []
    for threads in (1, 2):
        for onednn in (True, False):
            torch.set_num_threads(threads)
            with torch.backends.mkldnn.flags(enabled=onednn):
                rate = tokens / median_time(lambda: bare_loop(*medium), args.repeats)
            knob_rows.append([str(threads), "on" if onednn else "off", f"{rate:,.0f}"])
    torch.set_num_threads(2)
    knobs = table(["threads", "oneDNN", "medium bare loop (tok/s)"], knob_rows)
    note = (f"Marginal rates from medians of {args.repeats} runs of N and 2N steps after one warm-up; "
            "target charnn / bare >= 0.95 at every size.")
    report("Training overhead (benchmarks/training.py)", [overhead, knobs, note], args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
