"""A run's `config.json`: what trained (model, schedule), on what (corpus), from what (parent), how the time
went, and (a model folder) what its export recorded, as one `RunConfig` whose `to_json`/`from_json` hold every
conversion of the format.

`RunConfig` is the only reader and writer of config.json: whatever samples, serves, exports, starts,
resumes or fine-tunes a run reads it through `RunConfig.load`, so an older run's missing fields get their
defaults here and nowhere else, and a damaged file is refused here in one line.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from charnn.errors import RunError
from charnn.model.network import ModelConfig
from charnn.model.voices import NO_VOICE_SHARE
from charnn.run import checkpoint
from charnn.run.checkpoint import CONFIG, FORMAT_VERSION

TIME_PATIENCE = 3  # `charnn train --time`'s default --patience: validation passes without a new best


def tensorboard_missing() -> str | None:
    """The problem line when the tensorboard package is not installed, else None."""
    if importlib.util.find_spec("tensorboard") is None:
        return ("--tensorboard needs the tensorboard package — install it with: pip install 'charnn[tensorboard]' "
                "(or pip install tensorboard)")
    return None


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains: `charnn train`'s defaults (a `--time` budget chooses some of them, recipe/plan.py; fine-tuning's
    are recipe.FINE_TUNE's overrides of these). Frozen: limits that change (`--resume`, the budget's deadline) make a
    new config with `dataclasses.replace`, so no caller's config changes under it."""

    batch_size: int = 64
    seq_len: int = 64  # twice the updates of 128 for the same characters: -0.045 nats at 4m (RECIPES.md)
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 50  # steps of linear warm-up
    clip: float = 1.0
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds of training (evaluation included); the loop keeps back the final pass's
    eval_pass_estimate: float = 0.0  # seconds one validation pass is expected to take, until one is timed (recipe)
    eval_every: int = 200
    # After this many evaluations without a new best, anneal for one interval, stop, keep the best (0: never);
    # None: TIME_PATIENCE under a time budget, else 0 (`stops_after`).
    patience: int | None = None
    val_frac: float = 0.1
    seed: int = 1337
    amp: bool = False  # bf16 autocast for the training steps, on CUDA or CPU (see amp_dtype); evaluation stays fp32
    tensorboard: str | None = None  # also write TensorBoard scalars (board.log_dir); None: off
    # Evaluate (and keep as best) an exponential moving average of the weights; 0: off. 0.995: 4m 1.4737 -> 1.4688,
    # 10m 1.4358 -> 1.4329 (RECIPES.md #21-22).
    ema: float = 0.995
    epoch_offset: bool = True  # each epoch after the first shifts the stream layout (Streams.epoch_offset)
    # A voiced run (voices.py): each voice's training text repeated to the longest's length, so the voices train
    # in equal shares instead of in proportion to their text (`runcorpus.prepare_voices`).
    balance: bool = False
    no_voice_share: float = NO_VOICE_SHARE  # of the training windows, the share that learns with no voice given

    def validate(self) -> list[str]:
        problems = []
        for name in ("batch_size", "seq_len", "eval_every"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"--lr {self.lr} must be a positive number")
        if self.weight_decay < 0:
            problems.append(f"--weight-decay {self.weight_decay} must be 0 or more")
        if self.warmup < 0 or self.stops_after < 0:
            problems.append("--warmup and --patience must be 0 or more")
        if not self.clip > 0:
            problems.append(f"--clip {self.clip} must be positive")
        if not 0.0 <= self.ema < 1.0:
            problems.append(f"--ema {self.ema} must be in [0, 1) (0: off; 0.999 averages ~1000 steps)")
        if not 0.0 <= self.no_voice_share < 1.0:
            problems.append(f"no_voice_share {self.no_voice_share} must be in [0, 1)")
        if not 0.0 < self.val_frac < 1.0:
            problems.append(f"--val-frac {self.val_frac} must be between 0 and 1 (exclusive)")
        for name, value in (("epochs", self.epochs), ("max_steps", self.max_steps), ("time", self.time_budget)):
            if value is not None and not value > 0:
                problems.append(f"--{name.replace('_', '-')} {value} must be positive")
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            problems.append("no stopping rule — give --time, --max-steps or --epochs")
        if self.tensorboard is not None and (why := tensorboard_missing()):
            problems.append(why)
        return problems

    @property
    def stops_after(self) -> int:
        """Validation passes without a new best before the run anneals and stops (0: never)."""
        if self.patience is not None:
            return self.patience
        return TIME_PATIENCE if self.time_budget else 0



