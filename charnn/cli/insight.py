"""The commands that look at a run: `charnn eval`, `charnn plot`, `charnn inspect` and `charnn originality`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from charnn import api
from charnn.run import builtin, checkpoint
from charnn.run.runs import resolve
from charnn.text import corpus

if TYPE_CHECKING:
    pass
from charnn.cli.root import CKPT_DIR, CORPORA_DIR, DEVICE, app, handled, paths_for
from charnn.run.originality import MIN_COPY


@app.command("eval")
@handled
def eval_cmd(
    args: list[str] = typer.Argument(
        ..., metavar="[RUN] FILE", help="Optional run (default: the newest), then the text file to score."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line instead of text."),
    voice: str = typer.Option(None, "--voice", help="A voiced run: score FILE as written in this voice (NAME, or a "
                              "blend NAME=W,NAME=W summing to 1); default: no voice."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """Loss, bits per character and perplexity of FILE under a run's model."""
    if len(args) > 2:
        raise typer.BadParameter("give at most a RUN and a FILE")
    run, file = (None, args[0]) if len(args) == 1 else (args[0], args[1])
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    score = model.score_file(file, paths_for(checkpoints_dir, corpora_dir), voice)
    unknown = sum(score.unknown.values())
    if as_json:
        typer.echo(json.dumps({"run": model.run_dir.name, "checkpoint": checkpoint_name, "file": file,
                               "loss": score.nats, "bpc": score.bpc, "perplexity": score.perplexity,
                               "characters": score.characters, "unknown_characters": unknown,
                               "unknown": score.unknown, "voice": voice}))
        return
    voiced = f", voice {voice}" if voice else ", no voice" if model.voices else ""
    typer.echo(f"{file} under {model.run_dir.name} ({checkpoint_name}, step {model.step}{voiced}): "
               f"loss {score.nats:.4f} nats, {score.bpc:.4f} bits/char, perplexity {score.perplexity:.3f} "
               f"over {score.characters:,} characters")
    if unknown:
        shown = ", ".join(f"{c!r} x{n}" for c, n in sorted(score.unknown.items(), key=lambda kv: -kv[1])[:10])
        typer.echo(f"note: skipped {unknown:,} character(s) the model never saw: {shown}")


@app.command("plot")
@handled
def plot_cmd(
    runs: list[str] = typer.Argument(None, metavar="[RUN]...", help="Runs to overlay (default: the newest run)."),
    out: Path = typer.Option(None, "--out", help="PNG or SVG file (default: RUN/loss.png; for several runs, "
                             "loss-A-vs-B.png beside them)."),
    x: str = typer.Option("tokens", "--x", help="Horizontal axis: tokens (characters seen), time or step."),
    terminal: bool = typer.Option(False, "--terminal", help="Draw in the terminal instead of writing a file."),
    checkpoints_dir: Path = CKPT_DIR,
) -> None:
    """Train and validation loss curves of one or more runs (a run still training works too)."""
    from charnn.insight import plot
    run_dirs = [resolve(r, checkpoints_dir) for r in runs] if runs else [resolve(None, checkpoints_dir)]
    if out is not None and not terminal:
        plot.check_out(out)
    curves = [plot.curve(r, x) for r in run_dirs]
    if terminal:
        import shutil

        size = shutil.get_terminal_size((100, 30))
        typer.echo(plot.terminal(curves, size.columns, max(size.lines - 4, 15)))
    else:
        typer.echo(f"wrote {plot.render(curves, out or plot.default_out(run_dirs))}")
    for c in curves:
        if (best := c.best) is not None:
            typer.echo(f"{c.run}: best validation loss {best[1]:.4f} nats ({best[1] / plot.LN2:.3f} bpc) "
                       f"at {plot.where(best[0], x)}; {len(c.val)} evaluations")


