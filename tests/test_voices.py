"""Voices: one model, several styles, chosen or blended when it writes (issue #40)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charnn import api
from charnn.errors import UsageError
from charnn.model import voices
from charnn.model.network import CharRNN, ModelConfig, Stepper
from charnn.run import checkpoint, lineage, runs
from charnn.sample import SampleConfig, generate
from tests.conftest import tiny_model, tiny_train

ROOT = Path(__file__).resolve().parents[1]


def two_styles(folder: Path, n: int = 3000) -> tuple[Path, Path]:
    """Two texts over the same characters that differ only in what follows a letter: in `ab.txt` an 'a' is followed
    by 'b', in `ba.txt` by 'a' again... so a model that knows the voice predicts better from the first character."""
    rng = random.Random(5)
    one = "".join(rng.choice(["ab ", "abab ", "a. "]) for _ in range(n))
    two = "".join(rng.choice(["aa ", "aaa ", "b. "]) for _ in range(n))
    (folder / "ab.txt").write_text(one, encoding="utf-8")
    (folder / "aa.txt").write_text(two, encoding="utf-8")
    return folder / "ab.txt", folder / "aa.txt"


def train_voiced(folder: Path, name: str = "vv", cell: str = "gru", **overrides: object) -> Path:
    ab, aa = two_styles(folder)
    values: dict = dict(max_steps=150, eval_every=50, batch_size=16)
    values.update(overrides)
    run_dir, _ = api.start_training([str(ab), str(aa)], replace(tiny_model(cell), hidden=48), tiny_train(**values),
                                    name=name, device="cpu", show_progress=False, voices=["ab", "aa"])
    return run_dir


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a voiced run 'v' (voices ab, aa), a plain run 'plain' and their texts, made once."""
    root = tmp_path_factory.mktemp("two-runs")
    paths = api.Paths(root / "checkpoints", root / "corpora")
    ab, aa = two_styles(root)
    api.start_training([str(ab), str(aa)], replace(tiny_model("gru"), hidden=48), tiny_train(max_steps=10),
                       name="v", device="cpu", show_progress=False, voices=["ab", "aa"], paths=paths)
    api.start_training(str(ab), tiny_model("gru"), tiny_train(max_steps=5), name="plain", device="cpu",
                       show_progress=False, paths=paths)
    return root


def charnn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "charnn", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def random_voiced(cell: str, seed: int = 0) -> CharRNN:
    """A voiced model with random weights and a random (non-zero) voice table."""
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=24, embed=8, dropout=0.0,
                                heads=4, voices=("x", "y", "z")))
    assert model.voice_table is not None
    with torch.no_grad():
        model.voice_table.weight.normal_()
    return model.eval()


# ---- names and blends ------------------------------------------------------------------------------


def test_a_voice_is_named_by_its_file_or_folder_or_explicitly(tmp_path: Path) -> None:
    (tmp_path / "a=b.txt").write_text("x")
    assert voices.parse_spec("plays.txt.gz") == ("plays", "plays.txt.gz")
    assert voices.parse_spec("poems/") == ("poems", "poems/")
    assert voices.parse_spec("bard=shakespeare") == ("bard", "shakespeare")
    assert voices.parse_spec(str(tmp_path / "a=b.txt"))[1] == str(tmp_path / "a=b.txt")  # a real path stays a path


names = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), min_size=2, max_size=6, unique=True)


