"""Registers, spills, shared memory and per-score SASS work of the fused lssa kernels on an
NVIDIA GPU architecture (default sm_90, the H100), without a GPU.

    python tools/kernel_resources.py                         # every tile of every table, all dtypes
    python tools/kernel_resources.py --arch 89               # an L40S: the tiles it launches
    python tools/kernel_resources.py --sass --dtypes bf16 --head-dims 64 --first     # work per score
    python tools/kernel_resources.py --dtypes fp32 --kernels fwd --head-dims 128 --modes lssar+grad
    python tools/kernel_resources.py --dtypes fp32 --kernels dq --tiles 64,32,4,2 32,32,4,2
    python tools/kernel_resources.py --json results/kernel_resources.json -j 2

Each configuration is compiled ahead of time by Triton's real compiler for the architecture
(ASTSource + GPUTarget; --arch 80, 86, 89, 90, 100 or 120: A100, A10/RTX 30, L4/L40S/RTX 40,
H100/H200, B200, RTX 50), with the divisibility hints a real launch gets: every pointer 16-byte
aligned, every stride, T and T_BUCKET divisible by 16 (H, the number of heads, not: GPT-2 has
12). Registers and spill bytes come from `ptxas -v` (Triton's bundled ptxas, Triton's own
flags); shared memory from the compiled metadata, against the architecture's limit per block
(SHARED_LIMIT: a larger configuration fails to launch, and the autotuner skips it after
compiling it).

Tiles: the table the kernel module launches on that architecture (_TILES_SM90 for 16-bit inputs
on sm_90, _TILES on the others, _TILES_FP32 for fp32); --tiles replaces them with a candidate
list (BLOCK_M,BLOCK_N,num_warps,num_stages each). Modes: the
attention types with a fused kernel (attention.KERNEL_TYPES; default lssa and lssar, --modes
all for every one) and, for the forward only, <type>+grad for the re-weighted types: keeping
the gradient statistics (STORE_U), as in training. A compile takes 5-30 s on one CPU core.

--sass disassembles each kernel (Triton's bundled nvdisasm) and, for each loop of the SASS (a
backward branch: its target up to the branch), counts the instructions and the MUFU
(special-function unit: ex2, lg2, rcp, ...) instructions per score: a loop iteration covers a
BLOCK_M x BLOCK_N score tile with num_warps x 32 threads, so thread-instructions per score =
warp instructions in the loop x 32 x num_warps / (BLOCK_M x BLOCK_N). An H100 SM issues 128
thread-instructions and 16 MUFU ops per clock (docs/kernels.md). It also names the loop's
matmul (wgmma = HGMMA, Hopper's warpgroup MMA; tcgen05 = UTC*MMA, Blackwell's (sm_100);
mma.sync = HMMA, the path of every other architecture) and, on sm_90, flags a tile whose score
rows are fewer than 16 per warp: both warpgroups of an 8-warp 64-row tile then do the whole
tile's elementwise work.
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

from attention import KERNEL_TYPES, RECIPES   # noqa: E402
from kernels import lssa_triton as L   # noqa: E402
from runinfo import write_json   # noqa: E402

# Shared memory a block may use (opted in: cudaDevAttrMaxSharedMemoryPerBlockOptin), per compute
# capability: the CUDA C++ Programming Guide, "Compute Capabilities", technical specifications
# ("maximum amount of shared memory per thread block"),
# https://docs.nvidia.com/cuda/cuda-programming-guide/05-appendices/compute-capabilities.html
KIB = 1024
SHARED_LIMIT = {80: 163 * KIB, 86: 99 * KIB, 89: 99 * KIB, 90: 227 * KIB, 100: 227 * KIB, 120: 99 * KIB}
MARGIN = 4 * KIB   # a launched tile with less room than this left is reported (see the tables' comments)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# mode -> (recipe, STORE_U): every fused type, and the re-weighted ones keeping U and R (training)
MODES = {**{kind: (RECIPES[kind], False) for kind in KERNEL_TYPES},
         **{kind + "+grad": (RECIPES[kind], True) for kind in KERNEL_TYPES if RECIPES[kind][2]}}
DEFAULT_MODES = ["lssa", "lssar", "lssar+grad"]
INPUT_POINTERS = {"Q", "K", "V", "O", "DO", "DK", "DV", "DQ"}   # in the inputs' dtype
FP32_POINTERS = {"NQ", "NK", "RHO", "KAPPA", "BETA", "STATS", "U", "DE"}


TABLE_VARIABLES = {"sm90": "_TILES_SM90", "other": "_TILES", "fp32": "_TILES_FP32"}


def table_name(dtype, arch):
    """The name (kernels.lssa_triton._TABLES) of the table the kernel module launches on this
    architecture for this dtype: as _table_name picks it from a GPU's compute capability."""
    return "fp32" if dtype == "fp32" else "sm90" if arch // 10 == 9 else "other"


