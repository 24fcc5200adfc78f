"""Steering: what a sample may write beside what the model prefers — known words, no loops, penalties, biases.

Each control changes one row's scores (logits) before the draw, so every way of generating (a sample, items,
beams, the REPL, the server) steers alike, and a seed gives the same text alone or batched:

- `words="known"`: a word may only be written as it occurs in the training text (compared without case). The
  scores are cut, character by character, to those that continue some known word; a character that would end the
  word (a space, a stop) only once the letters so far make a known word. The draw is then from the model's own
  probabilities among what is left, so no word is invented and none is drawn twice: nothing to bound.
- `no_repeat=N`: no character may complete an N-character string this sample already wrote (its generated text;
  the prime is the user's).
- `frequency_penalty`, `presence_penalty` (OpenAI's names): OpenAI counts tokens; a character is too small to
  count (every `e` would be penalised), so charnn counts the character together with the `PENALTY_SPAN` - 1
  characters before it. A character's score drops by frequency_penalty x (times that string was already written
  in this sample) + presence_penalty x (1 if it was).
- `logit_bias`: {character id: value} added to those characters' scores (-100 bans one outright, 100 all but
  forces it).

A row whose controls leave no character at all ends there (`RowSteer.stuck` says why), rather than draw what
the user ruled out.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from charnn.text.words import JOINERS, Lexicon, is_letter

PENALTY_SPAN = 8  # characters counted as one for the penalties: the character and the 7 before it
TAIL = 12  # characters of the text shown where a sample ends for want of a character
MAX_BIAS = 100.0  # |logit_bias| at most, as OpenAI's
MAX_PENALTY = 2.0  # |frequency_penalty|, |presence_penalty| at most, as OpenAI's
WORDS = ("any", "known")


@dataclass
class Steering:
    """The controls of one request (all off by default)."""

    words: str = "any"  # "known": only words of the training text
    no_repeat: int | None = None  # N: no N-character string twice in a sample (None: off)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)  # character id -> added to its score
    require: tuple[str, ...] = ()  # words every kept result must contain (items, samples: drawn again, bounded)
    lexicon: Lexicon | None = None  # the training text's words, for words="known" (set by whoever loads the run)

    @property
    def active(self) -> bool:
        """Whether any control changes the scores (`require` only filters results)."""
        return (self.words == "known" or self.no_repeat is not None or bool(self.frequency_penalty)
                or bool(self.presence_penalty) or bool(self.logit_bias))

    def validate(self, vocab_size: int | None = None) -> list[str]:
        problems = []
        if self.words not in WORDS:
            problems.append(f"--words {self.words!r} is not one of: any (the default), known (only words of the "
                            "training text)")
        if self.no_repeat is not None and self.no_repeat < 2:
            problems.append(f"--no-repeat {self.no_repeat} must be at least 2 (the length of a string that may "
                            "not be written twice), or off")
        for name, value in (("frequency_penalty", self.frequency_penalty), ("presence_penalty", self.presence_penalty)):
            if not -MAX_PENALTY <= value <= MAX_PENALTY:
                problems.append(f"{name} {value} must be between -{MAX_PENALTY:g} and {MAX_PENALTY:g}")
        for key, value in self.logit_bias.items():
            if vocab_size is not None and not 0 <= key < vocab_size:
                problems.append(f"logit_bias key {key} is not a character id of this model (0 to {vocab_size - 1}; "
                                "/v1/models lists them)")
            if not -MAX_BIAS <= value <= MAX_BIAS:
                problems.append(f"logit_bias value {value} for {key} must be between -100 and 100")
        if any(not w.strip() for w in self.require):
            problems.append("--require must not be empty: give a word every result must contain")
        return problems

    def describe(self) -> str:
        """The controls in words, for the messages that count what steering did."""
        parts = ["known words"] if self.words == "known" else []
        if self.no_repeat is not None:
            parts.append(f"no-repeat {self.no_repeat}")
        if self.frequency_penalty or self.presence_penalty:
            parts.append("penalties")
        if self.logit_bias:
            parts.append("logit bias")
        return ", ".join(parts) or "no controls"


class WordGuide:
    """The known-word masks of one vocabulary: for a word written so far, which character ids may come next.

    `chars` are the model's characters by id. A mask is (V,) bool, cached per partial word (lower-cased)."""

    def __init__(self, lexicon: Lexicon, chars: Sequence[str], device: torch.device):
        self.lexicon = lexicon
        self.lower = [c.lower() for c in chars]
        self.letters = [i for i, c in enumerate(chars) if is_letter(c)]
        self.joiners = [i for i, c in enumerate(chars) if c in JOINERS]
        self.others = [i for i, c in enumerate(chars) if not is_letter(c) and c not in JOINERS]
        self.device = device
        self._masks: dict[str, Tensor] = {}

    def mask(self, word: str) -> Tensor:
        """What may follow `word` (the current word, lower-cased, "" between words; a trailing joiner included)."""
        if (cached := self._masks.get(word)) is not None:
            return cached
        allowed = [i for i in self.letters if self.lexicon.starts(word + self.lower[i])]
        if not word:  # between words: anything but a letter that starts no known word
            allowed += self.joiners + self.others
        elif word[-1] in JOINERS:  # "don'": a letter of don't, or the joiner was punctuation after a known word
            if word[:-1] in self.lexicon:
                allowed += self.joiners + self.others
        else:
            complete = word in self.lexicon
            allowed += [i for i in self.joiners if complete or self.lexicon.starts(word + self.lower[i])]
            if complete:
                allowed += self.others
        mask = torch.zeros(len(self.lower), dtype=torch.bool, device=self.device)
        mask[allowed] = True
        self._masks[word] = mask
        return mask


