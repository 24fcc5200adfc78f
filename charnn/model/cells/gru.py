"""The GRU stack for training on CPU in fp32: `nn.GRU`'s function and weights, with the backward written out.

On CPU, `nn.GRU` runs PyTorch's unfused path: every step of every layer records ~20 autograd nodes, and
the backward sums the recurrent weight gradient one small product per step. `GRUWindow` runs one layer
over a window as a single autograd node:

    forward   gi = x W_ihᵀ + b_ih for the whole window (one product, outside the loop), then per step
              gh = h W_hhᵀ + b_hh;  r, z = σ(gi_rz + gh_rz);  n = tanh(gi_n + r ⊙ gh_n);  h = n + z ⊙ (h - n)
    backward  the per-step factors of dh (`_factors`) for the whole window at once, then per step only
              dgh = dh ⊙ K_t and dh_prev = dh ⊙ z_t + dgh W_hh (+ the output's gradient at t - 1);
              the weight gradients as one product over the window each.

Both passes keep the state time-major, (T, B, ·), so each step's slice is contiguous. The numbers are
`nn.GRU`'s to float rounding (tests/test_gru.py checks values and every gradient); the model uses this
only where it is faster (`use_window`): CPU training in fp32. Under bf16 autocast, and on CUDA (cuDNN),
and without gradients, `nn.GRU` runs. Measurements: benchmarks/RESULTS.md ("The GRU window").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charnn.model.cells.dropout import locked_dropout
from charnn.model.cells.graph import Graph, gated_input
from charnn.model.cells.spec import Cell, Parts, StepWeights, gated_cost, stacked


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def use_window(x: Tensor) -> bool:
    """Whether the GRU stack should run `GRUWindow`: training with gradients on CPU in fp32."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_grad_enabled()
            and not _autocast_on("cpu"))


def _factors(hs: Tensor, rz: Tensor, n: Tensor, gh: Tensor) -> tuple[Tensor, Tensor]:
    """What turns dh_t (the loss's gradient at a step's new state) into the step's pre-activation gradients.

    With a = (1 - z)(1 - n²) (dh to n's pre-activation), per step: d(gh_r) = dh ⊙ a ⊙ gh_n ⊙ r(1 - r),
    d(gh_z) = dh ⊙ (h_prev - n) ⊙ z(1 - z), d(gh_n) = dh ⊙ a ⊙ r; gi's gradient equals gh's for r and z,
    and is dh ⊙ a for n. Returns K (T, B, 3, H), the three factors stacked, and a (T, B, H).
    """
    hidden = n.size(-1)
    r, z = rz[..., :hidden], rz[..., hidden:]
    a = (1 - z) * (1 - n * n)
    k = torch.stack((a * gh[..., 2 * hidden:] * r * (1 - r), (hs[:-1] - n) * z * (1 - z), a * r), dim=2)
    return k, a


