"""`charnn export --format onnx`: the one-character step as an ONNX graph, built node by node.

The graph computes exactly `model.Stepper.step` from the same folded weights (`fold_for_inference`):

    inputs   ids (B,) int64, and the state: h (L, B, H) [, c (L, B, H)]          lstm: h, c; slstm: h, c, n, m
                                                          mlstm: h, c (L, B, K·d·d), n, m (L, B, K), conv (L, B, 3H)
    outputs  logits (B, V) float32, and the new state: h_out [, c_out, ...]     same shapes as the inputs

B is a dynamic axis. Built with `onnx.helper` rather than traced, so every cell (sLSTM's stabilised
exponential gates included) is written out once, in plain ONNX operators (opset 17), and any runtime
that reads ONNX runs it: onnxruntime, onnxruntime-web (the `web` export), others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from charnn.cells import CELLS, HEADED
from charnn.cells.mlstm import TAPS
from charnn.errors import ExportError
from charnn.export.exported import Exported
from charnn.model import ModelConfig, fold_for_inference, state_widths

OPSET = 17
LN_EPS = 1e-5  # torch.nn.LayerNorm's and F.layer_norm's default


def state_names(cell: str) -> tuple[str, ...]:
    return CELLS[cell].parts  # an mLSTM's c is its matrix memory C, and conv its convolution's last inputs


def part_names(config: ModelConfig) -> tuple[str, ...]:
    """The graph's state inputs in order: the cell's, then a voiced model's voice (L, B, E)."""
    return state_names(config.cell) + (("voice",) if config.voices else ())


