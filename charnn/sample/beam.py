"""Beam search: the most likely continuations a beam of W hypotheses finds, length-normalised.

Every step extends each live hypothesis by every character, scores the W x V candidates by their summed
log-probability (log_softmax of the model's logits), and goes down them best first until W live ones are
kept: a candidate that ends with a stop string on the way is finished (kept aside, if `accept` takes it), so a
width of 1 is greedy decoding exactly. The W live rows are one batch:
their states are reordered by parent and stepped together (the fused `Stepper` on CPU). Finished and live
hypotheses are ranked by log-probability per character, so a short ending does not win by being short.

The stochastic variant (`temperature` > 0) keeps variety: candidates are chosen by Gumbel-top-k, i.e. by
score / temperature plus Gumbel noise from a seeded generator (sampling 2W distinct candidates without
replacement, in proportion to exp(score / temperature)), instead of by score alone.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import isinf

import torch
from torch import Tensor

from charnn.errors import UsageError
from charnn.model.network import CharRNN, Stepper, pack_state, unpack_state
from charnn.sample.engine import FUSED_MAX_BATCH
from charnn.sample.request import encode_prime, voice_of
from charnn.sample.steer import RowSteer, Steering, row_steers
from charnn.text.tokenizer import CharTokenizer

MAX_WIDTH = 64
# A beam of text loops: on three texts (RECIPES.md, steering) --beam 8 repeated 76-87% of its 20-character strings
# and no-repeat 16 none, for 0.04-0.14 nats of likelihood (the loop is the likely path) and ~20% of its speed. So a
# beam of text keeps to it unless told otherwise (`CharModel.beam`, `charnn sample --beam`; items are not text).
BEAM_NO_REPEAT = 16


@dataclass
class BeamConfig:
    width: int = 4  # live hypotheses kept per step
    length: int = 200  # characters at most (the prime not counted)
    stops: tuple[str, ...] = ()  # a hypothesis ending with one of these is finished (included in its text)
    want: int = 1  # finished hypotheses to find before stopping early (with stops)
    temperature: float = 0.0  # 0: plain beam search; > 0: stochastic (Gumbel-top-k) at this temperature
    seed: int | None = None  # for the stochastic variant
    drop_unknown: bool = False
    voice: str | Mapping[str, float] | None = None  # a voiced model's voice or blend (SampleConfig.voice)
    steering: Steering = field(default_factory=Steering)  # each hypothesis steered as a sample is (steer.py)

    def validate(self) -> list[str]:
        problems = self.steering.validate()
        if not 1 <= self.width <= MAX_WIDTH:
            problems.append(f"--beam {self.width} must be between 1 and {MAX_WIDTH}")
        if self.length < 1:
            problems.append(f"--length {self.length} must be at least 1 with --beam")
        if not self.temperature >= 0:
            problems.append(f"--temperature {self.temperature} must be 0 or more")
        if any(s == "" for s in self.stops):
            problems.append("--stop must not be empty")
        return problems


@dataclass
class Hypothesis:
    text: str  # generated, the prime not included (a finished one ends with its stop string)
    logprob: float  # summed log-probability of its characters under the model
    finished: bool = False

    @property
    def score(self) -> float:
        """Log-probability per character: what hypotheses are ranked by."""
        return self.logprob / max(1, len(self.text))


@dataclass
class Beams:
    """What `beam_search` found: hypotheses best first, and how many finished ones `accept` turned down."""

    hypotheses: list[Hypothesis] = field(default_factory=list)
    refused: int = 0
    seed: int = 0

    def _repr_html_(self) -> str:
        """A notebook shows the hypotheses as a table, best first, with each one's score (nats per character)."""
        rows = "".join(f"<tr><td>{i}</td><td style='text-align:left;white-space:pre-wrap'>{html.escape(h.text)}</td>"
                       f"<td>{h.score:.3f}</td><td>{'finished' if h.finished else 'live'}</td></tr>"
                       for i, h in enumerate(self.hypotheses, 1))
        return f"<table><tr><th>#</th><th>text</th><th>log-prob per char</th><th></th></tr>{rows}</table>"


