"""How a training session ends early: SIGINT/SIGTERM set a flag the loop polls after each step (`StopFlag`), so
it finishes the step and saves; a failed write (a full disk) ends it with the command that continues the
run (`resumable`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from charnn.errors import WriteError


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop finishes its step and saves."""

    def __init__(self) -> None:
        self.raised = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            self.raised = True

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


@contextmanager
def resumable(run_dir: Path) -> Iterator[None]:
    """A failed write (disk full, read-only, quota) ends the run with the command that continues it."""
    try:
        yield
    except WriteError as e:
        default = run_dir.parent.resolve() == Path("checkpoints").resolve()
        raise WriteError(f"{e} — then continue the run with: charnn train --resume "
                         f"{run_dir.name if default else run_dir}") from None
