"""Recurrent layers written here rather than taken from `torch.nn`: the sLSTM of xLSTM.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SState = tuple[Tensor, Tensor, Tensor, Tensor]  # h, c, n, m: each (layers, B, H)


def dense_recurrent(r: Tensor) -> Tensor:
    """Per-head R (K, 4·d, d) -> one block-diagonal (H, 4H) matrix in gate-major layout, H = K·d.

    h (B, H) @ it gives R h_{t-1} for all gates (B, 4H) in one matmul; differentiable in r.
    """
    k, _, d = r.shape  # (heads, 4·d, d)
    gates = [torch.block_diag(*[r[j, g * d : (g + 1) * d, :].T for j in range(k)]) for g in range(4)]  # 4 x (H, H)
    return torch.cat(gates, dim=1)  # (H, 4H)


def slstm_pointwise(raw: Tensor, c: Tensor, n: Tensor, m: Tensor) -> SState:
    """One step's pointwise work: pre-activations (B, 4H) and the old c, n, m (B, H) -> new h, c, n, m."""
    i_raw, f_raw, z_raw, o_raw = raw.chunk(4, dim=1)
    log_f_m = m + F.logsigmoid(f_raw)
    m_new = torch.where(n == 0, i_raw, torch.maximum(i_raw, log_f_m))
    # Exponents are <= 0 except f's on a fresh state (m = ĩ), where exp could overflow and inf * c(=0)
    # would give NaN; the clamp (as in xlstm's vanilla cell) makes that f' = 1 and changes nothing else.
    i = torch.exp(i_raw - m_new).clamp(max=1.0)
    f = torch.exp(log_f_m - m_new).clamp(max=1.0)
    c_new = f * c + i * torch.tanh(z_raw)
    n_new = f * n + i
    return torch.sigmoid(o_raw) * c_new / n_new, c_new, n_new, m_new


class SLSTM(nn.Module):
    """Stacked sLSTM layers, `(x (B, T, E), state) -> (out (B, T, H), state)` like `nn.LSTM(batch_first=True)`.

    Per layer the window's input projection is one matmul; the loop over steps does one
    recurrent matmul and the pointwise work. Dropout acts between layers, as in `nn.LSTM`.
    """

    def __init__(self, input_size: int, hidden: int, num_layers: int, heads: int, dropout: float = 0.0):
        super().__init__()
        assert hidden % heads == 0, "ModelConfig.validate checks --heads before a model is built"
        self.hidden, self.num_layers, self.heads, self.dropout = hidden, num_layers, heads, dropout
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
            rd = dense_recurrent(r).to(wx.dtype)  # (H, 4H)
            h, c, n, m = state[0][k], state[1][k], state[2][k], state[3][k]
            outs = []
            for t in range(wx.size(1)):
                h, c, n, m = slstm_pointwise(torch.addmm(wx[:, t], h, rd), c, n, m)
                outs.append(h)
            inp = torch.stack(outs, dim=1)  # (B, T, H)
            if self.dropout and self.training and k < self.num_layers - 1:
                inp = F.dropout(inp, self.dropout, training=True)
            hs.append(h)
            cs.append(c)
            ns.append(n)
            ms.append(m)
        return inp, (torch.stack(hs), torch.stack(cs), torch.stack(ns), torch.stack(ms))
