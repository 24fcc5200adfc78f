"""charnn train --tensorboard: event files TensorBoard's own reader loads, with the expected tags and steps."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charnn.cli import _optional_values, app
from charnn.run import checkpoint
from charnn.training.board import TAGS

runner = CliRunner()
TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--seq-len", "16", "--device", "cpu",
        "--eval-every", "10", "-q"]


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_continue_across_a_resume_without_duplicates(words_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, _optional_values(["train", str(words_file), "--name", "t", "--max-steps", "20",
                                                   *TINY, "--tensorboard"]))
    assert result.exit_code == 0, result.output
    run = tmp_path / "checkpoints" / "t"
    saved = tmp_path / "latest-at-20.pt"
    shutil.copy(run / checkpoint.LATEST, saved)
    result = runner.invoke(app, ["train", "--resume", "t", "--max-steps", "40", "-q"])  # keeps --tensorboard
    assert result.exit_code == 0, result.output
    # A process killed after writing events for steps 30 and 40 but before saving them: resume from 20 again.
    shutil.copy(saved, run / checkpoint.LATEST)
    result = runner.invoke(app, ["train", "--resume", "t", "--max-steps", "50", "-q"])
    assert result.exit_code == 0, result.output
    got = scalars(run / "tensorboard")
    assert set(got) == set(TAGS.values())
    records = checkpoint.read_metrics(run)
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50]
    assert got["loss/val"] == [(r["step"], pytest.approx(r["val_loss"], rel=1e-6)) for r in records]
    assert [s for s, _ in got["lr"]] == [10, 20, 30, 40, 50]  # once each: the first 30 and 40 were purged


def test_a_folder_for_several_runs_and_the_option_before_another(words_file: Path, tmp_path: Path) -> None:
    # `--tensorboard -q`: -q is an option, not the folder (the normalisation `charnn` applies to argv)
    done = subprocess.run([sys.executable, "-m", "charnn", "train", str(words_file), "--name", "u", "--max-steps", "10",
                           *TINY[:-1], "--tensorboard", "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "-q").exists() and (tmp_path / "checkpoints" / "u" / "tensorboard").is_dir()
    result = runner.invoke(app, ["train", str(words_file), "--name", "v", "--max-steps", "10", *TINY,
                                 "--tensorboard", "boards"])
    assert result.exit_code == 0, result.output
    assert [s for s, _ in scalars(tmp_path / "boards" / "v")["loss/val"]] == [10]


def test_without_the_package_one_line_says_how_to_get_it(words_file: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result = runner.invoke(app, _optional_values(["train", str(words_file), "--name", "w", "--max-steps", "10", *TINY,
                                                   "--tensorboard"]))
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --tensorboard needs the tensorboard package — install it with: "
                                     "pip install 'charnn[tensorboard]' (or pip install tensorboard)")
    assert not (tmp_path / "checkpoints").exists()
