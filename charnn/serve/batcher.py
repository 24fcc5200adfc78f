"""The batcher: concurrent requests for one run, stepped together in one `Engine` by the server's worker.

Requests join the batch between steps and leave when they finish or their client goes
away, each with its own settings, seed and stop strings (so a request samples the same
text alone or in a busy batch). The batcher has no thread of its own: the server's one
`Worker` thread gives every run's batch a turn in order (why one thread: `worker.py`).
The worker never touches the event loop except to wake a waiting request, at most once
per batch of pieces, so the loop stays free.

Supervised: a request whose own rows fail (`Group.error`) ends with that error while the
rest of the batch goes on. Should the engine fail as a whole (the batched forward pass
raises), every request in the batch gets the error, the engine starts afresh and the
queue is served by it; after MAX_RESTARTS failures in a row without a good step the
batcher gives up: `alive` turns false (GET /health answers 503) and new requests are
refused at once. A waiting request is never left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from charnn.model.network import CharRNN
from charnn.sample import Engine, Group, SampleConfig
from charnn.serve.worker import Worker
from charnn.text.tokenizer import CharTokenizer

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
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once the request is finished
    waiting: bool = False  # the request is blocked in `take`; guarded by `lock`
    pieces: list[list[str]] = field(default_factory=list)  # produced but not yet taken; guarded by `lock`
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    stopped: list[bool] = field(default_factory=list)  # per sample: ended by a stop string
    error: Exception | None = None  # the engine-side failure that ended this request, kept whole for its status
    cancelled: bool = False
    group: Group | None = None

    def push(self, pieces: list[str] | None, *, stopped: list[bool] | None = None, error: Exception | None = None) -> None:
        """Called by the worker; crosses to the event loop only when the request is blocked in `take`.

        A request pacing itself (sleeping between chunks) finds its pieces when it comes back, so a
        busy batch costs the event loop no wake-ups per step (each would take a core from the step).
        """
        with self.lock:
            if pieces is not None:
                self.pieces.append(pieces)
            ending = stopped is not None or error is not None
            if ending:
                self.finished = True
                self.stopped = stopped or []
                self.error = error
            wake, self.waiting = self.waiting, False
        if wake:
            self.loop.call_soon_threadsafe(self.ready.set)
        if ending:  # a request pacing itself learns at once that it is done (its client may send the next)
            self.loop.call_soon_threadsafe(self.ended.set)

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

    async def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, less if the request finishes meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ended.wait(), seconds)

    def cancel(self) -> None:
        self.cancelled = True  # read by the worker between steps


class Batcher:
    """One run's batch: `submit` from the event loop, results through `Ticket`s, stepped by `worker`
    (a worker of its own when none is given; a server shares one among its runs)."""

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, max_rows: int = 64, max_waiting: int = 64,
                 worker: Worker | None = None):
        self.model, self.tokenizer = model, tokenizer
        self._owns_worker = worker is None
        self.worker = worker or Worker()
        self.engine: Engine | None = None  # made by the worker at its first turn (it does torch work)
        self.failure: BaseException | None = None  # set when the engine could not be restarted
        self._failures = 0  # engine-wide failures since the last good step
        self._starting: list[Ticket] = []  # admitted, not yet joined to the engine (the worker's own)
        self.max_rows = max_rows  # samples stepped together at most
        self.max_waiting = max_waiting  # requests queued behind a full batch at most
        self._waiting: deque[Ticket] = deque()
        self._active: dict[int, Ticket] = {}  # id(group) -> ticket
        self._rows = 0  # samples admitted and not yet finished; guarded by `_cond`
        self._cond = self.worker.cond  # the worker's: a submit wakes it
        self._closed = False
        self.worker.attach(self)

    @property
    def load(self) -> tuple[int, int]:
        """(samples in the batch, requests waiting), read under the lock: the worker
        changes both while the event loop reports them (iterating its dict of groups here could fail)."""
        with self._cond:
            return self._rows, len(self._waiting)

    @property
    def alive(self) -> bool:
        return self.failure is None and self.worker.alive

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

        A request that fits the batch's free rows only waits for the worker to take it,
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
        """Stop stepping this batch (and the worker, when it is this batcher's own)."""
        with self._cond:
            self._closed = True
        if self._owns_worker:
            self.worker.close()

    def has_work(self) -> bool:
        """Anything to admit or step (the worker calls it holding the condition)."""
        return not self._closed and self.failure is None and bool(self._waiting or self._active)

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

    def turn(self) -> None:
        """One round on the worker thread, supervised: on an engine-wide failure its requests fail and
        a fresh engine serves the queue; after MAX_RESTARTS failures in a row the batcher gives up."""
        if self._closed or self.failure is not None:
            return
        try:
            self._round()
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

    def _round(self) -> None:
        """Admit what fits, step the batch once, drop what ended (a request cancelled meanwhile is
        dropped after this step: one character too many is cheaper than a second pass over the batch)."""
        if self.engine is None:
            self.engine = Engine(self.model, self.tokenizer)
        engine = self.engine
        with self._cond:
            self._starting = self._admit()
        with torch.inference_mode():
            if self._starting:
                self._start()
            if not engine.groups:
                return
            for group, pieces in engine.step():
                self._active[id(group)].push(pieces)
        self._failures = 0  # a good step: the count of failures in a row starts again
        self._drop_ended()

    def _drop_ended(self) -> None:
        assert self.engine is not None
        for group in [g for g in self.engine.groups if g.finished or self._active[id(g)].cancelled]:
            self._finish(group)

    def _start(self) -> None:
        """Join the admitted requests to the engine together (`Engine.join_many`); one refused fails alone."""
        assert self.engine is not None
        for ticket in [t for t in self._starting if t.cancelled]:
            self._release(ticket)
            ticket.push(None, stopped=[False] * ticket.cfg.num_samples)
        starting = [t for t in self._starting if not t.cancelled]
        joined = self.engine.join_many([(t.prime, t.cfg) for t in starting])
        self._starting = []
        for ticket, group in zip(starting, joined, strict=True):
            if isinstance(group, Exception):  # validated before submit; anything left is this request's alone
                self._release(ticket)
                ticket.push(None, error=group)
            else:
                ticket.group = group
                self._active[id(group)] = ticket
                if group.finished:  # asked for no characters
                    self._finish(group)

    def _finish(self, group: Group) -> None:
        assert self.engine is not None
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
