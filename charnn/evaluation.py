"""Evaluation: the mean loss of a model over a whole text, scored the same way whatever trained it.

The text is cut into `EVAL_STREAMS` contiguous streams scored side by side, each starting from a
zero state and carrying it window to window. Training scores its validation split this way,
`charnn eval` and `Model.score` score any text this way, and `benchmarks/quality.py` re-scores
the best checkpoint this way, so their numbers compare.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from charnn.data import Streams
from charnn.distributed import ProcessGroup
from charnn.errors import UsageError
from charnn.model import CharRNN

# Streams the evaluation text is cut into, whatever the training batch. Each stream starts from a
# zero state and its first characters score worse, so the count is part of the measurement: with the
# training batch instead, a batch-32 run read 0.0017 lower than the same weights at 64 (RECIPES.md #55).
EVAL_STREAMS = 64
# ...but each at least this long, so on a short text the cold starts stay a small share of the score
# (64 streams of 40 characters would score a learned pattern at 0.25 nats instead of ~0.01).
EVAL_STREAM_MIN_CHARS = 512


@torch.inference_mode()
def evaluate(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device,
             group: ProcessGroup | None = None, stream_count: int = EVAL_STREAMS,
             between: Callable[[], None] | None = None) -> float:
    """Mean loss in nats per character over all of `ids`, state carried window to window.

    Under torchrun each rank scores its block of the same stream layout and the sums are
    added up, so every rank returns the number a single process would. `between` is called
    after each window (the server's worker steps its batches there, `Worker.share`).
    """
    if len(ids) < 2:
        raise UsageError("the evaluation text needs at least 2 characters — give more text")
    group = group or ProcessGroup.solo(device)
    # Fewer streams for short texts: each spans EVAL_STREAM_MIN_CHARS and at least one window.
    n_streams = max(1, min(stream_count, (len(ids) - 1) // max(seq_len, EVAL_STREAM_MIN_CHARS)))
    streams = Streams(ids, n_streams, seq_len, group.block(n_streams))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0  # added on the host in float64 (a Python float): every device has it, MPS has no float64

    if streams.rows:  # a rank can own no stream of a short validation split
        state = model.init_state(streams.rows, device)
        for x, y in streams.windows(partial=True):
            logits, state = model(x.to(device), state)  # (b, t, V)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), reduction="sum"))
            count += y.numel()
            if between is not None:
                between()
    model.train(was_training)
    summed, n = group.sum([total, float(count)])
    return summed / n
