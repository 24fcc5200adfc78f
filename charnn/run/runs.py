"""The runs on disk: finding one by name (or `base`, or the newest), listing them, and loading one's model and
vocabulary for sampling, evaluation, serving or export. The files are checkpoint.py's; what config.json says is
run/config.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charnn.errors import RunError
from charnn.model.network import CharRNN
from charnn.run import builtin, checkpoint
from charnn.run.config import RunConfig
from charnn.text.tokenizer import CharTokenizer


def resolve(spec: str | None, checkpoints_dir: Path) -> Path:
    """A run name under `checkpoints_dir`, a path to a run directory, `base` (the built-in model), or (None) the
    newest run."""
    if spec is None:
        runs = find_runs(checkpoints_dir)
        if not runs:
            raise RunError(f"no runs in '{checkpoints_dir}' — use the built-in model (charnn sample base) or train "
                           "one: charnn train CORPUS (for example: charnn train shakespeare --time 5m)")
        return max(runs, key=_modified)
    if spec == builtin.NAME:
        if not builtin.installed():
            raise RunError(f"the built-in model is missing from this installation ('{builtin.folder()}') — "
                           "reinstall charnn")
        return builtin.folder()
    for candidate in (checkpoints_dir / spec, Path(spec).expanduser()):
        if (candidate / checkpoint.CONFIG).is_file():
            return candidate
    names = ", ".join(sorted(r.name for r in find_runs(checkpoints_dir))[:8]) or "none yet"
    raise RunError(f"run '{spec}' not found — give a run name under '{checkpoints_dir}' ({names}) "
                   "or the path of a run directory; `charnn runs` lists them")


def find_runs(checkpoints_dir: Path) -> list[Path]:
    if not checkpoints_dir.is_dir():
        return []
    return sorted(p for p in checkpoints_dir.iterdir() if (p / checkpoint.CONFIG).is_file())


def _modified(run_dir: Path) -> float:
    return max((p.stat().st_mtime for p in run_dir.iterdir() if p.is_file()), default=0.0)


@dataclass
class RunSummary:
    name: str
    path: Path
    cell: str
    layers: int
    hidden: int
    parameters: int
    steps: int
    best_val: float | None
    modified: float
    parent: str | None = None  # the run it was fine-tuned from (config.json's "parent")
    voices: tuple[str, ...] = ()  # the voices it writes in (voices.py)


def summarize(run_dir: Path) -> RunSummary:
    config = RunConfig.load(run_dir)
    model_config = config.model
    metrics = checkpoint.read_metrics(run_dir)
    vals = [r["val_loss"] for r in metrics if isinstance(r.get("val_loss"), (int, float))]
    exported = config.exported
    if not metrics and exported is not None:  # a model folder: what its export recorded
        metrics = [{"step": exported.get("step", 0)}]
        if isinstance(exported.get("best_val_loss"), (int, float)):
            vals = [exported["best_val_loss"]]
    params = CharRNN(model_config).num_parameters()
    parent = config.parent
    return RunSummary(run_dir.name, run_dir, model_config.cell, model_config.layers, model_config.hidden,
                      params, max((r.get("step", 0) for r in metrics), default=0),
                      min(vals) if vals else None, _modified(run_dir),
                      f"{parent.get('name')}@{parent.get('step')}" if isinstance(parent, dict) else None,
                      model_config.voices)


@dataclass
class LoadedRun:
    path: Path
    config: RunConfig
    model: CharRNN
    tokenizer: CharTokenizer
    step: int


def load(run_dir: Path, which: str = "best", device: torch.device | str = "cpu") -> LoadedRun:
    """Load a run's model and vocabulary for sampling or evaluation (weights on `device`)."""
    if which not in ("best", "latest"):
        raise RunError(f"--checkpoint '{which}' is unknown — use best or latest")
    config = RunConfig.load(run_dir)
    model_config = config.model
    tokenizer = checkpoint.load_tokenizer(run_dir)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise RunError(f"tokenizer.json has {tokenizer.vocab_size} characters but config.json says "
                       f"{model_config.vocab_size} — the run is damaged; retrain it")
    if checkpoint.is_model_folder(run_dir):
        if which != "best":
            raise RunError(f"'{run_dir}' is a model folder: it holds one set of weights, no latest — drop "
                           "--checkpoint latest (or ':latest')")
        step = (config.exported or {}).get("step", 0)
        payload: dict[str, Any] = {"model": checkpoint.load_safetensors(run_dir / checkpoint.MODEL, device), "step": step}
    else:
        payload = checkpoint.load_tensors(run_dir / (checkpoint.BEST if which == "best" else checkpoint.LATEST), device)
    model = CharRNN(model_config).to(device)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise RunError(f"the weights in '{run_dir}' do not fit its config ({first}) — the run is damaged; retrain it") from None
    model.eval()
    return LoadedRun(run_dir, config, model, tokenizer, int(payload.get("step", 0)))
