"""`charnn.train`, `charnn.load` and `charnn.doctor`: the command's request from Python, one path for both."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import charnn
from charnn.cli import app
from charnn.errors import CharnnError, UsageError
from tests.conftest import FakeProbe

TINY = {"hidden": 24, "embed": 8, "batch_size": 8, "seq_len": 16, "device": "cpu"}


def _same_parts(path: Path) -> dict[str, object]:
    """config.json without what differs between two runs of one request: when, what the recipe expects of the
    seconds that were left after start-up (they depend on how long start-up took), and whether the probe's reading
    was taken now or kept from the first run (recipe/readings.py)."""
    config = json.loads(path.read_text())
    recipe = {k: v for k, v in (config["recipe"] or {}).items()
              if k not in ("expected_tokens", "expected_passes", "probe_kept", "probe_check")}
    return {"model": config["model"], "train": config["train"], "recipe": recipe,
            "corpus": {k: v for k, v in config["corpus"].items() if k != "created"}}


def test_the_function_and_the_command_write_the_same_run(words_file: Path, fake_probe: FakeProbe) -> None:
    """The same request, a fixed probe reading: the same recipe and the same config.json."""
    out = CliRunner().invoke(app, ["train", str(words_file), "--name", "cmd", "--time", "6s", "--hidden", "24",
                                   "--batch-size", "8", "--seq-len", "16", "--device", "cpu", "-q"])
    assert out.exit_code == 0, out.output
    model = charnn.train(str(words_file), name="fn", time="6s", hidden=24, batch_size=8, seq_len=16, device="cpu",
                         show_progress=False)
    assert isinstance(model, charnn.CharModel) and model.run_dir == Path("checkpoints/fn")
    assert _same_parts(Path("checkpoints/cmd/config.json")) == _same_parts(Path("checkpoints/fn/config.json"))
    assert json.loads(Path("checkpoints/fn/config.json").read_text())["recipe"]["set_by_you"] == \
        ["batch_size", "hidden", "seq_len"]
    assert len(model.generate("the ", length=30, seed=1)) == 30


@pytest.mark.parametrize(("options", "cli", "message"), [
    ({"hidden": 0}, ["--hidden", "0"], "--hidden 0 must be at least 1"),
    ({"resume": "r", "start_from": "r"}, ["--resume", "r", "--from", "r"], "--from starts a new run and --resume continues one"),
    ({"balance": True}, ["--balance"], "--balance applies to --voices"),
    ({"heads": 2}, ["--heads", "2"], "--heads applies to --cell slstm and mlstm only"),
    ({"time": "soon"}, ["--time", "soon"], "'soon' is not a duration — use e.g. 90s, 10m, 1h30m"),
])
def test_refusals_are_the_commands_one_line(words_file: Path, options: dict[str, object], cli: list[str],
                                            message: str) -> None:
    corpus = None if "resume" in options else str(words_file)
    with pytest.raises(CharnnError) as raised:
        charnn.train(corpus, max_steps=2, show_progress=False, **options)  # type: ignore[arg-type]
    assert message in str(raised.value) and "\n" not in str(raised.value)
    args = ["train", *([str(words_file)] if corpus else []), "--max-steps", "2", *cli]
    shown = CliRunner().invoke(app, args).output
    assert message in " ".join(shown.split()), shown
    assert not Path("checkpoints").exists() or not any(Path("checkpoints").iterdir())


def test_an_unknown_option_is_named(words_file: Path) -> None:
    with pytest.raises(UsageError, match=r"charnn.train\(\) has no option 'hiden'"):
        charnn.train(str(words_file), hiden=32, max_steps=2)


def test_text_voices_and_resume_from_python(tmp_path: Path) -> None:
    text = "the cat sat on the mat and the dog ate the log\n" * 60
    model = charnn.train(text=text, max_steps=4, eval_every=2, show_progress=False, **TINY)
    assert model.run_dir.name.startswith("text-") and model.step == 4
    written = list(Path("corpora/texts").glob("*.txt"))
    assert len(written) == 1 and written[0].read_text() == text  # kept under the corpora folder, named by content
    (tmp_path / "a.txt").write_text("aaa bbb aab\n" * 100)
    (tmp_path / "b.txt").write_text("xyz zyx xxy\n" * 100)
    voiced = charnn.train({"ab": tmp_path / "a.txt", "xy": tmp_path / "b.txt"}, name="v", max_steps=2,
                          show_progress=False, **TINY)
    assert voiced.voices == ("ab", "xy")
    more = charnn.train(resume="v", max_steps=4, show_progress=False)
    assert more.step == 4 and charnn.load("v").step == 4


def test_plot_and_inspect_show_inline(words_file: Path, tmp_path: Path) -> None:
    model = charnn.train(str(words_file), name="r", max_steps=6, eval_every=3, show_progress=False, **TINY)
    figure = model.plot()
    assert figure._repr_png_().startswith(b"\x89PNG")  # inline in a notebook whatever the backend
    lines = figure.axes[0].get_lines()
    assert [line.get_gid() for line in lines][:2] == ["train-0", "val-0"]
    assert len(lines[1].get_xdata()) == 2  # two validation passes
    page = model.inspect("the cat sat on the mat")
    html = page._repr_html_()
    assert html.startswith("<iframe srcdoc=") and "&lt;html" in html.lower()
    assert page.save(tmp_path / "p.html").read_text().lower().startswith("<!doctype html")
    assert json.loads(page.save(tmp_path / "p.json").read_text())["characters"] == len("the cat sat on the mat")
    assert "Inspection r (step 6)" in repr(page)


def test_doctor_says_what_it_runs_on(capsys: pytest.CaptureFixture[str]) -> None:
    report = charnn.doctor(speed=False)
    assert report.device == "cpu" and report.threads == torch.get_num_threads() and report.speed is None
    text = str(report)
    assert text.splitlines()[0].startswith("device:   cpu — ") and "torch:    " + torch.__version__ in text
    assert "<table>" in report._repr_html_()
    assert "probe:    0 readings of the --time recipe kept in" in text  # this test's own empty cache (conftest)
    assert CliRunner().invoke(app, ["doctor", "--no-speed"]).output.splitlines()[0].startswith("device:   cpu")


def test_a_training_run_names_its_device_first(words_file: Path) -> None:
    out = CliRunner().invoke(app, ["train", str(words_file), "--name", "d", "--max-steps", "2", "--hidden", "16",
                                   "--batch-size", "4", "--seq-len", "16", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith("device: cpu — ")
    again = CliRunner().invoke(app, ["train", "--resume", "d", "--max-steps", "4"])
    assert again.output.splitlines()[0].startswith("device: cpu — "), again.output


@pytest.mark.devices
def test_doctor_under_mps_and_cuda_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from charnn import capability
    from tests.emulation import mps_rules

    with mps_rules():  # the speed reading runs under MPS's rules (no float64 anywhere)
        report = charnn.doctor()
    assert report.speed is not None and report.speed > 0
    # A machine whose torch sees one CUDA GPU: auto picks it, names it and says why.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (79 * 2**30, 80 * 2**30))
    gpu = capability.Capability("cuda", float64=True, bf16_native=True, cudnn_rnn=True, index=0)
    monkeypatch.setattr(capability, "of", lambda device: gpu)  # what capability measures on a real GPU
    report = charnn.doctor(speed=False)
    assert (report.device, report.name, report.fp16) == ("cuda:0", "NVIDIA H100 80GB HBM3", True)
    assert report.why == "auto picks CUDA first: PyTorch sees 1 CUDA GPU(s)"
    assert str(report).splitlines()[0] == "device:   cuda:0 — NVIDIA H100 80GB HBM3 (79.0 GB free)"


def test_preview_shows_what_the_model_writes_and_changes_nothing(words_file: Path) -> None:
    common = ["train", str(words_file), "--max-steps", "20", "--eval-every", "10", "--hidden", "16", "--embed", "8",
              "--batch-size", "4", "--seq-len", "16", "--dropout", "0.1", "--device", "cpu"]
    shown = CliRunner().invoke(app, [*common, "--name", "p", "--preview", "30"])
    assert shown.exit_code == 0, shown.output
    writes = [line for line in shown.output.splitlines() if line.startswith("  writes: ")]
    assert len(writes) == 2 and all(len(ast.literal_eval(line.removeprefix("  writes: "))) == 30 for line in writes)
    plain = CliRunner().invoke(app, [*common, "--name", "q"])
    assert plain.exit_code == 0 and "writes:" not in plain.output
    from charnn.run import checkpoint

    a = checkpoint.load_tensors(Path("checkpoints/p/latest.pt"))
    b = checkpoint.load_tensors(Path("checkpoints/q/latest.pt"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # training never saw the preview
