"""What charnn asks of a cell, whatever it is: the `Cell` record every cell module provides (cells/__init__.py
registers them by name).

The model builds the stack through `build`; the state's parts (their names, for ONNX and the run's state,
and their widths) come from `parts` and `widths`; the one-character step runs `step` on the folded weights
(`StepWeights`, folded by model.fold_for_inference with the cell's `fold` or `gate_weights`), and the ONNX
export writes the same step with `onnx_layer`; the recipe costs a model by `cost`; the memory check by
`gates`; `inspect` shows `shown` and measures reach through part `memory`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from charnn.model.cells.graph import Graph

# build(embed, hidden, layers, heads, dropout between layers, locked dropout) -> the stack:
# (x (B, T, E), state) -> (out (B, T, H), state), as `nn.LSTM(batch_first=True)` is.
Build = Callable[[int, int, int, int, float, bool], nn.Module]
# cost(layers, hidden, embed, vocab, heads, seq_len) -> multiply-adds per character (input, recurrence, head).
Cost = Callable[[int, int, int, int, int, int], float]
Parts = list[list[Tensor]]  # the state per part and layer (model.unpack_state): parts[p][k] is (B, width)


@dataclass
class StepWeights:
    """A model's folded weights as the one-character step reads them (model.Stepper builds it once)."""

    folded: dict[str, Tensor]  # model.fold_for_inference's: what every exporter writes too
    layers: int
    hidden: int
    heads: int
    joint: bool  # rnn, lstm: above layer 0, one matmul over [x, h] with w_cat (their x and h projections add)
    w_ih: list[Tensor] = field(default_factory=list)  # per layer (H_in, G*H), for x @ W
    b_ih: list[Tensor] = field(default_factory=list)
    w_hh: list[Tensor] = field(default_factory=list)  # (H, G*H)
    b_hh: list[Tensor] = field(default_factory=list)
    w_cat: list[Tensor] = field(default_factory=list)  # (H_in + H, G*H) where `joint`
    b_cat: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        f, layers = self.folded, range(self.layers)
        if "w_ih.0" not in f:  # a cell of its own layout (mLSTM) reads `folded` itself
            return
        self.w_ih, self.b_ih = [f[f"w_ih.{k}"] for k in layers], [f[f"b_ih.{k}"] for k in layers]
        self.w_hh, self.b_hh = [f[f"w_hh.{k}"] for k in layers], [f[f"b_hh.{k}"] for k in layers]
        if self.joint:
            self.w_cat = [torch.cat([self.w_ih[k], self.w_hh[k]]).contiguous() for k in layers]
            self.b_cat = [self.b_ih[k] + self.b_hh[k] for k in layers]

    def first(self, ids: Tensor, parts: Parts) -> Tensor:
        """Layer 0's input projection (B, G*H): a lookup of each row's character in table0 (biases folded in),
        plus, in a voiced model, that of its voice (the state's last part, (B, E) in layer 0)."""
        first = self.folded["table0"][ids]
        voice_w = self.folded.get("voice_w")
        return first if voice_w is None else torch.addmm(first, parts[-1][0], voice_w)


# step(weights, ids (B,), parts) -> the top layer's output (B, H), advancing `parts` in place.
Step = Callable[[StepWeights, Tensor, Parts], Tensor]
# layer(weights, k, x, parts) -> h (B, H): layer k of a gated cell for one character; x is layer 0's input
# projection (B, G*H) at k = 0, else the layer below's h (B, H_in). It updates its parts other than h.
Layer = Callable[[StepWeights, int, Tensor, Parts], Tensor]
# onnx_layer(graph, folded, k, x, old parts {name: (B, ·)}, hidden, heads, voice) -> the new parts {name: (B, ·)};
# x is the ids at k = 0, else the layer below's h; voice is what a voiced model's voice adds at layer 0 (or None).
OnnxLayer = Callable[[Graph, dict[str, Tensor], int, str, dict[str, str], int, int, "str | None"], dict[str, str]]


