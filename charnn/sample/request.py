"""One request of the engine: its settings (`SampleConfig`), its voice and prime checked, and its state while the
engine steps it (`Group`: the text each sample wrote, its log-probabilities, its steering, why it ended).

engine.py steps groups; every caller builds a `SampleConfig` and the engine makes the `Group`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from charnn.errors import TokenizerError, UsageError
from charnn.model.network import CharRNN
from charnn.model.voices import as_blend, weights
from charnn.sample.logprobs import MAX_TOP_LOGPROBS, Logprob
from charnn.sample.steer import RowSteer, Steering
from charnn.text.tokenizer import CharTokenizer


@dataclass
class SampleConfig:
    length: int = 500  # characters generated per sample, the prime not counted
    temperature: float = 0.8  # 0 means greedy (argmax)
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None  # None: a fresh random seed, stored back for reproduction
    num_samples: int = 1
    stop: str | Sequence[str] | None = None  # a sample ends once its text ends with (one of) these (included)
    drop_unknown: bool = False  # drop prime characters the model never saw instead of failing
    logprobs: int | None = None  # record each drawn character's log-probability and the K most likely (0: none)
    voice: str | Mapping[str, float] | None = None  # a voiced model's voice: a name, "a=0.7,b=0.3" or {name: weight}
    steering: Steering = field(default_factory=Steering)  # known words, no-repeat, penalties, bias (steer.py)

    def validate(self) -> list[str]:
        problems = self.steering.validate()
        if self.length < 0:
            problems.append(f"--length {self.length} must be 0 or more")
        if not self.temperature >= 0:
            problems.append(f"--temperature {self.temperature} must be 0 (greedy) or more")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"--top-k {self.top_k} must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            problems.append(f"--top-p {self.top_p} must be in (0, 1]")
        if self.num_samples < 1:
            problems.append(f"--num-samples {self.num_samples} must be at least 1")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            problems.append(f"--seed {self.seed} must be between 0 and 2^63-1")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            problems.append(f"logprobs {self.logprobs} must be between 0 and {MAX_TOP_LOGPROBS}")
        if any(s == "" for s in self.stops):
            problems.append("--stop must not be empty")
        return problems

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def check(self) -> None:
        if problems := self.validate():
            raise UsageError(problems[0])


def voice_of(model: CharRNN, voice: str | Mapping[str, float] | None) -> Tensor | None:
    """A voice as requests give it -> its vector (E,) for `model` (`CharRNN.voice_vector`); None: no voice given.
    A voice the model lacks, a bad blend, or a voice for a model without voices: one-line UsageError."""
    blend = as_blend(voice)
    if blend is None:
        return None
    return model.voice_vector(weights(blend, model.config.voices))


def encode_prime(tokenizer: CharTokenizer, prime: str, drop_unknown: bool) -> list[int]:
    if unknown := tokenizer.unknown_chars(prime):
        if not drop_unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise TokenizerError(f"the prime has character(s) the model never saw: {shown} — remove them, "
                                 "or pass --drop-unknown to skip them")
        prime = "".join(c for c in prime if c not in set(unknown))
    if not prime:
        raise UsageError("the prime is empty — give at least one character the model knows (the default is a newline)")
    return tokenizer.encode_array(prime).tolist()


class Group:
    """One request inside an `Engine`: n samples sharing settings, a seeded generator and a prime.

    `texts` holds what each sample produced so far; `finished` turns true when every sample
    reached its length or stop string, or the group was cancelled (a client went away).
    """

    def __init__(self, cfg: SampleConfig, generator: torch.Generator, chars: list[str],
                 steers: list[RowSteer] | None = None):
        self.cfg = cfg
        self.generator = generator
        self.chars = chars
        n = cfg.num_samples
        self._parts: list[list[str]] = [[] for _ in range(n)]
        self._stops = cfg.stops
        self._keep = max((len(s) for s in self._stops), default=0)
        self._tails = [""] * n  # the last characters of each sample, as many as the longest stop string
        self.done = [False] * n
        self.logprobs: list[list[Logprob]] = [[] for _ in range(n)]  # per sample, one per character (cfg.logprobs)
        self.produced = 0
        self.cancelled = False
        self.error: Exception | None = None  # what ended this group early (its rows failed); the others go on
        self.steers = steers  # one per sample where the request steers (steer.py), else None
        self.ended: list[str | None] = [None] * n  # why a sample ended before its length, where steering ended it
        self.changed = 0  # draws where steering changed the character plain sampling would have drawn

    def fail(self, error: Exception) -> None:
        self.error = error

    @property
    def texts(self) -> list[str]:
        return ["".join(parts) for parts in self._parts]

    @property
    def finished(self) -> bool:
        return self.cancelled or self.error is not None or self.produced >= self.cfg.length or all(self.done)

    def record(self, ids: list[int], scores: list[Logprob] | None = None) -> list[str]:
        """Append one sampled id per sample (and its `Logprob`); a sample past its stop string gets ''."""
        pieces = []
        for i, token in enumerate(ids):
            if self.done[i]:
                pieces.append("")
                continue
            piece = self.chars[token]
            if self.steers is not None:
                self.steers[i].advance(token)
            pieces.append(piece)
            self._parts[i].append(piece)
            if scores is not None:
                self.logprobs[i].append(scores[i])
            if self._keep:
                self._tails[i] = tail = (self._tails[i] + piece)[-self._keep :]
                self.done[i] = any(tail.endswith(s) for s in self._stops)
        self.produced += 1
        return pieces


    def steer(self, logits: Tensor) -> None:
        """Steer this group's rows of a step's scores (n, V) in place; a sample its controls leave nothing ends."""
        assert self.steers is not None
        for i, steer in enumerate(self.steers):
            if self.done[i]:
                continue
            steer.adjust(logits[i])
            if steer.stuck is not None:
                self.done[i] = True
                self.ended[i] = steer.stuck
