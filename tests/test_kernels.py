"""The fused Triton kernels (kernels/lssa_triton.py) against the reference (attention.py):
outputs and the gradients of q, k, v.

CPU (CI): the kernels run under Triton's interpreter, which must be switched on
(TRITON_INTERPRET=1) before triton is imported. This process may already have imported
triton (torch does, lazily), so every interpreter case runs in one child process that sets
the variable first; the cases below are parametrised over that child's results. Skipped with
a reason when triton is not installed. The interpreter runs the kernels as Python, so one more
CPU test runs Triton's real compiler down to an sm_90 binary (no GPU needed).

Every type of attention.KERNEL_TYPES is checked: lssa and lssar over the full set of cases,
each other type (NEW_TYPES) over a compact one (T = 1, 5, 17, 40, 67, non-dividing blocks on
strided views, bf16), plus the re-weighted fallback rows, p = 3 and scores far below σ's
underflow.

GPU (marker `gpu`, skipped without CUDA): head dims 64/128, T in {1, 2, 3, 4, 127, 1000, 1024}
(the other types: T in {1, 1000}), fp32/bf16/fp16, the re-weighted fallback and large p, a
T = 16384 forward in O(T) memory and a torch.compile'd forward/backward for every type.

Errors are max |kernel − reference| / max |reference| per tensor (fp32 reference, computed
from the same inputs). fp32 must agree to 1e-4; bf16/fp16 are loose (the output, the weights
fed to the value matmul and the score gradients are rounded to 16 bits).
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

import attention
from model import GPT, config_from_preset
from helpers import ran_in_a_fresh_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# in CI (which installs triton, scripts/test.sh) a missing triton fails the kernel tests rather than skipping them
HAS_TRITON = importlib.util.find_spec("triton") is not None or bool(os.environ.get("CI"))
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (see requirements-dev.txt)")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOL = {"float32": 1e-4, "bfloat16": 6e-2, "float16": 2e-2}  # GPU cases (head dims 64/128, T up to 16384)
NEW_TYPES = [k for k in attention.KERNEL_TYPES if k not in ("lssa", "lssar")]   # the types beyond lssa and lssar
MIXED_BLOCKS = {"fwd": (32, 16), "dkdv": (16, 32), "dq": (32, 16)}  # BLOCK_M != BLOCK_N


def _case(name, kind, T, d=16, p=15.0, dtype="float32", B=1, H=2, **extra):
    return dict(name=name, kind=kind, T=T, d=d, p=p, dtype=dtype, B=B, H=H, **extra)


INTERPRETER_CASES = (
    # the first rows: row 1 is uniform, rows 1-3 have no lssar threshold, row 4 is the first with one
    [_case(f"{kind}-T{T}", kind, T) for kind in ("lssa", "lssar") for T in (1, 2, 3, 4, 5)]
    + [
        # T not a multiple of the block, several blocks, two batches
        _case("lssa-T17-d32", "lssa", 17, d=32, B=2),
        _case("lssar-T17-d32", "lssar", 17, d=32, B=2),
        # BLOCK_M != BLOCK_N, q/k/v strided views of one (B, T, 3, H, d) tensor
        _case("lssa-T67-mixedblocks-strided", "lssa", 67, blocks=MIXED_BLOCKS, strided=True),
        _case("lssar-T67-mixedblocks-strided", "lssar", 67, blocks=MIXED_BLOCKS, strided=True),
        # large and non-integer powers
        _case("lssar-T67-p40", "lssar", 67, p=40.0),
        _case("lssar-T40-p2.5", "lssar", 40, p=2.5),
        _case("lssar-T40-p1", "lssar", 40, p=1.0),
        # zero queries: every weight of the row is softplus(0), nothing is above the mean, so
        # lssar falls back to lssa. Rows <= 11 only: there the fp32 reference's mean is exact
        # and it takes the fallback too (beyond, it may round the mean below the weights).
        _case("lssa-T11-zero-queries", "lssa", 11, zero_rows=list(range(4, 11))),
        _case("lssar-T11-zero-queries", "lssar", 11, zero_rows=list(range(4, 11))),
        # inference (no autograd: lssar skips the gradient statistics)
        _case("lssar-T67-nograd", "lssar", 67, grad=False),
        # 16-bit inputs
        _case("lssa-T67-bf16", "lssa", 67, d=32, dtype="bfloat16", B=2),
        _case("lssar-T67-bf16", "lssar", 67, d=32, dtype="bfloat16", B=2),
        _case("lssar-T40-fp16", "lssar", 40, d=32, dtype="float16"),
        # 16-bit too: a non-integer power (and the threshold's gradient), and the fallback rows,
        # compared on the output and dV only: with zero queries in bf16, dQ (~1/eps on the zero
        # rows) and through it dK differ by rounding alone, 8e-2 and 2e-1 for the correct kernels
        _case("lssar-T40-p2.5-bf16", "lssar", 40, p=2.5, dtype="bfloat16"),
        _case("lssar-T11-zero-queries-bf16", "lssar", 11, zero_rows=list(range(4, 11)), dtype="bfloat16",
              tensors=["out", "dv"]),
    ]
    # every other fused type (attention.KERNEL_TYPES): a compact set each (one key block, several
    # blocks with two batches, blocks that do not divide T on strided views, bf16)
    + [c for kind in NEW_TYPES for c in (
        _case(f"{kind}-T1", kind, 1),
        _case(f"{kind}-T5", kind, 5),
        _case(f"{kind}-T17-d32", kind, 17, d=32, B=2),
        _case(f"{kind}-T67-mixedblocks-strided", kind, 67, blocks=MIXED_BLOCKS, strided=True),
        _case(f"{kind}-T40-bf16", kind, 40, d=32, dtype="bfloat16"),
    )]
    + [
        # the first rows of an exp row maximum kept online. p = 3: with p = 15 these rows are
        # nearly one-hot, their true gradients ~1e-5, and the comparison would be against the
        # fp32 rounding of dP − D (~1e-6 of |dO||v|) in row 1, whose true gradient is 0
        *[_case(f"softmax_reweight-T{T}-p3", "softmax_reweight", T, p=3.0) for T in (2, 3, 4)],
        _case("softmax_reweight-T40-p3", "softmax_reweight", 40, p=3.0),
        _case("sigmoid_l1_reweight-T40-p3", "sigmoid_l1_reweight", 40, p=3.0),
        # the fallback rows: equal scores leave nothing above the mean
        _case("softmax_reweight-T11-zero-queries-p3", "softmax_reweight", 11, p=3.0, zero_rows=list(range(4, 11))),
        _case("sigmoid_l1_reweight-T11-zero-queries", "sigmoid_l1_reweight", 11, zero_rows=list(range(4, 11))),
        # relu rows without a positive score (every query 0): zero output, zero gradient
        _case("relu_l1-T11-zero-queries", "relu_l1", 11, zero_rows=list(range(4, 11))),
        # scores of about -200: σ underflows to 0 in fp32, the l1 row must still be exact. A score
        # of that size carries an fp32 rounding of ~1e-5 (kernel and reference sum the dot
        # product in different orders), which exp turns into relative weight errors of that
        # order: hence 1e-3, not fp32's usual 1e-4
        _case("sigmoid_l1_reweight-T40-far-below-underflow", "sigmoid_l1_reweight", 40, d=32, aligned=-15.0, tol=1e-3),
        _case("sigmoid-T40-far-below-underflow", "sigmoid", 40, d=32, aligned=-15.0, tol=1e-3),
    ]
)

# Run in the child process: TRITON_INTERPRET is set before anything imports triton.
_CHILD = r"""
import json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, sys.argv[1])
import torch
import attention
from kernels import lssa_triton