@app.command("inspect")
@handled
def inspect_cmd(
    run: str = typer.Argument(..., help="Run name or path."),
    text: str = typer.Argument(None, help="Text to read (or give --file)."),
    file: str = typer.Option(None, "--file", help="Read the text from a file, folder or built-in corpus "
                             "(.gz/.bz2/.xz too; its first --limit characters)."),
    out: Path = typer.Option(None, "--out", help="Page to write (default: RUN/inspect.html, or RUN/inspect.json with --json)."),
    as_json: bool = typer.Option(False, "--json", help="Write the numbers behind the page as JSON instead."),
    show: int = typer.Option(2000, "--show", help="Characters the page shows, every unit's value for each."),
    reach: int = typer.Option(64, "--reach", help="Gradient reach: steps back to measure (k = 1..REACH)."),
    limit: int = typer.Option(1_000_000, "--limit", help="Read at most this many characters of --file."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """A page showing what the model does on a text: neurons, surprise, and how far gradients reach."""
    from charnn.insight import inspector
    if (text is None) == (file is None):
        raise typer.BadParameter("give the text to read either as TEXT or with --file FILE (one of them)")
    cfg = inspector.InspectConfig(show=show, reach=reach)
    if limit < 2:
        raise typer.BadParameter(f"--limit {limit} must be at least 2")
    if problems := cfg.validate():
        raise typer.BadParameter(problems[0])
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    name = "inspect.json" if as_json else "inspect.html"
    # The built-in model's folder is inside the installed package: its page goes to the current folder.
    target = out or (Path(f"base-{name}") if model.run_dir == builtin.folder() else model.run_dir / name)
    checkpoint.check_writable(target)
    if file is not None:
        text = corpus.resolve(file, corpora_dir).head(limit)
    assert text is not None
    untrained, baseline, note = model.starting_weights()
    if note:
        typer.echo(f"note: {note}", err=True)
    numbers = inspector.inspect(model.model, model.tokenizer, text, cfg, untrained, baseline)
    title = f"{model.run_dir.name} ({checkpoint_name}, step {model.step})"
    body = inspector.to_json(numbers) if as_json else inspector.page(numbers, title)
    checkpoint.write_text(target, body)
    if numbers["skipped"]:
        shown = ", ".join(f"{c!r} x{n}" for c, n in sorted(numbers["skipped"].items(), key=lambda kv: -kv[1])[:10])
        typer.echo(f"note: skipped {sum(numbers['skipped'].values()):,} character(s) the model never saw: {shown}",
                   err=True)
    best = numbers["neurons"][0] if numbers["neurons"] else None
    typer.echo(f"wrote {target}: {numbers['characters']:,} characters, loss {numbers['loss']:.4f} nats "
               f"({numbers['bpc']:.3f} bpc)" + (f"; strongest: layer {best['layer']} {best['part']} unit {best['unit']} "
                                                 f"tracks {best['feature']} (r = {best['r']:+.2f})" if best else ""))


@app.command("originality")
@handled
def originality_cmd(
    run: str = typer.Argument(None, help="Run name or path, or a model folder (default: the most recently modified run)."),
    temperatures: str = typer.Option("0.5,0.8,1.0", "--temperatures", help="Comma-separated temperatures to sample at."),
    samples: int = typer.Option(8, "--samples", help="Samples per temperature."),
    length: int = typer.Option(1000, "--length", help="Characters per sample."),
    seed: int = typer.Option(1, "--seed", help="Random seed (the same seed, the same samples)."),
    min_copy: int = typer.Option(MIN_COPY, "--min-copy", help="The shortest span that counts as copied, in characters."),
    corpus_paths: list[str] = typer.Option(
        None, "--corpus", help="The run's training text, if it is no longer where the run found it (checked against "
        "the run's fingerprint; repeatable)."),
    out: Path = typer.Option(None, "--out", help="Also draw the copy rate against temperature into this .png or .svg."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON instead."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """How much of what the model writes is copied from its training text, at each temperature."""
    try:
        temps = [float(t) for t in temperatures.split(",") if t.strip()]
    except ValueError:
        raise typer.BadParameter(f"--temperatures '{temperatures}' is not a list of numbers — e.g. 0.5,0.8,1.0") from None
    if not temps or any(not t >= 0 for t in temps):
        raise typer.BadParameter(f"--temperatures '{temperatures}' must be numbers of 0 or more")
    for name, value in (("--samples", samples), ("--length", length), ("--min-copy", min_copy)):
        if value < 1:
            raise typer.BadParameter(f"{name} {value} must be at least 1")
    from charnn.insight import plot
    if out is not None:
        plot.check_out(out)
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    model.originality_index(paths_for(checkpoints_dir, corpora_dir), corpus_paths or (), show_progress=True)
    rows = model.copy_rates(temps, samples, length, seed, min_copy)  # the index above, kept by the model
    if as_json:
        typer.echo(json.dumps({"run": model.run_dir.name, "min_copy": min_copy, "length": length, "rows": [
            {"temperature": r.temperature, "samples": r.samples, "generated": r.generated, "copied": r.copied,
             "copied_fraction": round(r.copied_fraction, 6), "longest": r.longest, "longest_text": r.longest_text,
             "where": r.where} for r in rows]}))
    else:
        typer.echo(f"{model.run_dir.name}: {samples} samples of {length:,} characters per temperature; copied = inside "
                   f"a span of >= {min_copy} characters found verbatim in the training text")
        typer.echo(f"{'temperature':>11}  {'copied':>7}  {'longest':>7}  where  (longest copy)")
        for r in rows:
            typer.echo(f"{r.temperature:>11g}  {r.copied_fraction:>7.2%}  {r.longest:>7}  {r.where or '-'}  "
                       f"{r.longest_text[:50]!r}")
    if out is not None:
        plot.copy_rates(out, [r.temperature for r in rows], [r.copied_fraction for r in rows],
                        [r.longest for r in rows], f"{model.run_dir.name}: copied from the training text")
        typer.echo(f"wrote {out}", err=True)
