"""
Token shards in llm.c's .bin format, and the loaders that read them.

A shard is a 256 x int32 little-endian header [MAGIC, VERSION, n_tokens, 0, ...] followed by
n_tokens uint16 token ids (GPT-2's, or bytes: the directory's meta.json names the tokenizer). Shards written by llm.c (dev/data/fineweb.py) or modded-nanogpt
load here as they are, and ours load there. Files are named like llm.c's:
<prefix>_val_000000.bin, <prefix>_train_000001.bin, ...

TrainLoader design: the training stream is one GLOBAL sequence of windows of block_size+1 tokens
(stride block_size, never crossing a shard boundary), whose order depends only on the seed and
the epoch, never on the number of ranks. Each step consumes world_size * batch_size consecutive
windows of it and rank r takes windows [r*B, (r+1)*B) of those. So 2 ranks x B see exactly what
1 rank sees in two consecutive batches of B, ranks never overlap, and a checkpoint only needs the
position in the global sequence (it can even be resumed with another world size).
With shuffle=True each epoch visits the shards in a seeded random order and the windows inside a
shard in a seeded random order; only one shard's permutation is held at a time, so memory stays
small for any number of shards. Shards are memory-mapped once; a batch copies B x (T+1) tokens.
"""

import hashlib
import os
from pathlib import Path

import numpy as np

from data.catalog import prepare_command

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAGIC = 20240520
VERSION = 1  # uint16 tokens (llm.c's version 2 holds uint32 Llama-3 tokens)
SPLITS = ("train", "val")


class ShardError(ValueError):
    """A shard is missing, malformed, or does not fit the request; the message says how to fix it."""


def write_shard(path, tokens) -> str:
    """Write tokens (ints in [0, 65535]) as an llm.c shard; atomic: readers never see half a file,
    and the file is on disk (fsync) before its name is. Returns the file's sha256 (hex)."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ShardError(f"write_shard({path}): tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size >= 2**31:  # checked first: no need to scan an array this long
        raise ShardError(f"write_shard({path}): {tokens.size:,} tokens do not fit the int32 header count; "
                         f"use smaller shards")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ShardError(f"write_shard({path}): token ids must fit uint16, got range [{tokens.min()}, {tokens.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    data = np.ascontiguousarray(tokens, dtype="<u2")
    digest = hashlib.sha256(header.tobytes())
    digest.update(data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same dir, so os.replace is atomic
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:  # also on a full disk (OSError ENOSPC): no half-written file is left behind
        if tmp.exists():
            tmp.unlink()
    return digest.hexdigest()


def read_header(path) -> int:
    """Validate a shard's header against its file size; return its token count."""
    path = Path(path)
    remake = f"delete it and re-create it (e.g. {prepare_command(path.parent)} --force)"
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes is shorter than the {HEADER_BYTES}-byte header: "
                         f"the file is truncated or not a token shard; {remake}")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise ShardError(f"{path}: bad magic number {header[0]} (expected {MAGIC}): not an llm.c token "
                         f"shard (a nanoGPT train.bin/val.bin has no header); {remake}")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {VERSION}: uint16 "
                         f"tokens; llm.c's version 2 is uint32 Llama-3 tokens); {remake}")
    n = int(header[2])
    expected = HEADER_BYTES + 2 * n
    if size != expected:
        what = "truncated (an interrupted copy or download?)" if size < expected else "longer than its header says"
        raise ShardError(f"{path}: header says {n:,} tokens ({expected:,} bytes) but the file has {size:,} "
                         f"bytes: it is {what}; {remake}")
    return n


def read_shard(path) -> np.memmap:
    """The tokens of a shard as a read-only uint16 memmap (the header validated first)."""
    n = read_header(path)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)  # np.memmap cannot map zero bytes
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))


