"""Steering (sample/steer.py): known words, no-repeat, penalties, logit bias, required words and long primes —
property tests on a tiny model trained here, and the command, the REPL and the server around them."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charnn import api
from charnn.cli import app
from charnn.sample import SampleConfig, generate
from charnn.sample.engine import Engine
from charnn.sample.steer import PENALTY_SPAN, RowSteer, Steering, contains
from charnn.serve import ServeConfig, create_app, load
from charnn.text.words import Lexicon, words
from tests.conftest import Server, tiny_model, tiny_train

runner = CliRunner()
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "over", "don't", "well-known", "über", "naïve"]
BOUNDED = settings(max_examples=25, deadline=None, derandomize=True, database=None)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GRU on a text of a dozen words, trained briefly: it still invents words ('thet', 'dat')."""
    root = tmp_path_factory.mktemp("steer")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(900)]
    (root / "words.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    api.start_training(str(root / "words.txt"), tiny_model("gru"), tiny_train(max_steps=40), name="w", device="cpu",
                       paths=api.Paths(root / "checkpoints", root / "corpora"), show_progress=False)
    return root


@pytest.fixture(scope="module")
def model(root: Path) -> api.CharModel:
    model = api.load_run(str(root / "checkpoints" / "w"), device="cpu")
    model.lexicon(api.Paths(root / "checkpoints", root / "corpora"))
    return model


def complete_words(text: str, alphabet: str) -> list[str]:
    """The words of a generated text that it finished (a last word cut off by the length is not one, "well-" of
    "well-known" included)."""
    found = list(words(text, alphabet))
    if found and not text[found[-1].end():].strip("'’-"):
        found.pop()
    return [m.group() for m in found]


# ---- words ---------------------------------------------------------------------------------------------


def test_words_are_letters_and_marks_joined_by_apostrophes_and_hyphens() -> None:
    text = "Don't stop—the well-known 3rd café, 'tis naïve; Привет, मैं हिंदी"
    assert [m.group() for m in words(text)] == ["Don't", "stop", "the", "well-known", "rd", "café", "tis", "naïve",
                                                  "Привет", "मैं", "हिंदी"]
    lexicon = Lexicon.of([text])
    assert "don't" in lexicon and "DON'T" in lexicon and "Stop" in lexicon and "sto" not in lexicon
    assert lexicon.starts("wel") and lexicon.starts("well-") and not lexicon.starts("x")


def test_the_run_s_lexicon_is_its_training_words_kept_beside_the_corpus_cache(model: api.CharModel, root: Path) -> None:
    lexicon = model.lexicon()
    assert {w.lower() for w in WORDS} <= set(lexicon.words) and len(lexicon) == len(WORDS)
    assert list((root / "corpora" / ".cache").glob("*.words.txt"))


# ---- properties ----------------------------------------------------------------------------------------


@BOUNDED
@given(seed=st.integers(0, 2**32), temperature=st.floats(0.3, 2.5), samples=st.integers(1, 3),
       no_repeat=st.none() | st.integers(6, 12))
def test_known_words_never_writes_a_word_outside_the_training_split(model: api.CharModel, seed: int, temperature: float,
                                                                     samples: int, no_repeat: int | None) -> None:
    texts = model.generate("the ", length=150, seed=seed, temperature=temperature, num_samples=samples, words="known",
                           no_repeat=no_repeat)
    lexicon, alphabet = model.lexicon(), "".join(model.tokenizer.chars)
    for text in texts if isinstance(texts, list) else [texts]:
        assert all(w in lexicon for w in complete_words(text, alphabet)), text


def test_plain_sampling_of_this_model_does_invent_words(model: api.CharModel) -> None:
    """The property above is not vacuous: without the control the same model writes words the text lacks."""
    text = model.generate("the ", length=2000, seed=1, temperature=1.5)
    assert any(w not in model.lexicon() for w in complete_words(text, "".join(model.tokenizer.chars)))


@BOUNDED
@given(seed=st.integers(0, 2**32), temperature=st.floats(0.0, 2.0), n=st.integers(2, 10))
def test_no_repeat_never_writes_an_n_character_string_twice(model: api.CharModel, seed: int, temperature: float,
                                                            n: int) -> None:
    cfg = model.sample_config(length=200, seed=seed, temperature=temperature, no_repeat=n)
    run = Engine(model.model, model.tokenizer)
    with torch.inference_mode():
        group = run.join("the ", cfg)
        while not group.finished:
            run.step()
    text = group.texts[0]
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    assert len(grams) == len(set(grams)), text
    if len(text) < 200:  # ended early: only because nothing was left, and it says so
        assert group.ended[0] and "left no character to write" in group.ended[0]


