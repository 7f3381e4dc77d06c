"""The benchmark scripts run end to end (their figures are for a GPU; here only the plumbing)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "scripts"), os.path.join(REPO, "tools")]

import bench_generate  # noqa: E402
import bench_memory  # noqa: E402
import bench_train  # noqa: E402
from helpers import VOCAB, optional_module  # noqa: E402


def test_bench_train_reports_each_attention_type(synth_dir, tmp_path):
    out = tmp_path / "bench.json"
    report = bench_train.main(["config/demo_cpu.py", "--attention", "softmax", "lssar", "--steps", "6", "--warmup", "2",
                               "--log_interval", "2", "--batch_size", "4", "--out", str(out), "--",
                               "--model=tiny", f"--data_dir={synth_dir}", f"--vocab_size={VOCAB}", "--block_size=32"])
    assert json.load(open(out)) == report
    softmax, lssar = report["results"]
    assert (softmax["attention"], lssar["attention"]) == ("softmax", "lssar")
    assert softmax["ratio"] == 1.0 and lssar["tokens_per_s"] > 0 and lssar["intervals"] == 2
    assert lssar["tokens_per_s_min"] <= lssar["tokens_per_s"] <= lssar["tokens_per_s_max"]
    assert 0 < softmax["first_step_s"] < 300 and 0 < lssar["first_step_s"] < 300   # train.py's start to step 1
    assert lssar["ratio"] == pytest.approx(lssar["tokens_per_s"] / softmax["tokens_per_s"])  # to the first type
    assert lssar["config"]["batch_size"] == 4 and lssar["config"]["block_size"] == 32
    assert {"commit", "dirty"} <= set(report["code"]) and report["hardware"]["device"] == "cpu"


def test_bench_train_keeps_each_type_as_it_is_measured(tmp_path, monkeypatch):
    """gpu_check kills a part at its time limit: the types measured before that stay in the JSON."""
    out = tmp_path / "bench.json"

    def bench_one(args, attention, out_dir):
        if attention == "relu":
            raise KeyboardInterrupt   # stands for the kill: not caught as a type's failure
        return {"attention": attention, "tokens_per_s": {"softmax": 1000.0, "sigmoid": 800.0}[attention],
                "peak_mem_gib": 10.0}

    monkeypatch.setattr(bench_train, "bench_one", bench_one)
    with pytest.raises(KeyboardInterrupt):
        bench_train.main(["--attention", "softmax", "sigmoid", "relu", "--out", str(out)])
    rows = json.load(open(out))["results"]
    assert [(r["attention"], r["ratio"], r["mem_ratio"]) for r in rows] == [("softmax", 1.0, 1.0), ("sigmoid", 0.8, 1.0)]
    with pytest.raises(SystemExit):   # a type that does not exist is refused before anything runs
        bench_train.main(["--attention", "softmax", "cosine"])


def test_bench_generate_reports_cached_and_no_cache_decoding(tmp_path, capsys):
    out = tmp_path / "gen.json"
    report = bench_generate.main(["config/demo_cpu.py", "--attention", "softmax", "lssar", "--contexts", "16", "24",
                                  "--batches", "1", "2", "--new", "3", "--no_cache_new", "2", "--threads", "1",
                                  "--out", str(out)])
    assert json.load(open(out)) == report and {"command", "code", "hardware", "config"} <= set(report)
    rows = report["results"]
    assert [(r["attention"], r["context"], r["batch"]) for r in rows] == [
        (a, L, B) for a in ("softmax", "lssar") for L in (16, 24) for B in (1, 2)]
    for r in rows:
        c = r["cached"]
        assert r["model"]["n_embd"] == 128 and r["model"]["vocab_size"] == 256   # the demo's model, bytes
        assert c["prefill_tokens_per_s"] == pytest.approx(r["batch"] * r["context"] / c["prefill_s"], rel=0.01)
        # the cache: layers x (k, v) x batch x (context + new) positions x width, fp32
        assert c["kv_cache_mib"] == round(4 * 2 * r["batch"] * (r["context"] + 3) * 128 * 4 / 2**20, 1)
        assert r["decode_speedup"] == round(c["decode_tokens_per_s"] / r["no_cache"]["decode_tokens_per_s"], 1)
    assert "lssar    L=24" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_generate.main(["--contexts", "0"])


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
    """tools/kernel_resources.py end to end on one small configuration: a real sm_90 compile and
    ptxas's report (no GPU needed), plus a tile the kernels cannot use, named without compiling."""
    optional_module("triton.compiler", "pip install -r requirements-dev.txt")
    out = tmp_path / "resources.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "tools/kernel_resources.py", "--kernels", "dkdv", "--dtypes", "bf16",
                           "--head-dims", "64", "--modes", "lssa", "--tiles", "16,32,4,1", "32,16,4,1",
                           "--json", str(out)], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ok, bad = json.load(open(out))["rows"]
    assert ok["tile"] == [16, 32, 4, 1] and 0 < ok["registers"] <= 255 and ok["spill_stores"] >= 0
    assert 0 < ok["shared"] <= 227 * 1024 and ok["fits"]
    assert bad["error"] == "dK/dV needs BLOCK_N % BLOCK_M == 0"
    assert "(16, 32, 4, 1)" in proc.stdout and "BLOCK_N % BLOCK_M" in proc.stdout