class GRUWindow(torch.autograd.Function):
    """One GRU layer over a window: gi (T, B, 3H) input projections with b_ih, h0 (B, H), W_hh (3H, H),
    b_hh (3H) -> outputs (T, B, H) and the last state (B, H). Gates in `nn.GRU`'s order (r, z, n)."""

    @staticmethod
    def forward(ctx: Any, gi: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
        steps, batch, three_h = gi.shape
        hidden = three_h // 3
        hs = gi.new_empty(steps + 1, batch, hidden)  # hs[t] is the state before step t
        hs[0] = h0
        gh = gi.new_empty(steps, batch, three_h)  # h W_hhᵀ + b_hh per step (its n part is needed backward)
        rz = gi.new_empty(steps, batch, 2 * hidden)  # σ of the r and z pre-activations
        n = gi.new_empty(steps, batch, hidden)
        w_t = w_hh.t()
        for t in range(steps):
            torch.addmm(b_hh, hs[t], w_t, out=gh[t])
            torch.add(gi[t, :, : 2 * hidden], gh[t, :, : 2 * hidden], out=rz[t]).sigmoid_()
            torch.addcmul(gi[t, :, 2 * hidden:], rz[t, :, :hidden], gh[t, :, 2 * hidden:], out=n[t]).tanh_()
            torch.lerp(n[t], hs[t], rz[t, :, hidden:], out=hs[t + 1])  # n + z (h - n)
        ctx.save_for_backward(hs, rz, n, gh, w_hh)
        return hs[1:], hs[steps].clone()

    @staticmethod
    def backward(ctx: Any, d_out: Tensor | None, d_last: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        hs, rz, n, gh, w_hh = ctx.saved_tensors
        steps, batch, hidden = n.shape
        d_out = torch.zeros_like(n) if d_out is None else d_out
        k, a = _factors(hs, rz, n, gh)
        z = rz[..., hidden:]
        dh = torch.empty_like(n)  # dh[t]: the loss's gradient at the state step t made, all paths summed
        dgh = torch.empty_like(k)  # (T, B, 3, H)
        dh[steps - 1] = d_out[steps - 1] if d_last is None else d_out[steps - 1] + d_last
        for t in range(steps - 1, 0, -1):
            torch.mul(dh[t].unsqueeze(1), k[t], out=dgh[t])
            torch.addmm(torch.addcmul(d_out[t - 1], dh[t], z[t]), dgh[t].view(batch, 3 * hidden), w_hh, out=dh[t - 1])
        torch.mul(dh[0].unsqueeze(1), k[0], out=dgh[0])
        dh0 = torch.addmm(dh[0] * z[0], dgh[0].view(batch, 3 * hidden), w_hh)
        flat = dgh.view(steps * batch, 3 * hidden)
        d_w_hh = flat.t() @ hs[:-1].reshape(steps * batch, hidden)  # (3H, H): one product over the window
        d_b_hh = flat.sum(0)
        dgi = dgh.clone()
        dgi[:, :, 2] = dh * a
        return dgi.view(steps, batch, 3 * hidden), dh0, d_w_hh, d_b_hh


def run_stack(rnn: nn.GRU, x: Tensor, h0: Tensor, dropout: float, locked: bool) -> tuple[Tensor, Tensor]:
    """`rnn`'s function with its weights, layer by layer through `GRUWindow`: x (B, T, E) and h0 (L, B, H)
    -> outputs (B, T, H) and the last states (L, B, H). Dropout acts between layers as in `nn.GRU`
    (`locked`: one mask per stream for the window, as `model.CharRNN` does with `--locked-dropout`)."""
    out = x.transpose(0, 1)  # (T, B, E): time-major for the loop
    finals = []
    for k in range(rnn.num_layers):
        if k and dropout > 0:
            out = (locked_dropout(out.transpose(0, 1), dropout).transpose(0, 1) if locked
                   else F.dropout(out, dropout, training=True))
        gi = F.linear(out, getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"bias_ih_l{k}"))  # (T, B, 3H)
        out, last = GRUWindow.apply(gi, h0[k], getattr(rnn, f"weight_hh_l{k}"), getattr(rnn, f"bias_hh_l{k}"))
        finals.append(last)
    return out.transpose(0, 1), torch.stack(finals)


def build(embed: int, hidden: int, layers: int, heads: int, dropout: float, locked: bool) -> nn.Module:
    return nn.GRU(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)


def layer(w: StepWeights, k: int, x: Tensor, parts: Parts) -> Tensor:
    h = parts[0][k]
    gi = x if k == 0 else torch.addmm(w.b_ih[k], x, w.w_ih[k])  # (B, 3H)
    gh = torch.addmm(w.b_hh[k], h, w.w_hh[k])
    ir, iz, in_ = gi.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    r, z = torch.sigmoid(torch.cat([ir + hr, iz + hz], 1)).chunk(2, 1)
    n = torch.tanh(torch.addcmul(in_, r, hn))
    return torch.addcmul(n, z, h - n)  # n + z (h - n) = (1 - z) n + z h


def onnx_layer(g: Graph, folded: dict[str, Tensor], k: int, x: str, old: dict[str, str], hidden: int, heads: int,
               voice: str | None) -> dict[str, str]:
    gi, h = gated_input(g, folded, k, x, voice), old["h"]
    gh = g.affine(h, g.weight(f"w_hh_{k}", folded[f"w_hh.{k}"]), g.weight(f"b_hh_{k}", folded[f"b_hh.{k}"]))
    ir, iz, in_ = g.split(gi, 3, hidden, axis=1)
    hr, hz, hn = g.split(gh, 3, hidden, axis=1)
    r = g.op("Sigmoid", g.op("Add", ir, hr))
    z = g.op("Sigmoid", g.op("Add", iz, hz))
    n = g.op("Tanh", g.op("Add", in_, g.op("Mul", r, hn)))
    return {"h": g.op("Add", n, g.op("Mul", z, g.op("Sub", h, n)))}


# A GRU's layer 0 table cannot hold b_hh: its b_hn is multiplied by r inside the candidate.
CELL = Cell("gru", "gated recurrent unit", parts=("h",), gates=3, build=build, cost=gated_cost(3), step=stacked(layer),
            onnx_layer=onnx_layer, fused=nn.GRU, table_has_b_hh=False)
