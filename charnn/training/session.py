"""A training session: how a run starts, continues, or starts from another run's model.

Three ways in, one way through (`_train`): `start_training` builds a fresh model (random weights
from the seed) or, given a `Parent`, the parent's model with its vocabulary grown (fine-tuning,
lineage.py); `resume_training` continues a run from `latest.pt`. Each checks everything it can
before it writes anything, then the processes join (torchrun), the corpus is encoded into the
cache, the `--time` recipe may choose what the user left open, and the loop runs under the run's
lock (train/loop.py). config.json is a `RunConfig` (run/config.py); the corpus of a run is run/corpus.py's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from charnn import distributed
from charnn.device import AMP_DEVICES, bf16_native, bf16_speed, resolve_device
from charnn.distributed import Launch, ProcessGroup
from charnn.errors import RunError, UsageError, refuse
from charnn.model.network import CharRNN, ModelConfig
from charnn.model.voices import check_names, voices_line
from charnn.recipe import footprint
from charnn.recipe.budget import Budget
from charnn.recipe.machine import device_line
from charnn.recipe.origin import Origin
from charnn.recipe.plan import record
from charnn.recipe.sizing import sized
from charnn.run import builtin, checkpoint, lineage, lock, names, runs
from charnn.run.config import RunConfig, TrainConfig
from charnn.run.corpus import (
    CorpusOptions,
    Paths,
    Prepared,
    check_fits,
    corpus_of_run,
    corpus_record,
    prepare_corpus,
    prepare_voices,
)
from charnn.run.lineage import Parent
from charnn.sample import SampleConfig, generate
from charnn.text.corpus import Corpus
from charnn.text.tokenizer import CharTokenizer
from charnn.training.loop import Fresh, FromParent, Resume, Start, TrainResult, train


def default_run_name(spec: str) -> str:
    """The corpus's name and a timestamp, made a valid name (`names.py`): other characters become '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(spec).stem).lstrip(".") or "run"
    return f"{stem[:160]}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_training(spec: str | Sequence[str], model_cfg: ModelConfig, cfg: TrainConfig, *, name: str | None = None,
                   device: str = "auto", paths: Paths | None = None, overwrite: bool = False,
                   corpus_options: CorpusOptions | None = None, show_progress: bool = True,
                   auto_fields: frozenset[str] = frozenset(),
                   announce: Callable[[str], None] | None = None,
                   started: float | None = None, parent: Parent | None = None,
                   voices: Sequence[str] = (), preview: int = 0, reprobe: bool = False,
                   source: Corpus | None = None, origin: Origin | None = None,
                   notice: Callable[[str], None] | None = None) -> tuple[Path, TrainResult]:
    """Train a new run on corpus `spec` (one or several sources); `model_cfg.vocab_size` comes from the corpus.

    With `parent` (`lineage.load_parent`) the run fine-tunes the parent's model: its architecture is the
    parent's (`model_cfg` gives only the dropout), its vocabulary the parent's grown by the corpus's new
    characters. With a time budget, the fields named in `auto_fields` (those the user did
    not set) are chosen by the recipe for this machine's measured speed;
    `announce` receives the line describing the choice. The budget is wall clock from
    `started` (a `time.perf_counter()` reading; default: now; the CLI gives the process's
    start): start-up and the probe are taken off it (`budget.py`). Under torchrun every
    process calls this; the checks run before the process group opens.

    With `voices` (a name per source, voices.py) each source is one voice's text and the model learns them
    all (`model_cfg.voices` becomes them; a fine-tune's are its parent's followed by the new ones). `preview`:
    characters of what the model writes, shown after each validation pass (`previewer`). `source`: the corpus
    `spec` names, when the caller has already read it (the base-or-scratch rule does); `origin`: that rule's
    decision, said after the corpus line (to `notice` too when it chose the base: shown even where the rest is quiet).
    """
    paths = paths or Paths()
    options = corpus_options or CorpusOptions()
    specs = [spec] if isinstance(spec, str) else list(spec)
    voices = list(voices)
    model_cfg = _with_voices(model_cfg, len(specs), voices)
    launch = Launch.from_env()
    if parent is not None:
        model_cfg = lineage.child_config(parent, parent.model_config.vocab_size, model_cfg.dropout,
                                         model_cfg.locked_dropout, voices)
        auto_fields = auto_fields - {"cell", "layers", "hidden", "embed", "dropout"}
    refuse(model_cfg.validate() + cfg.validate())
    launch.check_batch(cfg.batch_size)
    dev = _device_for(device, cfg, launch)
    footprint.check_fits(model_cfg, cfg.batch_size, cfg.seq_len, dev)  # before the corpus work
    say = announce if launch.is_writer else None
    if cfg.amp and "amp" not in auto_fields and say and not bf16_native(dev):
        say(f"warning: this CPU has no bf16 instructions, so PyTorch emulates bf16: a quick measurement ran it at "
            f"{bf16_speed():.2f}x fp32's speed — --no-amp trains faster here")
    clock = Budget(cfg.time_budget, started if started is not None else time.perf_counter()) if cfg.time_budget else None
    run_dir = _new_run_dir(paths, name, specs, launch, overwrite, parent)  # before the slow corpus work
    source = options.resolve(specs, paths) if source is None else source
    check_fits(source.chars, cfg)
    if say:  # first once the fast checks have passed (a refusal stays one line): "is my GPU used?"
        say(device_line(dev))
        say(f"corpus: {source.describe()}")
    if origin is not None and launch.is_writer and (tell := notice if origin.base and notice else say):
        tell(origin.line())
    start: Start
    with distributed.join(launch, dev) as group:
        tokenizer = None
        if parent is not None:
            own = prepare_corpus(source, cfg, paths, group).encoded.tokenizer  # the corpus's own characters
            tokenizer = parent.tokenizer.grown(own.chars)
        prepared = _prepare(source, specs, voices, model_cfg.voices, options, cfg, paths, group, tokenizer)
        model_cfg = replace(model_cfg, vocab_size=prepared.encoded.tokenizer.vocab_size)
        if voices and say:
            say(voices_line(voices, prepared.voice_chars, cfg.balance, cfg.no_voice_share))
        model_cfg, cfg, recipe = sized(prepared, model_cfg, cfg, dev, auto_fields, announce, launch, clock, group,
                                        fine_tune=parent is not None, reprobe=reprobe)
        torch.manual_seed(cfg.seed)  # weight init is part of the reproducible run (the same on every rank)
        config = RunConfig(model_cfg, cfg, corpus_record(specs, prepared, options, voices),
                           recipe=record(recipe, auto_fields) if recipe else None, distributed=_world_record(group))
        if parent is None:
            model, start = CharRNN(model_cfg), Fresh()
        else:
            model, start = lineage.grow(parent, model_cfg, prepared.train_ids), FromParent(parent.name)
            config.parent = parent.record(prepared.encoded.tokenizer)
        with _writer_lock(run_dir, group, make=True):
            if group.is_writer:
                checkpoint.create(run_dir, config.to_json(), prepared.encoded.tokenizer, overwrite)
            result = _train(model, cfg, prepared, run_dir, group, start, clock, show_progress, preview)
    return run_dir, result


