"""
What scripts/reproduce_paper.sh will cost before it runs: GPU-hours per run and in all, and disk.

    python3 scripts/paper_plan.py cost 8 softmax:softmax lssar-p3:lssar ... -- config/paper_124m.py [--key=value ...]
    python3 scripts/paper_plan.py types          # the attention types of attention.RECIPES, one a line

Training throughput comes from the measurements committed under results/gpu/<GPU>/bench_train*.json
(scripts/bench_train.py: train.py itself, 124M at context 1024, bf16, compiled, one GPU). A type
measured there uses its own figure; a type never measured uses the slowest measured figure (the
kernels and the reference types are slower than softmax's FlashAttention, so this errs low),
and is marked "estimate". A model or context other than the measured one scales the figure by
the FLOPs per token (6N + 12·L·d·T, model.flops_per_token's formula). GPU-hours assume the
per-GPU figure holds on every GPU (data parallel, no loss from communication) and count training
only; the evaluations are forward passes over a few million tokens per run.

Disk: the token shards (2 bytes a token) and each run's checkpoints: keep_checkpoints of them,
plus one being written, of fp32 weights and AdamW's two fp32 moments (12 bytes a parameter).

Torch-free on purpose: a dry run may be in a shell without the environment. So model.py's
PRESETS and attention.py's RECIPES are read from their source (both are literals), not imported.
"""
import argparse
import ast
import glob
import json
import math
import os
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


def measured_throughput(gpu_results):
    """{attention: (tokens/s per GPU, FLOPs per token of the measured model, source)} from every
    bench_train*.json under gpu_results; where a type was measured more than once, the latest file."""
    found = {}
    for path in sorted(glob.glob(os.path.join(gpu_results, "*", "bench_train*.json"))):
        with open(path) as f:
            report = json.load(f)
        gpu = report.get("hardware", {}).get("gpu", os.path.basename(os.path.dirname(path)))
        for r in report.get("results", []):
            if "tokens_per_s" not in r:
                continue   # a type that failed there (its error is in the file)
            c = r["config"]
            fpt = flops_per_token(*model_shape(c["model"]), c["block_size"])
            found[r["attention"]] = (r["tokens_per_s"], fpt, f"{os.path.relpath(path, ROOT)} ({gpu}, "
                                     f"{c['model']}, batch {c['batch_size']} x {c['block_size']})")
    return found


def estimate(config_argv, ngpu, runs, gpu_results=os.path.join(ROOT, "results", "gpu")):
    """The cost of training `runs` [(run name, attention)] with the config of `config_argv` (a
    config file and overrides, as train.py takes them) on `ngpu` GPUs: a dict with per-run rows,
    totals and the figures used."""
    cfg = load_config(config_argv, check_model=False)
    accum = grad_accum_steps(cfg, ngpu)
    step_tokens = cfg.total_batch_size or cfg.batch_size * cfg.block_size * ngpu
    tokens = cfg.max_iters * step_tokens
    bytes_vocab = cfg.dataset.endswith("-bytes") or cfg.tokenizer == "bytes"
    params, n_layer, n_embd = model_shape(cfg.model, cfg.vocab_size or (256 if bytes_vocab else GPT2_VOCAB),
                                          n_layer=cfg.n_layer, n_embd=cfg.n_embd)
    fpt = flops_per_token(params, n_layer, n_embd, cfg.block_size)
    measured = measured_throughput(gpu_results)
    if not measured:
        raise SystemExit(f"no training throughput measured under {gpu_results} (scripts/bench_train.py --out "
                         f"{gpu_results}/<GPU>/bench_train.json measures one)")
    slowest = min(measured, key=lambda a: measured[a][0])
    rows = []
    for run, attention in runs:
        source = attention if attention in measured else slowest
        tok_s, measured_fpt, where = measured[source]
        tok_s *= measured_fpt / fpt          # another model size or context: the same FLOP/s
        hours = tokens / tok_s / 3600
        rows.append({"run": run, "attention": attention, "tokens_per_s": tok_s, "gpu_hours": hours,
                     "measured": attention in measured,
                     "figure": f"{source}'s {measured[source][0]:,.0f} tokens/s in {where}"})
    spec = DATASETS.get(cfg.dataset)
    data_bytes = spec.approx_tokens * 2 if spec and spec.approx_tokens else None
    ckpt_bytes = params * CKPT_BYTES_PER_PARAM
    ckpt_total = len(runs) * (cfg.keep_checkpoints + 1) * ckpt_bytes
    return {"config": " ".join(config_argv), "ngpu": ngpu, "grad_accum": accum, "tokens_per_run": tokens, "params": params,
            "rows": rows, "gpu_hours": sum(r["gpu_hours"] for r in rows), "dataset": cfg.dataset,
            "data_bytes": data_bytes, "ckpt_bytes": ckpt_bytes, "ckpt_total_bytes": ckpt_total,
            "keep_checkpoints": cfg.keep_checkpoints}


def gb(n):
    return f"{n / 1e9:,.1f} GB"


def print_estimate(e):
    print(f"# cost estimate ({e['config']}, {e['ngpu']} GPU(s)): {e['params'] / 1e6:,.1f}M parameters, "
          f"{e['tokens_per_run'] / 1e9:,.2f}B training tokens per run")
    print(f"# {'run':<24} {'attention':<22} {'tokens/s/GPU':>13} {'GPU-hours':>10}  figure used")
    for r in e["rows"]:
        kind = "measured" if r["measured"] else "estimate: not measured, the slowest measured type's"
        print(f"# {r['run']:<24} {r['attention']:<22} {r['tokens_per_s']:>13,.0f} {r['gpu_hours']:>10,.1f}  "
              f"{kind}: {r['figure']}")
    hours = e["gpu_hours"]
    print(f"# training in all: {hours:,.1f} GPU-hours, {hours / e['ngpu']:,.1f} hours on {e['ngpu']} GPU(s) "
          f"(if every GPU trains as fast as the measured one; evaluations not counted)")
    data = gb(e["data_bytes"]) if e["data_bytes"] else "small (no size on record)"
    print(f"# disk: data {data} ({e['dataset']} token shards, 2 bytes a token); checkpoints "
          f"{gb(e['ckpt_total_bytes'])} ({len(e['rows'])} runs x ({e['keep_checkpoints']} kept + 1 being written) "
          f"x {gb(e['ckpt_bytes'])})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("types", help="print the attention types of attention.RECIPES")
    c = sub.add_parser("cost", help="print the cost estimate")
    c.add_argument("ngpu", type=int)
    c.add_argument("runs", nargs="+", help="RUN:ATTENTION pairs, then -- and the config file with its overrides")
    c.add_argument("--gpu_results", default=os.path.join(ROOT, "results", "gpu"))
    argv = sys.argv[1:] if argv is None else argv
    config_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:len(argv) - len(config_argv) - (1 if config_argv else 0)])
    if args.command == "types":
        print("\n".join(recipe_names()))
        return
    if not config_argv:
        p.error("cost needs -- and a config file after the runs")
    runs = [tuple(r.split(":", 1)) for r in args.runs]
    print_estimate(estimate(config_argv, args.ngpu, runs, args.gpu_results))


if __name__ == "__main__":
    main()
