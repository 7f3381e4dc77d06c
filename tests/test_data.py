"""Shards (llm.c format), the train/val loaders, and data/prepare.py on local fixtures (offline)."""

import json
import os

import numpy as np
import pytest
import torch

from data import prepare, sources
from data.shards import (HEADER_INTS, MAGIC, VERSION, ShardError, TrainLoader, list_shards, load_tokens,
                         read_shard, val_windows, write_shard)
from data.tokenizer import EOT, get_encoding


@pytest.fixture(autouse=True, scope="module")
def hub_offline():
    # the --source code path must never touch the Hugging Face hub
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def make_train_dir(tmp_path, sizes=(1000, 700, 1300), val=500):
    """Train shards whose token at global position p is p (so every window is identifiable)."""
    d = tmp_path / "toy"
    d.mkdir()
    start = 0
    for i, n in enumerate(sizes):
        write_shard(d / f"toy_train_{i + 1:06d}.bin", np.arange(start, start + n))
        start += n
    write_shard(d / "toy_val_000000.bin", np.arange(val) % 50000)
    return d


def batches(loader, n):
    return [loader.next_batch() for _ in range(n)]


def window_starts(xs):
    return [int(s) for x in xs for s in x[:, 0]]


# ----------------------------------------------------------------------------- shard format

def test_header_round_trip(tmp_path):
    path = tmp_path / "x_train_000001.bin"
    tokens = np.array([0, 1, EOT, 65535, 42], dtype=np.int64)
    write_shard(path, tokens)
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    assert list(header[:3]) == [MAGIC, VERSION, 5] and not header[3:].any()
    assert path.stat().st_size == HEADER_INTS * 4 + 2 * 5
    got = read_shard(path)
    assert isinstance(got, np.memmap) and got.dtype == np.uint16
    assert got.tolist() == tokens.tolist()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_write_shard_rejects_non_uint16(tmp_path):
    with pytest.raises(ShardError, match="uint16"):
        write_shard(tmp_path / "a_train_000001.bin", [1, 70000])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:100], "shorter than the 1024-byte header"),
    (lambda raw: np.int32(1234).tobytes() + raw[4:], "bad magic number 1234"),
    (lambda raw: raw[:4] + np.int32(2).tobytes() + raw[8:], "unsupported shard version 2"),
    (lambda raw: raw[:-6], "it is truncated"),
    (lambda raw: raw + b"\0\0", "longer than its header says"),
])
def test_bad_shards_raise_clear_errors(tmp_path, damage, message):
    d = tmp_path / "embedded"
    d.mkdir()
    path = d / "embedded_train_000001.bin"
    write_shard(path, np.arange(100))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ShardError, match=message) as e:
        read_shard(path)
    assert str(path) in str(e.value) and "python data/prepare.py embedded" in str(e.value)


def test_list_shards_names_sorting_and_missing(tmp_path):
    with pytest.raises(ShardError,
                       match="does not exist.*python data/prepare.py DATASET --out-dir .* .DATASET: embedded, fineweb-10B"):
        list_shards(tmp_path / "nope", "train")
    d = tmp_path / "fineweb10B"  # modded-nanogpt's directory and file names
    d.mkdir()
    with pytest.raises(ShardError, match=r"has no val shards \(\*_val_\*.bin\).*python data/prepare.py"):
        list_shards(d, "val")
    for name in ["fineweb_train_000002.bin", "fineweb_val_000000.bin", "fineweb_train_000001.bin", "notes.txt"]:
        (d / name).touch()
    assert [p.name for p in list_shards(d, "train")] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert [p.name for p in list_shards(d, "val")] == ["fineweb_val_000000.bin"]
    with pytest.raises(ValueError):
        list_shards(d, "test")
    (d / "meta.json").write_text(json.dumps({"dataset": "openwebtext"}))  # written by prepare.py
    (d / "fineweb_val_000000.bin").unlink()
    with pytest.raises(ShardError, match="python data/prepare.py openwebtext --out-dir .*fineweb10B$"):
        list_shards(d, "val")