def _with_voices(model_cfg: ModelConfig, sources: int, voices: list[str]) -> ModelConfig:
    """The model's voice table from the names given, one per source (none: the model has no voices)."""
    if not voices:
        return model_cfg
    check_names(voices)
    if len(voices) != sources:
        raise UsageError(f"{len(voices)} voice names for {sources} sources — give one name per CORPUS")
    return replace(model_cfg, voices=tuple(voices))


def _new_run_dir(paths: Paths, name: str | None, specs: list[str], launch: Launch, overwrite: bool,
                 parent: Parent | None) -> Path:
    """Where a new run goes, checked: a valid name, not an existing run (unless `overwrite`), not locked by a
    training process, not the parent being fine-tuned."""
    if name is not None:
        names.check(name)
    run_dir = paths.checkpoints / (name or _agreed_name(specs[0] if specs else "run", launch))
    checkpoint.check_new(run_dir, overwrite)
    if run_dir.is_dir():
        lock.check_unlocked(run_dir)
    if parent is not None and run_dir.resolve() == parent.path.resolve():
        raise UsageError(f"--name '{run_dir.name}' is the parent run itself — fine-tuning writes a new run; "
                         "give another --name")
    return run_dir




def resume_training(run: str, *, corpus_path: str | Sequence[str] | None = None, max_steps: int | None = None,
                    epochs: float | None = None, more_time: float | None = None, lr: float | None = None,
                    device: str = "auto", paths: Paths | None = None, show_progress: bool = True,
                    tensorboard: str | None = None, started: float | None = None,
                    announce: Callable[[str], None] | None = None, preview: int = 0) -> tuple[Path, TrainResult]:
    """Continue a run from `latest.pt`; new limits extend it (`more_time` is added to the time used,
    wall clock from `started` as in `start_training`).

    A new `lr` replaces the peak learning rate (e.g. after a divergence); the
    schedule's shape is kept. Any number of torchrun processes can resume a run
    trained on any other number (the saved state is in the single-process layout). `tensorboard`
    turns TensorBoard scalars on (see `board.log_dir`); a run that had them keeps them.
    """
    paths = paths or Paths()
    launch = Launch.from_env()
    run_dir = runs.resolve(run, paths.checkpoints)
    if checkpoint.is_model_folder(run_dir):
        shown = run if run == builtin.NAME else run_dir
        raise UsageError(f"'{shown}' is a model folder (exported weights, no training state) — it cannot be resumed; "
                         f"fine-tune from it instead: charnn train CORPUS --from {shown}")
    if launch.is_writer:
        lock.check_unlocked(run_dir)  # at once, before the corpus work
    config = RunConfig.load(run_dir)
    latest = run_dir / checkpoint.LATEST
    payload = checkpoint.load_tensors(latest) if latest.exists() else None
    done = payload.get("progress", {}) if payload else {}
    # The new limits over the run's own; the loop sets the budget from the clock's deadline as it starts.
    changes: dict[str, Any] = {"max_steps": max_steps, "epochs": epochs, "lr": lr, "tensorboard": tensorboard,
               "time_budget": None if more_time is None else float(done.get("elapsed", 0.0)) + more_time}
    config.train = cfg = replace(config.train, **{k: v for k, v in changes.items() if v is not None})
    clock = Budget(more_time, started if started is not None else time.perf_counter()) if more_time else None
    refuse(cfg.validate())
    launch.check_batch(cfg.batch_size)
    dev = _device_for(device, cfg, launch)
    given = [corpus_path] if isinstance(corpus_path, str) else list(corpus_path or [])
    source = corpus_of_run(config, run_dir, paths, given)
    check_fits(source.chars, cfg)
    if announce and launch.is_writer:
        announce(device_line(dev))
    tokenizer = checkpoint.load_tokenizer(run_dir)
    with distributed.join(launch, dev) as group, _writer_lock(run_dir, group):
        # A fine-tuned run's vocabulary is its parent's grown, not its corpus's own: encode in it.
        specs = given or config.sources
        prepared = _prepare(source, specs, config.voices, config.model.voices, CorpusOptions.of(config.corpus), cfg,
                            paths, group, tokenizer if config.parent else None)
        if tokenizer.chars != prepared.encoded.tokenizer.chars:
            raise RunError(f"run '{run_dir.name}' has a different vocabulary than its corpus — the run is damaged")
        model, start = _restart(config, run_dir, payload, prepared)
        if clock is not None:
            clock.mark("startup")
            if group.is_writer:
                clock.check(reserve=cfg.eval_pass_estimate)
        config.distributed = _world_record(group)
        if group.is_writer:
            checkpoint.clean_temp_files(run_dir)  # left by a process killed mid-write; only now that every check passed
            config.save(run_dir)
        result = _train(model, cfg, prepared, run_dir, group, start, clock, show_progress, preview)
    return run_dir, result