@BOUNDED
@given(seed=st.integers(0, 2**32), width=st.integers(1, 6), n=st.integers(4, 10))
def test_beams_keep_to_known_words_and_no_repeat(model: api.CharModel, seed: int, width: int, n: int) -> None:
    found = model.beam("the ", width, 80, temperature=0.7, seed=seed, words="known", no_repeat=n)
    lexicon, alphabet = model.lexicon(), "".join(model.tokenizer.chars)
    for h in found.hypotheses:
        grams = [h.text[i:i + n] for i in range(len(h.text) - n + 1)]
        assert len(grams) == len(set(grams)) and all(w in lexicon for w in complete_words(h.text, alphabet)), h.text


@BOUNDED
@given(seed=st.integers(0, 2**32), required=st.lists(st.sampled_from(["cat", "dog", "well-known", "zebra"]),
                                                     min_size=1, max_size=2, unique=True))
def test_required_words_are_in_every_result_or_the_search_says_it_gave_up(model: api.CharModel, seed: int,
                                                                         required: list[str]) -> None:
    cfg = model.sample_config(length=60, seed=seed, num_samples=2, require=tuple(required))
    found = model.require_samples("the ", cfg, attempts=40)
    assert all(contains(t, w) for t in found.texts for w in required)
    assert found.complete or ("found" in found.describe() and "within the bound of 40 draws" in found.describe())
    assert found.attempts <= 40 and found.attempts == len(found.texts) + found.lacking
    items = model.items(3, separator="\n", attempts=40, seed=seed, require=tuple(required))
    assert all(contains(item, w) for item in items.items for w in required)
    assert items.complete or "without a required word" in items.describe(False)


@BOUNDED
@given(seed=st.integers(0, 2**32), bias=st.floats(-5, 5), penalty=st.floats(-2, 2))
def test_a_seed_gives_the_same_text_alone_or_batched_with_every_control_on(model: api.CharModel, seed: int, bias: float,
                                                                           penalty: float) -> None:
    options = dict(length=80, seed=seed, temperature=1.0, num_samples=2, words="known", no_repeat=9,
                   frequency_penalty=penalty, presence_penalty=penalty / 2, logit_bias={1: bias, 2: -100.0})
    alone = model.generate("the ", **options)
    engine = Engine(model.model, model.tokenizer)
    with torch.inference_mode():
        groups = engine.join_many([("cat ", SampleConfig(length=50, seed=seed + 1, num_samples=3)),
                                   ("the ", model.sample_config(**options)),
                                   ("dog ", model.sample_config(length=70, seed=seed + 2, no_repeat=5))])
        while engine.groups:
            engine.step()
            for group in [g for g in engine.groups if g.finished]:
                engine.leave(group)
    assert not isinstance(groups[1], Exception) and groups[1].texts == alone
    assert all(model.tokenizer.chars[2] not in text for text in alone)  # -100: never written


# ---- what each control does ----------------------------------------------------------------------------


def test_the_penalties_count_a_character_with_the_characters_before_it() -> None:
    chars = list("ab")
    steer = RowSteer(Steering(frequency_penalty=0.5, presence_penalty=0.25), chars, None, None)
    for token in [0] * (PENALTY_SPAN + 2):  # "aaaaaaaaaa": after 7 a's, an 'a' was written 3 times
        steer.advance(token)
    scores = torch.zeros(2)
    steer.adjust(scores)
    assert scores.tolist() == [-(0.5 * 3 + 0.25), 0.0]


def test_a_sample_the_controls_leave_nothing_ends_and_says_why(model: api.CharModel) -> None:
    run = generate(model.model, model.tokenizer, "the ", model.sample_config(length=500, seed=1, no_repeat=2))
    for _ in run:
        pass
    assert len(run.texts[0]) < 500 and "no-repeat 2 left no character to write after" in (run.ended[0] or "")


def test_the_command_counts_what_the_steering_changed(root: Path) -> None:
    result = runner.invoke(app, ["sample", "w", "--checkpoints-dir", str(root / "checkpoints"), "--corpora-dir",
                                 str(root / "corpora"), "--words", "known", "--no-repeat", "12", "--length", "300",
                                 "--seed", "4", "--temperature", "1.5", "--prime", "the "])
    assert result.exit_code == 0, result.output
    assert "steering (known words, no-repeat 12) changed" in result.stderr
    drawn = int(result.stderr.split(" of ")[1].split()[0])
    assert drawn == 300 or f"sample 1 ended at {drawn} characters: known words, no-repeat 12 left" in result.stderr


