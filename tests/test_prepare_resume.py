"""data/prepare.py after an interruption: kill -9 at chosen points, hub errors, a full disk.
The resumed run's shards must be byte-identical to an uninterrupted run's, meta.json equal
apart from its timings; --verify finds damaged shards; another command is refused."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import prepare
from data.shards import read_shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMINGS = ("created", "seconds", "tokens_per_second", "workers")  # how it was made, not what
WORDS = ("the of and to in is was that for on with as by at from his her they this which one all were "
         "Ünïcödé 世界 🙂 <|endoftext|> lorem ipsum dolor sit amet light night river stone").split()


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the source's snapshot every 8 rows, not 256: so that these small sources resume from the
    # `datasets` state of a later file/row group, not from their start
    monkeypatch.setattr(prepare.DatasetSource, "SNAPSHOT", 8)


def make_docs(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 120)))) for _ in range(n)]


@pytest.fixture(scope="module")
def parquet_src(tmp_path_factory):
    """3 parquet files of 40 documents in row groups of 16, one empty text among them."""
    import pyarrow as pa  # a dependency of datasets: required, so never skipped
    import pyarrow.parquet as pq
    src = tmp_path_factory.mktemp("parquet")
    for k in range(3):
        docs = make_docs(40, k)
        if k == 1:
            docs[7] = ""  # an empty row: skipped, but it still counts as a row of the source
        pq.write_table(pa.table({"text": docs, "id": [f"{k}-{i}" for i in range(40)]}), src / f"{k:03d}.parquet",
                       row_group_size=16)
    return src


@pytest.fixture(scope="module")
def jsonl_src(tmp_path_factory):
    path = tmp_path_factory.mktemp("jsonl") / "owt.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_docs(90, 7)))
    return path


def run(args, fault=None, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREPARE_RETRY_WAIT": "0.01"}
    env.pop("PREPARE_FAULT", None)
    if fault:
        env["PREPARE_FAULT"] = fault
    proc = subprocess.run([sys.executable, "data/prepare.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_forked(args, fault):
    """prepare.main(args) in a forked child (no interpreter start-up: fast) with PREPARE_FAULT's
    interruption; returns how the child ended: -9 for killed."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            prepare._FAULTS.clear()
            prepare._FAULTS.update(prepare.parse_faults(fault))
            sys.stdout = sys.stderr = open(os.devnull, "w")
            prepare.main(args)
        except BaseException:  # noqa: BLE001 - the parent looks at the exit code only
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def snapshot(out):
    """Every file of a prepared directory (bytes), and meta.json without its timings."""
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    return files, {k: v for k, v in meta.items() if k not in TIMINGS}


CASES = {  # name: (dataset and options, where the first run is killed)
    "parquet-before-first-shard": ("fineweb", "kill@row:1"),  # while the validation shard fills
    "parquet-mid-shard": ("fineweb", "kill@row:57"),
    "parquet-after-shard-boundary": ("fineweb", "kill@save:6"),
    "parquet-shard-written-not-saved": ("fineweb", "kill@shard:4"),
    "parquet-2-workers": ("fineweb-2", "kill@save:6"),
    "jsonl-val-every-after-boundary": ("owt", "kill@save:5"),  # the other split's tokens are in a partial file
    "jsonl-val-every-mid-shard": ("owt", "kill@row:60"),
    "bytes-mid-shard": ("bytes", "kill@row:50"),
}


def command(kind, parquet_src, jsonl_src, out):
    if kind.startswith("fineweb"):
        workers = "2" if kind.endswith("-2") else "1"
        return ["fineweb-10B", "--source", str(parquet_src), "--out-dir", str(out), "--shard-size", "300",
                "--workers", workers]
    if kind == "owt":
        return ["openwebtext", "--source", str(jsonl_src), "--out-dir", str(out), "--val-every", "4",
                "--shard-size", "200", "--workers", "1"]
    return ["fineweb-edu-10B", "--source", str(parquet_src), "--out-dir", str(out), "--tokenizer", "bytes",
            "--shard-size", "1500", "--val-every", "5", "--workers", "1"]


@pytest.fixture(scope="module")
def reference(parquet_src, jsonl_src, tmp_path_factory):
    """Uninterrupted runs, made once per kind: {kind: (files, meta)}."""
    refs = {}

    def get(kind):
        if kind not in refs:
            out = tmp_path_factory.mktemp(f"ref-{kind}")
            prepare.main(command(kind, parquet_src, jsonl_src, out))
            refs[kind] = snapshot(out)
        return refs[kind]
    return get


