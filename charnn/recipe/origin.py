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

# The measured rule (RECIPES.md, "base v2 against scratch"; docs/base.md). Fine-tuned for a minute, base v2 beat a
# minute from scratch by 0.12-0.31 nats and ten minutes from scratch by 0.005-0.17 on four English texts of 178-318K
# characters, and on tiny-shakespeare (1,115,394 characters) it beat scratch at 4 minutes (by 0.017) and at 10 (by
# 0.024). No text was measured past tiny-shakespeare, so the rule stops a little above it.
MAX_CHARS = 1_200_000
# The share of the text's letters (str.isalpha: any script's; counted with repeats) the base's alphabet must hold.
# Letters, not every character: a tab or a no-break space the base never saw is a row learned from nothing but says
# nothing about the language (the four English texts are 98.4-99.9% known counting every character, 100% counting
# letters). Measured at a minute: German (98.4% of its letters known; umlauts and ß are the rest) lost 0.138 nats
# from the base against scratch, Russian (1.7%) lost 0.406. So only a text whose letters are almost all the base's
# starts from it; a text with no letters at all is judged by all its characters.
MIN_KNOWN = 0.99
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
    """What the rule reads of a corpus: its length in characters, its letters (every character where it has no
    letters) and how many of those the base can spell."""

    chars: int
    letters: int
    known: int

    @property
    def known_share(self) -> float:
        return self.known / self.letters if self.letters else 1.0


def text_of(chunks: Iterable[str], alphabet: Iterable[str]) -> Text:
    """Count a corpus's characters, its letters and those the base's `alphabet` holds, streaming its chunks."""
    counts: Counter[str] = Counter()
    for chunk in chunks:
        counts.update(chunk)
    spelled = set(alphabet)
    letters = {ch: n for ch, n in counts.items() if ch.isalpha()} or counts
    return Text(sum(counts.values()), sum(letters.values()), sum(n for ch, n in letters.items() if ch in spelled))


def decide(text: Text, budget_s: float) -> Origin:
    """The rule, for a run trained for `budget_s` seconds with nothing else fixing where it starts."""
    size = f"{text.chars:,} characters"
    if text.chars > MAX_CHARS:
        return Origin(False, f"the text ({size}) is large enough to learn from itself "
                             f"(the base starts texts up to {MAX_CHARS:,}; --from base to use it anyway)")
    if text.known_share < MIN_KNOWN:
        return Origin(False, f"the base knows {text.known_share:.1%} of the text's letters "
                             f"(it needs {MIN_KNOWN:.0%}; --from base to use it anyway)")
    if budget_s > MAX_BUDGET_S:
        return Origin(False, f"the rule was measured on budgets up to {MAX_BUDGET_S / 60:g} minutes, and this one "
                             "is longer (--from base to use the base anyway)")
    return Origin(True, f"a text of {size} ({text.known_share:.1%} of its letters in the base's alphabet) learns "
                        "more in this budget from the base (--scratch: from random weights)")


def fixed(option: str) -> Origin:
    """The run starts from scratch because `option` (a command option, as the user wrote it) fixes it."""
    return Origin(False, f"{option} given (the base has its own architecture and is fine-tuned on a budget; "
                         "--from base to fine-tune it)")
