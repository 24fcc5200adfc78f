"""A training request: everything `charnn train` and `charnn.train(...)` can ask for, checked and run on one path.

The command parses its options into a `TrainRequest`, the Python function its keyword arguments into the same
dataclass, and `run` does the rest for both: the refusals (one `UsageError` line each, the command's words),
the configs (the user's values over the defaults, fine-tuning's defaults for a parent, the fields a `--time`
budget may choose) and the session that starts, fine-tunes or resumes the run. Nothing can drift between the
two front doors: the same request writes the same config.json.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from charnn.errors import UsageError
from charnn.model.cells import HEADED
from charnn.model.network import ModelConfig
from charnn.model.voices import check_names, from_records, parse_spec
from charnn.recipe import origin
from charnn.recipe.origin import Origin
from charnn.recipe.plan import Request, configs, fine_tune_recipe
from charnn.run import builtin, checkpoint
from charnn.run.config import TrainConfig
from charnn.run.corpus import CorpusOptions, Paths
from charnn.run.lineage import Parent, check_architecture, load_parent
from charnn.text.corpus import Corpus
from charnn.training.loop import TrainResult
from charnn.training.session import resume_training, start_training

T = TrainConfig
DEFAULT_TIME = 600.0  # a new run with no limit at all trains for 10 minutes (and says so)

# The model and training choices a run fixes when it starts: a resume refuses them, named as the command's options.
FIXED = {"--cell": "cell", "--heads": "heads", "--layers": "layers", "--hidden": "hidden", "--embed": "embed",
         "--dropout": "dropout", "--batch-size": "batch_size", "--seq-len": "seq_len", "--warmup": "warmup", "--ema": "ema",
         "--locked-dropout/--step-dropout": "locked_dropout", "--amp/--no-amp": "amp"}
# The options that fix a new run's architecture: the base has its own, so a run with one of them starts from scratch.
ARCHITECTURE = {"--cell": "cell", "--layers": "layers", "--hidden": "hidden", "--embed": "embed", "--heads": "heads"}


@dataclass(frozen=True)
class TrainRequest(Request):
    """What a user asked `charnn train` (or `charnn.train`) for: the recipe's choices (`Request`'s fields: cell,
    layers, hidden, ...; None: the `--time` recipe or the default decides) and the rest.

    Fields mirror the command's options: `corpus` its CORPUS arguments (paths, folders, built-in names; `NAME=PATH`
    with `voices`), `start_from` its `--from`, `time` its `--time` in seconds."""

    corpus: tuple[str, ...] = ()
    resume: str | None = None
    start_from: str | None = None
    scratch: bool = False  # never from the base, whatever the rule says (recipe/origin.py)
    name: str | None = None
    voices: bool = False
    balance: bool = False
    voices_from: Path | None = None
    text_field: str = "text"
    voice_field: str = "voice"
    # the schedule's limits and the rest of TrainConfig
    weight_decay: float = T.weight_decay
    clip: float = T.clip
    epoch_offset: bool | None = None
    epochs: float | None = None
    max_steps: int | None = None
    time: float | None = None
    patience: int | None = None
    val_frac: float = T.val_frac
    seed: int = T.seed
    tensorboard: str | None = None  # "": inside the run; a folder: DIR/RUN-NAME
    # where and how
    preview: int = 0  # characters of what the model writes, shown after each validation pass
    reprobe: bool = False  # time the machine afresh, not from its kept readings (recipe/readings.py)
    device: str = "auto"
    overwrite: bool = False
    reading: CorpusOptions = field(default_factory=CorpusOptions)

    def choices(self) -> Request:
        """The fields the recipe would otherwise choose, as the user set them."""
        return Request(**{f.name: getattr(self, f.name) for f in fields(Request)})  # a plain Request: no corpus, no limits


def run(request: TrainRequest, paths: Paths | None = None, *, show_progress: bool = True,
        announce: Callable[[str], None] | None = None, notice: Callable[[str], None] | None = None,
        started: float | None = None) -> tuple[Path, TrainResult]:
    """Check `request`, then start, fine-tune or resume its run; (run folder, result). `announce` receives the
    lines that describe the run before it trains (the device, the recipe's choice); `notice` what the user did not
    ask for but gets (a default limit), shown even when the rest is quiet (default: `announce`)."""
    paths = paths or Paths()
    say = notice or announce or (lambda line: None)
    if request.preview < 0:
        raise UsageError(f"--preview {request.preview} must be 0 (off) or a number of characters")
    if request.reprobe and resuming(request):
        raise UsageError("--reprobe applies to a new run: a resumed run keeps the recipe it started with — drop it")
    if request.scratch and request.start_from is not None:
        raise UsageError("--scratch starts from random weights and --from from a model — give one of them")
    if resuming(request):
        refuse_fixed(request)
        return resume_training(request.resume or "", corpus_path=list(request.corpus) or None,
                               max_steps=request.max_steps, epochs=request.epochs, more_time=request.time, lr=request.lr,
                               device=request.device, paths=paths, show_progress=show_progress,
                               tensorboard=request.tensorboard, started=started, announce=announce,
                               preview=request.preview)
    sources, voice_names = voiced_corpus(request, paths.corpora)
    source, start = None, None
    if request.start_from is None:
        start, source = origin_of(request, sources, bool(voice_names), paths)
        request = replace(request, start_from=builtin.NAME) if start.base else request
    parent = load_parent(request.start_from, paths.checkpoints) if request.start_from is not None else None
    check_shape(parent, request)
    model_cfg, cfg, auto = build_configs(request, parent, say)
    if request.reprobe and not auto:
        raise UsageError("--reprobe times the machine for the --time recipe, and this run leaves it nothing to "
                         "choose (no --time, or every choice set by you) — drop --reprobe")
    return start_training(sources, model_cfg, cfg, name=request.name, device=request.device, paths=paths,
                          overwrite=request.overwrite, corpus_options=request.reading, show_progress=show_progress,
                          auto_fields=auto, started=started, parent=parent, voices=voice_names, announce=announce,
                          preview=request.preview, reprobe=request.reprobe, source=source, origin=start, notice=say)


def origin_of(request: TrainRequest, sources: Sequence[str], voiced: bool,
              paths: Paths) -> tuple[Origin, Corpus | None]:
    """Where a new run without `--from` starts (recipe/origin.py), and its corpus if reading it was needed."""
    if request.scratch:
        return Origin(False, "--scratch given"), None
    given = [option for option, name in ARCHITECTURE.items() if getattr(request, name) is not None]
    given += [option for option, limit in (("--max-steps", request.max_steps), ("--epochs", request.epochs))
              if limit is not None]
    if given:
        return origin.fixed(given[0]), None
    if voiced:
        return Origin(False, "a model of voices (--from base to fine-tune the base on them)"), None
    if not builtin.installed():
        return Origin(False, "the base model is not installed with this charnn"), None
    source = request.reading.resolve(sources, paths)
    if source.chars > origin.MAX_CHARS:  # large: no need to read it for the alphabet
        return origin.decide(origin.Text(source.chars, 0, 0), request.time or DEFAULT_TIME), source  # size decides
    alphabet = checkpoint.load_tokenizer(builtin.folder()).chars
    return origin.decide(origin.text_of(source.chunks(), alphabet), request.time or DEFAULT_TIME), source


def build_configs(request: TrainRequest, parent: Parent | None,
                  say: Callable[[str], None]) -> tuple[ModelConfig, TrainConfig, frozenset[str]]:
    """A new run's configs before the corpus and the recipe: the user's values over the defaults (a parent's
    fine-tuning defaults), and the fields a budget will choose."""
    base = fine_tune_recipe(parent.model_config) if parent is not None else None
    return configs(request.choices(), request.time is not None, base, weight_decay=request.weight_decay,
                   clip=request.clip, epochs=request.epochs, max_steps=request.max_steps,
                   time_budget=budget_of(request, say), patience=request.patience, val_frac=request.val_frac,
                   seed=request.seed, tensorboard=request.tensorboard, epoch_offset=request.epoch_offset is not False,
                   balance=request.balance)


def resuming(request: TrainRequest) -> bool:
    """Whether the request continues a run (`resume`), refusing `start_from` beside it."""
    if request.resume is not None and request.start_from is not None:
        raise UsageError("--from starts a new run and --resume continues one — give one of them "
                         "(to continue a fine-tuned run: --resume CHILD)")
    return request.resume is not None


def budget_of(request: TrainRequest, say: Callable[[str], None]) -> float | None:
    """A new run's time budget: the request's, or `DEFAULT_TIME` when nothing else would end it (and it says so)."""
    if request.time is None and request.max_steps is None and request.epochs is None:
        say("no --time, --max-steps or --epochs given: training for 10m")
        return DEFAULT_TIME
    return request.time


def refuse_fixed(request: TrainRequest) -> None:
    """With --resume: the options a run fixes when it starts, refused if given."""
    others = {"--name": request.name, "--scratch": request.scratch or None,
              "--epoch-offset/--same-windows": request.epoch_offset,
              "--voices": request.voices or None, "--balance": request.balance or None,
              "--voices-from": request.voices_from}
    fixed = {option: getattr(request, name) for option, name in FIXED.items()} | others
    if given := [option for option, value in fixed.items() if value is not None]:
        raise UsageError(f"{', '.join(given)} cannot change when resuming: the run keeps the model, "
                         "batch, windows and precision it started with — drop them, or train a new run")
    if request.reading != CorpusOptions():
        raise UsageError("--include, --exclude, --strict and --replace-bad-bytes are fixed when a run "
                         "starts — drop them with --resume (the run reads its corpus as it did then)")


def voiced_corpus(request: TrainRequest, corpora: Path) -> tuple[list[str], list[str]]:
    """A new run's sources and its voices' names (none unless `voices` or `voices_from`), checked."""
    specs: Sequence[str] = request.corpus
    voices = request.voices
    if request.voices_from is not None:
        if specs:
            raise UsageError("--voices-from reads every voice from its file — drop the CORPUS arguments "
                             "(or drop --voices-from and give one CORPUS per voice with --voices)")
        pairs = from_records(request.voices_from, corpora, request.text_field, request.voice_field)
        voices, specs = True, [f"{name}={path}" for name, path in pairs]
    elif (request.text_field, request.voice_field) != ("text", "voice"):
        raise UsageError("--text-field and --voice-field apply to --voices-from FILE — add it or drop them")
    if not specs:
        raise UsageError("give a CORPUS to train on (a file, a folder, or a built-in name), or --resume RUN")
    if not voices:
        if request.balance:
            raise UsageError("--balance applies to --voices (a model of several voices) — add --voices or "
                             "drop --balance")
        return list(specs), []
    names, sources = (list(side) for side in zip(*map(parse_spec, specs), strict=True))
    check_names(names)
    return sources, names


def check_shape(parent: Parent | None, request: TrainRequest) -> None:
    """The architecture of a new run: a fine-tune's must be its parent's; `heads` only for a headed cell."""
    cell, heads = request.cell, request.heads
    if parent is not None:
        check_architecture(parent, {"cell": cell, "layers": request.layers, "hidden": request.hidden,
                                    "embed": request.embed, "heads": heads})
    elif heads is not None and (cell or ModelConfig.cell) not in HEADED:
        raise UsageError(f"--heads applies to --cell slstm and mlstm only (this run's cell is "
                         f"{cell or ModelConfig.cell}) — drop --heads or add --cell slstm or --cell mlstm")
