"""Lineage: a run that starts from another run's model (fine-tuning, `charnn train --from RUN`).

The parent is read, never written: its weights load on the CPU whatever device trained them, and
`grow` gives the child a vocabulary that only grows. The parent's characters keep their ids; the
new corpus's other characters are appended (`CharTokenizer.grown`). Their new rows start so that
the child, at step 0, is the parent on old text:

- embedding: the mean of the parent's rows (a 'generic character' the recurrence has seen the like of);
- head: weight 0 and bias log(f) + mean logsumexp of the parent's logits over the new training text,
  where f is the character's frequency there. Its logit is then the same at every position, so the
  old characters' probabilities relative to each other are exactly the parent's, and the new one is
  predicted at about its frequency (p = e^b / (Z_old + sum e^b'), and the mean of log Z_old is what b
  adds to log f) until training teaches it context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from charnn.errors import RunError, UsageError
from charnn.model.cells import HEADED
from charnn.model.network import CharRNN, ModelConfig
from charnn.run import builtin, checkpoint, runs
from charnn.run.config import RunConfig
from charnn.text.tokenizer import CharTokenizer

WHICH = ("best", "latest")
ARCHITECTURE = ("cell", "layers", "hidden", "embed", "heads")  # what a child cannot change
LSE_CHARS = 4096  # characters of the new training text the parent reads to place the new characters' bias


@dataclass
class Parent:
    """A run's model as a starting point: its config, vocabulary and weights (on the CPU)."""

    name: str
    path: Path
    which: str  # "best" or "latest"
    config: RunConfig
    model_config: ModelConfig
    tokenizer: CharTokenizer
    weights: dict[str, Tensor]
    step: int

    @property
    def val_loss(self) -> float | None:
        vals = [r["val_loss"] for r in checkpoint.read_metrics(self.path) if isinstance(r.get("val_loss"), float)]
        return min(vals) if vals else None

    def record(self, tokenizer: CharTokenizer) -> dict[str, Any]:
        """config.json's "parent": where the child came from, and what growing its vocabulary added."""
        added = tokenizer.chars[self.tokenizer.vocab_size:]
        return {"name": self.name, "path": str(self.path.resolve()), "checkpoint": self.which, "step": self.step,
                "best_val_loss": self.val_loss, "fingerprint": self.config.corpus.get("fingerprint"),
                "vocab_size": self.tokenizer.vocab_size, "characters_added": len(added), "added": "".join(added)}


