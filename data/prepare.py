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
"""

import argparse
import datetime
import glob
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `import data.*` work from any directory
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from tqdm import tqdm

from data import sources
from data.catalog import DATASETS, DatasetSpec, default_out_dir
from data.shards import SPLITS, ShardError, read_header, write_shard
from data.tokenizer import RANKS_PIN, VOCAB_SIZES, load_tokenizer


class PrepareError(ValueError):
    """Bad arguments or input data; main() turns it into a one-line error exit."""


SOURCE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".jsonl.gz": "json",
                   ".json.gz": "json", ".txt": "text"}


# -----------------------------------------------------------------------------
# documents

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


def stream_texts(spec: DatasetSpec, builder=None, files=None):
    """The 'text' of every row, streamed: from local files when given, else from the hub.
    The dataset is opened here, eagerly, so that an unreachable hub fails before anything changes
    on disk; rows are read only as the returned iterator is consumed."""
    import datasets  # here, not at the top: `embedded` and the loaders do not need it

    if files:
        # a .txt file is one document (not one per line)
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        where = f"--source {files[0]}" if len(files) == 1 else f"--source ({len(files)} {builder} files)"
        try:
            rows = datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - e.g. a truncated parquet file: say which, keep the cause
            raise PrepareError(f"{where}: cannot open as {builder} ({type(e).__name__}: {e}); check that the "
                               f"files are complete and in the format their extension says") from e
        return _texts(rows, where)
    try:
        try:
            rows = datasets.load_dataset(spec.hub, name=spec.config, split="train", streaming=True)
        except Exception as e:  # noqa: BLE001
            # datasets >= 4 no longer runs loading scripts, which some repos (openwebtext) still
            # have; the hub's own parquet conversion of such a repo loads without them
            if "scripts are no longer supported" not in str(e):
                raise
            print(f"{spec.hub} has a loading script (unsupported by datasets>=4): using the hub's parquet "
                  f"conversion (revision refs/convert/parquet); check its token count against the dataset card")
            rows = datasets.load_dataset(spec.hub, name=spec.config, revision="refs/convert/parquet",
                                         split="train", streaming=True)
    except ConnectionError as e:
        raise PrepareError(
            f"could not reach the Hugging Face hub for {spec.hub} ({e}). Without hub access, download its "
            f"parquet files elsewhere and pass them with --source, or use the offline corpus: "
            f"python data/prepare.py embedded") from e
    return _texts(rows, f"{spec.hub} {spec.config or ''}".strip())


def _texts(rows, where):
    rows = iter(rows)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - pyarrow/json/network errors: say where, keep the cause
            raise PrepareError(f"{where}: cannot read the next row ({type(e).__name__}: {e}); check that the "
                               f"files are complete and in the format their extension says") from e
        if "text" not in row:
            raise PrepareError(f"{where}: rows have columns {sorted(row)}; a 'text' column is needed")
        if row["text"]:
            yield row["text"]


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
    a document that crosses a boundary continues in the next shard of the same split."""

    def __init__(self, out_dir: Path, shard_size: int, name_of):
        self.out_dir, self.shard_size, self.name_of = out_dir, shard_size, name_of
        self.buf = np.empty(shard_size, dtype=np.uint16)
        self.fill = 0
        self.shards = {}  # file name -> tokens, in the order written

    def add(self, tokens: np.ndarray):
        while len(tokens):
            n = min(self.shard_size - self.fill, len(tokens))
            self.buf[self.fill:self.fill + n] = tokens[:n]
            self.fill, tokens = self.fill + n, tokens[n:]
            if self.fill == self.shard_size:
                self.flush()

    def flush(self):
        if self.fill:
            name = self.name_of(len(self.shards))
            write_shard(self.out_dir / name, self.buf[:self.fill])
            self.shards[name] = self.fill
            self.fill = 0


# -----------------------------------------------------------------------------

def write_splits(texts, out_dir: Path, prefix: str, shard_size: int, val_every: int, workers: int,
                 chunksize: int, approx_tokens=None, tokenizer="gpt2") -> dict:
    """Tokenize the documents into val/train shards; returns {split: {tokens, documents, shards}}."""
    if val_every:  # every K-th document to val; val shards count from 0, train from 1 (as llm.c's)
        writers = {"val": ShardWriter(out_dir, shard_size, lambda k: f"{prefix}_val_{k:06d}.bin"),
                   "train": ShardWriter(out_dir, shard_size, lambda k: f"{prefix}_train_{k + 1:06d}.bin")}
    else:  # one stream whose first shard is val (llm.c)
        both = ShardWriter(out_dir, shard_size, lambda k: f"{prefix}_{'val' if k == 0 else 'train'}_{k:06d}.bin")
        writers = {"val": both, "train": both}
    docs = {"val": 0, "train": 0}
    bar = tqdm(total=approx_tokens, unit="tok", unit_scale=True, disable=None, smoothing=0.05)
    for i, tokens in enumerate(tokenized(texts, workers, chunksize, tokenizer)):
        if val_every:
            split = "val" if i % val_every == 0 else "train"
        else:
            split = "val" if not writers["val"].shards else "train"  # until shard 0 is written
        writers[split].add(tokens)
        docs[split] += 1
        bar.update(len(tokens))
    bar.close()
    written = {}
    for w in writers.values():
        w.flush()
        written.update(w.shards)
    splits = {}
    for s in SPLITS:
        shards = {name: n for name, n in written.items() if f"_{s}_" in name}
        splits[s] = {"tokens": sum(shards.values()), "documents": docs[s], "shards": shards}
    for s in SPLITS:
        if not splits[s]["tokens"]:
            hint = (f"all tokens fit in the first (validation) shard: pass a --shard-size below "
                    f"{splits['val']['tokens']:,}" if not val_every else f"{sum(docs.values())} documents with "
                    f"--val-every {val_every}: give more documents or a smaller --val-every")
            raise PrepareError(f"the {s} split is empty ({hint})")
    return splits


