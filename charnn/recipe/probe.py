"""The probe: this machine's training and scoring speed, measured with a few timed steps of small models.

The `--time` recipe (recipe/plan.py) decides from these readings; this module only measures. A shared
machine is noisy and noise only ever slows a step down, so every reading is a median of steps timed
one by one, things compared are timed in turns, and the probe's speed is read twice, seconds apart,
keeping the faster reading (`steady_speeds`).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from charnn.model.evaluation import EVAL_STREAMS
from charnn.model.network import CharRNN, ModelConfig

# The reference model, (layers, hidden, embed): the recipe scales its speed to every candidate's.
PROBE = (2, 256, 64)
# A second, larger probe, timed beside PROBE at the run's batch and precision. A step costs more than its
# multiply-adds say, and the rest behaves as a fixed cost per layer (per time step and layer: dispatching the
# gates' elementwise work, the unfused bf16 path's casts; a GPU's kernel launches), so a bigger model runs
# faster than multiply-adds alone predict: on 2 Zen 4 cores 2x512 runs at 0.40x 2x256's speed in bf16 and
# 0.32x in fp32, where multiply-adds say 0.26x; fitted this way, 2x320, 2x384 and 3x512 come within 4% of
# their measured speeds (RECIPES.md #102).
SCALE_PROBE = (2, 512, 64)

Setting = tuple[int, bool]  # (batch, amp): one way the probe trains
Trial = tuple[tuple[int, int, int], int, bool]  # (layers, hidden, embed), batch, amp: one thing to time


def _model(device: torch.device, vocab: int, cell: str, size: tuple[int, int, int] = PROBE) -> CharRNN:
    layers, hidden, embed = size
    return CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden=hidden, embed=embed)).to(device)


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


def _time_trials(device: torch.device, vocab: int, cell: str, trials: list[Trial], seq: int,
                 steps: int, warm: int = 3) -> dict[Trial, float]:
    """Training characters per second of each trial: the median of `steps` timed steps.

    `warm` untimed steps per trial first (allocator growth, kernel selection). Each step is timed on its
    own and the median taken, so one step slowed by another process on a shared machine does not shrink
    the model the recipe picks (a mean over a block of steps would carry it). The trials take turns step
    by step: the recipe decides on their ratios, and a machine that slows down for a second or two then
    slows them alike instead of only the one being timed (measured one after the other, 32's probe once
    fell below 75% of 64's on a machine where it runs at 0.83-0.88x).
    """
    rng_state = torch.get_rng_state()  # the probe must not shift the run's random stream
    models = {size: _model(device, vocab, cell, size) for size in dict.fromkeys(size for size, _, _ in trials)}
    opts = {size: torch.optim.AdamW(model.parameters(), lr=1e-3) for size, model in models.items()}
    # per (size, batch): ids (B, seq+1) and the zero state
    inputs = {(size, b): (torch.randint(0, vocab, (b, seq + 1), device=device), models[size].init_state(b, device))
              for size, b, _ in trials}

    def step(trial: Trial) -> float:
        size, batch, amp = trial
        model, (ids, state) = models[size], inputs[(size, batch)]
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):  # as train/loop.py's step
            logits, _ = model(ids[:, :-1], state)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        opts[size].zero_grad()
        loss.backward()
        opts[size].step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for trial in trials:
        for _ in range(warm):
            step(trial)
    times: dict[Trial, list[float]] = {trial: [] for trial in trials}
    for _ in range(steps):
        for trial in trials:
            times[trial].append(step(trial))
    torch.set_rng_state(rng_state)
    return {trial: trial[1] * seq / _median(t) for trial, t in times.items()}


def measure_speeds(device: torch.device, vocab: int, cell: str = "gru", batches: tuple[int, ...] = (64,),
                   seq: int = 64, steps: int = 7, amps: tuple[bool, ...] = (False,),
                   size: tuple[int, int, int] = PROBE, warm: int = 3) -> dict[Setting, float]:
    """Training characters per second of the probe model of `cell` (or of `size`: layers, hidden, embed) at each
    batch size and precision (fp32, or bf16 autocast where `amps` holds True), timed in turns (`_time_trials`)."""
    trials = [(size, b, amp) for b in batches for amp in amps]
    return {(b, amp): v for (_, b, amp), v in _time_trials(device, vocab, cell, trials, seq, steps, warm).items()}


def measure_scale(device: torch.device, vocab: int, cell: str = "gru", batch: int = 64, amp: bool = False,
                  seq: int = 64, steps: int = 5) -> tuple[float, float]:
    """SCALE_PROBE's training speed over PROBE's at one batch and precision, the two timed in turns: what
    `recipe.per_layer_cost` fits this machine's cost of a bigger model from. Also returns PROBE's speed
    itself: a second reading of a setting `measure_speeds` timed (`steady_speeds`)."""
    speeds = _time_trials(device, vocab, cell, [(PROBE, batch, amp), (SCALE_PROBE, batch, amp)], seq, steps)
    probe = speeds[(PROBE, batch, amp)]
    return speeds[(SCALE_PROBE, batch, amp)] / probe, probe


def steady_speeds(speeds: dict[int, float], again: float | None) -> dict[int, float]:
    """The probe's speed at each batch, `speeds` (timed in turns), raised to the faster of two readings.

    `again` is a second reading at the largest batch, taken seconds after the first (`measure_scale`'s).
    Other work on the machine only ever slows a step, and a slow spell as long as the few seconds of
    `measure_speeds` moves every reading in it: a 10-minute run once read 28,160 chars/s where every
    other run on that machine read 32,700-39,400 and then trained at the usual speed, and the recipe
    chose a smaller model that lost 0.006 nats (RECIPES.md #119). The ratios between the batches come
    from the turns and stay as they were.
    """
    largest = max(speeds)
    if again is None or again <= speeds[largest]:
        return dict(speeds)
    return {b: v * again / speeds[largest] for b, v in speeds.items()}


def measure_eval_speed(device: torch.device, vocab: int, cell: str = "gru", seq: int = 64, steps: int = 7) -> float:
    """Characters per second the probe model scores in evaluation (`evaluation.evaluate`'s layout: EVAL_STREAMS
    streams, no gradients, state carried): the median of timed windows after two untimed ones."""
    rng_state = torch.get_rng_state()
    model = _model(device, vocab, cell).eval()
    ids = torch.randint(0, vocab, (EVAL_STREAMS, seq), device=device)  # (S, T)
    times = []
    with torch.inference_mode():
        state = model.init_state(EVAL_STREAMS, device)
        for i in range(steps + 2):
            start = time.perf_counter()
            logits, state = model(ids, state)
            F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="sum")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            if i >= 2:  # the first two grow the allocator and pick kernels
                times.append(elapsed)
    torch.set_rng_state(rng_state)
    return EVAL_STREAMS * seq / _median(times)
