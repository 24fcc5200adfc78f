"""The LSTM: torch's `nn.LSTM`, fused; two state parts, h and the cell state c. The forget gates start at
a bias of 1 (Jozefowicz et al., 2015), so a fresh model remembers by default."""

from __future__ import annotations

import torch
from torch import nn

from charnn.cells.spec import Cell, gated_cost


def build(embed: int, hidden: int, layers: int, heads: int, dropout: float, locked: bool) -> nn.Module:
    stack = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
    # Gates are ordered (i, f, g, o); b_ih + b_hh is the effective bias, so put the 1 in one of them.
    with torch.no_grad():
        for layer in range(layers):
            getattr(stack, f"bias_ih_l{layer}")[hidden : 2 * hidden].fill_(1.0)
            getattr(stack, f"bias_hh_l{layer}")[hidden : 2 * hidden].fill_(0.0)
    return stack


CELL = Cell("lstm", "long short-term memory", parts=("h", "c"), gates=4, build=build, cost=gated_cost(4), fused=nn.LSTM,
            shown=("h", "c"))
