"""The CLI as a user drives it: train, sample, eval, runs, corpora, and signals."""

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charnn import __version__
from charnn.cli import app
from charnn.recipe.budget import parse_duration
from charnn.run import checkpoint

runner = CliRunner()
TINY = ["--hidden", "32", "--embed", "16", "--layers", "2", "--batch-size", "8", "--seq-len", "32", "--lr", "1e-2",
        "--warmup", "5", "--device", "cpu", "-q"]


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def trained(words_file):
    result = cli("train", str(words_file), "--name", "w", "--max-steps", "60", "--eval-every", "20", *TINY)
    assert result.exit_code == 0, result.output
    return Path("checkpoints/w")


def test_version_and_help() -> None:
    assert cli("--version").output.strip() == f"charnn {__version__}"
    for command in ("train", "sample", "repl", "eval", "runs", "corpora"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "--" in result.output


def test_train_writes_the_run_directory(trained) -> None:
    assert {p.name for p in trained.iterdir()} == {"config.json", "tokenizer.json", "best.pt", "latest.pt",
                                                   "metrics.jsonl", ".train.lock"}
    config = json.loads((trained / "config.json").read_text())
    assert config["distributed"] == {"world_size": 1, "backend": None}
    assert config["format_version"] == checkpoint.FORMAT_VERSION
    assert config["model"]["hidden"] == 32 and config["train"]["max_steps"] == 60
    assert len(config["corpus"]["fingerprint"]) == 64
    assert [r["step"] for r in checkpoint.read_metrics(trained)] == [20, 40, 60]


def test_sample_is_reproducible_and_starts_with_the_prime(trained) -> None:
    a = cli("sample", "w", "--prime", "the ", "--length", "200", "--seed", "7")
    b = cli("sample", "w", "--prime", "the ", "--length", "200", "--seed", "7")
    assert a.exit_code == 0 and a.stdout_bytes == b.stdout_bytes
    assert a.output.startswith("the ") and len(a.output) == len("the ") + 200 + 1
    default_run = cli("sample", "--prime", "the ", "--length", "200", "--seed", "7")  # newest run
    assert default_run.stdout_bytes == a.stdout_bytes


def test_sixteen_samples_in_one_batch(trained) -> None:
    result = cli("sample", "w", "--num-samples", "16", "--length", "80", "--seed", "1")
    samples = result.output.split("--- sample ")[1:]
    assert result.exit_code == 0 and len(samples) == 16
    assert len({s.split("\n", 1)[1] for s in samples}) == 16


def test_eval_matches_the_last_validation_loss(trained, words_file) -> None:
    text = words_file.read_text(encoding="utf-8")
    config = json.loads((trained / "config.json").read_text())
    n_val = int(config["corpus"]["characters"] * config["train"]["val_frac"])
    Path("val.txt").write_text(text[len(text) - n_val :], encoding="utf-8")
    result = cli("eval", "w", "val.txt", "--checkpoint", "latest", "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output)
    last = checkpoint.read_metrics(trained)[-1]
    assert abs(scored["loss"] - last["val_loss"]) < 0.02
    assert scored["bpc"] == pytest.approx(scored["loss"] / 0.6931471805599453)
    human = cli("eval", "val.txt")
    assert "bits/char" in human.output and "perplexity" in human.output


def test_eval_reports_unseen_characters(trained) -> None:
    Path("odd.txt").write_text("the cat sat ZZZ on the mat\n", encoding="utf-8")
    result = cli("eval", "w", "odd.txt")
    assert result.exit_code == 0 and "skipped 3 character(s)" in result.output and "'Z'" in result.output


def test_runs_and_corpora_listings(trained) -> None:
    runs = cli("runs")
    assert runs.exit_code == 0 and "w " in runs.output and "gru 2x32" in runs.output  # GRU: the default cell
    corpora = cli("corpora")
    assert "shakespeare" in corpora.output and "python-stdlib" in corpora.output


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("45", 45)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_user_errors_are_one_line_without_traceback(words_file) -> None:
    result = cli("train", "missing.txt", "--max-steps", "5")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: corpus 'missing.txt' not found")
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    bad_time = cli("train", str(words_file), "--time", "soon")
    assert bad_time.exit_code == 2 and "not a duration" in bad_time.output


def _python_charnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "charnn", *args]


@pytest.mark.slow
def test_sigint_then_resume_matches_an_uninterrupted_run(words_file, tmp_path) -> None:
    common = ["--max-steps", "600", "--eval-every", "50", "--dropout", "0.1", *TINY]
    straight = cli("train", str(words_file), "--name", "straight", *common)
    assert straight.exit_code == 0, straight.output
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(_python_charnn("train", str(words_file), "--name", "cut", *common), cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = tmp_path / "checkpoints" / "cut" / "latest.pt"
    deadline = time.time() + 60
    while not latest.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)  # a hang guard; a loaded 2-core machine can be slow
    assert proc.returncode == 0, err
    assert "charnn train --resume cut" in err
    stopped_at = checkpoint.load_tensors(latest)["step"]
    assert 0 < stopped_at < 600  # really stopped in the middle
    resumed = subprocess.run(_python_charnn("train", "--resume", "cut", "-q"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = checkpoint.load_tensors(tmp_path / "checkpoints" / "straight" / "latest.pt")
    b = checkpoint.load_tensors(latest)
    assert a["step"] == b["step"] == 600
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_evaluation_lines_reach_a_log_file_as_they_happen(words_file, tmp_path) -> None:
    """stdout redirected (`nohup charnn train … > log`): the first evaluation line arrives while training goes on."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # Python's own default buffering
    proc = subprocess.Popen(_python_charnn("train", str(words_file), "--name", "log", "--max-steps", "100000",
                                           "--eval-every", "5", *TINY[:-1]),
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # block-buffered, it would come at exit
        assert ready, "no evaluation line within 120 s"
        first = proc.stdout.readline()
        assert first.startswith("step      5  train"), first
        assert proc.poll() is None, "the line must arrive while the run is still training"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
