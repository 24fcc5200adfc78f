"""`charnn export --format web`: a static site that generates text in the browser.

    index.html          the generator page (charnn/page/) with its browser backend: the server's page, run here
    model.onnx          the step (onnx.py), charnn-model.json and tokenizer.json beside it
    ort/                onnxruntime-web, vendored (vendor/onnxruntime-web: its version, licence, hashes)

Any static server will do (`python3 -m http.server` in the folder, a static host); nothing is fetched
from elsewhere. Opened as a file:// page the browser refuses to load the model, and the page says how
to serve it instead.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

from charnn import page as pages
from charnn.export import onnx as onnx_export
from charnn.export.exported import Exported
from charnn.run import checkpoint

ORT_VERSION = "1.30.0"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm.gz", "LICENSE")


def write(loaded: Any, folder: Path, source: dict[str, Any], text: str) -> Exported:
    """The ONNX export plus the page and the runtime, into `folder`."""
    result = onnx_export.write(loaded, folder, source, text)
    description_path = folder / onnx_export.DESCRIPTION
    description = json.loads(description_path.read_text(encoding="utf-8"))
    description["facts"] = facts(loaded)
    description_path.write_text(json.dumps(description, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    package = resources.files("charnn.export")
    (folder / "index.html").write_text(pages.generator("browser"), encoding="utf-8")
    ort = folder / "ort"
    ort.mkdir()
    vendor = package.joinpath("vendor", "onnxruntime-web")
    for name in ORT_FILES:
        data = vendor.joinpath(name).read_bytes()
        if name.endswith(".gz"):
            data, name = gzip.decompress(data), name.removesuffix(".gz")
        (ort / name).write_bytes(data)
    (ort / "VERSION").write_text(ORT_VERSION + "\n", encoding="utf-8")
    result.format = "web"
    return result


def facts(loaded: Any) -> dict[str, Any]:
    """What the page shows about the model."""
    vals = [r["val_loss"] for r in checkpoint.read_metrics(loaded.path) if isinstance(r.get("val_loss"), float)]
    return {"run": loaded.path.name, "step": loaded.step, "parameters": loaded.model.num_parameters(),
            "val_loss": min(vals) if vals else None}
