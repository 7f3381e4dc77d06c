"""
Tokenize a text dataset into token shards (llm.c's .bin format) for training.

    python data/prepare.py embedded              # default offline corpus (~3M tokens, package index only)
    python data/prepare.py embedded --tokenizer bytes   # the same texts as UTF-8 bytes (10.5M) -> data/embedded-bytes
    python data/prepare.py fineweb-10B           # HuggingFaceFW/fineweb, sample-10BT, streamed from the hub
    python data/prepare.py fineweb-100B          # HuggingFaceFW/fineweb, sample-100BT
    python data/prepare.py fineweb-edu-10B       # HuggingFaceFW/fineweb-edu, sample-10BT
    python data/prepare.py openwebtext           # Skylion007/openwebtext
    python data/prepare.py fineweb-10B --source 'downloads/*.parquet'   # same, from local files

--tokenizer: gpt2 (GPT-2's BPE, the default) or bytes (UTF-8 bytes, 256 symbols; see
data/tokenizer.py). Shards go to data/<dataset>/ for gpt2, data/<dataset>-bytes/ for bytes (or
--out-dir): <prefix>_val_000000.bin, <prefix>_train_000001.bin, ... of --shard-size tokens (100M
by default; the last of each split is shorter), plus meta.json (tokenizer and vocab_size, which
train.py sizes the model by; sources, licences, token counts). Every document is preceded by the
tokenizer's separator (<|endoftext|> as in llm.c; NUL for bytes), so documents are separated by it.

Validation split:
- fineweb*: the first shard (llm.c's convention), so shards are interchangeable with llm.c's.
- openwebtext: the hub copy has only a train split. Every 2000th document (index % 2000 == 0,
  ~0.05% like nanoGPT's split, ~4k documents, ~4M tokens) is held out into the val shards; the
  choice is deterministic and made while streaming, so memory stays flat.
- embedded: every 8th document across the corpus (Bible books, plays, poems), documents whole.
--val-every K selects the every-K-th-document holdout for any dataset.

Memory stays flat for any dataset size: the hub is streamed, documents go through a bounded
queue to worker processes, and only the shard being filled is held in memory.

Interrupted (kill, Ctrl-C, a hub outage)? Run the same command again: progress.json, saved at
every shard boundary, lets it resume, and the shards come out byte-identical to an uninterrupted
run's. Transient hub errors are retried first. meta.json records each shard's sha256;
`python data/prepare.py DATASET --verify` re-reads them. See docs/data.md.
"""

import argparse
import collections
import datetime
import errno
import hashlib
import glob
import json
import multiprocessing as mp
import os
import shlex
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `import data.*` work from any directory
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from tqdm import tqdm

from data import sources
from data.catalog import DATASETS, DatasetSpec, default_out_dir, prepare_command, read_meta
from data.shards import SPLITS, ShardError, read_header, write_shard
from data.tokenizer import RANKS_PIN, VOCAB_SIZES, load_tokenizer
from dirlock import DirectoryBusy, lock_dir


class PrepareError(ValueError):
    """Bad arguments or input data; main() turns it into a one-line error exit."""


SOURCE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".jsonl.gz": "json",
                   ".json.gz": "json", ".txt": "text"}


# -----------------------------------------------------------------------------
# documents, each with its row number, from a source that can start again at any row

RETRIES = 5  # transient hub errors in a row before the run stops (resumable)
RETRY_WAIT = float(os.environ.get("PREPARE_RETRY_WAIT", 2))  # seconds, doubling per retry (tests set it low)
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
UNREACHABLE = ("OfflineModeIsEnabled", "offline mode", "LocalEntryNotFoundError", "Name or service not known",
               "Temporary failure in name resolution", "nodename nor servname")
TRANSIENT_NAMES = {"ConnectionError", "TimeoutError", "Timeout", "TimeoutException", "TransportError",
                   "ChunkedEncodingError", "IncompleteRead", "ProtocolError", "RemoteProtocolError"}


