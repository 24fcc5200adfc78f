"""The `CharnnError` tree: every user mistake is one of these.

Each message names the bad value and says what to do about it. The CLI prints
`error: <message>` on one line and exits with `exit_code` (2 for usage errors,
1 for everything else); library callers catch `CharnnError`.
"""

from __future__ import annotations


class CharnnError(Exception):
    """A problem the user can fix; the message says how."""

    exit_code = 1


class UsageError(CharnnError):
    """A bad option value or a contradictory combination of options."""

    exit_code = 2


def refuse(problems: list[str]) -> None:
    """A config's `validate()` list: the first problem, as one usage line; nothing when the list is empty."""
    if problems:
        raise UsageError(problems[0])


class CorpusError(CharnnError):
    """The corpus is missing, unreadable, empty, not UTF-8, or failed to download."""


class TokenizerError(CharnnError):
    """Text holds characters the vocabulary lacks, or a tokenizer file is invalid."""


class RunError(CharnnError):
    """A run directory is missing, incomplete, corrupt, or from an unknown format."""


class WriteError(RunError):
    """A file could not be written (disk full, read-only, quota, permissions); the previous version is intact."""


class DeviceError(CharnnError):
    """The requested device is not available on this machine."""


class TrainingError(CharnnError):
    """Training cannot continue (for example the loss keeps diverging)."""


class GenerationError(CharnnError):
    """Generation failed inside the model (for example it produced NaN): the model, not the request, is at fault."""


class ExportError(CharnnError):
    """An export cannot be made here (a missing optional package) or failed its own check."""