def _restart(config: RunConfig, run_dir: Path, payload: dict[str, Any] | None,
             prepared: Prepared) -> tuple[CharRNN, Start]:
    """The model a resume continues from, and how: `latest.pt`'s weights, or, for a run stopped before its
    first save, the start it had (the seed's weights; a fine-tuned run's parent, read again)."""
    if payload is None and config.parent:
        return _regrow(config, run_dir, prepared)
    torch.manual_seed(config.train.seed)  # same initial weights as the original start, if there is no payload
    model = CharRNN(config.model)
    if payload is None:
        return model, Fresh()
    progress = payload.get("progress", {})
    if progress.get("stopped_early"):
        raise RunError(f"run '{run_dir.name}' stopped early at step {progress.get('step')} (validation stopped improving "
                       f"after step {progress.get('best_step')}) and holds its best weights — to train on, fine-tune "
                       f"from it: charnn train CORPUS --from {run_dir.name}")
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, TypeError):
        raise RunError(f"the weights in '{run_dir / checkpoint.LATEST}' do not fit the run's config — "
                       "the run is damaged") from None
    return model, Resume(payload)


def _regrow(config: RunConfig, run_dir: Path, prepared: Prepared) -> tuple[CharRNN, Start]:
    """A fine-tuned run stopped before its first save starts again from its parent, as recorded."""
    record = config.parent or {}
    where = Path(str(record.get("path", "")))
    spec = f"{where}:{record.get('checkpoint', 'best')}"
    try:
        parent = lineage.load_parent(spec, where.parent)
    except RunError as e:
        raise RunError(f"run '{run_dir.name}' stopped before its first save and its parent cannot be read ({e}) — "
                       "start the fine-tune again with --from") from None
    chars = prepared.encoded.tokenizer.chars
    if parent.step != record.get("step") or parent.tokenizer.chars != chars[:parent.tokenizer.vocab_size]:
        raise RunError(f"run '{run_dir.name}' stopped before its first save and its parent '{where}' has changed "
                       "since — start the fine-tune again with --from")
    torch.manual_seed(config.train.seed)
    return lineage.grow(parent, config.model, prepared.train_ids), FromParent(parent.name)


