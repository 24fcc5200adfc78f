"""`charnn export`: a trained model taken out of charnn, one format per file.

- `onnx.py`: the one-character step as an ONNX graph, checked against PyTorch in onnxruntime;
- `web.py`: a static site that generates in the browser (onnxruntime-web, vendored);
- `safetensors.py`: a portable model folder that charnn reads wherever it reads a run;
- `exported.py`: what an export wrote (`Exported`), the one thing the formats share with this module,
  so the imports run one way: this package's dispatch -> a format -> `exported`.

Every export is written into a temp folder beside its destination and moved into place whole, so a
failure (a full disk, a check that does not pass) leaves nothing half-written, and `--overwrite`
replaces an old export only once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from charnn.errors import ExportError, UsageError, WriteError
from charnn.export.exported import Exported
from charnn.run import names
from charnn.run.runs import LoadedRun

FORMATS = ("onnx", "web", "safetensors")


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse a destination before any work: one that exists (without `overwrite`), or whose folder is missing
    or read-only."""
    if out.exists() and not overwrite:
        raise UsageError(f"'{out}' already exists — pass --overwrite to replace it, or give another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"'{out}' is a file, not an export folder — give another --out")
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write '{out}': folder '{parent}' does not exist — create it or give another --out")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write in '{parent}' (permission denied) — give a writable --out")


@contextmanager
def staged(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temp folder beside `out` to write the export into; moved to `out` when the block succeeds."""
    try:
        temp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as e:
        raise WriteError(f"cannot write in '{out.parent}' ({e.strerror}) — free space or fix permissions") from None
    try:
        yield temp
        umask = os.umask(0)
        os.umask(umask)
        for path in [temp, *temp.rglob("*")]:  # the usual permissions: libraries write some files 0600
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        if out.exists() and overwrite:
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(temp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, out)
    except OSError as e:
        raise WriteError(f"could not write '{out}' ({e.strerror}) — free space or fix permissions; "
                         "nothing was left half-written") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def write_with(out: Path, overwrite: bool, fmt: str, write: Callable[[Path], Exported]) -> Exported:
    """Run `write(temp folder)` and move its result into place as `out`."""
    with staged(out, overwrite) as temp:
        result = write(temp)
        result.files = listing(temp)
    result.folder = out
    result.format = fmt
    return result


def export(loaded: LoadedRun, fmt: str, out: Path, *, which: str = "best", overwrite: bool = False,
           text: str = "") -> Exported:
    """Export `loaded` (a run or model folder, `runs.load`) as `fmt` into the folder `out`.

    `text` is what the ONNX check steps through (a few hundred characters of real text; the model's own
    greedy text when empty). Checked before any work: the format, the destination, the optional packages."""
    if fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}' is unknown — use one of {', '.join(FORMATS)}")
    names.check(out.name, "--out's folder name", reserved=False)
    check_target(out, overwrite)
    source = {"run": loaded.path.name, "path": str(loaded.path.resolve()), "checkpoint": which, "step": loaded.step}
    if fmt == "safetensors":
        from charnn.export import safetensors

        return write_with(out, overwrite, fmt, lambda folder: safetensors.write(loaded, which, folder))
    _need_onnx()
    from charnn.export import onnx, web

    text = text or _own_text(loaded)
    writer = onnx.write if fmt == "onnx" else web.write
    return write_with(out, overwrite, fmt, lambda folder: writer(loaded, folder, source, text))


def _need_onnx() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"exporting to ONNX needs {' and '.join(missing)} — pip install 'charnn[export]'")


def _own_text(loaded: LoadedRun) -> str:
    """The model's greedy continuation of a newline: real characters of its own vocabulary, when its corpus is gone."""
    from charnn.sample import SampleConfig, generate

    prime = "\n" if "\n" in loaded.tokenizer.chars else loaded.tokenizer.chars[0]
    run = generate(loaded.model, loaded.tokenizer, prime, SampleConfig(length=300, temperature=0.0))
    for _ in run:
        pass
    return prime + run.texts[0]
