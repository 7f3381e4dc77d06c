"""data/prepare.py's paths the resume tests do not reach: the command line it prints to rebuild or
finish a directory (written out here by hand), --verify's other findings, the hub's error
messages and the hub path itself (a stand-in `datasets` module: the real hub is not reachable
here; the local-file path that shares DatasetSource is tests/test_prepare_resume.py's), --source's
resolution, prepare() and main() in this process (what they print and record, their defaults and
refusals), the progress file, the tokenizing pool, and a resume at a document's very end."""
import errno
import json
import re
import sys
import threading
import time
import types

import numpy as np
import pytest

from data import prepare
from data.catalog import default_out_dir
from data.shards import write_shard


def config(**changes):
    base = {"dataset": "openwebtext", "shard_size": 10**8, "val_every": 2000, "source": "Skylion007/openwebtext",
            "hub_config": None, "with_wikipedia": False, "tokenizer": "gpt2"}
    return {**base, **changes}


def test_command_of_says_only_what_differs_from_the_defaults(tmp_path):
    owt = default_out_dir("openwebtext")
    assert prepare.command_of(config(), owt) == "python data/prepare.py openwebtext"
    assert prepare.command_of(config(tokenizer="bytes"), default_out_dir("openwebtext", "bytes")) == \
        "python data/prepare.py openwebtext --tokenizer bytes"
    assert prepare.command_of(config(tokenizer="bytes"), owt) == \
        f"python data/prepare.py openwebtext --tokenizer bytes --out-dir {owt}"
    assert prepare.command_of(config(shard_size=300, val_every=7), tmp_path) == \
        f"python data/prepare.py openwebtext --out-dir {tmp_path} --shard-size 300 --val-every 7"
    assert prepare.command_of(config(dataset="embedded", val_every=8, with_wikipedia=True),
                              default_out_dir("embedded")) == "python data/prepare.py embedded --with-wikipedia"
    assert prepare.command_of(config(dataset="fineweb-10B", val_every=0), default_out_dir("fineweb-10B")) == \
        "python data/prepare.py fineweb-10B"


def test_command_of_names_local_files_by_their_directory_when_it_holds_just_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = [str((src / f"{k}.jsonl").resolve()) for k in range(3)]
    for f in files:
        open(f, "w").write('{"text": "x"}\n')
    out = default_out_dir("openwebtext")
    assert prepare.command_of(config(source=files[:1]), out) == f"python data/prepare.py openwebtext --source {files[0]}"
    assert prepare.command_of(config(source=files), out) == f"python data/prepare.py openwebtext --source {src}"
    assert prepare.command_of(config(source=files[:2]), out) == \
        f"python data/prepare.py openwebtext --source {files[0]} {files[1]}"  # not the whole directory
    two = tmp_path / "two"
    two.mkdir()
    pair = [str((two / f"{k}.jsonl").resolve()) for k in range(2)]
    for f in pair:
        open(f, "w").write('{"text": "x"}\n')
    assert prepare.command_of(config(source=pair), out) == f"python data/prepare.py openwebtext --source {two}"
    (src / "extra.parquet").write_bytes(b"")  # the directory now mixes formats: list the files
    assert prepare.command_of(config(source=files), out) == \
        f"python data/prepare.py openwebtext --source {' '.join(files)}"


@pytest.fixture
def made(tmp_path):
    """An embedded-style directory: meta.json listing two train shards and one val shard."""
    from data import sources
    out = tmp_path / "out dir"  # a space in the path: commands quote it, messages keep it whole
    out.mkdir()
    shards = {"embedded_train_000001.bin": np.arange(50), "embedded_train_000002.bin": np.arange(30),
              "embedded_val_000000.bin": np.arange(20)}
    sha = {name: write_shard(out / name, t) for name, t in shards.items()}
    assert sha["embedded_val_000000.bin"] == sources.sha256_file(out / "embedded_val_000000.bin")
    splits = {s: {"tokens": 0, "documents": 1, "shards": {n: len(t) for n, t in shards.items() if f"_{s}_" in n},
                  "sha256": {n: sha[n] for n in shards if f"_{s}_" in n}} for s in ("train", "val")}
    meta = {"dataset": "embedded", "splits": splits,
            "config": config(dataset="embedded", val_every=8, source=None, shard_size=50)}
    (out / "meta.json").write_text(json.dumps(meta))
    return out, meta


