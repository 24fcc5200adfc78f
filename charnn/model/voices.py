"""Voices: several styles in one model, each a name the user gives its text, chosen or blended when it writes.

A voiced model has a voice table (`CharRNN.voice_table`, (K+1, E)): row 0 is "no voice", row k the k-th voice
of `ModelConfig.voices`. A voice (or a blend) is a vector in the character embedding's space, added to
every character's embedding, so it enters each step once, through the model's input, whatever the cell.
While generating, the vector rides in the state as its last part (model/network.py), so everything that moves rows
(batches, beam search, the server) carries a row's voice without knowing about it.

Here: the names (`parse_spec`, `check_names`), blends (`parse_blend`, `weights`, `describe`), voices read from
a record file (`from_records`), the line a voiced run starts with, and which training windows learn "no voice"
(`unvoiced_rows`). Imports nothing of the model: the model, the data and the CLI ask it.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from charnn.errors import UsageError

NO_VOICE = 0  # the table row (and training label) of text written with no voice given
MAX_VOICES = 255  # labels are stored one byte per character, 0 being no voice
NO_VOICE_SHARE = 0.1  # the share of training windows that learn without their voice (TrainConfig.no_voice_share)
Blend = dict[str, float]  # voice name -> weight; the weights sum to 1
_TOLERANCE = 1e-6  # how far a blend's weights may sum from 1 (decimal fractions like 0.7 + 0.2 + 0.1)
_SUFFIXES = re.compile(r"(\.(txt|text|md|gz|bz2|xz|jsonl|csv))+$", re.IGNORECASE)
# A voice's name: what a blend can spell (no ',' or '='), printable, no space at either end, at most 64 characters.
_NAME = re.compile(r"[^,=\s\x00-\x1f\x7f]([^,=\x00-\x1f\x7f]{0,62}[^,=\s\x00-\x1f\x7f])?")
NAME_RULE = "1-64 printable characters, no ',' or '=' and no space at either end"


def parse_spec(arg: str) -> tuple[str, str]:
    """A `--voices` CORPUS argument -> (voice name, source). `NAME=PATH` names it; otherwise the name is the
    file's or folder's stem (`plays.txt.gz` -> `plays`). An existing path with '=' in it stays a path."""
    name, sep, path = arg.partition("=")
    if sep and name and path and not Path(arg).exists():
        return name, path
    stem = _SUFFIXES.sub("", Path(arg.rstrip("/")).name) or arg
    return stem, arg


def check_names(voices: Sequence[str]) -> None:
    """One line for the first problem with a model's voice names: too few, too many, invalid, repeated."""
    if len(voices) < 2:
        raise UsageError("--voices needs at least two voices (one CORPUS per voice, e.g. plays.txt sonnets.txt) — "
                         "with one text, train without --voices")
    if len(voices) > MAX_VOICES:
        raise UsageError(f"--voices got {len(voices)} voices; at most {MAX_VOICES} fit — merge some texts")
    seen: set[str] = set()
    for name in voices:
        if not _NAME.fullmatch(name):
            raise UsageError(f"voice name {name!r} is not valid — use {NAME_RULE} (name it with NAME=PATH)")
        if name in seen:
            raise UsageError(f"voice {name!r} is given twice — name the texts apart with NAME=PATH")
        seen.add(name)


