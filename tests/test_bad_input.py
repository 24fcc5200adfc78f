"""Every user mistake: one line naming the problem and the fix, the right exit code, nothing on disk changed.

Each row: an id, the command line (``{good}`` is a valid corpus, ``{run}`` a trained run), an optional
setup that breaks something first, the exit code (2 usage, 1 other failures) and a regex the
one-line message must match.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charnn.cli import app
from charnn.text import corpus as corpus_mod
from tests.conftest import train_run

runner = CliRunner()
TINY = "--hidden 16 --embed 8 --batch-size 4 --seq-len 16 --max-steps 5 --device cpu -q"
FT = " --batch-size 4 --seq-len 16 --max-steps 5 --device cpu -q"  # a fine-tune's options: the parent's model


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(content)


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir()


def remove_run_file(name: str) -> Callable[[Path], None]:
    return lambda root: (root / "checkpoints" / "r" / name).unlink()


def truncate_run_file(name: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / "checkpoints" / "r" / name
        path.write_bytes(path.read_bytes()[:100])

    return setup


def edit_config(**changes: object) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / "checkpoints" / "r" / "config.json"
        config = json.loads(path.read_text())
        config.update(changes)
        path.write_text(json.dumps(config))

    return setup


def append_to_corpus(root: Path) -> None:
    with open(root / "good.txt", "a", encoding="utf-8") as f:
        f.write("a changed ending\n")


def unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(corpus_mod, "open", deny, raising=False)  # root ignores chmod, so deny at open()


CASES: list[tuple[str, str, Callable[[Path], None] | None, int, str]] = [
    # corpus problems
    ("missing corpus", "train nope.txt", None, 1, r"corpus 'nope.txt' not found — give a text file"),
    ("unreadable corpus", "train {good}", None, 1, r"cannot be read \(permission denied\)"),
    ("empty corpus", "train empty.txt", write("empty.txt", b""), 1, r"'empty.txt' is empty — give a file with at least 2"),
    ("folder without text files", "train folder", mkdir("folder"), 1, r"folder .folder. has no readable text file"),
    ("binary file", "train bin.txt", write("bin.txt", b"\x7fELF\x00\x01\x02"), 1, r"looks binary \(NUL byte at offset 4\)"),
    ("not UTF-8", "train latin.txt", write("latin.txt", "café".encode("latin-1") * 50), 1,
     r"not valid UTF-8 \(bad byte at offset 3\) — .*--replace-bad-bytes"),
    ("too short for the layout", "train {good} --batch-size 512 --seq-len 256", None, 2,
     r"needs at least 131,073 — lower --batch-size or --seq-len"),
    ("validation split too small", "train {good} --val-frac 0.00001", None, 2, r"validation split has 0 characters"),
    # hyper-parameters
    ("zero hidden", "train {good} --hidden 0", None, 2, r"--hidden 0 must be at least 1"),
    ("heads not dividing hidden", "train {good} --cell slstm --hidden 30 --heads 4", None, 2,
     r"--heads 4 does not divide --hidden 30 — use one of 2, 3, 5, 6"),
    ("heads for another cell", "train {good} --cell gru --heads 2", None, 2, r"--heads applies to --cell slstm and mlstm only"),
    ("model options on resume", "train --resume r --heads 2 --hidden 64", None, 2,
     r"--heads, --hidden cannot change when resuming: the run keeps the model"),
    ("dropout kind on resume", "train --resume r --locked-dropout", None, 2,
     r"--locked-dropout/--step-dropout cannot change when resuming"),
    ("window layout on resume", "train --resume r --same-windows", None, 2,
     r"--epoch-offset/--same-windows cannot change when resuming: the run keeps the model, batch, windows"),
    ("precision on resume", "train --resume r --no-amp", None, 2,
     r"--amp/--no-amp cannot change when resuming: the run keeps the model, batch, windows and precision"),
    ("negative layers", "train {good} --layers -2", None, 2, r"--layers -2 must be at least 1"),
    ("zero batch", "train {good} --batch-size 0", None, 2, r"--batch-size 0 must be at least 1"),
    ("negative lr", "train {good} --lr -1", None, 2, r"--lr -1.0 must be a positive number"),
    ("val-frac zero", "train {good} --val-frac 0", None, 2, r"--val-frac 0.0 must be between 0 and 1"),
    ("val-frac above one", "train {good} --val-frac 1.5", None, 2, r"--val-frac 1.5 must be between 0 and 1"),
    ("dropout one", "train {good} --dropout 1", None, 2, r"--dropout 1.0 must be in \[0, 1\)"),
    ("unknown cell", "train {good} --cell transformer", None, 2, r"--cell 'transformer' is unknown — use one of rnn, lstm, gru"),
    ("unparsable time", "train {good} --time soon", None, 2, r"'soon' is not a duration — use e.g. 90s, 10m"),
    ("non-numeric hidden", "train {good} --hidden big", None, 2, r"Invalid value for '--hidden'.* valid integer"),
    # cuda:99 is missing on a CPU machine and on any GPU machine alike
    ("device not available", "train {good} --device cuda:99", None, 1, r"--device cuda:99 is not available"),
    ("device name malformed", "train {good} --device cuda:x", None, 1, r"--device 'cuda:x' is not a device name"),
    # resources and names (devices issue): nothing allocated, nothing written
    ("model too big for memory", "train {good} --hidden 100000", None, 1,
     r"a gru 2x100000 has [\d.]+B parameters and needs at least [\d.]+ TB to train .* but this machine has "
     r"[\d.]+ [GMT]B free — use a smaller --hidden or --layers"),
    ("run name climbs out", "train {good} --name ../escape", None, 2,
     r"--name '\.\./escape' is not a valid name — use letters, digits, '-', '_' and '\.', not starting with '\.'"),
    ("run name nests", "train {good} --name a/b", None, 2, r"--name 'a/b' is not a valid name"),
    ("run name hidden", "train {good} --name .x", None, 2, r"--name '\.x' is not a valid name"),
    ("run name is the built-in model", "train {good} --name base", None, 2,
     r"--name 'base' is the name of charnn's built-in model — pick another name"),
    ("export folder name", "export r --format safetensors --out sub/b@d", None, 2,
     r"--out's folder name 'b@d' is not a valid name"),
    ("unknown device", "sample r --device tpu", None, 1, r"--device 'tpu' is unknown"),
    # runs
    ("run that does not exist", "sample nope", None, 1, r"run 'nope' not found — give a run name under 'checkpoints' \(r\)"),
    ("run name already exists", "train {good} --name r", None, 1, r"run 'checkpoints/r' already exists — .*--overwrite"),
    ("run missing best.pt", "sample r", remove_run_file("best.pt"), 1, r"best.pt' is missing"),
    ("run missing tokenizer", "sample r", remove_run_file("tokenizer.json"), 1, r"has no tokenizer.json"),
    ("run missing config", "sample r", remove_run_file("config.json"), 1, r"run 'r' not found"),
    ("truncated latest.pt", "sample r --checkpoint latest", truncate_run_file("latest.pt"), 1, r"truncated or corrupt"),
    ("truncated config", "sample r", truncate_run_file("config.json"), 1, r"config.json' is unreadable or not JSON"),
    ("unknown format version", "sample r", edit_config(format_version=99), 1,
     r"format version 99, this charnn reads version 1"),
    ("mistyped config", "sample r", edit_config(model={"cell": "lstm"}), 1, r"missing or mistyped model field"),
    ("resume with changed corpus", "train --resume r good.txt", append_to_corpus, 2,
     r"not the one run 'r' was trained on .* give the original file"),
    ("output folder not writable", "train {good} --checkpoints-dir good.txt/runs", None, 1,
     r"cannot create run folder .* pass a writable --checkpoints-dir"),
    # fine-tuning (--from): nothing is read beyond the parent, nothing written
    ("--from unknown run", "train {good} --from nosuch" + FT, None, 1, r"--from: run 'nosuch' not found — give a run name"),
    ("--from a folder that is not a run", "train {good} --from stuff" + FT, mkdir("stuff"), 1,
     r"--from 'stuff': that folder is not a charnn run \(it has no config.json\)"),
    ("--from unknown format version", "train {good} --from r" + FT, edit_config(format_version=99), 1,
     r"format version 99, this charnn reads version 1"),
    ("--from corrupt best.pt", "train {good} --from r" + FT, truncate_run_file("best.pt"), 1,
     r"best.pt' is truncated or corrupt"),
    ("--from latest missing", "train {good} --from r:latest" + FT, remove_run_file("latest.pt"), 1,
     r"latest.pt' is missing"),
    ("--from with --resume", "train --from r --resume r", None, 2, r"--from starts a new run and --resume continues one"),
    ("--from contradicting architecture", "train {good} --from r --hidden 64 --cell gru" + FT, None, 2,
     r"--cell gru, --hidden 64 contradicts the model of 'r' \(--cell lstm, --layers 2, --hidden 32, --embed 16\)"),
    ("--from base contradicting architecture", "train {good} --from base --hidden 64" + FT, None, 2,
     r"--hidden 64 contradicts the model of 'base' \(--cell gru, --layers 2, --hidden 512, --embed 128\)"),
    ("--resume base", "train --resume base", None, 2, r"'base' is a model folder .* it cannot be resumed; fine-tune from "
     r"it instead: charnn train CORPUS --from base"),
    ("--from the parent's own name", "train {good} --from r --name r --overwrite" + FT, None, 2,
     r"--name 'r' is the parent run itself — fine-tuning writes a new run"),
    # sampling
    ("prime with unseen characters", "sample r --prime QX", None, 1, r"prime has character\(s\) the model never saw: 'Q', 'X'"),
    ("negative temperature", "sample r --temperature -1", None, 2, r"--temperature -1.0 must be 0 \(greedy\) or more"),
    ("top-k zero", "sample r --top-k 0", None, 2, r"--top-k 0 must be at least 1"),
    ("items zero", "sample r --items 0", None, 2, r"--items 0 must be at least 1"),
    ("items with num-samples", "sample r --items 3 --num-samples 2", None, 2, r"--num-samples does not combine with --items"),
    ("items with stop", "sample r --items 3 --stop x", None, 2, r"--stop does not combine with --items"),
    ("new without items", "sample r --new", None, 2, r"--new works with --items N"),
    ("separator the model never saw", "sample r --items 3 --separator Q", None, 2,
     r"the separator has character\(s\) the model never saw \('Q'\)"),
    ("prime holding the separator", "sample r --items 3 --separator o --prime fox", None, 2,
     r"must not contain the separator"),
    ("beam zero", "sample r --beam 0", None, 2, r"--beam 0 must be between 1 and 64"),
    ("beam too wide", "sample r --beam 65 --items 2", None, 2, r"--beam 65 must be between 1 and 64"),
    ("beam with top-k", "sample r --beam 4 --top-k 3", None, 2, r"--top-k does not combine with --beam"),
    ("beam with num-samples", "sample r --beam 4 --num-samples 2", None, 2, r"--num-samples does not combine with --beam"),
    ("items attempts zero", "sample r --items 3 --attempts 0", None, 2, r"--attempts 0 must be at least 1"),
    ("items --new without the corpus", "sample r --items 3 --new --corpus gone.txt", None, 1,
     r"--new needs the text 'r' was trained on"),
    ("top-p above one", "sample r --top-p 2", None, 2, r"--top-p 2.0 must be in \(0, 1\]"),
    # steering
    ("words nonsense", "sample r --words nonsense", None, 2, r"--words 'nonsense' is not one of: any \(the default\), known"),
    ("no-repeat zero", "sample r --no-repeat 0", None, 2, r"--no-repeat 0 must be at least 2"),
    ("empty require", "sample r --require=", None, 2, r"--require must not be empty: give a word every result must"),
    ("penalty out of range", "sample r --frequency-penalty 3", None, 2, r"frequency_penalty 3.0 must be between -2 and 2"),
    ("missing prime file", "sample r --prime-file gone.txt", None, 2, r"--prime-file 'gone.txt' does not exist — give the"),
    ("prime file that is a folder", "sample r --prime-file folder", mkdir("folder"), 2, r"--prime-file 'folder' is a folder"),
    ("prime file not UTF-8", "sample r --prime-file latin.txt", write("latin.txt", b"caf\xe9\n"), 2,
     r"--prime-file 'latin.txt' is not UTF-8 text \(byte 3\) — convert it"),
    ("prime file of unknown characters", "sample r --prime-file u.txt", write("u.txt", "☃☃QQ".encode()), 2,
     r"--prime-file 'u.txt' has no character the model knows"),
    ("endless prime file", "sample r --prime-file /dev/zero", None, 2,
     r"--prime-file '/dev/zero' is longer than 1,000,000 characters — give its last part"),
    ("prime and prime file", "sample r --prime a --prime-file p.txt", write("p.txt", b"a"), 2,
     r"--prime and --prime-file both give the prime — keep one"),
    ("words known without the corpus", "sample r --words known --corpus gone.txt", None, 1,
     r"--words known needs the text 'r' was trained on"),
    ("require with beam", "sample r --beam 4 --require the", None, 2, r"--require does not combine with --beam"),
    ("non-numeric temperature", "sample r --temperature hot", None, 2, r"Invalid value for '--temperature'.* number"),
    ("negative length", "sample r --length -5", None, 2, r"--length -5 must be 0 or more"),
    ("unknown checkpoint", "sample r --checkpoint oldest", None, 1, r"--checkpoint 'oldest' is unknown"),
    ("eval of a missing file", "eval r nope.txt", None, 1, r"corpus 'nope.txt' not found"),
    ("eval of a text the model cannot read", "eval r u.txt", write("u.txt", "☃☃☃☃QQXX".encode()), 2,
     r"no character of this text is in the model's vocabulary \('☃', 'Q', 'X'\) — score text written in the alphabet"),
    ("eval of a text with one known character", "eval r u.txt", write("u.txt", "☃☃☃☃QQXa".encode()), 2,
     r"only 1 of this text's characters are in the model's vocabulary \(it never saw '☃', 'Q', 'X'\)"),
    # resources: threads, records, ports
    ("more threads than cores", "train {good} --threads 9999", None, 2,
     r"--threads 9999 is more than this machine's \d+ cores — use at most \d+ \(or 0 for PyTorch's default\)"),
    ("negative threads", "sample r --threads -1", None, 2, r"--threads -1 must be 0 or more"),
    ("records file without a kind", "train --voices-from /dev/zero --name x", None, 2,
     r"--voices-from '/dev/zero': give a .jsonl file \(one JSON object a line\) or a .csv file"),
    ("records with a line that is not UTF-8", "train --voices-from r.jsonl --name x", write("r.jsonl", b'{"text": "a\xff"}\n'),
     2, r"--voices-from 'r.jsonl' line 1 is not UTF-8 text — save the file as UTF-8"),
    ("a port that is not one", "serve r --port 70000", None, 2, r"--port 70000 must be between 1 and 65535"),
    ("a host that is not an address", "serve r --host 999.1.1.1", None, 2,
     r"--host '999.1.1.1' is not an address this machine can listen on .* give 127.0.0.1"),
    ("a host of another machine", "serve r --host 192.0.2.1", None, 2, r"--host '192.0.2.1' is not an address of this machine"),
    # plot and inspect
    ("plot of a run with no evaluations", "plot r", remove_run_file("metrics.jsonl"), 2, r"run 'r' has no evaluations yet"),
    ("plot to a pdf", "plot r --out x.pdf", None, 2, r"--out 'x.pdf' must end in .png or .svg"),
    ("plot into a missing folder", "plot r --out nowhere/x.png", None, 2, r"folder 'nowhere' does not exist"),
    ("plot of an unknown run", "plot nope", None, 1, r"run 'nope' not found"),
    ("plot along epochs", "plot r --x epochs", None, 2, r"--x must be one of tokens, time, step"),
    ("inspect an unknown run", "inspect nope text", None, 1, r"run 'nope' not found"),
    ("inspect without text", "inspect r", None, 2, r"give the text to read either as TEXT or with --file FILE"),
    ("inspect a missing file", "inspect r --file nope.txt", None, 1, r"corpus 'nope.txt' not found"),
    ("inspect into a missing folder", "inspect r text --out nowhere/p.html", None, 2, r"folder 'nowhere' does not exist"),
    ("inspect only unseen characters", "inspect r ☃☃☃", None, 2, r"fewer than 2 characters the model knows"),
    ("inspect a run without best.pt", "inspect r text", remove_run_file("best.pt"), 1, r"best.pt"),
    ("inspect --show 0", "inspect r text --show 0", None, 2, r"--show 0 must be between 1 and 20000"),
]


def test_a_busy_port_is_one_line_before_anything_loads(trained_template: Path, tmp_path: Path) -> None:
    shutil.copytree(trained_template, tmp_path, dirs_exist_ok=True)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        before = snapshot(tmp_path)
        result = runner.invoke(app, ["serve", "r", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use — pass another --port, or stop the program that holds it"]
    assert snapshot(tmp_path) == before


def test_scoring_a_text_outside_the_alphabet_names_its_characters(trained_template: Path) -> None:
    from charnn import api
    from charnn.errors import UsageError

    model = api.load_run(str(trained_template / "checkpoints" / "r"))
    with pytest.raises(UsageError, match=r"^no character of this text is in the model's vocabulary \('Q', 'X'\)"):
        model.score("QQXQ")
    with pytest.raises(UsageError, match=r"^only 1 of this text's characters are in the model's vocabulary"):
        model.score("QQXa")
    with pytest.raises(UsageError, match=r"needs at least 2 characters"):
        model.score("a")  # too short is still too short


def test_an_endless_record_is_refused_in_bounded_memory(trained_template: Path, tmp_path: Path) -> None:
    """A JSON-lines file whose first line never ends: refused after MAX_RECORD bytes, not read whole."""
    shutil.copytree(trained_template, tmp_path, dirs_exist_ok=True)
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    before = snapshot(tmp_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the most this process ever held
    result = runner.invoke(app, ["train", "--voices-from", "zero.jsonl", "--name", "x", "--max-steps", "2"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --voices-from 'zero.jsonl' line 1 is longer than 64 MB — split the document into records of at most that size"]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 300 * 1024, f"the peak grew by {grown / 1024:.0f} MB"
    assert snapshot(tmp_path) == before


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        (root / "good.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 80, encoding="utf-8")
        train_run(root / "good.txt", name="r", max_steps=10, eval_every=5, batch_size=4, seq_len=16)
    finally:
        os.chdir(cwd)
    return root


@pytest.mark.parametrize(("args", "setup", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: str,
                   setup: Callable[[Path], None] | None, code: int, message: str) -> None:
    shutil.copytree(trained_template, tmp_path, dirs_exist_ok=True)
    if setup is not None:
        setup(tmp_path)
    if "unreadable" in message or "permission denied" in message:
        unreadable(monkeypatch)
    before = snapshot(tmp_path)
    argv = args.format(good="good.txt").split()
    if argv[0] == "train" and "--resume" not in argv and "--from" not in argv:
        argv[1:1] = TINY.split()  # before the row's own options, which therefore win
    result = runner.invoke(app, argv)
    out = result.output.strip()
    assert result.exit_code == code, out
    assert "Traceback" not in out
    lines = out.splitlines()
    if code == 1:  # our own errors: exactly one line
        assert len(lines) == 1 and lines[0].startswith("error: "), out
        assert re.search(message, lines[0]), lines[0]
    else:  # usage errors: ours are one line; Typer's own parse errors come in its usage box
        flat = " ".join(line.strip(" │╭╮╰╯─") for line in lines)
        assert re.search(message, re.sub(r"\s+", " ", flat)), out
    assert snapshot(tmp_path) == before, "a failed command changed files on disk"
