"""The library front door: train (the same request `charnn train` builds), load a run, generate, score, look
inside, and what it all runs on (`doctor`). It returns values; `cli/` and a notebook show them.

    >>> import charnn
    >>> m = charnn.train("shakespeare", time="45s")   # the command's recipe; returns the trained model
    >>> print(m.generate("ROMEO:", length=200, seed=1))
    >>> m.score("To be, or not to be").bpc
    >>> m.plot()                                      # the loss figure (inline in a notebook)
    >>> m = charnn.load("bard")                       # a run by name, a path, "base", or None for the newest
    >>> charnn.doctor()                               # the device, the torch build, a speed reading
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from charnn.device import resolve_device, set_threads
from charnn.errors import CharnnError, UsageError
from charnn.model.evaluation import evaluate
from charnn.model.network import CharRNN, State
from charnn.run import lineage, runs
from charnn.run.corpus import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_CORPORA,
    CorpusOptions,
    Paths,
    Prepared,
    prepare_corpus,
    training_index,
    training_words,
    validation_text,
)
from charnn.run.lineage import Parent, load_parent
from charnn.run.originality import MIN_COPY, Index, Report
from charnn.sample import Items, ItemsConfig, SampleConfig, draw_items, generate
from charnn.sample.beam import BEAM_NO_REPEAT, BeamConfig, Beams, beam_search
from charnn.sample.items import beam_items
from charnn.sample.items import check as check_items
from charnn.sample.request import voice_of
from charnn.sample.require import Found, draw_containing
from charnn.sample.steer import Steering
from charnn.text import corpus, streams
from charnn.text.words import Lexicon
from charnn.training.request import TrainRequest
from charnn.training.request import run as run_request
from charnn.training.session import default_run_name, resume_training, start_training

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from charnn.insight.inspector import Inspection
    from charnn.recipe.machine import Machine

__all__ = ["DEFAULT_CHECKPOINTS", "DEFAULT_CORPORA", "CharModel", "CopyRate", "CorpusOptions", "Parent", "Paths", "Prepared",
           "Score", "TrainRequest", "default_run_name", "doctor", "load", "load_parent", "load_run", "prepare_corpus",
           "resume_training", "start_training", "train"]


@dataclass
class Score:
    nats: float  # mean loss per character
    characters: int  # characters scored
    unknown: dict[str, int] = field(default_factory=dict)  # unseen characters skipped, with counts

    @property
    def bpc(self) -> float:
        return self.nats / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats)


@dataclass
class CopyRate:
    """`CharModel.copy_rates`'s row: how much the samples at one temperature copy."""

    temperature: float
    samples: int
    generated: int
    copied: int
    longest: int
    longest_text: str
    where: str | None

    @property
    def copied_fraction(self) -> float:
        return self.copied / self.generated if self.generated else 0.0


