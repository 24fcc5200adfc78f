"""Distributed training overhead: `charnn train` under torchrun against plain `charnn train`, same run.

    python benchmarks/distributed.py [--repeats 3] [--steps 150] [--device cpu|cuda] [--nproc 2] [--record]

Throughput: whole `charnn train` processes (what users run), each on the same corpus, model and
global batch; the rate is the median of the `tokens_per_s` the run itself records between
evaluations (training steps only, the first interval dropped as warm-up). Rows: plain with 1 and
with all threads, torchrun with 1 process, torchrun with `--nproc` processes. On a 2-core CPU box
two processes share the two cores a single process already uses, so this measures the cost of
the distributed machinery, not a speed-up. On a GPU box (`--device cuda`) each process has a GPU
and the rows measure scaling.

Collectives: a worker started by torchrun times, per call, the one-step stop decision
(`ProcessGroup.agree`: a 2-element all-reduce) and an all-reduce of a gradient-sized buffer
(what DDP moves every step), against a full training step of the same model in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report, table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
MODEL = ["--cell", "gru", "--layers", "2", "--hidden", "256", "--embed", "64", "--dropout", "0",
         "--batch-size", "64", "--seq-len", "64", "--warmup", "10", "--quiet"]


def _corpus(work: Path) -> Path:
    if SHARED.exists():
        return SHARED
    from charnn.text import corpus
    return corpus.resolve("shakespeare", work / "corpora").paths[0]


def _throughput(cmd: list[str], work: Path, name: str, env: dict[str, str]) -> float:
    out = subprocess.run([*cmd, "--name", name], cwd=work, env={**os.environ, **env}, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    records = [json.loads(x) for x in (work / "checkpoints" / name / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in records[1:])


def throughput_rows(args: argparse.Namespace, work: Path) -> list[list[str]]:
    corpus = str(_corpus(work))
    limits = ["--max-steps", str(args.steps), "--eval-every", str(max(args.steps // 5, 1)), "--device", args.device]
    charnn = [sys.executable, "-m", "charnn", "train", corpus, *MODEL, *limits]
    threads = str(os.cpu_count() or 1)

    def torchrun(n: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                "-m", "charnn", "train", corpus, *MODEL, *limits]

    configs = [
        ("plain, 1 thread", charnn, {"OMP_NUM_THREADS": "1"}),
        (f"plain, {threads} threads", charnn, {"OMP_NUM_THREADS": threads}),
        ("torchrun, 1 process (1 thread)", torchrun(1), {}),
        (f"torchrun, {args.nproc} processes (1 thread each)", torchrun(args.nproc), {}),
    ]
    rates: dict[str, list[float]] = {label: [] for label, _, _ in configs}
    for rep in range(args.repeats):  # interleaved, so every configuration sees the same background load
        for i, (label, cmd, env) in enumerate(configs):
            rates[label].append(_throughput(cmd, work, f"r{rep}-{i}", env))
            shutil.rmtree(work / "checkpoints" / f"r{rep}-{i}")
    base = statistics.median(rates[configs[0][0]])
    return [[label, f"{statistics.median(r):,.0f}", f"{statistics.median(r) / base:.2f}x",
             ", ".join(f"{x:,.0f}" for x in r)] for label, r in rates.items()]


def worker(args: argparse.Namespace) -> None:
    """Runs inside torchrun: time the collectives against a training step of the benchmark model."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from charnn.device import resolve_device
    from charnn.distributed import Launch, join
    from charnn.model.network import CharRNN, ModelConfig

    launch = Launch.from_env()
    with join(launch, launch.device(resolve_device(args.device))) as group:
        model = CharRNN(ModelConfig(vocab_size=65, cell="gru", layers=2, hidden=256, embed=64)).to(group.device)
        net = group.wrap(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        b = 64 // group.world_size
        ids = torch.randint(0, 65, (b, 65), device=group.device)
        state = model.init_state(b, group.device)
        grads = torch.zeros(model.num_parameters(), device=group.device)

        def sync() -> None:
            if group.device.type == "cuda":
                torch.cuda.synchronize(group.device)

        def step() -> None:
            logits, _ = net(ids[:, :-1], state)
            loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()

        def timed(fn, n: int) -> float:  # median seconds per call, in blocks of 10 calls
            for _ in range(3):
                fn()
            blocks = []
            for _ in range(n // 10):
                group.barrier()
                sync()
                start = time.perf_counter()
                for _ in range(10):
                    fn()
                sync()
                blocks.append((time.perf_counter() - start) / 10)
            return statistics.median(blocks)

        t_step = timed(step, 60)
        t_agree = timed(lambda: group.agree(False, 1.0), 1000)
        t_grads = timed(lambda: dist.all_reduce(grads), 200)
        if group.is_writer:
            print(json.dumps({"world": group.world_size, "backend": group.backend, "params": model.num_parameters(),
                              "step": t_step, "agree": t_agree, "grads": t_grads}))


def collective_rows(args: argparse.Namespace, work: Path) -> list[list[str]]:
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={args.nproc}", __file__, "--worker", "--device", args.device],
                         cwd=work, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"collective worker failed:\n{out.stderr[-2000:]}")
    m = json.loads(out.stdout.strip().splitlines()[-1])
    step = m["step"]
    return [
        [f"training step (DDP, {m['world']} processes, {m['backend']}, batch 64/{m['world']} per rank)",
         f"{step * 1e3:.2f} ms", "1.000"],
        ["stop decision: `agree` (2-element all-reduce)", f"{m['agree'] * 1e6:.0f} µs", f"{m['agree'] / step:.4f}"],
        [f"gradient all-reduce ({m['params']:,} floats, {m['params'] * 4 / 1e6:.1f} MB)", f"{m['grads'] * 1e3:.2f} ms",
         f"{m['grads'] / step:.3f}"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        through = throughput_rows(args, work)
        coll = collective_rows(args, work)
    note = ("Whole `charnn train` processes, gru 2x256, global batch 64 x 64, "
            f"{args.steps} steps, median of the runs' own between-evaluation tokens/s over {args.repeats} "
            "interleaved repeats; ratio against plain with 1 thread. torchrun gives each process 1 thread.")
    if args.device == "cpu":
        note += (f" On this {os.cpu_count()}-core CPU, {args.nproc} processes share the cores one process already "
                 "uses: this measures the overhead of the distributed machinery, not a speed-up.")
    report("Distributed training (benchmarks/distributed.py)", [
        note,
        table(["configuration", "tokens/s (median)", "vs plain 1 thread", "each repeat"], through),
        table(["per step", "median time", "fraction of a step"], coll),
    ], args.record)


if __name__ == "__main__":
    main()
