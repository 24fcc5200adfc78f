"""The mLSTM cell: parallel form = recurrent form = the paper's equations (float64), stability, the xlstm package."""

from __future__ import annotations

import math

import pytest
import torch

from charnn.model.cells.mlstm import MLSTM, chunked, parallel, recurrent_step

Inputs = tuple[torch.Tensor, ...]


def _inputs(batch: int, heads: int, steps: int, d: int, dtype: torch.dtype = torch.float64, gate_scale: float = 2.0,
            seed: int = 0) -> Inputs:
    """q, k, v (B, K, T, d) and ĩ, f̃ (B, K, T): k already scaled by 1/√d, as the block hands them to the cell."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, steps, d, generator=g, dtype=dtype) for _ in range(3))
    i_raw = torch.randn(batch, heads, steps, generator=g, dtype=dtype) * gate_scale
    f_raw = torch.randn(batch, heads, steps, generator=g, dtype=dtype) * gate_scale + 2.0
    return q, k / math.sqrt(d), v, i_raw, f_raw


def _state(batch: int, heads: int, d: int, fresh: bool, dtype: torch.dtype = torch.float64) -> Inputs:
    """A stabilised state (C, n, m): zeros, or a carried one as some earlier window would have left it."""
    if fresh:
        return (torch.zeros(batch, heads, d, d, dtype=dtype), torch.zeros(batch, heads, d, dtype=dtype),
                torch.zeros(batch, heads, dtype=dtype))
    _, state = parallel(*_inputs(batch, heads, 7, d, dtype, seed=9), _state(batch, heads, d, True, dtype))
    return state


def _equations(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i_raw: torch.Tensor, f_raw: torch.Tensor,
               c: torch.Tensor, n: torch.Tensor) -> Inputs:
    """The paper's mLSTM written out directly, without a stabiliser: the true memory C, n (not scaled by exp(-m)).

    C_t = σ(f̃) C_{t-1} + exp(ĩ) v kᵀ,  n_t = σ(f̃) n_{t-1} + exp(ĩ) k,  h̃_t = C_t q_t / max(|n_tᵀ q_t|, 1).
    """
    outs = []
    for t in range(q.size(2)):
        i, f = torch.exp(i_raw[..., t]), torch.sigmoid(f_raw[..., t])  # (B, K)
        qt, kt, vt = q[:, :, t], k[:, :, t], v[:, :, t]  # (B, K, d)
        c = f[..., None, None] * c + i[..., None, None] * torch.einsum("bka,bkc->bkac", vt, kt)
        n = f[..., None] * n + i[..., None] * kt
        den = torch.einsum("bkd,bkd->bk", n, qt).abs().clamp(min=1.0)
        outs.append(torch.einsum("bkac,bkc->bka", c, qt) / den[..., None])
    return torch.stack(outs, dim=2), c, n


def _recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i_raw: torch.Tensor, f_raw: torch.Tensor,
               state: Inputs) -> tuple[torch.Tensor, Inputs]:
    outs = []
    for t in range(q.size(2)):
        h, state = recurrent_step(q[:, :, t], k[:, :, t], v[:, :, t], i_raw[..., t], f_raw[..., t], state)
        outs.append(h)
    return torch.stack(outs, dim=2), state


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("fresh", [True, False])
def test_parallel_equals_recurrent_equals_the_equations_in_values_state_and_gradients(heads: int, fresh: bool) -> None:
    batch, steps, d = 2, 23, 5
    inputs = [t.requires_grad_() for t in _inputs(batch, heads, steps, d)]
    start = [t.detach().requires_grad_() for t in _state(batch, heads, d, fresh)]
    weights = torch.randn(batch, heads, steps, d, dtype=torch.float64)  # a loss that reads every output

    def run(form: str) -> tuple[Inputs, tuple[torch.Tensor, ...]]:
        c0, n0, m0 = start
        if form == "equations":  # the true memory is the stabilised one times exp(m)
            h, c, n = _equations(*inputs, c0 * m0.exp()[..., None, None], n0 * m0.exp()[..., None])
        else:
            h, (c, n, m) = (parallel if form == "parallel" else _recurrent)(*inputs, (c0, n0, m0))
            c, n = c * m.exp()[..., None, None], n * m.exp()[..., None]
        loss = (h * weights).sum() + c.sum() * 0.1 + n.sum() * 0.1
        grads = torch.autograd.grad(loss, [*inputs, *(start if not fresh else [])])
        return (h.detach(), c.detach(), n.detach()), grads

    reference, reference_grads = run("equations")
    for form in ("parallel", "recurrent"):
        values, grads = run(form)
        for ours, theirs in zip(values, reference, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
        for ours, theirs in zip(grads, reference_grads, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-8)


def test_chunked_windows_equal_one_window() -> None:
    inputs = _inputs(2, 4, 300, 6)
    whole, whole_state = parallel(*inputs, _state(2, 4, 6, True))
    pieces, pieces_state = chunked(*inputs, _state(2, 4, 6, True), chunk=64)
    torch.testing.assert_close(pieces, whole, rtol=1e-10, atol=1e-10)
    for a, b in zip(pieces_state, whole_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_stabiliser_keeps_10000_large_steps_finite_where_the_plain_form_overflows() -> None:
    batch, heads, steps, d = 2, 2, 10_000, 4
    q, k, v, i_raw, f_raw = _inputs(batch, heads, steps, d, torch.float32, gate_scale=1.0, seed=4)
    q, k = q.abs(), k.abs()  # nᵀq > 0 without cancellation, so the two forms can be compared closely
    i_raw = i_raw * 30 + 100.0  # exp(ĩ) overflows float32 (max e^88.7) at every step
    f_raw = f_raw * 30  # forget gates from fully shut to fully open
    zero = _state(batch, heads, d, True, torch.float32)
    plain, _, _ = _equations(q[:, :, :50], k[:, :, :50], v[:, :, :50], i_raw[..., :50], f_raw[..., :50], zero[0], zero[1])
    assert not torch.isfinite(plain).all()
    h, state = chunked(q, k, v, i_raw, f_raw, zero)
    h_rec, state_rec = _recurrent(q, k, v, i_raw, f_raw, zero)
    for out, last in ((h, state), (h_rec, state_rec)):
        assert torch.isfinite(out).all() and all(torch.isfinite(s).all() for s in last)
    torch.testing.assert_close(h_rec, h, rtol=1e-3, atol=1e-3)
    for a, b in zip(state_rec, state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_same_function_as_the_xlstm_package_parallel_and_recurrent_forms() -> None:
    from xlstm.blocks.mlstm.backends import parallel_stabilized_simple, recurrent_step_stabilized_simple

    batch, heads, steps, d = 2, 4, 17, 8
    q, k, v, i_raw, f_raw = _inputs(batch, heads, steps, d, torch.float32, seed=2)
    raw_k = k * math.sqrt(d)  # the package scales the keys itself
    ours, state = parallel(q, k, v, i_raw, f_raw, _state(batch, heads, d, True, torch.float32))
    theirs = parallel_stabilized_simple(q, raw_k, v, i_raw[..., None], f_raw[..., None], eps=0.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # One more step from the carried state; the package keeps C as k vᵀ (ours transposed), n and m with unit axes.
    c, n, m = state
    q1, k1, v1, i1, f1 = _inputs(batch, heads, 1, d, torch.float32, seed=3)
    ours_h, (ours_c, ours_n, ours_m) = recurrent_step(q1[:, :, 0], k1[:, :, 0], v1[:, :, 0], i1[..., 0], f1[..., 0],
                                                      state)
    theirs_h, (theirs_c, theirs_n, theirs_m) = recurrent_step_stabilized_simple(
        c.transpose(-1, -2).clone(), n[..., None].clone(), m[..., None, None].clone(), q1.clone(),
        k1.clone() * math.sqrt(d), v1.clone(), i1[..., None], f1[..., None], eps=0.0)
    torch.testing.assert_close(ours_h, theirs_h[:, :, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_c, theirs_c.transpose(-1, -2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_n, theirs_n[..., 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_m, theirs_m[..., 0, 0], rtol=1e-5, atol=1e-5)


def test_block_gradcheck_through_the_carried_state() -> None:
    torch.manual_seed(0)
    stack = MLSTM(3, 8, 2, heads=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    _, state = stack(torch.randn(2, 4, 3, dtype=torch.float64))
    state = tuple(s.detach().requires_grad_() for s in state[1:])

    def f(x: torch.Tensor, c: torch.Tensor, n: torch.Tensor, m: torch.Tensor, conv: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(2, 2, 8, dtype=torch.float64)
        return stack(x, (h, c, n, m, conv))[0]

    assert torch.autograd.gradcheck(f, (x, *state))


def test_block_stays_finite_under_bf16_autocast_with_large_gates() -> None:
    torch.manual_seed(1)
    stack = MLSTM(4, 16, 2, heads=4)
    with torch.no_grad():
        for linear in stack.qkg:
            linear.bias[-8:].fill_(60.0)  # exp(60) per step: the plain form would overflow in a few steps
    x = torch.randn(3, 64, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = stack(x)
        out.float().sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(s).all() for s in state)
    assert all(torch.isfinite(p.grad).all() for p in stack.parameters() if p.grad is not None)
