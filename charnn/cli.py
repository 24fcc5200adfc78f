"""The `charnn` command: parses options, builds configs, calls the library, prints.

Every `CharnnError` becomes one line on stderr (`error: …`) and its exit code
(2 for usage errors, 1 otherwise); `--debug` shows the traceback instead. Under
torchrun every process runs this same command: one process per machine prints
an error (the others meet the same one), and only rank 0 prints progress.
"""

from __future__ import annotations

import functools
import io
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer

from charnn import __version__, api, checkpoint, corpus, distributed
from charnn.errors import CharnnError
from charnn.recipe import AMP_MIN_GAIN, Request, configs
from charnn.sample import SampleConfig, generate

app = typer.Typer(
    help="Character-level RNN/LSTM/GRU text generation: train on any text, then sample or chat.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
F = TypeVar("F", bound=Callable[..., Any])
# click's ClickException, from wherever this Typer takes click (recent Typer versions vendor it).
_CLICK_ERROR: type[Any] = typer.BadParameter.__mro__[2]
_debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"charnn {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    global _debug
    _debug = debug


def handled(fn: F) -> F:
    """Map user errors to one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CharnnError as e:
            if _debug:
                raise
            _report(f"error: {e}")
            raise typer.Exit(e.exit_code) from None
    return wrapper  # type: ignore[return-value]


def _launch() -> distributed.Launch:
    try:
        return distributed.Launch.from_env()
    except CharnnError:
        return distributed.Launch()  # the malformed environment is what gets reported


def _report(line: str) -> None:
    """Print a user error once per machine; hand it to torchrun's failure report too."""
    launch = _launch()
    if launch.reports_errors:
        typer.echo(line, err=True)
    if launch.under_torchrun:
        distributed.record_error(line)


def run() -> None:
    """The `charnn` entry point (also `python -m charnn`, which torchrun starts).

    Runs the Typer app as a plain click command so that click's own usage errors (an
    unknown option, a value that is not a number) are printed once per machine under
    torchrun too, instead of once per process.
    """
    command = typer.main.get_command(app)
    try:
        code = command.main(args=_optional_values(sys.argv[1:]), prog_name="charnn", standalone_mode=False)
    except _CLICK_ERROR as e:  # a usage error: an unknown option, a value that is not a number
        launch = _launch()
        if launch.reports_errors:
            e.show()
        if launch.under_torchrun:
            distributed.record_error(f"error: {e.format_message()}")
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _optional_values(args: list[str]) -> list[str]:
    """`--tensorboard` followed by another option (or nothing) means "no folder given": `--tensorboard=`.

    The option's value is optional, which click options cannot say; an empty value stands for
    "inside the run" (`board.INSIDE_RUN`).
    """
    return [f"{a}=" if a == "--tensorboard" and (i + 1 == len(args) or args[i + 1].startswith("-")) else a
            for i, a in enumerate(args)]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)", re.IGNORECASE)


def parse_duration(text: str | None) -> float | None:
    """'90s', '10m', '1h30m', '1.5h' or plain seconds -> seconds."""
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or _DURATION.sub("", text).strip():
            raise typer.BadParameter(f"'{text}' is not a duration — use e.g. 90s, 10m, 1h30m") from None
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u.lower()] for n, u in parts)
    if not seconds > 0:
        raise typer.BadParameter(f"'{text}' must be a positive duration — use e.g. 90s, 10m, 1h30m")
    return seconds


def _paths(checkpoints_dir: Path, corpora_dir: Path) -> api.Paths:
    return api.Paths(checkpoints_dir, corpora_dir)


CKPT_DIR = typer.Option(api.DEFAULT_CHECKPOINTS, "--checkpoints-dir", help="Folder holding run directories.")
CORPORA_DIR = typer.Option(api.DEFAULT_CORPORA, "--corpora-dir", help="Folder for built-in corpora and the encoding cache.")
DEVICE = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")


