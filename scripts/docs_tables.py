"""
The tables of measured results in README.md and docs/*.md, written from the committed results.

    python scripts/docs_tables.py               # rewrite every block in place
    python scripts/docs_tables.py --check       # exit 1, one line per block that differs; 0 when all match
    python scripts/docs_tables.py --root DIR    # the README.md, docs/ and results/ of another copy
    python scripts/docs_tables.py --list        # the block names, what each holds and where from

A block is the text between a line `<!-- docs_tables:NAME -->` and the next `<!-- /docs_tables -->`;
everything outside blocks is left as it is. BLOCKS below says what each NAME holds and which
results file(s) it is written from. The tables come from the scripts that write those results'
own tables (table_length.py, report.py, gpu_check.py, paper_plan.py), so a block reads as the
script's own output does. After new results (a rerun of demo.sh, reproduce_small.sh, gpu_check.sh)
run this and commit the pages with them; the test suite runs --check (tests/test_docs_tables.py).
"""
import argparse
import glob
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling scripts

import gpu_check  # noqa: E402
import paper_numbers  # noqa: E402
import paper_plan  # noqa: E402
import report  # noqa: E402
from plot_length import evaluated_as  # noqa: E402
from table_length import markdown as sweep_table  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = re.compile(r"^<!-- docs_tables:(\S+) -->$")
END = "<!-- /docs_tables -->"
H200 = "results/gpu/NVIDIA-H200"


class Problem(SystemExit):
    """A one-line error (exit status 1)."""
    def __init__(self, message):
        super().__init__(f"docs_tables: {message}")


class Results:
    """The results files under one root; a missing or unreadable one is a one-line error naming it."""
    def __init__(self, root):
        self.root = root
        self.block = None   # the block being written, for the error message
        self.memo = {}      # what several blocks read (a results folder, the H200 figures, the estimate): once per run

    def once(self, key, make):
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def path(self, rel):
        path = os.path.join(self.root, rel)
        if not os.path.exists(path):
            raise Problem(f"{rel} is missing (block {self.block} is written from it); "
                          f"restore it (git checkout -- {rel}) or rerun what writes it")
        return path

    def json(self, rel):
        return self.once(("json", rel), lambda: self._load(rel))

    def _load(self, rel):
        with open(self.path(rel)) as f:
            try:
                return json.load(f)
            except ValueError as e:
                raise Problem(f"{rel} is not valid JSON ({e}; block {self.block}); restore it or rerun what writes it")

    def sweep(self, rel):
        """{producer: [(path, report)]} of one eval_length.py result file, as report.load_results gives."""
        return {"eval_length.py": [(self.path(rel), self.json(rel))]}

    def folder(self, rel):
        found = self.once(("folder", rel), lambda: report.load_results(self.path(rel)))
        if not found.get("eval_length.py"):
            raise Problem(f"{rel} holds no eval_length.py result (block {self.block})")
        return found


def sweep_with_provenance(res, found, log):
    """report.py's provenance lines (code, hardware, invocations, wall time from the log) and the
    sweep table of table_length.py: the trained runs, then any re-weighted at inference only."""
    runs = report.runs_of(found, "eval_length.py")
    runs = [r for r in runs if not r.get("overrides")] + [r for r in runs if r.get("overrides")]
    return report.provenance(found, res.path(log)) + "\n\n" + sweep_table(runs)


def demo(res):
    return sweep_with_provenance(res, res.sweep("results/demo.json"), "results/demo.log")


def small_gpu(res):
    return sweep_with_provenance(res, res.sweep("results/small/sweep.json"), "results/small/run.log")


def small_cpu(res):
    return sweep_with_provenance(res, res.folder("results/small-cpu"), "results/small-cpu/run.log")


