"""The benchmark scripts run end to end (their figures are for a GPU; here only the plumbing)."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import bench_memory  # noqa: E402
import bench_train  # noqa: E402
from helpers import VOCAB  # noqa: E402


def test_bench_train_reports_each_attention_type(synth_dir, tmp_path):
    out = tmp_path / "bench.json"
    report = bench_train.main(["config/demo_cpu.py", "--attention", "softmax", "lssar", "--steps", "6", "--warmup", "2",
                               "--log_interval", "2", "--batch_size", "4", "--out", str(out), "--",
                               "--model=tiny", f"--data_dir={synth_dir}", f"--vocab_size={VOCAB}", "--block_size=32"])
    assert json.load(open(out)) == report
    softmax, lssar = report["results"]
    assert (softmax["attention"], lssar["attention"]) == ("softmax", "lssar")
    assert softmax["ratio"] == 1.0 and lssar["tokens_per_s"] > 0 and lssar["intervals"] == 2
    assert lssar["config"]["batch_size"] == 4 and lssar["config"]["block_size"] == 32
    assert {"commit", "dirty"} <= set(report["code"]) and report["hardware"]["device"] == "cpu"


def test_bench_memory_measures_the_command_alone(tmp_path):
    out = tmp_path / "memory.json"
    report = bench_memory.main(["--repeat", "2", "--out", str(out), "--", sys.executable, "-c",
                                "b = bytearray(300 * 2**20)"])  # 300 MiB, touched
    assert json.load(open(out)) == report and len(report["runs"]) == 2
    for run in report["runs"]:  # the child's own peak, not this process's (which has torch loaded)
        assert 0.29 < run["peak_rss_gib"] < 0.4 and run["minor_faults"] > 300 * 2**20 / 4096
    with pytest.raises(SystemExit, match="the command failed .exit status 3."):
        bench_memory.main(["--", sys.executable, "-c", "raise SystemExit(3)"])


def test_bench_attention_cpu_smoke(tmp_path):
    """The kernel benchmark end to end on tiny shapes through Triton's interpreter."""
    pytest.importorskip("triton", reason="triton is not installed (see requirements-dev.txt)")
    out = tmp_path / "bench_attention.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "scripts/bench_attention.py", "--cpu-smoke", "--out", str(out)], cwd=root,
                   check=True, capture_output=True, timeout=300)
    report = json.load(open(out))
    timed = {(r["attention"], r["impl"], r["mode"]) for r in report["results"] if "error" not in r and r["ms"] > 0}
    for mode in ("fwd", "fwd+bwd"):  # every implementation ran (an error row would be missing here)
        assert {("softmax", "sdpa", mode), ("lssa", "triton", mode), ("lssar", "triton", mode),
                ("lssa", "reference", mode), ("lssar", "reference", mode)} <= timed
    assert {"commit", "dirty"} <= set(report["meta"]["code"])
