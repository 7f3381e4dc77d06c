"""Every architecture's tiles within its shared memory, without a GPU.

The committed reports (results/kernel_resources/sm<arch>.json, from tools/kernel_resources.py
--modes all: every fused type, every dtype, every tile of the tables the architecture launches, or
with --first the tile each list launches without autotuning) must cover exactly those tiles of
today's tables, none over the
architecture's limit per block, and none with less than 4 KiB to spare unless a tile with less
shared memory comes before it in its list; and a fresh compile, with the Triton installed here,
of each architecture's largest first tile of each table must fit.
"""
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from helpers import optional_module, ran_in_a_fresh_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
REPORTS = os.path.join(REPO, "results", "kernel_resources")


def _modules():
    optional_module("triton", "pip install -r requirements-dev.txt")
    import kernel_resources as R
    from kernels import lssa_triton as L
    return R, L


def _report(arch):
    with open(os.path.join(REPORTS, f"sm{arch}.json")) as f:
        return json.load(f)


def _lists(rows):
    """(kernel, dtype, head dim) -> {tile: largest shared memory over the modes}, in report order."""
    lists = {}
    for r in rows:
        tiles = lists.setdefault((r["kernel"], r["dtype"], r["head_dim"]), {})
        tiles[tuple(r["tile"])] = max(tiles.get(tuple(r["tile"]), 0), r["shared"])
    return lists


def test_reports_cover_the_launched_tiles_within_the_limits():
    R, L = _modules()
    for arch, limit in R.SHARED_LIMIT.items():
        report = _report(arch)
        assert report["arch"] == arch and report["shared_limit"] == limit, arch
        assert not [r for r in report["rows"] if "error" in r], arch
        lists = _lists(report["rows"])
        dtypes = {r["dtype"] for r in report["rows"]}
        assert {"bf16", "fp32"} <= dtypes, arch   # both tables the architecture launches
        want = {(which, dtype, d): [tuple(t) for t in R.tile_table(dtype, arch)[which, d]][:1 if report["first"] else None]
                for which in L._KERNELS for dtype in dtypes for d in (64, 128)}
        assert {key: list(tiles) for key, tiles in lists.items()} == want, \
            f"results/kernel_resources/sm{arch}.json is not for today's tables: rerun tools/kernel_resources.py"
        # every fused type in every kernel (the forward also keeping U for training), every dtype
        modes = {(r["kernel"], r["mode"]) for r in report["rows"]}
        assert {("fwd", m) for m in R.MODES} | {(k, m) for k in ("dkdv", "dq") for m in R.KERNEL_TYPES} <= modes, \
            f"results/kernel_resources/sm{arch}.json lacks fused types: rerun with --modes all"
        assert dtypes == set(R.DTYPES), arch
        for key, tiles in lists.items():
            shared = list(tiles.values())
            for i, (tile, used) in enumerate(tiles.items()):
                assert used <= limit, (arch, key, tile, used)
                if limit - used < R.MARGIN:   # too close to the limit to be the first choice
                    assert any(s < used for s in shared[:i]), (arch, key, tile, used, limit)


def test_table_choice_is_the_dispatch(monkeypatch):
    """The script reports the table the kernel module picks on a GPU of that compute capability."""
    R, L = _modules()
    import torch
    for arch in R.SHARED_LIMIT:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, a=arch: divmod(a, 10))
        L._is_hopper.cache_clear()
        for dtype, torch_dtype in R.DTYPES.items():
            assert R.table_name(dtype, arch) == L._table_name(torch_dtype, "cuda"), (arch, dtype)
    L._is_hopper.cache_clear()


def largest_first_tiles(R, report):
    """The jobs compiling, for each table the report's architecture launches (16-bit, fp32), the
    first tile (of any of its lists) with the most shared memory, in the mode that uses the most."""
    arch, best = report["arch"], {}
    for r in report["rows"]:
        first = tuple(R.tile_table(r["dtype"], arch)[r["kernel"], r["head_dim"]][0])
        table = R.table_name(r["dtype"], arch)
        if tuple(r["tile"]) == first and r["shared"] > best.get(table, {"shared": -1})["shared"]:
            best[table] = r
    return [(r["kernel"], r["dtype"], r["head_dim"], r["mode"], tuple(r["tile"]), report["p"], False, arch)
            for r in best.values()]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") == "1", reason="the interpreter is on: no compiler")
def test_largest_first_tiles_fit_every_architecture(request):
    """Compile for each architecture the largest first tile of each table it launches (12 compiles,
    ~1 min on 2 cores: the reports say which are the largest; every other first tile is smaller
    there) and check its shared memory against the architecture's limit per block."""
    if ran_in_a_fresh_process(request):
        return
    R, L = _modules()
    optional_module("triton.compiler", "pip install -r requirements-dev.txt")
    jobs = [job for arch in R.SHARED_LIMIT for job in largest_first_tiles(R, _report(arch))]
    assert len(jobs) == 2 * len(R.SHARED_LIMIT)
    with ProcessPoolExecutor(2) as pool:   # one compile per core
        rows = list(pool.map(R.measure, jobs))
    for job, row in zip(jobs, rows):
        arch = job[-1]
        assert row["fits"] and row["shared"] <= R.SHARED_LIMIT[arch], (arch, row)
