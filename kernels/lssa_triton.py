"""Fused causal attention in Triton, forward and backward, for every recipe of attention.RECIPES.

A recipe is (positive weights φ, l1-normalise, re-weight); the kernels take all three as
compile-time switches (PHI, NORM, RW), so a new type is one line in RECIPES. For query row
i = 1..T (1-indexed) and key j <= i, in the kernels' units (log2 where a weight is an exponential):

    φ = softplus  s2_ij = ln(d) log2(i) q̂_i·k̂_j,   w_ij = log2(1 + 2^s2)  (lssa, lssar; softplus_fixed:
                  a constant length in place of i, softplus_l1)
    φ = sigmoid   s2_ij = q_i·k_j log2(e)/√d − log2(i),  w_ij = σ(s) = 2^(−softplus2(−s2))
    φ = relu      s_ij = q_i·k_j/(√d·i),   w_ij = relu(s)
    φ = exp       s2_ij = q_i·k_j log2(e)/√d,   w_ij = 2^s2
    without l1    y_i = Σ_j w_ij v_j                        (sigmoid, relu: one pass, no row sum)
    l1            y_i = Σ_j w_ij v_j / Z_i,  Z_i = Σ_j w_ij  (a relu row with Z = 0 gives 0)
    re-weighted   x_ij = relu(w_ij − τ_i)^p,  τ_i = Z_i / i for i > 3 and 0 for i <= 3,
                  y_i = Σ_j x_ij v_j / Σ_j x_ij, or the l1 row when Σ_j x_ij = 0 (fallback).

Rows that are l1-normalised may be scaled by any constant (the re-weighting too: τ scales with
the weights). exp rows, and l1-normalised sigmoid rows, use that: they subtract the row's
largest log2-weight L_i (w = 2^(g − L), g = s2 or log2 σ), found by a first pass over the keys
that keeps L and Z online, as online softmax does; so no row underflows to 0/0 (σ underflows
below about −88) and no exp overflows. softmax and ssmax stay on SDPA (attention.py).
The sections below were written for lssa/lssar and hold for every φ: where they name
softplus, read the φ above; the per-score derivative dw/ds2 is σ(s) for softplus, ln 2·w·(1 − σ)
for sigmoid (σ = w·2^L), [s > 0] for relu and ln 2·w for exp.

Design (per head; every statistic kept is per row, so memory is O(T·d), never O(T²)):

* QK-norm without a rounded copy of q̂, k̂. The kernels take the raw q, k (bf16 products
  accumulate exactly in fp32) and scale the fp32 dot product: s2_ij = (q_i·k_j)·ρ_i·κ_j with
  ρ_i = ln(d)·log2(i)/max(‖q_i‖, ε) and κ_j = 1/max(‖k_j‖, ε), ε = 1e-12 as in
  F.normalize, both fp32 and computed once per head in PyTorch (`_scales`, with the norms,
  which the backward's QK-norm chain rule also reads). s2 = s·log2(e), so softplus runs on
  exp2/log2 directly.
* Everything runs in "log2 units": w'_ij = log2(1 + 2^s2_ij) = softplus(s_ij)/ln 2. lssa and
  lssar are invariant to scaling all weights by one constant (the row is renormalised; τ
  scales with the weights), so the 1/ln 2 factor never needs undoing. Computed as
  max(s2, 0) + log2(1 + u), u = 2^-|s2|: for 16-bit inputs log2(1 + u) = u·q(u), a degree-5
  polynomial on the FMA units (relative error < 1e-5), so one special-function op per score
  (ex2); fp32 inputs use the precise log2 with a 3-term series when u < 1/64 (log2(1 + u) alone
  loses the relative precision of tiny weights). The per-score work, not the matmuls, is what
  limits these kernels (docs/kernels.md counts it). |s| <= ln(d)·ln(T), so nothing overflows
  and lssa needs no running max: one pass accumulates Σ w'v and Z.
* Precision: fp32 accumulation everywhere; fp32 inputs get fp32-accurate dots (tf32x3, or
  exact "ieee" with LSSA_TRITON_FP32_DOT=ieee; never plain tf32) and the precise log2, so they
  match the fp32 reference (the DOT_PREC constexpr; "tf32" marks 16-bit inputs); 16-bit
  inputs round the weights fed to the value matmul and the score gradients fed to the dK/dQ
  matmuls to the input dtype as FlashAttention-2 does, except fp16, whose range the score
  gradient may exceed: there those two matmuls run in tf32.
* lssar, forward: pass 1 over the keys accumulates Z and the row maximum of w'; then
  τ = Z/i (rows i > 3) and M = max(max_j w' − τ, 0) = max_j relu(w' − τ) are known *before*
  pass 2. Pass 2 uses x̃ = (relu(w' − τ)/M)^p ∈ [0, 1]: dividing by the exact row maximum is
  what the reference does (exact after renormalisation), cannot overflow for any p, needs no
  online rescaling, and the largest entry is 1, so Σx̃ >= 1 never underflows into a false
  fallback. A row with M = 0 (every weight at or below τ) is the fallback: known before
  pass 2, so pass 2 simply accumulates x = w' for those rows (= the lssa row), no third pass.
  τ = Z/i uses IEEE division (div_rn), rounded like the reference's Σw/n: where every weight
  of a row is equal, both then agree on taking the fallback.
  Integer p (<= 64) uses repeated squaring (unrolled at compile time); other p use
  exp2(p·log2(.)).
* Backward (per row, D_i = dO_i·y_i, dP_ij = dO_i·v_j, σ_ij = sigmoid(s_ij) = 2^(s2 − w')):
    lssa:  dL/dw'_ij = (dP_ij − D_i)/Z_i
    lssar: dL/dw'_ij = K_i b_ij^(p−1) (dP_ij − D_i) − E_i,   b = relu(w' − τ)/M,
           K_i = p/(M_i X̃_i),  X̃_i = Σ_j x̃_ij,
           E_i = (o_i/i) G_i with G_i = Σ_j K_i b_ij^(p−1)(dP_ij − D_i) — the gradient through τ_i
           (o_i = 1 for i > 3). G_i needs a full row before any per-element gradient, so the
           forward also accumulates U_i = Σ_j b_ij^(p−1) v_j and R_i = Σ_j b_ij^(p−1) (one more
           matmul, training only), and G_i = K_i (dO_i·U_i − D_i R_i) is a per-row
           preprocessing step. Fallback rows use the lssa formula; encoded without branches as
           A_i = K_i b^(p−1) + F_i with K = 0, F = 1/Z on fallback rows and F = 0 elsewhere.
    then dL/ds2 = dL/dw'·σ, dq_i = ρ_i Σ_j dS2_ij κ_j k_j, dk_j = κ_j Σ_i dS2_ij ρ_i q_i,
    dv_j = Σ_i a_ij dO_i, and the QK-norm chain rule in the epilogue:
    dq ← dq − q (q·dq)/‖q‖² (only where ‖q‖ > ε, as the clamp in F.normalize), same for k.
  FlashAttention-2 structure: a preprocessing kernel (D, E), a dK/dV kernel per key block
  iterating over the query blocks at and below the diagonal, and a dQ kernel per query block
  iterating over the key blocks at and left of the diagonal (no atomics, deterministic).
  Saved per row (NSTATS rows): l1 types 1/Z, unnormalised ones nothing; re-weighted types τ/M,
  1/M, K, F, 1/X̃, R, plus U (T·d fp32); then L for the rows that subtract their maximum. b is computed
  as relu(w'·(1/M) − τ/M), one FFMA and a max (_excess), identically in both directions.
* Causal structure: the blocks strictly below the diagonal run without any mask or bounds
  check, only the diagonal blocks are masked, blocks above the diagonal are never visited.
  BLOCK_M is a multiple of BLOCK_N (and the reverse in the dK/dV kernel), so the keys past T
  only ever appear in masked diagonal blocks.
* Block sizes come from a table per architecture (_TILES_SM90 for 16-bit inputs on Hopper, _TILES
  on other GPUs, _TILES_FP32 for fp32 inputs), at most a few tiles per kernel and head-dim class.
  By default the first tile of each list is launched: the same tiles in every process and every
  run, so the same fp32 summation order (LSSA_TRITON_AUTOTUNE=1 autotunes over the list instead,
  per process). pin_tiles() launches explicit tiles (train.py pins a run's tiles once and keeps
  them in its checkpoints; the tests launch every entry of every table).
  Under the interpreter (TRITON_INTERPRET=1) the tiles not pinned are one small fixed
  configuration (INTERPRET_BLOCKS), and bf16 tiles are widened to fp32 before tl.dot (the
  interpreter multiplies bf16 as raw integers).

Registration: with torch >= 2.6 the forward and backward are `torch.library.triton_op`s
(kernels launched through `wrap_triton`, so torch.compile sees them as ordinary ops and
Inductor may call the kernels directly); torch 2.4/2.5 get opaque `torch.library.custom_op`s;
older torch a plain `torch.autograd.Function`. LSSA_TRITON_OP=triton_op|custom_op|function
(default auto) forces one (for debugging a compile problem).
"""
import contextlib
import functools
import math
import os

