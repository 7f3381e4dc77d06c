"""
The fused kernels against the reference on this GPU: a table of relative errors of the output
and of the q, k, v gradients, for each dtype, head dim, length and type.

    python scripts/kernel_errors.py                                  # the default grid, every fused type
    python scripts/kernel_errors.py --dtype bfloat16 --T 4096 --types lssa lssar:3 --out errors.json
    python scripts/kernel_errors.py --cpu       # every fused type under Triton's interpreter (~20 s)

The reference is attention.reference_attention in float64, on the same (rounded) inputs as
the kernel, so the error is the kernel's alone. Error = ‖kernel − reference‖ / ‖reference‖
(Frobenius, over the whole tensor); "max" is max |kernel − reference| / max |reference|, the
measure the tests hold to their tolerances (tests/test_kernels.py: TOL). Fresh random inputs
per case; the kernels run with one fixed tile configuration (no autotuning), so the compile
time stays bounded. --workers runs cases in parallel processes (the compiles are what take time).
Without CUDA, --cpu runs every type on small fp32 inputs through Triton's interpreter (d = 16,
T = 17 and 67), and --cpu-smoke one tiny case (checks the script).
"""
import argparse
import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from attention import KERNEL_TYPES, REWEIGHTED_TYPES  # noqa: E402

TOL = {"float32": 1e-4, "bfloat16": 6e-2, "float16": 2e-2}   # as tests/test_kernels.py, on "max"
# every fused type; the re-weighted ones at the paper's two powers
TYPES = [s for kind in KERNEL_TYPES for s in ([f"{kind}:15", f"{kind}:3"] if kind in REWEIGHTED_TYPES else [kind])]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", nargs="+", default=["bfloat16", "float16", "float32"], choices=list(TOL))
    ap.add_argument("--d", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--T", type=int, nargs="+", default=[1000, 4096])
    ap.add_argument("--types", nargs="+", default=TYPES,
                    help="kernel types (attention.KERNEL_TYPES), a re-weighted one with its power as lssar:P")
    ap.add_argument("--H", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=4096, help="B = max(1, tokens // T)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path")
    ap.add_argument("--cpu", action="store_true", help="every type on small fp32 inputs under Triton's interpreter")
    ap.add_argument("--cpu-smoke", action="store_true", help="one tiny case under Triton's interpreter")
    args = ap.parse_args(argv)
    for spec in args.types:
        if spec.partition(":")[0] not in KERNEL_TYPES:
            ap.error(f"no fused kernel for {spec!r}: the types are {', '.join(KERNEL_TYPES)}")
    if args.cpu_smoke:
        args.dtype, args.d, args.T, args.types, args.H, args.workers = ["float32"], [16], [20], ["lssar:15"], 2, 1
        args.tokens = 20   # B = 1: the interpreter runs the kernels as Python
    elif args.cpu:
        args.dtype, args.d, args.T, args.H, args.tokens = ["float32"], [16], [17, 67], 2, 1
    args.interpret = args.cpu or args.cpu_smoke
    return args


def cases(args):
    for dtype, d, T, spec in itertools.product(args.dtype, args.d, args.T, args.types):
        kind, _, p = spec.partition(":")
        yield dict(dtype=dtype, d=d, T=T, kind=kind, p=float(p or 15), B=max(1, args.tokens // T), H=args.H)


def run_case(case, seed, cpu_smoke=False):
    """One row of the table (runs in a worker process). cpu_smoke: under Triton's interpreter."""
    if cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, REPO)
    import torch
    import attention
    from kernels import lssa_triton
    lssa_triton.AUTOTUNE = False
    device = "cpu" if cpu_smoke else "cuda"
    dtype = getattr(torch, case["dtype"])
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (case["B"], case["H"], case["T"], case["d"])
    q, k, v, dout = (torch.randn(shape, device=device, generator=g).to(dtype) for _ in range(4))
    got, want = {}, {}
    for backend, cast, res in (("kernel", dtype, got), ("reference", torch.float64, want)):
        leaves = [t.to(cast).detach().requires_grad_() for t in (q, k, v)]
        out = attention.causal_attention(*leaves, case["kind"], case["p"], backend=backend)
        out.backward(dout.to(out.dtype))
        res.update(out=out.detach(), dq=leaves[0].grad, dk=leaves[1].grad, dv=leaves[2].grad)
    row = dict(case, err={}, max={})
    for name in got:
        a, b = got[name].double(), want[name]
        row["err"][name] = ((a - b).norm() / b.norm().clamp_min(1e-300)).item()
        row["max"][name] = ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
    row["nan"] = any(t.isnan().any().item() for t in got.values())
    row["ok"] = not row["nan"] and all(e <= TOL[case["dtype"]] for e in row["max"].values())
    return row


def main(argv=None):
    args = parse_args(argv)
    todo = list(cases(args))
    if args.workers > 1:  # spawn: each worker has its own CUDA context
        import multiprocessing
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(run_case, todo, [args.seed + i for i in range(len(todo))],
                                 [args.interpret] * len(todo)))
    else:
        rows = [run_case(c, args.seed + i, args.interpret) for i, c in enumerate(todo)]
    names = ("out", "dq", "dk", "dv")
    head = f"{'dtype':<9}{'d':>4}{'T':>6} {'type':<25}" + "".join(f"{n:>10}" for n in names) + \
        "".join(f"{'max ' + n:>10}" for n in names) + f"{'max/tol':>9}  ok"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        worst = max(r["max"].values()) / TOL[r["dtype"]]
        kind = r["kind"] + (f" p={r['p']:g}" if r["kind"] in REWEIGHTED_TYPES else "")
        print(f"{r['dtype']:<9}{r['d']:>4}{r['T']:>6} {kind:<25}" + "".join(f"{r['err'][n]:>10.2e}" for n in names)
              + "".join(f"{r['max'][n]:>10.2e}" for n in names) + f"{worst:>9.2f}  {'yes' if r['ok'] else 'NO'}")
    bad = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} cases within tolerance (errors: relative Frobenius norm; "
          f"max: max |kernel − reference| / max |reference|)")
    if args.out:
        sys.path.insert(0, REPO)
        from runinfo import code_version, hardware, write_json
        import torch
        device = "cpu" if args.interpret else "cuda"
        write_json({"command": " ".join(["python", "scripts/kernel_errors.py"] + (argv if argv is not None else sys.argv[1:])),
                    "code": code_version(), "hardware": hardware(device), "torch": torch.__version__,
                    "tolerance_max": TOL, "results": rows}, args.out)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
