"""Patience: a run whose validation has turned anneals for one interval, stops, and ends on its best weights."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charnn.run import checkpoint
from charnn.training.schedule import Progress, learning_rate
from tests.conftest import tiny_train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def overfits(tmp_path: Path) -> Path:
    """2 KB of random letters, then 1 KB more for validation: nothing to learn but the training text itself."""
    rng = random.Random(3)
    path = tmp_path / "noise.txt"
    path.write_text("".join(rng.choice("abcdefgh \n") for _ in range(3000)), encoding="utf-8")
    return path


def charnn(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "charnn", *args], capture_output=True, text=True, env=env, timeout=300)


TRAIN = ("--cell", "lstm", "--layers", "1", "--hidden", "128", "--embed", "16", "--dropout", "0", "--batch-size", "8",
         "--seq-len", "32", "--lr", "1e-2", "--warmup", "5", "--eval-every", "10", "--device", "cpu")


def test_the_cool_down_anneals_to_the_floor_over_one_interval() -> None:
    cfg = tiny_train(lr=1e-2, eval_every=20, patience=2)
    p = Progress(step=100, cooldown_from=100, cooldown_lr=6e-3)
    assert learning_rate(cfg, p, 50) == pytest.approx(6e-3)
    p.step = 110
    assert learning_rate(cfg, p, 50) == pytest.approx((6e-3 + 1e-3) / 2)
    p.step = 120
    assert learning_rate(cfg, p, 50) == pytest.approx(1e-3)  # the schedule's floor, 0.1 x lr


@pytest.mark.slow
def test_a_run_that_overfits_stops_early_on_its_best_weights(overfits: Path) -> None:
    result = charnn("train", str(overfits), "--max-steps", "3000", "--patience", "2", "--name", "noise", *TRAIN)
    assert result.returncode == 0, result.stderr
    assert "patience: after 2 validation passes without a new best" in result.stdout + result.stderr
    run = Path("checkpoints/noise")
    latest = checkpoint.load_tensors(run / checkpoint.LATEST)
    best = checkpoint.load_tensors(run / checkpoint.BEST)
    p = Progress(**latest["progress"])
    assert p.stopped_early and p.step < 3000 and p.best_step == best["step"] < p.step
    assert "stopped early at " in result.stderr and f"validation rising since step {p.best_step}" in result.stderr
    assert p.step - p.cooldown_from == 10  # one interval of cool-down after patience ran out
    for name, tensor in best["model"].items():  # latest.pt's model is the best one
        assert torch.equal(tensor, latest["model"][name]), name
    # A resume is one line, and writes nothing.
    stamp = (run / checkpoint.LATEST).stat().st_mtime_ns
    again = charnn("train", "--resume", "noise", "--max-steps", "4000")
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].endswith("fine-tune from it: charnn train CORPUS --from noise")
    assert (run / checkpoint.LATEST).stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_patience_zero_runs_to_the_end(overfits: Path) -> None:
    result = charnn("train", str(overfits), "--max-steps", "150", "--patience", "0", "--name", "all", *TRAIN)
    assert result.returncode == 0, result.stderr
    latest = checkpoint.load_tensors(Path("checkpoints/all") / checkpoint.LATEST)
    p = Progress(**latest["progress"])
    assert p.step == 150 and not p.stopped_early and p.cooldown_from == -1
    assert "done (max-steps) at step 150" in result.stderr and "patience:" not in result.stdout + result.stderr
