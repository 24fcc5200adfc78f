"""Names a user gives (runs, export folders, served models): one path component each, checked in one place.

A name is letters, digits, `-`, `_` and `.`, not starting with `.`: it can never climb out of
`checkpoints/` (`../x`), nest (`a/b`), hide (`.x`) or collide with a built-in model (`base`).
"""

from __future__ import annotations

import re

from charnn.errors import UsageError

RULE = "letters, digits, '-', '_' and '.', not starting with '.'"
RESERVED = ("base",)  # built-in models: `charnn sample base` must always mean the shipped one
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def is_valid(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and len(name) <= 200


def check(name: str, option: str = "--name", reserved: bool = True) -> str:
    """`name` if it is a valid name for `option`, else a one-line UsageError naming the rule."""
    if not is_valid(name):
        raise UsageError(f"{option} '{name}' is not a valid name — use {RULE} (at most 200 characters)")
    if reserved and name in RESERVED:
        raise UsageError(f"{option} '{name}' is the name of charnn's built-in model — pick another name")
    return name