import torch
import triton
import triton.language as tl

from kernels import KERNEL_PHIS, SUPPORTED_HEAD_DIMS, env_choice

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# a recipe's positive-weight function -> the kernels' PHI constant (softplus_fixed is softplus
# with a constant length: only its score scale ρ differs)
PHI_IDS = {"softplus": 0, "softplus_fixed": 0, "sigmoid": 1, "relu": 2, "exp": 3}
assert set(PHI_IDS) == set(KERNEL_PHIS)
NORM_EPS = 1e-12       # F.normalize's default eps, the reference's QK-norm
MAX_INT_POWER = 64     # integer p up to this uses repeated squaring; larger p uses exp2/log2
MAX_GRID_Y = 65535     # CUDA's limit on the second grid dimension (batch x heads here)

# Every LSSA_TRITON_* variable is read here, through env_choice: a value outside its choices is a
# one-line error at import, never a silent default (LSSA_TRITON_AUTOTUNE=false once meant "on").
# Autotuning off by default: the first tile of each list is launched, the same in every process, so
# ranks and resumed runs sum in the same order (docs/kernels.md#tiles-and-autotuning says why this
# beats autotuning once). LSSA_TRITON_AUTOTUNE=1 autotunes per process, e.g. to compare tiles.
AUTOTUNE = env_choice("LSSA_TRITON_AUTOTUNE", ("0", "1")) == "1"
# tl.dot precision for fp32 inputs: "tf32x3" (three tf32 tensor-core products, close to fp32
# accuracy) or "ieee" (exact fp32 on the FMA units: much slower, spills registers). Plain "tf32"
# is refused: fp32 inputs are matched to the fp32 reference, and the kernels read DOT_PREC ==
# "tf32" as "16-bit inputs" (the fast log2 and softplus polynomial), so it would quietly give fp32
# inputs bf16-level errors; use bf16 inputs for speed.
FP32_DOT_PRECISION = env_choice("LSSA_TRITON_FP32_DOT", ("tf32x3", "ieee"))
# Fixed tiles under the interpreter; tests may change them to exercise other block layouts.
INTERPRET_BLOCKS = {"fwd": (16, 16), "dkdv": (16, 16), "dq": (16, 16)}


def _fix_interpreter_scalars():
    """Triton's interpreter holds a scalar as a 1-element array; before 3.7 it turned one into a
    loop bound with int(array), which NumPy 2.x refuses for an array of shape (1,), so every
    `range(lo, hi, BLOCK)` with run-time bounds failed ("only 0-dimensional arrays can be
    converted to Python scalars"; seen with triton 3.6). Later versions squeeze the array first:
    do the same. Under the interpreter only; harmless where the interpreter already does it."""
    from triton.runtime import interpreter
    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "squeezes_scalars", False):
        return

    def index(self):
        return int(self.handle.data.squeeze())

    def patched(tensor, *scope):
        patch(tensor, *scope)
        if scope:   # the attribute is restored with the others after the launch
            scope[0].set_attr(tensor, "__index__", index)
        else:
            tensor.__index__ = index

    patched.squeezes_scalars = True
    interpreter._patch_lang_tensor = patched


if INTERPRET:
    _fix_interpreter_scalars()

_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)
_EPS = tl.constexpr(NORM_EPS)
_SERIES_MAX = tl.constexpr(1.0 / 64.0)
_TINY = tl.constexpr(1e-30)
# log2(1 + u)/u on [0, 1] as a degree-5 polynomial (coefficients of u^0..u^5): a minimax fit for
# the relative error (8.6e-6 evaluated in fp32; tests/test_bench.py::test_log2_1p_polynomial)
_L2P0 = tl.constexpr(1.4426829192113415)
_L2P1 = tl.constexpr(-0.720426154332368)
_L2P2 = tl.constexpr(0.46917399922486364)
_L2P3 = tl.constexpr(-0.30303603842641513)
_L2P4 = tl.constexpr(0.14603271192492076)
_L2P5 = tl.constexpr(-0.03443583933515312)
_WIDEN_BF16 = tl.constexpr(INTERPRET)
# lg2.approx.f32 (PTX) for the per-score log2 of 16-bit inputs on NVIDIA GPUs; tl.log2 for fp32
# inputs, under the interpreter and on ROCm
_FAST_LOG2 = tl.constexpr(not INTERPRET and torch.version.hip is None)


# ----------------------------------------------------------------------------- helpers

@triton.jit
def _log2(x, DOT_PREC: tl.constexpr):
    """log2. For 16-bit inputs (DOT_PREC == "tf32") on the special-function unit
    (lg2.approx.f32: absolute error ~2^-22 on [1, 2]); tl.log2 becomes libdevice's precise
    log2f, about 20 FMA-pipe instructions, and the per-score elementwise work is what limits
    these kernels. fp32 inputs keep the precise log2 (they are matched to the fp32 reference)."""
    y = tl.log2(x)
    if _FAST_LOG2:
        if DOT_PREC == "tf32":
            y = tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
    return y


@triton.jit
def _softplus2(s2, DOT_PREC: tl.constexpr):
    """log2(1 + 2^s2) = softplus(s)/ln 2 for s2 = s·log2(e), as max(s2, 0) + log2(1 + u),
    u = 2^-|s2| in (0, 1]. 16-bit inputs (DOT_PREC == "tf32"): log2(1 + u) = u·q(u), q of degree 5
    on the FMA units (relative error < 1e-5 on [0, 1], also for tiny u; the weights are rounded
    to 2^-8 before the value matmul): one special-function op per score instead of two, and no
    select. fp32 inputs: the precise log2, with a 3-term series where u < 1/64 (log2(1 + u)
    alone loses the relative precision of tiny weights)."""
    # |s2|·(−1), not −|s2|: Triton 3.6 writes a negation as 0 − x, which ptxas cannot fold into
    # the ex2 as an operand modifier (0 − 0 is +0): one more instruction per score
    u = tl.exp2(tl.abs(s2) * -1.0)
    if DOT_PREC == "tf32":
        q = _L2P5 * u + _L2P4
        q = q * u + _L2P3
        q = q * u + _L2P2
        q = q * u + _L2P1
        q = q * u + _L2P0
        lg = u * q
    else:
        series = u * (_LOG2E - u * (_LOG2E / 2 - u * (_LOG2E / 3)))
        lg = tl.where(u < _SERIES_MAX, series, _log2(1.0 + u, DOT_PREC))
    return tl.maximum(s2, 0.0) + lg


@triton.jit
def _score(dot, rho, kappa, beta, PHI: tl.constexpr):
    """A score tile from q·k (fp32) and the per-row / per-key scales, already broadcast:
    softplus: (q·k)·ρ_i·κ_j (QK-norm and length scale, log2 units); sigmoid: (q·k)·ρ + β_i
    (β_i = −log2 n_i, log2 units); relu: (q·k)·ρ_i (ρ_i = 1/(√d·n_i)); exp: (q·k)·ρ (log2 units)."""
    if PHI == 0:
        s = dot * rho * kappa
    elif PHI == 1:
        s = dot * rho + beta
    else:
        s = dot * rho
    return s


@triton.jit
def _log2_weight(s, DOT_PREC: tl.constexpr, PHI: tl.constexpr):
    """log2 of the weight of the rows that subtract a row maximum (exp, l1-normalised sigmoid):
    s itself for exp, log2 σ = −softplus2(−s) for sigmoid (exact where σ underflows)."""
    if PHI == 1:
        g = -_softplus2(-s, DOT_PREC)
    else:
        g = s
    return g


@triton.jit
def _weight(s, lrow, DOT_PREC: tl.constexpr, PHI: tl.constexpr, LOGMAX: tl.constexpr):
    """The positive weight of a score (lrow: the row's largest log2-weight, where LOGMAX)."""
    if PHI == 0:
        w = _softplus2(s, DOT_PREC)
    elif PHI == 2:
        w = tl.maximum(s, 0.0)
    else:
        g = _log2_weight(s, DOT_PREC, PHI)
        if LOGMAX:
            g = g - lrow
        w = tl.exp2(g)
    return w


@triton.jit
def _dscore(dw, s, w, crow, PHI: tl.constexpr):
    """dL/ds from dL/dw: softplus dw'/ds2 = σ(s) = 2^(s2 − w'); sigmoid dw/ds2 = ln 2·w·(1 − σ),
    σ = w·2^lrow (crow); relu 1 where s > 0; exp dw/ds2 = ln 2·w."""
    if PHI == 0:
        ds = dw * tl.exp2(s - w)
    elif PHI == 1:
        ds = dw * (_LN2 * w * (1.0 - w * crow))
    elif PHI == 2:
        ds = tl.where(s > 0.0, dw, 0.0)
    else:
        ds = dw * (_LN2 * w)
    return ds


