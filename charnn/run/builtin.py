"""The built-in model folder (`base`) as a run: its name and where it lies in this installation.

`base` names it wherever a run is read (`runs.resolve`): `charnn sample base`, `--from base`, ... No run may
take the name (`names.RESERVED`). What the model is and how it is built: `charnn/base/`.
"""


from __future__ import annotations

from importlib import resources
from pathlib import Path

NAME = "base"


def folder() -> Path:
    """Where the shipped model folder lies in this installation."""
    return Path(str(resources.files("charnn") / "builtin" / NAME))


def installed() -> bool:
    return (folder() / "model.safetensors").is_file() and (folder() / "config.json").is_file()
