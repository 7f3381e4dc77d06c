"""
End-to-end training throughput for each attention type, measured in one run: tokens/s, MFU
and peak GPU memory of train.py itself (the same step, data loader, compile and optimizer
that users run), so a figure here is a figure users get.

    python data/prepare.py embedded
    python scripts/bench_train.py --out results/bench_train.json         # 124M, B=16, T=1024, bf16, compiled
    python scripts/bench_train.py config/paper_350m.py --attention softmax lssar -- --batch_size=8

Each attention type trains --steps optimizer steps of the config (one micro-step of
batch_size x block_size tokens per step, on the embedded corpus unless overridden after
`--`); throughput is the median (with min and max) over the log intervals after --warmup
steps (compilation and autotuning happen there). The time to the first step is train.py's
(from its start to the end of step 1), from empty Triton and Inductor caches (a fresh cache
directory per type: a start-up from the caches of an earlier run would hide compile time;
--warm-cache keeps the usual ones). Prints a table with ratios to the first type and writes JSON with
the hardware, torch/triton versions and git commit.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import train  # noqa: E402
from attention import ATTENTION_TYPES  # noqa: E402
from configurator import load_config  # noqa: E402
from runinfo import code_version, hardware, write_json  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="config/paper_124m.py")
    p.add_argument("--attention", nargs="+", default=["softmax", "lssa", "lssar"],
                   choices=list(ATTENTION_TYPES) + ["all"], help="types, the first the ratios' base; "
                   "all: every type of attention.RECIPES")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=20, help="steps excluded from the figures")
    p.add_argument("--log_interval", type=int, default=5)
    p.add_argument("--warm-cache", action="store_true", help="keep the usual Triton/Inductor caches (start-up "
                   "then reuses what an earlier run compiled)")
    p.add_argument("--out", default=None, help="JSON path")
    extra = []
    if "--" in argv:  # what follows goes to train.py as it is
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = p.parse_args(argv)
    if "all" in args.attention:
        args.attention = list(ATTENTION_TYPES)
    args.extra = extra
    return args


def bench_one(args, attention, out_dir):
    overrides = [f"--attention={attention}", f"--out_dir={out_dir}", f"--batch_size={args.batch_size}",
                 "--total_batch_size=0", f"--max_iters={args.steps}", f"--log_interval={args.log_interval}",
                 f"--eval_interval={10 * args.steps}", "--eval_iters=1", f"--ckpt_interval={10 * args.steps}",
                 "--keep_checkpoints=1", "--dataset=embedded", "--warmup_iters=10"]
    argv = [args.config] + overrides + args.extra
    saved = {k: os.environ.get(k) for k in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")}
    if not args.warm_cache:   # a cold start: compile everything this type needs
        os.environ.update(TRITON_CACHE_DIR=os.path.join(out_dir, "triton-cache"),
                          TORCHINDUCTOR_CACHE_DIR=os.path.join(out_dir, "inductor-cache"))
    try:
        train.main(argv)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    records = [r for r in lines if "tokens_per_s" in r]
    first = [r["first_step_s"] for r in lines if "first_step_s" in r]
    timed = [r for r in records if r["step"] > args.warmup]
    if not timed:
        raise RuntimeError(f"no log interval after --warmup={args.warmup}; raise --steps")
    cfg = load_config(argv)
    result = {"attention": attention, "first_step_s": first[0] if first else None,
              "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
              "tokens_per_s_min": min(r["tokens_per_s"] for r in timed),
              "tokens_per_s_max": max(r["tokens_per_s"] for r in timed),
              "step_time_s": statistics.median(r["time_s"] for r in timed), "intervals": len(timed),
              "config": {k: getattr(cfg, k) for k in ("model", "batch_size", "block_size", "dtype", "compile",
                                                         "attention_backend", "reweight_p")}}
    if "mfu" in timed[-1]:
        result["mfu"] = statistics.median(r["mfu"] for r in timed)
    if "peak_mem_gib" in timed[-1]:
        result["peak_mem_gib"] = max(r["peak_mem_gib"] for r in timed)
    return result


def with_ratios(results):
    """The rows with tokens/s and peak memory as ratios to the first type's."""
    base = results[0]
    for r in results:
        if "error" not in r and "error" not in base:
            r["ratio"] = r["tokens_per_s"] / base["tokens_per_s"]
            if "peak_mem_gib" in r:
                r["mem_ratio"] = r["peak_mem_gib"] / base["peak_mem_gib"]
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"command": " ".join(["python", "scripts/bench_train.py"] + (sys.argv[1:] if argv is None else argv)),
              "code": code_version(), "hardware": hardware(device), "results": []}
    results = report["results"]
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for attention in args.attention:
            try:
                results.append(bench_one(args, attention, os.path.join(tmp, attention)))
            except Exception as e:  # a compile failure, out of memory: report it, go on with the next type
                traceback.print_exc()
                results.append({"attention": attention, "error": f"{type(e).__name__}: {str(e).strip()[:300]}"})
            if args.out:   # after every type: a run cut short (gpu_check's time limits) keeps what it measured
                write_json(dict(report, results=with_ratios(results)), args.out)
            # the next type starts clean: no compiled graphs, no cached GPU memory from this one
            torch._dynamo.reset()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    with_ratios(results)
    print(f"\n{'attention':<22}{'first step s':>13}{'tokens/s':>12}{'ratio':>8}{'MFU':>8}{'peak GiB':>10}{'mem ratio':>10}")
    for r in results:
        if "ratio" not in r:
            print(f"{r['attention']:<22}{'failed: ' + r['error'][:70] if 'error' in r else 'no ratio: the first type failed'}")
            continue
        first = f"{r['first_step_s']:.1f}" if r.get("first_step_s") is not None else "-"
        print(f"{r['attention']:<22}{first:>13}{r['tokens_per_s']:>12,.0f}{r['ratio']:>8.2f}"
              f"{r.get('mfu', float('nan')):>8.1%}{r.get('peak_mem_gib', float('nan')):>10.2f}"
              f"{r.get('mem_ratio', float('nan')):>10.2f}")
    return report


if __name__ == "__main__":
    sys.exit(1 if any("error" in r for r in main()["results"]) else 0)