@dataclass
class _Graph:
    """Nodes and initializers under construction; every helper returns the name of its output."""

    onnx: Any  # the `onnx` module (imported lazily: an optional dependency)
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    count: int = 0
    constants: set[str] = field(default_factory=set)

    def op(self, kind: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        self.count += 1
        names = [f"{kind.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(kind, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; a name already given is reused (shape constants shared by every layer)."""
        if name not in self.constants:
            self.constants.add(name)
            self.inits.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, t: Tensor) -> str:
        return self.const(name, t.detach().cpu().float().numpy())

    def ints(self, name: str, values: list[int]) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def affine(self, x: str, w: str, b: str) -> str:
        return self.op("Add", self.op("MatMul", x, w), b)

    def split(self, x: str, parts: int, size: int, axis: int) -> list[str]:
        return list(self.op("Split", x, self.ints(f"split_{parts}x{size}", [size] * parts), outputs=parts, axis=axis))


def build(folded: dict[str, Tensor], config: ModelConfig) -> Any:
    """The ONNX `ModelProto` of one step of the model whose folded weights are `folded`."""
    import onnx

    g = _Graph(onnx)
    L, V = config.layers, config.vocab_size
    parts = state_names(config.cell)
    new_parts: dict[str, list[str]] = {p: [] for p in parts}
    voice = None  # a voiced model: its voice's layer-0 input projection, v @ voice_w (B, G*H), added to table0's
    if config.voices:
        v = g.op("Squeeze", g.op("Gather", "voice", g.ints("layer_0", [0]), axis=0), g.ints("axis0", [0]))  # (B, E)
        voice = g.op("MatMul", v, g.weight("voice_w", folded["voice_w"]))
    x = "ids"
    for k in range(L):
        index = g.ints(f"layer_{k}", [k])
        old = {p: g.op("Squeeze", g.op("Gather", p, index, axis=0), g.ints("axis0", [0])) for p in parts}  # (B, ·)
        new = _mlstm_layer(g, folded, k, x, old, config) if config.cell == "mlstm" else \
            _gated_layer(g, folded, k, x, old, config, voice)
        for p in parts:
            new_parts[p].append(g.op("Unsqueeze", new[p], g.ints("axis0", [0])))  # (1, B, ·)
        x = new["h"]
    if config.cell == "mlstm":  # the LayerNorm after the last block
        x = g.op("LayerNormalization", x, g.weight("final_w", folded["final_w"]), g.weight("final_b", folded["final_b"]),
                 axis=-1, epsilon=LN_EPS)
    g.op("Add", g.op("MatMul", x, g.weight("head_w", folded["head_w"])), g.weight("head_b", folded["head_b"]))
    g.nodes[-1].output[0] = "logits"
    for p in parts:
        g.nodes.append(onnx.helper.make_node("Concat", new_parts[p], [f"{p}_out"], axis=0))
    if config.voices:  # the voice rides along unchanged
        g.nodes.append(onnx.helper.make_node("Identity", ["voice"], ["voice_out"]))
    parts = part_names(config)
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    widths = state_widths(config)
    inputs = [onnx.helper.make_tensor_value_info("ids", i64, ["batch"])] + \
        [onnx.helper.make_tensor_value_info(p, f32, [L, "batch", w]) for p, w in zip(parts, widths, strict=True)]
    outputs = [onnx.helper.make_tensor_value_info("logits", f32, ["batch", V])] + \
        [onnx.helper.make_tensor_value_info(f"{p}_out", f32, [L, "batch", w]) for p, w in zip(parts, widths, strict=True)]
    graph = onnx.helper.make_graph(g.nodes, f"charnn_{config.cell}_step", inputs, outputs, g.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="charnn")
    model.ir_version = 8  # readable by onnxruntime >= 1.14 and onnxruntime-web
    onnx.checker.check_model(model)
    return model


def _gated_layer(g: _Graph, folded: dict[str, Tensor], k: int, x: str, old: dict[str, str],
                 config: ModelConfig, voice: str | None = None) -> dict[str, str]:
    """Layer k of an rnn, lstm, gru or slstm: input x (ids at layer 0, else (B, H_in)) -> the new state parts.
    `voice`: what a voiced model's voice adds to layer 0's input projection (B, G*H)."""
    H = config.hidden
    if k == 0:
        pre = g.op("Gather", g.weight("table0", folded["table0"]), x, axis=0)  # (B, G*H): x W + b, one lookup
        if voice is not None:
            pre = g.op("Add", pre, voice)
    else:
        pre = g.affine(x, g.weight(f"w_ih_{k}", folded[f"w_ih.{k}"]), g.weight(f"b_ih_{k}", folded[f"b_ih.{k}"]))
    if config.cell == "slstm":
        return _slstm_layer(g, folded, k, pre, old, config)
    if config.cell == "gru":
        return _gru_layer(g, folded, k, pre, old["h"], H)
    rec = g.op("MatMul", old["h"], g.weight(f"w_hh_{k}", folded[f"w_hh.{k}"]))
    if k:  # layer 0's table already holds both biases
        rec = g.op("Add", rec, g.weight(f"b_hh_{k}", folded[f"b_hh.{k}"]))
    gates = g.op("Add", pre, rec)  # (B, G*H)
    return _lstm_layer(g, gates, old["c"], H) if config.cell == "lstm" else {"h": g.op("Tanh", gates)}


def _log_sigmoid(g: _Graph, t: str) -> str:
    """log σ(t) = min(t, 0) - log(1 + exp(-|t|)): exact and overflow-free for any t."""
    one, zero = g.const("one", np.array(1.0, np.float32)), g.const("zero", np.array(0.0, np.float32))
    softplus_neg_abs = g.op("Log", g.op("Add", one, g.op("Exp", g.op("Neg", g.op("Abs", t)))))
    return g.op("Sub", g.op("Min", t, zero), softplus_neg_abs)


def _silu(g: _Graph, t: str) -> str:
    return g.op("Mul", t, g.op("Sigmoid", t))


def _mlstm_layer(g: _Graph, folded: dict[str, Tensor], k: int, x: str, old: dict[str, str],
                 config: ModelConfig) -> dict[str, str]:
    """Block k of an mLSTM (mlstm.step): x ids at layer 0, else (B, H); state h (B, H), c (B, K·d·d), n (B, H),
    m (B, K), conv (B, 3H) -> the new state parts."""
    H, K = config.hidden, config.heads
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
    c_act = _silu(g, g.op("Add", conv, g.weight(f"conv_b_{k}", folded[f"conv_b.{k}"])))
    qkg = g.affine(c_act, g.weight(f"qkg_w_{k}", folded[f"qkg_w.{k}"]), g.weight(f"qkg_b_{k}", folded[f"qkg_b.{k}"]))
    q, key, i_raw, f_raw = g.op("Split", qkg, g.ints(f"qkg_split_{H}_{K}", [H, H, K, K]), outputs=4, axis=1)
    v = g.op("MatMul", a, g.weight(f"v_{k}", folded[f"v.{k}"]))
    tail = g.op("Slice", past, g.ints("one_start", [1]), g.ints("taps_end", [TAPS]), g.ints("axis1", [1]))
    heads = g.ints(f"mlstm_heads_{d}", [0, K, d])  # (B, H) -> (B, K, d)
    q, key, v, n = (g.op("Reshape", t, heads) for t in (q, key, v, old["n"]))
    c = g.op("Reshape", old["c"], g.ints(f"mlstm_memory_{d}", [0, K, d, d]))  # (B, K, d, d)
    last = g.ints("axis_last", [-1])
    log_f_m = g.op("Add", _log_sigmoid(g, f_raw), old["m"])  # (B, K)
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
    y = g.op("Mul", g.op("Add", normed, skip), _silu(g, gate))
    out = g.op("MatMul", y, g.weight(f"down_{k}", folded[f"down.{k}"]))
    stream = out if k == 0 else g.op("Add", x, out)
    return {"h": stream, "c": g.op("Reshape", c_new, flat), "n": g.op("Reshape", n_new, flat), "m": m_new,
            "conv": g.op("Reshape", tail, flat)}


def _lstm_layer(g: _Graph, gates: str, c: str, H: int) -> dict[str, str]:
    i, f, cand, o = g.split(gates, 4, H, axis=1)  # PyTorch's gate order
    c_new = g.op("Add", g.op("Mul", g.op("Sigmoid", f), c), g.op("Mul", g.op("Sigmoid", i), g.op("Tanh", cand)))
    return {"h": g.op("Mul", g.op("Sigmoid", o), g.op("Tanh", c_new)), "c": c_new}


def _gru_layer(g: _Graph, folded: dict[str, Tensor], k: int, gi: str, h: str, H: int) -> dict[str, str]:
    gh = g.affine(h, g.weight(f"w_hh_{k}", folded[f"w_hh.{k}"]), g.weight(f"b_hh_{k}", folded[f"b_hh.{k}"]))
    ir, iz, in_ = g.split(gi, 3, H, axis=1)
    hr, hz, hn = g.split(gh, 3, H, axis=1)
    r = g.op("Sigmoid", g.op("Add", ir, hr))
    z = g.op("Sigmoid", g.op("Add", iz, hz))
    n = g.op("Tanh", g.op("Add", in_, g.op("Mul", r, hn)))
    return {"h": g.op("Add", n, g.op("Mul", z, g.op("Sub", h, n)))}  # n + z (h - n) = (1 - z) n + z h


def _slstm_layer(g: _Graph, folded: dict[str, Tensor], k: int, pre: str, old: dict[str, str],
                 config: ModelConfig) -> dict[str, str]:
    """sLSTM (cells.slstm_pointwise) per head: pre (B, 4H) head-major, R per head (K, d, 4d)."""
    heads, d = config.heads, config.hidden // config.heads
    one, zero = g.const("one", np.array(1.0, np.float32)), g.const("zero", np.array(0.0, np.float32))

    def to_heads(t: str, width: int) -> str:  # (B, K*width) -> (K, B, width)
        return g.op("Transpose", g.op("Reshape", t, g.ints(f"heads_{width}", [0, heads, width])), perm=[1, 0, 2])

    def back(t: str) -> str:  # (K, B, d) -> (B, H)
        return g.op("Reshape", g.op("Transpose", t, perm=[1, 0, 2]), g.ints("flat", [0, -1]))

    r_t = g.weight(f"r_t_{k}", folded[f"r_t.{k}"])
    gates = g.op("Add", to_heads(pre, 4 * d), g.op("MatMul", to_heads(old["h"], d), r_t))  # (K, B, 4d)
    i_raw, f_raw, z_raw, o_raw = g.split(gates, 4, d, axis=2)
    c, n, m = (to_heads(old[p], d) for p in ("c", "n", "m"))
    log_f_m = g.op("Add", m, _log_sigmoid(g, f_raw))
    m_new = g.op("Where", g.op("Equal", n, zero), i_raw, g.op("Max", i_raw, log_f_m))
    i = g.op("Min", g.op("Exp", g.op("Sub", i_raw, m_new)), one)
    f = g.op("Min", g.op("Exp", g.op("Sub", log_f_m, m_new)), one)
    c_new = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, g.op("Tanh", z_raw)))
    n_new = g.op("Add", g.op("Mul", f, n), i)
    h = g.op("Div", g.op("Mul", g.op("Sigmoid", o_raw), c_new), n_new)
    return {"h": back(h), "c": back(c_new), "n": back(n_new), "m": back(m_new)}


