"""The sampler: pure sample_next, reproducibility, streaming, batching, stop strings."""

import threading

import pytest
import torch

from charnn import load_run
from charnn.errors import TokenizerError, UsageError
from charnn.sample import SampleConfig, generate, sample_next
from tests.conftest import train_run


@pytest.fixture
def model(words_file):
    train_run(words_file, name="w", max_steps=40)
    return load_run("w", device="cpu")


def test_temperature_zero_and_top_k_one_are_argmax() -> None:
    logits = torch.randn(5, 30)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, 0.0, None, None, g), logits.argmax(-1))
    assert torch.equal(sample_next(logits, 1.0, 1, None, g), logits.argmax(-1))
    assert torch.equal(sample_next(logits, 1.0, None, 1e-6, g), logits.argmax(-1))


def test_top_k_and_top_p_only_draw_allowed_tokens() -> None:
    logits = torch.tensor([[5.0, 4.0, 3.0, -10.0, -10.0]]).expand(2000, -1)
    g = torch.Generator().manual_seed(1)
    assert set(sample_next(logits, 1.0, 2, None, g).tolist()) == {0, 1}
    probs = torch.softmax(logits[0], -1)  # 0.665, 0.245, 0.090, ...
    assert probs[0] < 0.8 < probs[0] + probs[1]
    assert set(sample_next(logits, 1.0, None, 0.8, g).tolist()) == {0, 1}


def test_sample_next_is_pure_given_the_generator() -> None:
    logits = torch.randn(3, 20)
    a = sample_next(logits, 0.9, 10, 0.95, torch.Generator().manual_seed(42))
    b = sample_next(logits, 0.9, 10, 0.95, torch.Generator().manual_seed(42))
    assert torch.equal(a, b)


def test_same_seed_same_text_and_greedy_matches_argmax_loop(model) -> None:
    a = model.generate("the ", length=120, seed=3)
    b = model.generate("the ", length=120, seed=3)
    assert a == b and len(a) == 120
    assert model.generate("the ", length=120, seed=4) != a
    greedy = model.generate("the ", length=40, temperature=0.0)
    # the argmax continuation, computed with the full-sequence module one step at a time
    text = "the "
    with torch.no_grad():
        for _ in range(40):
            ids = torch.tensor([model.tokenizer.encode(text)])
            logits, _ = model.model(ids, model.model.init_state(1))
            text += model.tokenizer.chars[int(logits[0, -1].argmax())]
    assert greedy == text[4:]
    assert model.generate("the ", length=40, temperature=1.0, top_k=1, seed=9) == greedy


def test_generate_streams_before_it_finishes(model) -> None:
    seen_at: list[int] = []
    produced = 0
    stream = generate(model.model, model.tokenizer, "the", SampleConfig(length=300, seed=1))
    for pieces in stream:
        produced += len(pieces[0])
        if not seen_at:
            seen_at.append(produced)  # we hold text while generation is still running
            assert len(stream.texts[0]) < 300
    assert seen_at == [1] and produced == 300


def test_batched_samples_differ_and_match_their_count(model) -> None:
    texts = model.generate("the", length=60, num_samples=16, seed=5)
    assert len(texts) == 16 and len(set(texts)) == 16 and all(len(t) == 60 for t in texts)


def test_stop_string_ends_each_sample(model) -> None:
    texts = model.generate("the", length=400, num_samples=4, seed=2, stop=" ")
    assert all(t.endswith(" ") and t.count(" ") == 1 for t in texts)


def test_unknown_prime_characters(model) -> None:
    with pytest.raises(TokenizerError, match="'Q', 'Z'"):
        model.generate("QZthe", length=5)
    assert len(model.generate("QZthe", length=5, drop_unknown=True, seed=1)) == 5
    with pytest.raises(UsageError, match="prime is empty"):
        model.generate("QZ", length=5, drop_unknown=True)


@pytest.mark.parametrize(("option", "value"), [("temperature", -1.0), ("top_k", 0), ("top_p", 1.5),
                                               ("length", -1), ("num_samples", 0)])
def test_bad_settings_are_refused(model, option: str, value: float) -> None:
    with pytest.raises(UsageError, match=option.replace("_", "-")):
        model.generate("the", **{option: value})


def test_score_and_python_api(model) -> None:
    score = model.score("the cat sat on the mat ")
    assert 0 < score.nats < 3 and score.bpc == pytest.approx(score.nats / 0.6931471805599453)
    assert model.score("the cat sat QQ").unknown == {"Q": 2}
    pieces = list(model.stream("the", length=10, seed=1))
    assert "".join(pieces) == model.generate("the", length=10, seed=1)


def test_carried_state_equals_priming_with_the_whole_history(model) -> None:
    first = generate(model.model, model.tokenizer, "the", SampleConfig(length=10, seed=1))
    list(first)
    follow = generate(model.model, model.tokenizer, " c", SampleConfig(length=30, seed=2), state=first.state)
    list(follow)
    whole = generate(model.model, model.tokenizer, "the" + first.texts[0] + " c", SampleConfig(length=30, seed=2))
    list(whole)
    assert follow.texts == whole.texts


def test_sampling_runs_in_a_thread(model) -> None:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(model.generate("the", length=20, seed=1)))
    t.start()
    t.join()
    assert out == [model.generate("the", length=20, seed=1)]
