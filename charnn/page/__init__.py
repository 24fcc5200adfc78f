"""The pages charnn shows a person, with one stylesheet (style.css, inlined so each page is one file that opens
offline):

    generator.html   the generator: prime, sampling settings, voices, text or a list of items. One page, two
                     backends, chosen by how it is served: `charnn serve` answers `/` with the "server" page
                     (it talks to the API beside it), `charnn export --format web` writes the "browser" page
                     (it runs the exported ONNX step in onnxruntime-web from its own folder)
    inspector.html   `charnn inspect`'s report (inspector.py fills in its numbers)
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

Backend = Literal["server", "browser"]


def template(name: str) -> str:
    """Page `name` (generator, inspector) with the shared stylesheet in place of its `/*STYLE*/` mark."""
    folder = resources.files("charnn.page")
    style = folder.joinpath("style.css").read_text(encoding="utf-8")
    return folder.joinpath(f"{name}.html").read_text(encoding="utf-8").replace("/*STYLE*/", style, 1)


def generator(backend: Backend) -> str:
    """The generator page for `backend`; the page reads it from its root element's `data-backend`."""
    if backend not in ("server", "browser"):
        raise ValueError(f"unknown backend {backend!r}")
    return template("generator").replace('data-backend="server"', f'data-backend="{backend}"', 1)
