"""scripts/paper_plan.py's cost estimate, and scripts/reproduce_paper.sh end to end at toy scale
(two types, every evaluation, the report) on the CPU."""
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

from model import GPT, config_from_preset  # noqa: E402
from eval_downstream import INSTALL as LM_EVAL_INSTALL  # noqa: E402
from helpers import optional_module, script  # noqa: E402

paper_plan = script("paper_plan")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = 18865 * 524288            # the paper's run: steps x tokens per step


@functools.cache
def meta_model(preset, vocab_size=50304, **overrides):
    with torch.device("meta"):   # shapes only: no memory, no initialisation
        return GPT(config_from_preset(preset, vocab_size=vocab_size, **overrides))


meta_model("gpt2-124M")   # once at import: the first model on the meta device loads torch's reference ops (seconds)


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


def test_a_type_never_measured_takes_the_slowest_figure_not_the_first_name(tmp_path):
    bench_file(tmp_path, lssa=500_000.0, softmax=250_000.0)
    e = paper_plan.estimate(["config/paper_124m.py"], 8, [("relu", "relu")], str(tmp_path))
    assert e["rows"][0]["tokens_per_s"] == 250_000.0 and "softmax's 250,000" in e["rows"][0]["figure"]


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


def test_module_literals_are_read_from_the_source_without_importing_it(tmp_path, monkeypatch):
    source = tmp_path / "m.py"
    source.write_text("import os\nA: int = 1\nos.B = 2\nB = C = dict(x=1, y={'z': [2, 3]}, w=dict())\n"
                      "D = {'k': dict(v=5)}\nD = 0\nE = dict(os.environ)\nF = dict({'a': 1})\nG = os.getcwd()\n")
    both = {"x": 1, "y": {"z": [2, 3]}, "w": {}}
    assert paper_plan.module_literal(str(source), "B") == both and paper_plan.module_literal(str(source), "C") == both
    assert paper_plan.module_literal(str(source), "D") == {"k": {"v": 5}}     # the first assignment
    with pytest.raises(ValueError, match=r"m\.py has no A = \.\.\.$"):     # annotated: not `A = ...`
        paper_plan.module_literal(str(source), "A")
    for name in ("E", "F", "G"):     # a call with arguments, or of anything but dict, is code, not a literal
        with pytest.raises(ValueError, match="malformed"):
            paper_plan.module_literal(str(source), name)
    # the repository's own (found from any working directory), read without torch, equal what importing gives
    monkeypatch.chdir(tmp_path)
    import attention
    import model
    assert paper_plan.recipe_names() == list(attention.RECIPES)
    assert paper_plan.module_literal("model.py", "PRESETS") == model.PRESETS


def test_model_shape_and_flops_per_token_count_what_the_model_counts():
    assert paper_plan.model_shape("gpt2-124M") == (meta_model("gpt2-124M").num_params(), 12, 768)
    gpt = meta_model("mini", 256, n_layer=3, n_embd=64)   # overrides of the preset; a 0 or None keeps its value
    assert paper_plan.model_shape("mini", 256, n_layer=3, n_embd=64, n_head=0, dropout=None) == (gpt.num_params(), 3, 64)
    assert paper_plan.flops_per_token(gpt.num_params(), 3, 64, 2048) == gpt.flops_per_token(2048)["matmul"]


def test_gpu_folder_spells_a_gpu_name_as_results_gpu_does():
    assert paper_plan.gpu_folder(" NVIDIA H100 80GB HBM3\n") == "NVIDIA-H100-80GB-HBM3"
    assert paper_plan.gpu_folder("Tesla V100-SXM2 (16 GB)") == "Tesla-V100-SXM2-16-GB-"
    assert paper_plan.gpu_folder("a  b.c_d") == "a-b.c_d"


