"""Kernel-level attention benchmark: forward and forward+backward time and peak memory of
softmax (SDPA) and of each implementation of the fused types (--kinds; default lssa, lssar).

    python scripts/bench_attention.py --out results/bench_attention.json
    python scripts/bench_attention.py --T 1024 4096 16384 --H 12 --d 64 128 --tokens 16384
    python scripts/bench_attention.py --cpu-smoke          # no GPU: check this script itself

Implementations (each for every --kinds type, softmax once):
  sdpa        softmax, F.scaled_dot_product_attention(is_causal=True) as torch dispatches it
              (the backend it picks is recorded), then forced to each fused backend:
  sdpa-flash  FlashAttention-2 (SDPBackend.FLASH_ATTENTION)
  sdpa-cudnn  cuDNN's fused attention (SDPBackend.CUDNN_ATTENTION; recent torch may pick it on sm_90)
  reference   attention.reference_attention, plain PyTorch (materialises T x T)
  compiled    the same under torch.compile (skip with --no-compile; only up to
              --compile-max-T: for an inference forward the reference loops over row blocks,
              which torch.compile unrolls)
  triton      kernels/lssa_triton.py, the fused kernels (autotuned on the first call)
  flex        FlexAttention: lssa as softmax of log(softplus(s)); lssar as a second pass with
              score_mod p·log(relu(softplus(s) − τ)), τ from the first pass's log-sum-exp
              (benchmark only: no fallback rows; skip with --no-flex)

Modes: "fwd" is an inference forward (torch.no_grad: the reference walks over row blocks,
lssar's kernel keeps no gradient statistics); "fwd+bwd" is a forward with inputs that require
grad plus the backward of a random output gradient. Each of --reps timings covers enough
back-to-back calls to fill --window-ms between one pair of CUDA events (so a short call is not
measured as the launch gap around it), divided by the number of calls; the rows give the
median, min and max per call. "x sdpa" is the ratio to the fastest SDPA row (default, flash
or cuDNN) of the same T, head dim and mode, "x sdpa mem" the ratio of peak memory to that
row's. Peak memory is max_memory_allocated during one call minus what was allocated before
it (the inputs). An implementation that fails (e.g. out of memory) is reported as such.
B defaults to tokens/T (16 at T=1024), so every T holds the same number of tokens.
TFLOP/s use the softmax-attention count for a causal mask: 2·B·H·T²·d forward, 2.5x that
for the backward, whatever the implementation really computes.
Without a CUDA device the script says so and exits 0, unless --cpu-smoke, which runs tiny
shapes through Triton's interpreter (timings meaningless) to check the script end to end.
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from attention import KERNEL_TYPES  # noqa: E402  (imports torch; triton only later)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384], help="sequence lengths")
    ap.add_argument("--tokens", type=int, default=16384, help="B = tokens // T unless --B is given")
    ap.add_argument("--B", type=int, default=None, help="fixed batch size for every T")
    ap.add_argument("--H", type=int, default=12)
    ap.add_argument("--d", type=int, nargs="+", default=[64], help="head dims")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--p", type=float, default=15.0, help="lssar's power")
    ap.add_argument("--kinds", nargs="+", default=["lssa", "lssar"], choices=list(KERNEL_TYPES) + ["all"],
                    help="types with a fused kernel (attention.KERNEL_TYPES; all: every one)")
    ap.add_argument("--impls", nargs="+", default=["reference", "compiled", "triton", "flex"],
                    choices=["reference", "compiled", "triton", "flex"],
                    help="lssa/lssar implementations (softmax SDPA always runs)")
    ap.add_argument("--no-compile", action="store_true", help="drop the torch.compile'd reference")
    ap.add_argument("--no-flex", action="store_true", help="drop FlexAttention")
    ap.add_argument("--compile-max-T", type=int, default=4096, help="longest T for the compiled reference")
    ap.add_argument("--reference-max-T", type=int, default=None,
                    help="longest T for the plain reference (its fwd+bwd holds several T x T matrices per head)")
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20, help="timings (each of several calls) per row")
    ap.add_argument("--window-ms", type=float, default=20.0,
                    help="each timing runs back-to-back calls for at least this long (at most 1000 calls)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny shapes on the CPU through Triton's interpreter (checks the script only)")
    args = ap.parse_args(argv)
    if "all" in args.kinds:
        args.kinds = list(KERNEL_TYPES)
    if args.cpu_smoke:  # tiny everything; the numbers mean nothing
        args.T, args.B, args.H, args.d, args.dtype = [40], 1, 2, [16], "float32"
        args.warmup, args.reps = 0, 1
        args.impls = [i for i in args.impls if i in ("reference", "triton")]
    if args.no_compile and "compiled" in args.impls:
        args.impls.remove("compiled")
    if args.no_flex and "flex" in args.impls:
        args.impls.remove("flex")
    return args


class Timer:
    """Milliseconds per call of `calls` back-to-back calls: CUDA events on the GPU, wall clock
    on the CPU."""

    def __init__(self, torch, cuda):
        self.torch, self.cuda = torch, cuda

    def __call__(self, fn, calls=1):
        if self.cuda:
            start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / calls
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) * 1e3 / calls


def make_impls(torch, attention, args):
    """name -> (kind -> attention function or None), built lazily so a missing feature only
    removes its own rows."""
    F = torch.nn.functional
    def softmax(q, k, v):
        return attention.causal_attention(q, k, v, "softmax")

    impls = {"sdpa": {"softmax": softmax}}
    backends = getattr(getattr(torch.nn, "attention", None), "SDPBackend", None)
    if backends is not None and torch.cuda.is_available():
        from torch.nn.attention import sdpa_kernel
        for name, backend in (("sdpa-flash", "FLASH_ATTENTION"), ("sdpa-cudnn", "CUDNN_ATTENTION")):
            if hasattr(backends, backend):
                impls[name] = {"softmax": forced(sdpa_kernel, getattr(backends, backend), softmax)}
    p = args.p
    if "reference" in args.impls:
        impls["reference"] = {kind: (lambda q, k, v, kind=kind: attention.reference_attention(q, k, v, kind, p))
                              for kind in args.kinds}
    if "compiled" in args.impls:
        compiled = torch.compile(attention.reference_attention, dynamic=False)
        impls["compiled"] = {kind: (lambda q, k, v, kind=kind: compiled(q, k, v, kind, p)) for kind in args.kinds}
    if "triton" in args.impls:
        from kernels import lssa_triton
        impls["triton"] = {kind: (lambda q, k, v, kind=kind: lssa_triton.lssa_attention(
                           q, k, v, attention.RECIPES[kind], p, attention.FIXED_LENGTH)) for kind in args.kinds}
    if "flex" in args.impls:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        except ImportError:
            print("FlexAttention is not available in this torch: skipped")
        else:
            impls["flex"] = {kind: flex_impl(torch, F, kind, p, create_block_mask,
                                             torch.compile(flex_attention, dynamic=False))
                             for kind in args.kinds if kind in ("lssa", "lssar")}   # written for these two
    return impls


def forced(sdpa_kernel, backend, fn):
    """fn with SDPA restricted to one backend (an error, not a silent fallback, if it cannot run)."""
    def run(q, k, v):
        with sdpa_kernel([backend]):
            return fn(q, k, v)
    return run


def sdpa_backend(torch, q):
    """The fused backend SDPA picks for causal attention on q's shape (None where torch cannot say)."""
    try:
        from torch.nn.attention import SDPBackend
        return SDPBackend(torch._fused_sdp_choice(q, q, q, is_causal=True)).name
    except Exception:   # a private helper: absent or changed in some torch versions
        return None


