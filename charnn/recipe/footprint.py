"""A training run's memory footprint, estimated before anything is allocated, and the refusal when it cannot fit.

The parameters are counted on PyTorch's meta device (no memory, no random draws). Training holds six
float32 copies of them (weights, gradients, AdamW's two moments, the weight average, the best weights
kept for `best.pt`) and, over one window, the activations the backward pass reads: per layer and
character about (gates + 4) hidden-sized vectors, and the logits three times (values, softmax, gradient).
The estimate is a floor, not a bound: a model under it may still not fit, a model over it never does.
"""

from __future__ import annotations

import torch

from charnn import capability
from charnn.errors import DeviceError
from charnn.model.cells import CELLS
from charnn.model.network import CharRNN, ModelConfig

COPIES = 6  # float32 copies of the parameters that training holds


def parameters(model: ModelConfig) -> int:
    with torch.device("meta"):
        return CharRNN(model).num_parameters()


def training_bytes(model: ModelConfig, batch_size: int, seq_len: int) -> int:
    """The floor of what training `model` at `batch_size` x `seq_len` needs, in bytes."""
    chars = batch_size * seq_len
    activations = 4 * chars * (model.layers * model.hidden * (CELLS[model.cell].gates + 4) + 3 * model.vocab_size)
    return 4 * COPIES * parameters(model) + activations


def check_fits(model: ModelConfig, batch_size: int, seq_len: int, device: torch.device) -> None:
    """Refuse a model whose training cannot fit `device`'s memory, in one line with both sizes."""
    have = capability.of(device).memory_bytes()
    if have is None:
        return
    need = training_bytes(model, batch_size, seq_len)
    if need > have:
        where = "this machine has" if device.type == "cpu" else f"{device} has"
        raise DeviceError(f"a {model.cell} {model.layers}x{model.hidden} has {_count(parameters(model))} parameters and "
                          f"needs at least {_size(need)} to train (weights, gradients, optimizer, average, "
                          f"activations) but {where} {_size(have)} free — use a smaller --hidden or --layers"
                          + (" or --batch-size" if need > 2 * 4 * COPIES * parameters(model) else ""))


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"
