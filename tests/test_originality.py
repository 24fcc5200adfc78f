"""Originality: the index's matches equal a brute-force search, copies are found where they were planted, a
prime is not counted, a mismatched corpus is refused, and an index killed while building is never used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charnn import api
from charnn.cli import app
from charnn.run import originality
from charnn.run.originality import Index, build
from tests.conftest import train_run

runner = CliRunner()


def brute_longest(corpus: list[int], query: list[int], i: int) -> int:
    best = 0
    for j in range(len(corpus)):
        k = 0
        while i + k < len(query) and j + k < len(corpus) and query[i + k] == corpus[j + k]:
            k += 1
        best = max(best, k)
    return best


@settings(max_examples=60, deadline=None)
@given(corpus=st.lists(st.integers(0, 3), min_size=1, max_size=120), query=st.lists(st.integers(0, 3), max_size=40),
       wide=st.booleans())
def test_matches_equal_brute_force(corpus: list[int], query: list[int], wide: bool) -> None:
    dtype = np.uint16 if wide else np.uint8  # two-byte ids sort as bytes too
    ids = np.array([c * 257 if wide else c for c in corpus], dtype)
    q = np.array([c * 257 if wide else c for c in query], dtype)
    index = Index(ids, build(ids), [("f", 0)], None)
    lengths, places = index.matches(q)
    assert lengths.tolist() == [brute_longest(ids.tolist(), q.tolist(), i) for i in range(len(q))]
    for i, (n, at) in enumerate(zip(lengths.tolist(), places.tolist(), strict=True)):
        assert n == 0 or ids[at:at + n].tolist() == q[i:i + n].tolist()


@settings(max_examples=60, deadline=None)
@given(corpus=st.lists(st.integers(0, 2), min_size=1, max_size=80), query=st.lists(st.integers(0, 2), max_size=40),
       k=st.integers(1, 8), start=st.integers(0, 10))
def test_spans_are_the_union_of_long_matches_after_the_prime(corpus: list[int], query: list[int], k: int,
                                                             start: int) -> None:
    """Every K: a character is copied exactly when some match of >= K characters covers it, after the prime."""
    ids, q = np.array(corpus, np.uint8), np.array(query, np.uint8)
    start = min(start, len(query))
    report = Index(ids, build(ids), [("f", 0)], None).report("x" * len(query), q, start, k)
    covered = [False] * len(query)
    for i in range(len(query)):
        n = brute_longest(corpus, query, i)
        if n >= k:
            for j in range(i, i + n):
                covered[j] = True
    marked = [False] * len(query)
    for s in report.spans:
        assert start <= s.start < s.end
        for j in range(s.start, s.end):
            marked[j] = True
    assert marked == [c and j >= start for j, c in enumerate(covered)]
    assert report.copied == sum(marked) and all(a.end < b.start for a, b in zip(report.spans, report.spans[1:], strict=False))


PLANTED = "Whereof the winter king did sing of seven silver swans\n"


def test_a_planted_line_is_flagged_with_its_place(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("the cat sat on the mat\n" * 200, encoding="utf-8")
    (folder / "b.txt").write_text("the dog ran\n" * 30 + PLANTED + "the dog ran\n" * 200, encoding="utf-8")
    (folder / "c.txt").write_text("the mat sat on the cat\n" * 100, encoding="utf-8")
    train_run(folder, name="r", max_steps=5, eval_every=5, batch_size=4, seq_len=16)
    model = api.load_run("r")
    text = "the cat " + PLANTED + "\nmat"  # the corpus never has a blank line after the planted one
    report = model.originality(text, start=4)
    assert report.longest is not None and report.where == "b.txt:31"
    assert text[report.longest.start:report.longest.end].startswith(PLANTED[:-1])
    assert report.copied >= len(PLANTED) - 1 and report.fraction > 0.5
    # The prime is not generated: the same copy inside the prime counts nothing.
    assert model.originality(text, start=len(text) - 4).copied == 0


def test_sample_marks_copies_and_reports_them(pattern_file: Path) -> None:
    train_run(pattern_file, name="r", max_steps=150, eval_every=50)  # learns the repeated line by heart
    result = runner.invoke(app, ["sample", "r", "--originality", "--prime", "0123", "--temperature", "0",
                                 "--length", "120"])
    assert result.exit_code == 0, result.output
    assert "⟦" in result.stdout and "⟧" in result.stdout  # not a terminal: plain markers
    line = next(ln for ln in result.output.splitlines() if ln.startswith("originality: "))
    assert "of 120 generated characters" in line and "longest" in line and "line " in line
    data = json.loads(runner.invoke(app, ["originality", "r", "--samples", "2", "--length", "100",
                                          "--temperatures", "0.5,1.0", "--json"]).stdout)
    assert [row["temperature"] for row in data["rows"]] == [0.5, 1.0]
    assert all(0 <= row["copied_fraction"] <= 1 for row in data["rows"])


def test_a_changed_or_missing_corpus_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat\n" * 300, encoding="utf-8")
    train_run(corpus, name="r", max_steps=5, eval_every=5)
    moved = tmp_path / "moved.txt"
    corpus.rename(moved)
    gone = runner.invoke(app, ["sample", "r", "--originality", "--length", "10"])
    assert gone.exit_code != 0 and "give it with --corpus PATH" in gone.output
    other = tmp_path / "other.txt"
    other.write_text("the cat sat on the mat\n" * 299, encoding="utf-8")
    wrong = runner.invoke(app, ["sample", "r", "--originality", "--length", "10", "--corpus", str(other)])
    assert wrong.exit_code != 0 and "is not the one run 'r' was trained on" in wrong.output
    right = runner.invoke(app, ["sample", "r", "--originality", "--length", "10", "--corpus", str(moved)])
    assert right.exit_code == 0, right.output


@pytest.mark.slow
def test_an_index_killed_while_building_is_never_used(tmp_path: Path) -> None:
    """SIGKILL during the build leaves no index (only temp files, which a later build ignores)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    ids_path = tmp_path / "ids.npy"
    np.save(ids_path, np.random.default_rng(0).integers(0, 60, 60_000_000).astype(np.uint8))
    script = (f"import numpy as np; from pathlib import Path; from charnn.run.originality import Index; "
              f"ids = np.load({str(ids_path)!r}); print('building', flush=True); "
              f"Index.open(ids, Path({str(cache / 'c')!r}), lambda: [('f', 0)], None)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "building"
    time.sleep(0.5)  # inside the build: sorting 60M suffixes takes seconds on any machine
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed, not finished
    assert not list(cache.glob("*.sa.json"))  # the description is written last: no complete index
    ids = np.load(ids_path)[:5000]
    index = Index.open(ids, cache / "c", lambda: [("f", 0)], None)  # another length: built fresh, correct
    assert index.matches(ids[100:130])[0][0] == 30
    assert originality.INDEX_VERSION == 1


def test_completions_and_the_repl_report_copies(pattern_file: Path) -> None:
    import io

    from fastapi.testclient import TestClient

    from charnn.sample import SampleConfig
    from charnn.serve import ServeConfig, create_app, load
    from charnn.write.repl import Repl

    train_run(pattern_file, name="r", max_steps=150, eval_every=50)
    config = ServeConfig()
    client = TestClient(create_app(load(["r"], Path("checkpoints"), "cpu", config), config))
    body = {"prompt": "0123", "max_tokens": 60, "temperature": 0, "originality": True, "min_copy": 20}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]
    report = whole["originality"]
    assert report["generated"] == 60 and report["copied"] >= 50 and report["longest"]["where"].startswith("line ")
    assert all(0 <= a < b <= 60 for a, b in report["spans"])
    chunks = []
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line[6:]))
    last = [c for chunk in chunks for c in chunk["choices"] if c.get("finish_reason")]
    assert len(last) == 1 and last[0]["originality"] == report  # streamed: with the last chunk, the same report
    assert all("originality" not in c for chunk in chunks for c in chunk["choices"] if not c.get("finish_reason"))
    plain = client.post("/v1/completions", json={"prompt": "0123", "max_tokens": 5}).json()["choices"][0]
    assert "originality" not in plain
    # A run whose corpus is gone: a 400 naming the fix, and the server goes on.
    pattern_file.rename(pattern_file.with_suffix(".moved"))
    fresh = TestClient(create_app(load(["r"], Path("checkpoints"), "cpu", config), config))
    gone = fresh.post("/v1/completions", json=body)
    assert gone.status_code == 400 and gone.json()["error"]["code"] == "originality_unavailable"
    assert "--corpus PATH" in gone.json()["error"]["message"]
    assert fresh.post("/v1/completions", json={"prompt": "0123", "max_tokens": 5}).status_code == 200
    pattern_file.with_suffix(".moved").rename(pattern_file)
    # The REPL: :copies on marks a reply's copies after it.
    model = api.load_run("r")
    out = io.StringIO()
    Repl(model.model, model.tokenizer, model.run_dir, SampleConfig(length=60, temperature=0.0),
         stdin=io.StringIO(":copies on\n0123\n:quit\n"), stdout=out,
         originality=lambda text, start: model.originality(text, start)).loop()
    said = out.getvalue()
    assert "copies on" in said and "⟦" in said and "originality: " in said and "longest" in said


