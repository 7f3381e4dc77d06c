"""scripts/gpu_check.sh: the one-call GPU check. Its figures need a GPU; here its plumbing runs
at toy sizes on the CPU (--smoke), so that the first session lent a GPU needs exactly one call."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import VOCAB, optional_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import gpu_check  # noqa: E402


def test_smoke_runs_every_part_and_survives_a_timeout(synth_dir, tmp_path):
    optional_module("triton", "pip install -r requirements-dev.txt")
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "all", "repro", "--smoke", "--limit", "tiles=1",
                           "--out", str(out), "--data_dir", synth_dir, "--vocab_size", str(VOCAB)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]   # the cut part fails the run
    summary = json.load(open(out / "summary.json"))
    # the order: training speed, every tile, determinism, the other types, attention, errors
    assert list(summary["parts"]) == ["bench_train", "tiles", "determinism", "bench_types", "bench_attention",
                                      "errors", "repro"]
    assert summary["command"].startswith("bash scripts/gpu_check.sh all repro --smoke --limit tiles=1")
    status = {part: r["status"] for part, r in summary["parts"].items()}
    assert status == {"tiles": "timeout", "errors": "ok", "bench_train": "ok", "bench_types": "ok",
                      "bench_attention": "ok", "repro": "ok", "determinism": "ok"}
    determinism = summary["found"]["determinism"]   # 2 steps, resumed after 1: equal on the CPU
    assert determinism["equal"] == {"two_processes": True, "resumed": True}
    assert len(determinism["losses"]["first"]) == 2 and determinism["losses"]["first"] == determinism["losses"]["resumed"]
    # the output folder stays small to copy back: at most 8 files, at most 2 folders deep
    files = [os.path.join(d, f) for d, _, names in os.walk(out) for f in names]
    assert len(files) <= 8 and all(os.path.relpath(f, out).count(os.sep) <= 2 for f in files)
    assert proc.stdout.rstrip().endswith(f"wrote {out}/") and "| part | status | seconds |" in proc.stdout
    log = open(out / "log.txt").read()
    for attention in ("softmax", "lssa", "lssar"):   # the repro's dry run: the small GPU runs and the sweep
        assert f"+ python train.py config/small_gpu.py --attention={attention} --out_dir=out/small-{attention}" in log
    assert "+ python eval_length.py out/small-softmax out/small-lssa out/small-lssar" in log
    errors = json.load(open(out / "errors.json"))
    assert [r["ok"] for r in errors["results"]] == [True]
    assert summary["found"]["errors"]["within_tolerance"] == 1
    bench = summary["found"]["bench_train"]   # lssar first; its ratios are to softmax's row all the same
    assert [r["attention"] for r in bench] == ["lssar", "softmax"]
    assert bench[0]["ratio"] == pytest.approx(bench[0]["tokens_per_s"] / bench[1]["tokens_per_s"])
    assert [r["attention"] for r in summary["found"]["bench_types"]] == ["softmax", "relu_l1"]
    attention = json.load(open(out / "bench_attention.json"))
    timed = {(r["attention"], r["impl"], r["mode"]) for r in attention["results"] if "error" not in r and r["ms"] > 0}
    for mode in ("fwd", "fwd+bwd"):  # every implementation ran (an error row would be missing here)
        assert {("softmax", "sdpa", mode), ("lssa", "triton", mode), ("lssar", "triton", mode),
                ("lssa", "reference", mode), ("lssar", "reference", mode)} <= timed
    assert {"commit", "dirty"} <= set(attention["meta"]["code"])


def test_summary_checks_the_targets():
    found = {
        "bench_train": [{"attention": "softmax", "tokens_per_s": 1000.0, "ratio": 1.0, "mfu": 0.4, "peak_mem_gib": 10.0,
                         "mem_ratio": 1.0},
                        {"attention": "lssa", "tokens_per_s": 950.0, "ratio": 0.95, "mfu": 0.36, "peak_mem_gib": 11.0,
                         "mem_ratio": 1.1, "first_step_s": 50.0},
                        {"attention": "lssar", "error": "RuntimeError: boom"}],
        "bench_types": [{"attention": "softmax", "tokens_per_s": 1000.0, "ratio": 1.0, "mfu": 0.4, "peak_mem_gib": 10.0,
                         "mem_ratio": 1.0},
                        {"attention": "relu_l1", "tokens_per_s": 650.0, "ratio": 0.65, "mfu": 0.26, "peak_mem_gib": 12.0,
                         "mem_ratio": 1.2}],
        "bench_attention": [{"T": 16384, "B": 1, "mode": "fwd", "attention": "lssar", "impl": "triton", "ms": 9.0,
                             "x_sdpa": 3.6, "peak_mib": 20.0},
                            {"d": 128, "T": 16384, "B": 1, "mode": "fwd", "attention": "lssa", "impl": "triton",
                             "ms": 9.0, "x_sdpa": 9.0, "peak_mib": 20.0}],
        "repro": [{"run": "small-lssar", "attention": "lssar", "reweight_p": 15.0,
                   "losses": {"1x": 4.0, "2x": 4.0, "4x": 4.02, "8x": 4.04, "16x": 4.1}}],
    }
    rows = {t["target"]: t for t in gpu_check.targets(found)}
    assert rows["lssa tokens/s"]["met"] and rows["lssa peak memory"]["met"]
    assert "lssar tokens/s" not in rows                 # it failed: nothing to compare
    assert not rows["relu_l1 tokens/s"]["met"] and rows["relu_l1 peak memory"]["met"]   # 0.65 < 0.7; 1.2 <= 1.25
    assert "softmax tokens/s" not in rows
    assert not rows["lssar fwd T=16384"]["met"]         # 3.6x SDPA > 3.5x
    assert "lssa fwd T=16384" not in rows               # the targets are head dim 64's
    assert not rows["lssa first step s"]["met"]          # 50 s > 45 s
    assert rows["lssar 16x/1x"]["value"] == pytest.approx(4.1 / 4.0) and not rows["lssar 16x/1x"]["met"]
    summary = {"gpu": "NVIDIA H200", "torch": "2.11", "triton": "3.6", "code": {"commit": "abcdef0123", "dirty": False},
               "date": "now", "seconds": 1.0, "parts": {"tests": {"status": "ok", "seconds": 1.0}}, "found": found,
               "targets": list(rows.values())}
    text = gpu_check.markdown(summary)
    assert "| lssar | RuntimeError: boom |" in text and "| lssar 16x/1x | 1.025 | <= 1.02 | NO |" in text


def test_missing_data_is_one_line(tmp_path):
    """Without data/embedded the check stops at once and says which command makes it."""
    os.makedirs(tmp_path / "scripts")
    shutil.copy(os.path.join(REPO, "scripts", "gpu_check.sh"), tmp_path / "scripts")
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "python data/prepare.py embedded" in proc.stderr


def test_softmax_ratios_whatever_its_place():
    rows = gpu_check.softmax_ratios([{"attention": "lssar", "tokens_per_s": 300.0, "peak_mem_gib": 12.0},
                                     {"attention": "softmax", "tokens_per_s": 400.0, "peak_mem_gib": 10.0},
                                     {"attention": "lssa", "error": "boom"}])
    assert [r.get("ratio") for r in rows] == [0.75, 1.0, None] and rows[0]["mem_ratio"] == 1.2


def test_needs_pytest_for_the_test_parts(monkeypatch):
    """Without pytest the parts that run it stop the check in one line naming the install; without
    pytest-xdist they run serially, and the check says so."""
    have = {"pytest": False, "xdist": False}
    monkeypatch.setattr(gpu_check, "_has", lambda module: have[module])
    errors, notes = gpu_check.check_needs(["bench_train", "tiles", "errors"])
    assert len(errors) == 1 and "\n" not in errors[0] and notes == []
    assert "the tiles part(s) need pytest" in errors[0] and "-m pip install pytest pytest-xdist" in errors[0]
    assert errors[0].endswith("bash scripts/gpu_check.sh bench_train errors)")
    with pytest.raises(SystemExit, match="need pytest"):
        gpu_check.main(["tiles"])
    assert gpu_check.check_needs(["bench_train", "errors"]) == ([], [])
    have["pytest"] = True
    errors, notes = gpu_check.check_needs(["tiles", "tests"])
    assert errors == [] and len(notes) == 1 and "run serially" in notes[0] and "tiles 100 s, tests 200 s" in notes[0]
    assert gpu_check.check_needs(["tiles"], smoke=True) == ([], [])
    have["xdist"] = True
    assert gpu_check.check_needs(["tiles", "tests"]) == ([], [])


def test_determinism_first_difference():
    import determinism
    assert determinism.first_difference({1: 4.5, 2: 4.25}, {1: 4.5, 2: 4.25}) is None
    assert determinism.first_difference({1: 4.5, 2: 4.25, 3: 4.0}, {1: 4.5, 2: 4.250000000000001, 3: 4.0}) == 2
    assert determinism.first_difference({1: 4.5, 2: 4.25}, {1: 4.5}) == 2   # a step missing is a difference
