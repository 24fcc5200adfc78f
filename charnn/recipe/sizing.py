"""A new run's size under `--time`: probe this machine once, let the recipe choose what the user left open, and
check the result fits (the budget, the memory, the device's precision) before anything is trained.

session.py calls `sized` for every new run (without a budget it only checks); probe.py measures, recipe/plan.py
chooses.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from charnn.device import AMP_DEVICES, bf16_native, tune_cpu_allocator
from charnn.distributed import Launch, ProcessGroup
from charnn.errors import DeviceError, refuse
from charnn.model.network import CharRNN, ModelConfig, amp_dtype
from charnn.recipe import footprint, readings
from charnn.recipe.budget import Budget
from charnn.recipe.plan import (
    BATCHES,
    FINE_TUNE,
    MANY_PASSES,
    Recipe,
    amp_gain,
    announcement,
    apply,
    as_probe_speed,
    by_passes,
    choose,
    pick_amp,
    plan,
)
from charnn.recipe.probe import PROBE, Setting, measure_eval_speed, measure_scale, measure_speeds, steady_speeds
from charnn.run.config import TrainConfig
from charnn.run.corpus import Prepared, check_fits


def sized(prepared: Prepared, model_cfg: ModelConfig, cfg: TrainConfig, dev: torch.device, auto_fields: frozenset[str],
           announce: Callable[[str], None] | None, launch: Launch, clock: Budget | None, group: ProcessGroup,
           fine_tune: bool, reprobe: bool = False) -> tuple[ModelConfig, TrainConfig, Recipe | None]:
    """The configs a new run trains with: with a budget, the recipe's choices (rank 0 probes, every rank gets
    them) for the fields the user left unset; then the checks that need the final sizes. `reprobe`: probe
    afresh even where this machine's readings are kept (recipe/readings.py)."""
    recipe = None
    if clock is not None:
        clock.mark("startup")
    if auto_fields and clock is not None:
        recipe = group.broadcast(_plan(prepared, model_cfg, cfg, dev, auto_fields, announce, launch, clock,
                                       fine_tune=fine_tune, reprobe=reprobe) if group.is_writer else None)
        model_cfg, cfg = apply(recipe, auto_fields, model_cfg, cfg)
        launch.check_batch(cfg.batch_size)
        clock.mark("probe")
    if clock is not None and group.is_writer:
        clock.check(reserve=cfg.eval_pass_estimate)
    footprint.check_fits(model_cfg, cfg.batch_size, cfg.seq_len, dev)  # with the vocabulary and the recipe's sizes
    if cfg.amp and dev.type == "cuda":
        _check_amp_kernel(model_cfg.cell, dev)
    return model_cfg, cfg, recipe


