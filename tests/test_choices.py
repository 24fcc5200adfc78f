"""Choosing the next word: the exact best-first search, and `charnn repl --choose` piped and in a real terminal."""

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charnn.model.network import CharRNN, ModelConfig
from charnn.sample.choices import ChoicesConfig, next_choices
from charnn.text.tokenizer import CharTokenizer
from tests.conftest import train_run

ROOT = Path(__file__).resolve().parents[1]
ALPHABET = "ab '.\n"  # word characters a, b; an inner apostrophe; a space and newline to lead; an ending


def tiny(seed: int) -> tuple[CharRNN, CharTokenizer]:
    torch.manual_seed(seed)
    tokenizer = CharTokenizer(ALPHABET)
    model = CharRNN(ModelConfig(vocab_size=tokenizer.vocab_size, cell="gru", layers=1, hidden=16, embed=8)).eval()
    return model, tokenizer


def logprob_of(model: CharRNN, tokenizer: CharTokenizer, prime: str, text: str) -> list[float]:
    """log P(text) after prime, and log P(next character) at its end, by one forward pass: (log P(text), logp)."""
    ids = torch.tensor([tokenizer.encode_array(prime + text).tolist()])
    with torch.inference_mode():
        logits, _ = model(ids, model.init_state(1))
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    start = len(prime)
    total = sum(float(logp[start - 1 + i, ids[0, start + i]]) for i in range(len(text)))
    return [total, *logp[-1].tolist()]


def brute_force(model: CharRNN, tokenizer: CharTokenizer, prime: str, max_word: int) -> dict[str, float]:
    """Every word up to max_word characters, with its probability of being written and then ended."""
    ends = [tokenizer.chars.index(c) for c in " '.\n"]
    words = {}
    for lead in ("", " ", "\n", "  ", " \n", "\n ", "\n\n"):
        for n in range(1, max_word - len(lead) + 1):
            for body in map("".join, itertools.product("ab'", repeat=n)):
                if body[0] == "'" or body[-1] == "'" or "''" in body:
                    continue
                total, *next_logp = logprob_of(model, tokenizer, prime, lead + body)
                words[lead + body] = total + math.log(sum(math.exp(next_logp[i]) for i in ends))
    return words


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), prime=st.sampled_from(["\n", "ab ", "a'", "b.", "ba"]), k=st.integers(1, 6))
def test_the_search_finds_the_k_most_likely_words_exactly(seed: int, prime: str, k: int) -> None:
    model, tokenizer = tiny(seed)
    max_word = 4
    ids = torch.tensor([tokenizer.encode_array(prime).tolist()])
    with torch.inference_mode():
        logits, state = model(ids, model.init_state(1))
    found = next_choices(model, tokenizer, state, logits[:, -1], ChoicesConfig(k=k, max_word=max_word, budget=10_000))
    assert found.complete
    every = brute_force(model, tokenizer, prime, max_word)
    best = sorted(every.values(), reverse=True)[:k]
    assert [w.logprob for w in found.words] == pytest.approx(best, abs=1e-5)  # the top k, best first
    for word in found.words:
        assert word.logprob == pytest.approx(every[word.text], abs=1e-5)  # each one's probability, exactly
    next_logp = torch.log_softmax(logits[0, -1].double(), dim=-1)
    assert [c.logprob for c in found.chars] == pytest.approx(next_logp.topk(k).values.tolist(), abs=1e-5)


def test_a_small_budget_says_the_search_was_cut_short() -> None:
    model, tokenizer = tiny(0)
    ids = torch.tensor([tokenizer.encode_array("\n").tolist()])
    with torch.inference_mode():
        logits, state = model(ids, model.init_state(1))
    found = next_choices(model, tokenizer, state, logits[:, -1], ChoicesConfig(k=5, budget=2, batch=1))
    assert not found.complete and found.expansions == 2
    assert len(found.chars) == 5


@pytest.fixture
def run(words_file):
    return train_run(words_file, name="w", max_steps=60)


def choose(stdin: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "charnn", "repl", "w", "--choose", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=120)


def offered(lines: list[str], after: int) -> dict[int, str]:
    """The numbered choices printed after line `after`: number -> text."""
    words, chars = (next(line for line in lines[after:] if line.startswith(kind)) for kind in ("  words:", "  chars:"))
    found = {}
    for line in (words, chars):
        for cell in line.split(":", 1)[1].split("%"):
            if cell.strip():
                number, rest = cell.strip().split(" ", 1)
                found[int(number)] = rest.rsplit(" ", 1)[0][1:-1].replace("\\n", "\n")
    return found


def test_piped_choose_picks_by_number_types_text_and_undoes(run) -> None:
    result = choose("the\n1\n6\n:undo\n cat\n:auto 20\n99\n:type  on\nQ\n:k 2\n", "--seed", "2", "--choices", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "(empty: the model starts at a new line)"
    typed = lines.index("> the")
    assert lines[typed + 1] == "the"
    first = offered(lines, typed + 1)
    assert sorted(first) == list(range(1, 9))  # 4 words, then 4 characters
    assert all(w.lstrip(" \n").isalpha() for n, w in first.items() if n <= 4)
    picked = lines.index("> 1")
    assert lines[picked + 1] == "the" + first[1]  # picking a word appends it
    second = offered(lines, picked + 1)
    assert lines[lines.index("> 6") + 1] == "the" + first[1] + second[6]  # a character
    assert lines[lines.index("> :undo") + 1] == "the" + first[1]
    assert lines[lines.index(">  cat") + 1] == "the" + first[1] + " cat"  # typed text, as typed
    assert "error: pick 1-8; to type digits use :type 99" in lines
    assert "error: that text has character(s) the model never saw: 'Q'" in lines
    whole = result.stdout.split("--- the text (")[1].split("\n", 1)[1].rstrip("\n")
    assert whole.startswith("the" + first[1] + " cat") and whole.endswith(" on")
    assert len(whole) == len("the" + first[1] + " cat") + 20 + 3  # :auto 20 wrote 20 characters


def test_choose_bad_options_are_one_line(run) -> None:
    for args, message in [(("--choices", "0"), "--choices 0 must be between 1 and 20"),
                          (("--copies",), "--copies marks a reply's copies; it does not apply to --choose")]:
        result = choose("", *args)
        assert result.returncode != 0
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_choose_in_a_terminal(run) -> None:
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "charnn", "repl", "w", "--choose", "--choices", "3"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect("charnn repl --choose — w")
    child.expect(r"  words:\s+1 \"([^\"]+)\"")
    first_word = child.match.group(1)
    child.expect("> ")
    child.sendline("1")  # a pick by number
    child.expect(rf"\r\n{first_word}\r\n  words:")
    child.expect("> ")
    child.sendline(" cat")  # typed text
    child.expect(rf"{first_word} cat\r\n  words:")
    child.expect("> ")
    child.sendline(":auto 5000000")
    child.expect("error: :auto takes a number of characters")
    child.sendline(":quit")
    child.expect(rf"--- the text \(\d+ characters\) ---\r\n{first_word} cat")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
