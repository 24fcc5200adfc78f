import pytest
import torch
from torch import nn

from charnn.model.cells import gru
from charnn.model.network import CharRNN, ModelConfig


def _loss(out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    # Weights that differ per element, so every output and state position carries its own gradient.
    w_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    w_last = torch.linspace(1, -2, last.numel(), dtype=last.dtype).view_as(last)
    return (out * w_out).sum() + (last * w_last).square().sum()


@pytest.mark.parametrize("layers, batch, steps", [(1, 3, 1), (3, 4, 9)])
def test_the_window_is_nn_gru_with_every_gradient(layers: int, batch: int, steps: int) -> None:
    torch.manual_seed(0)
    rnn = nn.GRU(5, 16, num_layers=layers, batch_first=True).double()
    x = torch.randn(batch, steps, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, batch, 16, dtype=torch.float64, requires_grad=True)
    inputs = [x, h0, *rnn.parameters()]

    out, last = gru.run_stack(rnn, x, h0, dropout=0.0, locked=False)
    grads = torch.autograd.grad(_loss(out, last), inputs)
    ref_out, ref_last = rnn(x, h0)
    ref_grads = torch.autograd.grad(_loss(ref_out, ref_last), inputs)

    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, ref_last, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_locked_dropout_between_layers_is_the_layer_by_layer_stacks() -> None:
    # Same seed, same mask draws: the window's stack with locked dropout equals the model's layer-by-layer path.
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, cell="gru", layers=3, hidden=16, embed=8, dropout=0.5,
                                locked_dropout=True)).double()
    assert isinstance(model.rnn, nn.GRU)
    x = torch.randn(4, 9, 8, dtype=torch.float64)
    h0 = torch.randn(3, 4, 16, dtype=torch.float64)
    torch.manual_seed(1)
    out, last = gru.run_stack(model.rnn, x, h0, dropout=0.5, locked=True)
    torch.manual_seed(1)
    ref_out, (ref_last,) = model._layer_by_layer(x, (h0,))
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, ref_last, rtol=1e-12, atol=1e-12)


def test_cpu_fp32_training_runs_the_window_and_learns_what_nn_gru_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell="gru", layers=2, hidden=24, embed=8, dropout=0.0))
    ids = torch.randint(0, 11, (4, 12))
    calls = []
    apply = gru.GRUWindow.apply
    monkeypatch.setattr(gru.GRUWindow, "apply", lambda *a: calls.append(1) or apply(*a))

    def step(train: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.train(train)
        logits, (h,) = model(ids, model.init_state(4))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids.roll(-1, 1).flatten()) + h.square().mean()
        return logits, list(torch.autograd.grad(loss, list(model.parameters())))

    logits, grads = step(True)
    assert len(calls) == 2  # one window per layer
    ref_logits, ref_grads = step(False)  # eval mode: nn.GRU (no dropout here, so the same function)
    assert len(calls) == 2
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_window_runs_only_where_it_is_the_faster_path() -> None:
    x = torch.zeros(2, 3, 4)
    assert gru.use_window(x)
    with torch.no_grad():
        assert not gru.use_window(x)  # evaluation and sampling: nn.GRU's kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gru.use_window(x)  # bf16 autocast: nn.GRU multiplies in bf16
    assert not gru.use_window(x.double())
