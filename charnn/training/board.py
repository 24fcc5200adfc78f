"""TensorBoard: a run's scalars as event files, through `torch.utils.tensorboard`.

Each evaluation record (the same one `metrics.jsonl` gets) becomes scalars at its
optimizer step: loss/train, loss/val, bpc/val, lr and tokens_per_s. The
`tensorboard` package is optional (`pip install 'charnn[tensorboard]'`); `missing()`
says so before a run starts. On resume the writer purges events past the step the
run resumes from (written by a process killed after its last save), so the curves
continue without duplicates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INSIDE_RUN = ""  # `--tensorboard` without a folder: RUN/tensorboard
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_bpc": "bpc/val", "lr": "lr",
        "tokens_per_s": "tokens_per_s"}


def log_dir(spec: str, run_dir: Path) -> Path:
    """Where a run's event files go: RUN/tensorboard, or DIR/RUN-NAME for `--tensorboard DIR`.

    One DIR for several runs lets `tensorboard --logdir DIR` compare them.
    """
    return run_dir / "tensorboard" if spec == INSIDE_RUN else Path(spec) / run_dir.name


class Board:
    """The event writer of one training session; `record` takes a metrics record."""

    def __init__(self, folder: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        # purge_step: TensorBoard drops this run's older events at or after it, so a resumed
        # run does not draw twice the steps a killed session wrote after its last save.
        self.writer = SummaryWriter(str(folder), purge_step=start_step + 1 if start_step else None)

    def record(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, tag in TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, float(record[key]), step)
        self.writer.flush()  # evaluations are minutes apart: show each as it happens

    def close(self) -> None:
        self.writer.close()
