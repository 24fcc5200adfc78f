"""Run the notebooks and write them, with their outputs, into docs/notebooks/ as markdown and PNGs, so the
tutorial reads on any page without running it.

    python notebooks/render.py [--budget 30s] [NAME ...]

`--budget` caps every training (CHARNN_NOTEBOOK_BUDGET), as CI does with a shorter one. The neuron pages
(`inspect`'s inline page, a whole document in an iframe) stay in the notebook: the rendering keeps their summary.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import MarkdownExporter

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "notebooks"


def render(name: str, budget: str, work: Path) -> Path:
    notebook = nbformat.read(HERE / f"{name}.ipynb", as_version=4)
    os.environ["CHARNN_NOTEBOOK_BUDGET"] = budget
    started = time.perf_counter()
    NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    print(f"{name}: ran in {time.perf_counter() - started:.0f} s, every training capped at {budget}")
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if str(data.get("text/html", "")).startswith("<iframe srcdoc="):
                del data["text/html"]  # the page itself: markdown viewers drop iframes
    body, resources = MarkdownExporter().from_notebook_node(notebook, resources={"output_files_dir": f"{name}_files"})
    OUT.mkdir(parents=True, exist_ok=True)
    for file, data in resources.get("outputs", {}).items():
        (OUT / file).parent.mkdir(parents=True, exist_ok=True)
        (OUT / file).write_bytes(data)
    note = (f"<!-- Rendered by notebooks/render.py (every training capped at {budget}) from notebooks/{name}.ipynb; "
            "run the notebook for your own numbers. -->\n\n")
    target = OUT / f"{name}.md"
    target.write_text(note + body, encoding="utf-8")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=["quickstart", "how-rnns-learn"])
    parser.add_argument("--budget", default="30s")
    parser.add_argument("--work", type=Path, default=Path("notebook-runs"), help="where the notebooks' runs go")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        print(f"wrote {render(name, args.budget, args.work.resolve())}")


if __name__ == "__main__":
    main()