def err(a, b):
    a, b = a.double(), b.double()
    if b.numel() == 0:
        return 0.0
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff

def inputs(c, dtype):
    g = torch.Generator().manual_seed(1234 + c["T"])
    B, H, T, d = c["B"], c["H"], c["T"], c["d"]
    if c.get("strided"):
        qkv = torch.randn(B, T, 3, H, d, generator=g).to(dtype)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.randn(B, H, T, d, generator=g).to(dtype) for _ in range(3))
    if c.get("zero_rows"):
        q = q.clone()
        q[:, :, c["zero_rows"]] = 0
    if c.get("aligned"):   # every q opposite every k: q·k/√d of about aligned²·√d/2 (negative)
        base = torch.zeros(d)
        base[:2] = 1.0
        q = (c["aligned"] * base + 0.5 * q.float()).to(dtype)
        k = (-c["aligned"] * base + 0.5 * k.float()).to(dtype)
    return q, k, v, torch.randn(B, H, T, d, generator=g).to(dtype)

def run(c, backend, q, k, v, dout):
    grad = c.get("grad", True)
    q, k, v = (t.detach().requires_grad_(grad) for t in (q, k, v))
    with torch.set_grad_enabled(grad):
        out = attention.causal_attention(q, k, v, c["kind"], c["p"], backend=backend)
    if not grad:
        return [out]
    (out.float() * dout.float()).sum().backward()
    return [out, q.grad, k.grad, v.grad]