def parse_blend(text: str) -> Blend:
    """`--voice` text -> a blend: `poems` is {poems: 1}; `poems=0.7,plays=0.3` weighs two. Weights are checked
    against a model by `weights`; here only the form (numbers, no name twice)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1 and "=" not in parts[0]:
        return {parts[0]: 1.0}
    blend: Blend = {}
    for part in parts:
        name, sep, value = (s.strip() for s in part.partition("="))
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name or not math.isfinite(weight):
            raise UsageError(f"--voice {text!r} is not a blend — write NAME or NAME=WEIGHT,NAME=WEIGHT "
                             "(e.g. poems=0.7,plays=0.3)")
        if name in blend:
            raise UsageError(f"--voice {text!r} names voice {name!r} twice — give each voice once")
        blend[name] = weight
    return blend


def as_blend(voice: str | Mapping[str, float] | None) -> Blend | None:
    """A voice as callers give it (a name, a `--voice` text, a {name: weight} mapping, or None) -> a blend."""
    if voice is None:
        return None
    if isinstance(voice, str):
        return parse_blend(voice)
    return {str(k): float(v) for k, v in voice.items()}


def weights(blend: Mapping[str, float], voices: Sequence[str], option: str = "--voice") -> list[float]:
    """A blend's weight for every row of a model's voice table (row 0, no voice, gets 0): (K+1,) floats.

    Refuses in one line a voice the model lacks (naming its voices), a model without voices, a negative
    weight and weights that do not sum to 1."""
    if not voices:
        raise UsageError(f"{option} was given but this model has no voices — drop {option}, or train with "
                         "--voices")
    for name in blend:
        if name not in voices:
            raise UsageError(f"{option}: this model has no voice {name!r} — its voices are {', '.join(voices)}")
    if any(not (0.0 <= w <= 1.0) for w in blend.values()):
        raise UsageError(f"{option}: each weight must be between 0 and 1 (got "
                         f"{', '.join(f'{k!r}={v:g}' for k, v in blend.items())})")
    total = sum(blend.values())
    if abs(total - 1.0) > _TOLERANCE:
        raise UsageError(f"{option}: the weights sum to {total:g}, not 1 — e.g. "
                         f"{','.join(f'{k}={v / total:.2f}' for k, v in blend.items()) if total > 0 else 'poems=0.5,plays=0.5'}")
    row = [0.0] * (len(voices) + 1)
    for name, w in blend.items():
        row[voices.index(name) + 1] = w
    return row


def describe(blend: Mapping[str, float] | None) -> str:
    """A blend as the user would write it (`poems`, `poems=0.7,plays=0.3`), or 'no voice'."""
    if not blend:
        return "no voice"
    if len(blend) == 1:
        return next(iter(blend))
    return ",".join(f"{k}={v:g}" for k, v in blend.items())


def voices_line(voices: Sequence[str], chars: Sequence[int], balance: bool, unvoiced: float = NO_VOICE_SHARE) -> str:
    """The line a voiced run starts with: its voices, their sizes, and how the steps are shared."""
    total = sum(chars) or 1
    shares = ", ".join(f"{name} ({n:,} characters, {n / total:.0%})" for name, n in zip(voices, chars, strict=True))
    how = "equal shares (--balance: each voice's text repeated up to the longest's)" if balance else \
        "in proportion to their text (--balance for equal shares)"
    return f"voices: {shares}; trained {how}; {unvoiced:.0%} of windows learn with no voice"


MAX_RECORD = 64 * 1024 * 1024  # bytes: the longest line (or CSV field) a record file may hold, read in bounded memory


def from_records(path: Path, into: Path, text_field: str = "text", voice_field: str = "voice") -> list[tuple[str, str]]:
    """`--voices-from FILE`: a JSON-lines or CSV file of documents, each a text and its voice -> one text file per
    voice (voices in order of first appearance, documents in file order, each ending in a newline), written under
    `into`/voices/ keyed by what they hold; [(voice name, its text file)].

    Two passes over the file, neither holding more than one record (at most `MAX_RECORD` bytes a line): the first
    checks every record and hashes each voice's documents, so a bad line is one UsageError naming it before
    anything is written; the second writes each voice's documents to its file."""
    _record_kind(path)
    hashes: dict[str, Any] = {}
    for line, document, voice in _documents(path, text_field, voice_field):
        if voice not in hashes:
            if not _NAME.fullmatch(voice):
                raise UsageError(f"--voices-from '{path}' line {line}: voice name {voice!r} is not valid — use {NAME_RULE}")
            hashes[voice] = [hashlib.sha256(), 0]
        hashes[voice][0].update(document.encode("utf-8") + b"\0")
        hashes[voice][1] += 1
    check_names(list(hashes))
    digest = hashlib.sha256()  # keyed by what is written: the same documents from another file reuse it
    for voice, (h, count) in hashes.items():
        digest.update(f"{voice}\0{count}\0{h.hexdigest()}\0".encode())
    folder = into / "voices" / digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    targets = {voice: folder / f"{k:03d}.txt" for k, voice in enumerate(hashes)}
    if not all(target.is_file() for target in targets.values()):  # written whole before: the same documents
        parts = {voice: open(target.with_suffix(".part"), "wb") for voice, target in targets.items()}  # noqa: SIM115
        try:
            for _, document, voice in _documents(path, text_field, voice_field):
                parts[voice].write(document.encode("utf-8"))
        finally:
            for f in parts.values():
                f.close()
        for target in targets.values():
            os.replace(target.with_suffix(".part"), target)
    return [(voice, str(target)) for voice, target in targets.items()]


