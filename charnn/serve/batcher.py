"""The batcher: concurrent requests for one run, stepped together in one `Engine` on one thread.

Requests join the batch between steps and leave when they finish or their client goes
away, each with its own settings, seed and stop strings (so a request samples the same
text alone or in a busy batch). The engine thread never touches the event loop except to
wake a waiting request, at most once per batch of pieces, so the loop stays free.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from charnn.model import CharRNN
from charnn.sample import Engine, Group, SampleConfig
from charnn.tokenizer import CharTokenizer


class Busy(Exception):
    """The batch and its queue are full: the client should retry shortly (503)."""


@dataclass
class Ticket:
    """One request's place in the batcher: what it asked for and what it got so far."""

    prime: str
    cfg: SampleConfig
    loop: asyncio.AbstractEventLoop
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pieces: list[list[str]] = field(default_factory=list)  # produced but not yet taken; guarded by `lock`
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    stopped: list[bool] = field(default_factory=list)  # per sample: ended by a stop string
    error: str | None = None
    cancelled: bool = False
    group: Group | None = None

    def push(self, pieces: list[str] | None, *, stopped: list[bool] | None = None, error: str | None = None) -> None:
        """Called by the engine thread; wakes the request only if it is not already awake."""
        with self.lock:
            wake = not self.pieces and not self.finished
            if pieces is not None:
                self.pieces.append(pieces)
            if stopped is not None or error is not None:
                self.finished = True
                self.stopped = stopped or []
                self.error = error
        if wake:
            self.loop.call_soon_threadsafe(self.ready.set)

    async def take(self) -> tuple[list[list[str]], bool]:
        """Wait for pieces; returns (pieces, finished)."""
        await self.ready.wait()
        with self.lock:
            pieces, self.pieces = self.pieces, []
            self.ready.clear()
            return pieces, self.finished

    def cancel(self) -> None:
        self.cancelled = True  # read by the engine thread between steps


class Batcher:
    """Owns one run's engine thread; `submit` from the event loop, results through `Ticket`s."""

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, max_rows: int = 64, max_waiting: int = 64):
        self.engine = Engine(model, tokenizer)
        self.max_rows = max_rows  # samples stepped together at most
        self.max_waiting = max_waiting  # requests queued behind a full batch at most
        self._waiting: deque[Ticket] = deque()
        self._active: dict[int, Ticket] = {}  # id(group) -> ticket
        self._rows = 0  # samples admitted and not yet finished; guarded by `_cond`
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="charnn-batcher", daemon=True)
        self._thread.start()

    @property
    def load(self) -> tuple[int, int]:
        """(samples in the batch, requests waiting), read under the lock: the engine thread
        changes both while the event loop reports them (iterating its dict of groups here could fail)."""
        with self._cond:
            return self._rows, len(self._waiting)

    def submit(self, prime: str, cfg: SampleConfig) -> Ticket:
        ticket = Ticket(prime, cfg, asyncio.get_running_loop())
        with self._cond:
            self._waiting.append(ticket)
            behind = self._behind_full_batch()
            if behind > self.max_waiting:
                self._waiting.pop()
                raise Busy(f"{behind - 1} requests are already waiting for this model")
            self._cond.notify()
        return ticket

    def _behind_full_batch(self) -> int:
        """Waiting requests the batch has no room for (called holding the condition).

        A request that fits the batch's free rows only waits for the engine thread to take it,
        which on a busy machine may be a while; counting it would refuse requests the batch has
        room for. `_admit` takes requests in order, so everything after the first that does not fit waits.
        """
        room = self.max_rows - self._rows
        for i, ticket in enumerate(self._waiting):
            if ticket.cfg.num_samples > room:
                return len(self._waiting) - i
            room -= ticket.cfg.num_samples
        return 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _admit(self) -> list[Ticket]:
        """Move waiting requests into the batch while it has room (called holding the condition)."""
        rows = self._rows
        admitted = []
        while self._waiting and rows + self._waiting[0].cfg.num_samples <= self.max_rows:
            ticket = self._waiting.popleft()
            rows += ticket.cfg.num_samples
            admitted.append(ticket)
        self._rows = rows
        return admitted

    def _release(self, ticket: Ticket) -> None:
        with self._cond:
            self._rows -= ticket.cfg.num_samples

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._active:
                        self._cond.wait()
                    if self._closed:
                        return
                    admitted = self._admit()
                for ticket in admitted:
                    if ticket.cancelled:
                        self._release(ticket)
                        ticket.push(None, stopped=[False] * ticket.cfg.num_samples)
                        continue
                    try:
                        ticket.group = self.engine.join(ticket.prime, ticket.cfg)
                    except Exception as e:  # validated before submit; anything left is reported, not raised
                        self._release(ticket)
                        ticket.push(None, error=f"generation could not start: {e}")
                        continue
                    self._active[id(ticket.group)] = ticket
                for group in [g for g in self.engine.groups if self._active[id(g)].cancelled or g.finished]:
                    self._finish(group)
                if not self.engine.groups:
                    continue
                for group, pieces in self.engine.step():
                    self._active[id(group)].push(pieces)
                for group in [g for g in self.engine.groups if g.finished or self._active[id(g)].cancelled]:
                    self._finish(group)

    def _finish(self, group: Group) -> None:
        self.engine.leave(group)
        ticket = self._active.pop(id(group))
        self._release(ticket)
        ticket.push(None, stopped=list(group.done))