def flex_impl(torch, F, kind, p, create_block_mask, flex):
    masks = {}

    def attn(q, k, v):
        B, H, T, d = q.shape
        if T not in masks:
            masks[T] = create_block_mask(lambda b, h, qi, ki: ki <= qi, None, None, T, T, device=q.device)
        block_mask = masks[T]
        n = torch.arange(1, T + 1, device=q.device, dtype=torch.float32)
        scale = math.log(d) * torch.log(n)                         # ln(d)·ln(i), per query row
        qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)   # QK-norm

        def log_softplus(score, b, h, qi, ki):
            return torch.log(F.softplus(score * scale[qi]))

        out, lse = flex(qn, kn, v, score_mod=log_softplus, block_mask=block_mask, scale=1.0, return_lse=True)
        if kind == "lssa":
            return out
        tau = torch.where(n > 3, torch.exp(lse.float()) / n, 0.0)   # Σ softplus / i

        def reweight(score, b, h, qi, ki):
            r = F.softplus(score * scale[qi]) - tau[b, h, qi]
            return torch.where(r > 0, p * torch.log(r), -float("inf"))

        return flex(qn, kn, v, score_mod=reweight, block_mask=block_mask, scale=1.0)

    return attn


def measure(torch, timer, fn, q, k, v, mode, args, cuda):
    """({ms (median), ms_min, ms_max, calls}, peak MiB or None) of `fn` in `mode`."""
    if mode == "fwd":
        def step():
            with torch.no_grad():
                fn(q, k, v)
    else:
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        dout = torch.randn_like(q)

        def step():
            for t in leaves:
                t.grad = None
            fn(*leaves).backward(dout)
    # At least one call before the peak is read: the first autotunes the kernels, and Triton's
    # benchmark allocates a 256 MiB L2-flush buffer that is not the implementation's memory.
    for _ in range(max(1, args.warmup)):
        step()
    peak = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    calls = max(1, min(1000, math.ceil(args.window_ms / max(timer(step), 1e-3))))
    times = [timer(step, calls) for _ in range(args.reps)]
    return dict(ms=statistics.median(times), ms_min=min(times), ms_max=max(times), calls=calls), peak