class CharModel:
    """A trained run, ready to generate and score text."""

    def __init__(self, loaded: runs.LoadedRun, device: torch.device):
        self.run_dir = loaded.path
        self.config = loaded.config
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.step = loaded.step
        self.device = device
        self._index: Index | None = None
        self._lexicon: Lexicon | None = None

    def __repr__(self) -> str:
        c = self.model.config
        return f"<CharModel {self.run_dir.name}: {c.cell} {c.layers}x{c.hidden}, step {self.step}, on {self.device}>"

    def plot(self, x: str = "tokens") -> Figure:
        """The run's train and validation loss as a matplotlib figure (a notebook shows it inline; `.savefig` writes
        it); `x`: tokens (characters seen), time or step."""
        from charnn.insight import plot

        return plot.figure([plot.curve(self.run_dir, x)])

    def inspect(self, text: str, show: int = 2000, reach: int = 64) -> Inspection:
        """What the model does on `text`: neurons, surprise, gradient reach (`charnn inspect`). The result shows the
        page inline in a notebook and `.save("page.html")` writes it."""
        from charnn.insight import inspector

        cfg = inspector.InspectConfig(show=show, reach=reach)
        if problems := cfg.validate():
            raise UsageError(problems[0])
        start, baseline, _ = self.starting_weights()
        numbers = inspector.inspect(self.model, self.tokenizer, text, cfg, start, baseline)
        return inspector.Inspection(numbers, f"{self.run_dir.name} (step {self.step})")

    def starting_weights(self) -> tuple[CharRNN | None, str, str | None]:
        """The weights the run started from, their name on the inspect page, and a note when they are missing:
        the seed's initialisation, or for a fine-tuned run its parent's (grown to the run's vocabulary)."""
        record = self.config.parent
        if record is not None:
            try:
                parent = load_parent(f"{record.get('path')}:{record.get('checkpoint', 'best')}", Path("."))
            except CharnnError:
                return None, "parent", f"parent '{record.get('name')}' is no longer readable; the page shows no baseline"
            # The new characters' head bias does not enter the gradient reach: no training text is needed to place it.
            return lineage.grow(parent, self.model.config, np.zeros(0, dtype=np.int64)), f"parent ({parent.name})", None
        torch.manual_seed(self.config.train.seed)  # the run's own initial weights
        return CharRNN(self.model.config), "untrained", None

    def sample_config(self, **options: Any) -> SampleConfig:
        """`SampleConfig` from keyword options: its own fields and the steering's (`sample/steer.py`: words,
        no_repeat, frequency_penalty, presence_penalty, logit_bias, require); `words="known"` reads the run's
        training words (`lexicon`)."""
        steering = {f.name: options.pop(f.name) for f in fields(Steering) if f.name in options and f.name != "lexicon"}
        if isinstance(steering.get("require"), str):
            steering["require"] = (steering["require"],)
        steer = Steering(**steering)
        if problems := steer.validate(self.tokenizer.vocab_size):
            raise UsageError(problems[0])
        if steer.words == "known":
            steer.lexicon = self.lexicon()
        return SampleConfig(**options, steering=steer)

    def stream(self, prime: str = "\n", state: State | None = None, **options: Any) -> Iterator[str]:
        """Yield generated text piece by piece (one sample); options as in `sample_config`."""
        cfg = self.sample_config(**options)
        if cfg.steering.require:
            raise UsageError("require= needs each sample whole before it is kept — use generate(), not stream()")
        for pieces in generate(self.model, self.tokenizer, prime, cfg, state):
            yield pieces[0]

    def generate(self, prime: str = "\n", attempts: int | None = None, **options: Any) -> str | list[str]:
        """Generated text (prime not included); a list when `num_samples` > 1. Options as in `sample_config`; with
        `require`, samples are drawn again (at most `attempts` draws) until each holds every required word, and
        fewer come back where the bound ran out (`require_samples` says how it went)."""
        cfg = self.sample_config(**options)
        if cfg.steering.require:
            texts = self.require_samples(prime, cfg, attempts).texts
        else:
            run = generate(self.model, self.tokenizer, prime, cfg)
            for _ in run:
                pass
            texts = run.texts
        return texts if cfg.num_samples > 1 else (texts[0] if texts else "")

    def require_samples(self, prime: str, cfg: SampleConfig, attempts: int | None = None) -> Found:
        """`cfg.num_samples` samples each holding every word of `cfg.steering.require` (`sample/require.py`)."""
        return draw_containing(self.model, self.tokenizer, prime, cfg, attempts)

    def lexicon(self, paths: Paths | None = None, corpus_paths: Sequence[str] = ()) -> Lexicon:
        """The words of the text this model trained on (its training split; built once, kept beside the corpus
        cache): what `words="known"` keeps to. `corpus_paths`: where that text is now, if it moved."""
        if self._lexicon is None:
            self._lexicon = training_words(self.run_dir, self.config, self.tokenizer, paths or Paths(), corpus_paths)
        return self._lexicon

    def items(self, count: int = 10, separator: str = "\n", start: str = "", new: bool = False, longest: int = 200,
              attempts: int | None = None, paths: Paths | None = None, corpus_paths: Sequence[str] = (),
              show_progress: bool = False, beam: int | None = None, **options: Any) -> Items:
        """`count` distinct complete items of a list (`sample/items.py`); with `new`, none that is a whole item of
        the run's corpus (`_known_items`; `originality_index`'s `paths`/`corpus_paths`).
        `options`: temperature, top_k, top_p, seed and the steering as in `sample_config`; with `beam` W, the most
        likely items a beam of W finds (`sample/beam.py`; a temperature above 0 makes it the stochastic variant)."""
        cfg = ItemsConfig(count=count, separator=separator, start=start, new=new, longest=longest, attempts=attempts)
        if beam is not None:
            options.setdefault("temperature", 0.0)  # a plain beam unless a temperature asks for the stochastic one
        sampling = self.sample_config(**options)
        sampling.check()
        check_items(cfg, self.tokenizer)
        if beam is not None:
            known = self._known_items(separator, paths or Paths(), corpus_paths, show_progress) if new else None
            return beam_items(self.model, self.tokenizer, cfg, beam, sampling.temperature, sampling.seed, known,
                              sampling.voice, sampling.steering)
        return draw_items(self.model, self.tokenizer, cfg, sampling,
                          self._known_items(separator, paths or Paths(), corpus_paths, show_progress) if new else None)

    def beam(self, prime: str = "\n", width: int = 4, length: int = 200, stop: str | Sequence[str] | None = None,
             temperature: float = 0.0, seed: int | None = None, drop_unknown: bool = False,
             voice: str | Mapping[str, float] | None = None, **steering: Any) -> Beams:
        """Beam search from `prime` (`sample/beam.py`): hypotheses best first by log-probability per character;
        `steering` as in `sample_config` (require= is for items and samples, not a beam), with no_repeat 16 unless
        given (`BEAM_NO_REPEAT`; no_repeat=None turns it off)."""
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        steering.setdefault("no_repeat", BEAM_NO_REPEAT)
        steer = self.sample_config(**steering).steering
        if steer.require:
            raise UsageError("require= filters samples and items; a beam ranks continuations — drop it, or use "
                             "items(..., beam=W, require=...)")
        return beam_search(self.model, self.tokenizer, prime, BeamConfig(width=width, length=length, stops=stops,
                                                                          temperature=temperature, seed=seed,
                                                                          drop_unknown=drop_unknown, voice=voice,
                                                                          steering=steer))

    def _known_items(self, separator: str, paths: Paths, corpus_paths: Sequence[str],
                     show_progress: bool) -> Callable[[str], bool]:
        """Whether an item is a whole item of the run's corpus: the training split by its originality index (one
        binary search), the validation split by a set of its items (kept in memory: it is a tenth of the text)."""
        index = self.originality_index(paths, corpus_paths, show_progress, "--new")
        held_out = set(validation_text(self.run_dir, self.config, self.tokenizer, paths, corpus_paths,
                                       "--new").split(separator))
        separator_ids = self.tokenizer.encode_array(separator)

        def known(item: str) -> bool:
            ids, unknown = self.tokenizer.encode_known(item)
            return not unknown and (item in held_out or index.holds_item(ids, separator_ids))

        return known

    @property
    def voices(self) -> tuple[str, ...]:
        """The voices this model writes in (`voice=` of every method; voices.py); () for a model without."""
        return self.model.config.voices

    def _scored(self, ids: Any, unknown: dict[str, int], between: Callable[[], None] | None = None,
                voice: str | Mapping[str, float] | None = None) -> Score:
        vector = voice_of(self.model, voice)
        if len(ids) < 2 and unknown:  # evaluate's "at least 2 characters" would blame the length, not the alphabet
            raise UsageError(unscorable(len(ids), unknown))
        nats = evaluate(self.model, ids, self.config.train.seq_len, self.device, between=between, voice=vector)
        return Score(nats, len(ids), unknown)

    def score(self, text: str, between: Callable[[], None] | None = None,
              voice: str | Mapping[str, float] | None = None) -> Score:
        """Loss of `text` under the model (in `voice`, a name or a blend; default none); characters it never saw
        are skipped and counted. `between` is called after each window of the evaluation (`evaluation.evaluate`)."""
        ids, unknown = self.tokenizer.encode_known(text)
        return self._scored(ids, unknown, between, voice)

    def originality_index(self, paths: Paths | None = None, corpus_paths: Sequence[str] = (),
                          show_progress: bool = False, why: str = "originality") -> Index:
        """The index of the text this model trained on (built the first time, under a bar if `show_progress`);
        `corpus_paths`: where that text is now, if it moved (checked against the run's fingerprint)."""
        if self._index is None:
            self._index = training_index(self.run_dir, self.config, self.tokenizer, paths or Paths(), corpus_paths,
                                         show_progress, why)
        return self._index

    def originality(self, text: str, start: int = 0, min_copy: int = MIN_COPY, **index: Any) -> Report:
        """Which spans of `text` after `start` (a prime's length) occur verbatim in the training split, of at
        least `min_copy` characters; `index` as in `originality_index`."""
        ids, unknown = self.tokenizer.encode_known(text)
        if unknown:  # a text the model could not have produced: its spans would be shifted
            raise UsageError(f"the text has character(s) the model never saw: {', '.join(map(repr, unknown))}")
        return self.originality_index(**index).report(text, ids, start, min_copy)

    def copy_rates(self, temperatures: Sequence[float], samples: int = 8, length: int = 1000, seed: int = 1,
                   min_copy: int = MIN_COPY, prime: str = "\n", **index: Any) -> list[CopyRate]:
        """At each temperature, `samples` texts of `length` characters: the share of generated characters inside
        spans copied from the training text, and the longest copy (`charnn originality`)."""
        rows = []
        for t in temperatures:
            run = generate(self.model, self.tokenizer, prime, SampleConfig(length=length, temperature=t,
                                                                           num_samples=samples, seed=seed))
            for _ in run:
                pass
            reports = [self.originality(prime + text, len(prime), min_copy, **index) for text in run.texts]
            longest = max(reports, key=lambda r: r.longest.length if r.longest else 0)
            rows.append(CopyRate(t, samples, sum(r.generated for r in reports), sum(r.copied for r in reports),
                                 longest.longest.length if longest.longest else 0,
                                 longest.text[longest.longest.start:longest.longest.end] if longest.longest else "",
                                 longest.where))
        return rows

    def _check_readable(self, chunks: Callable[[], Iterator[str]]) -> None:
        """Refuse a text with fewer than 2 characters the model knows, naming the ones it never saw; streamed, and
        it stops at the second known character (at once, for any text in the model's alphabet)."""
        known, unknown = 0, Counter[str]()
        for chunk in chunks():
            ids, missing = self.tokenizer.encode_known(chunk)
            known += len(ids)
            unknown.update(missing)
            if known >= 2:
                return
        if unknown:
            raise UsageError(unscorable(known, dict(unknown)))

    def score_file(self, path: str, paths: Paths | None = None, voice: str | Mapping[str, float] | None = None) -> Score:
        """Like `score`, but streams the file through the memory-mapped cache (bounded memory)."""
        voice_of(self.model, voice)  # a bad voice is refused before the file is read
        paths = paths or Paths()
        source = corpus.resolve(path, paths.corpora)
        self._check_readable(source.chunks)  # before the cache is written: a text it cannot score leaves nothing
        encoded = streams.prepare(source.chunks, source.fingerprint, paths.cache, tokenizer=self.tokenizer)
        return self._scored(encoded.ids, encoded.unknown, voice=voice)


