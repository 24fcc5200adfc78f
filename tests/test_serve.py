"""`charnn serve`: the API against a real uvicorn server on 127.0.0.1 (a tiny run trained here)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from charnn import api
from charnn.serve import ServeConfig
from tests.conftest import Server, free_port, tiny_model


@pytest.fixture(scope="module")
def server(run_root: Path) -> Iterator[Server]:
    s = Server(run_root / "checkpoints", ServeConfig(max_tokens_cap=2000))
    yield s
    s.stop()


def _complete(server: Server, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)


def _stream_text(server: Server, **body: object) -> tuple[str, list[dict]]:
    chunks = []
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        chunks.append(json.loads(line[6:]))
    text = "".join(c["text"] for chunk in chunks for c in chunk["choices"])
    return text, chunks


def test_models_health_and_schema(server: Server) -> None:
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    facts = models["data"][0]["charnn"]
    assert facts["cell"] == "lstm" and facts["layers"] == 2 and facts["hidden"] == 32 and facts["best_val_bpc"] > 0
    assert facts["characters_seen"] == 60 * 8 * 32
    health = httpx.get(f"{server.url}/health").json()
    assert health == {"status": "ok", "models": {"tiny": {"rows": 0, "waiting": 0, "alive": True}}}
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/completions", "/v1/score", "/v1/models", "/health"} <= set(schema["paths"])
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<title>charnn</title>" in page.text and "http" not in page.text.split(
        "<script>")[0].replace("http-equiv", "")  # self-contained: no external stylesheet or script


def test_completion_streamed_or_not_is_the_same_text_and_matches_the_library(server: Server, run_root: Path) -> None:
    r = _complete(server, prompt="the ", max_tokens=120, seed=7, temperature=0.9)
    assert r.status_code == 200
    body = r.json()
    choice = body["choices"][0]
    assert len(choice["text"]) == 120 and choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 120, "total_tokens": 124}
    streamed, chunks = _stream_text(server, prompt="the ", max_tokens=120, seed=7, temperature=0.9)
    assert streamed == choice["text"]
    # as OpenAI streams: the last chunk carries finish_reason; usage only when asked for, then in a chunk of its own
    assert [c["finish_reason"] for c in chunks[-1]["choices"]] == ["length"] and all("usage" not in c for c in chunks)
    with_usage, chunks = _stream_text(server, prompt="the ", max_tokens=120, seed=7, temperature=0.9,
                                      stream_options={"include_usage": True})
    assert with_usage == streamed and chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 120
    assert [c["finish_reason"] for c in chunks[-2]["choices"]] == ["length"]
    model = api.load_run(str(run_root / "checkpoints" / "tiny"), device="cpu")
    assert model.generate("the ", length=120, seed=7, temperature=0.9) == choice["text"]  # one engine for all


def test_stop_strings_end_a_completion_and_are_left_out(server: Server) -> None:
    free = _complete(server, prompt="the ", max_tokens=300, seed=3).json()["choices"][0]["text"]
    stop = "sat"
    assert stop in free
    cut = _complete(server, prompt="the ", max_tokens=300, seed=3, stop=[stop, "zzz"]).json()["choices"][0]
    assert cut == {"text": free[: free.index(stop)], "index": 0, "logprobs": None, "finish_reason": "stop"}
    streamed, _ = _stream_text(server, prompt="the ", max_tokens=300, seed=3, stop=stop)
    assert streamed == cut["text"]


def test_same_seed_alone_and_inside_a_busy_batch(server: Server) -> None:
    alone = _complete(server, prompt="on the ", max_tokens=200, seed=42, n=2).json()

    async def busy() -> dict:
        async with httpx.AsyncClient(timeout=60) as client:
            others = [client.post(f"{server.url}/v1/completions",
                                  json={"prompt": "cat ", "max_tokens": 400, "seed": s, "temperature": 1.2, "top_k": 5})
                      for s in range(6)]
            mine = client.post(f"{server.url}/v1/completions", json={"prompt": "on the ", "max_tokens": 200,
                                                                     "seed": 42, "n": 2})
            results = await asyncio.gather(*others, mine)
        assert all(r.status_code == 200 for r in results)
        return results[-1].json()

    crowded = asyncio.run(busy())
    assert [c["text"] for c in crowded["choices"]] == [c["text"] for c in alone["choices"]]
    assert alone["choices"][0]["text"] != alone["choices"][1]["text"]  # n samples differ from each other


@pytest.mark.parametrize("body, status, message", [
    ({"prompt": "the Zebra"}, 400, r"prompt has character\(s\) model 'tiny' never saw: 'Z' — remove them"),
    ({"model": "nope"}, 404, r"model 'nope' is not served here — use one of: tiny"),
    ({"max_tokens": 2001}, 400, r"max_tokens 2001 is over this server's cap of 2000"),
    ({"max_tokens": -1}, 400, r"max_tokens: Input should be greater than or equal to 0"),
    ({"n": 17}, 400, r"^n: Input should be less than or equal to 16"),
    ({"prompt": ["the ", "cat "], "n": 9}, 400, r"2 prompt\(s\) x n 9 asks for 18 completions"),
    ({"temperature": -0.5}, 400, r"temperature: Input should be greater than or equal to 0"),
    ({"top_p": 0}, 400, r"top_p: Input should be greater than 0"),
    ({"top_k": 0}, 400, r"top_k: Input should be greater than or equal to 1"),
    ({"seed": -3}, 400, r"seed: Input should be greater than or equal to 0"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, r"stop takes up to 4 non-empty strings"),
    ({"stop": ""}, 400, r"stop takes up to 4 non-empty strings"),
    ({"max_tokens": "many"}, 400, r"max_tokens: Input should be a valid integer"),
    ({"prompt": "x" * 20_001}, 400, r"prompt has 20,001 characters; this server primes at most 20,000"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(server: Server, body: dict, status: int, message: str) -> None:
    import re

    r = _complete(server, **body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert re.search(message, error["message"]), error
    assert "Traceback" not in r.text


def test_malformed_bodies_routes_and_sizes(server: Server) -> None:
    bad_json = httpx.post(f"{server.url}/v1/completions", content=b'{"prompt": ', timeout=10,
                          headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    not_object = httpx.post(f"{server.url}/v1/completions", json=[1, 2], timeout=10)
    assert not_object.status_code == 400 and "JSON object" in not_object.json()["error"]["message"]
    huge = httpx.post(f"{server.url}/v1/score", json={"text": "the " * 300_000}, timeout=10)
    assert huge.status_code == 413 and "over 1,048,576 bytes" in huge.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies as the body arrives
        yield b'{"text": "'
        for _ in range(300):
            yield b"the " * 1000
        yield b'"}'

    streamed_huge = httpx.post(f"{server.url}/v1/score", content=chunked(), timeout=10,
                               headers={"content-type": "application/json"})
    assert streamed_huge.status_code == 413
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert missing.status_code == 404 and "no such endpoint" in missing.json()["error"]["message"]
    wrong = httpx.get(f"{server.url}/v1/completions")
    assert wrong.status_code == 405 and "not allowed" in wrong.json()["error"]["message"]
    assert httpx.post(f"{server.url}/v1/score", json={"text": "a"}).status_code == 400
    assert httpx.post(f"{server.url}/v1/score", json={"model": "../../etc/passwd", "text": "the cat"}).status_code == 404


def test_score(server: Server) -> None:
    r = httpx.post(f"{server.url}/v1/score", json={"text": "the cat sat on the mat Q"}).json()
    assert r["characters"] == 23 and r["unknown"] == {"Q": 1} and r["unknown_characters"] == 1
    assert r["bits_per_character"] == pytest.approx(r["nats"] / 0.6931471805599453)
    assert r["perplexity"] == pytest.approx(2.718281828459045 ** r["nats"])
    unreadable = httpx.post(f"{server.url}/v1/score", json={"text": "QQQ☃"})
    assert unreadable.status_code == 400
    assert unreadable.json()["error"]["message"].startswith(
        "model 'tiny': no character of this text is in the model's vocabulary ('Q', '☃')")


def test_client_disconnect_stops_generation(server: Server) -> None:
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=60,
                      json={"prompt": "the ", "max_tokens": 2000, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # one chunk, then hang up
    deadline = time.time() + 5
    while time.time() < deadline and httpx.get(f"{server.url}/health").json()["models"]["tiny"]["rows"]:
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/health").json()["models"]["tiny"] == {"rows": 0, "waiting": 0, "alive": True}


def test_api_key_and_a_full_queue(run_root: Path) -> None:
    s = Server(run_root / "checkpoints", ServeConfig(api_key="sesame", max_rows=1, max_waiting=1))
    try:
        assert httpx.get(f"{s.url}/v1/models").status_code == 401
        wrong = httpx.get(f"{s.url}/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Authorization: Bearer KEY" in wrong.json()["error"]["message"]
        assert httpx.get(f"{s.url}/health").status_code == 200  # not an API call
        assert httpx.get(f"{s.url}/").status_code == 200
        auth = {"Authorization": "Bearer sesame"}
        assert httpx.get(f"{s.url}/v1/models", headers=auth).status_code == 200

        async def crowd() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60, headers=auth) as client:
                calls = [client.post(f"{s.url}/v1/completions", json={"prompt": "the ", "max_tokens": 1500})
                         for _ in range(4)]
                return await asyncio.gather(*calls)

        results = asyncio.run(crowd())
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and 503 in codes, codes  # one in the batch, one waiting, the rest refused
        busy = next(r for r in results if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]["message"]
    finally:
        s.stop()


def test_requests_the_batch_has_room_for_are_never_refused() -> None:
    """Only requests behind a full batch count against max_waiting, not ones the engine thread has yet to take."""
    from charnn.model.network import CharRNN
    from charnn.sample import SampleConfig
    from charnn.serve.batcher import Batcher, Busy
    from charnn.text.tokenizer import CharTokenizer

    tok = CharTokenizer("abc")
    cfg = replace(tiny_model(), vocab_size=tok.vocab_size)
    batcher = Batcher(CharRNN(cfg), tok, max_rows=2, max_waiting=1)

    async def crowd() -> None:
        long = SampleConfig(length=1_000_000, seed=1)
        # No await in between, so the engine thread may not have taken any of them yet: two fit the
        # batch, the third is the one allowed to wait, the fourth is refused.
        tickets = [batcher.submit("a", long) for _ in range(3)]
        with pytest.raises(Busy, match="1 requests are already waiting"):
            batcher.submit("a", long)
        await asyncio.sleep(0.2)
        assert batcher.load == (2, 1)
        for t in tickets:
            t.cancel()
        batcher.close()

    asyncio.run(crowd())


def test_all_torch_work_of_a_server_runs_on_its_one_worker_thread(run_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading, priming, stepping and scoring happen on the worker: a second thread that ever ran a kernel
    keeps an OpenMP team alive and slows every step of the engine (serve/worker.py)."""
    import threading

    from fastapi.testclient import TestClient

    from charnn.model.network import CharRNN, Stepper
    from charnn.serve import create_app, load

    seen: set[str] = set()

    def record(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def recorded(*args: object, **kwargs: object) -> object:
            seen.add(threading.current_thread().name)
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, recorded)

    record(CharRNN, "__init__")
    record(CharRNN, "forward")
    record(Stepper, "__init__")
    record(Stepper, "step_layers")
    config = ServeConfig()
    with TestClient(create_app(load(["tiny"], run_root / "checkpoints", "cpu", config), config)) as client:
        assert client.post("/v1/completions", json={"prompt": "the", "max_tokens": 20, "n": 2}).status_code == 200
        assert client.post("/v1/completions", json={"prompt": "the cat sat on", "max_tokens": 5}).status_code == 200
        assert client.post("/v1/score", json={"text": "the cat sat on the mat"}).status_code == 200
    assert seen == {"charnn-worker"}