@settings(max_examples=200, deadline=None)
@given(names, st.data())
def test_a_valid_blend_weighs_the_table_rows_it_names(table: list[str], data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(table), min_size=1, unique=True))
    raw = data.draw(st.lists(st.integers(1, 100), min_size=len(chosen), max_size=len(chosen)))
    blend = {name: w / sum(raw) for name, w in zip(chosen, raw, strict=True)}
    text = ",".join(f"{k}={v!r}" for k, v in blend.items())
    row = voices.weights(voices.parse_blend(text), table)
    assert len(row) == len(table) + 1 and row[0] == 0.0 and math.isclose(sum(row), 1.0)
    for name, w in blend.items():
        assert row[table.index(name) + 1] == pytest.approx(w)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_voice_text_is_a_blend_or_one_line_usage_error(text: str) -> None:
    table = ["plays", "poems"]
    try:
        row = voices.weights(voices.parse_blend(text), table)
    except UsageError as e:
        assert "\n" not in str(e) and ("—" in str(e) or "must be" in str(e)), str(e)
        return
    assert math.isclose(sum(row), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("text, message", [
    ("songs", "has no voice 'songs' — its voices are plays, poems"),
    ("plays=0.5,poems=0.6", "sum to 1.1, not 1"),
    ("plays=0.5,plays=0.5", "names voice 'plays' twice"),
    ("plays=x", "is not a blend"),
    ("plays=1.5,poems=-0.5", "between 0 and 1"),
])
def test_bad_blends_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        voices.weights(voices.parse_blend(text), ["plays", "poems"])


def test_a_voice_for_a_model_without_voices_is_refused() -> None:
    with pytest.raises(UsageError, match="this model has no voices"):
        voices.weights({"plays": 1.0}, ())


def test_the_no_voice_rows_are_a_function_of_seed_and_step() -> None:
    a = voices.unvoiced_rows(7, 12, 64, 0.1)
    assert np.array_equal(a, voices.unvoiced_rows(7, 12, 64, 0.1)) and 0 < a.sum() < 20
    assert not np.array_equal(a, voices.unvoiced_rows(7, 13, 64, 0.1))
    assert not voices.unvoiced_rows(7, 12, 64, 0.0).any()


# ---- the model -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn", "slstm"])
def test_the_fused_step_reads_the_voice_from_the_state_as_the_model_does(cell: str) -> None:
    model = random_voiced(cell)
    stepper = Stepper(model)
    ids = torch.randint(0, 11, (3, 9))
    voice = torch.stack([model.voice_vector(w) for w in ([0, 1, 0, 0], [0, 0, 0.3, 0.7], None)])  # (3, E)
    with torch.inference_mode():
        logits, _ = model(ids, model.init_state(3, voice=voice))  # (3, 9, V)
        state = model.init_state(3, voice=voice)
        for t in range(ids.size(1)):
            step, state = stepper.step(ids[:, t], state)
            assert torch.allclose(step, logits[:, t], atol=1e-5), (cell, t)


def test_a_voice_changes_the_logits_and_a_blend_of_one_voice_is_that_voice() -> None:
    model = random_voiced("gru")
    ids = torch.randint(0, 11, (1, 6))
    with torch.inference_mode():
        out = {w: model(ids, model.init_state(1, voice=model.voice_vector(list(w))))[0]
               for w in ((0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0))}
    assert not torch.allclose(*out.values())
    one = voices.weights(voices.parse_blend("x=1"), ("x", "y", "z"))
    assert torch.equal(model.voice_vector(one), model.voice_vector(voices.weights({"x": 1.0}, ("x", "y", "z"))))
    assert torch.equal(model.voice_vector(one), model.voice_table.weight[1])  # type: ignore[union-attr]


def test_mlstm_with_voices_is_refused() -> None:
    problems = ModelConfig(vocab_size=5, cell="mlstm", voices=("a", "b")).validate()
    assert problems and "--voices does not work with --cell mlstm" in problems[0]


# ---- training --------------------------------------------------------------------------------------


def test_the_right_voice_lowers_the_loss(tmp_path: Path) -> None:
    run_dir = train_voiced(tmp_path, max_steps=250)
    loaded = runs.load(run_dir)
    model = loaded.model.eval()
    table = model.config.voices
    record = checkpoint.read_metrics(run_dir)[-1]
    assert set(record["val_voices"]) == {"ab", "aa"}  # every voice is scored on its own validation text
    for name in table:
        text = (tmp_path / f"{name}.txt").read_text()[-3000:]
        # 250 pieces of 12 characters, each from a cold start: what the voice must say before the text can.
        pieces = torch.from_numpy(loaded.tokenizer.encode_array(text).astype(np.int64)).view(250, 12)
        scores = {other: cold_loss(model, pieces, voices.weights({other: 1.0}, table)) for other in table}
        wrong = next(o for o in table if o != name)
        assert scores[name] < scores[wrong] - 0.02, (name, scores)


def cold_loss(model: CharRNN, pieces: torch.Tensor, weights: list[float] | None) -> float:
    """Mean loss over (N, T) pieces, each read from a fresh state in the voice `weights` give."""
    with torch.inference_mode():
        logits, _ = model(pieces[:, :-1], model.init_state(len(pieces), voice=model.voice_vector(weights)))
        return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), pieces[:, 1:].flatten()))


