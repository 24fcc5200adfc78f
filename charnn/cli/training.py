"""`charnn train`: a new run, or more of one with --resume."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import typer

from charnn import api
from charnn.cli.root import (
    CKPT_DIR,
    CORPORA_DIR,
    DEVICE,
    app,
    command_started,
    current_launch,
    handled,
    paths_for,
    set_threads,
)
from charnn.model.cells import CELLS
from charnn.model.network import ModelConfig
from charnn.recipe.budget import format_duration, parse_duration
from charnn.recipe.plan import AMP_MIN_GAIN, FINE_TUNE
from charnn.run.config import TIME_PATIENCE, TrainConfig
from charnn.training.loop import TrainResult
from charnn.training.request import TrainRequest
from charnn.training.request import run as train_request

# The defaults the help states are the configs' own (model/network.py, run/config.py), and fine-tuning's are recipe.FINE_TUNE's.
M, T = ModelConfig, TrainConfig


# `charnn train`'s arguments and options, each declared once here so the command's signature reads as a list.
_CORPUS_SPEC = typer.Argument(
    None, metavar="CORPUS...",
    help="Text files (also .gz/.bz2/.xz), folders (read recursively) or a built-in name (see `charnn corpora`), "
    "in order. With --resume: the corpus's new location, if it moved.")
_RESUME = typer.Option(None, "--resume", help="Continue run RUN (name or path) from its latest state.")
_FROM_RUN = typer.Option(
    None, "--from", metavar="RUN[:latest]",
    help="Fine-tune: start a new run from RUN's model (its best weights; RUN:latest for its latest) on CORPUS. "
         "The architecture is RUN's; new characters are added to its vocabulary; RUN is never written. "
         f"Defaults change to fine-tuning's: --lr {FINE_TUNE.lr:g}, --warmup {FINE_TUNE.warmup}, --batch-size "
         f"{FINE_TUNE.batch_size}, --ema {FINE_TUNE.ema:g}, --eval-every {FINE_TUNE.eval_every}, the parent's --dropout.")
_SCRATCH = typer.Option(
    False, "--scratch", help="Start from random weights. Without it (and without --from), an English text of up to "
    "1.2M characters with a time budget starts from the base model, as its start: line says (docs/base.md: the measured rule).")
_NAME = typer.Option(None, "--name", help="Run name under --checkpoints-dir (default: corpus name + timestamp).")
_VOICES = typer.Option(
    False, "--voices", help="Each CORPUS is one voice (a style), named by its file or folder stem, or NAME=PATH: "
    "one model learns them all and writes in one (`charnn sample RUN --voice NAME`), a blend, or none.")
_BALANCE = typer.Option(
    False, "--balance", help="With --voices: train the voices in equal shares (each voice's training text "
    "repeated up to the longest's length) instead of in proportion to their text.")
_VOICES_FROM = typer.Option(
    None, "--voices-from", metavar="FILE", help="Voices from a .jsonl or .csv file of documents, each with a text "
    "and its voice (instead of CORPUS arguments): each voice's documents become its text.")
_TEXT_FIELD = typer.Option("text", "--text-field", help="With --voices-from: the field holding the text.")
_VOICE_FIELD = typer.Option("voice", "--voice-field", help="With --voices-from: the field naming the voice.")
_CELL = typer.Option(
    None, "--cell", help=f"Recurrent cell: {', '.join(f'{c.name} ({c.about})' for c in CELLS.values())} "
    f"(default: {M.cell}).")
_HEADS = typer.Option(None, "--heads", help="slstm and mlstm only: heads of the block-diagonal "
                          f"recurrence (slstm) or matrix memories (mlstm) (default: {M.heads}).")
_LAYERS = typer.Option(None, "--layers", help=f"Stacked recurrent layers (default: {M.layers}, or by --time).")
_HIDDEN = typer.Option(None, "--hidden", help=f"Hidden units per layer (default: {M.hidden}, or by --time).")
_EMBED = typer.Option(None, "--embed", help=f"Character embedding size (default: {M.embed}, or by --time).")
_DROPOUT = typer.Option(
    None, "--dropout", help=f"Dropout between layers and before the head, in [0, 1) (default: {M.dropout:g}, or by --time).")
_LOCKED_DROPOUT = typer.Option(
    None, "--locked-dropout/--step-dropout",
    help="Drop the same units of a stream for a whole window (variational dropout) instead of new ones at "
         "every character (default: --step-dropout).")
_BATCH_SIZE = typer.Option(
    None, "--batch-size", help=f"Parallel streams B (TBPTT) (default: {T.batch_size}, or by --time).")
_SEQ_LEN = typer.Option(
    None, "--seq-len", help=f"Window length T: gradients flow at most T characters back (default: {T.seq_len}).")
_LR = typer.Option(
    None, "--lr", help=f"Peak learning rate (AdamW) (default: {T.lr:g}, or by --time); with --resume: a new peak rate.")
_WEIGHT_DECAY = typer.Option(T.weight_decay, "--weight-decay", help="AdamW weight decay.")
_WARMUP = typer.Option(None, "--warmup", help=f"Linear warm-up steps before the cosine decay (default: {T.warmup}).")
_CLIP = typer.Option(T.clip, "--clip", help="Global gradient-norm clip.")
_EMA = typer.Option(
    None, "--ema", help="Evaluate (and keep as best) a moving average of the weights with this decay; 0: off "
    f"(default: {T.ema:g}, or by --time); it warms up as (1 + n) / (10 + n) over the first n steps.")
_EPOCH_OFFSET = typer.Option(
    None, "--epoch-offset/--same-windows",
    help="Start each pass after the first at another place in the text, so later epochs see other windows "
         "(default: --epoch-offset); --same-windows repeats the first pass's cut.")
_EPOCHS = typer.Option(None, "--epochs", help="Stop after this many passes over the training split.")
_MAX_STEPS = typer.Option(
    None, "--max-steps", help="Stop after this many optimizer steps (with --resume: the new total).")
_TIME_BUDGET = typer.Option(
    None, "--time",
    help="Wall-clock budget, e.g. 90s, 10m, 1h30m; the LR schedule follows it (with --resume: time to add). "
    "Default when no limit is given: 10m.")
_EVAL_EVERY = typer.Option(
    None, "--eval-every", help=f"Steps between full validation passes and checkpoints (default: {T.eval_every}, "
    "or by --time: the same characters at any batch).")
_PATIENCE = typer.Option(None, "--patience", show_default=False, help="After this many validation passes "
                             f"in a row without a new best, anneal for one interval, stop and keep the best weights "
                             f"(in best.pt and latest.pt). Default: {TIME_PATIENCE} with a time budget, else 0 (never).")
_VAL_FRAC = typer.Option(T.val_frac, "--val-frac", help="Fraction at the end of the corpus used for validation.")
_SEED = typer.Option(T.seed, "--seed", help="Seed for weights, dropout and everything random.")
_THREADS = typer.Option(0, "--threads", help="CPU threads for PyTorch (0: PyTorch's default).")
_AMP = typer.Option(
    None, "--amp/--no-amp", help="Train in bf16 autocast, on CUDA or CPU; evaluation stays fp32 (default: off, or "
    f"by --time: on where this machine's probe runs it {AMP_MIN_GAIN:g}x as fast).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing run of the same name.")
_REPLACE_BAD_BYTES = typer.Option(
    False, "--replace-bad-bytes", help="Replace invalid UTF-8 bytes with U+FFFD instead of failing.")
_INCLUDE = typer.Option(
    None, "--include", help="In folders, take only files whose relative path matches this glob (repeatable: "
    "--include '*.c' --include '*.h'; * also matches /).")
_EXCLUDE = typer.Option(None, "--exclude", help="In folders, leave out files matching this glob (repeatable).")
_STRICT = typer.Option(
    False, "--strict", help="Fail on a binary or non-UTF-8 file in a folder instead of skipping it.")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar or per-evaluation lines.")
_PREVIEW = typer.Option(0, "--preview", metavar="N", help="After each validation pass, show N characters of what the "
                        "model writes (from a new line, temperature 0.8, the run's seed): watch it learn. 0: off.")
_REPROBE = typer.Option(False, "--reprobe", help="Time this machine afresh for the --time recipe instead of reusing "
                        "its kept reading (kept per machine in the user's cache folder, checked by a few timed steps).")
_TENSORBOARD = typer.Option(
    None, "--tensorboard", metavar="[DIR]",
    help="Also write TensorBoard scalars: into RUN/tensorboard, or DIR/RUN-NAME when DIR is given (put the "
         "option after CORPUS). Kept on --resume. Needs: pip install 'charnn[tensorboard]'.")


@app.command("train")
@handled
def train_cmd(
    corpus_spec: list[str] = _CORPUS_SPEC,
    resume: str = _RESUME,
    from_run: str = _FROM_RUN,
    scratch: bool = _SCRATCH,
    name: str = _NAME,
    voices: bool = _VOICES,
    balance: bool = _BALANCE,
    voices_from: Path = _VOICES_FROM,
    text_field: str = _TEXT_FIELD,
    voice_field: str = _VOICE_FIELD,
    cell: str = _CELL,
    heads: int = _HEADS,
    layers: int = _LAYERS,
    hidden: int = _HIDDEN,
    embed: int = _EMBED,
    dropout: float = _DROPOUT,
    locked_dropout: bool = _LOCKED_DROPOUT,
    batch_size: int = _BATCH_SIZE,
    seq_len: int = _SEQ_LEN,
    lr: float = _LR,
    weight_decay: float = _WEIGHT_DECAY,
    warmup: int = _WARMUP,
    clip: float = _CLIP,
    ema: float = _EMA,
    epoch_offset: bool = _EPOCH_OFFSET,
    epochs: float = _EPOCHS,
    max_steps: int = _MAX_STEPS,
    time_budget: str = _TIME_BUDGET,
    eval_every: int | None = _EVAL_EVERY,
    patience: int = _PATIENCE,
    val_frac: float = _VAL_FRAC,
    seed: int = _SEED,
    device: str = DEVICE,
    threads: int = _THREADS,
    amp: bool = _AMP,
    overwrite: bool = _OVERWRITE,
    replace_bad_bytes: bool = _REPLACE_BAD_BYTES,
    include: list[str] = _INCLUDE,
    exclude: list[str] = _EXCLUDE,
    strict: bool = _STRICT,
    quiet: bool = _QUIET,
    preview: int = _PREVIEW,
    reprobe: bool = _REPROBE,
    tensorboard: str = _TENSORBOARD,
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """Train a character model on CORPUS, continue one with --resume RUN, or fine-tune one on CORPUS with --from RUN."""
    started = _started(threads)
    request = TrainRequest(
        corpus=tuple(corpus_spec or ()), resume=resume, start_from=from_run, scratch=scratch, name=name, voices=voices,
        balance=balance,
        voices_from=voices_from, text_field=text_field, voice_field=voice_field, cell=cell, heads=heads, layers=layers,
        hidden=hidden, embed=embed, dropout=dropout, locked_dropout=locked_dropout, batch_size=batch_size,
        seq_len=seq_len, lr=lr, warmup=warmup, ema=ema, eval_every=eval_every, amp=amp, weight_decay=weight_decay,
        clip=clip, epoch_offset=epoch_offset, epochs=epochs, max_steps=max_steps, time=parse_duration(time_budget),
        patience=patience, val_frac=val_frac, seed=seed, device=device, overwrite=overwrite, preview=preview,
        reprobe=reprobe,
        # A TensorBoard folder is fixed now, so a later resume from elsewhere writes to the same place.
        tensorboard=str(Path(tensorboard).expanduser().resolve()) if tensorboard else tensorboard,  # "": RUN/tensorboard
        reading=api.CorpusOptions(replace_bad_bytes, strict, tuple(include or ()), tuple(exclude or ())))
    writer = current_launch().is_writer
    echo = (lambda line: typer.echo(line, err=True)) if writer else (lambda line: None)
    run_dir, result = train_request(request, paths_for(checkpoints_dir, corpora_dir), show_progress=not quiet,
                                    announce=None if quiet else echo, notice=echo, started=started)
    if result.is_writer:
        typer.echo(_ending(run_dir, result, checkpoints_dir), err=True)


def _started(threads: int) -> float:
    """The command's start (its clock, `command_started`), with stdout line-buffered (`charnn train … > log`: each
    evaluation line lands as it happens) and the threads set."""
    started = command_started()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    set_threads(threads)
    return started


def _ending(run_dir: Path, result: TrainResult, checkpoints_dir: Path) -> str:
    """The line a training command ends with: how it stopped, the best score, and where the run is."""
    p = result.progress
    best = f"{p.best_val:.4f} nats ({p.best_val / 0.6931471805599453:.3f} bpc)"
    lines = []
    if result.checksum is not None:
        lines.append(f"{result.world_size} processes stopped together at step {p.step}; weights identical on every "
                     f"rank (checksum {result.checksum})")
    if result.stopped_by == "interrupted":
        again = "charnn train" if result.world_size == 1 else \
            f"torchrun --standalone --nproc_per_node={result.world_size} -m charnn train"
        lines.append(f"interrupted at step {p.step}; saved {run_dir}. Continue with: {again} --resume {run_dir.name}"
                     + ("" if checkpoints_dir == api.DEFAULT_CHECKPOINTS else f" --checkpoints-dir {checkpoints_dir}"))
    elif result.stopped_by == "patience":
        lines.append(f"stopped early at {format_duration(p.elapsed)} (step {p.step}): validation rising since step "
                     f"{p.best_step} (best {best}); best.pt and latest.pt hold the step-{p.best_step} weights; "
                     f"run saved in {run_dir}")
    else:
        lines.append(f"done ({result.stopped_by}) at step {p.step}: best val {best}; run saved in {run_dir}")
    return "\n".join(lines)
