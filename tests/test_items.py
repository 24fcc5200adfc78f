"""`charnn sample --items`: distinct complete items, new ones on request, counts that add up, the bound."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charnn import api
from charnn.cli import app
from charnn.run.originality import Index, build
from tests.conftest import train_run

runner = CliRunner()
SYLLABLES = ["ka", "lo", "mi", "ra", "ne", "to", "su", "vi"]


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A run trained on 300 made-up names of two or three syllables (of 576 possible)."""
    root = tmp_path_factory.mktemp("names")
    rng = random.Random(3)
    every = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))) for _ in range(2000)})
    chosen = rng.sample(every, 300)
    (root / "names.txt").write_text("\n".join(chosen) + "\n", encoding="utf-8")
    cwd = Path.cwd()
    import os

    os.chdir(root)
    try:
        train_run(root / "names.txt", name="names", max_steps=150, eval_every=50)
    finally:
        os.chdir(cwd)
    return root, chosen


def invoke(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["sample", str(root / "checkpoints" / "names"), *args,
                                      "--corpora-dir", str(root / "corpora")])
    return result.exit_code, result.stdout, result.stderr


def test_new_items_are_distinct_unknown_and_counted(names: tuple[Path, list[str]]) -> None:
    root, chosen = names
    code, out, err = invoke(root, "--items", "12", "--new", "--json", "--seed", "1")
    assert code == 0, err
    found = json.loads(out)
    items = found["items"]
    assert len(items) == 12 and len(set(items)) == 12
    assert not set(items) & set(chosen)
    assert all(item and "\n" not in item for item in items)
    assert found["kept"] + found["repeated"] + found["known"] + found["empty"] + found["unfinished"] == found["attempts"]
    assert found["known"] > 0  # the model does write names from its list, and they were dropped
    assert "12 items;" in err and "already in the training text" in err


def test_plain_items_one_per_line_without_banners_and_seeded(names: tuple[Path, list[str]]) -> None:
    root, _ = names
    code, out, err = invoke(root, "--items", "8", "--seed", "5")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 8 and len(set(lines)) == 8 and out.endswith("\n")
    assert not any(line.startswith("---") or not line for line in lines)
    assert invoke(root, "--items", "8", "--seed", "5")[1] == out  # a seed gives the same list
    assert invoke(root, "--items", "8", "--seed", "6")[1] != out


def test_items_start_with_the_prime(names: tuple[Path, list[str]]) -> None:
    root, _ = names
    code, out, _ = invoke(root, "--items", "5", "--prime", "ka", "--seed", "2")
    assert code == 0
    assert all(line.startswith("ka") for line in out.splitlines()) and len(out.splitlines()) == 5


def test_a_bound_that_cannot_be_met_prints_what_it_found(names: tuple[Path, list[str]]) -> None:
    root, _ = names
    code, out, err = invoke(root, "--items", "50", "--attempts", "6", "--seed", "1", "--json")
    assert code == 0
    found = json.loads(out)
    assert found["attempts"] == 6 and not found["complete"] and len(found["items"]) <= 6
    assert "found" in err and "of 50 items within the bound of 6 draws" in err
    # Items too long to finish within --length count as unfinished, and none is printed.
    found = json.loads(invoke(root, "--items", "3", "--length", "1", "--attempts", "10", "--json", "--seed", "1")[1])
    assert found["items"] == [] and found["unfinished"] == 10


def test_stanzas_with_an_escaped_separator(tmp_path: Path) -> None:
    (tmp_path / "stanzas.txt").write_text("roses red\nviolets blue\n\n" * 200, encoding="utf-8")
    train_run(tmp_path / "stanzas.txt", name="st", max_steps=120, eval_every=60)
    model = api.load_run("st", device="cpu")
    found = model.items(3, separator="\n\n", temperature=0, attempts=20)
    # Greedy writes one stanza (two lines, the newline between them kept), then repeats it.
    assert len(found.items) == 1 and found.items[0].endswith("red\nviolets blue")
    assert found.repeated == 19 and not found.complete
    result = runner.invoke(app, ["sample", "st", "--items", "1", "--separator", "\\n\\n", "--temperature", "0"])
    assert result.exit_code == 0 and result.stdout == found.items[0] + "\n\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text("abc", min_size=1, max_size=4), min_size=1, max_size=12),
       st.text("abc", min_size=1, max_size=4))
def test_holds_item_is_exact_membership(items: list[str], probe: str) -> None:
    chars = ["\n", "a", "b", "c"]
    text = "\n".join(items)
    ids = np.array([chars.index(c) for c in text], dtype=np.uint8)
    index = Index(ids, build(ids), [("", 0)], 0)
    separator = np.array([0], dtype=np.uint8)
    for candidate in [*items, probe]:
        encoded = np.array([chars.index(c) for c in candidate], dtype=np.uint8)
        assert index.holds_item(encoded, separator) == (candidate in items), (items, candidate)
