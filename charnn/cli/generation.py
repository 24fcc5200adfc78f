"""The commands that write text with a run: `charnn sample`, `charnn repl` and `charnn serve`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import typer

from charnn import api
from charnn.cli.root import CKPT_DIR, CORPORA_DIR, DEVICE, app, handled, paths_for, set_threads
from charnn.cli.steering import (
    FREQUENCY_PENALTY,
    NO_REPEAT,
    PRESENCE_PENALTY,
    PRIME_FILE,
    REQUIRE,
    WORDS,
    fed,
    no_repeat_of,
    print_required,
    read_prime,
    report_steering,
    sampling,
)
from charnn.errors import UsageError
from charnn.run.originality import MIN_COPY, Report
from charnn.sample import ItemsConfig, SampleConfig, generate
from charnn.sample.beam import BEAM_NO_REPEAT
from charnn.sample.choices import ChoicesConfig
from charnn.sample.engine import Generation
from charnn.sample.request import voice_of
from charnn.sample.steer import Steering


def unescape(text: str) -> str:
    """Backslash escapes typed in a shell ('\\n', '\\t') as the characters they name."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


# `charnn sample`'s arguments and options, each declared once here so the command's signature reads as a list.
_RUN = typer.Argument(None, help="Run name or path (default: the most recently modified run).")
_PRIME = typer.Option(None, "--prime", show_default=False,
                          help="Text to start from (printed first; default a newline). With --items: how every "
                          "item begins.")
_LENGTH = typer.Option(None, "--length", show_default=False,
                           help="Characters to generate, the prime not counted (default 500). With --items: the "
                           "longest an item may be (default 200).")
_TEMPERATURE = typer.Option(None, "--temperature", show_default=False,
                                  help="Softmax temperature; 0 is greedy (default 0.8; with --beam 0: plain beam "
                                  "search, above 0 its stochastic variant).")
_TOP_K = typer.Option(None, "--top-k", help="Sample only among the K most likely characters.")
_TOP_P = typer.Option(None, "--top-p", help="Nucleus sampling: the smallest set with probability >= P.")
_SEED = typer.Option(None, "--seed", help="Random seed: the same seed gives the same text.")
_NUM_SAMPLES = typer.Option(1, "--num-samples", help="Independent samples, generated as one batch.")
_STOP = typer.Option(None, "--stop", help="End a sample once it produces this string.")
_ITEMS = typer.Option(None, "--items", help="Print N distinct, complete items of a list (names, titles, "
                          "stanzas), one after another with the separator between them; the counts on stderr.")
_SEPARATOR = typer.Option("\n", "--separator", show_default=False,
                              help="With --items: what ends an item in the training text (default a newline; "
                              "$'\\n\\n' or '\\n\\n' for stanzas).")
_NEW = typer.Option(False, "--new", help="With --items: leave out items that are whole items of the "
                         "training text (looked up in the run's originality index; needs its corpus).")
_ATTEMPTS = typer.Option(None, "--attempts", help="With --items or --require: draws at most before giving up "
                             "(default 20 per item or sample asked, at least 100).")
_AS_JSON = typer.Option(False, "--json", help="With --items: print one JSON object (items and counts).")
_BEAM = typer.Option(None, "--beam", help="Beam search of width W (1-64): the most likely continuation of "
                         "--length it finds, ranked by log-probability per character; with --items N, the N most "
                         "likely items.")
_DROP_UNKNOWN = typer.Option(False, "--drop-unknown", help="Drop prime characters the model never saw.")
_VOICE = typer.Option(None, "--voice", help="A voiced run (trained with --voices): write in this voice, or a "
                          "blend of voices whose weights sum to 1 (poems=0.7,plays=0.3); default: no voice.")
_CHECKPOINT_NAME = typer.Option("best", "--checkpoint", help="best or latest.")
_THREADS = typer.Option(0, "--threads", help="CPU threads for PyTorch (0: PyTorch's default).")
_ORIGINALITY = typer.Option(
    False, "--originality", help="Mark the spans copied verbatim from the training text (underlined in a "
    "terminal, between ⟦ ⟧ otherwise) and report how much of each sample they are, and the longest.")
_MIN_COPY = typer.Option(MIN_COPY, "--min-copy", help="With --originality: the shortest span that counts "
                             "as copied, in characters.")
_CORPUS_PATHS = typer.Option(
    None, "--corpus", help="With --originality: the run's training text, if it is no longer where the run "
    "found it (checked against the run's fingerprint; repeatable for several sources).")


