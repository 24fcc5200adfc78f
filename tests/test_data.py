import numpy as np
import pytest

from charnn.errors import UsageError
from charnn.text import streams
from charnn.text.tokenizer import CharTokenizer


def test_streams_are_contiguous_across_windows() -> None:
    ids = np.arange(100, dtype=np.int64)
    s = streams.Streams(ids, batch_size=3, seq_len=8)
    assert s.stream_len == 33 and s.n_windows == 4
    x0, y0 = s.window(0)
    x1, _ = s.window(1)
    assert x0.shape == (3, 8)
    assert (y0 == x0 + 1).all()  # targets are inputs shifted by one
    assert (x1[:, 0] == x0[:, -1] + 1).all()  # row n of window k+1 continues row n of window k
    assert x0[:, 0].tolist() == [0, 33, 66]


def test_epoch_offsets_cut_other_windows_and_read_each_character_once() -> None:
    ids = np.arange(1000, dtype=np.int64)
    s = streams.Streams(ids, batch_size=4, seq_len=10)  # stream_len 249, 24 windows
    assert s.epoch_offset(seed=1, epoch=0) == 0  # the first pass is the plain layout
    offsets = [s.epoch_offset(seed=1, epoch=e) for e in range(1, 9)]
    assert offsets == [s.epoch_offset(seed=1, epoch=e) for e in range(1, 9)]  # a function of (seed, epoch)
    assert all(1 <= o < s.stream_len for o in offsets) and len(set(offsets)) > 4
    assert offsets != [s.epoch_offset(seed=2, epoch=e) for e in range(1, 9)]
    for offset in offsets:
        windows = [s.window(k, offset=offset) for k in range(s.n_windows)]
        inputs = np.concatenate([x.numpy().ravel() for x, _ in windows])
        assert len(set(inputs.tolist())) == len(inputs)  # no character read twice in an epoch
        assert set(inputs.tolist()) != set(np.concatenate([s.window(k)[0].numpy().ravel()
                                                           for k in range(s.n_windows)]).tolist())
        for x, y in windows:  # targets follow inputs (the one wrap pairs the last id with the first)
            assert ((y == x + 1) | ((x == 999) & (y == 0))).all()
        assert (windows[1][0][:, 0] == (windows[0][0][:, -1] + 1) % 1000).all()  # streams stay contiguous
        assert windows[0][0][0, 0] == offset


def test_eval_windows_cover_the_whole_split() -> None:
    ids = np.arange(50, dtype=np.int64)
    s = streams.Streams(ids, batch_size=2, seq_len=8)
    predicted = sorted(int(t) for _, y in s.windows(partial=True) for t in y.flatten())
    assert predicted == list(range(1, 49))  # all but the first id and the one leftover (50-1 = 49 = 2*24+1)


def test_too_short_names_the_minimum() -> None:
    with pytest.raises(UsageError, match="needs at least 8,193"):
        streams.Streams.check_fits(5000, 64, 128, "training")


def _chunks(text: str, calls: list[int]):
    def gen():
        calls.append(1)
        for i in range(0, len(text), 1000):
            yield text[i : i + 1000]

    return gen


def test_cache_is_reused_and_memory_mapped(tmp_path) -> None:
    text = "hello wörld 中\n" * 500
    calls: list[int] = []
    first = streams.prepare(_chunks(text, calls), "k1", tmp_path)
    assert isinstance(first.ids, np.memmap)  # the ids are mapped from disk, not loaded
    assert first.ids.dtype == np.uint8
    assert first.tokenizer.decode(first.ids.tolist()) == text
    assert len(calls) == 2  # vocabulary pass + encoding pass
    second = streams.prepare(_chunks(text, calls), "k1", tmp_path)
    assert len(calls) == 2  # cache hit: the text was not read again
    assert np.array_equal(first.ids, second.ids) and second.tokenizer.chars == first.tokenizer.chars


def test_prepare_with_a_given_vocabulary_counts_unknowns(tmp_path) -> None:
    tok = CharTokenizer("abc")
    enc = streams.prepare(_chunks("abxcxa?", []), "k2", tmp_path, tokenizer=tok)
    assert tok.decode(enc.ids.tolist()) == "abca"
    assert enc.unknown == {"x": 2, "?": 1}


def test_damaged_cache_is_rebuilt(tmp_path) -> None:
    text = "abcdefgh" * 100
    first = streams.prepare(_chunks(text, []), "k3", tmp_path)
    ids_file = next(tmp_path.glob("k3-*.ids"))
    del first
    ids_file.write_bytes(b"\x00" * 10)  # truncated
    calls: list[int] = []
    again = streams.prepare(_chunks(text, calls), "k3", tmp_path)
    assert len(calls) == 2 and again.tokenizer.decode(again.ids.tolist()) == text


def test_split_is_contiguous() -> None:
    ids = np.arange(100)
    train, val = streams.split(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