launched = []
pick = lssa_triton._pick

def recording_pick(which, *args):   # what a case launched: (kernel, BLOCK_M, BLOCK_N)
    kernel, meta = pick(which, *args)
    launched.append((which, meta["BLOCK_M"], meta["BLOCK_N"]))
    return kernel, meta

lssa_triton._pick = recording_pick
results = {}
default_blocks = dict(lssa_triton.INTERPRET_BLOCKS)
for c in json.loads(sys.stdin.read()):
    lssa_triton.INTERPRET_BLOCKS.update(c.get("blocks") or default_blocks)
    lssa_triton.pin_tiles(c.get("tiles") or {})
    q, k, v, dout = inputs(c, getattr(torch, c["dtype"]))
    launched.clear()
    got = run(c, "kernel", q, k, v, dout)
    ref = run(c, "reference", q, k, v, dout)
    names = ["out", "dq", "dk", "dv"]
    res = {"nan": any(bool(t.isnan().any()) for t in got), "err": {}, "launched": sorted(set(launched))}
    for name, a, b in zip(names, got, ref):
        if name == "dq" and c.get("zero_rows"):  # zero rows' gradient is ~1/eps: compare apart
            zero = torch.zeros(c["T"], dtype=torch.bool)
            zero[c["zero_rows"]] = True
            res["err"]["dq_zero_rows"] = err(a[:, :, zero], b[:, :, zero])
            a, b = a[:, :, ~zero], b[:, :, ~zero]
        res["err"][name] = err(a, b)
    results[c["name"]] = res
print("RESULTS" + json.dumps(results))
"""


# ----------------------------------------------------------------------------- interpreter tolerances
# The interpreter's 16-bit cases are fixed inputs, so each one's tolerance is set from the largest
# error (over out, dq, dk, dv) the correct kernels reach on it, measured on this CPU machine with
# `python tools/mutate_kernels.py --measure --cases bf16 fp16`, times a margin of 2: loose
# enough for rounding, tight enough that a wrong backward fails here too (the curated mutants of
# tools/mutate_kernels.py, e.g. the exp row sum not rescaled: 5.5e-2 on the re-weighted cases,
# whose correct kernels reach 1.6e-2 and 1.9e-2). If the kernels change their rounding, re-measure.
MEASURED_16 = {
    "lssa-T67-bf16": 9.66e-3, "lssar-T67-bf16": 9.85e-3, "lssar-T40-fp16": 5.48e-4,
    "sigmoid-T40-bf16": 9.62e-3, "relu-T40-bf16": 1.27e-2, "softmax_reweight-T40-bf16": 1.64e-2,
    "sigmoid_l1_reweight-T40-bf16": 1.93e-2, "relu_l1-T40-bf16": 1.09e-2, "softplus_l1-T40-bf16": 1.02e-2,
    "lssar-T40-p2.5-bf16": 6.62e-3, "lssar-T11-zero-queries-bf16": 5.88e-3,
}
MARGIN_16 = 2.0


def interpreter_tol(case, tensor):
    """The largest error an interpreter case may show on a tensor (out, dq, dk, dv): the case's
    own tol where it sets one, a 16-bit case's measured error times MARGIN_16, else fp32's; no
    limit on a tensor the case does not compare (its `tensors`)."""
    if tensor not in case.get("tensors", [tensor]):
        return float("inf")
    if "tol" in case:
        return case["tol"]
    if case["dtype"] != "float32":
        return MARGIN_16 * MEASURED_16.get(case["name"], float("nan"))  # not measured yet: fails (see below)
    return TOL[case["dtype"]]


def test_every_16bit_case_has_a_measured_tolerance():
    """A new bf16/fp16 case needs its measured error (else a KeyError in the middle of the run)."""
    cases = {c["name"] for c in INTERPRETER_CASES if c["dtype"] != "float32" and "tol" not in c}
    assert cases == set(MEASURED_16)


def run_interpreter(cases):
    """Run cases (_case's dicts; "blocks": INTERPRET_BLOCKS, "tiles": lssa_triton.pin_tiles's) in
    one interpreter child: {name: {"nan", "err": {tensor: error}, "launched": [[kernel, BLOCK_M, BLOCK_N]]}}."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (see requirements-dev.txt)")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", _CHILD, REPO], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS")]
    assert proc.returncode == 0 and lines, f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULTS"):])


