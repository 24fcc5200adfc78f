"""The Elman RNN (tanh): torch's `nn.RNN`, fused (oneDNN on CPU, cuDNN on GPU); one state part, h."""

from __future__ import annotations

from torch import nn

from charnn.cells.spec import Cell, gated_cost


def build(embed: int, hidden: int, layers: int, heads: int, dropout: float, locked: bool) -> nn.Module:
    return nn.RNN(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)


CELL = Cell("rnn", "Elman tanh", parts=("h",), gates=1, build=build, cost=gated_cost(1), fused=nn.RNN)
