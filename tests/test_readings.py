"""The probe's readings kept per machine (recipe/readings.py): reused after a quick check, probed afresh when the
check disagrees, the machine changed, the reading is old, the cache file is unreadable, or --reprobe says so."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import charnn.recipe.sizing as sizing
from charnn.cli import app
from charnn.recipe import readings
from charnn.recipe.probe import PROBE

runner = CliRunner()
SPEEDS = {(32, False): 16_000.0, (64, False): 20_000.0}


class FakeProbe:
    """Stands in for the timed steps: counts full probes and quick checks; `check` scales the quick check's speed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = 0
        self.checks = 0
        self.sized = 0
        self.check = 1.0
        monkeypatch.setattr(sizing, "measure_speeds", self.speeds)
        monkeypatch.setattr(sizing, "measure_scale", lambda *a, **k: (0.42, 20_000.0))
        monkeypatch.setattr(sizing, "measure_eval_speed", lambda *a, **k: 60_000.0)

    def speeds(self, *args: object, warm: int = 3, size: object = PROBE, **kwargs: object) -> dict[tuple[int, bool], float]:
        if warm == 1:
            self.checks += 1
            return {(32, False): SPEEDS[(32, False)] * self.check}
        if size != PROBE:  # a candidate's own size, timed for a text passed over many times (sizing._by_passes)
            self.sized += 1
            return {k: v / 4 for k, v in SPEEDS.items()}
        self.full += 1
        return dict(SPEEDS)


def _train(corpus: Path, name: str, *extra: str) -> str:
    result = runner.invoke(app, ["train", str(corpus), "--name", name, "--time", "30s", "--no-amp", "--max-steps", "1",
                                 "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def _recipe(name: str) -> dict[str, object]:
    return json.loads(Path(f"checkpoints/{name}/config.json").read_text())["recipe"]  # type: ignore[no-any-return]


def test_a_second_run_reuses_the_kept_reading_after_a_quick_check(words_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = FakeProbe(monkeypatch)
    first = _train(words_file, "a")
    assert (probe.full, probe.checks) == (1, 0) and "chars/s (probe)" in first
    probe.check = 1.1  # within the agreement
    second = _train(words_file, "b")
    assert (probe.full, probe.checks) == (1, 1)
    assert "kept probe reading of" in second and "checked at 1.10x" in second and "--reprobe" in second
    a, b = _recipe("a"), _recipe("b")
    assert a["probe_kept"] is None and b["probe_kept"] and b["probe_check"] == 1.1
    for field in ("layers", "hidden", "batch_size", "probe_tokens_per_s", "probe_scale"):
        assert a[field] == b[field], field  # the same machine picks the same recipe


def test_a_quick_check_that_disagrees_probes_afresh_and_keeps_the_new_reading(
        words_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = FakeProbe(monkeypatch)
    _train(words_file, "a")
    probe.check = 0.5  # half the kept speed: another process, or a slower CPU under the same name
    assert "chars/s (probe)" in _train(words_file, "b")
    assert (probe.full, probe.checks) == (2, 1)
    probe.check = 1.0
    assert "kept probe reading" in _train(words_file, "c")
    assert probe.full == 2


def test_a_changed_machine_or_reprobe_probes_afresh(words_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = FakeProbe(monkeypatch)
    _train(words_file, "a")
    assert "chars/s (probe)" in _train(words_file, "b", "--reprobe")
    assert (probe.full, probe.checks) == (2, 0)
    monkeypatch.setattr(readings, "machine", lambda device, processes: "another CPU | torch 9 | 2 threads")
    assert "chars/s (probe)" in _train(words_file, "c")
    assert (probe.full, probe.checks) == (3, 0)


def test_an_unreadable_cache_file_is_one_warning_then_a_fresh_probe(words_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    probe = FakeProbe(monkeypatch)
    cache = tmp_path / ".charnn-cache" / readings.FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\x00{not json")
    out = _train(words_file, "a")
    assert out.count("are unreadable") == 1 and str(cache) in out and probe.full == 1
    assert json.loads(cache.read_text())  # rewritten whole
    assert "kept probe reading" in _train(words_file, "b")


def test_an_old_reading_is_not_reused(tmp_path: Path) -> None:
    store = readings.Store(tmp_path / "r.json")
    old = readings.Reading(dict(SPEEDS), 60_000.0, 0.42, None, time.time() - (readings.MAX_AGE_DAYS + 1) * 86400)
    store.put("k", old)
    assert readings.Store(tmp_path / "r.json").get("k") is None
    store.put("k", readings.Reading(dict(SPEEDS), 60_000.0, None, None, time.time()))
    kept = readings.Store(tmp_path / "r.json").get("k")
    assert kept is not None and kept.speeds == SPEEDS and kept.scale is None


def test_the_key_names_the_machine_and_what_was_timed() -> None:
    import torch

    cpu = torch.device("cpu")
    key = readings.key(cpu, 1, {"cell": "gru", "vocab": 65})
    assert f"torch {torch.__version__}" in key and f"{torch.get_num_threads()} threads" in key
    assert key != readings.key(cpu, 2, {"cell": "gru", "vocab": 65})
    assert key != readings.key(cpu, 1, {"cell": "gru", "vocab": 66})
    assert readings.agrees(20_000, 16_500) and not readings.agrees(20_000, 15_000) and not readings.agrees(20_000, 26_000)


def test_reprobe_where_nothing_is_probed_is_refused(words_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProbe(monkeypatch)
    _train(words_file, "a")
    before = sorted(p.name for p in Path("checkpoints/a").iterdir())
    resumed = runner.invoke(app, ["train", "--resume", "a", "--max-steps", "2", "--reprobe"])
    assert resumed.exit_code == 2 and "--reprobe applies to a new run" in resumed.output
    assert sorted(p.name for p in Path("checkpoints/a").iterdir()) == before
    unbudgeted = runner.invoke(app, ["train", str(words_file), "--name", "b", "--max-steps", "1", "--reprobe"])
    assert unbudgeted.exit_code == 2 and "--reprobe" in unbudgeted.output and not Path("checkpoints/b").exists()


def test_the_quick_check_times_the_smallest_batch_at_its_faster_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fine-tune's check times the base's large model: its quickest steps are the smallest batch in bf16 where the
    kept reading found bf16 faster, and in fp32 where it did not."""
    import torch

    from charnn.model.network import ModelConfig

    asked: list[tuple[int, bool]] = []

    def timed(device: object, vocab: int, cell: str, batches: tuple[int, ...], seq: int, steps: int,
              amps: tuple[bool, ...], size: tuple[int, int, int], warm: int) -> dict[tuple[int, bool], float]:
        asked.append((batches[0], amps[0]))
        return {(batches[0], amps[0]): 1000.0}

    monkeypatch.setattr(sizing, "measure_speeds", timed)
    model = ModelConfig(vocab_size=50, cell="gru", layers=2, hidden=64, embed=16)

    def check(speeds: dict[tuple[int, bool], float]) -> tuple[int, bool]:
        asked.clear()
        sizing._quick_check(torch.device("cpu"), model, 16, PROBE, readings.Reading(speeds, 1.0, None, None, 0.0))
        return asked[0]

    assert check({(32, False): 100.0, (32, True): 150.0, (64, True): 200.0}) == (32, True)
    assert check({(32, False): 150.0, (32, True): 100.0, (64, False): 200.0}) == (32, False)