def test_resume_with_voices_is_bit_exact(tmp_path: Path) -> None:
    overrides = dict(max_steps=40, eval_every=15)
    straight = train_voiced(tmp_path, "straight", **overrides)
    import charnn.training.session as session_mod
    from charnn.training import loop as train_mod
    real_train = train_mod.train

    def stop_at_17(*args, **kwargs):
        kwargs["should_stop"] = lambda p: p.step == 17
        return real_train(*args, **kwargs)

    session_mod.train = stop_at_17  # type: ignore[assignment]
    try:
        train_voiced(tmp_path, "split", **overrides)
    finally:
        session_mod.train = real_train  # type: ignore[assignment]
    api.resume_training("split", device="cpu", show_progress=False)
    a = checkpoint.load_tensors(straight / checkpoint.LATEST)["model"]
    b = checkpoint.load_tensors(straight.parent / "split" / checkpoint.LATEST)["model"]
    assert "voice_table.weight" in a and all(torch.equal(a[k], b[k]) for k in a)
    assert a["voice_table.weight"][1:].abs().sum() > 0  # the voices learned something


def test_balance_repeats_the_smaller_voice(tmp_path: Path) -> None:
    from charnn.run.corpus import CorpusOptions, Paths, prepare_voices

    (tmp_path / "big.txt").write_text("abcd" * 3000)
    (tmp_path / "small.txt").write_text("wxyz" * 500)
    options, paths = CorpusOptions(), Paths(tmp_path / "ck", tmp_path / "corpora")
    sources = [options.resolve(str(tmp_path / n), paths) for n in ("big.txt", "small.txt")]
    whole = options.resolve([str(tmp_path / n) for n in ("big.txt", "small.txt")], paths)
    for balance, share in ((False, 2000 / 14000), (True, 0.5)):
        cfg = tiny_train(balance=balance)
        prepared = prepare_voices(sources, whole, ["big", "small"], ["big", "small"], cfg, paths)
        assert prepared.labels is not None
        train_labels, val_labels = prepared.labels
        assert np.mean(train_labels == 2) == pytest.approx(share, abs=0.01)
        assert (val_labels == 1).sum() == 1200 and (val_labels == 2).sum() == 200  # each voice's own last 10%
        small = prepared.train_ids[train_labels == 2]
        assert set(loaded_chars(prepared, small)) == set("wxyz")


def loaded_chars(prepared, ids: np.ndarray) -> str:
    return "".join(prepared.encoded.tokenizer.chars[i] for i in np.unique(ids))


def test_fine_tuning_an_unvoiced_parent_with_voices_starts_as_the_parent(tmp_path: Path, words_file: Path) -> None:
    api.start_training(str(words_file), tiny_model("gru"), tiny_train(max_steps=20, eval_every=10), name="parent",
                       device="cpu", show_progress=False)
    parent = lineage.load_parent("parent", api.Paths().checkpoints)
    config = lineage.child_config(parent, parent.model_config.vocab_size, None, None, ["ab", "aa"])
    assert config.voices == ("ab", "aa")
    ids = np.asarray(parent.tokenizer.encode_array("the cat sat on the mat"), dtype=np.int64)
    child = lineage.grow(parent, config, ids).eval()
    old = CharRNN(parent.model_config)
    old.load_state_dict(parent.weights)
    old.eval()
    text = torch.from_numpy(ids)[None]
    with torch.no_grad():
        p_parent = torch.softmax(old(text, old.init_state(1))[0].double(), -1)
        for weights in (None, [0.0, 1.0, 0.0], [0.0, 0.5, 0.5]):
            voice = child.voice_vector(weights)
            p_child = torch.softmax(child(text, child.init_state(1, voice=voice))[0].double(), -1)
            assert (p_child - p_parent).abs().max().item() < 1e-6


def test_fine_tuning_a_voiced_parent_keeps_its_voices_ids(tmp_path: Path) -> None:
    train_voiced(tmp_path, "parent", max_steps=20)
    parent = lineage.load_parent("parent", api.Paths().checkpoints)
    config = lineage.child_config(parent, parent.model_config.vocab_size, None, None, ["new", "aa"])
    assert config.voices == ("ab", "aa", "new")
    child = lineage.grow(parent, config, np.zeros(10, dtype=np.int64))
    table = child.voice_table.weight.detach()  # type: ignore[union-attr]
    assert torch.equal(table[:3], parent.weights["voice_table.weight"]) and torch.equal(table[3], table[0])


