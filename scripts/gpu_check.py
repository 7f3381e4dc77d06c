"""
The GPU path in one command: correctness, benchmarks and the small reproduction on one GPU,
each part in its own process under its own time limit, into one directory of at most 8 files.
Run it through scripts/gpu_check.sh (which checks the data and the Python first):

    bash scripts/gpu_check.sh                       # every part (at most 9 minutes: --budget)
    bash scripts/gpu_check.sh tests errors          # some parts; aliases: correctness, bench
    GPU_CHECK_OUT=/tmp/check bash scripts/gpu_check.sh

Parts, in this order (a part that fails or runs out of time is reported and the next runs;
the figures the kernels' targets need come first):
  bench_train      scripts/bench_train.py: 124M, B=16, T=1024, bf16, compiled; softmax, lssar,
                   lssa (time to the first step from a cold compile cache, then tokens/s)
  bench_attention  scripts/bench_attention.py at T = 1024, 4096, 16384, head dims 64 and 128
                   (SDPA as dispatched, flash and cuDNN; the kernels; the reference)
  tests            pytest -m gpu (fixed kernel tiles where a test asks for them; parallel
                   workers with pytest-xdist when it is installed)
  errors           scripts/kernel_errors.py: kernel vs float64 reference, forward and gradients
  bench_types      bench_train for softmax and every other type (the baselines and ablations),
                   fewer steps; its JSON is written after each type, so a run the --budget cuts
                   short keeps what it measured (`gpu_check.sh bench_types` runs it alone)
  repro            scripts/reproduce_small.sh gpu for softmax, lssa, lssar: train, sweep 1x-16x, plot
The whole run stops starting parts after --budget seconds. Files written (the lent GPU
machines of this project bring back at most 8, at most 2 folders deep): summary.md,
summary.json, log.txt, errors.json, bench_train.json, bench_types.json, bench_attention.json,
small.tar.gz (results/small/ of the repro part). The summary table is printed last.
--smoke runs every part at toy sizes on the CPU, the repro as a dry run (the test suite checks
the plumbing with it).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("bench_train", "bench_attention", "tests", "errors", "bench_types", "repro")
ALIASES = {"correctness": ("tests", "errors"), "bench": ("bench_train", "bench_types", "bench_attention"),
           "all": PARTS}
# seconds; on one H200 (results/gpu/NVIDIA-H200/) tests took 135 s with 16 workers, errors 30,
# bench_attention 33, repro ~140; bench_train over 185 (compiling lssar's graph is the slow part)
LIMITS = {"tests": 200, "errors": 45, "bench_train": 240, "bench_types": 330, "bench_attention": 120, "repro": 150}
# The targets (issue 21), checked in the summary: ratios to softmax's training / to the fastest
# SDPA backend at head dim 64, seconds to the first training step, 16x over 1x loss
TARGETS = {"lssa tokens/s": (0.94, ">="), "lssar tokens/s": (0.85, ">="), "lssa peak memory": (1.10, "<="),
           "lssar peak memory": (1.10, "<="), "lssa first step s": (45.0, "<="), "lssar first step s": (60.0, "<="),
           "lssa fwd T=16384": (1.6, "<="), "lssar fwd T=16384": (3.5, "<="),
           "lssa fwd+bwd T=16384": (2.0, "<="), "lssar fwd+bwd T=16384": (3.2, "<="),
           "lssar 16x/1x": (1.02, "<=")}
# issue 22, for every type bench_types measures (softmax's ratio is 1 by definition)
TYPE_TARGETS = {"tokens/s": (0.7, ">="), "peak memory": (1.25, "<=")}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="*", default=["all"], help=f"{', '.join(PARTS)} or {', '.join(ALIASES)}")
    ap.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT"), help="default results/gpu/<gpu name>/")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET", 540)),
                    help="seconds after which no part starts and a running one is cut short")
    ap.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS", help="one part's time limit")
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks this script only")
    ap.add_argument("--data_dir", default="data/embedded", help="--smoke: token shards for bench_train")
    ap.add_argument("--vocab_size", type=int, default=50304, help="--smoke: their vocabulary size")
    args = ap.parse_args(argv)
    parts = []
    for name in args.parts:
        if name not in PARTS and name not in ALIASES:
            ap.error(f"unknown part {name!r}; choose from {', '.join(PARTS + tuple(ALIASES))}")
        parts += [p for p in ALIASES.get(name, (name,)) if p not in parts]
    args.parts = [p for p in PARTS if p in parts]   # always in the documented order
    args.limits = {part: 600.0 for part in PARTS} if args.smoke else dict(LIMITS)   # the interpreter is slow
    if args.smoke:
        args.budget = max(args.budget, 3000.0)
    for item in args.limit:
        part, _, seconds = item.partition("=")
        if part not in PARTS:
            ap.error(f"--limit {item}: unknown part {part!r}")
        args.limits[part] = float(seconds)
    return args


def commands(args, out):
    """part -> (argv, extra environment). The GPU sizes, or toy ones with --smoke."""
    py = sys.executable
    if args.smoke:
        data = [f"--data_dir={args.data_dir}", "--model=tiny", f"--vocab_size={args.vocab_size}", "--block_size=32"]
        return {
            "tests": ([py, "-m", "pytest", "-q", "-m", "gpu", "tests/test_kernels.py", "-k", "long_forward"], {}),
            "errors": ([py, "scripts/kernel_errors.py", "--cpu-smoke", "--out", f"{out}/errors.json"], {}),
            "bench_train": ([py, "scripts/bench_train.py", "config/demo_cpu.py", "--attention", "softmax", "lssar",
                             "--steps", "4", "--warmup", "2", "--log_interval", "2", "--batch_size", "2",
                             "--out", f"{out}/bench_train.json", "--"] + data, {}),
            "bench_types": ([py, "scripts/bench_train.py", "config/demo_cpu.py", "--attention", "softmax", "relu_l1",
                             "--steps", "4", "--warmup", "2", "--log_interval", "2", "--batch_size", "2",
                             "--out", f"{out}/bench_types.json", "--"] + data, {}),
            "bench_attention": ([py, "scripts/bench_attention.py", "--cpu-smoke", "--out",
                                 f"{out}/bench_attention.json"], {}),
            "repro": (["bash", "scripts/reproduce_small.sh", "gpu"],   # the commands only
                      {"MAIN": "softmax lssa lssar", "PASSKEY": "0", "BASELINES": "0", "DRY_RUN": "1"}),
        }
    xdist = ["-n", str(min(16, os.cpu_count() or 1))] if _has("xdist") else []
    from attention import ATTENTION_TYPES   # bench_types: softmax, then all but the three bench_train has
    others = [t for t in ATTENTION_TYPES if t not in ("softmax", "lssa", "lssar")]
    return {
        "tests": ([py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"] + xdist, {}),
        "errors": ([py, "scripts/kernel_errors.py", "--workers", "8", "--out", f"{out}/errors.json"], {}),
        "bench_train": ([py, "scripts/bench_train.py", "--attention", "softmax", "lssar", "lssa", "--steps", "40",
                         "--warmup", "15", "--log_interval", "5", "--out", f"{out}/bench_train.json"], {}),
        "bench_types": ([py, "scripts/bench_train.py", "--attention", "softmax", *others, "--steps", "30",
                         "--warmup", "10", "--log_interval", "5", "--out", f"{out}/bench_types.json"], {}),
        "bench_attention": ([py, "scripts/bench_attention.py", "--T", "1024", "4096", "16384", "--d", "64", "128",
                             "--no-compile", "--no-flex", "--reference-max-T", "4096", "--reps", "5", "--warmup", "3",
                             "--window-ms", "20", "--out", f"{out}/bench_attention.json"], {}),
        "repro": (["bash", "scripts/reproduce_small.sh", "gpu"],
                  {"MAIN": "softmax lssa lssar", "PASSKEY": "0", "BASELINES": "0"}),
    }


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


def run_part(name, argv, env, limit, log):
    """Run one part; returns its status record. Output goes to the log as it comes."""
    log.write(f"\n===== {name}: {' '.join(argv)} (limit {limit:.0f} s)\n")
    log.flush()
    start = time.time()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=max(1.0, limit))
        status = "ok" if rc == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)   # the part and everything it started
        proc.wait()
        rc, status = None, "timeout"
    seconds = time.time() - start
    log.write(f"===== {name}: {status} (exit {rc}) after {seconds:.0f} s\n")
    log.flush()
    return {"status": status, "returncode": rc, "seconds": round(seconds, 1), "limit": limit}


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(out, log_path, small_dir=None):
    """The figures of every part that left results, for the summary (small_dir: the repro's results)."""
    found = {}
    with open(log_path, errors="replace") as f:
        log = f.read()
    counts = re.findall(r"=+ ?(.*?(?:passed|failed|error|skipped).*?) in [\d.]+s", log)
    if counts:
        found["tests"] = counts[-1]
    errors = _load(f"{out}/errors.json")
    if errors:
        rows = errors["results"]
        found["errors"] = {"cases": len(rows), "within_tolerance": sum(r["ok"] for r in rows),
                           "worst": {dt: max(max(r["err"].values()) for r in rows if r["dtype"] == dt)
                                     for dt in sorted({r["dtype"] for r in rows})}}
    for part in ("bench_train", "bench_types"):
        bench = _load(f"{out}/{part}.json")
        if bench:
            found[part] = [{k: r.get(k) for k in ("attention", "first_step_s", "tokens_per_s", "tokens_per_s_min",
                                                  "tokens_per_s_max", "ratio", "mfu", "peak_mem_gib",
                                                  "mem_ratio", "error")} for r in bench["results"]]
    attn = _load(f"{out}/bench_attention.json")
    if attn:
        found["bench_attention"] = [{k: r.get(k) for k in ("d", "T", "B", "mode", "attention", "impl", "backend", "ms",
                                                           "ms_min", "ms_max", "x_sdpa", "sdpa_impl", "peak_mib",
                                                           "x_sdpa_mem", "error", "skipped")}
                                    for r in attn["results"]]
    sweep = _load(os.path.join(small_dir, "sweep.json")) if small_dir else None
    if sweep:
        found["repro"] = [{"run": r["run"], "attention": r["attention"], "reweight_p": r["reweight_p"],
                           "losses": {f"{x['length'] // r['train_context']}x": x["loss"] for x in r["results"]}}
                          for r in sweep["runs"]]
    return found


def targets(found):
    """The issue's targets against what was measured (absent where the part left nothing)."""
    values = {}
    for r in found.get("bench_train", []):
        if r["attention"] in ("lssa", "lssar") and r.get("ratio") is not None:
            values[f"{r['attention']} tokens/s"] = r["ratio"]
            values[f"{r['attention']} peak memory"] = r.get("mem_ratio")
        if r["attention"] in ("lssa", "lssar"):
            values[f"{r['attention']} first step s"] = r.get("first_step_s")
    for r in found.get("bench_attention", []):
        if r["impl"] == "triton" and r.get("d", 64) == 64 and r["T"] == 16384 and r.get("x_sdpa"):
            values[f"{r['attention']} {r['mode']} T=16384"] = r["x_sdpa"]
    for r in found.get("repro", []):
        if r["attention"] == "lssar" and "16x" in r["losses"]:
            values["lssar 16x/1x"] = r["losses"]["16x"] / r["losses"]["1x"]
    bounds = dict(TARGETS)
    for r in found.get("bench_types", []):
        if r["attention"] != "softmax" and r.get("ratio") is not None:
            values[f"{r['attention']} tokens/s"] = r["ratio"]
            values[f"{r['attention']} peak memory"] = r.get("mem_ratio")
            bounds.update({f"{r['attention']} {what}": bound for what, bound in TYPE_TARGETS.items()})
    rows = []
    for name, (bound, op) in bounds.items():
        if values.get(name) is not None:
            v = values[name]
            rows.append({"target": name, "value": v, "bound": f"{op} {bound}",
                         "met": v >= bound if op == ">=" else v <= bound})
    return rows


def _fmt(value, spec):
    return "–" if value is None else format(value, spec)


def markdown(summary):
    lines = [f"# gpu_check: {summary['gpu']}", "",
             f"torch {summary['torch']}, triton {summary['triton']}, commit {summary['code']['commit'][:7]}"
             f"{' (dirty)' if summary['code']['dirty'] else ''}, {summary['date']}, {summary['seconds']:.0f} s", "",
             "| part | status | seconds |", "|---|---|---|"]
    lines += [f"| {p} | {r['status']} | {r['seconds']:.0f} |" for p, r in summary["parts"].items()]
    found = summary["found"]
    if "tests" in found:
        lines += ["", f"tests: {found['tests']}"]
    if "errors" in found:
        e = found["errors"]
        lines += ["", f"kernel vs float64 reference: {e['within_tolerance']} of {e['cases']} cases within tolerance; "
                      "worst relative error (Frobenius) per dtype: "
                      + ", ".join(f"{k} {v:.1e}" for k, v in e["worst"].items())]
    for part in ("bench_train", "bench_types"):
        if part not in found:
            continue
        lines += ["", "| attention | first step s | tokens/s [min, max] | x softmax | MFU | peak GiB | x softmax |",
                  "|---|---|---|---|---|---|---|"]
        for r in found[part]:
            if r.get("tokens_per_s") is None or r.get("ratio") is None:
                lines.append(f"| {r['attention']} | {r.get('error') or 'no ratio'} | | | | | |")
                continue
            spread = (f" [{r['tokens_per_s_min']:,.0f}, {r['tokens_per_s_max']:,.0f}]"
                      if r.get("tokens_per_s_min") is not None else "")
            lines.append(f"| {r['attention']} | {_fmt(r.get('first_step_s'), '.1f')} | {r['tokens_per_s']:,.0f}{spread} | "
                         f"{r['ratio']:.2f} | {_fmt(r['mfu'], '.1%')} | "
                         f"{_fmt(r['peak_mem_gib'], '.2f')} | {_fmt(r['mem_ratio'], '.2f')} |")
    if "bench_attention" in found:
        lines += ["", "| d | T | B | mode | attention | impl | ms [min, max] | x SDPA | peak MiB | x SDPA |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in found["bench_attention"]:
            head = f"| {r.get('d', '')} | {r['T']} | {r['B']} | {r['mode']} | {r['attention']} | {r['impl']}" + \
                (f" ({r['backend']})" if r.get("backend") else "")
            if r.get("ms") is None:
                lines.append(f"{head} | {r.get('error') or r.get('skipped')} | | | |")
                continue
            spread = f" [{r['ms_min']:.3f}, {r['ms_max']:.3f}]" if r.get("ms_min") is not None else ""
            lines.append(f"{head} | {r['ms']:.3f}{spread} | {_fmt(r.get('x_sdpa'), '.2f')} | "
                         f"{_fmt(r.get('peak_mib'), '.0f')} | {_fmt(r.get('x_sdpa_mem'), '.2f')} |")
    if "repro" in found:
        ms = list(found["repro"][0]["losses"])
        lines += ["", "| run | " + " | ".join(ms) + " | last/1x |", "|---|" + "---|" * (len(ms) + 1)]
        lines += [f"| {r['run']} | " + " | ".join(f"{r['losses'].get(m, float('nan')):.3f}" for m in ms)
                  + f" | {r['losses'][ms[-1]] / r['losses'][ms[0]]:.3f} |" for r in found["repro"]]
    if summary["targets"]:
        lines += ["", "| target | measured | bound | met |", "|---|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']:.3f} | {t['bound']} | {'yes' if t['met'] else 'NO'} |"
                  for t in summary["targets"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, REPO)
    import torch
    from runinfo import code_version, hardware
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        sys.exit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --smoke checks the script on a CPU")
    gpu = torch.cuda.get_device_name() if cuda else "cpu-smoke"
    out = os.path.abspath(args.out or os.path.join(REPO, "results", "gpu", re.sub(r"[^A-Za-z0-9._-]+", "-", gpu)))
    os.makedirs(out, exist_ok=True)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    log_path = os.path.join(out, "log.txt")
    started = time.time()
    parts = {}
    cmds = commands(args, out)
    with open(log_path, "w") as log:
        for name in args.parts:
            left = args.budget - (time.time() - started)
            if left < 10:
                parts[name] = {"status": "skipped", "returncode": None, "seconds": 0.0,
                               "limit": args.limits[name], "why": "the --budget was spent"}
                continue
            command, env = cmds[name]
            print(f"[gpu_check] {name} (limit {min(args.limits[name], left):.0f} s)", flush=True)
            parts[name] = run_part(name, command, env, min(args.limits[name], left), log)
            print(f"[gpu_check] {name}: {parts[name]['status']} after {parts[name]['seconds']:.0f} s", flush=True)
    small_dir = None if args.smoke else os.path.join(REPO, "results", "small")   # --smoke: a dry run
    if "repro" in args.parts and small_dir and os.path.isdir(small_dir):
        with tarfile.open(os.path.join(out, "small.tar.gz"), "w:gz") as tar:
            tar.add(small_dir, arcname="small")
    found = collect(out, log_path, small_dir)
    summary = {"gpu": gpu, "torch": torch.__version__, "triton": triton_version, "code": code_version(),
               "hardware": hardware("cuda" if cuda else "cpu"), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join(["bash", "scripts/gpu_check.sh"] + (argv if argv is not None else sys.argv[1:])),
               "seconds": time.time() - started, "parts": parts, "found": found, "targets": targets(found)}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    text = markdown(summary)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print("\n" + text + f"\n[gpu_check] wrote {out}/")
    return 0 if all(r["status"] == "ok" for r in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