def unscorable(known: int, unknown: dict[str, int]) -> str:
    """Why a text with characters the model never saw leaves too little to score, naming a few of them."""
    shown = ", ".join(repr(ch) for ch, _ in sorted(unknown.items(), key=lambda kv: -kv[1])[:8])
    more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
    if known == 0:
        return (f"no character of this text is in the model's vocabulary ({shown}{more}) — score text written "
                "in the alphabet the model was trained on")
    return (f"only {known} of this text's characters are in the model's vocabulary (it never saw {shown}{more}) — "
            "give at least 2 characters it knows")


def load_run(run: str | None = None, checkpoint_name: str = "best", device: str = "auto",
             checkpoints_dir: str | Path = DEFAULT_CHECKPOINTS) -> CharModel:
    """Load a run by name, path, or (None) the most recently modified run."""
    dev = resolve_device(device)
    run_dir = runs.resolve(run, Path(checkpoints_dir))
    return CharModel(runs.load(run_dir, checkpoint_name, dev), dev)


load = load_run  # `charnn.load(name)`, beside `charnn.train`


# The options `charnn.train` takes beyond TrainRequest's own fields: how the corpus is read (the command's
# --include, --exclude, --strict, --replace-bad-bytes).
_READING = ("include", "exclude", "strict", "replace_bad_bytes")