@pytest.mark.parametrize("case", CASES)
def test_killed_run_resumes_to_identical_shards(case, parquet_src, jsonl_src, reference, tmp_path, capsys):
    kind, fault = CASES[case]
    files, meta = reference(kind.replace("-2", ""))
    assert len([n for n in files if n.endswith(".bin")]) >= 5  # several shards, or the test shows little
    out = tmp_path / "out"
    args = command(kind, parquet_src, jsonl_src, out)
    if case == "parquet-mid-shard":  # a real `python data/prepare.py` process, killed
        killed = run(args, fault, check=False).returncode
    else:
        killed = run_forked(args, fault)
    assert killed == -9
    if fault != "kill@row:1":  # progress was saved, and the run resumes from it
        saved = json.loads((out / "progress.json").read_text())
        assert saved["row"] > 0 and saved["writers"]
        if saved["row"] >= 8 and case != "parquet-mid-shard":  # (a subprocess snapshots every 256 rows)
            at, state = saved["snapshot"]
            assert 0 < at <= saved["row"] and state["examples_iterable"]  # the dataset's own position
    capsys.readouterr()
    prepare.main(args)
    if fault != "kill@row:1":
        assert "resuming" in capsys.readouterr().out
    got_files, got_meta = snapshot(out)
    assert got_files == files  # byte-identical shards, and no progress files left behind
    assert got_meta == meta


def test_killed_twice(jsonl_src, reference, tmp_path):
    """A resumed run killed in its turn: saves are numbered on from the first run's, so the
    split's unfinished tokens go to new files, never over the ones progress.json names."""
    files, meta = reference("owt")
    args = command("owt", None, jsonl_src, tmp_path / "out")
    assert run_forked(args, "kill@save:3") == -9
    assert run_forked(args, "kill@save:5") == -9
    assert json.loads((tmp_path / "out" / "progress.json").read_text())["saves"] == 5
    prepare.main(args)
    assert snapshot(tmp_path / "out") == (files, meta)


def test_transient_errors_are_retried_then_resumable(parquet_src, reference, tmp_path, capsys, monkeypatch):
    files, meta = reference("fineweb")
    monkeypatch.setattr(prepare, "RETRY_WAIT", 0.001)
    # two connection resets mid-stream: retried (one line each), the run completes unchanged
    monkeypatch.setattr(prepare, "_FAULTS", prepare.parse_faults("error@row:45x2"))
    args = command("fineweb", parquet_src, None, tmp_path / "out")
    prepare.main(args)
    log = capsys.readouterr().out
    assert log.count("ConnectionResetError") == 2 and "retry 2/5" in log
    assert snapshot(tmp_path / "out") == (files, meta)
    # more than the retries allow: a resumable failure, then the same command finishes the job
    monkeypatch.setattr(prepare, "_FAULTS", prepare.parse_faults(f"error@row:80x{prepare.RETRIES + 1}"))
    args = command("fineweb", parquet_src, None, tmp_path / "out2")
    with pytest.raises(SystemExit, match="could not read the next row after 5 retries .*run the same command again "
                                         "to resume"):
        prepare.main(args)
    assert (tmp_path / "out2" / "progress.json").exists()
    prepare.main(args)
    assert "resuming" in capsys.readouterr().out
    assert snapshot(tmp_path / "out2") == (files, meta)


@pytest.mark.parametrize("error, transient", [
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (TimeoutError("read timed out"), True),
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 503})()})(), True),
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 429})()})(), True),
    (type("HTTPError", (OSError,), {"response": type("R", (), {"status_code": 404})()})(), False),
    (type("DatasetNotFoundError", (Exception,), {})("Dataset 'x/y' doesn't exist on the Hub"), False),
    (ConnectionError("Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"), False),
    (ValueError("not a parquet file"), False),
])
def test_transient_or_permanent(error, transient):
    wrapped = RuntimeError("while streaming")
    wrapped.__cause__ = error  # datasets wraps the network's errors
    assert prepare.is_transient(error) is transient and prepare.is_transient(wrapped) is transient


def test_no_such_dataset_fails_at_once_with_the_fix(monkeypatch):
    calls = []

    def open_rows(state):
        calls.append(state)
        raise type("DatasetNotFoundError", (Exception,), {})("Dataset 'HuggingFaceFW/finewb' doesn't exist")
    with pytest.raises(prepare.PrepareError, match="no such dataset, or no access.*huggingface-cli login"):
        prepare.DatasetSource(open_rows, "HuggingFaceFW/finewb")
    assert len(calls) == 1  # not retried


def test_verify_finds_flipped_and_truncated_shards(parquet_src, tmp_path, capsys):
    out = tmp_path / "out"
    args = command("fineweb", parquet_src, None, out)
    prepare.main(args)
    assert prepare.main(args + ["--verify"])["dataset"] == "fineweb-10B"
    assert "shards intact" in capsys.readouterr().out
    shards = sorted(out.glob("*_train_*.bin"))
    flipped, truncated = shards[1], shards[2]
    raw = bytearray(flipped.read_bytes())
    raw[1100] ^= 0x01  # one bit of one token: the header and size still check out
    flipped.write_bytes(bytes(raw))
    truncated.write_bytes(truncated.read_bytes()[:-10])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        prepare.main(args + ["--verify"])
    assert e.value.code == 1
    report = capsys.readouterr().out
    assert f"{flipped.name}: changed" in report
    assert f"{truncated.name}: header says" in report and "truncated" in report
    assert "2 problem(s)" in report
    assert f"rebuild with: python data/prepare.py fineweb-10B --source {parquet_src} --out-dir {out} " \
           f"--shard-size 300 --force" in report
    (out / shards[0].name).unlink()
    with pytest.raises(SystemExit):
        prepare.main(args + ["--verify"])
    assert f"{shards[0].name}: missing" in capsys.readouterr().out


