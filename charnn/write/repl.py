"""The interactive loop behind `charnn repl`.

On a terminal: a prompt with line editing and history (stdlib readline),
streamed continuations, Ctrl-C to stop a generation, Ctrl-D or :quit to leave.
With stdin not a terminal it reads prompts line by line, so it can be scripted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from charnn.errors import CharnnError
from charnn.model.network import CharRNN, State
from charnn.model.voices import as_blend, describe
from charnn.run.originality import Report
from charnn.sample import SampleConfig, generate
from charnn.sample.request import voice_of
from charnn.text.tokenizer import CharTokenizer
from charnn.text.words import Lexicon

MAX_LOAD = 1_000_000  # characters :load reads of a file (the state carries recent text, not a book)

HELP = """\
Type text and press Enter: the model continues it. An empty line primes with a newline.
  :temp X      temperature (0 = greedy)        :len N     characters per reply
  :topk K      top-k filter (0 = off)          :topp P    nucleus filter (1 = off)
  :seed S      fixed seed (none = random)      :keep on|off  continue the previous context
  :reset       forget the context              :info      run and settings
  :copies on|off  mark what a reply copies verbatim from the training text
  :voice V     a voiced run's voice: a name, a blend a=0.7,b=0.3, or none (a held context goes on in it)
  :words any|known   known: only words of the training text      :norepeat N|off  no N-character string twice
  :load FILE   feed a file's text as the context (keep on): the next prompt continues it
  :help        this text                       :quit      leave (or Ctrl-D)
