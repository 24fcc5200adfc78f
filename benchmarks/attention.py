"""The attention bet (issue #57): one causal attention head over the recent window, on top of the GRU, against the
GRU alone, trained and scored by charnn itself.

    python benchmarks/attention.py [--work DIR] [--runs all|gru|attention] [--other PATH]

The head (SHA-RNN's single head, in small): after the top recurrent layer, query, key (width `KEY`) and value
(the hidden width) of every position; each position attends to itself and the positions before it in its
window, and to the last `WINDOW` positions of the windows before (their keys and values carried across
truncated-BPTT windows as the hidden state is, detached with it, reset with it at an epoch's turn). Its output
is added to the GRU's through a per-unit gate that starts at zero, so the model begins as the GRU and learns how
much to look back. Nothing else changes: `charnn train` runs as it does (the recipe, the schedule, the full-pass
evaluation); only the model class it builds is this one (`charnn.training.session.CharRNN`, replaced here), with
everything the GRU run's recipe chose given explicitly (size, dropout, batch, rate, warm-up, average, evaluation
spacing, precision), so that both train the same network underneath on the same schedule.

Runs, one after the other, each a whole `charnn train` process (a GRU run already in DIR is kept):
tiny-shakespeare `--time 10m` at seeds 1337 and
1338 and `--time 4m`, and `--time 4m` on a held-out text of a different kind (default: the Debian FAQ, technical
prose; `--other PATH` another), GRU first, then GRU + attention. Best validation loss from each run's
metrics.jsonl (the full pass the run scored itself by); steps and characters seen, for the cost per step.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charnn import capability
from charnn.model.cells.gru import run_stack, use_window
from charnn.model.network import CharRNN, ModelConfig, State

KEY = 128  # query/key width
WINDOW = 256  # positions of earlier windows each position may look back at


class AttentiveGRU(CharRNN):
    """A GRU CharRNN with one gated causal attention head over its recent top-layer outputs.

    State: the GRU's (L, B, H), then the memory of the last WINDOW positions, in the state's batch-second layout
    so every part slices by rows as charnn's state does: keys (WINDOW, B, KEY), values (WINDOW, B, H) and whether
    each memory slot holds a position yet (WINDOW, B, 1)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        assert config.cell == "gru" and not config.voices, "the bet is on the GRU"
        hidden = config.hidden
        self.query = nn.Linear(hidden, KEY, bias=False)
        self.key = nn.Linear(hidden, KEY, bias=False)
        self.value = nn.Linear(hidden, hidden, bias=False)
        self.mix = nn.Linear(hidden, hidden, bias=False)
        self.gate = nn.Parameter(torch.zeros(hidden))  # 0: the GRU's output unchanged at the start

    def init_state(self, batch: int, device: torch.device | str | None = None, voice: Tensor | None = None) -> State:
        (h,) = super().init_state(batch, device)
        memory = (h.new_zeros(WINDOW, batch, KEY), h.new_zeros(WINDOW, batch, self.config.hidden),
                  h.new_zeros(WINDOW, batch, 1))
        return (h, *memory)

    def forward(self, ids: Tensor, state: State, voices: Tensor | None = None) -> tuple[Tensor, State]:
        h0, keys, values, filled = state
        x = self.embedding(ids)  # (B, T, E)
        if self.training and use_window(x):
            out, last = run_stack(self.rnn, x, h0, self.rnn.dropout, False)  # type: ignore[arg-type]
        else:
            with capability.of(x.device).fused_rnn():
                out, last = self.rnn(x, h0)  # (B, T, H)
        looked, memory = self._attend(out, keys, values, filled)
        return self.head(self.drop(looked)), (last, *memory)

    def _attend(self, out: Tensor, keys: Tensor, values: Tensor, filled: Tensor) -> tuple[Tensor, State]:
        b, t, _ = out.shape
        q, k, v = self.query(out), self.key(out), self.value(out)  # (B, T, KEY), (B, T, KEY), (B, T, H)
        all_k = torch.cat([keys.transpose(0, 1).to(k.dtype), k], dim=1)  # (B, W+T, KEY)
        all_v = torch.cat([values.transpose(0, 1).to(v.dtype), v], dim=1)  # (B, W+T, H)
        causal = torch.ones(t, t, dtype=torch.bool, device=out.device).tril()  # (T, T)
        past = filled.transpose(0, 1)[:, :, 0].bool()[:, None, :].expand(b, t, WINDOW)  # (B, T, W)
        mask = torch.cat([past, causal.expand(b, t, t)], dim=2)[:, None]  # (B, 1, T, W+T)
        attended = F.scaled_dot_product_attention(q[:, None], all_k[:, None], all_v[:, None], attn_mask=mask)[:, 0]
        looked = out + self.gate * self.mix(attended)  # (B, T, H)
        ones = filled.new_ones(t, b, 1)
        memory = (all_k.transpose(0, 1)[-WINDOW:].float(), all_v.transpose(0, 1)[-WINDOW:].float(),
                  torch.cat([filled, ones])[-WINDOW:])
        return looked, memory


