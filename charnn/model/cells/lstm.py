"""The LSTM: torch's `nn.LSTM`, fused; two state parts, h and the cell state c. The forget gates start at
a bias of 1 (Jozefowicz et al., 2015), so a fresh model remembers by default."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charnn.model.cells.graph import Graph, gated_input
from charnn.model.cells.spec import Cell, Parts, StepWeights, gate_sum, gated_cost, onnx_gate_sum, stacked


def build(embed: int, hidden: int, layers: int, heads: int, dropout: float, locked: bool) -> nn.Module:
    stack = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
    # Gates are ordered (i, f, g, o); b_ih + b_hh is the effective bias, so put the 1 in one of them.
    with torch.no_grad():
        for k in range(layers):
            getattr(stack, f"bias_ih_l{k}")[hidden : 2 * hidden].fill_(1.0)
            getattr(stack, f"bias_hh_l{k}")[hidden : 2 * hidden].fill_(0.0)
    return stack


def layer(w: StepWeights, k: int, x: Tensor, parts: Parts) -> Tensor:
    H, cs = w.hidden, parts[1]
    gates = gate_sum(w, k, x, parts[0][k])  # (B, 4H): i, f, g, o
    sig = torch.sigmoid(gates)  # i, f, o used from here; g's slice is ignored
    c = cs[k] = torch.addcmul(sig[:, H : 2 * H] * cs[k], sig[:, :H], torch.tanh(gates[:, 2 * H : 3 * H]))
    return sig[:, 3 * H :] * torch.tanh(c)


def onnx_layer(g: Graph, folded: dict[str, Tensor], k: int, x: str, old: dict[str, str], hidden: int, heads: int,
               voice: str | None) -> dict[str, str]:
    gates = onnx_gate_sum(g, folded, k, gated_input(g, folded, k, x, voice), old["h"])
    i, f, cand, o = g.split(gates, 4, hidden, axis=1)  # PyTorch's gate order
    c_new = g.op("Add", g.op("Mul", g.op("Sigmoid", f), old["c"]), g.op("Mul", g.op("Sigmoid", i), g.op("Tanh", cand)))
    return {"h": g.op("Mul", g.op("Sigmoid", o), g.op("Tanh", c_new)), "c": c_new}


CELL = Cell("lstm", "long short-term memory", parts=("h", "c"), gates=4, build=build, cost=gated_cost(4),
            step=stacked(layer), onnx_layer=onnx_layer, fused=nn.LSTM, shown=("h", "c"), joint=True)
