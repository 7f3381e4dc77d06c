"""scripts/preflight.py: what a later stage would fail on is reported before the first training
step, every problem at once, one line each with its fix; and the reproduction scripts stop on it
(a missing package and a full disk planted in every Python process of the script)."""
import os
import shutil
import subprocess
import sys
from collections import namedtuple

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import preflight  # noqa: E402
from helpers import VOCAB  # noqa: E402
from model import GPT, config_from_preset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Usage = namedtuple("Usage", "total used free")


def toy(synth_dir, *extra):
    """A GPU config (device auto, bf16) shrunk to a tiny model on the synthetic shards."""
    return ["config/paper_124m.py", f"--data_dir={synth_dir}", "--model=tiny", f"--vocab_size={VOCAB}",
            "--block_size=32", "--batch_size=8", "--total_batch_size=0", "--max_iters=6", *extra]


def check(tmp_path, config_argv, runs=("softmax softmax", "lssar lssar"), evals=("sweep", "downstream"), ngpu=1):
    return preflight.check(ngpu, config_argv, list(runs), set(evals), str(tmp_path / "results"), str(tmp_path / "out"),
                           lambda name: str(tmp_path / "out" / name), "gpt2", no_install=True)


def hide(monkeypatch, *modules):
    """As if `modules` were not installed (find_spec is how the preflight looks, without importing)."""
    real = preflight.importlib.util.find_spec
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_a_missing_package_and_a_full_disk_are_reported_together(synth_dir, tmp_path, monkeypatch):
    assert check(tmp_path, toy(synth_dir)) == []   # this environment, this disk: nothing to report
    hide(monkeypatch, "lm_eval")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 10**6, 10**6))   # 1 MB free
    problems = check(tmp_path, toy(synth_dir))
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert problems[0] == ("packages: lm_eval is not installed, and downstream needs it; install it with "
                           "`python -m pip install -r requirements-eval.txt`")
    # two runs x (keep_checkpoints 2 + one being written) x 12 bytes a parameter, counted by the model
    with torch.device("meta"):
        params = GPT(config_from_preset("tiny", vocab_size=VOCAB)).num_params()
    need = 2 * 3 * 12 * params
    assert problems[1].startswith(f"disk: {need / 1e9:,.1f} GB needed on the filesystem of {tmp_path} (checkpoints "
                                  f"of 2 run(s) {need / 1e9:,.1f} GB), 0.0 GB free; fix: ")
    # a stage that does not run needs nothing: without downstream, lm-eval is not asked for
    assert not any("lm_eval" in p for p in check(tmp_path, toy(synth_dir), evals=("sweep",)))


def test_the_disk_counts_what_is_still_to_write(synth_dir, tmp_path, monkeypatch):
    with torch.device("meta"):
        params = GPT(config_from_preset("tiny", vocab_size=VOCAB)).num_params()
    per_run = 3 * 12 * params
    (tmp_path / "out" / "softmax").mkdir(parents=True)
    (tmp_path / "out" / "softmax" / "ckpt_000006.pt").write_bytes(b"\0" * 1000)   # a run under way
    (tmp_path / "out" / "softmax" / "metrics.jsonl").write_bytes(b"\0" * 500)     # not a checkpoint
    free = 2 * per_run - 1000
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, free))
    assert check(tmp_path, toy(synth_dir)) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, free - 1))
    assert [p.split(" needed")[0] for p in check(tmp_path, toy(synth_dir))] == [f"disk: {(free + 1) / 1e9:,.1f} GB"]


def test_config_gpus_folders_and_data_are_each_one_line(synth_dir, tmp_path, monkeypatch):
    (tmp_path / "results").write_text("a file where the results folder goes")
    empty = tmp_path / "no-shards"
    empty.mkdir()
    problems = check(tmp_path, toy(str(empty)), runs=("softmax softmax", "bad lsa"), ngpu=8)
    kinds = [p.split(":")[0] for p in problems]
    assert kinds == ["config", "data", "writable", "gpus"], problems
    assert "run bad" in problems[0] and "unknown attention type 'lsa'" in problems[0]
    assert f"{empty} (data_dir) has no train or val shards" in problems[1]
    assert f"{tmp_path / 'results'} is a file" in problems[2]
    assert problems[3].startswith("gpus: 8 GPU(s) asked for, torch") and "sees none" in problems[3]