@settings(max_examples=25, deadline=None)
@given(base=st.lists(st.integers(0, 2), min_size=1, max_size=6), repeats=st.integers(20, 60),
       cut=st.integers(0, 100), mutate=st.integers(0, 200))
def test_long_matches_past_the_compared_head_equal_brute_force(base: list[int], repeats: int, cut: int,
                                                                mutate: int) -> None:
    """Periodic text: matches of hundreds of characters, so the search's ties go past its first bytes."""
    corpus = (base * repeats)[: len(base) * repeats - cut % max(1, len(base))] + [3] + base * 5
    query = (base * repeats)[cut % len(base):][:250]
    if query:
        query[mutate % len(query)] = 3
    ids, q = np.array(corpus, np.uint8), np.array(query, np.uint8)
    lengths, _ = Index(ids, build(ids), [("f", 0)], None).matches(q)
    assert lengths.tolist() == [brute_longest(corpus, query, i) for i in range(len(query))]


def test_a_match_longer_than_the_compared_head() -> None:
    corpus = [0, 1, 2] * 100 + [3] + [0, 1, 2] * 30 + [1]
    query = [1, 2, 0] * 60 + [1]
    ids, q = np.array(corpus, np.uint8), np.array(query, np.uint8)
    lengths, _ = Index(ids, build(ids), [("f", 0)], None).matches(q)
    assert lengths[0] == len(query) > originality.HEAD  # the whole query, decided past the head
    assert lengths.tolist() == [brute_longest(corpus, query, i) for i in range(len(query))]
