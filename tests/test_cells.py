"""The cells: the registry's records against the models built from them; the sLSTM layer against the equations
(float64), gradcheck, the xlstm package, stability."""

from __future__ import annotations

import math

import pytest
import torch

from charnn.model.cells import CELLS, HEADED, NAMES
from charnn.model.cells.slstm import SLSTM, dense_recurrent, slstm_pointwise, slstm_scan
from charnn.model.network import CharRNN, ModelConfig


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, r: torch.Tensor,
              state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The issue's equations, one sample, one head, one unit at a time: x (B, T, E) -> h (B, T, H)."""
    heads, _, d = r.shape  # (heads, 4·d, d)
    hidden = heads * d
    h, c, n, m = (s.clone() for s in state)  # (B, H)
    outs = torch.zeros(x.shape[0], x.shape[1], hidden, dtype=x.dtype)
    for bi in range(x.shape[0]):
        for t in range(x.shape[1]):
            pre = w @ x[bi, t] + b  # (4H,): W x_t + b, gates (i, f, z, o)
            h_prev = h[bi].clone()
            for j in range(heads):  # R h_{t-1}: head j's units see only head j's part of h
                for g in range(4):
                    block = r[j, g * d : (g + 1) * d, :]  # (d, d)
                    pre[g * hidden + j * d : g * hidden + (j + 1) * d] += block @ h_prev[j * d : (j + 1) * d]
            i_t, f_t, z_t, o_t = pre.split(hidden)
            log_f = torch.log(torch.sigmoid(f_t))
            fresh = n[bi] == 0
            m_new = torch.where(fresh, i_t, torch.maximum(log_f + m[bi], i_t))
            i_p = torch.exp(i_t - m_new)
            f_p = torch.exp(log_f + m[bi] - m_new)
            c[bi] = f_p * c[bi] + i_p * torch.tanh(z_t)
            n[bi] = f_p * n[bi] + i_p
            h[bi] = torch.sigmoid(o_t) * c[bi] / n[bi]
            m[bi] = m_new
            outs[bi, t] = h[bi]
    return outs, (h, c, n, m)


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("steps", [1, 50])
def test_layer_matches_the_equations_in_float64(heads: int, steps: int) -> None:
    torch.manual_seed(heads * 100 + steps)
    layer = SLSTM(5, 8, 1, heads).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.8)  # random weights, large enough that the stabiliser is exercised
    w, b, r = (t.detach() for t in layer.weights(0))
    x = torch.randn(3, steps, 5, dtype=torch.float64)
    fresh = tuple(s[0] for s in layer.init_state(3))
    fresh = tuple(s.double() for s in fresh)
    # two windows, the state carried from the first into the second
    out1, state1 = layer(x, tuple(s[None] for s in fresh))
    out2, state2 = layer(x.flip(1), state1)
    ref1, ref_state1 = reference(x, w, b, r, fresh)
    ref2, ref_state2 = reference(x.flip(1), w, b, r, ref_state1)
    torch.testing.assert_close(out1, ref1, atol=1e-6, rtol=0)
    torch.testing.assert_close(out2, ref2, atol=1e-6, rtol=0)
    for got, want in zip(state2, ref_state2, strict=True):
        torch.testing.assert_close(got[0], want, atol=1e-6, rtol=0)


def test_gradcheck_on_a_small_float64_layer() -> None:
    torch.manual_seed(0)
    layer = SLSTM(3, 4, 2, 2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    state = tuple(s.double() for s in layer.init_state(2))
    params = list(layer.parameters())
    assert torch.autograd.gradcheck(lambda x: layer(x, state)[0], (x,), eps=1e-6, atol=1e-5)
    # and through the weights: W, b and R (R via its block-diagonal layout)
    out, _ = layer(x, state)
    grads = torch.autograd.grad(out.sum(), params)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    for param in (params[0], params[-1]):  # layer 0's W, the last layer's R
        probe = param.detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda v, p=param: _with_param(layer, p, v, x.detach(), state), (probe,),
                                        eps=1e-6, atol=1e-5)