def test_verify_names_every_kind_of_problem(made, capsys):
    out, meta = made
    assert prepare.verify(out) == []
    assert capsys.readouterr().out == f"{out}: all 3 shards intact (train 0 tokens / 1 docs in 2 shard(s), " \
                                      f"val 0 tokens / 1 docs in 1 shard(s))\n"
    write_shard(out / "embedded_train_000001.bin", np.arange(49))  # rewritten shorter, header and all
    write_shard(out / "other_train_000001.bin", np.arange(5))  # a stranger
    del meta["splits"]["train"]["sha256"]["embedded_train_000002.bin"]
    (out / "meta.json").write_text(json.dumps(meta))
    problems = prepare.verify(out)
    assert problems == ["embedded_train_000001.bin: holds 49 tokens, meta.json says 50",
                        "embedded_train_000002.bin: meta.json has no sha256 for it (made before they were recorded)",
                        "other_train_000001.bin: not made by the run that meta.json describes"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{out}: 3 problem(s) in 3 shard(s):"
    assert printed[-1] == f"rebuild with: python data/prepare.py embedded --out-dir '{out}' --shard-size 50 --force"
    (out / "embedded_val_000000.bin").write_bytes(b"\0" * 100)  # not a shard at all
    assert prepare.verify(out)[2] == ("embedded_val_000000.bin: 100 bytes is shorter than the 1024-byte header: "
                                      "the file is truncated or not a token shard")


def test_verify_an_unfinished_run_checks_what_it_wrote(made, capsys):
    out, meta = made
    (out / "meta.json").unlink()
    with pytest.raises(prepare.PrepareError, match=r"has no meta.json \(and no unfinished run\): nothing to verify; "
                                                  r"make it with python data/prepare.py"):
        prepare.verify(out)
    writers = {"train": {"shards": {"embedded_train_000001.bin": 50},
                         "sha256": {"embedded_train_000001.bin": meta["splits"]["train"]["sha256"]["embedded_train_000001.bin"]}}}
    (out / "progress.json").write_text(json.dumps({"config": meta["config"], "writers": writers, "saves": 1}))
    (out / "embedded_train_000002.bin").unlink()
    (out / "embedded_val_000000.bin").unlink()
    assert prepare.verify(out) == []
    assert capsys.readouterr().out == f"{out}: the 1 shard(s) written so far are intact; the run is unfinished: " \
                                      f"finish it with python data/prepare.py embedded --out-dir '{out}' --shard-size 50\n"


def fake_datasets(monkeypatch, fail_first=None):
    """A `datasets` whose load_dataset records its arguments and streams rows with a state."""
    calls = []

    class Rows:
        def __init__(self, kw):
            self.kw, self.state = kw, None

        def load_state_dict(self, state):
            self.state = state

        def __iter__(self):
            start = self.state["row"] if self.state else 0
            for i in range(start, 5):
                self.row = i + 1  # as datasets' own: the state after a row resumes at the next
                yield {"text": f"doc {i}"}

        def state_dict(self):
            return {"row": getattr(self, "row", 0)}

    def load_dataset(path, **kw):
        calls.append((path, kw))
        if fail_first and len(calls) == 1:
            raise fail_first
        return Rows(kw)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_the_hub_is_streamed_with_the_datasets_config(monkeypatch):
    calls = fake_datasets(monkeypatch)
    source = prepare.dataset_source(prepare.DATASETS["fineweb-10B"])
    assert source.where == "HuggingFaceFW/fineweb sample-10BT"
    assert [t for _, t in zip(range(3), source.read())] == ["doc 0", "doc 1", "doc 2"]
    assert calls[0] == ("HuggingFaceFW/fineweb", {"name": "sample-10BT", "split": "train", "streaming": True})
    assert list(source.read(3, (2, {"row": 2}))) == ["doc 3", "doc 4"]  # reopened at a snapshot of row 2


def test_a_hub_dataset_with_a_loading_script_falls_back_to_its_parquet_conversion(monkeypatch, capsys):
    calls = fake_datasets(monkeypatch, RuntimeError("Dataset scripts are no longer supported, but found openwebtext.py"))
    source = prepare.dataset_source(prepare.DATASETS["openwebtext"])
    assert calls[1] == ("Skylion007/openwebtext", {"name": None, "revision": "refs/convert/parquet", "split": "train",
                                                   "streaming": True})
    assert "has a loading script (unsupported by datasets>=4): using the hub's parquet conversion" in capsys.readouterr().out
    assert next(iter(source.read())) == "doc 0"
    calls = fake_datasets(monkeypatch, RuntimeError("Dataset scripts are no longer supported"))
    prepare.dataset_source(prepare.DATASETS["fineweb-10B"])  # its config is kept on the parquet branch
    assert calls[1] == ("HuggingFaceFW/fineweb", {"name": "sample-10BT", "revision": "refs/convert/parquet",
                                                  "split": "train", "streaming": True})
    calls = fake_datasets(monkeypatch, ValueError("something else"))
    with pytest.raises(prepare.PrepareError, match=r"^Skylion007/openwebtext: cannot open \(ValueError: something else\)"):
        prepare.dataset_source(prepare.DATASETS["openwebtext"])
    assert len(calls) == 1  # no fallback for other errors


@pytest.mark.parametrize("error, message", [
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 401})()})("401 Client Error"),
     r"^x/y: no such dataset, or no access to it \(HTTPError: 401 Client Error\); check the name, and for a gated "
     r"dataset log in \(huggingface-cli login, or HF_TOKEN\) and accept its terms on the dataset page$"),
    (type("GatedRepoError", (Exception,), {})("gated"), r"^x/y: no such dataset, or no access to it \(GatedRepoError: gated\)"),
    (type("RepositoryNotFoundError", (Exception,), {})("r"), r"^x/y: no such dataset, or no access to it \(Repository"),
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 403})()})("403"), r"^x/y: no such dataset"),
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 404})()})("404"), r"^x/y: no such dataset"),
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 405})()})("405"), r"^x/y: cannot open"),
    (type("DatasetNotFoundError", (Exception,), {})("d" * 400), rf"^x/y: no such dataset, or no access to it "
                                                                rf"\(DatasetNotFoundError: {'d' * 300}\); check"),
    (ConnectionError("Couldn't reach 'x/y' on the Hub (OfflineModeIsEnabled)"),
     r"^could not reach the Hugging Face hub for x/y \(Couldn't reach .*\)\. Without hub access, download its parquet "
     r"files elsewhere and pass them with --source, or use the offline corpus: python data/prepare.py embedded$"),
    (ValueError("bad magic"), r"^x/y: cannot open \(ValueError: bad magic\); check that the files are complete and in the "
                              r"format their extension says$"),
])
def test_permanent_hub_errors_say_what_to_do(error, message):
    assert isinstance(prepare._permanent(error, "x/y"), prepare.PrepareError)
    with pytest.raises(prepare.PrepareError, match=message):
        raise prepare._permanent(error, "x/y")


