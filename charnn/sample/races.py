"""The races: the batch's Exp(1) noise, drawn K steps ahead by each request from its own generator.

A request's draws never depend on what else shares the batch (`draw.race_noise` per request), and a
step takes every row's slice at once (`Races.take`). The engine's `Group` is what runs a race here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from charnn import capability
from charnn.sample.draw import race_block, race_noise


class RaceSettings(Protocol):
    @property
    def num_samples(self) -> int: ...

    @property
    def temperature(self) -> float: ...


class Racer(Protocol):
    """What the races need of a request (`engine.Group`): its rows, temperature and generator, and a
    way to end it alone when its generator fails."""

    @property
    def cfg(self) -> RaceSettings: ...

    @property
    def generator(self) -> torch.Generator: ...

    def fail(self, error: Exception) -> None: ...


class Races:
    """The batch's race noise (`draw.race_noise`), drawn K steps ahead by each group from its own generator.

    rows (B, K, V) holds each row's next K steps. A group draws its block (K, n, V) when it joins and
    again every K of its own steps, so its draws never depend on what else shares the batch; greedy
    groups draw nothing (their rows are zeros and unused). Row order follows the engine's batch. A step
    takes one slice per row: a view when every group is at the same point of its block (one request,
    or requests that came together), else one gather.
    """

    def __init__(self, vocab: int, device: torch.device):
        self.vocab, self.device, self.block = vocab, device, race_block(vocab)
        self.dtype = capability.of(device).exact_dtype  # what `race_noise` draws in
        self.rows = torch.empty(0, self.block, vocab, dtype=self.dtype, device=device)
        # A group's phase (the slice of its block it takes next) is (t - start) mod K: one counter for the
        # batch and a start per group, so a step moves every group without a Python loop over them.
        self.t = 0  # steps the batch has taken
        self.starts: list[int] = []  # per group: t mod K when its block was drawn
        self._row_starts: Tensor | None = None  # per row: its group's start (B,), for the gather; None: rebuild
        self._row_base = torch.empty(0, dtype=torch.long)  # per row: its first index in rows viewed as (B*K, V)

    def _block(self, group: Racer) -> Tensor:
        n = group.cfg.num_samples
        if group.cfg.temperature == 0:
            return torch.zeros(n, self.block, self.vocab, dtype=self.dtype, device=self.device)
        drawn = race_noise(self.block * n, self.vocab, group.generator, self.device)
        return drawn.view(self.block, n, self.vocab).transpose(0, 1)  # (n, K, V)

    def add(self, groups: Sequence[Racer]) -> None:
        self.rows = torch.cat([self.rows, *(self._block(g) for g in groups)])
        self.starts += [self.t % self.block] * len(groups)
        self._row_starts = None

    def remove(self, i: int, keep: Tensor) -> None:
        self.rows = self.rows.index_select(0, keep)
        del self.starts[i]
        self._row_starts = None

    def take(self, groups: Sequence[Racer], rows: list[int], live: list[bool]) -> Tensor:
        """This step's noise (B, V); then every group moves on one step, drawing a new block where one ran out."""
        viewed = len(set(self.starts)) == 1
        if viewed:
            noise = self.rows[:, (self.t - self.starts[0]) % self.block]  # (B, V), a view
        else:
            if self._row_starts is None:  # per row: its group's start, and where its block begins in rows' (B*K, V) view
                starts = [s for s, n in zip(self.starts, rows, strict=True) for _ in range(n)]
                self._row_starts = torch.tensor(starts, device=self.device)
                self._row_base = torch.arange(len(starts), device=self.device) * self.block
            phase = (self.t - self._row_starts) % self.block  # (B,)
            noise = self.rows.view(-1, self.vocab)[self._row_base + phase]  # (B, V)
        self.t += 1
        due = self.t % self.block  # the groups that drew at this point of the cycle have used their block
        if self.starts.count(due):
            first_rows = [0, *itertools.accumulate(rows)]
            for i in [i for i, s in enumerate(self.starts) if s == due]:
                if live[i] and groups[i].cfg.temperature > 0:
                    if viewed:  # the refill below must not change this step's noise
                        noise, viewed = noise.clone(), False
                    try:
                        self.rows[first_rows[i] : first_rows[i + 1]] = self._block(groups[i])
                    except Exception as e:  # this group's generator failed: it ends, the others go on
                        groups[i].fail(e)
        return noise
