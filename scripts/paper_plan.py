"""
What scripts/reproduce_paper.sh will cost before it runs: GPU-hours per run and in all, and disk.

    python3 scripts/paper_plan.py cost 8 softmax:softmax lssar-p3:lssar ... -- config/paper_124m.py [--key=value ...]
    python3 scripts/paper_plan.py types          # the attention types of attention.RECIPES, one a line

Training throughput comes from the measurements committed under results/gpu/<GPU>/bench_train*.json
(scripts/bench_train.py: train.py itself, 124M at context 1024, bf16, compiled, one GPU), of one
GPU only: the one this machine has (nvidia-smi's name, spelled as results/gpu/ spells folders:
"NVIDIA H100 80GB HBM3" -> NVIDIA-H100-80GB-HBM3), or the one --gpu NAME names (GPU=NAME in
scripts/reproduce_paper.sh's dry run). Where that GPU has no measurement, the estimate says so in
one line and borrows every figure from one other GPU (the one with the most types measured):
two GPUs' figures are never mixed. A type measured there uses its own figure; a type never
measured uses the slowest measured figure of the same GPU (the kernels and the reference types
are slower than softmax's FlashAttention, so this errs low), and is marked "estimate". A model
or context other than the measured one scales the figure by the FLOPs per token (6N + 12·L·d·T,
model.flops_per_token's formula). GPU-hours assume the per-GPU figure holds on every GPU (data
parallel, no loss from communication) and count training only; the evaluations are forward
passes over a few million tokens per run.

Disk: the token shards (2 bytes a token) and each run's checkpoints: keep_checkpoints of them,
plus one being written, of fp32 weights and AdamW's two fp32 moments (12 bytes a parameter).

Torch-free on purpose: a dry run may be in a shell without the environment. So model.py's
PRESETS and attention.py's RECIPES are read from their source (both are literals), not imported.
"""
import argparse
import ast
import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configurator import grad_accum_steps, load_config  # noqa: E402
from data.catalog import DATASETS  # noqa: E402

GPT2_VOCAB = 50304    # GPT-2's 50,257 padded to a multiple of 64, as train.py pads it
CKPT_BYTES_PER_PARAM = 12


def module_literal(filename, name):
    """The value of `name = <literal>` in one of the repository's modules, without importing it
    (dict(a=1) calls count as literals)."""
    with open(os.path.join(ROOT, filename)) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return _literal(node.value)
    raise ValueError(f"{filename} has no {name} = ...")


def _literal(node):
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def recipe_names():
    return list(module_literal("attention.py", "RECIPES"))


def model_shape(preset, vocab=GPT2_VOCAB, **overrides):
    """(parameters, n_layer, n_embd) of a model preset (tied embeddings, no position embeddings)."""
    shape = {**module_literal("model.py", "PRESETS")[preset], **{k: v for k, v in overrides.items() if v}}
    L, d = shape["n_layer"], shape["n_embd"]
    return 12 * L * d * d + 13 * L * d + vocab * d + 2 * d, L, d   # blocks (with biases, LayerNorms), wte, ln_f


def flops_per_token(params, n_layer, n_embd, T):
    return 6 * params + 12 * n_layer * n_embd * T


def gpu_folder(name):
    """The folder of results/gpu/ for a GPU name as nvidia-smi or torch report it (as
    scripts/gpu_check.py names the folders it writes)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip())


def local_gpu():
    """The name of this machine's first GPU from nvidia-smi, or None (no nvidia-smi, no GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    names = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return names[0].strip() if names else None