def list_shards(data_dir, split: str) -> list:
    """Sorted shard paths of a split: llm.c/modded-nanogpt names *_train_*.bin / *_val_*.bin."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob(f"*_{split}_*.bin")) if data_dir.is_dir() else []
    if not files:
        where = "does not exist" if not data_dir.is_dir() else f"has no {split} shards (*_{split}_*.bin)"
        raise ShardError(f"data directory {data_dir} {where}. Make them with: {prepare_command(data_dir)}")
    return files


def out_of_vocab(path, token, vocab_size, where="") -> ShardError:
    """The error for a token id the model cannot embed (a shard made with another tokenizer)."""
    return ShardError(
        f"{path}: token id {token} is not below vocab_size {vocab_size}{where}; the shard was made with another "
        f"tokenizer: re-create it with {prepare_command(Path(path).parent)} --force, or raise vocab_size")


def load_tokens(data_dir, split: str = "val", vocab_size: int = None) -> np.ndarray:
    """All tokens of a split: a memmap for one shard, a concatenated copy for several.
    With vocab_size, every token is checked to be below it (one pass; ~0.1 s per 100M tokens)."""
    files = list_shards(data_dir, split)
    shards = [read_shard(f) for f in files]
    if vocab_size is not None:
        for f, s in zip(files, shards):
            if len(s) and int(s.max()) >= vocab_size:
                raise out_of_vocab(f, int(s.max()), vocab_size, f" (at token {int(np.argmax(s >= vocab_size)):,})")
    return shards[0] if len(shards) == 1 else np.concatenate(shards)


def val_windows(tokens, length: int, n_windows: int = None) -> np.ndarray:
    """Non-overlapping evaluation windows: row w is tokens[w*length : w*length + length + 1]
    (inputs are row[:-1], targets row[1:]), int64, shape (n_windows, length + 1).
    n_windows=None takes as many as fit."""
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    n_tokens = len(tokens)
    fit = (n_tokens - 1) // length if n_tokens > 0 else 0
    n = fit if n_windows is None else n_windows
    need = max(n, 1) * length + 1
    if n < 1 or n > fit:
        raise ShardError(f"validation set has {n_tokens:,} tokens; {max(n, 1)} window(s) of {length} need "
                         f"{need:,}; use a shorter length, fewer windows, or prepare a larger validation split")
    starts = np.arange(n)[:, None] * length
    return np.asarray(tokens[: n * length + 1])[starts + np.arange(length + 1)].astype(np.int64)


class TrainLoader:
    """Batches (x, y) of int64 CPU tensors, shape (batch_size, block_size), y = x shifted by one.
    See the module docstring for the stream design."""

    def __init__(self, data_dir, batch_size, block_size, rank=0, world_size=1, seed=1337,
                 shuffle=True, vocab_size=50304):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.B, self.T = batch_size, block_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.vocab_size = seed, shuffle, vocab_size
        self.files = list_shards(data_dir, "train")
        self.shards = [read_shard(f) for f in self.files]  # mapped once, for the loader's lifetime
        # windows of T+1 tokens at stride T: the last token of one is the first of the next
        self.n_windows = np.array([max(len(s) - 1, 0) // block_size for s in self.shards], dtype=np.int64)
        self.windows_per_epoch = int(self.n_windows.sum())
        per_step = world_size * batch_size
        if self.windows_per_epoch < per_step:
            raise ShardError(
                f"{data_dir}: the train split holds {sum(map(len, self.shards)):,} tokens = "
                f"{self.windows_per_epoch} windows of {block_size + 1} tokens, but one step needs "
                f"world_size*batch_size = {per_step}; use a smaller batch or block size, or prepare more data")
        self.epoch, self.index = 0, 0  # position of the next window of the global sequence
        self._orders = {}  # epoch -> (shard order, cumulative window counts in that order)
        self._perms = {}  # (epoch, shard) -> window order within the shard; at most two kept

    def _epoch_order(self, epoch):
        if epoch not in self._orders:
            order = np.arange(len(self.shards))
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(order)
            self._orders = {epoch: (order, np.cumsum(self.n_windows[order]))}
        return self._orders[epoch]

    def _window_start(self, epoch, index):
        """(shard, first token) of window `index` of the given epoch."""
        order, cum = self._epoch_order(epoch)
        k = int(np.searchsorted(cum, index, side="right"))
        shard = int(order[k])
        local = index - (int(cum[k - 1]) if k else 0)
        if self.shuffle:
            key = (epoch, shard)
            if key not in self._perms:
                if len(self._perms) >= 2:  # the current shard and the one a step may run into
                    self._perms.pop(next(iter(self._perms)))
                rng = np.random.default_rng([self.seed, epoch, shard])
                self._perms[key] = rng.permutation(int(self.n_windows[shard]))
            local = int(self._perms[key][local])
        return shard, local * self.T

    def next_batch(self):
        B, T = self.B, self.T
        buf = np.empty((B, T + 1), dtype=np.int64)
        first = self.index + self.rank * B
        where = []
        for i in range(B):
            epoch, index = divmod(first + i, self.windows_per_epoch)
            shard, start = self._window_start(self.epoch + epoch, index)
            buf[i] = self.shards[shard][start:start + T + 1]
            where.append((shard, start))
        if buf.max() >= self.vocab_size:  # one cheap check per batch; locate the culprit only on error
            i = int(np.argmax(buf.max(axis=1) >= self.vocab_size))
            shard, start = where[i]
            raise out_of_vocab(self.files[shard], int(buf[i].max()), self.vocab_size,
                               f" (in tokens {start}..{start + T})")
        epochs, self.index = divmod(self.index + self.world_size * B, self.windows_per_epoch)
        self.epoch += epochs
        import torch  # here, so that data preparation (which imports this module) does not load torch

        t = torch.from_numpy(buf)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def state_dict(self) -> dict:
        """Position in the global stream plus what defines the stream (plain ints/strs/lists)."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "shuffle": self.shuffle,
                "block_size": self.T, "shards": [f.name for f in self.files],
                "shard_tokens": [len(s) for s in self.shards]}

    def load_state_dict(self, state: dict):
        """Resume at exactly the batch that followed the saved state (any world size/batch size)."""
        mine = self.state_dict()
        for key in ("seed", "shuffle", "block_size", "shards", "shard_tokens"):
            if state[key] != mine[key]:
                raise ShardError(
                    f"cannot resume the data stream: the checkpoint's {key} ({_short(state[key])}) differs "
                    f"from this loader's ({_short(mine[key])}); resume with the same data and settings, "
                    f"or start the data stream afresh (do not load the loader state)")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def _short(value, n=80):
    s = repr(value)
    return s if len(s) <= n else s[:n] + "..."
