"""What a trained model does on a text: what its neurons track, how surprised it is, how far gradients reach.

`inspect` reads the text once with the model's fused step (`Stepper`), in up to 64 parallel
segments for long texts so memory stays bounded: per-unit statistics stream through a
`Correlator`, and only the first `show` characters keep their activations, probabilities and
top guesses (for the page). `gradient_reach` measures, by autograd, how much the loss at one
step depends on the hidden state k steps earlier, for the trained weights and for the same
run's untrained initialisation. `page` turns the numbers into one self-contained HTML file
(page/inspector.html: no CDN, opens offline).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charnn import capability
from charnn import page as pages
from charnn.errors import UsageError
from charnn.model.cells import CELLS
from charnn.model.network import CharRNN, Stepper, unpack_state
from charnn.text.tokenizer import CharTokenizer

FEATURES = ("inside quotes", "bracket depth", "position in line", "word start", "uppercase", "after newline")
OPENING, CLOSING = "([{", ")]}"
MAX_SEGMENTS = 64
MIN_RANKED = 100  # characters below which correlations say nothing: no "neurons worth a look"


@dataclass
class InspectConfig:
    show: int = 2000  # characters the page shows, with every unit's activation
    reach: int = 64  # gradient reach: k = 1..reach steps back
    reach_windows: int = 32  # windows averaged for the gradient reach
    top: int = 3  # units listed per feature

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.show <= 20_000:
            problems.append(f"--show {self.show} must be between 1 and 20000 (the page holds every unit per character)")
        if not 1 <= self.reach <= 1000:
            problems.append(f"--reach {self.reach} must be between 1 and 1000")
        return problems


def parts_of(cell: str) -> tuple[str, ...]:
    """The per-unit quantities shown: h for every cell, and the cell state where there is one (the cell's `shown`)."""
    return CELLS[cell].shown


def features(text: str) -> np.ndarray:
    """(N, F) float64: each feature of `FEATURES` as it stands right after reading each character."""
    out = np.zeros((len(text), len(FEATURES)))
    quoted, depth, column = False, 0, 0
    prev = "\n"
    for t, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        if ch in OPENING:
            depth += 1
        elif ch in CLOSING:
            depth = max(depth - 1, 0)
        column = 0 if ch == "\n" else column + 1
        out[t] = (quoted, depth, column, ch.isalnum() and not prev.isalnum(), ch.isupper(), ch == "\n")
        prev = ch
    return out


class Correlator:
    """Pearson correlation of every unit with every feature, accumulated batch by batch (bounded memory)."""

    def __init__(self, units: int, n_features: int):
        self.units = units
        self.n = 0
        self.sa, self.saa = np.zeros(units), np.zeros(units)
        self.sf, self.sff = np.zeros(n_features), np.zeros(n_features)
        self.saf = np.zeros((units, n_features))

    def add(self, acts: np.ndarray, feats: np.ndarray) -> None:
        """acts (n, U), feats (n, F): n more characters."""
        acts, feats = acts.astype(np.float64), feats.astype(np.float64)
        self.n += len(acts)
        self.sa += acts.sum(0)
        self.saa += (acts * acts).sum(0)
        self.sf += feats.sum(0)
        self.sff += (feats * feats).sum(0)
        self.saf += acts.T @ feats

    def result(self) -> np.ndarray:
        """(U, F) correlations; 0 where a unit or a feature never varies."""
        n = max(self.n, 1)
        cov = self.saf / n - np.outer(self.sa / n, self.sf / n)
        var_a = np.maximum(self.saa / n - (self.sa / n) ** 2, 0)
        var_f = np.maximum(self.sff / n - (self.sf / n) ** 2, 0)
        denom = np.sqrt(np.outer(var_a, var_f))
        return np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 1e-12)


