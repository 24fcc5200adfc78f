"""The worker: the one thread that does all of a server's torch work.

Loading the runs, stepping every run's batch and scoring texts all happen on this thread, one
thing at a time: the event loop only hands work over and waits for results. Why one thread and
not one per run: PyTorch's CPU kernels run on an OpenMP team that belongs to the calling thread,
and libgomp shortens the time its idle team members spin once more of its threads exist than the
machine has cores. A second thread that ever ran a kernel (the main thread loading a model, a
pool thread scoring a text) keeps its team alive and so slows every later step of the engine:
measured on a 2-core machine, a 2x512 LSTM's 32-sample step took 5 ms instead of 3 ms
(benchmarks/serve_load.py). With the work on one thread there is one team, and its steps run as
fast as the engine does alone.

Between two rounds of steps the worker runs the jobs handed to it (`call`), so a job waits at most
one round. A long job calls `share` between its pieces (`/v1/score`: after each window of the text),
and the batches step there for as long as the piece took: a score never stalls generation for more
than one window, and takes about half the worker while streams run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol, TypeVar

T = TypeVar("T")


class Turns(Protocol):
    """What the worker steps: a run's batch (`batcher.Batcher`)."""

    def has_work(self) -> bool: ...  # called holding the worker's condition

    def turn(self) -> None: ...  # one round: admit, step once, finish; never raises


class Worker:
    """The server's compute thread: jobs first, then one turn of every batch with work, until closed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()  # guards the jobs, the batches and what each batch has waiting
        self._jobs: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._turns: list[Turns] = []
        self._closed = False
        self._piece_started = 0.0  # when the running job's current piece began (`share`)
        self._thread = threading.Thread(target=self._run, name="charnn-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def attach(self, turns: Turns) -> None:
        with self.cond:
            self._turns.append(turns)

    def call(self, job: Callable[[], T]) -> Future[T]:
        """Run `job` on the worker thread; its result or exception arrives through the future."""
        future: Future[T] = Future()
        with self.cond:
            if self._closed:
                raise RuntimeError("the server's worker has stopped")
            self._jobs.append((job, future))  # type: ignore[arg-type]
            self.cond.notify()
        return future

    def run(self, job: Callable[[], T]) -> T:
        """`call` and wait: for work before serving starts (loading the runs)."""
        return self.call(job).result()

    def share(self) -> None:
        """Called by a running job between its pieces, on the worker thread: every batch with work
        steps (at least one round) for as long as the piece took."""
        now = time.perf_counter()
        deadline = now + (now - self._piece_started)
        while True:
            with self.cond:
                turns = [t for t in self._turns if t.has_work()]
            for t in turns:
                t.turn()
            if not turns or time.perf_counter() >= deadline:
                break
        self._piece_started = time.perf_counter()

    def close(self) -> None:
        with self.cond:
            self._closed = True
            self.cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self._closed and not self._jobs and not any(t.has_work() for t in self._turns):
                    self.cond.wait()
                if self._closed:
                    jobs, self._jobs = list(self._jobs), deque()
                    break
                jobs, self._jobs = list(self._jobs), deque()
                turns = list(self._turns)
            for job, future in jobs:
                self._piece_started = time.perf_counter()
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job())
                    except BaseException as e:  # the job's own failure, for its caller to handle
                        future.set_exception(e)
            for t in turns:
                t.turn()
        for _, future in jobs:  # never leave a caller waiting
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the server's worker has stopped"))
