"""
The GPU path in one command: training speed, every kernel tile, determinism, the other types,
attention alone and the error table on one GPU, each part in its own process under its own time
limit, into one directory of at most 8 files. Run it through scripts/gpu_check.sh (which checks
the data and the Python first):

    bash scripts/gpu_check.sh                       # every part (at most 9 minutes: --budget)
    bash scripts/gpu_check.sh tiles errors          # some parts; aliases: correctness, bench
    GPU_CHECK_OUT=/tmp/check bash scripts/gpu_check.sh

Parts of `all`, in this order (a part that fails or runs out of time is reported and the next
runs; each limit, in seconds, is sized from the H200 run in results/gpu/NVIDIA-H200/, so the
limits add up to the 540 s budget):
  bench_train      170  scripts/bench_train.py: 124M, B=16, T=1024, bf16, compiled; lssar, lssa,
                        softmax, each from cold caches (time to the first step, then tokens/s)
  tiles            100  pytest -m gpu tests/test_tiles.py: every entry of this GPU's tile table
                        launched explicitly, every fused type, bf16/fp16/fp32, head dims 64/128
                        (needs pytest; parallel workers with pytest-xdist, serial without: then it
                        will not finish in its limit)
  determinism       60  scripts/determinism.py: lssar's losses over 20 steps from two processes at
                        once and from a run killed at step 10 and resumed, bit for bit
  bench_types      140  bench_train for softmax and every other fused type (warm caches; its JSON
                        is written after each type, so a cut run keeps what it measured)
  bench_attention   35  scripts/bench_attention.py at T = 16384, head dims 64 and 128 (the kernels
                        against SDPA's flash and cuDNN backends)
  errors            35  scripts/kernel_errors.py: kernel vs float64 reference, forward and gradients
Not in `all` (name them): tests (pytest -m gpu, 200 s) and repro (scripts/reproduce_small.sh gpu
for softmax, lssa, lssar, 150 s).
The whole run stops starting parts after --budget seconds. Files written (at most 8, at most 2
folders deep, so that the folder is quick to copy back from a remote machine): summary.md,
summary.json (the determinism part's result too), log.txt, errors.json, bench_train.json,
bench_types.json, bench_attention.json, and small.tar.gz (results/small/ of the repro part). The summary table is
printed last. The output directory: --out, else GPU_CHECK_OUT, else OUT (an output folder a job
runner collects), else results/gpu/<gpu name>/.
--smoke runs every part at toy sizes on the CPU, the repro as a dry run (the test suite checks
the plumbing with it).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("bench_train", "tiles", "determinism", "bench_types", "bench_attention", "errors", "tests", "repro")
ALIASES = {"correctness": ("tiles", "determinism", "errors"),
           "bench": ("bench_train", "bench_types", "bench_attention"),
           "all": PARTS[:6]}
# seconds, adding up to the default budget; from the H200 run (results/gpu/NVIDIA-H200/): a compiled
# 124M start-up took 39 s (softmax) to 55 s (lssa, with autotuning); lssar's had not finished at 65 s;
# the error table took 30 s, attention at three T 33 s, pytest -m gpu 135 s with 16 workers
LIMITS = {"bench_train": 170, "tiles": 100, "determinism": 60, "bench_types": 140, "bench_attention": 35,
          "errors": 35, "tests": 200, "repro": 150}
NEEDS_PYTEST = ("tiles", "tests")
# The kernels' targets, checked in the summary: ratios to softmax's training / to the fastest
# SDPA backend at head dim 64, seconds to the first training step, 16x over 1x loss
TARGETS = {"lssa tokens/s": (0.94, ">="), "lssar tokens/s": (0.85, ">="), "lssa peak memory": (1.10, "<="),
           "lssar peak memory": (1.10, "<="), "lssa first step s": (45.0, "<="), "lssar first step s": (60.0, "<="),
           "lssa fwd T=16384": (1.6, "<="), "lssar fwd T=16384": (3.5, "<="),
           "lssa fwd+bwd T=16384": (2.0, "<="), "lssar fwd+bwd T=16384": (3.2, "<="),
           "lssar 16x/1x": (1.02, "<=")}
# the other types' targets, for every type bench_types measures (softmax's ratio is 1 by definition)
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


def commands(args, out, work):
    """part -> (argv, extra environment). The GPU sizes, or toy ones with --smoke. work: a scratch
    directory (the determinism part's JSON, folded into summary.json)."""
    py = sys.executable
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu"]
    determinism = [py, "scripts/determinism.py", "--out", f"{work}/determinism.json"]
    if args.smoke:
        data = [f"--data_dir={args.data_dir}", "--model=tiny", f"--vocab_size={args.vocab_size}", "--block_size=32"]
        train = ["--steps", "4", "--warmup", "2", "--log_interval", "2", "--batch_size", "2"]
        return {
            "bench_train": ([py, "scripts/bench_train.py", "config/demo_cpu.py", "--attention", "lssar", "softmax",
                             *train, "--out", f"{out}/bench_train.json", "--"] + data, {}),
            "tiles": (pytest + ["tests/test_tiles.py"], {}),   # skipped without a GPU: the plumbing only
            "determinism": (determinism + ["--steps", "2", "--resume_at", "1", "--", "config/demo_cpu.py", *data,
                                           "--batch_size=2", "--eval_iters=1", "--attention_backend=reference"], {}),
            "bench_types": ([py, "scripts/bench_train.py", "config/demo_cpu.py", "--attention", "softmax", "relu_l1",
                             *train, "--out", f"{out}/bench_types.json", "--"] + data, {}),
            "bench_attention": ([py, "scripts/bench_attention.py", "--cpu-smoke", "--out",
                                 f"{out}/bench_attention.json"], {}),
            "errors": ([py, "scripts/kernel_errors.py", "--cpu-smoke", "--out", f"{out}/errors.json"], {}),
            "tests": (pytest + ["tests/test_kernels.py", "-k", "long_forward"], {}),
            "repro": (["bash", "scripts/reproduce_small.sh", "gpu"],   # the commands only
                      {"MAIN": "softmax lssa lssar", "PASSKEY": "0", "BASELINES": "0", "DRY_RUN": "1"}),
        }
    xdist = ["-n", str(min(16, os.cpu_count() or 1))] if _has("xdist") else []
    from attention import KERNEL_TYPES   # bench_types: softmax, then every fused type bench_train has not
    others = [t for t in KERNEL_TYPES if t not in ("lssa", "lssar")]
    return {
        "bench_train": ([py, "scripts/bench_train.py", "--attention", "lssar", "lssa", "softmax", "--steps", "25",
                         "--warmup", "10", "--log_interval", "5", "--out", f"{out}/bench_train.json"], {}),
        "tiles": (pytest + xdist + ["tests/test_tiles.py"], {}),
        "determinism": (determinism, {}),
        "bench_types": ([py, "scripts/bench_train.py", "--attention", "softmax", *others, "--steps", "20",
                         "--warmup", "10", "--log_interval", "5", "--warm-cache", "--out", f"{out}/bench_types.json"],
                        {}),
        "bench_attention": ([py, "scripts/bench_attention.py", "--T", "16384", "--d", "64", "128", "--no-compile",
                             "--no-flex", "--reference-max-T", "4096", "--reps", "5", "--warmup", "3",
                             "--window-ms", "20", "--out", f"{out}/bench_attention.json"], {}),
        "errors": ([py, "scripts/kernel_errors.py", "--workers", "8", "--out", f"{out}/errors.json"], {}),
        "tests": (pytest + xdist + ["--ignore=tests/test_tiles.py"], {}),   # the tiles part runs that one
        # the preflight's checks still run; its toy pass would double the part's time
        "repro": (["bash", "scripts/reproduce_small.sh", "gpu"],
                  {"MAIN": "softmax lssa lssar", "PASSKEY": "0", "BASELINES": "0", "SKIP_PREFLIGHT": "1"}),
    }


def check_needs(parts, smoke=False):
    """What the chosen parts need and this Python lacks: (errors, notes), one line each. pytest is
    needed by the tiles and tests parts; pytest-xdist only speeds them up (without it they run
    serially, which their limits are not sized for)."""
    errors, notes = [], []
    needing = [p for p in parts if p in NEEDS_PYTEST]
    if needing and not _has("pytest"):
        errors.append(f"gpu_check: the {' and '.join(needing)} part(s) need pytest: {sys.executable} -m pip install "
                      f"pytest pytest-xdist (or leave them out: bash scripts/gpu_check.sh "
                      f"{' '.join(p for p in parts if p not in NEEDS_PYTEST)})")
    elif needing and not smoke and not _has("xdist"):
        notes.append(f"gpu_check: pytest-xdist is not installed, so the {' and '.join(needing)} part(s) run serially "
                     f"and will likely be cut at their limits ({', '.join(f'{p} {LIMITS[p]} s' for p in needing)}); "
                     f"{sys.executable} -m pip install pytest-xdist")
    return errors, notes


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


def softmax_ratios(rows):
    """Each row's tokens/s and peak memory as ratios to softmax's row (whatever its place)."""
    base = next((r for r in rows if r["attention"] == "softmax" and r.get("tokens_per_s")), None)
    for r in rows:
        if base and r.get("tokens_per_s") is not None:
            r["ratio"] = r["tokens_per_s"] / base["tokens_per_s"]
            both = r.get("peak_mem_gib") is not None and base.get("peak_mem_gib")
            r["mem_ratio"] = r["peak_mem_gib"] / base["peak_mem_gib"] if both else None
    return rows


def errors_summary(rows):
    """scripts/kernel_errors.py's rows in short: cases, how many within tolerance, the worst error per dtype."""
    return {"cases": len(rows), "within_tolerance": sum(r["ok"] for r in rows),
            "worst": {dt: max(max(r["err"].values()) for r in rows if r["dtype"] == dt)
                      for dt in sorted({r["dtype"] for r in rows})}}


def collect(out, log_path, small_dir=None, work=None):
    """The figures of every part that left results, for the summary (small_dir: the repro's results;
    work: the scratch directory of the determinism part)."""
    found = {}
    with open(log_path, errors="replace") as f:
        log = f.read()
    for section in log.split("\n===== ")[1:]:   # run_part's headers: one section per part
        part = section.split(":", 1)[0]
        counts = re.findall(r"=+ ?(.*?(?:passed|failed|error|skipped).*?) in [\d.]+s", section)
        if part in NEEDS_PYTEST and counts:
            found[part] = counts[-1]
    determinism = _load(f"{work}/determinism.json") if work else None
    if determinism:
        found["determinism"] = {k: determinism[k] for k in ("attention", "steps", "resume_at", "equal",
                                                            "first_difference", "losses")}
    errors = _load(f"{out}/errors.json")
    if errors:
        found["errors"] = errors_summary(errors["results"])
    for part in ("bench_train", "bench_types"):
        bench = _load(f"{out}/{part}.json")
        if bench:
            found[part] = softmax_ratios([{k: r.get(k) for k in (
                "attention", "first_step_s", "tokens_per_s", "tokens_per_s_min", "tokens_per_s_max", "ratio", "mfu",
                "peak_mem_gib", "mem_ratio", "error")} for r in bench["results"]])
    attn = _load(f"{out}/bench_attention.json")
    if attn:
        d = attn.get("meta", {}).get("d")   # files of one head dim (before --d took several) name it only in meta
        found["bench_attention"] = [{"d": r.get("d", d), **{k: r.get(k) for k in (
                                        "T", "B", "mode", "attention", "impl", "backend", "ms", "ms_min", "ms_max",
                                        "x_sdpa", "sdpa_impl", "peak_mib", "x_sdpa_mem", "error", "skipped")}}
                                    for r in attn["results"]]
    sweep = _load(os.path.join(small_dir, "sweep.json")) if small_dir else None
    if sweep:
        found["repro"] = [{"run": r["run"], "attention": r["attention"], "reweight_p": r["reweight_p"],
                           "losses": {f"{x['length'] // r['train_context']}x": x["loss"] for x in r["results"]}}
                          for r in sweep["runs"]]
    return found


def targets(found):
    """The targets against what was measured (absent where the part left nothing)."""
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
    for part in NEEDS_PYTEST:
        if part in found:
            lines += ["", f"{part}: {found[part]}"]
    if "determinism" in found:
        d = found["determinism"]
        lines += ["", f"determinism ({d['attention']}, {d['steps']} steps, resumed at {d['resume_at']}): " + "; ".join(
            f"{k.replace('_', ' ')} " + ("equal bit for bit" if eq else f"DIFFERENT from step {d['first_difference'][k]}")
            for k, eq in d["equal"].items())]
    if "errors" in found:
        lines += ["", errors_line(found["errors"])]
    for part in ("bench_train", "bench_types"):
        if part in found:
            lines += ["", bench_train_table(found[part])]
    if "bench_attention" in found:
        lines += ["", bench_attention_table(found["bench_attention"])]
    if "repro" in found:
        ms = list(found["repro"][0]["losses"])
        lines += ["", "| run | " + " | ".join(ms) + " | last/1x |", "|---|" + "---|" * (len(ms) + 1)]
        lines += [f"| {r['run']} | " + " | ".join(f"{r['losses'].get(m, float('nan')):.3f}" for m in ms)
                  + f" | {r['losses'][ms[-1]] / r['losses'][ms[0]]:.3f} |" for r in found["repro"]]
    if summary["targets"]:
        lines += ["", targets_table(summary["targets"])]
    return "\n".join(lines) + "\n"


# The pieces of the summary, also written into docs/kernels.md by scripts/docs_tables.py.
def errors_line(e):
    return (f"kernel vs float64 reference: {e['within_tolerance']} of {e['cases']} cases within tolerance; "
            "worst relative error (Frobenius) per dtype: " + ", ".join(f"{k} {v:.1e}" for k, v in e["worst"].items()))


def bench_train_table(rows):
    lines = ["| attention | first step s | tokens/s [min, max] | x softmax | MFU | peak GiB | x softmax |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("tokens_per_s") is None or r.get("ratio") is None:
            why = (r.get("error") or "no ratio").splitlines()[0]   # one line: a table row cannot hold more
            lines.append(f"| {r['attention']} | {why} | | | | | |")
            continue
        spread = (f" [{r['tokens_per_s_min']:,.0f}, {r['tokens_per_s_max']:,.0f}]"
                  if r.get("tokens_per_s_min") is not None else "")
        lines.append(f"| {r['attention']} | {_fmt(r.get('first_step_s'), '.1f')} | {r['tokens_per_s']:,.0f}{spread} | "
                     f"{r['ratio']:.2f} | {_fmt(r['mfu'], '.1%')} | "
                     f"{_fmt(r['peak_mem_gib'], '.2f')} | {_fmt(r['mem_ratio'], '.2f')} |")
    return "\n".join(lines)


def bench_attention_table(rows):
    lines = ["| d | T | B | mode | attention | impl | ms [min, max] | x SDPA | peak MiB | x SDPA |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r.get('d', '')} | {r['T']} | {r['B']} | {r['mode']} | {r['attention']} | {r['impl']}" + \
            (f" ({r['backend']})" if r.get("backend") else "")
        if r.get("ms") is None:
            lines.append(f"{head} | {r.get('error') or r.get('skipped')} | | | |")
            continue
        spread = f" [{r['ms_min']:.3f}, {r['ms_max']:.3f}]" if r.get("ms_min") is not None else ""
        lines.append(f"{head} | {r['ms']:.3f}{spread} | {_fmt(r.get('x_sdpa'), '.2f')} | "
                     f"{_fmt(r.get('peak_mib'), '.0f')} | {_fmt(r.get('x_sdpa_mem'), '.2f')} |")
    return "\n".join(lines)


def targets_table(rows):
    lines = ["| target | measured | bound | met |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']:.3f} | {t['bound']} | {'yes' if t['met'] else 'NO'} |" for t in rows]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    errors, notes = check_needs(args.parts, args.smoke)
    if errors:
        sys.exit("\n".join(errors))
    for note in notes:
        print(note, flush=True)
    sys.path.insert(0, REPO)
    import torch
    from runinfo import code_version, hardware
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        sys.exit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --smoke checks the script on a CPU")
    gpu = torch.cuda.get_device_name() if cuda else "cpu-smoke"
    out = os.path.abspath(args.out or os.environ.get("OUT")
                          or os.path.join(REPO, "results", "gpu", re.sub(r"[^A-Za-z0-9._-]+", "-", gpu)))
    os.makedirs(out, exist_ok=True)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    log_path = os.path.join(out, "log.txt")
    started = time.time()
    parts = {}
    work = tempfile.mkdtemp(prefix="gpu_check_")   # scratch: kept out of `out` and its 8 files
    cmds = commands(args, out, work)
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
    found = collect(out, log_path, small_dir, work)
    shutil.rmtree(work, ignore_errors=True)
    summary = {"gpu": gpu, "torch": torch.__version__, "triton": triton_version, "code": code_version(),
               "hardware": hardware("cuda" if cuda else "cpu"), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join(["bash", "scripts/gpu_check.sh"] + (argv if argv is not None else sys.argv[1:])),
               "seconds": time.time() - started, "parts": parts, "notes": notes, "found": found,
               "targets": targets(found)}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    text = markdown(summary)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print("\n" + text + f"\n[gpu_check] wrote {out}/")
    return 0 if all(r["status"] == "ok" for r in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