def test_kernel_resources_reports_the_tiles_the_kernels_launch():
    optional_module("triton", "pip install -r requirements-dev.txt")
    import kernel_resources
    from kernels import lssa_triton
    for arch in kernel_resources.SHARED_LIMIT:
        assert kernel_resources.tile_table("fp32", arch) is lssa_triton._TILES_FP32
        sixteen = lssa_triton._TILES_SM90 if arch == 90 else lssa_triton._TILES
        assert kernel_resources.tile_table("bf16", arch) is kernel_resources.tile_table("fp16", arch) is sixteen
    # else the test above could not tell them apart
    assert len({str(t) for t in (lssa_triton._TILES_FP32, lssa_triton._TILES_SM90, lssa_triton._TILES)}) == 3


# Targets per score in the main (unmasked) loop of the sm_90a SASS, bf16, head dim 64, the tile
# launched without autotuning (docs/kernels.md), under Triton 3.6 (what CUDA builds of torch
# carry) and 3.9 alike: (kernel, mode, loop) -> (instr, MUFU)
SASS_TARGETS = {("fwd", "lssa", "keys"): (16, 1.5), ("fwd", "lssar", "pass 2"): (24, 1.5),
                ("dkdv", "lssa", "queries"): (32, 2.5), ("dq", "lssa", "keys"): (26, 2.5),
                ("dkdv", "lssar", "queries"): (48, 2.5)}


def _nvdisasm():
    triton = optional_module("triton", "pip install -r requirements-dev.txt")
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    if not os.access(path, os.X_OK):
        pytest.skip("this triton bundles no nvdisasm")


# The Pythons whose Triton the SASS targets are checked under: this one, and any listed in
# LSSA_SASS_PYTHONS (os.pathsep-separated), e.g. a virtual environment with triton==3.6.0
SASS_PYTHONS = [sys.executable] + [p for p in os.environ.get("LSSA_SASS_PYTHONS", "").split(os.pathsep) if p]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") == "1", reason="the interpreter is on: no compiler")
@pytest.mark.parametrize("python", SASS_PYTHONS, ids=["installed"] + SASS_PYTHONS[1:])
def test_sass_work_per_score_holds_its_targets(python, tmp_path):
    """Compile the kernels the targets name for sm_90a, disassemble them and count the work per
    score in their main loops: fewer instructions and special-function ops than the targets, on
    wgmma, with no warpgroup repeating another's elementwise work (~25 s on 2 cores). It counts
    with the Triton of `python` (this one's, or LSSA_SASS_PYTHONS'), which its messages name;
    results/sass/triton-<version>.txt has the counts under 3.6 and 3.9."""
    _nvdisasm()
    out = tmp_path / "sass.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([python, "tools/kernel_resources.py", "--sass", "--arch", "90", "--dtypes", "bf16",
                           "--head-dims", "64", "--first", "--modes", "lssa", "lssar", "-j", "2", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.load(open(out))
    counted = f"counted with Triton {report['triton']}"
    rows = {(r["kernel"], r["mode"]): r for r in report["rows"]}
    for (which, mode, loop), (max_instr, max_mufu) in SASS_TARGETS.items():
        row = rows[which, mode]
        tile = tuple(row["tile"])
        main = {lp["name"]: lp for lp in row["loops"] if lp["main"]}
        assert loop in main, (counted, which, mode, row["loops"])
        lp = main[loop]
        assert lp["instr_per_score"] <= max_instr and lp["mufu_per_score"] <= max_mufu, (counted, which, mode, tile, lp)
        assert lp["mma"] == "wgmma" and not row["duplicated"], (counted, which, mode, tile, lp)