class RowSteer:
    """One row's steering state: the text it generated, the strings it wrote (for no-repeat and the penalties)
    and the word it is inside (for known words). `adjust` changes its scores in place; `advance` takes the
    character drawn."""

    def __init__(self, steering: Steering, chars: Sequence[str], guide: WordGuide | None, bias: Tensor | None,
                 prime: str = ""):
        self.steering, self.chars, self.guide, self.bias = steering, chars, guide, bias
        # The last characters written, as many as a context needs (the whole text would make a long sample's steps
        # quadratic): no-repeat's N - 1, the penalties' span - 1, a dozen for the message that ends a sample.
        self.keep = max(TAIL, (steering.no_repeat or 0) - 1, PENALTY_SPAN - 1)
        self.text = ""  # the last `keep` characters generated
        self.seen: dict[str, set[int]] = {}  # no-repeat: the N-1 characters before -> ids written after them
        self.counts: dict[str, Counter[int]] = {}  # penalties: the span's first characters -> ids and how often
        self.word, self.free = "", False  # the current word (lower-cased); free: the prime's own unknown word
        self.stuck: str | None = None
        for char in _trailing_word(prime):
            self._word_step(char)
        if self.word and guide is not None and not bool(guide.mask(self.word).any()):
            self.free = True  # the prime ends inside a word the text lacks: the user's to finish

    def copy(self) -> RowSteer:
        twin = RowSteer.__new__(RowSteer)
        twin.__dict__.update(self.__dict__)
        twin.seen = {k: set(v) for k, v in self.seen.items()}
        twin.counts = {k: Counter(v) for k, v in self.counts.items()}
        return twin

    def adjust(self, scores: Tensor) -> None:
        """Steer this row's scores (V,) in place; all -inf (and `stuck` set) where nothing may be written."""
        s = self.steering
        if self.bias is not None:
            scores += self.bias
        if s.frequency_penalty or s.presence_penalty:
            counted = self.counts.get(self._before(PENALTY_SPAN) or "")  # "": too short yet, never a key
            if counted:
                ids = list(counted)
                times = torch.tensor([counted[i] for i in ids], dtype=scores.dtype, device=scores.device)
                scores[ids] -= s.frequency_penalty * times + s.presence_penalty
        if s.no_repeat is not None:
            banned = self.seen.get(self._before(s.no_repeat) or "")
            if banned:
                scores[list(banned)] = float("-inf")
        if self.guide is not None and not self.free:
            scores.masked_fill_(~self.guide.mask(self.word), float("-inf"))
        if bool(torch.isneginf(scores).all()):
            tail = self.text[-TAIL:]
            self.stuck = (f"{s.describe()} left no character to write after {tail!r}" if tail else
                          f"{s.describe()} left no character to write")

    def advance(self, token: int) -> None:
        """Take the character drawn: extend the text, the strings seen and the current word."""
        char = self.chars[token]
        s = self.steering
        if s.no_repeat is not None and (before := self._before(s.no_repeat)) is not None:
            self.seen.setdefault(before, set()).add(token)
        if (s.frequency_penalty or s.presence_penalty) and (before := self._before(PENALTY_SPAN)) is not None:
            self.counts.setdefault(before, Counter())[token] += 1
        self.text = (self.text + char)[-self.keep:]
        if self.guide is not None:
            self._word_step(char)

    def _before(self, span: int) -> str | None:
        """The span - 1 characters a string of `span` ending with the next character starts with (None: the
        sample is shorter than that)."""
        return self.text[len(self.text) - span + 1:] if len(self.text) >= span - 1 else None  # text: the tail kept

    def _word_step(self, char: str) -> None:
        if is_letter(char):
            self.word += char.lower()
        elif char in JOINERS and self.word and self.word[-1] not in JOINERS:
            self.word += char
        else:
            self.word, self.free = "", False


