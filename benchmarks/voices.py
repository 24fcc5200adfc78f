"""Voices (issue #40): one model of several texts against one model per text, at equal total time.

    python benchmarks/voices.py [--texts songs-poems,debian-faq] [--time 8m] [--work /tmp/charnn-voices] [--reuse]

Each text is a real one from a Debian package (installed if missing; benchmarks/base.py): `songs-poems`
(verse and song from `fortunes`, 234 KB) and `debian-faq` (the Debian FAQ, technical prose, 180 KB) by
default. Whole commands, as a user runs them:

- `charnn train A.txt B.txt --voices --time T` (the voice added to each character's embedding),
- `charnn train A.txt --time T/k` for each of the k texts alone: the same total time as the voiced run.

The other design measured, the voice concatenated beside the embedding (`--voice-input concat`, since
removed), is this script at commit 9c5b32b (RECIPES.md: it lost on the voices' own loss).

Each voice is scored on its text's last 10% (the validation split every one of these runs left out: a voiced
run splits each voice on its own), as training scores it: with its own voice, with no voice, with each other
voice, and under the single-text model. Then a sample of each voice and of an equal blend (seed 1,
temperature 0.8) from the default design. Prints markdown tables for benchmarks/RECIPES.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from base import small_text  # benchmarks/ is on the path when run as a script

ROOT = Path(__file__).resolve().parent.parent
DESIGNS = ("add",)  # the voice added to every character's embedding: the one charnn keeps
sys.path.insert(0, str(ROOT))

from charnn import api  # noqa: E402  (after the path: this checkout's charnn)
from charnn.recipe.budget import parse_duration  # noqa: E402


def train(args: list[str], name: str, work: Path, reuse: bool) -> float:
    """One whole `charnn train …` command (skipped with `reuse` when the run finished before); its wall seconds."""
    log = work / f"{name}.log"
    if reuse and log.exists() and (work / "checkpoints" / name / "best.pt").exists():
        return float(log.read_text().splitlines()[-1].split()[-1])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "charnn", "train", *args, "--name", name, "--overwrite", "-q",
                           "--checkpoints-dir", str(work / "checkpoints"), "--corpora-dir", str(work / "corpora")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    log.write_text(done.stderr + f"\nwall {wall:.1f}\n")
    return wall


def validation_text(path: Path) -> str:
    """The last 10% of a text: what every run here left out for validation (`data.split`, --val-frac 0.1)."""
    text = path.read_text(encoding="utf-8")
    return text[len(text) - int(len(text) * 0.1):]


def sample(work: Path, run: str, voice: str) -> str:
    return subprocess.run([sys.executable, "-m", "charnn", "sample", str(work / "checkpoints" / run), "--voice", voice,
                           "--length", "300", "--seed", "1", "--temperature", "0.8"], cwd=ROOT, check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", default="songs-poems,debian-faq")
    parser.add_argument("--time", default="8m", help="each voiced run's budget; each single-text run gets T/k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/charnn-voices"))
    parser.add_argument("--reuse", action="store_true", help="read runs finished in --work, train the rest")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    names = args.texts.split(",")
    paths = {n: small_text(n, args.work) for n in names}
    total = parse_duration(args.time)
    assert total is not None
    share = f"{total / len(names):.0f}s"
    walls = {}
    for design in DESIGNS:
        walls[design] = train([*(str(paths[n]) for n in names), "--voices", "--time", args.time],
                              f"voices-{design}", args.work, args.reuse)
    for n in names:
        walls[n] = train([str(paths[n]), "--time", share, "--scratch"], f"single-{n}", args.work, args.reuse)
    print("Runs (whole commands, wall seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items()))
    others = [f"as {o}" for o in names]
    print("\n| design | voice | own voice | no voice | " + " | ".join(others) + " | alone (own model) |")
    print("|---|---|---|---|" + "---|" * len(others) + "---|")
    for design in DESIGNS:
        voiced = api.load_run(str(args.work / "checkpoints" / f"voices-{design}"), device="cpu")
        for n in names:
            text = validation_text(paths[n])
            alone = api.load_run(str(args.work / "checkpoints" / f"single-{n}"), device="cpu").score(text).nats
            own, none = voiced.score(text, voice=n).nats, voiced.score(text).nats
            cross = [voiced.score(text, voice=o).nats for o in names]
            print(f"| {design} | {n} | {own:.4f} ({own - alone:+.4f}) | {none:.4f} | "
                  + " | ".join(f"{c:.4f}" for c in cross) + f" | {alone:.4f} |", flush=True)
    blend = ",".join(f"{n}={1 / len(names):g}" for n in names)
    for voice in [*names, blend]:
        print(f"\n`charnn sample voices-add --voice {voice} --seed 1` (temperature 0.8):\n\n```\n"
              f"{sample(args.work, 'voices-add', voice).strip()}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
