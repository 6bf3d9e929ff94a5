"""The id cache: built once and reused; rebuilt, never trusted, when truncated, damaged, of another
format version or of another text; one good file when two builds race; where it lives."""

import json
import os

import numpy as np
import pytest

from charnn import idcache, textfile
from charnn.errors import CharnnError
from charnn.reports import Reporter, Task

TEXT = "Ünïcödé and ASCII, 中文 and 🎭, over several lines.\n" * 30


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def load(path, **kwargs):
    return idcache.load_corpus(path, chunk_bytes=7, **kwargs)  # chunks that cut through characters


def test_built_then_reused_and_mapped_read_only(text, cache_dir):
    corpus, source = load(text)
    assert source.status == "built" and source.cache == idcache.cache_path(text)
    assert os.path.dirname(source.cache) == str(cache_dir)  # the test's folder, never the user's
    found, ids = textfile.read_ids(text)
    np.testing.assert_array_equal(corpus.ids, ids)
    assert corpus.vocab == found.vocab and corpus.sha256 == found.sha256 and corpus.size == len(TEXT.encode())
    assert source.nbytes == ids.nbytes
    again, source = load(text)
    assert source.status == "reused"
    np.testing.assert_array_equal(again.ids, ids)
    assert not again.ids.flags.writeable  # a map of the file, read-only
    with pytest.raises(ValueError):
        again.ids[0] = 1
    assert sorted(os.listdir(cache_dir)) == [os.path.basename(source.cache)]  # no temporary left


def rewrite_header(path, **changes):
    """Change header fields in place, keeping its length (so only the change is wrong)."""
    raw = bytearray(open(path, "rb").read())
    n = int.from_bytes(raw[8:16], "little")
    header = json.loads(raw[16:16 + n])
    header.update(changes)
    new = json.dumps(header, ensure_ascii=False, sort_keys=True).encode()
    assert len(new) == n, "keep the length: change a value for one as long"
    raw[16:16 + n] = new
    open(path, "wb").write(bytes(raw))


def truncate(path):
    os.truncate(path, os.path.getsize(path) - 3)


def flip_an_id(path):
    raw = bytearray(open(path, "rb").read())
    raw[-5] ^= 1
    open(path, "wb").write(bytes(raw))


def garble_the_header(path):
    raw = bytearray(open(path, "rb").read())
    raw[20:24] = b"\x00\xff{]"
    open(path, "wb").write(bytes(raw))


@pytest.mark.parametrize("spoil,why", [
    (truncate, "truncated"),
    (lambda p: open(p, "r+b").truncate(10), "truncated"),
    (flip_an_id, "damaged"),  # only the CRC of the ids can tell
    (garble_the_header, "damaged"),
    (lambda p: open(p, "wb").write(b"not a cache at all"), "damaged"),
    (lambda p: rewrite_header(p, version=9), "another format version"),
    (lambda p: rewrite_header(p, text_sha256="0" * 64), "the text changed"),
])
def test_a_spoiled_cache_is_rebuilt_never_trusted(text, spoil, why):
    corpus, source = load(text)
    expected = np.array(corpus.ids)
    spoil(source.cache)
    rebuilt, source = load(text)
    assert source.status == f"rebuilt ({why})"
    np.testing.assert_array_equal(rebuilt.ids, expected)
    assert load(text)[1].status == "reused"


@pytest.mark.parametrize("new_text", [TEXT.replace("ASCII", "ascii"), TEXT + "one more line\n"])
def test_another_text_at_the_same_path_rebuilds_it(text, new_text):
    """The same size (only the hash tells) and another size."""
    load(text)
    with open(text, "w", encoding="utf-8") as f:
        f.write(new_text)
    corpus, source = load(text)
    assert source.status == "rebuilt (the text changed)"
    assert corpus.vocab.decode(corpus.ids) == new_text


