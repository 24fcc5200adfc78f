"""The budget recipe: bigger budgets buy bigger models, explicit options always win."""

import json
import math
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charnn.cli import app
from charnn.model.network import ModelConfig
from charnn.recipe.plan import (
    AMP_MIN_GAIN,
    CANDIDATES,
    CHOSEN,
    EVAL_SHARE,
    MANY_PASSES,
    MAX_SCALE,
    MIN_EVAL_EVERY,
    MODEL_FIELDS,
    TOKENS_PER_PARAM,
    Recipe,
    Request,
    _cost,
    _params,
    amp_gain,
    announcement,
    apply,
    choose,
    configs,
    per_layer_cost,
    pick_amp,
    pick_batch,
    plan,
    spaced_evaluations,
)
from charnn.recipe.probe import PROBE, SCALE_PROBE
from charnn.run.config import TrainConfig
from tests.conftest import FakeProbe


def test_model_grows_with_budget_and_each_choice_is_the_largest_that_fits() -> None:
    sizes = []
    for budget in (30, 240, 600, 3600, 36000):
        r = choose(budget, 100_000_000, 65, speed=30_000)  # a corpus large enough for every size
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


def test_a_small_text_trains_on_the_smaller_batch_and_is_scored_about_once_a_pass() -> None:
    """Issue #41: 10 minutes on 210 KB is ~40 passes and validation turns after 8-15: twice the updates per pass,
    and a validation pass about every pass, so that patience stops the run soon after the turn."""
    speeds = {64: 40_000.0, 32: 34_000.0}
    large = plan(600, 10_000_000, 100, speeds, scale=0.4)
    small = plan(600, 210_000, 100, speeds, val_chars=21_000, eval_speed=80_000, scale=0.4)
    assert large.batch_size == 64 and large.eval_every == 200  # many steps, a fraction of a pass each: as before
    assert small.batch_size == 32 and small.eval_every == math.ceil(210_000 / (32 * 64))
    assert small.expected_passes is not None and small.expected_passes >= MANY_PASSES
    assert (small.layers, small.hidden) == (large.layers, large.hidden)  # the size is the speed's, as before
    assert "passes over the text)" in small.describe()
    # A tiny text: a pass is a few steps, so no closer than MIN_EVAL_EVERY.
    tiny = plan(600, 20_000, 100, speeds, val_chars=2_000, eval_speed=80_000, scale=0.4)
    assert tiny.eval_every == MIN_EVAL_EVERY


def test_the_smaller_batch_only_where_it_keeps_most_of_the_speed() -> None:
    assert pick_batch({64: 16_600, 32: 13_700}) == 32  # 2 CPU cores: 0.82x the speed for twice the updates
    assert pick_batch({64: 900_000, 32: 470_000}) == 64  # a GPU: half the streams, about half the speed
    assert pick_batch({24: 5_000}) == 24  # the user's batch: nothing to weigh
    assert pick_batch({64: 16_600, 32: 13_700}, steps_at_largest=1_700) == 64  # enough updates already (10m)
    cpu = {64: 36_000.0, 32: 27_000.0}  # the probe model's speeds on 2 cores in bf16 (scale 0.40)
    assert plan(240, 1_000_000, 65, cpu, amp=True, scale=0.40).batch_size == 32  # 4m: ~1,300 steps at 64
    assert plan(600, 1_000_000, 65, cpu, amp=True, scale=0.40).batch_size == 64  # 10m: ~2,100 steps at 64
    # The weight average follows the steps the batch gives: twice the steps, about twice the span (decay rounded).
    small, large = choose(240, 1_000_000, 65, 30_000, batch=32), choose(240, 1_000_000, 65, 30_000, batch=64)
    assert (small.batch_size, large.batch_size) == (32, 64)
    assert 1.6 < (1 - large.ema) / (1 - small.ema) < 2.5
    # ... and so do the evaluations: the same characters between full validation passes.
    assert (small.eval_every, large.eval_every) == (400, 200)