def _plan(prepared: Prepared, model_cfg: ModelConfig, cfg: TrainConfig, dev: torch.device,
          auto_fields: frozenset[str], announce: Callable[[str], None] | None, launch: Launch, clock: Budget,
          fine_tune: bool = False, reprobe: bool = False) -> Recipe:
    """Probe this machine once (rank 0) and choose the model for what is left of the budget; announce the choice.
    A fine-tune keeps its parent's model: the recipe picks the schedule for it at fine-tuning's rate.

    bf16 is probed only where it can win (`device.bf16_native`): an emulating CPU would spend a minute
    measuring what it cannot use."""
    if dev.type == "cpu":
        tune_cpu_allocator()  # as training will: the probe must see the same speed
    # A fine-tune keeps fine-tuning's batch (RECIPES.md: 32 and 64 within noise) and times only that one.
    batches = BATCHES if "batch_size" in auto_fields and not fine_tune else (cfg.batch_size,)
    may_amp = "amp" in auto_fields and dev.type in AMP_DEVICES and bf16_native(dev)
    amps = (False, True) if may_amp else (cfg.amp,)
    # A short budget gets a shorter probe (fewer timed steps, noisier readings): under 3 minutes every
    # second of timing is a second less of training (a full probe is ~10 s of a 60 s run on 2 cores).
    short = clock.total < 180
    # A fine-tune's model is its parent's: time that one. Whether bf16 pays depends on the size (on 2 Zen 4 cores
    # the 2x256 probe gained 1.04-1.20x, near AMP_MIN_GAIN, while the base's 3x512 trains ~1.35x as many steps a
    # minute in bf16: RECIPES.md, fine-tuning from the base); its speed is then read as the probe model's.
    size = (model_cfg.layers, model_cfg.hidden, model_cfg.embed) if fine_tune else PROBE
    # How a bigger model's speed falls off here (and the probe read again): where the user set the whole size,
    # the recipe needs no sizing.
    scaled = bool(auto_fields & {"layers", "hidden", "embed"})
    shape = {"cell": model_cfg.cell, "vocab": model_cfg.vocab_size, "seq": cfg.seq_len, "size": list(size),
             "batches": list(batches), "amps": list(amps), "scaled": scaled}
    store = readings.Store(warn=announce or (lambda line: print(line, file=sys.stderr)))
    key = readings.key(dev, launch.world_size, shape)
    kept = None if reprobe else store.get(key)
    check = _quick_check(dev, model_cfg, cfg.seq_len, size, kept) if kept else None
    if kept is None or check is None or not readings.agrees(kept.speeds[check[0]], check[1]):
        kept = None
        reading = _probe(dev, model_cfg, cfg.seq_len, batches, amps, size, scaled, short, fine_tune)
        store.put(key, reading)
    else:
        reading = kept
    gain = amp_gain(reading.speeds)
    amp = pick_amp(reading.speeds) if len(amps) > 1 else cfg.amp
    speeds = {b: v for (b, a), v in reading.speeds.items() if a == amp}
    # Every process trains its share at about the probe's speed: the job sees world_size times as much, and
    # evaluation is sharded over the processes too (and always runs in fp32).
    eval_speed = reading.eval_speed * launch.world_size
    scale, again = reading.scale, reading.again
    speeds = {b: v * launch.world_size for b, v in steady_speeds(speeds, again).items()}
    sizes = [(model_cfg.layers, model_cfg.hidden, model_cfg.embed)] if fine_tune else None
    recipe = plan(clock.left(), len(prepared.train_ids), model_cfg.vocab_size, speeds, model_cfg.cell,
                  len(prepared.val_ids), eval_speed, amp, scale, sizes)
    if fine_tune:
        recipe = replace(recipe, lr=FINE_TUNE.lr, warmup=FINE_TUNE.warmup, dropout=model_cfg.dropout)
    elif {"layers", "hidden", "embed"} <= auto_fields and (recipe.expected_passes or 0.0) >= MANY_PASSES:
        recipe = _by_passes(recipe, prepared, model_cfg, cfg.seq_len, dev, clock, launch.world_size, eval_speed,
                            (store, key, reading))
    recipe.probe_amp_gain = None if gain is None else round(gain, 3)  # stored: why this run chose its precision
    recipe.probe_second_reading = None if again is None else round(again * launch.world_size)
    if kept is not None and check is not None:
        recipe.probe_kept = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(kept.taken))
        recipe.probe_check = round(check[1] / kept.speeds[check[0]], 3)
    chosen_model, chosen_cfg = apply(recipe, auto_fields, model_cfg, cfg)
    refuse(chosen_model.validate() + chosen_cfg.validate())
    check_fits(prepared.corpus.chars, chosen_cfg)
    if announce:
        announce(announcement(recipe, auto_fields, chosen_model, chosen_cfg, launch.world_size, fine_tune))
    return recipe


