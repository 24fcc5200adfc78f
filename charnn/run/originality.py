"""Originality: which spans of a generated text occur verbatim in the run's training text.

The index is the suffix array of the training split's ids (libdivsufsort, through `pydivsufsort`):
exact, built once per corpus, vocabulary and split, beside the encoded cache under the same stem
(`<stem>.train<N>.sa.npy` and its `.json`), written to temp files and renamed into place (a kill while
building leaves no index, never half of one) and memory-mapped afterwards.

A lookup binary-searches the sorted suffixes for every position i of the text: the longest prefix of
text[i:] that occurs in the training split (`matches`), and where. A copied span is a maximal run
of at least K characters found verbatim; the report counts the generated characters inside such
spans (a prime is not generated: it is matched, so a copy that starts in it is found, but its
characters are not counted) and names the longest span's place in the corpus (file and line).
"""

from __future__ import annotations

import html
import json
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charnn.errors import UsageError
from charnn.run import checkpoint

INDEX_VERSION = 1
# Spans shorter than this are not reported as copies. Of held-out text (tiny-shakespeare's validation split, never
# trained on, against its training split) 20% of the characters sit inside verbatim matches of >= 15 characters,
# 2.1% inside matches of >= 20 and 0.3% of >= 25 (benchmarks/originality.py): common phrases recur by themselves
# up to ~15 characters. At 20, what is flagged is almost all recitation, not chance.
MIN_COPY = 20
HEAD = 64  # bytes of a suffix compared first in the binary search


@dataclass
class Span:
    """Text positions [start, end) found verbatim at `source` in the training split (ids)."""

    start: int
    end: int
    source: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Report:
    """What of a text is copied: spans of at least `min_copy` characters in its generated part."""

    text: str
    start: int  # where the generated part begins (the prime's length)
    min_copy: int
    spans: list[Span] = field(default_factory=list)  # clipped to the generated part, in order, not overlapping
    longest: Span | None = None  # the longest verbatim match touching the generated part (unclipped)
    where: str | None = None  # the longest match's place in the corpus: "file:line" or "line N"

    @property
    def generated(self) -> int:
        return len(self.text) - self.start

    @property
    def copied(self) -> int:
        return sum(s.length for s in self.spans)

    @property
    def fraction(self) -> float:
        return self.copied / self.generated if self.generated else 0.0

    def marked(self, terminal: bool) -> str:
        """The text with its copied spans underlined (for a terminal) or between ⟦ ⟧ (for a file or a pipe)."""
        begin, end = ("\x1b[4m", "\x1b[24m") if terminal else ("⟦", "⟧")
        pieces, at = [], 0
        for span in self.spans:
            pieces += [self.text[at:span.start], begin, self.text[span.start:span.end], end]
            at = span.end
        return "".join(pieces) + self.text[at:]

    def describe(self) -> str:
        """One line: how much was copied, the longest copy and where it is."""
        line = (f"originality: {self.copied:,} of {self.generated:,} generated characters ({self.fraction:.1%}) in "
                f"spans copied verbatim from the training text (>= {self.min_copy} characters)")
        if self.longest is not None:
            quoted = self.text[self.longest.start:self.longest.end]
            line += f"; longest {self.longest.length} characters, at {self.where} of the corpus: {quoted[:60]!r}"
            line += "…" if len(quoted) > 60 else ""
        return line

    def _repr_html_(self) -> str:
        """A notebook shows the text with its copied spans highlighted, and the one-line summary beneath."""
        pieces, at = [], 0
        for span in self.spans:
            pieces += [html.escape(self.text[at:span.start]),
                       f"<mark title='copied from the training text'>{html.escape(self.text[span.start:span.end])}</mark>"]
            at = span.end
        pieces.append(html.escape(self.text[at:]))
        return f"<pre style='white-space:pre-wrap'>{''.join(pieces)}</pre><p>{html.escape(self.describe())}</p>"

    def to_json(self) -> dict[str, Any]:
        longest = None
        if self.longest is not None:
            longest = {"start": self.longest.start - self.start, "length": self.longest.length,
                       "text": self.text[self.longest.start:self.longest.end], "where": self.where}
        return {"min_copy": self.min_copy, "generated": self.generated, "copied": self.copied,
                "copied_fraction": round(self.fraction, 6),
                "spans": [[s.start - self.start, s.end - self.start] for s in self.spans], "longest": longest}


