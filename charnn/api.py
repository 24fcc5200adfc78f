"""The library front door: start or resume training, load a run, generate, score.

This is the orchestration layer that sits beside `cli.py` at the top of the
import order: it wires corpus -> data -> model -> train -> checkpoint and
returns values; `cli.py` only parses options and prints.

    >>> from charnn import load_run
    >>> m = load_run("shakespeare-demo")          # or a path, or None for the newest run
    >>> print(m.generate("ROMEO:", length=200, seed=1))
    >>> m.score("To be, or not to be").bpc
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from charnn import checkpoint, corpus, data
from charnn.errors import RunError, UsageError
from charnn.model import CharRNN, ModelConfig, State, resolve_device
from charnn.recipe import Recipe, choose, measure_speed
from charnn.sample import SampleConfig, generate
from charnn.train import TrainConfig, TrainResult, evaluate, train, tune_cpu_allocator

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
    encoded: data.EncodedCorpus
    train_ids: Any
    val_ids: Any


def check_fits(chars: int, cfg: TrainConfig) -> None:
    """Fail before any work when the corpus is too short for the chosen layout."""
    n_val = int(chars * cfg.val_frac)
    data.Streams.check_fits(chars - n_val, cfg.batch_size, cfg.seq_len, "training")
    if n_val < 2:
        raise UsageError(f"the validation split has {n_val} characters (--val-frac {cfg.val_frac}) — "
                         "raise --val-frac or give more text (it needs at least 2)")


def prepare_corpus(source: corpus.Corpus, cfg: TrainConfig, paths: Paths) -> Prepared:
    check_fits(source.chars, cfg)
    encoded = data.prepare(source.chunks, source.fingerprint, paths.cache)
    train_ids, val_ids = data.split(encoded.ids, cfg.val_frac)
    return Prepared(source, encoded, train_ids, val_ids)


def default_run_name(spec: str) -> str:
    return f"{Path(spec).stem or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_training(spec: str, model_cfg: ModelConfig, cfg: TrainConfig, *, name: str | None = None,
                   device: str = "auto", paths: Paths | None = None, overwrite: bool = False,
                   url: str | None = None, replace_errors: bool = False, show_progress: bool = True,
                   auto_fields: frozenset[str] = frozenset(),
                   announce: Callable[[str], None] | None = None) -> tuple[Path, TrainResult]:
    """Train a new run on corpus `spec`; `model_cfg.vocab_size` is filled in from the corpus.

    With a time budget, the fields named in `auto_fields` (those the user did
    not set) are chosen by `recipe.choose` for this machine's measured speed;
    `announce` receives the line describing the choice.
    """
    paths = paths or Paths()
    _check(model_cfg.validate() + cfg.validate())
    dev = _device_for(device, cfg)
    run_dir = paths.checkpoints / (name or default_run_name(spec))
    checkpoint.check_new(run_dir, overwrite)  # before the slow corpus work
    source = corpus.resolve(spec, paths.corpora, url=url, replace_errors=replace_errors)
    prepared = prepare_corpus(source, cfg, paths)
    model_cfg.vocab_size = prepared.encoded.tokenizer.vocab_size
    recipe = None
    if auto_fields and cfg.time_budget:
        if dev.type == "cpu":
            tune_cpu_allocator()  # as training will: the probe must see the same speed
        speed = measure_speed(dev, model_cfg.vocab_size, model_cfg.cell, cfg.batch_size, cfg.seq_len)
        recipe = choose(cfg.time_budget, len(prepared.train_ids), model_cfg.vocab_size, speed, model_cfg.cell)
        for name in auto_fields:
            setattr(model_cfg if hasattr(model_cfg, name) else cfg, name, getattr(recipe, name))
        _check(model_cfg.validate() + cfg.validate())
        check_fits(prepared.corpus.chars, cfg)
        if announce:
            explicit = sorted(set(vars(Recipe())) - {"probe_tokens_per_s", "expected_tokens", "cell"} - auto_fields)
            effective = Recipe(**{k: getattr(model_cfg if hasattr(model_cfg, k) else cfg, k)
                                  for k in vars(Recipe()) if k not in ("probe_tokens_per_s", "expected_tokens")},
                               expected_tokens=recipe.expected_tokens if not explicit else None)
            announce(f"recipe for {cfg.time_budget:g}s at {speed:,.0f} chars/s (probe): {effective.describe()}"
                     + (f" (set by you: {', '.join(explicit)})" if explicit else ""))
    torch.manual_seed(cfg.seed)  # weight init is part of the reproducible run
    model = CharRNN(model_cfg)
    where = str(Path(spec).resolve()) if Path(spec).exists() else spec  # a built-in stays a name
    config = {
        "model": asdict(model_cfg), "train": asdict(cfg), "created": checkpoint.now_iso(),
        "corpus": {"source": where, "fingerprint": prepared.corpus.fingerprint, "bytes": prepared.corpus.size,
                   "characters": len(prepared.encoded.ids), "replace_errors": replace_errors},
        "recipe": asdict(recipe) if recipe else None,
    }
    checkpoint.create(run_dir, config, prepared.encoded.tokenizer, overwrite)
    result = train(model, cfg, prepared.train_ids, prepared.val_ids, run_dir, dev, show_progress=show_progress)
    return run_dir, result


def resume_training(run: str, *, corpus_path: str | None = None, max_steps: int | None = None,
                    epochs: float | None = None, more_time: float | None = None, lr: float | None = None,
                    device: str = "auto",
                    paths: Paths | None = None, show_progress: bool = True) -> tuple[Path, TrainResult]:
    """Continue a run from `latest.pt`; new limits extend it (`more_time` is added to the time used).

    A new `lr` replaces the peak learning rate (e.g. after a divergence); the
    schedule's shape is kept.
    """
    paths = paths or Paths()
    run_dir = checkpoint.resolve(run, paths.checkpoints)
    config = checkpoint.load_config(run_dir)
    model_cfg = checkpoint.model_config_of(config)
    try:
        cfg = TrainConfig(**config["train"])
    except TypeError:
        raise RunError(f"'{run_dir / checkpoint.CONFIG}' has an unknown train section — the run is damaged") from None
    # No latest.pt: the run was stopped before its first save, so it starts over from its config.
    latest = run_dir / checkpoint.LATEST
    payload = checkpoint.load_tensors(latest) if latest.exists() else None
    done = payload.get("progress", {}) if payload else {}
    if max_steps is not None:
        cfg.max_steps = max_steps
    if epochs is not None:
        cfg.epochs = epochs
    if more_time is not None:
        cfg.time_budget = float(done.get("elapsed", 0.0)) + more_time
    if lr is not None:
        cfg.lr = lr
    _check(cfg.validate())
    dev = _device_for(device, cfg)
    recorded = config.get("corpus", {})
    spec = corpus_path or recorded.get("source", "")
    source = corpus.resolve(spec, paths.corpora, replace_errors=bool(recorded.get("replace_errors")))
    if source.fingerprint != recorded.get("fingerprint"):
        raise UsageError(f"corpus '{spec}' is not the one run '{run_dir.name}' was trained on (its content changed) — "
                         "give the original file as CORPUS (e.g. after moving it), or train a new run")
    prepared = prepare_corpus(source, cfg, paths)
    tokenizer = checkpoint.load_tokenizer(run_dir)
    if tokenizer.chars != prepared.encoded.tokenizer.chars:
        raise RunError(f"run '{run_dir.name}' has a different vocabulary than its corpus — the run is damaged")
    torch.manual_seed(cfg.seed)  # same initial weights as the original start, if there is no payload
    model = CharRNN(model_cfg)
    if payload is not None:
        try:
            model.load_state_dict(payload["model"])
        except (RuntimeError, TypeError):
            raise RunError(f"the weights in '{latest}' do not fit the run's config — the run is damaged") from None
    config["train"] = asdict(cfg)
    checkpoint.clean_temp_files(run_dir)  # left by a process killed mid-write; only now that every check passed
    checkpoint.write_json(run_dir / checkpoint.CONFIG, config)
    result = train(model, cfg, prepared.train_ids, prepared.val_ids, run_dir, dev, resume=payload,
                   show_progress=show_progress)
    return run_dir, result


def _device_for(name: str, cfg: TrainConfig) -> torch.device:
    dev = resolve_device(name)
    if cfg.amp and dev.type != "cuda":
        raise UsageError(f"--amp needs a CUDA device (this run would be on {dev.type}) — drop --amp")
    return dev


def _check(problems: list[str]) -> None:
    if problems:
        raise UsageError(problems[0])


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


class CharModel:
    """A trained run, ready to generate and score text."""

    def __init__(self, loaded: checkpoint.LoadedRun, device: torch.device):
        self.run_dir = loaded.path
        self.config = loaded.config
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.step = loaded.step
        self.device = device

    def stream(self, prime: str = "\n", state: State | None = None, **options: Any) -> Iterator[str]:
        """Yield generated text piece by piece (one sample); options as in `SampleConfig`."""
        for pieces in generate(self.model, self.tokenizer, prime, SampleConfig(**options), state):
            yield pieces[0]

    def generate(self, prime: str = "\n", **options: Any) -> str | list[str]:
        """Generated text (prime not included); a list when `num_samples` > 1."""
        cfg = SampleConfig(**options)
        run = generate(self.model, self.tokenizer, prime, cfg)
        for _ in run:
            pass
        return run.texts if cfg.num_samples > 1 else run.texts[0]

    def _scored(self, ids: Any, unknown: dict[str, int]) -> Score:
        train_cfg = self.config["train"]
        nats = evaluate(self.model, ids, int(train_cfg["batch_size"]), int(train_cfg["seq_len"]), self.device)
        return Score(nats, len(ids), unknown)

    def score(self, text: str) -> Score:
        """Loss of `text` under the model; characters it never saw are skipped and counted."""
        ids, unknown = self.tokenizer.encode_known(text)
        return self._scored(ids, unknown)

    def score_file(self, path: str, paths: Paths | None = None) -> Score:
        """Like `score`, but streams the file through the memory-mapped cache (bounded memory)."""
        paths = paths or Paths()
        source = corpus.resolve(path, paths.corpora)
        encoded = data.prepare(source.chunks, source.fingerprint, paths.cache, tokenizer=self.tokenizer)
        return self._scored(encoded.ids, encoded.unknown)


def load_run(run: str | None = None, checkpoint_name: str = "best", device: str = "auto",
             checkpoints_dir: str | Path = DEFAULT_CHECKPOINTS) -> CharModel:
    """Load a run by name, path, or (None) the most recently modified run."""
    dev = resolve_device(device)
    run_dir = checkpoint.resolve(run, Path(checkpoints_dir))
    return CharModel(checkpoint.load(run_dir, checkpoint_name, dev), dev)
