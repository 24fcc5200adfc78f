"""The process group under torchrun: who am I, do I write, and the few collectives training needs.

charnn never launches processes itself: `torchrun` (PyTorch's launcher) starts N copies of
`charnn train …` and tells each one its place through the environment (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `GROUP_RANK`). `Launch.from_env()` reads that before anything else happens, so
bad options and bad corpora fail before a process group exists; `join()` then opens the group
(gloo on CPU, nccl on CUDA) and closes it on every way out.

Without torchrun, `ProcessGroup.solo()` stands in: world size 1, rank 0, and every collective
is the identity, so a single-process run pays nothing and behaves exactly as before.

Collectives used per training step: DDP's gradient all-reduce and `agree` (one 2-element
all-reduce: the stop request and rank 0's clock). Per evaluation: `sum` of loss totals. Per
save: `gather_rows` of the hidden state and `gather_objects` of the RNG states.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from charnn import capability
from charnn.errors import UsageError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun job (all zeros and world 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    node_rank: int = 0
    under_torchrun: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Launch:
        env = os.environ if environ is None else environ
        if not all(name in env for name in ENV):
            return cls()
        try:
            rank, world, local = (int(env[name]) for name in ENV)
            node = int(env.get("GROUP_RANK", "0"))
        except ValueError:
            shown = ", ".join(f"{n}={env[n]!r}" for n in ENV)
            raise UsageError(f"torchrun's environment is malformed ({shown}) — launch with torchrun, "
                             "or unset these variables for a single process") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise UsageError(f"torchrun's environment is inconsistent (RANK={rank}, WORLD_SIZE={world}) — "
                             "launch with torchrun, or unset these variables for a single process")
        return cls(rank, world, local, node, under_torchrun=True)

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone creates the run directory, writes files and prints progress."""
        return self.rank == 0

    @property
    def reports_errors(self) -> bool:
        """One process per machine prints a user error: the others hit the same one (same options, same files)."""
        return self.local_rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Each process of a CUDA job gets its own GPU: cuda:LOCAL_RANK."""
        if self.under_torchrun and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch(self, batch_size: int) -> None:
        """The global batch of B streams is cut into equal contiguous blocks, one per rank."""
        w = self.world_size
        if batch_size % w:
            lower, upper = batch_size // w * w, (batch_size // w + 1) * w
            near = f"{lower} or {upper}" if lower else f"{upper}"
            raise UsageError(f"--batch-size {batch_size} does not divide among {w} processes — use {near} "
                             f"(a multiple of {w}; each process trains batch-size/{w} streams)")


class ProcessGroup:
    """Who am I, do I write, and the collectives; the identity for a single process."""

    def __init__(self, launch: Launch, device: torch.device, backend: str | None):
        self.launch = launch
        self.device = device
        self.backend = backend  # None: no process group (single process)

    @classmethod
    def solo(cls, device: torch.device | None = None) -> ProcessGroup:
        return cls(Launch(), device or torch.device("cpu"), None)

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_writer(self) -> bool:
        return self.launch.is_writer

    @property
    def active(self) -> bool:
        return self.backend is not None

    def block(self, n: int) -> slice:
        """This rank's contiguous share of n rows: [r*n/W, (r+1)*n/W), equal when W divides n."""
        w, r = self.world_size, self.rank
        return slice(r * n // w, (r + 1) * n // w)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around `model` (gradients averaged across ranks in backward)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, stop: bool, elapsed: float) -> tuple[bool, float]:
        """The step's collective decision: stop if any rank asks to; the clock is rank 0's.

        One 2-element all-reduce (MAX): every rank leaves with the same answer, so all of
        them stop at the same step and compute the same time-based learning rate.
        """
        if not self.active:
            return stop, elapsed
        import torch.distributed as dist

        t = torch.tensor([float(stop), elapsed if self.is_writer else 0.0], dtype=capability.of(self.device).exact_dtype,
                         device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0].item()), float(t[1].item())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks, in float64 (loss totals and counts)."""
        if not self.active:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=capability.of(self.device).exact_dtype, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def gather_rows(self, t: Tensor) -> Tensor:
        """(L, b, H) blocks from every rank -> (L, B, H) in rank order, on every rank (on the CPU)."""
        if not self.active:
            return t.detach().cpu()
        import torch.distributed as dist

        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.detach().contiguous())
        return torch.cat(parts, dim=1).cpu()

    def gather_objects(self, obj: Any) -> list[Any]:
        """One picklable value from every rank, in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value, on every rank (the recipe rank 0 measured)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def weights_checksum(self, model: nn.Module) -> str:
        """A digest of the parameters, checked equal on every rank (DDP keeps replicas bit-identical).

        Raises if the replicas drifted apart, which would mean a bug, not a user error.
        """
        digest = hashlib.sha256()
        for name, p in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        mine = digest.hexdigest()[:16]
        every = self.gather_objects(mine)
        if len(set(every)) != 1:
            raise RuntimeError(f"replicas diverged: weight checksums per rank {every}")
        return mine


@contextmanager
def join(launch: Launch, device: torch.device) -> Iterator[ProcessGroup]:
    """Open the process group for `launch` (nothing without torchrun); destroy it on every way out."""
    if not launch.under_torchrun:
        yield ProcessGroup(launch, device, None)
        return
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device)
    else:
        dist.init_process_group(backend)
    try:
        yield ProcessGroup(launch, device, backend)
    except BaseException:
        gc.collect()
        dist.destroy_process_group()  # on an error, do not wait for ranks that may never arrive
        raise
    # DistributedDataParallel sits in a reference cycle, so the wrapper (and gloo's work inside
    # its reducer) outlives train() until the next collection. Left to interpreter shutdown, that
    # destruction aborts the process (SIGABRT: "terminate called without an active exception")
    # after training finished; collect it here while everything is alive.
    gc.collect()
    # A rank that tears the group down while another is still in its last collective makes
    # that one abort too; meet first.
    dist.barrier()
    dist.destroy_process_group()


def record_error(message: str) -> None:
    """Hand a user error to torchrun's failure report (its documented per-worker error file).

    Without it the launcher's summary says `error_file: <N/A>`; with it, it quotes our one line.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": message, "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass  # the report just shows <N/A>; the line was printed anyway


def restore_rng(resume: dict[str, Any], rank: int, seed: int, device: torch.device) -> None:
    """This rank's RNG as saved; a rank the saved run did not have starts a stream of its own.

    Resuming on another number of processes is therefore correct but not bit-exact: the
    dropout masks of the re-sharded streams differ from the ones the old layout would draw.
    """
    rngs = resume.get("rng_ranks") or [resume["rng"]]
    cuda_rngs = resume.get("cuda_rng_ranks") or [resume.get("cuda_rng")]
    if rank < len(rngs):
        torch.set_rng_state(rngs[rank])
    else:
        torch.manual_seed(seed + rank + 1_000_003 * int(resume["progress"]["step"]))
    if device.type == "cuda" and rank < len(cuda_rngs) and cuda_rngs[rank] is not None:
        torch.cuda.set_rng_state(cuda_rngs[rank], device)
