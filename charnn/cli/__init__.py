"""The `charnn` command: parses options, builds configs, calls the library, prints.

`root` holds the app, the one-line errors and what every command shares; each of the other
modules adds its commands to the app when imported here.
"""

# isort: off
# Each module adds its commands to the app as it is imported: this is the order of `charnn --help`.
from charnn.cli import training, generation, insight, exporting, listing  # noqa: F401
# isort: on
from charnn.cli.root import _optional_values, app, run

__all__ = ["_optional_values", "app", "run"]