def test_verify_goes_on_past_each_problem_and_reads_old_meta_files(made):
    """A missing shard and a broken header do not stop the check of the shards after them; a
    meta.json from before sha256s were recorded (no "sha256" at all) is read; a stale, damaged
    progress.json beside a complete run does not matter."""
    out, meta = made
    (out / "embedded_train_000001.bin").unlink()
    (out / "embedded_train_000002.bin").write_bytes(b"\0" * 10)
    write_shard(out / "embedded_val_000000.bin", np.arange(1, 21))  # same length, other tokens
    assert prepare.verify(out) == [
        "embedded_train_000001.bin: missing",
        "embedded_train_000002.bin: 10 bytes is shorter than the 1024-byte header: the file is truncated or not a "
        "token shard",
        "embedded_val_000000.bin: changed (its sha256 differs from the one recorded when it was written)"]
    (out / "progress.json").write_text("{")
    for split in meta["splits"].values():
        del split["sha256"]
    (out / "meta.json").write_text(json.dumps(meta))
    assert prepare.verify(out)[-1] == "embedded_val_000000.bin: meta.json has no sha256 for it (made before they " \
                                      "were recorded)"


def test_parse_faults():
    """PREPARE_FAULT, the resume tests' interruptions: kind@event:n[xtimes], comma-separated."""
    assert prepare.parse_faults("") == {}
    assert prepare.parse_faults("kill@save:2,error@row:40x3") == {("save", 2): ("kill", 1), ("row", 40): ("error", 3)}


class Flaky:
    """open_rows that fails with a connection reset `fails` times, then opens."""
    def __init__(self, fails):
        self.fails = fails

    def __call__(self, state):
        if self.fails:
            self.fails -= 1
            raise ConnectionResetError(104, "Connection reset by peer " + "x" * 300)
        return iter([{"text": "a"}])


@pytest.mark.parametrize("base, waits", [(2.0, [2, 4, 8, 16, 32]), (50.0, [50, 100, 120, 120, 120])])
def test_transient_errors_wait_twice_as_long_each_time_up_to_two_minutes(monkeypatch, capsys, base, waits):
    slept = []
    monkeypatch.setattr(prepare, "RETRY_WAIT", base)
    monkeypatch.setattr(prepare.time, "sleep", slept.append)
    prepare.DatasetSource(Flaky(5), "x/y")  # five resets, then it opens
    assert slept == waits
    lines = capsys.readouterr().out.splitlines()
    reset = "[Errno 104] Connection reset by peer " + "x" * 300
    assert lines[0] == f"x/y: ConnectionResetError: {reset[:200]}; retry 1/5 in {waits[0]:g}s"  # cut at 200
    assert lines[-1].endswith(f"; retry 5/5 in {waits[-1]:g}s")
    with pytest.raises(prepare.PrepareError, match=r"^x/y: could not open it after 5 retries \(ConnectionResetError: "
                                                   r"\[Errno 104\] Connection reset by peer x+\); the progress up to "
                                                   r"the last complete shard is saved: run the same command again to "
                                                   r"resume$"):
        prepare.DatasetSource(Flaky(6), "x/y")


class Breaks:
    """Rows that read fine, then an error (an open_rows for DatasetSource)."""
    def __init__(self, error):
        self.error = error

    def __call__(self, state):
        return self

    def __iter__(self):
        yield {"text": "first"}
        raise self.error


@pytest.mark.parametrize("error, message", [
    (ValueError("bad row group"), r"^x/y: cannot read the next row \(ValueError: bad row group\); check that the files "
                                  r"are complete and in the format their extension says$"),
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 404})()})("gone"),
     r"^x/y: no such dataset, or no access to it \(HTTPError: gone\)"),
])
def test_an_error_in_the_middle_of_the_stream_is_named(error, message):
    """A malformed row says where and which error; a hub error that will not go away says so."""
    texts = prepare.DatasetSource(Breaks(error), "x/y").read()
    assert next(texts) == "first"
    with pytest.raises(prepare.PrepareError, match=message):
        next(texts)


