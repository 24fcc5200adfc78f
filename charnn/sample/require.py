"""Samples that contain required words: `--require WORD` (repeatable) on plain samples, drawn again within a bound.

A sample is drawn whole (no streaming: a required word may come last), kept when it holds every required word as
whole words (case ignored, `steer.contains`), and otherwise counted as lacking. Batch b uses seed + b, so a seed
gives the same samples. At most `bound` draws (default as `--items`: ATTEMPTS_PER_ITEM per sample asked, at least
MIN_ATTEMPTS): a model that rarely writes the word returns the samples it found, and `complete` says so.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from charnn.model.network import CharRNN
from charnn.sample.items import ATTEMPTS_PER_ITEM, MIN_ATTEMPTS, drawn
from charnn.sample.request import SampleConfig
from charnn.sample.steer import contains
from charnn.text.tokenizer import CharTokenizer


@dataclass
class Found:
    """The samples kept, and what became of every draw."""

    texts: list[str] = field(default_factory=list)
    wanted: int = 0
    attempts: int = 0
    lacking: int = 0  # draws without every required word
    missing: Counter[str] = field(default_factory=Counter)  # required word -> draws it was missing from
    bound: int = 0
    seed: int = 0

    @property
    def complete(self) -> bool:
        return len(self.texts) >= self.wanted

    def describe(self) -> str:
        missing = ", ".join(f"{word!r} missing from {n}" for word, n in self.missing.most_common())
        counts = (f"{self.attempts} drawn: {len(self.texts)} kept, {self.lacking} without every required word"
                  + (f" ({missing})" if missing else "") + f" (seed {self.seed})")
        if self.complete:
            return f"{len(self.texts)} sample{'s' if len(self.texts) != 1 else ''}; {counts}"
        return (f"found {len(self.texts)} of {self.wanted} samples with every required word within the bound of "
                f"{self.bound} draws; {counts} — prime toward the word, raise --length, or raise --attempts")


def draw_containing(model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig,
                    attempts: int | None = None) -> Found:
    """`cfg.num_samples` samples each holding every word of `cfg.steering.require`, within `attempts` draws."""
    cfg.check()
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(6), "little")
    bound = attempts if attempts is not None else max(MIN_ATTEMPTS, ATTEMPTS_PER_ITEM * cfg.num_samples)
    found = Found(wanted=cfg.num_samples, bound=bound, seed=seed)
    for text in drawn(model, tokenizer, prime, cfg, seed, bound, lambda: cfg.num_samples - len(found.texts)):
        found.attempts += 1
        absent = [word for word in cfg.steering.require if not contains(text, word)]
        found.missing.update(absent)
        if absent:
            found.lacking += 1
        else:
            found.texts.append(text)
    return found