def format_row(r):
    spread = f"[{r['ms_min']:.3f}, {r['ms_max']:.3f}]"
    ratio, mem = (f"{r[k]:.2f}" if r.get(k) else "-" for k in ("x_sdpa", "x_sdpa_mem"))
    peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
    backend = f"  ({r['backend']})" if r.get("backend") else ""
    return (f"{r['d']:>3} {r['T']:>6} {r['B']:>3} {r['mode']:<8} {r['attention']:<19} {r['impl']:<10} {r['ms']:>9.3f} "
            f"{spread:>19} {ratio:>7} {r['tflops']:>8.1f} {peak:>9} {mem:>6}{backend}")


def attention_flops(B, H, T, d, mode):
    fwd = 2.0 * B * H * T * T * d   # QK^T and PV, 2 flops per MAC, half the matrix (causal)
    return fwd * (3.5 if mode == "fwd+bwd" else 1.0)


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"   # before anything imports triton
    sys.path.insert(0, REPO)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        print("no CUDA device: nothing to benchmark (figures need a GPU; "
              "--cpu-smoke checks this script with Triton's interpreter)")
        return 0
    import attention
    from runinfo import code_version, hardware
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
        args.impls = [i for i in args.impls if i != "triton"]
        print("triton is not installed: the fused kernels are skipped")

    device = "cuda" if cuda else "cpu"
    dtype = getattr(torch, args.dtype)
    impls = make_impls(torch, attention, args)
    timer = Timer(torch, cuda)
    meta = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or 'unknown'}), "
                                                            "Triton interpreter: timings meaningless",
        "torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda,
        "code": code_version(), "hardware": hardware(device), "dtype": args.dtype, "H": args.H, "d": args.d, "p": args.p,
        "warmup": args.warmup, "reps": args.reps, "window_ms": args.window_ms,
    }
    print(f"# {meta['device']} | torch {meta['torch']} | triton {triton_version} | commit {meta['code']['commit']}"
          + (" (dirty)" if meta["code"]["dirty"] else ""))
    print(f"# H={args.H} {args.dtype} p={args.p}; ms per call: median [min, max] of {args.reps} timings of "
          f">= {args.window_ms:g} ms each, after {args.warmup} warm-up calls")
    rows = []
    header = (f"{'d':>3} {'T':>6} {'B':>3} {'mode':<8} {'attention':<19} {'impl':<10} {'ms':>9} {'[min, max]':>19} "
              f"{'x sdpa':>7} {'TFLOP/s':>8} {'peak MiB':>9} {'x mem':>6}")
    print(header)
    print("-" * len(header))
    for d, T in ((d, T) for d in args.d for T in args.T):
        B = args.B or max(1, args.tokens // T)
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(B, args.H, T, d, device=device, dtype=dtype, generator=g) for _ in range(3))
        for mode in args.modes:
            best = None   # the fastest SDPA row so far: the ratios' denominator
            for name, by_kind in impls.items():
                for kind, fn in by_kind.items():
                    row = {"d": d, "T": T, "B": B, "mode": mode, "attention": kind, "impl": name}
                    if name == "sdpa":
                        row["backend"] = sdpa_backend(torch, q)
                    if name == "compiled" and T > args.compile_max_T:
                        row["skipped"] = f"T > --compile-max-T {args.compile_max_T}"
                        rows.append(row)
                        continue
                    if name == "reference" and args.reference_max_T and T > args.reference_max_T:
                        row["skipped"] = f"T > --reference-max-T {args.reference_max_T}"
                        rows.append(row)
                        continue
                    try:
                        times, peak = measure(torch, timer, fn, q, k, v, mode, args, cuda)
                    except Exception as e:  # OOM, a missing feature, a compile failure: report it
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                        print(f"{d:>3} {T:>6} {B:>3} {mode:<8} {kind:<19} {name:<10} {'failed: ' + row['error'][:60]}")
                        if cuda:
                            torch.cuda.empty_cache()
                        rows.append(row)
                        continue
                    ms = times["ms"]
                    if name.startswith("sdpa") and (best is None or ms < best["ms"]):
                        best = dict(times, peak_mib=peak, impl=name)
                    row.update(times, peak_mib=peak, tflops=attention_flops(B, args.H, T, d, mode) / ms / 1e9)
                    rows.append(row)
            for row in rows:   # every row of this T, head dim and mode against the fastest SDPA
                if best and row.get("ms") and (row["d"], row["T"], row["mode"]) == (d, T, mode):
                    row.update(x_sdpa=row["ms"] / best["ms"], sdpa_impl=best["impl"],
                               x_sdpa_mem=row["peak_mib"] / best["peak_mib"] if row["peak_mib"] and best["peak_mib"]
                               else None)
                if row.get("ms") and (row["d"], row["T"], row["mode"]) == (d, T, mode):
                    print(format_row(row))
        del q, k, v
        if cuda:
            torch.cuda.empty_cache()
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
