"""Choices: the k most likely next words and next characters after a text, for `charnn repl --choose`.

A *word* is what the character model writes up to the next space or punctuation: optionally up to two
whitespace characters first (" the", "\\nThe"), then one or more word characters (letters, digits, an inner
apostrophe or hyphen), and it ends where the next character is anything else. Its probability is that of
its characters times the probability that a non-word character follows, so " the" and " there" are told
apart and a word the model would go on extending is not offered cut short.

The search is best-first over prefixes and exact: a prefix's probability bounds that of every word it
starts, so once k words beat the most likely open prefix no better word is left. Prefixes are expanded
in small batches (their states stepped together), within `ChoicesConfig.budget` expansions; a search cut
short by the budget returns the best words found and says so (`Choices.complete`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from charnn.model.network import CharRNN, State, pack_state, unpack_state
from charnn.text.tokenizer import CharTokenizer

INNER = "'’-"  # word characters only between two others ("don't", "well-known")
LEAD = " \t\n"  # whitespace a word may start with


@dataclass
class ChoicesConfig:
    k: int = 5  # words and characters offered (k of each)
    max_word: int = 24  # characters in a word at most, its leading whitespace included
    budget: int = 400  # prefix expansions (model steps) at most per search
    batch: int = 8  # prefixes stepped together

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.k <= 20:
            problems.append(f"--choices {self.k} must be between 1 and 20")
        if self.max_word < 1 or self.budget < 1 or self.batch < 1:
            problems.append("max_word, budget and batch must be at least 1")
        return problems


@dataclass
class Choice:
    text: str
    logprob: float  # natural log of its probability under the model

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


@dataclass
class Choices:
    words: list[Choice] = field(default_factory=list)  # most likely first
    chars: list[Choice] = field(default_factory=list)  # most likely first
    complete: bool = True  # False: the budget ran out, so a likelier word may exist
    expansions: int = 0


@dataclass(order=True)
class _Prefix:
    neg_logprob: float
    text: str = field(compare=False)
    parent: int = field(compare=False)  # index of the expanded prefix whose state this one continues
    char: int = field(compare=False)  # the character id it adds to that state


def next_choices(model: CharRNN, tokenizer: CharTokenizer, state: State, logits: Tensor,
                 cfg: ChoicesConfig | None = None) -> Choices:
    """The choices after a text, given the model's state after it and its logits for the next character (1, V)."""
    cfg = cfg or ChoicesConfig()
    logp = torch.log_softmax(logits.float().reshape(-1), dim=-1)  # (V,)
    chars = tokenizer.chars
    result = Choices(chars=[Choice(chars[i], float(logp[i])) for i in logp.topk(min(cfg.k, len(chars))).indices.tolist()])
    kinds = _kinds(chars)
    if not any(kind == "word" for kind in kinds):
        return result  # an alphabet without letters or digits has no words to offer
    # Expanded prefixes: their state parts and next-character log-probabilities, by index.
    expanded: list[tuple[list[list[Tensor]], Tensor]] = [(unpack_state(state), logp)]
    words: list[Choice] = []  # finished, any order
    open_: list[_Prefix] = []
    _push_children(open_, "", 0.0, 0, logp, kinds, chars, cfg, words)
    while open_ and not _settled(words, open_, cfg.k):
        if result.expansions >= cfg.budget:
            result.complete = False
            break
        batch = [heapq.heappop(open_) for _ in range(min(cfg.batch, len(open_), cfg.budget - result.expansions))]
        result.expansions += len(batch)
        for prefix, (parts, next_logp) in zip(batch, _step(model, expanded, batch), strict=True):
            expanded.append((parts, next_logp))
            _push_children(open_, prefix.text, -prefix.neg_logprob, len(expanded) - 1, next_logp, kinds, chars, cfg,
                           words)
    result.words = sorted(words, key=lambda c: c.logprob, reverse=True)[:cfg.k]
    return result


def _kinds(chars: list[str]) -> list[str]:
    """Each character's part in a word: 'word', 'inner', 'lead' or 'end'."""
    return ["word" if c.isalnum() else "inner" if c in INNER else "lead" if c in LEAD else "end" for c in chars]


def _push_children(open_: list[_Prefix], text: str, logprob: float, index: int, logp: Tensor, kinds: list[str],
                   chars: list[str], cfg: ChoicesConfig, words: list[Choice]) -> None:
    """Finish `text` as a word if it is one, and queue its extensions that can still lead to one."""
    body = text.lstrip(LEAD)
    if body and body[-1] not in INNER:
        # The word ends here if the next character cannot continue it (an inner one continues it only if a word
        # character follows, but counting it as an ending is what "ends at punctuation" means to a reader).
        ends = [i for i, kind in enumerate(kinds) if kind != "word"]
        words.append(Choice(text, logprob + float(torch.logsumexp(logp[ends], dim=0))))
    if len(text) >= cfg.max_word:
        return
    floor = _floor(words, cfg.k)
    for i, kind in enumerate(kinds):
        allowed = kind == "word" or (kind == "inner" and body != "" and body[-1] not in INNER) \
            or (kind == "lead" and body == "" and len(text) < 2)
        extended = logprob + float(logp[i])
        if allowed and extended > floor:
            heapq.heappush(open_, _Prefix(-extended, text + chars[i], index, i))


def _floor(words: list[Choice], k: int) -> float:
    """The k-th best word's log-probability so far (-inf until there are k): nothing below it can enter."""
    if len(words) < k:
        return -math.inf
    return heapq.nlargest(k, (w.logprob for w in words))[-1]


def _settled(words: list[Choice], open_: list[_Prefix], k: int) -> bool:
    """True when k words beat every open prefix (and so every word one could still become)."""
    return len(words) >= k and _floor(words, k) >= -open_[0].neg_logprob


def _step(model: CharRNN, expanded: list[tuple[list[list[Tensor]], Tensor]],
          batch: list[_Prefix]) -> list[tuple[list[list[Tensor]], Tensor]]:
    """Each prefix's state after its last character, and its next-character log-probabilities (V,)."""
    parents = [expanded[p.parent][0] for p in batch]
    # Stack the parents along the batch: parts[part][layer] is (B, H).
    parts = [[torch.cat([pp[part][layer] for pp in parents]) for layer in range(len(parents[0][part]))]
             for part in range(len(parents[0]))]
    device = parts[0][0].device
    ids = torch.tensor([[p.char] for p in batch], device=device)  # (B, 1)
    with torch.inference_mode():
        out, new_state = model(ids, pack_state(parts))
    logp = torch.log_softmax(out[:, 0].float(), dim=-1)  # (B, V)
    new_parts = unpack_state(new_state)
    return [([[t[b:b + 1] for t in layers] for layers in new_parts], logp[b]) for b in range(len(batch))]