Ctrl-C stops a generation in progress."""


class Repl:
    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, run_dir: Path, cfg: SampleConfig,
                 stdin: TextIO | None = None, stdout: TextIO | None = None,
                 originality: Callable[[str, int], Report] | None = None, copies: bool = False,
                 lexicon: Callable[[], Lexicon] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.run_dir = run_dir
        self.cfg = cfg
        self.fixed_seed = cfg.seed
        self.keep = False
        self.state: State | None = None
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.interactive = self.stdin.isatty() and self.out.isatty()
        self.originality = originality  # text, prime length -> its copied spans (None: no index for this run)
        self.copies = copies and originality is not None
        self.lexicon = lexicon  # the training text's words, for :words known (None: not available here)

    def loop(self) -> None:
        if self.interactive and threading.current_thread() is threading.main_thread():
            # Ctrl-C stops a reply. A process started in the background by a non-interactive shell
            # (`cmd &` in a script) inherits SIGINT ignored, and Python then leaves it ignored:
            # Ctrl-C would do nothing. At a terminal, take it back.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (enables line editing and history for input())
            self.say(f"charnn repl — {self.run_dir.name}. :help for commands, Ctrl-D to leave.")
        while True:
            try:
                line = self.read()
            except KeyboardInterrupt:
                self.say("")
                continue
            if line is None:
                break
            if line.startswith(":"):
                if not self.command(line):
                    break
            else:
                self.reply(line)
        if self.interactive:
            self.say("")

    def read(self) -> str | None:
        if self.interactive:
            try:
                return input("> ")
            except EOFError:
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def reply(self, prompt: str) -> None:
        cfg = replace(self.cfg, seed=self.fixed_seed, num_samples=1)
        state = self.state if self.keep else None
        try:
            stream = generate(self.model, self.tokenizer, prompt or "\n", cfg, state)
        except CharnnError as e:
            self.say(f"error: {e}")
            return
        if not self.interactive:  # scripted: the transcript reads prompt, then its continuation
            self.out.write(prompt)
        try:
            for pieces in stream:
                self.out.write(pieces[0])
                if self.interactive:  # a person watches it appear; a pipe gets the reply in one piece
                    self.out.flush()
            self.say("")
        except KeyboardInterrupt:
            self.say("\n(stopped)")
        self.state = stream.state
        if self.copies and self.originality is not None:
            known = set(self.tokenizer.chars)
            shown = "".join(c for c in (prompt or "\n") if c in known)
            report = self.originality(shown + stream.texts[0], len(shown))
            if report.spans:  # the reply again, its copies marked
                self.say(report.marked(self.out.isatty()))
            self.say(report.describe())

    def command(self, line: str) -> bool:
        """Apply a :command; False means quit."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        try:
            if name in ("quit", "q", "exit"):
                return False
            if name == "help":
                self.say(HELP)
            elif name == "reset":
                self.state = None
                self.say("context cleared")
            elif name == "keep":
                if arg not in ("on", "off"):
                    raise ValueError(":keep takes on or off")
                self.keep = arg == "on"
                self.say(f"keep {arg}")
            elif name == "copies":
                if arg not in ("on", "off"):
                    raise ValueError(":copies takes on or off")
                if arg == "on" and self.originality is not None:
                    try:
                        self.originality("", 0)  # builds the index now (once), or says why it cannot
                    except CharnnError as e:
                        raise ValueError(str(e)) from None
                self.copies = arg == "on" and self.originality is not None
                self.say(f"copies {arg}")
            elif name == "info":
                c = self.cfg
                m = self.model.config
                self.say(f"run {self.run_dir} — {m.cell} {m.layers}x{m.hidden}, {self.tokenizer.vocab_size} characters\n"
                         f"temp {c.temperature}  len {c.length}  topk {c.top_k or 'off'}  topp {c.top_p or 'off'}  "
                         f"seed {self.fixed_seed if self.fixed_seed is not None else 'random'}  "
                         f"keep {'on' if self.keep else 'off'}  context {'held' if self.state is not None else 'empty'}"
                         + (f"\nvoices {', '.join(m.voices)}  voice {describe(as_blend(c.voice))}" if m.voices else ""))
            elif name in ("temp", "len", "topk", "topp", "seed"):
                self.setting(name, arg)
            elif name == "voice":
                self.change_voice(arg)
            elif name in ("words", "norepeat"):
                self.steer(name, arg)
            elif name == "load":
                self.load(arg)
            else:
                raise ValueError(f"unknown command ':{name}' — :help lists the commands")
        except ValueError as e:
            self.say(f"error: {e}")
        return True

    def steer(self, name: str, arg: str) -> None:
        """`:words any|known` and `:norepeat N|off`: the reply's steering (sample/steer.py)."""
        steering = self.cfg.steering
        if name == "words":
            lexicon = steering.lexicon
            if arg == "known" and lexicon is None:
                if self.lexicon is None:
                    raise ValueError(":words known needs the run's training text, which this session cannot read")
                try:
                    lexicon = self.lexicon()
                except CharnnError as e:
                    raise ValueError(str(e)) from None
            candidate = replace(steering, words=arg, lexicon=lexicon)
        else:
            try:
                candidate = replace(steering, no_repeat=None if arg == "off" else int(arg))
            except ValueError:
                raise ValueError(f":norepeat '{arg}' is not a number (or off)") from None
        if problems := candidate.validate():
            raise ValueError(problems[0].replace("--no-repeat", ":norepeat").replace("--words", ":words"))
        self.cfg = replace(self.cfg, steering=candidate)
        self.say(f"{name} = {arg}")

    def load(self, arg: str) -> None:
        """`:load FILE`: the file's text through the model as the held context (keep turns on), its unknown
        characters dropped and counted; the next prompt continues after it."""
        if not arg:
            raise ValueError(":load needs a file name")
        try:
            with Path(arg).expanduser().open(encoding="utf-8") as f:
                text = f.read(MAX_LOAD)  # no further: bounded memory whatever the file
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read {arg}: {getattr(e, 'strerror', None) or e}") from None
        known = set(self.tokenizer.chars)
        fed = "".join(c for c in text if c in known)
        if not fed:
            raise ValueError(f"{arg} has no character the model knows")
        cfg = replace(self.cfg, length=0, seed=0, num_samples=1, drop_unknown=True)
        stream = generate(self.model, self.tokenizer, fed, cfg, self.state if self.keep else None)
        for _ in stream:
            pass
        self.state, self.keep = stream.state, True
        self.say(f"loaded {arg}: {len(fed):,} characters fed, {len(text) - len(fed):,} dropped as unknown; "
                 "keep on (the next prompt continues it)")

    def change_voice(self, arg: str) -> None:
        """`:voice NAME`, a blend, or `none`: checked against the run's voices; a held context continues in it."""
        if not arg:
            raise ValueError(":voice needs a name, a blend (a=0.7,b=0.3) or none")
        voice = None if arg == "none" else arg
        try:
            vector = voice_of(self.model, voice) if voice else None
            if voice is None and not self.model.config.voices:
                raise CharnnError("this model has no voices")
        except CharnnError as e:
            raise ValueError(str(e).replace("--voice", ":voice")) from None
        self.cfg = replace(self.cfg, voice=voice)
        if self.state is not None:
            self.state = self.model.with_voice(self.state, vector)
        self.say(f"voice = {describe(as_blend(voice))}")

    def setting(self, name: str, arg: str) -> None:
        if not arg:
            raise ValueError(f":{name} needs a value")
        try:
            if name == "seed":
                self.fixed_seed = None if arg in ("none", "random") else int(arg)
                candidate = replace(self.cfg, seed=self.fixed_seed)
            elif name == "temp":
                candidate = replace(self.cfg, temperature=float(arg))
            elif name == "len":
                candidate = replace(self.cfg, length=int(arg))
            elif name == "topk":
                candidate = replace(self.cfg, top_k=int(arg) or None)
            else:
                p = float(arg)
                candidate = replace(self.cfg, top_p=None if p == 1 else p)
        except ValueError:
            raise ValueError(f":{name} '{arg}' is not a number") from None
        if problems := candidate.validate():
            raise ValueError(problems[0].replace("--", ":"))
        self.cfg = candidate
        self.say(f"{name} = {arg}")
