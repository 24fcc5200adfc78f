"""The GRU window (charnn/model/cells/gru.py) against `nn.GRU`: one full training step on CPU, timed in turns.

    python benchmarks/gru_window.py [--repeats 9] [--record]

A step is what `train.py` runs: the model's forward in training mode over a (B, 64) window,
cross-entropy, backward, gradient clipping and AdamW. Three ways, same model and data:
the window in fp32 (what charnn trains with on CPU in fp32), `nn.GRU` in fp32 (the same step with
the window switched off: the baseline) and `nn.GRU` under bf16 autocast (what the recipe weighs
the fp32 step against). Times are medians over `--repeats` alternating turns after a warm-up;
ratios are medians of the per-turn ratios.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", message="TF32")

from benchmarks.common import paired, report, table  # noqa: E402
from charnn.device import tune_cpu_allocator  # noqa: E402
from charnn.model.network import CharRNN, ModelConfig  # noqa: E402

VOCAB, SEQ = 65, 64
# (layers, hidden, batch): the sizes the `--time` recipe picks between on 2 CPU cores.
SIZES = [(2, 256, 32), (2, 320, 32), (2, 384, 32), (2, 384, 64), (2, 512, 64)]


def training_step(layers: int, hidden: int, batch: int, window: bool, bf16: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=VOCAB, cell="gru", layers=layers, hidden=hidden, embed=64)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (batch, SEQ + 1))
    state = model.init_state(batch)

    def step() -> None:
        switch = nullcontext() if window else mock.patch("charnn.model.network.use_window", return_value=False)
        with switch, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(ids[:, :-1], state)
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    tune_cpu_allocator()
    rows = []
    for layers, hidden, batch in SIZES:
        window = training_step(layers, hidden, batch, window=True, bf16=False)
        t_win, t_gru, vs_gru = paired(window, training_step(layers, hidden, batch, window=False, bf16=False),
                                      args.repeats)
        _, t_bf16, vs_bf16 = paired(window, training_step(layers, hidden, batch, window=False, bf16=True),
                                    args.repeats)
        tokens = batch * SEQ
        rows.append([f"{layers}x{hidden}, batch {batch}", f"{tokens / t_win:,.0f}", f"{tokens / t_gru:,.0f}",
                     f"{tokens / t_bf16:,.0f}", f"**{1 / vs_gru:.2f}x**", f"{1 / vs_bf16:.2f}x"])
        print(rows[-1], flush=True)
    header = ["GRU, seq 64", "window fp32 (chars/s)", "nn.GRU fp32", "nn.GRU bf16 autocast",
              "window / nn.GRU fp32", "window / nn.GRU bf16"]
    note = (f"One training step (forward, cross-entropy, backward, clipping, AdamW), medians of {args.repeats} "
            "alternating turns after a warm-up; ratios are medians of per-turn ratios (above 1: the window is faster).")
    report("The GRU window (benchmarks/gru_window.py)", [table(header, rows), note], args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
