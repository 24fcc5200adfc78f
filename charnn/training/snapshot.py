"""latest.pt's training state: what a session hands over at each save and takes back on `--resume`.

Collective under torchrun (every rank's rows of the hidden state and its RNG), written in the single-process
layout, so any number of processes resumes it; the file itself is written by `run/checkpoint.py`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from charnn.distributed import ProcessGroup, restore_rng
from charnn.training.ema import WeightAverage
from charnn.training.schedule import Progress


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, average: WeightAverage | None, progress: Progress,
             state: tuple[Tensor, ...], world: ProcessGroup) -> dict[str, Any]:
    """`latest.pt`'s content: weights, optimizer, weight average, progress, the streams' hidden state and every
    rank's RNG. Collective under torchrun (every rank hands over its rows of `state`, (L, b, ·) per part, and its
    RNG), complete on the writer, in the single-process layout (L, B, ·), so any number of processes resumes it."""
    device = next(model.parameters()).device
    full_state = tuple(world.gather_rows(s) for s in state)
    rngs = world.gather_objects(torch.get_rng_state())
    cuda_rngs = world.gather_objects(torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": progress.step,
        "progress": vars(progress).copy(), "state": full_state, "rng": rngs[0], "cuda_rng": cuda_rngs[0],
        "world_size": world.world_size, "rng_ranks": rngs, "cuda_rng_ranks": cuda_rngs,
        "ema": average.state() if average is not None else None,
    }


def restore(payload: dict[str, Any], optimizer: torch.optim.Optimizer, average: WeightAverage | None,
            world: ProcessGroup, seed: int, device: torch.device) -> tuple[Progress, tuple[Tensor, ...]]:
    """What `snapshot` saved, set back: the optimizer, the average and this rank's RNG; returns the progress and
    the hidden state in the single-process layout (the cursor takes this rank's rows). The weights are the
    caller's (they are in the model before the optimizer is built)."""
    optimizer.load_state_dict(payload["optimizer"])
    if average is not None:
        average.load(payload.get("ema"))
    restore_rng(payload, world.rank, seed, device)
    return Progress(**payload["progress"]), tuple(payload["state"])
