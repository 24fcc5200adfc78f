"""The encoded-corpus cache and the TBPTT stream layout.

Cache: a corpus is encoded once into a flat binary file of ids (uint8/uint16/
int32, the smallest that fits) beside a JSON description, keyed by content
hash, and memory-mapped afterwards: a second run skips encoding and a corpus
larger than RAM never has to fit in RAM.

Streams: the ids are cut into B contiguous streams; window k of every stream
is columns [kT, kT+T) with targets shifted by one, so row n of window k+1
continues row n of window k and the hidden state carries across windows.
Training shifts the whole layout by a different offset each epoch (`epoch_offset`),
so later passes cut the text into other windows and streams instead of repeating
the first pass's exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charnn.errors import UsageError
from charnn.text.tokenizer import CharTokenizer, count_codepoints

CACHE_VERSION = 1


@dataclass
class EncodedCorpus:
    ids: np.ndarray  # (N,) memory-mapped, read-only
    tokenizer: CharTokenizer
    unknown: dict[str, int]  # characters dropped because the vocabulary lacked them
    stem: Path | None = None  # the cache entry's path without suffix: what sits beside it (originality's index) shares it


def prepare(
    chunks: Callable[[], Iterable[str]],
    key: str,
    cache_dir: Path,
    tokenizer: CharTokenizer | None = None,
) -> EncodedCorpus:
    """Encode a corpus (or reuse its cache). Without `tokenizer` the vocabulary is built from the text.

    `chunks` is called once per pass (two passes when building a vocabulary);
    `key` identifies the content (its sha256).
    """
    stem = f"{key}-v{CACHE_VERSION}" + (f"-{tokenizer.digest()}" if tokenizer else "")
    meta_path = cache_dir / f"{stem}.json"
    ids_path = cache_dir / f"{stem}.ids"
    if meta_path.exists() and ids_path.exists():
        cached = _load(meta_path, ids_path, tokenizer, cache_dir / stem)
        if cached is not None:
            return cached
    if tokenizer is None:
        counts = np.zeros(0x110000, dtype=np.int64)
        for text in chunks():
            counts += count_codepoints(text)
        tokenizer = CharTokenizer.from_counts(counts)
    dtype = _id_dtype(tokenizer.vocab_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    unknown: dict[str, int] = {}
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{stem}.", suffix=".part")
    try:
        n = 0
        with os.fdopen(fd, "wb") as out:
            for text in chunks():
                known, missing = tokenizer.encode_known(text)
                for ch, count in missing.items():
                    unknown[ch] = unknown.get(ch, 0) + count
                out.write(known.astype(dtype).tobytes())
                n += len(known)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, ids_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    meta = {"version": CACHE_VERSION, "length": n, "dtype": np.dtype(dtype).name,
            "tokenizer": tokenizer.to_json(), "unknown": unknown}
    _write_json(meta_path, meta)  # written last: its presence marks a complete cache entry
    loaded = _load(meta_path, ids_path, tokenizer, cache_dir / stem)
    assert loaded is not None
    return loaded


def _load(meta_path: Path, ids_path: Path, tokenizer: CharTokenizer | None, stem: Path) -> EncodedCorpus | None:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        n = int(meta["length"])
        if meta["version"] != CACHE_VERSION or ids_path.stat().st_size != n * dtype.itemsize:
            return None
        tok = tokenizer or CharTokenizer.from_json(meta["tokenizer"])
        ids = np.memmap(ids_path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
        return EncodedCorpus(ids, tok, dict(meta["unknown"]), stem)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is rebuilt, never trusted


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _id_dtype(vocab_size: int) -> type:
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the last `val_frac` of the ids is validation (views, no copy)."""
    n_val = int(len(ids) * val_frac)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


class Streams:
    """B contiguous streams over `ids`, read in windows of T (see the module docstring).

    Only full windows are used for training; `windows(partial=True)` also
    yields the shorter last window so evaluation covers the whole split.
    `block` keeps a contiguous range of the B streams (one rank's share under
    torchrun): the layout is the single-process one, so stream n reads the same
    text whatever the number of processes.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, block: slice = slice(None),
                 labels: np.ndarray | None = None):
        self.ids = ids
        self.labels = labels  # (N,) a voice label per character (voices.py), or None
        self.batch_size = batch_size  # B: streams in the whole layout
        self.seq_len = seq_len
        self.stream_len = (len(ids) - 1) // batch_size  # characters each stream predicts
        self.block = block
        self.starts = (np.arange(batch_size, dtype=np.int64) * self.stream_len)[block]  # (b,) this block's streams
        self.rows = len(self.starts)
        self.n_windows = self.stream_len // seq_len

    @staticmethod
    def check_fits(n: int, batch_size: int, seq_len: int, what: str) -> None:
        need = batch_size * seq_len + 1
        if n < need:
            raise UsageError(
                f"the {what} split has {n:,} characters but --batch-size {batch_size} x --seq-len {seq_len} "
                f"needs at least {need:,} — lower --batch-size or --seq-len, or give more text"
            )

    def epoch_offset(self, seed: int, epoch: int) -> int:
        """Where epoch `epoch` starts the layout: 0 for the first, then a draw in [0, stream_len).

        A function of (seed, epoch) alone, so a resumed run (which knows its epoch) and every
        torchrun rank cut exactly the same windows without storing anything more.
        """
        if epoch == 0 or self.stream_len < 2:
            return 0
        return int(np.random.default_rng([seed, epoch]).integers(1, self.stream_len))

    def window(self, k: int, length: int | None = None, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of window k, each (b, length) int64 for this block's b streams.

        With an `offset` every stream starts that many characters later; the last stream wraps
        round to the start of `ids` (one target per epoch pairs the last character with the first).
        """
        block = torch.from_numpy(np.asarray(self.ids[self._columns(k, length, offset)], dtype=np.int64))
        return block[:, :-1], block[:, 1:]

    def voices(self, k: int, length: int | None = None, offset: int = 0) -> torch.Tensor:
        """The voice label of each input character of window k (b, length) int64: what `window` reads, labelled."""
        assert self.labels is not None, "only a voiced corpus has labels"
        return torch.from_numpy(np.asarray(self.labels[self._columns(k, length, offset)[:, :-1]], dtype=np.int64))

    def _columns(self, k: int, length: int | None, offset: int) -> np.ndarray:
        """Where window k's characters are in `ids`: (b, length + 1), the last column being the last target."""
        t = self.seq_len if length is None else length
        cols = self.starts[:, None] + (offset + k * self.seq_len + np.arange(t + 1))  # (B, t+1)
        if offset:
            cols %= len(self.ids)
        return cols

    def windows(self, start: int = 0, partial: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k, length in self.spans(start, partial):
            yield self.window(k, length)

    def spans(self, start: int = 0, partial: bool = False) -> Iterator[tuple[int, int]]:
        """(window, length) of each window from `start`; with `partial`, the shorter last one too."""
        for k in range(start, self.n_windows):
            yield k, self.seq_len
        rest = self.stream_len - self.n_windows * self.seq_len
        if partial and rest > 0:
            yield self.n_windows, rest