def _with_param(layer: SLSTM, param: torch.nn.Parameter, value: torch.Tensor, x: torch.Tensor,
                state: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The layer's output as a function of one parameter (functional_call keeps it differentiable)."""
    name = next(n for n, p in layer.named_parameters() if p is param)
    return torch.func.functional_call(layer, {name: value}, (x, state))[0]


def test_same_function_as_the_xlstm_package_vanilla_slstm() -> None:
    from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry

    torch.manual_seed(3)
    heads, hidden, steps, batch = 4, 16, 30, 3
    layer = SLSTM(7, hidden, 1, heads)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    w, b, r = (t.detach() for t in layer.weights(0))
    x = torch.randn(batch, steps, 7)
    ours, ours_state = layer(x)
    # xlstm: x is the input projection without bias, [S, B, 4H]; states [4, B, H] = (y, c, n, m); R [K, 4d, d]
    wx = (x @ w.T).transpose(0, 1).contiguous()
    states_all, final, _ = slstm_forward(wx, torch.zeros(4, batch, hidden), r, b,
                                         slstm_pointwise_function_registry["slstm"])
    torch.testing.assert_close(ours, states_all[0, 1:].transpose(0, 1), atol=1e-5, rtol=1e-5)
    for k in range(4):
        torch.testing.assert_close(ours_state[k][0], final[k], atol=1e-5, rtol=1e-5)


def _unstabilised(raw: torch.Tensor, c: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same cell without the stabiliser m: i = exp(ĩ) taken as it is."""
    i_raw, f_raw, z_raw, o_raw = raw.chunk(4, dim=1)
    i, f = torch.exp(i_raw), torch.sigmoid(f_raw)
    c = f * c + i * torch.tanh(z_raw)
    n = f * n + i
    return torch.sigmoid(o_raw) * c / n, c, n


@pytest.mark.parametrize("dtype, scale", [(torch.float16, 50.0), (torch.float32, 100.0)])
def test_stabiliser_keeps_10000_large_steps_finite_where_the_plain_form_overflows(dtype: torch.dtype,
                                                                                   scale: float) -> None:
    torch.manual_seed(0)
    hidden = 8
    gen = torch.Generator().manual_seed(1)
    c = n = m = torch.zeros(2, hidden, dtype=dtype)
    c_u = n_u = torch.zeros(2, hidden, dtype=dtype)
    unstable_failed = False
    for _ in range(10_000):
        raw = ((torch.rand(2, 4 * hidden, generator=gen) * 2 - 1) * scale).to(dtype)  # |ĩ|, |f̃| up to `scale`
        h, c, n, m = slstm_pointwise(raw, c, n, m)
        assert torch.isfinite(h).all() and torch.isfinite(c).all() and torch.isfinite(n).all()
        h_u, c_u, n_u = _unstabilised(raw, c_u, n_u)
        unstable_failed |= not bool(torch.isfinite(h_u).all())
    assert unstable_failed, "the plain form should overflow here (that is what the stabiliser is for)"
    assert (n >= 1).all() and math.isfinite(float(m.abs().max()))


def _eager_scan(wx: torch.Tensor, rd: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The window step by step through `slstm_pointwise`, every op recorded by autograd."""
    h, c, n, m = state
    outs = []
    for t in range(wx.size(0)):
        h, c, n, m = slstm_pointwise(torch.addmm(wx[t], h, rd), c, n, m)
        outs.append(h)
    return torch.stack(outs), h, c, n, m


@pytest.mark.parametrize("fresh", [True, False])
def test_hand_written_backward_equals_autograd_through_the_steps(fresh: bool) -> None:
    """The training path (`slstm_scan`, one autograd node per window) against autograd's own gradients,
    for the window's inputs, R and every part of the starting state, with a loss on the outputs and
    on the final state."""
    torch.manual_seed(7 + fresh)
    steps, batch, hidden = 40, 3, 8
    wx = (torch.randn(steps, batch, 4 * hidden, dtype=torch.float64) * 3).requires_grad_()
    r = (torch.randn(2, 4 * hidden // 2, hidden // 2, dtype=torch.float64) * 0.5).requires_grad_()
    if fresh:
        start = [torch.zeros(batch, hidden, dtype=torch.float64) for _ in range(4)]
    else:  # a state carried from an earlier window: n ≥ 1, m anywhere
        start = [torch.randn(batch, hidden, dtype=torch.float64), torch.randn(batch, hidden, dtype=torch.float64),
                 1 + torch.rand(batch, hidden, dtype=torch.float64) * 3, torch.randn(batch, hidden, dtype=torch.float64)]
    start = [s.requires_grad_() for s in start]
    weights = torch.randn(5, dtype=torch.float64)

    def loss(result: tuple[torch.Tensor, ...]) -> torch.Tensor:
        outs, h, c, n, m = result
        return (outs.sin().sum() * weights[0] + h.sum() * weights[1] + c.sum() * weights[2]
                + n.log().sum() * weights[3] + m.sum() * weights[4])

    inputs = [wx, r, *start]
    outs, (h, c, n, m) = slstm_scan(wx, r, tuple(start))
    ours = torch.autograd.grad(loss((outs, h, c, n, m)), inputs)
    want = torch.autograd.grad(loss(_eager_scan(wx, dense_recurrent(r), tuple(start))), inputs)
    for name, got, expected in zip(["wx", "R", "h0", "c0", "n0", "m0"], ours, want, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-7, msg=lambda s, name=name: f"{name}: {s}")
    with torch.no_grad():  # the no-grad path (evaluation, sampling) gives the same values
        again, state = slstm_scan(wx, r, tuple(start))
    torch.testing.assert_close(again, outs)
    torch.testing.assert_close(state[3], m)


def test_training_path_stays_finite_with_large_pre_activations() -> None:
    """2,000 steps with |ĩ|, |f̃| up to 50 through the scan: outputs and every gradient finite."""
    torch.manual_seed(0)
    hidden = 8
    wx = ((torch.rand(2000, 2, 4 * hidden) * 2 - 1) * 50).requires_grad_()
    r = (torch.randn(4, 4 * hidden // 4, hidden // 4) * 0.5).requires_grad_()
    start = tuple(torch.zeros(2, hidden) for _ in range(4))
    outs, state = slstm_scan(wx, r, start)
    assert torch.isfinite(outs).all() and all(torch.isfinite(s).all() for s in state)
    outs.sum().backward()
    assert wx.grad is not None and r.grad is not None
    assert torch.isfinite(wx.grad).all() and torch.isfinite(r.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_each_registered_cell_is_what_its_record_says(name: str) -> None:
    """The registry's record of a cell (cells/spec.py) against the model built from it: the state's parts and
    widths after a forward pass, the part inspect reads, and a cost that grows with the model."""
    cell = CELLS[name]
    model = CharRNN(ModelConfig(vocab_size=5, cell=name, layers=2, hidden=8, embed=4, heads=2))
    _, state = model(torch.zeros(3, 6, dtype=torch.long), model.init_state(3))
    assert [tuple(s.shape) for s in state] == [(2, 3, w) for w in cell.state_widths(8, 2)]
    assert len(cell.parts) == len(state) and 0 <= cell.memory < len(state)
    assert cell.cost(3, 8, 4, 5, 2, 64) > cell.cost(2, 8, 4, 5, 2, 64) > cell.cost(2, 4, 4, 5, 2, 64) > 0
    assert cell.gates >= 1 and cell.headed == (name in HEADED) and cell.shown[0] == "h"
    assert (cell.fused is not None) == isinstance(model.rnn, torch.nn.RNNBase)
