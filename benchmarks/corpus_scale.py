"""Corpus preparation and memory at scale: encode+cache time, peak RSS, cache reuse, training RSS.

    python benchmarks/corpus_scale.py [--sizes 1,10,100] [--folder-files 100000] [--folder-mb 1000] [--record]

Synthetic UTF-8 corpora (mixed ASCII, accented Latin, Greek, CJK, emoji) are generated
inside the benchmark. Each measurement runs in a fresh child process so its peak RSS
(`ru_maxrss`) is its own. Baselines from the same run: the child's RSS just after
importing torch (`base`), and the tokenizers library's own `encode` on the 1 MB corpus.
Training RSS: the same small model trained for a few steps on the smallest and the
largest corpus; the difference must stay under 150 MB. Folder: the same text cut into
`--folder-files` small files in nested folders (a source tree's shape), prepared the
way `charnn train FOLDER` does (walk, per-file check and digest, encode, cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report, table

ALPHABET = list("abcdefghijklmnopqrstuvwxyz      \n\n.,;:!?ABCDEFGHIJéèàüößçñ") + list("αβγδε中文字符😀🎉")

CHILD = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {root!r})
import torch
from pathlib import Path
from charnn.text import corpus, streams
task, path, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
out = {{"base": base}}
if task == "prepare":
    t0 = time.perf_counter()
    c = corpus.resolve(str(path), cache)
    enc = streams.prepare(c.chunks, c.fingerprint, cache / ".cache")  # where training looks for it
    out.update(seconds=time.perf_counter() - t0, chars=int(len(enc.ids)), peak=rss())
elif task == "hf-encode":
    text = path.read_text(encoding="utf-8")
    from charnn.text.tokenizer import CharTokenizer
    tok = CharTokenizer(set(text))
    t0 = time.perf_counter(); ids = tok.hf.encode(text).ids; out["seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter(); fast = tok.encode_array(text); out["fast_seconds"] = time.perf_counter() - t0
    assert fast.tolist() == ids
elif task == "train":
    from charnn import api
    from charnn.model.network import ModelConfig
    from charnn.run.config import TrainConfig
    cfg = TrainConfig(batch_size=32, seq_len=64, max_steps=40, eval_every=10**9, val_frac=0.0001)
    api.start_training(str(path), ModelConfig(vocab_size=1, cell="lstm", hidden=128, embed=32), cfg, name=path.stem,
                       device="cpu", paths=api.Paths(cache / "ckpt", cache), show_progress=False, overwrite=True)
    out["peak"] = rss()
elif task == "eval":
    from charnn import api
    from charnn.model.network import ModelConfig
    from charnn.run.config import TrainConfig
    small = Path(sys.argv[4])  # a tiny model trained on the small corpus, then scoring `path`
    cfg = TrainConfig(batch_size=32, seq_len=64, max_steps=5, eval_every=10**9, val_frac=0.01)
    paths = api.Paths(cache / "evalrun", cache)
    api.start_training(str(small), ModelConfig(vocab_size=1, cell="gru", layers=1, hidden=16, embed=8), cfg,
                       name="tiny", device="cpu", paths=paths, show_progress=False, overwrite=True)
    model = api.load_run(str(cache / "evalrun" / "tiny"), "latest", "cpu")
    before = rss()
    t0 = time.perf_counter()
    score = model.score_file(str(path), paths)
    out.update(seconds=time.perf_counter() - t0, chars=score.characters, before=before, peak=rss())
print(json.dumps(out))
"""


def make_corpus(path: Path, megabytes: int) -> None:
    rng = np.random.default_rng(megabytes)
    block = "".join(rng.choice(ALPHABET, size=1 << 18))
    target = megabytes * 1_000_000
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            f.write(block)
            written += len(block.encode("utf-8"))


