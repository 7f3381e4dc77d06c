"""
Is training deterministic? The same run's losses, step by step, from two train.py processes
started together, and from a run killed after its checkpoint at --resume_at and resumed, must
equal bit for bit (the kernels' tiles are pinned once per run: docs/kernels.md).

    python scripts/determinism.py --out determinism.json      # a GPU: 124M lssar, bf16, eager, 20 steps
    python scripts/determinism.py --steps 4 --resume_at 2 -- config/demo_cpu.py --model=tiny   # any config

Writes JSON with each run's losses, whether they are equal and the first step where they are not;
exits 1 when a pair differs.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from runinfo import code_version, hardware, write_json  # noqa: E402

# 124M on the embedded corpus as gpu_check carries it; eager (compiling would be most of the time)
DEFAULT_TRAIN = ["config/paper_124m.py", "--dataset=embedded", "--compile=False", "--batch_size=8",
                 "--total_batch_size=0", "--eval_iters=1"]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", default="lssar")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--resume_at", type=int, default=10, help="the step the interrupted run is killed after")
    ap.add_argument("--work", default=None, help="run directories (default: a temporary one, removed)")
    ap.add_argument("--out", default=None, help="JSON path")
    extra = []
    if "--" in argv:   # what follows goes to train.py as it is (a config first)
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = ap.parse_args(argv)
    if not 0 < args.resume_at < args.steps:
        ap.error(f"--resume_at must lie between 0 and --steps={args.steps}; got {args.resume_at}")
    args.train = extra or DEFAULT_TRAIN
    return args


def first_difference(a, b):
    """The first step at which two {step: loss} differ (a step only one of them has counts), or None."""
    for step in sorted(set(a) | set(b)):
        if a.get(step) != b.get(step):
            return step
    return None


def losses(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work = args.work or tempfile.mkdtemp(prefix="determinism_")
    common = [*args.train, f"--attention={args.attention}", f"--max_iters={args.steps}", "--log_interval=1",
              f"--eval_interval={10 * args.steps}", f"--ckpt_interval={args.resume_at}", "--keep_checkpoints=1"]

    def start(name, *more, env=None):
        log = open(os.path.join(work, f"{name}.log"), "a")
        return subprocess.Popen([sys.executable, "train.py", *common, f"--out_dir={os.path.join(work, name)}", *more],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    # two processes at once, then one killed (kill -9) after the checkpoint at resume_at and resumed
    pair = [start("first"), start("second")]
    codes = [p.wait() for p in pair]
    killed = start("resumed", env={"TRAIN_CRASH_AFTER_STEP": str(args.resume_at)}).wait()
    resumed = start("resumed", "--init_from=resume").wait()
    if any(codes) or killed != -9 or resumed:
        sys.exit(f"determinism: a training run failed (exit codes {codes}, killed {killed}, resumed {resumed}); "
                 f"see the logs in {work}")
    runs = {name: losses(os.path.join(work, name)) for name in ("first", "second", "resumed")}
    checks = {"two_processes": first_difference(runs["first"], runs["second"]),
              "resumed": first_difference(runs["first"], runs["resumed"])}
    result = {"command": " ".join(["python", "scripts/determinism.py"] + (sys.argv[1:] if argv is None else argv)),
              "code": code_version(), "hardware": hardware("cuda" if torch.cuda.is_available() else "cpu"),
              "attention": args.attention, "steps": args.steps, "resume_at": args.resume_at,
              "equal": {k: v is None for k, v in checks.items()}, "first_difference": checks,
              "losses": {name: [run.get(s) for s in range(1, args.steps + 1)] for name, run in runs.items()}}
    if args.out:
        write_json(result, args.out)
    for name, step in checks.items():
        print(f"{name}: " + ("equal bit for bit over {} steps".format(args.steps) if step is None else
                             f"DIFFERENT from step {step}: {runs['first'].get(step)!r} vs "
                             f"{runs['second' if name == 'two_processes' else 'resumed'].get(step)!r}"))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(v is None for v in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