def test_load_tokens_and_val_windows(tmp_path):
    d = make_train_dir(tmp_path)
    assert load_tokens(d, "train").tolist() == list(range(3000))  # shards concatenated in order
    val = load_tokens(d)
    assert len(val) == 500
    w = val_windows(val, 100)
    assert w.shape == (4, 101) and w.dtype == np.int64  # (500 - 1) // 100 windows
    assert w[2].tolist() == list(range(200, 301))
    assert val_windows(val, 100, n_windows=2).shape == (2, 101)
    assert val_windows(val, 499).shape == (1, 500)
    with pytest.raises(ShardError, match=r"validation set has 500 tokens; 1 window\(s\) of 500 need 501; use a sh"):
        val_windows(val, 500)
    with pytest.raises(ShardError, match="5 window.* of 100 need 501"):
        val_windows(val, 100, n_windows=5)


# ----------------------------------------------------------------------------- train loader

def test_loader_batches_are_shifted_windows(tmp_path):
    d = make_train_dir(tmp_path)
    loader = TrainLoader(d, batch_size=4, block_size=16, shuffle=False)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # tokens are positions: y is x shifted by one
    assert window_starts([x]) == [0, 16, 32, 48]  # unshuffled: in order, stride T
    assert torch.equal(x[:, 1:], (x[:, :-1] + 1))


