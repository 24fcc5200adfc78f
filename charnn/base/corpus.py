"""The base model's corpus: broad English prose assembled offline from Debian packages of free text.

    python -m charnn.base.corpus OUT_DIR [--install]

Each source is read from its installed Debian package, cleaned into plain text and split: its first 90%
trains, its last 10% validates. `OUT_DIR/base-corpus.txt` holds every source's training part, then every
source's validation part, so `charnn train OUT_DIR/base-corpus.txt --val-frac F` with the F written to
`OUT_DIR/sources.json` validates on a held-back share of every source; `OUT_DIR/val-NAME.txt` holds each
source's share alone, to score per source (`charnn eval RUN OUT_DIR/val-NAME.txt`).

Left out on purpose: every Shakespeare quotation (the dictionary's citations `--Shak.` and any fortune
that names him; any line of tiny-shakespeare found verbatim is dropped too), so a fine-tune from the
base on tiny-shakespeare measures something; fortunes' `songs-poems` (a held-out small text for
benchmarks/base.py); licence texts and legal boilerplate; non-English files. Paragraphs are
deduplicated across sources. Characters rarer than `MIN_CHAR_COUNT` drop the paragraph that holds them
(they would only grow the vocabulary).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from charnn.text.corpora import shakespeare_path

VAL_SHARE = 0.1
MIN_CHAR_COUNT = 200
FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Fortune files that are not English prose or verse, or that benchmarks hold out.
FORTUNES_LEFT_OUT = {"songs-poems", "translate-me", "ascii-art", "disclaimer"}
BOILERPLATE = re.compile(r"GNU General Public License|WITHOUT ANY WARRANTY|Free Software Foundation|"
                         r"All rights reserved|Permission is hereby granted|licen[cs]ed under", re.IGNORECASE)
SHAKESPEARE = re.compile(r"Shak|Wm\. S|W\. S\.", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    licence: str
    read: Callable[[], Iterator[str]]  # paragraphs, cleaned


def package_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


# ---- the dictionary -----------------------------------------------------------------------------

GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
_PRONUNCIATION = re.compile(r"\s*\\[^\\\n]*\\,?")  # \Ab`di*ca"tion\,
_BRACKETS = re.compile(r"\[[^\[\]]*\]")  # [L. abdicatio], [1913 Webster], [Obs.], accent codes [a^]
_INLINE_SHAK = re.compile(r"\"[^\"]*\"\s*--Shak\.")


def gcide_paragraphs() -> Iterator[str]:
    """Webster's 1913 (GCIDE): each entry's headword and senses as text, markup and tags removed."""
    with gzip.open(GCIDE, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = text.find("\nA \\A\\")  # the dictionary proper; before it, the database's own header
    for entry in re.split(r"\n(?=\S)", text[start:]):
        yield from _gcide_entry(entry)


def _gcide_entry(entry: str) -> Iterator[str]:
    entry = _PRONUNCIATION.sub("", entry, count=1)
    for _ in range(2):  # nested brackets: [Shortened form of an. AS. [=a]n one.]
        entry = _BRACKETS.sub("", entry)
    entry = _INLINE_SHAK.sub("", entry).replace("{", "").replace("}", "")
    for block in re.split(r"\n\s*\n", entry):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines or any("\\" in line or "*" in line for line in lines):
            continue  # leftover pronunciation markup
        text = "\n".join(_tidy(line) for line in lines)
        if len(text) >= 20:
            yield text


def _tidy(line: str) -> str:
    """What removing the brackets leaves behind: doubled spaces, a stop after a stop, empty parentheses."""
    line = re.sub(r"\(\s*\)", "", re.sub(r"\s{2,}", " ", line))
    return re.sub(r"([.,;:])\s+\.(?=\s|$)", r"\1", line).strip()


# ---- the Bible ----------------------------------------------------------------------------------


def bible_paragraphs() -> Iterator[str]:
    """The King James Bible from the `bible` reader: a chapter a paragraph, a verse a line, headings and verse
    numbers dropped."""
    out = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    for chapter in re.split(r"\n\s*\n\S[^\n]* \d+\n\s*\n", "\n\n" + out):
        verses = [m.group(1).strip() for m in re.finditer(r"^\s+\d+ (.+)$", chapter, re.MULTILINE)]
        if verses:
            yield "\n".join(verses)


# ---- fortunes -----------------------------------------------------------------------------------


def fortune_paragraphs() -> Iterator[str]:
    """The `fortunes` collections (quotations, jokes, verse), one fortune a paragraph, in file order."""
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix or path.name in FORTUNES_LEFT_OUT or not path.is_file():
            continue
        yield from _fortunes(path)


def _fortunes(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    for fortune in re.split(r"\n%\n", text):
        lines = [line.rstrip().expandtabs(8) for line in fortune.strip("\n%").splitlines()]
        body = "\n".join(lines).strip("\n")
        if len(body) >= 10:
            yield body


# ---- the Jargon File ----------------------------------------------------------------------------

JARGON = Path("/usr/share/doc/jargon-text/jargon.txt.gz")


def jargon_paragraphs() -> Iterator[str]:
    """The Jargon File 4.4.7: its prose paragraphs reflowed, the tables of contents and word lists dropped."""
    with gzip.open(JARGON, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    for block in re.split(r"\n\s*\n", text):
        words = " ".join(block.split())
        if len(words.split()) >= 8 and re.search(r"[.!?:;)\"”]$", words):
            yield words


SOURCES = (
    Source("dictionary", "dict-gcide", "GPL-3.0-or-later (GCIDE; Webster's 1913 is public domain)", gcide_paragraphs),
    Source("bible", "bible-kjv-text", "public domain text (King James Version); package GPL-2.0-or-later",
           bible_paragraphs),
    Source("fortunes", "fortunes", "BSD-4-Clause-UC (collections: public domain quotations and contributions)",
           fortune_paragraphs),
    Source("jargon", "jargon-text", "public domain (The Jargon File)", jargon_paragraphs),
)


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


def build(out_dir: Path) -> dict[str, object]:
    """Write the corpus files into `out_dir`; return the record also written to `sources.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    excluded = _shakespeare_lines()
    dropped: Counter[str] = Counter()
    parts = {s.name: kept_paragraphs(s.read(), seen, excluded, dropped) for s in SOURCES}
    parts = _rare_filtered(parts, dropped)
    train, val, record = [], [], []
    for source in SOURCES:
        text = "\n\n".join(parts[source.name]) + "\n\n"
        cut = text.rfind("\n\n", 0, int(len(text) * (1 - VAL_SHARE))) + 2  # at a paragraph boundary
        train.append(text[:cut])
        val.append(text[cut:])
        (out_dir / f"val-{source.name}.txt").write_text(text[cut:], encoding="utf-8")
        record.append({"name": source.name, "package": source.package, "version": package_version(source.package),
                       "licence": source.licence, "paragraphs": len(parts[source.name]),
                       "bytes": len(text.encode("utf-8")), "chars": len(text), "val_chars": len(text) - cut,
                       "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
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


def install() -> None:
    packages = sorted({s.package for s in SOURCES})
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--install", action="store_true", help="apt-get install the source packages first")
    args = parser.parse_args(argv)
    if args.install:
        install()
    missing = [s.package for s in SOURCES if not package_version(s.package)]
    if missing:
        print(f"missing Debian packages: {' '.join(missing)} — run with --install (as root) or apt-get install them",
              file=sys.stderr)
        return 1
    summary = build(args.out_dir)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
