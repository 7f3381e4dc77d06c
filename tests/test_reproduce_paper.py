"""scripts/paper_plan.py's cost estimate, and scripts/reproduce_paper.sh end to end at toy scale
(two types, every evaluation, the report) on the CPU."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import paper_plan  # noqa: E402
from model import GPT, config_from_preset  # noqa: E402
from eval_downstream import INSTALL as LM_EVAL_INSTALL  # noqa: E402
from helpers import optional_module  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = 18865 * 524288            # the paper's run: steps x tokens per step


def meta_model(preset):
    with torch.device("meta"):   # shapes only: no memory, no initialisation
        return GPT(config_from_preset(preset, vocab_size=50304))


def bench_file(folder, gpu="Some GPU", **tokens_per_s):
    """A bench_train.json as scripts/bench_train.py writes it: 124M at context 1024; one type failed."""
    results = [{"attention": a, "tokens_per_s": t, "config": {"model": "gpt2-124M", "batch_size": 16,
                                                              "block_size": 1024}} for a, t in tokens_per_s.items()]
    results.append({"attention": "relu", "error": "InductorError: ..."})
    os.makedirs(folder / gpu.replace(" ", "-"))
    (folder / gpu.replace(" ", "-") / "bench_train.json").write_text(json.dumps({"hardware": {"gpu": gpu},
                                                                                 "results": results}))


def test_estimate_uses_each_measured_figure_and_the_slowest_for_the_rest(tmp_path):
    bench_file(tmp_path, softmax=500_000.0, lssa=250_000.0)
    runs = [("softmax", "softmax"), ("lssa", "lssa"), ("lssar", "lssar"), ("relu", "relu")]
    e = paper_plan.estimate(["config/paper_124m.py"], 8, runs, str(tmp_path))
    rows = {r["run"]: r for r in e["rows"]}
    assert e["tokens_per_run"] == TOKENS and e["grad_accum"] == 2
    assert rows["softmax"]["gpu_hours"] == pytest.approx(TOKENS / 500_000 / 3600)          # 5.49 h
    assert rows["lssa"]["gpu_hours"] == pytest.approx(TOKENS / 250_000 / 3600)
    for r in ("lssar", "relu"):   # never measured (relu's measurement failed): the slowest measured figure
        assert not rows[r]["measured"] and rows[r]["tokens_per_s"] == 250_000.0 and "lssa's 250,000" in rows[r]["figure"]
    assert e["gpu_hours"] == pytest.approx(TOKENS * (1 / 500_000 + 3 / 250_000) / 3600)
    # disk: fineweb-10B's 10^10 tokens at 2 bytes; (2 kept + 1 being written) checkpoints of
    # 12 bytes a parameter, the parameters counted by the model itself
    params = meta_model("gpt2-124M").num_params()
    assert e["params"] == params and e["data_bytes"] == 2 * 10**10
    assert e["ckpt_total_bytes"] == 4 * 3 * 12 * params


def test_estimate_scales_to_another_model_by_flops_per_token(tmp_path):
    bench_file(tmp_path, softmax=500_000.0)
    e = paper_plan.estimate(["config/paper_350m.py"], 8, [("softmax", "softmax")], str(tmp_path))
    flops = {m: meta_model(m).flops_per_token(1024)["matmul"]
             for m in ("gpt2-124M", "gpt2-350M")}
    assert e["rows"][0]["tokens_per_s"] == pytest.approx(500_000 * flops["gpt2-124M"] / flops["gpt2-350M"])


def test_estimate_uses_one_gpu_only_the_one_named_or_found_else_one_borrowed(tmp_path, monkeypatch, capsys):
    """Two GPUs measured: the estimate never mixes their figures. The H100 folder sorts first,
    so reading every folder with the last file winning would cost lssa at the H100's figure."""
    bench_file(tmp_path, "NVIDIA H200", softmax=400_000.0)
    bench_file(tmp_path, "NVIDIA H100 80GB HBM3", softmax=300_000.0, lssa=200_000.0)
    runs = [("softmax", "softmax"), ("lssa", "lssa")]

    def figures(**kw):
        e = paper_plan.estimate(["config/paper_124m.py"], 8, runs, str(tmp_path), **kw)
        return e, [(r["tokens_per_s"], r["measured"]) for r in e["rows"]]
    monkeypatch.setattr(paper_plan, "local_gpu", lambda: "NVIDIA H200")   # what nvidia-smi would say
    e, rows = figures()
    assert rows == [(400_000.0, True), (400_000.0, False)] and e["gpu"] == "NVIDIA-H200" and e["note"] is None
    assert all("NVIDIA-H200/bench_train.json" in r["figure"] for r in e["rows"])
    e, rows = figures(gpu="NVIDIA H100 80GB HBM3")   # --gpu wins over nvidia-smi
    assert rows == [(300_000.0, True), (200_000.0, True)] and e["note"] is None
    assert all("NVIDIA-H100-80GB-HBM3/bench_train.json" in r["figure"] for r in e["rows"])
    # a GPU never measured: all of one other GPU's figures (the one with more types), said in one line
    e, rows = figures(gpu="NVIDIA A100-SXM4-80GB")
    assert rows == [(300_000.0, True), (200_000.0, True)] and e["gpu"] == "NVIDIA-H100-80GB-HBM3"
    assert "NVIDIA A100-SXM4-80GB" in e["note"] and "NVIDIA-H100-80GB-HBM3's" in e["note"]
    assert "results/gpu/NVIDIA-A100-SXM4-80GB/bench_train.json" in e["note"] and "\n" not in e["note"]
    paper_plan.print_estimate(e)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"# {e['note']}" and sum("tokens/s in " in line for line in out) == 2
    monkeypatch.setattr(paper_plan, "local_gpu", lambda: None)   # no GPU here, none named
    e, rows = figures()
    assert e["gpu"] == "NVIDIA-H100-80GB-HBM3" and "--gpu NAME" in e["note"]


