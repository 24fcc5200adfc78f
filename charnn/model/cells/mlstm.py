"""The mLSTM of xLSTM: a matrix memory per head, trained in parallel over the window.

Beck et al., 2024, "xLSTM: Extended Long Short-Term Memory" (section 2.3, appendix B). Per head of
width d, from the step's query q, key k (already scaled by 1/√d), value v (each (d,)) and the scalar
gate pre-activations ĩ, f̃:

    m_t = max(log σ(f̃_t) + m_{t-1}, ĩ_t)                     the stabiliser, as in the sLSTM
    i' = exp(ĩ_t - m_t)    f' = exp(log σ(f̃_t) + m_{t-1} - m_t)   (both ≤ 1: nothing overflows)
    C_t = f' C_{t-1} + i' v_t k_tᵀ   (d, d)      n_t = f' n_{t-1} + i' k_t   (d,)
    h̃_t = C_t q_t / max(|n_tᵀ q_t|, exp(-m_t))

C and n are kept scaled by exp(-m): the true memory is C·exp(m), and h̃ above is exactly the paper's
C q / max(|nᵀq|, 1) of the true memory, whatever m is. A fresh state is all zeros (m = 0 is as good a
stabiliser as any for a zero memory).

The gates do not read h, so the recurrence unrolls. With F_t = Σ_{u≤t} log σ(f̃_u) over the window,
step s reaches step t (s ≤ t) with log-weight D_ts = F_t - F_s + ĩ_s and the carried memory with
F_t + m_0; the stabiliser is m_t = max(F_t + m_0, max_s D_ts), the very m_t of the recurrence. So a
window is a causal, gated attention (`parallel`, T×T per head) plus the carried memory's share, and
the memory after it is a weighted sum (`parallel` returns it too). `recurrent_step` is the same
function one character at a time; `chunked` runs long inputs as windows of at most CHUNK steps.

The block around the cell (`MLSTM`, per layer, input u of width `in`) is the paper's pre-up-projection
mLSTM block (its Figure 10), with dense rather than block-diagonal q, k, v projections:

    z = LayerNorm(u);  a, g = split(W_up z)               two branches of width H (no bias)
    c = SiLU(CausalConv4(a))                               per channel over the last 4 steps
    q, k, ĩ, f̃ = W_c c + b;   v = W_v a                   q, k, v (H each, heads of d = H/K), ĩ, f̃ (K each)
    y = (HeadNorm(h̃) + s ⊙ c) ⊙ SiLU(g)                   per-head LayerNorm, the learnable skip s, the
                                                           output gate SiLU(g)
    out = u + W_down y   (just W_down y in layer 0, whose input is the embedding)

and after the last layer a LayerNorm. The convolution's last 3 inputs are carried between windows
with the memory. Per layer and character that is 6H² multiply-adds at in = H, a GRU layer's count,
plus the convolution (4H), the window's attention (2·T·H) and the memory (2·H·d).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charnn.model.cells.dropout import locked_dropout
from charnn.model.cells.graph import LN_EPS, Graph, log_sigmoid, silu
from charnn.model.cells.spec import Cell, Parts, StepWeights

MState = tuple[Tensor, Tensor, Tensor]  # C (B, K, d, d), n (B, K, d), m (B, K): one layer's memory
CHUNK = 256  # the longest window `parallel` runs at once: its T×T weights per head bound the memory
TAPS = 4  # the causal convolution's kernel (the paper's): each step sees its input and the 3 before it


def recurrent_step(q: Tensor, k: Tensor, v: Tensor, i_raw: Tensor, f_raw: Tensor,
                   state: MState) -> tuple[Tensor, MState]:
    """One step: q, k, v (B, K, d), ĩ, f̃ (B, K), state C (B, K, d, d), n (B, K, d), m (B, K) -> h̃ (B, K, d), state."""
    c, n, m = state
    log_f_m = F.logsigmoid(f_raw) + m
    m_new = torch.maximum(log_f_m, i_raw)
    i = torch.exp(i_raw - m_new)
    f = torch.exp(log_f_m - m_new)
    c = f[..., None, None] * c + i[..., None, None] * (v[..., :, None] * k[..., None, :])  # C + i' v kᵀ
    n = f[..., None] * n + i[..., None] * k
    den = (n * q).sum(-1).abs()  # |nᵀq|: (B, K)
    h = (c @ q[..., None]).squeeze(-1) / torch.maximum(den, torch.exp(-m_new))[..., None]
    return h, (c, n, m_new)


def parallel(q: Tensor, k: Tensor, v: Tensor, i_raw: Tensor, f_raw: Tensor,
             state: MState) -> tuple[Tensor, MState]:
    """A whole window at once: q, k, v (B, K, T, d), ĩ, f̃ (B, K, T), state as `recurrent_step`'s.

    Returns h̃ (B, K, T, d) and the state after step T: the same numbers as T recurrent steps.
    """
    c0, n0, m0 = state
    steps = q.size(2)
    cum = F.logsigmoid(f_raw).cumsum(-1)  # F_t: (B, K, T)
    log_d = cum[..., :, None] - cum[..., None, :] + i_raw[..., None, :]  # D_ts: (B, K, T, T), row t, column s
    future = torch.ones(steps, steps, dtype=torch.bool, device=q.device).triu(1)
    log_d = log_d.masked_fill(future, float("-inf"))
    log_0 = cum + m0[..., None]  # the carried memory's log-weight at each step: (B, K, T)
    m = torch.maximum(log_d.amax(-1), log_0)  # (B, K, T)
    w = torch.exp(log_d - m[..., None])  # (B, K, T, T), ≤ 1
    w0 = torch.exp(log_0 - m)  # (B, K, T), ≤ 1
    scores = (q @ k.transpose(-1, -2)) * w  # i'-and-f'-weighted qᵀk: (B, K, T, T)
    num = scores @ v + w0[..., None] * (q @ c0.transpose(-1, -2))  # Σ_s w_ts (q_tᵀk_s) v_s + w0_t C0 q_t
    den = scores.sum(-1) + w0 * (q @ n0[..., None]).squeeze(-1)  # nᵀq: (B, K, T)
    h = num / torch.maximum(den.abs(), torch.exp(-m))[..., None]
    last, last0 = w[..., -1, :], w0[..., -1]  # each step's weight in the final memory: (B, K, T), (B, K)
    c = (v * last[..., None]).transpose(-1, -2) @ k + last0[..., None, None] * c0  # Σ_s w_s v_s k_sᵀ: (B, K, d, d)
    n = (k * last[..., None]).sum(-2) + last0[..., None] * n0
    return h, (c, n, m[..., -1])


def chunked(q: Tensor, k: Tensor, v: Tensor, i_raw: Tensor, f_raw: Tensor, state: MState,
            chunk: int = CHUNK) -> tuple[Tensor, MState]:
    """`parallel` over windows of at most `chunk` steps, the memory carried between them (a long prime)."""
    if q.size(2) <= chunk:
        return parallel(q, k, v, i_raw, f_raw, state)
    outs = []
    for s in range(0, q.size(2), chunk):
        span = slice(s, s + chunk)
        h, state = parallel(q[:, :, span], k[:, :, span], v[:, :, span], i_raw[:, :, span], f_raw[:, :, span], state)
        outs.append(h)
    return torch.cat(outs, dim=2), state


def state_widths(hidden: int, heads: int) -> tuple[int, ...]:
    """The last axis of each state part, (L, B, width): h (H), C (K·d·d), n (H), m (K), the convolution's inputs."""
    d = hidden // heads
    return hidden, heads * d * d, hidden, heads, (TAPS - 1) * hidden


