"""The product on a real CUDA GPU (`python -m pytest -m cuda`; `benchmarks/gpu.py` runs these first).

Skipped, with the reason, where PyTorch sees no GPU. The same paths run on the CPU under the GPU's
rules in tests/test_devices.py on every machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from charnn import api
from charnn.export import export
from charnn.insight import inspector
from charnn.run import checkpoint, runs
from charnn.run.config import RunConfig
from charnn.serve import ServeConfig, load
from tests.conftest import Server, tiny_model, tiny_train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")]


def _train(corpus: Path, name: str, cell: str = "lstm", **overrides: object) -> Path:
    run_dir, _ = api.start_training(str(corpus), tiny_model(cell), tiny_train(**overrides), name=name, device="cuda",
                                    show_progress=False)
    return run_dir


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resume_on_cuda_is_bit_exact(words_file: Path, cell: str) -> None:
    straight = _train(words_file, "straight", cell, max_steps=40, eval_every=20)
    halves = _train(words_file, "halves", cell, max_steps=20, eval_every=20)
    api.resume_training("halves", max_steps=40, device="cuda", show_progress=False)
    a = checkpoint.load_tensors(straight / "latest.pt")["model"]
    b = checkpoint.load_tensors(halves / "latest.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sample_score_and_load_on_the_cpu(words_file: Path) -> None:
    run_dir = _train(words_file, "r", "gru", max_steps=30, eval_every=30)
    on_gpu = api.load_run(str(run_dir), device="cuda")
    text = on_gpu.generate("the ", length=80, seed=1, temperature=0.8)
    assert text == on_gpu.generate("the ", length=80, seed=1, temperature=0.8) and len(text) == 80
    assert len(on_gpu.generate("the ", length=40, seed=2, num_samples=64)) == 64
    on_cpu = api.load_run(str(run_dir), device="cpu")
    sample = "the cat sat on the mat " * 10
    assert abs(on_gpu.score(sample).nats - on_cpu.score(sample).nats) < 1e-3


def test_serve_on_cuda(words_file: Path) -> None:
    _train(words_file, "tiny", max_steps=20, eval_every=20)
    config = ServeConfig(max_tokens_cap=500)
    server = Server(Path("checkpoints"), config, load(["tiny"], Path("checkpoints"), "cuda", config))
    try:
        reply = httpx.post(f"{server.url}/v1/completions", json={"prompt": "the ", "max_tokens": 40, "n": 4}, timeout=60)
    finally:
        server.stop()
    assert reply.status_code == 200, reply.text
    assert all(len(c["text"]) == 40 for c in reply.json()["choices"])


def test_inspect_on_cuda_through_cudnn(words_file: Path) -> None:
    run_dir = _train(words_file, "r", "lstm", max_steps=10, eval_every=10)
    model = api.load_run(str(run_dir), device="cuda")
    numbers = inspector.inspect(model.model, model.tokenizer, "the cat sat on the mat " * 20,
                                inspector.InspectConfig(show=60, reach=8))
    assert len(numbers["reach"]["trained"]) == 8


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
def test_export_a_cuda_trained_run_and_read_it_on_the_cpu(words_file: Path, tmp_path: Path, fmt: str) -> None:
    run_dir = _train(words_file, "r", "gru", max_steps=10, eval_every=10)
    result = export(runs.load(run_dir, "best", "cpu"), fmt, tmp_path / "out")
    assert result.files
    if fmt == "safetensors":
        greedy = api.load_run(str(tmp_path / "out"), device="cpu").generate("the ", length=30, temperature=0)
        assert greedy == api.load_run(str(run_dir), device="cpu").generate("the ", length=30, temperature=0)


def test_torchrun_with_nccl_on_one_gpu(words_file: Path) -> None:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "charnn", "train",
            str(words_file), "--name", "ddp", "--device", "cuda", "--max-steps", "10", "--eval-every", "10",
            "--hidden", "32", "--embed", "16", "--batch-size", "8", "--seq-len", "32", "--quiet"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    config = RunConfig.load(Path("checkpoints") / "ddp")
    assert config.distributed is not None and config.distributed["backend"] == "nccl"
