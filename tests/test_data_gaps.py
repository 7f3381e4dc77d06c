"""Data behaviours the mutation run found unguarded (tools/mutation.sh): the train loader's
per-epoch reshuffle inside a shard, empty documents dropped by data preparation, the document
separator and the shard cutting, and the up-to-date check. Offline and fast."""
import json

import numpy as np
import pytest

from data import prepare
from data.shards import TrainLoader, list_shards, read_shard, write_shard


def one_shard(tmp_path, n=16 * 40 + 1):
    d = tmp_path / "one"
    d.mkdir()
    write_shard(d / "one_train_000001.bin", np.arange(n))  # token at position p is p
    return d


def epoch_starts(loader, epochs):
    per_epoch = loader.windows_per_epoch // loader.B
    return [[int(s) for _ in range(per_epoch) for s in loader.next_batch()[0][:, 0]] for _ in range(epochs)]


def test_windows_inside_a_shard_are_reshuffled_every_epoch(tmp_path):
    """One shard, so the shard order cannot be what changes between epochs."""
    d = one_shard(tmp_path)
    loader = TrainLoader(d, batch_size=4, block_size=16, seed=3)
    assert loader.windows_per_epoch == 40
    a, b, c = epoch_starts(loader, 3)
    assert sorted(a) == sorted(b) == sorted(c) == list(range(0, 640, 16))  # each window once per epoch
    assert a != sorted(a) and a != b and b != c and a != c
    plain = TrainLoader(d, batch_size=4, block_size=16, shuffle=False)
    assert epoch_starts(plain, 2) == [list(range(0, 640, 16))] * 2  # shuffle=False: in order, every epoch


def test_shuffled_order_depends_on_the_seed_only(tmp_path):
    d = one_shard(tmp_path)
    first = epoch_starts(TrainLoader(d, batch_size=4, block_size=16, seed=3), 2)
    assert epoch_starts(TrainLoader(d, batch_size=8, block_size=16, seed=3), 2) == first  # not on the batch size
    assert epoch_starts(TrainLoader(d, batch_size=4, block_size=16, seed=4), 2) != first


def test_loader_reads_the_window_at_its_start(tmp_path):
    d = tmp_path / "two"
    d.mkdir()
    write_shard(d / "two_train_000001.bin", np.arange(100))
    write_shard(d / "two_train_000002.bin", np.arange(1000, 1050))
    loader = TrainLoader(d, batch_size=9, block_size=10, shuffle=False)
    x, y = loader.next_batch()  # shard 1: 9 windows of 11 tokens from 99 usable; shard 2: 4
    assert x[:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    x, y = loader.next_batch()
    assert x[:, 0].tolist() == [1000, 1010, 1020, 1030, 0, 10, 20, 30, 40]  # then the next epoch
    assert (y == x + 1).all() and loader.epoch == 1 and loader.index == 5


def test_state_dict_records_the_stream(tmp_path):
    d = one_shard(tmp_path)
    loader = TrainLoader(d, batch_size=4, block_size=16, seed=3)
    loader.next_batch()
    state = loader.state_dict()
    assert state == {"epoch": 0, "index": 4, "seed": 3, "shuffle": True, "block_size": 16,
                     "shards": ["one_train_000001.bin"], "shard_tokens": [641]}
    for key, value in (("seed", 4), ("shuffle", False), ("block_size", 8), ("shard_tokens", [640])):
        with pytest.raises(Exception, match=f"the checkpoint's {key} .* differs from this loader's"):
            TrainLoader(d, batch_size=4, block_size=16, seed=3).load_state_dict({**state, key: value})


def test_empty_documents_are_dropped(tmp_path):
    """Empty and null texts are no documents: no separator of their own in the shards."""
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a", "", None, "b"]))
    out = tmp_path / "out"
    meta = prepare.main(["openwebtext", "--source", str(src), "--out-dir", str(out), "--val-every", "1000",
                         "--workers", "1", "--tokenizer", "bytes", "--shard-size", "64"])
    val = np.concatenate([read_shard(p) for p in list_shards(out, "val")]).tolist()
    train = np.concatenate([read_shard(p) for p in list_shards(out, "train")]).tolist()
    assert val + train == [0, ord("a"), 0, ord("b")]  # document 0 is held out for validation
    assert meta["splits"]["val"]["documents"] + meta["splits"]["train"]["documents"] == 2


def test_prepared_stream_has_one_separator_per_document(tmp_path):
    src = tmp_path / "docs.jsonl"
    texts = ["one", "", "two", "", "three", "four", "five", "six"]
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out"
    meta = prepare.main(["openwebtext", "--source", str(src), "--out-dir", str(out), "--val-every", "3",
                         "--workers", "1", "--tokenizer", "bytes", "--shard-size", "7"])
    kept = [t for t in texts if t]  # documents 0 and 3 of the kept six go to val
    val = np.concatenate([read_shard(p) for p in list_shards(out, "val")]).tolist()
    train = np.concatenate([read_shard(p) for p in list_shards(out, "train")]).tolist()
    as_bytes = lambda docs: [b for t in docs for b in [0] + list(t.encode())]
    assert val == as_bytes([kept[0], kept[3]])
    assert train == as_bytes([t for i, t in enumerate(kept) if i % 3])
    assert meta["splits"]["val"]["documents"] == 2 and meta["splits"]["train"]["documents"] == 4
    assert meta["splits"]["train"]["tokens"] == len(train) and meta["separator"] == 0
    # shards of exactly 7 tokens, the last of each split shorter
    for split in ("val", "train"):
        sizes = [len(read_shard(p)) for p in list_shards(out, split)]
        assert all(n == 7 for n in sizes[:-1]) and 0 < sizes[-1] <= 7
        assert meta["splits"][split]["shards"] == {p.name: len(read_shard(p)) for p in list_shards(out, split)}
    assert meta["tokenizer"] == "bytes" and meta["vocab_size"] == 256 and meta["workers"] == 1
    assert meta["validation"] == "every 3th document (index % 3 == 0)"


def test_a_damaged_shard_is_not_up_to_date(tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["alpha", "beta", "gamma", "delta"]))
    out = tmp_path / "out"
    args = ["openwebtext", "--source", str(src), "--out-dir", str(out), "--val-every", "2", "--workers", "1",
            "--tokenizer", "bytes"]
    prepare.main(args)
    shard = list_shards(out, "train")[0]
    write_shard(shard, [0, 1, 2])  # a different length than meta.json records
    prepare.main(args)
    assert "up to date" not in capsys.readouterr().out
    assert len(read_shard(list_shards(out, "train")[0])) == len("beta") + len("delta") + 2  # rebuilt
    prepare.main(args)
    assert "up to date" in capsys.readouterr().out
    prepare.main(args + ["--force"])
    assert "up to date" not in capsys.readouterr().out


