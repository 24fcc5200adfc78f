import json

import numpy as np
import pytest

from charnn.errors import TokenizerError
from charnn.text.tokenizer import CharTokenizer, count_codepoints

HOSTILE = [
    "plain ascii",
    "line one\nline two\r\nwindows\rold mac\n\n\n",
    "\ttabs\t\tand    runs of     spaces   ",
    "accents: é è ê ë ñ ç — and combining e\u0301",
    "emoji: 😀 👩‍👩‍👧 🇫🇷 ❤️",
    "CJK: 中文字符 日本語 한국어",
    "zero width\u200bjoiner\u200d and bom \ufeff and nul-free controls \x01\x7f",
    " leading and trailing space ",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_round_trip_is_exact(text: str) -> None:
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one token per code point
    assert tok.decode(ids) == text


@pytest.mark.parametrize("text", HOSTILE)
def test_bulk_encoding_agrees_with_tokenizers(text: str) -> None:
    tok = CharTokenizer("".join(HOSTILE))
    fast = tok.encode_array(text)
    assert fast.tolist() == tok.hf.encode(text).ids


def test_saved_json_round_trips_and_is_a_tokenizers_file(tmp_path) -> None:
    from tokenizers import Tokenizer

    tok = CharTokenizer("".join(HOSTILE))
    path = tmp_path / "tokenizer.json"
    path.write_text(tok.to_json(), encoding="utf-8")
    again = CharTokenizer.from_json(path.read_text(encoding="utf-8"))
    assert again.chars == tok.chars
    plain = Tokenizer.from_file(str(path))  # loads with the stock library, no charnn code
    assert plain.decode(plain.encode(HOSTILE[4]).ids) == HOSTILE[4]


def test_unknown_characters_are_named_or_dropped() -> None:
    tok = CharTokenizer("abc ")
    assert tok.unknown_chars("abz xy") == ["x", "y", "z"]
    with pytest.raises(TokenizerError, match="'x', 'y', 'z'"):
        tok.encode("abz xy")
    assert tok.decode(tok.encode_array("abz xy", drop_unknown=True).tolist()) == "ab "


def test_vocabulary_from_counts_matches_set_of_characters() -> None:
    text = "".join(HOSTILE)
    tok = CharTokenizer.from_counts(count_codepoints(text))
    assert tok.chars == sorted(set(text))
    assert int(count_codepoints(text).sum()) == len(text)


@pytest.mark.parametrize("bad", ["not json", json.dumps({"model": {"type": "BPE", "vocab": {}}}),
                                 json.dumps({"model": {"type": "WordLevel", "vocab": {"a": 0, "b": 5}}})])
def test_invalid_tokenizer_json_is_refused(bad: str) -> None:
    with pytest.raises(TokenizerError):
        CharTokenizer.from_json(bad)


def test_large_text_bulk_encoding_matches_reference_on_sample() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghij \néü中😀")
    text = "".join(rng.choice(alphabet, size=20000))
    tok = CharTokenizer(alphabet)
    assert tok.encode_array(text).tolist() == tok.encode(text)


def test_encode_known_counts_unknowns_in_the_same_pass() -> None:
    tok = CharTokenizer("abc ")
    ids, unknown = tok.encode_known("abz xyzz")
    assert tok.decode(ids.tolist()) == "ab "
    assert unknown == {"x": 1, "y": 1, "z": 3}
    assert tok.encode_known("cab")[1] == {}
