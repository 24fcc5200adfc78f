"""The options that steer what `charnn sample` and `charnn repl` write (sample/steer.py), the prime from a file,
and what steering reports on stderr."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import typer

from charnn import api
from charnn.errors import UsageError
from charnn.sample import SampleConfig
from charnn.sample.engine import Generation
from charnn.sample.steer import Steering

MAX_PRIME = 1_000_000  # characters a --prime-file may hold

PRIME_FILE = typer.Option(None, "--prime-file", metavar="PATH", help="Start from this file's text (- for standard "
                          "input) instead of --prime; characters the model never saw are dropped and counted.")
WORDS = typer.Option("any", "--words", metavar="any|known", help="known: write only words that occur in the training "
                     "text (compared without case); needs the run's corpus.")
NO_REPEAT = typer.Option(None, "--no-repeat", metavar="N|off", help="No N-character string twice in a sample (a loop "
                         "cannot start; a sample left nothing to write ends and says so). Default: off, 16 with --beam.")
FREQUENCY_PENALTY = typer.Option(0.0, "--frequency-penalty", help="Lower a character's score by this times the "
                                 "times the sample already wrote it with the 7 characters before it (-2 to 2).")
PRESENCE_PENALTY = typer.Option(0.0, "--presence-penalty", help="Lower a character's score by this where the sample "
                                "already wrote it with the 7 characters before it (-2 to 2).")
REQUIRE = typer.Option(None, "--require", metavar="WORD", help="Keep only samples or items holding this word "
                       "(repeatable; whole words, case ignored), drawing again up to --attempts times.")


def no_repeat_of(value: str | None, default: int | None) -> int | None:
    """`--no-repeat N|off`: N, None for off, `default` when not given."""
    if value is None:
        return default
    if value == "off":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--no-repeat {value!r} is not a number — give a length of at least 2, or off") from None


def read_prime(path: str) -> str:
    """The text of `--prime-file PATH` (`-`: standard input), refused past MAX_PRIME characters (read no further:
    bounded memory whatever the file) or when it is not UTF-8 text."""
    try:
        if path == "-":
            text = sys.stdin.read(MAX_PRIME + 1)
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_PRIME + 1)
    except FileNotFoundError:
        raise UsageError(f"--prime-file {path!r} does not exist — give the path of a text file, or - for standard "
                         "input") from None
    except IsADirectoryError:
        raise UsageError(f"--prime-file {path!r} is a folder — give a text file") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--prime-file {path!r} is not UTF-8 text (byte {e.start}) — convert it to UTF-8") from None
    except OSError as e:
        raise UsageError(f"--prime-file {path!r} cannot be read ({e.strerror})") from None
    if len(text) > MAX_PRIME:
        raise UsageError(f"--prime-file {path!r} is longer than {MAX_PRIME:,} characters — give its last part (the "
                         "model's state carries the recent text, not a book)")
    if not text:
        raise UsageError(f"--prime-file {path!r} is empty — give a file with text, or --prime")
    return text


def fed(model: api.CharModel, path: str, text: str) -> str:
    """The prime a file gives: its characters the model knows, with how many were fed and dropped on stderr."""
    known = set(model.tokenizer.chars)
    fed = "".join(c for c in text if c in known)
    dropped = Counter(c for c in text if c not in known)
    shown = ", ".join(repr(c) for c, _ in dropped.most_common(5)) + (", …" if len(dropped) > 5 else "")
    typer.echo(f"prime: {len(fed):,} characters fed from {'standard input' if path == '-' else path}"
               + (f", {sum(dropped.values()):,} dropped as unknown ({shown})" if dropped else ", none dropped"), err=True)
    if not fed:
        raise UsageError(f"--prime-file {path!r} has no character the model knows — give text in the run's alphabet")
    return fed


def sampling(model: api.CharModel, steering: Steering, paths: api.Paths, corpus_paths: Sequence[str] | None,
              **options: Any) -> SampleConfig:
    """The command's sampling settings with its steering; --words known reads the run's words (with --corpus)."""
    if steering.words == "known":
        model.lexicon(paths, corpus_paths or ())
    return model.sample_config(**options, **{k: v for k, v in vars(steering).items() if k != "lexicon"})


def report_steering(stream: Generation, cfg: SampleConfig) -> None:
    """On stderr: what the steering changed, and any sample it ended early (and why)."""
    if not cfg.steering.active:
        return
    drawn = sum(len(t) for t in stream.texts)
    typer.echo(f"steering ({cfg.steering.describe()}) changed {stream.changed:,} of {drawn:,} characters drawn", err=True)
    for i, why in enumerate(stream.ended, 1):
        if why:
            typer.echo(f"sample {i} ended at {len(stream.texts[i - 1]):,} characters: {why}", err=True)


def print_required(model: api.CharModel, prime: str, cfg: SampleConfig, attempts: int | None, originality: bool) -> None:
    """`--require`: the samples holding every required word, whole (a word may come last); the counts on stderr."""
    if originality:
        raise typer.BadParameter("--originality does not combine with --require; drop one of them")
    found = model.require_samples(prime, cfg, attempts)
    for i, text in enumerate(found.texts, 1):
        if len(found.texts) > 1 or cfg.num_samples > 1:
            sys.stdout.write(f"--- sample {i} ---\n")
        sys.stdout.write(f"{prime}{text}\n")
    typer.echo(found.describe(), err=True)
