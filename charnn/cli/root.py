"""The root of the `charnn` command: the Typer app, one-line errors, the entry point, shared options.

Every `CharnnError` becomes one line on stderr (`error: …`) and its exit code
(2 for usage errors, 1 otherwise); `--debug` shows the traceback instead. Under
torchrun every process runs this same command: one process per machine prints
an error (the others meet the same one), and only rank 0 prints progress.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from charnn import __version__, api, distributed
from charnn.errors import CharnnError
from charnn.recipe import budget

app = typer.Typer(
    help="Character-level RNN/LSTM/GRU text generation: train on any text, then sample or chat.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
F = TypeVar("F", bound=Callable[..., Any])
# click's ClickException, from wherever this Typer takes click (recent Typer versions vendor it).
_CLICK_ERROR: type[Any] = typer.BadParameter.__mro__[2]
_debug = False
_process_started: float | None = None


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


def current_launch() -> distributed.Launch:
    try:
        return distributed.Launch.from_env()
    except CharnnError:
        return distributed.Launch()  # the malformed environment is what gets reported


# Under torchrun every process hits a user error together, and torchrun stops the others as soon as one exits: a
# process that does not print waits this long first, so the one that prints is not stopped before it has.
REPORT_GRACE_S = 2.0


def _report(line: str) -> None:
    """Print a user error once per machine; hand it to torchrun's failure report too."""
    launch = current_launch()
    if launch.reports_errors:
        typer.echo(line, err=True)
    if launch.under_torchrun:
        distributed.record_error(line)
        if not launch.reports_errors:
            time.sleep(REPORT_GRACE_S)


def run() -> None:
    """The `charnn` entry point (also `python -m charnn`, which torchrun starts).

    Runs the Typer app as a plain click command so that click's own usage errors (an
    unknown option, a value that is not a number) are printed once per machine under
    torchrun too, instead of once per process.
    """
    global _process_started
    _process_started = time.perf_counter() - budget.process_age()  # `--time` counts the interpreter's start-up too
    command = typer.main.get_command(app)
    try:
        code = command.main(args=_optional_values(sys.argv[1:]), prog_name="charnn", standalone_mode=False)
    except _CLICK_ERROR as e:  # a usage error: an unknown option, a value that is not a number
        launch = current_launch()
        if launch.reports_errors:
            e.show()
        if launch.under_torchrun:
            distributed.record_error(f"error: {e.format_message()}")
            if not launch.reports_errors:
                time.sleep(REPORT_GRACE_S)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def command_started() -> float:
    """When this command started, as a `time.perf_counter()` reading: the process's start when run as
    `charnn` (the entry point), else now (a command invoked in-process, e.g. by a test runner)."""
    return _process_started if _process_started is not None else time.perf_counter()


def _optional_values(args: list[str]) -> list[str]:
    """`--tensorboard` followed by another option (or nothing) means "no folder given": `--tensorboard=`.

    The option's value is optional, which click options cannot say; an empty value stands for
    "inside the run" (`board.INSIDE_RUN`).
    """
    return [f"{a}=" if a == "--tensorboard" and (i + 1 == len(args) or args[i + 1].startswith("-")) else a
            for i, a in enumerate(args)]


def paths_for(checkpoints_dir: Path, corpora_dir: Path) -> api.Paths:
    return api.Paths(checkpoints_dir, corpora_dir)


CKPT_DIR = typer.Option(api.DEFAULT_CHECKPOINTS, "--checkpoints-dir", help="Folder holding run directories.")
CORPORA_DIR = typer.Option(api.DEFAULT_CORPORA, "--corpora-dir", help="Folder for built-in corpora and the encoding cache.")
DEVICE = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")


def set_threads(threads: int) -> None:
    from charnn import device

    device.set_threads(threads)