# ---- writing and checking an export ---------------------------------------------------------------

MODEL_FILE, DESCRIPTION = "model.onnx", "charnn-model.json"
CHECK_STEPS = 300  # characters of real text the check steps through
TOLERANCE = 1e-3  # largest |logit| difference accepted; measured far below (docs/export.md)


def describe(config: ModelConfig, chars: list[str], source: dict[str, Any],
             voices: dict[str, Any] | None = None) -> dict[str, Any]:
    """charnn-model.json: what a program needs to run model.onnx without charnn (and a voiced model's voices:
    `voice_table`)."""
    L, H = config.layers, config.hidden
    parts = part_names(config)
    widths = state_widths(config)
    return {
        "format": "charnn-onnx", "format_version": 1, "model": MODEL_FILE, "opset": OPSET,
        "cell": config.cell, "layers": L, "hidden": H, "vocab_size": config.vocab_size,
        **({"heads": config.heads} if config.cell in HEADED else {}),
        "inputs": [{"name": "ids", "dtype": "int64", "shape": ["batch"]}]
        + [{"name": p, "dtype": "float32", "shape": [L, "batch", w]} for p, w in zip(parts, widths, strict=True)],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", config.vocab_size]}]
        + [{"name": f"{p}_out", "dtype": "float32", "shape": [L, "batch", w]} for p, w in zip(parts, widths, strict=True)],
        "state": {"names": list(parts), "carry": {f"{p}_out": p for p in parts},
                  "initial": "zeros" + ("; voice: the voice's vector in every layer (see voices)" if config.voices else "")},
        "vocabulary": chars,
        **({"voices": voices} if voices else {}),
        "how": "Start every state tensor at zeros. Feed the prime one character id at a time (ids of shape (batch,)), "
               "passing each step's *_out back as the next step's state; the last step's logits score the first "
               "new character. With no prime, feed '\\n'. Sample an id (softmax of logits / temperature), feed it "
               "back, repeat. tokenizer.json is the same vocabulary in HuggingFace tokenizers format.",
        "sampling": {"temperature": 0.8},
        "source": source,
    }


