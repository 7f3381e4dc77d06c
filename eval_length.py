"""
Validation loss against inference length: the length-extrapolation sweep.

    python eval_length.py out/small-softmax out/small-lssa out/small-lssar --out results/small.json
    python eval_length.py out/small-lssa --attention lssar --p 15     # lssa model, re-weighted at inference

For each checkpoint (a run directory means its newest checkpoint) and each length L (by
default 1x, 2x, 4x, 8x, 16x the checkpoint's training context), the same validation token
budget is cut into non-overlapping windows of L tokens; the loss is averaged over every
position, and also reported per position bucket (by default one bucket per training
context), because an all-position mean dilutes what happens far beyond the training length.
Writes JSON (and a CSV next to it) with the hardware, code version and the checkpoints' configs.
"""
import argparse
import csv
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone

import torch

from attention import ATTENTION_TYPES, describe
from checkpoint import evaluation_overrides, load_model
from configurator import REPO_ROOT
from data.catalog import shards_tokenizer
from data.shards import ShardError, load_tokens, val_windows
from runinfo import code_version, hardware, keep_freed_memory, pick_device, write_json


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def sweep_arguments(description):
    """The command line eval_length.py shares with scripts/attention_stats.py: which checkpoints,
    at which lengths, evaluated how, on which data and device."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="run directories or checkpoint files")
    p.add_argument("--multipliers", type=positive, nargs="+", default=[1, 2, 4, 8, 16],
                   help="lengths as multiples of each checkpoint's training context (default 1 2 4 8 16)")
    p.add_argument("--lengths", type=positive, nargs="+", help="absolute lengths instead of --multipliers")
    p.add_argument("--bucket", type=positive, default=None, help="position-bucket size (default: the training context)")
    p.add_argument("--attention", choices=ATTENTION_TYPES, help="evaluate with this attention type")
    p.add_argument("--p", type=float, default=None,
                   help="the re-weighting power p (with a re-weighted --attention; default: the checkpoint's reweight_p)")
    p.add_argument("--attention_backend", default=None, help="auto | reference | kernel")
    p.add_argument("--data_dir", default=None, help="validation shards (default: the checkpoint's dataset)")
    p.add_argument("--batch_tokens", type=positive, default=None,
                   help="tokens per forward pass (default 131072 on GPU, 8192 on CPU)")
    p.add_argument("--device", default="auto")
    return p


def parse_args(argv):
    p = sweep_arguments(__doc__)
    p.add_argument("--tokens", type=positive, default=None,
                   help="validation tokens per length (default 2^21, capped to what the validation set holds)")
    p.add_argument("--out", default=None, help="JSON path (a .csv is written beside it)")
    return p.parse_args(argv)


DEFAULT_TOKENS = 2 ** 21


def token_budget(requested, lengths, available):
    """The validation tokens every length gets: a multiple of every length (so each length
    sees exactly the same tokens), at most `requested` (default 2^21), at most what the
    validation set holds. An explicit request that does not fit is an error."""
    longest, usable = max(lengths), available - 1   # the last window needs one extra target token
    if usable < longest:
        raise ShardError(f"validation set has {available:,} tokens; a window of {longest:,} needs "
                         f"{longest + 1:,}; use shorter lengths or prepare a larger validation split")
    if requested and requested > usable:
        raise ShardError(f"--tokens {requested:,} is more than the validation set holds ({available:,} tokens); "
                         f"ask for {usable:,} or fewer")
    unit = math.lcm(*lengths)
    budget = min(requested or DEFAULT_TOKENS, usable) // unit * unit
    if budget == 0:
        asked = f"--tokens {requested:,} is too few: " if requested else ""
        fix = (f"ask for --tokens {unit:,} or more" if requested and unit <= usable
               else "use lengths that divide each other (e.g. --multipliers 1 2 4 8 16)")
        raise ShardError(f"{asked}lengths {', '.join(f'{n:,}' for n in lengths)} need a token budget that is a "
                         f"multiple of {unit:,} (every length sees the same tokens), and the validation split "
                         f"holds {available:,} tokens; {fix}")
    return budget


@torch.no_grad()
def sweep_one(model, tokens, lengths, budget, bucket, batch_tokens, device, autocast, label):
    from tqdm import tqdm
    results = []
    # On the CPU every batch's logits and log-probabilities go into this one buffer (see
    # model.token_losses); on a GPU they are bf16 under autocast, and the caching allocator
    # reuses its blocks by itself.
    on_cpu = torch.device(device).type == "cpu"
    buffer = torch.empty(2, 2048, model.config.vocab_size) if on_cpu else None
    for length in lengths:
        windows = torch.from_numpy(val_windows(tokens, length, budget // length))
        per_batch = max(1, batch_tokens // length)
        n_buckets = math.ceil(length / bucket)
        bucket_sum = torch.zeros(n_buckets, dtype=torch.float64)
        bucket_count = torch.zeros(n_buckets, dtype=torch.float64)
        position_bucket = torch.arange(length) // bucket
        t0 = time.time()
        for i in tqdm(range(0, len(windows), per_batch), desc=f"{label} L={length}", leave=False,
                      disable=not sys.stderr.isatty()):
            batch = windows[i:i + per_batch].to(device)
            with autocast:
                losses = model.token_losses(batch[:, :-1], batch[:, 1:], buffer=buffer)
            per_position = losses.double().sum(0).cpu()
            bucket_sum.index_add_(0, position_bucket, per_position)
            bucket_count.index_add_(0, position_bucket, torch.full((length,), float(len(batch)), dtype=torch.float64))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        n = int(bucket_count.sum().item())
        results.append({
            "length": length,
            "loss": bucket_sum.sum().item() / n,
            "tokens": n,
            "windows": len(windows),
            "buckets": [{"start": b * bucket, "end": min(length, (b + 1) * bucket),
                         "loss": (bucket_sum[b] / bucket_count[b]).item()} for b in range(n_buckets)],
            "time_s": round(time.time() - t0, 3),
        })
        print(f"  {label:<28} L={length:>6}  loss {results[-1]['loss']:.4f}  ({n:,} tokens, "
              f"{len(windows)} windows, {results[-1]['time_s']:.1f}s)")
    return results


def validation_tokens(ckpt, data_dir=None, cache=None):
    """(data_dir, tokens) of the validation split a checkpoint is evaluated on: data_dir if
    given, else the dataset it was trained on. `cache` (a dict) shares one load between the
    checkpoints of a sweep."""
    train_cfg, vocab_size = ckpt["config"], ckpt["model_config"]["vocab_size"]
    data_dir = data_dir or train_cfg.get("data_dir") or os.path.join(REPO_ROOT, "data", train_cfg["dataset"])
    trained_on, held = train_cfg["tokenizer"], shards_tokenizer(data_dir)[0]
    if held != trained_on:
        raise ShardError(f"{ckpt['path']} was trained on {trained_on} tokens but {data_dir} holds {held} tokens; "
                         f"pass --data_dir with {trained_on} shards (or leave it out: the checkpoint's own data)")
    cache = {} if cache is None else cache
    if (data_dir, vocab_size) not in cache:
        cache[data_dir, vocab_size] = load_tokens(data_dir, "val", vocab_size)
    return data_dir, cache[data_dir, vocab_size]


def start_sweep(args, script, argv):
    """(overrides, device, autocast, batch_tokens, report header) of an evaluation command line
    (see sweep_arguments): GPUs run under bf16 autocast with larger batches."""
    overrides = evaluation_overrides(args.attention, args.p, args.attention_backend)
    device = pick_device(args.device)
    on_gpu = device.startswith("cuda")
    if not on_gpu:
        keep_freed_memory()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext()
    batch_tokens = args.batch_tokens or (131072 if on_gpu else 8192)
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", script] + argv), "code": code_version(),
              "hardware": hardware(device), "runs": []}
    return overrides, device, autocast, batch_tokens, report


def run_name(ckpt):
    return os.path.basename(os.path.dirname(ckpt["path"]))


def run_label(model, ckpt):
    """How results name an evaluated checkpoint: "demo-lssa [lssar p=15]"."""
    return f"{run_name(ckpt)} [{describe(model.config.attention, model.config.reweight_p)}]"


def run_record(model, ckpt, overrides, data_dir, **results):
    """One checkpoint's entry in a result file: which checkpoint, evaluated how, its results,
    how far its training got, and its configs."""
    return {"checkpoint": ckpt["path"], "run": run_name(ckpt), "step": ckpt["step"], "label": run_label(model, ckpt),
            "trained_attention": ckpt["model_config"]["attention"], "attention": model.config.attention,
            "reweight_p": model.config.reweight_p, "overrides": overrides,
            "train_context": ckpt["model_config"]["block_size"], "data_dir": data_dir, **results,
            "training": final_losses(os.path.dirname(ckpt["path"]), ckpt["step"]),
            "config": ckpt["config"], "model_config": ckpt["model_config"]}


def final_losses(run_dir, step):
    """The run's last logged train and validation loss up to the checkpoint's step, from its
    metrics.jsonl, so that a sweep also shows how far training got (and any overfitting)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["step"] <= step:
                out.update({"train_loss": r["loss"]} if "loss" in r else {"val_loss": r["val_loss"]})
    return out