def test_estimate_without_measurements_says_how_to_make_one(tmp_path):
    with pytest.raises(SystemExit, match="bench_train.py"):
        paper_plan.estimate(["config/paper_124m.py"], 8, [("softmax", "softmax")], str(tmp_path))


def toy_env(synth_dir, tmp_path):
    """reproduce_paper.sh at toy scale: a tiny model with GPT-2's vocabulary on the synthetic
    shards (so passkey prompts and lm-eval's local task fit), a few steps, small evaluations."""
    train = (f"--data_dir={synth_dir} --model=tiny --vocab_size=50304 --block_size=32 --batch_size=8 --eval_iters=1 "
             "--max_iters=6 --eval_interval=3 --ckpt_interval=6 --log_interval=2 --learning_rate=1e-2")
    return {**os.environ, "NO_INSTALL": "1", "SKIP_PREFLIGHT": "1", "TMPDIR": str(tmp_path),
            "CONFIG": "config/demo_cpu.py", "NAME": "toy", "TYPES": "softmax lssar",
            "RESULTS": str(tmp_path / "toy"), "OUT_ROOT": str(tmp_path / "out"), "TRAIN_ARGS": train,
            "SWEEP_ARGS": "--multipliers 1 2 4 --tokens 512", "STATS_ARGS": "--multipliers 1 4 --windows 1 --rows 4",
            "MAPS_ARGS": "--multipliers 1 4 --rows 8", "PASSKEY_LENGTHS": "64 96", "PASSKEY_TRIALS": "1",
            # the recipe's MMLU and SummScreen, whose data cannot be fetched here, run local stand-ins
            "TASKS": "tiny_mc,mmlu,scrolls_summscreenfd", "TASKS_PATH": "tests/lm_eval_tasks",
            "DOWNSTREAM_ARGS": "--limit 4 --stand_in mmlu=tiny_mc --stand_in scrolls_summscreenfd=tiny_gen",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}


def table_rows(markdown, heading):
    """The rows (lists of cells) of the first table after `heading` in a markdown text."""
    section = markdown[markdown.index(heading):]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows, started = [], False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif started:
            break
    assert lines, heading
    return rows[0], rows[2:]


