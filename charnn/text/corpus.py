"""Turning files, folders or a built-in name into validated UTF-8 text.

A `Corpus` is a recipe for reading text, not the text itself: it knows its files
(a manifest of name, size and sha256 each), their total size and a fingerprint,
and streams decoded chunks on demand, so a corpus larger than RAM is never held
whole. Sources are taken in the order given, files joined with a newline:

- a file, plain or compressed (`.gz`, `.bz2`, `.xz`: streamed, never unpacked whole);
- a folder, read recursively in sorted path order: every text file, or those
  chosen by `--include`/`--exclude` globs on the path relative to the folder.
  Hidden entries (`.git`, `.venv`, `.env`) and links back into the walk are
  skipped; binary files (a NUL byte) and files that are not UTF-8 are skipped and
  counted, or refused with `strict`;
- a built-in name (`charnn corpora`, corpora.py): `shakespeare` ships inside the package
  (gzipped, sha256-verified when read); `python-stdlib` is built offline from
  this interpreter's standard library.
"""

from __future__ import annotations

import bz2
import codecs
import fnmatch
import gzip
import hashlib
import lzma
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from charnn.errors import CorpusError
from charnn.text import corpora

COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_BLOCK = 1 << 22  # 4 MiB: large enough for throughput, small enough for flat memory


@dataclass(frozen=True)
class SourceFile:
    """One file of a corpus: where it is, its name in the manifest, its (decompressed) size and digest."""

    path: Path
    name: str
    size: int
    sha256: str
    chars: int = 0  # code points after decoding
    ends_with_newline: bool = True  # if not, a newline separates it from the next file


@dataclass(frozen=True)
class Corpus:
    """A validated corpus: its files, total size, content fingerprint and what was skipped."""

    name: str
    files: tuple[SourceFile, ...]
    size: int
    chars: int  # characters (code points) after decoding
    fingerprint: str  # one file: sha256 of its bytes; several: sha256 of the manifest (names and digests)
    replace_errors: bool = False
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> files

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(f.path for f in self.files)

    def chunks(self, block: int = _BLOCK) -> Iterator[str]:
        """Yield the text in decoded pieces; never splits a UTF-8 sequence."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace" if self.replace_errors else "strict")
        for piece in _joined(self.paths, block):
            if text := decoder.decode(piece):
                yield text
        if tail := decoder.decode(b"", final=True):
            yield tail

    def read_text(self) -> str:
        return "".join(self.chunks())

    def manifest(self) -> list[list[object]]:
        return [[f.name, f.size, f.sha256] for f in self.files]

    def head(self, limit: int) -> str:
        """The first `limit` characters of the text (read no further than that)."""
        pieces, have = [], 0
        for text in self.chunks():
            pieces.append(text[: limit - have])
            have += len(pieces[-1])
            if have >= limit:
                break
        return "".join(pieces)

    def file_starts(self) -> list[tuple[str, int]]:
        """Each file's name and the character its text starts at in the joined corpus (`_joined`: a newline
        follows a file that lacks one). Reads every file once."""
        starts, at = [], 0
        for i, f in enumerate(self.files):
            starts.append((f.name, at))
            decoder = codecs.getincrementaldecoder("utf-8")("replace" if self.replace_errors else "strict")
            last = b""
            with _open(f.path) as handle:
                while piece := handle.read(_BLOCK):
                    at += len(decoder.decode(piece))
                    last = piece
            at += len(decoder.decode(b"", final=True))
            if i < len(self.files) - 1 and last and not last.endswith(b"\n"):
                at += 1
        return starts

    def describe(self) -> str:
        """'3 files, 1.2 MB (skipped 2: 1 binary, 1 not UTF-8)' for the start of a run."""
        text = f"{len(self.files):,} file{'s' * (len(self.files) != 1)}, {_mb(self.size)}"
        if self.skipped:
            reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items()))
            text += f" (skipped {sum(self.skipped.values()):,}: {reasons})"
        return text


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def _open(path: Path) -> IO[bytes]:
    opener = COMPRESSED.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb")  # type: ignore[operator]


def _joined(paths: Sequence[Path], block: int) -> Iterator[bytes]:
    """The files' bytes in order, a newline after a file that lacks one; small files coalesced into blocks."""
    pending: list[bytes] = []
    size = 0
    for i, path in enumerate(paths):
        last = b""
        with _open(path) as f:
            while piece := f.read(block):
                last = piece
                pending.append(piece)
                size += len(piece)
                if size >= block:
                    yield b"".join(pending)
                    pending, size = [], 0
        if i < len(paths) - 1 and last and not last.endswith(b"\n"):
            pending.append(b"\n")
            size += 1
    if pending:
        yield b"".join(pending)


