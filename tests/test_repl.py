"""The REPL, scripted through piped stdin and driven in a real terminal (pexpect)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import train_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(words_file):
    return train_run(words_file, name="w", max_steps=40)


def repl(stdin: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "charnn", "repl", "w", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def test_piped_session(run) -> None:
    script = "\n".join(["the", ":temp 0", ":len 30", "the", "the", ":topk 3", ":topp 0.9", ":seed 5", ":info",
                        ":keep on", "the", ":reset", ":temp -1", ":bogus", ":keep maybe"]) + "\n"
    result = repl(script, "--length", "50", "--seed", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("the") and len(lines[0]) == 3 + 50  # the prompt, then 50 characters of reply
    assert lines[1:3] == ["temp = 0", "len = 30"]
    assert len(lines[3]) == 3 + 30 and lines[3] == lines[4]  # greedy: the same prompt gives the same reply
    info = next(i for i, line in enumerate(lines) if line.startswith("run "))
    assert "temp 0.0  len 30  topk 3  topp 0.9  seed 5  keep off" in lines[info + 1]
    assert "keep on" in lines and "context cleared" in lines
    assert any(line.startswith("error: :temperature -1.0") for line in lines)
    assert "error: unknown command ':bogus' — :help lists the commands" in lines
    assert "error: :keep takes on or off" in lines


def test_keep_continues_the_previous_context(run) -> None:
    opts = ("--length", "40", "--temperature", "1", "--seed", "3")
    kept = repl(":keep on\nthe\n cat\n", *opts).stdout.splitlines()
    assert kept[0] == "keep on"
    assert kept[1].startswith("the") and kept[2].startswith(" cat")  # each prompt, then its continuation
    first, second = kept[1][3:], kept[2][4:]
    # With keep on, the second reply is exactly what the whole history as one prompt gives.
    whole = repl(f"the{first} cat\n", *opts).stdout.splitlines()
    assert whole[0] == f"the{first} cat{second}"
    fresh = repl("the\nthe\n", *opts).stdout.splitlines()
    assert fresh[0] == fresh[1] == f"the{first}"  # without keep (and a fixed seed) each prompt starts afresh


def test_quit_and_unknown_prime_characters(run) -> None:
    result = repl("QQQ\n:quit\nthe\n", "--length", "10")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("error: the prime has character(s) the model never saw: 'Q'")
    assert len(lines) == 1  # nothing after :quit


@pytest.mark.slow
def test_terminal_session_with_ctrl_c(run) -> None:
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "charnn", "repl", "w", "--seed", "1"], env=env, encoding="utf-8",
                          timeout=60, dimensions=(40, 200))
    child.expect("charnn repl — w")
    child.expect("> ")
    child.sendline("the")
    child.expect("> ")
    child.sendline(":len 2000000")
    child.expect("len = 2000000")
    child.sendline("the")
    child.expect(r"\w{5}")  # generation is streaming
    child.sendintr()  # Ctrl-C stops the generation, not the REPL
    child.expect(r"\(stopped\)")
    child.expect("> ")
    child.sendline(":info")
    child.expect("len 2000000")
    child.sendeof()  # Ctrl-D leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