def _train(model: CharRNN, cfg: TrainConfig, prepared: Prepared, run_dir: Path, group: ProcessGroup, start: Start,
           clock: Budget | None, show_progress: bool, preview: int = 0) -> TrainResult:
    """The loop, under the run's lock, and the budget's record."""
    result = train(model, cfg, prepared.train_ids, prepared.val_ids, run_dir, group.device, start=start,
                   show_progress=show_progress, group=group, deadline=clock.deadline if clock else None,
                   labels=prepared.labels, preview=previewer(prepared.encoded.tokenizer, preview, cfg.seed))
    _record_time(run_dir, clock, result)
    return result


def previewer(tokenizer: CharTokenizer, chars: int, seed: int) -> Callable[[CharRNN], str] | None:
    """`--preview N`: N characters the model writes from a new line, at temperature 0.8 with the run's seed (the
    same draws at every pass, so the passes differ only by what the model learned); None for 0."""
    if chars <= 0:
        return None

    def write(model: CharRNN) -> str:
        with torch.inference_mode():
            run = generate(model, tokenizer, "\n", SampleConfig(length=chars, temperature=0.8, seed=seed))
            for _ in run:
                pass
        return run.texts[0]

    return write


def _prepare(source: Any, specs: Sequence[str], voices: Sequence[str], table: Sequence[str], options: CorpusOptions,
             cfg: TrainConfig, paths: Paths, group: ProcessGroup, tokenizer: Any = None) -> Prepared:
    """The corpus encoded and split; with `voices` (one per spec), each spec a voice's text, labelled."""
    if not voices:
        return prepare_corpus(source, cfg, paths, group, tokenizer)
    return prepare_voices([options.resolve(s, paths) for s in specs], source, voices, table, cfg, paths, group,
                          tokenizer)


def _record_time(run_dir: Path, clock: Budget | None, result: TrainResult) -> None:
    """config.json's "time": how the budget's seconds were spent (a run without a time budget records none)."""
    if clock is None or not result.is_writer:
        return
    clock.mark("loop")
    spent = result.spent or {}
    loop = clock.phases.pop("loop")
    clock.phases.update({"training": loop - sum(spent.values()), **spent})
    config = RunConfig.load(run_dir)
    config.time.append(clock.record())  # one entry per session (a resume adds one)
    config.save(run_dir)


def _agreed_name(spec: str, launch: Launch) -> str:
    """The default run name is a timestamp; under torchrun every rank must agree on one."""
    if launch.under_torchrun:
        # torchrun gives every process of the job the same TORCHELASTIC_RUN_ID; the launcher's
        # start time stands in for 'now' so the ranks cannot straddle a second boundary.
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
        stamp = run_id if run_id and run_id != "none" else "torchrun"
        return f"{Path(spec).stem or 'run'}-{stamp}"
    return default_run_name(spec)


def _world_record(group: ProcessGroup) -> dict[str, Any]:
    return {"world_size": group.world_size, "backend": group.backend}


@contextmanager
def _writer_lock(run_dir: Path, group: ProcessGroup, make: bool = False) -> Iterator[None]:
    """Rank 0 (or the single process) holds the run's training lock; the other ranks write nothing."""
    if not group.is_writer:
        yield
        return
    if make:
        checkpoint.make_dir(run_dir)
    with lock.locked(run_dir):
        yield


def _device_for(name: str, cfg: TrainConfig, launch: Launch | None = None) -> torch.device:
    dev = resolve_device(name)
    if cfg.amp and dev.type not in AMP_DEVICES:
        raise UsageError(f"--amp runs on CUDA or CPU (this run would be on {dev.type}) — drop --amp")
    if launch is not None and launch.under_torchrun:
        if dev.type == "mps":
            raise UsageError("torchrun cannot train on --device mps (no distributed backend for it) — use --device cpu")
        dev = launch.device(dev)
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"this machine has {torch.cuda.device_count()} GPU(s) but torchrun started a process for "
                             f"GPU {dev.index} — give --nproc_per_node at most {torch.cuda.device_count()}")
    return dev