def tile_table(dtype, arch=90):
    """The tiles the kernel module launches on this architecture for this dtype."""
    return L._TABLES[table_name(dtype, arch)]


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
    (phi, normalised, reweighted), store_u = MODES[mode]
    torch_dtype = DTYPES[dtype]
    constexprs = dict(HEAD_DIM=head_dim, PHI=L.PHI_IDS[phi], NORM=normalised, RW=reweighted,
                      NSTATS=L._n_stats(phi, normalised, reweighted), P_INT=L._p_int(p),
                      DOT_PREC=L._dot_precision(torch_dtype), BLOCK_M=bm, BLOCK_N=bn)
    constexprs.update(STORE_U=store_u) if which == "fwd" else constexprs.update(DS_F32=torch_dtype == torch.float16)
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in INPUT_POINTERS | FP32_POINTERS:
            signature[name] = f"*{dtype}" if name in INPUT_POINTERS else "*fp32"
        else:
            signature[name] = "fp32" if name == "p" else "i32"
    # what Triton's launcher specialises on: 16-byte-aligned pointers, integers divisible by 16
    aligned = [i for i, name in enumerate(fn.arg_names)
               if signature[name].startswith("*") or (signature[name] == "i32" and name != "H")]
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def ptxas_log(ptx, arch):
    """`ptxas -v` on this PTX, with the ptxas and flags Triton's backend uses for the architecture."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(arch)}", path, "-o", path + ".o"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


# The loops of each kernel in source (= SASS) order; the main one (no mask) is the target's.
# The forward of a re-weighted type, or of one that subtracts its row maximum (exp, l1 sigmoid),
# has two passes over the keys.
LOOP_NAMES = {("fwd", "one pass"): ["keys", "keys, diagonal"],
              ("fwd", "two passes"): ["pass 1", "pass 1, diagonal", "pass 2", "pass 2, diagonal"],
              ("dkdv",): ["queries, diagonal", "queries"], ("dq",): ["keys", "keys, diagonal"]}


def loop_names(which, mode):
    if which != "fwd":
        return LOOP_NAMES[which,]
    (phi, normalised, reweighted), _ = MODES[mode]
    return LOOP_NAMES[which, "two passes" if reweighted or L._logmax(phi, normalised) else "one pass"]
MAIN_LOOPS = {"keys", "pass 1", "pass 2", "queries"}
_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")


def sass_text(cubin):
    """nvdisasm's listing of a cubin (the disassembler bundled with Triton)."""
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        return subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout


def sass_loops(sass):
    """The loops of a SASS listing, in address order: for each backward branch before the last
    EXIT, the instructions from its target to the branch (NOPs excluded), its MUFU instructions
    and which matmul instruction it issues. What follows the last EXIT is out-of-line code: the
    trap (a branch to itself) and, on sm_100, the retries of the barrier waits, each a spin loop
    that branches back into the loop it came from."""
    labels, code, pending = {}, [], []
    for line in sass.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            pending.append(label[1])
            continue
        ins = _SASS_LINE.search(line)
        if ins:
            addr = int(ins[1], 16)
            for name in pending:
                labels[name] = addr
            pending = []
            code.append((addr, ins[2]))
    exits = [addr for addr, text in code if text.split()[-1] == "EXIT"]
    code = [(addr, text) for addr, text in code if not exits or addr <= exits[-1]]
    loops = []
    for addr, text in code:
        target = re.search(r"\bBRA\S*\s+(?:[^`]*,\s*)?`?\(?(\.L_x_\d+)", text)   # BRA.U !UP0, `(.L_x_2)
        if target and labels.get(target[1], addr) < addr:
            body = [t for a, t in code if labels[target[1]] <= a <= addr and not t.startswith("NOP")]
            ops = [re.sub(r"^@!?U?P\w+\s+", "", t).split()[0] for t in body]
            mma = "wgmma" if any(o.startswith("HGMMA") for o in ops) else \
                  "tcgen05" if any(o.startswith("UTC") and "MMA" in o for o in ops) else \
                  "mma.sync" if any(o.startswith("HMMA") for o in ops) else "-"
            loops.append(dict(instructions=len(body), mufu=sum(o.startswith("MUFU") for o in ops), mma=mma))
    return loops