@app.command("sample")
@handled
def sample_cmd(
    run: str = _RUN,
    prime: str = _PRIME,
    length: int = _LENGTH,
    temperature: float = _TEMPERATURE,
    top_k: int = _TOP_K,
    top_p: float = _TOP_P,
    seed: int = _SEED,
    num_samples: int = _NUM_SAMPLES,
    stop: str = _STOP,
    items: int = _ITEMS,
    separator: str = _SEPARATOR,
    new: bool = _NEW,
    attempts: int = _ATTEMPTS,
    as_json: bool = _AS_JSON,
    beam: int = _BEAM,
    drop_unknown: bool = _DROP_UNKNOWN,
    prime_file: str = PRIME_FILE,
    words: str = WORDS,
    no_repeat: str = NO_REPEAT,
    frequency_penalty: float = FREQUENCY_PENALTY,
    presence_penalty: float = PRESENCE_PENALTY,
    require: list[str] = REQUIRE,
    voice: str = _VOICE,
    checkpoint_name: str = _CHECKPOINT_NAME,
    threads: int = _THREADS,
    originality: bool = _ORIGINALITY,
    min_copy: int = _MIN_COPY,
    corpus_paths: list[str] = _CORPUS_PATHS,
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """Generate text from a trained run, streamed to stdout."""
    set_threads(threads)
    steering = Steering(words=words, no_repeat=no_repeat_of(no_repeat, BEAM_NO_REPEAT if beam is not None and items is None
                                                          else None),
                        frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                        require=tuple(require or ()))
    if problems := steering.validate():
        raise UsageError(problems[0])
    if beam is not None:
        _refuse("--beam", num_samples=num_samples != 1, top_k=top_k is not None, top_p=top_p is not None,
                originality=originality, require=bool(require) and items is None)
    temperature = (0.0 if beam is not None else 0.8) if temperature is None else temperature
    paths = paths_for(checkpoints_dir, corpora_dir)
    prime_text = ""
    if prime_file is not None:
        if prime is not None:
            raise UsageError("--prime and --prime-file both give the prime — keep one of them")
        prime_text = read_prime(prime_file)
    if items is not None:
        _refuse("--items", num_samples=num_samples != 1, stop=stop is not None, originality=originality)
        model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
        start = fed(model, prime_file, prime_text) if prime_file is not None else prime or ""
        _print_items(model, items, sampling(model, steering, paths, corpus_paths,
                                             temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                             drop_unknown=drop_unknown, voice=voice),
                     ItemsConfig(count=items, separator=unescape(separator), start=start, new=new,
                                 longest=200 if length is None else length, attempts=attempts),
                     paths, corpus_paths or (), as_json, beam)
        return
    for flag, given in (("--separator", separator != "\n"), ("--new", new), ("--json", as_json),
                        ("--attempts", attempts is not None and not require)):
        if given:
            raise typer.BadParameter(f"{flag} works with --items N (a list of items){' or --require' * (flag == '--attempts')}; "
                                     f"add --items or drop {flag}")
    length = 500 if length is None else length
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    prime = fed(model, prime_file, prime_text) if prime_file is not None else "\n" if prime is None else prime
    cfg = sampling(model, steering, paths, corpus_paths, length=length, temperature=temperature, top_k=top_k,
                    top_p=top_p, seed=seed, num_samples=num_samples, stop=stop, drop_unknown=drop_unknown, voice=voice)
    if beam is not None:
        _print_beam(model, prime, beam, length, stop, temperature, seed, drop_unknown, voice, cfg.steering)
        return
    if require:
        print_required(model, prime, cfg, attempts, originality)
        return
    stream = generate(model.model, model.tokenizer, prime, cfg)  # validates before anything is printed
    if originality:
        if min_copy < 1:
            raise typer.BadParameter(f"--min-copy {min_copy} must be at least 1")
        model.originality_index(paths, corpus_paths or (), show_progress=True)
        _print_marked(model, stream, prime, min_copy)
    elif num_samples == 1:
        _print_streamed(stream, prime)
    else:
        for _ in stream:
            pass
        for i, text in enumerate(stream.texts, 1):
            sys.stdout.write(f"--- sample {i} ---\n{prime}{text}\n")
    report_steering(stream, cfg)


def _print_beam(model: api.CharModel, prime: str, beam: int, length: int, stop: str | None, temperature: float,
                seed: int | None, drop_unknown: bool, voice: str | None, steering: Steering) -> None:
    """`charnn sample --beam W`: the best continuation on stdout, its score on stderr."""
    found = model.beam(prime, beam, length, stop, temperature, seed, drop_unknown, voice,
                       **{k: v for k, v in vars(steering).items() if k not in ("lexicon", "require")})
    if steering.active:
        typer.echo(f"steering: {steering.describe()}", err=True)
    best = found.hypotheses[0]
    sys.stdout.write(prime + best.text + "\n")
    typer.echo(f"beam {beam}: {len(best.text)} characters, {best.score:.4f} nats per character (log-probability "
               f"{best.logprob:.2f}; best of {len(found.hypotheses)} kept)", err=True)


def _print_streamed(stream: Generation, prime: str) -> None:
    """One sample, written as it is drawn."""
    out = sys.stdout
    out.write(prime)
    flushed = time.perf_counter()
    for pieces in stream:
        out.write(pieces[0])
        # Flushing per character costs more than the step itself; a line or 50 ms still reads as a stream.
        if pieces[0] == "\n" or time.perf_counter() - flushed > 0.05:
            out.flush()
            flushed = time.perf_counter()
    out.write("\n")


def _print_marked(model: api.CharModel, stream: Generation, prime: str, min_copy: int) -> None:
    """`--originality`: each sample with its copied spans marked, and how much was copied on stderr."""
    for _ in stream:
        pass
    known = set(model.tokenizer.chars)
    shown = "".join(c for c in prime if c in known)  # the prime as fed (--drop-unknown drops the rest)
    out = sys.stdout
    for i, text in enumerate(stream.texts, 1):
        report = model.originality(shown + text, len(shown), min_copy)
        if len(stream.texts) > 1:
            out.write(f"--- sample {i} ---\n")
        out.write(report.marked(out.isatty()) + "\n")
        out.flush()
        typer.echo(report.describe(), err=True)


def _refuse(mode: str, **given: bool) -> None:
    for name, present in given.items():
        if present:
            flag = "--" + name.replace("_", "-")
            why = ("each item is one sample that ends at the separator" if mode == "--items"
                   else "the beam ranks continuations by likelihood, it does not filter a sample")
            raise typer.BadParameter(f"{flag} does not combine with {mode} ({why}); drop {flag}")


def _print_items(model: api.CharModel, count: int, sampling: SampleConfig, cfg: ItemsConfig, paths: api.Paths,
                 corpus_paths: Sequence[str], as_json: bool, beam: int | None) -> None:
    """`charnn sample --items`: the items on stdout (separated as in the training text), the counts on stderr."""
    options = {k: v for k, v in vars(sampling).items() if k != "steering"}
    options.update({k: v for k, v in vars(sampling.steering).items() if k != "lexicon"})
    found = model.items(count, cfg.separator, cfg.start, cfg.new, cfg.longest, cfg.attempts, paths=paths,
                        corpus_paths=corpus_paths, show_progress=True, beam=beam, **options)
    if as_json:
        typer.echo(json.dumps(found.to_json(), ensure_ascii=False))
    elif found.items:
        end = cfg.separator if cfg.separator.endswith("\n") else "\n"
        sys.stdout.write(cfg.separator.join(found.items) + end)
    typer.echo(found.describe(cfg.new), err=True)


@app.command("repl")
@handled
def repl_cmd(
    run: str = typer.Argument(None, help="Run name or path (default: the most recently modified run)."),
    length: int = typer.Option(300, "--length", help="Characters generated per prompt."),
    temperature: float = typer.Option(0.8, "--temperature", help="Softmax temperature; 0 is greedy."),
    top_k: int = typer.Option(None, "--top-k", help="Top-k filtering."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus (top-p) filtering."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    voice: str = typer.Option(None, "--voice", help="A voiced run: write in this voice or blend (a=0.7,b=0.3); "
                              ":voice changes it."),
    checkpoint_name: str = typer.Option("best", "--checkpoint", help="best or latest."),
    copies: bool = typer.Option(False, "--copies", help="After each reply, mark what it copies verbatim from the "
                                "training text (also :copies on)."),
    corpus_paths: list[str] = typer.Option(
        None, "--corpus", help="For --copies: the run's training text, if it is no longer where the run found it."),
    choose: bool = typer.Option(False, "--choose", help="Write with the model: at each point pick one of the most "
                                "likely next words or characters by number, or type text; :auto N lets it write."),
    choices: int = typer.Option(5, "--choices", help="With --choose: words and characters offered (k of each, 1-20)."),
    words: str = WORDS,
    no_repeat: str = NO_REPEAT,
    frequency_penalty: float = FREQUENCY_PENALTY,
    presence_penalty: float = PRESENCE_PENALTY,
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
    corpora_dir: Path = CORPORA_DIR,
) -> None:
    """Interactive prompt: type text, the model continues it. :help lists commands."""
    from charnn.write.repl import Repl

    choices_cfg = ChoicesConfig(k=choices)
    if problems := choices_cfg.validate():
        raise UsageError(problems[0])
    if choose and copies:
        raise UsageError("--copies marks a reply's copies; it does not apply to --choose — leave one of them out")
    model = api.load_run(run, checkpoint_name, device, checkpoints_dir)
    paths = paths_for(checkpoints_dir, corpora_dir)

    def originality(text: str, start: int) -> Report:
        return model.originality(text, start, paths=paths, corpus_paths=corpus_paths or (), show_progress=True)

    if copies:
        originality("", 0)  # the index now: a missing corpus is one line before the prompt
    steering = Steering(words=words, no_repeat=no_repeat_of(no_repeat, None), frequency_penalty=frequency_penalty,
                        presence_penalty=presence_penalty)
    cfg = sampling(model, steering, paths, corpus_paths, length=length, temperature=temperature, top_k=top_k,
                    top_p=top_p, seed=seed, voice=voice)
    cfg.check()
    voice_of(model.model, voice)  # a bad voice is one line before the prompt
    if choose:
        from charnn.write.chooser import Chooser

        Chooser(model.model, model.tokenizer, model.run_dir, cfg, choices_cfg).loop()
        return
    Repl(model.model, model.tokenizer, model.run_dir, cfg, originality=originality, copies=copies,
         lexicon=lambda: model.lexicon(paths, corpus_paths or ())).loop()


@app.command("serve")
@handled
def serve_cmd(
    runs: list[str] = typer.Argument(None, metavar="[RUN]...", help="Runs to serve (default: the newest run)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    api_key: str = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY' on every API call."),
    max_tokens_cap: int = typer.Option(5000, "--max-tokens-cap", help="Most characters one request may ask for."),
    assistant_name: str = typer.Option("Assistant", "--assistant-name",
                                       help="Chat: the name the model speaks as in the transcript (requests may override)."),
    user_name: str = typer.Option("User", "--user-name", help="Chat: the name of user messages in the transcript."),
    system_name: str = typer.Option("System", "--system-name", help="Chat: the name of system messages in the transcript."),
    chat_template: str = typer.Option(
        "{name}:\n{content}\n\n", "--chat-template", show_default=False,
        help="Chat: one message in the transcript, with {name} and {content} (backslash escapes \\n, \\t work; "
             "default '{name}:\\n{content}\\n\\n'); a reply ends at what follows {content}."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for PyTorch (0: PyTorch's default)."),
    device: str = DEVICE,
    checkpoints_dir: Path = CKPT_DIR,
) -> None:
    """Serve runs over HTTP: OpenAI-compatible /v1/completions and /v1/chat/completions, /v1/score, /v1/models,
    and a page at /."""
    from charnn import serve
    from charnn.serve.chat import check_template

    set_threads(threads)

    if not 1 <= port <= 65535:
        raise typer.BadParameter(f"--port {port} must be between 1 and 65535")
    if max_tokens_cap < 1:
        raise typer.BadParameter(f"--max-tokens-cap {max_tokens_cap} must be at least 1")
    template = unescape(chat_template)
    check_template(template, "--chat-template")
    config = serve.ServeConfig(max_tokens_cap=max_tokens_cap, api_key=api_key, chat_template=template,
                               assistant_name=assistant_name, user_name=user_name, system_name=system_name)
    sock = serve.listen(host, port)
    served = serve.load(runs or [], checkpoints_dir, device, config)
    for s in served:
        if s.chat_template != template or s.chat_names["assistant"] != assistant_name:
            typer.echo(f"chat with {s.name}: transcript {s.chat_template!r}, speakers {s.chat_names['user']!r} and "
                       f"{s.chat_names['assistant']!r} (it never saw some characters of the defaults)", err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host}: anyone who can reach this machine can use the server"
                   + ("" if api_key else " (consider --api-key)"), err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {', '.join(s.name for s in served)} at http://{shown}:{port}/ "
               f"(API: http://{shown}:{port}/v1, docs: /docs); Ctrl-C stops", err=True)
    serve.run(served, config, sock)

