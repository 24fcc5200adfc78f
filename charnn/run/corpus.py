"""The corpus of a run: where runs and corpora live (`Paths`), how sources are read (`CorpusOptions`), the
corpus encoded into the cache and split (`prepare_corpus`), its record in config.json, the corpus a run
trained on found again and checked against its fingerprint (`corpus_of_run`), and the originality index
that sits beside its cache (`training_index`), and the validation split it leaves out (`validation_text`).

Used by training (session.py), originality (api.py) and the CLI; it writes only the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from charnn.distributed import ProcessGroup
from charnn.errors import CorpusError, RunError, UsageError
from charnn.run.config import RunConfig, TrainConfig
from charnn.run.originality import Index
from charnn.text import corpus, streams
from charnn.text.tokenizer import CharTokenizer
from charnn.text.words import JOINERS, Lexicon, is_letter

DEFAULT_CHECKPOINTS = Path("checkpoints")
DEFAULT_CORPORA = Path("corpora")


@dataclass
class Paths:
    checkpoints: Path = DEFAULT_CHECKPOINTS
    corpora: Path = DEFAULT_CORPORA

    @property
    def cache(self) -> Path:
        return self.corpora / ".cache"


@dataclass
class Prepared:
    """A corpus resolved, encoded and split, ready to train on."""

    corpus: corpus.Corpus
    encoded: streams.EncodedCorpus
    train_ids: Any
    val_ids: Any
    labels: tuple[np.ndarray, np.ndarray] | None = None  # a voiced run's: the voice of each train and val character
    voice_chars: tuple[int, ...] = ()  # a voiced run's characters per voice, as given (before --balance)


def check_fits(chars: int, cfg: TrainConfig) -> None:
    """Fail before any work when the corpus is too short for the chosen layout."""
    n_val = int(chars * cfg.val_frac)
    streams.Streams.check_fits(chars - n_val, cfg.batch_size, cfg.seq_len, "training")
    if n_val < 2:
        raise UsageError(f"the validation split has {n_val} characters (--val-frac {cfg.val_frac}) — "
                         "raise --val-frac or give more text (it needs at least 2)")


def prepare_corpus(source: corpus.Corpus, cfg: TrainConfig, paths: Paths, group: ProcessGroup | None = None,
                   tokenizer: CharTokenizer | None = None) -> Prepared:
    """Encode `source` into the cache (or reuse it) and split it; with `tokenizer`, in that vocabulary
    (a grown one: fine-tuning), else in the corpus's own.

    Under torchrun one process per machine (local rank 0) writes the cache while the
    others wait at a barrier, then everyone memory-maps it: never N writers on one file.
    """
    check_fits(source.chars, cfg)
    encoded = _encoded(source, paths, group, tokenizer)
    train_ids, val_ids = streams.split(encoded.ids, cfg.val_frac)
    return Prepared(source, encoded, train_ids, val_ids)


def prepare_voices(sources: Sequence[corpus.Corpus], whole: corpus.Corpus, voices: Sequence[str], table: Sequence[str],
                   cfg: TrainConfig, paths: Paths, group: ProcessGroup | None = None,
                   tokenizer: CharTokenizer | None = None) -> Prepared:
    """A voiced corpus: source k is the text of voice `voices[k]`, labelled with that voice's row of the model's
    voice table (`table`, `ModelConfig.voices`: row i+1 is table[i]). The vocabulary is the whole
    text's (`whole`: every source in order; with `tokenizer`, that one grown); each voice is split on its own,
    so every voice keeps its last `val_frac` for validation, and the splits are laid end to end with a label
    per character. With `cfg.balance`, each voice's training text is repeated (whole copies, then its start)
    up to the longest's length, so each voice gets an equal share of the steps; else shares follow the text."""
    encoded = prepare_corpus(whole, cfg, paths, group, tokenizer).encoded
    trains, vals = [], []
    for name, source in zip(voices, sources, strict=True):
        if int(source.chars * cfg.val_frac) < 2:
            raise UsageError(f"voice '{name}' has {source.chars:,} characters: too few to keep {cfg.val_frac:g} of it "
                             "for validation — give it more text (or raise --val-frac)")
        own = _encoded(source, paths, group, encoded.tokenizer)
        train_ids, val_ids = streams.split(own.ids, cfg.val_frac)
        trains.append(np.asarray(train_ids))
        vals.append(np.asarray(val_ids))
    chars = tuple(len(t) + len(v) for t, v in zip(trains, vals, strict=True))
    if cfg.balance:
        longest = max(map(len, trains))
        trains = [np.resize(t, longest) for t in trains]  # np.resize repeats the array to fill the length
    rows = [table.index(name) + 1 for name in voices]
    return Prepared(whole, encoded, np.concatenate(trains), np.concatenate(vals),
                    (_labelled(trains, rows), _labelled(vals, rows)), chars)