def best(work: Path, name: str) -> tuple[float, int, int]:
    rows = [json.loads(line) for line in (work / "checkpoints" / name / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if r.get("val_loss") is not None]
    return min(r["val_loss"] for r in vals), rows[-1]["step"], rows[-1]["tokens"]


def train(work: Path, name: str, corpus: str, budget: str, seed: int, attention: bool, size: list[str]) -> float:
    """One `charnn train` process (this script again, `--child`, so that the class replacement happens in it)."""
    cmd = [sys.executable, __file__, "--child", *(["--attention"] if attention else []), "--",
           corpus, "--name", name, "--time", budget, "--scratch", "--seed", str(seed), "--overwrite", "--quiet",
           "--checkpoints-dir", str(work / "checkpoints"), "--corpora-dir", str(work / "corpora"), *size]
    print("$", " ".join(cmd[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def chosen_size(work: Path, name: str) -> list[str]:
    """The GRU run's model and everything the recipe chose for it, as options: the attention run trains the same
    network underneath, in the same precision, on the same schedule (its own probe could read bf16's gain on the
    other side of the threshold and train in another precision)."""
    config = json.loads((work / "checkpoints" / name / "config.json").read_text())
    m, t = config["model"], config["train"]
    return ["--cell", "gru", "--layers", str(m["layers"]), "--hidden", str(m["hidden"]), "--embed", str(m["embed"]),
            "--dropout", str(m["dropout"]), "--batch-size", str(t["batch_size"]), "--lr", str(t["lr"]),
            "--warmup", str(t["warmup"]), "--ema", str(t["ema"]), "--eval-every", str(t["eval_every"]),
            "--amp" if t["amp"] else "--no-amp"]


def other_text(work: Path) -> str:
    folder = work / "debian-faq"
    member = folder / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
    if not member.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "-q", "debian-faq"], cwd=folder, check=True, capture_output=True)
        subprocess.run(["dpkg-deb", "-x", str(next(folder.glob("*.deb"))), str(folder)], check=True)
    path = work / "debian-faq.txt"
    path.write_text(gzip.decompress(member.read_bytes()).decode("utf-8"), encoding="utf-8")
    return str(path)


def child(argv: list[str], attention: bool) -> None:
    import charnn.training.session as session
    from charnn.cli import run

    if attention:
        session.CharRNN = AttentiveGRU  # type: ignore[misc]
    sys.argv = ["charnn", "train", *argv]
    run()


def main() -> None:
    if "--child" in sys.argv:
        split = sys.argv.index("--")
        child(sys.argv[split + 1:], "--attention" in sys.argv[:split])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/charnn-attention"))
    parser.add_argument("--other", default=None, help="the held-out text of another kind (default: the Debian FAQ)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    other = args.other or other_text(args.work)
    plan = [("shakespeare", "10m", 1337), ("shakespeare", "10m", 1338), ("shakespeare", "4m", 1337), (other, "4m", 1337)]
    rows = []
    for corpus, budget, seed in plan:
        label = f"{Path(corpus).stem}-{budget}-{seed}"
        done = args.work / "checkpoints" / f"gru-{label}" / "best.pt"
        wall_gru = train(args.work, f"gru-{label}", corpus, budget, seed, False, []) if not done.exists() else 0.0
        size = chosen_size(args.work, f"gru-{label}")
        wall_att = train(args.work, f"att-{label}", corpus, budget, seed, True, size)
        (g, g_steps, g_tokens), (a, a_steps, a_tokens) = best(args.work, f"gru-{label}"), best(args.work, f"att-{label}")
        rows.append((label, " ".join(size[1:]), g, a, a - g, g_steps, a_steps, g_tokens / max(1, a_tokens), wall_gru, wall_att))
        print(f"{label}: GRU {g:.4f} ({g_steps} steps) | +attention {a:.4f} ({a_steps} steps) | {a - g:+.4f}", flush=True)
    print("\n| run | size | GRU | GRU + attention | difference | GRU steps | attention steps | GRU chars / attention "
          "chars | wall s (GRU, attention) |\n|---|---|---|---|---|---|---|---|---|")
    for label, size, g, a, d, gs, as_, ratio, wg, wa in rows:
        print(f"| {label} | {size} | {g:.4f} | {a:.4f} | {d:+.4f} | {gs} | {as_} | {ratio:.2f} | {wg:.0f}, {wa:.0f} |")


if __name__ == "__main__":
    main()