@pytest.fixture(scope="module")
def interpreter_results():
    return run_interpreter(INTERPRETER_CASES)


@needs_triton
@pytest.mark.parametrize("case", INTERPRETER_CASES, ids=[c["name"] for c in INTERPRETER_CASES])
def test_interpreter_matches_reference(interpreter_results, case):
    res = interpreter_results[case["name"]]
    assert not res["nan"], "NaN in the kernel's output or gradients"
    bad = {name: e for name, e in res["err"].items() if not e <= interpreter_tol(case, name)}
    assert not bad, f"errors above the tolerance: {bad} (all: {res['err']})"


_COMPILE_CHILD = r"""
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
os.environ["LSSA_TRITON_OP"] = "custom_op"
sys.path.insert(0, sys.argv[1])
import torch
import attention

g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 2, 20, 16, generator=g, requires_grad=True) for _ in range(3))
for kind in ("lssar", "sigmoid_l1_reweight"):   # the op's recipe arguments (str, bools, int) trace too
    def f(q, k, v):
        return attention.causal_attention(q, k, v, kind, 15.0, backend="kernel")

    eager = f(q, k, v)
    eager.sum().backward()
    want = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(q, k, v)
    out.sum().backward()
    assert torch.equal(out, eager)
    assert all(torch.equal(t.grad, w) for t, w in zip((q, k, v), want))
    for t in (q, k, v):
        t.grad = None

# the real model, as train.py compiles it: GPT under bf16 autocast, forward and backward
from model import GPT, config_from_preset
torch.manual_seed(0)
model = GPT(config_from_preset("tiny", attention="lssar", vocab_size=97, block_size=16, attention_backend="kernel"))
x = torch.randint(0, 97, (2, 16), generator=g)
results = []
for fn in (model, torch.compile(model, backend="aot_eager", fullgraph=True)):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = fn(x, x)
    loss.backward()
    results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
for a, b in zip(*results):
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), (a - b).abs().max()
print("COMPILED-OK")
"""


@needs_triton
def test_interpreter_under_torch_compile():
    """The dispatch and the op trace into one graph (fullgraph=True: no graph break) and give
    the eager results, alone and inside the GPT model under bf16 autocast. On the CPU only the
    opaque custom_op registration can be traced (the interpreter's kernels are not traceable);
    the GPU tests cover the default."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_CHILD, REPO], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert "COMPILED-OK" in proc.stdout, f"{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"


_ZERO_GRADS_CHILD = r"""
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, sys.argv[1])
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import attention

class Fills(TorchDispatchMode):  # every tensor the backward fills with a constant
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if any(w in name for w in ("zeros", "fill", "full")):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))

for kind in ("lssa", "lssar"):
    q, k, v = (torch.randn(1, 2, 20, 16, requires_grad=True) for _ in range(3))
    out = attention.causal_attention(q, k, v, kind, backend="kernel")
    with Fills() as fills:
        out.sum().backward()
    print(kind, "FILLS", fills.seen)
"""


@needs_triton
def test_backward_materialises_no_zero_gradients():
    """The op's internal outputs (lssar's statistics and U) get no gradient: autograd must not
    allocate zero tensors for them (U alone is B x H x T x D fp32 per layer)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", _ZERO_GRADS_CHILD, REPO], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if "FILLS" in line]
    assert proc.returncode == 0 and len(lines) == 2, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    for line in lines:
        assert line.endswith("FILLS []"), line


