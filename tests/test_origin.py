"""Base or scratch (recipe/origin.py): the rule, and a new run without --from that follows it and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import charnn
from charnn.cli import app
from charnn.errors import UsageError
from charnn.recipe import origin
from charnn.recipe.origin import MAX_BUDGET_S, MAX_CHARS, MIN_KNOWN, Text, decide, text_of
from charnn.run import builtin
from tests.conftest import FakeProbe


def test_text_of_counts_the_letters_the_base_knows() -> None:
    text = text_of(["héllo ", "wörld\n"], alphabet="helo wrd\n")
    assert text == Text(chars=12, letters=10, known=8)  # the space and the newline are not letters
    assert text.known_share == pytest.approx(8 / 10)
    assert text_of(["Привет, мир"], "abc ,").known_share == 0.0  # another script: its punctuation does not count
    assert text_of(["1\t2 ✓"], "12 ") == Text(chars=5, letters=5, known=3)  # no letters: every character counts
    assert text_of([], "abc").known_share == 1.0  # an empty text has nothing the base cannot spell


def test_the_rule_at_its_edges() -> None:
    assert decide(Text(MAX_CHARS, 900, 900), 60).base
    assert not decide(Text(MAX_CHARS + 1, 900, 900), 60).base
    assert decide(Text(2000, 1000, round(1000 * MIN_KNOWN)), 60).base
    assert not decide(Text(2000, 1000, round(1000 * MIN_KNOWN) - 1), 60).base
    assert decide(Text(1000, 1000, 1000), MAX_BUDGET_S).base
    assert not decide(Text(1000, 1000, 1000), MAX_BUDGET_S + 1).base


@settings(max_examples=60, derandomize=True)
@given(chars=st.integers(1, 3 * MAX_CHARS), share=st.floats(0, 1), budget=st.floats(1, 4 * MAX_BUDGET_S))
def test_the_base_only_for_a_small_text_it_can_spell_in_a_measured_budget(chars: int, share: float,
                                                                          budget: float) -> None:
    text = Text(chars, chars, int(chars * share))
    chosen = decide(text, budget)
    assert chosen.base == (chars <= MAX_CHARS and text.known_share >= MIN_KNOWN and budget <= MAX_BUDGET_S)
    assert chosen.line().startswith("start: from the base model — " if chosen.base else "start: from scratch — ")
    assert chosen.base or "--from base" in chosen.why  # a run sent to scratch by the rule says how to use the base


@pytest.fixture
def english(tmp_path: Path) -> Path:
    """A small text the base can spell (words_file has ü and ï, which the base has never seen)."""
    path = tmp_path / "english.txt"
    path.write_text("The cat sat on the mat, and the dog ran off.\n" * 400, encoding="utf-8")
    return path


def _train(*args: str) -> tuple[int, list[str], dict]:
    """Exit code, the output from the line that says where the run starts (after the device and the corpus: a
    refusal before them stays one line), and config.json."""
    result = CliRunner().invoke(app, ["train", *args, "--name", "r", "--device", "cpu"])
    config_path = Path("checkpoints/r/config.json")
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    lines = result.output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("start: ")]
    assert len(starts) == 1 and starts[0] <= 2, result.output
    return result.exit_code, lines[starts[0]:], config


def test_a_small_text_with_a_budget_starts_from_the_base_and_says_so(english: Path, fake_probe: FakeProbe) -> None:
    code, lines, config = _train(str(english), "--time", "6s", "--batch-size", "8", "--seq-len", "16")
    assert code == 0, lines
    assert lines[0].startswith("start: from the base model — a text of 18,000 characters (100.0% of its letters"), lines
    assert "--scratch" in lines[0]
    assert config["parent"]["name"] == "base"  # fine-tuned: the base's architecture, its vocabulary grown
    recipe = next(line for line in lines if line.startswith("recipe for"))  # the architecture is not the user's
    assert "(the parent's: dropout, embed, hidden, layers; set by you: batch_size, seq_len)" in recipe, recipe
    base = json.loads((builtin.folder() / "config.json").read_text())["model"]
    assert (config["model"]["layers"], config["model"]["hidden"]) == (base["layers"], base["hidden"])


def test_quiet_still_says_the_run_starts_from_the_base(english: Path, fake_probe: FakeProbe) -> None:
    result = CliRunner().invoke(app, ["train", str(english), "--time", "6s", "--batch-size", "8", "--seq-len", "16",
                                      "-q", "--device", "cpu"])
    assert result.exit_code == 0 and result.output.startswith("start: from the base model"), result.output


@pytest.mark.parametrize(("options", "why"), [
    (["--scratch"], "--scratch given"),
    (["--hidden", "24"], "--hidden given"),
    (["--cell", "lstm", "--layers", "1"], "--cell given"),
])
def test_scratch_when_asked_or_when_the_architecture_is_fixed(words_file: Path, fake_probe: FakeProbe,
                                                               options: list[str], why: str) -> None:
    code, lines, config = _train(str(words_file), "--time", "6s", "--batch-size", "8", "--seq-len", "16", *options)
    assert code == 0, lines
    assert f"start: from scratch — {why}" in lines[0]
    assert config["parent"] is None


def test_steps_or_passes_train_from_scratch(words_file: Path) -> None:
    code, lines, config = _train(str(words_file), "--max-steps", "3", "--batch-size", "8", "--seq-len", "16")
    assert code == 0 and config["parent"] is None
    assert lines[0].startswith("start: from scratch — --max-steps given"), lines


def test_a_text_the_base_cannot_spell_starts_from_scratch(words_file: Path, tmp_path: Path,
                                                         fake_probe: FakeProbe) -> None:
    path = tmp_path / "russian.txt"
    path.write_text("съешь же ещё этих мягких французских булок, да выпей чаю\n" * 300, encoding="utf-8")
    code, lines, config = _train(str(path), "--time", "6s", "--batch-size", "8", "--seq-len", "16")
    assert code == 0 and config["parent"] is None
    assert lines[0].startswith("start: from scratch — the base knows 0.0% of the text's letters"), lines
    # a few letters the base never saw (ü and ï, 7% of the letters) are enough to stay from scratch
    code, lines, config = _train(str(words_file), "--time", "6s", "--batch-size", "8", "--seq-len", "16", "--overwrite")
    assert code == 0 and config["parent"] is None and "the base knows 9" in lines[0], lines


def test_characters_outside_the_base_that_are_not_letters_do_not_send_a_text_to_scratch(
        tmp_path: Path, fake_probe: FakeProbe) -> None:
    path = tmp_path / "tabbed.txt"  # a tab (which the base never saw) in every line: 6% of the characters
    path.write_text("\tThe cat sat on the mat.\n" * 400, encoding="utf-8")
    code, lines, config = _train(str(path), "--time", "6s", "--batch-size", "8", "--seq-len", "16")
    assert code == 0 and config["parent"]["name"] == "base", lines
    assert "(100.0% of its letters" in lines[0], lines


def test_a_large_text_starts_from_scratch_without_reading_its_alphabet(tmp_path: Path, fake_probe: FakeProbe,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(origin, "MAX_CHARS", 10_000)

    def unread(*args: object) -> Text:
        raise AssertionError("a text over the size limit was read for its alphabet")

    monkeypatch.setattr(origin, "text_of", unread)
    path = tmp_path / "big.txt"
    path.write_text("the cat sat on the mat\n" * 1000, encoding="utf-8")
    code, lines, config = _train(str(path), "--time", "6s", "--batch-size", "8", "--seq-len", "16")
    assert code == 0 and config["parent"] is None
    assert lines[0].startswith("start: from scratch — the text (23,000 characters) is large enough"), lines


@pytest.mark.parametrize(("args", "message"), [
    (["--scratch", "--from", "base"], "--scratch starts from random weights and --from from a model — give one"),
    (["--resume", "r", "--scratch"], "--scratch cannot change when resuming"),
])
def test_scratch_beside_a_start_is_refused(words_file: Path, args: list[str], message: str) -> None:
    before = sorted(Path().rglob("*"))
    result = CliRunner().invoke(app, ["train", *([] if "--resume" in args else [str(words_file)]), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert sorted(Path().rglob("*")) == before


def test_the_python_function_takes_scratch(words_file: Path, fake_probe: FakeProbe) -> None:
    model = charnn.train(str(words_file), name="fn", time="6s", batch_size=8, seq_len=16, device="cpu",
                         scratch=True, show_progress=False)
    assert json.loads((model.run_dir / "config.json").read_text())["parent"] is None
    with pytest.raises(UsageError, match="--scratch starts from random weights"):
        charnn.train(str(words_file), start_from="base", scratch=True, show_progress=False)


@pytest.mark.parametrize("limit", [["--time", "1m"], ["--max-steps", "5"], []])
def test_a_refused_run_is_one_line_whichever_way_it_would_start(limit: list[str]) -> None:
    result = CliRunner().invoke(app, ["train", "missing.txt", *limit])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: corpus 'missing.txt' not found")