def test_without_verify_the_hashes_are_skipped_but_not_the_sizes(text):
    """For the processes of a parallel run after one has verified: a same-size change goes unseen
    (which is why one process must verify), another size does not."""
    load(text)
    with open(text, "w", encoding="utf-8") as f:
        f.write(TEXT.replace("ASCII", "ascii"))
    assert load(text, verify=False)[1].status == "reused"
    with open(text, "a", encoding="utf-8") as f:
        f.write("more\n")
    assert load(text, verify=False)[1].status == "rebuilt (the text changed)"


def test_two_builds_at_once_end_with_one_good_file(text, cache_dir):
    """A second build runs to its end while the first is half way through writing: both rename
    their own temporary file over the cache, and what is left is one complete, valid cache."""
    inner = []

    class SecondBuild(Task):
        done = 0

        def update(self, n=1):
            self.done += n
            if self.done > self.total / 2 and not inner:  # the first build is in its second pass, writing
                inner.append(load(text))

    class Racing(Reporter):
        def task(self, description, total, unit="it"):
            task = SecondBuild() if description.startswith("encoding") else Task()
            task.total = total
            return task

    first, _ = load(text, reporter=Racing())
    second, second_source = inner[0]
    assert second_source.status == "built"
    np.testing.assert_array_equal(first.ids, second.ids)
    assert os.listdir(cache_dir) == [os.path.basename(second_source.cache)]  # one file, no temporary
    assert load(text)[1].status == "reused"


def test_no_cache_writes_nothing(text, cache_dir):
    corpus, source = load(text, use_cache=False)
    assert source.cache is None and source.in_memory and os.listdir(cache_dir) == []
    assert corpus.vocab.decode(corpus.ids) == TEXT


def test_an_unwritable_cache_folder_is_one_clear_error(text, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CharnnError, match="could not write the id cache .*--cache-dir.*--no-cache"):
        load(text, cache_dir=str(tmp_path / "afile" / "sub"))


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.delenv(idcache.ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert idcache.default_dir() == str(tmp_path / "home" / ".cache" / "charnn")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    assert idcache.default_dir() == str(tmp_path / "home" / ".cache" / "charnn")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert idcache.default_dir() == str(tmp_path / "xdg" / "charnn")
    monkeypatch.setenv(idcache.ENV, str(tmp_path / "mine"))
    assert idcache.default_dir() == str(tmp_path / "mine")
    # One file per path (a symbolic link is its target), named after the text.
    (tmp_path / "a.txt").write_text("a")
    os.symlink(tmp_path / "a.txt", tmp_path / "link.txt")
    a = idcache.cache_path(str(tmp_path / "a.txt"))
    assert os.path.basename(a).startswith("a-") and a.endswith(".ids")
    assert idcache.cache_path(str(tmp_path / "link.txt")).split("-")[-1] == a.split("-")[-1]
    assert idcache.cache_path(str(tmp_path / "b.txt")) != idcache.cache_path(str(tmp_path / "sub" / "b.txt"))
    assert idcache.cache_path("x.txt", "elsewhere").startswith("elsewhere" + os.sep)


def test_remembered_values_are_kept_per_text_and_key(text):
    corpus, source = load(text)
    calls = []

    def compute():
        calls.append(1)
        return {"bits": 1.5 + len(calls)}
    assert idcache.remember(source, corpus.sha256, {"k": 1}, compute) == {"bits": 2.5}
    assert idcache.remember(source, corpus.sha256, {"k": 1}, compute) == {"bits": 2.5}  # remembered
    assert idcache.remember(source, corpus.sha256, {"k": 2}, compute) == {"bits": 3.5}  # another key
    assert idcache.remember(source, "another text", {"k": 1}, compute) == {"bits": 4.5}  # another text
    assert len(calls) == 3
    no_cache = idcache.Source(None, "encoded in memory", 0.0, 0)
    assert idcache.remember(no_cache, corpus.sha256, {"k": 1}, compute) == {"bits": 5.5}
