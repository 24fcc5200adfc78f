"""Generation speed: charnn's sampler against naive per-character nn.LSTM loops, same process.

    python benchmarks/generation.py [--chars 400] [--repeats 5] [--record]

Model: 2-layer 512-unit LSTM, embedding 512, 65-character vocabulary (random
weights: speed does not depend on them). Every loop samples with the same
`sample_next`, so the comparison is the per-step network cost:
- naive (default): one `nn.LSTM` call per character with PyTorch's defaults (oneDNN on CPU);
- naive (oneDNN off): the same loop inside `torch.backends.mkldnn.flags(enabled=False)`;
- charnn: `sample.generate` (one primed forward, then the hand-fused CPU step).
Reported at 1 and 2 threads; then 64 parallel samples (aggregate chars/s).
Whole process: `charnn sample` run as a command on a run directory holding the same model,
at two lengths; marginal chars/s = extra characters / extra wall time (medians), so start-up
(imports, loading) cancels out. Compared with the oneDNN-off loop measured in this run, and with
`--compare-with DIR` also with the same command from another checkout (e.g. a `git worktree` of
an older commit), alternating, so "not slower than before" is measured in one run.
The engine: 16 to 128 separate requests (groups of one, each its own seed and generator) stepped
by `sample.Engine`, against the bare network step of the same model at that batch (no sampling),
through the module and through the fused step, the faster of the two as the baseline; alternating;
target >= 0.85x at 32 and 64. `--engine-only` runs just that table.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", message="TF32")

from benchmarks.common import median_time, paired, report, table  # noqa: E402
from charnn import sample  # noqa: E402
from charnn.model.network import CharRNN, ModelConfig, Stepper, unpack_state  # noqa: E402
from charnn.sample import SampleConfig, generate, sample_next  # noqa: E402
from charnn.text.tokenizer import CharTokenizer  # noqa: E402

VOCAB = "".join(chr(c) for c in range(32, 97))  # 65 characters


def naive_loop(model: CharRNN, length: int, batch: int, onednn: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=onednn):
        state = (torch.zeros(2, batch, 512), torch.zeros(2, batch, 512))
        ids = torch.zeros(batch, dtype=torch.long)
        for _ in range(length):
            out, state = model.rnn(model.embedding(ids)[:, None], state)  # one nn.LSTM call per character
            ids = sample_next(model.head(out[:, 0]), 1.0, None, None, gen)


def charnn_loop(model: CharRNN, tok: CharTokenizer, length: int, batch: int) -> None:
    for _ in generate(model, tok, "A", SampleConfig(length=length, temperature=1.0, seed=0, num_samples=batch)):
        pass


def engine_loop(model: CharRNN, tok: CharTokenizer, length: int, requests: int) -> None:
    """`requests` separate groups of one sample in one engine, as the server runs them (requests that
    arrive together join together, `Engine.join_many`)."""
    with torch.inference_mode():
        engine = sample.Engine(model, tok)
        engine.join_many([("A", SampleConfig(length=length, temperature=0.8, seed=i)) for i in range(requests)])
        while engine.groups:
            engine.step()
            for group in [g for g in engine.groups if g.finished]:
                engine.leave(group)


def bare_forward(model: CharRNN, length: int, batch: int, stepper: Stepper | None = None) -> None:
    """The network alone at this batch: one step per character, no sampling; through the module
    (oneDNN's fused kernel) or, given one, through the hand-fused `Stepper`."""
    with torch.inference_mode():
        state = model.init_state(batch)
        ids = torch.zeros(batch, dtype=torch.long)
        parts = unpack_state(state)
        for _ in range(length):
            if stepper is not None:
                stepper.step_layers(ids, parts)
            else:
                _, state = model(ids[:, None], state)


def engine_table(model: CharRNN, tok: CharTokenizer, length: int, repeats: int) -> str:
    """The engine against the faster of the two bare network paths at each batch, alternating."""
    stepper = Stepper(model)
    rows = []
    for batch in (16, 32, 64, 128):
        t_module, t_stepper, _ = paired(lambda b=batch: bare_forward(model, length, b),
                                        lambda b=batch: bare_forward(model, length, b, stepper), repeats)
        bare = stepper if t_stepper < t_module else None
        t_bare, t_engine, ratio = paired(lambda b=batch, s=bare: bare_forward(model, length, b, s),
                                         lambda b=batch: engine_loop(model, tok, length, b), repeats)
        path = "fused step" if batch <= sample.FUSED_MAX_BATCH else "nn.LSTM (oneDNN)"
        rows.append([str(batch), f"{batch * length / t_module:,.0f}", f"{batch * length / t_stepper:,.0f}",
                     f"{batch * length / t_bare:,.0f} ({'fused' if bare else 'module'})", f"{batch * length / t_engine:,.0f}",
                     path, f"{ratio:.2f}x"])
    return table(["requests (groups of 1)", "bare module step (chars/s)", "bare fused step", "baseline, paired with the engine",
                  "engine (aggregate chars/s)", "engine's path", "engine / baseline (median of paired ratios)"], rows)


def make_run(model: CharRNN, tok: CharTokenizer, root: Path) -> Path:
    """A run directory holding `model` (random weights), as `charnn sample` expects."""
    from dataclasses import asdict

    from charnn.run import checkpoint
    run_dir = root / "checkpoints" / "gen"
    config = {"model": asdict(model.config), "train": {"batch_size": 8, "seq_len": 32},
              "corpus": {"sources": ["random weights"]}}  # every run's config.json has one (RunConfig checks)
    checkpoint.create(run_dir, config, tok, False)
    checkpoint.save_tensors(run_dir / checkpoint.BEST, {"model": model.state_dict(), "step": 0})
    return run_dir


def whole_process(root: Path, lengths: tuple[int, int], repeats: int, threads: int | None) -> float:
    """Marginal chars/s of the `charnn sample` command between two lengths (medians of wall times)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def timed(length: int) -> float:
        cmd = [sys.executable, "-m", "charnn", "sample", "gen", "--length", str(length), "--seed", "1",
               "--temperature", "1.0", "--prime", "A"] + (["--threads", str(threads)] if threads else [])
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        if done.returncode:
            raise SystemExit(done.stderr)
        return time.perf_counter() - start

    short, long = [], []
    for _ in range(repeats):
        short.append(timed(lengths[0]))
        long.append(timed(lengths[1]))
    return (lengths[1] - lengths[0]) / (statistics.median(long) - statistics.median(short))


def ab_whole_process(root: Path, lengths: tuple[int, int], repeats: int, other: Path) -> tuple[float, float]:
    """Marginal chars/s of `charnn sample` from this checkout and from `other`, the four commands of a round
    run back to back (this short, this long, other short, other long), so both see the same machine."""
    here = Path(__file__).resolve().parents[1]
    times: dict[Path, tuple[list[float], list[float]]] = {here: ([], []), other: ([], [])}
    for _ in range(repeats):
        for source in (here, other):
            env = {**os.environ, "PYTHONPATH": str(source)}
            for k, length in enumerate(lengths):
                cmd = [sys.executable, "-m", "charnn", "sample", "gen", "--length", str(length), "--seed", "1",
                       "--temperature", "1.0", "--prime", "A"]
                start = time.perf_counter()
                subprocess.run(cmd, cwd=root, stdout=subprocess.DEVNULL, env=env, check=True)
                times[source][k].append(time.perf_counter() - start)
    rate = {s: (lengths[1] - lengths[0]) / (statistics.median(t[1]) - statistics.median(t[0])) for s, t in times.items()}
    return rate[here], rate[other]


def command_tables(model: CharRNN, tok: CharTokenizer, n: int, repeats: int, compare_with: Path | None) -> tuple[str, str]:
    """The whole `charnn sample` process against the naive loop (and, given one, another checkout's command)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_run(model, tok, root)
        lengths = (200, 200 + 10 * n)
        loops = {}
        for threads in (1, 2):  # the baseline is the faster of the two
            torch.set_num_threads(threads)
            loops[threads] = 10 * n / median_time(lambda: naive_loop(model, 10 * n, 1, False), max(3, repeats // 2))
        torch.set_num_threads(2)
        loop = max(loops.values())
        proc_rows = []
        for threads in (None, 1, 2):
            rate = whole_process(root, lengths, max(5, repeats), threads)
            proc_rows.append([f"charnn sample{'' if threads is None else f' --threads {threads}'}", f"{rate:,.0f}",
                              f"{rate / loop:.2f}x"])
        if compare_with is not None:
            mine, theirs = ab_whole_process(root, lengths, max(5, repeats), compare_with.resolve())
            proc_rows += [["charnn sample, this checkout (A/B, alternating with the next row)", f"{mine:,.0f}",
                           f"{mine / loop:.2f}x"],
                          [f"charnn sample, {compare_with} (A/B)", f"{theirs:,.0f}", f"{theirs / loop:.2f}x; "
                           f"this checkout / it: **{mine / theirs:.2f}x**"]]
    command = table(["whole process, single stream", "marginal chars/s", "vs the faster naive oneDNN-off loop"],
                    [*proc_rows, *[[f"naive loop, oneDNN off, {t} thread(s), in-process", f"{r:,.0f}", f"{r / loop:.2f}x"]
                                   for t, r in loops.items()]])
    proc_note = (f"Whole process: `charnn sample gen --length L` for L = {lengths[0]} and {lengths[1]}, stdout to a pipe, "
                 f"{max(5, repeats)} runs each; marginal rate = {lengths[1] - lengths[0]} characters / the "
                 "difference of the median wall times. Target: the command >= 1.5x the oneDNN-off loop.")
    return command, proc_note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    parser.add_argument("--engine-only", action="store_true", help="only the engine against the bare forward pass")
    parser.add_argument("--command-only", action="store_true", help="only the whole `charnn sample` process (and --compare-with)")
    parser.add_argument("--compare-with", type=Path, help="another checkout whose `charnn sample` to time beside this one")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=65, cell="lstm", layers=2, hidden=512, embed=512)).eval()
    tok = CharTokenizer(VOCAB)
    n = args.chars
    torch.set_num_threads(2)
    if args.command_only:
        command, proc_note = command_tables(model, tok, n, args.repeats, args.compare_with)
        report("Generation, the command (benchmarks/generation.py --command-only)", [command, proc_note], args.record)
        return 0
    engine = engine_table(model, tok, max(n // 3, 100), args.repeats)
    engine_note = (f"2x512 LSTM, {max(n // 3, 100)} characters per request, temperature 0.8, 2 threads; "
                   f"{args.repeats} alternating pairs. Target: engine >= 0.85x the bare forward pass.")
    if args.engine_only:
        report("Generation engine (benchmarks/generation.py --engine-only)", [engine, engine_note], args.record)
        return 0
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t_off, t_ours, speedup = paired(lambda: naive_loop(model, n, 1, False), lambda: charnn_loop(model, tok, n, 1),
                                        args.repeats)
        t_default, _, speedup_default = paired(lambda: naive_loop(model, n, 1, True),
                                               lambda: charnn_loop(model, tok, n, 1), args.repeats)
        rows.append([str(threads), f"{n / t_default:,.0f}", f"{n / t_off:,.0f}", f"{n / t_ours:,.0f}",
                     f"{speedup:.2f}x", f"{speedup_default:.2f}x"])
    single = table(["threads", "naive, default (chars/s)", "naive, oneDNN off", "charnn", "charnn / oneDNN off",
                    "charnn / default"], rows)
    torch.set_num_threads(2)
    m = max(n // 2, 50)
    batch_rows = []
    for batch in (4, 16, 64):
        default = batch * m / median_time(lambda b=batch: naive_loop(model, m, b, True), args.repeats)
        off = batch * m / median_time(lambda b=batch: naive_loop(model, m, b, False), args.repeats)
        ours = batch * m / median_time(lambda b=batch: charnn_loop(model, tok, m, b), args.repeats)
        path = "fused step" if batch <= sample.FUSED_MAX_BATCH else "nn.LSTM (oneDNN)"
        batch_rows.append([str(batch), f"{default:,.0f}", f"{off:,.0f}", f"{ours:,.0f}", path])
    batched = table(["parallel samples (2 threads)", "naive, default (aggregate chars/s)", "naive, oneDNN off",
                     "charnn", "charnn's path"], batch_rows)
    note = (f"2x512 LSTM, embedding 512, {n} characters per single-stream run ({m} per batched run). Single stream: "
            f"the two loops alternate {args.repeats} times after a warm-up; speedups are medians of per-pair ratios "
            "(times are medians too). Target: charnn >= 1.5x the oneDNN-off loop, single stream.")
    command, proc_note = command_tables(model, tok, n, args.repeats, args.compare_with)
    report("Generation (benchmarks/generation.py)", [single, batched, note, engine, engine_note, command, proc_note],
           args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
