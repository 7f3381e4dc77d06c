"""Registers, spills and shared memory of the fused lssa kernels on an H100 (sm_90), without a GPU.

    python scripts/kernel_resources.py                       # every tile of every table, all dtypes
    python scripts/kernel_resources.py --dtypes fp32 --kernels fwd --head-dims 128 --modes lssar+grad
    python scripts/kernel_resources.py --dtypes fp32 --kernels dq --tiles 64,32,4,2 32,32,4,2
    python scripts/kernel_resources.py --json results/kernel_resources.json -j 2

Each configuration is compiled ahead of time by Triton's real compiler for sm_90 (ASTSource +
GPUTarget), with the divisibility hints a real launch gets: every pointer 16-byte aligned,
every stride, T and T_BUCKET divisible by 16 (H, the number of heads, not: GPT-2 has 12).
Registers and spill bytes come from `ptxas -v` (Triton's bundled ptxas, Triton's own flags);
shared memory from the compiled metadata, against sm_90's 227 KiB per block (a larger
configuration fails to launch, and the autotuner skips it after compiling it).

Tiles: the kernel module's _TILES, or for fp32 its _TILES_FP32; --tiles
replaces them with a candidate list (BLOCK_M,BLOCK_N,num_warps,num_stages each). Modes:
lssa (MODE 0), lssar (MODE 1) and, for the forward only, lssar+grad: lssar keeping the
gradient statistics (STORE_U), as in training. A compile takes 5-30 s on one CPU core.
"""
import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")   # Triton 3.9's default, without its warning

import torch   # noqa: E402
import triton   # noqa: E402

from kernels import lssa_triton as L   # noqa: E402
from runinfo import write_json   # noqa: E402

SM90_SHARED = 227 * 1024   # bytes per block (cudaDevAttrMaxSharedMemoryPerBlockOptin)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODES = {"lssa": (0, False), "lssar": (1, False), "lssar+grad": (1, True)}   # (MODE, STORE_U)
INPUT_POINTERS = {"Q", "K", "V", "O", "DO", "DK", "DV", "DQ"}   # in the inputs' dtype
FP32_POINTERS = {"NQ", "NK", "STATS", "U", "DE"}


def tile_table(dtype):
    """The tiles the kernel module launches for this dtype."""
    return L._TILES_FP32 if dtype == "fp32" else L._TILES


def tile_error(which, bm, bn):
    """Why the kernels cannot use these blocks (their loops assume nested blocks), or None."""
    if min(bm, bn) < 16:
        return "blocks must be at least 16"
    if which == "dkdv" and bn % bm:
        return "dK/dV needs BLOCK_N % BLOCK_M == 0"
    if which != "dkdv" and bm % bn:
        return "forward and dQ need BLOCK_M % BLOCK_N == 0"
    return None


def source(which, dtype, head_dim, mode, bm, bn, p):
    """The ASTSource a launch with these parameters compiles."""
    from triton.compiler import ASTSource
    fn = L._KERNELS[which]
    mode_id, store_u = MODES[mode]
    torch_dtype = DTYPES[dtype]
    constexprs = dict(HEAD_DIM=head_dim, MODE=mode_id, P_INT=L._p_int(p), DOT_PREC=L._dot_precision(torch_dtype),
                      BLOCK_M=bm, BLOCK_N=bn)
    constexprs.update(STORE_U=store_u) if which == "fwd" else constexprs.update(DS_F32=torch_dtype == torch.float16)
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in INPUT_POINTERS | FP32_POINTERS:
            signature[name] = f"*{dtype}" if name in INPUT_POINTERS else "*fp32"
        else:
            signature[name] = "fp32" if name in ("LN_D", "p") else "i32"
    # what Triton's launcher specialises on: 16-byte-aligned pointers, integers divisible by 16
    aligned = [i for i, name in enumerate(fn.arg_names)
               if signature[name].startswith("*") or (signature[name] == "i32" and name != "H")]
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def ptxas_log(ptx):
    """`ptxas -v` on this PTX, with the ptxas and flags Triton's sm_90 backend uses."""
    from triton.backends.nvidia.compiler import get_ptxas
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(90).path, "-lineinfo", "-v", "--regAllocOptLevel=2", "--gpu-name=sm_90a",
               path, "-o", path + ".o"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


