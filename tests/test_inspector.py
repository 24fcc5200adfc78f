"""charnn inspect: features, the correlation ranking, gradient reach against autograd, the numbers and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from charnn.cli import app
from charnn.insight import inspector
from charnn.insight.inspector import FEATURES, Correlator, InspectConfig, features, gradient_reach, top_units
from charnn.model.cells import CELLS
from charnn.model.network import CharRNN, ModelConfig
from charnn.text.tokenizer import CharTokenizer

runner = CliRunner()
TINY = ["--hidden", "32", "--embed", "16", "--layers", "2", "--batch-size", "8", "--seq-len", "32", "--lr", "1e-2",
        "--warmup", "5", "--device", "cpu", "-q"]


def test_features_of_a_constructed_text() -> None:
    text = 'Ab "c(d)"\nx'
    f = features(text)
    col = {name: f[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert col["inside quotes"] == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]  # from the opening quote to before the closing one
    assert col["bracket depth"] == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert col["position in line"] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert col["word start"] == [1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1]
    assert col["uppercase"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert col["after newline"] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]


def test_ranking_finds_a_planted_unit_and_streams_exactly() -> None:
    rng = np.random.default_rng(0)
    n, units = 5000, 64
    feats = np.stack([rng.integers(0, 2, n), rng.integers(0, 5, n), rng.normal(size=n)], axis=1).astype(float)
    acts = rng.normal(size=(n, units))
    acts[:, 17] = 0.7 * feats[:, 1] + rng.normal(scale=0.5, size=n)  # unit 17 tracks feature 1
    acts[:, 40] = -0.9 * feats[:, 2] + rng.normal(scale=0.2, size=n)  # unit 40 tracks feature 2, negatively
    acts[:, 5] = 3.0  # a constant unit: no correlation, and no division by zero
    corr = Correlator(units, 3)
    for chunk in np.array_split(np.arange(n), 7):  # streamed in uneven chunks
        corr.add(acts[chunk], feats[chunk])
    r = corr.result()
    with np.errstate(invalid="ignore"):  # numpy's NaN for the constant unit
        expected = np.corrcoef(np.concatenate([acts, feats], axis=1).T)[:units, units:]
    expected[5] = 0.0
    np.testing.assert_allclose(r, expected, atol=1e-9)
    picks = top_units(r, top=2)
    best = {f: (u, v) for f, u, v in reversed(picks)}  # the strongest pick per feature wins
    assert best[1][0] == 17 and best[1][1] > 0.8
    assert best[2][0] == 40 and best[2][1] < -0.9
    assert picks[0][1] == 40  # the list is ordered by |r|
    assert all(u != 5 for _, u, _ in picks)


def _direct_reach(model: CharRNN, window: torch.Tensor, start: tuple[torch.Tensor, ...], k: int) -> float:
    """||∂loss_t/∂h_{t-k}|| by autograd on the module's whole-window forward, mean over rows."""
    steps = window.size(1) - 1  # characters read; t = steps - 1
    with torch.no_grad():
        state = start
        if steps - k > 0:
            _, state = model(window[:, : steps - k], state)  # h_{t-k}: after reading character t - k
    part = CELLS[model.config.cell].memory  # h, or an mLSTM's matrix memory C
    leaf = state[part].clone().requires_grad_()
    logits, _ = model(window[:, steps - k : steps], (*state[:part], leaf, *state[part + 1 :]))
    loss = F.cross_entropy(logits[:, -1], window[:, -1], reduction="sum")
    (grad,) = torch.autograd.grad(loss, leaf)  # (layers, R, H)
    return float(grad.transpose(0, 1).reshape(window.size(0), -1).norm(dim=1).mean())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "slstm", "mlstm"])
def test_gradient_reach_equals_autograd_directly(cell: str) -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=9, cell=cell, layers=2, hidden=8, embed=4, dropout=0.3)).double()
    window = torch.randint(0, 9, (5, 12))  # read 11 characters, predict the 12th: k = 1..10
    start = tuple(s.double() + 0.1 * torch.randn_like(s.double()) for s in model.init_state(5))
    if cell == "slstm":  # a valid carried state: n >= 1
        start = (start[0], start[1], start[2].abs() + 1, start[3])
    model.train()  # gradient_reach must switch dropout off itself
    reach = gradient_reach(model, window, start)
    assert model.training and reach.shape == (10,)
    model.eval()
    for k in (1, 2, 5, 10):
        assert reach[k - 1] == pytest.approx(_direct_reach(model, window, start, k), rel=1e-9)


