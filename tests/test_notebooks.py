"""The notebooks in notebooks/: committed without outputs, and every cell runs headless (as CI runs them).

`CHARNN_NOTEBOOK_BUDGET` caps every training they run (the notebooks read it), so both together take a few
minutes here instead of the quarter of an hour their full budgets would.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# quickstart's training has the recipe time this machine first, and a budget must leave it room to train.
CAPS = {"quickstart": "30s", "how-rnns-learn": "10s"}  # 20s passed here; a CPU half as fast probes longer


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code), \
        f"{path.name} has outputs: clear them (Jupyter: Edit > Clear All Outputs) before committing"


def test_both_notebooks_exist_and_the_readme_links_them() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["how-rnns-learn.ipynb", "quickstart.ipynb"]
    readme = (NOTEBOOKS.parent / "README.md").read_text(encoding="utf-8")
    assert "notebooks/quickstart.ipynb" in readme and "notebooks/how-rnns-learn.ipynb" in readme


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart", "how-rnns-learn"])
def test_the_notebook_runs_headless(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(NOTEBOOKS / f"{name}.ipynb", tmp_path)
    notebook = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    monkeypatch.setenv("CHARNN_NOTEBOOK_BUDGET", CAPS[name])  # the kernel inherits it
    started = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    took = time.perf_counter() - started
    setup = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert setup.outputs[-1]["data"]["text/plain"].startswith("device:   ")  # the set-up cell says what it runs on
    print(f"{name}: {took:.0f} s with every training capped at {CAPS[name]}")
