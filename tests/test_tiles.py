"""Every tile the kernels may launch, against the reference: not only the first entry of each list
(the tile launched by default, which tests/test_kernels.py covers), but every entry of every
table (kernels/lssa_triton.py: _TILES_SM90, _TILES, _TILES_FP32), pinned explicitly with
lssa_triton.pin_tiles, forward and backward, for every fused type.

CPU (the interpreter): every distinct (BLOCK_M, BLOCK_N) of any table, per kernel, at a T that
spans at least two blocks of the largest block launched beside it and is odd (a multiple of no
block), fp32 inputs against the fp32 reference, d = 16. The shapes come from the tables, so a new
tile is tested without a change here. About 40 s of CPU on this repository's 2-core machine
(`time python -m pytest tests/test_tiles.py -q`): the interpreter runs a program's every
iteration in Python, so small tiles at a T of hundreds cost most; the shapes are grouped large
with large and each group's T is sized by its largest block.

GPU (marker `gpu`; `scripts/gpu_check.sh tiles`): every entry of the table this GPU launches,
every fused type, bf16 / fp16 / fp32, head dims 64 and 128, T = 1000.
"""
import importlib.util

import pytest
import torch

import attention
from test_kernels import HAS_TRITON, TOL, _case, _gpu_errors, gpu, needs_cuda, needs_triton, run_interpreter


def table_shapes():
    """{kernel: every (BLOCK_M, BLOCK_N) any table launches}, the largest blocks first."""
    from kernels import lssa_triton
    shapes = {which: {tuple(tile[:2]) for table in lssa_triton._TABLES.values()
                      for (w, _), tiles in table.items() if w == which for tile in tiles}
              for which in lssa_triton._KERNELS}
    return {w: sorted(s, key=lambda bm_bn: (-max(bm_bn), -bm_bn[0] * bm_bn[1], bm_bn)) for w, s in shapes.items()}


def tile_groups():
    """One launch per group: the i-th shape of each kernel (its smallest once its list runs out),
    and a T of two blocks of the group's largest block plus one row."""
    shapes = table_shapes()
    groups = []
    for i in range(max(map(len, shapes.values()))):
        tiles = {w: s[min(i, len(s) - 1)] for w, s in shapes.items()}
        groups.append((tiles, 2 * max(max(t) for t in tiles.values()) + 1))
    return groups


@pytest.fixture(scope="module")
def tile_results():
    if not HAS_TRITON:
        pytest.skip("triton is not installed (see requirements-dev.txt)")
    cases = []
    for kind in attention.KERNEL_TYPES:
        for i, (tiles, T) in enumerate(tile_groups()):
            # d = 16 is head-dim class 64; the interpreter ignores warps and stages
            pins = {f"fp32/{which}/64": [bm, bn, 4, 1] for which, (bm, bn) in tiles.items()}
            cases.append(_case(f"{kind}-group{i}", kind, T, H=1, tiles=pins))
    return run_interpreter(cases)


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("kind", attention.KERNEL_TYPES)
def test_every_table_shape_matches_reference(tile_results, kind):
    launched, bad = set(), {}
    for i, (tiles, T) in enumerate(tile_groups()):
        res = tile_results[f"{kind}-group{i}"]
        got = {tuple(x) for x in res["launched"]}
        # the pins are what ran (the backward's preprocessing kernel has no tile)
        assert got == {(w, *tiles[w]) for w in tiles}, (tiles, got)
        launched |= got
        if res["nan"] or not all(e <= TOL["float32"] for e in res["err"].values()):
            bad[f"{tiles} T={T}"] = res["err"]
    assert not bad, f"errors above {TOL['float32']} (or NaN): {bad}"
    assert launched == {(w, *s) for w, shapes in table_shapes().items() for s in shapes}


def test_tile_groups_cover_every_shape_at_a_t_of_several_blocks():
    """The groups are what the docstring says, whatever the tables hold (checked by hand here for
    two of them)."""
    pytest.importorskip("triton")
    groups = tile_groups()
    for tiles, T in groups:
        assert T % 2 == 1 and all(T > 2 * max(t) for t in tiles.values())
    shapes = table_shapes()
    assert all({g[0][w] for g in groups} == set(s) for w, s in shapes.items())
    # by hand from the tables today: the fp32 table's smallest forward tile and sm_90's largest
    assert (16, 16) in shapes["fwd"] and shapes["fwd"][0] == (128, 128) and groups[0][1] == 257


# ----------------------------------------------------------------------------- GPU

def _gpu_table():
    """{dtype name: (table name, {(kernel, head-dim class): tiles})} for this GPU."""
    from kernels import lssa_triton
    names = {dt: lssa_triton._table_name(getattr(torch, dt), torch.device("cuda")) for dt in TOL}
    return {dt: (name, lssa_triton._TABLES[name]) for dt, name in names.items()}


def _gpu_cases():
    """(kind, dtype, d, entry) for every entry of the longest list of this GPU's table (shorter lists
    repeat their last entry, compiled once); without a GPU the sm_90 tables' counts."""
    from kernels import lssa_triton
    counts = {}
    for dt in TOL:
        table = lssa_triton._TILES_FP32 if dt == "float32" else lssa_triton._TILES_SM90
        if torch.cuda.is_available():
            table = _gpu_table()[dt][1]
        for d in (64, 128):
            counts[dt, d] = max(len(tiles) for (_, cls), tiles in table.items() if cls == d)
    return [(kind, dt, d, i) for kind in attention.KERNEL_TYPES for (dt, d), n in counts.items() for i in range(n)]


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("kind,dtype,d,entry", _gpu_cases() if importlib.util.find_spec("triton") else [],
                         ids=lambda x: str(x))
def test_gpu_every_table_entry_matches_reference(kind, dtype, d, entry):
    from kernels import lssa_triton
    name, table = _gpu_table()[dtype]
    pins = {f"{name}/{which}/{d}": list(tiles[min(entry, len(tiles) - 1)])
            for (which, cls), tiles in table.items() if cls == d}
    with lssa_triton.tiles_pinned(pins):
        errors = _gpu_errors(kind, 1000, d, getattr(torch, dtype))
    assert all(e <= TOL[dtype] for e in errors.values()), (pins, errors)