@pytest.fixture
def tiny_model() -> tuple[CharRNN, CharTokenizer]:
    torch.manual_seed(0)
    tok = CharTokenizer("abc \n\"()XY")
    return CharRNN(ModelConfig(vocab_size=tok.vocab_size, cell="lstm", layers=2, hidden=6, embed=4)), tok


def test_inspect_numbers_match_the_model(tiny_model) -> None:
    model, tok = tiny_model
    text = 'ab "c(a)" b\nXY ' * 12 + "é€"
    numbers = inspector.inspect(model, tok, text, InspectConfig(show=100, reach=8))
    assert numbers["skipped"] == {"é": 1, "€": 1} and numbers["segments"] == 1
    kept = text[:-2]
    assert numbers["characters"] == len(kept) and numbers["text"] == kept[:100]
    ids = torch.tensor([tok.encode(kept)])
    model.eval()  # the numbers are the model's without dropout (the default config has 0.1)
    with torch.no_grad():
        logits, _ = model(ids, model.init_state(1))
        logp = torch.log_softmax(logits[0], -1)  # (N, V)
    # surprise: p(char t) is the model's probability for it after reading characters < t
    for t in (1, 2, 50, 99):
        assert numbers["surprise"][t]["p"] == pytest.approx(math.exp(float(logp[t - 1, ids[0, t]])), abs=1e-5)
        top_char, top_p = numbers["surprise"][t]["top"][0]
        assert top_char == tok.chars[int(logp[t - 1].argmax())]
        assert top_p == pytest.approx(float(logp[t - 1].exp().max()), abs=1e-5)
    assert numbers["surprise"][0] is None
    nll = -float(logp[:-1].gather(1, ids[0, 1:, None]).mean())
    assert numbers["loss"] == pytest.approx(nll, rel=1e-5)
    # activations: layer 1's h and c after reading character 30 (layer-major: l0 h, l0 c, l1 h, l1 c)
    with torch.no_grad():
        _, (h, c) = model(ids[:, :31], model.init_state(1))
    acts = numbers["activations"]
    np.testing.assert_allclose(acts[30, 12:18], h[1, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(acts[30, 18:24], c[1, 0].numpy(), atol=1e-5)
    assert numbers["parts"] == ["h", "c"] and len(numbers["reach"]["trained"]) == 8
    assert {n["feature"] for n in numbers["neurons"]} <= set(FEATURES)
    page = inspector.page(numbers, "tiny </script>")
    assert "/*DATA*/" not in page and "</script>\"" not in page and "tiny &lt;/script&gt;" in page


def test_long_text_is_read_in_segments_with_bounded_memory(tiny_model) -> None:
    model, tok = tiny_model
    text = "abc (a) XY\n" * 3000  # 33,000 characters
    numbers = inspector.inspect(model, tok, text, InspectConfig(show=200, reach=4))
    assert numbers["segments"] == 64 and numbers["characters"] == 64 * (33_000 // 64)
    assert numbers["activations"].shape == (200, 24) and len(numbers["surprise"]) == 200
    # the column feature is a clean periodic signal here: some unit must track it
    assert any(n["feature"] == "position in line" and abs(n["r"]) > 0.5 for n in numbers["neurons"])


@pytest.fixture
def run(words_file: Path) -> str:
    result = runner.invoke(app, ["train", str(words_file), "--name", "w", "--max-steps", "30", "--eval-every", "15",
                                 *TINY])
    assert result.exit_code == 0, result.output
    return "w"


def test_cli_writes_page_and_json(run: str, words_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", run, "--file", str(words_file), "--show", "300", "--reach", "16"])
    assert result.exit_code == 0, result.output
    page = tmp_path / "checkpoints" / "w" / "inspect.html"
    assert "wrote checkpoints/w/inspect.html: 25,216 characters" in result.output and page.stat().st_size > 10_000
    assert "<script src=" not in page.read_text() and "http" not in page.read_text().split("<script")[1][:200]
    result = runner.invoke(app, ["inspect", run, "the cat ☃ sat on the mat", "--json", "--out", "n.json"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 character(s) the model never saw: '☃' x1" in result.output
    data = json.loads((tmp_path / "n.json").read_text())
    assert data["text"] == "the cat  sat on the mat" and len(data["activations"]) == len(data["text"])
    assert len(data["activations"][0]) == 2 * 32 and data["parts"] == ["h"] and data["reach"]["untrained"] is not None