def test_on_a_gpu_the_count_and_each_planned_kernel_are_checked_once(synth_dir, tmp_path, monkeypatch):
    """A stand-in GPU: 2 of them, where the fused lssa kernel fails to launch and lssar's runs.
    The check is the one each run does at start-up (model.check_attention_kernel), done for
    every planned type before the first run; softmax has no fused kernel to check."""
    import model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Stand-in GPU")
    calls = []

    def check_kernel(kind, p, device, dtype, head_dim):
        calls.append((kind, p, str(device), dtype, head_dim))
        return "RuntimeError: no kernel image is available for execution on the device" if kind == "lssa" else None
    monkeypatch.setattr(model, "check_kernel", check_kernel)
    runs = ("softmax softmax", "lssa lssa", "lssar lssar", "lssar-p3 lssar --reweight_p=3.0", "lssar-again lssar")
    problems = check(tmp_path, toy(synth_dir), runs=runs, evals=(), ngpu=8)
    assert calls == [("lssa", 15.0, "cuda", torch.bfloat16, 16), ("lssar", 15.0, "cuda", torch.bfloat16, 16),
                     ("lssar", 3.0, "cuda", torch.bfloat16, 16)]
    assert problems == [
        "gpus: 8 GPU(s) asked for, this machine has 2 (Stand-in GPU); fix: ask for 2 (bash scripts/reproduce_paper.sh "
        "2), or run on a machine with 8",
        "kernels: the fused lssa kernel (lssa) cannot run on Stand-in GPU: RuntimeError: no kernel image is available "
        "for execution on the device; fix: a Triton that supports this GPU (`python -m pip install -U triton`), or "
        "accept the O(T^2) reference with --attention_backend=reference in TRAIN_ARGS (it may not fit the paper's batch)"]
    # the reference asked for: no kernel to check
    calls.clear()
    assert check(tmp_path, toy(synth_dir, "--attention_backend=reference"), runs=runs, evals=(), ngpu=2) == []
    assert calls == []


@pytest.mark.slow   # about 15 s: the script starts several Python processes that import torch
def test_reproduce_paper_stops_before_training_on_a_planted_missing_package_and_full_disk(synth_dir, tmp_path):
    """The shell script end to end: every Python process it starts sees lm-eval missing and 1 MB
    of free disk (a sitecustomize.py that the interpreter runs at start-up: sys.modules[name] =
    None is how Python says "not installed", and shutil.disk_usage is what the preflight asks)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import collections, shutil, sys\nsys.modules['lm_eval'] = None\n"
        "shutil.disk_usage = lambda path: collections.namedtuple('U', 'total used free')(10**12, 10**12, 10**6)\n")
    train = f"--data_dir={synth_dir} --model=tiny --vocab_size=50304 --block_size=32 --batch_size=8 --max_iters=6"
    env = {**os.environ, "NO_INSTALL": "1", "CONFIG": "config/demo_cpu.py", "NAME": "toy", "TYPES": "softmax lssar",
           "RESULTS": str(tmp_path / "results"), "OUT_ROOT": str(tmp_path / "out"), "TRAIN_ARGS": train,
           "TMPDIR": str(tmp_path), "PYTHONPATH": str(site), "PATH": os.path.dirname(sys.executable) + os.pathsep +
           os.environ["PATH"]}
    proc = subprocess.run(["bash", "scripts/reproduce_paper.sh", "1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "preflight: 2 problem(s), found before any training (nothing was trained):" in out
    assert "  packages: lm_eval is not installed, and downstream needs it; install it with `python -m pip install " \
           "-r requirements-eval.txt`\n" in out
    assert "  disk: " in out and " needed on the filesystem of " in out and ", 0.0 GB free; fix: " in out
    assert "+ python train.py" not in out and not (tmp_path / "out").exists()   # nothing trained, no toy pass either
    assert sorted(os.listdir(tmp_path)) == ["results", "site"]


def test_data_to_prepare_needs_its_source_to_answer(tmp_path, monkeypatch):
    """FineWeb not prepared here (no data/fineweb-10B/meta.json in a checkout): the hub must answer."""
    asked = []
    monkeypatch.setattr(preflight, "reachable", lambda url: asked.append(url) or False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    cfg = preflight.load_config(["config/paper_124m.py"], check_model=False)
    assert preflight.data_problems(cfg, "gpt2") == [
        "data: fineweb-10B is not prepared and https://huggingface.co does not answer; fix: check the network, or "
        "prepare the shards elsewhere (python data/prepare.py fineweb-10B) and copy data/fineweb-10B"]
    assert asked == ["https://huggingface.co"]
    monkeypatch.setattr(preflight, "reachable", lambda url: True)
    assert preflight.data_problems(cfg, "gpt2") == []
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")   # the hub switched off: said so, without asking it
    assert preflight.data_problems(cfg, "gpt2")[0].startswith("data: fineweb-10B is not prepared and the hub is "
                                                             "switched off")


def test_summscreen_needs_are_checked_before_training(synth_dir, tmp_path, monkeypatch):
    # lm-eval's scrolls_summscreenfd imports transformers and scores with rouge_score: neither comes
    # with lm-eval itself, and without them downstream would fail after every model was trained
    hide(monkeypatch, "transformers", "rouge_score")
    problems = check(tmp_path, toy(synth_dir))
    assert problems == [f"packages: {m} is not installed, and downstream needs it; install it with "
                        "`python -m pip install -r requirements-eval.txt`" for m in ("transformers", "rouge_score")]
