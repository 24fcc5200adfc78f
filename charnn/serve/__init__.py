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
`run` serves them with uvicorn until Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from charnn import api
from charnn.errors import UsageError
from charnn.run import names
from charnn.run.runs import resolve
from charnn.serve.access import ServeConfig, Served
from charnn.serve.app import create_app
from charnn.serve.batcher import Batcher
from charnn.serve.chat import chat_names
from charnn.serve.info import facts_of
from charnn.serve.worker import Worker

__all__ = ["ServeConfig", "Served", "create_app", "load", "run"]


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
            speakers = chat_names(config, known)
            served.append(Served(run_dir.name, model, batcher, {**facts_of(model), "chat_names": speakers}, speakers))
    except BaseException:
        worker.close()
        raise
    return served


def run(served: list[Served], config: ServeConfig, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(served, config), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
