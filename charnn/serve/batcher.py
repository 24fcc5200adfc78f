"""The batcher: concurrent requests for one run, stepped together in one `Engine` on one thread.

Requests join the batch between steps and leave when they finish or their client goes
away, each with its own settings, seed and stop strings (so a request samples the same
text alone or in a busy batch). The engine thread never touches the event loop except to
wake a waiting request, at most once per batch of pieces, so the loop stays free.

Supervised: a request whose own rows fail (`Group.error`) ends with that error while the
rest of the batch goes on. Should the engine fail as a whole (the batched forward pass
raises), every request in the batch gets the error, the engine starts afresh and the
queue is served by it; after MAX_RESTARTS failures in a row without a good step the
batcher gives up: `alive` turns false (GET /health answers 503) and new requests are
refused at once. A waiting request is never left hanging.
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

MAX_RESTARTS = 3


class Busy(Exception):
    """The batch and its queue are full: the client should retry shortly (503)."""


class Unavailable(Exception):
    """The engine failed and could not be restarted: this model cannot generate (503)."""


@dataclass
class Ticket:
    """One request's place in the batcher: what it asked for and what it got so far."""

    prime: str
    cfg: SampleConfig
    loop: asyncio.AbstractEventLoop
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: bool = False  # the request is blocked in `take`; guarded by `lock`
    pieces: list[list[str]] = field(default_factory=list)  # produced but not yet taken; guarded by `lock`
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    stopped: list[bool] = field(default_factory=list)  # per sample: ended by a stop string
    error: Exception | None = None  # the engine-side failure that ended this request, kept whole for its status
    cancelled: bool = False
    group: Group | None = None

    def push(self, pieces: list[str] | None, *, stopped: list[bool] | None = None, error: Exception | None = None) -> None:
        """Called by the engine thread; crosses to the event loop only when the request is blocked in `take`.

        A request pacing itself (sleeping between chunks) finds its pieces when it comes back, so a
        busy batch costs the event loop no wake-ups per step (each would take a core from the step).
        """
        with self.lock:
            if pieces is not None:
                self.pieces.append(pieces)
            if stopped is not None or error is not None:
                self.finished = True
                self.stopped = stopped or []
                self.error = error
            wake, self.waiting = self.waiting, False
        if wake:
            self.loop.call_soon_threadsafe(self.ready.set)

    async def take(self) -> tuple[list[list[str]], bool]:
        """The pieces produced since the last take, waiting for some if there are none; (pieces, finished)."""
        with self.lock:
            block = self.waiting = not self.pieces and not self.finished
            if block:
                self.ready.clear()
        if block:  # a wake-up already scheduled by an earlier push at worst returns empty-handed once
            await self.ready.wait()
        with self.lock:
            pieces, self.pieces = self.pieces, []
            return pieces, self.finished

    def cancel(self) -> None:
        self.cancelled = True  # read by the engine thread between steps


class Batcher:
    """Owns one run's engine thread; `submit` from the event loop, results through `Ticket`s."""

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, max_rows: int = 64, max_waiting: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.engine = Engine(model, tokenizer)
        self.failure: BaseException | None = None  # set when the engine could not be restarted
        self._failures = 0  # engine-wide failures since the last good step
        self._starting: list[Ticket] = []  # admitted, not yet joined to the engine (the engine thread's own)
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

    @property
    def alive(self) -> bool:
        return self.failure is None and self._thread.is_alive()

    def submit(self, prime: str, cfg: SampleConfig) -> Ticket:
        ticket = Ticket(prime, cfg, asyncio.get_running_loop())
        with self._cond:
            if not self.alive:
                raise Unavailable(f"the generation engine failed ({self.failure!r}) and could not restart — "
                                  "restart the server")
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
        """The supervisor: serve until closed; on an engine-wide failure fail its requests and start afresh."""
        while True:
            try:
                self._serve()
                return
            except BaseException as e:
                self._fail_active(e)
                self._failures += 1
                if self._failures > MAX_RESTARTS:
                    self._give_up(e)
                    return
                try:
                    self.engine = Engine(self.model, self.tokenizer)
                except BaseException as again:
                    self._give_up(again)
                    return

    def _serve(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._active:
                        self._cond.wait()
                    if self._closed:
                        return
                    self._starting = self._admit()
                while self._starting:
                    self._start(self._starting.pop(0))
                for group in [g for g in self.engine.groups if self._active[id(g)].cancelled or g.finished]:
                    self._finish(group)
                if not self.engine.groups:
                    continue
                for group, pieces in self.engine.step():
                    self._active[id(group)].push(pieces)
                self._failures = 0  # a good step: the count of failures in a row starts again
                for group in [g for g in self.engine.groups if g.finished or self._active[id(g)].cancelled]:
                    self._finish(group)

    def _start(self, ticket: Ticket) -> None:
        if ticket.cancelled:
            self._release(ticket)
            ticket.push(None, stopped=[False] * ticket.cfg.num_samples)
            return
        try:
            ticket.group = self.engine.join(ticket.prime, ticket.cfg)
        except Exception as e:  # validated before submit; anything left is this request's alone
            self._release(ticket)
            ticket.push(None, error=e)
            return
        self._active[id(ticket.group)] = ticket

    def _finish(self, group: Group) -> None:
        self.engine.leave(group)
        ticket = self._active.pop(id(group))
        self._release(ticket)
        if group.error is not None:
            ticket.push(None, error=group.error)
        else:
            ticket.push(None, stopped=list(group.done))

    def _fail_active(self, error: BaseException) -> None:
        """Every request in the failed engine ends with the error (waiting ones stay queued for the next engine)."""
        failure = error if isinstance(error, Exception) else RuntimeError(repr(error))
        for ticket in [*self._active.values(), *self._starting]:
            self._release(ticket)
            ticket.push(None, error=failure)
        self._active.clear()
        self._starting = []

    def _give_up(self, error: BaseException) -> None:
        with self._cond:
            self.failure = error
            waiting, self._waiting = list(self._waiting), deque()
        for ticket in waiting:
            ticket.push(None, error=Unavailable(f"the generation engine failed ({error!r}) and could not restart"))