def train(corpus: str | Path | Sequence[str | Path] | Mapping[str, str | Path] | None = None, *, text: str | None = None,
          time: str | float | None = None, start_from: str | None = None, resume: str | None = None,
          name: str | None = None, threads: int = 0, show_progress: bool = True,
          checkpoints_dir: str | Path = DEFAULT_CHECKPOINTS, corpora_dir: str | Path = DEFAULT_CORPORA,
          **options: Any) -> CharModel:
    """Train a model as `charnn train` does and return it (its best weights).

    `corpus`: a file, a folder or a built-in name (`"shakespeare"`), several of them, or a mapping
    `{voice: path}` (one model of several voices); or give `text="..."` (written once under `corpora_dir`/texts/).
    `time`: a duration ("45s", "5m", "1h30m") or seconds: the whole call's wall clock, with the command's recipe.
    `start_from`: fine-tune from a run or `"base"`; `resume`: continue a run (new limits extend it).
    `options`: any other option of `charnn train`, spelled in snake_case (`hidden=512`, `max_steps=2000`,
    `cell="lstm"`, `voices_from="docs.jsonl"`, `include=["*.py"]`...). Refusals raise `CharnnError` with the
    command's one-line message. Progress shows as a bar (a widget in Jupyter) unless `show_progress=False`.
    """
    import time as clock

    from charnn.recipe.budget import parse_duration

    started = clock.perf_counter()  # the budget is this call's wall clock
    set_threads(threads)
    paths = Paths(Path(checkpoints_dir), Path(corpora_dir))
    specs, voiced = _corpus_specs(corpus, text, paths)
    unknown = sorted(set(options) - {f.name for f in fields(TrainRequest)} - set(_READING) - {"corpus", "reading"})
    if unknown:
        raise UsageError(f"charnn.train() has no option {unknown[0]!r} — its options are charnn train's, in snake_case "
                         "(see help(charnn.train) and charnn train --help)")
    reading = CorpusOptions(bool(options.pop("replace_bad_bytes", False)), bool(options.pop("strict", False)),
                            tuple(options.pop("include", None) or ()), tuple(options.pop("exclude", None) or ()))
    seconds = parse_duration(time) if isinstance(time, str) else None if time is None else float(time)
    if seconds is not None and not seconds > 0:
        raise UsageError(f"time={time!r} must be a positive duration — use e.g. '90s', '10m', '1h30m'")
    options.setdefault("voices", voiced)
    if text is not None and name is None and resume is None:
        name = default_run_name("text")
    request = TrainRequest(corpus=specs, resume=resume, start_from=start_from, name=name, time=seconds,
                           reading=reading, **options)
    say = _stderr if show_progress else None
    run_dir, _ = run_request(request, paths, show_progress=show_progress, announce=say, notice=_stderr,
                                  started=started)
    return load_run(str(run_dir), "best", request.device, paths.checkpoints)


