"""charnn: character-level RNN/LSTM/GRU language models — train on any text, then generate.

`charnn.train`, `charnn.load`, `charnn.doctor` and `CharModel` are the library's front door (api.py):

    import charnn
    model = charnn.train("shakespeare", time="45s")
    print(model.generate("ROMEO:", length=100, seed=1))

They load on first use (PEP 562), so importing any one module of the package (`charnn.text.tokenizer`, say)
runs only what that module imports, and no module's imports lead back through this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CharModel", "__version__", "doctor", "load", "load_run", "train"]

if TYPE_CHECKING:
    from charnn.api import CharModel, doctor, load, load_run, train


def __getattr__(name: str) -> Any:
    if name in __all__:
        from charnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")
