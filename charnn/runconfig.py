"""A run's `config.json`: what trained (model, schedule), on what (corpus), from what (parent), how the time
went, and (a model folder) what its export recorded, as one `RunConfig` whose `to_json`/`from_json` hold every
conversion of the format.

`RunConfig` is the only reader and writer of config.json: whatever samples, serves, exports, starts,
resumes or fine-tunes a run reads it through `RunConfig.load`, so an older run's missing fields get their
defaults here and nowhere else, and a damaged file is refused here in one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from charnn import checkpoint
from charnn.checkpoint import CONFIG, FORMAT_VERSION
from charnn.errors import RunError
from charnn.model import ModelConfig
from charnn.train import TrainConfig

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
