"""Shared fixtures: tiny corpora written into tmp_path and tiny trained runs."""

from __future__ import annotations

import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

# Under pytest-xdist (the suite runs as two workers, pyproject.toml's addopts) each worker, and every process a
# test starts, computes on one thread. Two workers of two threads each oversubscribe two cores, and OpenMP's
# spinning threads then wait on one another: a kill/resume test took 225 s that way instead of 15. The models
# here are tiny (16-64 units): a second thread never made one faster.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from charnn import api
from charnn.model.network import ModelConfig
from charnn.run.config import TrainConfig
from charnn.serve import ServeConfig, Served, create_app, load

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PATTERN = "0123456789abcdef ghijklmnop\n"  # every character determines the next: learnable to ~0 loss


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so checkpoints/ and corpora/ are private to it, and so is the cache of
    the probe's readings (recipe/readings.py): no test reuses a reading another test, or the user, took."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARNN_CACHE", str(tmp_path / ".charnn-cache"))


@pytest.fixture
def pattern_file(tmp_path: Path) -> Path:
    path = tmp_path / "pattern.txt"
    path.write_text(PATTERN * 400, encoding="utf-8")
    return path


@pytest.fixture
def words_file(tmp_path: Path) -> Path:
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "über", "naïve"]
    path = tmp_path / "words.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(6000)) + "\n", encoding="utf-8")
    return path


def tiny_model(cell: str = "lstm", hidden: int = 32) -> ModelConfig:
    return ModelConfig(vocab_size=1, cell=cell, layers=2, hidden=hidden, embed=16, dropout=0.0)


def tiny_train(**overrides: object) -> TrainConfig:
    # The weight average off (the product's default is on): a tiny run's tests read the weights it trains. Patience
    # off too (a --time run's default is on): a tiny model's validation turns whenever it likes, and a test of the
    # clock or the schedule must not end early by chance. tests/test_patience.py turns it on.
    values: dict = dict(batch_size=8, seq_len=32, lr=1e-2, warmup=5, max_steps=60, eval_every=20, seed=7, ema=0.0,
                        patience=0)
    values.update(overrides)
    return TrainConfig(**values)


def train_run(corpus: Path, name: str = "run", cell: str = "lstm", **overrides: object) -> Path:
    run_dir, _ = api.start_training(str(corpus), tiny_model(cell), tiny_train(**overrides), name=name,
                                    device="cpu", show_progress=False)
    return run_dir


class Server:
    def __init__(self, checkpoints: Path, config: ServeConfig, served: list[Served] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served = served if served is not None else load(["tiny"], checkpoints, "cpu", config)
        app = create_app(self.served, config)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM run ('tiny') on words, shared by the server tests."""
    root = tmp_path_factory.mktemp("serve")
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "über", "naïve"]
    (root / "words.txt").write_text(" ".join(rng.choice(words) for _ in range(6000)) + "\n", encoding="utf-8")
    api.start_training(str(root / "words.txt"), tiny_model(), tiny_train(max_steps=60), name="tiny", device="cpu",
                       paths=api.Paths(root / "checkpoints", root / "corpora"), show_progress=False)
    return root


class FakeProbe:
    """The probe's readings without timing anything: tests of what the recipe does with them stay instant
    on any machine (and never run emulated bf16). `calls` records what each measurement was asked."""

    def __init__(self, speed: float = 20_000.0, bf16_gain: float = 1.0, scale: float = 0.4, eval_speed: float = 60_000.0):
        self.speed, self.bf16_gain, self.scale, self.eval_speed = speed, bf16_gain, scale, eval_speed
        self.calls: list[tuple[str, object]] = []

    def speeds(self, device, vocab, cell="gru", batches=(64,), seq=64, steps=7, amps=(False,), size=None, warm=3):
        """At the probe model's size `speed`; a bigger model (a fine-tune's parent) slower by its multiply-adds."""
        from charnn.recipe.plan import as_probe_speed

        self.calls.append(("speeds", tuple(amps)))
        slower = 1.0 if size is None else as_probe_speed(1.0, cell, size, vocab)
        return {(b, a): self.speed / slower * (0.8 if b < max(batches) else 1.0) * (self.bf16_gain if a else 1.0)
                for b in batches for a in amps}

    def scale_reading(self, device, vocab, cell="gru", batch=64, amp=False, seq=64, steps=5):
        self.calls.append(("scale", amp))
        return self.scale, self.speed * (self.bf16_gain if amp else 1.0) * (0.8 if batch < 64 else 1.0)

    def eval_reading(self, device, vocab, cell="gru", seq=64, steps=7):
        self.calls.append(("eval", None))
        return self.eval_speed


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch) -> FakeProbe:
    """The probe's readings made up (a machine's speed must not decide a test). A `--time` test still pays
    its start-up, so give it 5s or more: a 2s budget is refused where start-up takes 1.8 s (a slow CPU
    under load)."""
    import charnn.recipe.sizing as api_module

    probe = FakeProbe()
    monkeypatch.setattr(api_module, "measure_speeds", probe.speeds)
    monkeypatch.setattr(api_module, "measure_scale", probe.scale_reading)
    monkeypatch.setattr(api_module, "measure_eval_speed", probe.eval_reading)
    return probe


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CHARNN_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM} — install it: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium); CI installs it and runs this test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_records(run_dir: Path, n: int, timeout: float = 120) -> None:
    """Wait until a run being trained in another process has written n metrics records."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= n):
        time.sleep(0.1)
