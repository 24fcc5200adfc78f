"""The recipe: which model and schedule to train when the user gives only a time budget.

A char-LSTM's loss after a fixed time is a trade between model size and how many
characters it gets to see. `choose` measures this machine's speed with a few
timed steps of a reference model, estimates each candidate's speed from its
per-character cost, and takes the largest candidate that still sees at least
`TOKENS_PER_PARAM` characters per parameter in the budget; dropout grows with
the number of passes over the corpus (small corpora overfit). Every choice can
be overridden by an explicit option. Measurements behind these numbers are in
benchmarks/RECIPES.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charnn.model import CharRNN, ModelConfig

TOKENS_PER_PARAM = 3.0
# (layers, hidden, embed): smallest first. The big ones only win with a GPU's speed.
CANDIDATES = [(2, 256, 64), (2, 384, 64), (2, 512, 64), (3, 512, 128), (3, 768, 128), (3, 1024, 128)]
PROBE = (2, 256, 64)


@dataclass
class Recipe:
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    embed: int = 64
    dropout: float = 0.0
    batch_size: int = 64
    seq_len: int = 128
    lr: float = 3e-3
    warmup: int = 50
    probe_tokens_per_s: float | None = None  # measured speed of the reference model
    expected_tokens: float | None = None  # characters the chosen model should see in the budget

    def describe(self) -> str:
        text = (f"{self.cell} {self.layers}x{self.hidden} (embed {self.embed}), dropout {self.dropout}, "
                f"batch {self.batch_size} x seq {self.seq_len}, lr {self.lr:g}, warmup {self.warmup}")
        if self.expected_tokens:
            text += f"; ~{self.expected_tokens / 1e6:.1f}M characters expected at this machine's speed"
        return text


def default_recipe() -> Recipe:
    """The defaults without a budget: sized for a ~10-minute CPU run."""
    return Recipe(layers=2, hidden=384, embed=64, dropout=0.1)


def _params(layers: int, hidden: int, embed: int, vocab: int) -> int:
    return CharRNN(ModelConfig(vocab_size=vocab, layers=layers, hidden=hidden, embed=embed)).num_parameters()


def _cost(layers: int, hidden: int, embed: int, vocab: int) -> float:
    """Multiply-adds per character: input and recurrent gate matmuls plus the head."""
    return 4 * hidden * (embed + hidden) + (layers - 1) * 4 * hidden * 2 * hidden + hidden * vocab


def measure_speed(device: torch.device, vocab: int, batch: int = 64, seq: int = 128, steps: int = 4) -> float:
    """Training characters per second of the probe model (one warm-up step, then `steps` timed)."""
    layers, hidden, embed = PROBE
    rng_state = torch.get_rng_state()  # the probe must not shift the run's random stream
    model = CharRNN(ModelConfig(vocab_size=vocab, layers=layers, hidden=hidden, embed=embed)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, vocab, (batch, seq + 1), device=device)
    state = model.init_state(batch, device)

    def step() -> None:
        logits, _ = model(ids[:, :-1], state)
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    step()  # two warm-ups: the first pays for allocator growth and kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    torch.set_rng_state(rng_state)
    return steps * batch * seq / (time.perf_counter() - start)


def choose(budget_s: float, corpus_chars: int, vocab: int, speed: float) -> Recipe:
    """The largest candidate that sees enough characters per parameter in `budget_s`."""
    probe_cost = _cost(*PROBE, vocab)
    chosen = CANDIDATES[0]
    expected = speed * budget_s
    for layers, hidden, embed in CANDIDATES:
        tokens = speed * probe_cost / _cost(layers, hidden, embed, vocab) * budget_s
        if tokens >= TOKENS_PER_PARAM * _params(layers, hidden, embed, vocab):
            chosen, expected = (layers, hidden, embed), tokens
    layers, hidden, embed = chosen
    epochs = expected / max(corpus_chars, 1)
    dropout = 0.0 if epochs < 2 else 0.1 if epochs < 8 else 0.2
    return Recipe(layers=layers, hidden=hidden, embed=embed, dropout=dropout, lr=3e-3 if hidden <= 512 else 2e-3,
                  probe_tokens_per_s=speed, expected_tokens=expected)
