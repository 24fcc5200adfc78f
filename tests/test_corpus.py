import hashlib
import json
from pathlib import Path

import pytest

from charnn.errors import CorpusError
from charnn.text import corpora, corpus

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def test_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "d" / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "d" / "c.md").write_text("third", encoding="utf-8")
    c = corpus.resolve(str(tmp_path / "d"), tmp_path)
    assert c.read_text() == "first\nsecond\nthird"  # every text file, sorted, joined with a newline
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
    with pytest.raises(CorpusError, match=r"folder '.*empty' has no readable text file \(0 entries seen: it is empty\)"):
        corpus.resolve(str(tmp_path / "empty"), tmp_path)


def test_python_stdlib_builds_offline(tmp_path: Path) -> None:
    c = corpus.resolve("python-stdlib", tmp_path / "corpora")
    assert c.size > 1_000_000
    assert "def " in next(c.chunks())
    assert (tmp_path / "corpora" / "python-stdlib.txt").exists()




# ---- folders, several sources, compressed files -------------------------------------------------


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return root


def test_folder_is_recursive_sorted_and_fingerprinted(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"b/z.py": b"z = 1\n", "a.c": b"int a;\n", "b/a.h": b"#define A\n",
                                   "README.md": b"# readme\n"})
    c = corpus.resolve(str(src), tmp_path)
    assert [f.name for f in c.files] == ["README.md", "a.c", "b/a.h", "b/z.py"]  # sorted relative paths
    assert c.read_text() == "# readme\nint a;\n#define A\nz = 1\n"
    assert corpus.resolve(str(src), tmp_path).fingerprint == c.fingerprint  # deterministic
    (src / "b" / "z.py").write_bytes(b"z = 2\n")
    edited = corpus.resolve(str(src), tmp_path).fingerprint
    (src / "b" / "z.py").rename(src / "b" / "y.py")
    renamed = corpus.resolve(str(src), tmp_path).fingerprint
    (src / "new.txt").write_bytes(b"new\n")
    added = corpus.resolve(str(src), tmp_path).fingerprint
    assert len({c.fingerprint, edited, renamed, added}) == 4


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    src = _tree(tmp_path / "linux", {"mm/slab.c": b"slab\n", "mm/slab.h": b"hdr\n", "mm/Makefile": b"obj\n",
                                     "mm/gen/out.c": b"generated\n", "docs/a.rst": b"doc\n"})
    c = corpus.resolve(str(src), tmp_path, include=["*.c", "*.h"], exclude=["mm/gen/*"])
    assert [f.name for f in c.files] == ["mm/slab.c", "mm/slab.h"]
    assert c.skipped == {"not in --include": 2, "excluded": 1}
    assert c.describe() == "2 files, 9 bytes (skipped 3: 1 excluded, 2 not in --include)"
    with pytest.raises(CorpusError, match=r"no readable text file \(5 entries seen: .*5 not in --include\) — loosen"):
        corpus.resolve(str(src), tmp_path, include=["*.rs"])


def test_binary_and_invalid_utf8_files_are_skipped_and_counted_or_refused_when_strict(tmp_path: Path) -> None:
    src = _tree(tmp_path / "d", {"good.txt": b"good text\n", "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00",
                                 "latin1.txt": b"caf\xe9\n", "empty.txt": b""})
    c = corpus.resolve(str(src), tmp_path)
    assert [f.name for f in c.files] == ["good.txt"]
    assert c.skipped == {"binary": 1, "not UTF-8": 1, "empty": 1}
    with pytest.raises(CorpusError, match=r"'latin1\.txt' is not valid UTF-8 \(bad byte at offset 3\)"):
        corpus.resolve(str(src), tmp_path, strict=True)
    replaced = corpus.resolve(str(src), tmp_path, replace_errors=True)
    assert [f.name for f in replaced.files] == ["good.txt", "latin1.txt"]  # replaced, kept; the PNG still skipped


