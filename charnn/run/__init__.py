"""The run directory: the contract between training and everything that reads a model.

    checkpoint.py  the run's files: atomic writes, safe loads, the format version, metrics, creating a run's folder
    config.py      config.json as a `RunConfig` (its only reader and writer) and `TrainConfig`, its train section
    runs.py        the runs on disk: finding one (a name, a path, `base`, the newest), listing, loading (`LoadedRun`)
    builtin.py     the built-in `base` model folder as a run
    lock.py        one process trains a run at a time (an OS lock that dies with its holder)
    names.py       the names a user gives runs, exports and served models, checked in one place
    corpus.py      the run's corpus: `Paths`, `CorpusOptions`, encoding and splitting, finding it again
    originality.py the suffix-array index of a run's training split beside its cache, and the `Report`
    lineage.py     fine-tuning's parent: loaded read-only, the architecture check, the grown vocabulary

`TrainConfig` lives here rather than in `training/` because config.json records it and the recipe (below the
loop) chooses its fields: both must read it without importing the loop. May import `model`, `text` and the
shared modules.
"""
