"""The benchmark's text: valid UTF-8 of the size asked for, prose and code with some non-ASCII,
and the same vocabulary at every size (its memory figure subtracts a small text's run)."""

from charnn import bench_corpus, textfile


def test_the_text_has_the_size_and_a_shared_vocabulary(tmp_path):
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    bench_corpus.write_corpus(str(small), 60_000)
    bench_corpus.write_corpus(str(big), 700_001)
    a, b = textfile.scan(str(small)), textfile.scan(str(big))  # strict UTF-8, or it raises
    assert 60_000 - 3 <= a.size <= 60_000 and 700_001 - 3 <= b.size <= 700_001  # a cut character is dropped
    assert a.vocab == b.vocab and a.vocab.size > 96 and not a.vocab.chars.isascii()
    text = big.read_text(encoding="utf-8")
    assert "def " in text and " the" in text and text.count("\n") > 1000
    bench_corpus.write_corpus(str(small), 60_000)
    assert textfile.scan(str(small)).sha256 == a.sha256  # the same text for the same seed