@needs_triton
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") == "1", reason="the interpreter is on: no compiler")
def test_kernels_compile_for_an_h100(request):
    """The interpreter runs the kernels as Python; this runs Triton's real compiler down to an
    sm_90 cubin (no GPU needed), so code that only the GPU compiler rejects fails in CI too.
    Small tiles; between them the launches cover every code path (float and integer p, fp16's
    tf32 score-gradient matmuls, fp32's DOT_PREC, lssar's gradient statistics, the sigmoid,
    exp and relu weights, the online row maximum, rows without normalisation)."""
    if ran_in_a_fresh_process(request):
        return
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as e:
        pytest.skip(f"this triton has no ahead-of-time compile API: {e}")
    from kernels import lssa_triton as L

    pointers = {"Q", "K", "V", "O", "DO", "DK", "DV", "DQ"}
    fp32_pointers = {"NQ", "NK", "RHO", "KAPPA", "BETA", "STATS", "U", "DE"}

    def recipe(kind):
        phi, norm, rw = attention.RECIPES[kind]
        return dict(PHI=L.PHI_IDS[phi], NORM=norm, RW=rw, NSTATS=L._n_stats(phi, norm, rw))

    launches = [
        (L._fwd_kernel, "bf16", dict(**recipe("lssar"), P_INT=0, STORE_U=True, DOT_PREC="tf32", BLOCK_N=32)),
        (L._bwd_pre_kernel, "bf16", dict(RW=True, NSTATS=6)),
        (L._bwd_dkdv_kernel, "fp16", dict(**recipe("lssar"), P_INT=15, DOT_PREC="tf32", DS_F32=True, BLOCK_N=32)),
        (L._bwd_dq_kernel, "fp32", dict(**recipe("lssar"), P_INT=15, DOT_PREC=L.FP32_DOT_PRECISION, DS_F32=False,
                                        BLOCK_N=32)),
        (L._fwd_kernel, "bf16", dict(**recipe("sigmoid_l1_reweight"), P_INT=15, STORE_U=True, DOT_PREC="tf32",
                                     BLOCK_N=32)),
        (L._bwd_dkdv_kernel, "bf16", dict(**recipe("softmax_reweight"), P_INT=15, DOT_PREC="tf32", DS_F32=False,
                                          BLOCK_N=32)),
        (L._bwd_dq_kernel, "bf16", dict(**recipe("relu"), P_INT=15, DOT_PREC="tf32", DS_F32=False, BLOCK_N=32)),
    ]
    for i, (fn, dtype, constexprs) in enumerate(launches):
        constexprs = dict(constexprs, HEAD_DIM=32, BLOCK_M=32)
        floats = "fp64" if i % 2 == 0 else "fp32"   # torch.compile's Inductor passes Python floats as fp64
        signature = {name: "constexpr" if name in constexprs else
                     f"*{dtype}" if name in pointers else "*fp32" if name in fp32_pointers else
                     floats if name == "p" else "i32" for name in fn.arg_names}
        try:
            source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
            target = GPUTarget("cuda", 90, 32)
        except TypeError as e:
            pytest.skip(f"this triton's ahead-of-time compile API differs: {e}")
        compiled = triton.compile(source, target=target, options={"num_warps": 4, "num_stages": 2})
        assert compiled.asm["cubin"], fn.__name__


_FALLBACK_CHILD = r"""
import os, sys, warnings
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, sys.argv[1])
import torch
import attention
from kernels import lssa_triton

q, k, v = (torch.randn(1, 2, 20, 16) for _ in range(3))
print("WORKING", attention.check_kernel("lssar", 15.0, "cpu", torch.float32, 16),
      attention._auto_kernel_applies(q, k, v, "lssar", 15.0))

def broken(*args, **kwargs):
    raise RuntimeError("simulated: no kernel image is available for this GPU")

lssa_triton._backward = broken   # only the backward fails: the check must launch it too
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 16)
    again = attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 16)
    applies = attention._auto_kernel_applies(q, k, v, "lssa", 15.0)
print("BROKEN", first == again, applies, len(caught))
print("REASON", first)
print("WARNING", caught[0].message if caught else None)
"""


