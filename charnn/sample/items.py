"""Items: N distinct, complete items of a list (names, titles, stanzas), each drawn from the separator.

A list corpus is items between separators (a newline by default). An item is drawn as the training text
starts one: from the separator (and an optional start the user gives), sampled until the model writes the
separator again. Draws run in batches on the engine (`generate` with num_samples rows and the separator
as the stop string); batch b uses seed + b, so a seed gives the same list.

Each draw ends one of six ways, and the counts add up to the draws made:
kept (new to this list), repeated (already kept), known (a whole item of the training text, with `new`),
lacking (without a word `--require` asks for), empty (only whitespace) and unfinished (no separator within
`longest` characters, or the steering left it nothing to write).
At most `attempts` draws (default ATTEMPTS_PER_ITEM per item asked, at least MIN_ATTEMPTS): a model that
cannot find N items in them returns the ones it found, and `complete` says so.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from charnn.errors import UsageError
from charnn.model.network import CharRNN
from charnn.sample.engine import generate
from charnn.sample.request import SampleConfig
from charnn.sample.steer import Steering, contains
from charnn.text.tokenizer import CharTokenizer

ATTEMPTS_PER_ITEM = 20
MIN_ATTEMPTS = 100
BATCH = 64  # rows per batch of draws at most (the engine's fused CPU step runs up to 64)


@dataclass
class ItemsConfig:
    count: int = 10  # distinct items wanted
    separator: str = "\n"  # what ends an item in the training text
    start: str = ""  # every item begins with this (part of the item)
    new: bool = False  # refuse items that are whole items of the training text
    longest: int = 200  # characters an item may run to (the start not counted) before it counts as unfinished
    attempts: int | None = None  # draws at most; None: ATTEMPTS_PER_ITEM x count, at least MIN_ATTEMPTS

    def validate(self) -> list[str]:
        problems = []
        if self.count < 1:
            problems.append(f"--items {self.count} must be at least 1")
        if self.separator == "":
            problems.append("--separator must not be empty")
        if self.longest < 1:
            problems.append(f"--length {self.longest} (the longest item) must be at least 1")
        if self.attempts is not None and self.attempts < 1:
            problems.append(f"--attempts {self.attempts} must be at least 1")
        if self.separator and self.separator in self.start:
            problems.append("the prime (the start of every item) must not contain the separator")
        return problems

    @property
    def bound(self) -> int:
        return self.attempts if self.attempts is not None else max(MIN_ATTEMPTS, ATTEMPTS_PER_ITEM * self.count)


@dataclass
class Items:
    """What `draw_items` found, and what became of every draw."""

    items: list[str] = field(default_factory=list)
    wanted: int = 0
    attempts: int = 0  # draws made
    repeated: int = 0
    known: int = 0
    lacking: int = 0  # without a required word (`--require`)
    empty: int = 0
    unfinished: int = 0
    bound: int = 0
    seed: int = 0
    limit: str = ""  # what bounded the search, when not `bound` draws (a beam's longest item)

    @property
    def complete(self) -> bool:
        return len(self.items) >= self.wanted

    def describe(self, new: bool) -> str:
        counts = f"{self.attempts} drawn: {len(self.items)} kept, {self.repeated} repeated"
        if new:
            counts += f", {self.known} already in the training text"
        if self.lacking:
            counts += f", {self.lacking} without a required word"
        counts += f", {self.empty} empty, {self.unfinished} unfinished (seed {self.seed})"
        if self.complete:
            return f"{len(self.items)} items; {counts}"
        hint = ("prime toward the required word (--prime), raise --attempts, or ask for fewer" if self.lacking
                else "raise the temperature, allow longer items with --length, or ask for fewer")
        return (f"found {len(self.items)} of {self.wanted} {'new ' if new else ''}items within "
                f"{self.limit or f'the bound of {self.bound} draws'}; {counts} — {hint}")

    def _repr_html_(self) -> str:
        """A notebook shows the items as a numbered table, with what became of the draws beneath."""
        rows = "".join(f"<tr><td>{i}</td><td style='text-align:left'>{html.escape(item)}</td></tr>"
                       for i, item in enumerate(self.items, 1))
        return f"<table><tr><th>#</th><th>item</th></tr>{rows}</table><p>{html.escape(self.describe(self.known > 0))}</p>"

    def to_json(self) -> dict[str, Any]:
        return {"items": self.items, "wanted": self.wanted, "complete": self.complete, "attempts": self.attempts,
                "kept": len(self.items), "repeated": self.repeated, "known": self.known, "lacking": self.lacking,
                "empty": self.empty, "unfinished": self.unfinished, "bound": self.bound, "seed": self.seed}


def check(cfg: ItemsConfig, tokenizer: CharTokenizer) -> None:
    """One line for the first problem with `cfg` for this model."""
    if problems := cfg.validate():
        raise UsageError(problems[0])
    if unseen := tokenizer.unknown_chars(cfg.separator):
        raise UsageError(f"the separator has character(s) the model never saw ({', '.join(map(repr, unseen))}), so "
                         "it never ends an item — give the separator the training text puts between items")


def draw_items(model: CharRNN, tokenizer: CharTokenizer, cfg: ItemsConfig, sampling: SampleConfig,
               known: Callable[[str], bool] | None = None) -> Items:
    """Draw until `cfg.count` distinct items are kept or `cfg.bound` draws are made.

    `sampling` gives temperature, top-k, top-p and the seed (its length, samples and stop are set here);
    `known(item)` says whether an item is a whole item of the training text (needed for `cfg.new`).
    """
    check(cfg, tokenizer)
    if cfg.new and known is None:
        raise UsageError("new items need the training text's items to compare with")
    seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(6), "little")
    result = Items(wanted=cfg.count, bound=cfg.bound, seed=seed)
    kept: set[str] = set()
    run_cfg = SampleConfig(length=cfg.longest + len(cfg.separator), temperature=sampling.temperature,
                           top_k=sampling.top_k, top_p=sampling.top_p, stop=cfg.separator,
                           drop_unknown=sampling.drop_unknown, voice=sampling.voice, steering=sampling.steering)
    for text in drawn(model, tokenizer, cfg.separator + cfg.start, run_cfg, seed, cfg.bound,
                      lambda: cfg.count - len(result.items)):
        result.attempts += 1
        _sort(result, kept, cfg, text, known, sampling.steering.require)
    return result


def drawn(model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig, seed: int, bound: int,
          left: Callable[[], int]) -> Iterator[str]:
    """Samples of `cfg` from `prime`, in batches (batch b seeded seed + b, so a seed gives the same draws), until
    `bound` are drawn or `left()` (what the caller still wants) is 0; a batch draws twice what is left, 8 to BATCH
    rows."""
    made, batch = 0, 0
    while made < bound and left() > 0:
        rows = min(BATCH, bound - made, max(8, 2 * left()))
        run = generate(model, tokenizer, prime, replace(cfg, num_samples=rows, seed=(seed + batch) % 2**63))
        for _ in run:
            pass
        batch += 1
        for text in run.texts:
            if made >= bound or left() <= 0:
                return
            made += 1
            yield text


def _sort(result: Items, kept: set[str], cfg: ItemsConfig, text: str, known: Callable[[str], bool] | None,
          required: tuple[str, ...] = ()) -> None:
    """File one draw under kept, unfinished, empty, repeated, known or lacking."""
    if not text.endswith(cfg.separator):
        result.unfinished += 1
        return
    item = cfg.start + text[: len(text) - len(cfg.separator)]
    if not item.strip():
        result.empty += 1
    elif item in kept:
        result.repeated += 1
    elif cfg.new and known is not None and known(item):
        result.known += 1
    elif not all(contains(item, word) for word in required):
        result.lacking += 1
    else:
        kept.add(item)
        result.items.append(item)


def beam_items(model: CharRNN, tokenizer: CharTokenizer, cfg: ItemsConfig, width: int, temperature: float = 0.0,
               seed: int | None = None, known: Callable[[str], bool] | None = None,
               voice: str | Mapping[str, float] | None = None, steering: Steering | None = None) -> Items:
    """The `cfg.count` most likely distinct items a beam of `width` reaches (`beam.py`): finished hypotheses
    ranked by log-probability per character; empty ones and (with `cfg.new`) known ones are turned down and
    counted. The search stops once `count` are found or no item ends within `cfg.longest` characters."""
    from charnn.sample.beam import BeamConfig, beam_search

    check(cfg, tokenizer)
    if cfg.new and known is None:
        raise UsageError("new items need the training text's items to compare with")
    counts = {"empty": 0, "known": 0, "lacking": 0}
    steering = steering or Steering()

    def accept(text: str) -> bool:
        item = cfg.start + text[: len(text) - len(cfg.separator)]
        reason = ("empty" if not item.strip() else "known" if cfg.new and known is not None and known(item)
                  else "lacking" if not all(contains(item, word) for word in steering.require) else None)
        if reason:
            counts[reason] += 1
        return reason is None

    beams = beam_search(model, tokenizer, cfg.separator + cfg.start,
                        BeamConfig(width=width, length=cfg.longest + len(cfg.separator), stops=(cfg.separator,),
                                   want=cfg.count, temperature=temperature, seed=seed, voice=voice,
                                   steering=steering), accept)
    done = [h for h in beams.hypotheses if h.finished][: cfg.count]
    items = [cfg.start + h.text[: len(h.text) - len(cfg.separator)] for h in done]
    # Beams never repeat an item (finished texts are kept distinct) and unfinished ones are not draws: every
    # finished hypothesis was kept or turned down.
    return Items(items=items, wanted=cfg.count, attempts=len(items) + beams.refused, known=counts["known"],
                 lacking=counts["lacking"], empty=counts["empty"], bound=cfg.bound, seed=beams.seed,
                 limit=f"items of {cfg.longest} characters at most for a beam of {width}")
