"""`charnn export --format safetensors`: a portable model folder.

    model.safetensors   the weights (the `safetensors` format: a JSON header and raw tensors, nothing that runs)
    config.json         the run's config (model, training, corpus, lineage) and an "exported" record
    tokenizer.json      the vocabulary

No training state: a few MB. charnn reads the folder wherever it reads a run (`checkpoint.load`),
so `sample`, `repl`, `serve`, `eval`, `inspect`, `train --from` and `load_run` take its path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charnn import checkpoint
from charnn.checkpoint import LoadedRun
from charnn.export import Exported


def exported_record(loaded: LoadedRun, which: str) -> dict[str, Any]:
    return {"from": str(loaded.path.resolve()), "run": loaded.path.name, "checkpoint": which, "step": loaded.step,
            "created": checkpoint.now_iso()}


def write(loaded: LoadedRun, which: str, folder: Path) -> Exported:
    from safetensors.torch import save_file

    weights = {k: v.detach().to("cpu").contiguous() for k, v in loaded.model.state_dict().items()}
    save_file(weights, str(folder / checkpoint.MODEL), metadata={"format": "charnn", "format_version":
                                                               str(checkpoint.FORMAT_VERSION)})
    config = {**loaded.config, "exported": exported_record(loaded, which)}
    (folder / checkpoint.CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / checkpoint.TOKENIZER).write_text(loaded.tokenizer.to_json(), encoding="utf-8")
    return Exported(folder, "safetensors")
