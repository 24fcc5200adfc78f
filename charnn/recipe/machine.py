"""What charnn runs on, said plainly: `charnn doctor`, `charnn.doctor()`, and the device line every training
run starts with.

"Is my GPU used?" is the commonest silent question a notebook user has: the answer is the device `auto` picks
and why, its name and memory, the torch build (CUDA, ROCm, MPS or CPU only), whether bf16 is fast there, the
threads, a few seconds' speed reading of the recipe's probe model, and where runs and caches live.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from charnn import capability
from charnn.device import cores, resolve_device
from charnn.recipe.probe import PROBE, measure_speeds


@dataclass(frozen=True)
class Machine:
    device: str  # what `--device auto` resolves to: cpu, cuda:0, mps
    why: str  # why that device
    name: str  # the device in words: the GPU's or the CPU's model
    memory_bytes: int | None  # what a new allocation can count on now (None: unknown)
    torch_version: str
    build: str  # "CUDA 12.8", "ROCm 6.2", "MPS", "CPU only"
    bf16: bool  # bf16 autocast can be faster than fp32 here
    fp16: bool  # fp16 tensor cores (a CUDA GPU)
    threads: int
    cores: int
    speed: float | None  # training characters/s of the probe model (None: not measured)
    runs: Path
    cache: Path
    probe: str = ""  # the --time recipe's kept readings of this machine (recipe/readings.py), where known

    def lines(self) -> list[str]:
        """The report, one fact a line."""
        memory = f"{self.memory_bytes / 2**30:.1f} GB free" if self.memory_bytes else "memory unknown"
        speed = f"{self.speed:,.0f} training characters/s (a {PROBE[0]}x{PROBE[1]} GRU, batch 64)" if self.speed \
            else "not measured"
        return [f"device:   {self.device} — {self.name} ({memory})", f"why:      {self.why}",
                f"torch:    {self.torch_version}, {self.build} build",
                f"bf16:     {'fast here' if self.bf16 else 'emulated or absent: training stays fp32'}"
                + (", fp16 tensor cores" if self.fp16 else ""),
                f"threads:  {self.threads} of {self.cores} cores", f"speed:    {speed}",
                f"runs:     {self.runs}", f"cache:    {self.cache}"] + ([f"probe:    {self.probe}"] if self.probe else [])

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__  # a report: shown as itself wherever it is echoed (a REPL, a notebook's plain text)

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k.strip(':'))}</th><td style='text-align:left'>"
                       f"{html.escape(v.strip())}</td></tr>" for k, _, v in (line.partition(" ") for line in self.lines()))
        return f"<table>{rows}</table>"


def build() -> str:
    """The torch build in words: which accelerator it was compiled for."""
    if torch.version.cuda:
        return f"CUDA {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_built() and platform.system() == "Darwin":
        return "MPS"
    return "CPU only"


def why_auto(device: torch.device) -> str:
    if device.type == "cuda":
        return f"auto picks CUDA first: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)"
    if device.type == "mps":
        return "auto picks MPS (Apple's GPU) when there is no CUDA GPU"
    if torch.version.cuda:
        return "no CUDA GPU visible to PyTorch (its CUDA build found no driver or device): training runs on the CPU"
    return f"this torch is a {build()} build: training runs on the CPU (install a CUDA build of torch to use a GPU)"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU ({platform.machine()})"
    return cpu_name()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def device_line(device: torch.device) -> str:
    """The first line of a training run: the device in words, and bf16 where it decides the precision."""
    cap = capability.of(device)
    if device.type == "cpu":
        extra = f"{torch.get_num_threads()} threads on {cores()} cores" + (", bf16 native" if cap.bf16_native else "")
        gpu = "" if torch.version.cuda is None else "; no CUDA GPU visible"
        return f"device: cpu — {cpu_name()} ({extra}{gpu})"
    memory = cap.memory_bytes()
    free = f", {memory / 2**30:.1f} GB free" if memory else ""
    return f"device: {device} — {device_name(device)}{free}"


def examine(runs: Path, cache: Path, device: str = "auto", speed: bool = True) -> Machine:
    """The report for `device` (`auto`: what a run would use); `speed` takes a few seconds of timed steps."""
    dev = resolve_device(device)
    cap = capability.of(dev)
    fp16 = dev.type == "cuda" and torch.cuda.get_device_capability(dev)[0] >= 7
    reading = measure_speeds(dev, 96)[(64, False)] if speed else None
    why = why_auto(dev) if device == "auto" else f"--device {device}"
    return Machine(str(dev) if dev.type != "cuda" else f"cuda:{dev.index or 0}", why, device_name(dev),
                   cap.memory_bytes(), torch.__version__, build(), cap.bf16_native, fp16, torch.get_num_threads(),
                   cores(), reading, runs.resolve(), cache.resolve())
