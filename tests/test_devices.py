"""Every device's rules, checked on the CPU (`python -m pytest -m devices` runs exactly these).

Apple's MPS has no float64; cuDNN refuses an RNN backward outside training mode; a GPU may have no
bf16, or fewer devices than asked for. `tests/emulation.py` makes the CPU refuse what those devices
refuse, and each test runs a whole path of the product under it: training, evaluation, resume,
fine-tuning, sampling, the engine, the server's batcher, inspect and export.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from charnn import api, capability
from charnn.device import resolve_device
from charnn.errors import DeviceError
from charnn.export import export
from charnn.insight import inspector
from charnn.run import checkpoint, runs
from charnn.sample import SampleConfig, sample_next
from charnn.sample.engine import Engine
from charnn.serve import ServeConfig, load
from tests.conftest import Server, tiny_model, tiny_train, train_run
from tests.emulation import CudnnBackward, DeviceRuleError, NoFloat64, cudnn_rules, mps_rules, on_thread

pytestmark = pytest.mark.devices
ROOT = Path(__file__).resolve().parents[1]


def test_the_emulation_refuses_what_the_devices_refuse() -> None:
    """The modes themselves: without this, a passing test below could mean a mode that checks nothing."""
    with mps_rules(), pytest.raises(DeviceRuleError, match="float64"):
        torch.ones(3).double()
    rnn = torch.nn.GRU(4, 4, batch_first=True).eval()
    with cudnn_rules(), pytest.raises(DeviceRuleError, match="training mode"):
        rnn(torch.zeros(1, 2, 4))
    with cudnn_rules(), torch.no_grad():
        rnn(torch.zeros(1, 2, 4))  # no gradient needed: allowed
    with cudnn_rules(), capability.of("cpu").eval_backward():
        rnn(torch.zeros(1, 2, 4))  # cuDNN switched off: allowed


@pytest.mark.parametrize("cell", ["gru", "lstm", "slstm"])
def test_training_evaluation_and_resume_under_mps_rules(words_file: Path, cell: str) -> None:
    with mps_rules():
        run_dir = train_run(words_file, cell=cell, max_steps=20, eval_every=10)
        api.resume_training(str(run_dir), max_steps=30, device="cpu", show_progress=False)
        score = api.load_run(str(run_dir), device="cpu").score("the cat sat on the mat")
    records = checkpoint.read_metrics(run_dir)
    assert [r["step"] for r in records if "val_loss" in r][-1] == 30
    assert 0 < score.nats < 5


@pytest.mark.parametrize("rules", [mps_rules, cudnn_rules], ids=["mps", "cudnn"])
def test_voices_train_score_and_write_under_device_rules(tmp_path: Path, rules) -> None:
    """A voiced run: its per-voice validation sums, a blend's vector and the engine, by each device's rules."""
    from tests.test_voices import train_voiced

    with rules():
        run_dir = train_voiced(tmp_path, max_steps=10, eval_every=5)
        model = api.load_run(str(run_dir), device="cpu")
        score = model.score("ab ab aa", voice={"ab": 0.5, "aa": 0.5})
        text = model.generate("a", length=20, seed=1, voice="aa", temperature=0)
    assert set(checkpoint.read_metrics(run_dir)[-1]["val_voices"]) == {"ab", "aa"}
    assert 0 < score.nats < 5 and len(text) == 20


def test_fine_tuning_with_new_characters_under_mps_rules(words_file: Path, tmp_path: Path) -> None:
    parent = train_run(words_file, max_steps=10, eval_every=10)
    child_text = tmp_path / "child.txt"
    child_text.write_text("the QUICK cat sat on the mat\n" * 200, encoding="utf-8")
    with mps_rules():
        run_dir, _ = api.start_training(str(child_text), tiny_model(), tiny_train(max_steps=10, eval_every=10),
                                        name="child", device="cpu", show_progress=False,
                                        parent=api.load_parent(str(parent), Path("checkpoints")))
    assert "Q" in api.load_run(str(run_dir), device="cpu").tokenizer.chars


@pytest.mark.parametrize("rules", [mps_rules, cudnn_rules], ids=["mps", "cudnn"])
def test_sampling_and_the_engine_under_device_rules(words_file: Path, rules) -> None:
    run_dir = train_run(words_file, cell="gru", max_steps=20, eval_every=20)
    model = api.load_run(str(run_dir), device="cpu")
    with rules():
        alone = model.generate("the ", length=60, seed=3, temperature=0.8)
        texts = {
            "greedy": model.generate("the ", length=40, temperature=0),
            "filtered": model.generate("the ", length=40, seed=1, top_k=3, top_p=0.9),
            "huge temperature": model.generate("the ", length=40, seed=1, temperature=1e300),
            "tiny temperature": model.generate("the ", length=40, seed=1, temperature=1e-300),
        }
        engine = Engine(model.model, model.tokenizer)
        groups = engine.join_many([("cat ", SampleConfig(length=80, seed=9, temperature=1.2, num_samples=3)),
                                   ("the ", SampleConfig(length=60, seed=3, temperature=0.8))])
        while engine.groups:
            engine.step()
            for group in [g for g in engine.groups if g.finished]:
                engine.leave(group)
    assert all(len(t) == 40 for t in texts.values())
    assert not any(isinstance(g, Exception) for g in groups)
    assert groups[1].texts[0] == alone  # a seed gives the same text alone or in a batch, on this device too


@pytest.mark.parametrize("rules", [mps_rules, cudnn_rules], ids=["mps", "cudnn"])
def test_beam_search_items_and_logprobs_under_device_rules(words_file: Path, rules) -> None:
    run_dir = train_run(words_file, cell="gru", max_steps=20, eval_every=20)
    model = api.load_run(str(run_dir), device="cpu")
    with rules():
        plain = model.beam("the ", width=4, length=30)
        sampled = model.beam("the ", width=4, length=30, temperature=1.0, seed=2)
        items = model.items(3, separator=" ", attempts=50, seed=1)
        run = Engine(model.model, model.tokenizer)
        group = run.join("the ", SampleConfig(length=20, seed=1, logprobs=3))
        while not group.finished:
            run.step()
    assert plain.hypotheses and sampled.hypotheses and items.attempts > 0
    assert len(group.logprobs[0]) == 20 and all(len(s.top) == 3 for s in group.logprobs[0])


@pytest.mark.parametrize("rules", [mps_rules, cudnn_rules], ids=["mps", "cudnn"])
def test_steering_under_device_rules(words_file: Path, rules) -> None:
    """Known words, no-repeat, penalties and logit bias (sample/steer.py) in the engine and in beams: the masks,
    counts and biases are made on the device, in its dtypes."""
    run_dir = train_run(words_file, cell="gru", max_steps=20, eval_every=20)
    model = api.load_run(str(run_dir), device="cpu")
    model.lexicon()
    steering = dict(words="known", no_repeat=8, frequency_penalty=0.5, presence_penalty=0.5, logit_bias={0: -100, 1: 2})
    alone = model.generate("the ", length=60, seed=3, **steering)
    with rules():
        texts = model.generate("the ", length=60, seed=3, num_samples=2, **steering)
        beams = model.beam("the ", width=4, length=30, **steering)
        items = model.items(2, separator=" ", attempts=30, seed=1, require=("the",), **steering)
        engine = Engine(model.model, model.tokenizer)
        groups = engine.join_many([("cat ", SampleConfig(length=40, seed=9, num_samples=2)),
                                   ("the ", model.sample_config(length=60, seed=3, **steering))])
        while engine.groups:
            engine.step()
            for group in [g for g in engine.groups if g.finished]:
                engine.leave(group)
    assert isinstance(texts, list) and len(texts) == 2 and beams.hypotheses and items.attempts > 0
    assert not isinstance(groups[1], Exception) and groups[1].texts[0] == alone


@pytest.mark.parametrize("rules", [mps_rules, cudnn_rules], ids=["mps", "cudnn"])
def test_choosing_the_next_word_under_device_rules(words_file: Path, rules) -> None:
    from charnn.sample.choices import ChoicesConfig
    from charnn.write.chooser import Draft

    run_dir = train_run(words_file, cell="gru", max_steps=20, eval_every=20)
    model = api.load_run(str(run_dir), device="cpu")
    with rules():
        draft = Draft(model.model, model.tokenizer)
        draft.add("the ")
        found = draft.choices(ChoicesConfig(k=3))
        draft.add(found.words[0].text)
        again = draft.choices(ChoicesConfig(k=3))
    assert len(found.words) == 3 and len(found.chars) == 3 and again.chars


def test_the_servers_batcher_under_mps_rules(run_root: Path) -> None:
    config = ServeConfig(max_tokens_cap=500)
    with mps_rules():
        served = load(["tiny"], run_root / "checkpoints", "cpu", config)
        worker = served[0].batcher.worker
        leave = on_thread(lambda f: worker.call(f).result(), NoFloat64())  # the worker's thread runs every step
        server = Server(run_root / "checkpoints", config, served)
        try:
            async def together() -> list[httpx.Response]:
                async with httpx.AsyncClient(timeout=60) as client:
                    return await asyncio.gather(*(client.post(f"{server.url}/v1/completions", json={
                        "prompt": "the ", "max_tokens": 50, "seed": s, "temperature": 0.2 * s, "top_p": 0.9})
                        for s in range(4)))

            responses = asyncio.run(together())
            scored = httpx.post(f"{server.url}/v1/score", json={"text": "the cat sat on the mat"}, timeout=60)
        finally:
            leave()
            server.stop()
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert all(len(r.json()["choices"][0]["text"]) == 50 for r in responses)
    assert scored.status_code == 200, scored.text


@pytest.mark.parametrize("rules", [mps_rules, cudnn_rules], ids=["mps", "cudnn"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_inspect_under_device_rules(words_file: Path, rules, cell: str) -> None:
    run_dir = train_run(words_file, cell=cell, max_steps=10, eval_every=10)
    model = api.load_run(str(run_dir), device="cpu")
    with rules():
        numbers = inspector.inspect(model.model, model.tokenizer, "the cat sat on the mat " * 20,
                                    inspector.InspectConfig(show=60, reach=8))
    assert len(numbers["reach"]["trained"]) == 8 and all(v >= 0 for v in numbers["reach"]["trained"])


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
def test_export_under_mps_rules(words_file: Path, tmp_path: Path, fmt: str) -> None:
    run_dir = train_run(words_file, cell="gru", max_steps=10, eval_every=10)
    loaded = runs.load(run_dir, "best", "cpu")
    with mps_rules():
        result = export(loaded, fmt, tmp_path / f"out-{fmt}", text="the cat sat on the mat " * 20)
    assert result.files


def test_a_draw_without_a_generator_uses_the_logits_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """`generator=None` means the device's own default generator (a GPU's logits with the CPU's generator fail):
    logits on the meta device stand in for a GPU's here (the race is captured: meta tensors hold no values)."""
    from charnn.sample import draw

    seen = []
    monkeypatch.setattr(draw, "sample_rows", lambda logits, settings, noise, top=None: seen.append(noise))
    sample_next(torch.zeros(2, 5, device="meta"), 0.8, None, None, None)
    assert seen[0].device.type == "meta" and seen[0].shape == (2, 5)