def test_sass_loops_are_read_from_backward_branches():
    """The SASS parser on hand-written listings: one loop of 4 instructions (2 MUFU, a wgmma),
    a forward branch that is no loop, and the trap after EXIT (a branch to itself) ignored; an
    sm_100 loop closed by a uniform-predicate branch, on tcgen05, whose barrier wait retries
    out of line after EXIT and branches back into it (no loop of its own)."""
    optional_module("triton", "pip install -r requirements-dev.txt")
    import kernel_resources as R
    sass = """
        /*0000*/                   MOV R1, R2 ;
.L_x_0:
        /*0010*/                   MUFU.EX2 R3, -|R4| ;
        /*0020*/              @!P0 MUFU.EX2 R5, R6 ;
        /*0030*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0040*/               @P1 BRA `(.L_x_0) ;
        /*0050*/                   BRA `(.L_x_1) ;
        /*0060*/                   NOP ;
.L_x_1:
        /*0070*/                   EXIT ;
.L_x_2:
        /*0080*/                   BRA `(.L_x_2);
"""
    assert R.sass_loops(sass) == [dict(instructions=4, mufu=2, mma="wgmma")]
    sm100 = """
        /*0000*/                   MOV R1, R2 ;
.L_x_3:
        /*0010*/                   UTCHMMA gdesc[UR4], gdesc[UR6], tmem[UR8], tmem[UR10], idesc[UR11], UPT ;
        /*0020*/              @!P6 BRA `(.L_x_5) ;
.L_x_6:
        /*0030*/                   MUFU.EX2 R3, -|R4| ;
        /*0040*/                   FFMA2 R6, R4.F32x2.HI_LO, R8.F32, R10.F32x2.HI_LO ;
        /*0050*/                   BRA.U !UP0, `(.L_x_3) ;
        /*0060*/                   EXIT ;
.L_x_5:
        /*0070*/              @!P6 BRA `(.L_x_5) ;
        /*0080*/                   BRA `(.L_x_6) ;
"""
    assert R.sass_loops(sm100) == [dict(instructions=5, mufu=1, mma="tcgen05")]
    assert R.duplicated_rows("fwd", 64, 64, 8) and not R.duplicated_rows("fwd", 128, 64, 8)
    assert R.duplicated_rows("dkdv", 32, 64, 8) and not R.duplicated_rows("dkdv", 32, 64, 4)
    assert not R.duplicated_rows("fwd", 64, 64, 8, arch=100)   # warpgroups are Hopper's


def test_log2_1p_polynomial():
    """The kernels' log2(1 + u) for 16-bit inputs, u·q(u) with q of degree 5 evaluated in fp32 as
    the kernels do (Horner), within 1e-5 relative of log1p(u)/ln 2 in float64 on (0, 1]."""
    optional_module("triton", "pip install -r requirements-dev.txt")
    from kernels import lssa_triton as L
    coeffs = [getattr(L, f"_L2P{i}") for i in range(6)]
    coeffs = [float(getattr(c, "value", c)) for c in coeffs]
    u = torch.cat([torch.logspace(-30, 0, 2000, dtype=torch.float64), torch.linspace(1e-3, 1, 20001, dtype=torch.float64)])
    u32 = u.float()
    q = torch.full_like(u32, coeffs[5])
    for c in reversed(coeffs[:5]):
        q = q * u32 + c
    exact = torch.log1p(u32.double()) / math.log(2)
    rel = ((u32 * q).double() / exact - 1).abs().max().item()
    assert rel < 1e-5, rel


def test_sm90_tiles_are_short_and_on_warpgroup_mma():
    """Every Hopper tile: at most three per list (Inductor compiles them all before the first
    step), blocks the loops can nest, a score tile of at least 64 rows (fewer fall back to
    mma.sync) and at least 16 rows per warp (else two warpgroups repeat the elementwise work)."""
    optional_module("triton", "pip install -r requirements-dev.txt")
    import kernel_resources as R
    from kernels import lssa_triton as L
    assert all(1 <= len(tiles) <= 3 for table in (L._TILES_SM90, L._TILES) for tiles in table.values())
    for (which, d), tiles in L._TILES_SM90.items():
        for bm, bn, warps, stages in tiles:
            assert R.tile_error(which, bm, bn) is None, (which, d, bm, bn)
            assert (bn if which == "dkdv" else bm) >= 64, (which, d, bm, bn)
            assert not R.duplicated_rows(which, bm, bn, warps), (which, d, bm, bn, warps)