def test_local_files_resume_from_a_snapshot_and_keep_few_of_them(monkeypatch, tmp_path):
    """The real `datasets` streaming path on two local jsonl files: snapshots every SNAPSHOT rows,
    none kept further back than the look-behind needs, and a source opened at a snapshot gives
    the rows from there on."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(prepare.DatasetSource, "SNAPSHOT", 8)
    files = []
    for k in range(2):
        path = tmp_path / f"{k}.jsonl"
        path.write_text("".join(json.dumps({"text": f"doc {50 * k + i}"}) + "\n" for i in range(50)))
        files.append(str(path))
    source = prepare.dataset_source(prepare.DATASETS["openwebtext"], "json", files, lookbehind=16)
    assert source.where == "--source (2 json files)"
    texts = []
    for text in source.read():
        texts.append(text)
        rows = [r for r, _ in source.snapshots]
        at = len(texts)
        assert all(r % 8 == 0 for r in rows) and rows == sorted(set(rows))  # every 8th row, each once
        assert len(rows) == 1 or rows[1] > at - source.lookbehind  # one snapshot at most that far back
        # workers may hold the 16 rows before `at`: a snapshot at or before them is kept, and none older
        # than the look-behind, two snapshots of margin and the rows read since the last snapshot
        assert rows[0] <= max(at - 16, 0) and at - rows[0] < 16 + 2 * 8 + 8
    assert texts == [f"doc {i}" for i in range(100)]
    row, state = source.state_at(85)
    assert row == 80 and state is not None and source.state_at(80)[0] == 80 and source.state_at(79)[0] == 72
    again = prepare.dataset_source(prepare.DATASETS["openwebtext"], "json", files)
    assert list(again.read(85, (row, state))) == [f"doc {i}" for i in range(85, 100)]
    assert prepare.dataset_source(prepare.DATASETS["openwebtext"], "json", files[:1]).where == f"--source {files[0]}"


def test_local_files_that_cannot_be_opened_say_which(monkeypatch):
    fake_datasets(monkeypatch, ValueError("not a parquet file"))
    with pytest.raises(prepare.PrepareError, match=r"^--source a.parquet: cannot open as parquet \(ValueError: not a "
                                                   r"parquet file\); check that the files are complete"):
        prepare.dataset_source(prepare.DATASETS["openwebtext"], "parquet", ["a.parquet"])


class Resets:
    """A source of 20 rows (with a state, as datasets' streams have) whose reading is reset 5
    times in a row at each row of `fails` (row -> resets)."""
    def __init__(self, fails):
        self.fails = dict(fails)

    def __call__(self, state):
        stream = self

        class Rows:
            def __init__(self):
                self.at = state["at"] if state else 0

            def state_dict(self):
                return {"at": self.at}

            def __iter__(self):
                while self.at < 20:
                    if stream.fails.get(self.at):
                        stream.fails[self.at] -= 1
                        raise ConnectionResetError(104, "Connection reset by peer")
                    self.at += 1
                    yield {"text": f"doc {self.at - 1}"}
        return Rows()


@pytest.mark.parametrize("fails", [{3: 5, 12: 5}, {0: 5}])
def test_every_row_that_fails_gets_all_its_retries(monkeypatch, fails):
    """Five resets in a row at a row (the first one too) are retried; a sixth would stop the run."""
    monkeypatch.setattr(prepare.time, "sleep", lambda s: None)
    monkeypatch.setattr(prepare.DatasetSource, "SNAPSHOT", 4)
    assert list(prepare.DatasetSource(Resets(fails), "x/y").read()) == [f"doc {i}" for i in range(20)]


def test_source_paths_resolve_to_data_files_of_one_format(tmp_path):
    """--source takes files, directories (their data files only, any depth) and globs (`**`
    crosses directories); the files must all be of one format the `datasets` builders read."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.jsonl", "d/sub/b.jsonl", "d/README.v2.md", "d/sub/c.txt", "x.csv", "y.parquet"):
        (tmp_path / name).write_text("{}\n")
    d = tmp_path / "d"
    assert prepare.resolve_source([str(d / "sub" / "b.jsonl")]) == ("json", [str(d / "sub" / "b.jsonl")])
    glob_all = prepare.resolve_source([str(d / "**" / "*.jsonl")])  # a.jsonl at depth 0, b.jsonl at depth 1
    assert glob_all == ("json", [str(d / "a.jsonl"), str(d / "sub" / "b.jsonl")])
    with pytest.raises(prepare.PrepareError, match=r"^--source: files must all be one of parquet, json/jsonl or txt; "
                                                   r"got \['.jsonl', '.txt', '.v2.md'\]$"):
        prepare.resolve_source([str(d / "**" / "*.*")])  # README.v2.md among them
    (tmp_path / "d" / "sub" / "c.txt").unlink()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("")
    with pytest.raises(prepare.PrepareError, match=rf"^--source {re.escape(str(tmp_path / 'docs'))}: no such file, or no "
                                                   r"\.parquet/\.jsonl/\.json/\.jsonl\.gz/\.json\.gz/\.txt files in it$"):
        prepare.resolve_source([str(tmp_path / "docs")])
    assert prepare.resolve_source([str(d)]) == ("json", [str(d / "a.jsonl"), str(d / "sub" / "b.jsonl")])  # no README
    with pytest.raises(prepare.PrepareError, match=r"got \['.csv'\]$"):
        prepare.resolve_source([str(tmp_path / "x.csv")])  # one file, of no format we read
    with pytest.raises(prepare.PrepareError, match=r"got \['.jsonl', '.parquet'\]$"):
        prepare.resolve_source([str(d / "a.jsonl"), str(tmp_path / "y.parquet")])  # two formats


def test_the_hub_source_keeps_the_look_behind_it_is_given(monkeypatch):
    """prepare() sizes the snapshots kept to its workers (workers * chunksize * 4 rows in flight)."""
    fake_datasets(monkeypatch)
    far = prepare.dataset_source(prepare.DATASETS["fineweb-10B"], lookbehind=100_000)
    near = prepare.dataset_source(prepare.DATASETS["fineweb-10B"], lookbehind=16)
    assert (far.lookbehind, near.lookbehind) == (100_000 + 512, 16 + 512)  # + 2 snapshots of 256 rows


def test_a_shard_fault_fires_after_that_many_shards_and_looks_like_a_real_reset(monkeypatch, tmp_path):
    """PREPARE_FAULT's "error@shard:2" (the hook the resume tests' interruptions use) after the 2nd shard on disk,
    raising what a dropped connection raises (errno ECONNRESET, so the retry message is the real one)."""
    monkeypatch.setattr(prepare, "_FAULTS", prepare.parse_faults("error@shard:2"))
    w = prepare.ShardWriter(tmp_path, 2, lambda i: f"t_train_{i:06d}.bin")
    assert w.flush() is False and not list(tmp_path.iterdir())  # nothing to write: no shard, and it says so
    w.add(np.array([1, 2, 3], dtype=np.uint16))  # one shard written, one token waiting
    with pytest.raises(ConnectionResetError) as e:
        w.add(np.array([4], dtype=np.uint16))
    assert e.value.errno == errno.ECONNRESET and "PREPARE_FAULT at shard 2" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_train_000000.bin", "t_train_000001.bin"]