def _encoded(source: corpus.Corpus, paths: Paths, group: ProcessGroup | None,
             tokenizer: CharTokenizer | None) -> streams.EncodedCorpus:
    """`source` in `tokenizer`'s ids, written to the cache by one process per machine (as `prepare_corpus`)."""
    group = group or ProcessGroup.solo()
    if group.launch.local_rank == 0:
        encoded = streams.prepare(source.chunks, source.fingerprint, paths.cache, tokenizer)
    group.barrier()
    if group.launch.local_rank != 0:
        encoded = streams.prepare(source.chunks, source.fingerprint, paths.cache, tokenizer)
    return encoded


def _labelled(parts: Sequence[np.ndarray], rows: Sequence[int]) -> np.ndarray:
    """Label rows[k] over part k's length, end to end: (sum of lengths,) uint8 (voices.MAX_VOICES fit)."""
    return np.concatenate([np.full(len(part), row, dtype=np.uint8) for part, row in zip(parts, rows, strict=True)])


@dataclass
class CorpusOptions:
    """How sources become a corpus (see `corpus.resolve`); recorded in config.json for resume."""

    replace_errors: bool = False
    strict: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def resolve(self, specs: str | Sequence[str], paths: Paths) -> corpus.Corpus:
        return corpus.resolve(specs, paths.corpora, replace_errors=self.replace_errors, strict=self.strict,
                              include=self.include, exclude=self.exclude)

    @classmethod
    def of(cls, recorded: dict[str, Any]) -> CorpusOptions:
        """The options a run's corpus record says it was read with."""
        return cls(bool(recorded.get("replace_errors")), bool(recorded.get("strict")),
                   tuple(recorded.get("include") or ()), tuple(recorded.get("exclude") or ()))


def corpus_record(specs: Sequence[str], prepared: Prepared, options: CorpusOptions,
                  voices: Sequence[str] = ()) -> dict[str, Any]:
    """config.json's "corpus": where the text came from, its fingerprint, and how it was read; a voiced run's
    voice of each source ("voices") and their characters."""
    where = [str(Path(s).resolve()) if Path(s).exists() else s for s in specs]  # a built-in stays a name
    voiced = {"voices": list(voices), "voice_characters": list(prepared.voice_chars)} if voices else {}
    return {**voiced, "source": where[0], "sources": where, "fingerprint": prepared.corpus.fingerprint,
            "bytes": prepared.corpus.size, "characters": len(prepared.encoded.ids), "files": len(prepared.corpus.files),
            "skipped": prepared.corpus.skipped, "replace_errors": options.replace_errors, "strict": options.strict,
            "include": list(options.include), "exclude": list(options.exclude),
            "manifest": corpus.manifest_json(prepared.corpus)}


def corpus_of_run(config: RunConfig, run_dir: Path, paths: Paths, moved_to: Sequence[str] = ()) -> corpus.Corpus:
    """The corpus a run trained on (at `moved_to`, if given), checked against its fingerprint."""
    recorded = config.corpus
    specs = list(moved_to) or config.sources
    source = CorpusOptions.of(recorded).resolve(specs, paths)
    if source.fingerprint != recorded.get("fingerprint") and not corpus.same_content(recorded.get("manifest"), source):
        change = corpus.describe_change(recorded.get("manifest"), source)
        if "manifest" not in recorded and len(source.files) > 1:
            change = "an older charnn made this run and fingerprinted folders differently; its content may be the same"
        raise UsageError(f"corpus '{' '.join(specs)}' is not the one run '{run_dir.name}' was trained on ({change}) — "
                         "give the original files as CORPUS (e.g. after moving them), or train a new run")
    return source



@dataclass
class _Split:
    """A run's corpus as it was split: the training and validation ids, where each part starts (a file's or a
    voice's name and its first character in the training ids) and the cache entry an index sits beside."""

    train: np.ndarray
    val: np.ndarray
    starts: Callable[[], list[tuple[str, int]]]
    stem: Path


def _split_of_run(run_dir: Path, run_config: RunConfig, tokenizer: CharTokenizer, paths: Paths,
                  moved_to: Sequence[str], why: str) -> _Split:
    """The corpus a run trained on, encoded and split as the run did (a voiced run: each voice on its own, as
    `prepare_voices` without --balance); `why` names the feature that needs it (for the message when it cannot
    be read)."""
    source, encoded, val_frac = _encoded_of_run(run_dir, run_config, tokenizer, paths, moved_to, why)
    assert encoded.stem is not None  # `_encoded_of_run` checked
    if not run_config.voices:
        train_ids, val_ids = streams.split(encoded.ids, val_frac)
        return _Split(np.asarray(train_ids), np.asarray(val_ids), lambda: source.file_starts() if len(source.files) > 1
                      else [(source.files[0].name if source.files else "", 0)], encoded.stem)
    options = CorpusOptions.of(run_config.corpus)
    specs = list(moved_to) or run_config.sources
    prepared = prepare_voices([options.resolve(s, paths) for s in specs], source, run_config.voices,
                              run_config.model.voices, replace(run_config.train, balance=False), paths,
                              tokenizer=tokenizer if run_config.parent else None)
    assert prepared.labels is not None
    lengths = [int(np.sum(prepared.labels[0] == run_config.model.voices.index(v) + 1)) for v in run_config.voices]
    starts = [(f"voice {v}", int(sum(lengths[:k]))) for k, v in enumerate(run_config.voices)]
    return _Split(prepared.train_ids, prepared.val_ids, lambda: starts, encoded.stem.with_name(encoded.stem.name + "-voiced"))


