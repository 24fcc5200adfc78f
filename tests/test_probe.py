"""The probe: this machine's speed from timed steps, read so that a noisy machine does not move the recipe."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charnn import capability
from charnn.cli import app
from charnn.model.evaluation import EVAL_STREAMS
from charnn.recipe.plan import pick_batch, plan
from charnn.recipe.probe import measure_eval_speed, measure_scale, measure_speeds, steady_speeds


def test_the_probe_times_the_batches_in_turn_so_a_slow_spell_cannot_pick_the_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4-step spell of a slowed machine must not land on one batch size's timings only."""
    import charnn.recipe.probe as probe_module

    class Clock:  # every step takes 1 s, except steps 14-17 (of 20: 3+3 warm-up, 7+7 timed) take 5 s
        def __init__(self) -> None:
            self.calls, self.now = 0, 0.0

        def perf_counter(self) -> float:
            if self.calls % 2:  # the end of step calls // 2
                self.now += 5.0 if 14 <= self.calls // 2 <= 17 else 1.0
            self.calls += 1
            return self.now

    clock = Clock()
    monkeypatch.setattr(probe_module, "time", clock)
    before = torch.get_rng_state()
    speeds = measure_speeds(torch.device("cpu"), 20, "gru", (64, 32), seq=8)
    assert clock.calls == 40
    assert torch.equal(torch.get_rng_state(), before)  # the run's random stream is untouched
    # Each batch saw 2 of its 7 timed steps in the spell, so its median is a normal step's time.
    assert speeds == {(64, False): 64 * 8 / 1.0, (32, False): 32 * 8 / 1.0}
    # 0.5x: the honest ratio; timed one after the other, 32 would have read 0.1x
    assert pick_batch({b: v for (b, _), v in speeds.items()}) == 64


def test_the_second_probe_times_the_bigger_model_in_turns_with_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import charnn.recipe.probe as probe_module

    class Clock:  # 3+3 untimed steps, then PROBE and SCALE_PROBE alternate: SCALE_PROBE's steps take 2.5 s
        def __init__(self) -> None:
            self.calls, self.now = 0, 0.0

        def perf_counter(self) -> float:
            if self.calls % 2:
                step = self.calls // 2
                self.now += 2.5 if step >= 6 and step % 2 else 1.0
            self.calls += 1
            return self.now

    clock = Clock()
    monkeypatch.setattr(probe_module, "time", clock)
    before = torch.get_rng_state()
    scale, probe = measure_scale(torch.device("cpu"), 20, "gru", batch=4, seq=8, steps=5)
    assert scale == pytest.approx(0.4) and probe == 4 * 8 / 1.0  # PROBE's own speed: a second reading
    assert clock.calls == 2 * (6 + 10)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_probe_times_bf16_beside_fp32_and_leaves_the_model_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    import charnn.recipe.probe as probe_module

    autocast_calls: list[bool] = []
    real_autocast = torch.autocast

    def spying_autocast(device_type: str, dtype: torch.dtype, enabled: bool = True) -> torch.autocast:
        autocast_calls.append(enabled)
        return real_autocast(device_type, dtype=dtype, enabled=enabled)

    capability._onednn_bf16_rnn()  # asked once per process, by whichever test comes first: not this test's count
    monkeypatch.setattr(probe_module.torch, "autocast", spying_autocast)
    speeds = measure_speeds(torch.device("cpu"), 20, "gru", (16,), seq=8, steps=3, amps=(False, True))
    assert set(speeds) == {(16, False), (16, True)} and all(v > 0 for v in speeds.values())
    # 3 untimed steps per setting, then the settings take turns: fp32, bf16, fp32, bf16, ...
    assert autocast_calls == [False] * 3 + [True] * 3 + [False, True] * 3


def test_the_evaluation_probe_scores_64_streams_and_takes_the_median(monkeypatch: pytest.MonkeyPatch) -> None:
    import charnn.recipe.probe as probe_module

    class Clock:  # each window 0.5 s, the 4th timed one (a slow spell) 9 s
        def __init__(self) -> None:
            self.calls, self.now = 0, 0.0

        def perf_counter(self) -> float:
            if self.calls % 2:
                self.now += 9.0 if self.calls // 2 == 5 else 0.5
            self.calls += 1
            return self.now

    clock = Clock()
    monkeypatch.setattr(probe_module, "time", clock)
    before = torch.get_rng_state()
    speed = measure_eval_speed(torch.device("cpu"), 20, "gru", seq=8)
    assert clock.calls == 18  # 2 untimed + 7 timed windows
    assert speed == EVAL_STREAMS * 8 / 0.5
    assert torch.equal(torch.get_rng_state(), before)


def test_a_slow_first_reading_is_raised_to_the_second_and_the_batch_ratios_kept() -> None:
    # RECIPES.md #119: the first reading fell in a slow spell; the second, seconds later, read the usual speed.
    slow = {64: 28_160.0, 32: 21_120.0}
    steady = steady_speeds(slow, again=36_000.0)
    assert steady[64] == 36_000.0 and steady[32] / steady[64] == pytest.approx(21_120 / 28_160)
    assert steady_speeds(slow, again=25_000.0) == slow  # a slower second reading is the noise: ignored
    assert steady_speeds(slow, again=None) == slow  # not read again (the user set the size)
    # And that is what the 10-minute choice on tiny-shakespeare turns on: the slow reading sizes the model down.
    by_slow, by_steady = (plan(600, 1_003_854, 65, s, amp=True, scale=0.42, val_chars=111_540, eval_speed=70_000)
                          for s in (slow, steady))
    assert (by_slow.hidden, by_steady.hidden) == (384, 512)


def test_the_recipe_trains_at_the_faster_of_the_probe_readings(words_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import charnn.recipe.sizing as sizing

    def slow(*args: object, **kwargs: object) -> dict[tuple[int, bool], float]:
        return {(64, False): 10_000.0, (32, False): 8_000.0}

    def again(*args: object, **kwargs: object) -> tuple[float, float]:
        return 0.42, 20_000.0

    monkeypatch.setattr(sizing, "measure_speeds", slow)
    monkeypatch.setattr(sizing, "measure_scale", again)
    # --max-steps 1 ends the run; the budget only has to be long enough for a slow, loaded machine's start-up.
    result = CliRunner().invoke(app, ["train", str(words_file), "--name", "r", "--time", "30s", "--no-amp",
                                      "--max-steps", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    recipe = json.loads(Path("checkpoints/r/config.json").read_text())["recipe"]
    assert recipe["probe_second_reading"] == 20_000
    assert recipe["probe_tokens_per_s"] == {64: 20_000.0, 32: 16_000.0}[recipe["batch_size"]]
    assert f"at {recipe['probe_tokens_per_s']:,.0f} chars/s (probe)" in result.output
