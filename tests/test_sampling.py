"""Sampling cannot produce NaN or a forbidden character, and one failing request leaves the others alone.

Property-based (hypothesis) over temperature, top-k, top-p and logits: tiny and huge values,
denormals, ties, ±inf. The engine tests poison one group mid-batch and check that every other
group ends with the text it produces alone.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from charnn import load_run
from charnn.errors import GenerationError, UsageError
from charnn.sample import Engine, SampleConfig, Settings, race_noise, sample_next, sample_rows
from tests.conftest import train_run

INF = float("inf")
finite_logit = st.floats(allow_nan=False, allow_infinity=False, width=32)
logit = st.one_of(finite_logit, st.sampled_from([INF, -INF, 0.0, 1e-45, -1e-45, 3e38, -3e38]))
temperature = st.one_of(st.just(0.0), st.sampled_from([5e-324, 1e-300, 1e-45, 1e-7, 1e300, 1.7e308, INF]),
                        st.floats(min_value=0, max_value=1e6, allow_nan=False))
top_k = st.one_of(st.none(), st.integers(min_value=1, max_value=40))
top_p = st.one_of(st.none(), st.sampled_from([5e-324, 1e-300, 1e-7, 1.0]),
                  st.floats(min_value=0, max_value=1, exclude_min=True, allow_nan=False))


def allowed(row: torch.Tensor, temperature: float, top_k: int | None) -> set[int]:
    """The characters a draw may return: the +inf ones if any; else the maxima when greedy or top-1; else any non -inf."""
    values = row.tolist()
    if INF in values:
        return {i for i, v in enumerate(values) if v == INF}
    if all(v == -INF for v in values):
        return set(range(len(values)))
    if temperature == 0 or top_k == 1:
        best = max(values)
        return {i for i, v in enumerate(values) if v == best}
    return {i for i, v in enumerate(values) if v != -INF}


@settings(max_examples=400, deadline=None)
@given(st.lists(logit, min_size=1, max_size=12),
       st.integers(min_value=1, max_value=4), temperature, top_k, top_p, st.integers(0, 2**32))
def test_every_accepted_setting_draws_an_allowed_character(values: list[float], rows: int, t: float, k: int | None,
                                                           p: float | None, seed: int) -> None:
    SampleConfig(temperature=t, top_k=k, top_p=p).check()  # the validator accepts it
    logits = torch.tensor([values] * rows, dtype=torch.float32)
    drawn = sample_next(logits, t, k, p, torch.Generator().manual_seed(seed))
    assert drawn.shape == (rows,) and drawn.dtype == torch.long
    ok = allowed(logits[0], t, k)
    assert set(drawn.tolist()) <= ok, (values, t, k, p)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite_logit, min_size=2, max_size=20, unique=True), st.sampled_from([5e-324, 1e-300, 1e-30]))
def test_a_vanishing_temperature_is_greedy(values: list[float], t: float) -> None:
    logits = torch.tensor([values], dtype=torch.float64)
    best, second = logits[0].topk(2).values.tolist()
    # The limit: greedy once the gap to the runner-up is many temperatures wide (the runner-up's odds e^-gap/T).
    assume((best - second) / t > 100)
    assert sample_next(logits, t, None, None, torch.Generator().manual_seed(0)).item() == int(logits.argmax())


def test_normal_settings_draw_from_the_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    n = 40_000
    drawn = sample_next(logits.expand(n, -1), 0.7, None, None, torch.Generator().manual_seed(3))
    freq = torch.bincount(drawn, minlength=4).double() / n
    expected = torch.softmax(logits[0].double() / 0.7, -1)
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)
    # top-p 0.9 keeps the smallest prefix reaching 0.9, renormalised
    drawn = sample_next(logits.expand(n, -1), 1.0, None, 0.9, torch.Generator().manual_seed(4))
    probs = torch.softmax(logits[0].double(), -1)  # 0.644, 0.237, 0.087, 0.032
    kept = probs[:3] / probs[:3].sum()
    freq = torch.bincount(drawn, minlength=4).double() / n
    assert freq[3] == 0 and torch.allclose(freq[:3], kept, atol=0.01)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), temperature, top_k, top_p), min_size=1, max_size=5), st.integers(0, 99))
def test_a_batch_of_settings_draws_what_each_row_draws_alone(groups: list, seed: int) -> None:
    vocab = 9
    logits = torch.randn(sum(g[0] for g in groups), vocab, generator=torch.Generator().manual_seed(seed))
    noise = race_noise(len(logits), vocab, torch.Generator().manual_seed(seed), "cpu")
    together = sample_rows(logits, Settings.of(groups), noise)
    alone, start = [], 0
    for n, t, k, p in groups:
        rows = slice(start, start + n)
        alone.append(sample_rows(logits[rows], Settings.of([(n, t, k, p)]), noise[rows]))
        start += n
    assert torch.equal(together, torch.cat(alone))


# ---- the engine: one group fails, the rest go on ------------------------------------------------


@pytest.fixture
def model(words_file):
    train_run(words_file, name="w", max_steps=30)
    return load_run("w", device="cpu")


def _alone(model, prime: str, cfg: SampleConfig) -> list[str]:
    texts = model.generate(prime, length=cfg.length, seed=cfg.seed, temperature=cfg.temperature, top_k=cfg.top_k,
                           num_samples=cfg.num_samples)
    return [texts] if isinstance(texts, str) else texts


@pytest.mark.parametrize("how", ["nan state", "broken bookkeeping"])
def test_a_group_killed_mid_batch_leaves_the_others_their_own_text(model, how: str) -> None:
    configs = [SampleConfig(length=80, seed=s, temperature=t, top_k=k) for s, t, k in
               [(1, 0.9, None), (2, 1e-300, None), (3, 1.3, 5), (4, 0.0, None)]]
    with torch.inference_mode():
        engine = Engine(model.model, model.tokenizer)
        groups = [engine.join("the ", SampleConfig(**vars(c))) for c in configs]
        victim = groups[1]
        for _ in range(20):
            engine.step()
        if how == "nan state":
            start = 1  # the victim's row in the batch
            for layers in engine.parts:
                for t in layers:
                    t[start] = float("nan")
        else:
            def broken(ids: list[int]) -> list[str]:
                raise KeyError("lost track")
            victim.record = broken  # type: ignore[method-assign]
        while any(not g.finished for g in groups):
            engine.step()
            for g in [g for g in groups if g.finished and g in engine.groups]:
                engine.leave(g)
    assert victim.error is not None and len(victim.texts[0]) <= 21
    if how == "nan state":
        assert isinstance(victim.error, GenerationError)
    for group, cfg in zip(groups, configs, strict=True):
        if group is not victim:
            assert group.error is None
            assert group.texts == _alone(model, "the ", cfg)


def test_the_sample_command_takes_any_accepted_temperature(model, tmp_path) -> None:
    for t in ("1e-300", "5e-324", "1e308", "inf"):
        done = subprocess.run([sys.executable, "-m", "charnn", "sample", "w", "--temperature", t, "--length", "40",
                               "--top-p", "5e-324" if t == "1e-300" else "1", "--seed", "1"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and len(done.stdout) >= 40
    greedy = subprocess.run([sys.executable, "-m", "charnn", "sample", "w", "--temperature", "0", "--length", "40"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120).stdout
    tiny = subprocess.run([sys.executable, "-m", "charnn", "sample", "w", "--temperature", "1e-300", "--length", "40",
                           "--seed", "5"], capture_output=True, text=True, cwd=tmp_path, timeout=120).stdout
    assert tiny == greedy  # the limit of a vanishing temperature is the argmax (this model has no exact ties)


def test_nan_logits_are_the_models_failure_not_a_draw(model) -> None:
    with torch.inference_mode():
        engine = Engine(model.model, model.tokenizer)
        group = engine.join("the", SampleConfig(length=5, seed=1))
        engine.logits[:] = float("nan")
        assert engine.step() == [] and isinstance(group.error, GenerationError) and group.finished


def test_requests_joined_together_sample_what_they_sample_alone(model) -> None:
    """`join_many` primes equal-length primes in one pass (short ones through the fused step, long ones
    through the module) and mixes lengths; each group's text is its text alone, and a bad request fails alone."""
    requests = [("the ", SampleConfig(length=60, seed=1, num_samples=3)),
                ("a", SampleConfig(length=60, seed=2, temperature=1.2)), ("o", SampleConfig(length=60, seed=9, num_samples=2)),
                ("cat ", SampleConfig(length=60, seed=3, top_k=4)), ("x€", SampleConfig(length=60, seed=4)),
                ("the cat sat ", SampleConfig(length=60, seed=5)), ("on the mat o", SampleConfig(length=60, seed=6)),
                ("dog", SampleConfig(length=60, seed=7, top_k=0)), ("the ", SampleConfig(length=60, temperature=0.0)),
                ("d", SampleConfig(length=60, temperature=0.0)), ("t", SampleConfig(length=60, temperature=0.0))]
    with torch.inference_mode():
        engine = Engine(model.model, model.tokenizer)
        early = engine.join("ran ", SampleConfig(length=90, seed=8))  # a batch already running
        for _ in range(7):
            engine.step()
        joined = engine.join_many([(p, SampleConfig(**vars(c))) for p, c in requests])
        assert isinstance(joined[4], Exception) and "never saw" in str(joined[4])
        assert isinstance(joined[7], UsageError) and "top-k" in str(joined[7])
        assert sum(isinstance(g, Exception) for g in joined) == 2
        groups = [g for g in joined if not isinstance(g, Exception)]
        assert engine.groups == [early, *groups]
        while engine.groups:
            engine.step()
            for g in [g for g in engine.groups if g.finished]:
                engine.leave(g)
    for (prime, cfg), group in zip(requests, joined, strict=True):
        if not isinstance(group, Exception):
            assert group.texts == _alone(model, prime, cfg)
    assert early.texts == _alone(model, "ran ", SampleConfig(length=90, seed=8))