def test_progress_rewrites_a_split_only_when_its_tokens_changed_and_keeps_only_what_it_names(monkeypatch, tmp_path):
    """A split that fills slowly (openwebtext's validation) is not written again at every save; an
    empty one writes no file; a replaced partial file is deleted, and clear() deletes them all."""
    written, write_atomic = [], prepare.write_atomic
    monkeypatch.setattr(prepare, "write_atomic", lambda path, data: (written.append(path.name), write_atomic(path, data)))
    writers = {s: prepare.ShardWriter(tmp_path, 4, lambda i, s=s: f"t_{s}_{i:06d}.bin") for s in ("train", "val")}
    progress = prepare.Progress(tmp_path)
    on_disk = lambda: sorted(p.name for p in tmp_path.iterdir())  # noqa: E731

    writers["train"].add(np.array([1, 2, 3], dtype=np.uint16))
    progress.save({"doc": 1}, writers)
    assert written == ["progress-train-000001.tokens", "progress.json"]  # val holds nothing yet
    writers["val"].add(np.array([9], dtype=np.uint16))
    progress.save({"doc": 2}, writers)
    assert written[2:] == ["progress-val-000002.tokens", "progress.json"]  # train unchanged: not rewritten
    writers["train"].add(np.array([4, 5], dtype=np.uint16))  # a full shard, one token over
    progress.save({"doc": 3}, writers)
    assert written[4:] == ["progress-train-000003.tokens", "progress.json"]
    assert on_disk() == ["progress-train-000003.tokens", "progress-val-000002.tokens", "progress.json",
                         "t_train_000000.bin"]  # progress-train-000001 replaced, so gone
    assert json.loads((tmp_path / "progress.json").read_text())["writers"]["val"]["partial"]["file"] == \
        "progress-val-000002.tokens"
    progress.clear()
    assert on_disk() == ["t_train_000000.bin"]
    assert writers["val"].flush() is True and on_disk() == ["t_train_000000.bin", "t_val_000000.bin"]


class Clock:
    """Stands in for time.time(): `step` seconds pass between readings."""
    def __init__(self, start, step):
        self.now, self.step = start, step

    def __call__(self):
        self.now += self.step
        return self.now


class Bar:
    """Stands in for tqdm: records the progress bar's total, where it starts, and its updates."""
    def __init__(self, total=None, initial=0, **kwargs):
        self.total, self.initial, self.updates = total, initial, []

    def update(self, n):
        self.updates.append(n)

    def close(self):
        pass


def fake_tqdm(monkeypatch):
    """prepare.py's progress bars from now on, as Bars, in the order made."""
    bars = []
    monkeypatch.setattr(prepare, "tqdm", lambda **kw: bars.append(Bar(**kw)) or bars[-1])
    return bars


def test_prepare_from_the_hub_says_where_from_and_records_it(monkeypatch, tmp_path, capsys):
    """prepare() on the hub path (the stand-in `datasets`: rows "doc 0" .. "doc 4", 3 tokens each
    with the separator) with its defaults (gpt2, no Wikipedia, no --force): what it prints, what
    meta.json records, the progress bar's total (the dataset card's 10B tokens), a --out-dir whose
    parents do not exist yet, and a second run finding it done."""
    calls = fake_datasets(monkeypatch)
    bars = fake_tqdm(monkeypatch)
    monkeypatch.setattr(prepare, "time", types.SimpleNamespace(time=Clock(1000, 0.1)))
    out = tmp_path / "new" / "fineweb"
    meta = prepare.prepare("fineweb-10B", out_dir=out, shard_size=8, workers=1)
    assert calls == [("HuggingFaceFW/fineweb", {"name": "sample-10BT", "split": "train", "streaming": True})]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tokenizer: tiktoken gpt2 (offline fallback: mlx-whisper==0.4.3, MIT, ")
    assert lines[1:4] == ["source: https://huggingface.co/datasets/HuggingFaceFW/fineweb (sample-10BT), streamed",
                          "licence: ODC-By 1.0, subject to Common Crawl's terms of use",
                          f"wrote {out}: train 7 tokens / 2 docs in 1 shard(s), val 8 tokens / 3 docs in 1 shard(s)"]
    assert lines[4].startswith("tokenized 15 tokens in ") and len(lines) == 5
    assert float(lines[4].rpartition("total wall time ")[2][:-2]) < 10  # a tenth of a second per clock reading
    assert meta["tokens_per_second"] == round(15 / meta["seconds"])  # the clock's seconds are whole tenths
    assert [b.total for b in bars] == [10_000_000_000]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["sources"] == {"hub": "HuggingFaceFW/fineweb", "config": "sample-10BT", "files": None}
    assert meta["config"] == {"dataset": "fineweb-10B", "shard_size": 8, "val_every": 0,
                              "source": "HuggingFaceFW/fineweb", "hub_config": "sample-10BT",
                              "with_wikipedia": False, "tokenizer": "gpt2"}
    assert (meta["tokenizer"], meta["vocab_size"], meta["separator"]) == ("gpt2", 50257, 50256)
    assert meta["format"] == "llm.c .bin: 256 x int32 header [20240520, 1, n_tokens, 0...], then n_tokens x uint16"
    assert meta["validation"] == "the first shard (llm.c's convention)" and meta["workers"] == 1
    assert meta["licence"] == "ODC-By 1.0, subject to Common Crawl's terms of use"
    assert meta["created"].endswith("+00:00") and isinstance(meta["seconds"], float)  # UTC; seconds to 1/100
    assert meta["seconds"] == round(meta["seconds"], 2)
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000001.bin", "fineweb_val_000000.bin",
                                                     "meta.json"]
    assert prepare.prepare("fineweb-10B", out_dir=out, shard_size=8, workers=1) == meta  # done: not rebuilt
    assert capsys.readouterr().out.startswith(f"{out} is up to date (train 7 tokens / 2 docs in 1 shard(s), val 8 tokens / 3 ")
    assert len(calls) == 1


