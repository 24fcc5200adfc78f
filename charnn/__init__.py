"""charnn: character-level RNN/LSTM/GRU language models — train on any text, then generate."""

__version__ = "0.1.0"

from charnn.api import CharModel, load_run

__all__ = ["CharModel", "__version__", "load_run"]
