import numpy as np
import pytest

from charnn import data
from charnn.errors import CharnnError


def naive_ids(text):
    vocab = sorted(set(text))
    return np.array([vocab.index(c) for c in text])


@pytest.mark.parametrize("text", [
    "hello world\n",
    "Ünïcödé, Ελληνικά, русский, 中文, عربى, 🎭🎲 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢!\n" * 3,
    "".join(chr(c) for c in range(32, 600)),  # a vocabulary over 256: two-byte ids
])
def test_read_corpus_vocab_and_round_trip(tmp_path, text):
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    corpus = data.read_corpus(path)
    assert corpus.vocab.chars == "".join(sorted(set(text)))
    assert corpus.vocab.decode(corpus.ids) == text
    np.testing.assert_array_equal(corpus.ids, naive_ids(text))
    assert corpus.ids.dtype == (np.uint8 if len(set(text)) <= 256 else np.uint16)


@pytest.mark.parametrize("text", ["abcabcxyz" * 50, "αβγ, abc, 🎭" * 50])
def test_encoding_in_many_chunks_matches_one_chunk(tmp_path, monkeypatch, text):
    """The chunked passes must stitch together: encode with chunks of 7 characters."""
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(data, "CHUNK", 7)
    corpus = data.read_corpus(path)
    np.testing.assert_array_equal(corpus.ids, naive_ids(text))
    np.testing.assert_array_equal(corpus.vocab.encode(text), naive_ids(text))


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


def test_invalid_utf8_reports_the_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text\n" * 3 + b"\xff rest")
    with pytest.raises(CharnnError, match=r"not valid UTF-8: byte 0xff at offset 30"):
        data.read_corpus(path)


def test_missing_folder_and_empty(tmp_path):
    with pytest.raises(CharnnError, match="no such file"):
        data.read_corpus(tmp_path / "nope.txt")
    with pytest.raises(CharnnError, match="is a folder"):
        data.read_corpus(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CharnnError, match="is empty"):
        data.read_corpus(tmp_path / "empty.txt")


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
