"""The recipe: what to train when the user gives a time budget.

    probe.py      this machine's training and scoring speed, from a few timed steps of small models
    plan.py       the `--time` recipe (`Recipe`, `plan`, `apply`): model size, batch, dropout, precision;
                  fine-tuning's overrides (`FINE_TUNE`)
    sizing.py     a new run's size: the probe once (rank 0), the recipe on the fields left open, the final checks
    footprint.py  a run's memory, estimated before anything is allocated, and the refusal when it cannot fit
    budget.py     `--time T` as the whole command's wall clock: start-up, the probe, what is left to train

May import `run`, `model`, `text` and the shared modules.
"""