def test_a_finished_stream_ends_at_once_however_long_its_pause(run_root: Path) -> None:
    """A stream paces itself between chunks; the request's end cuts the pause short, so its client
    can send the next request at once (under load, pauses last 100 ms)."""
    from charnn.serve.batcher import Batcher
    from charnn.serve.collector import Collector
    from charnn.serve.protocol import Sampling

    model = api.load_run(str(run_root / "checkpoints" / "tiny"), device="cpu")
    batcher = Batcher(model.model, model.tokenizer)

    async def collect() -> float:
        from charnn.serve.collector import submit

        tickets = submit(batcher, ["the "], Sampling(seed=1), 30, [])
        start = time.perf_counter()
        whole = await Collector(tickets, 1, [], pace=lambda: 60.0).whole()
        assert len(whole[0].text) == 30 and [d.finish_reason for d in whole] == ["length"]
        return time.perf_counter() - start

    try:
        assert asyncio.run(collect()) < 20
    finally:
        batcher.close()


def test_a_long_score_shares_the_worker_with_the_streams(run_root: Path) -> None:
    """The worker runs a score between rounds, and the batches step between its windows: a long text
    never stalls generation for more than one window."""
    from charnn.sample import SampleConfig
    from charnn.serve.batcher import Batcher

    model = api.load_run(str(run_root / "checkpoints" / "tiny"), device="cpu")
    batcher = Batcher(model.model, model.tokenizer)
    text = "the cat sat on the mat " * 8000  # 184,000 characters: many windows per stream

    def stepped(ticket) -> int:
        with ticket.lock:
            return len(ticket.pieces)

    alone = model.score(text)

    async def during_score() -> int:
        ticket = batcher.submit("the ", SampleConfig(length=10**7, seed=1))
        while stepped(ticket) == 0:
            await asyncio.sleep(0.01)
        before = stepped(ticket)
        shared = await asyncio.wrap_future(batcher.worker.call(lambda: model.score(text, between=batcher.worker.share)))
        assert shared.nats == pytest.approx(alone.nats)
        after = stepped(ticket)
        ticket.cancel()
        return after - before

    try:
        assert asyncio.run(during_score()) >= 20
    finally:
        batcher.close()


def test_the_openai_client_completes_and_streams(server: Server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    done = client.completions.create(model="tiny", prompt="the ", max_tokens=50, seed=11, temperature=0.7)
    assert len(done.choices[0].text) == 50 and done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 50
    pieces = [c.choices[0].text for c in client.completions.create(model="tiny", prompt="the ", max_tokens=50,
                                                                    seed=11, temperature=0.7, stream=True)
              if c.choices]
    assert "".join(pieces) == done.choices[0].text
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_the_serve_command_starts_prints_its_url_and_stops_on_ctrl_c(run_root: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "charnn", "serve", "tiny", "--port", str(port)],
                            cwd=run_root, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stderr.readline() if proc.stderr else ""
        # tiny's alphabet has no ':' and cannot spell the speakers: its chat template is its own, and it says so
        assert first.startswith("chat with tiny: transcript '{content}\\n\\n'"), first
        line = proc.stderr.readline() if proc.stderr else ""
        assert line.startswith(f"serving tiny at http://127.0.0.1:{port}/"), line
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"max_tokens": 5}, timeout=30)
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 5
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
