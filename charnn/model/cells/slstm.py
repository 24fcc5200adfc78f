"""The sLSTM cell of xLSTM, written here (its scan has a written-out backward).

The exponential-gating LSTM with a normaliser state (Beck et al., 2024, "xLSTM: Extended Long
Short-Term Memory"), per layer and step, from input x_t and the previous output h_{t-1}:

    ĩ, f̃, z̃, õ = W x_t + R h_{t-1} + b          R block-diagonal over `heads` heads
    m_t = max(log σ(f̃) + m_{t-1}, ĩ)             (a fresh state, n = 0: m_t = ĩ)
    i' = exp(ĩ - m_t)    f' = exp(log σ(f̃) + m_{t-1} - m_t)
    c_t = f' c_{t-1} + i' tanh(z̃)    n_t = f' n_{t-1} + i'    h_t = σ(õ) c_t / n_t

Gates are laid out (i, f, z, o), H each, and R is stored per head as (heads, 4·H/heads, H/heads),
as in the `xlstm` package's pure-PyTorch ("vanilla") sLSTM, so the same weights give the same
function in both (tests/test_cells.py checks it). n ≥ 1 after any step, so "n = 0" marks a fresh
state exactly. The stabiliser m keeps the exponents ≤ 0 (i' and f' are clamped to 1 for the one
case that is not, f' on a fresh state, where it multiplies c = n = 0): nothing overflows however
large |ĩ| and |f̃| get.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charnn.model.cells.dropout import locked_dropout
from charnn.model.cells.graph import Graph, gated_input, log_sigmoid
from charnn.model.cells.spec import Cell, Parts, StepWeights, gated_cost, stacked

SState = tuple[Tensor, Tensor, Tensor, Tensor]  # h, c, n, m: each (layers, B, H)


def dense_recurrent(r: Tensor) -> Tensor:
    """Per-head R (K, 4·d, d) -> one block-diagonal (H, 4H) matrix in gate-major layout, H = K·d.

    h (B, H) @ it gives R h_{t-1} for all gates (B, 4H) in one matmul; differentiable in r.
    """
    k, _, d = r.shape  # (heads, 4·d, d)
    gates = [torch.block_diag(*[r[j, g * d : (g + 1) * d, :].T for j in range(k)]) for g in range(4)]  # 4 x (H, H)
    return torch.cat(gates, dim=1)  # (H, 4H)


def slstm_pointwise(raw: Tensor, c: Tensor, n: Tensor, m: Tensor) -> SState:
    """One step's pointwise work: pre-activations (..., 4H) and the old c, n, m (..., H) -> new h, c, n, m.

    The gates (i, f, z, o) are the four quarters of the last dimension: (B, 4H) gate-major, or per
    head (K, B, 4d) as in the generation step.
    """
    i_raw, f_raw, z_raw, o_raw = raw.chunk(4, dim=-1)
    log_f_m = m + F.logsigmoid(f_raw)
    m_new = torch.where(n == 0, i_raw, torch.maximum(i_raw, log_f_m))
    # Exponents are <= 0 except f's on a fresh state (m = ĩ), where exp could overflow and inf * c(=0)
    # would give NaN; the clamp (as in xlstm's vanilla cell) makes that f' = 1 and changes nothing else.
    i = torch.exp(i_raw - m_new).clamp(max=1.0)
    f = torch.exp(log_f_m - m_new).clamp(max=1.0)
    c_new = f * c + i * torch.tanh(z_raw)
    n_new = f * n + i
    return torch.sigmoid(o_raw) * c_new / n_new, c_new, n_new, m_new


def slstm_scan(wx: Tensor, r: Tensor, state: SState) -> tuple[Tensor, SState]:
    """One layer over a window: input projections wx (T, B, 4H), per-head R (K, 4d, d), state (B, H) each.

    Returns the outputs (T, B, H) and the final state: the same function as `slstm_pointwise` applied
    step by step with `dense_recurrent(r)`, computed faster in two ways. The window runs in a
    head-major layout, (K, B, ·) per step, so R h_{t-1} is one batched matmul over the heads instead
    of a dense matmul that is mostly zeros (K times fewer FLOPs). And autograd records one node for
    the whole window (`_Scan`, backward written out below) instead of ~20 per step.
    """
    steps, batch, _ = wx.shape
    heads, _, d = r.shape

    def to_heads(s: Tensor) -> Tensor:  # (B, H) -> (K, B, d)
        return s.view(batch, heads, d).transpose(0, 1).contiguous()

    # (T, B, 4H) gate-major, column g·H + j·d + u -> (T, K, B, 4d) with head j's gates (i, f, z, o) together
    wx_k = wx.reshape(steps, batch, 4, heads, d).permute(0, 3, 1, 2, 4).reshape(steps, heads, batch, 4 * d)
    r_t = r.transpose(1, 2).contiguous()  # (K, d, 4d): h (K, B, d) @ r_t gives R h per head
    parts = [to_heads(s) for s in state]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (wx_k, r_t, *parts)):
        outs, h, c, n, m = _Scan.apply(wx_k, r_t, *parts)
    else:
        outs, h, c, n, m, _ = _scan_forward(wx_k, r_t, *parts)
    out = outs.permute(0, 2, 1, 3).reshape(steps, batch, heads * d)  # (T, K, B, d) -> (T, B, H)
    h, c, n, m = (s.transpose(0, 1).reshape(batch, heads * d) for s in (h, c, n, m))
    return out, (h, c, n, m)


def _scan_forward(wx: Tensor, r_t: Tensor, h: Tensor, c: Tensor, n: Tensor,
                  m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
    """The forward loop in head-major layout: wx (T, K, B, 4d), r_t (K, d, 4d), state (K, B, d).

    Also returns what the backward needs: the gate values, σ(-f̃), which branch m came from, c and n.
    """
    steps = wx.size(0)
    shape = h.shape  # (K, B, d)
    outs = wx.new_empty(steps, *shape)
    gates = wx.new_empty(wx.shape)  # i', f', tanh z̃, σ(õ) per step: (T, K, B, 4d)
    sig_nf = wx.new_empty(steps, *shape)  # σ(-f̃) = d log σ(f̃) / d f̃
    take_i = torch.empty(steps, *shape, dtype=torch.bool, device=wx.device)  # m_t came from ĩ
    cs, ns = wx.new_empty(steps + 1, *shape), wx.new_empty(steps + 1, *shape)  # c, n before and after each step
    cs[0], ns[0] = c, n
    fresh = n == 0  # only the first step can be fresh: n ≥ 1 after any step
    for t in range(steps):
        raw = torch.baddbmm(wx[t], h, r_t)  # (K, B, 4d)
        i_raw, f_raw, z_raw, o_raw = raw.chunk(4, dim=2)
        i, f, z, o = gates[t].chunk(4, dim=2)
        log_f_m = F.logsigmoid(f_raw).add_(m)
        pick_i = torch.ge(i_raw, log_f_m, out=take_i[t])
        if t == 0:
            pick_i.logical_or_(fresh)
        m = torch.where(pick_i, i_raw, log_f_m)
        torch.exp(i_raw - m, out=i)  # exponent ≤ 0
        torch.exp(log_f_m - m, out=f)  # ≤ 0 too, except on a fresh state (see slstm_pointwise)
        if t == 0:
            f.clamp_(max=1.0)
        torch.tanh(z_raw, out=z)
        torch.sigmoid(o_raw, out=o)
        torch.sigmoid(f_raw.neg(), out=sig_nf[t])
        c = torch.addcmul(f * c, i, z, out=cs[t + 1])
        n = torch.addcmul(i, f, n, out=ns[t + 1])
        h = torch.div(o * c, n, out=outs[t])
    return outs, h.clone(), c.clone(), n.clone(), m, (gates, sig_nf, take_i, cs, ns)


class _Scan(torch.autograd.Function):
    """`slstm_scan`'s loop with a hand-written backward through time (one autograd node per layer and window)."""

    @staticmethod
    def forward(ctx, wx: Tensor, r_t: Tensor, h0: Tensor, c0: Tensor, n0: Tensor,  # type: ignore[override]
                m0: Tensor) -> tuple[Tensor, ...]:
        outs, h, c, n, m, saved = _scan_forward(wx, r_t, h0, c0, n0, m0)
        ctx.save_for_backward(r_t, h0, outs, *saved)
        return outs, h, c, n, m

    @staticmethod
    def backward(ctx, d_outs: Tensor | None, dh: Tensor | None, dc: Tensor | None,  # type: ignore[override]
                 dn: Tensor | None, dm: Tensor | None) -> tuple[Tensor | None, ...]:
        r_t, h0, outs, gates, sig_nf, take_i, cs, ns = ctx.saved_tensors
        steps, heads, batch, d = outs.shape
        zeros = torch.zeros_like(h0)
        dh, dc, dn, dm = (zeros if g is None else g for g in (dh, dc, dn, dm))
        d_raw = gates.new_empty(gates.shape)  # dL/d(pre-activations) per step = dL/d wx: (T, K, B, 4d)
        r = r_t.transpose(1, 2).contiguous()  # (K, 4d, d)
        from_f = ~take_i  # m_t came from log f + m_old
        for t in range(steps - 1, -1, -1):
            i, f, z, o = gates[t].chunk(4, dim=2)
            c_old, n_old, c, n = cs[t], ns[t], cs[t + 1], ns[t + 1]
            di_raw, df_raw, dz_raw, do_raw = d_raw[t].chunk(4, dim=2)
            if d_outs is not None:
                dh = dh + d_outs[t]
            # h = o · q, q = c / n
            q = c / n
            dq = dh * o
            torch.mul(dh * q, o - o * o, out=do_raw)
            dq.div_(n)
            dc = dc + dq
            dn = dn - dq * q
            # c = f' c_old + i' z,  n = f' n_old + i'
            gf = torch.addcmul(dc * c_old, dn, n_old).mul_(f)  # dL/df' · f'
            gi = torch.addcmul(dn, dc, z).mul_(i)  # dL/di' · i'
            torch.mul(dc * i, 1 - z * z, out=dz_raw)
            # i' = exp(ĩ - m), f' = exp(log f + m_old - m): the full dL/dm_t goes back to whichever of
            # ĩ and log f + m_old it was taken from. (f's clamp only acts where c_old = n_old = 0: gf = 0.)
            dm = dm - gi - gf
            d_log_f_m = dm.masked_fill(take_i[t], 0.0).add_(gf)
            torch.add(gi, dm.masked_fill_(from_f[t], 0.0), out=di_raw)
            torch.mul(d_log_f_m, sig_nf[t], out=df_raw)
            dm = d_log_f_m  # log f + m_old: m_old's share
            dc, dn = dc * f, dn * f
            dh = torch.bmm(d_raw[t], r)  # back through R h_{t-1}: (K, B, 4d) @ (K, 4d, d)
        h_prev = torch.cat((h0[None], outs[:-1]), dim=0)  # (T, K, B, d): h_{t-1} per step
        h_prev = h_prev.permute(1, 3, 0, 2).reshape(heads, d, steps * batch)
        d_r_t = torch.bmm(h_prev, d_raw.transpose(0, 1).reshape(heads, steps * batch, 4 * d))  # (K, d, 4d)
        return d_raw, d_r_t, dh, dc, dn, dm


