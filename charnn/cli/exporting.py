"""`charnn export`: a run as ONNX, as a static web page, or as a portable model folder."""

from __future__ import annotations

from pathlib import Path

import typer

from charnn.cli.root import CKPT_DIR, CORPORA_DIR, app, handled
from charnn.errors import CharnnError, UsageError
from charnn.export import FORMATS, export
from charnn.run import runs
from charnn.run.config import RunConfig
from charnn.text import corpus

CHECK_CHARS = 2000  # characters of the run's corpus read for the ONNX check (it steps through the first 300)


@app.command("export")
@handled
def export_cmd(
    run: str = typer.Argument(None, help="Run name or path, or a model folder (default: the most recently modified run)."),
    fmt: str = typer.Option(
        ..., "--format", help="onnx (the step as an ONNX graph), web (a static page that generates in the browser) "
        "or safetensors (a portable model folder charnn reads like a run)."),
    out: Path = typer.Option(None, "--out", help="Folder to write (default: RUN-FORMAT in the current folder)."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """Export a run's model to take it anywhere: ONNX, a browser page with no server, a model folder."""
    if fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}' is unknown — use one of {', '.join(FORMATS)}")
    run_dir = runs.resolve(run, checkpoints_dir)
    target = out if out is not None else Path(f"{run_dir.name}-{fmt}")
    loaded = runs.load(run_dir, checkpoint_name, "cpu")
    result = export(loaded, fmt, target, which=checkpoint_name, overwrite=overwrite,
                    text=_corpus_text(loaded.config, corpora_dir))
    typer.echo(f"wrote {result.folder}/ ({len(result.files)} files, {result.size / 1e6:.1f} MB)")
    if result.max_diff is not None:
        typer.echo(f"checked in onnxruntime: {result.steps_checked} steps of text, 2 streams; largest logit difference "
                   f"from PyTorch {result.max_diff:.2g}")
    hints = {"onnx": "run it with onnxruntime alone: see docs/export.md",
             "web": f"serve it: cd {result.folder} && python3 -m http.server 8000, then open http://localhost:8000/",
             "safetensors": f"use it like a run: charnn sample {result.folder}"}
    typer.echo(hints[fmt])


def _corpus_text(config: RunConfig, corpora_dir: Path) -> str:
    """The head of the run's corpus, for the ONNX check; empty when it is no longer where it was."""
    sources = config.sources
    if not any(sources):
        return ""
    try:
        return corpus.resolve(list(sources), corpora_dir).head(CHECK_CHARS)
    except CharnnError:
        return ""
