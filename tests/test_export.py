"""`charnn export`: ONNX computes the model's function for every cell, the safetensors folder is a run
everywhere charnn reads one, bad input leaves nothing behind. The browser test is in test_export_web.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charnn import api
from charnn.cli import app
from charnn.export import onnx as onnx_export
from charnn.model.cells import NAMES
from charnn.model.network import CharRNN, ModelConfig, Stepper, fold_for_inference, state_widths
from charnn.run import runs
from tests.conftest import train_run

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PRIME = "the cat"  # <= 8 characters: `charnn sample` primes through the same one-character step


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def onnx_greedy(folder: Path, prime: str, length: int, voice: dict[str, float] | None = None) -> str:
    """Greedy text from the export with onnxruntime and numpy alone, as a program without charnn runs it (a voiced
    model in `voice`, blended from the description's table; default no voice)."""
    meta = json.loads((folder / "charnn-model.json").read_text(encoding="utf-8"))
    run = onnx_export.session(folder / meta["model"])
    index = {c: i for i, c in enumerate(meta["vocabulary"])}
    state = {i["name"]: np.zeros([1 if s == "batch" else s for s in i["shape"]], np.float32) for i in meta["inputs"][1:]}
    if "voices" in meta:
        table = np.array(meta["voices"]["table"], np.float32)  # (K+1, E)
        weights = np.zeros(len(table), np.float32)
        for name, w in (voice or {}).items():
            weights[meta["voices"]["names"].index(name) + 1] = w
        weights[0] = 0.0 if voice else 1.0
        state["voice"][:] = weights @ table  # every layer and row
    for c in prime:
        logits, *out = run.run(None, {"ids": np.array([index[c]], np.int64), **state})
        state = dict(zip(state, out, strict=True))
    text = ""
    for _ in range(length):
        i = int(np.argmax(logits[0]))
        text += meta["vocabulary"][i]
        logits, *out = run.run(None, {"ids": np.array([i], np.int64), **state})
        state = dict(zip(state, out, strict=True))
    return text


@pytest.mark.parametrize("cell", NAMES)  # every registered cell
def test_onnx_export_is_the_model_for_every_cell(words_file: Path, tmp_path: Path, cell: str) -> None:
    train_run(words_file, name="r", cell=cell, max_steps=40, eval_every=20)
    out = cli("export", "r", "--format", "onnx", "--out", str(tmp_path / "r-onnx"))
    shown = float(re.search(r"largest logit difference from PyTorch (\S+)", out).group(1))
    assert shown < 1e-4
    loaded = runs.load(Path("checkpoints/r"), "best", "cpu")
    ids = loaded.tokenizer.encode_array(words_file.read_text(encoding="utf-8")[:300])
    assert onnx_export.largest_difference(tmp_path / "r-onnx" / "model.onnx", loaded.model, ids) < 1e-4  # 300 steps
    greedy = cli("sample", "r", "--prime", PRIME, "--temperature", "0", "--length", "300", "--seed", "1")
    assert greedy.rstrip("\n") == PRIME + onnx_greedy(tmp_path / "r-onnx", PRIME, 300)
    meta = json.loads((tmp_path / "r-onnx" / "charnn-model.json").read_text(encoding="utf-8"))
    assert meta["vocabulary"] == loaded.tokenizer.chars and meta["cell"] == cell
    assert [i["name"] for i in meta["inputs"]] == ["ids", *meta["state"]["names"]]


@pytest.mark.parametrize("cell", ["slstm", "mlstm"])
def test_onnx_graph_takes_any_batch_and_matches_the_stepper(cell: str) -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=30, cell=cell, layers=2, hidden=24, embed=8, heads=3)).eval()
    import onnx

    path = Path("step.onnx")
    onnx.save(onnx_export.build(fold_for_inference(model), model.config), str(path))
    run = onnx_export.session(path)
    stepper = Stepper(model)
    for batch in (1, 5):
        ids = torch.randint(0, 30, (batch,))
        state = tuple(torch.randn(2, batch, w).abs() for w in state_widths(model.config))  # n > 0: a state in use
        with torch.inference_mode():
            logits, new = stepper.step(ids, state)
        names = onnx_export.state_names(cell)
        got = run.run(None, {"ids": ids.numpy(), **{n: s.numpy() for n, s in zip(names, state, strict=True)}})
        assert np.allclose(got[0], logits.numpy(), rtol=1e-5, atol=1e-5)
        assert all(np.allclose(g, s.numpy(), rtol=1e-5, atol=1e-5) for g, s in zip(got[1:], new, strict=True))


