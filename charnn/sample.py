"""Sampling: `sample_next` (pure) and `generate` (streaming, batched, primed).

The prime goes through the network in one forward pass; after that every step
feeds one character per sample and carries the hidden state. On CPU the steps
run through `model.Stepper` (hand-fused, no oneDNN per-call overhead); on GPU
they use the fused cuDNN module. N samples run as one batch of N.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from charnn.errors import TokenizerError, UsageError
from charnn.model import CharRNN, State, Stepper, pack_state, unpack_state
from charnn.tokenizer import CharTokenizer

FUSED_MAX_BATCH = 16


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

    def validate(self) -> list[str]:
        problems = []
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
        if any(s == "" for s in self.stops):
            problems.append("--stop must not be empty")
        return problems

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def check(self) -> None:
        if problems := self.validate():
            raise UsageError(problems[0])


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> Tensor:
    """Draw one id per row of `logits` (B, V) -> (B,). Pure: the randomness is `generator`'s."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    vocab = logits.size(-1)
    if top_k is not None and top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p; the first token always stays.
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


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

    def __init__(self, cfg: SampleConfig, logits: Tensor, generator: torch.Generator, chars: list[str]):
        self.cfg = cfg
        self.logits = logits  # (n, V): the distribution of each sample's next character
        self.generator = generator
        self.chars = chars
        n = cfg.num_samples
        self._parts: list[list[str]] = [[] for _ in range(n)]
        self._stops = cfg.stops
        self._keep = max((len(s) for s in self._stops), default=0)
        self._tails = [""] * n  # the last characters of each sample, as many as the longest stop string
        self.done = [False] * n
        self.produced = 0
        self.cancelled = False

    @property
    def texts(self) -> list[str]:
        return ["".join(parts) for parts in self._parts]

    @property
    def finished(self) -> bool:
        return self.cancelled or self.produced >= self.cfg.length or all(self.done)

    def record(self, ids: list[int]) -> list[str]:
        """Append one sampled id per sample; a sample past its stop string gets ''."""
        pieces = []
        for i, token in enumerate(ids):
            if self.done[i]:
                pieces.append("")
                continue
            piece = self.chars[token]
            pieces.append(piece)
            self._parts[i].append(piece)
            if self._keep:
                self._tails[i] = tail = (self._tails[i] + piece)[-self._keep :]
                self.done[i] = any(tail.endswith(s) for s in self._stops)
        self.produced += 1
        return pieces


class Engine:
    """The one generation engine: any number of groups stepped together as one batch.

    Groups join (their prime runs in one forward pass) and leave between steps; each
    keeps its own settings and generator, so a group samples the same text whether it is
    alone or shares the batch. Each step samples one character per row, then advances
    the whole batch by one character: through `Stepper` (hand-fused) for up to
    FUSED_MAX_BATCH rows on CPU, else through the fused cuDNN/oneDNN module. Call it
    under `torch.inference_mode()`; not thread-safe (one thread steps it).
    """

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer):
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.head.weight.device
        self.stepper = Stepper(model) if self.device.type == "cpu" else None
        self.groups: list[Group] = []
        self._rows: list[int] = []  # rows of each group, in batch order
        self.parts: list[list[Tensor]] = []  # the batch's state, unpacked between steps: part (h, c, …) -> layer -> (B, H)

    def join(self, prime: str, cfg: SampleConfig, state: State | None = None) -> Group:
        """Validate, prime and add a group; `state` continues a previous context (batch 1 or n)."""
        cfg.check()
        if cfg.seed is None:
            cfg.seed = int.from_bytes(os.urandom(6), "little")
        prime_ids = encode_prime(self.tokenizer, prime, cfg.drop_unknown)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(cfg.seed)
        n = cfg.num_samples
        state = state if state is not None else self.model.init_state(1, self.device)
        # Prime once (batch 1 unless a batched state is continued), then fan out to n samples.
        primed = torch.tensor([prime_ids], device=self.device).expand(state[0].size(1), -1)  # (B0, P)
        logits, state = self.model(primed, state)
        state = tuple(s.expand(-1, n, -1).contiguous() for s in state)  # (L, n, H)
        group = Group(cfg, logits[:, -1].expand(n, -1), generator, self.tokenizer.chars)
        parts = unpack_state(state)
        self.parts = [[torch.cat([a, b]) for a, b in zip(old, new, strict=True)] for old, new in
                      zip(self.parts, parts, strict=True)] if self.groups else parts
        self.groups.append(group)
        self._rows.append(n)
        return group

    def leave(self, group: Group) -> State:
        """Remove a group; returns its state (L, n, H), e.g. to continue it later."""
        i = self.groups.index(group)
        start = sum(self._rows[:i])
        rows = slice(start, start + self._rows[i])
        state = pack_state([[t[rows] for t in layers] for layers in self.parts])
        keep = torch.cat([torch.arange(0, start), torch.arange(rows.stop, sum(self._rows))]).to(self.device)
        self.parts = [[t.index_select(0, keep) for t in layers] for layers in self.parts]
        del self.groups[i], self._rows[i]
        return state

    def step(self) -> list[tuple[Group, list[str]]]:
        """One character for every group: the pieces each produced (one per sample)."""
        if not self.groups:
            return []
        drawn = [sample_next(g.logits, g.cfg.temperature, g.cfg.top_k, g.cfg.top_p, g.generator) for g in self.groups]
        ids = torch.cat(drawn)  # (B,)
        if self.stepper is not None and len(ids) <= FUSED_MAX_BATCH:
            logits = self.stepper.step_layers(ids, self.parts)  # (B, V)
        else:
            out, state = self.model(ids[:, None], pack_state(self.parts))  # (B, 1, V)
            logits = out[:, 0]
            self.parts = unpack_state(state)
        pieces = []
        for group, part, rows in zip(self.groups, drawn, logits.split(self._rows), strict=True):
            group.logits = rows
            pieces.append((group, group.record(part.tolist())))
        return pieces


class Generation:
    """An iterator over generated text: each item is one new piece per sample (list of N strings).

    One group in an `Engine`. After iteration `state` holds the hidden state (batch N)
    for continuing, and `texts` the generated text of each sample (prime not included).
    """

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig,
                 state: State | None = None):
        cfg.check()
        encode_prime(tokenizer, prime, cfg.drop_unknown)  # fail here, before anything is printed
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.prime = prime
        self.state = state
        self._group: Group | None = None

    @property
    def texts(self) -> list[str]:
        return self._group.texts if self._group is not None else [""] * self.cfg.num_samples

    def __iter__(self) -> Iterator[list[str]]:
        with torch.inference_mode():
            engine = Engine(self.model, self.tokenizer)
            group = self._group = engine.join(self.prime, self.cfg, self.state)
            try:
                while not group.finished:
                    yield engine.step()[0][1]
            finally:  # also on Ctrl-C or an abandoned iterator: the state matches the text produced so far
                self.state = engine.leave(group)


def generate(model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig,
             state: State | None = None) -> Generation:
    """Start a generation; iterate it to stream, or call `list(...)` and read `.texts`."""
    return Generation(model, tokenizer, prime, cfg, state)
