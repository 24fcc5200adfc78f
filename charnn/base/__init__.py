"""The base model: a GRU that charnn trained on ~30 MB of free English (`corpus.py` assembles the text,
`release.py` turns the run into the shipped folder), inside the package as a model folder
(`charnn/builtin/base/`: half-precision safetensors, config, vocabulary and its model card).

`base` names it wherever a run is read (`runs.resolve`): `charnn sample base`, `--from base`, ...
No run may take the name (`names.RESERVED`).
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