def make_folder(root: Path, n_files: int, megabytes: int) -> int:
    """n_files files of about megabytes/n_files each, 100 to a folder; returns total bytes."""
    rng = np.random.default_rng(n_files)
    base = "".join(rng.choice(ALPHABET[:40], size=1 << 20))  # 1-byte characters: sizes are exact
    per = max(1, megabytes * 1_000_000 // n_files)
    total = 0
    for i in range(n_files):
        folder = root / f"d{i // 10_000:02d}" / f"s{i // 100 % 100:02d}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        start = (i * 7919) % (len(base) - per)
        (folder / f"f{i:06d}.txt").write_text(base[start:start + per], encoding="utf-8")
        total += per
    return total


def child(task: str, path: Path, cache: Path, *extra: Path) -> dict:
    code = CHILD.format(root=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", code, task, str(path), str(cache), *map(str, extra)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100", help="corpus sizes in MB")
    parser.add_argument("--folder-files", type=int, default=100_000, help="files in the folder corpus (0: skip)")
    parser.add_argument("--folder-mb", type=int, default=1000, help="total size of the folder corpus in MB")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charnn-scale-"))
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    files = {}
    for mb in sizes:
        path = work / f"corpus{mb}mb.txt"
        make_corpus(path, mb)
        files[mb] = path
        nbytes = path.stat().st_size
        first = child("prepare", path, work / f"cache{mb}")
        second = child("prepare", path, work / f"cache{mb}")
        extra = first["peak"] - first["base"]
        rows.append([f"{nbytes / 1e6:,.0f} MB", f"{first['chars']:,}", f"{first['seconds']:.2f}s",
                     f"{first['peak'] / 1e6:,.0f} MB", f"{extra / 1e6:,.0f} MB", f"{first['peak'] / nbytes:.2f}x",
                     f"{second['seconds']:.2f}s"])
        print(rows[-1], flush=True)
    if args.folder_files:
        folder = work / "tree"
        nbytes = make_folder(folder, args.folder_files, args.folder_mb)
        first = child("prepare", folder, work / "cache-tree")
        second = child("prepare", folder, work / "cache-tree")
        extra = first["peak"] - first["base"]
        rows.append([f"folder: {args.folder_files:,} files, {nbytes / 1e6:,.0f} MB", f"{first['chars']:,}",
                     f"{first['seconds']:.2f}s", f"{first['peak'] / 1e6:,.0f} MB", f"{extra / 1e6:,.0f} MB",
                     f"{first['peak'] / nbytes:.2f}x", f"{second['seconds']:.2f}s"])
        print(rows[-1], flush=True)
        shutil.rmtree(folder)
    prep = table(["corpus", "characters", "encode+cache", "peak RSS", "RSS above torch import", "peak / corpus",
                  "second run (cache hit; the files are still walked and digested)"], rows)
    hf = child("hf-encode", files[sizes[0]], work / "hf")
    baseline = (f"Baseline, same run: `tokenizers` `Tokenizer.encode` on the {sizes[0]} MB corpus took "
                f"{hf['seconds']:.2f}s; charnn's bulk encoder on the same text {hf['fast_seconds']:.3f}s "
                f"({hf['seconds'] / hf['fast_seconds']:.0f}x faster, identical ids).")
    # Training reuses each corpus's cache from above, so only training itself is measured.
    small = child("train", files[sizes[0]], work / f"cache{sizes[0]}")
    large = child("train", files[sizes[-1]], work / f"cache{sizes[-1]}")
    delta = (large["peak"] - small["peak"]) / 1e6
    training = (f"Peak RSS training a 2x128 LSTM for 40 steps: {small['peak'] / 1e6:,.0f} MB on the {sizes[0]} MB "
                f"corpus, {large['peak'] / 1e6:,.0f} MB on the {sizes[-1]} MB corpus (difference {delta:+,.0f} MB; "
                "target within 150 MB).")
    eval_at = [mb for mb in sizes if mb <= 100][-1]  # scoring 1 GB would take minutes even with a tiny model
    ev_small = child("eval", files[sizes[0]], work / "e0", files[sizes[0]])
    ev_large = child("eval", files[eval_at], work / "e1", files[sizes[0]])
    evaluation = (f"`charnn eval` (score_file) with a tiny model: {ev_small['peak'] / 1e6:,.0f} MB peak RSS on the "
                  f"{sizes[0]} MB file, {ev_large['peak'] / 1e6:,.0f} MB on the {eval_at} MB file "
                  f"({ev_large['chars']:,} characters in {ev_large['seconds']:.1f}s, encoded through the memory-mapped "
                  f"cache; difference {(ev_large['peak'] - ev_small['peak']) / 1e6:+,.0f} MB).")
    report("Corpus preparation and scale (benchmarks/corpus_scale.py)", [prep, baseline, training, evaluation],
           args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
