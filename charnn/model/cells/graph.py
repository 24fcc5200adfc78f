"""What a cell writes its ONNX layer with: the graph builder's interface (export/onnx.py implements it) and the
pieces more than one cell's layer uses. Nothing here imports `onnx`: a cell names operators, the exporter
builds them.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from torch import Tensor

LN_EPS = 1e-5  # torch.nn.LayerNorm's and F.layer_norm's default


class Graph(Protocol):
    """An ONNX graph under construction; every method returns the name of its output."""

    def op(self, kind: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any: ...

    def const(self, name: str, value: np.ndarray) -> str: ...

    def weight(self, name: str, t: Tensor) -> str: ...

    def ints(self, name: str, values: list[int]) -> str: ...

    def affine(self, x: str, w: str, b: str) -> str: ...

    def split(self, x: str, parts: int, size: int, axis: int) -> list[str]: ...


def gated_input(g: Graph, folded: dict[str, Tensor], k: int, x: str, voice: str | None) -> str:
    """Layer k's input projection x W + b (B, G*H) of a gated cell: at layer 0 a lookup of `table0` by the ids x
    (plus what a voiced model's voice adds), above it the layer below's h (B, H_in) times w_ih."""
    if k == 0:
        pre = g.op("Gather", g.weight("table0", folded["table0"]), x, axis=0)
        return pre if voice is None else g.op("Add", pre, voice)
    return g.affine(x, g.weight(f"w_ih_{k}", folded[f"w_ih.{k}"]), g.weight(f"b_ih_{k}", folded[f"b_ih.{k}"]))


def log_sigmoid(g: Graph, t: str) -> str:
    """log σ(t) = min(t, 0) - log(1 + exp(-|t|)): exact and overflow-free for any t."""
    one, zero = g.const("one", np.array(1.0, np.float32)), g.const("zero", np.array(0.0, np.float32))
    softplus_neg_abs = g.op("Log", g.op("Add", one, g.op("Exp", g.op("Neg", g.op("Abs", t)))))
    return g.op("Sub", g.op("Min", t, zero), softplus_neg_abs)


def silu(g: Graph, t: str) -> str:
    return g.op("Mul", t, g.op("Sigmoid", t))
