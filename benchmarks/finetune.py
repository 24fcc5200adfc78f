"""Fine-tuning against training from scratch on a small corpus, each as the command a user runs.

    python benchmarks/finetune.py [--parent-time 4m] [--tune-time 1m] [--work DIR] [--variant "--lr 3e-3" ...]

1. parent:       charnn train shakespeare --scratch --time PARENT            (tiny-shakespeare, built in)
2. fine-tuned:   charnn train small.txt --from parent --time TUNE
3. scratch:      charnn train small.txt --scratch --time TUNE
4. scratch-long: charnn train small.txt --scratch --time PARENT+TUNE         (the parent's time and the tune's)

small.txt is the first ~200 KB of `songs-poems` from Debian's `fortunes` package (BSD fortune's
collection of verse and song: real English text that is not in tiny-shakespeare; installed with apt-get
when missing), cut at a fortune boundary. All three children use the default --val-frac, so they are
scored on the same last 10% of small.txt (a full pass, as training does). Each `--variant` adds one more
fine-tune with those extra options (the schedule's measurements). Prints a table and a sample of each.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORTUNES = Path("/usr/share/games/fortunes/songs-poems")
SMALL_BYTES = 200_000


def small_corpus(into: Path) -> Path:
    """The first fortunes of songs-poems up to SMALL_BYTES, whole fortunes only."""
    if not FORTUNES.exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "fortunes"], check=True, capture_output=True)
    text = FORTUNES.read_text(encoding="utf-8", errors="replace")
    cut = text[:SMALL_BYTES]
    cut = cut[: cut.rfind("\n%\n") + 3]
    path = into / "small.txt"
    path.write_text(cut, encoding="utf-8")
    return path


def seconds(spec: str) -> float:
    from charnn.recipe.budget import parse_duration

    value = parse_duration(spec)
    assert value is not None
    return value


def train(args: list[str], work: Path) -> float:
    cmd = [sys.executable, "-m", "charnn", "train", *args, "--checkpoints-dir", str(work / "checkpoints"),
           "--corpora-dir", str(work / "corpora"), "--quiet"]
    print("$ charnn train " + " ".join(shlex.quote(a) for a in args), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def summary(work: Path, name: str) -> dict[str, object]:
    run = work / "checkpoints" / name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [m["val_loss"] for m in metrics]
    sample = subprocess.run([sys.executable, "-m", "charnn", "sample", str(run), "--length", "240",
                             "--seed", "1", "--temperature", "0.8", "--prime", "%\n"],
                            check=True, capture_output=True, text=True).stdout
    return {"best": min(vals), "first": vals[0], "first_step": metrics[0]["step"], "steps": metrics[-1]["step"],
            "sample": sample}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent-time", default="4m")
    parser.add_argument("--tune-time", default="1m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/charnn-finetune"))
    parser.add_argument("--variant", action="append", default=[], help="extra options for one more fine-tune")
    parser.add_argument("--skip-long", action="store_true", help="leave out the long scratch run")
    parser.add_argument("--only-variants", action="store_true", help="run only the --variant fine-tunes")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    small = small_corpus(args.work)
    walls: dict[str, float] = {}
    if not (args.work / "checkpoints" / "parent" / "best.pt").exists():
        walls["parent"] = train(["shakespeare", "--scratch", "--time", args.parent_time, "--name", "parent"],
                                 args.work)  # from scratch: the parent of this comparison, not the base's fine-tune
    runs = {"fine-tuned": ["--from", "parent", "--time", args.tune_time],
            "scratch": ["--scratch", "--time", args.tune_time]}
    if args.only_variants:
        runs = {}
    elif not args.skip_long:
        long = seconds(args.parent_time) + seconds(args.tune_time)
        runs["scratch-long"] = ["--scratch", "--time", f"{long:g}s"]
    for variant in args.variant:
        runs[f"fine-tuned {variant}"] = ["--from", "parent", "--time", args.tune_time, *shlex.split(variant)]
    names = {}
    for i, (label, options) in enumerate(runs.items()):
        names[label] = f"child-{i}-{time.strftime('%H%M%S')}"
        walls[label] = train([str(small), *options, "--name", names[label]], args.work)
    print(f"\nsmall corpus: {small.stat().st_size:,} bytes of {FORTUNES}; validation: its last 10%\n")
    print("| run | command wall s | steps | first val (at step) | best val (nats) |")
    print("|---|---|---|---|---|")
    results = {label: summary(args.work, name) for label, name in names.items()}
    for label, r in results.items():
        print(f"| {label} | {walls[label]:.1f} | {r['steps']} | {r['first']:.4f} ({r['first_step']}) | {r['best']:.4f} |")
    for label, r in results.items():
        print(f"\n--- {label} (seed 1, temperature 0.8) ---\n{r['sample']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