def write(loaded: Any, folder: Path, source: dict[str, Any], text: str) -> Exported:
    """model.onnx, tokenizer.json and charnn-model.json into `folder`, checked against PyTorch on `text`."""
    import onnx

    model = loaded.model.to("cpu").eval()
    onnx.save(build(fold_for_inference(model), model.config), str(folder / MODEL_FILE))
    (folder / "tokenizer.json").write_text(loaded.tokenizer.to_json(), encoding="utf-8")
    description = describe(model.config, loaded.tokenizer.chars, source, voice_table(model))
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    ids = loaded.tokenizer.encode_array(text, drop_unknown=True)[:CHECK_STEPS]
    diff = largest_difference(folder / MODEL_FILE, model, ids)
    if not diff <= TOLERANCE:
        raise ExportError(f"the ONNX graph's logits differ from PyTorch's by {diff:.2g} (more than {TOLERANCE:g}) — "
                          "this is a bug in charnn's exporter; please report it with the run's cell and size")
    return Exported(folder, "onnx", max_diff=diff, steps_checked=len(ids))


def voice_table(model: Any) -> dict[str, Any] | None:
    """charnn-model.json's "voices": the names, the table a voice's vector is blended from, and how to use them."""
    if model.voice_table is None:
        return None
    return {"names": list(model.config.voices), "table": model.voice_table.weight.detach().cpu().tolist(),
            "how": "Row 0 of table is 'no voice', row k+1 names[k]. A voice (or a blend: weights summing to 1) is "
                   "the weighted sum of rows; the state input 'voice' holds that vector for every layer and row "
                   "(shape [layers, batch, embed]) from the first step on, and voice_out carries it unchanged."}


def session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # no warnings on stderr: charnn prints its own line
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def largest_difference(path: Path, model: Any, ids: np.ndarray) -> float:
    """max |logits| difference between the graph stepped through `ids` in onnxruntime and the PyTorch model's
    forward over the whole sequence (from zero state), a batch of two rows (the second one shifted)."""
    import torch

    if len(ids) < 2:
        return 0.0
    rows = np.stack([ids, np.roll(ids, 1)]).astype(np.int64)  # (2, T)
    # A voiced model: the first row in its first voice, the second in an equal blend of all of them.
    voice = None
    if model.voice_table is not None:
        k = len(model.config.voices)
        voice = torch.stack([model.voice_vector([0.0, 1.0] + [0.0] * (k - 1)), model.voice_vector([0.0] + [1 / k] * k)])
    start = model.init_state(2, voice=voice)
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows), start)[0].numpy()  # (2, T, V)
    run = session(path)
    state = {p: s.numpy() for p, s in zip(part_names(model.config), start, strict=True)}
    worst = 0.0
    for t in range(rows.shape[1]):
        logits, *parts = run.run(None, {"ids": rows[:, t], **state})
        state = dict(zip(state, parts, strict=True))
        worst = max(worst, float(np.abs(logits - expected[:, t]).max()))
    return worst
