"""Turning a path, a folder or a built-in name into validated UTF-8 text.

A `Corpus` is a recipe for reading text, not the text itself: it knows its
files, their size and a sha256 fingerprint of the exact bytes, and streams
decoded chunks on demand, so a corpus larger than RAM is never held whole.

Built-ins (`charnn corpora`):
- `shakespeare`: tiny-shakespeare, downloaded once into the corpora folder and
  verified by sha256 (URL overridable with `CHARNN_SHAKESPEARE_URL`).
- `python-stdlib`: built offline from this interpreter's standard library.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import sysconfig
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from charnn.errors import CorpusError

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_BYTES = 1_115_394
URL_ENV = "CHARNN_SHAKESPEARE_URL"

BUILTINS: dict[str, str] = {
    "shakespeare": "tiny-shakespeare, 1.1 MB of plays (downloaded once, sha256-verified)",
    "python-stdlib": "this Python's standard-library source, built offline",
}

_BLOCK = 1 << 22  # 4 MiB: large enough for throughput, small enough for flat memory


@dataclass(frozen=True)
class Corpus:
    """A validated corpus: its files, total size and content fingerprint."""

    name: str
    paths: tuple[Path, ...]
    size: int
    chars: int  # characters (code points) after decoding
    fingerprint: str  # sha256 of the exact byte stream `chunks()` decodes
    replace_errors: bool = False

    def chunks(self, block: int = _BLOCK) -> Iterator[str]:
        """Yield the text in decoded pieces; never splits a UTF-8 sequence."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace" if self.replace_errors else "strict")
        for piece in _byte_stream(self.paths, block):
            text = decoder.decode(piece)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def read_text(self) -> str:
        return "".join(self.chunks())


def _byte_stream(paths: tuple[Path, ...], block: int) -> Iterator[bytes]:
    """The files' bytes in order; a file not ending in a newline gets one, so files never run together."""
    for i, path in enumerate(paths):
        last = b""
        with open(path, "rb") as f:
            while piece := f.read(block):
                last = piece
                yield piece
        if i < len(paths) - 1 and last and not last.endswith(b"\n"):
            yield b"\n"


def resolve(spec: str, corpora_dir: Path, *, url: str | None = None, replace_errors: bool = False) -> Corpus:
    """Turn a file, a folder of .txt files or a built-in name into a validated `Corpus`."""
    path = Path(spec).expanduser()
    if path.is_dir():
        paths = tuple(sorted(p for p in path.rglob("*.txt") if p.is_file()))
        if not paths:
            raise CorpusError(f"folder '{spec}' holds no .txt files — put text files ending in .txt in it, or give a file")
        return _validate(spec, paths, replace_errors)
    if path.exists():
        if not path.is_file():
            raise CorpusError(f"corpus '{spec}' is not a regular file — give a text file or a folder of .txt files")
        return _validate(spec, (path,), replace_errors)
    if spec == "shakespeare":
        return _validate(spec, (fetch_shakespeare(corpora_dir, url),), replace_errors)
    if spec == "python-stdlib":
        return _validate(spec, (build_python_stdlib(corpora_dir),), replace_errors)
    names = ", ".join(BUILTINS)
    raise CorpusError(f"corpus '{spec}' not found — give a text file, a folder of .txt files, or a built-in name ({names})")


def _validate(name: str, paths: tuple[Path, ...], replace_errors: bool) -> Corpus:
    """Read every byte once: fingerprint it, and reject binary or non-UTF-8 content early."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("replace" if replace_errors else "strict")
    size = 0
    chars = 0
    try:
        for piece in _byte_stream(paths, _BLOCK):
            if not replace_errors and (nul := piece.find(b"\x00")) >= 0:
                raise CorpusError(
                    f"corpus '{name}' looks binary (NUL byte at offset {size + nul}) — give a text file"
                )
            try:
                chars += len(decoder.decode(piece))
            except UnicodeDecodeError as e:
                where = _locate(paths, size + e.start)
                raise CorpusError(
                    f"corpus '{name}' is not valid UTF-8 ({where}) — convert it to UTF-8, "
                    "or pass --replace-bad-bytes to replace bad bytes with U+FFFD"
                ) from None
            digest.update(piece)
            size += len(piece)
        chars += len(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        raise CorpusError(
            f"corpus '{name}' ends inside a UTF-8 sequence — convert it to UTF-8, or pass --replace-bad-bytes"
        ) from None
    except PermissionError:
        raise CorpusError(f"corpus '{name}' cannot be read (permission denied) — check the file's permissions") from None
    except OSError as e:
        raise CorpusError(f"corpus '{name}' cannot be read ({e.strerror}) — check the path") from None
    if chars < 2:
        raise CorpusError(f"corpus '{name}' is empty — give a file with at least 2 characters")
    return Corpus(name, paths, size, chars, digest.hexdigest(), replace_errors)


def _locate(paths: tuple[Path, ...], offset: int) -> str:
    """Name the file and byte offset inside it for a global offset into the stream."""
    if len(paths) == 1:
        return f"bad byte at offset {offset}"
    for path in paths:
        n = path.stat().st_size + 1  # the separator newline, at most one
        if offset < n:
            return f"bad byte in '{path}' at offset {offset}"
        offset -= n
    return f"bad byte at offset {offset}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(_BLOCK):
            digest.update(piece)
    return digest.hexdigest()


def fetch_shakespeare(corpora_dir: Path, url: str | None = None) -> Path:
    """Return the local tiny-shakespeare file, downloading and verifying it first if needed."""
    target = corpora_dir / "shakespeare.txt"
    if target.exists():
        if _sha256(target) == SHAKESPEARE_SHA256:
            return target
        raise CorpusError(
            f"'{target}' exists but its sha256 is not tiny-shakespeare's — delete it and run again to re-download"
        )
    url = url or os.environ.get(URL_ENV) or SHAKESPEARE_URL
    _ensure_dir(corpora_dir)
    fd, tmp = tempfile.mkstemp(dir=corpora_dir, prefix=".shakespeare.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=30) as response:
                while piece := response.read(1 << 16):
                    digest.update(piece)
                    out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != SHAKESPEARE_SHA256:
            raise CorpusError(
                f"download from {url} has sha256 {digest.hexdigest()[:16]}…, expected {SHAKESPEARE_SHA256[:16]}… — "
                f"the server sent a different file; point {URL_ENV} at a correct copy"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise CorpusError(
            f"could not download tiny-shakespeare from {url} ({reason}) — check your network, set {URL_ENV} "
            "to a mirror, or give the path of a local copy"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


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
    rows = []
    for name, about in BUILTINS.items():
        path = corpora_dir / f"{name}.txt"
        state = f"ready ({path.stat().st_size:,} bytes)" if path.exists() else "not yet fetched"
        rows.append((name, about, state))
    return rows
