"""The device: which one runs, what `--amp` runs in there, and the CPU memory setting training needs.

`resolve_device` turns `--device` into a `torch.device` (or a one-line error naming the fix);
`amp_dtype` measures what bf16 autocast really produces on it; `bf16_native` says whether it can
be fast there at all (a CPU without bf16 instructions emulates it, several times slower) and
`bf16_speed` measures it in a fraction of a second; `tune_cpu_allocator` keeps glibc from
returning each step's activations to the kernel.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import torch

from charnn import capability
from charnn.errors import DeviceError, UsageError

AMP_DEVICES = ("cuda", "cpu")  # where `--amp` autocasts; MPS's bf16 support varies by macOS version


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        try:
            device = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"--device '{name}' is not a device name — use cuda or cuda:N (N a GPU's index)") from None
        if device.type != "cuda":
            raise DeviceError(f"--device '{name}' is not a device name — use cuda or cuda:N (N a GPU's index)")
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} is not available (no CUDA GPU visible to PyTorch) — use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name} is not available: this machine has {count} CUDA GPU"
                              f"{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1}) — use one of those, or cuda")
        return device
    if name == "mps":
        if not has_mps:
            raise DeviceError("--device mps is not available on this machine — use --device cpu or auto")
        return torch.device("mps")
    raise DeviceError(f"--device '{name}' is unknown — use auto, cpu, cuda or mps")


def tune_for(device: torch.device) -> None:
    """What training sets on `device` before its first step: the CPU allocator's thresholds; on CUDA, TF32 for
    the head's matmul and cuDNN (cuDNN RNNs allow TF32 by default). Benchmarks call it before any baseline."""
    if device.type == "cpu":
        tune_cpu_allocator()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def tune_cpu_allocator() -> bool:
    """Keep glibc from handing large blocks back to the kernel after every step.

    A training step frees and re-allocates tens of MB of activations; with glibc's
    defaults each of those is an mmap/munmap pair plus page faults, which cost
    ~45% of a 2x256 LSTM step on 2 cores (benchmarks/RESULTS.md). Raising the mmap
    and trim thresholds keeps the memory in the heap for reuse. Returns whether
    it applied (glibc on Linux only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl): nothing to tune


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 autocast can run faster than fp32 here (`capability.Capability.bf16_native`)."""
    return capability.of(device).bf16_native


def bf16_speed(hidden: int = 256, batch: int = 64, repeats: int = 3) -> float:
    """bf16 autocast's speed over fp32's on this CPU for the recurrent layers' kind of work: a (batch, hidden) x
    (hidden, 3 hidden) product, median of timed repeats in turns; about 0.1 s. Only says how much slower an
    emulating CPU is (for the `--amp` warning): whether bf16 wins a whole training step is the probe's to say."""
    x = torch.randn(batch * 4, hidden)
    w = torch.randn(hidden, 3 * hidden)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(repeats + 1):
        for amp in (False, True):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                for _ in range(4):
                    torch.tanh(x @ w)
            if i:  # the first turn warms both up
                times[amp].append(time.perf_counter() - start)
    return sorted(times[False])[repeats // 2] / sorted(times[True])[repeats // 2]


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a container's or taskset's limit, not the host's)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def set_threads(threads: int) -> None:
    """`--threads N`: PyTorch's CPU threads (0: PyTorch's default). More than the cores is refused: the extra
    threads only wait for each other (9999 on 2 cores turned a 1-second run into minutes)."""
    if threads < 0:
        raise UsageError(f"--threads {threads} must be 0 or more (0: PyTorch's default)")
    if threads > (n := cores()):
        raise UsageError(f"--threads {threads} is more than this machine's {n} cores — use at most {n} "
                         "(or 0 for PyTorch's default)")
    if threads:
        torch.set_num_threads(threads)