def stacked(layer: Layer) -> Step:
    """The step of a gated cell: its layer, bottom to top, each layer's h the input of the next."""

    def step(w: StepWeights, ids: Tensor, parts: Parts) -> Tensor:
        x = w.first(ids, parts)
        for k in range(w.layers):
            x = parts[0][k] = layer(w, k, x, parts)
        return x

    return step


def gate_sum(w: StepWeights, k: int, x: Tensor, h: Tensor) -> Tensor:
    """x W_ih + b_ih + h W_hh + b_hh (B, G*H) of a cell whose input and recurrent projections only add (rnn, lstm):
    layer 0's x is already table0's projection with both biases."""
    if k == 0:
        return torch.addmm(x, h, w.w_hh[0])
    return torch.addmm(w.b_cat[k], torch.cat([x, h], 1), w.w_cat[k])


def onnx_gate_sum(g: Graph, folded: dict[str, Tensor], k: int, pre: str, h: str) -> str:
    """`gate_sum` in ONNX, from the input projection `pre` (graph.gated_input)."""
    rec = g.op("MatMul", h, g.weight(f"w_hh_{k}", folded[f"w_hh.{k}"]))
    if k:  # layer 0's table already holds both biases
        rec = g.op("Add", rec, g.weight(f"b_hh_{k}", folded[f"b_hh.{k}"]))
    return g.op("Add", pre, rec)  # (B, G*H)


@dataclass(frozen=True)
class Cell:
    name: str
    about: str  # a few words for --help
    parts: tuple[str, ...]  # the state's parts in order, (L, B, width) each: ("h",), ("h", "c"), ...
    gates: int  # hidden-sized pre-activations per layer and step: what training keeps per character (footprint.py)
    build: Build
    cost: Cost
    step: Step  # the one-character step on the folded weights (model.Stepper)
    onnx_layer: OnnxLayer  # the same step, layer by layer, as ONNX operators (export/onnx.py)
    widths: Callable[[int, int], tuple[int, ...]] | None = None  # (hidden, heads) -> each part's width; None: H each
    fused: Callable[..., nn.RNNBase] | None = None  # torch's own stack (nn.RNN, nn.LSTM, nn.GRU), for the fused paths
    headed: bool = False  # takes --heads
    shown: tuple[str, ...] = ("h",)  # the per-unit quantities `inspect` shows (h, and a cell state where there is one)
    memory: int = 0  # the part that carries the past from step to step (inspect's reach); h unless said
    unvoiced: str | None = None  # why --voices cannot work with this cell; None: it can
    joint: bool = False  # the step multiplies [x, h] by stacked weights above layer 0 (StepWeights.w_cat)
    table_has_b_hh: bool = True  # layer 0's table folds in the recurrent bias (not a GRU's: b_hn sits inside r * (...))
    # (stack) -> its gate weights under nn.LSTM's names (weight_ih_l{k}, ...), for the gated fold; None: the stack's own
    gate_weights: Callable[[nn.Module], dict[str, Tensor]] | None = None
    # (stack, embedding weight) -> the whole fold, for a cell of its own layout (mLSTM); None: the gated fold
    fold: Callable[[nn.Module, Tensor], dict[str, Tensor]] | None = None
    onnx_out: Callable[[Graph, dict[str, Tensor], str], str] | None = None  # what follows the last layer (mLSTM's norm)

    def state_widths(self, hidden: int, heads: int) -> tuple[int, ...]:
        return self.widths(hidden, heads) if self.widths is not None else (hidden,) * len(self.parts)


def gated_cost(gates: int, heads_divide: bool = False) -> Cost:
    """The cost of a cell whose step is `gates` H-sized pre-activations from the input and from h (the recurrence
    block-diagonal over the heads when `heads_divide`), plus the head."""

    def cost(layers: int, hidden: int, embed: int, vocab: int, heads: int, seq_len: int) -> float:
        recurrent = gates * hidden * hidden // (heads if heads_divide else 1)
        return gates * hidden * embed + (layers - 1) * gates * hidden * hidden + layers * recurrent + hidden * vocab

    return cost