def test_local_gpu_is_nvidia_smis_first_name_or_none(monkeypatch):
    calls = []

    def nvidia_smi(returncode=0, stdout="", error=None):
        def run(cmd, **kw):
            calls.append((cmd, kw))
            if error:
                raise error
            return subprocess.CompletedProcess(cmd, returncode, stdout, "")
        monkeypatch.setattr(paper_plan.subprocess, "run", run)
    nvidia_smi(stdout=" NVIDIA H200 \nNVIDIA A100\n")
    assert paper_plan.local_gpu() == "NVIDIA H200"
    assert calls == [(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                      {"capture_output": True, "text": True, "timeout": 30})]
    for broken in (dict(returncode=9, stdout="NVIDIA H200\n"), dict(stdout="\n"),
                   dict(error=FileNotFoundError("nvidia-smi")), dict(error=subprocess.TimeoutExpired("nvidia-smi", 30))):
        nvidia_smi(**broken)
        assert paper_plan.local_gpu() is None, broken


def test_measured_throughput_reads_one_gpus_files_the_last_in_name_order_winning(tmp_path):
    folder = tmp_path / "results" / "gpu" / "Some-GPU"
    folder.mkdir(parents=True)
    config = {"model": "mini", "batch_size": 8, "block_size": 512}
    (folder / "bench_train.json").write_text(json.dumps({"hardware": {"gpu": "Some GPU"}, "results": [
        {"attention": "softmax", "tokens_per_s": 10.0, "config": config},
        {"attention": "relu", "error": "out of memory"},       # failed there: no figure, the next ones still read
        {"attention": "lssa", "tokens_per_s": 20.0, "config": config}]}))
    (folder / "bench_train_1.json").write_text(json.dumps({"hardware": {"gpu": "Some GPU"}}))   # no results at all
    (folder / "bench_train_2.json").write_text(json.dumps({"results": [   # no hardware: the folder's name
        {"attention": "softmax", "tokens_per_s": 30.0, "config": {**config, "block_size": 256}}]}))
    (folder / "bench_attention.json").write_text(json.dumps({"results": [
        {"attention": "relu", "tokens_per_s": 1.0, "config": config}]}))
    mini = meta_model("mini")
    assert paper_plan.measured_throughput(str(folder)) == {
        "softmax": (30.0, mini.flops_per_token(256)["matmul"],
                    "results/gpu/Some-GPU/bench_train_2.json (Some-GPU, mini, batch 8 x 256)"),
        "lssa": (20.0, mini.flops_per_token(512)["matmul"],
                 "results/gpu/Some-GPU/bench_train.json (Some GPU, mini, batch 8 x 512)")}
    # measured_gpus: only the folders with a figure; the GPU with the most types, the first name on a tie
    (tmp_path / "results" / "gpu" / "failed").mkdir()
    (tmp_path / "results" / "gpu" / "failed" / "bench_train.json").write_text(json.dumps({"results": [
        {"attention": "relu", "error": "out of memory"}]}))
    (tmp_path / "results" / "gpu" / "notes.md").write_text("a file, not a GPU")
    measured = paper_plan.measured_gpus(str(tmp_path / "results" / "gpu"))
    assert list(measured) == ["Some-GPU"] and set(measured["Some-GPU"]) == {"softmax", "lssa"}
    assert paper_plan.most_measured({"b": {1: 0, 2: 0}, "c": {1: 0}, "a": {1: 0, 2: 0}}) == "a"
    assert paper_plan.most_measured({"b": {1: 0, 2: 0}, "c": {1: 0}}) == "b"


