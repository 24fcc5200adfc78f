"""`charnn serve`: an OpenAI-compatible HTTP API and a page to play with trained runs.

    app.py         the FastAPI app: routers, error handlers, the body limit, the OpenAPI schema
    protocol.py    request bodies, OpenAI's error shape, the statuses every route documents
    access.py      what routes share: ServeConfig, the served runs, the API key, the model lookup
    info.py        the page, GET /health, GET /v1/models, POST /v1/score
    completions.py POST /v1/completions
    chat.py        POST /v1/chat/completions: messages as a transcript, the reply up to the next speaker
    collector.py   submitting tickets, collecting deltas, stop strings, server-sent events
    batcher.py     one run's supervised batch: concurrent requests stepped as one
    worker.py      the one thread that does all the server's torch work: loading, stepping, scoring
    (the page at / is charnn/page/'s generator with the server backend)

`load` reads the runs named at start (nothing a request names is ever read from disk);
`listen` takes the port first (a busy port is one line before anything loads); `run` serves them with uvicorn
until Ctrl-C.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from charnn import api
from charnn.errors import UsageError
from charnn.run import names
from charnn.run.runs import resolve
from charnn.serve.access import ServeConfig, Served
from charnn.serve.app import create_app
from charnn.serve.batcher import Batcher
from charnn.serve.chat import chat_style
from charnn.serve.info import facts_of
from charnn.serve.worker import Worker

__all__ = ["ServeConfig", "Served", "create_app", "listen", "load", "run"]


def load(runs: Sequence[str], checkpoints_dir: Path, device: str, config: ServeConfig) -> list[Served]:
    """The runs to serve (default: the newest), each with its batcher; names must be unique.

    The runs are loaded on the worker that will step them: no other thread ever runs torch (`worker.py`)."""
    dirs = [resolve(r, checkpoints_dir) for r in runs] or [resolve(None, checkpoints_dir)]
    served_names = [names.check(d.name, "a served run's name", reserved=False) for d in dirs]
    if len(set(served_names)) != len(served_names):
        raise UsageError(f"two runs share the name '{next(n for n in served_names if served_names.count(n) > 1)}' — "
                         "serve each run once (the request's model field picks a run by name)")
    def loader(run_dir: Path) -> Callable[[], api.CharModel]:
        return lambda: api.load_run(str(run_dir), "best", device, checkpoints_dir)

    served = []
    worker = Worker()
    try:
        for run_dir in dirs:
            model = worker.run(loader(run_dir))
            batcher = Batcher(model.model, model.tokenizer, config.max_rows, config.max_waiting, worker)
            known = (lambda tokenizer: lambda text: not tokenizer.unknown_chars(text))(model.tokenizer)
            speakers, template = chat_style(config, known)
            served.append(Served(run_dir.name, model, batcher, {**facts_of(model), "chat_names": speakers,
                                                                "chat_template": template}, speakers, template))
    except BaseException:
        worker.close()
        raise
    return served


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port`, taken before any run is loaded, so a busy port, a port that needs
    root or a host this machine does not have is one line at once instead of uvicorn's log after the load."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number — give one from 1 to 65535 (8000 is free on most machines)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host '{host}' is not an address this machine can listen on ({_reason(e)}) — "
                         "give 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a just-closed server's port is free
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UsageError(_bind_problem(host, port, e)) from None
    sock.set_inheritable(True)
    return sock


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e)


def _bind_problem(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use — pass another --port, or stop the program that holds it"
    if e.errno == errno.EACCES:
        return (f"permission denied to listen on port {port} (ports below 1024 need root) — "
                "pass --port 1024 or above, e.g. --port 8000")
    if e.errno == errno.EADDRNOTAVAIL:
        return f"--host '{host}' is not an address of this machine — give 127.0.0.1 or 0.0.0.0"
    return f"cannot listen on {host}:{port} ({_reason(e)}) — pass another --host or --port"


def run(served: list[Served], config: ServeConfig, sock: socket.socket) -> None:
    """Serve `served` on `sock` (from `listen`) until Ctrl-C."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(served, config), log_level="warning", timeout_graceful_shutdown=3))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down and re-raises the signal; stopping is the normal end
        pass
    finally:
        sock.close()
