"""Training under torchrun on CPU (gloo): equivalence, one writer, stopping together, resume, errors, the run lock.

Each test launches real `torchrun` processes, so they are slow (a few seconds per launch).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from charnn import api, distributed
from charnn.errors import RunError, UsageError
from charnn.model.network import CharRNN
from charnn.run import checkpoint, lock
from charnn.text.streams import Streams
from tests.conftest import free_port, tiny_model, tiny_train, train_run, wait_for_records

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# The tiny model of conftest, as CLI options; dropout 0 so that 1 and 2 processes compute the same gradients.
MODEL = ["--cell", "lstm", "--layers", "2", "--hidden", "32", "--embed", "16", "--batch-size", "8", "--seq-len", "32",
         "--lr", "1e-2", "--warmup", "5", "--seed", "7", "--device", "cpu", "--quiet"]
WEIGHT_TOL = 1e-4  # measured: 3.1e-6 max abs difference after 40 steps (benchmarks/RESULTS.md)
VAL_TOL = 1e-5  # measured: 2e-7


def _run(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, capture_output=True,
                          text=True, timeout=timeout)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load_tensors(run_dir / checkpoint.LATEST)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _launch_wrapped(wrapper: str, cwd: Path, args: list[str]) -> subprocess.Popen:
    """torchrun with 2 processes, each a bash `wrapper` around `python -m charnn ARGS` ($0 is python)."""
    return subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node=2", "--no-python", "bash", "-c", wrapper,
                             sys.executable, *args], cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


AUDIT = r'''
import os, runpy, sys
log = []
def hook(event, args):
    if event == "open" and args[0] is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (flags and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            log.append(("open", str(path)))
    elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.truncate"):
        log.append((event, str(args[0])))
sys.addaudithook(hook)
try:
    sys.argv = ["charnn", *sys.argv[1:]]
    runpy.run_module("charnn", run_name="__main__")
finally:
    with open(os.environ["AUDIT_DIR"] + f"/rank{os.environ['RANK']}.log", "w") as f:
        f.write("\n".join(f"{e}\t{p}" for e, p in log if not p.startswith(("/dev", "/proc", "/tmp/torchelastic"))))
'''


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One standalone 2-process run (audited) and the single-process run with the same global batch."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = root / "words.txt"
    import random

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "über", "naïve"]
    corpus.write_text(" ".join(rng.choice(words) for _ in range(6000)) + "\n", encoding="utf-8")
    limits = ["--max-steps", "40", "--eval-every", "10", "--dropout", "0"]
    single = _run([sys.executable, "-m", "charnn", "train", "words.txt", "--name", "single", *MODEL, *limits], root)
    assert single.returncode == 0, single.stderr
    (root / "audit.py").write_text(AUDIT, encoding="utf-8")
    (root / "audit").mkdir()
    before = {p for p in root.rglob("*")}
    ddp = _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "--no-python", sys.executable, "audit.py",
                "train", "words.txt", "--name", "ddp", *limits, *MODEL[:-1]], root, timeout=180,
               AUDIT_DIR=str(root / "audit"))
    assert ddp.returncode == 0, ddp.stderr
    created = {p for p in root.rglob("*")} - before
    return {"root": root, "single": root / "checkpoints" / "single", "ddp": root / "checkpoints" / "ddp",
            "stderr": ddp.stderr, "created": created}


@pytest.mark.slow
def test_two_processes_match_one_and_only_rank_0_writes(two_process_run: dict) -> None:
    single, ddp, root = two_process_run["single"], two_process_run["ddp"], two_process_run["root"]
    assert "2 processes stopped together at step 40; weights identical on every rank" in two_process_run["stderr"]
    assert _max_diff(_weights(single), _weights(ddp)) < WEIGHT_TOL
    one, two = checkpoint.read_metrics(single), checkpoint.read_metrics(ddp)
    assert [r["step"] for r in two] == [10, 20, 30, 40]  # exactly one record per evaluation
    for a, b in zip(one, two, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < VAL_TOL
        assert abs(a["train_loss"] - b["train_loss"]) < VAL_TOL
        assert a["tokens"] == b["tokens"] and a["lr"] == pytest.approx(b["lr"])
    config = json.loads((ddp / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo"}
    payload = checkpoint.load_tensors(ddp / checkpoint.LATEST)
    assert payload["world_size"] == 2 and len(payload["rng_ranks"]) == 2
    assert all(s.shape == (2, 8, 32) for s in payload["state"])  # all 8 streams, single-process layout
    # Rank 1 wrote nothing in the working folder (its audit log lists every write-mode open, mkdir,
    # rename and remove; outside it only torch's own temp files at import time).
    def writes(rank: int) -> list[str]:
        lines = (root / "audit" / f"rank{rank}.log").read_text().splitlines()
        return [x for x in lines if str(root) in x and str(root / "audit") not in x]

    assert writes(1) == []
    assert any("metrics.jsonl" in x for x in writes(0)) and any("latest.pt" in x for x in writes(0))
    created = {p.relative_to(root).as_posix() for p in two_process_run["created"]}
    assert {c for c in created if c.startswith("checkpoints")} == {
        "checkpoints/ddp", *(f"checkpoints/ddp/{n}" for n in ("config.json", "tokenizer.json", "best.pt", "latest.pt",
                                                             "metrics.jsonl", ".train.lock"))}


@pytest.mark.slow
def test_mlstm_two_processes_match_one_and_keep_the_whole_memory(words_file: Path, tmp_path: Path) -> None:
    # The mLSTM state is not (L, B, H): C is (L, B, K·d·d) and m (L, B, K). Sharding and gathering go by axis 1.
    model = [*MODEL[:1], "mlstm", *MODEL[2:]]
    limits = ["--max-steps", "20", "--eval-every", "10", "--dropout", "0"]
    single = _run([sys.executable, "-m", "charnn", "train", "words.txt", "--name", "single", *model, *limits], tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "charnn", "train", "words.txt", "--name", "ddp",
                *model, *limits], tmp_path, timeout=180)
    assert ddp.returncode == 0, ddp.stderr
    runs = tmp_path / "checkpoints"
    assert _max_diff(_weights(runs / "single"), _weights(runs / "ddp")) < WEIGHT_TOL
    for a, b in zip(checkpoint.read_metrics(runs / "single"), checkpoint.read_metrics(runs / "ddp"), strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < VAL_TOL
    one = checkpoint.load_tensors(runs / "single" / checkpoint.LATEST)["state"]
    two = checkpoint.load_tensors(runs / "ddp" / checkpoint.LATEST)["state"]
    assert [tuple(s.shape) for s in two] == [(2, 8, 32), (2, 8, 4 * 8 * 8), (2, 8, 32), (2, 8, 4), (2, 8, 3 * 32)]
    for a, b in zip(one, two, strict=True):  # C sums many steps: compared relative to its size
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_multinode_on_one_machine_matches_standalone(two_process_run: dict) -> None:
    root = two_process_run["root"]
    port = free_port()
    args = ["train", "words.txt", "--name", "multi", "--max-steps", "40", "--eval-every", "10", "--dropout", "0", *MODEL]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes=2", f"--node-rank={k}", "--nproc_per_node=1",
                               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=charnn-test",
                               "-m", "charnn", *args], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    outs = [n.communicate(timeout=180) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), outs
    multi = root / "checkpoints" / "multi"
    assert _max_diff(_weights(multi), _weights(two_process_run["ddp"])) == 0.0  # same world size, same sums
    assert [r["step"] for r in checkpoint.read_metrics(multi)] == [10, 20, 30, 40]


@pytest.mark.slow
def test_sigint_to_launcher_stops_all_ranks_then_resumes_exactly(words_file: Path, tmp_path: Path) -> None:
    limits = ["--max-steps", "500", "--eval-every", "50", "--dropout", "0.2"]  # dropout: RNG state must resume too
    straight = _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "charnn", "train", str(words_file),
                     "--name", "straight", *limits, *MODEL], tmp_path, timeout=300)
    assert straight.returncode == 0, straight.stderr
    # Each rank runs inside a shell that reports the rank's own exit status after the signal.
    launcher = _launch_wrapped('trap : INT TERM; "$0" -m charnn "$@"; echo "rank $RANK exit $?"', tmp_path,
                               ["train", str(words_file), "--name", "split", *limits, *MODEL[:-1]])
    wait_for_records(tmp_path / "checkpoints" / "split", 2)
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=120)
    assert "rank 0 exit 0" in out and "rank 1 exit 0" in out, (out, err)
    line = next(x for x in err.splitlines() if x.startswith("interrupted at step"))
    step = int(line.split()[3].rstrip(";"))
    assert 100 <= step < 500
    assert f"2 processes stopped together at step {step}; weights identical on every rank" in err
    assert "Continue with: torchrun --standalone --nproc_per_node=2 -m charnn train --resume split" in err
    assert checkpoint.load_tensors(tmp_path / "checkpoints" / "split" / checkpoint.LATEST)["step"] == step
    # A copy to resume on one process later.
    import shutil

    shutil.copytree(tmp_path / "checkpoints" / "split", tmp_path / "checkpoints" / "split1")
    again = _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "charnn", "train", "--resume", "split"],
                 tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    a, b = _weights(tmp_path / "checkpoints" / "straight"), _weights(tmp_path / "checkpoints" / "split")
    assert all(torch.equal(a[k], b[k]) for k in a), "2-process resume must be bit-for-bit"
    steps = [r["step"] for r in checkpoint.read_metrics(tmp_path / "checkpoints" / "split")]
    assert steps == list(range(50, 501, 50))
    one = _run([sys.executable, "-m", "charnn", "train", "--resume", "split1", "--quiet"], tmp_path, timeout=300)
    assert one.returncode == 0, one.stderr
    last = checkpoint.read_metrics(tmp_path / "checkpoints" / "split1")[-1]
    assert last["step"] == 500 and last["val_loss"] < 1.5  # continued and kept learning (not bit-exact: dropout)
    cfg = json.loads((tmp_path / "checkpoints" / "split1" / "config.json").read_text())
    assert cfg["distributed"]["world_size"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["words.txt", "--batch-size", "7"], "error: --batch-size 7 does not divide among 2 processes — use 6 or 8"),
    (["missing.txt"], "error: corpus 'missing.txt' not found"),
    (["words.txt", "--hiden", "3"], "No such option: --hiden"),
])
def test_bad_input_under_torchrun_fails_once_before_the_group(words_file: Path, tmp_path: Path, args: list[str],
                                                             message: str) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    result = _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "charnn", "train", *args, "--max-steps", "5"],
                  tmp_path)
    assert result.returncode != 0
    ours = [x for x in result.stderr.splitlines() if message in x and not x.startswith(" ")]
    assert len(ours) == 1, result.stderr  # one line, not one per process
    assert "charnn/" not in "".join(x for x in result.stderr.splitlines() if x.strip().startswith("File "))
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written


def test_launch_reads_torchrun_environment() -> None:
    assert distributed.Launch.from_env({}) == distributed.Launch()
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "GROUP_RANK": "1"}
    launch = distributed.Launch.from_env(env)
    assert (launch.rank, launch.world_size, launch.local_rank, launch.node_rank) == (3, 4, 1, 1)
    assert not launch.is_writer and not launch.reports_errors and launch.under_torchrun
    assert launch.device(torch.device("cuda")) == torch.device("cuda", 1)
    with pytest.raises(UsageError, match="torchrun's environment is malformed"):
        distributed.Launch.from_env({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(UsageError, match="inconsistent"):
        distributed.Launch.from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(UsageError, match=r"--batch-size 10 does not divide among 4 processes — use 8 or 12"):
        launch.check_batch(10)
    with pytest.raises(UsageError, match=r"--batch-size 3 does not divide among 4 processes — use 4 \("):
        launch.check_batch(3)
    launch.check_batch(12)


def test_rank_blocks_are_the_single_process_layout() -> None:
    import numpy as np

    ids = np.arange(1000) % 251
    whole = Streams(ids, 8, 16)
    x_all, y_all = whole.window(3)
    parts = []
    for rank in range(4):
        group = distributed.ProcessGroup(distributed.Launch(rank=rank, world_size=4, under_torchrun=True),
                                         torch.device("cpu"), None)
        block = Streams(ids, 8, 16, group.block(8))
        assert block.rows == 2 and block.n_windows == whole.n_windows
        parts.append(block.window(3))
    assert torch.equal(torch.cat([p[0] for p in parts]), x_all) and torch.equal(torch.cat([p[1] for p in parts]), y_all)
    # uneven (evaluation): 5 streams over 2 ranks -> 2 + 3, contiguous, nothing lost
    g = [distributed.ProcessGroup(distributed.Launch(rank=r, world_size=2, under_torchrun=True), torch.device("cpu"),
                                  None) for r in (0, 1)]
    assert [g[0].block(5), g[1].block(5)] == [slice(0, 2), slice(2, 5)]


def test_join_frees_the_ddp_wrapper_before_the_process_can_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrapper in a reference cycle (DDP, in a fresh process) must be collected while the group is alive:
    left to interpreter shutdown, gloo aborts the rank (SIGABRT) after training finished."""
    import gc
    import weakref

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    launch = distributed.Launch(world_size=1, under_torchrun=True)

    def train_like(group: distributed.ProcessGroup) -> weakref.ref:  # what train() does with the wrapper
        cfg = replace(tiny_model(), vocab_size=5)
        model = CharRNN(cfg)
        net = group.wrap(model)
        net(torch.zeros(2, 4, dtype=torch.long), model.init_state(2))[0].sum().backward()
        # DDP's own cycle shows in a fresh process but not after some other tests have run; make one
        # that is always there, so the test checks join's collection rather than DDP's internals.
        net.itself = [net]
        return weakref.ref(net)

    gc.disable()  # as if no collection happened to run between the end of training and exit
    try:
        with distributed.join(launch, torch.device("cpu")) as group:
            wrapper = train_like(group)
            assert wrapper() is not None  # the cycle keeps it alive after train_like returned
        assert wrapper() is None
    finally:
        gc.enable()