def small_cpu_summary(res):
    """What the CPU-scale table shows, in words: the spread at 1x, the order at the longest length,
    and the lssa model re-weighted only at inference against itself unweighted."""
    sweeps = report.runs_of(res.folder("results/small-cpu"), "eval_length.py")
    trained = [r for r in sweeps if not r.get("overrides")]
    loss = {evaluated_as(r): report.by_multiple(r) for r in sweeps}
    first = {evaluated_as(r): report.by_multiple(r)[1] for r in trained}
    last_m = max(report.by_multiple(trained[0]))
    last = sorted(((report.by_multiple(r)[last_m], evaluated_as(r)) for r in trained))
    lo, hi = min(first, key=first.get), max(first, key=first.get)
    text = (f"At 1× the {len(trained)} trained models are within {first[hi] - first[lo]:.2f} nats of each other "
            f"({lo} lowest, {hi} highest). At {last_m:g}× (lowest first): "
            + ", ".join(f"{name} {v:.3f}" for v, name in last) + ".")
    for r in sweeps:
        if r.get("overrides") and r["trained_attention"] in loss:
            mine, plain = report.by_multiple(r), loss[r["trained_attention"]]
            worse = [m for m in mine if m in plain and mine[m] > plain[m]]
            text += (f" The {r['trained_attention']} model evaluated as {evaluated_as(r).split(' (')[0]} "
                     f"(re-weighted at inference only) is worse than unweighted at {len(worse)} of {len(mine)} lengths.")
    return text


