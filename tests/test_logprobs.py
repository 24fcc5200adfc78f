"""Logprobs: each generated character's log-probability and the top alternatives, in the engine and through
the API (completions and chat, whole and streamed, read by the official openai client)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from charnn import api
from charnn.sample import SampleConfig, generate
from charnn.serve import ServeConfig
from tests.conftest import Server


@pytest.fixture(scope="module")
def server(run_root: Path) -> Iterator[Server]:
    s = Server(run_root / "checkpoints", ServeConfig(max_tokens_cap=500))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tiny(run_root: Path) -> api.CharModel:
    return api.load_run(str(run_root / "checkpoints" / "tiny"), device="cpu")


def reference(model: api.CharModel, prompt: str, text: str) -> torch.Tensor:
    """log_softmax of the model's logits at every generated position, from one forward pass: (len(text), V)."""
    ids = torch.tensor([model.tokenizer.encode(prompt + text)])
    with torch.inference_mode():
        logits, _ = model.model(ids, model.model.init_state(1, torch.device("cpu")))
    return torch.log_softmax(logits[0, len(prompt) - 1 : len(prompt) + len(text) - 1].double(), dim=-1)


def check_entries(model: api.CharModel, prompt: str, text: str, tokens: list[str], chosen: list[float],
                  tops: list[dict[str, float]], k: int) -> None:
    assert "".join(tokens) == text and len(chosen) == len(text) == len(tops)
    expected = reference(model, prompt, text)
    chars = model.tokenizer.chars
    for j, (char, logprob, top) in enumerate(zip(tokens, chosen, tops, strict=True)):
        assert math.isclose(logprob, float(expected[j, chars.index(char)]), abs_tol=1e-5)
        values, where = expected[j].topk(k)
        assert list(top) == [chars[i] for i in where.tolist()] or len(set(values.tolist())) < k  # ties may swap
        for c, v in top.items():
            assert math.isclose(v, float(expected[j, chars.index(c)]), abs_tol=1e-5)


def test_the_engine_records_what_log_softmax_says(tiny: api.CharModel) -> None:
    cfg = SampleConfig(length=40, seed=3, temperature=1.3, top_k=4, num_samples=3, logprobs=3)
    run = generate(tiny.model, tiny.tokenizer, "the ", cfg)
    for _ in run:
        pass
    group = run._group
    assert group is not None
    for text, scores in zip(run.texts, group.logprobs, strict=True):
        check_entries(tiny, "the ", text, [s.char for s in scores], [s.logprob for s in scores],
                      [dict(s.top) for s in scores], 3)
    plain = generate(tiny.model, tiny.tokenizer, "the ", SampleConfig(length=40, seed=3, temperature=1.3, top_k=4,
                                                                       num_samples=3))
    for _ in plain:
        pass
    assert plain.texts == run.texts  # asking for logprobs changes no draw


def test_logprobs_zero_gives_each_characters_own_and_no_alternatives(server: Server, tiny: api.CharModel) -> None:
    # Found by the strict schema fuzz: logprobs 0 was a 500 (the engine indexed an empty top-k).
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": "the ", "max_tokens": 20, "n": 2, "seed": 1,
                                                         "logprobs": 0}, timeout=30)
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        lp = choice["logprobs"]
        assert lp["top_logprobs"] == [{}] * len(choice["text"])
        check_entries(tiny, "the ", choice["text"], lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], 0)


def test_completions_logprobs_whole_and_streamed_through_the_openai_client(server: Server, tiny: api.CharModel) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    done = client.completions.create(model="tiny", prompt="the ", max_tokens=30, seed=5, logprobs=2, stop=["dog"])
    choice = done.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
    check_entries(tiny, "the ", choice.text, lp.tokens, lp.token_logprobs, lp.top_logprobs, 2)
    assert lp.text_offset == list(range(4, 4 + len(choice.text)))
    streamed = [c.choices[0] for c in client.completions.create(model="tiny", prompt="the ", max_tokens=30, seed=5,
                                                                  logprobs=2, stop=["dog"], stream=True) if c.choices]
    assert "".join(c.text for c in streamed) == choice.text
    assert [t for c in streamed if c.logprobs for t in c.logprobs.tokens or []] == lp.tokens
    assert [o for c in streamed if c.logprobs for o in c.logprobs.text_offset or []] == lp.text_offset
    none = client.completions.create(model="tiny", prompt="the ", max_tokens=5, seed=5)
    assert none.choices[0].logprobs is None