class SLSTM(nn.Module):
    """Stacked sLSTM layers, `(x (B, T, E), state) -> (out (B, T, H), state)` like `nn.LSTM(batch_first=True)`.

    Per layer the window's input projection is one matmul; the loop over steps does one
    recurrent matmul and the pointwise work. Dropout acts between layers, as in `nn.LSTM`.
    """

    def __init__(self, input_size: int, hidden: int, num_layers: int, heads: int, dropout: float = 0.0,
                 locked: bool = False):
        super().__init__()
        assert hidden % heads == 0, "ModelConfig.validate checks --heads before a model is built"
        self.hidden, self.num_layers, self.heads, self.dropout = hidden, num_layers, heads, dropout
        self.locked = locked  # one dropout mask per stream for the whole window (locked_dropout)
        d = hidden // heads
        self.w = nn.ModuleList(nn.Linear(input_size if k == 0 else hidden, 4 * hidden) for k in range(num_layers))
        self.r = nn.ParameterList(nn.Parameter(torch.empty(heads, 4 * d, d)) for _ in range(num_layers))
        bound = 1 / math.sqrt(hidden)
        with torch.no_grad():
            for k in range(num_layers):
                _, b, r = self.weights(k)
                r.uniform_(-bound, bound)
                # Forget gates start mostly open (σ(3) ≈ 0.95), input gates slightly shut: long memory at first.
                b[hidden : 2 * hidden].fill_(3.0)
                b[:hidden].fill_(-1.0)

    def weights(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Layer k's W (4H, in), b (4H,) and per-head R (heads, 4·H/heads, H/heads)."""
        linear = self.w[k]
        assert isinstance(linear, nn.Linear)
        return linear.weight, linear.bias, self.r[k]

    def init_state(self, batch: int, device: torch.device | str | None = None) -> SState:
        zeros = torch.zeros(self.num_layers, batch, self.hidden, device=device)
        return zeros, zeros.clone(), zeros.clone(), zeros.clone()

    def forward(self, x: Tensor, state: SState | None = None) -> tuple[Tensor, SState]:
        if state is None:
            state = self.init_state(x.size(0), x.device)
        hs, cs, ns, ms = ([], [], [], [])
        inp = x
        for k in range(self.num_layers):
            w, b, r = self.weights(k)
            wx = F.linear(inp, w, b)  # (B, T, 4H): the whole window's input projection, bias included
            # The scan in fp32 (or finer) even under bf16 autocast: its hand-written backward multiplies the
            # saved tensors with one another, and the exponential gates need the precision.
            cell = torch.promote_types(x.dtype, torch.float32)
            with torch.autocast(x.device.type, enabled=False):
                outs, (h, c, n, m) = slstm_scan(wx.transpose(0, 1).to(cell), r.to(cell),
                                                (state[0][k].to(cell), state[1][k].to(cell), state[2][k].to(cell),
                                                 state[3][k].to(cell)))
            inp = outs.transpose(0, 1)  # (B, T, H)
            if self.dropout and self.training and k < self.num_layers - 1:
                inp = locked_dropout(inp, self.dropout) if self.locked else F.dropout(inp, self.dropout, training=True)
            hs.append(h)
            cs.append(c)
            ns.append(n)
            ms.append(m)
        return inp, (torch.stack(hs), torch.stack(cs), torch.stack(ns), torch.stack(ms))


def build(embed: int, hidden: int, layers: int, heads: int, dropout: float, locked: bool) -> nn.Module:
    return SLSTM(embed, hidden, layers, heads, dropout, locked)


def gate_weights(stack: nn.Module) -> dict[str, Tensor]:
    """W and b under nn.LSTM's names with gate columns reordered head-major (head j's i, f, z, o together:
    column j*4d + g*d + u holds gate g of unit j*d + u), zero W_hh and b_hh (R is applied per head), and
    `r_t.k` (K, d, 4d), R per head transposed: h (K, B, d) @ r_t is R h at 1/K of a dense (H, 4H) product."""
    assert isinstance(stack, SLSTM)
    heads, d = stack.heads, stack.hidden // stack.heads
    order = torch.arange(4 * stack.hidden).view(4, heads, d).transpose(0, 1).reshape(-1)  # head-major <- gate-major
    w: dict[str, Tensor] = {}
    for k in range(stack.num_layers):
        wk, bk, rk = (t.detach() for t in stack.weights(k))
        w[f"weight_ih_l{k}"], w[f"bias_ih_l{k}"] = wk[order], bk[order]
        w[f"weight_hh_l{k}"] = torch.zeros_like(wk[:, : stack.hidden])
        w[f"bias_hh_l{k}"] = torch.zeros_like(bk)
        w[f"r_t.{k}"] = rk.transpose(1, 2).contiguous()  # (K, d, 4d)
    return w


def layer(w: StepWeights, k: int, x: Tensor, parts: Parts) -> Tensor:
    """Layer k for one character: x is layer 0's input projection (B, 4H) at layer 0, else the layer below's
    h (B, H_in) -> h (B, H)."""
    batch, heads = parts[0][k].size(0), w.heads
    pre = x if k == 0 else torch.addmm(w.b_ih[k], x, w.w_ih[k])  # (B, 4H) head-major

    def per_head(t: Tensor) -> Tensor:  # (B, ·) -> (K, B, ·/K)
        return t.view(batch, heads, -1).transpose(0, 1)

    def back(t: Tensor) -> Tensor:  # (K, B, d) -> (B, H)
        return t.transpose(0, 1).reshape(batch, -1)

    gates = torch.baddbmm(per_head(pre), per_head(parts[0][k]), w.folded[f"r_t.{k}"])  # W x + b + R h, (K, B, 4d)
    h, c, n, m = slstm_pointwise(gates, per_head(parts[1][k]), per_head(parts[2][k]), per_head(parts[3][k]))
    parts[1][k], parts[2][k], parts[3][k] = back(c), back(n), back(m)
    return back(h)


def onnx_layer(g: Graph, folded: dict[str, Tensor], k: int, x: str, old: dict[str, str], hidden: int, heads: int,
               voice: str | None) -> dict[str, str]:
    """`slstm_pointwise` per head: the input projection (B, 4H) head-major, R per head (K, d, 4d)."""
    d = hidden // heads
    one, zero = g.const("one", np.array(1.0, np.float32)), g.const("zero", np.array(0.0, np.float32))

    def to_heads(t: str, width: int) -> str:  # (B, K*width) -> (K, B, width)
        return g.op("Transpose", g.op("Reshape", t, g.ints(f"heads_{width}", [0, heads, width])), perm=[1, 0, 2])

    def back(t: str) -> str:  # (K, B, d) -> (B, H)
        return g.op("Reshape", g.op("Transpose", t, perm=[1, 0, 2]), g.ints("flat", [0, -1]))

    pre = gated_input(g, folded, k, x, voice)
    r_t = g.weight(f"r_t_{k}", folded[f"r_t.{k}"])
    gates = g.op("Add", to_heads(pre, 4 * d), g.op("MatMul", to_heads(old["h"], d), r_t))  # (K, B, 4d)
    i_raw, f_raw, z_raw, o_raw = g.split(gates, 4, d, axis=2)
    c, n, m = (to_heads(old[p], d) for p in ("c", "n", "m"))
    log_f_m = g.op("Add", m, log_sigmoid(g, f_raw))
    m_new = g.op("Where", g.op("Equal", n, zero), i_raw, g.op("Max", i_raw, log_f_m))
    i = g.op("Min", g.op("Exp", g.op("Sub", i_raw, m_new)), one)
    f = g.op("Min", g.op("Exp", g.op("Sub", log_f_m, m_new)), one)
    c_new = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, g.op("Tanh", z_raw)))
    n_new = g.op("Add", g.op("Mul", f, n), i)
    h = g.op("Div", g.op("Mul", g.op("Sigmoid", o_raw), c_new), n_new)
    return {"h": back(h), "c": back(c_new), "n": back(n_new), "m": back(m_new)}


# An sLSTM's c is stored scaled by exp(-m) (the stabiliser), so the cell value `inspect` shows is c / n.
CELL = Cell("slstm", "xLSTM's sLSTM", parts=("h", "c", "n", "m"), gates=4, build=build,
            cost=gated_cost(4, heads_divide=True), step=stacked(layer), onnx_layer=onnx_layer, headed=True,
            shown=("h", "c/n"), gate_weights=gate_weights)
