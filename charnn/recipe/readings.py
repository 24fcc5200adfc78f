"""The probe's readings, kept per machine: a budgeted run on a machine that has probed before spends its budget
training, and the same machine picks the same recipe.

A full probe times the reference models for several seconds (about 8 s of a one-minute run on 2 cores), and two
probes minutes apart can read differently enough to choose different models. So each full reading is kept in the
user's cache folder (`$CHARNN_CACHE`, else `$XDG_CACHE_HOME/charnn`, else `~/.cache/charnn`), under a key naming
the machine (the device and its model, the CPU's family and vector extensions, torch's version, the threads, the
processes) and what was timed (cell, vocabulary, window, model size, batches, precisions). A later run with the
same key times a few steps of the reference model (`quick_check`): within `AGREEMENT` of the kept speed it reuses
the whole reading; outside it, or on a reading older than `MAX_AGE_DAYS`, it probes afresh and keeps the new one.
`--reprobe` always probes afresh. An unreadable cache file is one warning and a fresh probe, then rewritten.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from charnn.recipe.machine import device_name
from charnn.recipe.probe import Setting

CACHE_ENV = "CHARNN_CACHE"
FILE = "probe-readings.json"
# A quick check reading more than 20% off the kept speed re-probes. Readings of one machine spread by about
# 10-15% a session (RECIPES.md: 2x256 at 25,000-29,000 chars/s on 2 Zen 4 cores); a Zen 3 runs at half a Zen 4's
# speed and another process taking a core at about half: both far outside.
AGREEMENT = 0.20
MAX_AGE_DAYS = 30
KEPT = 64  # readings kept per file: the most recently used


@dataclass(frozen=True)
class Reading:
    """One full probe: what `recipe.plan` decides from."""

    speeds: dict[Setting, float]  # (batch, bf16 autocast) -> training characters/s of the probe model
    eval_speed: float  # characters/s scoring validation text
    scale: float | None  # SCALE_PROBE's speed over PROBE's (None: not timed)
    again: float | None  # the second reading at the largest batch (None: not taken)
    taken: float  # time.time() when it was measured
    # Speeds timed at a candidate's own size for a text passed over many times (sizing._by_passes), kept with the
    # reading they were taken beside: (layers, hidden, embed, batch, bf16 autocast) -> training characters/s.
    sized: dict[tuple[int, int, int, int, bool], float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["speeds"] = [[batch, amp, speed] for (batch, amp), speed in self.speeds.items()]
        record["sized"] = [[*trial, speed] for trial, speed in self.sized.items()]
        return record

    @staticmethod
    def from_json(record: dict[str, Any]) -> Reading:
        """From the cache file; a KeyError, TypeError or ValueError where an entry is not one this wrote."""
        speeds = {(int(b), bool(a)): float(v) for b, a, v in record["speeds"]}
        sized = {(int(n), int(h), int(e), int(b), bool(a)): float(v) for n, h, e, b, a, v in record.get("sized", [])}
        return Reading(speeds, float(record["eval_speed"]), _maybe(record["scale"]), _maybe(record["again"]),
                       float(record["taken"]), sized)


def _maybe(value: Any) -> float | None:
    return None if value is None else float(value)


def folder() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "charnn"


def machine(device: torch.device, processes: int) -> str:
    """The machine as the readings know it: what would make a kept reading wrong if it changed."""
    parts = [device_name(device), f"torch {torch.__version__}", f"{torch.get_num_threads()} threads",
             f"{processes} processes"]
    if device.type == "cpu":
        parts.insert(1, _cpu_signature())
    return " | ".join(parts)


def _cpu_signature() -> str:
    """The CPU's family, model and the vector extensions charnn's speed depends on: one model-name string covers
    several generations on a cloud machine ("AMD EPYC" is a Zen 3 or a Zen 4)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break  # the first processor is the machine's
    except OSError:
        return platform.machine()
    flags = set(fields.get("flags", "").split())
    vector = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')} {'+'.join(vector) or 'no avx2'}"


def key(device: torch.device, processes: int, shape: dict[str, object]) -> str:
    """The key of a reading: the machine, and what the probe timed (`shape`: cell, vocabulary, window, ...)."""
    return machine(device, processes) + " || " + json.dumps(shape, sort_keys=True)


class Store:
    """The cache file: read once, written whole (atomically) after a fresh probe."""

    def __init__(self, path: Path | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.path = path or folder() / FILE
        self.entries: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
            self.entries = {k: v for k, v in loaded.items() if isinstance(v, dict)}
        except (OSError, ValueError, UnicodeDecodeError) as e:
            if warn:
                warn(f"warning: the probe's kept readings in {self.path} are unreadable ({e}); probing afresh")

    def get(self, key: str) -> Reading | None:
        record = self.entries.get(key)
        try:
            reading = None if record is None else Reading.from_json(record)
        except (KeyError, TypeError, ValueError):
            return None  # an entry from another charnn, or hand-edited: probe afresh
        if reading is None or time.time() - reading.taken > MAX_AGE_DAYS * 86400:
            return None
        return reading

    def put(self, key: str, reading: Reading) -> None:
        """Keep `reading` under `key` (the newest `KEPT` entries); a cache folder that cannot be written only
        means the next run probes again."""
        self.entries.pop(key, None)
        self.entries[key] = reading.to_json()
        kept = dict(list(self.entries.items())[-KEPT:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".probe.", suffix=".part")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(kept, f, indent=1)
            os.replace(tmp, self.path)
        except OSError:
            pass


def agrees(kept: float, checked: float) -> bool:
    """Whether a quick check's speed is within `AGREEMENT` of the kept one, either way."""
    return (1 - AGREEMENT) * kept <= checked <= kept / (1 - AGREEMENT)


def describe() -> str:
    """The kept readings in a line, for `charnn doctor`."""
    store = Store()
    kept = len(store.entries)
    return (f"{kept} reading{'s' if kept != 1 else ''} of the --time recipe kept in {store.path} (a budgeted run reuses "
            "its machine's after a quick check; --reprobe measures again)")
