"""Reading a text in chunks: the same vocabulary and ids as the whole text at once, wherever the
chunk boundaries fall (inside multi-byte characters included), and a bad byte reported at its
true offset."""

import hashlib

import numpy as np
import pytest

from charnn import textfile
from charnn.errors import CharnnError

# Characters of 1, 2, 3 and 4 bytes in UTF-8.
ALPHABET = list("ab \n.") + ["é", "Ω", "ж", "中", "€", "🎭", "𝔘"]


def naive_ids(text):
    """The ids by the definition: each character's place in sorted(set(text))."""
    index = {c: i for i, c in enumerate(sorted(set(text)))}
    return np.array([index[c] for c in text])


def random_text(rng, n, alphabet=ALPHABET):
    return "".join(rng.choice(alphabet, size=n))


@pytest.mark.parametrize("text", [
    "hello world\n",
    "Ünïcödé, Ελληνικά, русский, 中文, عربى, 🎭🎲 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢!\n" * 3,
    "".join(chr(c) for c in range(32, 600)),  # a vocabulary over 256: two-byte ids
    "".join(chr(c) for c in range(0x4E00, 0x4E00 + 70000 // 1000)) + "".join(chr(c) for c in range(0x10000, 0x10000 + 66000)),
])
def test_read_ids_vocab_and_round_trip(tmp_path, text):
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    found, ids = textfile.read_ids(str(path))
    assert found.vocab.chars == "".join(sorted(set(text)))
    assert found.vocab.decode(ids) == text and found.chars == len(text) == len(ids)
    np.testing.assert_array_equal(ids, naive_ids(text))
    assert ids.dtype == (np.uint8 if len(set(text)) <= 256 else np.uint16 if len(set(text)) <= 65536 else np.uint32)
    assert found.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest() and found.size == len(text.encode())


@pytest.mark.parametrize("seed", range(4))
def test_chunked_encoding_equals_the_whole_text(tmp_path, seed):
    """Chunks of 1 to 9 bytes cut inside 2-, 3- and 4-byte characters; ASCII-only chunks take the
    fast path, the others are decoded, and the ids must stitch together."""
    rng = np.random.default_rng(seed)
    text = random_text(rng, 300) + "plain ascii run " * 5 + random_text(rng, 50)
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    expected = naive_ids(text)
    for chunk_bytes in range(1, 10):
        found, ids = textfile.read_ids(str(path), chunk_bytes=chunk_bytes)
        assert found.vocab.chars == "".join(sorted(set(text))) and found.chars == len(text)
        np.testing.assert_array_equal(ids, expected)


@pytest.mark.parametrize("seed", range(2))
def test_read_slice_equals_slicing_the_whole_text(tmp_path, seed):
    """Any slice, with chunks cut inside multi-byte characters, and the length once the file ends
    before the slice does."""
    rng = np.random.default_rng(seed)
    text = random_text(rng, 200)
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    for chunk_bytes in (1, 3, 7, 1 << 20):
        for start, count in ((0, 5), (17, 40), (150, 50), (150, 80), (199, 3), (250, 10)):
            got, length = textfile.read_slice(str(path), start, count, chunk_bytes)
            assert got == text[start:start + count]
            assert length == (len(text) if start + count > len(text) else None)


def whole_text_error(raw):
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"byte 0x{raw[e.start]:02x} at offset {e.start} ({e.reason})"
    raise AssertionError("the bytes are valid")


@pytest.mark.parametrize("bad", [b"\xff", b"\x80", b"\xc3A", b"\xe4\xb8", b"\xed\xa0\x80", b"\xf0\x9f\x8e"])
def test_a_bad_byte_is_reported_at_its_true_offset_across_chunk_boundaries(tmp_path, bad):
    """Invalid start bytes, lone continuation bytes, characters cut short (also at the end of the
    file) and encoded surrogates, at every position relative to the chunk boundaries."""
    rng = np.random.default_rng(len(bad))
    good = random_text(rng, 40).encode("utf-8")
    path = tmp_path / "bad.txt"
    for where in (0, 1, 2, 17, len(good)):  # the start, inside the text, the very end
        cut = len(good[:where].decode("utf-8", "ignore").encode("utf-8"))  # a character boundary
        raw = good[:cut] + bad + good[cut:] if where < len(good) else good + bad
        path.write_bytes(raw)
        expected = whole_text_error(raw)
        for chunk_bytes in (1, 2, 3, 4, 5, 7, 64):
            with pytest.raises(CharnnError, match="not valid UTF-8") as e:
                textfile.scan(str(path), chunk_bytes=chunk_bytes)
            assert expected in str(e.value), (chunk_bytes, where, str(e.value))


def test_the_old_messages_for_a_bad_byte_missing_folder_and_empty(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text\n" * 3 + b"\xff rest")
    with pytest.raises(CharnnError, match=r"not valid UTF-8: byte 0xff at offset 30 \(invalid start byte\); convert"):
        textfile.scan(str(path))
    with pytest.raises(CharnnError, match="no such file"):
        textfile.scan(str(tmp_path / "nope.txt"))
    with pytest.raises(CharnnError, match="is a folder"):
        textfile.scan(str(tmp_path))
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CharnnError, match="is empty"):
        textfile.scan(str(tmp_path / "empty.txt"))


@pytest.mark.parametrize("change", [b"same size, other text!\n", b"longer text, more characters here\n", b"aq"])
def test_a_file_that_changes_between_the_passes_is_refused(tmp_path, change):
    path = tmp_path / "c.txt"
    path.write_bytes(b"some text here, ok!\n")
    found = textfile.scan(str(path))
    path.write_bytes(change)
    with pytest.raises(CharnnError, match="changed while it was being read"):
        for _ in textfile.id_chunks(str(path), found, chunk_bytes=4):
            pass
