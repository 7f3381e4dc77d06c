"""
Downstream benchmarks through lm-evaluation-harness (lm-eval), zero-shot by default.

    python eval_downstream.py out/small-softmax out/small-lssar --out results/downstream.json \
        --tasks hellaswag,arc_easy,arc_challenge,piqa,winogrande,lambada_openai
    python eval_downstream.py out/small-lssa --attention lssar --p 15 --tasks arc_easy   # re-weighted
    python eval_downstream.py out/demo-lssar --include_path tests/lm_eval_tasks --tasks tiny_mc  # offline

Each checkpoint (a run directory means its newest checkpoint) is wrapped as harness.LssaGPT,
lm-eval's model type "lssa-gpt", and run on the tasks with lm_eval.simple_evaluate. lm-eval
downloads the standard tasks' data from the Hugging Face hub (once; then its cache serves
them); --include_path adds task YAMLs from a folder, which is how local tasks run offline.
Prints acc and acc_norm with their standard errors per run and task, and writes JSON (every
metric lm-eval reports) and a CSV beside it, with the hardware and code version.

lm-eval is an optional dependency: pip install -r requirements-eval.txt
"""
import argparse
import csv
import os
import sys
import time
from datetime import datetime, timezone

from attention import ATTENTION_TYPES, describe
from eval_length import final_losses, positive
from runinfo import code_version, hardware, keep_freed_memory, pick_device, write_json

STANDARD_TASKS = "hellaswag,arc_easy,arc_challenge,piqa,winogrande,lambada_openai"
INSTALL = "pip install -r requirements-eval.txt"


def limit_arg(text):
    """lm-eval's --limit: a number of examples per task, or a fraction of them below 1."""
    value = float(text)
    if value <= 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"must be a whole number of examples or a fraction in (0, 1), got {text}")
    return int(value) if value >= 1 else value


def window(text):
    """--max_length: a positive number of tokens, or '<k>x' with k a positive integer."""
    if text.endswith("x"):
        try:
            if int(text[:-1]) >= 1:
                return text
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"expected a positive integer followed by x (16x), got {text!r}")
    return positive(text)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="run directories or checkpoint files")
    p.add_argument("--tasks", default=STANDARD_TASKS, help=f"comma-separated lm-eval tasks (default {STANDARD_TASKS})")
    p.add_argument("--include_path", default=None, help="a folder of extra task YAMLs (e.g. tests/lm_eval_tasks)")
    p.add_argument("--stand_in", action="append", default=[], metavar="TASK=LOCAL",
                   help="run the local task LOCAL where TASK is asked for, its results filed under TASK and the "
                        "substitution recorded (a test of a recipe whose real data cannot be fetched: "
                        "scrolls_summscreenfd=tiny_gen); repeatable")
    p.add_argument("--num_fewshot", type=int, default=None, help="examples in the prompt (default: each task's, "
                   "zero for most)")
    p.add_argument("--limit", type=limit_arg, default=None, help="examples per task (or a fraction), for quick checks")
    p.add_argument("--batch_size", type=positive, default=16, help="requests per forward pass (default 16)")
    p.add_argument("--max_length", type=window, default=None,
                   help="tokens per window, or '<k>x' for k times each checkpoint's training context (the paper "
                        "recipe's 16x); longer contexts lose their left end (default: the training context; at "
                        "most 16x it)")
    p.add_argument("--attention", choices=ATTENTION_TYPES, help="evaluate with this attention type")
    p.add_argument("--p", type=float, default=None,
                   help="the re-weighting power p (with a re-weighted --attention; default: the checkpoint's reweight_p)")
    p.add_argument("--attention_backend", default=None, help="auto | reference | kernel")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="JSON path (a .csv is written beside it)")
    args = p.parse_args(argv)
    bad = [s for s in args.stand_in if s.count("=") != 1 or not all(s.split("="))]
    if bad:
        p.error(f"--stand_in takes TASK=LOCAL (e.g. scrolls_summscreenfd=tiny_gen), got {bad[0]!r}")
    args.stand_in = dict(s.split("=") for s in args.stand_in)
    return args


def import_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise SystemExit(f"error: eval_downstream.py needs lm-eval, an optional dependency: {INSTALL}") from None
    return lm_eval


def task_manager(tasks, include_path):
    """lm-eval's TaskManager for the tasks. When --include_path alone holds them all, lm-eval's
    own ~15,000 task configs are not indexed (that takes seconds)."""
    from lm_eval.tasks import TaskManager
    if include_path:
        if not os.path.isdir(include_path):
            raise FileNotFoundError(f"--include_path {include_path} is not a folder of task YAMLs")
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks and not any(c in t for c in "*?[")]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {', '.join(unknown)}; `python -m lm_eval ls tasks` lists them, "
                         f"and --include_path adds a folder of your own")
    return manager