def _record_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        raise UsageError(f"--voices-from '{path}': give a .jsonl file (one JSON object a line) or a .csv file "
                         "(a header row naming the fields)")
    return "csv" if suffix == ".csv" else "jsonl"


def _documents(path: Path, text_field: str, voice_field: str) -> Iterator[tuple[int, str, str]]:
    """(line number, document ending in a newline, voice) of each record, in file order, every field checked."""
    for line, record in _records(path):
        fields = []
        for field in (text_field, voice_field):
            value = record.get(field)
            if not isinstance(value, str):
                option = "--text-field" if field == text_field else "--voice-field"
                what = "has no" if value is None else "has a non-text"
                raise UsageError(f"--voices-from '{path}' line {line} {what} '{field}' field — give every record one "
                                 f"(or name the field with {option})")
            fields.append(value)
        text, voice = fields
        yield line, (text if text.endswith("\n") else text + "\n"), voice


def _lines(path: Path, f: IO[bytes]) -> Iterator[str]:
    """The file's lines as text, none longer than `MAX_RECORD` bytes: a longer one (a log without newlines,
    /dev/zero) is refused after reading `MAX_RECORD` bytes of it, never held whole."""
    for number in itertools.count(1):
        raw = f.readline(MAX_RECORD + 1)
        if not raw:
            return
        if len(raw) > MAX_RECORD:
            raise UsageError(f"--voices-from '{path}' line {number} is longer than {MAX_RECORD // 2**20} MB — "
                             "split the document into records of at most that size")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--voices-from '{path}' line {number} is not UTF-8 text — save the file as UTF-8") from None


def _records(path: Path) -> Iterator[tuple[int, Mapping[str, object]]]:
    """(line number, record) of a .jsonl (one JSON object a line; blank lines skipped) or a .csv (a header row)."""
    kind = _record_kind(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; a generator that yields inside `with` is the same)
    except OSError as e:
        raise UsageError(f"--voices-from '{path}' cannot be read ({e.strerror or e}) — give a .jsonl or .csv file") from None
    with f:
        if kind == "csv":
            csv.field_size_limit(MAX_RECORD)
            reader = csv.DictReader(_lines(path, f))
            try:
                for row in reader:
                    yield reader.line_num, row
            except csv.Error as e:
                raise UsageError(f"--voices-from '{path}' line {reader.line_num} is not valid CSV ({e}) — "
                                 f"quote fields with commas or newlines; at most {MAX_RECORD // 2**20} MB a field") from None
            return
        for number, text in enumerate(_lines(path, f), 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise UsageError(f"--voices-from '{path}' line {number} is not JSON ({e.msg}) — one object a line") from None
            if not isinstance(record, dict):
                raise UsageError(f"--voices-from '{path}' line {number} is not a JSON object — one object a line")
            yield number, record


def unvoiced_rows(seed: int, step: int, batch: int, share: float) -> np.ndarray:
    """Which of the layout's `batch` streams train step `step`'s window with no voice: (batch,) bool.

    A function of (seed, step) alone, so every torchrun rank (reading its block of it) and a resumed run
    draw the same rows. About `share` of the windows: the model learns to write with no voice given too.
    """
    if share <= 0:
        return np.zeros(batch, dtype=bool)
    return np.random.default_rng([seed, step, 0x0F0C]).random(batch) < share
