"""The network: embedding -> stacked RNN/LSTM/GRU/sLSTM/mLSTM -> dropout -> linear head.

Training and priming run PyTorch's fused `nn.RNN/nn.LSTM/nn.GRU` (cuDNN on GPU); a GRU training
on CPU in fp32 runs the same weights through `cells.gru.run_stack`, whose backward is written out.
Generation steps one character at a time; on CPU oneDNN's kernel is slow for a
single (1, 1) step, so `Stepper` runs a hand-fused step with the same weights
(first-layer input projection folded into a per-character table).

State is always a tuple of (layers, B, ·) tensors, batch on axis 1: (h, c) for LSTM, (h, c, n, m) for
sLSTM (`cells.slstm.SLSTM`), (h, C, n, m, conv) for mLSTM (`cells.mlstm.MLSTM`: C (L, B, K·d·d), m (L, B, K), the
convolution's last inputs (L, B, 3H)), (h,) otherwise;
each (L, B, H) unless `state_widths` says otherwise. A voiced model's state ends with its voice (L, B, E)
(voices.py): constant, so whatever moves or copies rows carries each row's voice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from charnn import capability
from charnn.model.cells import CELLS, HEADED, NAMES
from charnn.model.cells.dropout import locked_dropout
from charnn.model.cells.gru import run_stack, use_window
from charnn.model.cells.spec import StepWeights

State = tuple[Tensor, ...]


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape: `charnn train`'s defaults (a `--time` budget sizes it, recipe/plan.py; a fine-tune takes
    its parent's). Frozen: a change is a new config (`dataclasses.replace`)."""

    vocab_size: int
    # GRU: at equal wall time on 2 CPU cores it beat every LSTM tried by 0.05 nats (benchmarks/RECIPES.md).
    cell: str = "gru"
    layers: int = 2
    hidden: int = 384
    embed: int = 64
    dropout: float = 0.1
    heads: int = 4  # sLSTM: R is block-diagonal over this many heads; mLSTM: matrix memories of H/heads each
    locked_dropout: bool = False  # dropout masks fixed for a stream over the window (cells.dropout.locked_dropout)
    voices: tuple[str, ...] = ()  # the styles the model can write in (voices.py); () for a model without voices

    def validate(self) -> list[str]:
        """Problems with this config, each phrased as 'option value — fix'."""
        problems = []
        if self.cell not in CELLS:
            problems.append(f"--cell '{self.cell}' is unknown — use one of {', '.join(NAMES)}")
        for name in ("layers", "hidden", "embed", "vocab_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} {getattr(self, name)} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"--dropout {self.dropout} must be in [0, 1)")
        if self.cell in HEADED and self.hidden >= 1 and (self.heads < 1 or self.hidden % self.heads):
            valid = [k for k in range(1, self.hidden + 1) if self.hidden % k == 0]
            near = sorted(valid, key=lambda k: (abs(k - self.heads), k))[:4]
            problems.append(f"--heads {self.heads} does not divide --hidden {self.hidden} — use one of "
                            f"{', '.join(map(str, sorted(near)))}")
        if self.voices and self.cell in CELLS and (why := CELLS[self.cell].unvoiced):
            able = ", ".join(name for name, c in CELLS.items() if c.unvoiced is None)
            problems.append(f"--voices does not work with --cell {self.cell} ({why}) — use one of {able}")
        return problems


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed)
        between = config.dropout if config.layers > 1 else 0.0
        # Dropout in the stack acts between layers only; the head gets its own dropout below.
        cell = CELLS[config.cell]
        self.rnn: nn.Module = cell.build(config.embed, config.hidden, config.layers, config.heads, between,
                                         config.locked_dropout)
        if (rnn_cls := cell.fused) is not None:
            # One-layer shapes for running the stack layer by layer with locked masks between the layers
            # (`_layer_by_layer`): on the meta device (no memory, no draw from the RNG) and in a plain
            # list, so they own no parameters of the model.
            with torch.device("meta"):
                self._one_layer = [rnn_cls(size, config.hidden, batch_first=True)
                                   for size in (config.embed, config.hidden)]
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        # Row 0 "no voice", row k voice k (voices.py), in the embedding's space. Zeros to start: a voice begins as
        # no change at all and learns what sets its text apart (and a fine-tune's new voice starts as its parent).
        self.voice_table = nn.Embedding(len(config.voices) + 1, config.embed) if config.voices else None
        if self.voice_table is not None:
            nn.init.zeros_(self.voice_table.weight)

    def init_state(self, batch: int, device: torch.device | str | None = None, voice: Tensor | None = None) -> State:
        """Zeros, and in a voiced model the voice: `voice` (E,) or (B, E) (`voice_vector`; default no voice)."""
        device = device or self.head.weight.device
        zeros = tuple(torch.zeros(self.config.layers, batch, w, device=device) for w in state_widths(self.config))
        if self.voice_table is None:
            return zeros
        vector = self.voice_vector() if voice is None else voice
        return (*zeros[:-1], vector.to(device).expand(self.config.layers, batch, -1).clone())

    def with_voice(self, state: State, voice: Tensor | None = None) -> State:
        """`state` continued in another voice (E,) (default no voice): its rows keep their context."""
        assert self.voice_table is not None, "only a voiced model has voices"
        vector = self.voice_vector() if voice is None else voice
        old = state[-1]  # (L, B, E)
        return (*state[:-1], vector.to(old.device, old.dtype).expand_as(old).clone())

    def voice_vector(self, weights: Sequence[float] | None = None) -> Tensor:
        """A blend's voice (E,): the table's rows weighted by `weights` (K+1, from `voices.weights`); no voice
        (row 0) by default. Interpolating the vectors is what blends two voices."""
        assert self.voice_table is not None, "only a voiced model has voices (voices.weights refuses the others)"
        table = self.voice_table.weight.detach()  # (K+1, E)
        if weights is None:
            return table[0].clone()
        return torch.tensor(weights, dtype=table.dtype, device=table.device) @ table

    def forward(self, ids: Tensor, state: State, voices: Tensor | None = None) -> tuple[Tensor, State]:
        """ids (B, T) int64 -> logits (B, T, V) and the state after the last step.

        A voiced model's voice is the state's last part, (L, B, E), carried unchanged (each layer holds the same
        vector; the input reads layer 0's); training gives `voices` instead, a label per position (B, T) int64."""
        x = self.embedding(ids)  # (B, T, E)
        voice: tuple[Tensor, ...] = ()
        if self.voice_table is not None:
            state, voice = state[:-1], state[-1:]
            v = self.voice_table(voices) if voices is not None else voice[0][0][:, None, :]  # (B, T or 1, E)
            x = x + v
        locked = self.config.locked_dropout and self.training and self.config.dropout > 0
        if self.config.cell == "gru" and self.training and use_window(x):
            assert isinstance(self.rnn, nn.GRU)
            out, last = run_stack(self.rnn, x, state[0], self.rnn.dropout, locked)
            parts: State = (last,)
        elif locked and self.config.layers > 1 and CELLS[self.config.cell].fused is not None:
            with capability.of(x.device).fused_rnn():
                out, parts = self._layer_by_layer(x, state)
        else:
            rnn_state = state if len(state) > 1 else state[0]
            with capability.of(x.device).fused_rnn():
                out, new_state = self.rnn(x, rnn_state)  # out (B, T, H)
            parts = tuple(new_state) if isinstance(new_state, tuple) else (new_state,)
        logits = self.head(locked_dropout(out, self.config.dropout) if locked else self.drop(out))  # (B, T, V)
        return logits, parts + voice

    def _layer_by_layer(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The fused stack's computation, one layer at a time, with a locked mask between layers.

        Each layer runs the one-layer module with this model's layer-k weights (`functional_call`),
        so the numbers equal the fused stack's when no unit is dropped.
        """
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        out, finals = x, []
        for k in range(self.config.layers):
            if k:
                out = locked_dropout(out, self.config.dropout)
            weights = {f"{name}_l0": getattr(self.rnn, f"{name}_l{k}") for name in names}
            layer_state = tuple(s[k : k + 1] for s in state)  # each (1, B, H)
            out, final = functional_call(self._one_layer[min(k, 1)], weights,
                                         (out, layer_state if len(layer_state) > 1 else layer_state[0]))
            finals.append(tuple(final) if isinstance(final, tuple) else (final,))
        return out, tuple(torch.cat(part) for part in zip(*finals, strict=True))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def state_widths(config: ModelConfig) -> tuple[int, ...]:
    """The last axis of each state part: (L, B, width) each; a voiced model's voice (E wide) comes last."""
    voice = (config.embed,) if config.voices else ()
    return CELLS[config.cell].state_widths(config.hidden, config.heads) + voice


def unpack_state(state: State) -> list[list[Tensor]]:
    """State tuple -> for each part (h, c, …) a per-layer list of (B, H) tensors: the stepping form."""
    return [list(s.unbind(0)) for s in state]


def pack_state(parts: list[list[Tensor]]) -> State:
    return tuple(torch.stack(layers) for layers in parts)


def detach_state(state: State) -> State:
    """Cut the graph between TBPTT windows; values carry over, gradients do not."""
    return tuple(s.detach() for s in state)


class Stepper:
    """One-character inference steps with the model's weights, fused by hand.

    Built once per generation (weights are snapshotted, so do not train while
    holding one); call it under `torch.inference_mode()`.
    `step(ids (B,), state) -> (logits (B, V), state)`.

    Per step and layer this is one matmul (two for GRU) and a handful of pointwise ops: layer 0's input
    projection and biases are a table lookup, and layers above multiply [x, h] by stacked weights in one go
    where the cell allows. The layers are the cell's own (`Cell.step`, charnn/model/cells/); the head is here.
    """

    def __init__(self, model: CharRNN):
        cfg = model.config
        self.cell = CELLS[cfg.cell]
        folded = fold_for_inference(model)
        self.head_w, self.head_b = folded["head_w"], folded["head_b"]  # (H, V), (V,)
        self.weights = StepWeights(folded, cfg.layers, cfg.hidden, cfg.heads, self.cell.joint)

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        parts = unpack_state(state)
        logits = self.step_layers(ids, parts)
        return logits, pack_state(parts)

    def step_layers(self, ids: Tensor, parts: list[list[Tensor]]) -> Tensor:
        """Advance the per-layer state lists (`unpack_state` form) in place by one character; return logits (B, V)."""
        return torch.addmm(self.head_b, self.cell.step(self.weights, ids, parts), self.head_w)  # (B, V)


def fold_for_inference(model: CharRNN) -> dict[str, Tensor]:
    """The weights of a one-character step, folded for it: what `Stepper` runs and every exporter writes.

    - `table0` (V, G*H): layer 0's input projection of every character plus its bias; where the recurrent bias
      only adds, it is folded in too (not a GRU's: its b_hn sits inside r * (...)).
    - per layer k: `w_ih.k` (H_in, G*H), `b_ih.k`, `w_hh.k` (H, G*H), `b_hh.k` (G*H,), transposed for x @ W,
      and whatever else the cell's `gate_weights` gives (an sLSTM's `r_t.k`, its R per head).
    - `head_w` (H, V), `head_b` (V,).
    - a voiced model: `voice_w` (E, G*H), layer 0's input weights, so a voice v (E,) adds v @ voice_w to a
      row's table0 lookup (the voice is added to the character's embedding).
    - a cell of its own layout (mLSTM): its `fold` (no w_ih/w_hh: its step is a block, not a gated matmul).
    """
    cfg, rnn, cell = model.config, model.rnn, CELLS[model.config.cell]
    head = {"head_w": model.head.weight.detach().T.contiguous(), "head_b": model.head.bias.detach().clone()}
    if cell.fold is not None:
        return {**cell.fold(rnn, model.embedding.weight), **head}
    with torch.no_grad():
        w = cell.gate_weights(rnn) if cell.gate_weights else {n: p.detach() for n, p in rnn.named_parameters()}
        folded: dict[str, Tensor] = {}
        table = model.embedding.weight.detach() @ w["weight_ih_l0"].T + w["bias_ih_l0"]  # (V, G*H)
        folded["table0"] = (table + w["bias_hh_l0"] if cell.table_has_b_hh else table).contiguous()
        if model.voice_table is not None:  # a voice's projection adds to its row's table0 lookup
            folded["voice_w"] = w["weight_ih_l0"].T.contiguous()  # (E, G*H): the voice is added to the embedding
        for k in range(cfg.layers):
            folded[f"w_ih.{k}"] = w[f"weight_ih_l{k}"].T.contiguous()
            folded[f"b_ih.{k}"] = w[f"bias_ih_l{k}"].clone()
            folded[f"w_hh.{k}"] = w[f"weight_hh_l{k}"].T.contiguous()
            folded[f"b_hh.{k}"] = w[f"bias_hh_l{k}"].clone()
        folded.update({n: t for n, t in w.items() if not n.startswith(("weight_", "bias_"))})  # a cell's own (r_t.k)
    return {**folded, **head}


def amp_dtype(model: CharRNN, device: torch.device) -> torch.dtype:
    """The dtype the recurrent kernel really produces under bf16 autocast on `device`.

    Autocast only lowers ops on its list; whether cuDNN's RNN runs in bf16 depends
    on the PyTorch/cuDNN build, so `--amp` reports what it measured, not what it asked for.
    On CPU the autocast RNN takes PyTorch's unfused path: its matrix products run in bf16
    (the 1.25x of RECIPES.md #79) and it returns float32.
    """
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16), capability.of(device).fused_rnn():
        out, _ = model.rnn(model.embedding(ids), None)
    return out.dtype