# ---- resolving sources --------------------------------------------------------------------------


def resolve(specs: str | Sequence[str], corpora_dir: Path, *, replace_errors: bool = False, strict: bool = False,
            include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Corpus:
    """Turn files, folders and built-in names (in order) into one validated `Corpus`."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise CorpusError("no corpus given — give a text file, a folder, or a built-in name")
    files: list[SourceFile] = []
    skipped: Counter[str] = Counter()
    single = len(specs) == 1 and not Path(specs[0]).expanduser().is_dir()
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found, why = _folder(path, include, exclude, replace_errors, strict)
            skipped.update(why)
            if not found:
                raise CorpusError(_nothing_readable(spec, why, include, exclude))
            files += found
        elif path.exists():
            if not path.is_file():
                raise CorpusError(f"corpus '{spec}' is not a regular file — give a text file or a folder")
            files.append(_checked(path, spec, replace_errors, strict=True))
        elif spec in corpora.BUILTINS:
            files.append(_builtin(spec, corpora_dir, replace_errors))
        else:
            raise CorpusError(f"corpus '{spec}' not found — give a text file, a folder, or a built-in name "
                              f"({', '.join(corpora.BUILTINS)})")
    size = sum(f.size for f in files)
    chars = _count_chars(files)
    if chars < 2:
        raise CorpusError(f"corpus '{' '.join(specs)}' is empty — give a file with at least 2 characters")
    fingerprint = files[0].sha256 if single and len(files) == 1 else _manifest_digest(files)
    return Corpus(" ".join(specs), tuple(files), size, chars, fingerprint, replace_errors, dict(skipped))


def _manifest_digest(files: Sequence[SourceFile]) -> str:
    """Names, order and contents: an edit, a rename, a new or a removed file all change it."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{f.sha256}\n".encode())
    return digest.hexdigest()


def _count_chars(files: Sequence[SourceFile]) -> int:
    """Characters of the joined text: each file's count plus the separators `_joined` adds."""
    return sum(f.chars for f in files) + sum(1 for f in files[:-1] if not f.ends_with_newline)