def resolve_source(paths) -> tuple:
    """--source paths (files, directories, globs) -> (datasets builder name, sorted file list)."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = [f for f in sorted(Path(p).rglob("*")) if f.is_file() and _builder(f)]
        elif glob.has_magic(p):
            found = [Path(f) for f in sorted(glob.glob(p, recursive=True)) if os.path.isfile(f)]
        else:
            found = [Path(p)] if os.path.isfile(p) else []
        if not found:
            raise PrepareError(f"--source {p}: no such file, or no {'/'.join(SOURCE_BUILDERS)} files in it")
        files += found
    builders = {_builder(f) for f in files}
    if None in builders or len(builders) > 1:
        raise PrepareError(f"--source: files must all be one of parquet, json/jsonl or txt; got "
                         f"{sorted({''.join(f.suffixes) for f in files})}")
    return builders.pop(), [str(f.resolve()) for f in files]


def _builder(path):
    name = Path(path).name.lower()
    return next((b for ext, b in SOURCE_BUILDERS.items() if name.endswith(ext)), None)


def _causes(e):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def is_transient(e) -> bool:
    """A network error worth retrying: connection reset or timed out, HTTP 5xx/429/408. An HTTP
    error with another status (401, 403, 404: no access, no such file) is permanent."""
    for err in _causes(e):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int):
            return status in TRANSIENT_STATUS
        if _unreachable(err):  # offline, or no name service: retrying cannot help
            return False
        if TRANSIENT_NAMES & {c.__name__ for c in type(err).__mro__}:
            return True
    return False


def _unreachable(e) -> bool:
    """An error that says this machine cannot reach the hub at all (offline mode, no DNS)."""
    return any(m in str(err) for err in _causes(e) for m in UNREACHABLE)


def _fault(event, n):
    """A deterministic interruption for the resume tests: PREPARE_FAULT="kill@row:40" kills this
    process (SIGKILL) as row 40 is read, "error@row:40x2" raises a connection reset there twice,
    "kill@shard:2" kills it after the 2nd shard is written (before the progress saying so), and
    "kill@save:2" after the 2nd progress save. Unset, this costs one dict lookup."""
    spec = _FAULTS.get((event, n))
    if spec is None:
        return
    kind, left = spec
    if kind == "kill":
        os.kill(os.getpid(), 9)
    if left > 0:
        _FAULTS[(event, n)] = (kind, left - 1)
        raise ConnectionResetError(errno.ECONNRESET, f"Connection reset by peer (PREPARE_FAULT at {event} {n})")


def parse_faults(text: str) -> dict:
    faults = {}
    for spec in filter(None, text.split(",")):
        kind, _, where = spec.partition("@")
        event, _, n = where.partition(":")
        n, _, times = n.partition("x")
        faults[(event, int(n))] = (kind, int(times or 1))
    return faults


_FAULTS = parse_faults(os.environ.get("PREPARE_FAULT", ""))


class ListSource:
    """Documents held in memory (the embedded corpus): row i is document i."""

    def __init__(self, texts):
        self.texts, self.rows = texts, collections.deque()

    def state_at(self, row):
        return row, None

    def read(self, row=0, snapshot=None):
        for i in range(row, len(self.texts)):
            self.rows.append(i)
            yield self.texts[i]


class DatasetSource:
    """The 'text' of every row of a `datasets` streaming dataset (the hub, or local files).

    Where it is: read() appends the row number of every text it yields to self.rows, and every
    SNAPSHOT rows it keeps the dataset's own state_dict() (file/shard and example within it), for
    the recent rows that tokenizing workers may still hold. state_at(row) gives a snapshot at or
    before a row, and read(row, snapshot) starts there, skipping the rows in between without
    tokenizing them. A transient network error re-opens the dataset the same way, after a wait."""

    SNAPSHOT = 256

    def __init__(self, open_rows, where, lookbehind=4096):
        self.open_rows, self.where = open_rows, where  # open_rows(state) -> IterableDataset
        self.lookbehind = lookbehind + 2 * self.SNAPSHOT  # rows read ahead of the consumer, at most
        self.rows, self.snapshots, self.lock = collections.deque(), collections.deque(), threading.Lock()
        self.dataset = self._open(None)  # fail early: before anything changes on disk

    def _open(self, state):
        for attempt in range(RETRIES + 1):
            try:
                return self.open_rows(state)
            except PrepareError:
                raise
            except Exception as e:  # noqa: BLE001 - classified by _retry, the cause kept
                self._retry(e, attempt, "open it")

    def _retry(self, e, attempt, what):
        """Wait before retry `attempt` of a transient error; raise for a permanent one, or when
        the retries are used up (the run can then be resumed)."""
        if not is_transient(e):
            raise _permanent(e, self.where) from e
        if attempt >= RETRIES:
            raise PrepareError(f"{self.where}: could not {what} after {RETRIES} retries ({type(e).__name__}: "
                               f"{e}); the progress up to the last complete shard is saved: run the same command "
                               f"again to resume") from e
        wait = min(RETRY_WAIT * 2 ** attempt, 120)
        print(f"{self.where}: {type(e).__name__}: {str(e)[:200]}; retry {attempt + 1}/{RETRIES} in {wait:g}s",
              flush=True)
        time.sleep(wait)

    def state_at(self, row):
        """(row, state) of the newest snapshot at or before row; (0, None) is the very start."""
        with self.lock:
            return max(((r, s) for r, s in self.snapshots if r <= row), default=(0, None), key=lambda p: p[0])

    def read(self, row=0, snapshot=(0, None)):
        """Texts from row `row` on, starting from a snapshot at or before it."""
        at, state = snapshot  # the row the dataset's iterator gives next
        with self.lock:
            self.snapshots = collections.deque([snapshot])
        dataset = self.dataset if state is None else self._open(state)
        it, failures = iter(dataset), 0
        while True:
            try:
                if _FAULTS and at >= row:
                    _fault("row", at)
                example = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - pyarrow/json/network errors: say where, keep the cause
                if not is_transient(e) and _hub_permanent(e) is None:
                    raise PrepareError(f"{self.where}: cannot read the next row ({type(e).__name__}: {e}); check "
                                       f"that the files are complete and in the format their extension says") from e
                self._retry(e, failures, "read the next row")
                failures += 1
                at, state = self.state_at(at)  # back to the last snapshot, then skip forward again
                dataset = self._open(state)
                it = iter(dataset)
                continue
            at += 1
            if at % self.SNAPSHOT == 0 and at > self.snapshots[-1][0]:
                with self.lock:
                    self.snapshots.append((at, dataset.state_dict()))
                    while len(self.snapshots) > 1 and self.snapshots[1][0] <= at - self.lookbehind:
                        self.snapshots.popleft()
            if at <= row:
                continue  # read by an earlier run, or before a retry
            row, failures = at, 0  # past the row that failed: a new error has all its retries again
            if "text" not in example:
                raise PrepareError(f"{self.where}: rows have columns {sorted(example)}; a 'text' column is needed")
            if example["text"]:
                self.rows.append(at - 1)
                yield example["text"]


def _hub_permanent(e):
    """The HTTP status of an error meaning no such dataset or no access, else None."""
    for err in _causes(e):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403, 404) or type(err).__name__ in ("DatasetNotFoundError", "GatedRepoError",
                                                                  "RepositoryNotFoundError"):
            return status or type(err).__name__
    return None


def _permanent(e, where):
    if _hub_permanent(e) is not None:
        return PrepareError(f"{where}: no such dataset, or no access to it ({type(e).__name__}: {str(e)[:300]}); "
                            f"check the name, and for a gated dataset log in (huggingface-cli login, or HF_TOKEN) "
                            f"and accept its terms on the dataset page")
    if _unreachable(e):
        return PrepareError(
            f"could not reach the Hugging Face hub for {where} ({e}). Without hub access, download its "
            f"parquet files elsewhere and pass them with --source, or use the offline corpus: "
            f"python data/prepare.py embedded")
    return PrepareError(f"{where}: cannot open ({type(e).__name__}: {e}); check that the files are complete "
                        f"and in the format their extension says")


def dataset_source(spec: DatasetSpec, builder=None, files=None, lookbehind=4096) -> DatasetSource:
    """The rows of a hub dataset (streamed), or of local files when given."""
    import datasets  # here, not at the top: `embedded` and the loaders do not need it

    if files:
        # a .txt file is one document (not one per line)
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        where = f"--source {files[0]}" if len(files) == 1 else f"--source ({len(files)} {builder} files)"

        def open_rows(state):
            try:
                rows = datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)
            except Exception as e:  # noqa: BLE001 - e.g. a truncated parquet file: say which, keep the cause
                raise PrepareError(f"{where}: cannot open as {builder} ({type(e).__name__}: {e}); check that the "
                                   f"files are complete and in the format their extension says") from e
            if state:
                rows.load_state_dict(state)
            return rows
        return DatasetSource(open_rows, where, lookbehind)

    def open_rows(state):
        try:
            rows = datasets.load_dataset(spec.hub, name=spec.config, split="train", streaming=True)
        except Exception as e:  # noqa: BLE001
            # datasets >= 4 no longer runs loading scripts, which some repos (openwebtext) still
            # have; the hub's own parquet conversion of such a repo loads without them
            if "scripts are no longer supported" not in str(e):
                raise
            if state is None:
                print(f"{spec.hub} has a loading script (unsupported by datasets>=4): using the hub's parquet "
                      f"conversion (revision refs/convert/parquet); check its token count against the dataset card")
            rows = datasets.load_dataset(spec.hub, name=spec.config, revision="refs/convert/parquet",
                                         split="train", streaming=True)
        if state:
            rows.load_state_dict(state)
        return rows
    return DatasetSource(open_rows, f"{spec.hub} {spec.config or ''}".strip(), lookbehind)


# -----------------------------------------------------------------------------
# tokenization in worker processes

_enc = None


def _init_worker(tokenizer):
    global _enc
    _enc = load_tokenizer(tokenizer)


def tokenize(text: str) -> np.ndarray:
    """The separator followed by the document's tokens (special-token text is encoded as plain text)."""
    ids = _enc.encode(text)
    out = np.empty(len(ids) + 1, dtype=np.uint16)
    out[0] = _enc.eot
    out[1:] = ids
    if _enc.name == "bytes" and not out[1:].all():  # a NUL in the text would read as a document boundary
        raise PrepareError(f"a document holds a NUL byte, the byte-level document separator: "
                           f"{text[:60]!r}...; remove NULs from the source, or use --tokenizer gpt2")
    return out


