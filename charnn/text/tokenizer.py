"""The character vocabulary, as a HuggingFace `tokenizers.Tokenizer`.

One token per Unicode code point, ids in code-point order, except in a grown vocabulary
(fine-tuning, `grown`): the parent's ids stay and the new characters follow. The saved form is
the standard `tokenizer.json` (WordLevel model, one-character Split
pre-tokenizer, Fuse decoder), so `decode(encode(text)) == text` exactly.

`Tokenizer.encode` pays a Python round trip per call and builds an Encoding
object per character; for whole corpora `encode_array` maps code points through
a lookup table in NumPy instead (tested to agree with `encode`).

Unknown characters: the vocabulary has no <unk> token (it would waste a logit
and could be sampled). Callers ask `unknown_chars` and decide: error or drop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from charnn.errors import TokenizerError

_CODEPOINTS = 0x110000
_UNK = "\ufffe"  # WordLevel wants an unk name; a noncharacter never put in the vocabulary


def count_codepoints(text: str) -> np.ndarray:
    """Occurrences of every code point in `text`, shape (0x110000,)."""
    return np.bincount(_codepoints(text), minlength=_CODEPOINTS)


def _codepoints(text: str) -> np.ndarray:
    # UTF-32-LE is one uint32 per code point, with no BOM for the "-le" codec.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class CharTokenizer:
    """A character vocabulary with exact round trip and a bulk encoder."""

    def __init__(self, chars: Iterable[str], *, ordered: bool = False):
        """The vocabulary of `chars`: sorted by code point, or in the given order (`ordered`, no repeats)."""
        given = list(chars)
        self.chars: list[str] = given if ordered else sorted(set(given))
        if ordered and len(set(given)) != len(given):
            raise TokenizerError("the vocabulary repeats a character — the tokenizer file is not charnn's")
        if not self.chars:
            raise TokenizerError("the vocabulary is empty — give a corpus with at least one character")
        if any(len(c) != 1 for c in self.chars):
            raise TokenizerError("vocabulary entries must be single characters — the tokenizer file is not charnn's")
        vocab = {c: i for i, c in enumerate(self.chars)}
        tok = Tokenizer(models.WordLevel(vocab, unk_token=_UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        self.hf = tok
        self._lut: np.ndarray | None = None

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> CharTokenizer:
        return cls(chr(int(cp)) for cp in np.flatnonzero(counts))

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        """Rebuild from a saved `tokenizer.json`, validating that it is a charnn vocabulary."""
        try:
            data = json.loads(text)
            vocab = data["model"]["vocab"]
            assert data["model"]["type"] == "WordLevel" and isinstance(vocab, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise TokenizerError("tokenizer.json is not a charnn character vocabulary — the run is damaged; retrain it") from None
        chars = sorted(vocab, key=lambda c: vocab[c])
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise TokenizerError("tokenizer.json has inconsistent ids — the run is damaged; retrain it")
        return cls(chars, ordered=True)

    def grown(self, chars: Iterable[str]) -> CharTokenizer:
        """This vocabulary with the characters of `chars` it lacks appended in code-point order: every
        old id is kept (fine-tuning a model on text with new characters)."""
        known = set(self.chars)
        return CharTokenizer(self.chars + sorted(set(chars) - known), ordered=True)

    def to_json(self) -> str:
        return self.hf.to_str(pretty=True)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def digest(self) -> str:
        """A short stable id of the vocabulary (cache keys)."""
        return hashlib.sha256("".join(self.chars).encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` not in the vocabulary, in code-point order."""
        cps = np.unique(_codepoints(text))
        return [chr(int(cp)) for cp in cps[self.lut[cps] < 0]]

    def encode(self, text: str) -> list[int]:
        """Reference encoding through `tokenizers`; raises on unknown characters."""
        self._check_known(text)
        return self.hf.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def encode_known(self, text: str) -> tuple[np.ndarray, dict[str, int]]:
        """Bulk-encode the known characters and count the unknown ones, in one lookup pass."""
        cps = _codepoints(text)
        ids = self.lut[cps]  # (len(text),), -1 where unknown
        unknown = ids < 0
        if not unknown.any():
            return ids, {}
        values, counts = np.unique(cps[unknown], return_counts=True)  # only the unknown ones are sorted
        return ids[~unknown], {chr(int(v)): int(n) for v, n in zip(values, counts, strict=True)}

    def encode_array(self, text: str, *, drop_unknown: bool = False) -> np.ndarray:
        """Fast bulk encoding to int32 ids; same result as `encode`."""
        ids = self.lut[_codepoints(text)]  # (len(text),)
        if (ids < 0).any():
            if not drop_unknown:
                self._check_known(text)
            ids = ids[ids >= 0]
        return ids

    @property
    def lut(self) -> np.ndarray:
        """Code point -> id table, -1 for characters outside the vocabulary."""
        if self._lut is None:
            lut = np.full(_CODEPOINTS, -1, dtype=np.int32)
            lut[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
            self._lut = lut
        return self._lut

    def _check_known(self, text: str) -> None:
        if unknown := self.unknown_chars(text):
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" …" if len(unknown) > 10 else "")
            raise TokenizerError(
                f"text has {len(unknown)} character(s) the model never saw: {shown} — remove them, "
                "or pass --drop-unknown to skip them"
            )
