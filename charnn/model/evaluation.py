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

from charnn.distributed import ProcessGroup
from charnn.errors import UsageError
from charnn.model.network import CharRNN
from charnn.text.streams import Streams

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
             between: Callable[[], None] | None = None, voice: torch.Tensor | None = None) -> float:
    """Mean loss in nats per character over all of `ids`, state carried window to window.

    Under torchrun each rank scores its block of the same stream layout and the sums are
    added up, so every rank returns the number a single process would. `between` is called
    after each window (the server's worker steps its batches there, `Worker.share`). A voiced model
    writes in `voice` (E,) (`CharRNN.voice_vector`; default no voice).
    """
    total, count = _sums(model, ids, None, seq_len, device, group, stream_count, between, voice)
    return float(total.sum() / count.sum())


@torch.inference_mode()
def evaluate_voices(model: CharRNN, ids: np.ndarray, labels: np.ndarray, seq_len: int, device: torch.device,
                    group: ProcessGroup | None = None) -> tuple[float, list[float | None]]:
    """A voiced text scored with each character's own voice (`labels` (N,), as training reads it): the mean
    loss over all of it, and each voice's (table row 0, no voice, first; None for a voice with no text)."""
    total, count = _sums(model, ids, labels, seq_len, device, group)
    return float(total.sum() / count.sum()), [float(t / n) if n else None for t, n in zip(total, count, strict=True)]


def _sums(model: CharRNN, ids: np.ndarray, labels: np.ndarray | None, seq_len: int, device: torch.device,
          group: ProcessGroup | None = None, stream_count: int = EVAL_STREAMS,
          between: Callable[[], None] | None = None, voice: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The summed loss and the count of scored characters per voice label ((K+1,) each; (1,) without labels),
    added over the ranks."""
    if len(ids) < 2:
        raise UsageError("the evaluation text needs at least 2 characters — give more text")
    group = group or ProcessGroup.solo(device)
    # Fewer streams for short texts: each spans EVAL_STREAM_MIN_CHARS and at least one window.
    n_streams = max(1, min(stream_count, (len(ids) - 1) // max(seq_len, EVAL_STREAM_MIN_CHARS)))
    streams = Streams(ids, n_streams, seq_len, group.block(n_streams), labels)
    slots = len(model.config.voices) + 1 if labels is not None else 1
    # Added on the host in float64: every device has it there, MPS has none.
    total, count = np.zeros(slots), np.zeros(slots)
    was_training = model.training
    model.eval()
    if streams.rows:  # a rank can own no stream of a short validation split
        state = model.init_state(streams.rows, device, voice)
        for k, length in streams.spans(partial=True):
            x, y = streams.window(k, length)
            marks = streams.voices(k, length).to(device) if labels is not None else None
            x = x.to(device)
            logits, state = model(x, state) if marks is None else model(x, state, marks)  # (b, t, V)
            if marks is None:
                total[0] += float(F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), reduction="sum"))
                count[0] += y.numel()
            else:
                losses = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), reduction="none")  # (b*t,)
                flat = marks.flatten()
                # Per label on the device with index_add (every backend has it; bincount's weights are not
                # everywhere), then on the host in float64.
                sums = torch.zeros(2, slots, device=losses.device, dtype=losses.dtype)
                sums[0].index_add_(0, flat, losses)
                sums[1].index_add_(0, flat, torch.ones_like(losses))
                host = sums.cpu().numpy()  # float32 here; numpy adds it into the float64 totals
                total += host[0]
                count += host[1]
            if between is not None:
                between()
    model.train(was_training)
    summed = group.sum([*total, *count])
    return np.array(summed[:slots]), np.array(summed[slots:])