@pytest.fixture
def a_gpu(monkeypatch: pytest.MonkeyPatch):
    """A CUDA machine as PyTorch would describe it, `bf16` saying what its GPU supports."""
    def make(bf16: bool, count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        capability._measured.cache_clear()

    yield make
    capability._measured.cache_clear()


def test_bf16_is_native_only_on_a_gpu_that_has_it(a_gpu) -> None:
    a_gpu(bf16=False)  # a V100 or T4
    assert not capability.of("cuda").bf16_native
    a_gpu(bf16=True)  # an A100 or later
    assert capability.of("cuda").bf16_native


def test_a_gpu_index_past_the_machines_gpus_is_one_line(a_gpu) -> None:
    a_gpu(bf16=True, count=1)
    with pytest.raises(DeviceError, match=r"--device cuda:7 is not available: this machine has 1 CUDA GPU \(cuda:0\.\.cuda:0\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_a_recurrent_kernel_in_fp16_under_autocast_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast needs no gradient scaler; a build whose RNN ran in fp16 would: refused before training."""
    from charnn.recipe import sizing
    monkeypatch.setattr(sizing, "amp_dtype", lambda model, dev: torch.float16)
    with pytest.raises(DeviceError, match=r"float16 under autocast .* --no-amp"):
        sizing._check_amp_kernel("lstm", torch.device("cpu"))


def test_the_torch_floor_has_what_the_code_calls() -> None:
    """torchrun with NCCL calls init_process_group(device_id=...), which torch < 2.3 lacks: the floor in
    pyproject.toml is a release that has it (and no older than the one this suite runs on is claimed)."""
    import torch.distributed as dist

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    floor = re.search(r'"torch>=([\d.]+)', text)
    assert floor, "pyproject.toml names a torch floor"
    version = tuple(int(p) for p in floor.group(1).split("."))
    assert version >= (2, 3)
    assert "device_id" in inspect.signature(dist.init_process_group).parameters
    installed = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
    assert installed >= version[:2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: benchmarks/gpu.py runs instead of refusing")
def test_the_gpu_benchmark_says_it_needs_a_gpu_in_one_line() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                            timeout=120)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0], lines


def test_the_cudnn_mode_intercepts_the_fused_kernels() -> None:
    """The function mode sees nn.LSTM's and nn.GRU's calls (their train flag at the expected place)."""
    seen = []

    class Spy(CudnnBackward):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("gru", "lstm"):
                seen.append((func.__name__, args[6]))
            return super().__torch_function__(func, types, args, kwargs)

    with Spy(), torch.no_grad():
        torch.nn.LSTM(3, 3).eval()(torch.zeros(2, 1, 3))
        torch.nn.GRU(3, 3).train()(torch.zeros(2, 1, 3))
    assert seen == [("lstm", False), ("gru", True)]


def test_asking_what_a_cpu_can_do_leaves_the_random_stream_alone() -> None:
    # The oneDNN bf16 try builds a small LSTM: from the run's own random stream, it would move every dropout mask
    # after it, and a resumed run (whose process asks at another moment) would no longer match an uninterrupted one.
    capability._measured.cache_clear()
    capability._onednn_bf16_rnn.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16), capability.of("cpu").fused_rnn():
        pass
    assert torch.equal(torch.rand(4), expected)


def test_bf16_training_where_onednn_has_no_bf16_lstm_kernel(words_file: Path) -> None:
    # A CPU without AVX-512 (Zen 3): oneDNN raises for an LSTM under bf16 autocast, so charnn runs PyTorch's own
    # kernel there. Emulated on any CPU: inside `fused_rnn` oneDNN is off, and an LSTM trains and resumes in bf16.
    with capability.emulating("avx2"):
        with torch.autocast("cpu", dtype=torch.bfloat16), capability.of("cpu").fused_rnn():
            assert not torch.backends.mkldnn.enabled
        assert torch.backends.mkldnn.enabled
        run_dir = train_run(words_file, cell="lstm", max_steps=20, eval_every=10, amp=True)
        api.resume_training(str(run_dir), max_steps=30, device="cpu", show_progress=False)
    assert [r["step"] for r in checkpoint.read_metrics(run_dir) if "val_loss" in r][-1] == 30
