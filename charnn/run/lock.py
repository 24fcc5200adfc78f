"""The run lock: one process trains a run at a time.

An OS lock (flock; msvcrt on Windows) on `<run>/.train.lock`, not a marker file: the kernel
releases it when the holder dies, even by SIGKILL, so a crash never leaves a stale lock. The
file names its holder (pid and host) for the refusal message. Readers (sample, eval, repl,
serve) never take it: they read the last complete checkpoint while a run trains.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from charnn.errors import RunError

LOCK = ".train.lock"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on `fd` without waiting; the kernel drops it when the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # BlockingIOError: someone else holds it
        return False


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode("utf-8", "replace").strip()


def _busy(run_dir: Path, holder: str) -> RunError:
    who = f"process {holder}" if holder else "another process"
    return RunError(f"run '{run_dir.name}' is being trained right now by {who} — wait for it to finish or stop it "
                    "(Ctrl-C saves it), or pick another --name")


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run's training lock for the duration; refuse at once if another process holds it.

    An OS lock (flock), not a marker file: a process that dies, even by SIGKILL, releases it,
    so a crash never leaves a stale lock behind. The file names the holder for the message.
    """
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    except OSError as e:
        raise RunError(f"cannot lock run folder '{run_dir}' ({e.strerror}) — pass a writable --checkpoints-dir") from None
    try:
        if not _try_lock(fd):
            raise _busy(run_dir, _holder(fd))
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def check_unlocked(run_dir: Path) -> None:
    """Refuse early (before any slow work) if a process is training `run_dir` right now.

    Not for a process that holds the lock itself: a second open file conflicts with the first.
    """
    path = run_dir / LOCK
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # unreadable lock file: `locked` reports it when the run is really written
    try:
        if not _try_lock(fd):
            raise _busy(run_dir, _holder(fd))
    finally:
        os.close(fd)  # a probe only: closing drops the lock it took
