"""The reproduction scripts: every command they would run resolves, without running it."""
import os
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


@pytest.mark.parametrize("ngpu", ["1", "8"])
def test_reproduce_paper_commands_resolve(ngpu):
    commands = dry_run("scripts/reproduce_paper.sh", ngpu)
    trains, evals = check_pipeline(commands, expected_runs=3)
    assert commands[0] == ["python", "data/prepare.py", "fineweb-10B"]
    for cmd in trains:
        assert cmd[:4] == ["torchrun", "--standalone", f"--nproc_per_node={ngpu}", "train.py"]
        cfg = load_config(cmd[4:])
        assert cfg.total_batch_size * cfg.max_iters == 524288 * 18865
        assert cfg.total_batch_size % (cfg.batch_size * cfg.block_size * int(ngpu)) == 0
    assert {load_config(c[4:]).attention for c in trains} == {"softmax", "lssa", "lssar"}
    assert any("--attention" in e and "lssar" in e for e in evals)  # lssa re-weighted at inference


def test_reproduce_paper_refuses_a_gpu_count_the_step_cannot_split_over():
    env = {**os.environ, "DRY_RUN": "1", "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "6"], cwd=ROOT, env=env, capture_output=True, text=True)
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
    assert proc.stdout.splitlines()[0] == "+ python data/prepare.py fineweb-10B" and proc.stdout.count("+ torchrun") == 3
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "6"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "config error with 6 GPUs" in proc.stderr  # the torch-free checks still run


def test_reproduce_paper_on_openwebtext():
    commands = dry_run("scripts/reproduce_paper.sh", "4", env={"CONFIG": "config/paper_124m_owt.py"})
    check_pipeline(commands, expected_runs=3)
    assert commands[0] == ["python", "data/prepare.py", "openwebtext"]


@pytest.mark.parametrize("mode, config", [("gpu", "config/small_gpu.py"), ("cpu", "config/demo_cpu.py")])
def test_reproduce_small_commands_resolve(mode, config):
    commands = dry_run("scripts/reproduce_small.sh", mode)
    trains, evals = check_pipeline(commands, expected_runs=9)
    assert all(config in c for c in trains)
    assert {load_config(c[2:]).attention for c in trains} == set(ATTENTION_TYPES)  # every type, baselines too
    # passkey prompts are GPT-2 text; the CPU runs are byte-level
    assert any(e[1] == "eval_passkey.py" for e in evals) == (mode == "gpu")
    ps = sorted(load_config(c[2:]).reweight_p for c in trains if load_config(c[2:]).attention == "lssar")
    assert ps == [3.0, 15.0]

