"""The commands that say what is there: `charnn runs`, `charnn corpora` and `charnn doctor` (the machine)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import typer

from charnn import api
from charnn.cli.root import CKPT_DIR, CORPORA_DIR, DEVICE, app, handled
from charnn.errors import CharnnError
from charnn.run import builtin, runs
from charnn.text import corpora


@app.command("runs")
@handled
def runs_cmd(checkpoints_dir: Path = CKPT_DIR) -> None:
    """List runs: model, size, voices, steps, best validation loss, the run each was fine-tuned from, last change.
    The built-in model `base` comes first."""
    rows = []
    folders = ([builtin.folder()] if builtin.installed() else []) + runs.find_runs(checkpoints_dir)
    for run_dir in folders:
        try:
            s = runs.summarize(run_dir)
        except CharnnError as e:
            rows.append((run_dir.name, f"(unreadable: {str(e)[:50]})", "", "", "", "", "", "", ""))
            continue
        best = "-" if s.best_val is None else f"{s.best_val:.4f}"
        bpc = "-" if s.best_val is None else f"{s.best_val / 0.6931471805599453:.3f}"
        built_in = run_dir == builtin.folder()
        rows.append((s.name, f"{s.cell} {s.layers}x{s.hidden}", f"{s.parameters:,}", str(len(s.voices) or "-"),
                     str(s.steps), best, bpc,
                     "(built in)" if built_in else s.parent or "-",
                     "-" if built_in else time.strftime("%Y-%m-%d %H:%M", time.localtime(s.modified))))
    if not rows:
        typer.echo(f"no runs in '{checkpoints_dir}' — train one with: charnn train CORPUS")
        return
    _table(("run", "model", "params", "voices", "steps", "best val", "bpc", "from", "modified"), rows)


@app.command("corpora")
@handled
def corpora_cmd(corpora_dir: Path = CORPORA_DIR) -> None:
    """List the built-in corpora and whether they are on disk."""
    _table(("name", "about", "state"), corpora.builtin_status(corpora_dir))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@app.command("doctor")
@handled
def doctor_cmd(
    device: str = DEVICE,
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Time a few training steps (a few seconds)."),
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """What charnn runs on: the device it would use and why, the torch build, bf16, threads, speed, where runs live."""
    typer.echo(str(api.doctor(device, speed, checkpoints_dir, corpora_dir)))
