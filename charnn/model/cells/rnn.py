"""The Elman RNN (tanh): torch's `nn.RNN`, fused (oneDNN on CPU, cuDNN on GPU); one state part, h."""

from __future__ import annotations

from torch import Tensor, nn

from charnn.model.cells.graph import Graph, gated_input
from charnn.model.cells.spec import Cell, Parts, StepWeights, gate_sum, gated_cost, onnx_gate_sum, stacked


def build(embed: int, hidden: int, layers: int, heads: int, dropout: float, locked: bool) -> nn.Module:
    return nn.RNN(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)


def layer(w: StepWeights, k: int, x: Tensor, parts: Parts) -> Tensor:
    return gate_sum(w, k, x, parts[0][k]).tanh_()  # h = tanh(x W_ih + b_ih + h W_hh + b_hh)


def onnx_layer(g: Graph, folded: dict[str, Tensor], k: int, x: str, old: dict[str, str], hidden: int, heads: int,
               voice: str | None) -> dict[str, str]:
    return {"h": g.op("Tanh", onnx_gate_sum(g, folded, k, gated_input(g, folded, k, x, voice), old["h"]))}


CELL = Cell("rnn", "Elman tanh", parts=("h",), gates=1, build=build, cost=gated_cost(1), step=stacked(layer),
            onnx_layer=onnx_layer, fused=nn.RNN, joint=True)