def test_a_bigger_model_is_costed_by_the_measured_scale_not_multiply_adds_alone() -> None:
    small, big = _cost("gru", *PROBE, 65), _cost("gru", *SCALE_PROBE, 65)
    assert per_layer_cost("gru", 65, small / big) == pytest.approx(0.0, abs=1e-6)  # as multiply-adds say
    assert per_layer_cost("gru", 65, 0.1) == pytest.approx(0.0, abs=1e-6)  # slower than that: noise
    k = 500_000.0  # a machine where each layer costs this many multiply-adds' time per character besides
    measured = _cost("gru", *PROBE, 65, k) / _cost("gru", *SCALE_PROBE, 65, k)
    assert per_layer_cost("gru", 65, measured) == pytest.approx(k)
    assert per_layer_cost("gru", 65, 1.3) == per_layer_cost("gru", 65, MAX_SCALE) < float("inf")
    # The candidates' expected characters follow: a bigger model is costed by the fitted cost.
    fitted = choose(600, 1_000_000, 65, speed=36_000, batch=64, scale=measured)
    assert fitted.probe_scale == round(measured, 3)
    relative = _cost("gru", *PROBE, 65, k) / _cost("gru", fitted.layers, fitted.hidden, fitted.embed, 65, k)
    assert fitted.expected_tokens == pytest.approx(36_000 * relative * 600)
    plain = choose(600, 1_000_000, 65, speed=36_000, batch=64)
    assert plain.probe_scale is None and CANDIDATES.index((plain.layers, plain.hidden, plain.embed)) <= \
        CANDIDATES.index((fitted.layers, fitted.hidden, fitted.embed))


