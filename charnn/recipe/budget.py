"""The wall-clock budget of a `--time T` command: T covers the whole process, not only the training loop.

The clock starts when the process did (Linux: from /proc, so interpreter start-up and imports
count; elsewhere when this module was imported). Start-up, corpus preparation and the probe are
taken off T: the training loop sets its budget from the deadline as it starts and keeps back the
time of the final validation pass and save (train/loop.py), so the command ends close to T. `Budget.record()` is what config.json
stores under "time": how the seconds were spent.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from charnn.errors import UsageError

_IMPORTED = time.perf_counter()
# A budget that leaves less than this share of itself to the training steps, once start-up, the probe and
# the final validation pass are taken off, is refused: the run would be a handful of steps nobody wants.
MIN_TRAINING_SHARE = 0.1


def process_age() -> float:
    """Seconds since this process started (Linux /proc), or since charnn was imported elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
        if 0 <= age < 365 * 86400:
            return age
    except (OSError, ValueError, IndexError):
        pass
    return time.perf_counter() - _IMPORTED


@dataclass
class Budget:
    """T seconds of wall clock for the whole command, from `started` (a `time.perf_counter()` reading)."""

    total: float
    started: float = field(default_factory=lambda: time.perf_counter() - process_age())
    phases: dict[str, float] = field(default_factory=dict)
    _mark: float | None = None

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.total - self.spent()

    def mark(self, phase: str) -> None:
        """Book the time since the previous mark (or the start) under `phase`."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - (self._mark if self._mark is not None else self.started)
        self._mark = now

    def check(self, option: str = "--time", reserve: float = 0.0) -> None:
        """Refuse a budget that leaves almost nothing for training once `reserve` (the final pass) is kept back.
        The loop itself takes its budget from the deadline (`started + total`) as it starts (train/loop.py)."""
        left = self.left()
        if left - reserve < MIN_TRAINING_SHARE * self.total:
            spent = self.spent()
            smallest = _round_up(2 * (spent + reserve))
            raise UsageError(f"{option} {_shown(self.total)} is too short here: starting up and measuring this machine "
                             f"took {spent:.0f} s{f' and a validation pass takes ~{reserve:.0f} s' if reserve >= 1 else ''}"
                             f" — give at least {option} {_shown(smallest)}")

    @property
    def deadline(self) -> float:
        """When the command must end, as a `time.perf_counter()` reading."""
        return self.started + self.total

    def record(self) -> dict[str, Any]:
        return {"budget_s": round(self.total, 3), "total_s": round(self.spent(), 3),
                **{f"{name}_s": round(seconds, 3) for name, seconds in self.phases.items()}}


def _round_up(seconds: float) -> float:
    for step in (5, 10, 30, 60):
        if seconds <= 12 * step:
            return float(-(-seconds // step) * step)
    return float(-(-seconds // 60) * 60)


def _shown(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)", re.IGNORECASE)


def parse_duration(text: str | None) -> float | None:
    """'90s', '10m', '1h30m', '1.5h' or plain seconds -> seconds."""
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or _DURATION.sub("", text).strip():
            raise UsageError(f"'{text}' is not a duration — use e.g. 90s, 10m, 1h30m") from None
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u.lower()] for n, u in parts)
    if not seconds > 0:
        raise UsageError(f"'{text}' must be a positive duration — use e.g. 90s, 10m, 1h30m")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as the duration options read them: '3m12s', '1h05m', '42s'."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
