"""The recipe: which model and schedule to train when the user gives only a time budget.

A char-LSTM's loss after a fixed time is a trade between model size and how many
characters it gets to see. `choose` takes this machine's speed as the probe
(probe.py) measured it on a reference model, estimates each candidate's speed from its
per-character cost (multiply-adds, plus a per-layer cost fitted from a second,
larger probe model), and takes the largest candidate that still trains on at least
`TOKENS_PER_PARAM` characters per parameter in the budget, once its validation
passes have taken their time; dropout grows with
the number of passes over the corpus (small corpora overfit); the run trains in
bf16 autocast where the probe finds that clearly faster. Every choice can
be overridden by an explicit option. Measurements behind these numbers are in
benchmarks/RECIPES.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from charnn.model.cells import CELLS
from charnn.model.network import CharRNN, ModelConfig
from charnn.recipe.probe import PROBE, SCALE_PROBE, Setting
from charnn.run.config import TrainConfig

# Characters per parameter the chosen model must be expected to train on: speed x budget by the fitted cost,
# less what the validation passes before the final one take. The estimates (replayed from each run's probe
# readings) against the outcomes on 2 CPU cores in bf16 (RECIPES.md #103-120): 2x512 at 10m, estimated at
# 3.2-3.6, beat 2x384 by 0.002-0.008; 2x384 at 4m, estimated at 2.5-3.0, tied 2x320 on tiny-shakespeare and
# lost to it on python-stdlib (2.1: -0.024, 2.6: -0.006), where a pass over its 1.1M validation characters
# takes 30 s of the 240. On a 2-core Xeon training in fp32 through the GRU window (RECIPES.md #165-167, #173-174), 2x384
# at 4m, estimated at 2.65-3.06, beat 2x320 by 0.004-0.015 (1.4324-1.4376 against 1.4416-1.4474): the
# threshold sits between python-stdlib's loss at 2.6 and those wins.
TOKENS_PER_PARAM = 2.65
# (layers, hidden, embed): smallest first. The big ones only win with a GPU's speed.
CANDIDATES = [(2, 256, 64), (2, 320, 64), (2, 384, 64), (2, 512, 64), (3, 512, 128), (3, 768, 128), (3, 1024, 128)]
HEADS = ModelConfig.heads  # slstm's and mlstm's default --heads: its R is block-diagonal, so R h costs 1/HEADS of a dense one
# Batch sizes the recipe weighs, largest first. Half the streams give twice the updates for the same
# characters (-0.024 nats at 4m on 2 CPU cores, RECIPES.md #35, #38-40), which is worth it while the smaller batch
# keeps enough of the speed. Fewer characters cost less than that: at 4m about 0.04 nats per e-fold (#57-59,
# #72, #76, #80-82), so 32 breaks even near 0.55x the speed of 64. It runs at 0.82-0.86x in fp32 and 0.75-0.77x in
# bf16 on 2 CPU cores (#84): the threshold sits below both (at 0.75 a noisy probe once picked 64 and lost 0.02,
# #83); on a GPU half the streams take nearly as long a step (about 0.5x), so 64.
# Measured the other way at 10m (RECIPES.md #41-43): with ~1,600+ steps at 64 the updates are no longer
# what is short, and 64's extra speed wins. The recipe expects 1,130-1,510 steps at 64 for a 4m run in bf16
# and 1,790-2,520 for a 10m run (probe 33-40k chars/s, scale 0.37-0.43), so the smaller batch only for runs
# of fewer steps than this, between the two.
BATCHES = (64, 32)
SMALL_BATCH_SPEED = 0.65
SMALL_BATCH_MAX_STEPS = 1650
# The most of a budget that validation passes before the final one may take. A pass is a full pass
# over the validation split, so on a large corpus it is costly: python-stdlib's 1.1M characters take
# 17-25 s on 2 CPU cores: a 4-minute batch-32 run spent half its time evaluating at 200 steps between
# passes (RECIPES.md #54) and a fifth at 400 (#66). Where the usual spacing would cost more than this
# share, the passes are spread further apart (#65-67: +0.023 nats in the same hour).
EVAL_SHARE = 0.15
# Train in bf16 autocast where the probe runs it at least this much faster than fp32. It costs a little per
# step (1,800 steps at batch 32: 1.4520 against 1.4496, RECIPES.md #78) and buys more steps in the same
# time (1.25x on 2 Zen 4 cores with native bf16, #78-79; -0.006 at 4 minutes, #80-91); a CPU without bf16
# instructions runs it slower, so the probe decides on every machine.
AMP_MIN_GAIN = 1.15
# A small text (issue #41): where the budget means MANY_PASSES or more over the training text, validation
# turns after 8-15 of them whatever the model (RECIPES.md, "Small texts": dropout 0.5, a smaller model, a
# schedule planned for fewer passes all ended worse). So such a run trains on the smaller batch (twice the
# updates per pass) and is scored about once a pass, so that patience (schedule.TIME_PATIENCE passes without
# a new best) stops it a few passes after its turn, on its best weights, instead of thousands of steps after.
MANY_PASSES = 15
# Such a text's model is sized by passes, not by characters per parameter: its run ends at the validation turn
# whatever the budget, so what counts is that the model reaches its turn before the budget ends, at its own speed
# measured at its size, batch and precision (the small probe's reading scaled over-promised a 2x384 by 1.7-1.9x,
# RECIPES.md #52). Larger models with dropout 0.3 turn earlier in passes and lower (a 290K-character text at 10
# minutes: 2x512 turned after 7 passes at 1.3487, the characters-per-parameter rule's 2x384 after 11-12 at
# 1.3524-1.3574), so the turn is asked at TURN_PASSES, the near end of #41's 8-15 (15 kept 2x512 out of that text),
# up to the sizes ever measured on small texts: the two-layer candidates.
TURN_PASSES = 8
MIN_EVAL_EVERY = 50  # steps: a pass of a tiny text is a few steps; a validation pass and a checkpoint cost more


@dataclass
class Recipe:
    """What the recipe chose for the fields of `ModelConfig` and `TrainConfig` it may choose (`CHOSEN`), and its
    readings. Unset, each field is the configs' own default: those are the product's defaults, in one place."""

    cell: str = ModelConfig.cell
    layers: int = ModelConfig.layers
    hidden: int = ModelConfig.hidden
    embed: int = ModelConfig.embed
    dropout: float = ModelConfig.dropout
    batch_size: int = TrainConfig.batch_size
    seq_len: int = TrainConfig.seq_len
    lr: float = TrainConfig.lr
    warmup: int = TrainConfig.warmup
    ema: float = TrainConfig.ema
    # Steps between full validation passes (and checkpoints): the same characters between passes at any
    # batch, so a smaller batch does not mean more passes (at 200 steps batch 32 spent half a 4-minute
    # python-stdlib budget evaluating, RECIPES.md #54); further apart where passes would take more
    # than EVAL_SHARE of the budget.
    eval_every: int = TrainConfig.eval_every
    amp: bool = TrainConfig.amp  # bf16 autocast for the training steps (evaluation stays fp32): where the probe finds it faster
    probe_tokens_per_s: float | None = None  # measured speed of the reference model
    probe_eval_tokens_per_s: float | None = None  # ... and its speed scoring validation text
    probe_amp_gain: float | None = None  # bf16 autocast's speed / fp32's in the probe (None: not measured)
    probe_scale: float | None = None  # SCALE_PROBE's speed / PROBE's (None: not measured; multiply-adds alone)
    # The probe's speed at the largest batch as read a second time, beside SCALE_PROBE; the faster of the
    # two readings sets the speeds (probe.steady_speeds). None: not read again.
    probe_second_reading: float | None = None
    # Where the readings were kept from an earlier probe on this machine (recipe/readings.py): when that probe ran,
    # and the quick check's speed over the kept one. None: probed afresh for this run.
    probe_kept: str | None = None
    probe_check: float | None = None
    # A text passed over many times: the chosen size's own speed, measured at its batch and precision (`by_passes`).
    measured_tokens_per_s: float | None = None
    eval_pass_s: float | None = None  # the chosen model's expected time for one validation pass
    expected_tokens: float | None = None  # characters the chosen model should see in the budget
    expected_passes: float | None = None  # ... as passes over the training text

    def describe(self) -> str:
        text = (f"{self.cell} {self.layers}x{self.hidden} (embed {self.embed}), dropout {self.dropout}, "
                f"batch {self.batch_size} x seq {self.seq_len}, lr {self.lr:g}, warmup {self.warmup}"
                + (f", ema {self.ema:g}" if self.ema else "") + f", eval every {self.eval_every}"
                + (", bf16 autocast" if self.amp else ""))
        if self.expected_tokens:
            text += f"; ~{self.expected_tokens / 1e6:.1f}M characters expected at this machine's speed"
            if passes := self.expected_passes:
                text += f" ({passes:.0f} passes over the text)" if passes >= 10 else f" ({passes:.1f} passes over the text)"
        return text


def default_recipe() -> Recipe:
    """The defaults without a budget: sized for a ~10-minute CPU run."""
    return Recipe()


# Fine-tuning (`--from RUN`): a 4-minute tiny-shakespeare parent adapted to 200 KB of verse for 1 minute
# (RECIPES.md #185-199): peak rates 1e-3..3e-3 end within noise of each other (1.766-1.778) and 3e-4 well
# behind (1.839): 2e-3, the middle. Warm-up 0/20/100 and batch 32/64 within noise; the weight average
# helps (no average: 1.781 against 1.766); dropout 0.2 does not (1.786). Passes every 100 steps without a
# budget (a fine-tune is short); with --time the recipe spaces them as for any run.
# From the base (GRU 3x512) on doc-debian (197 KB, not a benchmark text), 1 minute, bf16: 2e-3 1.1990, 3e-3 1.2004,
# 1e-3 1.2365, so 2e-3 stays. What mattered was the precision: the 2x256 probe read bf16 at 1.04-1.20x and picked
# fp32 in 4 of 6 runs (87-102 steps, 1.2246-1.2654); timing the parent itself reads 1.44-1.63x (125-140 steps,
# 1.194-1.200). So a fine-tune's probe times its parent at fine-tuning's batch (sizing._plan). RECIPES.md.
FINE_TUNE = Recipe(lr=2e-3, warmup=20, batch_size=32, ema=0.99, eval_every=100)


def fine_tune_recipe(model: ModelConfig) -> Recipe:
    """The defaults for fine-tuning `model` (a parent's): its size, the fine-tuning schedule."""
    return replace(FINE_TUNE, cell=model.cell, layers=model.layers, hidden=model.hidden, embed=model.embed,
                   dropout=model.dropout)


CHOSEN = ("cell", "layers", "hidden", "embed", "dropout", "batch_size", "seq_len", "lr", "warmup", "ema",
          "eval_every", "amp")  # Recipe's
MODEL_FIELDS = ("cell", "layers", "hidden", "embed", "dropout")


@dataclass(frozen=True)
class Request:
    """What the user set of the recipe's choices: each field a value, or None (the `--time` recipe or the default
    decides). `training.request.TrainRequest` is this and the rest of a training request."""

    cell: str | None = None
    layers: int | None = None
    hidden: int | None = None
    embed: int | None = None
    dropout: float | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    lr: float | None = None
    warmup: int | None = None
    ema: float | None = None
    eval_every: int | None = None
    amp: bool | None = None
    heads: int | None = None  # slstm's; not a recipe choice
    locked_dropout: bool | None = None  # not a recipe choice (RECIPES.md)

    def given(self) -> frozenset[str]:
        return frozenset(name for name in CHOSEN if getattr(self, name) is not None)


def configs(request: Request, budgeted: bool, base: Recipe | None = None,
            **train: Any) -> tuple[ModelConfig, TrainConfig, frozenset[str]]:
    """The user's values over the defaults, as configs, and the fields a `--time` budget will choose.

    `train` holds the TrainConfig fields the recipe never touches (limits, clip, seed, ...). The
    cell is the user's or the default; only a budget sizes the rest (`apply`), and never a field
    the user set. `base` replaces the defaults (`fine_tune_recipe`).
    """
    values = {**vars(base or default_recipe()), **{k: getattr(request, k) for k in request.given()}}
    model_cfg = ModelConfig(vocab_size=1, **{k: values[k] for k in MODEL_FIELDS},
                            heads=HEADS if request.heads is None else request.heads,
                            locked_dropout=bool(request.locked_dropout))
    cfg = TrainConfig(**{k: values[k] for k in CHOSEN if k not in MODEL_FIELDS}, **train)
    auto = frozenset(CHOSEN) - request.given() - {"cell"} if budgeted else frozenset()
    return model_cfg, cfg, auto


def apply(recipe: Recipe, auto: frozenset[str], model_cfg: ModelConfig,
          cfg: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """The configs with the recipe's choice for the fields in `auto` (those the user left unset), and the
    expected time of a validation pass as the loop's estimate until one is timed."""
    model = {name: getattr(recipe, name) for name in auto if name in MODEL_FIELDS}
    train = {name: getattr(recipe, name) for name in auto if name not in MODEL_FIELDS}
    return replace(model_cfg, **model), replace(cfg, **train, eval_pass_estimate=recipe.eval_pass_s or 0.0)


def set_by_user(auto: frozenset[str]) -> list[str]:
    """The recipe's fields the user set (they win over its choice), sorted; the cell is never chosen."""
    return sorted(set(CHOSEN) - {"cell"} - auto)


def record(recipe: Recipe, auto: frozenset[str]) -> dict[str, Any]:
    """What config.json stores: the recipe's own choice and readings, and which of its fields the user's
    options replaced (the run's `model` and `train` sections hold what really trained)."""
    return {**asdict(recipe), "set_by_you": set_by_user(auto)}


def announcement(recipe: Recipe, auto: frozenset[str], model_cfg: ModelConfig, cfg: TrainConfig,
                 processes: int = 1, fine_tune: bool = False) -> str:
    """The line printed at the start: the budget, the measured speed, and what will train (set by whom: a fine-tune's
    architecture and dropout are its parent's, not the user's)."""
    explicit = set_by_user(auto)
    inherited = [name for name in explicit if fine_tune and name in MODEL_FIELDS]
    yours = [name for name in explicit if name not in inherited]
    parts = []
    if inherited:
        parts.append(f"the parent's: {', '.join(inherited)}")
    if yours:
        parts.append(f"set by you: {', '.join(yours)}")
    whose = "; ".join(parts)
    effective = Recipe(**{k: getattr(model_cfg if k in MODEL_FIELDS else cfg, k) for k in CHOSEN},
                       expected_tokens=None if explicit else recipe.expected_tokens)
    speed = recipe.probe_tokens_per_s or 0.0
    source = (f"kept probe reading of {recipe.probe_kept.replace('T', ' ')}, checked at {recipe.probe_check:.2f}x; "
              "--reprobe to measure again" if recipe.probe_kept and recipe.probe_check else "probe")
    measured = (f"; sized to pass over the text {TURN_PASSES} times at {recipe.measured_tokens_per_s:,.0f} chars/s, "
                "its speed timed at this size" if recipe.measured_tokens_per_s else "")
    return (f"recipe for {cfg.time_budget or 0:g}s at {speed:,.0f} chars/s ({source}"
            + (f" x {processes} processes" if processes > 1 else "") + f"): {effective.describe()}"
            + (f" ({whose})" if whose else "") + measured)


def _params(cell: str, layers: int, hidden: int, embed: int, vocab: int) -> int:
    cfg = ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden=hidden, embed=embed)
    return CharRNN(cfg).num_parameters()


def as_probe_speed(speed: float, cell: str, size: tuple[int, int, int], vocab: int) -> float:
    """A speed measured on a model of `size` as the probe model's would be (multiply-adds alone): what `choose`
    scales back to that size."""
    return speed * _cost(cell, *size, vocab) / _cost(cell, *PROBE, vocab)


def _cost(cell: str, layers: int, hidden: int, embed: int, vocab: int, per_layer: float = 0.0) -> float:
    """Work per character, in multiply-adds: input and recurrent gate matmuls plus the head, and `per_layer`
    (this machine's, from `per_layer_cost`) for each layer."""
    return CELLS[cell].cost(layers, hidden, embed, vocab, HEADS, Recipe.seq_len) + per_layer * layers


# The most of SCALE_PROBE's speed relative to PROBE's that `per_layer_cost` takes at face value: at 1.0 the
# width would cost nothing at all (a GPU far from its limits comes close; a noisy reading can pass it).
MAX_SCALE = 0.95


def per_layer_cost(cell: str, vocab: int, scale: float) -> float:
    """The per-layer cost (in multiply-adds per character) that explains `scale`, SCALE_PROBE's measured speed
    over PROBE's. Both have PROBE's layers, so with t = multiply-adds + per_layer * layers for each,
    scale = t_probe / t_scale_probe solves for per_layer; a scale below what multiply-adds alone give is noise
    (0), one above MAX_SCALE is taken as MAX_SCALE."""
    small, big = _cost(cell, *PROBE, vocab), _cost(cell, *SCALE_PROBE, vocab)
    scale = min(max(scale, small / big), MAX_SCALE)
    return (scale * big - small) / (PROBE[0] * (1 - scale))


def amp_gain(speeds: dict[Setting, float]) -> float | None:
    """How many times as fast bf16 autocast ran as fp32 in the probe: the geometric mean over the batches
    it measured both ways (None: measured one way only).

    A mean, not every batch: on 2 Zen 4 cores the gain is 1.34-1.39x at batch 64 but 1.19-1.27x at 32
    (RECIPES.md #84), and one noisy reading of the smaller one below AMP_MIN_GAIN flipped a run to fp32 (#87).
    """
    ratios = [v / speeds[(b, False)] for (b, amp), v in speeds.items() if amp and (b, False) in speeds]
    return math.prod(ratios) ** (1 / len(ratios)) if ratios else None


def pick_amp(speeds: dict[Setting, float]) -> bool:
    """Whether to train in bf16 autocast: only where the probe ran it `AMP_MIN_GAIN` times as fast as fp32."""
    gain = amp_gain(speeds)
    return gain is not None and gain >= AMP_MIN_GAIN


def pick_batch(speeds: dict[int, float], steps_at_largest: float = 0.0, passes: float = 0.0) -> int:
    """The batch to train with, from the probe's speed at each of `BATCHES`: the smallest that keeps
    `SMALL_BATCH_SPEED` of the largest one's speed, in a run that would make fewer than
    `SMALL_BATCH_MAX_STEPS` steps with the largest or pass over its text `MANY_PASSES` times or more."""
    largest = max(speeds)
    if steps_at_largest >= SMALL_BATCH_MAX_STEPS and passes < MANY_PASSES:
        return largest
    return min(b for b, v in speeds.items() if v >= SMALL_BATCH_SPEED * speeds[largest])


def plan(budget_s: float, corpus_chars: int, vocab: int, speeds: dict[int, float], cell: str = "gru",
         val_chars: int = 0, eval_speed: float | None = None, amp: bool = False,
         scale: float | None = None, sizes: list[tuple[int, int, int]] | None = None) -> Recipe:
    """`choose` at the batch `pick_batch` takes, given the probe's speed at each batch size (in the precision
    `amp` says the run will train in) and `measure_scale`'s reading (at the largest batch)."""
    largest = max(speeds)
    at_largest = choose(budget_s, corpus_chars, vocab, speeds[largest], cell, largest, val_chars, eval_speed, amp,
                        scale, sizes)
    batch = pick_batch(speeds, (at_largest.expected_tokens or 0.0) / (largest * Recipe.seq_len),
                       at_largest.expected_passes or 0.0)
    if batch == largest:
        return at_largest
    return choose(budget_s, corpus_chars, vocab, speeds[batch], cell, batch, val_chars, eval_speed, amp, scale, sizes)


def by_passes(budget_s: float, corpus_chars: int, speed_of: Callable[[tuple[int, int, int]], float]
              ) -> tuple[tuple[int, int, int], float]:
    """For a text the budget passes over `MANY_PASSES` times or more: the largest two-layer candidate whose
    measured speed (`speed_of(size)`, asked largest first, only as far as needed) reaches `TURN_PASSES` passes
    over `corpus_chars` in the budget less `EVAL_SHARE`, else the smallest; (size, its speed)."""
    sizes = [size for size in CANDIDATES if size[0] == 2]
    for size in reversed(sizes):
        speed = speed_of(size)
        if speed * budget_s * (1 - EVAL_SHARE) >= TURN_PASSES * corpus_chars:
            return size, speed
    return sizes[0], speed


def spaced_evaluations(steps: float, batch: int, budget_s: float, pass_s: float) -> int:
    """Steps between validation passes for a run of about `steps` steps whose passes take `pass_s` each.

    The usual spacing keeps the characters between passes the same at any batch (200 steps at 64).
    Where the passes it gives before the final one would take more than EVAL_SHARE of the budget, they
    are spread evenly over the run instead, as many as fit in that share (none: only the final pass).
    """
    usual = round(Recipe.eval_every * Recipe.batch_size / batch)
    if pass_s <= 0 or steps <= 0:
        return usual
    fit = math.floor(EVAL_SHARE * budget_s / pass_s)  # passes before the final one that the share allows
    if steps // usual <= fit:
        return usual
    return max(usual, math.ceil(steps / (fit + 1)))


def choose(budget_s: float, corpus_chars: int, vocab: int, speed: float, cell: str = "gru",
           batch: int = Recipe.batch_size, val_chars: int = 0, eval_speed: float | None = None,
           amp: bool = False, scale: float | None = None, sizes: list[tuple[int, int, int]] | None = None) -> Recipe:
    """The largest candidate that trains on enough characters per parameter in `budget_s`, counting the time
    its validation passes before the final one take.

    `speed` is the probe's measured characters/s for `cell` at `batch` streams (in the precision `amp`
    says the run trains in); a candidate's speed is scaled by its cost per character relative to the
    probe's (`_cost`, with the per-layer cost that `scale`, SCALE_PROBE's speed over PROBE's, gives;
    without it, multiply-adds alone). `eval_speed`
    (the probe's, scoring text) and `val_chars` (the validation split) set the spacing of the
    validation passes (`spaced_evaluations`); without them the usual spacing. `sizes` (layers, hidden,
    embed) replaces `CANDIDATES` (a fine-tune's one size: the parent's).
    """
    per_layer = per_layer_cost(cell, vocab, scale) if scale is not None else 0.0
    probe_cost = _cost(cell, *PROBE, vocab, per_layer)

    def schedule(size: tuple[int, int, int]) -> tuple[float, float, int, float]:
        """A candidate's characters in the budget, seconds per validation pass, steps between passes, and
        the characters it trains on once the passes before the final one have taken their time."""
        tokens = speed * probe_cost / _cost(cell, *size, vocab, per_layer) * budget_s
        # Scoring runs in fp32 without gradients, where the matrix products dominate: multiply-adds alone.
        pass_s = val_chars / (eval_speed * _cost(cell, *PROBE, vocab) / _cost(cell, *size, vocab)) if eval_speed else 0.0
        steps = tokens / (batch * Recipe.seq_len)
        every = spaced_evaluations(steps, batch, budget_s, pass_s)
        per_pass = max(corpus_chars, 1) / (batch * Recipe.seq_len)
        if steps >= MANY_PASSES * per_pass:  # about once a pass, if the share of the budget allows it
            often = max(MIN_EVAL_EVERY, math.ceil(per_pass))
            if often < every and steps // often * pass_s <= EVAL_SHARE * budget_s:
                every = often
        return tokens, pass_s, every, tokens * max(0.0, 1 - steps // every * pass_s / budget_s)

    candidates = sizes or CANDIDATES
    chosen = candidates[0]
    for size in candidates:
        if schedule(size)[3] >= TOKENS_PER_PARAM * _params(cell, *size, vocab):
            chosen = size
    layers, hidden, embed = chosen
    expected, pass_s, eval_every, _ = schedule(chosen)
    epochs = expected / max(corpus_chars, 1)
    # 4.4 passes without dropout gave the best 4-minute model; at 7.6 passes with 0.1 the model
    # overfit (train 1.17, val 1.44), so from 6 passes on it gets 0.2, and more beyond 15.
    dropout = 0.0 if epochs < 6 else 0.2 if epochs < 15 else 0.3
    # The weight average spans about a tenth of the run's steps: 0.99 at ~1,000 steps, 0.995 at ~2,000.
    steps = expected / (batch * Recipe.seq_len)
    ema = round(min(0.999, 1 - 1 / max(100.0, steps / 10)), 3)
    return Recipe(cell=cell, layers=layers, hidden=hidden, embed=embed, dropout=dropout, batch_size=batch,
                  lr=3e-3 if hidden <= 512 else 2e-3, ema=ema, eval_every=eval_every, amp=amp, probe_tokens_per_s=speed,
                  probe_eval_tokens_per_s=eval_speed, probe_scale=None if scale is None else round(scale, 3),
                  eval_pass_s=round(pass_s, 2) if eval_speed else None,
                  expected_tokens=expected, expected_passes=round(epochs, 1))
