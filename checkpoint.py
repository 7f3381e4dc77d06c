"""
Checkpoints: written atomically, read without executing code.

A checkpoint is one file `ckpt_<step>.pt` in the run directory, holding plain tensors and
Python values only, so `torch.load(weights_only=True)` reads it: loading never runs code
from the file. It is written to a temporary file, flushed to disk and renamed into place,
so a crash (even kill -9) mid-write leaves the previous checkpoint intact.
"""
import glob
import os
import re

import torch

from attention import REWEIGHTED_TYPES
from data.tokenizer import load_tokenizer
from model import GPT, GPTConfig

CKPT_RE = re.compile(r"ckpt_(\d+)\.pt$")


def checkpoint_path(out_dir, step):
    return os.path.join(out_dir, f"ckpt_{step:06d}.pt")


def list_checkpoints(out_dir):
    """[(step, path)] of the complete checkpoints in out_dir, oldest first."""
    found = []
    for path in glob.glob(os.path.join(out_dir, "ckpt_*.pt")):
        m = CKPT_RE.search(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def save_checkpoint(state, out_dir, step, keep=2):
    """Write state as ckpt_<step>.pt atomically, then delete all but the newest `keep`."""
    path = checkpoint_path(out_dir, step)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    for _, old in list_checkpoints(out_dir)[:-max(1, keep)]:
        os.remove(old)
    return path


def resolve_checkpoint(path):
    """A checkpoint file, or the newest checkpoint of a run directory."""
    if os.path.isdir(path):
        ckpts = list_checkpoints(path)
        if not ckpts:
            raise FileNotFoundError(f"no checkpoint (ckpt_*.pt) in {path}; train one with "
                                    f"`python train.py CONFIG --out_dir={path}`")
        return ckpts[-1][1]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def strip_compile_prefix(state_dict):
    """torch.compile wraps the model as `_orig_mod`; accept checkpoints saved from either."""
    prefix = "_orig_mod."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict of a file or run directory (weights_only: no code is executed)."""
    path = resolve_checkpoint(path)
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    ckpt["model"] = strip_compile_prefix(ckpt["model"])
    ckpt["path"] = path
    ckpt["config"].setdefault("tokenizer", "gpt2")  # written before byte-level data existed: GPT-2 tokens
    return ckpt


def tokenizer_of(run):
    """The tokenizer (data/tokenizer.py) a model was trained with, from its checkpoint dict, run
    directory or checkpoint file: every script that turns text into tokens for a model or back
    asks here, so a byte-level model is never fed GPT-2 ids."""
    ckpt = run if isinstance(run, dict) else load_checkpoint(run)
    return load_tokenizer(ckpt["config"]["tokenizer"])


def evaluation_overrides(attention=None, p=None, attention_backend=None):
    """GPTConfig overrides for evaluating a checkpoint otherwise than it was trained (the
    --attention/--p/--attention_backend options of the evaluation scripts); None keeps the
    checkpoint's own value."""
    if p is not None and attention not in REWEIGHTED_TYPES:
        raise ValueError(f"--p sets the re-weighting power: use it with --attention {' | '.join(REWEIGHTED_TYPES)}")
    return {k: v for k, v in (("attention", attention), ("reweight_p", p), ("attention_backend", attention_backend))
            if v is not None}


def load_model(path, device="cpu", **overrides):
    """(GPT in eval mode, checkpoint dict). `overrides` change GPTConfig fields, e.g.
    attention="lssar" to evaluate an lssa-trained model with re-weighting."""
    ckpt = load_checkpoint(path, map_location=device)
    config = GPTConfig(**{**ckpt["model_config"], **overrides})
    model = GPT(config)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{ckpt['path']} (trained with {ckpt['model_config']['attention']}) does not fit "
                         f"attention={config.attention}: missing {missing}, unexpected {unexpected}. ssmax has "
                         f"learned per-head scales, so only an ssmax checkpoint can be evaluated as ssmax")
    return model.to(device).eval(), ckpt
