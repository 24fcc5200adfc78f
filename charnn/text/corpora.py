"""The built-in corpora, by name (`charnn corpora`): `shakespeare`, tiny-shakespeare inside the package (gzipped;
corpus.py checks its sha256 when it reads it), and `python-stdlib`, this interpreter's standard-library source,
written once into the corpora folder, offline.
"""

from __future__ import annotations

import os
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

from charnn.errors import CorpusError

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_BYTES = 1_115_394
BUILTINS: dict[str, str] = {
    "shakespeare": "tiny-shakespeare, 1.1 MB of plays (ships with charnn, works offline)",
    "python-stdlib": "this Python's standard-library source, built offline",
}


def path(name: str, corpora_dir: Path) -> Path:
    """The file of built-in `name` (one of `BUILTINS`), built first where it is built on first use."""
    return shakespeare_path() if name == "shakespeare" else build_python_stdlib(corpora_dir)


def shakespeare_path() -> Path:
    """The gzipped tiny-shakespeare inside the package (public domain; the char-rnn benchmark text)."""
    return Path(str(resources.files("charnn") / "builtin" / "tinyshakespeare.txt.gz"))


def build_python_stdlib(corpora_dir: Path) -> Path:
    """Write this interpreter's standard-library .py files (tests excluded) into one corpus file."""
    target = corpora_dir / "python-stdlib.txt"
    if target.exists():
        return target
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
    parts: list[str] = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if skip.intersection(rel.parts):
            continue
        try:
            parts.append(f"# file: {rel.as_posix()}\n{path.read_text(encoding='utf-8')}\n")
        except (UnicodeDecodeError, OSError):
            continue  # a few files are not UTF-8 or not readable; the corpus is fine without them
    if not parts:
        raise CorpusError(f"no standard-library sources found under '{stdlib}' — give a corpus file instead")
    _ensure_dir(corpora_dir)
    fd, tmp = tempfile.mkstemp(dir=corpora_dir, prefix=".python-stdlib.", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(parts))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    return target


def _ensure_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"cannot create corpora folder '{folder}' ({e.strerror}) — pass a writable --corpora-dir") from None
    if not os.access(folder, os.W_OK):
        raise CorpusError(f"corpora folder '{folder}' is not writable — pass a writable --corpora-dir")


def builtin_status(corpora_dir: Path) -> list[tuple[str, str, str]]:
    """(name, description, local state) for each built-in corpus."""
    stdlib = corpora_dir / "python-stdlib.txt"
    return [
        ("shakespeare", BUILTINS["shakespeare"], f"built in ({SHAKESPEARE_BYTES:,} bytes)"),
        ("python-stdlib", BUILTINS["python-stdlib"],
         f"ready ({stdlib.stat().st_size:,} bytes)" if stdlib.exists() else "built on first use"),
    ]
