"""Fine-tuning (`charnn train --from RUN`): the vocabulary grows, the parent is unchanged at step 0, the child
is a run like any other (samples, evaluates, serves, resumes bit-exactly), any parent works, the parent is
never written."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from charnn import api
from charnn.cli import app
from charnn.model.network import CharRNN
from charnn.run import checkpoint, lineage
from charnn.serve import ServeConfig, create_app, load
from charnn.text.tokenizer import CharTokenizer
from charnn.training import session
from tests.conftest import tiny_train, train_run

runner = CliRunner()
NEW_TEXT = "the cat sat on the mat — «déjà vu» ½ " * 300  # shares most characters with words.txt, adds —«»éà½ and j


@pytest.fixture
def new_text(tmp_path: Path) -> Path:
    path = tmp_path / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    return path


def files_of(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def fine_tune(parent: str, corpus: Path, name: str = "child", **overrides: object) -> tuple[Path, object]:
    loaded = api.load_parent(parent, api.Paths().checkpoints)
    model_cfg = lineage.child_config(loaded, loaded.model_config.vocab_size, None, None)
    return api.start_training(str(corpus), model_cfg, tiny_train(**{"max_steps": 30, "eval_every": 10, **overrides}),
                              name=name, device="cpu", show_progress=False, parent=loaded)


def test_grown_vocabulary_keeps_old_ids_and_appends_new_ones() -> None:
    old = CharTokenizer("hello world")
    grown = old.grown("well, déjà vu!")
    assert grown.chars[: old.vocab_size] == old.chars  # every old id kept
    assert grown.chars[old.vocab_size:] == sorted(set(",!déjàvu") - set(old.chars))  # new ones appended, in order
    assert grown.encode("hello")[:5] == old.encode("hello")
    again = CharTokenizer.from_json(grown.to_json())  # tokenizer.json keeps the order
    assert again.chars == grown.chars and again.decode(again.encode("déjà vu")) == "déjà vu"
    assert old.grown("hello").chars == old.chars  # nothing new: the same vocabulary
    with pytest.raises(Exception, match="repeats a character"):
        CharTokenizer("aa", ordered=True)


@pytest.mark.parametrize("cell", ["gru", "slstm"])
def test_grown_model_at_step_0_is_the_parent_over_old_characters(words_file: Path, new_text: Path, cell: str) -> None:
    train_run(words_file, name="parent", cell=cell, max_steps=20, eval_every=10)
    parent = lineage.load_parent("parent", api.Paths().checkpoints)
    grown_tok = parent.tokenizer.grown(new_text.read_text(encoding="utf-8"))
    ids = grown_tok.encode_array(NEW_TEXT).astype(np.int64)
    child = lineage.grow(parent, lineage.child_config(parent, grown_tok.vocab_size, None, None), ids).eval()
    old_model = CharRNN(parent.model_config)
    old_model.load_state_dict(parent.weights)
    old_model.eval()
    old = parent.tokenizer.vocab_size
    text = torch.tensor(parent.tokenizer.encode("the cat sat on the mat ran über naïve"))[None]  # only old characters
    with torch.no_grad():
        p_parent = torch.softmax(old_model(text, old_model.init_state(1))[0].double(), -1)  # (1, T, V_old)
        p_child = torch.softmax(child(text, child.init_state(1))[0].double(), -1)  # (1, T, V_new)
    renormalised = p_child[..., :old] / p_child[..., :old].sum(-1, keepdim=True)
    assert (renormalised - p_parent).abs().max().item() < 1e-6
    # The new characters start near their frequency in the new text (constant logit: no context yet).
    counts = np.bincount(ids, minlength=grown_tok.vocab_size)[old:]
    new_mass = p_child[..., old:].mean(dim=(0, 1)).numpy()
    freq = counts / len(ids)
    assert np.all(new_mass > freq / 4) and np.all(new_mass < freq * 4), (new_mass, freq)
    assert p_child[..., old:].sum(-1).max().item() < 0.5  # small: the old characters keep most of the mass


def test_fine_tuned_run_records_lineage_and_leaves_the_parent_untouched(words_file: Path, new_text: Path) -> None:
    parent_dir = train_run(words_file, name="parent", max_steps=40, eval_every=20)
    before = files_of(parent_dir)
    child_dir, result = fine_tune("parent", new_text)
    assert files_of(parent_dir) == before  # RUN is never written
    config = json.loads((child_dir / "config.json").read_text())
    parent_tok = checkpoint.load_tokenizer(parent_dir)
    child_tok = checkpoint.load_tokenizer(child_dir)
    assert child_tok.chars[: parent_tok.vocab_size] == parent_tok.chars
    record = config["parent"]
    assert record["name"] == "parent" and record["checkpoint"] == "best" and record["step"] > 0
    assert record["characters_added"] == len(set(NEW_TEXT) - set(parent_tok.chars)) > 0
    assert record["fingerprint"] == json.loads((parent_dir / "config.json").read_text())["corpus"]["fingerprint"]
    assert math.isclose(record["best_val_loss"], min(r["val_loss"] for r in checkpoint.read_metrics(parent_dir)))
    assert config["model"]["hidden"] == 32 and config["model"]["vocab_size"] == child_tok.vocab_size
    metrics = checkpoint.read_metrics(child_dir)
    assert metrics[0]["step"] == 0 and metrics[0]["train_loss"] is None  # the head start, before step 1
    assert metrics[-1]["step"] == 30 and result.progress.best_val <= metrics[0]["val_loss"]
    listing = runner.invoke(app, ["runs"])
    assert listing.exit_code == 0
    child_row = next(line for line in listing.output.splitlines() if line.startswith("child"))
    assert f"parent@{record['step']}" in child_row


def test_fine_tuned_run_samples_evaluates_and_serves(words_file: Path, new_text: Path) -> None:
    train_run(words_file, name="parent", max_steps=40, eval_every=20)
    result = runner.invoke(app, ["train", str(new_text), "--from", "parent", "--name", "child", "--max-steps", "30",
                                 "--batch-size", "8", "--seq-len", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "from parent: val " in result.output and "nats" in result.output and "before fine-tuning" in result.output
    sampled = runner.invoke(app, ["sample", "child", "--prime", "«déjà", "--length", "40", "--seed", "3"])
    assert sampled.exit_code == 0 and sampled.output.startswith("«déjà"), sampled.output
    model = api.load_run("child", device="cpu")
    assert math.isfinite(model.score("the cat «déjà vu»").nats)
    config = ServeConfig()
    client = TestClient(create_app(load(["child"], Path("checkpoints"), "cpu", config), config))
    reply = client.post("/v1/completions", json={"model": "child", "prompt": "½ ", "max_tokens": 12, "seed": 1})
    assert reply.status_code == 200 and len(reply.json()["choices"][0]["text"]) == 12


def test_fine_tuned_run_resumes_bit_exactly(words_file: Path, new_text: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_run(words_file, name="parent", max_steps=40, eval_every=20)
    fine_tune("parent", new_text, name="straight")
    real_train = session.train

    def stop_at_13(*args, **kwargs):
        kwargs["should_stop"] = lambda p: p.step == 13
        return real_train(*args, **kwargs)

    monkeypatch.setattr(session, "train", stop_at_13)
    _, first = fine_tune("parent", new_text, name="split")
    monkeypatch.setattr(session, "train", real_train)
    assert first.stopped_by == "interrupted" and first.progress.step == 13
    _, second = api.resume_training("split", device="cpu", show_progress=False)
    assert second.progress.step == 30
    a = checkpoint.load_tensors(Path("checkpoints/straight/latest.pt"))["model"]
    b = checkpoint.load_tensors(Path("checkpoints/split/latest.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_child_stopped_before_its_first_save_starts_again_from_its_parent(words_file: Path, new_text: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with no latest.pt restarts from its start: for a child that is the parent, not random weights."""
    train_run(words_file, name="parent", max_steps=40, eval_every=20)
    fine_tune("parent", new_text, name="whole")
    child_dir, _ = fine_tune("parent", new_text, name="cut")
    for name in ("latest.pt", "best.pt", "metrics.jsonl"):
        (child_dir / name).unlink()  # as if killed after the config was written
    api.resume_training("cut", device="cpu", show_progress=False)
    first = checkpoint.read_metrics(child_dir)[0]
    assert first["step"] == 0 and first["val_loss"] == checkpoint.read_metrics(Path("checkpoints/whole"))[0]["val_loss"]
    a = checkpoint.load_tensors(Path("checkpoints/whole/latest.pt"))["model"]
    b = checkpoint.load_tensors(child_dir / "latest.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fine_tuned_run_can_be_a_parent_and_latest_can_be_chosen(words_file: Path, new_text: Path) -> None:
    train_run(words_file, name="parent", max_steps=40, eval_every=20)
    fine_tune("parent", new_text, name="child")
    child_tok = checkpoint.load_tokenizer(Path("checkpoints/child"))
    grandchild, _ = fine_tune("child:latest", words_file, name="grandchild")
    record = json.loads((grandchild / "config.json").read_text())["parent"]
    assert record["checkpoint"] == "latest" and record["step"] == 30 and record["characters_added"] == 0
    assert checkpoint.load_tokenizer(grandchild).chars == child_tok.chars  # characters the new text lacks stay


def test_fine_tune_with_a_time_budget_keeps_the_model_and_picks_the_schedule(words_file: Path, new_text: Path,
                                                                             fake_probe: object) -> None:
    train_run(words_file, name="parent", max_steps=20, eval_every=10)
    said: list[str] = []
    loaded = api.load_parent("parent", api.Paths().checkpoints)
    from charnn.recipe.plan import FINE_TUNE, Request, configs, fine_tune_recipe

    model_cfg, cfg, auto = configs(Request(), True, fine_tune_recipe(loaded.model_config), time_budget=30.0,
                                   max_steps=5, seed=7, val_frac=0.1)  # 5 steps end it: no machine is too slow
    child_dir, _ = api.start_training(str(new_text), model_cfg, cfg, name="timed", device="cpu", show_progress=False,
                                      auto_fields=auto, announce=said.append, parent=loaded)
    config = json.loads((child_dir / "config.json").read_text())
    assert {k: config["model"][k] for k in ("cell", "layers", "hidden", "embed")} == \
        {"cell": "lstm", "layers": 2, "hidden": 32, "embed": 16}
    assert config["train"]["lr"] == FINE_TUNE.lr and config["train"]["warmup"] == FINE_TUNE.warmup
    assert any(line.startswith("recipe for") and "lstm 2x32" in line for line in said), said


@pytest.mark.slow
def test_a_parent_trained_under_torchrun_fine_tunes(tmp_path: Path, words_file: Path, new_text: Path) -> None:
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "charnn",
            "train", str(words_file), "--name", "ddp", "--cell", "lstm", "--layers", "2", "--hidden", "32",
            "--embed", "16", "--batch-size", "8", "--seq-len", "32", "--max-steps", "20", "--eval-every", "10",
            "--device", "cpu", "--quiet"]
    done = subprocess.run(args, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "checkpoints/ddp/config.json").read_text())["distributed"]["world_size"] == 2
    child_dir, result = fine_tune("ddp", new_text)
    assert result.progress.step == 30 and checkpoint.read_metrics(child_dir)[0]["step"] == 0



def test_inspect_compares_a_fine_tuned_run_with_its_parent(words_file: Path, new_text: Path, tmp_path: Path) -> None:
    train_run(words_file, name="parent", max_steps=20, eval_every=10)
    fine_tune("parent", new_text, name="child", max_steps=10)
    out = tmp_path / "numbers.json"
    result = runner.invoke(app, ["inspect", "child", "the cat «déjà vu»", "--json", "--out", str(out), "--reach", "8"])
    assert result.exit_code == 0, result.output
    reach = json.loads(out.read_text())["reach"]
    assert reach["baseline"] == "parent (parent)" and len(reach["untrained"]) == len(reach["trained"])
    shutil.rmtree(Path("checkpoints/parent"))  # a parent gone: the page has no baseline, and says why
    result = runner.invoke(app, ["inspect", "child", "the cat", "--json", "--out", str(out), "--reach", "4"])
    assert result.exit_code == 0 and "parent 'parent' is no longer readable" in result.output
    assert json.loads(out.read_text())["reach"]["untrained"] is None
