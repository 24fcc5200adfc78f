import re

import pytest
import torch

from charnn.model.cells import CELLS, NAMES
from charnn.model.network import CharRNN, ModelConfig, Stepper


@pytest.mark.parametrize("cell, heads", [*((name, 4) for name in NAMES),  # every registered cell, and other heads
                                         ("slstm", 1), ("slstm", 3), ("mlstm", 1), ("mlstm", 3)])
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


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_layer_by_layer_equals_the_fused_stack(cell: str) -> None:
    # The locked-dropout path runs the stack one layer at a time; with nothing dropped it must be the stack.
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=3, hidden=16, embed=8, dropout=0.0,
                                locked_dropout=True)).double()
    x = torch.randn(4, 9, 8, dtype=torch.float64)
    state = tuple(torch.randn(3, 4, 16, dtype=torch.float64) for _ in range(len(CELLS[cell].parts)))
    out, parts = model._layer_by_layer(x, state)
    grads = torch.autograd.grad(out.square().sum() + sum(p.square().sum() for p in parts), list(model.rnn.parameters()))
    fused_out, fused_state = model.rnn(x, state if len(state) > 1 else state[0])
    fused_parts = tuple(fused_state) if isinstance(fused_state, tuple) else (fused_state,)
    fused_grads = torch.autograd.grad(fused_out.square().sum() + sum(p.square().sum() for p in fused_parts),
                                      list(model.rnn.parameters()))
    torch.testing.assert_close(out, fused_out, rtol=1e-12, atol=1e-12)
    for a, b in zip((*parts, *grads), (*fused_parts, *fused_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["gru", "slstm", "mlstm"])
def test_locked_dropout_keeps_a_streams_mask_for_the_whole_window(cell: str) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 7, (6, 30))

    def dropped(locked: bool) -> torch.Tensor:
        model = CharRNN(ModelConfig(vocab_size=7, cell=cell, layers=2, hidden=64, embed=8, dropout=0.5,
                                    locked_dropout=locked)).train()
        seen = []
        model.head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        model(ids, model.init_state(6))
        return seen[0] == 0  # (B, T, H): the head's input units dropped at each step

    locked = dropped(True)
    assert (locked == locked[:, :1]).all()  # the same units at every step of a stream
    assert 0.35 < locked.float().mean() < 0.65
    assert not (locked[0] == locked[1]).all()  # each stream its own mask
    per_step = dropped(False)
    assert not (per_step == per_step[:, :1]).all()  # the default draws a new mask at every character
    model = CharRNN(ModelConfig(vocab_size=7, cell=cell, layers=2, hidden=64, embed=8, dropout=0.5,
                                locked_dropout=True)).eval()
    plain = CharRNN(ModelConfig(vocab_size=7, cell=cell, layers=2, hidden=64, embed=8, dropout=0.5)).eval()
    plain.load_state_dict(model.state_dict())  # same parameters: locked dropout adds none
    with torch.no_grad():
        torch.testing.assert_close(model(ids, model.init_state(6))[0], plain(ids, plain.init_state(6))[0])


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
    cfg = ModelConfig(vocab_size=5, **{field: value})
    problems = cfg.validate()
    assert len(problems) == 1
    assert re.search(message, problems[0]) and field.replace("_", "-") in problems[0]


@pytest.mark.parametrize("cell", NAMES)
def test_every_cell_trains_under_bf16_autocast(cell: str) -> None:
    # `--time` trains in bf16 autocast where the probe finds it faster: every cell's forward and backward,
    # the hand-written ones (slstm's scan, the GRU window) included, must run and stay finite there.
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16, embed=8)).train()
    ids = torch.randint(0, 11, (4, 13))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(ids[:, :-1], model.init_state(4))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(s).all() for s in state)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