def tokenized(texts, workers: int, chunksize: int, tokenizer: str = "gpt2"):
    """Token arrays of the texts, in order. With workers > 1 a process pool does the work; the
    number of documents in flight is bounded, since Pool.imap would otherwise read the whole
    (streamed) input ahead of the workers and fill memory."""
    if workers <= 1:
        _init_worker(tokenizer)
        yield from map(tokenize, texts)
        return
    in_flight = threading.BoundedSemaphore(workers * chunksize * 4)
    stop = threading.Event()

    def feed():  # runs in the pool's task-feeding thread; waits while too much is in flight
        for t in texts:
            while not in_flight.acquire(timeout=0.1):
                if stop.is_set():  # the consumer is gone (error, Ctrl-C): let the pool shut down
                    return
            yield t

    load_tokenizer(tokenizer)  # resolved once here, so forked workers inherit it instead of each loading it
    with mp.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        try:
            for tokens in pool.imap(tokenize, feed(), chunksize=chunksize):
                in_flight.release()
                yield tokens
        finally:
            stop.set()


class ShardWriter:
    """Cuts a stream of documents into shards of exactly shard_size tokens (the last shorter);
    a document that crosses a boundary continues in the next shard of the same split.
    on_flush(consumed) is called after every full shard, with the tokens of the current
    document written so far."""

    def __init__(self, out_dir: Path, shard_size: int, name_of, on_flush=None):
        self.out_dir, self.shard_size, self.name_of, self.on_flush = out_dir, shard_size, name_of, on_flush
        self.buf = np.empty(shard_size, dtype=np.uint16)
        self.fill = 0
        self.shards, self.sha256 = {}, {}  # file name -> tokens, sha256; in the order written

    def add(self, tokens: np.ndarray):
        done = 0
        while done < len(tokens):
            n = min(self.shard_size - self.fill, len(tokens) - done)
            self.buf[self.fill:self.fill + n] = tokens[done:done + n]
            self.fill, done = self.fill + n, done + n
            if self.fill == self.shard_size:
                self.flush()
                if self.on_flush:
                    self.on_flush(done)

    def flush(self) -> bool:
        if not self.fill:
            return False
        name = self.name_of(len(self.shards))
        self.sha256[name] = write_shard(self.out_dir / name, self.buf[:self.fill])
        self.shards[name] = self.fill
        self.fill = 0
        if _FAULTS:
            _fault("shard", sum(1 for _ in self.out_dir.glob("*.bin")))
        return True


