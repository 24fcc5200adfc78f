"""The exponential moving average of a model's weights, used for evaluation and `best.pt`.

After each optimizer step, avg ← d·avg + (1 − d)·w for every parameter, with the decay warmed
up as min(d, (1 + n) / (10 + n)) over the first n updates so the average does not start out
dominated by the random initial weights. Evaluating the average instead of the latest weights
smooths the noise of the last few hundred steps, which is where a short run ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.params = [p for p in model.parameters()]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1 - d)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside: the model holds the averaged weights; outside again: its own."""
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.average, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(self.params, own, strict=True):
                    p.copy_(o)

    def state(self) -> dict[str, object]:
        return {"updates": self.updates, "average": [a.clone() for a in self.average]}

    def load(self, state: dict[str, object] | None) -> None:
        """Resume the average (None: a run saved without one starts it from the current weights)."""
        if state is None:
            return
        self.updates = int(state["updates"])  # type: ignore[call-overload]
        saved: list[Tensor] = state["average"]  # type: ignore[assignment]
        for a, s in zip(self.average, saved, strict=True):
            a.copy_(s)
