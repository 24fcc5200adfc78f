"""`--time` on small texts (issue #41): this checkout's recipe against another checkout's, same session.

    python benchmarks/small_texts.py --compare-with /tmp/rule-before [--texts debian-faq,songs-poems]
                                     [--budgets 10m,4m] [--work /tmp/charnn-small] [--pin-probe]

Each text is trained with `charnn train TEXT --time B` (and `--scratch`, where the checkout has the base-or-scratch
rule) and nothing else, as a new user would, once by each
checkout (the other's first, then this one's, text by text, so a slow spell of the machine hits both alike).
The texts are real and small, from Debian packages (installed if missing): `debian-faq` (the Debian FAQ,
180 KB), `songs-poems` (fortunes' songs and poems, 234 KB), `developers-reference` (Debian's developers'
reference, 305 KB), or any of benchmarks/base.py's (`cataclysm-talk`, ...; `--max-chars` cuts each);
`shakespeare` is charnn's built-in tiny-shakespeare (1.1 MB), for a large corpus that should train as before.
Per run: what the recipe chose, the best and the last validation loss (nats, on the run's own validation
split: the last 10% of the text, never trained on), the steps, how it stopped, and the command's wall time.
A row is printed as each run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from base import MAX_BYTES, small_text  # benchmarks/ is on the path when run as a script

ROOT = Path(__file__).resolve().parent.parent
PINNED = Path(__file__).resolve().parent / "pinned_probe.py"


def reading(corpus: str, name: str, work: Path, reuse: bool) -> Path:
    """One real probe reading on this machine by this checkout's charnn, for both runs of a pair to decide from.
    With `reuse`, the pair's reading from earlier is kept: its finished runs decided from that one."""
    out = work / f"{name}-probe.json"
    if reuse and out.exists():
        return out
    text = corpus if corpus != "shakespeare" else ""
    # the text's distinct characters (the probe's head size; about the run's vocabulary, and the same for both runs)
    vocab = len(set(Path(text).read_text(encoding="utf-8"))) if text else 65
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(PINNED), "measure", str(out), "--vocab", str(vocab)], env=env, cwd=ROOT,
                   check=True, capture_output=True, text=True)
    return out


def train(checkout: Path, corpus: str, budget: str, name: str, work: Path, reuse: bool,
          pinned: Path | None = None) -> dict[str, object]:
    """One whole `charnn train CORPUS --time BUDGET` by the charnn in `checkout`; its outcome. With `reuse`, a
    finished run of that name (from earlier in the same session) is read instead of trained again. With
    `pinned`, the probe answers with that file's reading (pinned_probe.py) instead of timing this moment."""
    run = work / "checkpoints" / name
    log = work / f"{name}.log"
    if not (reuse and log.exists()):
        env = {**os.environ, "PYTHONPATH": str(checkout)}  # that checkout's charnn, whatever is installed
        launch = ["-m", "charnn"] if pinned is None else [str(PINNED), "run", str(pinned)]
        # From scratch: a checkout with the base-or-scratch rule would start a small text from the base.
        scratch = ["--scratch"] if (checkout / "charnn" / "recipe" / "origin.py").exists() else []
        cmd = [sys.executable, *launch, "train", corpus, "--time", budget, *scratch, "--name", name, "--overwrite",
               "--checkpoints-dir", str(work / "checkpoints"), "--corpora-dir", str(work / "corpora")]
        done = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True, check=True)
        log.write_text(done.stderr)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    recipe, wall = config["recipe"], config["time"][-1]["total_s"]  # the command's own wall clock
    best = min(metrics, key=lambda m: m["val_loss"])
    stopped = re.search(r"^(done \((\w[\w-]*)\)|stopped early)", log.read_text(), re.M)
    return {"chose": f"{recipe['layers']}x{recipe['hidden']} d{recipe['dropout']:g} b{recipe['batch_size']} "
                     f"eval {recipe['eval_every']}" + (" bf16" if recipe["amp"] else ""),
            "best": best["val_loss"], "best_step": best["step"], "last": metrics[-1]["val_loss"],
            "steps": metrics[-1]["step"], "stopped": "early" if stopped and stopped.group(1) == "stopped early"
            else (stopped.group(2) if stopped else "?"), "wall": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-with", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--texts", default="debian-faq,songs-poems,developers-reference")
    parser.add_argument("--budgets", default="10m,4m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/charnn-small"))
    parser.add_argument("--max-chars", type=int, default=MAX_BYTES, help="cut each text to this many characters")
    parser.add_argument("--reuse", action="store_true", help="read runs already finished in --work, train the rest")
    parser.add_argument("--pin-probe", action="store_true",
                        help="take one probe reading per pair and give it to both runs (pinned_probe.py): the "
                             "pair then compares the recipes, not the moments they probed at")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    other = args.compare_with.resolve()
    print("| text | budget | checkout | recipe chose | best (step) | last | steps | stopped | wall s |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for budget in args.budgets.split(","):
        for text in args.texts.split(","):
            corpus = text if text == "shakespeare" else str(small_text(text, args.work, args.max_chars))
            pair = f"{text}-{budget}" + ("-pinned" if args.pin_probe else "")
            pinned = reading(corpus, pair, args.work, args.reuse) if args.pin_probe else None
            for label, checkout in (("before", other), ("after", ROOT)):
                r = train(checkout, corpus, budget, f"{pair}-{label}", args.work, args.reuse, pinned)
                print(f"| {text} | {budget} | {label} | {r['chose']} | {r['best']:.4f} ({r['best_step']}) | "
                      f"{r['last']:.4f} | {r['steps']} | {r['stopped']} | {r['wall']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