def _corpus_specs(corpus: str | Path | Sequence[str | Path] | Mapping[str, str | Path] | None, text: str | None,
                  paths: Paths) -> tuple[tuple[str, ...], bool]:
    """`charnn.train`'s corpus as the command's CORPUS arguments, and whether they are voices."""
    if text is not None:
        if corpus is not None:
            raise UsageError("give the corpus either as corpus= (files, folders, built-in names) or as text=, not both")
        return (str(_text_file(text, paths.corpora)),), False
    if corpus is None:
        return (), False
    if isinstance(corpus, Mapping):
        return tuple(f"{voice}={path}" for voice, path in corpus.items()), True
    if isinstance(corpus, (str, Path)):
        return (str(corpus),), False
    return tuple(str(c) for c in corpus), False


def _text_file(text: str, corpora: Path) -> Path:
    """A string to train on, written once under `corpora`/texts/, named by its content (a rerun reuses it)."""
    import hashlib

    from charnn.run import checkpoint

    data = text.encode("utf-8")
    folder = corpora / "texts"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}.txt"
    if not path.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create '{folder}' for the text ({e.strerror}) — pass a writable corpora_dir") from None
        checkpoint.atomic_write(path, lambda f: f.write(data))
    return path


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def doctor(device: str = "auto", speed: bool = True, checkpoints_dir: str | Path = DEFAULT_CHECKPOINTS,
           corpora_dir: str | Path = DEFAULT_CORPORA) -> Machine:
    """What charnn runs on: the device `device` resolves to and why, its name and memory, the torch build, bf16,
    threads, a few seconds' speed reading (`speed=False` skips it), where runs and caches live. Prints as a report;
    a notebook shows a table."""
    from dataclasses import replace

    from charnn.recipe import readings
    from charnn.recipe.machine import examine

    return replace(examine(Path(checkpoints_dir), Path(corpora_dir) / ".cache", device, speed),
                   probe=readings.describe())
