"""charnn plot: the plotted points are metrics.jsonl's; PNG and SVG files open and hold the expected series."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import pytest
from typer.testing import CliRunner

from charnn.cli import app
from charnn.insight import plot
from charnn.run import checkpoint
from tests.conftest import train_run

runner = CliRunner()


@pytest.fixture
def runs(words_file: Path) -> tuple[Path, Path]:
    a = train_run(words_file, name="a", max_steps=40, eval_every=10)
    b = train_run(words_file, name="b", cell="gru", max_steps=30, eval_every=10)
    return a, b


@pytest.mark.parametrize("x, key, unit", [("tokens", "tokens", 1e6), ("time", "elapsed", 60), ("step", "step", 1)])
def test_points_are_the_metrics_records(runs: tuple[Path, Path], x: str, key: str, unit: float) -> None:
    records = checkpoint.read_metrics(runs[0])
    c = plot.curve(runs[0], x)
    assert len(records) == 4
    assert c.val == [(r[key] / unit, r["val_loss"]) for r in records]
    assert c.train == [(r[key] / unit, r["train_loss"]) for r in records]
    assert c.best == min(c.val, key=lambda p: p[1])


def test_a_run_still_training_is_read_as_it_grows(runs: tuple[Path, Path]) -> None:
    metrics = runs[0] / checkpoint.METRICS
    records = checkpoint.read_metrics(runs[0])
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records[:2]) + '{"step": 30, "val_lo')  # mid-write
    assert [p[1] for p in plot.curve(runs[0]).val] == [r["val_loss"] for r in records[:2]]


def _svg_ids(path: Path) -> set[str]:
    return {el.get("id", "") for el in ET.parse(path).iter()}


def test_svg_and_png_hold_every_series(runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["plot", "a", "b", "--out", "both.svg", "--x", "step"])
    assert result.exit_code == 0, result.output
    ids = _svg_ids(tmp_path / "both.svg")
    assert {"train-0", "val-0", "best-0", "train-1", "val-1", "best-1"} <= ids
    assert "a: best validation loss" in result.output and "b: best validation loss" in result.output
    result = runner.invoke(app, ["plot", "a"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "checkpoints" / "a" / "loss.png"
    assert "wrote checkpoints/a/loss.png" in result.output
    pixels = matplotlib.image.imread(png)  # opens as an image: (height, width, RGBA)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    blue = (abs(pixels[..., 0] - 0x1F / 255) < 0.05) & (abs(pixels[..., 1] - 0x77 / 255) < 0.05) & \
        (abs(pixels[..., 2] - 0xB4 / 255) < 0.05)  # tab10's first colour: run a's lines
    assert blue.sum() > 200
    several = plot.default_out([tmp_path / "checkpoints" / "a", tmp_path / "checkpoints" / "b"])
    assert several == tmp_path / "checkpoints" / "loss-a-vs-b.png"


def test_terminal_drawing(runs: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["plot", "a", "--terminal", "--x", "time"])
    assert result.exit_code == 0, result.output
    assert "validation" in result.output and "best" in result.output and "training time" in result.output
    assert not (runs[0] / "loss.png").exists()
