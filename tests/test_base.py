"""The built-in base model, as shipped in the package (tests never train it: they read the shipped weights)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from charnn import api
from charnn.base.release import HALF_TOLERANCE
from charnn.cli import app
from charnn.run import builtin
from charnn.run.config import RunConfig

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TEXT = "The old man walked slowly along the river, thinking of the days when he was young.\n" * 8


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_package_holds_the_base_model_folder() -> None:
    folder = builtin.folder()
    assert builtin.installed()
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "LICENSE"):
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_size < 20e6


def test_base_resolves_wherever_a_run_is_read(tmp_path: Path) -> None:
    """sample, eval, inspect, export and runs name it with no run trained (this test's folder has none)."""
    text = _ok(["sample", "base", "--seed", "1", "--length", "80"])
    assert len(text) >= 80
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    scored = _ok(["eval", "base", "t.txt", "--json"])
    assert 0 < json.loads(scored)["loss"] < 3
    _ok(["inspect", "base", "the old man and the river"])
    assert (tmp_path / "base-inspect.html").is_file()  # not inside the installed package
    _ok(["export", "base", "--format", "safetensors", "--out", "exported"])
    assert (tmp_path / "exported" / "README.md").read_text() == (builtin.folder() / "README.md").read_text()
    assert re.search(r"^base\s+gru", _ok(["runs"]), re.MULTILINE)
    assert api.load_run("base", device="cpu").generate("The ", length=20, seed=3) == \
        api.load_run(str(tmp_path / "exported"), device="cpu").generate("The ", length=20, seed=3)


def test_with_no_run_sample_points_at_the_base() -> None:
    result = runner.invoke(app, ["sample"])
    assert result.exit_code == 1
    assert "charnn sample base" in result.output and "charnn train CORPUS" in result.output


def test_fine_tuning_from_base(tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_text(TEXT * 20 + "Zebras ¤\n", encoding="utf-8")
    _ok(["train", "small.txt", "--from", "base", "--name", "child", "--max-steps", "3", "--batch-size", "4",
         "--seq-len", "16", "--eval-every", "3", "--device", "cpu", "-q"])
    config = RunConfig.load(tmp_path / "checkpoints" / "child")
    parent = json.loads((builtin.folder() / "config.json").read_text())
    assert config.parent is not None and config.parent["name"] == "base"
    assert config.model.hidden == parent["model"]["hidden"]
    assert "¤" in api.load_run("child", device="cpu").tokenizer.chars  # the vocabulary grew
    assert builtin.installed()  # the parent is read, never written


def test_the_card_names_every_source_and_holds_the_metadata_block() -> None:
    card = (builtin.folder() / "README.md").read_text(encoding="utf-8")
    front = card.split("---\n")[1]
    for key in ("license:", "language:", "library_name: charnn", "pipeline_tag: text-generation"):
        assert key in front
    exported = json.loads((builtin.folder() / "config.json").read_text())["exported"]
    for source in exported["corpus"]["sources"]:
        packages = source.get("packages") or [{"name": source.get("package")}]  # v2 lists them; v1 named one
        assert source["name"] in card and packages[0]["name"] in card and source["licence"] in card
        assert source["sha256"][:16] in card


def test_half_precision_weights_are_within_the_stated_tolerance() -> None:
    exported = json.loads((builtin.folder() / "config.json").read_text())["exported"]
    with safe_open(str(builtin.folder() / "model.safetensors"), framework="pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    assert dtypes == {f"torch.{exported['dtype']}"}
    half, full = exported["val_loss_by_source"], exported["val_loss_by_source_float32"]
    if exported["dtype"] == "float16":
        assert all(abs(half[k] - full[k]) <= HALF_TOLERANCE for k in full)


@pytest.mark.slow
def test_the_built_wheel_contains_the_base_and_samples_the_same_text(tmp_path: Path) -> None:
    """The wheel, installed in a fresh virtual environment (its dependencies borrowed from this one's
    site-packages, after its own), samples the same text as the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True)
    wheel = next(wheels.glob("charnn-*.whl"))
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(fresh_site), str(wheel)],
                   check=True)
    (fresh_site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run = [str(python), "-m", "charnn", "sample", "base", "--seed", "1", "--length", "200"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, env=env, check=True).stdout
    where = subprocess.run([str(python), "-c", "import charnn; print(charnn.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, check=True).stdout
    assert where.startswith(str(fresh_site)), where  # the wheel's copy, not the checkout
    assert installed == _ok(["sample", "base", "--seed", "1", "--length", "200"])
