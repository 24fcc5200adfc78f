"""A charnn command with the `--time` probe's readings pinned: for A/B runs of two recipes (benchmarks only).

    python benchmarks/pinned_probe.py measure READINGS.json [--vocab 65]
    python benchmarks/pinned_probe.py run READINGS.json train CORPUS --time 4m ...

The recipe is a step function of the probe's readings (batch 32 or 64, a size, a dropout, a spacing of
validation passes), and on a shared 2-core machine two readings minutes apart differ by 10-30%. Two
checkouts' runs that each probe for themselves therefore often train different recipes for no reason but
the moment they probed, and the pair measures that (RECIPES.md, issue #41: "the pairs measure the probe's
noise in the size choice, not the rule"). `measure` takes one real reading on this machine with the
checkout on PYTHONPATH; `run` runs a charnn command whose probe answers with that reading instead of
timing anything, so both checkouts decide from the same numbers. The training itself runs on the machine
as it is. Works with any checkout whose probe is called from `charnn.recipe.sizing` or (before 2026-12) from
`charnn.training.session`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import torch


def measure(out: Path, vocab: int) -> dict[str, Any]:
    """One reading of everything the probe measures for a fresh `--time` run of the default cell on the CPU, in
    the order and with the step counts `charnn train` uses; written to `out`."""
    from charnn.device import bf16_native, tune_cpu_allocator
    from charnn.recipe.plan import BATCHES, pick_amp
    from charnn.recipe.probe import measure_eval_speed, measure_scale, measure_speeds

    dev = torch.device("cpu")
    tune_cpu_allocator()
    amps = (False, True) if bf16_native(dev) else (False,)
    speeds = measure_speeds(dev, vocab, "gru", BATCHES, 64, amps=amps, steps=7)
    amp = pick_amp(speeds) if len(amps) > 1 else False
    eval_speed = measure_eval_speed(dev, vocab, "gru", 64)
    scale, again = measure_scale(dev, vocab, "gru", max(BATCHES), amp, 64, steps=5)
    reading = {"speeds": [[b, a, v] for (b, a), v in speeds.items()], "eval": eval_speed, "scale": scale,
               "again": again}
    out.write_text(json.dumps(reading, indent=1))
    return reading


def pin(reading: dict[str, Any]) -> None:
    """Make the probe of the charnn on the path answer with `reading`."""
    speeds = {(int(b), bool(a)): float(v) for b, a, v in reading["speeds"]}

    from charnn.recipe.probe import measure_speeds as timed  # its signature: the checkout's callers pass batches by position

    def measure_speeds(*args: Any, **kwargs: Any) -> dict[tuple[int, bool], float]:
        asked = inspect.signature(timed).bind(*args, **kwargs)
        asked.apply_defaults()
        return {(b, a): speeds[(b, a)] for b in asked.arguments["batches"] for a in asked.arguments["amps"]}

    def measure_scale(*args: Any, **kwargs: Any) -> tuple[float, float]:
        return float(reading["scale"]), float(reading["again"])

    def measure_eval_speed(*args: Any, **kwargs: Any) -> float:
        return float(reading["eval"])

    for name in ("charnn.recipe.sizing", "charnn.training.session"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "measure_speeds"):
            module.measure_speeds = measure_speeds  # type: ignore[attr-defined]
            module.measure_scale = measure_scale  # type: ignore[attr-defined]
            module.measure_eval_speed = measure_eval_speed  # type: ignore[attr-defined]
            return
    raise SystemExit("pinned_probe: this checkout's charnn calls its probe from neither charnn.recipe.sizing nor "
                     "charnn.training.session")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "run":  # everything after READINGS is charnn's, untouched
        pin(json.loads(Path(sys.argv[2]).read_text()))
        from charnn.cli import run

        sys.argv = ["charnn", *sys.argv[3:]]
        run()
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("measure",))
    parser.add_argument("readings", type=Path)
    parser.add_argument("--vocab", type=int, default=65, help="the corpus's vocabulary size")
    args = parser.parse_args()
    print(json.dumps(measure(args.readings, args.vocab)))


if __name__ == "__main__":
    main()