def test_tokenize_puts_the_separator_first():
    prepare._init_worker("bytes")
    assert prepare.tokenize("hé").tolist() == [0, 104, 195, 169]
    assert prepare.tokenize("hé").dtype == np.uint16
    with pytest.raises(prepare.PrepareError, match="a document holds a NUL byte"):
        prepare.tokenize("a\0b")
    prepare._init_worker("gpt2")
    assert prepare.tokenize("hello").tolist() == [50256, 31373]  # <|endoftext|>, "hello"


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(SystemExit, match="--shard-size must be >= 1 and --val-every >= 0"):
        prepare.main(["openwebtext", "--source", str(tmp_path), "--shard-size", "0", "--workers", "1"])
    with pytest.raises(SystemExit, match="--source is for the hub datasets"):
        prepare.main(["embedded", "--source", str(tmp_path), "--workers", "1"])
    with pytest.raises(SystemExit, match="--with-wikipedia only applies to the embedded dataset"):
        prepare.main(["openwebtext", "--with-wikipedia", "--workers", "1"])


def test_boundaries_of_the_shard_checks(tmp_path):
    from data.shards import ShardError, _short, load_tokens, val_windows
    write_shard(tmp_path / "b_val_000000.bin", [0, 65535])  # the largest uint16 is a valid token
    assert read_shard(tmp_path / "b_val_000000.bin").tolist() == [0, 65535]
    with pytest.raises(ShardError):
        write_shard(tmp_path / "c_val_000000.bin", [0, 65536])
    assert val_windows(np.arange(4), 1).tolist() == [[0, 1], [1, 2], [2, 3]]  # length 1 is allowed
    d = tmp_path / "v"
    d.mkdir()
    write_shard(d / "v_train_000001.bin", np.arange(33) % 10)
    loader = TrainLoader(d, batch_size=2, block_size=16, shuffle=False, vocab_size=9)  # token 9 == vocab_size
    with pytest.raises(ShardError, match="token id 9 is not below vocab_size 9"):
        loader.next_batch()
    assert load_tokens(d, "train", vocab_size=10).tolist() == (np.arange(33) % 10).tolist()
    assert _short("x" * 78) == repr("x" * 78) and _short("x" * 79) == repr("x" * 79)[:80] + "..."


@pytest.mark.parametrize("tokens", [[], [7], [0, 65535, 3]])
def test_small_shards_read_back_exactly_and_read_only(tmp_path, tokens):
    # llm.c's layout: a 256-int32 header (1024 bytes), then 2 bytes a token; an empty shard is the
    # header alone (np.memmap cannot map it), a one-token shard must not be taken for empty
    path = tmp_path / "x_val_000000.bin"
    write_shard(path, np.array(tokens, dtype=np.uint16))
    assert path.stat().st_size == 1024 + 2 * len(tokens)
    got = read_shard(path)
    assert got.dtype == np.uint16 and got.shape == (len(tokens),) and got.tolist() == tokens
    if tokens:
        assert not got.flags.writeable  # a reader must never write into the data


