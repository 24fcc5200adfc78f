"""`charnn repl --choose`: write a text with the model, one word or character at a time.

After each step the loop shows the end of the text and numbered choices: the k most likely next words
(`sample/choices.py`), then the k most likely next characters. A number picks one; any other line is typed
in as it stands (`\\n` for a newline, `\\t` a tab, `\\\\` a backslash; `:type TEXT` types a line literally,
digits or a leading colon included); `:auto N` lets the model write N characters with the sampling settings.
On a terminal it has line editing and Ctrl-C stops an :auto; piped, it echoes each input after `> ` so the
output reads as a transcript. On leaving it prints the whole text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor

from charnn.errors import CharnnError
from charnn.model.network import CharRNN, State
from charnn.sample import SampleConfig, encode_prime, generate
from charnn.sample.choices import Choice, Choices, ChoicesConfig, next_choices
from charnn.sample.request import voice_of
from charnn.text.tokenizer import CharTokenizer
from charnn.write.repl import Repl

HELP = """\
A number picks a choice: words first, then characters. Other text is typed in (\\n is a newline).
  :auto N      the model writes N characters      :undo      take back the last step
  :type TEXT   type TEXT exactly (digits, ':')    :text      the whole text so far
  :k N         choices of each kind (1-20)        :reset     start again from nothing
  :temp X  :topk K  :topp P  :seed S  sampling settings for :auto
  :voice V     a voiced run's voice or blend (a=0.7,b=0.3; none): the text so far is read again in it
  :help        this text                          :quit      leave (or Ctrl-D), printing the text
An empty line shows the choices again."""
SHOWN_TAIL = 160  # characters of the text shown above the choices


@dataclass
class _Point:
    text: str  # the text written so far
    state: State  # the model's state after "\n" + text
    logits: Tensor  # (1, V): its logits for the next character


class Draft:
    """The text being written, with the model's state after each step (so :undo is exact and free)."""

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, voice: Tensor | None = None):
        self.model, self.tokenizer, self.voice = model, tokenizer, voice  # a voiced model's voice (E,)
        self.points = [self._advance(None, "\n", "")]

    @property
    def text(self) -> str:
        return self.points[-1].text

    def add(self, text: str) -> None:
        """Append text (CharnnError if the model never saw one of its characters)."""
        if text:
            self.points.append(self._advance(self.points[-1], text, self.text + text))

    def undo(self) -> bool:
        if len(self.points) == 1:
            return False
        self.points.pop()
        return True

    def reset(self) -> None:
        del self.points[1:]

    def choices(self, cfg: ChoicesConfig) -> Choices:
        point = self.points[-1]
        return next_choices(self.model, self.tokenizer, point.state, point.logits, cfg)

    def _advance(self, point: _Point | None, fed: str, text: str) -> _Point:
        device = self.model.head.weight.device
        ids = torch.tensor([encode_prime(self.tokenizer, fed, drop_unknown=False)], device=device)  # (1, T)
        state = point.state if point is not None else self.model.init_state(1, device, self.voice)
        self.model.eval()
        with torch.inference_mode():
            logits, state = self.model(ids, state)  # (1, T, V)
        return _Point(text, state, logits[:, -1])


class Chooser(Repl):
    """The REPL's loop, reading picks, typed text and :commands instead of prompts."""

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, run_dir: Path, cfg: SampleConfig,
                 choices: ChoicesConfig | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None):
        super().__init__(model, tokenizer, run_dir, cfg, stdin=stdin, stdout=stdout)
        self.draft = Draft(model, tokenizer, voice_of(model, cfg.voice))
        self.choices_cfg = choices or ChoicesConfig()
        self.offered: list[Choice] = []

    def loop(self) -> None:
        if self.interactive:
            self.say(f"charnn repl --choose — {self.run_dir.name}. A number picks, other text is typed in, "
                     ":auto N writes, :help lists the rest.")
        self.show()
        super().loop()
        if self.draft.text:
            self.say(f"--- the text ({len(self.draft.text)} characters) ---\n{self.draft.text}")

    def read(self) -> str | None:
        line = super().read()
        if line is not None and not self.interactive:
            self.say(f"> {line}")  # the transcript shows what was chosen
        return line

    def reply(self, line: str) -> None:
        """A line that is not a :command: a pick by number, typed text, or (empty) the choices again."""
        if line.strip().isdigit():
            number = int(line)
            if not 1 <= number <= len(self.offered):
                self.say(f"error: pick 1-{len(self.offered)}; to type digits use :type {line.strip()}")
                return
            self.type(self.offered[number - 1].text)
        elif line:
            self.type(line.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\"))
        else:
            self.show()

    def type(self, text: str) -> None:
        """Append text and show the choices after it (an empty text just shows them)."""
        try:
            self.draft.add(text)
        except CharnnError as e:
            self.say(f"error: {str(e).split(' — ')[0].replace('the prime', 'that text')}")
            return
        self.show()

    def show(self) -> None:
        text = self.draft.text
        tail = text if len(text) <= SHOWN_TAIL else "…" + text[-SHOWN_TAIL:]
        self.say(tail if tail else "(empty: the model starts at a new line)")
        found = self.draft.choices(self.choices_cfg)
        self.offered = [*found.words, *found.chars]
        numbered = [f"{i:>3} {_quoted(c.text)} {c.probability:.1%}" for i, c in enumerate(self.offered, 1)]
        if found.words:
            self.say("  words:" + "".join(f"{n:<22}" for n in numbered[:len(found.words)]).rstrip()
                     + ("" if found.complete else "  (search cut short)"))
        self.say("  chars:" + "".join(f"{n:<16}" for n in numbered[len(found.words):]).rstrip())

    def command(self, line: str) -> bool:
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name == "help":
            self.say(HELP)
        elif name == "type":
            self.type(line.strip()[len(":type "):] if arg else "")
        elif name == "auto":
            self.auto(arg)
        elif name == "undo":
            if not self.draft.undo():
                self.say("error: nothing to take back")
            else:
                self.show()
        elif name == "reset":
            self.draft.reset()
            self.show()
        elif name == "text":
            self.say(self.draft.text)
        elif name == "k":
            self.set_k(arg)
        elif name in ("keep", "copies", "len"):
            self.say(f"error: :{name} is not used with --choose — :help lists the commands")
        else:
            return super().command(line)
        return True

    def change_voice(self, arg: str) -> None:
        """`:voice`: the text so far read again in the new voice, so the choices offered next are that voice's."""
        super().change_voice(arg)
        text = self.draft.text
        self.draft = Draft(self.model, self.tokenizer, voice_of(self.model, self.cfg.voice))
        self.draft.add(text)

    def auto(self, arg: str) -> None:
        if not arg.isdigit() or not 1 <= int(arg) <= 100_000:
            self.say("error: :auto takes a number of characters, 1-100000")
            return
        cfg = replace(self.cfg, length=int(arg), seed=self.fixed_seed, num_samples=1)
        stream = generate(self.model, self.tokenizer, "\n" + self.draft.text, cfg)
        try:
            for _ in stream:
                pass
        except KeyboardInterrupt:
            self.say("(stopped)")
        self.type(stream.texts[0])

    def set_k(self, arg: str) -> None:
        candidate = replace(self.choices_cfg, k=int(arg)) if arg.isdigit() else None
        if candidate is None or candidate.validate():
            self.say("error: :k takes a number, 1-20")
            return
        self.choices_cfg = candidate
        self.show()


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") + '"'