class MLSTM(nn.Module):
    """Stacked mLSTM blocks, `(x (B, T, E), state) -> (out (B, T, H), state)` like the other stacks.

    The state is five (layers, B, ·) tensors, so it shards, saves and batches like every cell's:
    h (L, B, H) each block's output, C (L, B, K·d·d), n (L, B, H), m (L, B, K), and the convolution's
    last TAPS - 1 inputs (L, B, 3H). Only C, n, m and those inputs carry the past; h is kept for the
    stepping form's readers (`inspect`).
    """

    def __init__(self, input_size: int, hidden: int, num_layers: int, heads: int, dropout: float = 0.0,
                 locked: bool = False):
        super().__init__()
        self.locked = locked  # one dropout mask per stream for the whole window (dropout.locked_dropout)
        assert hidden % heads == 0, "ModelConfig.validate checks --heads before a model is built"
        self.hidden, self.num_layers, self.heads, self.dropout = hidden, num_layers, heads, dropout
        self.d = hidden // heads
        sizes = [input_size] + [hidden] * (num_layers - 1)
        self.norm = nn.ModuleList(nn.LayerNorm(size) for size in sizes)
        self.up = nn.ModuleList(nn.Linear(size, 2 * hidden, bias=False) for size in sizes)
        self.conv = nn.ModuleList(nn.Conv1d(hidden, hidden, TAPS, groups=hidden) for _ in sizes)
        self.qkg = nn.ModuleList(nn.Linear(hidden, 2 * hidden + 2 * heads) for _ in sizes)
        self.v = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in sizes)
        self.head_norm = nn.ParameterList(nn.Parameter(torch.ones(hidden)) for _ in sizes)
        self.skip = nn.ParameterList(nn.Parameter(torch.ones(hidden)) for _ in sizes)
        self.down = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in sizes)
        self.final_norm = nn.LayerNorm(hidden)
        with torch.no_grad():
            for k in range(num_layers):
                linear = self.qkg[k]
                assert isinstance(linear, nn.Linear)
                linear.bias.zero_()
                # Gates start from their biases (the paper's init): forget gates open, more so in later heads
                # (σ(3..6) ≈ 0.95..0.998), input gates at exp(0) = 1.
                linear.weight[2 * hidden :].zero_()
                linear.bias[2 * hidden + heads :] = torch.linspace(3.0, 6.0, heads)
                down = self.down[k]
                assert isinstance(down, nn.Linear)
                down.weight.mul_(1 / math.sqrt(2 * num_layers))  # a residual stream of L blocks stays near unit size

    def init_state(self, batch: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        return tuple(torch.zeros(self.num_layers, batch, w, device=device) for w in state_widths(self.hidden, self.heads))

    def split_heads(self, t: Tensor) -> Tensor:
        """(B, T, H) -> (B, K, T, d)."""
        return t.unflatten(-1, (self.heads, self.d)).transpose(1, 2)

    def forward(self, x: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        batch = x.size(0)
        if state is None:
            state = self.init_state(batch, x.device)
        K, d = self.heads, self.d
        finals: list[tuple[Tensor, ...]] = []
        u = x
        for k in range(self.num_layers):
            a, g = self.up[k](self.norm[k](u)).chunk(2, dim=-1)  # (B, T, H) each
            # The convolution reads the carried last inputs first: (B, TAPS - 1 + T, H) -> (B, T, H).
            past = torch.cat([state[4][k].view(batch, TAPS - 1, self.hidden).to(a.dtype), a], dim=1)
            c = F.silu(self.conv[k](past.transpose(1, 2)).transpose(1, 2))
            q, key, gates = self.qkg[k](c).split([self.hidden] * 2 + [2 * K], dim=-1)
            v = self.v[k](a)
            # The cell in fp32 (or finer) even under bf16 autocast: the cumulative log-gates and exponents need it.
            cell = torch.promote_types(x.dtype, torch.float32)
            i_raw, f_raw = gates.transpose(1, 2).to(cell).chunk(2, dim=1)  # (B, K, T) each
            memory = (state[1][k].view(batch, K, d, d).to(cell), state[2][k].view(batch, K, d).to(cell),
                      state[3][k].to(cell))
            with torch.autocast(x.device.type, enabled=False):
                h, (mem, n, m) = chunked(self.split_heads(q).to(cell), self.split_heads(key).to(cell) / math.sqrt(d),
                                         self.split_heads(v).to(cell), i_raw, f_raw, memory)
            y = (self.norm_heads(h.transpose(1, 2), k) + self.skip[k] * c) * F.silu(g)  # (B, T, H)
            out = self.down[k](y)
            if self.dropout and self.training and k < self.num_layers - 1:
                out = locked_dropout(out, self.dropout) if self.locked else F.dropout(out, self.dropout, training=True)
            u = out if k == 0 else u + out
            finals.append((u[:, -1].to(cell), mem.flatten(1), n.flatten(1), m, past[:, -(TAPS - 1) :].flatten(1).to(cell)))
        parts = tuple(torch.stack(layer_parts) for layer_parts in zip(*finals, strict=True))
        return self.final_norm(u), parts

    def norm_heads(self, h: Tensor, k: int) -> Tensor:
        """Per-head LayerNorm (no bias) of h̃ (B, T, K, d) -> (B, T, H), scaled by layer k's weight."""
        return F.layer_norm(h, (self.d,)).flatten(-2).to(self.skip[k].dtype) * self.head_norm[k]


def fold(stack: nn.Module, embedding: Tensor) -> dict[str, Tensor]:
    """The weights of the one-character step (`step`), folded for it; `model.fold_for_inference` adds the head.

    - `table0` (V, 2H): layer 0's W_up LayerNorm(embedding) for every character: its first two ops as one lookup.
    - per layer k: `norm_w.k`, `norm_b.k` (H,) and `up.k` (H, 2H) above layer 0; `conv_w.k` (TAPS, H), oldest
      tap first, and `conv_b.k` (H,); `qkg_w.k` (H, 2H + 2K) and `qkg_b.k` with the key's columns already
      scaled by 1/√d; `v.k` (H, H); `head_norm.k`, `skip.k` (H,); `down.k` (H, H).
    - `final_w`, `final_b` (H,): the LayerNorm after the last block.
    All transposed for x @ W.
    """
    assert isinstance(stack, MLSTM)
    H, K, d = stack.hidden, stack.heads, stack.d
    scale = torch.ones(2 * H + 2 * K)
    scale[H : 2 * H] = 1 / math.sqrt(d)
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for k in range(stack.num_layers):
            norm, up, conv, qkg = stack.norm[k], stack.up[k], stack.conv[k], stack.qkg[k]
            assert isinstance(norm, nn.LayerNorm) and isinstance(up, nn.Linear) and isinstance(conv, nn.Conv1d)
            assert isinstance(qkg, nn.Linear)
            if k == 0:
                out["table0"] = (norm(embedding.detach()) @ up.weight.detach().T).contiguous()  # (V, 2H)
            else:
                out[f"norm_w.{k}"], out[f"norm_b.{k}"] = norm.weight.detach().clone(), norm.bias.detach().clone()
                out[f"up.{k}"] = up.weight.detach().T.contiguous()
            out[f"conv_w.{k}"] = conv.weight.detach()[:, 0].T.contiguous()  # (H, 1, TAPS) -> (TAPS, H)
            assert conv.bias is not None
            out[f"conv_b.{k}"] = conv.bias.detach().clone()
            s = scale.to(qkg.weight.device)
            out[f"qkg_w.{k}"] = (qkg.weight.detach().T * s).contiguous()
            out[f"qkg_b.{k}"] = qkg.bias.detach() * s
            for name, linear in (("v", stack.v[k]), ("down", stack.down[k])):
                assert isinstance(linear, nn.Linear)
                out[f"{name}.{k}"] = linear.weight.detach().T.contiguous()
            out[f"head_norm.{k}"] = stack.head_norm[k].detach().clone()
            out[f"skip.{k}"] = stack.skip[k].detach().clone()
        out["final_w"] = stack.final_norm.weight.detach().clone()
        out["final_b"] = stack.final_norm.bias.detach().clone()
    return out


def step(w: StepWeights, ids: Tensor, parts: Parts) -> Tensor:
    """Advance the stepping-form state (h, C, n, m, the convolution's inputs; per layer (B, ·)) in place by the
    characters `ids` (B,); return the last block's output after the final LayerNorm (B, H): what the head reads."""
    folded, layers, heads = w.folded, w.layers, w.heads
    x: Tensor = ids
    for k in range(layers):
        batch = parts[0][k].size(0)
        if k == 0:
            a, g = folded["table0"][ids].chunk(2, dim=1)  # (B, H) each
        else:
            z = F.layer_norm(x, x.shape[-1:], folded[f"norm_w.{k}"], folded[f"norm_b.{k}"])
            a, g = (z @ folded[f"up.{k}"]).chunk(2, dim=1)
        hidden = a.size(1)
        d = hidden // heads
        past = torch.cat([parts[4][k].view(batch, TAPS - 1, hidden), a[:, None]], dim=1)  # (B, TAPS, H)
        c = F.silu((past * folded[f"conv_w.{k}"]).sum(1) + folded[f"conv_b.{k}"])
        q, key, gates = torch.addmm(folded[f"qkg_b.{k}"], c, folded[f"qkg_w.{k}"]).split([hidden] * 2 + [2 * heads], 1)
        v = a @ folded[f"v.{k}"]
        i_raw, f_raw = gates.chunk(2, dim=1)  # (B, K) each
        memory = (parts[1][k].view(batch, heads, d, d), parts[2][k].view(batch, heads, d), parts[3][k])
        h, (mem, n, m) = recurrent_step(q.view(batch, heads, d), key.view(batch, heads, d), v.view(batch, heads, d),
                                        i_raw, f_raw, memory)
        normed = F.layer_norm(h, (d,)).flatten(1) * folded[f"head_norm.{k}"]
        y = (normed + folded[f"skip.{k}"] * c) * F.silu(g)
        out = y @ folded[f"down.{k}"]
        x = out if k == 0 else x + out
        parts[0][k], parts[1][k], parts[2][k], parts[3][k] = x, mem.flatten(1), n.flatten(1), m
        parts[4][k] = past[:, 1:].flatten(1)
    return F.layer_norm(x, x.shape[-1:], folded["final_w"], folded["final_b"])


def onnx_layer(g: Graph, folded: dict[str, Tensor], k: int, x: str, old: dict[str, str], H: int, K: int,
               voice: str | None) -> dict[str, str]:
    """Block k (`step`): x ids at layer 0, else (B, H); state h (B, H), c (B, K·d·d), n (B, H), m (B, K),
    conv (B, 3H) -> the new state parts."""
    d = H // K
    if k == 0:
        ag = g.op("Gather", g.weight("table0", folded["table0"]), x, axis=0)  # (B, 2H): W_up LayerNorm(embedding)
    else:
        z = g.op("LayerNormalization", x, g.weight(f"norm_w_{k}", folded[f"norm_w.{k}"]),
                 g.weight(f"norm_b_{k}", folded[f"norm_b.{k}"]), axis=-1, epsilon=LN_EPS)
        ag = g.op("MatMul", z, g.weight(f"up_{k}", folded[f"up.{k}"]))
    a, gate = g.split(ag, 2, H, axis=1)
    past = g.op("Concat", g.op("Reshape", old["conv"], g.ints(f"mlstm_taps_{H}", [0, TAPS - 1, H])),
                g.op("Unsqueeze", a, g.ints("axis1", [1])), axis=1)  # (B, TAPS, H), oldest first
    conv = g.op("ReduceSum", g.op("Mul", past, g.weight(f"conv_w_{k}", folded[f"conv_w.{k}"])), g.ints("axis1", [1]),
                keepdims=0)
    c_act = silu(g, g.op("Add", conv, g.weight(f"conv_b_{k}", folded[f"conv_b.{k}"])))
    qkg = g.affine(c_act, g.weight(f"qkg_w_{k}", folded[f"qkg_w.{k}"]), g.weight(f"qkg_b_{k}", folded[f"qkg_b.{k}"]))
    q, key, i_raw, f_raw = g.op("Split", qkg, g.ints(f"qkg_split_{H}_{K}", [H, H, K, K]), outputs=4, axis=1)
    v = g.op("MatMul", a, g.weight(f"v_{k}", folded[f"v.{k}"]))
    tail = g.op("Slice", past, g.ints("one_start", [1]), g.ints("taps_end", [TAPS]), g.ints("axis1", [1]))
    heads = g.ints(f"mlstm_heads_{d}", [0, K, d])  # (B, H) -> (B, K, d)
    q, key, v, n = (g.op("Reshape", t, heads) for t in (q, key, v, old["n"]))
    c = g.op("Reshape", old["c"], g.ints(f"mlstm_memory_{d}", [0, K, d, d]))  # (B, K, d, d)
    last = g.ints("axis_last", [-1])
    log_f_m = g.op("Add", log_sigmoid(g, f_raw), old["m"])  # (B, K)
    m_new = g.op("Max", log_f_m, i_raw)
    i = g.op("Unsqueeze", g.op("Exp", g.op("Sub", i_raw, m_new)), last)  # (B, K, 1)
    f = g.op("Unsqueeze", g.op("Exp", g.op("Sub", log_f_m, m_new)), last)
    outer = g.op("Mul", g.op("Unsqueeze", v, last), g.op("Unsqueeze", key, g.ints("axis_minus2", [-2])))  # v kᵀ
    c_new = g.op("Add", g.op("Mul", g.op("Unsqueeze", f, last), c), g.op("Mul", g.op("Unsqueeze", i, last), outer))
    n_new = g.op("Add", g.op("Mul", f, n), g.op("Mul", i, key))  # (B, K, d)
    den = g.op("Abs", g.op("ReduceSum", g.op("Mul", n_new, q), last, keepdims=1))  # |nᵀq|: (B, K, 1)
    floor = g.op("Unsqueeze", g.op("Exp", g.op("Neg", m_new)), last)
    read = g.op("Squeeze", g.op("MatMul", c_new, g.op("Unsqueeze", q, last)), last)  # C q: (B, K, d)
    h = g.op("Div", read, g.op("Max", den, floor))
    ones, zeros = g.const(f"ones_{d}", np.ones(d, np.float32)), g.const(f"zeros_{d}", np.zeros(d, np.float32))
    flat = g.ints("flat", [0, -1])
    normed = g.op("Reshape", g.op("LayerNormalization", h, ones, zeros, axis=-1, epsilon=LN_EPS), flat)  # (B, H)
    normed = g.op("Mul", normed, g.weight(f"head_norm_{k}", folded[f"head_norm.{k}"]))
    skip = g.op("Mul", c_act, g.weight(f"skip_{k}", folded[f"skip.{k}"]))
    y = g.op("Mul", g.op("Add", normed, skip), silu(g, gate))
    out = g.op("MatMul", y, g.weight(f"down_{k}", folded[f"down.{k}"]))
    stream = out if k == 0 else g.op("Add", x, out)
    return {"h": stream, "c": g.op("Reshape", c_new, flat), "n": g.op("Reshape", n_new, flat), "m": m_new,
            "conv": g.op("Reshape", tail, flat)}


def onnx_out(g: Graph, folded: dict[str, Tensor], x: str) -> str:
    """The LayerNorm after the last block."""
    return g.op("LayerNormalization", x, g.weight("final_w", folded["final_w"]), g.weight("final_b", folded["final_b"]),
                axis=-1, epsilon=LN_EPS)


def build(embed: int, hidden: int, layers: int, heads: int, dropout: float, locked: bool) -> nn.Module:
    return MLSTM(embed, hidden, layers, heads, dropout, locked)


def cost(layers: int, hidden: int, embed: int, vocab: int, heads: int, seq_len: int) -> float:
    """Per block: up-projection 2·H·in; q, k, v and gates (3H + 2K)·H; down H²; the window's attention 2·T·H;
    the carried memory read (C q, nᵀq) and written (Σ v kᵀ, Σ k): 2·H·d + H, spread over the window; the
    convolution's TAPS per unit."""
    block = (4 * hidden + 2 * heads + 2 * seq_len + 2 * hidden // heads + 1 + TAPS) * hidden
    return 2 * hidden * embed + (layers - 1) * 2 * hidden * hidden + layers * block + hidden * vocab


# Its h is only each block's output (and its convolution reaches back 3 steps alone): the past rides in C.
CELL = Cell("mlstm", "xLSTM's mLSTM", parts=("h", "c", "n", "m", "conv"), gates=8, build=build, cost=cost,
            step=step, onnx_layer=onnx_layer, widths=state_widths, headed=True, memory=1, fold=fold, onnx_out=onnx_out,
            unvoiced="its first step normalises the input, so a voice cannot be folded into it")