def main(argv):
    args = parse_args(argv)
    overrides, device, autocast, batch_tokens, report = start_sweep(args, "eval_length.py", argv)
    token_cache = {}
    for path in args.checkpoints:
        model, ckpt = load_model(path, device, **overrides)
        context = ckpt["model_config"]["block_size"]
        lengths = args.lengths or [m * context for m in args.multipliers]
        data_dir, tokens = validation_tokens(ckpt, args.data_dir, token_cache)
        budget = token_budget(args.tokens, lengths, len(tokens))
        print(f"{ckpt['path']}: trained with {ckpt['model_config']['attention']} at context {context}, "
              f"step {ckpt['step']}; evaluating {describe(model.config.attention, model.config.reweight_p)} on "
              f"{budget:,} validation tokens per length from {data_dir}")
        results = sweep_one(model, tokens, lengths, budget, args.bucket or context, batch_tokens, device, autocast,
                            run_label(model, ckpt))
        report["runs"].append(run_record(model, ckpt, overrides, data_dir, tokens_per_length=budget, results=results))
        del model
    print_table(report)
    if args.out:
        write_outputs(report, args.out)
    return report


def print_table(report):
    runs = report["runs"]
    multipliers = sorted({r["length"] / run["train_context"] for run in runs for r in run["results"]})
    head = f"{'run [attention]':<36}" + "".join(f"{m:>8g}x" for m in multipliers)
    print(head + "\n" + "-" * len(head))
    for run in runs:
        by_m = {r["length"] / run["train_context"]: r["loss"] for r in run["results"]}
        print(f"{run['label']:<36}" + "".join(f"{by_m[m]:>9.4f}" if m in by_m else f"{'':>9}" for m in multipliers))


def write_outputs(report, out):
    write_json(report, out)
    with open(os.path.splitext(out)[0] + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "trained_attention", "attention", "reweight_p", "step", "train_context", "length",
                    "multiplier", "loss", "tokens", "windows", "time_s"])
        for run in report["runs"]:
            for r in run["results"]:
                w.writerow([run["run"], run["trained_attention"], run["attention"], run["reweight_p"], run["step"],
                            run["train_context"], r["length"], r["length"] / run["train_context"], f"{r['loss']:.6f}",
                            r["tokens"], r["windows"], r["time_s"]])
    print(f"wrote {os.path.splitext(out)[0]}.csv")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ShardError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