def test_chat_logprobs_whole_and_streamed(server: Server, tiny: api.CharModel) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    names = {"assistant_name": "dog", "user_name": "cat", "template": "{name} {content}  "}  # the words' alphabet
    messages = [{"role": "user", "content": "the mat"}]
    done = client.chat.completions.create(model="tiny", messages=messages, max_tokens=25, seed=2, logprobs=True,  # type: ignore[arg-type]
                                          top_logprobs=3, extra_body=names)
    choice = done.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    prompt = "cat the mat  dog "
    check_entries(tiny, prompt, choice.message.content or "", [e.token for e in content], [e.logprob for e in content],
                  [{t.token: t.logprob for t in e.top_logprobs} for e in content], 3)
    assert all(e.bytes == list(e.token.encode()) for e in content)
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=25, seed=2, logprobs=True,  # type: ignore[arg-type]
                                              top_logprobs=3, extra_body=names, stream=True)
    tokens = [e.token for c in streamed if c.choices and c.choices[0].logprobs
              for e in (c.choices[0].logprobs.content or [])]
    assert tokens == [e.token for e in content]


@pytest.mark.parametrize("route, body, message", [
    ("completions", {"prompt": "the ", "logprobs": 6}, r"logprobs: Input should be less than or equal to 5"),
    ("completions", {"prompt": "the ", "echo": True}, r"echo: Input should be False"),
    ("chat/completions", {"messages": [{"role": "user", "content": "the"}], "top_logprobs": 2,
                          "assistant_name": "dog", "user_name": "cat"}, r"top_logprobs needs logprobs: true"),
    ("chat/completions", {"messages": [{"role": "user", "content": "the"}], "logprobs": True, "top_logprobs": 21},
     r"top_logprobs: Input should be less than or equal to 20"),
])
def test_bad_logprobs_requests_are_400(server: Server, route: str, body: dict, message: str) -> None:
    import re

    r = httpx.post(f"{server.url}/v1/{route}", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert re.search(message, r.json()["error"]["message"]), r.text


def test_default_chat_on_a_lowercase_model_uses_names_it_can_spell(tmp_path: Path) -> None:
    """A lowercase corpus never saw 'U' or 'A': the default speakers become 'user' and 'assistant' (the template's
    ':' and newlines it knows), and a system message, whose name it cannot spell at all, goes in without one; a
    request that names a speaker it cannot spell is still a 400."""
    from charnn.serve import load
    from tests.conftest import train_run

    (tmp_path / "talk.txt").write_text("user:\nhello there\n\nassistant:\nhi, how are you\n\n" * 60, encoding="utf-8")
    train_run(tmp_path / "talk.txt", name="talk", max_steps=20, eval_every=10)
    config = ServeConfig()
    server = Server(tmp_path / "checkpoints", config, load(["talk"], tmp_path / "checkpoints", "cpu", config))
    try:
        facts = httpx.get(f"{server.url}/v1/models").json()["data"][0]["charnn"]
        # 'system' needs an 'm' the corpus lacks: a system message has no speaker's name
        assert facts["chat_names"] == {"system": "", "user": "user", "assistant": "assistant"}
        assert facts["chat_template"] == "{name}:\n{content}\n\n"
        body = {"messages": [{"role": "system", "content": "hi there"}, {"role": "user", "content": "hello there"}],
                "max_tokens": 10, "seed": 1}
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        r = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "assistant_name": "Assistant"}, timeout=30)
        assert r.status_code == 400 and "never saw: 'A'" in r.json()["error"]["message"]
    finally:
        server.stop()