# Fields of TrainConfig newer than some runs, and the value those runs trained with (not today's default:
# a run from before the weight average or patience keeps training without them).
_TRAIN_BEFORE: dict[str, object] = {"epoch_offset": False, "ema": 0.0, "patience": 0}


@dataclass
class RunConfig:
    model: ModelConfig
    train: TrainConfig
    corpus: dict[str, Any]  # sources, fingerprint, sizes, how the sources were read, the manifest
    created: str = field(default_factory=checkpoint.now_iso)
    recipe: dict[str, Any] | None = None  # the --time recipe's choice and readings (recipe.record)
    distributed: dict[str, Any] | None = None  # {"world_size", "backend"} of the last session
    parent: dict[str, Any] | None = None  # the run this one was fine-tuned from (lineage.record)
    time: list[dict[str, float]] = field(default_factory=list)  # per session: how the budget went (budget.py)
    exported: dict[str, Any] | None = None  # a model folder's export record (export/safetensors.py, base/release.py)

    def to_json(self) -> dict[str, Any]:
        data = {"model": asdict(self.model), "train": asdict(self.train), "corpus": self.corpus,
                "created": self.created, "recipe": self.recipe, "distributed": self.distributed,
                "parent": self.parent, "time": self.time}
        return data if self.exported is None else {**data, "exported": self.exported}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> RunConfig:
        """Validate and convert `data` (config.json's content) of the run at `where`."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise RunError(f"run '{where}' has format version {version!r}, this charnn reads version "
                           f"{FORMAT_VERSION} — use the charnn version that wrote it, or retrain")
        if not isinstance(data.get("model"), dict) or not isinstance(data.get("train"), dict):
            raise RunError(f"'{where / CONFIG}' lacks its model or train section — the run is damaged; retrain it")
        known = {f.name for f in fields(TrainConfig)}
        train = data["train"]
        try:
            if set(train) - known:
                raise TypeError(sorted(set(train) - known)[0])
            cfg = TrainConfig(**{**_TRAIN_BEFORE, **train})
        except TypeError:
            raise RunError(f"'{where / checkpoint.CONFIG}' has an unknown train section — the run is damaged") from None
        corpus = data.get("corpus")
        if not isinstance(corpus, dict):
            raise RunError(f"'{where / checkpoint.CONFIG}' lacks its corpus section — the run is damaged")
        exported = data.get("exported")
        return cls(model_config_of(data["model"]), cfg, corpus, str(data.get("created", "")), data.get("recipe"),
                   data.get("distributed"), data.get("parent"), list(data.get("time") or []),
                   exported if isinstance(exported, dict) else None)

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig:
        return cls.from_json(checkpoint.read_json(run_dir / CONFIG), run_dir)

    def save(self, run_dir: Path) -> None:
        checkpoint.write_json(run_dir / CONFIG, {"format_version": FORMAT_VERSION, **self.to_json()})

    @property
    def voices(self) -> list[str]:
        """A voiced run's voice of each source, in order ([] for a run trained without voices)."""
        return [str(v) for v in self.corpus.get("voices") or []]

    @property
    def sources(self) -> list[str]:
        """The corpus sources the run trained on, in order (a built-in stays a name)."""
        return list(self.corpus.get("sources") or [self.corpus.get("source", "")])


def model_config_of(raw: dict[str, Any]) -> ModelConfig:
    """config.json's "model" section as a `ModelConfig`, every field checked (a damaged run is one line)."""
    types = {"vocab_size": int, "cell": str, "layers": int, "hidden": int, "embed": int, "dropout": float, "heads": int}
    # Fields newer than some runs: before sLSTM there was no heads, before locked dropout no locked_dropout, before
    # voices no voices.
    optional = {"heads": ModelConfig.heads, "locked_dropout": False, "voices": ()}
    try:
        values: dict[str, Any] = {f.name: raw[f.name] if f.name in raw or f.name not in optional else optional[f.name]
                                  for f in fields(ModelConfig)}
        for name, kind in types.items():
            ok = isinstance(values[name], (int, float) if kind is float else kind) and not isinstance(values[name], bool)
            if not ok:
                raise TypeError(name)
        if not isinstance(values["locked_dropout"], bool):
            raise TypeError("locked_dropout")
        if not isinstance(values["voices"], (list, tuple)) or not all(isinstance(v, str) for v in values["voices"]):
            raise TypeError("voices")
        values["voices"] = tuple(values["voices"])
        model_config = ModelConfig(**values)
    except (KeyError, TypeError) as e:
        raise RunError(f"config.json has a missing or mistyped model field ({e}) — the run is damaged; retrain it") from None
    if problems := model_config.validate():
        raise RunError(f"config.json holds an invalid model ({problems[0]}) — the run is damaged; retrain it")
    return model_config
