"""The benchmark scripts run end to end (their figures are for a GPU; here only the plumbing)."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

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
