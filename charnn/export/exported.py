"""What an export wrote and what its check measured: the result every format returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Exported:
    """What an export wrote, and what its check measured."""

    folder: Path
    format: str
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    max_diff: float | None = None  # onnx, web: largest |logit| difference, onnxruntime against PyTorch
    steps_checked: int = 0  # characters the check stepped through

    @property
    def size(self) -> int:
        return sum(self.files.values())