def test_require_on_the_command_prints_the_samples_that_hold_the_word(root: Path) -> None:
    result = runner.invoke(app, ["sample", "w", "--checkpoints-dir", str(root / "checkpoints"), "--require", "dog",
                                 "--length", "80", "--seed", "2", "--num-samples", "2"])
    assert result.exit_code == 0, result.output
    samples = [s for s in result.stdout.split("--- sample ")[1:]]
    assert len(samples) == 2 and all(contains(s.split("\n", 1)[1], "dog") for s in samples)
    assert "2 samples;" in result.stderr


# ---- long primes ---------------------------------------------------------------------------------------


def test_a_prime_file_is_fed_with_its_unknown_characters_dropped_and_counted(root: Path, tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("the cat ☃ sat on the mat ☃\n", encoding="utf-8")
    args = ["sample", "w", "--checkpoints-dir", str(root / "checkpoints"), "--length", "20", "--seed", "1"]
    result = runner.invoke(app, [*args, "--prime-file", str(tmp_path / "p.txt")])
    assert result.exit_code == 0, result.output
    assert "prime: 25 characters fed from" in result.stderr and "2 dropped as unknown ('☃')" in result.stderr
    assert result.stdout.startswith("the cat  sat on the mat \n")
    piped = runner.invoke(app, [*args, "--prime-file", "-"], input="the dog ran\n")
    assert piped.exit_code == 0 and "prime: 12 characters fed from standard input, none dropped" in piped.stderr


def test_the_repl_loads_a_file_as_its_context(model: api.CharModel, tmp_path: Path) -> None:
    from charnn.write.repl import Repl

    (tmp_path / "ctx.txt").write_text("the cat sat ☃\n", encoding="utf-8")
    out = io.StringIO()
    script = io.StringIO(f":load {tmp_path / 'ctx.txt'}\n:words known\n:norepeat 6\n:norepeat 1\nthe \n")
    Repl(model.model, model.tokenizer, model.run_dir, SampleConfig(length=30, seed=1), stdin=script, stdout=out,
         lexicon=model.lexicon).loop()
    said = out.getvalue()
    assert "loaded" in said and "13 characters fed, 1 dropped as unknown; keep on" in said
    assert "words = known" in said and "norepeat = 6" in said and ":norepeat 1 must be at least 2" in said


# ---- the server ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[Server]:
    config = ServeConfig(max_tokens_cap=400)
    s = Server(root / "checkpoints", config, load(["w"], root / "checkpoints", "cpu", config))
    yield s
    s.stop()


def test_the_openai_client_s_fields_change_the_text_as_documented(server: Server, model: api.CharModel) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    alphabet = client.models.list().data[0].model_extra["charnn"]["alphabet"]  # type: ignore[index]
    assert alphabet == list(model.tokenizer.chars)
    common = dict(model="w", prompt="the ", max_tokens=300, seed=5, temperature=1.2)
    plain = client.completions.create(**common).choices[0].text  # type: ignore[call-overload]
    space = str(alphabet.index(" "))
    banned = client.completions.create(**common, logit_bias={space: -100}).choices[0].text  # type: ignore[call-overload]
    assert " " in plain and " " not in banned
    greedy = {**common, "temperature": 0.0}  # greedy decoding of a tiny model loops: what the penalties are for
    looping = client.completions.create(**greedy).choices[0].text  # type: ignore[call-overload]
    penalised = client.completions.create(**greedy, frequency_penalty=2.0, presence_penalty=2.0).choices[0].text  # type: ignore[call-overload]
    repeats = [len({t[i:i + 20] for i in range(len(t) - 19)}) for t in (looping, penalised)]
    assert penalised != looping and repeats[1] > repeats[0]  # more distinct 20-character strings
    known = client.completions.create(**common, extra_body={"words": "known", "no_repeat": 20})  # type: ignore[call-overload]
    text = known.choices[0].text
    assert all(w in model.lexicon() for w in complete_words(text, "".join(alphabet)))
    assert len({text[i:i + 20] for i in range(len(text) - 19)}) == len(text) - 19
    assert text == model.generate("the ", length=300, seed=5, temperature=1.2, words="known", no_repeat=20)
    chat = client.chat.completions.create(model="w", messages=[{"role": "user", "content": "the cat"}], max_tokens=40,
                                          seed=1, frequency_penalty=1.0, extra_body={"words": "known"})
    assert all(w in model.lexicon() for w in complete_words(chat.choices[0].message.content or "", "".join(alphabet)))


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"logit_bias": {"9999": 5}}, "logit_bias", r"logit_bias key 9999 is not a character id of model 'w' \(0 to \d+"),
    ({"logit_bias": {"a": 5}}, "logit_bias", r"logit_bias"),
    ({"logit_bias": {"1": 101}}, "logit_bias", r"less than or equal to 100"),
    ({"frequency_penalty": 2.5}, "frequency_penalty", r"less than or equal to 2"),
    ({"words": "some"}, "words", r"'any' or 'known'"),
    ({"no_repeat": 1}, "no_repeat", r"greater than or equal to 2"),
    ({"tools": []}, "tools", r"tools is not a field this server takes — drop it"),
    ({"best_of": 2}, "best_of", r"best_of is not a field this server takes"),
])
def test_bad_steering_values_are_documented_400s(server: Server, body: dict[str, object], param: str,
                                                 message: str) -> None:
    import re

    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": "the ", "max_tokens": 5, **body}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert re.search(message, r.json()["error"]["message"]), r.text


