"""Beam search against plain sampling on a trained run, and what beams and new items cost as commands.

    python benchmarks/beam.py [--train-time 4m] [--work DIR] [--length 300] [--record]

The run: `charnn train shakespeare --time 4m` (built in, offline), trained here unless DIR already holds it.
From 8 primes (the first line of 8 speeches in the validation split, which the model never trained on),
each method writes `--length` characters:

- sampling at temperature 0.5 and 0.8 (seed i for prime i);
- plain beam search, width 8 (`--beam 8`);
- the stochastic beam, width 8, Gumbel-top-k at temperature 0.8 (`--beam 8 --temperature 0.8`).

For each output: its log-likelihood per character under the model (one forward pass over prime + output,
at temperature 1), the share of its words that never occur in the training split (a typo rate: words are
runs of letters and apostrophes, compared lowercased), and the share of its non-empty lines that repeat an
earlier line of the same output. Log-likelihood: the median over the 8 primes; the two shares: means.

The cost, as whole processes (`charnn sample` on the run; marginal characters per second between two sizes,
so start-up cancels out; medians of 3): sampling at 500 and 8,500 characters; `--beam 8` at 500 and
4,500; `--items 40` and `--items 400`, with and without `--new` (lines of the plays as items, the
training split looked up in the originality index, its one-off build paid by an untimed first call).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report, table
from benchmarks.finetune import train
from charnn import api
from charnn.run.corpus import validation_text

WORD = re.compile(r"[A-Za-z']+")
METHODS = {
    "sampling, T 0.5": {"temperature": 0.5},
    "sampling, T 0.8": {"temperature": 0.8},
    "beam 8": {"beam": 8, "temperature": 0.0},
    "beam 8, stochastic T 0.8": {"beam": 8, "temperature": 0.8},
}


def primes(model: api.CharModel, work: Path, count: int = 8) -> list[str]:
    """The first line of `count` speeches in the validation split: 'NAME:\\nFirst line of the speech'."""
    text = validation_text(model.run_dir, model.config, model.tokenizer, api.Paths(work / "checkpoints", work / "corpora"))
    found = re.findall(r"\n\n([A-Z][A-Za-z ]+:\n[^\n]{20,})", text)
    step = max(1, len(found) // count)
    return [f"\n\n{p}\n" for p in found[::step][:count]]


def write(model: api.CharModel, prime: str, method: dict[str, float], length: int, seed: int) -> str:
    if "beam" in method:
        beams = model.beam(prime, width=int(method["beam"]), length=length, temperature=method["temperature"], seed=seed)
        return beams.hypotheses[0].text
    text = model.generate(prime, length=length, temperature=method["temperature"], seed=seed)
    assert isinstance(text, str)
    return text


def loglik_per_char(model: api.CharModel, prime: str, text: str) -> float:
    ids = torch.tensor([model.tokenizer.encode(prime + text)])
    with torch.inference_mode():
        logits, _ = model.model(ids, model.model.init_state(1))
    logp = torch.log_softmax(logits[0, len(prime) - 1:-1].double(), dim=-1)
    chosen = logp.gather(1, ids[0, len(prime):, None])
    return float(chosen.mean())


def typo_rate(text: str, vocabulary: set[str]) -> float:
    words = [w.lower().strip("'") for w in WORD.findall(text)]
    words = [w for w in words if w]
    return sum(w not in vocabulary for w in words) / max(1, len(words))


def repeated_lines(text: str) -> float:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    seen: set[str] = set()
    repeats = 0
    for line in lines:
        repeats += line in seen
        seen.add(line)
    return repeats / max(1, len(lines))


def quality(model: api.CharModel, prompts: list[str], vocabulary: set[str],
            length: int) -> tuple[list[list[str]], dict[str, str]]:
    rows, samples = [], {}
    for name, method in METHODS.items():
        outs, started = [], time.perf_counter()
        for i, prime in enumerate(prompts):
            outs.append(write(model, prime, method, length, seed=i))
        seconds = time.perf_counter() - started
        samples[name] = prompts[0] + outs[0]
        rows.append([name, f"{statistics.median(loglik_per_char(model, p, o) for p, o in zip(prompts, outs, strict=True)):.3f}",
                     f"{statistics.mean(typo_rate(o, vocabulary) for o in outs):.1%}",
                     f"{statistics.mean(repeated_lines(o) for o in outs):.1%}",
                     f"{max(repeated_lines(o) for o in outs):.0%}",
                     f"{sum(len(o) for o in outs) / seconds:,.0f}"])
    return rows, samples


def command(run: Path, args: list[str]) -> tuple[float, int]:
    """Wall time of `charnn sample RUN ARGS` as a process, and the characters it printed."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "charnn", "sample", str(run), *args], check=True, capture_output=True,
                         text=True).stdout
    return time.perf_counter() - started, len(out)