def prepare(dataset, source=None, out_dir=None, shard_size=10**8, workers=None, val_every=None,
            with_wikipedia=False, force=False, tokenizer="gpt2") -> dict:
    """Write the shards of a dataset and its meta.json; returns the meta dict."""
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
    if not force and _up_to_date(meta_path, config):
        meta = json.loads(meta_path.read_text())
        print(f"{out_dir} is up to date ({_split_summary(meta)}; made at {meta['tokens_per_second']:,} "
              f"tokens/s); use --force to rebuild")
        return meta

    separator = load_tokenizer(tokenizer).eot  # resolve (or fetch) it once, before the workers start and the clock
    if tokenizer == "gpt2":
        print(f"tokenizer: tiktoken gpt2 (offline fallback: {RANKS_PIN.project}=={RANKS_PIN.version}, "
              f"{RANKS_PIN.licence}, {RANKS_PIN.page})")
    else:
        print("tokenizer: bytes (UTF-8, 256 symbols; NUL separates documents)")
    meta = {"dataset": dataset}
    if dataset == "embedded":
        pins = sources.embedded_pins(with_wikipedia)
        for p in pins:
            print(f"source: {p.project}=={p.version} {p.filename}\n  sha256 {p.sha256}\n  {p.page}\n"
                  f"  licence: {p.licence}")
        docs = sources.embedded_documents(with_wikipedia)
        texts = (d.text for d in docs)
        meta["sources"] = [{"project": p.project, "version": p.version, "file": p.filename, "sha256": p.sha256,
                            "url": p.page, "licence": p.licence} for p in pins]
        meta["val_documents"] = [d.title for i, d in enumerate(docs) if val_every and i % val_every == 0]
    else:
        texts = stream_texts(spec, builder, files)  # opens the dataset now, reads rows as tokenized
        if files:
            print(f"source: {len(files)} local {builder} file(s): {files[0]}{' ...' if len(files) > 1 else ''}")
        else:
            print(f"source: https://huggingface.co/datasets/{spec.hub} ({spec.config or 'default'}), streamed")
        print(f"licence: {spec.licence}")
        meta["sources"] = {"hub": spec.hub, "config": spec.config, "files": files}

    # start clean: stale shards from an earlier, different run must not mix with the new ones
    out_dir.mkdir(parents=True, exist_ok=True)
    others = sorted(f.name for split in SPLITS for f in out_dir.glob(f"*_{split}_*.bin")
                    if not f.name.startswith(f"{spec.prefix}_{split}_"))
    if others:  # the loaders read every *_train_* / *_val_* shard of a directory: never mix datasets
        raise PrepareError(f"{out_dir} already holds shards of another dataset ({others[0]}, {len(others)} in all); "
                           f"choose another --out-dir, or delete them first")
    meta_path.unlink(missing_ok=True)
    for split in SPLITS:
        for f in out_dir.glob(f"{spec.prefix}_{split}_*.bin"):
            f.unlink()

    t1 = time.time()
    chunksize = 1 if dataset == "embedded" else 16  # embedded: few, long documents
    approx_tokens = None if files or tokenizer != "gpt2" else spec.approx_tokens
    splits = write_splits(texts, out_dir, spec.prefix, shard_size, val_every, workers, chunksize,
                          approx_tokens, tokenizer)
    seconds = time.time() - t1
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
        "splits": splits,
        "config": config,
        "workers": workers,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(n_tokens / max(seconds, 1e-9)),
    })
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")  # written last: marks a complete run
    print(f"wrote {out_dir}: {_split_summary(meta)}")
    print(f"tokenized {n_tokens:,} tokens in {seconds:.1f}s with {workers} worker(s): "
          f"{meta['tokens_per_second']:,} tokens/s (total wall time {time.time() - t0:.1f}s)")
    return meta


def _split_summary(meta) -> str:
    return ", ".join(f"{s} {meta['splits'][s]['tokens']:,} tokens / {meta['splits'][s]['documents']:,} docs "
                     f"in {len(meta['splits'][s]['shards'])} shard(s)" for s in SPLITS)


def _up_to_date(meta_path: Path, config: dict) -> bool:
    """meta.json from an identical earlier run, and all its shards present and intact."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta["config"] != config:
            return False
        return all(read_header(meta_path.parent / name) == n
                   for s in SPLITS for name, n in meta["splits"][s]["shards"].items())
    except (OSError, ValueError, KeyError):
        return False


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
    ap.add_argument("--force", action="store_true", help="rebuild even if the shards are up to date")
    args = ap.parse_args(argv)
    try:
        return prepare(args.dataset, args.source, args.out_dir, args.shard_size, args.workers,
                       args.val_every, args.with_wikipedia, args.force, args.tokenizer)
    except (PrepareError, ShardError, sources.PinError) as e:
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    main()
