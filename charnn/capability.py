"""What a device can do, in one place: every accumulator, sampler, probe and gradient asks here.

    device   float64   bf16 at speed                          RNN backward in eval()   memory
    cpu      yes       with AVX512-BF16 or AMX instructions   yes                      RAM available
    cuda     yes       compute capability 8+ (Ampere on)      not under cuDNN          free device memory
    mps      no        no (support varies by macOS)           yes                      recommended working set

    A CPU without AVX-512 (Zen 3) also has no oneDNN LSTM kernel in bf16: asked for one under autocast,
    oneDNN raises "could not create a primitive descriptor".

The rules callers follow:

- **Exact sums and draws** use `exact_dtype`: float64 where the device has it, float32 on MPS (`draw.py`
  keeps its no-NaN guarantee in either: the temperature is capped at `max_temperature`). Loss totals
  are added on the host in Python floats (`evaluation.py`), so they are the same on every device.
- **Gradients through a model in `eval()`** (inspect) run inside `eval_backward()`: cuDNN refuses an
  RNN backward outside training mode, so there the native kernel takes over for that computation.
- **A fused recurrent layer under bf16 autocast** runs inside `fused_rnn()`: where oneDNN has no bf16
  RNN kernel it is switched off for that call and PyTorch's own kernel runs (bf16 products, float32 out).
- **Memory**: `memory_bytes` is what a new allocation can count on (`footprint.py` asks it before a model is built).

`emulating` makes every device report another device's rules (MPS's float64, cuDNN's backward): the
`devices` tests run the whole product on the CPU under it, with a dispatch mode that refuses what the
real device would refuse, so a path that assumes the CPU's rules fails on any machine.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Capability:
    kind: str  # "cpu", "cuda" or "mps": the device's type
    float64: bool  # float64 tensors exist on it (not on MPS)
    bf16_native: bool  # bf16 autocast can run faster than fp32 here (native instructions or tensor cores)
    cudnn_rnn: bool  # its RNN kernels refuse a backward pass unless the forward ran in training mode
    index: int | None = None  # which GPU of its kind
    # A CPU whose oneDNN builds an LSTM kernel in bf16; None: tried the first time bf16 autocast needs to know
    # (`_onednn_bf16_rnn`), so no other command pays for the try.
    onednn_bf16_rnn: bool | None = None

    def memory_bytes(self) -> int | None:
        """What a new allocation can count on now (read each time: it changes); None: unknown."""
        if self.kind == "cuda":
            return int(torch.cuda.mem_get_info(self.index or 0)[0]) if torch.cuda.is_available() else None
        if self.kind == "mps":
            limit = getattr(getattr(torch, "mps", None), "recommended_max_memory", None)
            return int(limit()) if callable(limit) else None
        return host_memory()

    @property
    def exact_dtype(self) -> torch.dtype:
        """The finest float the device computes in: sampling races run in it."""
        return torch.float64 if self.float64 else torch.float32

    @property
    def max_temperature(self) -> float:
        """The largest temperature a draw divides by: finite in `exact_dtype`, and -inf / T still -inf."""
        return 1e300 if self.float64 else 1e30

    def eval_backward(self) -> AbstractContextManager[object]:
        """Where gradients flow through a model in eval(): cuDNN's RNN refuses that, so it is switched off there
        (PyTorch's own CUDA kernel takes over for that computation)."""
        return torch.backends.cudnn.flags(enabled=False) if self.cudnn_rnn else nullcontext()

    def fused_rnn(self) -> AbstractContextManager[object]:
        """Where a fused nn.RNN/LSTM/GRU runs: under CPU bf16 autocast without oneDNN's bf16 RNN kernel,
        oneDNN is off for the call (`torch.backends.mkldnn.flags` would also set TF32 and warn about Intel GPUs)."""
        if self.kind != "cpu" or not torch.is_autocast_enabled("cpu"):
            return nullcontext()
        able = _onednn_bf16_rnn() if self.onednn_bf16_rnn is None else self.onednn_bf16_rnn
        return nullcontext() if able else _onednn_off()


_EMULATED: list[dict[str, object]] = []  # rule overrides in force (`emulating`), innermost last


def of(device: torch.device | str) -> Capability:
    """The rules of `device` (a torch.device or its name), as `emulating` may have changed them."""
    device = torch.device(device)
    found = _measured(device.type, device.index)
    for override in _EMULATED:
        found = replace(found, **override)  # type: ignore[arg-type]
    return found


@functools.cache
def _measured(kind: str, index: int | None) -> Capability:
    """Asked once per device: samplers ask per block of steps."""
    if kind == "cuda":
        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return Capability("cuda", True, bf16, bool(torch.backends.cudnn.is_available()), index)
    if kind == "mps":
        return Capability("mps", False, False, False, index)
    return Capability(kind, True, _cpu_bf16(), False, index)


@functools.cache
def _onednn_bf16_rnn() -> bool:
    """Whether oneDNN builds an LSTM kernel in bf16 here: tried once on a (1, 1, 1) input (about a millisecond).
    Only the LSTM asks oneDNN for a bf16 kernel under autocast; without AVX-512 it has none and raises. The
    try's weights come from a forked random stream: asking must not move the run's own (resume is bit-exact)."""
    with torch.random.fork_rng(devices=[]):
        lstm = torch.nn.LSTM(1, 1)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 1, 1))
    except RuntimeError:
        return False
    return True


@contextmanager
def _onednn_off() -> Iterator[None]:
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a ContextProp: assigning sets the flag
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was  # type: ignore[assignment]


def _cpu_bf16() -> bool:
    """AVX512-BF16 or AMX, as PyTorch reports them. Elsewhere PyTorch emulates bf16: on a 2-core Zen 3
    (AVX2 only) probing it alone took ~80 s, and training in it runs at a fraction of fp32's speed."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def host_memory() -> int | None:
    """Bytes of RAM available to a new allocation now (Linux's MemAvailable; elsewhere the physical total)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


EMULATIONS: dict[str, dict[str, object]] = {
    "mps": {"float64": False},  # Apple's Metal has no float64
    "cudnn": {"cudnn_rnn": True},  # cuDNN: an RNN backward needs the forward in training mode
    "avx2": {"onednn_bf16_rnn": False},  # a CPU without AVX-512: no oneDNN LSTM kernel in bf16
}


@contextmanager
def emulating(*rules: str) -> Iterator[None]:
    """Every device reports these rules (keys of `EMULATIONS`) while the block runs."""
    pushed = [EMULATIONS[name] for name in rules]
    _EMULATED.extend(pushed)
    try:
        yield
    finally:
        del _EMULATED[len(_EMULATED) - len(pushed):]