def _trailing_word(prime: str) -> str:
    """The word a prime ends inside (its letters and joiners at the end), "" if it ends between words."""
    i = len(prime)
    while i > 0 and (is_letter(prime[i - 1]) or prime[i - 1] in JOINERS):
        i -= 1
    return prime[i:].lstrip(JOINERS)


_GUIDES: weakref.WeakKeyDictionary[Lexicon, dict[tuple[tuple[str, ...], str], WordGuide]] = weakref.WeakKeyDictionary()


def guide_for(lexicon: Lexicon, chars: Sequence[str], device: torch.device) -> WordGuide:
    """The `WordGuide` of a lexicon and vocabulary, made once: its masks are shared by every request."""
    guides = _GUIDES.setdefault(lexicon, {})
    key = (tuple(chars), str(device))
    if key not in guides:
        guides[key] = WordGuide(lexicon, chars, device)
    return guides[key]


def bias_vector(steering: Steering, vocab: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
    if not steering.logit_bias:
        return None
    bias = torch.zeros(vocab, dtype=dtype, device=device)
    for key, value in steering.logit_bias.items():
        bias[key] = float("-inf") if value <= -MAX_BIAS else value  # -100 bans, even where nothing else is left
    return bias


def row_steers(steering: Steering, chars: Sequence[str], rows: int, prime: str, device: torch.device,
               dtype: torch.dtype) -> list[RowSteer] | None:
    """A `RowSteer` per row of one request, or None where nothing steers it."""
    if not steering.active:
        return None
    guide = None
    if steering.words == "known":
        if steering.lexicon is None:
            raise ValueError("words='known' needs the training text's lexicon (Steering.lexicon)")
        guide = guide_for(steering.lexicon, chars, device)
    bias = bias_vector(steering, len(chars), device, dtype)
    return [RowSteer(steering, chars, guide, bias, prime) for _ in range(rows)]


def contains(text: str, required: str) -> bool:
    """Whether `text` holds `required` as whole words (case ignored): `cat` is in "The cat sat", not in "concat"."""
    lowered, target = text.lower(), required.lower()
    start = lowered.find(target)
    while start >= 0:
        end = start + len(target)
        before = lowered[start - 1] if start else " "
        after = lowered[end] if end < len(lowered) else " "
        if not (is_letter(before) and is_letter(target[0])) and not (is_letter(after) and is_letter(target[-1])):
            return True
        start = lowered.find(target, start + 1)
    return False