@needs_triton
def test_failing_kernel_falls_back_with_one_warning():
    """backend="auto": a kernel that cannot compile or launch (here its backward) is found by
    one tiny launch, warned about once, naming the reason and the flag, and not used again."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _FALLBACK_CHILD, REPO], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.split(" ")[0].isupper())
    assert out["WORKING"] == "None True"
    assert out["BROKEN"] == "True False 1"
    assert "simulated: no kernel image" in out["REASON"]
    assert "simulated: no kernel image" in out["WARNING"] and "--attention_backend=reference" in out["WARNING"]


def test_auto_backend_on_cpu_is_the_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 16, generator=g) for _ in range(3))
    for kind in ("lssa", "lssar"):
        want = attention.causal_attention(q, k, v, kind, backend="reference")
        assert torch.equal(attention.causal_attention(q, k, v, kind, backend="auto"), want)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") == "1", reason="the interpreter is on: the kernel would run")
def test_kernel_backend_on_cpu_fails_loudly():
    q = torch.randn(1, 2, 9, 16)
    with pytest.raises(RuntimeError, match="fused lssa kernel cannot run"):
        attention.causal_attention(q, q, q, "lssa", backend="kernel")


def test_softmax_ignores_the_backend():
    q = torch.randn(1, 2, 9, 16)
    want = attention.causal_attention(q, q, q, "softmax", backend="reference")
    assert torch.equal(attention.causal_attention(q, q, q, "softmax", backend="kernel"), want)


@needs_triton
def test_unsupported_inputs_are_named():
    from kernels import lssa_triton
    q = torch.randn(1, 2, 9, 48)
    reason = lssa_triton.unsupported_reason(q, q, q, attention.RECIPES["lssa"])
    assert reason is not None and ("CUDA" in reason or "head_dim 48" in reason)
    assert "'cosine'" in lssa_triton.unsupported_reason(q, q, q, ("cosine", True, False))
    assert "l1-normalised" in lssa_triton.unsupported_reason(q, q, q, ("relu", False, True))


def test_every_type_but_the_sdpa_ones_is_fused():
    assert set(attention.KERNEL_TYPES) == set(attention.ATTENTION_TYPES) - {"softmax", "ssmax"}


# ----------------------------------------------------------------------------- GPU

@pytest.fixture
def fixed_config(monkeypatch):
    """One fixed tile configuration: autotuning every dtype x head dim x mode would take minutes."""
    from kernels import lssa_triton
    monkeypatch.setattr(lssa_triton, "AUTOTUNE", False)


def _gpu_errors(kind, T, d, dtype, p=15.0, B=2, H=3, zero_rows=None, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, T, d, device="cuda", generator=g).to(dtype) for _ in range(4))
    if zero_rows is not None:
        q[:, :, zero_rows] = 0
    res = {}
    for backend in ("kernel", "reference"):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = attention.causal_attention(*x, kind, p, backend=backend)
        (out.float() * dout.float()).sum().backward()
        res[backend] = [out] + [t.grad for t in x]
    errors = {}
    for name, a, b in zip(("out", "dq", "dk", "dv"), res["kernel"], res["reference"]):
        assert not a.isnan().any(), f"NaN in {name}"
        scale = b.double().abs().max().item()
        errors[name] = (a.double() - b.double()).abs().max().item() / (scale if scale > 0 else 1.0)
    return errors


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 127, 1000, 1024])
@pytest.mark.parametrize("kind", ["lssa", "lssar"])
def test_gpu_matches_reference(fixed_config, kind, T, d, dtype):
    errors = _gpu_errors(kind, T, d, dtype)
    tol = TOL[str(dtype).split(".")[-1]]
    assert all(e <= tol for e in errors.values()), errors


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("T", [1, 1000])   # 1000: rows 1-4 too, and blocks that do not divide T
@pytest.mark.parametrize("kind", NEW_TYPES)
def test_gpu_every_type_matches_reference(fixed_config, kind, T, d, dtype):
    errors = _gpu_errors(kind, T, d, dtype)
    tol = TOL[str(dtype).split(".")[-1]]
    assert all(e <= tol for e in errors.values()), errors


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("p", [1.0, 2.5, 40.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_lssar_powers(fixed_config, p, dtype):
    errors = _gpu_errors("lssar", 1000, 64, dtype, p=p)
    assert all(e <= TOL[str(dtype).split(".")[-1]] for e in errors.values()), errors


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("kind", ["lssa", "lssar", "softmax_reweight", "sigmoid_l1_reweight"])
def test_gpu_fallback_rows(fixed_config, kind):
    errors = _gpu_errors(kind, 11, 64, torch.float32, zero_rows=list(range(4, 11)))
    errors.pop("dq")  # ~1/eps on the zero rows, checked on the CPU
    assert all(e <= TOL["float32"] for e in errors.values()), errors


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("kind", attention.KERNEL_TYPES)
def test_gpu_auto_backend_is_the_kernel(kind, monkeypatch):
    """The default (backend="auto", as a GPT model calls it) runs the fused kernel on CUDA."""
    from kernels import lssa_triton
    q = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.bfloat16)
    model = GPT(config_from_preset("tiny", attention=kind, vocab_size=97)).cuda()
    for head_dim in (64, model.config.n_embd // model.config.n_head):  # the one-time checks first
        assert attention.check_kernel(kind, 15.0, q.device, torch.bfloat16, head_dim) is None
    calls = []
    real = lssa_triton.lssa_attention
    monkeypatch.setattr(lssa_triton, "lssa_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    attention.causal_attention(q, q, q, kind)
    assert calls == [1]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(torch.zeros(1, 16, dtype=torch.long, device="cuda"))
    assert len(calls) == 1 + model.config.n_layer


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("kind", ["lssa", "lssar"])
def test_gpu_autotuned(kind, monkeypatch):
    from kernels import lssa_triton
    monkeypatch.setattr(lssa_triton, "AUTOTUNE", True)
    errors = _gpu_errors(kind, 1024, 64, torch.bfloat16, B=4, H=4)
    assert all(e <= TOL["bfloat16"] for e in errors.values()), errors


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("kind", attention.KERNEL_TYPES)
def test_gpu_long_forward_in_linear_memory(kind):
    """T = 16384, 12 heads: the score matrix alone would be 16384² x 12 x 4 bytes = 12.9 GB."""
    B, H, T, d = 1, 12, 16384, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, T, d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    with torch.no_grad():  # the first call autotunes; Triton's benchmark allocates a 256 MiB L2-flush buffer
        attention.causal_attention(q, k, v, kind, backend="kernel")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        out = attention.causal_attention(q, k, v, kind, backend="kernel")
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 256 * 2**20, f"the forward allocated {extra / 2**20:.0f} MiB"
    with torch.no_grad():  # the reference walks over row blocks: bounded memory, slower
        want = attention.causal_attention(q, k, v, kind, backend="reference")
    err = (out.double() - want.double()).abs().max().item() / want.double().abs().max().item()
    assert err <= TOL["bfloat16"], err


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("kind", attention.KERNEL_TYPES)
def test_gpu_torch_compile(kind):
    def f(q, k, v):
        return attention.causal_attention(q, k, v, kind, backend="kernel")

    g = torch.Generator(device="cuda").manual_seed(0)
    x = [torch.randn(2, 4, 256, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3)]
    results = []
    for fn in (f, torch.compile(f)):
        leaves = [t.clone().requires_grad_() for t in x]
        out = fn(*leaves)
        out.float().square().sum().backward()
        results.append([out] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert (a.float() - b.float()).abs().max().item() <= 1e-2 * b.float().abs().max().item()


_TRAIN_CHILD = r"""
import json, os, sys
os.environ["TRITON_INTERPRET"] = "1"        # before anything imports triton
repo, runs, out_root = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path.insert(0, repo)
os.chdir(repo)
import train
curves = {}
for attention, args in runs.items():
    for backend in ("kernel", "reference"):
        out = os.path.join(out_root, attention, backend)
        train.main(args + [f"--out_dir={out}", f"--attention_backend={backend}"])
        with open(os.path.join(out, "metrics.jsonl")) as f:
            curves[f"{attention}-{backend}"] = [r["loss"] for r in map(json.loads, f) if "loss" in r]