def test_prepare_from_local_files_says_which(tmp_path, capsys, monkeypatch):
    """Local files: the first one named (and "..." when there are more), no token count to show."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    bars = fake_tqdm(monkeypatch)
    for k in range(2):
        (tmp_path / f"{k}.jsonl").write_text("".join(json.dumps({"text": f"doc {3 * k + i}"}) + "\n" for i in range(3)))
    for n, shown in ((1, f"{tmp_path / '0.jsonl'}"), (2, f"{tmp_path / '0.jsonl'} ...")):
        source = [str(tmp_path / f"{k}.jsonl") for k in range(n)]
        prepare.prepare("openwebtext", source, tmp_path / f"out{n}", shard_size=4, workers=1, val_every=2)
        assert f"source: {n} local json file(s): {shown}\n" in capsys.readouterr().out
    assert [b.total for b in bars] == [None, None]


def test_prepare_refuses_bad_options_naming_the_fix(tmp_path):
    with pytest.raises(prepare.PrepareError, match=r"^--shard-size must be >= 1 and --val-every >= 0$"):
        prepare.prepare("openwebtext", out_dir=tmp_path, shard_size=0)
    with pytest.raises(prepare.PrepareError, match=r"^--source is for the hub datasets \(fineweb\*, openwebtext\); "
                                                   r"embedded has fixed sources$"):
        prepare.prepare("embedded", ["x.txt"], out_dir=tmp_path)
    with pytest.raises(prepare.PrepareError, match=r"^--tokenizer gpt3: unknown; choose one of gpt2, bytes$"):
        prepare.prepare("embedded", out_dir=tmp_path, tokenizer="gpt3")
    with pytest.raises(prepare.PrepareError, match=r"^--with-wikipedia only applies to the embedded dataset$"):
        prepare.prepare("openwebtext", out_dir=tmp_path, with_wikipedia=True)


def test_an_unfinished_run_of_another_command_is_named_change_by_change(monkeypatch, tmp_path):
    """... and the same command resumes, reopening the dataset at the snapshot saved (row 2)."""
    calls = fake_datasets(monkeypatch)
    monkeypatch.setattr(prepare.DatasetSource, "SNAPSHOT", 2)
    monkeypatch.setattr(prepare, "_FAULTS", prepare.parse_faults("error@save:1"))  # stops at the first save
    with pytest.raises(ConnectionResetError):
        prepare.prepare("fineweb-10B", out_dir=tmp_path, shard_size=8, workers=1)
    saved = json.loads((tmp_path / "progress.json").read_text())
    assert saved["config"]["shard_size"] == 8
    assert (saved["doc"], saved["row"], saved["offset"]) == (2, 2, 2)  # 8 tokens: docs 0, 1 and 2 of doc 2's 3
    with pytest.raises(prepare.PrepareError, match=rf"^{re.escape(str(tmp_path))} holds an unfinished run of another command "
                                                   r"\(shard_size 8 -> 4, val_every 0 -> 2\); run that command again "
                                                   r"to finish it, or pass --force to discard it and start afresh$"):
        prepare.prepare("fineweb-10B", out_dir=tmp_path, shard_size=4, workers=1, val_every=2)
    monkeypatch.setattr(prepare, "_FAULTS", {})
    meta = prepare.prepare("fineweb-10B", out_dir=tmp_path, shard_size=8, workers=1)
    assert len(calls) == 3 and meta["splits"]["train"]["tokens"] == 7  # opened, opened again, reopened at row 2


def test_prepare_defaults_out_dir_workers_and_smallest_shard(monkeypatch, tmp_path, capsys):
    """Without --out-dir the directory is the catalog's for the dataset and tokenizer; without
    --workers, every core (one where the count is unknown); a shard of one token is allowed."""
    fake_datasets(monkeypatch)
    monkeypatch.setattr(prepare.os, "cpu_count", lambda: 3)
    asked = []
    monkeypatch.setattr(prepare, "default_out_dir", lambda dataset, tokenizer: asked.append((dataset, tokenizer))
                        or tmp_path / f"{dataset}-{tokenizer}")
    meta = prepare.prepare("openwebtext", shard_size=1, tokenizer="bytes")  # every 2000th document is val: doc 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "tokenizer: bytes (UTF-8, 256 symbols; NUL separates documents)",
        "source: https://huggingface.co/datasets/Skylion007/openwebtext (default), streamed"]  # no hub config
    assert asked == [("openwebtext", "bytes")] and meta["workers"] == 3
    assert (meta["splits"]["val"]["tokens"], len(meta["splits"]["train"]["shards"])) == (6, 24)  # NUL + "doc i"
    assert (tmp_path / "openwebtext-bytes" / "openwebtext_train_000024.bin").exists()
    monkeypatch.setattr(prepare.os, "cpu_count", lambda: None)
    assert prepare.prepare("openwebtext", out_dir=tmp_path / "o", shard_size=10)["workers"] == 1


def test_the_command_line(monkeypatch, tmp_path, capsys):
    """What main() passes on: argparse refuses an unknown dataset or tokenizer (exit 2, naming the
    choices), --source may be given twice, the defaults are 100M-token shards and the dataset's own
    validation split; --verify looks in the catalog's directory; Ctrl-C says how to resume."""
    for argv in (["fineweb"], ["openwebtext", "--tokenizer", "gpt3"]):
        with pytest.raises(SystemExit) as e:
            prepare.main(argv)
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for k in range(2):
        (tmp_path / f"{k}.jsonl").write_text(json.dumps({"text": f"doc {k}"}) + "\n")
    meta = prepare.main(["openwebtext", "--source", str(tmp_path / "0.jsonl"), "--source", str(tmp_path / "1.jsonl"),
                         "--out-dir", str(tmp_path / "o"), "--workers", "1", "--val-every", "2"])
    assert meta["sources"]["files"] == [str(tmp_path / "0.jsonl"), str(tmp_path / "1.jsonl")]
    fake_datasets(monkeypatch)
    meta = prepare.main(["openwebtext", "--out-dir", str(tmp_path / "hub"), "--workers", "1"])
    assert (meta["config"]["shard_size"], meta["config"]["val_every"]) == (100_000_000, 2000)
    asked = []
    monkeypatch.setattr(prepare, "default_out_dir", lambda dataset, tokenizer: asked.append((dataset, tokenizer))
                        or tmp_path / "hub")
    assert prepare.main(["openwebtext", "--tokenizer", "bytes", "--verify"]) == meta
    assert asked[0] == ("openwebtext", "bytes")  # (then command_of asks for meta.json's own, gpt2)

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare, "prepare", interrupted)
    with pytest.raises(SystemExit, match=rf"^interrupted: {re.escape(str(tmp_path / 'hub'))} keeps the shards written so far; run the "
                                         r"same command again to resume$"):
        prepare.main(["openwebtext"])