def test_the_docs_onnx_program_runs_with_onnxruntime_alone(tmp_path: Path) -> None:
    corpus = tmp_path / "plays.txt"
    corpus.write_text("ROMEO: the cat sat on the mat.\nJULIET: the dog ran.\n" * 300, encoding="utf-8")
    train_run(corpus, name="bard", max_steps=20, eval_every=10)
    cli("export", "bard", "--format", "onnx", "--out", "bard-onnx")
    readme = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    program = re.search(r"```python\n(import json, numpy as np, onnxruntime as ort\n.+?)```", readme, re.S).group(1)
    # No torch and no charnn in that process: importing either fails there.
    guard = "import sys\nfor name in ('torch', 'charnn'):\n    sys.modules[name] = None\n"
    done = subprocess.run([sys.executable, "-c", guard + program], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ROMEO:") and len(done.stdout.rstrip("\n")) == len("ROMEO:") + 300


def test_safetensors_folder_is_a_run_everywhere(words_file: Path, tmp_path: Path) -> None:
    train_run(words_file, name="r", max_steps=30, eval_every=10)
    cli("export", "r", "--format", "safetensors", "--out", "r-model")
    folder = Path("r-model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert not (Path("checkpoints/r-model")).exists() and not list(Path(".").glob(".r-model*"))  # no temp left
    assert sum(p.stat().st_size for p in folder.iterdir()) < Path("checkpoints/r/latest.pt").stat().st_size
    same = ("--prime", PRIME, "--length", "120", "--seed", "5", "--temperature", "0.9")
    assert cli("sample", "r-model", *same) == cli("sample", "r", *same)
    scored = cli("eval", "r-model", str(words_file))
    assert scored.replace(" under r-model ", " under r ") == cli("eval", "r", str(words_file))  # the same numbers
    assert api.load_run(str(folder)).score("the cat").nats == api.load_run("r").score("the cat").nats
    cli("inspect", "r-model", "the cat sat", "--json", "--out", str(tmp_path / "i.json"), "--reach", "4")
    from fastapi.testclient import TestClient

    from charnn.serve import ServeConfig, create_app, load

    config = ServeConfig()
    served = TestClient(create_app(load([str(folder)], Path("checkpoints"), "cpu", config), config))
    body = {"prompt": PRIME, "max_tokens": 40, "seed": 2}
    run_server = TestClient(create_app(load(["r"], Path("checkpoints"), "cpu", config), config))
    assert served.post("/v1/completions", json=body).json()["choices"][0]["text"] == \
        run_server.post("/v1/completions", json=body).json()["choices"][0]["text"]
    repl = runner.invoke(app, ["repl", "r-model", "--length", "20", "--seed", "1"], input="the \n:quit\n")
    assert repl.exit_code == 0 and repl.output == runner.invoke(
        app, ["repl", "r", "--length", "20", "--seed", "1"], input="the \n:quit\n").output
    child, _ = api.start_training(str(words_file), *_child_configs(folder), name="child", device="cpu",
                                  show_progress=False, parent=api.load_parent(str(folder), Path("checkpoints")))
    assert json.loads((child / "config.json").read_text())["parent"]["name"] == "r-model"
    resumed = runner.invoke(app, ["train", "--resume", str(folder)])
    assert resumed.exit_code == 2 and "is a model folder" in resumed.output and "--from" in resumed.output
    latest = runner.invoke(app, ["sample", "r-model", "--checkpoint", "latest"])
    assert latest.exit_code == 1 and "holds one set of weights" in latest.output


def _child_configs(folder: Path):
    from charnn.run import lineage
    from tests.conftest import tiny_train

    parent = lineage.load_parent(str(folder), Path("checkpoints"))
    return lineage.child_config(parent, parent.model_config.vocab_size, None, None), tiny_train(max_steps=5)


def test_corrupt_model_folder_is_one_line(words_file: Path) -> None:
    train_run(words_file, name="r", max_steps=10, eval_every=5)
    cli("export", "r", "--format", "safetensors", "--out", "m")
    Path("m/model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    result = runner.invoke(app, ["sample", "m"])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "truncated or corrupt" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "setup", "code", "message"), [
    (["nope", "--format", "onnx"], None, 1, r"run 'nope' not found"),
    (["r", "--format", "tflite"], None, 2, r"--format 'tflite' is unknown — use one of onnx, web, safetensors"),
    (["r", "--format", "onnx", "--out", "taken"], "taken", 2, r"'taken' already exists — pass --overwrite"),
    (["r", "--format", "web", "--out", "no/such/dir"], None, 2, r"folder 'no/such' does not exist"),
    (["r", "--format", "safetensors"], "nobest", 1, r"best.pt' is missing"),
])
def test_export_bad_input(words_file: Path, args: list[str], setup: str | None, code: int, message: str) -> None:
    train_run(words_file, name="r", max_steps=10, eval_every=5)
    if setup == "taken":
        Path("taken").mkdir()
        (Path("taken") / "keep.txt").write_text("mine")
    if setup == "nobest":
        Path("checkpoints/r/best.pt").unlink()
    before = sorted(str(p) for p in Path(".").rglob("*"))
    result = runner.invoke(app, ["export", *args])
    assert result.exit_code == code, result.output
    flat = re.sub(r"\s+", " ", " ".join(line.strip(" │╭╮╰╯─") for line in result.output.splitlines()))
    assert re.search(message, flat), result.output
    assert sorted(str(p) for p in Path(".").rglob("*")) == before  # nothing written, nothing half-written


def test_overwrite_replaces_an_export_whole(words_file: Path) -> None:
    train_run(words_file, name="r", max_steps=10, eval_every=5)
    cli("export", "r", "--format", "onnx", "--out", "out")
    (Path("out") / "stale.txt").write_text("old")
    cli("export", "r", "--format", "safetensors", "--out", "out", "--overwrite")
    assert sorted(p.name for p in Path("out").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert [p.name for p in Path(".").iterdir() if p.name.startswith(".out")] == []