def _encoded_of_run(run_dir: Path, run_config: RunConfig, tokenizer: CharTokenizer, paths: Paths,
                    moved_to: Sequence[str], why: str) -> tuple[corpus.Corpus, streams.EncodedCorpus, float]:
    """The corpus a run trained on, encoded as the run encoded it, and its validation share; `why` names the
    feature that needs it (for the message when it cannot be read)."""
    try:
        source = corpus_of_run(run_config, run_dir, paths, moved_to)
    except CorpusError as e:
        raise CorpusError(f"{why} needs the text '{run_dir.name}' was trained on ({' '.join(run_config.sources)}) "
                          f"and it cannot be read here ({e}) — give it with --corpus PATH (checked against the run's "
                          "fingerprint)") from None
    encoded = streams.prepare(source.chunks, source.fingerprint, paths.cache, tokenizer if run_config.parent else None)
    if encoded.tokenizer.chars != tokenizer.chars or encoded.stem is None:
        raise RunError(f"run '{run_dir.name}' has a different vocabulary than its corpus — the run is damaged")
    return source, encoded, run_config.train.val_frac


def training_index(run_dir: Path, config: RunConfig, tokenizer: CharTokenizer, paths: Paths,
                   moved_to: Sequence[str] = (), show_progress: bool = False, why: str = "originality") -> Index:
    """The originality index of the text a run (or a model folder) trained on: its corpus, checked against
    the run's fingerprint (at `moved_to` if given), encoded as the run encoded it, its training split."""
    split = _split_of_run(run_dir, config, tokenizer, paths, moved_to, why)
    newline = tokenizer.chars.index("\n") if "\n" in tokenizer.chars else None
    return Index.open(split.train, split.stem, split.starts, newline, show_progress)


def training_words(run_dir: Path, config: RunConfig, tokenizer: CharTokenizer, paths: Paths,
                   moved_to: Sequence[str] = (), why: str = "--words known") -> Lexicon:
    """The words of the text a run trained on (its training split, as `training_index` reads it): built once and
    kept beside the corpus cache (`<stem>.train<N>.words.txt`, a word a line), as the originality index is."""
    split = _split_of_run(run_dir, config, tokenizer, paths, moved_to, why)
    path = split.stem.parent / f"{split.stem.name}.train{len(split.train)}.words.txt"
    if path.exists():
        return Lexicon.load(path)
    text = "".join(map(tokenizer.chars.__getitem__, split.train.tolist()))
    after = tokenizer.chars[int(split.val[0])] if len(split.val) else " "
    if is_letter(after) or after in JOINERS:  # the split cuts a word ("don" of "don't"): it is not one of the text's
        text = text[: len(text) - len(_partial_tail(text))]
    # In pieces cut after newlines (a word never spans one), so the scan holds one piece's matches at a time.
    cuts = _line_cuts(text, 1 << 20)
    lexicon = Lexicon.of(text[a:b] for a, b in pairwise(cuts))
    lexicon.save(path)
    return lexicon


def _partial_tail(text: str) -> str:
    """The letters (and joiners) `text` ends with."""
    i = len(text)
    while i > 0 and (is_letter(text[i - 1]) or text[i - 1] in JOINERS):
        i -= 1
    return text[i:]


def _line_cuts(text: str, every: int) -> list[int]:
    """0, offsets about `every` characters apart just after a newline, and len(text): pieces cut between lines."""
    cuts, at = [0], every
    while at < len(text) and (newline := text.find("\n", at)) >= 0:
        cuts.append(newline + 1)
        at = newline + 1 + every
    return [*cuts, len(text)]


def validation_text(run_dir: Path, config: RunConfig, tokenizer: CharTokenizer, paths: Paths,
                    moved_to: Sequence[str] = (), why: str = "originality") -> str:
    """The run's validation split, decoded (the part of its corpus the originality index leaves out)."""
    val_ids = _split_of_run(run_dir, config, tokenizer, paths, moved_to, why).val
    return "".join(map(tokenizer.chars.__getitem__, val_ids.tolist()))  # a lookup per id: faster than the HF decoder