def test_out_of_vocab_error_names_the_window_holding_the_token(tmp_path):
    from data.shards import ShardError
    tokens = np.arange(33) % 9
    tokens[25] = 9   # == vocab_size, only in the second window (tokens 16..32) of the first batch
    write_shard(tmp_path / "w_train_000001.bin", tokens)
    loader = TrainLoader(tmp_path, batch_size=2, block_size=16, shuffle=False, vocab_size=9)
    with pytest.raises(ShardError, match=r"token id 9 is not below vocab_size 9 \(in tokens 16\.\.32\)"):
        loader.next_batch()


def test_small_or_bad_validation_windows_are_clear_errors():
    from data.shards import ShardError, val_windows
    with pytest.raises(ValueError, match="window length must be >= 1, got 0"):
        val_windows(np.arange(10), 0)
    with pytest.raises(ShardError, match="validation set has 0 tokens; 1 window"):
        val_windows(np.arange(0), 4)


def test_rank_must_be_below_world_size(tmp_path):
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        TrainLoader(one_shard(tmp_path), batch_size=2, block_size=16, rank=2, world_size=2)


def test_load_tokens_joins_every_shard_and_errors_name_their_values(tmp_path):
    from data.shards import ShardError, load_tokens
    write_shard(tmp_path / "a_val_000000.bin", np.arange(5))
    write_shard(tmp_path / "a_val_000001.bin", np.arange(5, 9))
    assert load_tokens(tmp_path, "val").tolist() == list(range(9))   # two shards: both, in order
    with pytest.raises(ShardError, match=r"tokens must be 1-D, got shape \(2, 2\)"):
        write_shard(tmp_path / "b_val_000000.bin", np.zeros((2, 2)))
    d = one_shard(tmp_path)
    state = TrainLoader(d, batch_size=2, block_size=16, seed=1).state_dict()
    with pytest.raises(ShardError, match=r"checkpoint's seed \(1\) differs from this loader's \(2\)"):
        TrainLoader(d, batch_size=2, block_size=16, seed=2).load_state_dict(state)


def test_missing_data_and_a_long_shard_say_what_is_wrong(tmp_path):
    from data.shards import ShardError
    with pytest.raises(ValueError, match="split must be one of .*, got 'test'"):
        list_shards(tmp_path, "test")
    with pytest.raises(ShardError, match="nowhere does not exist"):
        list_shards(tmp_path / "nowhere", "val")
    path = tmp_path / "l_val_000000.bin"
    write_shard(path, np.arange(4))
    with open(path, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ShardError, match="it is longer than its header says"):
        read_shard(path)


def test_a_shards_header_is_read_without_its_tokens(tmp_path, monkeypatch):
    """read_header runs on every shard at every start: it reads the header's ints, not the shard
    (hundreds of MB each)."""
    from data import shards
    path = tmp_path / "train_000000.bin"
    write_shard(path, np.arange(5000, dtype=np.uint16))
    read, fromfile = [], np.fromfile

    def recording(*args, **kwargs):
        ints = fromfile(*args, **kwargs)
        read.append(len(ints))
        return ints

    monkeypatch.setattr(shards.np, "fromfile", recording)
    assert shards.read_header(path) == 5000
    assert read == [shards.HEADER_INTS]


def test_a_shard_too_long_for_its_header_is_refused_before_it_is_read(tmp_path):
    """2^31 tokens do not fit the header's int32 count. The array is a zero-stride view (4 GiB
    that are never allocated): the size is checked before anything scans or copies it."""
    from data.shards import ShardError
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint16), shape=(2**31,), strides=(0,))
    with pytest.raises(ShardError, match=r"2,147,483,648 tokens do not fit the int32 header count; use smaller shards$"):
        write_shard(tmp_path / "x_train_000001.bin", huge)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_shard_holds_no_window(tmp_path):
    """Even at block_size 1, where a window is 2 tokens: an empty shard has none (not one)."""
    d = tmp_path / "with-empty"
    d.mkdir()
    write_shard(d / "e_train_000001.bin", np.zeros(0, dtype=np.uint16))
    write_shard(d / "e_train_000002.bin", np.arange(10))
    loader = TrainLoader(d, batch_size=3, block_size=1, shuffle=False)
    assert loader.n_windows.tolist() == [0, 9] and loader.windows_per_epoch == 9
    assert loader.next_batch()[0][:, 0].tolist() == [0, 1, 2]


def test_the_loader_keeps_at_most_two_shard_orders(tmp_path):
    """Each shard's window order is a permutation as long as the shard (a 100M-token shard's is
    ~50 MB): the loader keeps the current shard's and the next one's, not every shard's."""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(5):
        write_shard(d / f"m_train_{i + 1:06d}.bin", np.arange(i * 1000, i * 1000 + 65))
    loader = TrainLoader(d, batch_size=3, block_size=16, seed=1)
    seen = set()
    for _ in range(2 * loader.windows_per_epoch // 3):  # two epochs
        x, _ = loader.next_batch()
        seen |= {int(t) // 1000 for t in x[:, 0]}
        assert len(loader._perms) <= 2
    assert seen == set(range(5))