# ---- generation and the command line -----------------------------------------------------------------


def test_greedy_text_with_a_voice_is_the_same_through_every_path(tmp_path: Path, monkeypatch) -> None:
    run_dir = train_voiced(tmp_path, max_steps=60)
    model = api.load_run(str(run_dir), device="cpu")
    cfg = dict(length=40, temperature=0.0, voice="ab=0.25,aa=0.75", seed=1)
    fused = model.generate("a", **cfg)
    from charnn.sample import engine

    monkeypatch.setattr(engine, "FUSED_MAX_BATCH", 0)  # the model's own forward for every step
    monkeypatch.setattr(engine, "STEPPED_PRIME_MAX", 0)
    assert model.generate("a", **cfg) == fused
    out = charnn("sample", str(run_dir), "--prime", "a", "--length", "40", "--temperature", "0", "--voice",
                 "ab=0.25,aa=0.75", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "a" + fused + "\n"
    beam = model.beam("a", width=1, length=40, voice="ab=0.25,aa=0.75", no_repeat=None)  # without the beam's default
    assert beam.hypotheses[0].text == fused  # a beam of one is greedy


def test_voices_on_the_command_line(tmp_path: Path) -> None:
    ab, aa = two_styles(tmp_path)
    small = ("--cell", "gru", "--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len",
             "32", "--eval-every", "20", "--device", "cpu")
    done = charnn("train", f"first={ab}", str(aa), "--voices", "--balance", "--max-steps", "20", "--name", "v",
                  *small, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "voices: first (" in done.stderr and "equal shares" in done.stderr
    config = json.loads((tmp_path / "checkpoints" / "v" / "config.json").read_text())
    assert config["model"]["voices"] == ["first", "aa"] and config["corpus"]["voices"] == ["first", "aa"]
    listed = charnn("runs", cwd=tmp_path)
    assert "voices" in listed.stdout.splitlines()[0] and " 2 " in listed.stdout.splitlines()[-1]
    scored = charnn("eval", "v", str(aa), "--voice", "aa", "--json", cwd=tmp_path)
    assert scored.returncode == 0 and json.loads(scored.stdout)["voice"] == "aa"
    sampled = charnn("sample", "v", "--voice", "first=0.5,aa=0.5", "--length", "20", "--seed", "1", cwd=tmp_path)
    assert sampled.returncode == 0 and len(sampled.stdout) == 22


@pytest.mark.parametrize("args, message", [
    (["sample", "v", "--voice", "songs"], "has no voice 'songs' — its voices are ab, aa"),
    (["sample", "v", "--voice", "ab=0.5,aa=0.6"], "sum to 1.1, not 1"),
    (["sample", "v", "--voice", "ab=0.5,ab=0.5"], "names voice 'ab' twice"),
    (["eval", "v", "ab.txt", "--voice", "x"], "has no voice 'x'"),
    (["sample", "plain", "--voice", "ab"], "this model has no voices"),
    (["train", "ab.txt", "--voices", "--max-steps", "5"], "needs at least two voices"),
    (["train", "ab.txt", "x=ab.txt", "--voices", "--max-steps", "5", "--cell", "mlstm"], "does not work with --cell mlstm"),
    (["train", "ab.txt", "ab.txt", "--voices", "--max-steps", "5"], "voice 'ab' is given twice"),
    (["train", "ab.txt", "--balance", "--max-steps", "5"], "--balance applies to --voices"),
    (["train", "--resume", "v", "--voices", "--max-steps", "5"], "cannot change when resuming"),
])
def test_bad_voice_input_is_one_line_and_writes_nothing(two_runs: Path, tmp_path: Path, args: list[str],
                                                       message: str) -> None:
    shutil.copytree(two_runs, tmp_path, dirs_exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    out = charnn(*args, cwd=tmp_path)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_sampling_a_voiced_model_in_python(tmp_path: Path) -> None:
    run_dir = train_voiced(tmp_path, max_steps=20)
    model = api.load_run(str(run_dir), device="cpu")
    assert model.voices == ("ab", "aa")
    texts = [model.generate("a", length=10, seed=3, voice=v) for v in ("ab", {"ab": 0.5, "aa": 0.5}, None)]
    assert all(len(t) == 10 for t in texts)
    run = generate(model.model, model.tokenizer, "a", SampleConfig(length=5, voice="ab", num_samples=3))
    for _ in run:
        pass
    assert len(run.texts) == 3


# ---- exports ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru"])  # the sLSTM's voice path in the step: the fused-step test above
def test_the_onnx_export_writes_in_a_voice_as_charnn_sample_does(tmp_path: Path, cell: str) -> None:
    from charnn.export import onnx as onnx_export
    from tests.test_export import onnx_greedy

    run_dir = train_voiced(tmp_path, cell=cell, max_steps=60)
    out = charnn("export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "onnx"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    meta = json.loads((tmp_path / "onnx" / "charnn-model.json").read_text())
    assert meta["voices"]["names"] == ["ab", "aa"] and meta["state"]["names"][-1] == "voice"
    loaded = runs.load(run_dir)
    ids = loaded.tokenizer.encode_array((tmp_path / "ab.txt").read_text()[:300])
    assert onnx_export.largest_difference(tmp_path / "onnx" / "model.onnx", loaded.model, ids) < 1e-4
    for voice in ({"ab": 1.0}, {"ab": 0.3, "aa": 0.7}, None):
        text = voices.describe(voice)
        args = ["--voice", text] if voice else []
        greedy = charnn("sample", str(run_dir), "--prime", "a", "--temperature", "0", "--length", "60", *args,
                        cwd=tmp_path)
        assert greedy.stdout.rstrip("\n") == "a" + onnx_greedy(tmp_path / "onnx", "a", 60, voice), text


def test_the_safetensors_folder_keeps_the_voices(tmp_path: Path) -> None:
    run_dir = train_voiced(tmp_path, max_steps=30)
    out = charnn("export", str(run_dir), "--format", "safetensors", "--out", str(tmp_path / "st"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    args = ("--prime", "a", "--temperature", "0", "--length", "40", "--voice", "aa")
    assert charnn("sample", str(tmp_path / "st"), *args, cwd=tmp_path).stdout == \
        charnn("sample", str(run_dir), *args, cwd=tmp_path).stdout


# ---- the server and its page ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def voiced_server(tmp_path_factory: pytest.TempPathFactory):
    from charnn.serve import ServeConfig
    from tests.conftest import Server

    root = tmp_path_factory.mktemp("voiced")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        train_voiced(root, "v", max_steps=60)
        api.start_training(str(root / "ab.txt"), tiny_model("gru"), tiny_train(max_steps=5), name="plain",
                           device="cpu", show_progress=False)
    finally:
        os.chdir(cwd)
    from charnn.serve import load

    config = ServeConfig()
    server = Server(root / "checkpoints", config, load(["v", "plain"], root / "checkpoints", "cpu", config))
    yield server, root
    server.stop()


def test_the_server_writes_in_a_voice_or_a_blend(voiced_server) -> None:
    import httpx

    server, root = voiced_server
    models = httpx.get(server.url + "/v1/models").json()["data"]
    assert {m["id"]: m["charnn"]["voices"] for m in models} == {"v": ["ab", "aa"], "plain": []}
    for voice, text in (("aa", "aa"), ({"ab": 0.25, "aa": 0.75}, "ab=0.25,aa=0.75")):
        body = {"model": "v", "prompt": "a", "max_tokens": 50, "temperature": 0, "voice": voice}
        got = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        expected = charnn("sample", "v", "--prime", "a", "--temperature", "0", "--length", "50", "--voice", text,
                          cwd=root)
        assert "a" + got == expected.stdout.rstrip("\n")
    chat = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "v", "messages": [{"role": "user", "content": "ab ab"}], "max_tokens": 20, "voice": "ab",
        "template": "{name} {content}. ", "assistant_name": "a", "user_name": "b"})  # in the model's alphabet
    assert chat.status_code == 200, chat.text
    scored = httpx.post(server.url + "/v1/score", json={"model": "v", "text": "ab ab ab", "voice": "ab"}).json()
    assert scored["nats"] > 0


@pytest.mark.parametrize("body, message", [
    ({"model": "v", "voice": "songs"}, "has no voice 'songs' — its voices are ab, aa"),
    ({"model": "v", "voice": {"ab": 0.5, "aa": 0.6}}, "sum to 1.1, not 1"),
    ({"model": "v", "voice": {"ab": 2}}, "voice takes a voice's name or {name: weight"),
    ({"model": "v", "voice": ""}, "voice takes"),
    ({"model": "plain", "voice": "ab"}, "this model has no voices"),
])
def test_a_bad_voice_is_a_400_in_the_documented_shape(voiced_server, body: dict, message: str) -> None:
    import httpx

    server, _ = voiced_server
    for path, extra in (("/v1/completions", {"prompt": "a", "max_tokens": 5}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 5,
                                                  "template": "{name} {content}. ", "assistant_name": "a",
                                                  "user_name": "b"})):
        answer = httpx.post(server.url + path, json={**body, **extra}, timeout=30)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert message in error["message"] and error["type"] == "invalid_request_error"
    after = httpx.post(server.url + "/v1/completions", json={"model": "v", "prompt": "a", "max_tokens": 5}, timeout=30)
    assert after.status_code == 200  # one bad request never affects another


def blend_in_page(page, first: str, second: str, share: float) -> None:
    """Pick two voices on a page (the server's or the web export's) and set the blend slider to `share`."""
    page.select_option("#voice", first)
    page.select_option("#voice2", second)
    page.eval_on_selector("#blend", f"e => {{ e.value = '{share}'; e.dispatchEvent(new Event('input')); }}")
    assert page.text_content("#blendShown") == f"{round(share * 100)}%"


@pytest.mark.slow
def test_the_page_picks_and_blends_voices(browser, voiced_server) -> None:
    server, root = voiced_server
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('voice').options.length === 3")
    assert page.locator("#voice").is_visible()
    blend_in_page(page, "ab", "aa", 0.75)
    page.fill("#prompt", "a")
    page.eval_on_selector("#temperature", "e => { e.value = '0'; e.dispatchEvent(new Event('input')); }")
    page.fill("#length", "40")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.includes(' characters in ')", timeout=60_000)
    expected = charnn("sample", "v", "--prime", "a", "--temperature", "0", "--length", "40", "--voice",
                      "ab=0.25,aa=0.75", cwd=root)
    assert page.text_content("#output") == expected.stdout.rstrip("\n")
    assert problems == []


def test_the_repl_changes_voice_and_a_held_context_goes_on_in_it(tmp_path: Path) -> None:
    train_voiced(tmp_path, "v", max_steps=60)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ":voice songs\n:voice ab=0.5,aa=0.6\n:voice aa\na\n:info\n:voice none\na\n"
    out = subprocess.run([sys.executable, "-m", "charnn", "repl", "v", "--temperature", "0", "--length", "30"],
                         input=script, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "error: :voice: this model has no voice 'songs' — its voices are ab, aa"
    assert lines[1].startswith("error: :voice: the weights sum to 1.1") and lines[2] == "voice = aa"
    expected = {v: charnn("sample", "v", "--prime", "a", "--temperature", "0", "--length", "30", *a, cwd=tmp_path)
                .stdout.rstrip("\n") for v, a in (("aa", ["--voice", "aa"]), ("none", []))}
    assert lines[3] == expected["aa"]
    assert "voices ab, aa  voice aa" in out.stdout and "voice = no voice" in lines
    assert lines[-1] == expected["none"]
    refused = subprocess.run([sys.executable, "-m", "charnn", "repl", "v", "--voice", "x"], input="", env=env,
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert refused.returncode != 0 and "has no voice 'x'" in refused.stderr


@pytest.mark.slow
def test_two_torchrun_processes_train_voices_as_one_does(tmp_path: Path) -> None:
    from tests.test_distributed import MODEL, TORCHRUN, VAL_TOL, WEIGHT_TOL, _run

    ab, aa = two_styles(tmp_path)
    args = ["train", str(ab), str(aa), "--voices", "--max-steps", "30", "--eval-every", "10", "--dropout", "0", *MODEL]
    single = _run([sys.executable, "-m", "charnn", *args, "--name", "one"], tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "charnn", *args, "--name", "two"], tmp_path,
               timeout=180)
    assert ddp.returncode == 0, ddp.stderr
    one, two = (checkpoint.load_tensors(tmp_path / "checkpoints" / n / checkpoint.LATEST)["model"] for n in ("one", "two"))
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < WEIGHT_TOL
    records = [checkpoint.read_metrics(tmp_path / "checkpoints" / n) for n in ("one", "two")]
    for a, b in zip(*records, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < VAL_TOL
        assert all(abs(a["val_voices"][v] - b["val_voices"][v]) < VAL_TOL for v in ("ab", "aa"))


def test_fine_tuning_with_voices_on_the_command_line(tmp_path: Path, words_file: Path) -> None:
    ab, aa = two_styles(tmp_path)
    small = ("--max-steps", "10", "--eval-every", "5", "--device", "cpu", "-q")
    parent = charnn("train", str(words_file), "--name", "p", "--hidden", "32", "--layers", "1", *small, cwd=tmp_path)
    assert parent.returncode == 0, parent.stderr
    child = charnn("train", str(ab), str(aa), "--voices", "--from", "p", "--name", "c", *small, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    config = json.loads((tmp_path / "checkpoints" / "c" / "config.json").read_text())
    assert config["model"]["voices"] == ["ab", "aa"] and config["parent"]["name"] == "p"
    assert set(checkpoint.read_metrics(tmp_path / "checkpoints" / "c")[-1]["val_voices"]) == {"ab", "aa"}


def records(folder: Path) -> tuple[Path, Path]:
    """The two styles as records: a JSON-lines file and a CSV file with other field names."""
    ab, aa = (p.read_text() for p in two_styles(folder))
    docs = [(v, t[i : i + 600]) for v, t in (("Ab style", ab), ("aa", aa)) for i in range(0, len(t), 600)]
    random.Random(1).shuffle(docs)
    jsonl = folder / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"voice": v, "text": t, "id": i}) + "\n" for i, (v, t) in enumerate(docs)))
    import csv

    with (folder / "docs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["body", "author"])
        writer.writerows([(t, v) for v, t in docs])
    return jsonl, folder / "docs.csv"


def test_voices_from_a_record_file(tmp_path: Path) -> None:
    jsonl, table = records(tmp_path)
    written = voices.from_records(jsonl, tmp_path / "corpora")
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [name for name, _ in written] == list(dict.fromkeys(r["voice"] for r in rows))  # first appearance
    texts = dict(written)
    ab_docs = [r["text"] for r in rows if r["voice"] == "Ab style"]
    assert Path(texts["Ab style"]).read_text() == "".join(d + "\n" for d in ab_docs)  # in file order, one a line
    assert voices.from_records(table, tmp_path / "corpora", "body", "author") == written  # the same texts, reused
    small = ("--max-steps", "10", "--eval-every", "5", "--hidden", "32", "--layers", "1", "--device", "cpu", "-q")
    done = charnn("train", "--voices-from", str(table), "--text-field", "body", "--voice-field", "author",
                  "--name", "r", *small, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "checkpoints" / "r" / "config.json").read_text())
    assert set(config["model"]["voices"]) == {"Ab style", "aa"}
    sampled = charnn("sample", "r", "--voice", "Ab style=0.5,aa=0.5", "--length", "10", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    resumed = charnn("train", "--resume", "r", "--max-steps", "15", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("lines, message", [
    (['{"text": "a", "voice": "x"}', '{"text": "b"}'], "line 2 has no 'voice' field"),
    (['{"text": "a", "voice": "x"}', '', '{"text": 3, "voice": "y"}'], "line 3 has a non-text 'text' field"),
    (['{"text": "a", "voice": "x"}', 'not json'], "line 2 is not JSON"),
    (['["a", "x"]'], "line 1 is not a JSON object"),
    (['{"text": "a", "voice": "x=y"}'], "line 1: voice name 'x=y' is not valid"),
    (['{"text": "a", "voice": "x"}', '{"text": "b", "voice": "x"}'], "needs at least two voices"),
])
def test_a_bad_record_file_is_one_line_naming_the_line_and_writes_nothing(tmp_path: Path, lines: list[str],
                                                                          message: str) -> None:
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    out = charnn("train", "--voices-from", "docs.jsonl", "--max-steps", "5", cwd=tmp_path)
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_originality_of_a_voiced_run_indexes_each_voices_training_split(tmp_path: Path) -> None:
    from charnn.run.corpus import Paths, validation_text

    run_dir = train_voiced(tmp_path, max_steps=10)
    loaded = runs.load(run_dir)
    texts = [(tmp_path / f"{v}.txt").read_text() for v in ("ab", "aa")]
    assert validation_text(run_dir, loaded.config, loaded.tokenizer, Paths()) == \
        "".join(t[len(t) - int(len(t) * 0.1):] for t in texts)
    model = api.load_run(str(run_dir), device="cpu")
    report = model.originality(texts[1][:400])  # from the second voice's training split
    assert report.copied == report.generated and "voice aa" in report.where