def test_the_note_of_a_borrowed_gpu_says_whose_figures_and_how_to_measure(tmp_path, monkeypatch):
    gpus = os.path.join(paper_plan.ROOT, "results", "gpu")    # the committed figures: one GPU, the H200
    monkeypatch.chdir(tmp_path)                               # the folder named from the repository, not from here
    borrowed = "every figure below is NVIDIA-H200's (measure yours: python scripts/bench_train.py --attention all --out "
    used, measured, note = paper_plan.pick_gpu(gpus, "NVIDIA A100")
    assert used == "NVIDIA-H200" and measured == paper_plan.measured_throughput(os.path.join(gpus, "NVIDIA-H200"))
    assert note == ("no training throughput measured for NVIDIA A100 (--gpu) under results/gpu/: " + borrowed
                    + "results/gpu/NVIDIA-A100/bench_train.json)")
    monkeypatch.setattr(paper_plan, "local_gpu", lambda: "NVIDIA A100")
    assert paper_plan.pick_gpu(gpus, None)[2] == ("no training throughput measured for NVIDIA A100 (nvidia-smi) under "
                                                  "results/gpu/: " + borrowed + "results/gpu/NVIDIA-A100/bench_train.json)")
    monkeypatch.setattr(paper_plan, "local_gpu", lambda: None)
    assert paper_plan.pick_gpu(gpus, None)[2] == (
        "no training throughput measured for this machine's GPU (no nvidia-smi here; name one with --gpu NAME) under "
        "results/gpu/: " + borrowed + "results/gpu/<GPU>/bench_train.json)")
    assert paper_plan.pick_gpu(gpus, "NVIDIA H200")[::2] == ("NVIDIA-H200", None)


def test_no_measurement_at_all_is_one_line_naming_the_folder_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(paper_plan, "local_gpu", lambda: None)
    with pytest.raises(SystemExit) as e:
        paper_plan.pick_gpu(str(tmp_path), None)
    assert str(e.value) == (f"no training throughput measured under {tmp_path} (scripts/bench_train.py --attention all "
                            f"--out {tmp_path}/<GPU>/bench_train.json measures one)")


def test_footprint_of_a_small_config_on_bytes(monkeypatch):
    """config/demo_cpu.py: the mini model on embedded-bytes (a 256-byte vocabulary, no dataset size on
    record), 16 x 64 tokens per GPU and step (total_batch_size 0), 700 steps, 2 checkpoints kept."""
    mini, wider, tiny = meta_model("mini", 256), meta_model("mini", 512, n_layer=2, n_embd=64), meta_model("tiny")
    for name in ("attention", "model", "data.tokenizer"):   # a dry run in a shell without torch: none of them needed
        monkeypatch.setitem(sys.modules, name, None)
    runs = [("a", "softmax"), ("b", "lssar"), ("c", "relu")]
    f = paper_plan.footprint(["config/demo_cpu.py"], 2, runs)
    params = mini.num_params()
    assert f == {"config": "config/demo_cpu.py", "ngpu": 2, "grad_accum": 1, "tokens_per_run": 700 * 16 * 64 * 2,
                 "params": params, "flops_per_token": mini.flops_per_token(64)["matmul"], "dataset": "embedded-bytes",
                 "data_bytes": None, "ckpt_bytes": 12 * params, "ckpt_total_bytes": 3 * 3 * 12 * params,
                 "keep_checkpoints": 2, "runs": 3}
    f = paper_plan.footprint(["config/demo_cpu.py", "--vocab_size=512", "--n_layer=2", "--n_embd=64",
                              "--keep_checkpoints=1", "--total_batch_size=4096", "--max_iters=10"], 1, runs[:1])
    assert (f["params"], f["grad_accum"], f["tokens_per_run"]) == (wider.num_params(), 4, 10 * 4096)
    assert f["ckpt_total_bytes"] == 2 * 12 * wider.num_params() and f["config"].endswith("--max_iters=10")
    # GPT-2's tokens on a dataset of known size unless the tokenizer is bytes
    f = paper_plan.footprint(["config/paper_124m.py", "--model=tiny"], 8, runs)
    assert f["params"] == paper_plan.model_shape("tiny")[0] == tiny.num_params()
    assert f["data_bytes"] == 2 * 10**10
    f = paper_plan.footprint(["config/paper_124m.py", "--model=tiny", "--tokenizer=bytes"], 8, runs)
    assert f["params"] == paper_plan.model_shape("tiny", 256)[0]


