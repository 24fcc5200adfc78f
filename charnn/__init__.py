"""charnn: character-level RNN/LSTM/GRU language models — train on any text, then generate.

`from charnn import CharModel, load_run` is the library's front door (api.py). They load on first use
(PEP 562), so importing any one module of the package (`charnn.text.tokenizer`, say) runs only what that
module imports, and no module's imports lead back through this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CharModel", "__version__", "load_run"]

if TYPE_CHECKING:
    from charnn.api import CharModel, load_run


def __getattr__(name: str) -> Any:
    if name in ("CharModel", "load_run"):
        from charnn import api
        return getattr(api, name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")