def marginal(run: Path, small: list[str], large: list[str], repeats: int = 3) -> tuple[float, float]:
    """Characters per second of the extra work between two sizes of one command (medians), and the large one's wall."""
    command(run, small)  # warm-up (and, for --new, the originality index built once)
    pairs = [(command(run, small), command(run, large)) for _ in range(repeats)]
    extra_time = statistics.median(b[0] - a[0] for a, b in pairs)
    extra_chars = statistics.median(b[1] - a[1] for a, b in pairs)
    return extra_chars / extra_time, statistics.median(b[0] for _, b in pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-time", default="4m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/charnn-beam"))
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args()
    run = args.work / "checkpoints" / "bard"
    if not (run / "config.json").is_file():
        train(["shakespeare", "--time", args.train_time, "--name", "bard"], args.work)
    model = api.load_run(str(run), device="cpu")
    paths = api.Paths(args.work / "checkpoints", args.work / "corpora")
    index = model.originality_index(paths)
    training = "".join(map(model.tokenizer.chars.__getitem__, index.ids.tolist()))  # the training split
    vocabulary = {w.lower().strip("'") for w in WORD.findall(training)}
    prompts = primes(model, args.work)
    rows, samples = quality(model, prompts, vocabulary, args.length)
    quality_table = table(["method", "log-likelihood / char", "words not in the training text", "repeated lines",
                           "worst output's repeated lines", "chars/s (in process)"], rows)
    cost_rows = []
    for name, extra, sizes in [("sampling, T 0.8", [], ("500", "8500")), ("--beam 8", ["--beam", "8"], ("500", "4500"))]:
        rate, wall = marginal(run, ["--length", sizes[0], "--seed", "1", *extra], ["--length", sizes[1], "--seed", "1", *extra])
        cost_rows.append([name, f"{sizes[0]} → {sizes[1]} characters", f"{rate:,.0f}", f"{wall:.2f} s"])
    for name, extra in [("--items N", []), ("--items N --new", ["--new"])]:
        rate, wall = marginal(run, ["--items", "40", "--seed", "1", *extra], ["--items", "400", "--seed", "1", *extra])
        cost_rows.append([name, "40 → 400 lines", f"{rate:,.0f}", f"{wall:.2f} s"])
    cost_table = table(["command", "sizes", "marginal chars/s", "wall of the larger"], cost_rows)
    note = (f"Run: `charnn train shakespeare --time {args.train_time}` ({model.model.config.cell} "
            f"{model.model.config.layers}x{model.model.config.hidden}, step {model.step}); {len(prompts)} primes from "
            f"the validation split, {args.length} characters each; log-likelihood: median over primes; words and lines: "
            "means over primes.")
    shown = "\n\n".join(f"{name}:\n```\n{text[:400]}\n```" for name, text in samples.items())
    report("Beam search against sampling (benchmarks/beam.py)", [quality_table, cost_table, note, shown], args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
