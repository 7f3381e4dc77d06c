"""
Causal attention: the one place where the attention types differ.

For one head, with q, k, v of shape (T, d) after RoPE, query row i = 1..T (1-indexed),
n_i = i visible keys and a causal mask j <= i:

  softmax  a_ij = softmax_j(q_i·k_j / sqrt(d))                        Vaswani et al. 2017
  lssa     w_ij = softplus(ln(d)·ln(n_i)·q̂_i·k̂_j),  a_ij = w_ij / Σ_j w_ij
           (q̂, k̂: l2-normalised; no 1/sqrt(d))                       Gao et al. 2025
  lssar    x_ij = relu(n_i·a_ij − o_i)^p,  a'_ij = x_ij / Σ_j x_ij,
           o_i = 0 for i <= 3 and 1 after                             Gao et al. 2025

  y_i = Σ_j a_ij v_j

and the paper's baselines and ablations (the RECIPES table below): sigmoid, relu, ssmax,
softmax_reweight, sigmoid_l1_reweight, relu_l1, softplus_l1. Every type is three choices: how a
score becomes a positive weight, whether rows are l1-normalised, whether lssar's re-weighting
follows.

The exact definitions and their numerical traps are in README, "The maths". The
plain-PyTorch code in this file is the *reference*: fast kernels must match it, forward and
gradient, and the tests hold them to it.
"""
import math
import warnings

import torch
import torch.nn.functional as F

try:
    # the positive-weight functions and head dims the fused kernels implement
    from kernels import KERNEL_PHIS, SUPPORTED_HEAD_DIMS, EnvError
except ImportError:  # this file alone, in an exported Hugging Face model folder (hf_lssa.py): no kernels there
    KERNEL_PHIS, SUPPORTED_HEAD_DIMS = (), ()

    class EnvError(ValueError):
        pass

# type: (positive weights from scores, l1-normalise rows, re-weight)       source
RECIPES = {
    "softmax": ("exp", True, False),              # exp(q·k/√d)                  Vaswani et al. 2017
    "lssa": ("softplus", True, False),            # softplus(ln d·ln n·q̂·k̂)     Gao et al. 2025
    "lssar": ("softplus", True, True),            # lssa, re-weighted            Gao et al. 2025
    "sigmoid": ("sigmoid", False, False),         # σ(q·k/√d − ln n)             Ramapuram et al. 2024
    "relu": ("relu", False, False),               # relu(q·k/√d) / n             Wortsman et al. 2023
    "ssmax": ("exp", True, False),                # exp(s_h·ln n·q·k/√d)         Nakanishi 2025
    "softmax_reweight": ("exp", True, True),      # softmax, re-weighted         Gao et al. 2025 (ablation)
    "sigmoid_l1_reweight": ("sigmoid", True, True),  # sigmoid, l1, re-weighted  Gao et al. 2025 (ablation)
    "relu_l1": ("relu", True, False),             # relu(q·k/√d), l1 ("ReLU as φ")  Gao et al. 2025 (ablation)
    "softplus_l1": ("softplus_fixed", True, False),  # lssa without its length scale:
                                                  # softplus(ln d·ln 1024·q̂·k̂)  Gao et al. 2025 (ablation)
}
ATTENTION_TYPES = tuple(RECIPES)
REWEIGHTED_TYPES = tuple(k for k, (_, _, rw) in RECIPES.items() if rw)
# softmax and ssmax (a per-row rescaled softmax) run on SDPA's kernels; every other type on the
# fused kernel family of kernels/lssa_triton.py, which follows the recipe.
SDPA_TYPES = ("softmax", "ssmax")
KERNEL_TYPES = tuple(k for k, (phi, _, _) in RECIPES.items() if phi in KERNEL_PHIS and k not in SDPA_TYPES)
BACKENDS = ("auto", "reference", "kernel")
# softplus_l1's constant in place of lssa's ln(n): ln(FIXED_LENGTH), the paper's training length,
# so that at the last row of a 1024-token training sequence both types have the same scale and
# the ablation changes only how the scale depends on the row (not at all), not its size.
FIXED_LENGTH = 1024