def beam_search(model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: BeamConfig,
                accept: Callable[[str], bool] | None = None) -> Beams:
    """Search from `prime`; `accept(text)` may turn a finished hypothesis down (it is counted, not kept).

    Returns finished hypotheses (distinct texts) and the live ones at the end, best score first. Stops when
    `cfg.want` finished hypotheses are kept, every hypothesis finished, or `cfg.length` is reached.
    """
    if problems := cfg.validate() or cfg.steering.validate(tokenizer.vocab_size):
        raise UsageError(problems[0])
    voice = voice_of(model, cfg.voice)
    model.eval()
    device = model.head.weight.device
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(6), "little")
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    chars = tokenizer.chars
    result = Beams(seed=seed)
    finished: dict[str, Hypothesis] = {}
    with torch.inference_mode():
        ids = torch.tensor([encode_prime(tokenizer, prime, cfg.drop_unknown)], device=device)
        steers = row_steers(cfg.steering, chars, 1, prime, device, torch.float32)  # one per live hypothesis
        logits, state = model(ids, model.init_state(1, device, voice))  # (1, P, V)
        logits = logits[:, -1]  # (1, V)
        parts = unpack_state(state)
        texts, scores = [""], torch.zeros(1, device=device, dtype=torch.float32)  # live: (A,)
        stepper = Stepper(model) if device.type == "cpu" else None
        for _ in range(cfg.length):
            # A row the steering left nothing: log_softmax of all -inf is NaN, which must rank last, not first.
            logp = torch.log_softmax(_steered(logits.float(), steers), dim=-1).nan_to_num(nan=float("-inf"))
            candidates = (scores[:, None] + logp).reshape(-1)  # (A * V,)
            order = _chosen(candidates, 2 * cfg.width, cfg.temperature, generator)
            keep_rows: list[int] = []
            keep_chars: list[int] = []
            new_texts: list[str] = []
            new_scores: list[float] = []
            new_steers: list[RowSteer] = []
            for flat in order.tolist():
                if len(keep_rows) == cfg.width:  # a finished one counts only if it ranks above the W-th live one
                    break
                row, char = divmod(flat, len(chars))
                text, logprob = texts[row] + chars[char], float(candidates[flat])
                if isinf(logprob):
                    break  # the rest are characters the steering ruled out (best first: all of them)
                if any(text.endswith(s) for s in cfg.stops):
                    if text not in finished:
                        if accept is None or accept(text):
                            finished[text] = Hypothesis(text, logprob, True)
                        else:
                            result.refused += 1
                    continue
                keep_rows.append(row)
                keep_chars.append(char)
                if steers is not None:
                    new_steers.append(steers[row].copy())
                    new_steers[-1].advance(char)
                new_texts.append(text)
                new_scores.append(logprob)
            if not keep_rows or (cfg.stops and len(finished) >= cfg.want):
                texts, scores = new_texts, torch.tensor(new_scores, device=device)
                break
            rows = torch.tensor(keep_rows, device=device)
            steers = new_steers if steers is not None else None
            parts = [[t.index_select(0, rows) for t in layers] for layers in parts]
            texts, scores = new_texts, torch.tensor(new_scores, device=device, dtype=torch.float32)
            logits = _step(model, stepper, torch.tensor(keep_chars, device=device), parts)
    live = [Hypothesis(t, float(s)) for t, s in zip(texts, scores.tolist(), strict=True)]
    ranked = sorted([*finished.values(), *live], key=lambda h: h.score, reverse=True)
    result.hypotheses = ranked
    return result


def _steered(logits: Tensor, steers: list[RowSteer] | None) -> Tensor:
    """The live rows' scores (A, V), each steered by its hypothesis's controls (a copy); as given without any."""
    if steers is None:
        return logits
    steered = logits.clone()
    for row, steer in enumerate(steers):
        steer.adjust(steered[row])
    return steered


def _chosen(candidates: Tensor, k: int, temperature: float, generator: torch.Generator) -> Tensor:
    """The k candidates to consider, best first: by score, or (stochastic) by Gumbel-perturbed score / T."""
    k = min(k, candidates.numel())
    if temperature == 0:
        return candidates.topk(k).indices
    uniform = torch.rand(candidates.shape, generator=generator, device=candidates.device).clamp_(1e-20, 1.0)
    perturbed = candidates / temperature - torch.log(-torch.log(uniform))  # Gumbel noise
    return perturbed.topk(k).indices


def _step(model: CharRNN, stepper: Stepper | None, ids: Tensor, parts: list[list[Tensor]]) -> Tensor:
    """Advance the live rows by their chosen characters (B,); `parts` in place; logits (B, V)."""
    if stepper is not None and len(ids) <= FUSED_MAX_BATCH:
        return stepper.step_layers(ids, parts)
    out, state = model(ids[:, None], pack_state(parts))
    parts[:] = unpack_state(state)
    return out[:, 0]
