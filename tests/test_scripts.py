"""The reproduction scripts: every command they would run resolves, without running it."""
import os
import re
import shlex
import subprocess
import sys

import pytest

from attention import ATTENTION_TYPES
from configurator import load_config
from data.prepare import default_out_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry_run(script, *args, env=None):
    """The commands a script prints with DRY_RUN=1, as argument lists."""
    env = {**os.environ, "DRY_RUN": "1", "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           **(env or {})}
    proc = subprocess.run(["bash", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]


def check_pipeline(commands, expected_runs):
    prepare, *rest = commands
    assert prepare[:2] == ["python", "data/prepare.py"]
    trains = [c for c in rest if "train.py" in c]
    tokenizer = prepare[prepare.index("--tokenizer") + 1] if "--tokenizer" in prepare else "gpt2"
    out_dirs = []
    for cmd in trains:
        args = cmd[cmd.index("train.py") + 1:]
        cfg = load_config(args).resolve_templates()           # the config loads, every key is valid
        assert default_out_dir(cfg.dataset) == default_out_dir(prepare[2], tokenizer)  # trains on what was prepared
        assert cfg.init_from == "auto"                        # re-running resumes or skips
        out_dirs.append(cfg.out_dir)
    assert len(set(out_dirs)) == len(out_dirs) == expected_runs
    evals = [c for c in rest if c[:2] in (["python", "eval_length.py"], ["python", "eval_passkey.py"])]
    results = []
    for cmd in evals:
        paths = [a for a in cmd[2:cmd.index("--out")] if not a.startswith("-") and "/" in a]
        assert paths and set(paths) <= set(out_dirs)          # sweeps exactly the trained runs
        results.append(cmd[cmd.index("--out") + 1])
    plots = [c for c in rest if c[:2] in (["python", "scripts/plot_length.py"], ["python", "scripts/plot_passkey.py"])]
    assert plots and all(set(a for a in p[2:p.index("-o")]) <= set(results) for p in plots)
    return trains, evals


def dry_run_paper(tmp_path, ngpu, recipes=None, **env):
    """reproduce_paper.sh's DRY_RUN=1 output, in a shell whose python3 has no torch (as the dry
    run may; fast) and, with `recipes`, whose `scripts/paper_plan.py types` lists those types, as
    if attention.RECIPES held only them."""
    fake = f'if [ "$1 $2" = "scripts/paper_plan.py types" ]; then printf "%s\\n" {" ".join(recipes or [])}; exit 0; fi\n'
    (tmp_path / "python3").write_text("#!/bin/sh\n" + (fake if recipes else "") +
                                      f'exec {shlex.quote(sys.executable)} -S "$@"\n')
    (tmp_path / "python3").chmod(0o755)
    env = {**os.environ, "DRY_RUN": "1", "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "scripts/reproduce_paper.sh", ngpu], cwd=ROOT, env=env, capture_output=True,
                          text=True)


PAPER_RUNS = {"softmax": "softmax", "sigmoid": "sigmoid", "relu": "relu", "lssa": "lssa", "lssar-p3": "lssar",
              "lssar": "lssar", "softmax_reweight": "softmax_reweight", "sigmoid_l1_reweight": "sigmoid_l1_reweight"}


def paper_pipeline(commands, ngpu, results="results/paper_124m"):
    """The training runs of reproduce_paper.sh's commands, {run name: config}, after checking that
    every run is evaluated every way, each into its own file, and the report comes last."""
    trains = [c for c in commands if "train.py" in c]
    launch = ["python"] if ngpu == "1" else ["torchrun", "--standalone", f"--nproc_per_node={ngpu}"]
    runs = {}
    for cmd in trains:
        assert cmd[:cmd.index("train.py")] == launch
        cfg = load_config(cmd[cmd.index("train.py") + 1:]).resolve_templates()
        assert cfg.init_from == "auto"                        # re-running resumes or skips
        runs[cfg.out_dir[len("out/paper_124m-"):]] = cfg
    evals = {}
    for cmd in commands:
        if cmd[0] == "python" and cmd[1] != "train.py" and ("--out" in cmd or "-o" in cmd):
            out = cmd[cmd.index("--out" if "--out" in cmd else "-o") + 1]
            evals.setdefault(cmd[1], []).append((cmd[2], out))
    for script, kind, ext in (("eval_length.py", "sweep", "json"), ("eval_passkey.py", "passkey", "json"),
                              ("eval_downstream.py", "downstream", "json"),
                              ("scripts/attention_stats.py", "attention_stats", "json"),
                              ("scripts/plot_attention_maps.py", "maps", "png")):
        done = [(d, o) for d, o in evals[script] if "reweighted" not in o]
        assert done == [(f"out/paper_124m-{r}", f"{results}/{kind}/{r}.{ext}") for r in runs], script
    assert commands[-1] == ["python", "scripts/report.py", results]
    return runs


@pytest.mark.parametrize("ngpu", ["1", "8"])
def test_reproduce_paper_runs_every_type_and_evaluation(tmp_path, ngpu):
    proc = dry_run_paper(tmp_path, ngpu)
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert commands[0] == ["python", "data/prepare.py", "fineweb-10B"]
    runs = paper_pipeline(commands, ngpu)
    # the paper's six curves and two ablations by name, then every other type of attention.RECIPES
    assert {r: cfg.attention for r, cfg in runs.items() if r in PAPER_RUNS} == PAPER_RUNS
    assert {cfg.attention for cfg in runs.values()} == set(ATTENTION_TYPES)
    assert runs["lssar-p3"].reweight_p == 3.0 and runs["lssar"].reweight_p == 15.0
    for cfg in runs.values():
        assert cfg.total_batch_size * cfg.max_iters == 524288 * 18865
    passkey = next(c for c in commands if c[1] == "eval_passkey.py")
    assert passkey[passkey.index("--lengths") + 1:passkey.index("--trials")] == ["1024", "1536", "4096", "8192", "16384"]
    tasks = next(c for c in commands if c[1] == "eval_downstream.py")
    assert {"arc_easy", "hellaswag", "piqa", "sciq", "mmlu", "scrolls_summscreenfd"} <= \
        set(tasks[tasks.index("--tasks") + 1].split(","))
    assert tasks[tasks.index("--max_length") + 1] == "16x"   # 16K windows at 1K: SummScreen's 5-10K-token inputs fit
    # the lssa model re-weighted at inference, kept apart from the curves
    assert ["python", "eval_length.py", "out/paper_124m-lssa", "--attention", "lssar", "--p", "15", "--out",
            "results/paper_124m/lssa_reweighted.json"] in commands
    # the estimate, before anything runs: a line per run and the totals
    estimate = proc.stdout[:proc.stdout.index("\n+ ")]
    for r, cfg in runs.items():   # run, attention, tokens/s, GPU-hours, the figure used
        assert re.search(rf"^# {re.escape(r)} +{cfg.attention} +[\d,]+ +[\d.]+  (measured|estimate)", estimate, re.M), r
    assert "measured: softmax's" in estimate and "estimate: not measured" in estimate
    assert re.search(r"training in all: [\d.,]+ GPU-hours", estimate) and "disk: data 20.0 GB" in estimate


def test_reproduce_paper_follows_attention_recipes_and_types(tmp_path):
    # a listed type that RECIPES lacks is skipped with a note; a RECIPES type not listed is appended
    recipes = ["softmax", "lssar", "relu_l1"]
    proc = dry_run_paper(tmp_path, "8", recipes)
    assert proc.returncode == 0, proc.stderr
    assert "# sigmoid_l1_reweight skipped: attention.RECIPES has no type sigmoid_l1_reweight (yet)" in proc.stdout
    trains = [line for line in proc.stdout.splitlines() if line.startswith("+ ") and "train.py" in line]
    trained = [line.split("--attention=")[1].split()[0] for line in trains]
    assert trained == ["softmax", "lssar", "lssar", "relu_l1"]    # lssar-p3 and lssar, then the new type
    proc = dry_run_paper(tmp_path, "8", recipes, TYPES="lssar-p3 relu_l1")
    trains = [line for line in proc.stdout.splitlines() if line.startswith("+ ") and "train.py" in line]
    assert [line.split("--out_dir=")[1].split()[0] for line in trains] == \
        ["out/paper_124m-lssar-p3", "out/paper_124m-relu_l1"]
    proc = dry_run_paper(tmp_path, "8", recipes, TYPES="softmax lsar")
    assert proc.returncode == 2 and "+ " not in proc.stdout and "TYPES names unknown run lsar" in proc.stderr


def test_reproduce_paper_refuses_a_gpu_count_the_step_cannot_split_over(tmp_path):
    proc = dry_run_paper(tmp_path, "6")
    assert proc.returncode == 1 and "+ " not in proc.stdout  # before any command, data preparation included
    assert "config error with 6 GPUs" in proc.stderr and "divides total_batch_size / block_size = 512" in proc.stderr


def test_reproduce_paper_dry_run_needs_no_torch(tmp_path):
    # a shell outside any environment: python3 without site-packages (so without torch), no `python`
    (tmp_path / "python3").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S "$@"\n')
    (tmp_path / "python3").chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX")},
           "DRY_RUN": "1", "PATH": f"{tmp_path}{os.pathsep}/usr/bin:/bin"}
    assert subprocess.run(["python3", "-c", "import torch"], env=env, capture_output=True).returncode == 1
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "8"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "no torch in this shell: attention and model names not checked" in proc.stderr
    commands = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert commands[0] == "+ python data/prepare.py fineweb-10B" and proc.stdout.count("+ torchrun") == len(ATTENTION_TYPES) + 1
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "6"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "config error with 6 GPUs" in proc.stderr  # the torch-free checks still run


def test_reproduce_paper_on_openwebtext(tmp_path):
    proc = dry_run_paper(tmp_path, "4", CONFIG="config/paper_124m_owt.py", TYPES="lssar")
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert commands[0] == ["python", "data/prepare.py", "openwebtext"]
    assert load_config(commands[1][4:]).dataset == "openwebtext" and commands[-1][-1] == "results/paper_124m_owt"


@pytest.mark.parametrize("mode, config", [("gpu", "config/small_gpu.py"), ("cpu", "config/demo_cpu.py")])
def test_reproduce_small_commands_resolve(mode, config):
    commands = dry_run("scripts/reproduce_small.sh", mode)
    trains, evals = check_pipeline(commands, expected_runs=11)
    assert all(config in c for c in trains)
    assert {load_config(c[2:]).attention for c in trains} == set(ATTENTION_TYPES)  # every type, baselines too
    # passkey prompts are GPT-2 text; the CPU runs are byte-level
    assert any(e[1] == "eval_passkey.py" for e in evals) == (mode == "gpu")
    ps = sorted(load_config(c[2:]).reweight_p for c in trains if load_config(c[2:]).attention == "lssar")
    assert ps == [3.0, 15.0]
    assert commands[-1] == ["python", "scripts/report.py", f"results/{'small' if mode == 'gpu' else 'small-cpu'}"]



def test_reproduce_paper_skips_the_evaluations_already_done(tmp_path):
    results = tmp_path / "results"
    for done in ("sweep/softmax.json", "maps/softmax.png"):
        (results / done).parent.mkdir(parents=True, exist_ok=True)
        (results / done).write_text("{}")
    proc = dry_run_paper(tmp_path, "8", TYPES="softmax lssa", RESULTS=str(results))
    outs = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("+ python") and "--out" in line]
    assert f"{results}/sweep/softmax.json" not in outs and f"{results}/sweep/lssa.json" in outs
    assert f"{results}/passkey/softmax.json" in outs
    assert f"= {results}/sweep/softmax.json exists: skipped" in proc.stdout
    assert f"= {results}/maps/softmax.png exists: skipped" in proc.stdout
    assert "+ torchrun" in proc.stdout and proc.stdout.count("--attention=softmax ") == 1   # training resumes itself