# Inference-only chunking: keep each (rows x keys) score block under this many elements,
# so that 16x-context evaluation never holds a T x T matrix (16384^2 x 12 heads x 4 bytes
# is ~13 GB per layer). About ten fp32 temporaries of this size live at once: ~0.3 GB on the
# CPU; a GPU gets 16x larger blocks (~5 GB), or thousands of small ones would leave it idle.
CHUNK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 27}


def check_attention_type(kind):
    if kind not in ATTENTION_TYPES:
        raise ValueError(
            f"unknown attention type {kind!r}; valid types are: {', '.join(ATTENTION_TYPES)}")


def check_reweight_p(p):
    # p < 1 would flatten rather than sharpen, and relu(.)^p has an infinite slope at 0
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 1):
        raise ValueError(f"reweight_p must be a finite number >= 1 (the paper uses 3 and 15), got {p!r}")


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid backends are: {', '.join(BACKENDS)}")


def describe(kind, p):
    """A type's name as results show it: "lssar p=15", "softmax"."""
    return f"{kind} p={p:g}" if kind in REWEIGHTED_TYPES else kind


def reweight(w, a, n, p):
    """lssar's second stage from the row's positive weights w (masked entries 0), its
    l1-normalised weights a = w / Σw and its visible-key counts n (rows x 1).

    relu(n·a − 1)^p is computed in the equivalent form relu(w − τ)^p with τ = Σw / n (exact,
    because the row is renormalised): n·a − 1 overflows fp16 beyond 2.09 once raised to the
    15th power. For the same reason the row is divided by its maximum before the power;
    that too cancels in the renormalisation, so the maximum may be detached. The threshold
    τ itself is *not* detached: it depends on every score of the row and the gradient must
    flow through it.
    """
    offset = (n > 3).to(w.dtype)                      # o_i = 0 for the first three rows
    tau = offset * w.sum(-1, keepdim=True) / n
    r = F.relu(w - tau)                               # masked entries: relu(0 − τ) = 0
    tiny = torch.finfo(w.dtype).tiny
    row_max = r.amax(-1, keepdim=True).detach()
    x = (r / row_max.clamp_min(tiny)).pow(p)
    x_sum = x.sum(-1, keepdim=True)
    # A row with every weight at or below uniform has no defined answer in the paper:
    # we fall back to its lssa weights rather than divide by zero.
    return torch.where(x_sum > 0, x / x_sum.clamp_min(tiny), a)


def positive_weights(q, k, kind, n, visible, head_scale=None):
    """The un-normalised weights w_ij >= 0 of a type (0 where masked), in q's dtype."""
    d = q.size(-1)
    if RECIPES[kind][0].startswith("softplus"):
        # QK-norm, a length scale that grows with the row's key count (softplus_fixed: a constant
        # one), softplus, and a multiplicative 0/1 mask (the re-weighting's threshold needs
        # masked w exactly 0).
        qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        length = torch.log(n) if RECIPES[kind][0] == "softplus" else math.log(FIXED_LENGTH)
        s = math.log(d) * length * (qn @ kn.transpose(-2, -1))
        return torch.where(visible, F.softplus(s), 0.0)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(d)
    if RECIPES[kind][0] == "exp":
        if kind == "ssmax":  # a learned per-head temperature that grows with ln n
            s = s * head_scale.to(s.dtype)[:, None, None] * torch.log(n)
        s = s.masked_fill(~visible, float("-inf"))
        return torch.exp(s - s.amax(-1, keepdim=True))  # every row sees its diagonal: max is finite
    if RECIPES[kind][0] == "sigmoid":
        # log σ(x) = −softplus(−x): exact far below the point (about −88 in fp32) where σ itself
        # underflows to 0. A row that is l1-normalised afterwards may be scaled by any constant:
        # dividing by its largest weight (subtracting the max log-weight, as softmax does; the
        # max may be detached) keeps its largest entry at 1, so no input gives 0/0.
        log_w = (-F.softplus(-(s - torch.log(n)))).masked_fill(~visible, float("-inf"))
        if RECIPES[kind][1]:
            log_w = log_w - log_w.amax(-1, keepdim=True).detach()
        return torch.exp(log_w)
    return torch.where(visible, F.relu(s) / n, 0.0)   # relu