def top_units(r: np.ndarray, top: int = 3) -> list[tuple[int, int, float]]:
    """For each feature, the `top` units with the largest |r|: (feature index, unit index, r), strongest first."""
    picks = []
    for f in range(r.shape[1]):
        order = np.argsort(-np.abs(r[:, f]), kind="stable")[:top]
        picks += [(f, int(u), float(r[u, f])) for u in order if r[u, f] != 0]
    return sorted(picks, key=lambda p: -abs(p[2]))


def _activations(model: CharRNN, parts: list[list[torch.Tensor]]) -> torch.Tensor:
    """The shown quantities of every layer after a step: (B, U), U = layers · len(parts_of) · H, layer-major."""
    cell = model.config.cell
    cols = []
    for k in range(model.config.layers):
        cols.append(parts[0][k])
        if cell == "lstm":
            cols.append(parts[1][k])
        elif cell == "slstm":
            cols.append(parts[1][k] / parts[2][k])
    return torch.cat(cols, dim=1)


def gradient_reach(model: CharRNN, windows: torch.Tensor, start: tuple[torch.Tensor, ...] | None = None) -> np.ndarray:
    """Mean over rows of ||∂loss_t / ∂h_{t-k}|| for k = 1..K, where windows (R, K + 2) are read from `start`.

    h is the state part that carries the past (the cell's `memory`): the hidden output, or an mLSTM's matrix
    memory C (its h reaches the next step only through C).

    The model reads characters 0..K of each window one step at a time (dropout off) and the loss
    is the cross-entropy of predicting character K + 1 after reading character K (so t = K). h is
    the hidden output of every layer, (layers, H) per row; rows are independent, so one backward
    pass of the summed loss gives each row's own gradients.
    """
    was_training = model.training
    model.eval()
    memory = CELLS[model.config.cell].memory
    rows, length = windows.shape
    steps = length - 1
    state = model.init_state(rows, windows.device) if start is None else start
    hs = []
    with torch.enable_grad(), capability.of(windows.device).eval_backward():  # cuDNN: no RNN backward in eval()
        state = tuple(s.detach().requires_grad_() for s in state)
        logits = None
        for j in range(steps):
            logits, state = model(windows[:, j : j + 1], state)
            hs.append(state[memory])  # the carried memory after reading character j: (layers, R, ·)
        assert logits is not None
        loss = F.cross_entropy(logits[:, -1], windows[:, -1], reduction="sum")
        grads = torch.autograd.grad(loss, hs[:-1])  # h_0 .. h_{K-1}: k = K .. 1
    model.train(was_training)
    norms = torch.stack([g.transpose(0, 1).reshape(rows, -1).norm(dim=1).mean() for g in grads])  # (K,), k = K..1
    return norms.flip(0).detach().cpu().numpy().astype(np.float64)  # k = 1..K


