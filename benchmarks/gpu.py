"""The GPU check, in one script: the CUDA tests, then training and generation figures on the GPU.

    python benchmarks/gpu.py [--repeats 3] [--record]

1. `python -m pytest -m cuda` (tests/test_cuda.py: train, resume bit-exactly, sample, serve, inspect,
   export a CUDA-trained run and load it on the CPU, torchrun with NCCL on one GPU).
2. Training tokens/s of charnn's step against a bare cuDNN loop of the same shape, fp32 (TF32) and bf16
   autocast, and the dtype the recurrent kernel really ran in. Both sides run with TF32 on, set before
   the first baseline (`device.tune_for`, as training sets it). Rates are marginal (N vs 2N steps).
3. The engine's chars/s at 1, 64 and 256 samples.

Needs a CUDA GPU: without one it says so in one line and exits 1. Sized to finish in under 8 minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", message="TF32")

from benchmarks.common import marginal_rate, median_time, report, table  # noqa: E402
from charnn.device import tune_for  # noqa: E402
from charnn.model.network import CharRNN, ModelConfig, amp_dtype  # noqa: E402
from charnn.run import checkpoint  # noqa: E402
from charnn.run.config import TrainConfig  # noqa: E402
from charnn.sample import SampleConfig, generate  # noqa: E402
from charnn.text.tokenizer import CharTokenizer  # noqa: E402
from charnn.training.loop import train  # noqa: E402

VOCAB = 65
SHAPES = {"medium 2x512": (2, 512, 128, 128, 256, 20), "large 3x1024": (3, 1024, 128, 128, 256, 10)}


def bare(layers: int, hidden: int, embed: int, batch: int, seq: int, steps: int, amp: bool) -> None:
    dev = torch.device("cuda")
    emb, rnn = torch.nn.Embedding(VOCAB, embed).to(dev), torch.nn.LSTM(embed, hidden, layers, batch_first=True).to(dev)
    head = torch.nn.Linear(hidden, VOCAB).to(dev)
    opt = torch.optim.AdamW([*emb.parameters(), *rnn.parameters(), *head.parameters()], lr=1e-3)
    ids = torch.randint(0, VOCAB, (steps, batch, seq + 1), device=dev)  # data already on the device
    for k in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out, _ = rnn(emb(ids[k, :, :-1]))
            loss = F.cross_entropy(head(out).flatten(0, 1).float(), ids[k, :, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def ours(layers: int, hidden: int, embed: int, batch: int, seq: int, steps: int, amp: bool, ids, run_dir) -> None:
    model = CharRNN(ModelConfig(vocab_size=VOCAB, cell="lstm", layers=layers, hidden=hidden, embed=embed, dropout=0.0))
    cfg = TrainConfig(batch_size=batch, seq_len=seq, max_steps=steps, eval_every=10**9, amp=amp, ema=0.0)  # as the bare loop
    train(model, cfg, ids, ids[: batch * seq + 1], run_dir, torch.device("cuda"), show_progress=False)


def cuda_tests() -> str:
    """`pytest -m cuda`'s closing line, as a one-row table."""
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
                              cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
        last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    except subprocess.TimeoutExpired:
        last = "timed out after 300 s"
    return table(["CUDA tests (pytest -m cuda)"], [[last]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU and PyTorch sees none here — run it on a machine with one",
              file=sys.stderr)
        return 1
    tune_for(torch.device("cuda"))  # TF32 for the baselines too: every ratio compares like with like
    name = torch.cuda.get_device_name()
    tests = cuda_tests()
    work = Path(tempfile.mkdtemp(prefix="charnn-gpu-"))
    ids = np.random.default_rng(0).integers(0, VOCAB, size=20_000_000, dtype=np.uint8)
    run_dir = work / "run"
    checkpoint.create(run_dir, {"model": {}, "train": {}}, CharTokenizer([chr(32 + i) for i in range(VOCAB)]), False)
    rows = []
    for label, (layers, hidden, embed, batch, seq, steps) in SHAPES.items():
        for amp in (False, True):
            shape = (layers, hidden, embed, batch, seq)
            b = marginal_rate(lambda k, s=shape, a=amp: bare(*s, k, a), steps, batch * seq, args.repeats,
                              torch.cuda.synchronize)
            o = marginal_rate(lambda k, s=shape, a=amp: ours(*s, k, a, ids, run_dir), steps, batch * seq, args.repeats,
                              torch.cuda.synchronize)
            model = CharRNN(ModelConfig(vocab_size=VOCAB, cell="lstm", layers=layers, hidden=hidden, embed=embed)).cuda()
            dtype = amp_dtype(model, torch.device("cuda")) if amp else torch.float32
            rows.append([label, f"{batch}x{seq}", "bf16 autocast" if amp else "fp32/TF32", str(dtype).replace("torch.", ""),
                         f"{b:,.0f}", f"{o:,.0f}", f"{o / b:.3f}x"])
    training = table(["model", "batch", "precision", "LSTM ran in", "bare cuDNN (tok/s)", "charnn (tok/s)", "ratio"], rows)
    model = CharRNN(ModelConfig(vocab_size=VOCAB, cell="lstm", layers=2, hidden=512, embed=512)).cuda().eval()
    tok = CharTokenizer([chr(32 + i) for i in range(VOCAB)])
    gen_rows = []
    for n in (1, 64, 256):
        length = 500

        def run(n=n, length=length):
            for _ in generate(model, tok, "A", SampleConfig(length=length, temperature=1.0, seed=0, num_samples=n)):
                pass

        gen_rows.append([str(n), f"{n * length / median_time(run, args.repeats):,.0f}"])
    generation = table(["samples", "chars/s (2x512 LSTM, embed 512)"], gen_rows)
    stamp = f"{name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {time.strftime('%Y-%m-%d')}"
    report(f"GPU (benchmarks/gpu.py) on {stamp}", [tests, training, generation], args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
