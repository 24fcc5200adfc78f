"""Beam search (`charnn sample --beam W`): width 1 is greedy, the best kept hypothesis is printed, scores are the
model's log-probabilities, items come out distinct and complete, the stochastic variant is seeded."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charnn import api
from charnn.cli import app
from tests.conftest import train_run

runner = CliRunner()


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> api.CharModel:
    import random

    root = tmp_path_factory.mktemp("beam")
    rng = random.Random(1)
    lines = [" ".join(rng.choice(["the", "cat", "sat", "on", "mat", "dog", "ran"]) for _ in range(rng.randint(2, 5)))
             for _ in range(700)]
    (root / "words.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        run_dir = train_run(root / "words.txt", name="words", max_steps=120, eval_every=60)
    finally:
        os.chdir(cwd)
    return api.load_run(str(root / run_dir) if not run_dir.is_absolute() else str(run_dir), device="cpu")


def forward_logprob(model: api.CharModel, prime: str, text: str) -> float:
    ids = torch.tensor([model.tokenizer.encode(prime + text)])
    with torch.inference_mode():
        logits, _ = model.model(ids, model.model.init_state(1, torch.device("cpu")))
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    targets = ids[0, len(prime):]
    return float(logp[torch.arange(len(prime) - 1, len(prime) + len(text) - 1), targets].sum())


@pytest.mark.parametrize("stop", [None, "\n"])
def test_width_one_is_greedy(words: api.CharModel, stop: str | None) -> None:
    greedy = words.generate("the ", length=80, temperature=0, stop=stop)
    beams = words.beam("the ", width=1, length=80, stop=stop, no_repeat=None)
    assert beams.hypotheses[0].text == greedy
    # a beam of text keeps to no-repeat 16 by default (BEAM_NO_REPEAT): greedy decoding under the same control
    steered = words.generate("the ", length=80, temperature=0, stop=stop, no_repeat=16)
    assert words.beam("the ", width=1, length=80, stop=stop).hypotheses[0].text == steered


def test_the_best_kept_hypothesis_wins_and_scores_are_the_models(words: api.CharModel) -> None:
    beams = words.beam("the ", width=6, length=40, stop="\n")
    kept = beams.hypotheses
    assert len(kept) >= 2
    assert all(a.score >= b.score for a, b in itertools.pairwise(kept))
    for h in kept:
        assert math.isclose(h.logprob, forward_logprob(words, "the ", h.text), abs_tol=1e-3)
        assert h.finished == h.text.endswith("\n")
    assert len({h.text for h in kept}) == len(kept)


def test_the_command_prints_the_best_and_says_its_score(words: api.CharModel) -> None:
    result = runner.invoke(app, ["sample", str(words.run_dir), "--beam", "4", "--length", "30", "--prime", "the "])
    assert result.exit_code == 0, result.output
    best = words.beam("the ", width=4, length=30).hypotheses[0]
    assert result.stdout == "the " + best.text + "\n"
    assert f"{best.score:.4f} nats per character" in result.stderr


def test_items_by_beam_are_the_most_likely_distinct_complete_lines(words: api.CharModel) -> None:
    found = words.items(5, beam=4)
    assert len(found.items) == 5 and len(set(found.items)) == 5 and all("\n" not in i and i for i in found.items)
    result = runner.invoke(app, ["sample", str(words.run_dir), "--items", "5", "--beam", "4", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["items"] == found.items


def test_the_stochastic_variant_is_seeded_and_varies(words: api.CharModel) -> None:
    a = words.beam("the ", width=4, length=40, temperature=1.0, seed=3).hypotheses[0].text
    assert words.beam("the ", width=4, length=40, temperature=1.0, seed=3).hypotheses[0].text == a
    others = {words.beam("the ", width=4, length=40, temperature=1.0, seed=s).hypotheses[0].text for s in range(4, 9)}
    assert len(others | {a}) > 1


def test_new_items_by_beam_are_not_training_lines(words: api.CharModel) -> None:
    lines = set(Path(words.config.sources[0]).read_text().splitlines())
    found = words.items(4, beam=8, new=True, attempts=None)
    assert not set(found.items) & lines
    assert len(found.items) + found.known + found.empty == found.attempts