def measure(job):
    """Compile one configuration; its registers, spills and shared memory."""
    which, dtype, head_dim, mode, (bm, bn, warps, stages), p = job
    row = dict(kernel=which, dtype=dtype, head_dim=head_dim, mode=mode, tile=[bm, bn, warps, stages])
    error = tile_error(which, bm, bn)
    if error:
        return dict(row, error=error)
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    knobs.nvidia.dump_ptxas_log = True   # a fresh compile prints its own `ptxas -v`: no second run
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        compiled = triton.compile(source(which, dtype, head_dim, mode, bm, bn, p), target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": warps, "num_stages": stages})
    log = printed.getvalue()
    if "registers" not in log:   # Triton's cache answered: nothing was assembled
        log = ptxas_log(compiled.asm["ptx"])
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not (regs and spills):
        raise RuntimeError(f"cannot read ptxas's report for {row}:\n{log}")
    return dict(row, registers=int(regs[1]), spill_stores=int(spills[1]), spill_loads=int(spills[2]),
                shared=compiled.metadata.shared, fits=compiled.metadata.shared <= SM90_SHARED)


def jobs(args):
    for which in args.kernels:
        for dtype in args.dtypes:
            for head_dim in args.head_dims:
                for mode in args.modes:
                    if mode == "lssar+grad" and which != "fwd":
                        continue   # the backward kernels read the statistics, they have no such variant
                    for tile in args.tiles or tile_table(dtype)[which, L._tile_class(head_dim)]:
                        yield which, dtype, head_dim, mode, tuple(tile), args.p


def table(rows):
    lines = [f"{'kernel':6} {'dtype':5} {'d':>3} {'mode':10} {'tile (M,N,warps,stages)':23} "
             f"{'regs':>4} {'spill st/ld B':>13} {'shared KiB':>10}"]
    for r in rows:
        head = f"{r['kernel']:6} {r['dtype']:5} {r['head_dim']:>3} {r['mode']:10} {str(tuple(r['tile'])):23} "
        if "error" in r:
            lines.append(head + r["error"])
            continue
        spill = f"{r['spill_stores']}/{r['spill_loads']}"
        over = "" if r["fits"] else "  > 227 KiB: cannot launch"
        lines.append(head + f"{r['registers']:>4} {spill:>13} {r['shared'] / 1024:>10.1f}{over}")
    return "\n".join(lines)


def parse_tile(text):
    try:
        tile = tuple(int(x) for x in text.split(","))
    except ValueError:
        tile = ()
    if len(tile) != 4:
        raise argparse.ArgumentTypeError(f"a tile is BLOCK_M,BLOCK_N,num_warps,num_stages, got {text!r}")
    return tile


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", nargs="+", choices=list(L._KERNELS), default=list(L._KERNELS))
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    ap.add_argument("--head-dims", nargs="+", type=int, choices=(64, 128), default=[64, 128])
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    ap.add_argument("--tiles", nargs="+", type=parse_tile, help="candidate tiles instead of the module's tables")
    ap.add_argument("--p", type=float, default=15.0, help="lssa's power p (an integer selects the P_INT path)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="compiles in parallel")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if L.INTERPRET:
        sys.exit("TRITON_INTERPRET=1 is set: unset it, this script compiles the kernels for a real GPU")
    todo = list(jobs(args))
    print(f"compiling {len(todo)} configurations for sm_90 (Triton {triton.__version__})", file=sys.stderr)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(measure, todo))
    else:
        rows = [measure(job) for job in todo]
    print(table(rows))
    if args.json:
        write_json(dict(triton=triton.__version__, target="sm_90a", shared_limit=SM90_SHARED, p=args.p,
                        rows=rows),
                   args.json)
    return rows


if __name__ == "__main__":
    main()
