"""The recipe: what to train when the user gives a time budget, and where a new run starts.

    origin.py     base or scratch: the measured rule a new run without --from follows, and the line saying which
    probe.py      this machine's training and scoring speed, from a few timed steps of small models
    readings.py   the probe's readings kept per machine in the user's cache folder, checked before reuse
    plan.py       the `--time` recipe (`Recipe`, `plan`, `apply`): model size, batch, dropout, precision;
                  fine-tuning's overrides (`FINE_TUNE`)
    sizing.py     a new run's size: the probe once (rank 0), the recipe on the fields left open, the final checks
    footprint.py  a run's memory, estimated before anything is allocated, and the refusal when it cannot fit
    budget.py     `--time T` as the whole command's wall clock: start-up, the probe, what is left to train
    machine.py    what `charnn doctor` and a run's first line say about the device

May import `run`, `model`, `text` and the shared modules.
"""