class _Skip(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _checked(path: Path, name: str, replace_errors: bool, strict: bool) -> SourceFile:
    """Read a file once: digest, size, characters; refuse (strict) or skip binary and non-UTF-8 content."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("replace" if replace_errors else "strict")
    size = chars = 0
    last = b""
    try:
        with _open(path) as f:
            while piece := f.read(_BLOCK):
                if (nul := piece.find(b"\x00")) >= 0:
                    raise _Skip("binary", f"'{name}' looks binary (NUL byte at offset {size + nul}) — give text files")
                try:
                    chars += len(decoder.decode(piece))
                except UnicodeDecodeError as e:
                    raise _Skip("not UTF-8", f"'{name}' is not valid UTF-8 (bad byte at offset {size + e.start}) — "
                                "convert it to UTF-8, or pass --replace-bad-bytes to replace bad bytes with U+FFFD") from None
                digest.update(piece)
                size += len(piece)
                last = piece
            try:
                chars += len(decoder.decode(b"", final=True))
            except UnicodeDecodeError:
                raise _Skip("not UTF-8", f"'{name}' ends inside a UTF-8 sequence — convert it to UTF-8, "
                            "or pass --replace-bad-bytes") from None
    except _Skip as skip:
        if strict:
            raise CorpusError(f"corpus {skip}") from None
        raise
    except PermissionError:
        raise CorpusError(f"corpus file '{name}' cannot be read (permission denied) — fix its permissions "
                          "or leave it out (--exclude)") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        if strict:
            raise CorpusError(f"corpus file '{name}' cannot be read ({reason}) — check the file") from None
        raise _Skip("unreadable compressed", str(e)) from None
    return SourceFile(path, name, size, digest.hexdigest(), chars, last.endswith(b"\n") or size == 0)


def _folder(root: Path, include: Sequence[str], exclude: Sequence[str], replace_errors: bool,
            strict: bool) -> tuple[list[SourceFile], Counter[str]]:
    """Every text file under `root` (recursive, sorted by relative path) and what was skipped, by reason."""
    files: list[SourceFile] = []
    skipped: Counter[str] = Counter()
    seen_dirs: set[tuple[int, int]] = set()
    for rel in _walk(root, seen_dirs, skipped):
        if include and not any(fnmatch.fnmatchcase(rel, g) for g in include):
            skipped["not in --include"] += 1
            continue
        if any(fnmatch.fnmatchcase(rel, g) for g in exclude):
            skipped["excluded"] += 1
            continue
        try:
            f = _checked(root / rel, rel, replace_errors, strict)
        except _Skip as skip:
            skipped[skip.reason] += 1
            continue
        if f.size == 0:
            skipped["empty"] += 1
            continue
        files.append(f)
    return files, skipped


def _walk(root: Path, seen_dirs: set[tuple[int, int]], skipped: Counter[str]) -> list[str]:
    """Relative POSIX paths of the regular files under `root`, sorted; hidden entries and link loops skipped."""
    out: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            skipped["unreadable folder"] += 1
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            skipped["link loop"] += 1
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except PermissionError:
            raise CorpusError(f"folder '{folder}' cannot be read (permission denied) — fix its permissions "
                              "or leave it out (--exclude)") from None
        for entry in entries:
            if entry.name.startswith("."):
                skipped["hidden"] += 1
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow links
            except OSError:
                is_dir = is_file = False
            if is_dir:
                stack.append(Path(entry.path))
            elif is_file:
                out.append(Path(entry.path).relative_to(root).as_posix())
            else:
                skipped["broken link or special file"] += 1
    return sorted(out)


def _nothing_readable(spec: str, skipped: Counter[str], include: Sequence[str], exclude: Sequence[str]) -> str:
    seen = sum(skipped.values())
    why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items())) or "it is empty"
    hint = "loosen --include/--exclude" if include or exclude else "give a folder with UTF-8 text files"
    return f"folder '{spec}' has no readable text file ({seen:,} entries seen: {why}) — {hint}"


# ---- built-ins ----------------------------------------------------------------------------------


def _builtin(name: str, corpora_dir: Path, replace_errors: bool) -> SourceFile:
    f = _checked(corpora.path(name, corpora_dir), name, replace_errors, strict=True)
    if name == "shakespeare" and f.sha256 != corpora.SHAKESPEARE_SHA256:
        raise CorpusError(f"the built-in tiny-shakespeare is damaged (sha256 {f.sha256[:16]}…) — reinstall charnn")
    return f


# ---- what changed -------------------------------------------------------------------------------


def describe_change(recorded: Sequence[Sequence[object]] | None, now: Corpus) -> str:
    """Name the files added, removed or modified since `recorded` (a saved manifest), where it can."""
    if not recorded:
        return "its content changed"
    before = {str(r[0]): str(r[2]) for r in recorded}
    after = {f.name: f.sha256 for f in now.files}
    parts = []
    for label, names in (("added", sorted(after.keys() - before.keys())), ("removed", sorted(before.keys() - after.keys())),
                         ("modified", sorted(n for n in after.keys() & before.keys() if after[n] != before[n]))):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3:,} more" if len(names) > 3 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts) if parts else "its files were reordered"


def same_content(recorded: Sequence[Sequence[object]] | None, now: Corpus) -> bool:
    """Whether `now` holds the recorded manifest's files, byte for byte and in order, whatever their names: the
    same sources spelled another way (`a.txt` then `/home/me/a.txt`: a resume reads the recorded absolute paths)."""
    if not recorded or len(recorded) != len(now.files):
        return False
    return all(list(r)[1:] == [f.size, f.sha256] for r, f in zip(recorded, now.files, strict=True))


def manifest_json(c: Corpus, limit: int = 2000) -> list[list[object]] | None:
    """The manifest to store in config.json, or None when it is too long to be worth keeping there."""
    return c.manifest() if len(c.files) <= limit else None