class Index:
    """The suffix array of a training split, and lookups in it.

    `ids` (N,) is the split as stored (uint8/uint16/int32, little-endian); suffixes are compared as bytes
    of that layout, which is the order the array was sorted in. `files` is [(name, first character)] for
    locating matches, `newline` the id of '\\n' (None: the vocabulary has none).
    """

    def __init__(self, ids: np.ndarray, sa: np.ndarray, files: Sequence[tuple[str, int]], newline: int | None):
        self.ids, self.sa, self.files, self.newline = ids, sa, list(files), newline
        self.width = ids.dtype.itemsize
        self.data = ids.view(np.uint8).reshape(-1)  # the bytes the suffixes are sorted by, (N * width,)
        # The search reads both through memoryviews: indexing and slicing them costs a fraction of numpy's.
        self._bytes = np.ascontiguousarray(self.data).data
        order = np.ascontiguousarray(sa, dtype=np.int64 if sa.dtype == np.int64 else np.int32)
        self._order = order.data.cast("B").cast("q" if order.dtype == np.int64 else "i")

    @classmethod
    def open(cls, ids: np.ndarray, stem: Path, files: Callable[[], Sequence[tuple[str, int]]],
             newline: int | None, show_progress: bool = False) -> Index:
        """The index of `ids` stored beside the cache entry `stem`, built now if it is not there (with a progress
        bar when `show_progress`). `files` gives the corpus's file starts (read once, at build time, and stored
        with the index)."""
        sa_path = stem.parent / f"{stem.name}.train{len(ids)}.sa.npy"
        meta_path = stem.parent / f"{stem.name}.train{len(ids)}.sa.json"
        loaded = _load(sa_path, meta_path, len(ids))
        if loaded is None:
            _build_and_store(ids, sa_path, meta_path, files, show_progress)
            loaded = _load(sa_path, meta_path, len(ids))
            assert loaded is not None
        sa, meta = loaded
        starts: list[list[Any]] = meta["files"]
        return cls(ids, sa, [(str(name), int(start)) for name, start in starts], newline)

    def matches(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every position i of `query` (ids, (n,)): the length of the longest prefix of query[i:] that occurs
        in the split, and one place where it does (-1 where the length is 0). Both (n,) int64."""
        n, w = len(query), self.width
        q = np.ascontiguousarray(query, dtype=self.ids.dtype).view(np.uint8).tobytes()
        lengths, places = np.zeros(n, np.int64), np.full(n, -1, np.int64)
        for i in range(n):
            lengths[i], places[i] = self._longest(q[i * w:])
        return lengths, places

    def _longest(self, q: bytes) -> tuple[int, int]:
        """Binary search of the suffix array for `q`; the longest common prefix is with a neighbour of where it
        would be inserted."""
        order, data, w, m = self._order, self._bytes, self.width, len(q)
        head = q[:HEAD]
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            s = order[mid] * w
            # Most comparisons are decided in the first bytes: copy a short head of the suffix, the rest only on a tie.
            start = data[s:s + HEAD].tobytes()
            if (start < head) if start != head else (data[s:s + m].tobytes() < q):
                lo = mid + 1
            else:
                hi = mid
        best, where = 0, -1
        for j in (lo - 1, lo):
            if 0 <= j < len(order):
                s = order[j] * w
                common = _common_prefix(self.data[s:s + m], q) // w
                if common > best:
                    best, where = common, int(order[j])
        return best, where

    def occurs(self, query: np.ndarray) -> bool:
        """Whether `query` (ids, (m,)) occurs verbatim in the split: one binary search."""
        if len(query) == 0:
            return True
        q = np.ascontiguousarray(query, dtype=self.ids.dtype).view(np.uint8).tobytes()
        return self._longest(q)[0] == len(query)

    def holds_item(self, item: np.ndarray, separator: np.ndarray) -> bool:
        """Whether `item` (ids) is a whole item of the split: between two separators, or first or last with
        the separator on its inner side."""
        if self.occurs(np.concatenate([separator, item, separator])):
            return True
        n, s = len(item), len(separator)
        if len(self.ids) == n:  # the whole split is this one item
            return bool(np.array_equal(self.ids, item))
        first = np.concatenate([item, separator])
        last = np.concatenate([separator, item])
        return (len(self.ids) >= n + s and (bool(np.array_equal(self.ids[:n + s], first))
                                            or bool(np.array_equal(self.ids[len(self.ids) - n - s:], last))))

    def report(self, text: str, ids: np.ndarray, start: int, min_copy: int = MIN_COPY) -> Report:
        """The copied spans of `text` (whose ids are `ids`) after position `start`, of at least `min_copy`."""
        if min_copy < 1:
            raise UsageError(f"--min-copy {min_copy} must be at least 1")
        lengths, places = self.matches(ids)
        result = Report(text, start, min_copy)
        reach, longest = start, None  # reach: where the copied text found so far ends (the prime is not counted)
        for i, (length, place) in enumerate(zip(lengths.tolist(), places.tolist(), strict=True)):
            if length < min_copy or i + length <= start:
                continue
            if longest is None or length > longest.length:
                longest = Span(i, i + length, place)
            if i + length <= reach:  # inside a copy already found
                continue
            if result.spans and result.spans[-1].end >= i:  # overlaps or touches the last span: extend it
                result.spans[-1].end = i + length
            else:
                begin = max(i, start)
                result.spans.append(Span(begin, i + length, place + begin - i))
            reach = i + length
        result.longest = longest
        if longest is not None:
            result.where = self.locate(longest.source)
        return result

    def locate(self, position: int) -> str:
        """'file:line' (or 'line N' for a one-file corpus) of a position in the split."""
        starts = [start for _, start in self.files]
        k = max(bisect_right(starts, position) - 1, 0)
        name, first = self.files[k] if self.files else ("", 0)
        line = 1 + (int(np.count_nonzero(self.ids[first:position] == self.newline)) if self.newline is not None else 0)
        return f"{name}:{line}" if len(self.files) > 1 else f"line {line}"


def _build_and_store(ids: np.ndarray, sa_path: Path, meta_path: Path, files: Callable[[], Sequence[tuple[str, int]]],
                     show_progress: bool) -> None:
    """Build in stages under a bar (sorting is one call into libdivsufsort: the bar moves between stages)."""
    from tqdm.auto import tqdm

    stages = ("sorting the suffixes", "locating the files", "writing the index")
    with tqdm(total=len(stages), desc=f"indexing {len(ids):,} characters of training text (once)",
              disable=None if show_progress else True, bar_format="{desc}: {n}/{total}{postfix} [{elapsed}]") as bar:
        bar.set_postfix_str(stages[0])
        sa = build(ids)
        bar.update()
        bar.set_postfix_str(stages[1])
        record = {"version": INDEX_VERSION, "length": len(ids), "files": [list(f) for f in files()]}
        bar.update()
        bar.set_postfix_str(stages[2])
        _store(sa, sa_path, meta_path, record)
        bar.update()


def build(ids: np.ndarray) -> np.ndarray:
    """The suffix array of `ids` in its stored byte layout: positions sorted by their suffixes' bytes, (N,)."""
    from pydivsufsort import divsufsort

    if len(ids) == 0:
        return np.zeros(0, np.int64)
    raw = np.ascontiguousarray(ids).view(np.uint8).reshape(-1)  # (N * width,)
    sa = np.asarray(divsufsort(raw.tobytes()))  # a copy: the library takes writable memory, the cache is read-only
    width = ids.dtype.itemsize
    if width > 1:  # only suffixes that start at a character; their order among themselves is kept
        sa = sa[sa % width == 0] // width
    return sa.astype(np.int32 if len(ids) < 2**31 else np.int64, copy=False)  # no second copy of N ints


def _common_prefix(a: np.ndarray, b: bytes) -> int:
    """Bytes a and b share at their start."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != np.frombuffer(b, np.uint8, n))
    return int(diff[0]) if len(diff) else n


def _store(sa: np.ndarray, sa_path: Path, meta_path: Path, meta: dict[str, Any]) -> None:
    """Write the array, then its description (whose presence marks a complete index), each atomically."""
    sa_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(sa_path, lambda f: np.save(f, sa))
    checkpoint.atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))


def _load(sa_path: Path, meta_path: Path, length: int) -> tuple[np.ndarray, dict[str, Any]] | None:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != INDEX_VERSION or meta.get("length") != length or not isinstance(meta["files"], list):
            return None
        sa = np.load(sa_path, mmap_mode="r")
        return (sa, meta) if sa.shape == (length,) else None
    except (OSError, ValueError, KeyError):
        return None  # missing or damaged: built again, never trusted