def measured_throughput(folder):
    """{attention: (tokens/s per GPU, FLOPs per token of the measured model, source)} from the
    bench_train*.json files of one GPU's folder; where a type was measured more than once, the
    file last in name order."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "bench_train*.json"))):
        with open(path) as f:
            report = json.load(f)
        gpu = report.get("hardware", {}).get("gpu", os.path.basename(folder))
        for r in report.get("results", []):
            if "tokens_per_s" not in r:
                continue   # a type that failed there (its error is in the file)
            c = r["config"]
            fpt = flops_per_token(*model_shape(c["model"]), c["block_size"])
            shown = os.path.join(*os.path.normpath(path).split(os.sep)[-4:])   # results/gpu/<GPU>/<file>, wherever it lies
            found[r["attention"]] = (r["tokens_per_s"], fpt, f"{shown} ({gpu}, "
                                     f"{c['model']}, batch {c['batch_size']} x {c['block_size']})")
    return found


def measured_gpus(gpu_results):
    """{GPU folder name: measured_throughput} of every GPU under gpu_results with a measurement."""
    measured = {os.path.basename(d): measured_throughput(d) for d in sorted(glob.glob(os.path.join(gpu_results, "*")))
                if os.path.isdir(d)}
    return {name: m for name, m in measured.items() if m}


def most_measured(measured):
    """The GPU of measured_gpus() with the most types measured (the first in name order on a tie)."""
    return max(sorted(measured), key=lambda name: len(measured[name]))


def pick_gpu(gpu_results, gpu):
    """(folder name, its measurements, a note or None): the measurements of GPU `gpu` (a name or
    a folder name; None: this machine's), else all of one other GPU's, with a one-line note
    saying so."""
    measured = measured_gpus(gpu_results)
    how = "--gpu" if gpu else "nvidia-smi"
    gpu = gpu or local_gpu()
    if gpu and gpu_folder(gpu) in measured:
        return gpu_folder(gpu), measured[gpu_folder(gpu)], None
    if not measured:
        raise SystemExit(f"no training throughput measured under {gpu_results} (scripts/bench_train.py --attention all "
                         f"--out {gpu_results}/<GPU>/bench_train.json measures one)")
    borrowed = most_measured(measured)
    mine = f"{gpu} ({how})" if gpu else "this machine's GPU (no nvidia-smi here; name one with --gpu NAME)"
    return borrowed, measured[borrowed], (
        f"no training throughput measured for {mine} under {os.path.relpath(gpu_results, ROOT)}/: every figure below "
        f"is {borrowed}'s (measure yours: python scripts/bench_train.py --attention all --out "
        f"results/gpu/{gpu_folder(gpu) if gpu else '<GPU>'}/bench_train.json)")


def footprint(config_argv, ngpu, runs):
    """What `runs` [(run name, attention)] with the config of `config_argv` (a config file and
    overrides, as train.py takes them) on `ngpu` GPUs amount to: the step layout, the training
    tokens, the model's size and the disk (shards, checkpoints). Needs no measurement."""
    cfg = load_config(config_argv, check_model=False)
    accum = grad_accum_steps(cfg, ngpu)
    step_tokens = cfg.total_batch_size or cfg.batch_size * cfg.block_size * ngpu
    bytes_vocab = cfg.dataset.endswith("-bytes") or cfg.tokenizer == "bytes"
    params, n_layer, n_embd = model_shape(cfg.model, cfg.vocab_size or (256 if bytes_vocab else GPT2_VOCAB),
                                          n_layer=cfg.n_layer, n_embd=cfg.n_embd)
    spec = DATASETS.get(cfg.dataset)
    ckpt_bytes = params * CKPT_BYTES_PER_PARAM
    return {"config": " ".join(config_argv), "ngpu": ngpu, "grad_accum": accum, "tokens_per_run": cfg.max_iters * step_tokens,
            "params": params, "flops_per_token": flops_per_token(params, n_layer, n_embd, cfg.block_size),
            "dataset": cfg.dataset, "data_bytes": spec.approx_tokens * 2 if spec and spec.approx_tokens else None,
            "ckpt_bytes": ckpt_bytes, "ckpt_total_bytes": len(runs) * (cfg.keep_checkpoints + 1) * ckpt_bytes,
            "keep_checkpoints": cfg.keep_checkpoints, "runs": len(runs)}


def estimate(config_argv, ngpu, runs, gpu_results=os.path.join(ROOT, "results", "gpu"), gpu=None):
    """The cost of training `runs` [(run name, attention)] with the config of `config_argv` on
    `ngpu` GPUs, from the measurements of one GPU (pick_gpu): footprint()'s dict with per-run
    rows, totals, the GPU used and the note when it is not `gpu`."""
    e = footprint(config_argv, ngpu, runs)
    used, measured, note = pick_gpu(gpu_results, gpu)
    slowest = min(measured, key=lambda a: measured[a][0])
    rows = []
    for run, attention in runs:
        source = attention if attention in measured else slowest
        tok_s, measured_fpt, where = measured[source]
        tok_s *= measured_fpt / e["flops_per_token"]          # another model size or context: the same FLOP/s
        rows.append({"run": run, "attention": attention, "tokens_per_s": tok_s,
                     "gpu_hours": e["tokens_per_run"] / tok_s / 3600, "measured": attention in measured,
                     "figure": f"{source}'s {measured[source][0]:,.0f} tokens/s in {where}"})
    return {**e, "rows": rows, "gpu_hours": sum(r["gpu_hours"] for r in rows), "gpu": used, "note": note}


def gb(n):
    return f"{n / 1e9:,.1f} GB"


def estimate_lines(e):
    """The estimate as the dry run prints it (also written into docs/reproducing.md by scripts/docs_tables.py)."""
    lines = [f"# cost estimate ({e['config']}, {e['ngpu']} GPU(s)): {e['params'] / 1e6:,.1f}M parameters, "
             f"{e['tokens_per_run'] / 1e9:,.2f}B training tokens per run; figures of {e['gpu']}"]
    if e["note"]:
        lines.append(f"# {e['note']}")
    lines.append(f"# {'run':<24} {'attention':<22} {'tokens/s/GPU':>13} {'GPU-hours':>10}  figure used")
    for r in e["rows"]:
        kind = "measured" if r["measured"] else "estimate: not measured, the slowest measured type's"
        lines.append(f"# {r['run']:<24} {r['attention']:<22} {r['tokens_per_s']:>13,.0f} {r['gpu_hours']:>10,.1f}  "
                     f"{kind}: {r['figure']}")
    hours = e["gpu_hours"]
    lines.append(f"# training in all: {hours:,.1f} GPU-hours, {hours / e['ngpu']:,.1f} hours on {e['ngpu']} GPU(s) "
                 f"(if every GPU trains as fast as the measured one; evaluations not counted)")
    data = gb(e["data_bytes"]) if e["data_bytes"] else "small (no size on record)"
    lines.append(f"# disk: data {data} ({e['dataset']} token shards, 2 bytes a token); checkpoints "
                 f"{gb(e['ckpt_total_bytes'])} ({len(e['rows'])} runs x ({e['keep_checkpoints']} kept + 1 being written) "
                 f"x {gb(e['ckpt_bytes'])})")
    return lines


def print_estimate(e):
    print("\n".join(estimate_lines(e)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("types", help="print the attention types of attention.RECIPES")
    c = sub.add_parser("cost", help="print the cost estimate")
    c.add_argument("ngpu", type=int)
    c.add_argument("runs", nargs="+", help="RUN:ATTENTION pairs, then -- and the config file with its overrides")
    c.add_argument("--gpu_results", default=os.path.join(ROOT, "results", "gpu"))
    c.add_argument("--gpu", default=os.environ.get("GPU") or None,
                   help="the GPU to cost (its nvidia-smi name or results/gpu/ folder; default $GPU, else nvidia-smi's)")
    argv = sys.argv[1:] if argv is None else argv
    config_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:len(argv) - len(config_argv) - (1 if config_argv else 0)])
    if args.command == "types":
        print("\n".join(recipe_names()))
        return
    if not config_argv:
        p.error("cost needs -- and a config file after the runs")
    runs = [tuple(r.split(":", 1)) for r in args.runs]
    print_estimate(estimate(config_argv, args.ngpu, runs, args.gpu_results, args.gpu))


if __name__ == "__main__":
    main()