def test_loader_epoch_covers_each_window_once_and_stays_in_shards(tmp_path):
    sizes = (1000, 700, 1300)
    d = make_train_dir(tmp_path, sizes)
    T = 16
    loader = TrainLoader(d, batch_size=3, block_size=T, seed=5)
    per_epoch = sum((n - 1) // T for n in sizes)
    assert loader.windows_per_epoch == per_epoch == 62 + 43 + 81
    xs = [x for x, _ in batches(loader, 186)]  # 3 * 186 windows = exactly 3 epochs
    starts = window_starts(xs)
    for e in range(3):
        epoch = starts[e * per_epoch:(e + 1) * per_epoch]
        bounds = np.cumsum((0,) + sizes)
        expected = sorted(int(b) + k * T for b, n in zip(bounds, sizes) for k in range((n - 1) // T))
        assert sorted(epoch) == expected  # every window once, none crossing a shard end
    assert starts[:per_epoch] != starts[per_epoch:2 * per_epoch]  # reshuffled each epoch
    assert loader.epoch == 3 and loader.index == 0


def test_loader_determinism(tmp_path):
    d = make_train_dir(tmp_path)
    a = window_starts(x for x, _ in batches(TrainLoader(d, 4, 16, seed=1), 10))
    b = window_starts(x for x, _ in batches(TrainLoader(d, 4, 16, seed=1), 10))
    c = window_starts(x for x, _ in batches(TrainLoader(d, 4, 16, seed=2), 10))
    assert a == b and a != c


def test_two_ranks_equal_one_rank_two_microbatches(tmp_path):
    d = make_train_dir(tmp_path)
    B, T, steps = 4, 16, 30  # 30 steps x 8 windows crosses an epoch boundary (186 windows)
    single = batches(TrainLoader(d, B, T, rank=0, world_size=1), 2 * steps)
    r0 = batches(TrainLoader(d, B, T, rank=0, world_size=2), steps)
    r1 = batches(TrainLoader(d, B, T, rank=1, world_size=2), steps)
    for k in range(steps):
        assert torch.equal(r0[k][0], single[2 * k][0]) and torch.equal(r0[k][1], single[2 * k][1])
        assert torch.equal(r1[k][0], single[2 * k + 1][0]) and torch.equal(r1[k][1], single[2 * k + 1][1])
    # ranks are disjoint within an epoch (the first 23 steps = 184 of its 186 windows)
    s0, s1 = set(window_starts(x for x, _ in r0[:23])), set(window_starts(x for x, _ in r1[:23]))
    assert len(s0) == len(s1) == 23 * B and not s0 & s1


@pytest.mark.parametrize("done", [5, 46, 47])  # mid-epoch; before and after a step across the epoch end (186 windows)
def test_exact_resume_from_state_dict(tmp_path, done):
    d = make_train_dir(tmp_path)
    loader = TrainLoader(d, 4, 16, seed=7)
    batches(loader, done)
    path = tmp_path / "ckpt.pt"
    torch.save({"loader": loader.state_dict()}, path)
    expected = batches(loader, 6)
    state = torch.load(path, weights_only=True)["loader"]  # plain ints/strs/lists only
    resumed = TrainLoader(d, 4, 16, seed=7)
    resumed.load_state_dict(state)
    for (x, y), (xr, yr) in zip(expected, batches(resumed, 6)):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_resume_with_another_world_size(tmp_path):
    d = make_train_dir(tmp_path)
    one = TrainLoader(d, 4, 16)
    batches(one, 10)
    state = one.state_dict()
    expected = batches(one, 2)
    ranks = [TrainLoader(d, 4, 16, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.load_state_dict(state)
    assert [torch.equal(a[0], b[0]) for a, b in zip(expected, [r.next_batch() for r in ranks])] == [True, True]


def test_resume_refuses_a_different_stream(tmp_path):
    d = make_train_dir(tmp_path)
    state = TrainLoader(d, 4, 16).state_dict()
    with pytest.raises(ShardError, match="block_size"):
        TrainLoader(d, 4, 32).load_state_dict(state)
    with pytest.raises(ShardError, match="seed"):
        TrainLoader(d, 4, 16, seed=3).load_state_dict(state)


def test_loader_errors(tmp_path):
    with pytest.raises(ShardError, match="python data/prepare.py"):
        TrainLoader(tmp_path, 4, 16)
    d = make_train_dir(tmp_path, sizes=(100,))
    with pytest.raises(ShardError, match="6 windows of 17 tokens, but one step needs world_size\\*batch_size = 8"):
        TrainLoader(d, 4, 16, world_size=2)
    write_shard(d / "toy_train_000002.bin", np.full(100, 60000))
    loader = TrainLoader(d, 6, 16, shuffle=False, vocab_size=50304)
    loader.next_batch()  # the first shard is fine
    with pytest.raises(ShardError, match="toy_train_000002.bin: token id 60000 is not below vocab_size 50304"):
        loader.next_batch()
    write_shard(d / "toy_val_000000.bin", np.arange(100))
    assert load_tokens(d, "val", vocab_size=100).tolist() == list(range(100))
    with pytest.raises(ShardError, match="toy_val_000000.bin: token id 99 is not below vocab_size 99 \\(at token 99\\)"):
        load_tokens(d, "val", vocab_size=99)


# ----------------------------------------------------------------------------- prepare.py

DOCS = [
    "The first document.\nIt has two lines.",
    "Ünïcödé — 世界 🙂, tabs\tand  spaces ",
    "A document that mentions <|endoftext|> as plain text.",
    "short",
    "Lorem ipsum dolor sit amet, " * 40,
    "Another one.\n\n\nWith blank lines.",
    "x" * 300,
]


def decode_docs(paths):
    """Documents back from shards: EOT starts every document."""
    tokens = np.concatenate([read_shard(p) for p in paths]).tolist()
    assert tokens[0] == EOT
    docs, cur = [], []
    for t in tokens[1:] + [EOT]:
        if t == EOT:
            docs.append(get_encoding().decode(cur))
            cur = []
        else:
            cur.append(t)
    return docs


def test_prepare_fineweb_from_parquet(tmp_path, capsys):
    import pyarrow as pa  # datasets (requirements.txt) needs it: a broken install fails rather than skips
    import pyarrow.parquet as pq
    src = tmp_path / "src"
    src.mkdir()  # two files, as a downloaded dataset folder would have, with FineWeb's extra columns
    pq.write_table(pa.table({"text": DOCS[:4], "id": ["a", "b", "c", "d"], "score": [1.0] * 4}), src / "000.parquet")
    pq.write_table(pa.table({"text": DOCS[4:], "id": ["e", "f", "g"], "score": [2.0] * 3}), src / "001.parquet")
    out = tmp_path / "out"
    meta = prepare.main(["fineweb-10B", "--source", str(src), "--out-dir", str(out), "--shard-size", "120",
                         "--workers", "1"])
    val, train = list_shards(out, "val"), list_shards(out, "train")
    files = val + train
    assert [p.name for p in val] == ["fineweb_val_000000.bin"]  # llm.c: the first shard is validation
    assert train[0].name == "fineweb_train_000001.bin" and len(files) == len(list(out.glob("*.bin"))) == 5
    assert all(len(read_shard(p)) == 120 for p in files[:-1])
    assert decode_docs(val + train) == DOCS  # the whole stream, in order, round-trips
    total = sum(len(read_shard(p)) for p in files)
    assert meta["splits"]["val"]["tokens"] == 120 and meta["splits"]["train"]["tokens"] == total - 120
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["splits"] == meta["splits"] and on_disk["sources"]["files"][0].endswith("000.parquet")
    assert "tokens/s" in capsys.readouterr().out

    mtime = files[0].stat().st_mtime_ns  # a second run finds everything up to date
    prepare.main(["fineweb-10B", "--source", str(src), "--out-dir", str(out), "--shard-size", "120", "--workers", "1"])
    assert "up to date" in capsys.readouterr().out and files[0].stat().st_mtime_ns == mtime
    # a different shard size rebuilds, and leaves no stale shards behind
    prepare.main(["fineweb-10B", "--source", str(src), "--out-dir", str(out), "--shard-size", "100000",
                  "--workers", "1", "--val-every", "3"])
    assert sorted(p.name for p in out.glob("*.bin")) == ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]


def test_prepare_openwebtext_from_jsonl_with_workers(tmp_path):
    src = tmp_path / "owt.jsonl"
    docs = DOCS * 3  # 21 documents
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = tmp_path / "owt"
    meta = prepare.main(["openwebtext", "--source", str(src), "--out-dir", str(out), "--val-every", "5",
                         "--workers", "2"])
    assert decode_docs(list_shards(out, "val")) == docs[::5]  # documents 0, 5, 10, ... held out whole
    assert decode_docs(list_shards(out, "train")) == [t for i, t in enumerate(docs) if i % 5]
    assert meta["splits"]["val"]["documents"] == 5 and meta["splits"]["train"]["documents"] == 16
    assert [p.name for p in list_shards(out, "train")] == ["openwebtext_train_000001.bin"]


def test_prepare_text_files_are_documents(tmp_path):
    src = tmp_path / "txt"
    src.mkdir()
    for i, t in enumerate(DOCS[:3]):
        (src / f"{i}.txt").write_text(t)
    out = tmp_path / "edu"
    prepare.main(["fineweb-edu-10B", "--source", str(src / "*.txt"), "--out-dir", str(out), "--val-every", "2",
                  "--workers", "1"])
    assert [p.name for p in list_shards(out, "val")] == ["edu_fineweb_val_000000.bin"]
    assert decode_docs(list_shards(out, "val")) == [DOCS[0], DOCS[2]]


def test_prepare_input_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"content": "no text column"}) + "\n")
    for workers in ("1", "2"):  # with workers, the error comes from the pool's feeding thread
        with pytest.raises(SystemExit, match="rows have columns \\['content'\\]; a 'text' column is needed"):
            prepare.main(["openwebtext", "--source", str(bad), "--out-dir", str(tmp_path / "o1"), "--workers", workers])
    with pytest.raises(SystemExit, match="no such file"):
        prepare.main(["openwebtext", "--source", str(tmp_path / "missing.parquet"), "--workers", "1"])
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "tiny"}) + "\n")
    with pytest.raises(SystemExit, match="train split is empty .all tokens fit in the first .validation. shard"):
        prepare.main(["fineweb-10B", "--source", str(one), "--out-dir", str(tmp_path / "o2"), "--workers", "1"])
    assert not (tmp_path / "o2" / "meta.json").exists()  # an incomplete run is not marked done
    broken = tmp_path / "broken.parquet"  # e.g. an interrupted download
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(SystemExit, match="broken.parquet: cannot open as parquet .*check that the files are complete"):
        prepare.main(["fineweb-10B", "--source", str(broken), "--out-dir", str(tmp_path / "o3"), "--workers", "1"])
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "cut her')
    with pytest.raises(SystemExit, match="torn.jsonl: cannot .* check that the files are complete"):
        prepare.main(["openwebtext", "--source", str(torn), "--out-dir", str(tmp_path / "o4"), "--workers", "1"])
    # one directory, one dataset: the loaders would read another dataset's shards too
    (tmp_path / "o5").mkdir()
    write_shard(tmp_path / "o5" / "fineweb_train_000001.bin", [1, 2, 3])
    with pytest.raises(SystemExit, match="o5 already holds shards of another dataset .fineweb_train_000001.bin"):
        prepare.main(["openwebtext", "--source", str(one), "--out-dir", str(tmp_path / "o5"), "--workers", "1"])