def test_another_command_is_refused_while_a_run_is_unfinished(parquet_src, tmp_path):
    out = tmp_path / "out"
    args = command("fineweb", parquet_src, None, out)
    assert run_forked(args, "kill@save:2") == -9
    other = [a if a != "300" else "400" for a in args]
    proc = run(other, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "holds an unfinished run of another command (shard_size 300 -> 400)" in proc.stderr
    assert "--force" in proc.stderr
    prepare.main(other + ["--force"])  # discards the progress and starts afresh
    assert not (out / "progress.json").exists() and (out / "meta.json").exists()


def test_full_disk_keeps_the_last_shard_and_progress(parquet_src, reference, tmp_path, monkeypatch):
    files, meta = reference("fineweb")
    out = tmp_path / "out"
    args = command("fineweb", parquet_src, None, out)
    real, calls = prepare.write_shard, []

    def write_shard(path, tokens):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, tokens)
    monkeypatch.setattr(prepare, "write_shard", write_shard)
    with pytest.raises(SystemExit, match=r"the disk holding .* is full .*free space \(a shard takes 6e-07 GB\) and "
                                         r"run the same command again to resume"):  # 300 tokens of 2 bytes
        prepare.main(args)
    kept = sorted(p.name for p in out.glob("*.bin"))
    assert kept == sorted(p.name for p in calls[:3])  # the three complete shards, nothing half-written
    assert all(read_shard(out / n).size == 300 for n in kept)
    progress = json.loads((out / "progress.json").read_text())
    assert sorted(progress["writers"]["stream"]["shards"]) == kept
    monkeypatch.setattr(prepare, "write_shard", real)
    prepare.main(args)
    assert snapshot(out) == (files, meta)


def test_embedded_list_source_resumes_after_an_exception(tmp_path, monkeypatch):
    """The in-memory source (the embedded corpus) with the byte tokenizer and every-K validation:
    an exception at a shard boundary (as Ctrl-C would raise), then the same call again."""
    texts = make_docs(60, 3)
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for d in (out_a, out_b):
        d.mkdir()
    config = {"test": 1}

    def go(out):
        progress = prepare.Progress(out)
        return prepare.write_splits(prepare.ListSource(texts), out, "embedded", 700, 8, 1, 1, None, "bytes",
                                    progress, progress.load(), config)
    straight = go(out_a)
    monkeypatch.setitem(prepare._FAULTS, ("save", 3), ("error", 1))
    with pytest.raises(ConnectionResetError):
        go(out_b)
    assert (out_b / "progress.json").exists()
    resumed = go(out_b)
    straight.pop("seconds"), resumed.pop("seconds")
    assert resumed == straight
    for name in straight["train"]["shards"] | straight["val"]["shards"]:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes()


def test_a_resume_refuses_when_what_progress_json_counts_is_gone(jsonl_src, tmp_path):
    """Killed after the 5th progress save (a shard of each split written, the validation split's
    tokens since then in a partial file): a deleted shard, or a deleted partial file, cannot be
    rebuilt from the resume point, so the resume stops and says how to start afresh."""
    out = tmp_path / "out"
    args = command("owt", None, jsonl_src, out)
    assert run_forked(args, "kill@save:5") == -9
    progress = json.loads((out / "progress.json").read_text())
    shard = sorted(progress["writers"]["train"]["shards"])[0]
    partial = next(w["partial"]["file"] for w in progress["writers"].values() if w["partial"])
    (out / partial).rename(tmp_path / partial)
    with pytest.raises(SystemExit, match=rf"^error: {out / partial} is missing or damaged; pass --force to start "
                                         rf"afresh$"):
        prepare.main(args)
    (tmp_path / partial).rename(out / partial)
    (out / shard).unlink()
    with pytest.raises(SystemExit, match=rf"^error: {out / shard} is missing or damaged, and {out / 'progress.json'} "
                                         rf"counts it as written: resuming cannot rebuild it; pass --force to start "
                                         rf"afresh$"):
        prepare.main(args)


def test_a_nul_in_a_document_is_refused_for_bytes(monkeypatch):
    monkeypatch.setattr(prepare, "_enc", None)  # this process's tokenizer, put back after
    prepare._init_worker("bytes")
    text = "x" * 70 + "\0"
    with pytest.raises(prepare.PrepareError, match=rf"^a document holds a NUL byte, the byte-level document separator: "
                                                   rf"'{'x' * 60}'\.\.\.; remove NULs from the source, or use "
                                                   rf"--tokenizer gpt2$"):
        prepare.tokenize(text)
