"""Locked (variational) dropout, shared by the cells that run their stack layer by layer."""

from __future__ import annotations

from torch import Tensor


def locked_dropout(x: Tensor, p: float) -> Tensor:
    """Dropout with one mask per stream, shared by every step of the window: x (B, T, F).

    Variational ("locked") dropout: a unit dropped for a stream stays dropped for the whole
    window, instead of a fresh mask at every character.
    """
    keep = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)  # (B, 1, F)
    return x * keep