def test_every_ref_in_the_openapi_document_resolves() -> None:
    document = create_app([], ServeConfig()).openapi()
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            refs.extend([node["$ref"]] if isinstance(node.get("$ref"), str) else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs  # the request and answer bodies are components, referred to by $ref
    for ref in refs:
        node: object = document
        assert ref.startswith("#/"), ref
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
    for route in ("/v1/completions", "/v1/chat/completions"):
        event = document["paths"][route]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
        assert {"const": "[DONE]"} in event["properties"]["data"]["anyOf"]


def test_chat_answers_on_a_model_whose_alphabet_has_no_names_or_colon(server: Server) -> None:
    """The words model has letters but no capitals, ':' or 'y': its transcript is its own ('{content}\\n\\n'
    without names, as /v1/models says), and chat answers."""
    facts = httpx.get(f"{server.url}/v1/models").json()["data"][0]["charnn"]
    assert facts["chat_template"] == "{content}\n\n" or ":" not in facts["chat_template"]
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "the cat"}],
                                                              "max_tokens": 20, "seed": 1}, timeout=30)
    assert r.status_code == 200, r.text


# What the official client can send beyond the sampling fields above, with a value a client would send: each is a
# 400 naming it (the server cannot do it: a character model has no tools, formats, audio or stored completions).
REFUSED_COMPLETION = {"best_of": 2, "suffix": "end", "echo": True}
REFUSED_CHAT = {"audio": {"voice": "alloy", "format": "wav"}, "function_call": "auto",
                "functions": [{"name": "f", "parameters": {}}], "metadata": {"k": "v"}, "modalities": ["text"],
                "moderation": {"input": True}, "parallel_tool_calls": True,
                "prediction": {"type": "content", "content": "x"}, "prompt_cache_key": "k",
                "prompt_cache_options": {}, "prompt_cache_retention": "24h", "reasoning_effort": "low",
                "response_format": {"type": "text"}, "safety_identifier": "u", "service_tier": "auto", "store": False,
                "tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}], "verbosity": "low",
                "web_search_options": {}}


def test_every_field_of_the_official_client_works_or_is_a_400_naming_it(server: Server) -> None:
    import inspect

    import openai
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    taken = {"model", "prompt", "messages", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
             "top_logprobs", "max_tokens", "max_completion_tokens", "n", "seed", "stop", "stream", "stream_options",
             "temperature", "top_p", "user", "echo"}
    for create, refused in ((client.completions.create, REFUSED_COMPLETION),
                            (client.chat.completions.create, REFUSED_CHAT)):
        sent = {p for p in inspect.signature(create).parameters if not p.startswith("extra_") and p != "timeout"}
        assert sent <= taken | set(refused), sorted(sent - taken - set(refused))  # a new client field: decide on it
        base = ({"prompt": "the ", "max_tokens": 5} if create == client.completions.create
                else {"messages": [{"role": "user", "content": "the cat"}], "max_tokens": 5})
        for name, value in refused.items():
            with pytest.raises(openai.BadRequestError) as refusal:
                create(model="w", **base, **{name: value})  # type: ignore[call-overload]
            assert name in str(refusal.value), (name, str(refusal.value))
