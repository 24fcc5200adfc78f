"""Originality's index and lookups: build time and memory at scale, and what marking costs `charnn sample`.

    python benchmarks/originality.py [--sizes 1,100] [--folder-files 100000] [--folder-mb 100] [--run RUN] [--record]

Index: synthetic corpora (benchmarks/corpus_scale.py's generators), encoded into the cache first, then the
index built in a fresh child process (`Index.open` as `charnn sample --originality` calls it): seconds and
the child's peak RSS above what it held before the build. The folder corpus (100,000 small files) also
reads every file once more for the file starts that locate a copy.

Lookups: a tiny-shakespeare run (`--run`, or one trained here with `charnn train shakespeare --time 60s`),
its index built beforehand. `charnn sample RUN --length 2000` with and without `--originality`, whole
processes in turns, medians of 5: the ratio is what marking costs a user (target <= 1.10). And in one
process: the lookup's seconds per character of a 2000-character sample against generation's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report, table
from benchmarks.corpus_scale import make_corpus, make_folder

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from charnn.text import corpus, streams
from charnn.run.originality import Index
path, cache = Path(sys.argv[1]), Path(sys.argv[2])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
c = corpus.resolve(str(path), cache)
enc = streams.prepare(c.chunks, c.fingerprint, cache / ".cache")
train, _ = streams.split(enc.ids, 0.1)
before = rss()
t0 = time.perf_counter()
index = Index.open(train, enc.stem, lambda: c.file_starts() if len(c.files) > 1 else [(c.files[0].name, 0)], None)
seconds = time.perf_counter() - t0
t0 = time.perf_counter()
again = Index.open(train, enc.stem, lambda: [], None)
print(json.dumps({{"chars": int(len(train)), "files": len(c.files), "seconds": seconds, "peak_above": rss() - before,
                  "reopen": time.perf_counter() - t0}}))
"""


def build_in_child(path: Path, cache: Path) -> dict:
    code = CHILD.format(root=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", code, str(path), str(cache)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charnn", *args], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100", help="corpus sizes in MB")
    parser.add_argument("--folder-files", type=int, default=100_000)
    parser.add_argument("--folder-mb", type=int, default=100)
    parser.add_argument("--run", help="a tiny-shakespeare run for the lookup timings (default: train one, 60 s)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charnn-originality-"))
    rows = []
    for mb in (int(s) for s in args.sizes.split(",") if s):
        path = work / f"corpus-{mb}mb.txt"
        make_corpus(path, mb)
        r = build_in_child(path, work / f"cache-{mb}")
        rows.append([f"{mb} MB file", f"{r['chars']:,}", "1", f"{r['seconds']:.2f}", f"{r['peak_above'] / 1e6:,.0f}",
                     f"{r['peak_above'] / max(r['chars'], 1):.1f}", f"{r['reopen'] * 1000:.1f}"])
        print(rows[-1], flush=True)
    if args.folder_files:
        folder = work / "tree"
        make_folder(folder, args.folder_files, args.folder_mb)
        r = build_in_child(folder, work / "cache-tree")
        rows.append([f"{args.folder_files:,} files, {args.folder_mb} MB", f"{r['chars']:,}", f"{r['files']:,}",
                     f"{r['seconds']:.2f}", f"{r['peak_above'] / 1e6:,.0f}", f"{r['peak_above'] / max(r['chars'], 1):.1f}",
                     f"{r['reopen'] * 1000:.1f}"])
        print(rows[-1], flush=True)
    index_table = table(["corpus", "training characters", "files", "build s", "peak RSS above, MB", "bytes per char",
                         "reopen ms"], rows)

    ckpts = work / "checkpoints"
    run = args.run or str(ckpts / "bard")
    if not args.run:
        subprocess.run([sys.executable, "-m", "charnn", "train", "shakespeare", "--time", "60s", "--name", "bard",
                        "--checkpoints-dir", str(ckpts), "--corpora-dir", str(work / "corpora"), "--quiet"], check=True)
    common = ["sample", run, "--length", "2000", "--corpora-dir", str(work / "corpora")]
    timed([*common, "--originality", "--seed", "0"])  # builds the index once
    plain, marked = [], []
    for seed in range(1, 6):
        plain.append(timed([*common, "--seed", str(seed)]))
        marked.append(timed([*common, "--seed", str(seed), "--originality"]))
    p, m = statistics.median(plain), statistics.median(marked)
    per_char = lookup_cost(run, work)
    heldout = heldout_coverage(run, work)
    lookup_table = table(["`charnn sample --length 2000`", "median s", "ratio"],
                         [["plain", f"{p:.2f}", "1.00x"], ["--originality", f"{m:.2f}", f"{m / p:.2f}x"]])
    note = (f"In one process, 2000 characters: generation {per_char['generate'] * 1e6:.0f} µs per character, the "
            f"originality lookup {per_char['lookup'] * 1e6:.0f} µs per character "
            f"({per_char['lookup'] / per_char['generate']:.2f}x); the run: {run}.")
    k_table = table(["K", *map(str, KS)], [["held-out characters inside matches >= K",
                                           *[f"{heldout[k]:.2%}" for k in KS]]])
    k_note = ("Held-out text: the first 20,000 characters of the run's validation split (never trained on) against "
              "its training split's index: how much of real, unseen text a span of K characters flags by chance.")
    report("originality: index build at scale; marking's cost to charnn sample; the copy threshold",
           [index_table, lookup_table, note, k_table, k_note], args.record)
    return 0


KS = (8, 10, 12, 15, 20, 25, 30, 40)


def heldout_coverage(run: str, work: Path) -> dict[int, float]:
    """The share of held-out characters inside verbatim training matches of at least K characters, for each K."""
    import numpy as np

    from charnn import api
    from charnn.run.config import RunConfig
    from charnn.run.corpus import corpus_of_run
    from charnn.text import streams

    model = api.load_run(run, device="cpu")
    paths = api.Paths(Path(run).parent, work / "corpora")
    index = model.originality_index(paths)
    config = RunConfig.from_json(model.config, model.run_dir)
    source = corpus_of_run(config, model.run_dir, paths)
    encoded = streams.prepare(source.chunks, source.fingerprint, paths.cache)
    val = np.asarray(streams.split(encoded.ids, config.train.val_frac)[1][:20_000])
    lengths, _ = index.matches(val)
    result = {}
    for k in KS:
        covered = np.zeros(len(val) + 1, np.int64)
        for i in np.flatnonzero(lengths >= k):
            covered[i] += 1
            covered[i + lengths[i]] -= 1
        result[k] = float(np.count_nonzero(np.cumsum(covered)[:-1])) / len(val)
    return result


def lookup_cost(run: str, work: Path) -> dict[str, float]:
    from charnn import api
    from charnn.sample import SampleConfig, generate

    model = api.load_run(run, device="cpu")
    paths = api.Paths(Path(run).parent, work / "corpora")
    model.originality_index(paths)
    started = time.perf_counter()
    stream = generate(model.model, model.tokenizer, "\n", SampleConfig(length=2000, seed=7))
    for _ in stream:
        pass
    gen = (time.perf_counter() - started) / 2000
    started = time.perf_counter()
    model.originality("\n" + stream.texts[0], 1)
    return {"generate": gen, "lookup": (time.perf_counter() - started) / 2000}


if __name__ == "__main__":
    sys.exit(main())
