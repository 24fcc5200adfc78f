"""The base model against training from scratch, on small real texts it has never seen, as users run it.

    python benchmarks/base.py [--texts songs-poems debian-faq developers-reference] [--shakespeare] [--work DIR]
                              [--bases v1=base v2=PATH] [--tuned 1m 4m] [--scratch 1m 10m]
    python benchmarks/base.py --tune [--work DIR]

For each small text (each under 500 KB, none in the base corpus; installed with apt-get when missing):

- `charnn train TEXT --from BASE --time T` for each base of `--bases` (default `v1=base`, the built-in one; a
  candidate is a run's path) and each T of `--tuned` (default 1m)
- `charnn train TEXT --scratch --time T` for each T of `--scratch` (default 1m and 10m; `--scratch` alone:
  none, to compare bases only)

All three use the default --val-frac, so each is scored on the same last 10% of its text (a full pass, as
training scores). With --shakespeare, also tiny-shakespeare (built in; the base has never seen Shakespeare)
`--from base` against scratch at `--time 4m` and `--time 10m`. Prints a table (best validation loss,
whole-command wall time) and a sample of each fine-tune (seed 1, temperature 0.8).

With --tune, instead: the fine-tuning defaults' sweep, on a fourth text the defaults are then applied to
the three above, not tuned on: doc-debian (Debian's constitution, social contract, manifesto and bug-tracker
guides from the `doc-debian` package, 197 KB), `--from base --time 1m` at peak learning rates 1e-3, 2e-3 and 3e-3,
and without the weight average.

The texts:
- songs-poems: Debian's `fortunes` collection of verse and song (left out of the base corpus on purpose);
- debian-faq: the Debian FAQ (`debian-faq`, plain text);
- developers-reference: the Debian Developer's Reference (`developers-reference`, plain text);
- cataclysm-talk: the NPC dialogue of Cataclysm: DDA (`cataclysm-dda-data`; left out of base corpus v2 for its
  CC-BY-SA-3.0 licence), a line a message;
- german, russian: Debian's `fortunes-de` and `fortunes-ru` collections: whether an English base helps another
  language (`--texts german russian`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

from finetune import train  # the same whole-command run (benchmarks/ is on the path when run as a script)

TEXTS = {
    "songs-poems": ("fortunes", Path("/usr/share/games/fortunes/songs-poems")),
    "debian-faq": ("debian-faq", Path("/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")),
    "developers-reference": ("developers-reference", Path("/usr/share/developers-reference/developers-reference.txt.gz")),
    "cataclysm-talk": ("cataclysm-dda-data", Path("/usr/share/games/cataclysm-dda/json/npcs")),
    "german": ("fortunes-de", Path("/usr/share/games/fortunes/de")),
    "russian": ("fortunes-ru", Path("/usr/share/games/fortunes/ru")),
}
DIALOGUE_KEYS = {"dynamic_line", "text", "yes", "no"}  # where Cataclysm's talk topics keep what is said
MAX_BYTES = 500_000
TUNE_FILES = ("constitution.txt.gz", "social-contract.txt.gz", "debian-manifesto.gz", "bug-reporting.txt.gz",
              "bug-maint-info.txt.gz", "bug-maint-mailcontrol.txt.gz", "bug-log-mailserver.txt.gz", "mailing-lists.txt.gz",
              "bug-log-access.txt", "bug-mailserver-refcard.txt", "source-unpack.txt")  # not the old constitutions


def tuning_text(into: Path) -> Path:
    folder = Path("/usr/share/doc/debian")
    if not (folder / TUNE_FILES[0]).exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "doc-debian"], check=True, capture_output=True)
    raw = b"".join(gzip.decompress((folder / f).read_bytes()) if f.endswith(".gz") else (folder / f).read_bytes()
                   for f in TUNE_FILES)
    path = into / "doc-debian.txt"
    path.write_text(raw.decode("utf-8", errors="replace")[:MAX_BYTES], encoding="utf-8")
    return path


def small_text(name: str, into: Path, limit: int = MAX_BYTES) -> Path:
    package, source = TEXTS[name]
    if not source.exists():
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, capture_output=True)
    if name == "cataclysm-talk":
        text = _dialogue(source)
    elif source.is_dir():  # a fortune collection: its files in order, fortunes as they are
        text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(source.iterdir())
                       if p.is_file() and not p.suffix)
    else:
        raw = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
        text = raw.decode("utf-8", errors="replace")
    text = text[:limit]
    path = into / (f"{name}.txt" if limit == MAX_BYTES else f"{name}-{limit}.txt")
    path.write_text(text, encoding="utf-8")
    return path


def _dialogue(folder: Path) -> str:
    """Every line said in Cataclysm's NPC talk files, a line each, in file order (placeholders like <name> kept)."""
    said: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in DIALOGUE_KEYS and isinstance(value, str) and len(value) >= 20:
                    said.append(" ".join(value.split()))
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(folder.rglob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return "\n".join(dict.fromkeys(said)) + "\n"


def best(work: Path, name: str) -> tuple[float, int]:
    metrics = [json.loads(line) for line in (work / "checkpoints" / name / "metrics.jsonl").read_text().splitlines()]
    return min(m["val_loss"] for m in metrics), metrics[-1]["step"]


def sample(work: Path, name: str) -> str:
    return subprocess.run([sys.executable, "-m", "charnn", "sample", str(work / "checkpoints" / name), "--length", "300",
                           "--seed", "1", "--temperature", "0.8"], check=True, capture_output=True, text=True).stdout


def compare(corpus: str, label: str, runs: dict[str, list[str]], work: Path) -> list[str]:
    """Train each run on `corpus`; one table row per run."""
    rows = []
    for kind, options in runs.items():
        name = f"{label}-{kind.replace(' ', '-')}"
        wall = train([corpus, *options, "--name", name, "--overwrite"], work)
        loss, steps = best(work, name)
        rows.append(f"| {label} | {kind} | {loss:.4f} | {steps} | {wall:.1f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", nargs="*", default=list(TEXTS), choices=list(TEXTS))
    parser.add_argument("--shakespeare", action="store_true", help="also tiny-shakespeare at 4m and 10m")
    parser.add_argument("--tune", action="store_true", help="the fine-tuning defaults' sweep on doc-debian instead")
    parser.add_argument("--work", type=Path, default=Path("/tmp/charnn-base-bench"))
    parser.add_argument("--bases", nargs="*", default=["v1=base"], help="NAME=RUN: the bases to fine-tune from")
    parser.add_argument("--tuned", nargs="*", default=["1m"], help="the fine-tunes' budgets")
    parser.add_argument("--scratch", nargs="*", default=["1m", "10m"], help="the budgets from scratch")
    args = parser.parse_args()
    bases = dict(b.split("=", 1) for b in args.bases)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tune:
        path = str(tuning_text(args.work))
        base = ["--from", "base", "--time", "1m"]
        rows = compare(path, "doc-debian", {"default": base, "lr 1e-3": [*base, "--lr", "1e-3"],
                                            "lr 2e-3": [*base, "--lr", "2e-3"], "lr 3e-3": [*base, "--lr", "3e-3"],
                                            "no average": [*base, "--ema", "0"]}, args.work)
        print("\n| text | run | best val (nats) | steps | command wall s |\n|---|---|---|---|---|\n" + "\n".join(rows))
        return 0
    rows = []
    for name in args.texts:
        path = small_text(name, args.work)
        print(f"{name}: {path.stat().st_size:,} bytes", flush=True)
        tuned = {f"from {label} {t}": ["--from", run, "--time", t] for label, run in bases.items() for t in args.tuned}
        scratch = {f"scratch {t}": ["--scratch", "--time", t] for t in args.scratch}
        rows += compare(str(path), name, {**tuned, **scratch}, args.work)
    if args.shakespeare:
        for budget in ("4m", "10m"):
            rows += compare("shakespeare", f"shakespeare-{budget}", {
                **{f"from {label} {budget}": ["--from", run, "--time", budget] for label, run in bases.items()},
                f"scratch {budget}": ["--scratch", "--time", budget]}, args.work)
    print("\n| text | run | best val (nats) | steps | command wall s |\n|---|---|---|---|---|")
    print("\n".join(rows))
    for name in args.texts:
        for label in bases:
            run = f"{name}-from-{label}-{args.tuned[0]}"
            print(f"\n--- {name}, from {label} {args.tuned[0]} (seed 1, temperature 0.8) ---\n{sample(args.work, run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
