import re

import pytest
import torch

from charnn.model import CharRNN, ModelConfig, Stepper


@pytest.mark.parametrize("cell, heads", [("rnn", 4), ("lstm", 4), ("gru", 4), ("slstm", 4), ("slstm", 1), ("slstm", 3)])
def test_fused_step_matches_the_module(cell: str, heads: int) -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=3, hidden=24, embed=8, heads=heads)).eval()
    ids = torch.randint(0, 11, (4, 9))
    with torch.no_grad():
        full, full_state = model(ids, model.init_state(4))  # (4, 9, 11)
    stepper = Stepper(model)
    state = model.init_state(4)
    for t in range(9):
        logits, state = stepper.step(ids[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)
    for a, b in zip(state, full_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_lstm_forget_gate_bias_starts_at_one() -> None:
    model = CharRNN(ModelConfig(vocab_size=5, cell="lstm", layers=2, hidden=6, embed=4))
    for k in range(2):
        total = getattr(model.rnn, f"bias_ih_l{k}") + getattr(model.rnn, f"bias_hh_l{k}")
        assert torch.allclose(total[6:12], torch.ones(6))


def test_rnn_cell_is_elman_tanh() -> None:
    model = CharRNN(ModelConfig(vocab_size=5, cell="rnn", layers=1, hidden=4, embed=3))
    assert model.rnn.nonlinearity == "tanh"
    x = torch.tensor([[2]])
    with torch.no_grad():
        _, (h,) = model(x, model.init_state(1))
        e = model.embedding.weight[2]
        expected = torch.tanh(model.rnn.weight_ih_l0 @ e + model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0)
    torch.testing.assert_close(h[0, 0], expected)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("cell", "transformer", "unknown"), ("layers", 0, "at least 1"), ("hidden", -3, "at least 1"),
    ("dropout", 1.0, r"\[0, 1\)"),
])
def test_invalid_configs_are_named(field: str, value: object, message: str) -> None:
    cfg = ModelConfig(vocab_size=5)
    setattr(cfg, field, value)
    problems = cfg.validate()
    assert len(problems) == 1
    assert re.search(message, problems[0]) and field.replace("_", "-") in problems[0]
