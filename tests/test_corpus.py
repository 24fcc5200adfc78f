import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from charnn import corpus
from charnn.errors import CorpusError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def test_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "d" / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "d" / "skip.md").write_text("not text corpus", encoding="utf-8")
    c = corpus.resolve(str(tmp_path / "d"), tmp_path)
    assert c.read_text() == "first\nsecond"  # sorted, joined, separated by a newline
    single = corpus.resolve(str(tmp_path / "d" / "a.txt"), tmp_path)
    assert single.read_text() == "first"
    assert single.fingerprint == hashlib.sha256(b"first").hexdigest()


def test_chunks_never_split_a_character(tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    text = "é😀中" * 1000
    path.write_text(text, encoding="utf-8")
    c = corpus.resolve(str(path), tmp_path)
    assert "".join(c.chunks(block=7)) == text


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"x", "is empty"), (b"ab\x00cd", "looks binary"),
     (b"good text \xff\xfe here", "not valid UTF-8 (bad byte at offset 10)")],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message.replace("(", r"\(").replace(")", r"\)")):
        corpus.resolve(str(path), tmp_path)


def test_replace_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good \xff text")
    assert corpus.resolve(str(path), tmp_path, replace_errors=True).read_text() == "good \ufffd text"


def test_missing_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"not found .* built-in name"):
        corpus.resolve("nope.txt", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no \.txt files"):
        corpus.resolve(str(tmp_path / "empty"), tmp_path)


def test_python_stdlib_builds_offline(tmp_path: Path) -> None:
    c = corpus.resolve("python-stdlib", tmp_path / "corpora")
    assert c.size > 1_000_000
    assert "def " in next(c.chunks())
    assert (tmp_path / "corpora" / "python-stdlib.txt").exists()


# ---- the real download path, against a server on 127.0.0.1 --------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[callable]:
    servers = []

    def start(payload: bytes) -> str:
        root = tmp_path / f"www{len(servers)}"
        root.mkdir()
        (root / "input.txt").write_bytes(payload)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(root), **k)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/input.txt"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.skipif(not SHARED.exists(), reason="tiny-shakespeare is not beside the checkout")
def test_download_success(tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(corpus.URL_ENV, serve(SHARED.read_bytes()))
    c = corpus.resolve("shakespeare", tmp_path / "corpora")
    assert c.size == corpus.SHAKESPEARE_BYTES and c.fingerprint == corpus.SHAKESPEARE_SHA256
    assert c.read_text().startswith("First Citizen:")
    # second use is offline: the file is on disk and verified
    monkeypatch.setenv(corpus.URL_ENV, "http://127.0.0.1:9/nothing")
    assert corpus.resolve("shakespeare", tmp_path / "corpora").fingerprint == corpus.SHAKESPEARE_SHA256


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, serve) -> None:
    url = serve(b"First Citizen: not the real file\n")
    with pytest.raises(CorpusError, match=r"sha256 .* expected"):
        corpus.resolve("shakespeare", tmp_path / "corpora", url=url)
    assert list((tmp_path / "corpora").iterdir()) == []  # no partial or wrong file left behind


def test_download_server_down(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port that is certainly closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CorpusError, match="could not download"):
        corpus.resolve("shakespeare", tmp_path / "corpora", url=f"http://127.0.0.1:{port}/input.txt")
    assert not (tmp_path / "corpora" / "shakespeare.txt").exists()
