"""The budget recipe: bigger budgets buy bigger models, explicit options always win."""

import json
from pathlib import Path

from typer.testing import CliRunner

from charnn.cli import app
from charnn.recipe import CANDIDATES, TOKENS_PER_PARAM, _cost, _params, choose


def test_model_grows_with_budget_and_each_choice_is_the_largest_that_fits() -> None:
    sizes = []
    for budget in (30, 240, 600, 3600, 36000):
        r = choose(budget, 1_000_000, 65, speed=30_000)
        sizes.append(CANDIDATES.index((r.layers, r.hidden, r.embed)))
        seen = r.expected_tokens
        assert seen >= TOKENS_PER_PARAM * _params("gru", r.layers, r.hidden, r.embed, 65) or sizes[-1] == 0
        if sizes[-1] + 1 < len(CANDIDATES):  # the next size up would not see enough characters
            nxt = CANDIDATES[sizes[-1] + 1]
            tokens = 30_000 * _cost("gru", 2, 256, 64, 65) / _cost("gru", *nxt, 65) * budget
            assert tokens < TOKENS_PER_PARAM * _params("gru", *nxt, 65)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_dropout_follows_passes_over_the_corpus() -> None:
    assert choose(240, 100_000_000, 65, speed=30_000).dropout == 0.0  # a fraction of one pass
    assert choose(240, 50_000, 65, speed=30_000).dropout == 0.3  # many passes over a small corpus


def test_explicit_options_override_the_recipe(words_file: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(words_file), "--name", "r", "--time", "2s", "--hidden", "24",
                                      "--batch-size", "8", "--seq-len", "16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "recipe for 2s" in result.output and "(set by you: batch_size, hidden, seq_len)" in result.output
    config = json.loads(Path("checkpoints/r/config.json").read_text())
    assert config["model"]["hidden"] == 24 and config["train"]["batch_size"] == 8
    assert config["model"]["cell"] == "gru" and config["recipe"]["hidden"] != 24  # chosen, then overridden
