"""The run directory: everything needed to sample, evaluate or resume a run.

    checkpoints/<run>/
      config.json      model + training config, corpus fingerprint, format version
      tokenizer.json   the vocabulary (tokenizers format)
      best.pt          weights with the lowest validation loss
      latest.pt        weights + full training state (optimizer, step, RNG, data cursor, hidden state)
      metrics.jsonl    one JSON object per evaluation
      .train.lock      held (an OS lock, see lock.py) by the one process training the run

A model folder (`charnn export --format safetensors`) is read wherever a run is: config.json,
tokenizer.json and model.safetensors, no training state.

This module owns the files; what config.json says is config.py's (`RunConfig`, its only reader and
writer), and finding, listing and loading runs is runs.py's.

Every write is atomic (temp file in the same folder, fsync, `os.replace`), so a
crash at any moment leaves the previous version of each file intact. Loading
never executes code: tensors go through `torch.load(weights_only=True)`, the
rest is JSON, and both are validated.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from charnn.errors import RunError, UsageError, WriteError
from charnn.run.lock import LOCK
from charnn.text.tokenizer import CharTokenizer

FORMAT_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: temp files are 0600, the finished file gets the usual 0666 & ~umask
CONFIG, TOKENIZER, BEST, LATEST, METRICS = "config.json", "tokenizer.json", "best.pt", "latest.pt", "metrics.jsonl"
MODEL = "model.safetensors"  # a model folder's weights (`charnn export --format safetensors`)


# ---- atomic writes ------------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through `write(file)` into a temp file beside `path`, fsync, then rename over it."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(f"cannot write in '{path.parent}' ({e.strerror}) — free space or fix permissions; "
                         "the previous files are untouched") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(f"could not write '{path}' ({e.strerror}) — free space or fix permissions; "
                         "the previous version of the file is intact") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def check_writable(path: Path, option: str = "--out") -> None:
    """Refuse an output file whose folder is missing or read-only, before any work is done."""
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write '{path}': folder '{folder}' does not exist — create it or give another {option}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write '{path}' (permission denied) — give a writable {option}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)  # makes the rename itself durable
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_tensors(path: Path, payload: dict[str, Any]) -> None:
    # Serialised in memory first: torch's own writer turns a failed write (a full disk) into a
    # RuntimeError ("unexpected pos"); writing the bytes ourselves keeps it an OSError naming the file.
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


# ---- creating and updating a run ----------------------------------------------------------------


def check_new(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a run where one exists (unless `overwrite`) or where something else lives."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"'{run_dir}' exists and is not a folder — pick another --name")
    if run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):
        if not (run_dir / CONFIG).exists() and _abandoned(run_dir):
            return  # a start that died before writing its config: nothing of value to protect
        if not overwrite:
            raise RunError(f"run '{run_dir}' already exists — pick another --name, resume it with "
                           f"--resume {run_dir.name}, or pass --overwrite to replace it")
        if not (run_dir / CONFIG).exists():
            raise RunError(f"'{run_dir}' is not a charnn run — refusing to overwrite it; pick another --name")


def _abandoned(run_dir: Path) -> bool:
    return all(p.name in (TOKENIZER, LOCK) or _is_temp(p) for p in run_dir.iterdir())


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def clean_temp_files(run_dir: Path) -> None:
    """Remove temp files left by a process killed in the middle of a write."""
    for path in run_dir.iterdir():
        if _is_temp(path):
            path.unlink(missing_ok=True)


def create(run_dir: Path, config: dict[str, Any], tokenizer: CharTokenizer, overwrite: bool) -> None:
    """Start a run directory: refuse an existing run unless `overwrite`. Call it holding `locked(run_dir)`."""
    check_new(run_dir, overwrite)
    make_dir(run_dir)
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run folder '{run_dir}' is not writable — pass a writable --checkpoints-dir")
    for name in (CONFIG, BEST, LATEST, METRICS):
        (run_dir / name).unlink(missing_ok=True)  # config first: without it the folder is no longer a run
    clean_temp_files(run_dir)
    write_text(run_dir / TOKENIZER, tokenizer.to_json())
    write_json(run_dir / CONFIG, {"format_version": FORMAT_VERSION, **config})  # last: marks a complete start


def make_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create run folder '{run_dir}' ({e.strerror}) — pass a writable --checkpoints-dir") from None


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one line; the file is rewritten atomically so a crash never leaves half a line."""
    lines = [json.dumps(r) for r in read_metrics(run_dir)] + [json.dumps(record)]
    write_text(run_dir / METRICS, "\n".join(lines) + "\n")


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop records after `last_step` (written after the state a resume starts from)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


# ---- reading ------------------------------------------------------------------------------------


def load_tokenizer(run_dir: Path) -> CharTokenizer:
    path = run_dir / TOKENIZER
    try:
        return CharTokenizer.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"run '{run_dir}' has no {TOKENIZER} — the run is incomplete; retrain it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read '{path}' ({e}) — the run is damaged; retrain it") from None


def load_tensors(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a .pt file without executing code from it."""
    if not path.is_file():
        raise RunError(f"'{path}' is missing — the run has not saved it yet or is incomplete; "
                       "try --checkpoint latest, or train the run further")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:160]
        raise RunError(f"refusing to load '{path}': it holds more than tensors ({first}) — it may run code; "
                       "only use checkpoints written by charnn") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or ["unreadable"])[0][:160]
        raise RunError(f"'{path}' is truncated or corrupt ({first}) — use the other checkpoint "
                       "(--checkpoint best|latest) or resume training to rewrite it") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise RunError(f"'{path}' has format version {version!r}, this charnn reads version {FORMAT_VERSION} "
                       "— use the charnn version that wrote it, or retrain")
    if not isinstance(payload.get("model"), dict):
        raise RunError(f"'{path}' holds no model weights — the run is damaged; retrain it")
    return payload


def is_model_folder(run_dir: Path) -> bool:
    """A model folder holds model.safetensors and neither checkpoint of a run."""
    return (run_dir / MODEL).is_file() and not (run_dir / BEST).exists() and not (run_dir / LATEST).exists()


def load_safetensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A model folder's weights: safetensors holds tensors and a JSON header, nothing that can run."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or ["unreadable"])[0][:160]
        raise RunError(f"'{path}' is truncated or corrupt ({first}) — export the model folder again") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"'{path}' is missing — '{path.parent}' is not a complete charnn run") from None
    except (OSError, ValueError) as e:
        raise RunError(f"'{path}' is unreadable or not JSON ({str(e)[:80]}) — the run is damaged; retrain it") from None
    if not isinstance(data, dict):
        raise RunError(f"'{path}' is not a JSON object — the run is damaged; retrain it")
    return data


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())