def test_worker_pool_stops_when_the_consumer_does():
    texts = iter(["some text"] * 100_000)  # far more than the in-flight bound
    gen = prepare.tokenized(texts, workers=2, chunksize=4)
    assert next(gen)[0] == EOT
    gen.close()  # must shut the pool down, not hang on the blocked feeding thread
    assert len(list(texts)) > 90_000  # and the input was not read ahead without bound


def test_prepare_module_imports_without_datasets():
    # `datasets` is imported lazily, only for the hub/--source path
    import subprocess
    import sys
    code = "import sys; sys.modules['datasets'] = None; import data.prepare, data.shards; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=sources.REPO_ROOT, env={**os.environ, "PYTHONPATH": str(sources.REPO_ROOT)})
    assert res.stdout.strip() == "ok", res.stderr


# ----------------------------------------------------------------------------- embedded corpus

def test_wiki_markup_and_gutenberg_stripping():
    markup = ("{{Infobox|name={{nested}}}}'''Alan''' was a [[mathematician]] and [[Logic|logician]].<ref>cite</ref>\n"
              "== Life ==\n[[File:Alan.jpg|thumb|A [[photo]]]]Born in [http://example.org London].\n"
              "[[Category:People]]")
    assert sources.wiki_to_text(markup) == "Alan was a mathematician and logician.\nLife\nBorn in London."
    text = ("header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nbody\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence")
    assert sources.strip_gutenberg(text).strip() == "body"


