"""The server survives any request: tiny sampling values, a request whose generation fails, an engine that
fails as a whole, and the chat API as the official client speaks it. All against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from charnn import api, sample
from charnn.serve import ServeConfig
from charnn.serve.batcher import MAX_RESTARTS
from tests.conftest import Server


@pytest.fixture(scope="module")
def server(run_root: Path) -> Iterator[Server]:
    s = Server(run_root / "checkpoints", ServeConfig(max_tokens_cap=2000))
    yield s
    s.stop()


def _post(server: Server, path: str, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def _events(server: Server, path: str, **body: object) -> list[str]:
    with httpx.stream("POST", f"{server.url}{path}", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def test_tiny_sampling_values_answer_and_the_server_goes_on(server: Server) -> None:
    for body in ({"temperature": 1e-300}, {"top_p": 5e-324}, {"temperature": 5e-324, "top_p": 1e-300, "top_k": 1},
                 {"temperature": 10, "top_k": 1_000_000}):
        r = _post(server, "/v1/completions", prompt="the ", max_tokens=30, seed=1, **body)
        assert r.status_code == 200, (body, r.text)
        assert len(r.json()["choices"][0]["text"]) == 30
    greedy = _post(server, "/v1/completions", prompt="the ", max_tokens=30, temperature=0).json()
    tiny = _post(server, "/v1/completions", prompt="the ", max_tokens=30, temperature=1e-300, seed=2).json()
    assert tiny["choices"][0]["text"] == greedy["choices"][0]["text"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_a_request_for_no_characters_ends_at_once_and_adds_none(server: Server) -> None:
    """max_tokens 0 joins the batch and leaves it before any step: an empty choice, plain or streamed."""
    plain = _post(server, "/v1/completions", prompt="the", max_tokens=0, n=2).json()
    assert [c["text"] for c in plain["choices"]] == ["", ""] and plain["usage"]["completion_tokens"] == 0
    assert {c["finish_reason"] for c in plain["choices"]} == {"length"}
    events = _events(server, "/v1/completions", prompt="the", max_tokens=0)
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["text"] for chunk in chunks for c in chunk["choices"]) == "" and events[-1] == "[DONE]"
    assert _post(server, "/v1/completions", prompt="the", max_tokens=5).json()["usage"]["completion_tokens"] == 5


def test_the_canonical_streaming_loop_of_the_openai_client(server: Server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    text = ""
    for chunk in client.completions.create(model="tiny", prompt="the ", max_tokens=40, seed=3, stream=True):
        text += chunk.choices[0].text  # every tutorial's loop: no chunk without choices unless usage was asked for
    assert len(text) == 40
    chunks = list(client.completions.create(model="tiny", prompt="the ", max_tokens=40, seed=3, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 40
    assert chunks[-2].choices[0].finish_reason == "length"


def test_chat_with_the_official_client_plain_and_streamed(server: Server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    messages = [{"role": "user", "name": "cat", "content": "the dog sat on the mat"}]
    extra = {"assistant_name": "dog", "template": "{name}\n{content}\n\n"}
    done = client.chat.completions.create(model="tiny", messages=messages, max_tokens=300, seed=5, n=2,  # type: ignore[arg-type]
                                          extra_body=extra)
    assert [c.message.role for c in done.choices] == ["assistant", "assistant"]
    assert done.usage is not None and done.usage.prompt_tokens == len("cat\nthe dog sat on the mat\n\ndog\n")
    streamed = ["", ""]
    for chunk in client.chat.completions.create(model="tiny", messages=messages, max_tokens=300, seed=5, n=2,  # type: ignore[arg-type]
                                                stream=True, extra_body=extra):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert streamed == [c.message.content for c in done.choices]
    # the same reply is the completion of the transcript, up to the next speaker ("\n\n")
    raw = _post(server, "/v1/completions", prompt="cat\nthe dog sat on the mat\n\ndog\n", max_tokens=300, seed=5, n=2,
                stop="\n\n").json()["choices"][0]
    assert raw["text"] == done.choices[0].message.content and done.choices[0].finish_reason == raw["finish_reason"]


def test_chat_templates_names_and_bad_messages(server: Server) -> None:
    body = {"messages": [{"role": "system", "name": "the", "content": "cat"}, {"role": "user", "content": "sat on"}],
            "template": "{name} {content} ", "user_name": "dog", "assistant_name": "mat", "max_tokens": 200, "seed": 1}
    done = _post(server, "/v1/chat/completions", **body).json()
    raw = _post(server, "/v1/completions", prompt="the cat dog sat on mat ", stop=" ", max_tokens=200, seed=1).json()
    assert done["usage"]["prompt_tokens"] == len("the cat dog sat on mat "), done
    assert done["choices"][0]["message"]["content"] == raw["choices"][0]["text"]
    cases = [({"messages": []}, "messages"), ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
             ({"messages": [{"role": "user", "content": "the"}], "template": "no content"}, "template"),
             ({"messages": [{"role": "user", "content": "Zebra"}]}, "never saw")]
    for bad, what in cases:
        r = _post(server, "/v1/chat/completions", **bad)
        assert r.status_code == 400 and what in r.json()["error"]["message"] + str(r.json()["error"]["param"]), r.text


def test_score_of_unknown_text_is_a_400_not_a_500(server: Server) -> None:
    r = _post(server, "/v1/score", text="QQ x")
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "only 1 of this text's characters are in the model's vocabulary" in message, r.text


def test_a_405_says_which_methods_are_allowed_and_the_schema_lists_every_status(server: Server) -> None:
    r = httpx.get(f"{server.url}/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["type"]
    schema = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/score"):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "404", "405", "413", "500", "503"} <= set(responses) and "422" not in responses
        assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert {"200", "503"} <= set(schema["paths"]["/health"]["get"]["responses"])


def _alone(run_root: Path, seed: int) -> str:
    model = api.load_run(str(run_root / "checkpoints" / "tiny"), device="cpu")
    return model.generate("the ", length=300, seed=seed, temperature=1.0)


def test_a_request_that_fails_mid_batch_fails_alone(server: Server, run_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = sample.Group.record

    def fragile(self: sample.Group, ids: list[int], scores: list | None = None) -> list[str]:
        if self.cfg.seed == 666 and self.produced == 50:
            raise RuntimeError("this request's bookkeeping broke")
        return record(self, ids, scores)

    monkeypatch.setattr(sample.Group, "record", fragile)

    async def crowd() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = [client.post(f"{server.url}/v1/completions", json={"prompt": "the ", "max_tokens": 300, "seed": s,
                                                                       "temperature": 1.0}) for s in (1, 666, 2)]
            return await asyncio.gather(*calls)

    ok1, bad, ok2 = asyncio.run(crowd())
    assert bad.status_code == 500 and "bookkeeping broke" in bad.json()["error"]["message"]
    assert bad.json()["error"]["code"] == "generation_failed"
    assert ok1.json()["choices"][0]["text"] == _alone(run_root, 1)
    assert ok2.json()["choices"][0]["text"] == _alone(run_root, 2)
    events = _events(server, "/v1/completions", prompt="the ", max_tokens=300, seed=666)
    assert events[-1] == "[DONE]" and "bookkeeping broke" in json.loads(events[-2])["error"]["message"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_an_engine_that_fails_restarts_and_one_that_keeps_failing_reports_unhealthy(
        run_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Server(run_root / "checkpoints", ServeConfig())
    try:
        step = sample.Engine.step
        failures = {"left": 1}

        def flaky(self: sample.Engine) -> list:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise RuntimeError("the forward pass failed")
            return step(self)

        monkeypatch.setattr(sample.Engine, "step", flaky)
        first = _post(s, "/v1/completions", max_tokens=20)
        assert first.status_code == 500 and "forward pass failed" in first.json()["error"]["message"]
        assert _post(s, "/v1/completions", max_tokens=20).status_code == 200  # a fresh engine serves the next one
        assert httpx.get(f"{s.url}/health").status_code == 200
        failures["left"] = 10**9
        for _ in range(MAX_RESTARTS + 1):
            assert _post(s, "/v1/completions", max_tokens=20).status_code == 500
        started = time.perf_counter()
        health = httpx.get(f"{s.url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["models"]["tiny"]["alive"] is False
        refused = _post(s, "/v1/completions", max_tokens=20)
        assert refused.status_code == 503 and "restart the server" in refused.json()["error"]["message"]
        chat = _post(s, "/v1/chat/completions", messages=[{"role": "user", "content": "the"}], max_tokens=5,
                     template="{content}\n")
        assert chat.status_code == 503 and time.perf_counter() - started < 5  # fails fast, never hangs
    finally:
        s.stop()
