"""The five cells side by side: training tokens/s at equal parameter count, and generation chars/s.

    python benchmarks/cells.py [--repeats 3] [--params-of 2x512] [--cells lstm,gru,rnn,slstm,mlstm] [--record]

Training: charnn's real loop (`train.train`, B=64, T=64) for lstm, gru, rnn, slstm and mlstm (4 heads),
each cell's hidden size chosen so its parameter count is the closest to the reference LSTM's
(`--params-of`, embed 128, 65 characters); slstm and mlstm also at the LSTM's own width. Marginal rates
(N vs 2N steps, medians) as in training.py, in fp32 and in bf16 autocast (what `--time` picks on a CPU
with bf16 instructions), and the bare `nn.LSTM` loop of the reference size in the same run as the baseline.
Also the slstm layer alone, forward and backward over one 64x64 window (256 units), three ways:
the step-by-step loop through `slstm_pointwise` with autograd recording every op (what the cell
started as), charnn's `slstm_scan` (head-major batched matmuls, hand-written backward), and
`nn.LSTM` of the same width; and one mLSTM block's cell both ways: the parallel form over the window
(what training runs) and its recurrent form step by step (what generation runs) under autograd.
Generation: single-stream chars/s of `charnn sample` as a whole process (marginal between two
lengths, so start-up cancels) for each cell at the same sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", message="TF32")

from benchmarks.common import marginal_rate, paired, report, table  # noqa: E402
from benchmarks.generation import VOCAB, make_run, whole_process  # noqa: E402
from benchmarks.training import bare_loop, charnn_loop  # noqa: E402
from charnn.device import tune_cpu_allocator  # noqa: E402
from charnn.model.cells.mlstm import parallel, recurrent_step  # noqa: E402
from charnn.model.cells.slstm import SLSTM, dense_recurrent, slstm_pointwise  # noqa: E402
from charnn.model.network import CharRNN, ModelConfig  # noqa: E402
from charnn.run import checkpoint  # noqa: E402
from charnn.text.tokenizer import CharTokenizer  # noqa: E402

EMBED, BATCH, SEQ = 128, 64, 64


def params(cell: str, layers: int, hidden: int) -> int:
    return CharRNN(ModelConfig(vocab_size=len(VOCAB), cell=cell, layers=layers, hidden=hidden, embed=EMBED)
                   ).num_parameters()


def matched_hidden(cell: str, layers: int, target: int) -> int:
    """The hidden size (a multiple of 8, so 4 heads divide it) whose model is closest to `target` parameters."""
    return min(range(8, 4096, 8), key=lambda h: abs(params(cell, layers, h) - target))


def eager_window(layer: SLSTM, x: torch.Tensor) -> None:
    """The slstm layer step by step, autograd recording each op: the baseline the scan replaced."""
    w, b, r = layer.weights(0)
    wx = F.linear(x, w, b).transpose(0, 1)
    rd = dense_recurrent(r)
    h = c = n = m = torch.zeros(x.size(0), layer.hidden)
    outs = []
    for t in range(wx.size(0)):
        h, c, n, m = slstm_pointwise(torch.addmm(wx[t], h, rd), c, n, m)
        outs.append(h)
    torch.stack(outs).sum().backward()


def layer_rows(repeats: int) -> list[list[str]]:
    torch.manual_seed(0)
    x = torch.randn(BATCH, SEQ, 64)
    slstm, lstm = SLSTM(64, 256, 1, 4), torch.nn.LSTM(64, 256, 1, batch_first=True)

    def scan() -> None:
        slstm(x)[0].sum().backward()

    def reference() -> None:
        lstm(x)[0].sum().backward()

    t_eager, t_lstm_a, _ = paired(lambda: eager_window(slstm, x), reference, repeats)
    t_scan, t_lstm_b, ratio = paired(scan, reference, repeats)
    t_par, t_lstm_c, par_ratio = paired(lambda: mlstm_window(parallel), reference, repeats)
    t_rec, t_lstm_d, rec_ratio = paired(lambda: mlstm_window(None), reference, repeats)
    t_lstm = (t_lstm_a + t_lstm_b + t_lstm_c + t_lstm_d) / 4
    return [["slstm, step-by-step autograd", f"{t_eager * 1e3:.0f}", f"{t_eager / t_lstm:.2f}x"],
            ["slstm, charnn's scan", f"{t_scan * 1e3:.0f}", f"{ratio:.2f}x"],
            ["mlstm cell (4 heads), recurrent form step by step", f"{t_rec * 1e3:.0f}", f"{rec_ratio:.2f}x"],
            ["mlstm cell (4 heads), parallel form", f"{t_par * 1e3:.0f}", f"{par_ratio:.2f}x"],
            ["nn.LSTM (oneDNN)", f"{t_lstm * 1e3:.0f}", "1.00x"]]


def mlstm_window(form: object) -> None:
    """The mLSTM cell (256 units, 4 heads of 64) over one 64x64 window from a fresh state, forward and backward:
    `parallel` at once, or (form None) `recurrent_step` 64 times."""
    g = torch.Generator().manual_seed(0)
    heads, d = 4, 64
    q, k, v = (torch.randn(BATCH, heads, SEQ, d, generator=g, requires_grad=True) for _ in range(3))
    i_raw, f_raw = (torch.randn(BATCH, heads, SEQ, generator=g, requires_grad=True) for _ in range(2))
    state = (torch.zeros(BATCH, heads, d, d), torch.zeros(BATCH, heads, d), torch.zeros(BATCH, heads))
    if form is parallel:
        h, _ = parallel(q, k, v, i_raw, f_raw, state)
    else:
        outs = []
        for t in range(SEQ):
            out, state = recurrent_step(q[:, :, t], k[:, :, t], v[:, :, t], i_raw[..., t], f_raw[..., t], state)
            outs.append(out)
        h = torch.stack(outs, 2)
    h.sum().backward()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--params-of", default="2x512", help="the reference LSTM, LAYERSxHIDDEN")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--cells", default="lstm,gru,rnn,slstm,mlstm", help="the cells to time (comma-separated)")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args()
    layers, ref_hidden = map(int, args.params_of.split("x"))
    target = params("lstm", layers, ref_hidden)
    cells = args.cells.split(",")
    models = [("lstm", ref_hidden)] if "lstm" in cells else []
    models += [(cell, matched_hidden(cell, layers, target)) for cell in ("gru", "rnn", "slstm", "mlstm") if cell in cells]
    models += [(cell, ref_hidden) for cell in ("slstm", "mlstm") if cell in cells]

    work = Path(tempfile.mkdtemp(prefix="charnn-cells-"))
    rng = np.random.default_rng(0)
    ids = np.memmap(work / "ids", dtype=np.uint8, mode="w+", shape=(2_000_000,))
    ids[:] = rng.integers(0, len(VOCAB), size=len(ids), dtype=np.uint8)
    ids.flush()
    tok = CharTokenizer(VOCAB)
    run_dir = work / "run"
    checkpoint.create(run_dir, {"model": {}, "train": {}}, tok, overwrite=False)
    tune_cpu_allocator()

    bare = marginal_rate(lambda k: bare_loop("lstm", layers, ref_hidden, EMBED, BATCH, SEQ, k), args.steps,
                         BATCH * SEQ, args.repeats)
    rows = []
    for cell, hidden in models:
        val = ids[: BATCH * SEQ + 1]
        rate, rate_bf16 = (marginal_rate(lambda k, c=cell, h=hidden, v=val, a=amp: charnn_loop(
            c, layers, h, EMBED, BATCH, SEQ, k, ids, v, run_dir, amp=a), args.steps, BATCH * SEQ, args.repeats)
            for amp in (False, True))
        torch.manual_seed(0)
        model = CharRNN(ModelConfig(vocab_size=len(VOCAB), cell=cell, layers=layers, hidden=hidden,
                                    embed=EMBED)).eval()
        root = work / f"gen-{cell}-{hidden}"
        make_run(model, tok, root)
        chars = whole_process(root, (args.chars // 4, args.chars), args.repeats, None)
        rows.append([f"{cell} {layers}x{hidden}", f"{params(cell, layers, hidden) / 1e6:.2f}M", f"{rate:,.0f}",
                     f"{rate / bare:.2f}x", f"{rate_bf16:,.0f}", f"{chars:,.0f}"])
    speeds = table(["model", "parameters", "training fp32 (tok/s)", "fp32 vs bare nn.LSTM loop",
                   "training bf16 autocast (tok/s)", "`charnn sample` (chars/s)"], rows)
    layer = table(["one layer, 256 units, forward + backward of a 64x64 window", "ms", "vs nn.LSTM"],
                  layer_rows(max(args.repeats, 5)))
    note = (f"Bare nn.LSTM {layers}x{ref_hidden} loop in this run: {bare:,.0f} tok/s. Training rates are marginal "
            f"(medians of {args.repeats} runs of N and 2N steps, N = {args.steps}, batch {BATCH} x seq {SEQ}); "
            f"generation is `charnn sample` as a process, marginal between {args.chars // 4} and {args.chars} "
            "characters. slstm and mlstm use 4 heads.")
    report("Cells side by side (benchmarks/cells.py)", [speeds, layer, note], args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