def test_a_run_being_trained_is_locked(words_file: Path) -> None:
    run_dir = train_run(words_file, name="r", max_steps=10, eval_every=5)
    with lock.locked(run_dir):
        for attempt in (
            lambda: api.resume_training("r", max_steps=20, device="cpu", show_progress=False),
            lambda: api.start_training(str(words_file), tiny_model(), tiny_train(), name="r", overwrite=True,
                                       device="cpu", show_progress=False),
        ):
            with pytest.raises(RunError, match=rf"run 'r' is being trained right now by process {os.getpid()} on "):
                attempt()
    assert [r["step"] for r in checkpoint.read_metrics(run_dir)] == [5, 10]  # untouched
    api.resume_training("r", max_steps=20, device="cpu", show_progress=False)  # released: works again
    assert [r["step"] for r in checkpoint.read_metrics(run_dir)] == [5, 10, 15, 20]


@pytest.mark.slow
def test_concurrent_resume_refused_and_sigkill_leaves_no_stale_lock(words_file: Path, tmp_path: Path) -> None:
    train_run(words_file, name="r", max_steps=10, eval_every=5)
    cmd = [sys.executable, "-m", "charnn", "train", "--resume", "r", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([*cmd, "--max-steps", "100000"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    wait_for_records(tmp_path / "checkpoints" / "r", 3)  # the first is training
    second = _run([*cmd, "--max-steps", "100000"], tmp_path)
    assert second.returncode == 1
    assert second.stderr.strip() == (f"error: run 'r' is being trained right now by process {first.pid} on "
                                     f"{socket.gethostname()} — wait for it to finish or stop it (Ctrl-C saves it), "
                                     "or pick another --name")
    # Readers do not take the lock: sampling works on the run while it trains.
    sample = _run([sys.executable, "-m", "charnn", "sample", "r", "--length", "20", "--seed", "1"], tmp_path)
    assert sample.returncode == 0 and len(sample.stdout) > 20, sample.stderr
    assert first.poll() is None, "the first resume was still training while the second and the sampler ran"
    first.send_signal(signal.SIGINT)  # it saves and ends (however far a loaded machine got), releasing the lock
    assert first.wait(timeout=180) == 0, first.stderr.read() if first.stderr else ""
    steps = [r["step"] for r in checkpoint.read_metrics(tmp_path / "checkpoints" / "r")]
    assert len(steps) >= 3 and steps == list(range(5, steps[-1] + 1, 5))  # one record per evaluation, none doubled
    # SIGKILL while training: the kernel drops the lock, the next resume needs no clean-up.
    killed = subprocess.Popen([*cmd, "--max-steps", "100000"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    wait_for_records(tmp_path / "checkpoints" / "r", len(steps) + 3)
    killed.kill()
    killed.wait()
    saved = checkpoint.load_tensors(tmp_path / "checkpoints" / "r" / checkpoint.LATEST)["step"]
    after = _run([*cmd, "--max-steps", str(saved + 10)], tmp_path)
    assert after.returncode == 0, after.stderr
    assert checkpoint.read_metrics(tmp_path / "checkpoints" / "r")[-1]["step"] == saved + 10


@pytest.mark.slow
def test_a_crashed_rank_takes_the_job_down_and_the_run_resumes(words_file: Path, tmp_path: Path) -> None:
    # Each rank records its pid, then becomes `python -m charnn train …` (exec keeps the pid). Not $$:
    # torchrun passes its arguments through string.Template (for ${local_rank}), which turns $$ into $.
    launcher = _launch_wrapped('echo $BASHPID > "pid.$RANK"; exec "$0" -m charnn "$@"', tmp_path,
                               ["train", str(words_file), "--name", "crash", "--max-steps", "3000", "--eval-every", "25",
                                *MODEL[:-1]])
    # The third record is written after the save that follows the second, so step 50's latest.pt is complete
    # (at two records that save may still be under way: killed then, the run keeps step 25's).
    wait_for_records(tmp_path / "checkpoints" / "crash", 3)
    os.kill(int((tmp_path / "pid.1").read_text()), signal.SIGKILL)  # rank 1 dies mid-run
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and "SIGKILL" in err  # torchrun took the job down and says why
    saved = checkpoint.load_tensors(tmp_path / "checkpoints" / "crash" / checkpoint.LATEST)["step"]
    assert saved >= 50
    again = _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "charnn", "train", "--resume", "crash",
                  "--max-steps", str(saved + 50)], tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr  # no clean-up needed: rank 0's lock died with it
    steps = [r["step"] for r in checkpoint.read_metrics(tmp_path / "checkpoints" / "crash")]
    assert steps == sorted(set(steps)) and steps[-1] == saved + 50
