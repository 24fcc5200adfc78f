"""The recurrent cells, one module each, registered here by name: rnn, lstm, gru (torch's fused stacks; the
GRU with a written-out backward for CPU training), slstm and mlstm (xLSTM's two, written here).

Each module provides its stack and a `Cell` (spec.py): state parts and widths, its one-character step on the
folded weights (and how they fold, where it differs from the gated cells'), the same step as an ONNX layer
(written against graph.py's `Graph`, so nothing here imports onnx), cost, memory, what `inspect` shows.
model/network.py composes a model from one; the rest of charnn asks `CELLS[name]`. Adding a cell is a module here
with its `CELL`, added to `CELLS`, plus its tests.
"""

from __future__ import annotations

from charnn.model.cells import gru, lstm, mlstm, rnn, slstm
from charnn.model.cells.spec import Cell

CELLS: dict[str, Cell] = {c.name: c for c in (rnn.CELL, lstm.CELL, gru.CELL, slstm.CELL, mlstm.CELL)}
NAMES = tuple(CELLS)
HEADED = tuple(name for name, c in CELLS.items() if c.headed)  # the cells that take --heads
