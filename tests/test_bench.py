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
    assert lssar["ratio"] == pytest.approx(lssar["tokens_per_s"] / softmax["tokens_per_s"])  # to the first type
    assert lssar["config"]["batch_size"] == 4 and lssar["config"]["block_size"] == 32
    assert {"commit", "dirty"} <= set(report["code"]) and report["hardware"]["device"] == "cpu"


def test_bench_memory_measures_the_command_alone(tmp_path):
    """From its own small process (a child's peak RSS starts at its parent's: not pytest's)."""
    out = tmp_path / "memory.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "scripts/bench_memory.py", "--repeat", "2", "--out", str(out), "--",
                    sys.executable, "-c", "b = bytearray(300 * 2**20)"], cwd=root, check=True)  # 300 MiB, touched
    report = json.load(open(out))
    assert len(report["runs"]) == 2
    for run in report["runs"]:  # the child's own peak, not this process's (which has torch loaded)
        assert 0.29 < run["peak_rss_gib"] < 0.4 and run["minor_faults"] > 300 * 2**20 / 4096
    with pytest.raises(SystemExit, match="the command failed .exit status 3."):
        bench_memory.main(["--", sys.executable, "-c", "raise SystemExit(3)"])


def test_kernel_resources_compiles_for_an_h100(tmp_path):
    """scripts/kernel_resources.py end to end on one small configuration: a real sm_90 compile and
    ptxas's report (no GPU needed), plus a tile the kernels cannot use, named without compiling."""
    pytest.importorskip("triton.compiler", reason="triton is not installed (see requirements-dev.txt)")
    out = tmp_path / "resources.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "scripts/kernel_resources.py", "--kernels", "dkdv", "--dtypes", "bf16",
                           "--head-dims", "64", "--modes", "lssa", "--tiles", "16,32,4,1", "32,16,4,1",
                           "--json", str(out)], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ok, bad = json.load(open(out))["rows"]
    assert ok["tile"] == [16, 32, 4, 1] and 0 < ok["registers"] <= 255 and ok["spill_stores"] >= 0
    assert 0 < ok["shared"] <= 227 * 1024 and ok["fits"]
    assert bad["error"] == "dK/dV needs BLOCK_N % BLOCK_M == 0"
    assert "(16, 32, 4, 1)" in proc.stdout and "BLOCK_N % BLOCK_M" in proc.stdout


def test_kernel_resources_reports_the_tiles_the_kernels_launch():
    pytest.importorskip("triton", reason="triton is not installed (see requirements-dev.txt)")
    import kernel_resources
    from kernels import lssa_triton
    assert kernel_resources.tile_table("fp32") is lssa_triton._TILES_FP32
    assert kernel_resources.tile_table("bf16") is kernel_resources.tile_table("fp16") is lssa_triton._TILES
    assert lssa_triton._TILES_FP32 != lssa_triton._TILES  # else the test above could not tell them apart
