"""Crash safety and untrusted files: malicious checkpoints, non-finite steps, failed writes, SIGKILL."""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charnn import api
from charnn.cli import app
from charnn.errors import RunError, TrainingError
from charnn.model.network import CharRNN
from charnn.run import checkpoint, runs
from charnn.run.config import TrainConfig
from charnn.text.tokenizer import CharTokenizer
from charnn.training.loop import train
from tests.conftest import tiny_model, train_run

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


class Exploit:
    """Unpickling this would run a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the raw pickle's protocol; expected
@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_malicious_checkpoint_is_refused_without_running(words_file, tmp_path: Path, form: str) -> None:
    run_dir = train_run(words_file, name="r", max_steps=10, eval_every=5)
    marker = tmp_path / "pwned"
    payload = {"format_version": checkpoint.FORMAT_VERSION, "model": Exploit(marker)}
    if form == "torch.save":
        torch.save(payload, run_dir / "best.pt")
    else:
        (run_dir / "best.pt").write_bytes(pickle.dumps(payload))
    result = runner.invoke(app, ["sample", "r", "--length", "5"])
    assert result.exit_code == 1
    assert result.output.startswith("error: refusing to load") and "may run code" in result.output
    assert not marker.exists()  # the payload never ran
    # A code-carrying parent is refused the same way by fine-tuning, before anything is written.
    result = runner.invoke(app, ["train", str(words_file), "--from", "r", "--name", "child", "--max-steps", "5"])
    assert result.exit_code == 1 and result.output.startswith("error: refusing to load"), result.output
    assert not marker.exists() and not (run_dir.parent / "child").exists()
    pickle.loads(pickle.dumps(Exploit(marker)))  # control: the same object does run code when unpickled naively
    assert marker.exists()


def test_tokenizer_that_does_not_match_the_weights_is_refused(words_file) -> None:
    run_dir = train_run(words_file, name="r", max_steps=10, eval_every=5)
    (run_dir / "tokenizer.json").write_text(CharTokenizer("abc").to_json(), encoding="utf-8")
    with pytest.raises(RunError, match=r"tokenizer\.json has 3 characters but config\.json says"):
        runs.load(run_dir)


def _poisoned(model: CharRNN, bad_calls: set[int]) -> CharRNN:
    """Make the training forward pass return NaN logits on the given calls."""
    real = model.forward
    calls = {"n": 0}

    def forward(ids, state):
        logits, new_state = real(ids, state)
        if model.training:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                logits = logits * float("nan")
        return logits, new_state

    model.forward = forward  # type: ignore[method-assign]
    return model


def _setup(tmp_path: Path, text: str):
    tok = CharTokenizer(text)
    ids = tok.encode_array(text).astype(np.uint8)
    run_dir = tmp_path / "run"
    cfg = replace(tiny_model(), vocab_size=tok.vocab_size)
    checkpoint.create(run_dir, {"model": vars(cfg), "train": {}}, tok, overwrite=False)
    return cfg, ids[: int(len(ids) * 0.9)], ids[int(len(ids) * 0.9) :], run_dir


def _all_finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in checkpoint.load_tensors(path)["model"].values())


def test_non_finite_steps_are_skipped_and_counted(words_file, tmp_path: Path) -> None:
    cfg, train_ids, val_ids, run_dir = _setup(tmp_path, words_file.read_text(encoding="utf-8"))
    model = _poisoned(CharRNN(cfg), {5, 6, 11})
    tcfg = TrainConfig(batch_size=8, seq_len=32, max_steps=30, eval_every=10, warmup=2)
    result = train(model, tcfg, train_ids, val_ids, run_dir, torch.device("cpu"), show_progress=False)
    assert result.stopped_by == "max-steps" and result.progress.skipped == 3
    assert _all_finite(run_dir / "best.pt") and _all_finite(run_dir / "latest.pt")


def test_divergence_stops_with_a_clear_message_and_finite_checkpoints(words_file, tmp_path: Path) -> None:
    cfg, train_ids, val_ids, run_dir = _setup(tmp_path, words_file.read_text(encoding="utf-8"))
    model = _poisoned(CharRNN(cfg), set(range(15, 1000)))
    tcfg = TrainConfig(batch_size=8, seq_len=32, max_steps=100, eval_every=10, warmup=2)
    with pytest.raises(TrainingError, match=r"diverged \(5 non-finite steps in a row at step 18\) — lower --lr"):
        train(model, tcfg, train_ids, val_ids, run_dir, torch.device("cpu"), show_progress=False)
    assert _all_finite(run_dir / "best.pt") and _all_finite(run_dir / "latest.pt")
    assert checkpoint.load_tensors(run_dir / "latest.pt")["step"] == 18  # the step that gave up is not counted


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    checkpoint.save_tensors(path, {"model": {"w": torch.ones(3)}, "step": 1})

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(RunError, match=r"could not write .*No space left on device.* previous version of the file is intact"):
        checkpoint.save_tensors(path, {"model": {"w": torch.zeros(3)}, "step": 2})
    monkeypatch.undo()
    assert checkpoint.load_tensors(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temp file left behind


def _charnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "charnn", *args]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_and_sample(words_file, tmp_path: Path) -> None:
    opts = ["--max-steps", "1200", "--eval-every", "25", "--hidden", "24", "--embed", "8", "--batch-size", "8",
            "--seq-len", "24", "--lr", "1e-2", "--warmup", "5", "--dropout", "0.1", "--device", "cpu", "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight = runner.invoke(app, ["train", str(words_file), "--name", "straight", *opts])
    assert straight.exit_code == 0, straight.output
    run_dir = tmp_path / "checkpoints" / "k"
    rng = random.Random()
    delays = []
    for attempt in range(4):
        started = (run_dir / "config.json").exists()
        cmd = _charnn("train", "--resume", "k", "-q") if started else _charnn("train", str(words_file), "--name", "k",
                                                                             *opts)
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delays.append(round(rng.uniform(0.5, 3.5), 2))
        time.sleep(delays[-1])
        if attempt == 3:  # on a slow machine every kill so far may have come before the first save (~4 s)
            deadline = time.time() + 60
            while not (run_dir / "latest.pt").exists() and time.time() < deadline:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
        if (run_dir / "latest.pt").exists():  # whatever was saved is usable right away (read here: no process start)
            for which in ("latest", "best"):
                sampled = api.load_run(str(run_dir), which, "cpu").generate("the ", length=20, seed=1)
                assert isinstance(sampled, str) and len(sampled) == 20, (delays, which)
    assert (run_dir / "latest.pt").exists(), f"no state was ever saved (kill delays {delays})"
    done = subprocess.run(_charnn("train", "--resume", "k", "-q"), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (delays, done.stderr)
    a = checkpoint.load_tensors(tmp_path / "checkpoints" / "straight" / "latest.pt")
    b = checkpoint.load_tensors(run_dir / "latest.pt")
    assert b["step"] == 1200
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), f"kill delays {delays}"
    steps = [r["step"] for r in checkpoint.read_metrics(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 1200


class _FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are in, like a disk filling up mid-write."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        size = len(data.encode() if isinstance(data, str) else memoryview(data).cast("B"))
        if size > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return self.f.write(data)

    def __getattr__(self, name: str):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_a_full_disk_mid_run_is_one_line_with_the_resume_command(words_file, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = ["--hidden", "32", "--embed", "16", "--layers", "2", "--batch-size", "8", "--seq-len", "32", "--lr", "1e-2",
            "--warmup", "5", "--device", "cpu", "-q", "--eval-every", "20", "--seed", "3"]
    run = Path("checkpoints/w")
    fdopen = os.fdopen
    saves = {"n": 0}

    def filling(fd: int, *args, **kwargs):  # os.fdopen is what checkpoint.atomic_write writes through
        f = fdopen(fd, *args, **kwargs)
        if ".latest.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            saves["n"] += 1
        return _FullDisk(f, 10**9 if saves["n"] <= 2 else 1000)  # the disk fills before the third latest.pt

    with monkeypatch.context() as patched:
        patched.setattr(checkpoint.os, "fdopen", filling)
        result = CliRunner().invoke(app, ["train", str(words_file), "--name", "w", "--max-steps", "100", *tiny])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert re.match(r"error: could not write 'checkpoints/w/latest.pt' \(No space left on device\) — free space "
                    r".* previous version of the file is intact — then continue the run with: charnn train --resume w$",
                    lines[0]), lines[0]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")], sorted(run.iterdir())  # no temp file left
    assert checkpoint.load_tensors(run / "latest.pt")["step"] == 40  # the last good save, whole
    resumed = CliRunner().invoke(app, ["train", "--resume", "w", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load_tensors(run / "latest.pt")["step"] == 100