@pytest.mark.parametrize("size", [PROBE, SCALE_PROBE, (3, 512, 128)])
def test_the_mlstm_cost_is_the_multiply_adds_its_forward_does(size: tuple[int, int, int]) -> None:
    # The mLSTM's work per character grows with the window (its attention) unlike a recurrent cell's, so the
    # recipe's cost must count it: checked against the multiply-adds PyTorch counts in a forward window.
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from charnn.model.network import CharRNN, ModelConfig

    model = CharRNN(ModelConfig(vocab_size=65, cell="mlstm", layers=size[0], hidden=size[1], embed=size[2]))
    ids = torch.zeros(2, Recipe.seq_len, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model(ids, model.init_state(2))
    assert counter.get_total_flops() / 2 / ids.numel() == _cost("mlstm", *size, 65)


def test_bf16_only_where_the_probe_found_it_clearly_faster_over_the_batches() -> None:
    assert pick_amp({(64, False): 16_000, (64, True): 20_000, (32, False): 13_000, (32, True): 16_500})  # 1.25x
    # 2 Zen 4 cores: 1.36x at 64, and a noisy 1.12x at 32 (RECIPES.md #87) must not flip the run to fp32.
    two = {(64, False): 24_000, (64, True): 24_000 * 1.36, (32, False): 20_000, (32, True): 20_000 * 1.12}
    assert amp_gain(two) == pytest.approx((1.36 * 1.12) ** 0.5) and pick_amp(two)
    assert not pick_amp({(64, False): 16_000, (64, True): 9_000, (32, False): 13_000, (32, True): 8_000})  # no bf16
    assert not pick_amp({(64, False): 16_000, (64, True): 16_000 * (AMP_MIN_GAIN - 0.01)})
    assert not pick_amp({(64, True): 30_000}) and amp_gain({(64, True): 30_000}) is None  # measured one way only
    # The recipe it gives says so, and its speed (hence its model) is the bf16 one.
    faster = plan(240, 1_000_000, 65, {64: 40_000.0, 32: 36_000.0}, amp=True)
    assert faster.amp and "bf16 autocast" in faster.describe()
    assert not plan(240, 1_000_000, 65, {64: 40_000.0, 32: 36_000.0}).amp


def test_validation_passes_take_a_bounded_share_of_a_budget() -> None:
    """A large validation split gets fewer, evenly spread passes; a small one the usual spacing."""
    # tiny-shakespeare at 4 minutes: a pass of 111k characters takes a few seconds, so nothing changes.
    small = choose(240, 1_000_000, 65, 20_000, batch=32, val_chars=111_000, eval_speed=70_000)
    assert small.eval_every == 400 and small.eval_pass_s is not None and small.eval_pass_s < 3
    # python-stdlib: 1.1M characters, a pass of ~15-25 s; the usual 400 steps would give 3-5 passes.
    large = choose(240, 10_000_000, 222, 20_000, batch=32, val_chars=1_100_000, eval_speed=70_000)
    steps = (large.expected_tokens or 0) / (32 * 64)
    assert large.eval_pass_s is not None and 10 < large.eval_pass_s < 30
    assert steps // 400 * large.eval_pass_s > EVAL_SHARE * 240  # what the usual spacing would have cost
    before_final = steps // large.eval_every
    assert before_final >= 1 and before_final * large.eval_pass_s <= EVAL_SHARE * 240
    assert large.eval_every > 400 and steps / large.eval_every < before_final + 1  # spread over the whole run
    # A pass that alone exceeds the share: only the final one.
    assert spaced_evaluations(2_000, 32, 240, pass_s=60) >= 2_000
    assert spaced_evaluations(2_000, 64, 240, pass_s=0) == 200  # not measured: the usual spacing


def test_explicit_options_override_the_recipe(words_file: Path, fake_probe: FakeProbe) -> None:
    result = CliRunner().invoke(app, ["train", str(words_file), "--name", "r", "--time", "5s", "--hidden", "24",
                                      "--batch-size", "8", "--seq-len", "16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "recipe for 5s" in result.output and "(set by you: batch_size, hidden, seq_len)" in result.output
    config = json.loads(Path("checkpoints/r/config.json").read_text())
    assert config["model"]["hidden"] == 24 and config["train"]["batch_size"] == 8
    assert config["model"]["cell"] == "gru" and config["recipe"]["hidden"] != 24  # chosen, then overridden
    assert config["recipe"]["set_by_you"] == ["batch_size", "hidden", "seq_len"]  # ... and the record says so
    assert config["recipe"]["probe_scale"] > 0  # the recipe sized the layers and embedding: it measured
    # The announced line is what trained (the recipe's choice with the user's options over it).
    chosen = f"dropout {config['model']['dropout']}, batch 8 x seq 16, lr {config['train']['lr']:g}"
    assert chosen in result.output and re.search(rf"eval every {config['train']['eval_every']}\b", result.output)


@pytest.mark.parametrize("given", [None, "--no-amp", "--amp"])
def test_the_budget_trains_in_bf16_where_the_probe_says_so_unless_the_user_chose(
        words_file: Path, monkeypatch: pytest.MonkeyPatch, fake_probe: FakeProbe, given: str | None) -> None:
    import charnn.recipe.sizing as sizing
    import charnn.training.session as api_module

    fake_probe.bf16_gain = 1.5  # a machine where bf16 wins, whatever this one does
    for module in (api_module, sizing):  # the warning and the probe both ask
        monkeypatch.setattr(module, "bf16_native", lambda device: True)
    result = CliRunner().invoke(app, ["train", str(words_file), "--name", "r", "--time", "5s", "--hidden", "24",
                                      "--device", "cpu"] + ([given] if given else []))
    assert result.exit_code == 0, result.output
    config = json.loads(Path("checkpoints/r/config.json").read_text())
    want = given != "--no-amp"
    assert config["train"]["amp"] is want and ("bf16 autocast" in result.output) is want
    probed = [amps for kind, amps in fake_probe.calls if kind == "speeds"]
    assert probed == [(False, True) if given is None else (want,)]  # a choice made by the user is not probed
    assert config["recipe"]["probe_amp_gain"] == (1.5 if given is None else None)  # why it chose, kept
    set_by_you = re.search(r"set by you: ([^)]*)\)", result.output)
    assert set_by_you is not None and ("amp" in set_by_you.group(1).split(", ")) == (given is not None)
    if want:
        assert "amp: bf16 autocast; the recurrent layers multiply in bf16 and return float32" in result.output


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_probed_only_where_the_cpu_has_bf16_instructions(
        words_file: Path, monkeypatch: pytest.MonkeyPatch, fake_probe: FakeProbe, native: bool) -> None:
    """Issue #32: a CPU that emulates bf16 (Zen 3, AVX2 only) spent ~80 s probing it; it is never timed there."""
    import charnn.recipe.sizing as sizing
    import charnn.training.session as api_module

    for module in (api_module, sizing):  # the warning and the probe both ask
        monkeypatch.setattr(module, "bf16_native", lambda device: native)
    fake_probe.bf16_gain = 1.5
    result = CliRunner().invoke(app, ["train", str(words_file), "--name", "r", "--time", "5s", "--hidden", "24",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert [amps for kind, amps in fake_probe.calls if kind == "speeds"] == [(False, True) if native else (False,)]
    assert [amp for kind, amp in fake_probe.calls if kind == "scale"] == [native]  # the scale probe too: fp32 only
    assert json.loads(Path("checkpoints/r/config.json").read_text())["train"]["amp"] is native
    assert "no bf16 instructions" not in result.output


def test_amp_asked_for_on_an_emulating_cpu_warns_with_the_measured_slowdown(
        words_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import charnn.training.session as api_module

    monkeypatch.setattr(api_module, "bf16_native", lambda device: False)
    monkeypatch.setattr(api_module, "bf16_speed", lambda: 0.21)
    result = CliRunner().invoke(app, ["train", str(words_file), "--name", "r", "--max-steps", "2", "--hidden", "16",
                                      "--device", "cpu", "--amp", "--eval-every", "2"])
    assert result.exit_code == 0, result.output
    assert ("warning: this CPU has no bf16 instructions, so PyTorch emulates bf16: a quick measurement ran it at 0.21x "
            "fp32's speed — --no-amp trains faster here") in result.output


EXPLICIT = {"cell": "lstm", "layers": 3, "hidden": 200, "embed": 40, "dropout": 0.35, "batch_size": 24,
            "seq_len": 48, "lr": 1.7e-3, "warmup": 7, "ema": 0.97, "eval_every": 150, "amp": True}


@pytest.mark.parametrize("field", list(EXPLICIT))
def test_an_explicit_option_wins_over_the_recipe_for_every_field(field: str) -> None:
    """The CLI hands over only what the user set; the recipe fills the rest and never overrides it."""
    assert set(EXPLICIT) == set(CHOSEN)
    request = Request(**{field: EXPLICIT[field]})
    model_cfg, cfg, auto = configs(request, budgeted=True, time_budget=600.0)
    assert field not in auto and (field == "cell" or auto == frozenset(CHOSEN) - {"cell", field})
    recipe = choose(600.0, 1_000_000, 65, speed=40_000, cell=model_cfg.cell)
    model_cfg, cfg = apply(recipe, auto, model_cfg, cfg)
    for name in CHOSEN:
        got = getattr(model_cfg if name in MODEL_FIELDS else cfg, name)
        want = EXPLICIT[name] if name == field else getattr(recipe, name)
        assert got == want, name
        assert name == field or name == "cell" or got != EXPLICIT[name]  # the recipe really chose the others
    line = announcement(recipe, auto, model_cfg, cfg)
    assert line.startswith("recipe for 600s at 40,000 chars/s (probe)")
    assert (f"(set by you: {field})" in line) == (field != "cell")


def test_the_library_defaults_are_what_charnn_train_trains(words_file: Path) -> None:
    """One home for the defaults: `ModelConfig()` and `TrainConfig()` from Python are `charnn train`'s, option
    for option (a run's config.json holds both configs as they trained)."""
    result = CliRunner().invoke(app, ["train", str(words_file), "--name", "d", "--max-steps", "1", "--device", "cpu",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads(Path("checkpoints/d/config.json").read_text())
    assert config["train"] == asdict(TrainConfig(max_steps=1))
    assert config["model"] == json.loads(json.dumps(asdict(ModelConfig(vocab_size=config["model"]["vocab_size"]))))
    assert asdict(Recipe()).items() >= {k: v for k, v in config["model"].items() if k in CHOSEN}.items()


def test_without_a_budget_the_defaults_fill_what_is_unset() -> None:
    model_cfg, cfg, auto = configs(Request(hidden=100, heads=2, cell="slstm"), budgeted=False, max_steps=10)
    assert auto == frozenset() and cfg.max_steps == 10
    assert (model_cfg.cell, model_cfg.hidden, model_cfg.heads, model_cfg.layers) == ("slstm", 100, 2, Recipe().layers)
    assert (cfg.batch_size, cfg.seq_len, cfg.lr) == (Recipe().batch_size, Recipe().seq_len, Recipe().lr)


def test_the_time_a_bigger_model_spends_scoring_counts_against_it() -> None:
    """python-stdlib at 4 minutes (RECIPES.md #111): a pass over 1.1M validation characters takes 2x384 about
    30 s of the 240, which leaves it too few characters; 2x320 trains on more and won by 0.006-0.024."""
    # that run's probe readings: 29,183 chars/s at batch 32 in bf16, scale 0.418, scoring at 88,509 chars/s
    free = choose(240, 10_000_000, 222, 29_183.0, batch=32, amp=True, scale=0.418)
    costly = choose(240, 10_000_000, 222, 29_183.0, batch=32, val_chars=1_100_000, eval_speed=88_509.0, amp=True,
                    scale=0.418)
    assert (free.hidden, costly.hidden) == (384, 320)
    assert costly.eval_pass_s is not None and 15 < costly.eval_pass_s < 30


def test_a_text_passed_over_many_times_is_sized_by_passes_at_measured_speeds() -> None:
    from charnn.recipe.plan import CANDIDATES, EVAL_SHARE, TURN_PASSES, by_passes

    two_layer = [size for size in CANDIDATES if size[0] == 2]
    asked: list[tuple[int, int, int]] = []

    def speed_of(size: tuple[int, int, int]) -> float:
        asked.append(size)
        return {256: 40_000.0, 320: 30_000.0, 384: 20_000.0, 512: 10_000.0}[size[1]]

    chars = 200_000  # 2x512 at 10,000 chars/s makes TURN_PASSES passes in `need / 10_000` s less the evaluation share
    need = TURN_PASSES * chars / (1 - EVAL_SHARE)
    assert by_passes(need / 10_000, chars, speed_of) == (two_layer[-1], 10_000.0)
    assert asked == [two_layer[-1]]  # largest first, and no further than needed
    asked.clear()
    assert by_passes(need / 20_000, chars, speed_of) == ((2, 384, 64), 20_000.0)  # 2x512 would not reach its turn
    assert asked == [(2, 512, 64), (2, 384, 64)]
    assert by_passes(1.0, chars, speed_of) == (two_layer[0], 40_000.0)  # nothing reaches it: the smallest


def test_a_small_text_with_a_long_budget_trains_the_size_measured_to_reach_its_turn(
        words_file: Path, fake_probe: FakeProbe) -> None:
    """The probe's small model scaled is not trusted for a text passed over many times: each size is timed at the
    run's batch and precision (largest first), kept beside the machine's reading, and the next run times none."""
    fake_probe.speed = 400_000.0  # a fast machine: 8 s are many passes over 18,000 characters, even for 2x512
    args = ["train", str(words_file), "--scratch", "--time", "8s", "--device", "cpu", "--overwrite"]
    first = CliRunner().invoke(app, [*args, "--name", "a"])
    assert first.exit_code == 0, first.output
    sized = [call for call in fake_probe.calls if call[0] == "speeds"]
    assert len(sized) >= 2  # the probe's reading, then at least one size of its own
    assert "times at" in first.output and "its speed timed at this size" in first.output
    config = json.loads(Path("checkpoints/a/config.json").read_text())
    recipe = config["recipe"]
    assert recipe["measured_tokens_per_s"] > 0 and config["model"]["layers"] == 2 and recipe["dropout"] == 0.3
    fake_probe.calls.clear()
    second = CliRunner().invoke(app, [*args, "--name", "b"])
    assert second.exit_code == 0, second.output
    # the quick check of the kept reading, and no size timed again
    assert [call for call in fake_probe.calls if call[0] == "speeds"] == [("speeds", (False,))]
    assert json.loads(Path("checkpoints/b/config.json").read_text())["model"] == config["model"]