def _by_passes(recipe: Recipe, prepared: Prepared, model_cfg: ModelConfig, seq: int, dev: torch.device,
               clock: Budget, processes: int, eval_speed: float,
               kept: tuple[readings.Store, str, readings.Reading]) -> Recipe:
    """A text the budget passes over many times: the size `plan.by_passes` takes from speeds timed at each candidate's
    own size, at the recipe's batch and precision (kept beside the machine's reading, so the next run times none),
    and the rest of the recipe for that size at that speed."""
    store, key, reading = kept
    batch, amp, cell, vocab = recipe.batch_size, recipe.amp, model_cfg.cell, model_cfg.vocab_size
    sized = dict(reading.sized)

    def speed_of(size: tuple[int, int, int]) -> float:
        trial = (*size, batch, amp)
        if size == PROBE and (batch, amp) in reading.speeds:  # the probe timed its own size at this setting
            return reading.speeds[(batch, amp)] * processes
        if trial not in sized:
            sized[trial] = measure_speeds(dev, vocab, cell, (batch,), seq, steps=5, amps=(amp,), size=size,
                                          warm=2)[(batch, amp)]
        return sized[trial] * processes  # every process trains its share at about this speed

    size, speed = by_passes(clock.left(), len(prepared.train_ids), speed_of)
    if sized != reading.sized:
        store.put(key, replace(reading, sized=sized))
    chosen = choose(clock.left(), len(prepared.train_ids), vocab, as_probe_speed(speed, cell, size, vocab), cell,
                    batch, len(prepared.val_ids), eval_speed, amp, None, [size])
    return replace(chosen, probe_tokens_per_s=recipe.probe_tokens_per_s, probe_scale=recipe.probe_scale,
                   measured_tokens_per_s=round(speed))


def _probe(dev: torch.device, model_cfg: ModelConfig, seq: int, batches: tuple[int, ...], amps: tuple[bool, ...],
           size: tuple[int, int, int], scaled: bool, short: bool, fine_tune: bool) -> readings.Reading:
    """A full probe: the training speed at each batch and precision, the scoring speed and, for a run the recipe
    sizes, SCALE_PROBE's speed and a second reading beside it. Speeds are the probe model's (`as_probe_speed`)."""
    measured = measure_speeds(dev, model_cfg.vocab_size, model_cfg.cell, batches, seq, amps=amps,
                              steps=(2 if fine_tune else 4) if short else 7, size=size)
    measured = {k: as_probe_speed(v, model_cfg.cell, size, model_cfg.vocab_size) for k, v in measured.items()}
    eval_speed = measure_eval_speed(dev, model_cfg.vocab_size, model_cfg.cell, seq)
    scale, again = None, None
    if scaled:
        amp = pick_amp(measured) if len(amps) > 1 else amps[0]
        largest = max(b for b, a in measured if a == amp)
        scale, again = measure_scale(dev, model_cfg.vocab_size, model_cfg.cell, largest, amp, seq,
                                     steps=3 if short else 5)
    return readings.Reading(measured, eval_speed, scale, again, time.time())


def _quick_check(dev: torch.device, model_cfg: ModelConfig, seq: int, size: tuple[int, int, int],
                 kept: readings.Reading) -> tuple[Setting, float] | None:
    """A few timed steps at the kept reading's smallest batch, as the probe model's speed: (setting, speed), for
    `readings.agrees` to compare with the kept speed. None where the kept reading holds no setting to check."""
    if not kept.speeds:
        return None
    # The quickest steps to time: the smallest batch, at its faster precision (a fine-tune checks the base's 2x512,
    # whose fp32 steps alone took ~1.3 s of a second run's start on 2 Zen 4 cores).
    setting = min(kept.speeds, key=lambda s: (s[0], -kept.speeds[s]))
    batch, amp = setting
    speed = measure_speeds(dev, model_cfg.vocab_size, model_cfg.cell, (batch,), seq, steps=3, amps=(amp,), size=size,
                           warm=1)[setting]
    return setting, as_probe_speed(speed, model_cfg.cell, size, model_cfg.vocab_size)


def _check_amp_kernel(cell: str, dev: torch.device) -> None:
    """Autocast asks for bf16; a cuDNN build that ran the recurrent kernel in fp16 instead would need a gradient
    scaler, which charnn does not keep: refuse it before anything is written."""
    tiny = CharRNN(ModelConfig(vocab_size=2, cell=cell, layers=1, hidden=8, embed=8, heads=1)).to(dev)
    ran = amp_dtype(tiny, dev)
    if ran == torch.float16:
        raise DeviceError(f"--amp: this GPU's recurrent kernel runs in float16 under autocast (not bf16), which needs "
                          f"a gradient scaler charnn does not use — train with --no-amp on {dev}")
