"""Base or scratch: where a new run without `--from` starts.

A small text learns more in a short budget from the shipped base model (`charnn/base/`) than from random
weights, because most of what a character model must learn first — spelling, words, punctuation, the shape of
a sentence — the base already knows; a large text has enough to learn that from itself, and its own `--time`
recipe may pick a model that trains faster than the base's fixed one. The rule below is measured
(benchmarks/base.py, RECIPES.md, docs/base.md): the text's size, the budget, and how much of the text the base
can spell (a character the base never saw is a new row its vocabulary grows, learned from nothing).

A run starts from scratch whatever its text when the user fixed the architecture (`--cell`, `--layers`,
`--hidden`, `--embed`, `--heads`: the base's is its own), trains in steps or passes rather than a budget
(`--max-steps`, `--epochs`: the rule was measured on budgets), has voices, or when the base is not installed;
`--scratch` always does. Every new run says which it chose, and why, in its first lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# The measured rule (RECIPES.md, "base or scratch"). Fine-tuned for a minute from base v1 (a GRU 3x512 that
# trains at ~0.4x the speed of the recipe's own 2x320-2x384), three held-out texts of 180-305 KB came out
# 0.13-0.47 nats better than a minute from scratch; on tiny-shakespeare (1.1M characters) the base lost by
# 0.010 nats at 4 minutes and 0.021 at 10. The boundary lies between those sizes.
MAX_CHARS = 500_000
# The share of the text's characters (counted with repeats) the base's alphabet must hold: each character it lacks
# is a row learned from nothing, and a text mostly in another script (Russian: ~80% Cyrillic) keeps only the base's
# sense of spaces and punctuation. docs/base.md measures German (umlauts and ß, a few percent of its letters)
# and Russian fine-tuned from the base against scratch.
MIN_KNOWN = 0.98
# The longest budget the rule was measured at: past it the rule does not claim the base helps, and scratch stays.
MAX_BUDGET_S = 600.0


@dataclass(frozen=True)
class Origin:
    """The decision: start from the base or from scratch, and the reason, as the run's first line says it."""

    base: bool
    why: str

    def line(self) -> str:
        return f"start: {'from the base model' if self.base else 'from scratch'} — {self.why}"


@dataclass(frozen=True)
class Text:
    """What the rule reads of a corpus: its length in characters and how many of them the base can spell."""

    chars: int
    known: int

    @property
    def known_share(self) -> float:
        return self.known / self.chars if self.chars else 1.0


def text_of(chunks: Iterable[str], alphabet: Iterable[str]) -> Text:
    """Count a corpus's characters, and those in `alphabet` (the base's), streaming its chunks."""
    counts: Counter[str] = Counter()
    for chunk in chunks:
        counts.update(chunk)
    letters = set(alphabet)
    return Text(sum(counts.values()), sum(n for ch, n in counts.items() if ch in letters))


def decide(text: Text, budget_s: float) -> Origin:
    """The rule, for a run trained for `budget_s` seconds with nothing else fixing where it starts."""
    size = f"{text.chars:,} characters"
    if text.chars > MAX_CHARS:
        return Origin(False, f"the text ({size}) is large enough to learn from itself "
                             f"(the base starts texts up to {MAX_CHARS:,}; --from base to use it anyway)")
    if text.known_share < MIN_KNOWN:
        return Origin(False, f"the base knows {text.known_share:.0%} of the text's characters "
                             f"(it needs {MIN_KNOWN:.0%}; --from base to use it anyway)")
    if budget_s > MAX_BUDGET_S:
        return Origin(False, f"the rule was measured on budgets up to {MAX_BUDGET_S / 60:g} minutes, and this one "
                             "is longer (--from base to use the base anyway)")
    return Origin(True, f"a small text ({size}, {text.known_share:.1%} of it in the base's alphabet) learns more "
                        "in this budget from the base (--scratch: from random weights)")


def fixed(option: str) -> Origin:
    """The run starts from scratch because `option` (a command option, as the user wrote it) fixes it."""
    return Origin(False, f"{option} given (the base has its own architecture and is fine-tuned on a budget; "
                         "--from base to fine-tune it)")
