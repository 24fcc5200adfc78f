"""One draw per row: `sample_rows` (a batch, each row with its own settings) and `sample_next` (pure).

Sampling is an exponential race in the device's finest float (`capability.exact_dtype`: float64, or
float32 on Apple's MPS) on logits shifted so the largest is 0: exact for normal values, and no
temperature, top-k or top-p a validator accepts can make NaN in either (see `sample_rows`). The races
themselves are Exp(1) draws each request makes from its own generator (`race_noise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from charnn import capability

RACE_BLOCK = 32  # steps of random draws a group makes in one call (one call per step costs ~5 µs a request)


@dataclass
class Settings:
    """Per-row sampling settings of a batch, as tensors: rows of different requests side by side."""

    temperature: Tensor  # (B, 1) exact_dtype, 1.0 on greedy rows (they take the argmax instead)
    greedy: Tensor  # (B,) bool: temperature 0
    top_k: Tensor | None  # (B, 1) long, V where unset; None when no row filters
    top_p: Tensor | None  # (B, 1) exact_dtype, 1.0 where unset
    any_greedy: bool = False

    @staticmethod
    def of(rows: Sequence[tuple[int, float, int | None, float | None]], device: torch.device | str = "cpu") -> Settings:
        """From (rows, temperature, top_k, top_p) per group, in batch order. Temperatures above the device's
        `max_temperature` are taken as it: every kept character is equally likely there anyway."""
        can = capability.of(device)
        temps = [min(t, can.max_temperature) if t > 0 else 1.0 for n, t, _, _ in rows for _ in range(n)]
        greedy = [t == 0 for n, t, _, _ in rows for _ in range(n)]
        filtering = any(k is not None or (p is not None and p < 1) for _, _, k, p in rows)
        big = 2**62  # "no top-k": more than any vocabulary
        ks = [k if k is not None else big for n, _, k, _ in rows for _ in range(n)]
        ps = [p if p is not None else 1.0 for n, _, _, p in rows for _ in range(n)]
        exact = dict(dtype=can.exact_dtype, device=device)
        return Settings(torch.tensor(temps, **exact)[:, None], torch.tensor(greedy, dtype=torch.bool, device=device),  # type: ignore[arg-type]
                        torch.tensor(ks, device=device)[:, None] if filtering else None,
                        torch.tensor(ps, **exact)[:, None] if filtering else None, any(greedy))  # type: ignore[arg-type]


def sample_rows(logits: Tensor, settings: Settings, noise: Tensor | None, top: Tensor | None = None) -> Tensor:
    """Draw one id per row of `logits` (B, V) -> (B,), each row with its own settings.

    Sampling is an exponential race: row i takes argmax_j (x_ij - log E_ij) with E ~ Exp(1) drawn
    by the caller (`noise` = -log E, (B, V), from `race_noise`; None when every row is greedy),
    which is an exact draw from softmax(x_i). It is done in the settings' dtype (the device's
    `exact_dtype`) on logits shifted so the largest is 0, so no temperature, top-k or top-p a
    validator accepts can make NaN: a tiny
    temperature turns every logit below the maximum into a huge negative number or -inf (the
    greedy limit, ties drawn evenly), +inf logits leave only themselves, a row of -inf is uniform.
    NaN logits are the model's failure, not a sampling value: callers check for them (`Engine`
    fails only the requests whose rows have them). `top`: each row's maximum (B, 1), when the caller
    has taken it and found every one finite (that check is then skipped).
    """
    x = logits.to(settings.temperature.dtype)  # (B, V)
    if top is None:
        top = x.amax(dim=-1, keepdim=True)  # (B, 1)
        if not bool(torch.isfinite(top).all()):
            x, top = _without_infinite_maxima(x, top)
    shifted = x - top  # <= 0 with the maximum at exactly 0; -inf stays -inf
    x = shifted / settings.temperature
    if settings.top_k is not None and settings.top_p is not None:
        x = _filtered(shifted, x, settings.top_k, settings.top_p)
    if noise is None:
        return x.argmax(dim=-1)
    chosen = (x + noise).argmax(dim=-1)
    if settings.any_greedy:
        chosen = torch.where(settings.greedy, x.argmax(dim=-1), chosen)
    return chosen


def _without_infinite_maxima(x: Tensor, top: Tensor) -> tuple[Tensor, Tensor]:
    """Rows with +inf logits keep only those (equally likely); rows of all -inf become uniform."""
    posinf = torch.isposinf(x)
    x = torch.where(posinf.any(dim=-1, keepdim=True), torch.where(posinf, 0.0, float("-inf")), x)
    x = torch.where(torch.isneginf(x).all(dim=-1, keepdim=True), 0.0, x)
    return x, x.amax(dim=-1, keepdim=True)


def _filtered(shifted: Tensor, scaled: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """`scaled` with each row cut to its top-k, then to the smallest prefix whose probability reaches top-p;
    the largest always stays. The order comes from `shifted` (the logits before the temperature): a huge
    temperature can round distinct logits to one scaled value, and top-k 1 must still mean the maximum."""
    vocab = shifted.size(-1)
    ordered, order = shifted.sort(dim=-1, descending=True)  # (B, V)
    keep = torch.arange(vocab, device=shifted.device) < top_k  # (B, V): the k largest
    probs = torch.softmax(scaled.gather(-1, order).masked_fill(~keep, float("-inf")), dim=-1)
    # Drop a character when the mass before it already reaches top_p.
    keep &= (probs.cumsum(dim=-1) - probs) < top_p
    keep[:, 0] = True
    threshold = ordered.gather(-1, keep.sum(dim=-1, keepdim=True) - 1)  # (B, 1): the smallest kept logit
    return scaled.masked_fill(shifted < threshold, float("-inf"))


def race_noise(rows: int, vocab: int, generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """-log E for Exp(1) draws E (rows, V) in the device's `exact_dtype`, from one request's generator (None:
    the device's default one): its own randomness, whatever shares the batch. E is kept above the dtype's
    smallest normal: a race of 0 would give -inf + inf = NaN."""
    dtype = capability.of(device).exact_dtype
    races = torch.empty(rows, vocab, dtype=dtype, device=device).exponential_(generator=generator)
    return races.clamp_min_(torch.finfo(dtype).tiny).log_().neg_()


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> Tensor:
    """Draw one id per row of `logits` (B, V) -> (B,) with one setting for all rows. Pure: the randomness is `generator`'s."""
    rows = logits.size(0)
    settings = Settings.of([(rows, temperature, top_k, top_p)], logits.device)
    if temperature == 0:
        return sample_rows(logits, settings, None)
    return sample_rows(logits, settings, race_noise(rows, logits.size(-1), generator, logits.device))


def race_block(vocab: int) -> int:
    """Steps of races a group draws in one call: 32, fewer for large vocabularies (a row's block <= 512 KB)."""
    return max(1, min(RACE_BLOCK, (1 << 16) // vocab))
