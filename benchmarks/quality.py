"""Quality per minute: train with charnn's defaults for a time budget, report the full-pass val loss.

    python benchmarks/quality.py --time 4m [--corpus PATH] [--results benchmarks/RESULTS.md]

Uses `charnn train CORPUS --time T` with no other options (the budget recipe
chooses the model), then re-evaluates the best checkpoint over the whole
validation split and appends a row to RESULTS.md. The corpus defaults to
../shared/corpora/tinyshakespeare.txt beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", required=True, help="budget, e.g. 4m")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--keep", type=Path, help="keep the run in this checkpoints folder (default: a temp folder)")
    parser.add_argument("extra", nargs="*", help="extra `charnn train` options, for recipe experiments")
    args = parser.parse_args()
    if not args.corpus.exists():
        print(f"corpus {args.corpus} not found; skipping (give --corpus)")
        return 0
    import torch

    from charnn import api
    from charnn.model.evaluation import evaluate
    from charnn.run import checkpoint
    from charnn.text import streams

    work = Path(tempfile.mkdtemp(prefix="charnn-quality-"))
    ckpts = args.keep or work / "checkpoints"
    name = f"quality-{args.time}-{time.strftime('%H%M%S')}"
    cmd = [sys.executable, "-m", "charnn", "train", str(args.corpus), "--time", args.time, "--scratch", "--name", name,
           "--checkpoints-dir", str(ckpts), "--corpora-dir", str(work / "corpora"), *args.extra]
    print(" ".join(cmd[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    run_dir = ckpts / name
    metrics = checkpoint.read_metrics(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    model = api.load_run(str(run_dir), "best", "cpu")
    # The validation split exactly as training cut it: the last val_frac of the encoded corpus.
    encoded = streams.prepare(lambda: [args.corpus.read_text(encoding="utf-8")], "quality", work / "cache")
    _, val_ids = streams.split(encoded.ids, config["train"]["val_frac"])
    t = config["train"]
    val = evaluate(model.model, val_ids, t["seq_len"], model.device)
    last = metrics[-1]
    m = config["model"]
    row = (f"| {time.strftime('%Y-%m-%d')} | {args.time} | {m['cell']} {m['layers']}x{m['hidden']} e{m['embed']} "
           f"d{m['dropout']} b{t['batch_size']}{' bf16' if t.get('amp') else ''} | {' '.join(args.extra) or 'defaults'} | "
           f"{val:.4f} | {val / 0.6931471805599453:.3f} | "
           f"{last['tokens'] / 1e6:.1f}M | {last['tokens'] / last['elapsed']:,.0f} | {wall:.0f}s | "
           f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__} |")
    print(f"full-pass validation loss {val:.4f} nats ({val / 0.6931471805599453:.3f} bpc); "
          f"{last['tokens']:,} characters seen")
    print(row)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
