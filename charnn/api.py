"""The library front door: start, resume or fine-tune training (session.py), load a run, generate, score.

This is the orchestration layer that sits beside `cli/` at the top of the
import order: it wires corpus -> data -> model -> train -> checkpoint and
returns values; `cli/` only parses options and prints.

    >>> from charnn import load_run
    >>> m = load_run("shakespeare-demo")          # or a path, or None for the newest run
    >>> print(m.generate("ROMEO:", length=200, seed=1))
    >>> m.score("To be, or not to be").bpc
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charnn import checkpoint, corpus, data
from charnn.device import resolve_device
from charnn.evaluation import evaluate
from charnn.lineage import Parent, load_parent
from charnn.model import State
from charnn.sample import SampleConfig, generate
from charnn.session import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_CORPORA,
    CorpusOptions,
    Paths,
    Prepared,
    default_run_name,
    prepare_corpus,
    resume_training,
    start_training,
)

__all__ = ["DEFAULT_CHECKPOINTS", "DEFAULT_CORPORA", "CharModel", "CorpusOptions", "Parent", "Paths", "Prepared",
           "Score", "default_run_name", "load_parent", "load_run", "prepare_corpus", "resume_training",
           "start_training"]


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
        nats = evaluate(self.model, ids, int(train_cfg["seq_len"]), self.device)
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