def duplicated_rows(which, bm, bn, warps, arch=90):
    """True when, on sm_90, the score tile has fewer than 16 rows per warp: wgmma gives each
    warpgroup (4 warps) 64 rows, so 8 warps on 64 rows both do the whole tile's elementwise work."""
    rows = bn if which == "dkdv" else bm   # dK/dV's score tile is keys x queries
    return arch // 10 == 9 and rows < 16 * warps


def sass_row(which, mode, tile, cubin, arch):
    """Per-score work of each loop of one compiled kernel."""
    bm, bn, warps, _ = tile
    # the loops over score tiles issue a matmul; on sm_100 a barrier wait may compile to a small
    # loop of its own inside them
    loops = [lp for lp in sass_loops(sass_text(cubin)) if lp["mma"] != "-"]
    names = loop_names(which, mode)
    if len(names) != len(loops):   # a diagonal loop of one iteration compiles to straight code
        names = [n for n in names if n in MAIN_LOOPS]
    if len(names) != len(loops):
        names = [f"loop {i + 1}" for i in range(len(loops))]
    per = 32 * warps / (bm * bn)
    return dict(loops=[dict(name=name, main=name in MAIN_LOOPS, instr_per_score=round(lp["instructions"] * per, 2),
                            mufu_per_score=round(lp["mufu"] * per, 2), **lp) for name, lp in zip(names, loops)],
                duplicated=duplicated_rows(which, bm, bn, warps, arch))


