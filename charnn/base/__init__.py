"""The base model: a GRU that charnn trained on free English text, shipped inside the package as a model
folder (`charnn/builtin/base/`: half-precision safetensors, config, vocabulary and its model card).

`corpus.py` assembles its text offline from packages (`python -m charnn.base.corpus`); `release.py` turns a
trained run into the shipped folder. Where the folder lies and how `base` is found as a run: `run/builtin.py`.
May import every package below `api` (it samples and scores the run it releases).
"""
