"""`charnn export --format safetensors`: a portable model folder.

    model.safetensors   the weights (the `safetensors` format: a JSON header and raw tensors, nothing that runs)
    config.json         the run's config (model, training, corpus, lineage) and an "exported" record
    tokenizer.json      the vocabulary

No training state: a few MB. charnn reads the folder wherever it reads a run (`runs.load`),
so `sample`, `repl`, `serve`, `eval`, `inspect`, `train --from` and `load_run` take its path.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from charnn.export.exported import Exported
from charnn.run import checkpoint
from charnn.run.runs import LoadedRun

CARD_FILES = ("README.md", "LICENSE")


def exported_record(loaded: LoadedRun, which: str) -> dict[str, Any]:
    """Where the weights came from; a model folder's own record is kept (it has no metrics to read again)."""
    if checkpoint.is_model_folder(loaded.path) and loaded.config.exported is not None:
        return loaded.config.exported
    vals = [r["val_loss"] for r in checkpoint.read_metrics(loaded.path) if isinstance(r.get("val_loss"), (int, float))]
    return {"from": str(loaded.path.resolve()), "run": loaded.path.name, "checkpoint": which, "step": loaded.step,
            "best_val_loss": min(vals) if vals else None, "created": checkpoint.now_iso()}


def write(loaded: LoadedRun, which: str, folder: Path) -> Exported:
    from safetensors.torch import save_file

    weights = {k: v.detach().to("cpu").contiguous() for k, v in loaded.model.state_dict().items()}
    save_file(weights, str(folder / checkpoint.MODEL), metadata={"format": "charnn", "format_version":
                                                               str(checkpoint.FORMAT_VERSION)})
    replace(loaded.config, exported=exported_record(loaded, which)).save(folder)
    (folder / checkpoint.TOKENIZER).write_text(loaded.tokenizer.to_json(), encoding="utf-8")
    for card in CARD_FILES:  # a model folder's card and licence travel with it (the base model's do)
        if (loaded.path / card).is_file():
            (folder / card).write_bytes((loaded.path / card).read_bytes())
    return Exported(folder, "safetensors")