@pytest.mark.slow
def test_prepare_embedded(tmp_path):
    meta = prepare.main(["embedded", "--out-dir", str(tmp_path), "--workers", "2"])
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    assert train["documents"] == 100 and val["documents"] == 15  # 66 books + 49 plays/poems, every 8th
    assert 2_500_000 < train["tokens"] + val["tokens"] < 3_500_000
    assert meta["val_documents"][:2] == ["Genesis", "1 Samuel"]
    docs = decode_docs(list_shards(tmp_path, "val"))
    assert len(docs) == 15 and docs[0].startswith("Genesis\n\nChapter 1\nIn the beginning God created")
    assert "`" not in docs[0] and "God's Spirit" in docs[0]  # backticks were apostrophes
    assert any(d.startswith("THE TRAGEDY OF") or "by William Shakespeare" in d[:200] for d in docs)
    assert {s["licence"] for s in meta["sources"]} and all(s["sha256"] for s in meta["sources"])


def test_shards_never_import_prepare():
    # imports point one way: the loaders' re-make hint comes from data/catalog.py, below both
    import subprocess
    import sys
    code = ("import sys; from data.shards import ShardError, list_shards\n"
            "try: list_shards('no-such-dir', 'val')\nexcept ShardError as e: print(e)\n"
            "print('data.prepare' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=sources.REPO_ROOT, env={**os.environ, "PYTHONPATH": str(sources.REPO_ROOT)})
    message, imported = res.stdout.splitlines()[-2:]
    assert "Make them with: python data/prepare.py DATASET --out-dir no-such-dir (DATASET: embedded" in message
    assert imported == "False", res.stderr
