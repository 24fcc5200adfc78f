"""What charnn asks of a cell, whatever it is: the `Cell` record every cell module provides (cells/__init__.py
registers them by name).

The model builds the stack through `build`; the state's parts (their names, for ONNX and the run's state,
and their widths) come from `parts` and `widths`; the recipe costs a model by `cost`; the memory check by
`gates`; `inspect` shows `shown` and measures reach through part `memory`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

# build(embed, hidden, layers, heads, dropout between layers, locked dropout) -> the stack:
# (x (B, T, E), state) -> (out (B, T, H), state), as `nn.LSTM(batch_first=True)` is.
Build = Callable[[int, int, int, int, float, bool], nn.Module]
# cost(layers, hidden, embed, vocab, heads, seq_len) -> multiply-adds per character (input, recurrence, head).
Cost = Callable[[int, int, int, int, int, int], float]


@dataclass(frozen=True)
class Cell:
    name: str
    about: str  # a few words for --help
    parts: tuple[str, ...]  # the state's parts in order, (L, B, width) each: ("h",), ("h", "c"), ...
    gates: int  # hidden-sized pre-activations per layer and step: what training keeps per character (footprint.py)
    build: Build
    cost: Cost
    widths: Callable[[int, int], tuple[int, ...]] | None = None  # (hidden, heads) -> each part's width; None: H each
    fused: Callable[..., nn.RNNBase] | None = None  # torch's own stack (nn.RNN, nn.LSTM, nn.GRU), for the fused paths
    headed: bool = False  # takes --heads
    shown: tuple[str, ...] = ("h",)  # the per-unit quantities `inspect` shows (h, and a cell state where there is one)
    memory: int = 0  # the part that carries the past from step to step (inspect's reach); h unless said
    unvoiced: str | None = None  # why --voices cannot work with this cell; None: it can

    def state_widths(self, hidden: int, heads: int) -> tuple[int, ...]:
        return self.widths(hidden, heads) if self.widths is not None else (hidden,) * len(self.parts)


def gated_cost(gates: int, heads_divide: bool = False) -> Cost:
    """The cost of a cell whose step is `gates` H-sized pre-activations from the input and from h (the recurrence
    block-diagonal over the heads when `heads_divide`), plus the head."""

    def cost(layers: int, hidden: int, embed: int, vocab: int, heads: int, seq_len: int) -> float:
        recurrent = gates * hidden * hidden // (heads if heads_divide else 1)
        return gates * hidden * embed + (layers - 1) * gates * hidden * hidden + layers * recurrent + hidden * vocab

    return cost