def metrics_of(task_result):
    """{metric: {"value", "stderr"}} from lm-eval's {"acc,none": v, "acc_stderr,none": s, ...};
    a filter other than "none" stays in the name (exact_match,strict-match)."""
    out = {}
    for key, value in task_result.items():
        if "," not in key or "_stderr," in key:
            continue
        metric, filt = key.split(",", 1)
        stderr = task_result.get(f"{metric}_stderr,{filt}")
        out[metric if filt == "none" else key] = {
            "value": value, "stderr": stderr if isinstance(stderr, (int, float)) else None}
    return out


def main(argv):
    args = parse_args(argv)
    lm_eval = import_lm_eval()
    import harness  # needs lm-eval
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks is empty; give comma-separated lm-eval task names")
    device = pick_device(args.device)
    if not device.startswith("cuda"):
        keep_freed_memory()
    stand_ins = {t: local for t, local in args.stand_in.items() if t in tasks}
    run_tasks = list(dict.fromkeys(stand_ins.get(t, t) for t in tasks))   # what lm-eval runs
    manager = task_manager(run_tasks, args.include_path)
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "eval_downstream.py"] + argv), "code": code_version(),
              "hardware": hardware(device), "lm_eval": lm_eval.__version__, "tasks": tasks,
              "stand_ins": stand_ins, "num_fewshot": args.num_fewshot, "limit": args.limit, "runs": []}
    for path in args.checkpoints:
        lm = harness.LssaGPT(path, attention=args.attention, p=args.p, attention_backend=args.attention_backend,
                             max_length=args.max_length, batch_size=args.batch_size, device=device)
        ckpt, config = lm.ckpt, lm.model.config
        run = os.path.basename(os.path.dirname(ckpt["path"]))
        label = f"{run} [{describe(config.attention, config.reweight_p)}]"
        print(f"{ckpt['path']}: trained with {ckpt['model_config']['attention']} at context {lm.train_context}, "
              f"step {ckpt['step']}; evaluating {describe(config.attention, config.reweight_p)} on "
              f"{', '.join(tasks)} with windows of {lm.max_length} tokens")
        t0 = time.time()
        out = lm_eval.simple_evaluate(model=lm, tasks=run_tasks, num_fewshot=args.num_fewshot, limit=args.limit,
                                      task_manager=manager, log_samples=False)
        report["runs"].append({
            "checkpoint": ckpt["path"], "run": run, "step": ckpt["step"], "label": label, "stand_ins": stand_ins,
            "trained_attention": ckpt["model_config"]["attention"], "attention": config.attention,
            "reweight_p": config.reweight_p, "overrides": lm.overrides, "train_context": lm.train_context,
            "max_length": lm.max_length, "tokenizer": lm.tok.name,
            "results": filed_under(tasks, stand_ins, {task: metrics_of(r) for task, r in out["results"].items()}),
            "samples": filed_under(tasks, stand_ins, {task: n["effective"] for task, n in out["n-samples"].items()}),
            "n_shot": out["n-shot"], "versions": out["versions"], "time_s": round(time.time() - t0, 2),
            "training": final_losses(os.path.dirname(ckpt["path"]), ckpt["step"]),
            "model_config": ckpt["model_config"],
        })
        del lm
    print_table(report)
    if args.out:
        write_outputs(report, args.out)
    return report


def filed_under(tasks, stand_ins, by_task):
    """lm-eval's per-task entries with each stand-in's filed under the task it stands in for (and
    under its own name too where that was asked for)."""
    out = {t: v for t, v in by_task.items() if t not in stand_ins.values() or t in tasks}
    for task, local in stand_ins.items():
        if local in by_task:
            out[task] = by_task[local]
    return out


def _cell(metrics, name):
    m = metrics.get(name)
    if m is None:
        return f"{'-':>15}"
    return f"{m['value']:>7.4f} ± {m['stderr']:.4f}" if m["stderr"] is not None else f"{m['value']:>15.4f}"


def print_table(report):
    head = f"{'run [attention]':<32} {'task':<16} {'n':>6}  {'acc ± stderr':>16}  {'acc_norm ± stderr':>17}"
    print(head + "\n" + "-" * len(head))
    for run in report["runs"]:
        for task, metrics in run["results"].items():
            n = run["samples"].get(task, "")
            print(f"{run['label']:<32} {task:<16} {n:>6}  {_cell(metrics, 'acc'):>16}  {_cell(metrics, 'acc_norm'):>17}")


def write_outputs(report, out):
    write_json(report, out)
    path = os.path.splitext(out)[0] + ".csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "trained_attention", "attention", "reweight_p", "step", "train_context", "max_length",
                    "task", "samples", "metric", "value", "stderr"])
        for run in report["runs"]:
            for task, metrics in run["results"].items():
                for metric, m in metrics.items():
                    w.writerow([run["run"], run["trained_attention"], run["attention"], run["reweight_p"],
                                run["step"], run["train_context"], run["max_length"], task,
                                run["samples"].get(task, ""), metric, m["value"], m["stderr"]])
    print(f"wrote {path}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    except ConnectionError as e:  # datasets' offline and unreachable-hub errors are ConnectionErrors
        sys.exit(f"error: {e}. The standard tasks' data comes from the Hugging Face hub: run once where it "
                 f"can be reached (then its cache serves it offline), or give local tasks with --include_path")