def measure(job):
    """Compile one configuration; its registers, spills and shared memory (and its SASS work)."""
    which, dtype, head_dim, mode, (bm, bn, warps, stages), p, sass, arch = job
    row = dict(kernel=which, dtype=dtype, head_dim=head_dim, mode=mode, tile=[bm, bn, warps, stages])
    error = tile_error(which, bm, bn)
    if error:
        return dict(row, error=error)
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    knobs.nvidia.dump_ptxas_log = True   # a fresh compile prints its own `ptxas -v`: no second run
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        compiled = triton.compile(source(which, dtype, head_dim, mode, bm, bn, p), target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": warps, "num_stages": stages})
    log = printed.getvalue()
    if "registers" not in log:   # Triton's cache answered: nothing was assembled
        log = ptxas_log(compiled.asm["ptx"], arch)
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not (regs and spills):
        raise RuntimeError(f"cannot read ptxas's report for {row}:\n{log}")
    row = dict(row, registers=int(regs[1]), spill_stores=int(spills[1]), spill_loads=int(spills[2]),
               shared=compiled.metadata.shared, margin=SHARED_LIMIT[arch] - compiled.metadata.shared)
    row["fits"] = row["margin"] >= 0
    if sass:
        row.update(sass_row(which, mode, (bm, bn, warps, stages), compiled.asm["cubin"], arch))
    return row


def jobs(args):
    for which in args.kernels:
        for dtype in args.dtypes:
            for head_dim in args.head_dims:
                for mode in args.modes:
                    if mode.endswith("+grad") and which != "fwd":
                        continue   # the backward kernels read the statistics, they have no such variant
                    tiles = args.tiles or tile_table(dtype, args.arch)[which, L._tile_class(head_dim)]
                    for tile in tiles[:1] if args.first else tiles:
                        yield which, dtype, head_dim, mode, tuple(tile), args.p, args.sass, args.arch


def table(rows, arch=90):
    limit = SHARED_LIMIT[arch] / KIB
    lines = [f"{'kernel':6} {'dtype':5} {'d':>3} {'mode':24} {'tile (M,N,warps,stages)':23} "
             f"{'regs':>4} {'spill st/ld B':>13} {'shared KiB':>10} {f'of {limit:g}':>7}"]
    for r in rows:
        head = f"{r['kernel']:6} {r['dtype']:5} {r['head_dim']:>3} {r['mode']:24} {str(tuple(r['tile'])):23} "
        if "error" in r:
            lines.append(head + r["error"])
            continue
        spill = f"{r['spill_stores']}/{r['spill_loads']}"
        note = f"  > {limit:g} KiB: cannot launch" if not r["fits"] else \
            f"  < {MARGIN // KIB} KiB left" if r["margin"] < MARGIN else ""
        lines.append(head + f"{r['registers']:>4} {spill:>13} {r['shared'] / KIB:>10.1f} "
                     f"{r['shared'] / SHARED_LIMIT[arch]:>6.0%}{note}")
    return "\n".join(lines)


def sass_table(rows):
    """Instructions and MUFU ops per score in each loop (main loops first, marked *)."""
    lines = [f"{'kernel':6} {'dtype':5} {'d':>3} {'mode':24} {'tile (M,N,warps,stages)':23} "
             f"{'loop':18} {'instr/score':>11} {'MUFU/score':>10} {'mma':8}"]
    for r in rows:
        for lp in r.get("loops", []):
            dup = "  < 16 rows per warp: warps repeat the elementwise work" if r["duplicated"] else ""
            lines.append(f"{r['kernel']:6} {r['dtype']:5} {r['head_dim']:>3} {r['mode']:24} {str(tuple(r['tile'])):23} "
                         f"{lp['name'] + (' *' if lp['main'] else ''):18} {lp['instr_per_score']:>11.1f} "
                         f"{lp['mufu_per_score']:>10.2f} {lp['mma']:8}{dup}")
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
    ap.add_argument("--arch", type=int, choices=sorted(SHARED_LIMIT), default=90,
                    help="compute capability to compile for, as major x 10 + minor (default 90: H100)")
    ap.add_argument("--kernels", nargs="+", choices=list(L._KERNELS), default=list(L._KERNELS))
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    ap.add_argument("--head-dims", nargs="+", type=int, choices=(64, 128), default=[64, 128])
    ap.add_argument("--modes", nargs="+", choices=list(MODES) + ["all"], default=DEFAULT_MODES,
                    help="attention types (default: lssa, lssar, lssar+grad; all: every fused type)")
    ap.add_argument("--tiles", nargs="+", type=parse_tile, help="candidate tiles instead of the module's tables")
    ap.add_argument("--p", type=float, default=15.0, help="lssa's power p (an integer selects the P_INT path)")
    ap.add_argument("--first", action="store_true", help="only the first tile of each list (the one launched "
                    "with LSSA_TRITON_AUTOTUNE=0)")
    ap.add_argument("--sass", action="store_true", help="also count instructions and MUFU ops per score in each "
                    "loop of the SASS")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="compiles in parallel")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if "all" in args.modes:
        args.modes = list(MODES)
    if L.INTERPRET:
        sys.exit("TRITON_INTERPRET=1 is set: unset it, this script compiles the kernels for a real GPU")
    todo = list(jobs(args))
    print(f"compiling {len(todo)} configurations for sm_{args.arch} (Triton {triton.__version__})", file=sys.stderr)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(measure, todo))
    else:
        rows = [measure(job) for job in todo]
    print(f"sm_{args.arch}, Triton {triton.__version__}, p = {args.p:g}: shared memory against "
          f"{SHARED_LIMIT[args.arch] // KIB} KiB per block; tables: "
          + ", ".join(f"{d} {TABLE_VARIABLES[table_name(d, args.arch)]}" for d in args.dtypes))
    print(table(rows, args.arch))
    if args.sass:
        print()
        print(sass_table(rows))
    if args.json:
        write_json(dict(triton=triton.__version__, arch=args.arch, shared_limit=SHARED_LIMIT[args.arch], p=args.p,
                        first=args.first, rows=rows),
                   args.json)
    return rows


if __name__ == "__main__":
    main()
