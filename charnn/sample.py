"""Sampling: `sample_next` (pure) and `generate` (streaming, batched, primed).

The prime goes through the network in one forward pass; after that every step
feeds one character per sample and carries the hidden state. On CPU the steps
run through `model.Stepper` (hand-fused, no oneDNN per-call overhead); on GPU
they use the fused cuDNN module. N samples run as one batch of N.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from charnn.errors import TokenizerError, UsageError
from charnn.model import CharRNN, State, Stepper
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
    stop: str | None = None  # a sample ends once its text ends with this string (included)
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
        if self.stop == "":
            problems.append("--stop must not be empty")
        return problems

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


class Generation:
    """An iterator over generated text: each item is one new piece per sample (list of N strings).

    After iteration `state` holds the hidden state (batch N) for continuing, and
    `texts` the generated text of each sample (prime not included).
    """

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig,
                 state: State | None = None):
        cfg.check()
        if cfg.seed is None:
            cfg.seed = int.from_bytes(os.urandom(6), "little")
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.prime_ids = encode_prime(tokenizer, prime, cfg.drop_unknown)
        self.state = state
        self._parts: list[list[str]] = [[] for _ in range(cfg.num_samples)]

    @property
    def texts(self) -> list[str]:
        return ["".join(parts) for parts in self._parts]

    def __iter__(self) -> Iterator[list[str]]:
        with torch.inference_mode():
            yield from self._run()

    def _run(self) -> Iterator[list[str]]:
        model, cfg, n = self.model, self.cfg, self.cfg.num_samples
        device = model.head.weight.device
        model.eval()
        generator = torch.Generator(device=device)
        generator.manual_seed(cfg.seed or 0)
        state = self.state if self.state is not None else model.init_state(1, device)
        # Prime once (batch 1 unless a batched state is continued), then fan out to N samples.
        prime = torch.tensor([self.prime_ids], device=device).expand(state[0].size(1), -1)  # (B0, P)
        logits, state = model(prime, state)
        logits = logits[:, -1].expand(n, -1)  # (N, V)
        state = tuple(s.expand(-1, n, -1).contiguous() for s in state)  # (L, N, H)
        # The fused step wins for up to ~16 streams on CPU; beyond that oneDNN's batched kernel is faster
        # (benchmarks/RESULTS.md, generation).
        stepper = Stepper(model) if device.type == "cpu" and n <= FUSED_MAX_BATCH else None
        chars = self.tokenizer.chars
        stop = cfg.stop
        tails = [""] * n  # the last len(stop) characters of each sample, for the stop test
        done = [False] * n
        # The fused step keeps per-layer lists (no stack/unbind per character); `state` is packed on exit.
        hs, cs = stepper.unpack(state) if stepper is not None else ([], [])
        try:
            for _ in range(cfg.length):
                ids = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # (N,)
                if stepper is not None:
                    logits = stepper.step_layers(ids, hs, cs)
                else:
                    out, state = model(ids[:, None], state)  # (N, 1, V)
                    logits = out[:, 0]
                pieces = []
                for i, token in enumerate(ids.tolist()):
                    if done[i]:
                        pieces.append("")
                        continue
                    piece = chars[token]
                    pieces.append(piece)
                    self._parts[i].append(piece)
                    if stop is not None:
                        tails[i] = (tails[i] + piece)[-len(stop) :]
                        done[i] = tails[i] == stop
                yield pieces
                if all(done):
                    break
        finally:  # also on Ctrl-C or an abandoned iterator: the state matches the text produced so far
            self.state = stepper.pack(hs, cs) if stepper is not None else state


def generate(model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig,
             state: State | None = None) -> Generation:
    """Start a generation; iterate it to stream, or call `list(...)` and read `.texts`."""
    return Generation(model, tokenizer, prime, cfg, state)
