"""Where training is in its text: the stream cursor of the truncated-BPTT loop.

Each step reads the next window of every stream (text/streams.py's `Streams`: this rank's block of the B streams)
and carries the streams' hidden state from the window before (this rank's rows, (L, b, ·) per part). At the
end of a pass over the training split the epoch turns: the window index restarts, the state resets to
zeros, and (with `--epoch-offset`) the streams start at another place in the text, the same on every rank
and after a resume. A voiced run's window also gives each character's voice, except in the streams drawn
to learn "no voice" at this step (voices.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from charnn.model.network import CharRNN, State
from charnn.model.voices import NO_VOICE, unvoiced_rows
from charnn.text.streams import Streams
from charnn.training.schedule import Progress


class Cursor:
    """The streams, the window each step reads from them, and the hidden state carried between windows."""

    def __init__(self, model: CharRNN, train_ids: np.ndarray, labels: np.ndarray | None, *, batch_size: int,
                 seq_len: int, block: slice, seed: int, epoch_offset: bool, no_voice_share: float,
                 device: torch.device):
        self.model, self.device, self.seed = model, device, seed
        self.moves_offset, self.no_voice_share, self.batch_size = epoch_offset, no_voice_share, batch_size
        self.streams = Streams(train_ids, batch_size, seq_len, block, labels)
        self.state: State = model.init_state(self.streams.rows, device)
        self.offset = 0  # where the current epoch's layout starts

    @property
    def n_windows(self) -> int:
        return self.streams.n_windows

    def start(self, p: Progress) -> None:
        """Place the cursor at `p`'s epoch (a new run's first, or a resumed run's)."""
        self.offset = self._epoch_offset(p.epoch)

    def restore(self, saved: tuple[Tensor, ...]) -> None:
        """The hidden state a checkpoint saved in the single-process layout (L, B, ·): this rank's rows of it."""
        self.state = tuple(s[:, self.streams.block].to(self.device) for s in saved)

    def next(self, p: Progress) -> tuple[Tensor, Tensor, Tensor | None]:
        """The inputs and targets (b, T) of `p`'s window on the device, and its voices (None without voices);
        turns the epoch first when the last pass is over (`p`'s epoch and window move, the state resets)."""
        if p.window >= self.n_windows:
            p.epoch, p.window = p.epoch + 1, 0
            self.state = self.model.init_state(self.streams.rows, self.device)
            self.offset = self._epoch_offset(p.epoch)
        x, y = self.streams.window(p.window, offset=self.offset)
        if self.device.type == "cuda":  # pinned pages let the copy run asynchronously
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), self._voices(p)

    def _voices(self, p: Progress) -> Tensor | None:
        """A voiced run's labels for the window (b, T): each character's voice, except in the streams drawn to learn
        "no voice" this step (`voices.unvoiced_rows`)."""
        if self.streams.labels is None:
            return None
        voices = self.streams.voices(p.window, offset=self.offset)
        unvoiced = unvoiced_rows(self.seed, p.step, self.batch_size, self.no_voice_share)
        voices[torch.from_numpy(unvoiced[self.streams.block])] = NO_VOICE
        return voices.to(self.device, non_blocking=True)

    def _epoch_offset(self, epoch: int) -> int:
        return self.streams.epoch_offset(self.seed, epoch) if self.moves_offset else 0