print(json.dumps(curves))
"""


def tiny_train_args(synth_dir, attention, device):
    from helpers import VOCAB
    return ["config/demo_cpu.py", f"--data_dir={synth_dir}", "--model=tiny", f"--vocab_size={VOCAB}",
            "--block_size=32", "--batch_size=2", "--max_iters=4", "--log_interval=1", "--eval_iters=1",
            f"--attention={attention}", "--learning_rate=3e-3", f"--device={device}"]


@pytest.fixture(scope="module")
def interpreter_curves(synth_dir, tmp_path_factory):
    """Loss curves of short training runs, kernel (interpreted) and reference, in one child."""
    runs = json.dumps({a: tiny_train_args(synth_dir, a, "cpu") for a in ("lssa", "lssar")})
    proc = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, REPO, runs, str(tmp_path_factory.mktemp("curves"))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_triton
@pytest.mark.parametrize("attention", ["lssa", "lssar"])
def test_interpreter_training_curve_matches_reference(interpreter_curves, attention):
    """A short training run with the kernel and with the reference gives the same losses."""
    kernel, reference = interpreter_curves[f"{attention}-kernel"], interpreter_curves[f"{attention}-reference"]
    assert len(kernel) == len(reference) == 4
    # fp32 kernel and reference differ by ~1e-6 per step; Adam amplifies that slowly
    for a, b in zip(kernel, reference):
        assert a == pytest.approx(b, rel=1e-4)


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("attention", ["lssa", "lssar"])
def test_gpu_training_curve_matches_reference(synth_dir, tmp_path, attention):
    import train
    curves = {}
    for backend in ("kernel", "reference"):
        out = tmp_path / backend
        train.main(tiny_train_args(synth_dir, attention, "cuda") + [
            f"--out_dir={out}", f"--attention_backend={backend}", "--max_iters=30", "--compile=False",
            "--batch_size=8", "--dtype=bfloat16"])
        with open(out / "metrics.jsonl") as f:
            curves[backend] = [r["loss"] for r in map(json.loads, f) if "loss" in r]
    assert len(curves["kernel"]) == len(curves["reference"]) == 30
    for a, b in zip(curves["kernel"], curves["reference"]):
        assert a == pytest.approx(b, rel=2e-2)  # bf16 autocast: the q/k/v fed to the kernel are bf16


@gpu
@needs_cuda
@needs_triton
def test_gpu_failing_kernel_falls_back(monkeypatch):
    """A model with backend="auto" whose kernel cannot compile warns once and runs the reference."""
    from kernels import lssa_triton
    monkeypatch.setattr(attention, "_KERNEL_STATUS", {})

    def broken(*args, **kwargs):
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(lssa_triton, "_forward", broken)
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", attention="lssar", vocab_size=97)).cuda()
    x = torch.randint(0, 97, (2, 16), device="cuda")
    with pytest.warns(RuntimeWarning, match="attention_backend=reference") as caught:
        got, _ = model(x)
        model(x)
    assert sum("simulated compile failure" in str(w.message) for w in caught) == 1
    for block in model.transformer.h:
        block.attn.backend = "reference"
    want, _ = model(x)
    assert torch.equal(got, want)
    with pytest.raises(RuntimeError, match="simulated compile failure"):
        attention.causal_attention(*(torch.randn(1, 2, 16, 16, device="cuda") for _ in range(3)), "lssar",
                                   backend="kernel")


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("attention", ["lssa", "lssar"])
def test_gpu_compiled_training_matches_eager(synth_dir, tmp_path, attention):
    """Every paper config compiles the model: train.py with compile=True (backend auto, the
    kernels inside the compiled graph, bf16 autocast) trains like the eager model."""
    import train
    curves = {}
    for compile in (True, False):
        out = tmp_path / f"compile-{compile}"
        train.main(tiny_train_args(synth_dir, attention, "cuda") + [
            f"--out_dir={out}", f"--compile={compile}", "--max_iters=8", "--batch_size=8", "--dtype=bfloat16",
            "--n_embd=128", "--n_head=2"])   # head_dim 64, as the GPT-2 presets
        with open(out / "metrics.jsonl") as f:
            curves[compile] = [r["loss"] for r in map(json.loads, f) if "loss" in r]
    assert len(curves[True]) == len(curves[False]) == 8
    for a, b in zip(curves[True], curves[False]):
        assert a == pytest.approx(b, rel=2e-2)
