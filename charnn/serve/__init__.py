"""`charnn serve`: an OpenAI-compatible HTTP API and a page to play with trained runs.

    app.py       the FastAPI app: routes, validation, errors, limits
    events.py    server-sent events for streamed completions; the stop-string rule
    batcher.py   one engine thread per run; concurrent requests stepped as one batch
    page.html    the self-contained page served at /

`load` reads the runs named at start (nothing a request names is ever read from disk);
`run` serves them with uvicorn until Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from charnn import api, checkpoint
from charnn.errors import UsageError
from charnn.serve.app import ServeConfig, Served, create_app, facts_of
from charnn.serve.batcher import Batcher

__all__ = ["ServeConfig", "Served", "create_app", "load", "run"]


def load(runs: Sequence[str], checkpoints_dir: Path, device: str, config: ServeConfig) -> list[Served]:
    """The runs to serve (default: the newest), each with its batcher; names must be unique."""
    dirs = [checkpoint.resolve(r, checkpoints_dir) for r in runs] or [checkpoint.resolve(None, checkpoints_dir)]
    names = [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise UsageError(f"two runs share the name '{next(n for n in names if names.count(n) > 1)}' — "
                         "serve each run once (the request's model field picks a run by name)")
    served = []
    for run_dir in dirs:
        model = api.load_run(str(run_dir), "best", device, checkpoints_dir)
        served.append(Served(run_dir.name, model, Batcher(model.model, model.tokenizer, config.max_rows,
                                                          config.max_waiting), facts_of(model)))
    return served


def run(served: list[Served], config: ServeConfig, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(served, config), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
