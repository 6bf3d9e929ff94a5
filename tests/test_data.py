import numpy as np
import pytest

from charnn import data
from charnn.errors import CharnnError


def test_vocab_encode_names_unknown_characters():
    vocab = data.Vocab("abc")
    with pytest.raises(CharnnError, match=r"never saw: 'xz'"):
        vocab.encode("abzcx")
    with pytest.raises(CharnnError, match="never saw"):
        vocab.encode("ab\U0001F600")  # a code point beyond the lookup table


def test_vocab_rejects_unsorted_or_repeated_characters():
    for chars in ("ba", "aab", ""):
        with pytest.raises(CharnnError):
            data.Vocab(chars)


def test_id_dtype():
    assert data.id_dtype(65) == np.uint8
    assert data.id_dtype(256) == np.uint8
    assert data.id_dtype(257) == np.uint16
    assert data.id_dtype(70000) == np.uint32


def test_split_is_the_last_fraction_whatever_the_batching():
    ids = np.arange(1000)
    train, val = data.split(ids, 0.1)
    np.testing.assert_array_equal(val, ids[900:])
    np.testing.assert_array_equal(train, ids[:900])
    train, val = data.split(np.arange(1009), 0.1)
    assert len(val) == 100 and len(train) == 909


def test_check_sizes_gives_the_exact_minimum():
    B, T, f = 4, 16, 0.1
    with pytest.raises(CharnnError) as e:
        data.check_sizes(100, f, B, T)
    msg = str(e.value)
    assert "68 (B x (T+1))" in msg and "validation 17" in msg and "--batch-size" in msg
    minimum = int(msg.split("at least ")[1].split(" ")[0])
    data.check_sizes(minimum, f, B, T)  # enough
    with pytest.raises(CharnnError):
        data.check_sizes(minimum - 1, f, B, T)


def test_batch_stream_is_contiguous_per_stream():
    ids = np.arange(2 * 21 + 1)  # B=2 streams of 21 (one id left over), T=5: 4 windows per pass
    stream = data.BatchStream(ids, batch_size=2, seq_length=5)
    assert stream.windows_per_epoch == 4
    seen = []
    for k in range(4):
        x, y, first = stream.next()
        assert x.shape == (5, 2) and first == (k == 0)
        np.testing.assert_array_equal(y[:-1], x[1:])  # targets are the inputs shifted by one
        seen.append(x)
    col = np.concatenate(seen)  # (20, 2): each stream read in order, without gaps
    np.testing.assert_array_equal(col[:, 0], np.arange(20))
    np.testing.assert_array_equal(col[:, 1], np.arange(21, 41))
    assert stream.epoch == 1 and stream.position == 1.0
    x, _, first = stream.next()  # a new pass starts at the beginning again
    assert first and x[0, 0] == 0


def test_a_block_of_rows_reads_those_streams_of_the_same_windows():
    """What one process of a data-parallel run reads: columns b0..b1-1 of every window."""
    ids = np.arange(6 * 40 + 3) % 251
    whole = data.BatchStream(ids, batch_size=6, seq_length=5)
    blocks = [data.BatchStream(ids, batch_size=6, seq_length=5, rows=rows) for rows in ((0, 2), (2, 5), (5, 6))]
    assert {b.windows_per_epoch for b in blocks} == {whole.windows_per_epoch}
    for _ in range(whole.windows_per_epoch + 2):  # over a pass boundary
        x, y, first = whole.next()
        parts = [b.next() for b in blocks]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts], axis=1), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts], axis=1), y)
        assert all(p[2] == first for p in parts)


def test_a_memory_mapped_stream_gives_the_windows_of_the_in_memory_one(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 300, size=4 * 97 + 2).astype(np.uint16)
    path = tmp_path / "ids.bin"
    ids.tofile(path)
    mapped = np.asarray(np.memmap(path, dtype=np.uint16, mode="r", shape=ids.shape))
    a, b = data.BatchStream(ids, 4, 8), data.BatchStream(mapped, 4, 8, rows=(1, 3))
    for _ in range(2 * a.windows_per_epoch + 1):
        x, y, first = a.next()
        mx, my, mfirst = b.next()
        np.testing.assert_array_equal(mx, x[:, 1:3])
        np.testing.assert_array_equal(my, y[:, 1:3])
        assert mx.flags.c_contiguous and mx.dtype == np.uint16 and mfirst == first


@pytest.mark.parametrize("n_chars,streams", [(2, 32), (50, 1), (53, 4), (1000, 32), (111_539, 32)])
def test_whole_pieces_tile_every_character_after_the_first(n_chars, streams):
    p = data.pieces(n_chars, None, streams)
    predicted = np.concatenate([np.arange(a + 1, a + n + 1) for a, n in zip(p.starts, p.lengths)])
    np.testing.assert_array_equal(predicted, np.arange(1, n_chars))
    assert p.predicted == n_chars - 1 and (np.diff(p.lengths) <= 0).all()
    exactly = data.pieces(n_chars, n_chars - 1, streams)  # a limit that is just enough changes nothing
    np.testing.assert_array_equal(exactly.starts, p.starts)
    np.testing.assert_array_equal(exactly.lengths, p.lengths)


@pytest.mark.parametrize("n_chars,max_predicted", [(10_000, 200), (10_000, 9_998), (10_001, 31), (1_000_000, 200_000),
                                                    (100, 50)])
def test_a_subset_is_fixed_spread_and_within_the_text(n_chars, max_predicted):
    p = data.pieces(n_chars, max_predicted)
    again = data.pieces(n_chars, max_predicted)
    np.testing.assert_array_equal(p.starts, again.starts)  # the same characters every time
    assert len(p.starts) == min(data.EVAL_STREAMS, max_predicted) and p.predicted == max_predicted
    assert p.lengths.max() - p.lengths.min() <= 1 and (np.diff(p.lengths) <= 0).all()
    ends = p.starts + p.lengths  # the last target of each piece
    gaps = p.starts[1:] - ends[:-1]  # characters left out between pieces
    assert p.starts[0] == 0 and ends[-1] <= n_chars - 1 and (gaps >= 0).all()
    assert gaps.max() - gaps.min() <= 1  # spread evenly over the text
    assert n_chars - 1 - ends[-1] <= gaps.max() + 1  # to its end
    block = p.block(3, 7)
    np.testing.assert_array_equal(block.starts, p.starts[3:7])
    assert block.predicted == int(p.lengths[3:7].sum())
