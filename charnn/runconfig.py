"""A run's `config.json`: what trained (model, schedule), on what (corpus), from what (parent), and how
the time went, as one `RunConfig` whose `to_json`/`from_json` hold every conversion of the format.

Readers that only need the model or a field (sampling, the server) read the dict through
`checkpoint.load_config`; whatever starts, resumes or fine-tunes a run goes through `RunConfig`,
so an older run's missing fields get their defaults here and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from charnn import checkpoint
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

    def to_json(self) -> dict[str, Any]:
        return {"model": asdict(self.model), "train": asdict(self.train), "corpus": self.corpus,
                "created": self.created, "recipe": self.recipe, "distributed": self.distributed,
                "parent": self.parent, "time": self.time}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> RunConfig:
        """Validate and convert `data` (a config.json read by `checkpoint.load_config`) from `where`."""
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
        return cls(checkpoint.model_config_of(data), cfg, corpus, str(data.get("created", "")),
                   data.get("recipe"), data.get("distributed"), data.get("parent"), list(data.get("time") or []))

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig:
        return cls.from_json(checkpoint.load_config(run_dir), run_dir)

    def save(self, run_dir: Path) -> None:
        checkpoint.write_json(run_dir / checkpoint.CONFIG, {"format_version": checkpoint.FORMAT_VERSION,
                                                            **self.to_json()})

    @property
    def voices(self) -> list[str]:
        """A voiced run's voice of each source, in order ([] for a run trained without voices)."""
        return [str(v) for v in self.corpus.get("voices") or []]

    @property
    def sources(self) -> list[str]:
        """The corpus sources the run trained on, in order (a built-in stays a name)."""
        return list(self.corpus.get("sources") or [self.corpus.get("source", "")])