def test_hidden_folders_skipped_and_symlink_loop_terminates(tmp_path: Path) -> None:
    src = _tree(tmp_path / "repo", {"main.py": b"print(1)\n", ".git/config": b"[core]\n", ".venv/x.py": b"x\n",
                                    "pkg/mod.py": b"y = 2\n"})
    (src / "pkg" / "loop").symlink_to(src, target_is_directory=True)  # pkg/loop -> repo: a cycle
    (src / "dangling").symlink_to(tmp_path / "nowhere")
    c = corpus.resolve(str(src), tmp_path)
    assert [f.name for f in c.files] == ["main.py", "pkg/mod.py"]
    assert c.skipped == {"hidden": 2, "link loop": 1, "broken link or special file": 1}


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_compressed_files_give_the_same_ids_as_plain(tmp_path: Path, suffix: str) -> None:
    import bz2
    import gzip
    import lzma

    from charnn.text import streams
    text = ("To be, or not to be: that is the question. é😀\n" * 300).encode()
    (tmp_path / "plain.txt").write_bytes(text)
    packed = tmp_path / f"packed.txt{suffix}"
    packed.write_bytes({".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix](text))
    plain, comp = corpus.resolve(str(tmp_path / "plain.txt"), tmp_path), corpus.resolve(str(packed), tmp_path)
    assert comp.fingerprint == plain.fingerprint and comp.size == len(text)  # the text's digest, not the archive's
    a = streams.prepare(plain.chunks, "plain", tmp_path / "cache")
    b = streams.prepare(comp.chunks, "packed", tmp_path / "cache")
    assert a.tokenizer.chars == b.tokenizer.chars and (a.ids[:] == b.ids[:]).all()
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08 not gzip")
    with pytest.raises(CorpusError, match=r"corpus file '.*broken\.gz' cannot be read"):
        corpus.resolve(str(tmp_path / "broken.gz"), tmp_path)


def test_several_sources_in_the_order_given(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    _tree(tmp_path / "lyrics", {"2.lrc": b"[00:01]two\n", "1.lrc": b"[00:00]one\n"})
    (tmp_path / "notes.md.gz").write_bytes(gzip.compress(b"# notes\n"))
    c = corpus.resolve([str(tmp_path / "a.txt"), str(tmp_path / "lyrics"), str(tmp_path / "notes.md.gz")], tmp_path)
    assert c.read_text() == "alpha\n[00:00]one\n[00:01]two\n# notes\n"
    reverse = corpus.resolve([str(tmp_path / "notes.md.gz"), str(tmp_path / "a.txt")], tmp_path)
    assert reverse.read_text() == "# notes\nalpha"


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _tree(tmp_path / "d", {"ok.txt": b"fine\n", "secret.txt": b"no\n"})
    real_open = corpus._open

    def guarded(path: Path):
        if path.name == "secret.txt":  # tests run as root, where chmod 000 does not stop a read
            raise PermissionError(13, "Permission denied")
        return real_open(path)

    monkeypatch.setattr(corpus, "_open", guarded)
    with pytest.raises(CorpusError, match=r"corpus file 'secret\.txt' cannot be read \(permission denied\)"):
        corpus.resolve(str(src), tmp_path)


def test_shakespeare_ships_inside_the_package_and_needs_no_network(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    c = corpus.resolve("shakespeare", tmp_path / "corpora")
    assert c.fingerprint == corpora.SHAKESPEARE_SHA256 and c.size == corpora.SHAKESPEARE_BYTES
    assert c.read_text().startswith("First Citizen:")
    assert not (tmp_path / "corpora").exists()  # nothing downloaded or unpacked
    if SHARED.exists():
        assert corpus.resolve(str(SHARED), tmp_path).fingerprint == c.fingerprint  # same text as the shared copy


def test_resume_refuses_a_changed_folder_and_names_the_change(tmp_path: Path) -> None:
    from charnn import api
    from charnn.errors import UsageError
    from tests.conftest import tiny_model, tiny_train

    src = _tree(tmp_path / "src", {f"m{i}.py": (f"def f{i}(x):\n    return x + {i}\n" * 40).encode() for i in range(6)})
    api.start_training(str(src), tiny_model(), tiny_train(max_steps=4, eval_every=2), name="r", device="cpu",
                       show_progress=False)
    recorded = json.loads((api.Paths().checkpoints / "r" / "config.json").read_text())["corpus"]
    assert recorded["files"] == 6 and recorded["skipped"] == {} and recorded["sources"] == [str(src.resolve())]
    assert [m[0] for m in recorded["manifest"]] == [f"m{i}.py" for i in range(6)]
    (src / "m1.py").write_text("def changed():\n    pass\n" * 40, encoding="utf-8")
    (src / "m2.py").unlink()
    (src / "new.py").write_text("x = 1\n" * 40, encoding="utf-8")
    with pytest.raises(UsageError, match=r"not the one run 'r' was trained on \(added: new\.py; removed: m2\.py; "
                                         r"modified: m1\.py\)"):
        api.resume_training("r", max_steps=6, device="cpu", show_progress=False)