def attention_weights(q, k, kind, p=15.0, q_start=0, head_scale=None, visible=None):
    """The attention matrix (B, H, Tq, Tk) of query rows q_start .. q_start+Tq-1 (0-indexed
    positions) against keys 0 .. Tk-1, computed in fp32 (float64 stays float64).
    head_scale: ssmax's per-head s_h, shape (H,).

    visible: a boolean mask broadcastable to (B, H, Tq, Tk), True where a query sees a key,
    in place of the causal one (padding: hf_lssa.py). n_i is then the row's number of visible
    keys; a row that sees none gets zero weights (never NaN)."""
    check_attention_type(kind)
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k = q.to(dtype), k.to(dtype)
    Tq, Tk = q.size(-2), k.size(-2)
    if visible is None:
        n = torch.arange(q_start + 1, q_start + Tq + 1, device=q.device, dtype=dtype)[:, None]
        visible = torch.arange(1, Tk + 1, device=q.device, dtype=dtype)[None, :] <= n  # (Tq, Tk)
    else:
        n = visible.sum(-1, keepdim=True).to(dtype)
        if not bool((n > 0).all()):   # a fully masked row: let it see everything, then zero it
            empty = n == 0
            a = attention_weights(q, k, kind, p, head_scale=head_scale, visible=visible | empty)
            return a.masked_fill(empty, 0.0)
    _, normalised, reweighted = RECIPES[kind]
    w = positive_weights(q, k, kind, n, visible, head_scale)
    if normalised:   # a relu row may have no positive weight: it gets zeros, not 0/0
        z = w.sum(-1, keepdim=True)
        a = w / torch.where(z > 0, z, 1.0)
    else:
        a = w
    return reweight(w, a, n, p) if reweighted else a


