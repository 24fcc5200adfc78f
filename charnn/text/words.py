"""Words as a reader sees them, in any script, and the lexicon of a text: what `--words known` keeps to.

A word is a run of letters and combining marks (Unicode categories L and M: Latin, Cyrillic, Greek, Devanagari
with its vowel signs, …), with an apostrophe or hyphen inside it joining two such runs (`don't`, `well-known`);
digits, underscores and other punctuation end it. Words are compared without case (`The` is the word `the`), so
a sentence may begin with a word the text only had in the middle of one.

`Lexicon` keeps a text's distinct words sorted (lower-cased), so that "is this a word" and "does any word start
so" are each one binary search; `Lexicon.of` scans text with a pattern built from the text's own alphabet (fast:
one regular expression, not a loop over characters).
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path

JOINERS = "'’-"  # inside a word, between letters: don't, don’t, well-known


def is_letter(char: str) -> bool:
    """A letter or combining mark: what words are made of."""
    return unicodedata.category(char)[0] in "LM"


def pattern(alphabet: Iterable[str]) -> re.Pattern[str]:
    """The word pattern for text drawn from `alphabet`: runs of its letters and marks, joined by its joiners."""
    chars = set(alphabet)
    letters = "".join(re.escape(c) for c in sorted(c for c in chars if is_letter(c)))
    if not letters:
        return re.compile(r"(?!x)x")  # an alphabet without letters has no words
    joiners = "".join(re.escape(c) for c in JOINERS if c in chars)
    joined = f"(?:[{joiners}][{letters}]+)*" if joiners else ""
    return re.compile(f"[{letters}]+{joined}")


def words(text: str, alphabet: Iterable[str] | None = None) -> Iterator[re.Match[str]]:
    """Every word of `text` (as matches: where it is, and `.group()` the word as written)."""
    return pattern(set(text) if alphabet is None else alphabet).finditer(text)


class Lexicon:
    """A text's distinct words, lower-cased and sorted: membership and prefix questions by binary search."""

    def __init__(self, sorted_words: list[str]):
        self.words = sorted_words

    @staticmethod
    def of(chunks: Iterable[str]) -> Lexicon:
        """The lexicon of a text given in pieces (a piece ends a word: split texts at whitespace)."""
        found: set[str] = set()
        for chunk in chunks:
            found.update(m.group().lower() for m in words(chunk))
        return Lexicon(sorted(found))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        word = word.lower()
        i = bisect_left(self.words, word)
        return i < len(self.words) and self.words[i] == word

    def starts(self, prefix: str) -> bool:
        """Whether some word begins with `prefix` (lower-cased already)."""
        i = bisect_left(self.words, prefix)
        return i < len(self.words) and self.words[i].startswith(prefix)

    def save(self, path: Path) -> None:
        """A word a line, written to a temp file and renamed into place (a kill leaves no half-written list)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(self.words))
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> Lexicon:
        text = path.read_text(encoding="utf-8")
        return Lexicon(text.split("\n") if text else [])