@pytest.mark.slow
def test_reproduce_paper_end_to_end_at_toy_scale(synth_dir, tmp_path):
    optional_module("lm_eval", LM_EVAL_INSTALL)
    env = toy_env(synth_dir, tmp_path)
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / "toy"
    report = (results / "report.md").read_text()
    sweep = {r: json.loads((results / "sweep" / f"{r}.json").read_text())["runs"][0] for r in ("softmax", "lssar")}
    # the paper's layout: ours (paper, ours - paper) at 1x, 2x, 4x; the paper's numbers typed in by hand
    head, rows = table_rows(report, "## Validation loss against inference length")
    assert head[:5] == ["attention", "run", "1x", "2x", "4x"]
    assert [row[:2] for row in rows] == [["softmax", "toy-softmax"], ["lssar p=15", "toy-lssar"]]
    for row, run, paper in ((rows[0], "softmax", (3.19, 4.17, 5.45)), (rows[1], "lssar", (3.19, 3.19, 3.23))):
        for cell, result, theirs in zip(row[2:5], sweep[run]["results"], paper):
            assert cell == f"{result['loss']:.3f} ({theirs:.2f}, {result['loss'] - theirs:+.2f})"
    # passkey by length and depth; downstream with standard errors; statistics; curves and maps
    head, rows = table_rows(report, "## Passkey retrieval")
    assert head == ["run", "evaluated as", "64 (2x)", "96 (3x)"] and len(rows) == 2
    head, rows = table_rows(report, "Accuracy by depth")
    assert head[:3] == ["run", "length", "depth 0"] and all(re.fullmatch(r"[01]/1", c) for row in rows for c in row[2:])
    downstream = json.loads((results / "downstream" / "softmax.json").read_text())["runs"][0]["results"]["tiny_mc"]
    head, rows = table_rows(report, "## Zero-shot downstream tasks")
    assert head == ["run", "evaluated as", "tiny_mc", "mmlu"]
    assert rows[0][2] == rows[0][3] == f"{downstream['acc']['value']:.4f} ± {downstream['acc']['stderr']:.4f} (n=4)"
    # SummScreen (its stand-in, tiny_gen: generate_until through the KV cache) beside the paper's figures
    summ = json.loads((results / "downstream" / "lssar.json").read_text())["runs"][0]["results"]["scrolls_summscreenfd"]
    head, rows = table_rows(report, "## Generation tasks")
    assert head == ["run", "evaluated as", "scrolls_summscreenfd exact_match", "scrolls_summscreenfd (paper)"]
    assert rows[1][1:] == ["lssar p=15", f"{summ['exact_match']['value']:.4f} ± {summ['exact_match']['stderr']:.4f}",
                           "6.31"] and rows[0][3] == "1.68"
    assert "scrolls_summscreenfd ran tiny_gen" in report and "mmlu ran tiny_mc" in report
    head, rows = table_rows(report, "## Attention statistics")
    assert head[3:] == ["32", "128"] and [row[2] for row in rows] == ["entropy", "sink", "local", "max"] * 2
    head, rows = table_rows(report, "## Training")
    assert [row[:2] for row in rows] == [["toy-softmax", "6"], ["toy-lssar", "6"]]
    for png in ("length.png", "curves.png", "passkey.png", "attention_stats.png", "maps/softmax.png", "maps/lssar.png"):
        assert (results / png).stat().st_size > 0, png
    assert re.search(r"wall time: [\d.]+ min over 1 invocation", report)
    # re-running skips every finished evaluation (training resumes and finds itself complete)
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "1"], cwd=ROOT, env={**env, "DRY_RUN": "1"},
                          capture_output=True, text=True, check=True)
    ran = [shlex.split(line[2:])[1] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert ran == ["train.py", "train.py", "scripts/report.py"]
    assert proc.stdout.count("exists: skipped") == 10


@pytest.mark.slow   # about 30 s: two toy passes of one type (train.py and eval_length.py starting up is most of it)
def test_the_toy_pass_runs_first_in_a_scratch_folder_and_stops_the_run_when_it_fails(synth_dir, tmp_path):
    env = {**toy_env(synth_dir, tmp_path), "TYPES": "softmax", "EVALS": "sweep"}
    del env["SKIP_PREFLIGHT"]
    results, out = tmp_path / "toy", tmp_path / "out"
    # a stage that fails (here eval_length.py on an option it does not know) fails in the toy pass,
    # before the real run trains anything
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "1"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "SWEEP_ARGS": "--no_such_option"}, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "[preflight] the toy pass failed" in proc.stdout and "+ python train.py" in proc.stdout   # the toy's
    assert not out.exists() and sorted(os.listdir(results)) == [".lock", "run.log"]
    # PREFLIGHT=1: the pass alone; it leaves nothing that a full run could take for its own work
    for scratch in tmp_path.glob("reproduce_paper-preflight.*"):
        shutil.rmtree(scratch)
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "1"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "PREFLIGHT": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\[preflight\] the toy pass finished in \d+ s", proc.stdout)
    assert re.search(r"--max_iters=4 .*--out_dir=|--out_dir=.*--max_iters=4", proc.stdout)   # tiny, and ...
    assert "wrote " in proc.stdout and "report.md" in proc.stdout                            # the report too
    assert not out.exists() and sorted(os.listdir(results)) == [".lock", "run.log"]
    assert not list(tmp_path.glob("reproduce_paper-preflight.*"))   # the scratch folder is gone
    # and the report of the real run will not count the pass as one of its invocations
    assert "[toy] [reproduce_paper] wall time" in proc.stdout
    assert not re.search(r"^\[reproduce_\w+\] wall time", (results / "run.log").read_text(), re.M)