def _reach_windows(ids: np.ndarray, k: int, count: int, warm: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` evenly spaced (warm-up, window) pairs from `ids`: (R, warm) and (R, k + 2)."""
    span = warm + k + 2
    starts = np.linspace(0, len(ids) - span, num=min(count, len(ids) - span + 1)).astype(np.int64)
    return np.stack([ids[s : s + warm] for s in starts]), np.stack([ids[s + warm : s + span] for s in starts])


def reach_of(model: CharRNN, ids: np.ndarray, cfg: InspectConfig, device: torch.device) -> np.ndarray:
    """`gradient_reach` averaged over windows of `ids`, each read after a warm-up that sets a realistic state."""
    warm = min(64, max(len(ids) - cfg.reach - 2, 0))
    warm_ids, win = _reach_windows(ids, cfg.reach, cfg.reach_windows, warm)
    with torch.no_grad():
        state = model.init_state(len(win), device)
        if warm:
            model.eval()
            _, state = model(torch.from_numpy(warm_ids).long().to(device), state)
    return gradient_reach(model, torch.from_numpy(win).long().to(device), state)


@dataclass
class _Reading:
    """What one pass over the segments gives the page: the shown characters' activations (show, U), the model's
    probability of each shown character (show,) and its top-5 guesses before it (show, 5), and the summed loss."""

    shown: np.ndarray
    probs: np.ndarray
    guesses: np.ndarray
    guess_p: np.ndarray
    nll: float = 0.0
    counted: int = 0


def _read_through(model: CharRNN, grid: Tensor, feats: np.ndarray, show: int, corr: Correlator) -> _Reading:
    """Step the model over `grid` (S, L), all segments at once from a fresh state: every step's activations go to
    `corr` (in blocks of about 4096 rows), the first segment's first `show` steps are kept for the page."""
    n_seg, seg_len = grid.shape
    read = _Reading(np.zeros((show, corr.units), dtype=np.float32), np.full(show, np.nan),
                    np.zeros((show, 5), dtype=np.int64), np.zeros((show, 5)))
    stepper = Stepper(model)
    parts = unpack_state(model.init_state(n_seg, grid.device))
    batch_acts: list[np.ndarray] = []
    batch_feats: list[np.ndarray] = []
    with torch.inference_mode():
        for t in range(seg_len):
            logits = stepper.step_layers(grid[:, t], parts)  # (S, V): predicts character t + 1
            acts = _activations(model, parts).float().cpu().numpy()  # (S, U)
            batch_acts.append(acts)
            batch_feats.append(feats[:, t])
            if len(batch_acts) * n_seg >= 4096 or t == seg_len - 1:
                corr.add(np.concatenate(batch_acts), np.concatenate(batch_feats))
                batch_acts, batch_feats = [], []
            if t < show:
                read.shown[t] = acts[0]
            if t + 1 < seg_len:
                logp = torch.log_softmax(logits.float(), dim=-1)
                read.nll -= float(logp.gather(1, grid[:, t + 1 : t + 2]).sum())
                read.counted += n_seg
                if t + 1 < show:
                    read.probs[t + 1] = math.exp(float(logp[0, grid[0, t + 1]]))
                    top_p, top_i = logp[0].exp().topk(min(5, logp.size(1)))
                    read.guesses[t + 1, : len(top_i)] = top_i.cpu().numpy()
                    read.guess_p[t + 1, : len(top_p)] = top_p.cpu().numpy()
    return read


def inspect(model: CharRNN, tokenizer: CharTokenizer, text: str, cfg: InspectConfig,
            untrained: CharRNN | None = None, baseline: str = "untrained") -> dict[str, Any]:
    """The numbers behind the page (JSON-ready); characters the model never saw are skipped and counted.

    `untrained` is the model the trained one started as (its seed's weights; a fine-tuned run's parent),
    named `baseline` on the page."""
    if problems := cfg.validate():
        raise UsageError(problems[0])
    ids, unknown = tokenizer.encode_known(text)
    if len(ids) < 2:
        raise UsageError("the text has fewer than 2 characters the model knows — give a longer TEXT or --file")
    ids = np.asarray(ids, dtype=np.int64)
    chars = tokenizer.chars
    kept = "".join(chars[i] for i in ids) if unknown else text
    device = model.head.weight.device
    cell, layers, hidden = model.config.cell, model.config.layers, model.config.hidden
    n_parts = len(parts_of(cell))

    # Segments: one stream for a short text; for a long one, up to 64 read side by side from a
    # fresh state each (as training's streams start), the first one holding the shown characters.
    n_seg = max(1, min(MAX_SEGMENTS, len(ids) // max(cfg.show, 1)))
    seg_len = len(ids) // n_seg
    grid = torch.from_numpy(ids[: n_seg * seg_len].reshape(n_seg, seg_len)).to(device)  # (S, L)
    feats = features(kept[: n_seg * seg_len]).reshape(n_seg, seg_len, len(FEATURES))
    show = min(cfg.show, seg_len)
    corr = Correlator(layers * n_parts * hidden, len(FEATURES))
    was_training = model.training
    model.eval()
    read = _read_through(model, grid, feats, show, corr)
    r = corr.result()
    reach_k = max(1, min(cfg.reach, len(ids) - 2))
    reach_cfg = InspectConfig(cfg.show, reach_k, cfg.reach_windows, cfg.top)
    reach = reach_of(model, ids, reach_cfg, device)
    reach_init = reach_of(untrained.to(device), ids, reach_cfg, device) if untrained is not None else None
    model.train(was_training)

    part_names = parts_of(cell)

    def unit(u: int) -> dict[str, Any]:
        layer, rest = divmod(u, n_parts * hidden)
        part, index = divmod(rest, hidden)
        return {"layer": layer, "part": part_names[part], "unit": index}

    nats = read.nll / max(read.counted, 1)
    return {
        "cell": cell, "layers": layers, "hidden": hidden, "parts": list(part_names),
        "characters": int(n_seg * seg_len), "segments": n_seg,
        "skipped": {ch: int(n) for ch, n in unknown.items()},
        "loss": nats, "bpc": nats / math.log(2),
        "features": list(FEATURES),
        "neurons": [{"feature": FEATURES[f], **unit(u), "r": round(v, 4)} for f, u, v in top_units(r, cfg.top)]
        if n_seg * seg_len >= MIN_RANKED else [],
        "text": kept[:show],
        "activations": read.shown,  # (show, U) float32: the page quantizes it, JSON gets lists
        "surprise": [None] + [
            {"p": round(float(read.probs[t]), 5),
             "top": [[chars[int(i)], round(float(p), 5)] for i, p in zip(read.guesses[t], read.guess_p[t], strict=True)
                     if p > 0]}
            for t in range(1, show)],
        "reach": {"k": list(range(1, len(reach) + 1)), "trained": [float(v) for v in reach],
                  "untrained": None if reach_init is None else [float(v) for v in reach_init], "baseline": baseline},
    }


def to_json(numbers: dict[str, Any]) -> str:
    acts = numbers["activations"]
    return json.dumps({**numbers, "activations": np.round(acts.astype(np.float64), 4).tolist()})


def page(numbers: dict[str, Any], title: str) -> str:
    """One HTML file with the numbers inlined: activations as int8 per unit (scaled by its largest |value|)."""
    acts = numbers["activations"]  # (show, U)
    scale = np.abs(acts).max(axis=0) if len(acts) else np.zeros(acts.shape[1])
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(acts / safe * 127), -127, 127).astype(np.int8)
    data = {**numbers, "title": title, "activations": None,
            "acts": {"b64": base64.b64encode(q.tobytes()).decode("ascii"), "scale": [float(s) for s in scale],
                     "units": int(acts.shape[1])}}
    blob = json.dumps(data).replace("</", "<\\/")  # nothing in the data can close the script element
    template = pages.template("inspector")
    return template.replace("/*DATA*/null", blob).replace("{{title}}", _escape(title))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


@dataclass(frozen=True)
class Inspection:
    """`CharModel.inspect`'s result: the numbers behind the neuron page, the page itself, shown inline in a notebook."""

    numbers: dict[str, Any]
    title: str

    def html(self) -> str:
        return page(self.numbers, self.title)

    def save(self, path: str | Path) -> Path:
        """Write the page (.html) or its numbers (.json) to `path`; returns it."""
        from charnn.run import checkpoint

        target = Path(path)
        checkpoint.check_writable(target)
        checkpoint.write_text(target, to_json(self.numbers) if target.suffix == ".json" else self.html())
        return target

    def _repr_html_(self) -> str:
        # The page is a whole document with its own script: inside an iframe it runs as it does in a browser tab.
        return (f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" style="width:100%;height:720px;'
                f'border:1px solid #ccc" sandbox="allow-scripts"></iframe>')

    def __repr__(self) -> str:
        best = self.numbers["neurons"][0] if self.numbers["neurons"] else None
        strongest = f"; strongest: layer {best['layer']} {best['part']} unit {best['unit']} tracks {best['feature']} " \
                    f"(r = {best['r']:+.2f})" if best else ""
        return (f"<Inspection {self.title}: {self.numbers['characters']:,} characters, loss {self.numbers['loss']:.4f} "
                f"nats{strongest}>")