def test_estimate_lines_are_the_dry_runs_text():
    row = {"run": "paper-softmax", "attention": "softmax", "tokens_per_s": 1234567.8, "gpu_hours": 12.34,
           "measured": True, "figure": "F1"}
    # sizes just above a rounding boundary (123.45M, 9.875B, 1.45 GB): a unit off by one part in 10^9 rounds down
    e = {"config": "config/x.py --a=1", "ngpu": 4, "params": 123_450_001, "tokens_per_run": 9_875_000_001,
         "gpu": "G", "note": None, "gpu_hours": 56.78, "data_bytes": 2 * 10**10, "dataset": "fineweb-10B",
         "ckpt_total_bytes": 4_500_000_000, "keep_checkpoints": 2, "ckpt_bytes": 1_450_000_001,
         "rows": [row, {**row, "run": "r2", "attention": "lssar", "tokens_per_s": 999.4, "gpu_hours": 0.04,
                        "measured": False, "figure": "F2"}]}
    assert paper_plan.estimate_lines(e) == [
        "# cost estimate (config/x.py --a=1, 4 GPU(s)): 123.5M parameters, 9.88B training tokens per run; figures of G",
        "# run                      attention               tokens/s/GPU  GPU-hours  figure used",
        "# paper-softmax            softmax                    1,234,568       12.3  measured: F1",
        "# r2                       lssar                            999        0.0  estimate: not measured, the "
        "slowest measured type's: F2",
        "# training in all: 56.8 GPU-hours, 14.2 hours on 4 GPU(s) (if every GPU trains as fast as the measured one; "
        "evaluations not counted)",
        "# disk: data 20.0 GB (fineweb-10B token shards, 2 bytes a token); checkpoints 4.5 GB (2 runs x (2 kept + 1 "
        "being written) x 1.5 GB)"]
    lines = paper_plan.estimate_lines({**e, "note": "borrowed", "data_bytes": None, "ngpu": 1})
    assert lines[1] == "# borrowed" and lines[0].startswith("# cost estimate (config/x.py --a=1, 1 GPU(s))")
    assert "56.8 GPU-hours, 56.8 hours on 1 GPU(s)" in lines[-2]
    assert lines[-1].startswith("# disk: data small (no size on record) (fineweb-10B token shards")


def test_paper_plan_main_lists_types_and_prints_the_estimate(monkeypatch, capsys):
    import attention
    monkeypatch.setattr(sys, "argv", ["paper_plan.py", "types"])
    paper_plan.main()
    assert capsys.readouterr().out == "\n".join(attention.RECIPES) + "\n"
    monkeypatch.setattr(paper_plan, "local_gpu", lambda: None)
    monkeypatch.setenv("GPU", "NVIDIA H200")      # reproduce_paper.sh's GPU=NAME: the committed H200 figures
    paper_plan.main(["cost", "8", "paper-softmax:softmax", "odd:lssa:x", "--", "config/paper_124m.py", "--max_iters=100"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# cost estimate (config/paper_124m.py --max_iters=100, 8 GPU(s)): ")
    assert out[0].endswith("0.05B training tokens per run; figures of NVIDIA-H200")
    rows = [line.split()[1:3] for line in out if "tokens/s in " in line]
    assert rows == [["paper-softmax", "softmax"], ["odd", "lssa:x"]]    # the run name ends at the first colon
    assert "measured: softmax's" in out[2] and "estimate: not measured" in out[3]
    monkeypatch.setenv("GPU", "")                 # no GPU named, none found: another GPU's figures, said so
    paper_plan.main(["cost", "1", "a:softmax", "--", "config/paper_124m.py"])
    assert "# no training throughput measured for this machine's GPU" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        paper_plan.main(["cost", "8", "a:softmax"])
    assert e.value.code == 2 and capsys.readouterr().err.endswith(
        "paper_plan.py: error: cost needs -- and a config file after the runs\n")
    with pytest.raises(SystemExit) as e:
        paper_plan.main([])
    assert e.value.code == 2 and "the following arguments are required: command" in capsys.readouterr().err


def test_paper_plan_finds_the_measurements_from_any_working_directory(tmp_path, monkeypatch, capsys):
    config = os.path.join(paper_plan.ROOT, "config", "paper_124m.py")
    monkeypatch.chdir(tmp_path)
    paper_plan.main(["cost", "8", "a:softmax", "--gpu", "NVIDIA H200", "--", config])
    assert capsys.readouterr().out.splitlines()[0].endswith("figures of NVIDIA-H200")


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