@triton.jit
def _ipow_binary(x, N: tl.constexpr):
    """x**N for a compile-time integer 0 <= N < 128, by repeated squaring (unrolled)."""
    result = tl.full(x.shape, 1.0, tl.float32)
    base = x
    for bit in tl.static_range(7):
        if (N >> bit) & 1:
            result = result * base
        if (N >> (bit + 1)) != 0:
            base = base * base
    return result


def _binary_multiplications(n):
    """Multiplications x**n takes by repeated squaring (_ipow_binary), n >= 1."""
    return n.bit_length() - 1 + bin(n).count("1") - 1


# The integer powers for which (x^(n/3))^3 takes fewer multiplications than repeated squaring
# (15: x², x⁴, x⁵, x¹⁰, x¹⁵, five instead of six; lssar's default p is 15), as a bit mask
_CUBE_POWERS = tl.constexpr(sum(1 << n for n in range(6, 128, 3)
                                if _binary_multiplications(n // 3) + 2 < _binary_multiplications(n)))


@triton.jit
def _ipow(x, N: tl.constexpr):
    """x**N for a compile-time integer 0 <= N < 128, unrolled: by repeated squaring, or as
    (x^(N/3))^3 where that is shorter."""
    if (_CUBE_POWERS >> N) & 1:
        y = _ipow_binary(x, N // 3)
        result = y * y * y
    else:
        result = _ipow_binary(x, N)
    return result


@triton.jit
def _excess(w, invm, taum):
    """b = relu(w' − τ)/M as one FFMA and a max: relu(w'·(1/M) − τ/M) (τ/M, 1/M per row)."""
    return tl.maximum(tl.fma(w, invm, -taum), 0.0)


@triton.jit
def _reweight(b, p, P_INT: tl.constexpr, DOT_PREC: tl.constexpr, NEED_PM1: tl.constexpr):
    """(b^(p−1), b^p) for b in [0, 1], with b^(p−1) = 0 where b = 0 (also for p = 1, where it
    stands for relu's zero slope). P_INT > 0: p is that integer; P_INT = 0: use the float p.
    Without NEED_PM1 (the inference forward) an integer b^p is computed directly, which for
    some p (15) takes one multiplication fewer than b^(p−1)·b; b^(p−1) is then a placeholder."""
    if P_INT > 0:
        if NEED_PM1:
            pm1 = _ipow(b, P_INT - 1)
            if P_INT == 1:
                pm1 = tl.where(b > 0.0, pm1, 0.0)
            x = pm1 * b
        else:
            x = _ipow(b, P_INT)
            pm1 = x
    else:
        lb = _log2(tl.maximum(b, _TINY), DOT_PREC)
        pm1 = tl.where(b > 0.0, tl.exp2((p - 1.0) * lb), 0.0)
        x = pm1 * b
    return pm1, x


@triton.jit
def _mm(a, b, DOT_PREC: tl.constexpr):
    """a @ b with fp32 accumulation. Triton's CPU interpreter multiplies bfloat16 tiles as their
    raw uint16 bits (triton 3.9), so there, and only there, bf16 tiles are widened first."""
    if _WIDEN_BF16:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
        if b.dtype == tl.bfloat16:
            b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=DOT_PREC)


@triton.jit
def _load_rows(ptr, offs, offs_d, stride, T, BOUNDED: tl.constexpr):
    """A (rows x head_dim) tile; rows at or past T read as 0 when BOUNDED."""
    ptrs = ptr + offs[:, None] * stride + offs_d[None, :]
    if BOUNDED:
        tile = tl.load(ptrs, mask=(offs < T)[:, None], other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def _load_vec(ptr, offs, T, BOUNDED: tl.constexpr):
    """Per-row values (ρ or κ) for the given rows; rows past T read as 0 when BOUNDED."""
    if BOUNDED:
        x = tl.load(ptr + offs, mask=offs < T, other=0.0)
    else:
        x = tl.load(ptr + offs)
    return x


@triton.jit
def _bh_offset(pid_bh, H, stride_b, stride_h):
    """Offset of head (pid_bh // H, pid_bh % H) in a (B, H, T, d) tensor, in 64 bits."""
    return (pid_bh // H).to(tl.int64) * stride_b + (pid_bh % H).to(tl.int64) * stride_h


@triton.jit
def _fp32_scalar(p):
    """The float argument as fp32. Triton's launcher passes a Python float as fp32, but the
    kernels that torch.compile's Inductor calls directly get them as fp64, which would make
    every per-row value fp64 and the loops' carried types inconsistent (a compile error)."""
    return tl.cast(p, tl.float32)


@triton.jit
def _norm_chain(nrm):
    """1/‖x‖² where ‖x‖ > eps, else 0 (see _store_input_grad)."""
    big = nrm > _EPS
    return tl.where(big, 1.0 / tl.where(big, nrm * nrm, 1.0), 0.0)


# ----------------------------------------------------------------------------- forward

@triton.jit
def _fwd_sum_max(z, wmax, q, rho, beta, K, KAPPA, skt, T, offs_m, offs_d, lo, hi,
                 PHI: tl.constexpr, LOGMAX: tl.constexpr,
                 DOT_PREC: tl.constexpr, BLOCK_N: tl.constexpr, DIAG: tl.constexpr):
    """Pass 1 over the key blocks [lo, hi): Z and max_j w. LOGMAX (exp, l1-normalised sigmoid):
    wmax holds the running maximum L of the log2-weights g and Z = Σ 2^(g − L), rescaled when L
    grows (online softmax); every row sees its first key in its first block, so L is finite."""
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = _load_rows(K, offs_n, offs_d, skt, T, DIAG)
        if PHI == 0:
            kappa = _load_vec(KAPPA, offs_n, T, DIAG)[None, :]
        else:
            kappa = rho
        s = _score(_mm(q, tl.trans(k), DOT_PREC), rho[:, None], kappa, beta[:, None], PHI)
        if LOGMAX:
            g = _log2_weight(s, DOT_PREC, PHI)
            if DIAG:
                g = tl.where(offs_m[:, None] >= offs_n[None, :], g, float("-inf"))
            new = tl.maximum(wmax, tl.max(g, 1))
            z = z * tl.exp2(wmax - new) + tl.sum(tl.exp2(g - new[:, None]), 1)
            wmax = new
        else:
            w = _weight(s, wmax, DOT_PREC, PHI, False)
            if DIAG:
                w = tl.where(offs_m[:, None] >= offs_n[None, :], w, 0.0)
            z += tl.sum(w, 1)
            wmax = tl.maximum(wmax, tl.max(w, 1))
    return z, wmax


@triton.jit
def _fwd_accumulate(acc, xsum, uacc, rsum, q, rho, beta, lrow, taum, invm, fb, p,
                    K, V, KAPPA, skt, svt, T, offs_m, offs_d, lo, hi,
                    PHI: tl.constexpr, NORM: tl.constexpr, LOGMAX: tl.constexpr, RW: tl.constexpr,
                    P_INT: tl.constexpr, STORE_U: tl.constexpr,
                    DOT_PREC: tl.constexpr, BLOCK_N: tl.constexpr, DIAG: tl.constexpr):
    """The output pass over the key blocks [lo, hi): Σ x v and Σ x (x = w without re-weighting
    and on the fallback rows, x̃ = b^p otherwise), and for training re-weighted types
    U = Σ b^(p−1) v, R."""
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = _load_rows(K, offs_n, offs_d, skt, T, DIAG)
        v = _load_rows(V, offs_n, offs_d, svt, T, DIAG)
        if PHI == 0:
            kappa = _load_vec(KAPPA, offs_n, T, DIAG)[None, :]
        else:
            kappa = rho[:, None]
        s = _score(_mm(q, tl.trans(k), DOT_PREC), rho[:, None], kappa, beta[:, None], PHI)
        w = _weight(s, lrow[:, None], DOT_PREC, PHI, LOGMAX)
        if not RW:
            x = w
        else:
            pm1, x = _reweight(_excess(w, invm[:, None], taum[:, None]), p, P_INT, DOT_PREC, STORE_U)
            x = tl.where(fb[:, None], w, x)
        if DIAG:
            keep = offs_m[:, None] >= offs_n[None, :]
            x = tl.where(keep, x, 0.0)
        acc += _mm(x.to(v.dtype), v, DOT_PREC)
        if NORM:   # without normalisation no row sum is needed
            xsum += tl.sum(x, 1)
        if STORE_U:
            if DIAG:
                pm1 = tl.where(keep, pm1, 0.0)
            uacc += _mm(pm1.to(v.dtype), v, DOT_PREC)
            rsum += tl.sum(pm1, 1)
    return acc, xsum, uacc, rsum


@triton.jit
def _fwd_kernel(Q, K, V, RHO, KAPPA, BETA, O, STATS, U,
                sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
                H, T, p, T_BUCKET,
                HEAD_DIM: tl.constexpr, PHI: tl.constexpr, NORM: tl.constexpr, RW: tl.constexpr,
                NSTATS: tl.constexpr, P_INT: tl.constexpr,
                STORE_U: tl.constexpr, DOT_PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    p = _fp32_scalar(p)
    # the last row blocks have the most keys: launch them first
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    bh = pid_bh.to(tl.int64)
    Q += _bh_offset(pid_bh, H, sqb, sqh)
    K += _bh_offset(pid_bh, H, skb, skh)
    V += _bh_offset(pid_bh, H, svb, svh)
    O += _bh_offset(pid_bh, H, sob, soh)
    RHO += bh * T
    KAPPA += bh * T
    LOGMAX: tl.constexpr = NORM and (PHI == 1 or PHI == 3)   # rows that subtract their max

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = _load_rows(Q, offs_m, offs_d, sqt, T, True)
    rho = _load_vec(RHO, offs_m, T, True)
    if PHI == 1:
        beta = _load_vec(BETA, offs_m, T, True)
    else:
        beta = rho
    hi = tl.minimum(m0 + BLOCK_M, T)

    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    xsum = tl.zeros([BLOCK_M], tl.float32)
    if STORE_U:
        uacc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        rsum = tl.zeros([BLOCK_M], tl.float32)
    else:  # placeholders, never updated
        uacc = tl.zeros([1, 1], tl.float32)
        rsum = tl.zeros([1], tl.float32)

    taum = xsum   # placeholders where there is no pass 1
    invm = xsum
    fb = row_ok
    lrow = xsum
    if RW or LOGMAX:   # pass 1: the row sum and maximum
        z = tl.zeros([BLOCK_M], tl.float32)
        if LOGMAX:
            wmax = tl.full([BLOCK_M], float("-inf"), tl.float32)
        else:
            wmax = tl.zeros([BLOCK_M], tl.float32)
        z, wmax = _fwd_sum_max(z, wmax, q, rho, beta, K, KAPPA, skt, T, offs_m, offs_d, 0, m0,
                               PHI, LOGMAX, DOT_PREC, BLOCK_N, False)
        z, wmax = _fwd_sum_max(z, wmax, q, rho, beta, K, KAPPA, skt, T, offs_m, offs_d, m0, hi,
                               PHI, LOGMAX, DOT_PREC, BLOCK_N, True)
        if LOGMAX:   # the weights are 2^(g − L): the largest is 1
            lrow = wmax
            wmax = tl.full([BLOCK_M], 1.0, tl.float32)
        if RW:
            tau = tl.where(offs_m >= 3, tl.math.div_rn(z, (offs_m + 1).to(tl.float32)), 0.0)  # IEEE, as the reference
            mx = tl.maximum(wmax - tau, 0.0)
            fb = mx == 0.0  # every weight at or below the threshold: the fallback to the l1 row
            invm = tl.where(fb, 0.0, 1.0 / tl.where(fb, 1.0, mx))
            taum = tau * invm

    acc, xsum, uacc, rsum = _fwd_accumulate(acc, xsum, uacc, rsum, q, rho, beta, lrow, taum, invm, fb, p,
                                            K, V, KAPPA, skt, svt, T, offs_m, offs_d, 0, m0,
                                            PHI, NORM, LOGMAX, RW, P_INT, STORE_U, DOT_PREC, BLOCK_N, False)
    acc, xsum, uacc, rsum = _fwd_accumulate(acc, xsum, uacc, rsum, q, rho, beta, lrow, taum, invm, fb, p,
                                            K, V, KAPPA, skt, svt, T, offs_m, offs_d, m0, hi,
                                            PHI, NORM, LOGMAX, RW, P_INT, STORE_U, DOT_PREC, BLOCK_N, True)

    if NORM:   # a row without weight (relu) gets zeros
        inv_x = 1.0 / tl.where(xsum > 0.0, xsum, 1.0)
        out = acc * inv_x[:, None]
    else:
        inv_x = xsum
        out = acc
    tl.store(O + offs_m[:, None] * sot + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_ok[:, None])

    S = STATS + bh * NSTATS * T + offs_m
    if LOGMAX:
        tl.store(S + (NSTATS - 1) * T, lrow, mask=row_ok)                           # L
    if NORM and not RW:
        tl.store(S, inv_x, mask=row_ok)                                              # 1/Z
    if RW:
        tl.store(S, taum, mask=row_ok)                                               # τ/M
        tl.store(S + T, invm, mask=row_ok)                                           # 1/M
        tl.store(S + 2 * T, tl.where(fb, 0.0, p * invm * inv_x), mask=row_ok)       # K
        tl.store(S + 3 * T, tl.where(fb, inv_x, 0.0), mask=row_ok)                  # F
        tl.store(S + 4 * T, tl.where(fb, 0.0, inv_x), mask=row_ok)                  # 1/X̃
        if STORE_U:
            tl.store(S + 5 * T, rsum, mask=row_ok)                                   # R
            tl.store(U + bh * T * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                     uacc, mask=row_ok[:, None])


# ----------------------------------------------------------------------------- backward

@triton.jit
def _bwd_pre_kernel(O, DO, U, STATS, DE,
                    sob, soh, sot, sdb, sdh, sdt, H, T,
                    HEAD_DIM: tl.constexpr, RW: tl.constexpr, NSTATS: tl.constexpr,
                    BLOCK_M: tl.constexpr):
    """Per row: D = dO·y and, re-weighted, E = (o/i)·K·(dO·U − D·R), the gradient through τ
    (launched for l1-normalised types only: without normalisation dL/dw = dP)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bh = pid_bh.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    o = _load_rows(O + _bh_offset(pid_bh, H, sob, soh), offs_m, offs_d, sot, T, True).to(tl.float32)
    do = _load_rows(DO + _bh_offset(pid_bh, H, sdb, sdh), offs_m, offs_d, sdt, T, True).to(tl.float32)
    dd = tl.sum(o * do, 1)
    tl.store(DE + bh * 2 * T + offs_m, dd, mask=row_ok)
    if RW:
        u = _load_rows(U + bh * T * HEAD_DIM, offs_m, offs_d, HEAD_DIM, T, True)
        S = STATS + bh * NSTATS * T + offs_m
        g = tl.load(S + 2 * T, mask=row_ok, other=0.0) * (
            tl.sum(do * u, 1) - dd * tl.load(S + 5 * T, mask=row_ok, other=0.0))
        e = tl.where(offs_m >= 3, g / (offs_m + 1).to(tl.float32), 0.0)
        tl.store(DE + bh * 2 * T + T + offs_m, e, mask=row_ok)


@triton.jit
def _bwd_bases(Q, K, V, DO, NQ, NK, RHO, KAPPA, BETA, STATS, DE, pid_bh, H, T,
               sqb, sqh, skb, skh, svb, svh, sdb, sdh, NSTATS: tl.constexpr):
    """The backward kernels' inputs moved to head pid_bh."""
    bh = pid_bh.to(tl.int64)
    return (Q + _bh_offset(pid_bh, H, sqb, sqh), K + _bh_offset(pid_bh, H, skb, skh),
            V + _bh_offset(pid_bh, H, svb, svh), DO + _bh_offset(pid_bh, H, sdb, sdh),
            NQ + bh * T, NK + bh * T, RHO + bh * T, KAPPA + bh * T, BETA + bh * T,
            STATS + bh * NSTATS * T, DE + bh * 2 * T)


@triton.jit
def _store_input_grad(PTR, offs, offs_d, stride, T, g, scale, x, NRM, QKNORM: tl.constexpr):
    """Store the gradient of q (or k): scale·g at fixed norm, then (QKNORM) the chain rule
    through x/max(‖x‖, eps): g − x (x·g)/‖x‖² where ‖x‖ > eps (the clamp passes no gradient)."""
    g = g * scale[:, None]
    if QKNORM:
        xf = x.to(tl.float32)
        nrm = tl.load(NRM + offs, mask=offs < T, other=1.0)
        g = g - xf * (_norm_chain(nrm) * tl.sum(xf * g, 1))[:, None]
    tl.store(PTR + offs[:, None] * stride + offs_d[None, :], g.to(PTR.dtype.element_ty),
             mask=(offs < T)[:, None])


@triton.jit
def _row_stats(STATS, DE, offs_m, T, PHI: tl.constexpr, NORM: tl.constexpr, RW: tl.constexpr,
               NSTATS: tl.constexpr):
    """The saved per-row values the gradient needs (rows past T read as 0: no contribution):
    D, τ/M, 1/M, K, F (1/Z without re-weighting), 1/X̃, E, the row's largest log2-weight L
    and, for sigmoid, 2^L (σ = w·2^L). Placeholders where a type has no such value."""
    ok = offs_m < T
    LOGMAX: tl.constexpr = NORM and (PHI == 1 or PHI == 3)
    if LOGMAX:
        lrow = tl.load(STATS + (NSTATS - 1) * T + offs_m, mask=ok, other=0.0)
    else:
        lrow = tl.zeros(offs_m.shape, tl.float32)
    crow = tl.exp2(lrow)
    if NORM:
        dd = tl.load(DE + offs_m, mask=ok, other=0.0)
    else:
        dd = lrow
    if not RW:
        if NORM:
            fc = tl.load(STATS + offs_m, mask=ok, other=0.0)   # 1/Z
        else:
            fc = dd
        taum = fc  # unused
        invm = fc
        kc = fc
        invx = fc
        e = fc
    else:
        taum = tl.load(STATS + offs_m, mask=ok, other=0.0)
        invm = tl.load(STATS + T + offs_m, mask=ok, other=0.0)
        kc = tl.load(STATS + 2 * T + offs_m, mask=ok, other=0.0)
        fc = tl.load(STATS + 3 * T + offs_m, mask=ok, other=0.0)
        invx = tl.load(STATS + 4 * T + offs_m, mask=ok, other=0.0)
        e = tl.load(DE + T + offs_m, mask=ok, other=0.0)
    return dd, taum, invm, kc, fc, invx, e, lrow, crow


@triton.jit
def _bwd_weights(s2, dp, dd, taum, invm, kc, fc, invx, e, lrow, crow, p,
                 PHI: tl.constexpr, NORM: tl.constexpr, RW: tl.constexpr,
                 P_INT: tl.constexpr, DOT_PREC: tl.constexpr):
    """From a score tile s2 and dP = dO·v (row statistics already broadcast to the tile):
    the forward's final weights a and dL/ds2."""
    w = _weight(s2, lrow, DOT_PREC, PHI, NORM and (PHI == 1 or PHI == 3))
    if not NORM:
        a = w
        dw = dp
    elif not RW:
        a = w * fc
        dw = (dp - dd) * fc
    else:
        pm1, x = _reweight(_excess(w, invm, taum), p, P_INT, DOT_PREC, True)
        a = x * invx + w * fc
        dw = (kc * pm1 + fc) * (dp - dd) - e
    return a, _dscore(dw, s2, w, crow, PHI)


@triton.jit
def _mm_ds(ds, x, DOT_PREC: tl.constexpr, DS_F32: tl.constexpr):
    """ds @ x with ds rounded to x's dtype (as FlashAttention-2), or in tf32 for fp16 inputs,
    whose range the score gradient may exceed."""
    if DS_F32:
        res = _mm(ds, x.to(tl.float32), "tf32")
    else:
        res = _mm(ds.to(x.dtype), x, DOT_PREC)
    return res


@triton.jit
def _dkdv_blocks(dk, dv, k, v, kappa, offs_n, Q, DO, RHO, BETA, STATS, DE, sqt, sdt, T, p,
                 offs_d, lo, hi, PHI: tl.constexpr, NORM: tl.constexpr, RW: tl.constexpr,
                 NSTATS: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
                 DS_F32: tl.constexpr, BLOCK_M: tl.constexpr, DIAG: tl.constexpr):
    """dK, dV of one key block from the query blocks [lo, hi) (tiles transposed: keys x rows)."""
    for start in range(lo, hi, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        q = _load_rows(Q, offs_m, offs_d, sqt, T, True)
        do = _load_rows(DO, offs_m, offs_d, sdt, T, True)
        rho = _load_vec(RHO, offs_m, T, True)
        if PHI == 1:
            beta = _load_vec(BETA, offs_m, T, True)
        else:
            beta = rho
        dd, taum, invm, kc, fc, invx, e, lrow, crow = _row_stats(STATS, DE, offs_m, T, PHI, NORM, RW, NSTATS)
        s2 = _score(_mm(k, tl.trans(q), DOT_PREC), rho[None, :], kappa[:, None], beta[None, :], PHI)
        dp = _mm(v, tl.trans(do), DOT_PREC)
        a, ds = _bwd_weights(s2, dp, dd[None, :], taum[None, :], invm[None, :], kc[None, :],
                             fc[None, :], invx[None, :], e[None, :], lrow[None, :], crow[None, :], p,
                             PHI, NORM, RW, P_INT, DOT_PREC)
        if DIAG:
            keep = offs_m[None, :] >= offs_n[:, None]
            a = tl.where(keep, a, 0.0)
            ds = tl.where(keep, ds, 0.0)
        dv += _mm(a.to(do.dtype), do, DOT_PREC)
        dk += _mm_ds(ds * rho[None, :], q, DOT_PREC, DS_F32)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, NQ, NK, RHO, KAPPA, BETA, DO, STATS, DE, DK, DV,
                     sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                     sdkb, sdkh, sdkt, sdvb, sdvh, sdvt,
                     H, T, p, T_BUCKET,
                     HEAD_DIM: tl.constexpr, PHI: tl.constexpr, NORM: tl.constexpr, RW: tl.constexpr,
                     NSTATS: tl.constexpr, P_INT: tl.constexpr,
                     DOT_PREC: tl.constexpr, DS_F32: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    p = _fp32_scalar(p)
    pid_n = tl.program_id(0)   # key block 0 sees every query: the heaviest go first
    pid_bh = tl.program_id(1)
    Q, K, V, DO, NQ, NK, RHO, KAPPA, BETA, STATS, DE = _bwd_bases(
        Q, K, V, DO, NQ, NK, RHO, KAPPA, BETA, STATS, DE, pid_bh, H, T,
        sqb, sqh, skb, skh, svb, svh, sdb, sdh, NSTATS)

    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = _load_rows(K, offs_n, offs_d, skt, T, True)
    v = _load_rows(V, offs_n, offs_d, svt, T, True)
    if PHI == 0:
        kappa = _load_vec(KAPPA, offs_n, T, True)
    else:
        kappa = tl.full([BLOCK_N], 1.0, tl.float32)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    # the diagonal query blocks (masked), then every later query block (no mask)
    dk, dv = _dkdv_blocks(dk, dv, k, v, kappa, offs_n, Q, DO, RHO, BETA, STATS, DE, sqt, sdt, T, p,
                          offs_d, n0, tl.minimum(n0 + BLOCK_N, T),
                          PHI, NORM, RW, NSTATS, P_INT, DOT_PREC, DS_F32, BLOCK_M, True)
    dk, dv = _dkdv_blocks(dk, dv, k, v, kappa, offs_n, Q, DO, RHO, BETA, STATS, DE, sqt, sdt, T, p,
                          offs_d, n0 + BLOCK_N, T,
                          PHI, NORM, RW, NSTATS, P_INT, DOT_PREC, DS_F32, BLOCK_M, False)

    # dk_j = κ_j Σ_i dS2_ij ρ_i q_i (κ = 1 without QK-norm)
    _store_input_grad(DK + _bh_offset(pid_bh, H, sdkb, sdkh), offs_n, offs_d, sdkt, T, dk, kappa, k, NK,
                      PHI == 0)
    tl.store(DV + _bh_offset(pid_bh, H, sdvb, sdvh) + offs_n[:, None] * sdvt + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=(offs_n < T)[:, None])


@triton.jit
def _dq_blocks(dq, q, do, rho, beta, offs_m, dd, taum, invm, kc, fc, invx, e, lrow, crow, p,
               K, V, KAPPA, skt, svt, T, offs_d, lo, hi,
               PHI: tl.constexpr, NORM: tl.constexpr, RW: tl.constexpr,
               P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
               DS_F32: tl.constexpr, BLOCK_N: tl.constexpr, DIAG: tl.constexpr):
    """dQ of one query block from the key blocks [lo, hi) (row stats already broadcast)."""
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = _load_rows(K, offs_n, offs_d, skt, T, DIAG)
        v = _load_rows(V, offs_n, offs_d, svt, T, DIAG)
        if PHI == 0:
            kappa = _load_vec(KAPPA, offs_n, T, DIAG)[None, :]
        else:
            kappa = rho
        s2 = _score(_mm(q, tl.trans(k), DOT_PREC), rho, kappa, beta, PHI)
        dp = _mm(do, tl.trans(v), DOT_PREC)
        a, ds = _bwd_weights(s2, dp, dd, taum, invm, kc, fc, invx, e, lrow, crow, p,
                             PHI, NORM, RW, P_INT, DOT_PREC)
        if DIAG:
            ds = tl.where(offs_m[:, None] >= offs_n[None, :], ds, 0.0)
        if PHI == 0:
            ds = ds * kappa
        dq += _mm_ds(ds, k, DOT_PREC, DS_F32)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, NQ, NK, RHO, KAPPA, BETA, DO, STATS, DE, DQ,
                   sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt, sdqb, sdqh, sdqt,
                   H, T, p, T_BUCKET,
                   HEAD_DIM: tl.constexpr, PHI: tl.constexpr, NORM: tl.constexpr, RW: tl.constexpr,
                   NSTATS: tl.constexpr, P_INT: tl.constexpr,
                   DOT_PREC: tl.constexpr, DS_F32: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    p = _fp32_scalar(p)
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    Q, K, V, DO, NQ, NK, RHO, KAPPA, BETA, STATS, DE = _bwd_bases(
        Q, K, V, DO, NQ, NK, RHO, KAPPA, BETA, STATS, DE, pid_bh, H, T,
        sqb, sqh, skb, skh, svb, svh, sdb, sdh, NSTATS)

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_rows(Q, offs_m, offs_d, sqt, T, True)
    do = _load_rows(DO, offs_m, offs_d, sdt, T, True)
    rho = _load_vec(RHO, offs_m, T, True)
    if PHI == 1:
        beta = _load_vec(BETA, offs_m, T, True)[:, None]
    else:
        beta = rho[:, None]
    dd, taum, invm, kc, fc, invx, e, lrow, crow = _row_stats(STATS, DE, offs_m, T, PHI, NORM, RW, NSTATS)
    dd = dd[:, None]
    taum = taum[:, None]
    invm = invm[:, None]
    kc = kc[:, None]
    fc = fc[:, None]
    invx = invx[:, None]
    e = e[:, None]
    lrow = lrow[:, None]
    crow = crow[:, None]
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    dq = _dq_blocks(dq, q, do, rho[:, None], beta, offs_m, dd, taum, invm, kc, fc, invx, e, lrow, crow, p,
                    K, V, KAPPA, skt, svt, T, offs_d, 0, m0,
                    PHI, NORM, RW, P_INT, DOT_PREC, DS_F32, BLOCK_N, False)
    dq = _dq_blocks(dq, q, do, rho[:, None], beta, offs_m, dd, taum, invm, kc, fc, invx, e, lrow, crow, p,
                    K, V, KAPPA, skt, svt, T, offs_d, m0, tl.minimum(m0 + BLOCK_M, T),
                    PHI, NORM, RW, P_INT, DOT_PREC, DS_F32, BLOCK_N, True)

    # dq_i = ρ_i Σ_j dS2_ij κ_j k_j
    _store_input_grad(DQ + _bh_offset(pid_bh, H, sdqb, sdqh), offs_m, offs_d, sdqt, T, dq, rho, q, NQ,
                      PHI == 0)


# ----------------------------------------------------------------------------- launching

def _configs(shapes):
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in shapes]


# (BLOCK_M, BLOCK_N, num_warps, num_stages). Forward and dQ: BLOCK_M % BLOCK_N == 0;
# dK/dV (BLOCK_N keys per program, BLOCK_M queries per step): BLOCK_N % BLOCK_M == 0.
# The first entry of each list is the one launched (without LSSA_TRITON_AUTOTUNE=1); the others
# are what the autotuner may choose instead and what the tests launch too (every entry, under the
# interpreter and on a GPU). The autotuner compiles every entry (Inductor precompiles them all
# before the first step), so each list is short: its start-up time grows with it.
#
# 16-bit inputs on Hopper (sm_90), from `python tools/kernel_resources.py --sass --dtypes bf16`
# (docs/kernels.md): every entry issues wgmma (a score tile of at least 64 rows: the dK/dV tile
# is BLOCK_N keys x BLOCK_M queries) with at least 16 rows per warp (8 warps on 64 rows would
# make both warpgroups do the whole tile's elementwise work). The first entry is the one with the
# fewest instructions per score among those that do not spill in any mode (lssar's training
# forward included), except dK/dV at d = 128, where every wgmma tile spills 124-330 B for lssar
# (two 64x128 fp32 accumulators per warpgroup): there the first is lssa's best without spills.
_TILES_SM90 = {
    ("fwd", 64): [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)],
    ("fwd", 128): [(128, 32, 8, 3), (128, 64, 8, 3), (64, 32, 4, 4)],
    ("dkdv", 64): [(32, 64, 4, 3), (32, 128, 8, 3), (16, 128, 8, 3)],
    ("dkdv", 128): [(16, 64, 4, 3), (32, 64, 4, 3), (16, 64, 4, 2)],
    ("dq", 64): [(64, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3)],
    ("dq", 128): [(64, 32, 4, 3), (128, 32, 8, 3)],
}
# 16-bit inputs on other GPUs (mma.sync: no warpgroups, any row count): the earlier sm_90 picks.
# They serve GPUs with 99 KiB of shared memory per block (sm_86, sm_89, sm_120), 163 KiB (sm_80)
# and 227 KiB (sm_100) (results/kernel_resources/sm<arch>.txt, from `python
# tools/kernel_resources.py --arch <arch>`). At d = 128 two tiles leave under 4 KiB of the
# 99: the forward's (128, 64, 8, 3), 96.5 KiB, and dQ's (128, 32, 8, 3), 96.2 KiB; each comes
# after a smaller tile, so a launch without autotuning never rests on that margin (the autotuner
# skips a tile that does not fit).
_TILES = {
    ("fwd", 64): [(64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 8, 3)],
    ("fwd", 128): [(64, 64, 8, 3), (128, 64, 8, 3), (128, 32, 8, 3)],
    ("dkdv", 64): [(32, 64, 4, 3), (32, 128, 8, 3), (16, 64, 4, 4)],
    ("dkdv", 128): [(32, 32, 4, 3), (16, 64, 8, 3), (16, 32, 4, 3)],
    ("dq", 64): [(64, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3)],
    ("dq", 128): [(64, 32, 8, 3), (128, 32, 8, 3), (64, 32, 4, 3)],
}
# fp32 inputs: their tf32x3 dots and fp32 tiles need about twice the registers and shared
# memory, so the bf16 tiles spill (0.9-2.5 KB per thread) and some exceed sm_90's 227 KiB.
# These compile with no spills for lssar (lssa: at most 60 B, the last dK/dV d=128 entry)
# and at most 112 KiB (python tools/kernel_resources.py --dtypes fp32) on sm_90; on the
# other GPUs (sm_80, sm_86, sm_89, sm_100, sm_120) in at most 88 KiB, but the third dQ d=64
# entry spills 0.4-0.9 KB there (results/kernel_resources/). fp32 stays the slow path all the
# same: it is for checking against the reference, bf16 is for training.
_TILES_FP32 = {
    ("fwd", 64): [(32, 16, 4, 2), (64, 16, 4, 2), (32, 16, 4, 3), (32, 16, 8, 2)],
    ("fwd", 128): [(16, 16, 4, 2), (32, 16, 8, 2), (16, 16, 4, 3), (32, 16, 8, 3)],
    ("dkdv", 64): [(16, 32, 4, 2), (16, 32, 4, 3), (32, 32, 8, 2), (16, 16, 4, 2)],
    ("dkdv", 128): [(16, 16, 8, 2), (16, 16, 8, 3), (16, 16, 4, 2)],
    ("dq", 64): [(32, 16, 4, 2), (32, 32, 4, 3), (64, 32, 4, 3), (32, 32, 4, 2)],
    ("dq", 128): [(16, 16, 4, 2), (16, 16, 4, 3), (16, 16, 8, 2)],
}
_KERNELS = {"fwd": _fwd_kernel, "dkdv": _bwd_dkdv_kernel, "dq": _bwd_dq_kernel}
_TUNE_KEY = ["HEAD_DIM", "T_BUCKET", "PHI", "NORM", "RW", "P_INT", "DOT_PREC"]


def _autotuned(which, tiles):
    return triton.autotune(_configs(tiles), key=_TUNE_KEY + (["STORE_U"] if which == "fwd" else []))(_KERNELS[which])


_TABLES = {"sm90": _TILES_SM90, "other": _TILES, "fp32": _TILES_FP32}
_TUNED = {(name, which, d): _autotuned(which, tiles)   # (table, kernel, head-dim class) -> kernel
          for name, table in _TABLES.items() for (which, d), tiles in table.items()}
# Tiles launched whatever the table or the autotuner would: (table, kernel, head-dim class) ->
# (BLOCK_M, BLOCK_N, num_warps, num_stages). Set through pin_tiles / tiles_pinned.
_PINNED = {}


def _tile_class(head_dim):
    return 128 if head_dim > 64 else 64


@functools.lru_cache(maxsize=None)
def _is_hopper(device):
    return torch.version.hip is None and torch.cuda.get_device_capability(device)[0] == 9


def _table_name(dtype, device):
    """Which tile table serves these inputs: fp32's, or the 16-bit one of the GPU's architecture
    (CPU tensors, under the interpreter: the non-Hopper one)."""
    if dtype == torch.float32:
        return "fp32"
    device = torch.device(device)
    return "sm90" if device.type == "cuda" and _is_hopper(device) else "other"


def _tile_key(name):
    """"sm90/fwd/64" -> ("sm90", "fwd", 64), the form a run directory keeps, checked."""
    table, which, d = (name.split("/") + ["", "", ""])[:3]
    if table not in _TABLES or which not in _KERNELS or d not in ("64", "128") or name.count("/") != 2:
        raise ValueError(f"tile key {name!r}: expected TABLE/KERNEL/HEAD_DIM_CLASS with TABLE one of "
                         f"{', '.join(_TABLES)}, KERNEL one of {', '.join(_KERNELS)}, HEAD_DIM_CLASS 64 or 128")
    return table, which, int(d)


def _check_tile(name, tile):
    """A tile the kernels can launch: four positive integers, the blocks powers of two >= 16 (tl.dot's
    least), one block a multiple of the other the way the kernel's causal loops need."""
    which = _tile_key(name)[1]
    if not (isinstance(tile, (list, tuple)) and len(tile) == 4
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in tile)):
        raise ValueError(f"tile {name}={tile!r}: expected [BLOCK_M, BLOCK_N, num_warps, num_stages], positive integers")
    bm, bn = tile[:2]
    if any(b < 16 or b & (b - 1) for b in (bm, bn)):
        raise ValueError(f"tile {name}={list(tile)}: BLOCK_M and BLOCK_N must be powers of two >= 16")
    if (which == "dkdv" and bn % bm) or (which != "dkdv" and bm % bn):
        big, small = ("BLOCK_N", "BLOCK_M") if which == "dkdv" else ("BLOCK_M", "BLOCK_N")
        raise ValueError(f"tile {name}={list(tile)}: the {which} kernel needs {big} to be a multiple of {small}")
    return tuple(tile)


def default_tiles(device):
    """The tiles a run on `device` launches when nothing is pinned: the first entry of every list
    of the tables its inputs may use (the 16-bit one of its architecture, and fp32's), as
    {"table/kernel/head-dim class": [BLOCK_M, BLOCK_N, num_warps, num_stages]}."""
    names = (_table_name(torch.bfloat16, device), "fp32")
    return {f"{name}/{which}/{d}": list(tiles[0])
            for name in names for (which, d), tiles in _TABLES[name].items()}


def pin_tiles(tiles):
    """Launch exactly these tiles from now on, whatever the table and the autotuner would choose:
    {"table/kernel/head-dim class": [BLOCK_M, BLOCK_N, num_warps, num_stages]} (default_tiles'
    form), replacing whatever was pinned before; {} unpins. Under the interpreter only the blocks
    matter. Checked first: a bad entry is a ValueError naming it, and nothing changes."""
    checked = {_tile_key(name): _check_tile(name, tile) for name, tile in tiles.items()}
    _PINNED.clear()
    _PINNED.update(checked)


def pinned_tiles():
    """What pin_tiles set, in its form."""
    return {f"{t}/{w}/{d}": list(tile) for (t, w, d), tile in _PINNED.items()}


@contextlib.contextmanager
def tiles_pinned(tiles):
    """pin_tiles for the duration of a with block, then whatever was pinned before."""
    before = pinned_tiles()
    pin_tiles(tiles)
    try:
        yield
    finally:
        pin_tiles(before)


def _pick(which, dtype, head_dim, device):
    """The kernel to launch and the launch parameters it is not given by the autotuner: a pinned
    tile, else (under the interpreter) INTERPRET_BLOCKS, else the autotuner if it is on, else the
    first tile of the table's list."""
    name, d = _table_name(dtype, device), _tile_class(head_dim)
    tile = _PINNED.get((name, which, d))
    if tile is None and INTERPRET:
        tile = tuple(INTERPRET_BLOCKS[which]) + (4, 1)
    if tile is None and AUTOTUNE:
        return _TUNED[name, which, d], {}
    bm, bn, warps, stages = tile or _TABLES[name][which, d][0]
    if INTERPRET:   # the interpreter runs a program as one thread: warps and stages mean nothing
        return _KERNELS[which], {"BLOCK_M": bm, "BLOCK_N": bn}
    return _KERNELS[which], {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}


def probe_length():
    """The sequence length attention.check_kernel probes at: two blocks of the largest tile that
    can launch here (any entry of any table on a GPU, INTERPRET_BLOCKS under the interpreter), so
    that for every tile the unmasked loop below the diagonal runs as well as the masked diagonal
    block. With today's tables (largest 128) that is 256, the autotuner's shortest T bucket."""
    tiles = INTERPRET_BLOCKS.values() if INTERPRET else [
        tile[:2] for table in _TABLES.values() for entries in table.values() for tile in entries]
    return 2 * max(max(tile) for tile in tiles)


def _t_bucket(T):
    for bucket in (256, 1024, 4096):
        if T <= bucket:
            return bucket
    return 16384


def _p_int(p):
    return int(p) if float(p).is_integer() and 1 <= p <= MAX_INT_POWER else 0


def _dot_precision(dtype):
    # fp32 inputs are matched to the fp32 reference: FP32_DOT_PRECISION, not plain tf32.
    # "tf32" is ignored by 16-bit dots; it also selects the fast log2 (see _log2).
    return FP32_DOT_PRECISION if dtype == torch.float32 else "tf32"


def _logmax(phi, normalised):
    """Whether the rows subtract their largest log-weight: exp, and l1-normalised sigmoid."""
    return normalised and phi in ("sigmoid", "exp")


def _n_stats(phi, normalised, reweighted):
    """Per-row fp32 statistics the forward saves for the backward (see the module docstring)."""
    return (6 if reweighted else int(normalised)) + int(_logmax(phi, normalised))


def _scales(q, k, phi, fixed_length):
    """‖q_i‖, ‖k_j‖ and the per-row / per-key score scales, fp32, (B, H, T) each, once per head
    (the kernels only load them; computed per score tile, the log2 and divisions were a fifth of
    the backward's instructions). With i 1-indexed:
      softplus: ρ_i = ln(d)·log2(i)/max(‖q_i‖, ε), κ_j = 1/max(‖k_j‖, ε) (softplus_fixed: log2 of
                the fixed length in place of log2(i))
      sigmoid:  ρ = log2(e)/√d, β_i = −log2(i)      relu: ρ_i = 1/(√d·i)      exp: ρ = log2(e)/√d
    Unused ones are ρ itself (never loaded)."""
    B, H, T, D = q.shape
    i = torch.arange(1, T + 1, device=q.device, dtype=torch.float32)
    if phi in ("softplus", "softplus_fixed"):
        nq = torch.linalg.vector_norm(q, dim=-1, dtype=torch.float32).contiguous()
        nk = torch.linalg.vector_norm(k, dim=-1, dtype=torch.float32).contiguous()
        log2_i = torch.log2(i) if phi == "softplus" else torch.full_like(i, math.log2(fixed_length))
        rho = (math.log(D) * log2_i) / nq.clamp_min(NORM_EPS)
        kappa = 1.0 / nk.clamp_min(NORM_EPS)
        return nq, nk, rho, kappa, rho
    if phi == "relu":
        rho = 1.0 / (math.sqrt(D) * i)
    else:
        rho = torch.full_like(i, math.log2(math.e) / math.sqrt(D))
    rho = rho.expand(B, H, T).contiguous()
    beta = (-torch.log2(i)).expand(B, H, T).contiguous() if phi == "sigmoid" else rho
    return rho, rho, rho, rho, beta


def _identity(kernel):
    return kernel


def _on_q_device(launch):
    """Triton launches on the *current* CUDA device, not on the one its pointers live on: from a
    process whose current device is cuda:0, tensors on cuda:1 (eval_length.py --device cuda:1)
    would be read by a kernel running on GPU 0. _forward and _backward (every launch of this
    file) run with q's device made current."""
    @functools.wraps(launch)
    def on_q_device(q, *args, **kwargs):
        with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
            return launch(q, *args, **kwargs)
    return on_q_device


def _dense(*side):
    """The per-row side tensors (norms, ρ, κ, β, stats, D/E, U) are indexed without strides, as
    dense (B, H, ...) rows: bh·T + i. Eager mode makes them so; stats and U come back to the
    backward from outside (autograd, or a torch.compile graph whose layout Inductor chose), so
    every side tensor is made dense here: a no-op where it is, one copy of a small per-row tensor
    where it is not. Passing their strides instead would add address arithmetic to every kernel
    for a layout eager mode never produces. (Under torch.compile, Inductor keeps the layout
    traced here: its default for user Triton kernels, needs_fixed_stride_order.)"""
    return tuple(t.contiguous() for t in side)


@_on_q_device
def _forward(q, k, v, phi, normalised, reweighted, p, fixed_length, need_grad, wrap=_identity):
    """Launch the forward. Returns (out, stats, u); stats/u are what the backward needs."""
    B, H, T, D = q.shape
    store_u = reweighted and need_grad
    rho, kappa, beta = _dense(*_scales(q, k, phi, fixed_length)[2:])
    n_stats = _n_stats(phi, normalised, reweighted)
    out = torch.empty_like(q, dtype=v.dtype)   # q's memory layout, v's dtype
    stats = torch.empty((B, H, max(n_stats, 1), T), device=q.device, dtype=torch.float32)
    u = torch.empty((B, H, T, D) if store_u else (1,), device=q.device, dtype=torch.float32)
    kernel, meta = _pick("fwd", q.dtype, D, q.device)

    def grid(META):
        return (triton.cdiv(T, META["BLOCK_M"]), B * H)

    wrap(kernel)[grid](
        q, k, v, rho, kappa, beta, out, stats, u,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        H, T, float(p), _t_bucket(T),
        HEAD_DIM=D, PHI=PHI_IDS[phi], NORM=normalised, RW=reweighted, NSTATS=n_stats, P_INT=_p_int(p),
        STORE_U=store_u, DOT_PREC=_dot_precision(q.dtype), **meta)
    return out, stats, u


@_on_q_device
def _backward(q, k, v, out, stats, u, dout, phi, normalised, reweighted, p, fixed_length, wrap=_identity):
    """Launch the backward kernels. Returns (dq, dk, dv) in the inputs' dtypes and layouts."""
    B, H, T, D = q.shape
    n_stats = _n_stats(phi, normalised, reweighted)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    nq, nk, rho, kappa, beta, stats, u = _dense(*_scales(q, k, phi, fixed_length), stats, u)
    de = torch.empty((B, H, 2, T), device=q.device, dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if normalised:   # D = dO·y (and E): without normalisation dL/dw is dP alone
        pre_block = 16 if INTERPRET else 64
        wrap(_bwd_pre_kernel)[(triton.cdiv(T, pre_block), B * H)](
            out, dout, u, stats, de,
            out.stride(0), out.stride(1), out.stride(2), dout.stride(0), dout.stride(1), dout.stride(2),
            H, T, HEAD_DIM=D, RW=reweighted, NSTATS=n_stats, BLOCK_M=pre_block)

    common = dict(HEAD_DIM=D, PHI=PHI_IDS[phi], NORM=normalised, RW=reweighted, NSTATS=n_stats,
                  P_INT=_p_int(p), DOT_PREC=_dot_precision(q.dtype), DS_F32=q.dtype == torch.float16)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2), dout.stride(0), dout.stride(1), dout.stride(2))
    kernel, meta = _pick("dkdv", q.dtype, D, q.device)

    def grid_n(META):
        return (triton.cdiv(T, META["BLOCK_N"]), B * H)

    wrap(kernel)[grid_n](
        q, k, v, nq, nk, rho, kappa, beta, dout, stats, de, dk, dv, *strides,
        dk.stride(0), dk.stride(1), dk.stride(2), dv.stride(0), dv.stride(1), dv.stride(2),
        H, T, float(p), _t_bucket(T), **common, **meta)

    kernel, meta = _pick("dq", q.dtype, D, q.device)

    def grid_m(META):
        return (triton.cdiv(T, META["BLOCK_M"]), B * H)

    wrap(kernel)[grid_m](
        q, k, v, nq, nk, rho, kappa, beta, dout, stats, de, dq, *strides,
        dq.stride(0), dq.stride(1), dq.stride(2),
        H, T, float(p), _t_bucket(T), **common, **meta)
    return dq, dk, dv


# ----------------------------------------------------------------------------- autograd / ops

def _op_kind():
    forced = env_choice("LSSA_TRITON_OP", ("auto", "triton_op", "custom_op", "function"))
    if forced != "auto":
        return forced
    if hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton"):
        return "triton_op"
    if hasattr(torch.library, "custom_op"):
        return "custom_op"
    return "function"


OP_KIND = _op_kind()


def _setup_context(ctx, inputs, output):
    q, k, v, phi, normalised, reweighted, p, fixed_length, _ = inputs
    out, stats, u = output
    ctx.save_for_backward(q, k, v, out, stats, u)
    ctx.recipe = (phi, normalised, reweighted, p, fixed_length)
    # stats and u are internal: nothing downstream uses them, so their gradients are None.
    # Left on, autograd would first fill an fp32 zero tensor of u's full (B, H, T, D) shape
    # for every re-weighted layer's backward (~100 MB a layer for the 124M model at B = 32).
    ctx.set_materialize_grads(False)


def _grad(ctx, dout, *_unused):
    if dout is None:  # the output itself was not used: no gradient to propagate
        return (None,) * 9
    q, k, v, out, stats, u = ctx.saved_tensors
    dq, dk, dv = _bwd_op(q, k, v, out, stats, u, dout, *ctx.recipe)
    return (dq, dk, dv) + (None,) * 6


if OP_KIND == "function":
    def _bwd_op(q, k, v, out, stats, u, dout, phi, normalised, reweighted, p, fixed_length):
        return _backward(q, k, v, out, stats, u, dout, phi, normalised, reweighted, p, fixed_length)

    class _Attention(torch.autograd.Function):
        @staticmethod
        def forward(q, k, v, phi, normalised, reweighted, p, fixed_length, need_grad):
            return _forward(q, k, v, phi, normalised, reweighted, p, fixed_length, need_grad)

        setup_context = staticmethod(_setup_context)
        backward = staticmethod(_grad)

    def _fwd_op(q, k, v, phi, normalised, reweighted, p, fixed_length, need_grad):
        return _Attention.apply(q, k, v, phi, normalised, reweighted, p, fixed_length, need_grad)
else:
    if OP_KIND == "triton_op":
        _define, _wrap = torch.library.triton_op, torch.library.wrap_triton
    else:
        _define, _wrap = torch.library.custom_op, _identity

    @_define("lssa_kernels::attention_fwd", mutates_args=())
    def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, phi: str, normalised: bool,
                reweighted: bool, p: float, fixed_length: int,
                need_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _forward(q, k, v, phi, normalised, reweighted, p, fixed_length, need_grad, _wrap)

    @_define("lssa_kernels::attention_bwd", mutates_args=())
    def _bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                stats: torch.Tensor, u: torch.Tensor, dout: torch.Tensor, phi: str, normalised: bool,
                reweighted: bool, p: float, fixed_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _backward(q, k, v, out, stats, u, dout, phi, normalised, reweighted, p, fixed_length, _wrap)

    if OP_KIND == "custom_op":  # triton_op derives its fake (meta) implementation by itself
        @_fwd_op.register_fake
        def _(q, k, v, phi, normalised, reweighted, p, fixed_length, need_grad):
            B, H, T, D = q.shape
            u_shape = (B, H, T, D) if reweighted and need_grad else (1,)
            return (torch.empty_like(q, dtype=v.dtype),
                    q.new_empty((B, H, max(_n_stats(phi, normalised, reweighted), 1), T), dtype=torch.float32),
                    q.new_empty(u_shape, dtype=torch.float32))

        @_bwd_op.register_fake
        def _(q, k, v, out, stats, u, dout, phi, normalised, reweighted, p, fixed_length):
            return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    _fwd_op.register_autograd(_grad, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public API

def unsupported_reason(q, k, v, recipe):
    """Why the fused kernel cannot run this recipe (attention.RECIPES: positive weights,
    l1-normalise, re-weight) on these inputs, or None when it can."""
    phi, normalised, reweighted = recipe
    if phi not in PHI_IDS:
        return f"no fused kernel for positive weights {phi!r} (only {', '.join(PHI_IDS)})"
    if reweighted and not normalised:
        return "the re-weighting needs l1-normalised rows (its fallback is the normalised row)"
    if not all(t.is_cuda for t in (q, k, v)):
        if not (INTERPRET and all(t.device.type == "cpu" for t in (q, k, v))):
            return ("q, k, v are not all CUDA tensors (CPU tensors need Triton's interpreter, "
                    "TRITON_INTERPRET=1 set before triton is imported)")
    if len({t.device for t in (q, k, v)}) != 1:
        return "q, k, v are on different devices"
    if q.dim() != 4 or q.shape != k.shape or q.shape[:-1] != v.shape[:-1] or v.shape[-1] != q.shape[-1]:
        return f"expected q, k, v of one shape (B, n_head, T, head_dim), got {tuple(q.shape)}, " \
               f"{tuple(k.shape)}, {tuple(v.shape)}"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return f"head_dim {q.shape[-1]} is not supported (supported: {SUPPORTED_HEAD_DIMS})"
    if any(t.dtype not in SUPPORTED_DTYPES for t in (q, k, v)):
        return f"dtypes {q.dtype}, {k.dtype}, {v.dtype}: the kernel takes float16, bfloat16 or float32"
    B, H, T, _ = q.shape
    if B * H * T == 0:
        return "empty input"
    if B * H > MAX_GRID_Y:
        return f"batch x heads = {B * H} exceeds the launch grid limit {MAX_GRID_Y}"
    return None


def lssa_attention(q, k, v, recipe, p=15.0, fixed_length=0):
    """Fused causal attention of one recipe of attention.RECIPES, (positive weights,
    l1-normalise, re-weight), e.g. ("softplus", True, True) for lssar. q, k, v: (B, n_head, T,
    head_dim) after RoPE (q, k raw: lssa's QK-norm is part of the op). fixed_length: the
    constant length of "softplus_fixed" (attention.FIXED_LENGTH). Returns (B, n_head, T,
    head_dim) in v's dtype. Differentiable in q, k, v. See `unsupported_reason` for what is
    supported."""
    phi, normalised, reweighted = recipe
    reason = unsupported_reason(q, k, v, recipe)
    if reason is not None:
        raise RuntimeError(f"the fused {phi} kernel cannot run: {reason}")
    if phi == "softplus_fixed" and not fixed_length >= 2:
        raise ValueError(f"softplus_fixed needs its constant length, an integer >= 2; got {fixed_length!r}")
    out_dtype = v.dtype
    if not (q.dtype == k.dtype == v.dtype):
        dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    need_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    out, _, _ = _fwd_op(q, k, v, phi, bool(normalised), bool(reweighted), float(p), int(fixed_length), need_grad)
    return out.to(out_dtype)
