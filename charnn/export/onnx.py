"""`charnn export --format onnx`: the one-character step as an ONNX graph, built node by node.

The graph computes exactly `model.Stepper.step` from the same folded weights (`fold_for_inference`):

    inputs   ids (B,) int64, and the state: h (L, B, H) [, c (L, B, H)]          lstm: h, c; slstm: h, c, n, m
                                                          mlstm: h, c (L, B, K·d·d), n, m (L, B, K), conv (L, B, 3H)
    outputs  logits (B, V) float32, and the new state: h_out [, c_out, ...]     same shapes as the inputs

B is a dynamic axis. Built with `onnx.helper` rather than traced: each cell writes its layer in plain ONNX
operators (opset 17) beside its own step (`Cell.onnx_layer`, charnn/model/cells/; sLSTM's stabilised exponential
gates included), this module the graph around them, and any runtime that reads ONNX runs it: onnxruntime,
onnxruntime-web (the `web` export), others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from charnn.errors import ExportError
from charnn.export.exported import Exported
from charnn.model.cells import CELLS, HEADED
from charnn.model.network import ModelConfig, fold_for_inference, state_widths

OPSET = 17


def state_names(cell: str) -> tuple[str, ...]:
    return CELLS[cell].parts  # an mLSTM's c is its matrix memory C, and conv its convolution's last inputs


def part_names(config: ModelConfig) -> tuple[str, ...]:
    """The graph's state inputs in order: the cell's, then a voiced model's voice (L, B, E)."""
    return state_names(config.cell) + (("voice",) if config.voices else ())


@dataclass
class _Graph:
    """Nodes and initializers under construction (cells/graph.py's `Graph`); every helper returns the name of its
    output."""

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
    cell, L, V = CELLS[config.cell], config.layers, config.vocab_size
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
        new = cell.onnx_layer(g, folded, k, x, old, config.hidden, config.heads, voice)  # the cell's (charnn/model/cells/)
        for p in parts:
            new_parts[p].append(g.op("Unsqueeze", new[p], g.ints("axis0", [0])))  # (1, B, ·)
        x = new["h"]
    if cell.onnx_out is not None:  # what follows the last layer (an mLSTM's LayerNorm)
        x = cell.onnx_out(g, folded, x)
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
