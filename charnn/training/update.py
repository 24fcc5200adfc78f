"""One training update: forward a window, backward, clip the gradients' norm, step AdamW and the weight
average, or skip the step when the gradients are not finite.

The loop (train/loop.py) owns where the window comes from and what a skip means for the run; this owns the
arithmetic of one step. Under torchrun `net` is the DistributedDataParallel wrapper, so backward averages
the gradients over the ranks and the clipped norm (and so the skip) is the same on every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charnn.model.network import CharRNN, State, detach_state
from charnn.training.ema import WeightAverage


class Update:
    """The optimizer and the weight average of one session, the step that uses them, and the tally of what the
    steps since the last validation pass gave: their training loss and the non-finite steps in a row."""

    def __init__(self, model: CharRNN, net: nn.Module, *, lr: float, weight_decay: float, clip: float, amp: bool,
                 ema: float):
        self.model, self.net, self.clip, self.amp = model, net, clip, amp
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.average = WeightAverage(model, ema) if ema else None
        device = next(model.parameters()).device
        self.loss_sum, self.loss_count = torch.zeros((), device=device), 0  # summed on the device: no sync per step
        self.bad_in_row = 0

    def train_loss(self) -> tuple[float, int]:
        """The summed training loss and the count of steps it sums since the last call (which starts a new tally)."""
        total, count = float(self.loss_sum), self.loss_count
        self.loss_sum, self.loss_count = torch.zeros((), device=self.loss_sum.device), 0
        return total, count

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def __call__(self, x: Tensor, y: Tensor, state: State, voices: Tensor | None,
                 lr: float) -> tuple[Tensor, State | None]:
        """One step at rate `lr` on the window `x` → `y` ((b, T) each, on the device) from `state`; the loss (a 0-d
        tensor) and the state after the window, or None where the step was skipped (weights unchanged)."""
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        device_type = x.device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.amp):
            # (b, T, V); a model without voices is called as any module of (ids, state) is
            logits, new_state = self.net(x, state) if voices is None else self.net(x, state, voices)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        # A non-finite loss always gives non-finite gradients, and the all-reduced norm is the same on every rank.
        if not torch.isfinite(grad_norm):
            self.bad_in_row += 1
            return loss, None
        self.optimizer.step()
        if self.average is not None:
            self.average.update()
        self.loss_sum += loss.detach()
        self.loss_count += 1
        self.bad_in_row = 0
        return loss, detach_state(new_state)