def paper_loss(res):
    """The paper's validation loss (scripts/paper_numbers.py), its six curves in its order."""
    head = ["attention"] + [f"{m * paper_numbers.TRAIN_CONTEXT // 1024}K" for m in (1, 2, 4, 8)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in paper_numbers.MAIN:
        lines.append("| " + " | ".join([name] + [f"{paper_numbers.LOSS[name][m]:.2f}" for m in (1, 2, 4, 8)]) + " |")
    return "\n".join(lines)


def paper_vs_small_cpu(res):
    found = res.folder("results/small-cpu")
    return report.paper_table([r for r in report.runs_of(found, "eval_length.py") if not r.get("overrides")])


def attention_stats(res):
    return report.stats_table(res.json("results/attention_stats.json")["runs"])


def demo_downstream(res):
    return report.downstream_table(res.json("results/demo_downstream.json")["runs"]).rstrip("\n")


def paper_runs():
    """(run name, attention) of every run scripts/reproduce_paper.sh trains by default: its RUNS
    table, then every other type of attention.RECIPES, as the script itself appends them."""
    with open(os.path.join(REPO, "scripts", "reproduce_paper.sh")) as f:
        table = re.search(r"^RUNS=\((.*?)^\)", f.read(), flags=re.S | re.M).group(1)
    recipes = paper_plan.recipe_names()
    runs = [tuple(line.split()[:2]) for line in re.findall(r'^\s*"([^"]+)"', table, flags=re.M)]
    runs += [(a, a) for a in recipes if a not in {attention for _, attention in runs}]
    return [(name, attention) for name, attention in runs if attention in recipes]


def paper_estimate(res):
    """paper_plan.estimate of the paper's runs on 8 GPUs, from the GPU with the most types measured
    (what a dry run on a machine without a measured GPU borrows)."""
    return res.once("paper_estimate", lambda: _paper_estimate(res))


def _paper_estimate(res):
    gpus = os.path.join(res.path("results/gpu"), "")
    measured = paper_plan.measured_gpus(gpus)
    if not measured:
        raise Problem(f"no results/gpu/<GPU>/bench_train*.json with a throughput (block {res.block})")
    config = os.path.join(REPO, "config", "paper_124m.py")
    e = paper_plan.estimate([config], 8, paper_runs(), gpus, paper_plan.most_measured(measured))
    return {**e, "config": os.path.relpath(config, REPO)}


def paper_cost(res):
    return "```\n" + "\n".join(paper_plan.estimate_lines(paper_estimate(res))) + "\n```"


def paper_cost_summary(res):
    e = paper_estimate(res)
    measured = sorted({r["figure"] for r in e["rows"]})
    return (f"The dry run's estimate for the {len(e['rows'])} runs on {e['ngpu']} GPUs: "
            f"{e['gpu_hours']:,.1f} GPU-hours of training ({e['gpu_hours'] / e['ngpu']:,.1f} h), "
            f"{paper_plan.gb(e['data_bytes'])} of token shards and {paper_plan.gb(e['ckpt_total_bytes'])} of "
            f"checkpoints, from {'; '.join(measured)}"
            + ("" if all(r["measured"] for r in e["rows"]) else
               f" ({sum(not r['measured'] for r in e['rows'])} types not yet measured are costed at that figure)")
            + ".")


def quickstart(res):
    """The quick start per machine with what each path took when it was last run: the wall time its
    log records and the machine its results name; the paper's time is the dry run's estimate."""
    def measured(results_rel, log_rel):
        found = res.sweep(results_rel) if results_rel.endswith(".json") else res.folder(results_rel)
        with open(res.path(log_rel)) as f:
            walls = report.wall_times(f.read())
        hardware = sorted({h.get("gpu") or f"{h.get('cpu_count')} CPU cores"
                           for h in (r["hardware"] for items in found.values() for _, r in items)})
        took = f"{sum(walls) / 60:.0f} min" if walls else "not recorded"
        return f"{took} ({'; '.join(hardware)}; {log_rel})"
    e = paper_estimate(res)
    rows = [("a laptop or any CPU", "`bash scripts/demo.sh`", measured("results/demo.json", "results/demo.log"),
             "the demo's table below and `results/demo.png`"),
            ("2 CPU cores", "`bash scripts/reproduce_small.sh cpu`",
             measured("results/small-cpu", "results/small-cpu/run.log"), "`results/small-cpu/report.md`"),
            ("one GPU", "`bash scripts/reproduce_small.sh`", measured("results/small/sweep.json", "results/small/run.log"),
             "`results/small/report.md`"),
            (f"{e['ngpu']} GPUs", f"`bash scripts/reproduce_paper.sh {e['ngpu']}`",
             f"about {e['gpu_hours'] / e['ngpu']:.0f} h of training, estimated (not run; the cost estimate below)",
             "`results/paper_124m/report.md`")]
    lines = ["| machine | command | time, last run | what it writes |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in rows])


def h200(res):
    return res.once("h200", lambda: gpu_check.collect(res.path(H200), res.path(f"{H200}/log.txt")))


def h200_errors(res):
    return gpu_check.errors_line(h200(res)["errors"]) + f" (`{H200}/errors.json`)"


def h200_bench_train(res):
    return gpu_check.bench_train_table(h200(res)["bench_train"])


def h200_bench_attention(res):
    rows = h200(res)["bench_attention"]
    ref = [r for r in rows if r["impl"] == "reference" and r.get("ms") is not None]
    kernel = [r for r in rows if r["impl"] == "triton" and r.get("ms") is not None]
    text = gpu_check.bench_attention_table(rows)
    if ref and kernel:
        text += (f"\n\nThe kernels' peak memory beyond the inputs is {min(r['peak_mib'] for r in kernel):.0f}–"
                 f"{max(r['peak_mib'] for r in kernel):.0f} MiB at every T; the plain reference needs "
                 f"{min(r['peak_mib'] for r in ref) / 1024:.1f}–{max(r['peak_mib'] for r in ref) / 1024:.1f} GiB "
                 f"for the same calls up to T = {max(r['T'] for r in ref)} and takes "
                 f"{min(r['x_sdpa'] for r in ref):.0f}–{max(r['x_sdpa'] for r in ref):.0f}× SDPA's time.")
    return text


def h200_targets(res):
    rows = gpu_check.targets(h200(res))
    return gpu_check.targets_table(rows) + f"\n\n{sum(t['met'] for t in rows)} of {len(rows)} targets met."


def kernel_errors_cpu(res):
    rel = "results/kernel_errors/cpu-interpreter.json"
    rows = res.json(rel)["results"]
    return (gpu_check.errors_line(gpu_check.errors_summary(rows)) + f", at T = "
            + " and ".join(str(t) for t in sorted({r["T"] for r in rows})) + f" (`{rel}`)")


# One tile of tools/kernel_resources.py's text table: kernel dtype d mode (tile) registers stores/loads shared
RESOURCE_LINE = re.compile(r"^(\w+)\s+(\w+)\s+(\d+)\s+(\S+)\s+\(([\d, ]+)\)\s+(\d+)\s+(\d+)/(\d+)\s")


def resource_rows(res, rel):
    """The tiles of a kernel_resources.py report, in its order: its JSON's rows, or its text table's."""
    if rel.endswith(".json"):
        return res.json(rel)["rows"]
    rows = []
    with open(res.path(rel)) as f:
        for line in f:
            m = RESOURCE_LINE.match(line)
            if m:
                rows.append({"kernel": m.group(1), "dtype": m.group(2), "head_dim": int(m.group(3)), "mode": m.group(4),
                             "tile": [int(x) for x in m.group(5).split(",")], "spill_stores": int(m.group(7)),
                             "spill_loads": int(m.group(8))})
    return rows


def spills(res, rel, what):
    """The bf16 tiles of a kernel_resources.py report that spill; place 1 is the tile launched without
    autotuning (the report lists each kernel's tiles in the table's order)."""
    place, rows = {}, []
    for r in resource_rows(res, rel):
        key = (r["kernel"], r["dtype"], r["head_dim"], r["mode"])
        place[key] = place.get(key, 0) + 1
        if r["dtype"] == "bf16" and (r.get("spill_stores") or r.get("spill_loads")):
            rows.append(f"| {r['kernel']} | {r['head_dim']} | {r['mode']} | {tuple(r['tile'])} | {place[key]} | "
                        f"{r['spill_stores']}/{r['spill_loads']} |")
    if not rows:
        return f"No bf16 tile spills ({what}, `{rel}`)."
    head = ["| kernel | d | type | tile (M, N, warps, stages) | place in its list | spill stores/loads, bytes |",
            "|---|---|---|---|---|---|"]
    return f"{what}, bf16 (`{rel}`):\n\n" + "\n".join(head + rows)


def sm90_spills(res):
    rel = "results/kernel_resources/sm90.json"
    return spills(res, rel, f"Triton {res.json(rel)['triton']}, sm_90, every fused type")


def sm90_spills_lssa(res):
    rel = "results/sass/after-all-bf16-tiles.txt"
    with open(res.path(rel)) as f:
        triton = re.search(r"Triton ([\d.]+)", f.readline())
    return spills(res, rel, f"Triton {triton.group(1) if triton else '?'}, sm_90, lssa and lssar")


# One loop of tools/kernel_resources.py --sass's text table: kernel dtype d mode (tile) loop instr MUFU mma
SASS_LINE = re.compile(r"^(\w+)\s+(\w+)\s+(\d+)\s+(\S+)\s+\(([\d, ]+)\)\s+([A-Za-z][^()]*?)\s+([\d.]+)\s+([\d.]+)\s+\S+")
KERNEL_NAMES = {"fwd": "forward", "dkdv": "dK/dV", "dq": "dQ"}


def sass_loops(res, rel):
    """{(kernel, mode, loop): (tile, instr/score, MUFU/score)} of the main loops (marked *) in a
    kernel_resources.py --sass report: its JSON, or the text table it prints."""
    loops = {}
    if rel.endswith(".json"):
        for r in res.json(rel)["rows"]:
            for lp in r.get("loops", []):
                if lp["main"]:
                    loops.setdefault((r["kernel"], r["mode"], lp["name"]), (tuple(r["tile"]), lp["instr_per_score"],
                                                                            lp["mufu_per_score"]))
        return loops
    with open(res.path(rel)) as f:
        for line in f:
            m = SASS_LINE.match(line)
            if m and m.group(6).endswith(" *"):
                tile = tuple(int(x) for x in m.group(5).split(","))
                loops.setdefault((m.group(1), m.group(4), m.group(6)[:-2]), (tile, float(m.group(7)), float(m.group(8))))
    return loops


def loop_label(kernel, mode, loop):
    return f"{mode} {KERNEL_NAMES.get(kernel, kernel)} ({loop})"


def sass_before_after(res):
    before, after = sass_loops(res, "results/sass/before.json"), sass_loops(res, "results/sass/after.json")
    head = ["kernel (loop)", "before: tile", "instr / score", "MUFU / score", "after: tile", "instr / score",
            "MUFU / score"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in dict.fromkeys(list(before) + list(after)):
        cells = [loop_label(*key)]
        for side in (before, after):
            tile, instr, mufu = side.get(key, (None, None, None))
            cells += ["–", "–", "–"] if tile is None else [",".join(map(str, tile)), f"{instr:.1f}", f"{mufu:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sass_triton_versions(res):
    files = {f"{v} {when}": f"results/sass/triton-{v}{'-before' if when == 'before' else ''}.txt"
             for v in ("3.6.0", "3.9.0") for when in ("before", "after")}
    counts = {name: sass_loops(res, rel) for name, rel in files.items()}
    keys = dict.fromkeys(k for c in counts.values() for k in c)
    lines = ["| kernel (loop) | " + " | ".join(counts) + " |", "|---|" + "---|" * len(counts)]
    for key in keys:
        lines.append(f"| {loop_label(*key)} | " + " | ".join(
            f"{c[key][1]:.1f}" if key in c else "–" for c in counts.values()) + " |")
    return "\n".join(lines)


def sass_every_type(res):
    counts = sass_loops(res, "results/sass/every-type-bf16-d64.txt")
    modes = dict.fromkeys(mode for _, mode, _ in counts)
    lines = ["| type | " + " | ".join(KERNEL_NAMES.values()) + " |", "|---|" + "---|" * len(KERNEL_NAMES)]
    for mode in modes:
        cells = ["; ".join(f"{loop} {instr:.1f} instr, {mufu:.2f} MUFU" for (k, m, loop), (_, instr, mufu)
                           in counts.items() if k == kernel and m == mode) or "–" for kernel in KERNEL_NAMES]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# name: (what it holds, the function that writes it from the results under a root)
def mutation_scores(res):
    """Each module's mutation score and what its runs took, from the table of results/mutation.md
    (written by tools/mutation.sh from results/mutation_verdicts.txt)."""
    header = "| module | mutants | killed | surviving | equivalent | not run | score | target |"
    with open(res.path("results/mutation.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not any(line.startswith(header) for line in lines):
        raise Problem("results/mutation.md has no table of modules (block mutation-scores); restore it "
                      "(git checkout -- results/mutation.md) or rebuild the mutation report (docs/testing.md)")
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
    out = ["| module | mutants | killed | not run | score | target | wall time of its runs |", "|---|---|---|---|---|---|---|"]
    for line in lines[start:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 10:
            break
        module, mutants, killed, _, _, not_run, score, target, _, seconds = cells[:10]
        out.append(f"| {module} | {mutants} | {killed} | {not_run} | {score} | {target} | "
                   f"{f'{int(seconds.split()[0]):,} s' if seconds else 'not run'} |")
    return "\n".join(out)


BLOCKS = {
    "quickstart": ("the quick start per machine with each path's last wall time: results/demo.log, "
                   "results/small*/run.log, the paper's estimate", quickstart),
    "demo": ("the demo's length sweep (scripts/demo.sh): results/demo.json, demo.log", demo),
    "small-gpu": ("the one-GPU small run's sweep: results/small/sweep.json, run.log", small_gpu),
    "small-cpu": ("every type at CPU scale (reproduce_small.sh cpu): results/small-cpu/*.json, run.log", small_cpu),
    "small-cpu-summary": ("the CPU-scale table in words: results/small-cpu/*.json", small_cpu_summary),
    "paper-loss": ("the paper's validation loss: scripts/paper_numbers.py", paper_loss),
    "paper-vs-small-cpu": ("the paper's layout, ours beside its numbers: results/small-cpu/*.json", paper_vs_small_cpu),
    "attention-stats": ("attention statistics of the demo's models: results/attention_stats.json", attention_stats),
    "demo-downstream": ("lm-eval on the demo's models: results/demo_downstream.json", demo_downstream),
    "paper-cost": ("the paper recipe's cost estimate: scripts/paper_plan.py, results/gpu/*/bench_train*.json", paper_cost),
    "paper-cost-summary": ("the same estimate in one sentence", paper_cost_summary),
    "h200-errors": ("kernel errors on one H200: results/gpu/NVIDIA-H200/errors.json", h200_errors),
    "h200-bench-train": ("training speed on one H200: results/gpu/NVIDIA-H200/bench_train.json", h200_bench_train),
    "h200-bench-attention": ("attention alone on one H200: results/gpu/NVIDIA-H200/bench_attention.json",
                             h200_bench_attention),
    "h200-targets": ("the speed targets against one H200's figures: results/gpu/NVIDIA-H200/*.json", h200_targets),
    "sass-before-after": ("instructions and MUFU ops per score before and after: results/sass/before.json, "
                          "after.json", sass_before_after),
    "sass-triton-versions": ("the same under Triton 3.6 and 3.9: results/sass/triton-*.txt", sass_triton_versions),
    "sass-every-type": ("every fused type's counts: results/sass/every-type-bf16-d64.txt", sass_every_type),
    "sm90-spills-lssa": ("lssa's and lssar's 16-bit tiles that spill on sm_90: results/sass/after-all-bf16-tiles.txt",
                         sm90_spills_lssa),
    "sm90-spills": ("the 16-bit tiles that spill on sm_90: results/kernel_resources/sm90.json", sm90_spills),
    "kernel-errors-cpu": ("kernel errors under Triton's interpreter: results/kernel_errors/cpu-interpreter.json",
                          kernel_errors_cpu),
    "mutation-scores": ("each module's mutation score and the time of its runs: results/mutation.md", mutation_scores),
}


def pages(root):
    found = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    return [p for p in found if os.path.exists(p)]


def split(text, page):
    """The page as [text, (name, body), text, ...]; a marker out of place is a one-line error."""
    parts, outside, inside, name = [], [], None, None
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        start = START.match(line.rstrip("\n"))
        if start:
            if name is not None:
                raise Problem(f"{page}:{number}: block {start.group(1)} starts inside block {name} "
                              f"(close that one with {END} first)")
            name = start.group(1)
            if name not in BLOCKS:
                raise Problem(f"{page}:{number}: unknown block {name!r}; known: {', '.join(BLOCKS)}")
            outside.append(line)
            parts.append("".join(outside))
            outside, inside = [], []
        elif line.rstrip("\n") == END:
            if name is None:
                raise Problem(f"{page}:{number}: {END} without a block before it")
            parts.append((name, "".join(inside)))
            name, inside, outside = None, None, [line]
        elif name is None:
            outside.append(line)
        else:
            inside.append(line)
    if name is not None:
        raise Problem(f"{page}: block {name} is not closed (no {END} after it)")
    parts.append("".join(outside))
    return parts


def write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".docs_tables-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(root, check):
    """Rewrite (or, with check, compare) every block under root; the lines naming the blocks that differ."""
    res, rendered, differ, changed = Results(root), {}, [], {}
    for path in pages(root):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        page = os.path.relpath(path, root)
        parts = split(text, page)
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, body = part
            if name not in rendered:
                res.block = name
                rendered[name] = "\n" + BLOCKS[name][1](res).rstrip("\n") + "\n\n"
            if body != rendered[name]:
                differ.append(f"{page}: block {name} differs from the results; run python scripts/docs_tables.py")
            out.append(rendered[name])
        new = "".join(out)
        if new != text:
            changed[path] = new
    if not check:   # only once every block has been written: an error above leaves every page as it was
        for path, new in changed.items():
            write_atomic(path, new)
            print(f"wrote {os.path.relpath(path, root)}")
    return differ


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    p.add_argument("--root", default=REPO, help="the folder holding README.md, docs/ and results/ (default: this repository)")
    p.add_argument("--list", action="store_true", help="print the block names and what each holds")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(f"{name}: {what}" for name, (what, _) in BLOCKS.items()))
        return 0
    if not os.path.exists(os.path.join(args.root, "README.md")):
        raise Problem(f"{args.root} has no README.md; --root takes a copy of the repository's top folder")
    differ = run(args.root, args.check)
    if args.check and differ:
        print("\n".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