# -----------------------------------------------------------------------------
# progress on disk, so that an interrupted run resumes where it stopped

def write_atomic(path: Path, data: bytes):
    """Write a file so that a reader (or a crash) sees either the old one or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Progress:
    """out_dir/progress.json: replaced atomically after every full shard. It names the shards
    written (tokens, sha256), where in the input the next token comes from (document, row, tokens
    of that document already written, the source's own state near that row), the documents per
    split so far, and the tokens each split has gathered towards its next shard, which go to
    progress-<writer>-<n>.tokens files (a split that fills slowly, like openwebtext's every-2000th-
    document validation, would otherwise pin the resume point at the start of the run)."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.path = out_dir, out_dir / "progress.json"
        self.saves, self.partials = 0, {}  # writer -> (fill, shard count, file) last saved

    def load(self):
        try:
            state = json.loads(self.path.read_text())
            self.saves = state["saves"]  # numbers the partial files: a new one never overwrites one in use
            return state
        except FileNotFoundError:
            return None
        except (ValueError, KeyError) as e:  # never happens through write_atomic; a hand-edited file, say
            raise PrepareError(f"{self.path} is damaged ({e}); pass --force to start afresh") from e

    def save(self, state: dict, writers: dict):
        self.saves += 1
        files = {}
        for key, w in writers.items():
            mark = (w.fill, len(w.shards))
            if w.fill and self.partials.get(key, (None,))[:2] != mark:  # a split's tokens since its last shard
                name = f"progress-{key}-{self.saves:06d}.tokens"
                data = w.buf[:w.fill].astype("<u2", copy=False).tobytes()
                write_atomic(self.out_dir / name, data)
                self.partials[key] = (*mark, {"file": name, "tokens": w.fill,
                                              "sha256": hashlib.sha256(data).hexdigest()})
            files[key] = {"shards": w.shards, "sha256": w.sha256,
                          "partial": self.partials[key][2] if w.fill else None}
        write_atomic(self.path, (json.dumps({**state, "saves": self.saves, "writers": files}, indent=1) + "\n").encode())
        for f in self.out_dir.glob("progress-*.tokens"):  # those the new progress.json no longer names
            if not any(p and p["file"] == f.name for p in (v["partial"] for v in files.values())):
                f.unlink()
        _fault("save", self.saves)

    def restore(self, key, w: ShardWriter, state: dict):
        """Put a writer back as the progress file describes it (its shards checked to be there)."""
        saved = state["writers"][key]
        for name, n in saved["shards"].items():
            try:
                ok = read_header(self.out_dir / name) == n
            except (OSError, ShardError):
                ok = False
            if not ok:
                raise PrepareError(f"{self.out_dir / name} is missing or damaged, and {self.path} counts it as "
                                   f"written: resuming cannot rebuild it; pass --force to start afresh")
        w.shards, w.sha256 = dict(saved["shards"]), dict(saved["sha256"])
        part = saved["partial"]
        if part:
            path = self.out_dir / part["file"]
            data = path.read_bytes() if path.exists() else b""
            if hashlib.sha256(data).hexdigest() != part["sha256"]:
                raise PrepareError(f"{path} is missing or damaged; pass --force to start afresh")
            w.fill = part["tokens"]
            w.buf[:w.fill] = np.frombuffer(data, dtype="<u2")
            self.partials[key] = (w.fill, len(w.shards), part)

    def clear(self):
        self.path.unlink(missing_ok=True)
        for f in self.out_dir.glob("progress-*.tokens"):
            f.unlink()


# -----------------------------------------------------------------------------

def write_splits(source, out_dir: Path, prefix: str, shard_size: int, val_every: int, workers: int,
                 chunksize: int, approx_tokens=None, tokenizer="gpt2", progress: Progress = None,
                 resume: dict = None, config=None) -> dict:
    """Tokenize the documents into val/train shards; returns {split: {tokens, documents, shards}}.
    With `resume` (a progress.json), continue where that run stopped: the shards come out
    byte-identical to those of a run that never stopped."""
    if val_every:  # every K-th document to val; val shards count from 0, train from 1 (as llm.c's)
        writers = {"val": ShardWriter(out_dir, shard_size, lambda k: f"{prefix}_val_{k:06d}.bin"),
                   "train": ShardWriter(out_dir, shard_size, lambda k: f"{prefix}_train_{k + 1:06d}.bin")}
        route = writers
    else:  # one stream whose first shard is val (llm.c)
        both = ShardWriter(out_dir, shard_size, lambda k: f"{prefix}_{'val' if k == 0 else 'train'}_{k:06d}.bin")
        writers, route = {"stream": both}, {"val": both, "train": both}
    start = resume or {"doc": 0, "row": 0, "offset": 0, "snapshot": [0, None], "seconds": 0.0,
                       "documents": {"val": 0, "train": 0}}
    if resume:
        for key, w in writers.items():
            progress.restore(key, w, resume)
    docs = dict(start["documents"])
    t0 = time.time() - start["seconds"]
    now = {}  # the document being added: index, row, tokens of it written before, its length

    def save(doc, row):  # the next token comes from document `doc` (source row `row`), after `offset` tokens
        offset = 0
        if doc == now.get("doc"):
            offset = now["offset"]
            if offset >= now["length"]:  # the document ended with the shard: resume at the next one
                doc, row, offset = doc + 1, row + 1, 0
        progress.save({"config": config, "doc": doc, "row": row, "offset": offset,
                       "snapshot": list(source.state_at(row)), "documents": docs,
                       "seconds": time.time() - t0}, writers)

    def on_flush(consumed):
        now["offset"] = now["skip"] + consumed
        save(now["doc"], now["row"])

    for w in writers.values():
        w.on_flush = on_flush
    written = sum(n for w in writers.values() for n in w.shards.values()) + sum(w.fill for w in writers.values())
    bar = tqdm(total=approx_tokens, initial=written, unit="tok", unit_scale=True, disable=None, smoothing=0.05)
    texts = source.read(start["row"], tuple(start["snapshot"]))
    for i, tokens in enumerate(tokenized(texts, workers, chunksize, tokenizer), start=start["doc"]):
        row = source.rows.popleft()
        if val_every:
            split = "val" if i % val_every == 0 else "train"
        else:
            split = "val" if not route["val"].shards else "train"  # until shard 0 is written
        skip = start["offset"] if i == start["doc"] else 0  # written before the interruption
        if not skip:  # a document cut by the interruption was counted by the run that began it
            docs[split] += 1
        now.update(doc=i, row=row, skip=skip, length=len(tokens))
        route[split].add(tokens[skip:])
        bar.update(len(tokens) - skip)
    bar.close()
    end = {"doc": start["doc"] if not now else now["doc"] + 1, "row": start["row"] if not now else now["row"] + 1}
    now.clear()
    for w in writers.values():
        if w.flush():  # the last, shorter shard of a split
            save(end["doc"], end["row"])
    splits = {}
    for s in SPLITS:
        shards = {name: n for w in writers.values() for name, n in w.shards.items() if f"_{s}_" in name}
        sha = {name: h for w in writers.values() for name, h in w.sha256.items() if name in shards}
        splits[s] = {"tokens": sum(shards.values()), "documents": docs[s], "shards": shards, "sha256": sha}
    for s in SPLITS:
        if not splits[s]["tokens"]:
            hint = (f"all tokens fit in the first (validation) shard: pass a --shard-size below "
                    f"{splits['val']['tokens']:,}" if not val_every else f"{sum(docs.values())} documents with "
                    f"--val-every {val_every}: give more documents or a smaller --val-every")
            progress.clear()  # the run is complete, only unusable: another command may use the directory
            raise PrepareError(f"the {s} split is empty ({hint})")
    splits["seconds"] = time.time() - t0
    return splits


def prepare(dataset, source=None, out_dir=None, shard_size=10**8, workers=None, val_every=None,
            with_wikipedia=False, force=False, tokenizer="gpt2") -> dict:
    """Write the shards of a dataset and its meta.json, resuming an interrupted run of the same
    command; returns the meta dict."""
    t0 = time.time()
    spec = DATASETS[dataset]
    if tokenizer not in VOCAB_SIZES:
        raise PrepareError(f"--tokenizer {tokenizer}: unknown; choose one of {', '.join(VOCAB_SIZES)}")
    out_dir = Path(out_dir) if out_dir else default_out_dir(dataset, tokenizer)
    workers = workers or os.cpu_count() or 1
    val_every = spec.val_every if val_every is None else val_every
    if shard_size < 1 or val_every < 0:
        raise PrepareError("--shard-size must be >= 1 and --val-every >= 0")
    if source and dataset == "embedded":
        raise PrepareError("--source is for the hub datasets (fineweb*, openwebtext); embedded has fixed sources")
    if with_wikipedia and dataset != "embedded":
        raise PrepareError("--with-wikipedia only applies to the embedded dataset")
    builder, files = resolve_source(source) if source else (None, None)

    config = {"dataset": dataset, "shard_size": shard_size, "val_every": val_every,
              "source": files or spec.hub, "hub_config": None if files else spec.config,
              "with_wikipedia": with_wikipedia, "tokenizer": tokenizer}
    meta_path = out_dir / "meta.json"
    progress = Progress(out_dir)
    if not force and _up_to_date(meta_path, config):
        progress.clear()  # a run stopped between writing meta.json and clearing its progress
        meta = json.loads(meta_path.read_text())
        print(f"{out_dir} is up to date ({_split_summary(meta)}; made at {meta['tokens_per_second']:,} "
              f"tokens/s); use --force to rebuild")
        return meta
    resume = None if force else progress.load()
    if resume is not None and resume.get("config") != config:
        changed = ", ".join(f"{k} {resume.get('config', {}).get(k)!r} -> {v!r}" for k, v in config.items()
                            if resume.get("config", {}).get(k) != v)
        raise PrepareError(f"{out_dir} holds an unfinished run of another command ({changed}); run that command "
                           f"again to finish it, or pass --force to discard it and start afresh")

    separator = load_tokenizer(tokenizer).eot  # resolve (or fetch) it once, before the workers start and the clock
    if tokenizer == "gpt2":
        print(f"tokenizer: tiktoken gpt2 (offline fallback: {RANKS_PIN.project}=={RANKS_PIN.version}, "
              f"{RANKS_PIN.licence}, {RANKS_PIN.page})")
    else:
        print("tokenizer: bytes (UTF-8, 256 symbols; NUL separates documents)")
    chunksize = 1 if dataset == "embedded" else 16  # embedded: few, long documents
    meta = {"dataset": dataset}
    if dataset == "embedded":
        pins = sources.embedded_pins(with_wikipedia)
        for p in pins:
            print(f"source: {p.project}=={p.version} {p.filename}\n  sha256 {p.sha256}\n  {p.page}\n"
                  f"  licence: {p.licence}")
        docs = sources.embedded_documents(with_wikipedia)
        rows = ListSource([d.text for d in docs])
        meta["sources"] = [{"project": p.project, "version": p.version, "file": p.filename, "sha256": p.sha256,
                            "url": p.page, "licence": p.licence} for p in pins]
        meta["val_documents"] = [d.title for i, d in enumerate(docs) if val_every and i % val_every == 0]
    else:
        # opens the dataset now (an unreachable hub fails before anything changes on disk); rows are
        # read as they are tokenized
        rows = dataset_source(spec, builder, files, lookbehind=workers * chunksize * 4)
        if files:
            print(f"source: {len(files)} local {builder} file(s): {files[0]}{' ...' if len(files) > 1 else ''}")
        else:
            print(f"source: https://huggingface.co/datasets/{spec.hub} ({spec.config or 'default'}), streamed")
        print(f"licence: {spec.licence}")
        meta["sources"] = {"hub": spec.hub, "config": spec.config, "files": files}

    out_dir.mkdir(parents=True, exist_ok=True)
    others = sorted(f.name for split in SPLITS for f in out_dir.glob(f"*_{split}_*.bin")
                    if not f.name.startswith(f"{spec.prefix}_{split}_"))
    if others:  # the loaders read every *_train_* / *_val_* shard of a directory: never mix datasets
        raise PrepareError(f"{out_dir} already holds shards of another dataset ({others[0]}, {len(others)} in all); "
                           f"choose another --out-dir, or delete them first")
    # start clean: stale shards from an earlier, different run must not mix with the new ones;
    # a resumed run keeps those its progress file names (the others are re-made identically)
    meta_path.unlink(missing_ok=True)
    if resume is None:
        progress.clear()
    kept = {name for w in (resume or {}).get("writers", {}).values() for name in w["shards"]}
    for split in SPLITS:
        for f in out_dir.glob(f"{spec.prefix}_{split}_*.bin"):
            if f.name not in kept:
                f.unlink()
    if resume:
        print(f"resuming {out_dir}: {len(kept)} shard(s) done, at document {resume['doc']:,} (row {resume['row']:,} "
              f"of the source)")

    approx_tokens = None if files or tokenizer != "gpt2" else spec.approx_tokens
    try:
        splits = write_splits(rows, out_dir, spec.prefix, shard_size, val_every, workers, chunksize,
                              approx_tokens, tokenizer, progress, resume, config)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise PrepareError(f"the disk holding {out_dir} is full ({e}); the shards written so far and {progress.path} "
                           f"are intact: free space (a shard takes {2 * shard_size / 1e9:.2g} GB) and run the same "
                           f"command again to resume") from e
    seconds = splits.pop("seconds")
    n_tokens = sum(s["tokens"] for s in splits.values())
    meta.update({
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "format": "llm.c .bin: 256 x int32 header [20240520, 1, n_tokens, 0...], then n_tokens x uint16",
        "tokenizer": tokenizer,  # data/tokenizer.py's load_tokenizer(name); train.py reads it and vocab_size
        "vocab_size": VOCAB_SIZES[tokenizer],
        "separator": separator,  # the token before every document
        "licence": spec.licence,
        "validation": (f"every {val_every}th document (index % {val_every} == 0)" if val_every
                       else "the first shard (llm.c's convention)"),
        "splits": splits,  # per shard: tokens, and sha256 of the file (python data/prepare.py ... --verify)
        "config": config,
        "workers": workers,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(n_tokens / max(seconds, 1e-9)),
    })
    write_atomic(meta_path, (json.dumps(meta, indent=1) + "\n").encode())  # written last: marks a complete run
    progress.clear()
    print(f"wrote {out_dir}: {_split_summary(meta)}")
    print(f"tokenized {n_tokens:,} tokens in {seconds:.1f}s with {workers} worker(s): "
          f"{meta['tokens_per_second']:,} tokens/s (total wall time {time.time() - t0:.1f}s)")
    return meta


def _split_summary(meta) -> str:
    return ", ".join(f"{s} {meta['splits'][s]['tokens']:,} tokens / {meta['splits'][s]['documents']:,} docs "
                     f"in {len(meta['splits'][s]['shards'])} shard(s)" for s in SPLITS)


def _up_to_date(meta_path: Path, config: dict) -> bool:
    """meta.json from an identical earlier run, and all its shards present with the right size
    (the quick check; --verify reads them)."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta["config"] != config:
            return False
        return all(read_header(meta_path.parent / name) == n
                   for s in SPLITS for name, n in meta["splits"][s]["shards"].items())
    except (OSError, ValueError, KeyError):
        return False


def command_of(config: dict, out_dir: Path) -> str:
    """The prepare.py command line that makes a directory with this config."""
    spec = DATASETS[config["dataset"]]
    parts = ["python", "data/prepare.py", config["dataset"]]
    files = config["source"] if isinstance(config["source"], list) else None
    if files:
        common = os.path.commonpath(files) if len(files) > 1 else files[0]
        try:
            same = len(files) > 1 and resolve_source([common])[1] == files
        except PrepareError:
            same = False
        parts += ["--source", common] if same or len(files) == 1 else ["--source", *files]
    if config["tokenizer"] != "gpt2":
        parts += ["--tokenizer", config["tokenizer"]]
    if out_dir.resolve() != default_out_dir(config["dataset"], config["tokenizer"]).resolve():
        parts += ["--out-dir", str(out_dir)]
    if config["shard_size"] != 10**8:
        parts += ["--shard-size", str(config["shard_size"])]
    if config["val_every"] != spec.val_every:
        parts += ["--val-every", str(config["val_every"])]
    if config["with_wikipedia"]:
        parts.append("--with-wikipedia")
    return shlex.join(parts)  # a path with a space in it is quoted, so the line can be pasted as it is


def verify(out_dir: Path) -> list:
    """Re-read every shard that meta.json (or, for an unfinished run, progress.json) lists: its
    header, token count and sha256. Returns the problems found, one line each (empty: all good)."""
    meta = read_meta(out_dir)
    unfinished = Progress(out_dir).load() if not meta else None
    if not meta and not unfinished:
        raise PrepareError(f"{out_dir} has no meta.json (and no unfinished run): nothing to verify; make it with "
                           f"{prepare_command(out_dir)}")
    if meta:
        listed = {name: (n, meta["splits"][s].get("sha256", {}).get(name)) for s in SPLITS
                  for name, n in meta["splits"][s]["shards"].items()}
    else:
        listed = {name: (n, w["sha256"][name]) for w in unfinished["writers"].values() for name, n in w["shards"].items()}
    problems = []
    for name, (n, sha) in sorted(listed.items()):
        path = out_dir / name
        if not path.exists():
            problems.append(f"{name}: missing")
            continue
        try:
            have = read_header(path)
        except ShardError as e:
            problems.append(f"{name}: {str(e).split(': ', 1)[1].split('; ')[0]}")
            continue
        if have != n:
            problems.append(f"{name}: holds {have:,} tokens, meta.json says {n:,}")
        elif sha is None:
            problems.append(f"{name}: meta.json has no sha256 for it (made before they were recorded)")
        elif sources.sha256_file(path) != sha:
            problems.append(f"{name}: changed (its sha256 differs from the one recorded when it was written)")
    for split in SPLITS:
        for f in sorted(out_dir.glob(f"*_{split}_*.bin")):
            if f.name not in listed:
                problems.append(f"{f.name}: not made by the run that meta.json describes")
    command = command_of((meta or unfinished)["config"], out_dir)
    if problems:
        print(f"{out_dir}: {len(problems)} problem(s) in {len(listed)} shard(s):")
        for p in problems:
            print(f"  {p}")
        print(f"rebuild with: {command} --force")
    elif meta:
        print(f"{out_dir}: all {len(listed)} shards intact ({_split_summary(meta)})")
    else:
        print(f"{out_dir}: the {len(listed)} shard(s) written so far are intact; the run is unfinished: "
              f"finish it with {command}")
    return problems


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--source", nargs="+", action="extend", metavar="PATH",
                    help="local parquet/jsonl/json/txt files, directories or globs with a 'text' column "
                         "(a .txt file is one document); used instead of the hub")
    ap.add_argument("--out-dir", help="where to write shards (default: data/DATASET)")
    ap.add_argument("--shard-size", type=int, default=10**8, help="tokens per shard (default 100M)")
    ap.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores)")
    ap.add_argument("--val-every", type=int, default=None,
                    help="hold out every K-th document as validation (default: 8 for embedded, 2000 for "
                         "openwebtext, first shard for fineweb; 0 = first shard)")
    ap.add_argument("--with-wikipedia", action="store_true",
                    help="embedded: add 106 Wikipedia articles (CC BY-SA) from the gensim==4.4.0 wheel")
    ap.add_argument("--tokenizer", choices=sorted(VOCAB_SIZES), default="gpt2",
                    help="gpt2 (default) or bytes (UTF-8 bytes; default out dir data/DATASET-bytes)")
    ap.add_argument("--force", action="store_true",
                    help="rebuild even if the shards are up to date, discarding an unfinished run's progress")
    ap.add_argument("--verify", action="store_true",
                    help="re-read the shards of the out dir and check them against meta.json (sha256); exit 1 "
                         "if any is missing, truncated or changed")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else default_out_dir(args.dataset, args.tokenizer)
    try:
        if args.verify:
            if verify(out_dir):
                raise SystemExit(1)
            return read_meta(out_dir)
        with lock_dir(out_dir):   # one writer: a second prepare.py here is refused, naming the first
            return prepare(args.dataset, args.source, args.out_dir, args.shard_size, args.workers,
                           args.val_every, args.with_wikipedia, args.force, args.tokenizer)
    except (PrepareError, ShardError, sources.PinError, DirectoryBusy) as e:
        raise SystemExit(f"error: {e}") from e
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: {out_dir} keeps the shards written so far; run the same command again to "
                         f"resume") from None


if __name__ == "__main__":
    main()