@app.command("train")
@handled
def train_cmd(
    corpus_spec: list[str] = typer.Argument(
        None, metavar="CORPUS...",
        help="Text files (also .gz/.bz2/.xz), folders (read recursively) or a built-in name (see `charnn corpora`), "
        "in order. With --resume: the corpus's new location, if it moved."),
    resume: str = typer.Option(None, "--resume", help="Continue run RUN (name or path) from its latest state."),
    name: str = typer.Option(None, "--name", help="Run name under --checkpoints-dir (default: corpus name + timestamp)."),
    cell: str = typer.Option(
        None, "--cell", help="Recurrent cell: rnn (Elman tanh), lstm, gru or slstm (xLSTM) (default: gru)."),
    heads: int = typer.Option(None, "--heads", help="sLSTM only: heads of the block-diagonal recurrence (default: 4)."),
    layers: int = typer.Option(None, "--layers", help="Stacked recurrent layers (default: 2, or by --time)."),
    hidden: int = typer.Option(None, "--hidden", help="Hidden units per layer (default: 384, or by --time)."),
    embed: int = typer.Option(None, "--embed", help="Character embedding size (default: 64, or by --time)."),
    dropout: float = typer.Option(
        None, "--dropout", help="Dropout between layers and before the head, in [0, 1) (default: 0.1, or by --time)."),
    locked_dropout: bool = typer.Option(
        None, "--locked-dropout/--step-dropout",
        help="Drop the same units of a stream for a whole window (variational dropout) instead of new ones at "
             "every character (default: --step-dropout)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Parallel streams B (TBPTT) (default: 64, or by --time)."),
    seq_len: int = typer.Option(
        None, "--seq-len", help="Window length T: gradients flow at most T characters back (default: 64)."),
    lr: float = typer.Option(
        None, "--lr", help="Peak learning rate (AdamW) (default: 3e-3, or by --time); with --resume: a new peak rate."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
    warmup: int = typer.Option(None, "--warmup", help="Linear warm-up steps before the cosine decay (default: 50)."),
    clip: float = typer.Option(1.0, "--clip", help="Global gradient-norm clip."),
    ema: float = typer.Option(
        None, "--ema", help="Evaluate (and keep as best) a moving average of the weights with this decay; 0: off "
        "(default: 0.995, or by --time)."),
    epoch_offset: bool = typer.Option(
        None, "--epoch-offset/--same-windows",
        help="Start each pass after the first at another place in the text, so later epochs see other windows "
             "(default: --epoch-offset); --same-windows repeats the first pass's cut."),
    epochs: float = typer.Option(None, "--epochs", help="Stop after this many passes over the training split."),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Stop after this many optimizer steps (with --resume: the new total)."),
    time_budget: str = typer.Option(
        None, "--time",
        help="Wall-clock budget, e.g. 90s, 10m, 1h30m; the LR schedule follows it (with --resume: time to add). "
        "Default when no limit is given: 10m."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Steps between full validation passes and "
                                          "checkpoints (default: 200, or by --time: the same characters at any batch)."),
    patience: int = typer.Option(0, "--patience", help="Stop after this many evaluations without improvement (0: never)."),
    val_frac: float = typer.Option(0.1, "--val-frac", help="Fraction at the end of the corpus used for validation."),
    seed: int = typer.Option(1337, "--seed", help="Seed for weights, dropout and everything random."),
    device: str = DEVICE,
    threads: int = typer.Option(0, "--threads", help="CPU threads for PyTorch (0: PyTorch's default)."),
    amp: bool = typer.Option(
        None, "--amp/--no-amp", help="Train in bf16 autocast, on CUDA or CPU; evaluation stays fp32 (default: off, or "
        f"by --time: on where this machine's probe runs it {AMP_MIN_GAIN:g}x as fast)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run of the same name."),
    replace_bad_bytes: bool = typer.Option(
        False, "--replace-bad-bytes", help="Replace invalid UTF-8 bytes with U+FFFD instead of failing."),
    include: list[str] = typer.Option(
        None, "--include", help="In folders, take only files whose relative path matches this glob (repeatable: "
        "--include '*.c' --include '*.h'; * also matches /)."),
    exclude: list[str] = typer.Option(None, "--exclude", help="In folders, leave out files matching this glob (repeatable)."),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on a binary or non-UTF-8 file in a folder instead of skipping it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-evaluation lines."),
    tensorboard: str = typer.Option(
        None, "--tensorboard", metavar="[DIR]",
        help="Also write TensorBoard scalars: into RUN/tensorboard, or DIR/RUN-NAME when DIR is given (put the "
             "option after CORPUS). Kept on --resume. Needs: pip install 'charnn[tensorboard]'."),
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """Train a character model on CORPUS, or continue one with --resume RUN."""
    import torch

    if isinstance(sys.stdout, io.TextIOWrapper):  # `charnn train … > log`: each evaluation line lands as it happens
        sys.stdout.reconfigure(line_buffering=True)

    if threads < 0:
        raise typer.BadParameter("--threads must be 0 or more")
    if threads:
        torch.set_num_threads(threads)
    seconds = parse_duration(time_budget)
    paths = _paths(checkpoints_dir, corpora_dir)
    if tensorboard:  # a folder: fixed now, so a later resume from elsewhere writes to the same place
        tensorboard = str(Path(tensorboard).expanduser().resolve())
    if resume is not None:
        fixed = {"--name": name, "--cell": cell, "--heads": heads, "--layers": layers, "--hidden": hidden,
                 "--embed": embed, "--dropout": dropout, "--batch-size": batch_size, "--seq-len": seq_len,
                 "--warmup": warmup, "--ema": ema, "--locked-dropout/--step-dropout": locked_dropout,
                 "--epoch-offset/--same-windows": epoch_offset, "--amp/--no-amp": amp}
        if given_fixed := [option for option, value in fixed.items() if value is not None]:
            raise typer.BadParameter(f"{', '.join(given_fixed)} cannot change when resuming: the run keeps the model, "
                                     "batch, windows and precision it started with — drop them, or train a new run")
        if include or exclude or strict or replace_bad_bytes:
            raise typer.BadParameter("--include, --exclude, --strict and --replace-bad-bytes are fixed when a run "
                                     "starts — drop them with --resume (the run reads its corpus as it did then)")
        run_dir, result = api.resume_training(resume, corpus_path=corpus_spec or None, max_steps=max_steps, epochs=epochs,
                                              more_time=seconds, lr=lr, device=device, paths=paths,
                                              show_progress=not quiet, tensorboard=tensorboard)
    else:
        if not corpus_spec:
            raise typer.BadParameter("give a CORPUS to train on (a file, a folder, or a built-in name), or --resume RUN")
        if heads is not None and (cell or "gru") != "slstm":
            raise typer.BadParameter(f"--heads applies to --cell slstm only (this run's cell is {cell or 'gru'}) — "
                                     "drop --heads or add --cell slstm")
        budgeted = seconds is not None
        if seconds is None and max_steps is None and epochs is None:
            seconds = 600.0
            if _launch().is_writer:
                typer.echo("no --time, --max-steps or --epochs given: training for 10m", err=True)
        request = Request(cell=cell, layers=layers, hidden=hidden, embed=embed, dropout=dropout, batch_size=batch_size,
                          seq_len=seq_len, lr=lr, warmup=warmup, ema=ema, eval_every=eval_every, heads=heads,
                          locked_dropout=locked_dropout, amp=amp)
        model_cfg, cfg, auto = configs(request, budgeted, weight_decay=weight_decay, clip=clip, epochs=epochs,
                                       max_steps=max_steps, time_budget=seconds,
                                       patience=patience, val_frac=val_frac, seed=seed,
                                       tensorboard=tensorboard, epoch_offset=epoch_offset is not False)
        say = None if quiet else (lambda line: typer.echo(line, err=True))
        options = api.CorpusOptions(replace_bad_bytes, strict, tuple(include or ()), tuple(exclude or ()))
        run_dir, result = api.start_training(corpus_spec, model_cfg, cfg, name=name, device=device, paths=paths,
                                             overwrite=overwrite, corpus_options=options, show_progress=not quiet,
                                             auto_fields=auto, announce=say)
    if not result.is_writer:
        return
    p = result.progress
    best = f"{p.best_val:.4f} nats ({p.best_val / 0.6931471805599453:.3f} bpc)"
    if result.checksum is not None:
        typer.echo(f"{result.world_size} processes stopped together at step {p.step}; weights identical on every rank "
                   f"(checksum {result.checksum})", err=True)
    if result.stopped_by == "interrupted":
        again = "charnn train" if result.world_size == 1 else \
            f"torchrun --standalone --nproc_per_node={result.world_size} -m charnn train"
        typer.echo(f"interrupted at step {p.step}; saved {run_dir}. Continue with: {again} --resume {run_dir.name}"
                   + ("" if checkpoints_dir == api.DEFAULT_CHECKPOINTS else f" --checkpoints-dir {checkpoints_dir}"),
                   err=True)
    else:
        typer.echo(f"done ({result.stopped_by}) at step {p.step}: best val {best}; run saved in {run_dir}", err=True)


@app.command("sample")
@handled
def sample_cmd(
    run: str = typer.Argument(None, help="Run name or path (default: the most recently modified run)."),
    prime: str = typer.Option("\n", "--prime", help="Text to start from (printed first)."),
    length: int = typer.Option(500, "--length", help="Characters to generate (the prime not counted)."),
    temperature: float = typer.Option(0.8, "--temperature", help="Softmax temperature; 0 is greedy."),
    top_k: int = typer.Option(None, "--top-k", help="Sample only among the K most likely characters."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling: the smallest set with probability >= P."),
    seed: int = typer.Option(None, "--seed", help="Random seed: the same seed gives the same text."),
    num_samples: int = typer.Option(1, "--num-samples", help="Independent samples, generated as one batch."),
    stop: str = typer.Option(None, "--stop", help="End a sample once it produces this string."),
    drop_unknown: bool = typer.Option(False, "--drop-unknown", help="Drop prime characters the model never saw."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for PyTorch (0: PyTorch's default)."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
) -> None:
    """Generate text from a trained run, streamed to stdout."""
    _set_threads(threads)
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    cfg = SampleConfig(length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                       num_samples=num_samples, stop=stop, drop_unknown=drop_unknown)
    stream = generate(model.model, model.tokenizer, prime, cfg)  # validates before anything is printed
    out = sys.stdout
    if num_samples == 1:
        out.write(prime)
        flushed = time.perf_counter()
        for pieces in stream:
            out.write(pieces[0])
            # Flushing per character costs more than the step itself; a line or 50 ms still reads as a stream.
            if pieces[0] == "\n" or time.perf_counter() - flushed > 0.05:
                out.flush()
                flushed = time.perf_counter()
        out.write("\n")
        return
    for _ in stream:
        pass
    for i, text in enumerate(stream.texts, 1):
        out.write(f"--- sample {i} ---\n{prime}{text}\n")


def _set_threads(threads: int) -> None:
    import torch

    if threads < 0:
        raise typer.BadParameter("--threads must be 0 or more")
    if threads:
        torch.set_num_threads(threads)


@app.command("repl")
@handled
def repl_cmd(
    run: str = typer.Argument(None, help="Run name or path (default: the most recently modified run)."),
    length: int = typer.Option(300, "--length", help="Characters generated per prompt."),
    temperature: float = typer.Option(0.8, "--temperature", help="Softmax temperature; 0 is greedy."),
    top_k: int = typer.Option(None, "--top-k", help="Top-k filtering."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus (top-p) filtering."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
) -> None:
    """Interactive prompt: type text, the model continues it. :help lists commands."""
    from charnn.repl import Repl

    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    cfg = SampleConfig(length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    cfg.check()
    Repl(model.model, model.tokenizer, model.run_dir, cfg).loop()


@app.command("eval")
@handled
def eval_cmd(
    args: list[str] = typer.Argument(
        ..., metavar="[RUN] FILE", help="Optional run (default: the newest), then the text file to score."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line instead of text."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """Loss, bits per character and perplexity of FILE under a run's model."""
    if len(args) > 2:
        raise typer.BadParameter("give at most a RUN and a FILE")
    run, file = (None, args[0]) if len(args) == 1 else (args[0], args[1])
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    score = model.score_file(file, _paths(checkpoints_dir, corpora_dir))
    unknown = sum(score.unknown.values())
    if as_json:
        typer.echo(json.dumps({"run": model.run_dir.name, "checkpoint": checkpoint_name, "file": file,
                               "loss": score.nats, "bpc": score.bpc, "perplexity": score.perplexity,
                               "characters": score.characters, "unknown_characters": unknown,
                               "unknown": score.unknown}))
        return
    typer.echo(f"{file} under {model.run_dir.name} ({checkpoint_name}, step {model.step}): "
               f"loss {score.nats:.4f} nats, {score.bpc:.4f} bits/char, perplexity {score.perplexity:.3f} "
               f"over {score.characters:,} characters")
    if unknown:
        shown = ", ".join(f"{c!r} x{n}" for c, n in sorted(score.unknown.items(), key=lambda kv: -kv[1])[:10])
        typer.echo(f"note: skipped {unknown:,} character(s) the model never saw: {shown}")


@app.command("serve")
@handled
def serve_cmd(
    runs: list[str] = typer.Argument(None, metavar="[RUN]...", help="Runs to serve (default: the newest run)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    api_key: str = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY' on every API call."),
    max_tokens_cap: int = typer.Option(5000, "--max-tokens-cap", help="Most characters one request may ask for."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
) -> None:
    """Serve runs over HTTP: OpenAI-compatible /v1/completions, /v1/score, /v1/models, and a page at /."""
    from charnn import serve

    if not 1 <= port <= 65535:
        raise typer.BadParameter(f"--port {port} must be between 1 and 65535")
    if max_tokens_cap < 1:
        raise typer.BadParameter(f"--max-tokens-cap {max_tokens_cap} must be at least 1")
    config = serve.ServeConfig(max_tokens_cap=max_tokens_cap, api_key=api_key)
    served = serve.load(runs or [], checkpoints_dir, device, config)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host}: anyone who can reach this machine can use the server"
                   + ("" if api_key else " (consider --api-key)"), err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {', '.join(s.name for s in served)} at http://{shown}:{port}/ "
               f"(API: http://{shown}:{port}/v1, docs: /docs); Ctrl-C stops", err=True)
    serve.run(served, config, host, port)


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
    from charnn import plot

    run_dirs = [checkpoint.resolve(r, checkpoints_dir) for r in runs] if runs else [
        checkpoint.resolve(None, checkpoints_dir)]
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
    import torch

    from charnn import inspector
    from charnn.model import CharRNN

    if (text is None) == (file is None):
        raise typer.BadParameter("give the text to read either as TEXT or with --file FILE (one of them)")
    cfg = inspector.InspectConfig(show=show, reach=reach)
    if limit < 2:
        raise typer.BadParameter(f"--limit {limit} must be at least 2")
    if problems := cfg.validate():
        raise typer.BadParameter(problems[0])
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    target = out or model.run_dir / ("inspect.json" if as_json else "inspect.html")
    checkpoint.check_writable(target)
    if file is not None:
        text = corpus.resolve(file, corpora_dir).head(limit)
    assert text is not None
    torch.manual_seed(int(model.config["train"].get("seed", 1337)))  # the run's own initial weights
    untrained = CharRNN(model.model.config)
    numbers = inspector.inspect(model.model, model.tokenizer, text, cfg, untrained)
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


@app.command("runs")
@handled
def runs_cmd(checkpoints_dir: Path = CKPT_DIR) -> None:
    """List runs: model, size, steps, best validation loss, last change."""
    rows = []
    for run_dir in checkpoint.find_runs(checkpoints_dir):
        try:
            s = checkpoint.summarize(run_dir)
        except CharnnError as e:
            rows.append((run_dir.name, f"(unreadable: {str(e)[:50]})", "", "", "", "", ""))
            continue
        best = "-" if s.best_val is None else f"{s.best_val:.4f}"
        bpc = "-" if s.best_val is None else f"{s.best_val / 0.6931471805599453:.3f}"
        rows.append((s.name, f"{s.cell} {s.layers}x{s.hidden}", f"{s.parameters:,}", str(s.steps), best, bpc,
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(s.modified))))
    if not rows:
        typer.echo(f"no runs in '{checkpoints_dir}' — train one with: charnn train CORPUS")
        return
    _table(("run", "model", "params", "steps", "best val", "bpc", "modified"), rows)


@app.command("corpora")
@handled
def corpora_cmd(corpora_dir: Path = CORPORA_DIR) -> None:
    """List the built-in corpora and whether they are on disk."""
    _table(("name", "about", "state"), corpus.builtin_status(corpora_dir))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