def test_a_damaged_progress_file_says_so(tmp_path):
    (tmp_path / "progress.json").write_text('{"doc": 3}')  # no "saves": not one prepare.py wrote
    with pytest.raises(prepare.PrepareError, match=rf"^{re.escape(str(tmp_path / 'progress.json'))} is damaged \('saves'\); pass "
                                                   r"--force to start afresh$"):
        prepare.Progress(tmp_path).load()


def test_a_nul_first_in_a_document_is_refused_for_bytes(monkeypatch):
    monkeypatch.setattr(prepare, "_enc", None)  # this process's tokenizer, put back after
    prepare._init_worker("bytes")
    with pytest.raises(prepare.PrepareError, match="a document holds a NUL byte"):
        prepare.tokenize("\0 leading")


def test_the_look_behind_is_the_rows_the_tokenizing_workers_may_hold(monkeypatch, tmp_path):
    """The source keeps snapshots as far back as the rows the workers may hold: workers x 16 (rows
    sent at a time) x 4 (the in-flight bound), here 3 x 16 x 4 = 192."""
    fake_datasets(monkeypatch)
    sources = []
    real = prepare.dataset_source
    monkeypatch.setattr(prepare, "dataset_source", lambda *a, **kw: sources.append(real(*a, **kw)) or sources[-1])
    prepare.prepare("openwebtext", out_dir=tmp_path, workers=3, shard_size=4)
    assert sources[0].lookbehind == 192 + 512  # + 2 snapshots of 256 rows


def test_the_embedded_corpus_says_where_each_file_came_from(monkeypatch, tmp_path, capsys):
    """The embedded path with stand-in pinned files: --with-wikipedia passed on, each file printed
    and recorded in meta.json (project, version, file, sha256, url, licence)."""
    pin = types.SimpleNamespace(project="bible", version="1.0", filename="b.whl", sha256="ab" * 32,
                                page="https://pypi.org/project/bible/1.0/", licence="PD")
    asked = []
    monkeypatch.setattr(prepare.sources, "embedded_pins", lambda wiki: asked.append(wiki) or [pin])
    monkeypatch.setattr(prepare.sources, "embedded_documents", lambda wiki: asked.append(wiki) or [
        types.SimpleNamespace(title=f"Book {i}", text=f"doc {i}") for i in range(5)])
    meta = prepare.prepare("embedded", out_dir=tmp_path, with_wikipedia=True, workers=1, val_every=2, shard_size=4)
    assert asked == [True, True]
    assert capsys.readouterr().out.splitlines()[1:5] == ["source: bible==1.0 b.whl", f"  sha256 {'ab' * 32}",
                                                         "  https://pypi.org/project/bible/1.0/", "  licence: PD"]
    assert meta["sources"] == [{"project": "bible", "version": "1.0", "file": "b.whl", "sha256": "ab" * 32,
                                "url": "https://pypi.org/project/bible/1.0/", "licence": "PD"}]
    assert meta["val_documents"] == ["Book 0", "Book 2", "Book 4"] and meta["config"]["with_wikipedia"] is True