def split_spec(spec: str) -> tuple[str, str]:
    """'RUN' -> (RUN, 'best'); 'RUN:latest' / 'RUN:best' -> (RUN, which)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail in WHICH and head:
        return head, tail
    return spec, "best"


def load_parent(spec: str, checkpoints_dir: Path) -> Parent:
    """The run `spec` names (a run name, a run folder, with an optional ':best' or ':latest'), read-only."""
    run, which = split_spec(spec)
    folder = Path(run).expanduser()
    if run != builtin.NAME and not (checkpoints_dir / run / checkpoint.CONFIG).is_file() and folder.is_dir() \
            and not (folder / checkpoint.CONFIG).is_file():
        raise RunError(f"--from '{run}': that folder is not a charnn run (it has no {checkpoint.CONFIG}) — give a run "
                       "name from `charnn runs` or a run folder")
    try:
        run_dir = runs.resolve(run, checkpoints_dir)
    except RunError as e:
        raise RunError(f"--from: {e}") from None
    loaded = runs.load(run_dir, which, "cpu")  # any parent loads on the CPU, whatever trained it
    if loaded.model.config.vocab_size != loaded.tokenizer.vocab_size:  # pragma: no cover - load checks it
        raise RunError(f"run '{run_dir}' is damaged")
    weights = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    return Parent(run_dir.name, run_dir, which, loaded.config, loaded.model.config, loaded.tokenizer, weights,
                  loaded.step)


def check_architecture(parent: Parent, given: dict[str, Any]) -> None:
    """Refuse architecture options (`given`: option name -> value, None when not set) that contradict the parent."""
    cfg = parent.model_config
    wrong = [name for name in ARCHITECTURE if given.get(name) is not None and given[name] != getattr(cfg, name)
             and not (name == "heads" and cfg.cell not in HEADED)]
    if wrong:
        have = ", ".join(f"--{n} {getattr(cfg, n)}" for n in ARCHITECTURE if n != "heads" or cfg.cell in HEADED)
        raise UsageError(f"{', '.join(f'--{n} {given[n]}' for n in wrong)} contradicts the model of '{parent.name}' "
                         f"({have}) — fine-tuning keeps the parent's architecture; drop the option(s)")


def child_config(parent: Parent, vocab_size: int, dropout: float | None, locked_dropout: bool | None,
                 voices: Sequence[str] = ()) -> ModelConfig:
    """The parent's model with the grown vocabulary, the dropout the child trains with (default: the parent's), and
    its voices followed by those of `voices` it lacks (a voice the parent had keeps its row)."""
    cfg = parent.model_config
    return replace(cfg, vocab_size=vocab_size, dropout=cfg.dropout if dropout is None else dropout,
                   locked_dropout=cfg.locked_dropout if locked_dropout is None else locked_dropout,
                   voices=cfg.voices + tuple(v for v in voices if v not in cfg.voices))


def grow(parent: Parent, config: ModelConfig, train_ids: np.ndarray) -> CharRNN:
    """The child model: the parent's weights, with new rows for the characters appended to its vocabulary
    (see the module's docstring). `train_ids` is the new training split in the grown ids."""
    old, new = parent.model_config.vocab_size, config.vocab_size
    weights = dict(parent.weights)
    emb, head_w, head_b = weights["embedding.weight"], weights["head.weight"], weights["head.bias"]  # (V, E), (V, H), (V,)
    added = new - old
    weights["embedding.weight"] = torch.cat([emb, emb.mean(0, keepdim=True).expand(added, -1)])
    weights["head.weight"] = torch.cat([head_w, head_w.new_zeros(added, head_w.shape[1])])
    weights["head.bias"] = torch.cat([head_b, head_b.new_zeros(added)])
    if config.voices:
        weights["voice_table.weight"] = _grown_voices(weights.get("voice_table.weight"), len(config.voices),
                                                      config.embed)
    model = CharRNN(config)
    model.load_state_dict(weights)
    if added:
        with torch.no_grad():
            model.head.bias[old:] = _new_bias(model, old, train_ids)
    return model


def _grown_voices(table: Tensor | None, voices: int, embed: int) -> Tensor:
    """The child's voice table (voices + 1, E): the parent's rows (none: a parent without voices writes as a zero
    voice does), then one for each new voice, a copy of the parent's "no voice": the child writes a new voice
    exactly as its parent wrote with no voice given, until it learns it."""
    table = table if table is not None else torch.zeros(1, embed)
    return torch.cat([table, table[:1].expand(voices + 1 - len(table), -1)])


def _new_bias(model: CharRNN, old: int, train_ids: np.ndarray) -> Tensor:
    """log(frequency in the new training text) + the parent's mean log-normaliser over its first characters."""
    new = model.config.vocab_size
    counts = np.bincount(np.asarray(train_ids), minlength=new)[old:].astype(np.float64)  # (added,)
    total = max(len(train_ids), 1)
    freq = np.maximum(counts, 0.5) / total  # a character only the validation split has: half a count
    ids = torch.from_numpy(np.asarray(train_ids[:LSE_CHARS], dtype=np.int64))[None]  # (1, T)
    lse = 0.0
    if ids.shape[1]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits, _ = model(ids, model.init_state(1))  # (1, T, V)
            # Each position's normaliser in the model's float, their mean on the host in float64 (no float64 on MPS).
            lse = float(torch.logsumexp(logits[0, :, :old], dim=-1).cpu().numpy().astype(np.float64).mean())
        model.train(was_training)
    return torch.tensor([math.log(f) + lse for f in freq], dtype=model.head.bias.dtype)