def reference_attention(q, k, v, kind, p=15.0, chunk_elements=None, head_scale=None, visible=None):
    """Plain-PyTorch causal attention. With autograd it materialises the T x T weights (that
    is what the fast kernels replace); without, it walks over blocks of query rows, each
    against only the keys it can see, so memory stays bounded at any length.
    visible: a boolean mask (B or 1, 1 or H, Tq, Tk) in place of the causal one, for queries
    and keys of different lengths or padding (attention_weights)."""
    check_attention_type(kind)
    if kind == "softmax" and visible is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if kind == "ssmax" and visible is None:
        # s_h·ln(n_i) only rescales row i's scores: fold it into q and use SDPA's kernels
        dtype = torch.promote_types(q.dtype, torch.float32)
        n = torch.arange(1, q.size(-2) + 1, device=q.device, dtype=dtype)
        scale = head_scale.to(dtype)[:, None, None] * torch.log(n)[:, None]
        return F.scaled_dot_product_attention((q.to(dtype) * scale).to(q.dtype), k, v, is_causal=True)
    # Keep the reference exact under bf16 autocast: the scores feed softplus and a 15th power.
    with torch.autocast(device_type=q.device.type, enabled=False):
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        B, H, T, _ = q.shape
        Tk = k.size(-2)
        chunk_elements = chunk_elements or CHUNK_ELEMENTS.get(q.device.type, CHUNK_ELEMENTS["cpu"])
        rows = T if needs_grad else max(1, chunk_elements // max(1, B * H * Tk))
        out = []
        for r0 in range(0, T, rows):
            r1 = min(T, r0 + rows)
            if visible is None:   # causal: rows r0..r1 see keys 0..r1 at most
                a = attention_weights(q[:, :, r0:r1], k[:, :, :r1], kind, p, q_start=r0)
                out.append(a @ v[:, :, :r1].to(a.dtype))
            else:
                a = attention_weights(q[:, :, r0:r1], k, kind, p, head_scale=head_scale, visible=visible[..., r0:r1, :])
                out.append(a @ v.to(a.dtype))
        y = out[0] if len(out) == 1 else torch.cat(out, dim=2)
    return y.to(v.dtype)


def kernel_module():
    """kernels.lssa_triton, imported when a fused kernel may run (it needs triton). The import
    sits in a try block because transformers checks a model folder's imports outside try blocks
    against the installed packages, and an exported folder (hf_lssa.py) carries this file
    without kernels/."""
    try:
        from kernels import lssa_triton
    except ImportError as e:
        raise ImportError(f"the fused kernels need this repository's kernels/ package and triton: {e}") from e
    return lssa_triton


# (kind, head_dim) pairs check_head_dim has warned about in this process
_HEAD_DIM_WARNED = set()


def check_head_dim(kind, head_dim, backend="auto"):
    """Warn once per process (for each type and head dim) when a type with a fused kernel gets a
    head dim that kernel has no tile class for: backend="auto" then trains on the reference,
    which holds every T x T weight matrix, where the kernel would hold O(T·d). Called when a
    model is built, so that the memory is not first met as an out-of-memory error at 16K
    tokens. Not padded to the next class: the scales need the true head dim inside the op, 80
    would pay for 128, and 256 has no larger class to pad to."""
    if backend != "auto" or kind not in KERNEL_TYPES or head_dim in SUPPORTED_HEAD_DIMS:
        return
    if (kind, head_dim) in _HEAD_DIM_WARNED:
        return
    _HEAD_DIM_WARNED.add((kind, head_dim))
    warnings.warn(f"head_dim {head_dim} has no fused {kind} kernel (supported head dims: "
                  f"{', '.join(map(str, SUPPORTED_HEAD_DIMS))}): {kind} will run on the reference "
                  f"attention, whose T x T weights take O(T^2) memory in training (4·T^2 bytes per "
                  f"head and sequence in fp32: 1 GiB at T = 16384). Choose n_embd / n_head among "
                  f"the supported head dims for the fused kernel.", RuntimeWarning, stacklevel=2)


# backend="auto" on a GPU: (kind, p, device, dtype, head_dim) -> None where the fused kernel
# runs, else why it does not. Filled by check_kernel, the first time each key is seen.
_KERNEL_STATUS = {}


def _fallback_warning(kind, reason):
    warnings.warn(f"the fused {kind} kernel cannot run here: {reason}. Using the reference {kind} "
                  f"attention instead (slower; O(T^2) memory in training). Pass "
                  f"--attention_backend=reference to choose it explicitly, or fix the Triton install.",
                  RuntimeWarning, stacklevel=3)


def check_kernel(kind, p, device, dtype, head_dim):
    """For backend="auto": None when the fused kernel runs on this device, dtype and head dim,
    else the reason it does not. The first call for each combination launches the kernel's
    forward and backward once on a small input (compiling them) and waits for them to finish,
    so an unsupported GPU, a Triton that cannot compile them or a kernel that faults is found
    before training depends on it; such a failure is warned about once and remembered (inputs
    the kernel does not cover, a head dim of 48 say, are not a failure: "auto" takes the
    reference for them silently; check_head_dim warns about those when the model is built).
    The probe is two blocks of the largest tile long (lssa_triton.probe_length), so the
    unmasked blocks below the diagonal run too. An invalid LSSA_TRITON_* value is an error,
    not a fallback. Inside a torch.compile trace nothing can be launched: an unchecked
    combination is taken to work (train.py checks before compiling)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:   # "cuda" and "cuda:0" are one device
        device = torch.device("cuda", torch.cuda.current_device())
    key = (kind, float(p), str(device), dtype, head_dim)
    if key in _KERNEL_STATUS:
        return _KERNEL_STATUS[key]
    if torch.compiler.is_compiling():
        return None
    try:
        lssa_triton = kernel_module()
        T = lssa_triton.probe_length()
        with torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
            x = [torch.randn(1, 1, T, head_dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
            reason = lssa_triton.unsupported_reason(*x, RECIPES[kind])
            if reason is None:
                _fused(lssa_triton, *x, kind, p).float().sum().backward()
                # launches are asynchronous: a fault surfaces at the next sync, which must be this
                # one, inside the try (torch.cuda.synchronize; torch.cpu's, under the interpreter)
                getattr(torch, device.type).synchronize(device)
    except EnvError:   # a mistyped LSSA_TRITON_* value: the user's to fix, not a reason to fall back
        raise
    except Exception as e:  # no triton, a compile error, no kernel image for this GPU, out of resources...
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        _fallback_warning(kind, reason)
    _KERNEL_STATUS[key] = reason
    return reason


def causal_attention(q, k, v, kind, p=15.0, backend="auto", head_scale=None):
    """Causal self-attention of type `kind` (one of ATTENTION_TYPES).

    q, k, v: (B, n_head, T, head_dim), RoPE already applied. Returns (B, n_head, T, head_dim)
    in v's dtype. `p` is the re-weighting power (lssar and the *_reweight ablations);
    `head_scale` is ssmax's learned per-head s_h, shape (n_head,). `backend`: "auto" uses the
    fused kernel when one applies (every type of KERNEL_TYPES on CUDA tensors, head_dim
    16/32/64/128, fp16/bf16/fp32: kernels/lssa_triton.py) and the reference otherwise; where the kernel
    should apply but cannot be imported, compiled or launched, it warns once (check_kernel)
    and uses the reference. "reference" forces the reference; "kernel" requires the kernel
    and fails loudly where it cannot run (it also accepts CPU tensors under Triton's
    interpreter, TRITON_INTERPRET=1, for tests). softmax (and ssmax, a per-row rescaled
    softmax) always run on SDPA.
    """
    check_attention_type(kind)
    check_backend(backend)
    if kind in REWEIGHTED_TYPES:
        check_reweight_p(p)
    if kind == "ssmax" and (head_scale is None or head_scale.shape != (q.size(1),)):
        raise ValueError(f"ssmax needs head_scale, the learned per-head s_h of shape ({q.size(1)},)")
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1] or q.dim() != 4:
        raise ValueError(f"expected q, k, v of shape (B, n_head, T, head_dim); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if kind not in KERNEL_TYPES or backend == "reference":
        return reference_attention(q, k, v, kind, p, head_scale=head_scale)
    if backend == "auto":
        if q.is_cuda and _auto_kernel_applies(q, k, v, kind, p):
            return _fused(kernel_module(), q, k, v, kind, p)
        return reference_attention(q, k, v, kind, p)
    try:  # backend == "kernel"
        lssa_triton = kernel_module()
    except Exception as e:  # ImportError without triton; anything else is a broken install
        reason = f"the Triton kernel module cannot be imported ({type(e).__name__}: {e})"
    else:
        reason = lssa_triton.unsupported_reason(q, k, v, RECIPES[kind])
        if reason is None:
            return _fused(lssa_triton, q, k, v, kind, p)
    raise RuntimeError(f"the fused {kind} kernel cannot run: {reason}; use backend='auto' or 'reference'")


def _auto_kernel_applies(q, k, v, kind, p):
    """backend="auto" on CUDA tensors: whether to use the fused kernel. Shapes and dtypes it does
    not cover go to the reference silently (that is what "auto" means); a kernel that should
    run here but fails to import, compile or launch goes there with a warning (check_kernel)."""
    if check_kernel(kind, p, q.device, q.dtype, q.size(-1)) is not None:
        return False
    return kernel_module().unsupported_reason(q, k, v, RECIPES[kind]) is None


def _fused(lssa_triton, q, k, v, kind, p):
    """The fused kernel of a type: its recipe, and softplus_fixed's constant length."""
    return lssa_triton.lssa_attention(q, k, v, RECIPES[kind], p, FIXED_LENGTH)