@pytest.mark.parametrize("save, where, written", [(1, (3, 3, 0), 12), (5, (9, 9, 0), 36)])
def test_a_run_stopped_where_a_document_ends_with_its_shard_resumes_at_the_next(monkeypatch, tmp_path, save, where,
                                                                              written):
    """Documents of 4 tokens (a NUL and 3 bytes), every 2nd to validation, in shards of 8: document 2
    ends exactly with the first validation shard, so the progress saved there points at document 3,
    offset 0, with train's first document waiting in a partial file. The resumed run starts its
    progress bar at the 12 tokens written and adds its time to the first run's; the result is
    that of a run never stopped. The 5th save is the last, after validation's last (shorter) shard:
    it points past the last document."""
    texts = [f"{i:03d}" for i in range(9)]
    bars = fake_tqdm(monkeypatch)

    def go(out, step):
        monkeypatch.setattr(prepare, "time", types.SimpleNamespace(time=Clock(10**6, step)))
        out.mkdir(exist_ok=True)
        progress = prepare.Progress(out)
        return prepare.write_splits(prepare.ListSource(texts), out, "t", 8, 2, 1, 1, None, "bytes",
                                    progress, progress.load(), {"test": 1})
    straight = go(tmp_path / "a", 1000)
    assert straight["seconds"] % 1000 == 0  # what the clock says, nothing added
    monkeypatch.setitem(prepare._FAULTS, ("save", save), ("error", 1))
    with pytest.raises(ConnectionResetError):
        go(tmp_path / "b", 1000)
    saved = json.loads((tmp_path / "b" / "progress.json").read_text())
    assert (saved["doc"], saved["row"], saved["offset"]) == where
    assert 1000 <= saved["seconds"] < 10**5
    resumed = go(tmp_path / "b", 1)
    assert bars[-1].initial == written and sum(bars[-1].updates) == 36 - written  # 9 documents of 4 tokens
    assert {s: (d["documents"], list(d["shards"].values())) for s, d in straight.items() if s != "seconds"} == {
        "val": (5, [8, 8, 4]), "train": (4, [8, 8])}  # documents 0, 2, .., 8 to validation
    assert saved["seconds"] < resumed["seconds"] < saved["seconds"] + 100
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in straight.items() if k != "seconds"}
    for name in straight["train"]["shards"] | straight["val"]["shards"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_worker_pool_reads_ahead_a_bounded_number_of_documents(monkeypatch):
    """workers processes (each loading the tokenizer in its initializer), fed at most
    workers x chunksize x 4 documents ahead of the consumer: 2 x 4 x 4 = 32."""
    monkeypatch.setattr(prepare, "_enc", None)  # a worker must not rely on this process's tokenizer
    pools, read, real_pool = [], [], prepare.mp.Pool
    monkeypatch.setattr(prepare.mp, "Pool", lambda *a, **kw: pools.append((a, kw)) or real_pool(*a, **kw))

    def texts():
        for i in range(1000):
            read.append(i)
            yield f"doc {i}"
    gen = prepare.tokenized(texts(), workers=2, chunksize=4, tokenizer="bytes")
    assert next(gen)[1:].tolist() == list(b"doc 0")
    deadline = time.time() + 30
    while len(read) < 17 and time.time() < deadline:  # the feeding thread runs ahead...
        time.sleep(0.05)
    time.sleep(0.5)  # ... as far as it may
    assert 17 <= len(read) <= 34  # the one taken, 32 in flight, one drawn and waiting for room; it did read ahead
    gen.close()
    assert pools == [((2,), {"initializer": prepare._init_worker, "initargs": ("bytes",)})]


def test_each_document_in_flight_holds_one_place_of_the_bound(monkeypatch):
    """The bound counts documents: the feeding thread takes one place per document (waiting while
    none is free) and the consumer gives one back per token array. Taking every free place for one
    document would leave the others to wait out the 0.1 s timeout each: 10 documents a second."""
    made = []

    class Counting(threading.BoundedSemaphore):
        def __init__(self, value):
            super().__init__(value)
            self.size, self.taken = value, 0
            made.append(self)

        def acquire(self, blocking=True, timeout=None):
            got = super().acquire(blocking, timeout)
            self.taken += got
            return got

    monkeypatch.setattr(prepare.threading, "BoundedSemaphore", Counting)
    texts = [f"doc {i}" for i in range(40)]
    out = list(prepare.tokenized(iter(texts), workers=2, chunksize=2, tokenizer="bytes"))
    assert [bytes(t[1:].tolist()).decode() for t in out] == texts
    [bound] = made
    assert (bound.size, bound.taken) == (2 * 2 * 4, 40)


def test_an_empty_train_split_says_which_option_to_change(tmp_path):
    progress = prepare.Progress(tmp_path)
    with pytest.raises(prepare.PrepareError, match=r"^the train split is empty \(3 documents with --val-every 1: give "
                                                   r"more documents or a smaller --val-every\)$"):
        prepare.write_splits(prepare.ListSource(["a", "b", "c"]), tmp_path, "t", 8, 1, 1, 1, None, "bytes", progress,
                             None, {})


def test_a_full_disk_and_a_progress_file_without_its_command(monkeypatch, tmp_path):
    """The disk-full message sizes a shard (625 tokens x 2 bytes = 1.25e-6 GB, printed to two
    digits); a progress.json that names no command (hand-edited) is another command's."""
    fake_datasets(monkeypatch)

    def full(path, tokens):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(prepare, "write_shard", full)
    with pytest.raises(prepare.PrepareError, match=r"free space \(a shard takes 1\.3e-06 GB\) and run the same"):
        prepare.prepare("fineweb-10B", out_dir=tmp_path / "full", shard_size=625, workers=1)
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "progress.json").write_text('{"saves": 1}')
    with pytest.raises(prepare.PrepareError, match=r"holds an unfinished run of another command \(dataset None -> "
                                                   r"'fineweb-10B', shard_size None -> 8, "):
        prepare.prepare("fineweb-10B", out_dir=tmp_path / "edited", shard_size=8, workers=1)


@pytest.mark.parametrize("row", [0, 1, 3])
def test_a_resume_from_a_row_older_than_every_snapshot_starts_at_that_row(monkeypatch, row):
    """After more rows than the look-behind (a run of empty documents: read, none written), the row a
    save records can be older than every snapshot still kept: resuming there must start at the very
    beginning and skip forward to exactly that row's text."""
    monkeypatch.setattr(prepare.DatasetSource, "SNAPSHOT", 4)
    source = prepare.DatasetSource(Resets({}), "x/y", lookbehind=0)   # keeps 2 snapshots of 4 rows
    assert list(source.read()) == [f"doc {i}" for i in range(20)]
    assert min(r for r, _ in source.snapshots) > 3   # every snapshot kept is past the rows asked for
    snapshot = source.state_at(row)
    again = prepare.DatasetSource(Resets({}), "x/y", lookbehind=0)
    assert list(again.read(row, tuple(snapshot))) == [f"doc {i}" for i in range(row, 20)]
