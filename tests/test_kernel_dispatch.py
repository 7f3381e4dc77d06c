"""Dispatch of the fused kernels that cannot misfire: launches on q's GPU, a probe that runs every
kind of block and waits for it, side tensors made dense whatever layout they arrive in (also under
torch.compile), a warning for head dims without a kernel, validated LSSA_TRITON_* values, and
torch's TF32 flags left as they were by tests and by train.main.

No GPU here: a CUDA tensor on a second GPU is a fake tensor (torch's FakeTensorMode), the launches
and torch.cuda.device are stand-ins that record, and the kernels themselves run under Triton's
interpreter, in a child process or (the `interpreted` fixture) in this one, where attention.py's
dispatch around them (the kernel backend, check_kernel's probe, _auto_kernel_applies, auto's CUDA
branch) is reached by the tests and by mutation testing. What only a GPU can show (that
torch.cuda.device really moves Triton's launch, that a real fault is caught at the probe's
synchronize) is not tested here.
"""
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

import attention
from helpers import optional_module, tiny_args
from model import GPT, config_from_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def L():
    optional_module("triton", "pip install -r requirements-dev.txt")
    from kernels import lssa_triton
    return lssa_triton


def _child(code, **env):
    """Run `code` in a child process with the kernels under Triton's interpreter."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore", **env)
    return subprocess.run([sys.executable, "-c", code, REPO], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


# ----------------------------------------------------------------------------- q's device

def test_every_launch_runs_on_q_device(L, monkeypatch):
    """q on cuda:1 (a fake tensor) while the current device would be cuda:0: the forward's launch
    and the backward's three run inside torch.cuda.device(cuda:1), and the guard is left after."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    current, launches = [], []

    class Guard:   # torch.cuda.device's stand-in: what is current while it is entered
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            current.append(self.device)

        def __exit__(self, *exc):
            current.pop()

    class Launch:   # a kernel's stand-in: kernel[grid](*args) records the current device
        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append(current[-1] if current else "no guard")

    monkeypatch.setattr(torch.cuda, "device", Guard)
    monkeypatch.setattr(L, "_pick", lambda which, dtype, head_dim, device: (None, {}))
    recipe = ("softplus", True, True)
    with FakeTensorMode():
        q, k, v, dout = (torch.randn(2, 3, 40, 64, device="cuda:1") for _ in range(4))
        out, stats, u = L._forward(q, k, v, *recipe, 15.0, 0, True, wrap=lambda kernel: Launch())
        assert launches == [torch.device("cuda:1")] and current == []
        L._backward(q, k, v, out, stats, u, dout, *recipe, 15.0, 0, wrap=lambda kernel: Launch())
    assert launches == [torch.device("cuda:1")] * 4 and current == []


# ----------------------------------------------------------------------------- the probe

class _Probe:
    """attention._fused's stand-in for check_kernel: records the probe's shape and, through a
    custom autograd function, when its forward and backward run; the synchronize stand-in
    records when it runs, or raises what a faulting kernel raises there."""

    def __init__(self, fault=None):
        self.events, self.shapes, self.fault = [], [], fault
        probe = self

        class Op(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v):
                probe.events.append("forward")
                return q * k + v

            @staticmethod
            def backward(ctx, g):
                probe.events.append("backward")
                return g, g, g

        self.op = Op

    def fused(self, lssa_triton, q, k, v, kind, p):
        self.shapes.append(tuple(q.shape))
        return self.op.apply(q, k, v)

    def synchronize(self, device=None):
        self.events.append("synchronize")
        if self.fault:
            raise RuntimeError(self.fault)


@pytest.fixture
def probe(L, monkeypatch):
    def make(fault=None):
        p = _Probe(fault)
        monkeypatch.setattr(attention, "_KERNEL_STATUS", {})
        monkeypatch.setattr(attention, "_fused", p.fused)
        monkeypatch.setattr(L, "unsupported_reason", lambda *args: None)
        monkeypatch.setattr(torch.cpu, "synchronize", p.synchronize)   # the CPU's: device "cpu" below
        return p
    return make


def test_probe_spans_two_of_the_largest_tiles_and_waits(L, probe):
    p = probe()
    assert attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 64) is None
    assert p.events == ["forward", "backward", "synchronize"]   # waits for the backward too
    (B, H, T, d), = p.shapes
    assert (B, H, d) == (1, 1, 64)
    blocks = [b for table in L._TABLES.values() for tiles in table.values() for tile in tiles for b in tile[:2]]
    assert T >= 2 * max(blocks) and max(blocks) >= 128   # today's tables launch 128-row tiles
    assert T <= 256   # and no longer: the autotuner's shortest T bucket, not one training at 1024 uses


def test_probe_follows_the_tables(L, probe, monkeypatch):
    """A table given a 256-row tile makes the probe 512 long: computed, not a constant."""
    monkeypatch.setattr(L, "_TABLES", dict(L._TABLES, extra={("fwd", 64): [(256, 64, 8, 3)]}))
    p = probe()
    attention.check_kernel("lssar", 15.0, "cpu", torch.bfloat16, 64)
    assert p.shapes[0][2] == 512


def test_a_fault_at_the_probe_synchronize_falls_back_with_one_warning(probe):
    """A kernel that faults is only seen when the device is synchronised: inside the probe's try,
    so it is warned about once and the reference is used, not raised in the middle of training."""
    p = probe(fault="CUDA error: an illegal memory access was encountered")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 64)
        again = attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 64)
    assert first == again == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert len(caught) == 1 and "illegal memory access" in str(caught[0].message)
    assert p.events == ["forward", "backward", "synchronize"]   # probed once


def test_an_invalid_env_value_is_raised_not_a_fallback(monkeypatch):
    from kernels import EnvError

    def kernel_module():
        raise EnvError("LSSA_TRITON_FP32_DOT='tf32' is not valid")

    monkeypatch.setattr(attention, "_KERNEL_STATUS", {})
    monkeypatch.setattr(attention, "kernel_module", kernel_module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # and no fallback warning either
        with pytest.raises(EnvError, match="LSSA_TRITON_FP32_DOT"):
            attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 64)


# ----------------------------------------------------------------------------- in this process

@pytest.fixture
def interpreted(monkeypatch):
    """kernels.lssa_triton run by Triton's interpreter in this process, for this test only: the
    child processes above hold the kernels' numerics, these tests attention.py's dispatch around
    them, where a test's stand-ins and mutation testing (which sees only this process) reach it.
    The interpreter must be on when a @triton.jit function is made, so this loads a second copy
    of the module with TRITON_INTERPRET=1 and turns triton.language's own jit helpers (tl.zeros,
    ...; made when triton was imported) into interpreted ones; a plain autograd function
    (LSSA_TRITON_OP=function) keeps the copy out of torch's op registry. All undone after."""
    optional_module("triton", "pip install -r requirements-dev.txt")
    import importlib.util
    import kernels
    from triton.runtime import interpreter
    from triton.runtime.jit import JITFunction
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("LSSA_TRITON_OP", "function")
    for name, module in list(sys.modules.items()):
        if name.startswith("triton.language") and module is not None:
            for attr, value in list(vars(module).items()):
                if isinstance(value, JITFunction):
                    monkeypatch.setattr(module, attr, interpreter.InterpretedFunction(value.fn))
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", interpreter._patch_lang_tensor)  # the copy patches it
    path = os.path.join(os.path.dirname(kernels.__file__), "lssa_triton.py")
    spec = importlib.util.spec_from_file_location("kernels.lssa_triton", path)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.INTERPRET and copy.OP_KIND == "function"
    monkeypatch.setattr(kernels, "lssa_triton", copy, raising=False)
    monkeypatch.setitem(sys.modules, "kernels.lssa_triton", copy)
    monkeypatch.setattr(attention, "_KERNEL_STATUS", {})
    return copy


def _qkv(T=20, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 2, T, d, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def _output_and_grads(q, k, v, kind, p, backend):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = attention.causal_attention(q, k, v, kind, p, backend=backend)
    (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


@pytest.mark.parametrize("kind", attention.KERNEL_TYPES)
def test_kernel_backend_in_this_process_matches_the_reference(interpreted, kind):
    """backend="kernel" hands q, k, v, the type's recipe, p and softplus_l1's fixed length to the
    fused kernel: output and gradients equal the reference's (q, k, v differ, so a swapped or
    dropped argument shows; p = 3 and softplus_l1 so that a lost p or length does), for every fused
    type, so that the host code's per-recipe choices (scales, statistics) run where mutation testing
    sees them (tests/test_kernels.py checks the kernels' numerics more widely, in child processes)."""
    p = 3.0
    q, k, v = _qkv()
    got = _output_and_grads(q, k, v, kind, p, "kernel")
    want = _output_and_grads(q, k, v, kind, p, "reference")
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max(), name


class _Recorder:
    """Wraps the interpreted module's lssa_attention and _backward: what each probe launched."""

    def __init__(self, module, monkeypatch, fail=None):
        self.launched, self.backwards = [], 0
        forward, backward = module.lssa_attention, module._backward

        def lssa_attention(q, k, v, recipe, p=15.0, fixed_length=0):
            self.launched.append((tuple(q.shape), q.dtype, q.device.type, q.requires_grad, recipe, p))
            if fail is not None and fail(q):
                raise RuntimeError(f"simulated: no {q.dtype} kernel here")
            return forward(q, k, v, recipe, p, fixed_length)

        def _backward(*args, **kwargs):
            self.backwards += 1
            return backward(*args, **kwargs)

        monkeypatch.setattr(module, "lssa_attention", lssa_attention)
        monkeypatch.setattr(module, "_backward", _backward)


def test_check_kernel_probes_each_combination_once(interpreted, monkeypatch):
    """The probe runs the real (interpreted) kernel, forward and backward, on (1, 1, probe_length,
    head_dim) inputs of the asked dtype that need a gradient, also when called under no_grad and
    bf16 autocast; once per (type, p, device, dtype, head dim): 15 and 15.0 are one p."""
    rec = _Recorder(interpreted, monkeypatch)
    T = interpreted.probe_length()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 16) is None
    for _ in range(2):
        assert attention.check_kernel("lssa", 15, torch.device("cpu"), torch.float32, 16) is None
    assert attention.check_kernel("lssar", 15.0, "cpu", torch.float32, 16) is None
    assert attention.check_kernel("lssar", 3.0, "cpu", torch.float32, 16) is None
    assert attention.check_kernel("lssa", 15.0, "cpu", torch.bfloat16, 16) is None
    assert attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 32) is None
    lssa, lssar = attention.RECIPES["lssa"], attention.RECIPES["lssar"]
    assert rec.launched == [((1, 1, T, 16), torch.float32, "cpu", True, lssa, 15.0),
                            ((1, 1, T, 16), torch.float32, "cpu", True, lssar, 15.0),
                            ((1, 1, T, 16), torch.float32, "cpu", True, lssar, 3.0),
                            ((1, 1, T, 16), torch.bfloat16, "cpu", True, lssa, 15.0),
                            ((1, 1, T, 32), torch.float32, "cpu", True, lssa, 15.0)]
    assert rec.backwards == 5


def test_check_kernel_failure_reason_warning_and_memory(interpreted, monkeypatch):
    """A kernel whose backward fails: the reason is the exception's type and its first non-empty
    line, cut at 300 characters; one RuntimeWarning names the type, the reason and the flag; the
    verdict is remembered (no second probe, no second warning); an exception without a message
    gives its type alone. A head dim the kernel has no tile for is no failure: its reason, silently."""
    first_line = "simulated: no kernel image is available " + "x" * 400

    def broken(*args, **kwargs):
        raise RuntimeError(f"\n  {first_line}  \nsecond line")

    monkeypatch.setattr(interpreted, "_backward", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = attention.check_kernel("lssar", 15.0, "cpu", torch.float32, 16)
        assert attention.check_kernel("lssar", 15.0, "cpu", torch.float32, 16) == reason
    assert reason == "RuntimeError: " + first_line[:300]
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    assert str(caught[0].message) == (
        f"the fused lssar kernel cannot run here: {reason}. Using the reference lssar attention instead "
        "(slower; O(T^2) memory in training). Pass --attention_backend=reference to choose it explicitly, "
        "or fix the Triton install.")

    monkeypatch.setattr(interpreted, "_backward", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 16) == "RuntimeError: "
        assert attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 48) == (
            f"head_dim 48 is not supported (supported: {interpreted.SUPPORTED_HEAD_DIMS})")
    assert len(caught) == 1


def test_the_fallback_warning_names_the_code_that_asked(interpreted, monkeypatch):
    """The warning points at check_kernel's caller (here this file), not inside attention.py.
    Left out of mutation runs (tools/mutation.sh): each mutmut trampoline adds a stack frame."""
    monkeypatch.setattr(interpreted, "_backward", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("simulated")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 16)
    assert [w.filename for w in caught] == [__file__]


def test_check_kernel_waits_on_the_probed_device(interpreted, monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cpu, "synchronize", lambda device=None: synced.append(device))
    assert attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 16) is None
    assert synced == [torch.device("cpu")]


def test_inside_a_compile_trace_nothing_is_probed_or_remembered(interpreted, monkeypatch):
    rec = _Recorder(interpreted, monkeypatch)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert attention.check_kernel("lssa", 15.0, "cpu", torch.float32, 16) is None
    assert rec.launched == [] and attention._KERNEL_STATUS == {}


def test_cuda_without_an_index_is_the_current_device(monkeypatch):
    """"cuda" and "cuda:N" (N the current device) share one verdict; a CPU device is not renamed.
    torch.cuda.current_device is a stand-in: no GPU needed, nothing launched."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(attention, "_KERNEL_STATUS", {
        ("lssa", 15.0, "cuda:1", torch.bfloat16, 64): "verdict of cuda:1",
        ("lssa", 15.0, "cpu", torch.bfloat16, 64): "verdict of the cpu"})
    assert attention.check_kernel("lssa", 15, "cuda", torch.bfloat16, 64) == "verdict of cuda:1"
    assert attention.check_kernel("lssa", 15, torch.device("cuda"), torch.bfloat16, 64) == "verdict of cuda:1"
    assert attention.check_kernel("lssa", 15, "cpu", torch.bfloat16, 64) == "verdict of the cpu"


def test_auto_kernel_applies_where_the_probe_and_the_inputs_allow(interpreted, monkeypatch):
    """backend="auto"'s test on CUDA tensors (here CPU ones under the interpreter): the kernel
    when this type, p, device, dtype and head dim probe well and the inputs are ones it covers;
    else the reference, warned about only for a failed probe (here the bf16 kernel fails)."""
    rec = _Recorder(interpreted, monkeypatch, fail=lambda q: q.dtype == torch.bfloat16)
    q, k, v = _qkv(T=20, d=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert attention._auto_kernel_applies(q, k, v, "lssar", 3.0)
        assert rec.launched[-1][0][-1] == 16 and rec.launched[-1][-1] == 3.0   # probed at q's head dim, p
        assert not attention._auto_kernel_applies(*_qkv(d=48), "lssar", 3.0)         # no tile for 48
        assert not attention._auto_kernel_applies(q, k, torch.randn(1, 2, 20, 32), "lssar", 3.0)  # v's width
        assert not attention._auto_kernel_applies(q, k[:, :, :9], v, "lssar", 3.0)  # k's length
        assert caught == []
        assert not attention._auto_kernel_applies(*_qkv(dtype=torch.bfloat16), "lssar", 3.0)
    assert len(caught) == 1 and "no torch.bfloat16 kernel" in str(caught[0].message)


class _SaysCuda(torch.Tensor):
    """A CPU tensor whose is_cuda says True: backend="auto"'s CUDA branch without a GPU."""

    @property
    def is_cuda(self):
        return True


def test_auto_backend_on_cuda_tensors_runs_the_kernel_it_asked_about(monkeypatch):
    """On CUDA tensors, "auto" asks _auto_kernel_applies about exactly q, k, v, the type and p,
    and then runs the fused kernel on them (stand-ins record both); if it does not apply, the
    reference."""
    asked, ran = [], []
    applies = [True]
    monkeypatch.setattr(attention, "kernel_module", lambda: "the kernel module")
    monkeypatch.setattr(attention, "_auto_kernel_applies",
                        lambda q, k, v, kind, p: asked.append((q, k, v, kind, p)) or applies[0])
    monkeypatch.setattr(attention, "_fused",
                        lambda module, q, k, v, kind, p: ran.append((module, q, k, v, kind, p)) or "fused output")
    q, k, v = (t.detach().as_subclass(_SaysCuda) for t in _qkv())
    assert attention.causal_attention(q, k, v, "lssar", 3.0) == "fused output"
    assert len(asked) == len(ran) == 1
    assert all(a is b for a, b in zip(asked[0], (q, k, v))) and asked[0][3:] == ("lssar", 3.0)
    assert ran[0][0] == "the kernel module" and all(a is b for a, b in zip(ran[0][1:4], (q, k, v)))
    assert ran[0][4:] == ("lssar", 3.0)
    applies[0] = False
    got = attention.causal_attention(q, k, v, "lssar", 3.0).as_subclass(torch.Tensor)
    plain = [t.as_subclass(torch.Tensor) for t in (q, k, v)]
    assert torch.equal(got, attention.causal_attention(*plain, "lssar", 3.0, backend="reference"))


# ----------------------------------------------------------------------------- side tensors

_LAYOUT_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
import torch
from kernels import lssa_triton as L

g = torch.Generator().manual_seed(0)
for recipe in (("sigmoid", True, True),):   # sigmoid_l1_reweight: every statistic (τ/M ... R, L) and U
    q, k, v, dout = (torch.randn(1, 2, 21, 16, generator=g) for _ in range(4))
    out, stats, u = L._fwd_op(q, k, v, *recipe, 15.0, 0, True)
    want = L._bwd_op(q, k, v, out, stats, u, dout, *recipe, 15.0, 0)
    # the same statistics stored (T, rows) and U (d, T): each handed to the backward as a transposed
    # view, the layout a graph may give them
    stats_t, u_t = stats.transpose(-1, -2).contiguous(), u.transpose(-1, -2).contiguous()

    def backward(q, k, v, out, stats_t, u_t, dout):
        return L._bwd_op(q, k, v, out, stats_t.transpose(-1, -2), u_t.transpose(-1, -2), dout, *recipe, 15.0, 0)

    assert not stats_t.transpose(-1, -2).is_contiguous() and not u_t.transpose(-1, -2).is_contiguous()
    for name, fn in (("eager", backward), ("compiled", torch.compile(backward, backend="aot_eager", fullgraph=True))):
        got = fn(q, k, v, out, stats_t, u_t, dout)
        print(recipe[0], name, "SAME" if all(torch.equal(a, b) for a, b in zip(got, want)) else
              "DIFFERENT " + str(max((a - b).abs().max().item() for a, b in zip(got, want))))
"""


@pytest.mark.slow
def test_side_tensors_of_any_layout_under_torch_compile(L):
    """The backward's statistics and U reach it in a transposed layout, eagerly and from a
    torch.compile graph (aot_eager: the interpreter's kernels run inside the opaque custom op):
    the gradients are bit for bit those of the dense layout. Slow (~10 s: a child process,
    torch.compile's tracing, the interpreter): one small re-weighted case."""
    proc = _child(_LAYOUT_CHILD, LSSA_TRITON_OP="custom_op")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("sigmoid ")]
    assert proc.returncode == 0 and len(lines) == 2, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert all(line.endswith("SAME") for line in lines), lines


# ----------------------------------------------------------------------------- head dims

def _model(n_embd, n_head, **kw):
    return GPT(config_from_preset("tiny", vocab_size=97, block_size=16, n_embd=n_embd, n_head=n_head, **kw))


@pytest.mark.parametrize("head_dim", [80, 96, 256])
def test_head_dim_without_a_kernel_warns_once_when_built(monkeypatch, head_dim):
    from kernels import SUPPORTED_HEAD_DIMS
    monkeypatch.setattr(attention, "_HEAD_DIM_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model(2 * head_dim, 2, attention="lssar")   # two layers
        _model(2 * head_dim, 2, attention="lssar")   # and a second model
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert f"head_dim {head_dim} has no fused lssar kernel" in message and "O(T^2) memory" in message
    assert f"supported head dims: {', '.join(map(str, SUPPORTED_HEAD_DIMS))}" in message


def test_check_head_dim_takes_backend_auto_by_default(monkeypatch):
    monkeypatch.setattr(attention, "_HEAD_DIM_WARNED", set())
    with pytest.warns(RuntimeWarning, match="head_dim 80 has no fused lssar kernel"):
        attention.check_head_dim("lssar", 80)


def test_the_head_dim_warning_names_the_model_that_asked(monkeypatch):
    """It points at model.py, which built the attention. Left out of mutation runs
    (tools/mutation.sh): each mutmut trampoline adds a stack frame."""
    monkeypatch.setattr(attention, "_HEAD_DIM_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model(160, 2, attention="lssar")
    assert [w.filename for w in caught] == [os.path.join(REPO, "model.py")]


def test_no_head_dim_warning_where_nothing_is_lost(monkeypatch):
    monkeypatch.setattr(attention, "_HEAD_DIM_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model(128, 2, attention="lssa")                                    # 64: a kernel
        _model(160, 2, attention="softmax")                                 # SDPA, any head dim
        _model(160, 2, attention="lssa", attention_backend="reference")     # the reference, asked for
        _model(160, 2, attention="lssa", attention_backend="kernel")        # fails loudly when run
    assert not [str(w.message) for w in caught if "head_dim" in str(w.message)]


# ----------------------------------------------------------------------------- LSSA_TRITON_*

def test_env_choice():
    from kernels import EnvError, env_choice
    choices = ("tf32x3", "ieee")
    assert env_choice("LSSA_TRITON_FP32_DOT", choices, {}) == "tf32x3"
    assert env_choice("LSSA_TRITON_FP32_DOT", choices, {"LSSA_TRITON_FP32_DOT": ""}) == "tf32x3"
    assert env_choice("LSSA_TRITON_FP32_DOT", choices, {"LSSA_TRITON_FP32_DOT": "ieee"}) == "ieee"
    with pytest.raises(EnvError, match=r"^LSSA_TRITON_FP32_DOT='tf32' is not valid; set it to one of: "
                                       r"tf32x3, ieee \(or unset it for the default, tf32x3\)$"):
        env_choice("LSSA_TRITON_FP32_DOT", choices, {"LSSA_TRITON_FP32_DOT": "tf32"})


def test_every_lssa_triton_variable_is_validated():
    """Every LSSA_TRITON_* name the repository mentions is read through env_choice (none through
    os.environ directly), and each refuses a wrong value with one line when the kernels load."""
    names = set()
    for root, dirs, files in os.walk(REPO):
        # results/ holds generated records (the mutation report quotes mutants of these names)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (root, d) != (REPO, "results")]
        for f in files:
            if f.endswith((".py", ".md", ".sh")):
                with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                    names |= set(re.findall(r"LSSA_TRITON_[A-Z0-9_]*[A-Z0-9]", fh.read()))
    with open(os.path.join(REPO, "kernels", "lssa_triton.py"), encoding="utf-8") as fh:
        source = fh.read()
    validated = set(re.findall(r'env_choice\("(LSSA_TRITON_\w+)"', source))
    assert names == validated and "LSSA_TRITON_FP32_DOT" in validated, (names, validated)
    assert not re.search(r"environ(\.get)?[\[(]\s*[\"']LSSA_TRITON", source)

    # "false" once meant autotuning on, "tf32" gave fp32 inputs the 16-bit fast paths
    misread = {"LSSA_TRITON_AUTOTUNE": "false", "LSSA_TRITON_FP32_DOT": "tf32"}
    bad = {name: misread.get(name, "bogus") for name in sorted(validated)}
    proc = _child(_BAD_ENV_CHILD, BAD=repr(bad))
    errors = [line for line in proc.stdout.splitlines() if line.startswith(("LSSA_TRITON_", "IMPORTED"))]
    assert proc.returncode == 0 and len(errors) == len(bad), f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    for line, (name, value) in zip(errors, bad.items()):
        assert line.startswith(f"{name}={value!r} is not valid; set it to one of: ") and "NEWLINE" not in line, line


_BAD_ENV_CHILD = r"""
import ast, os, sys
sys.path.insert(0, sys.argv[1])
from kernels import EnvError
for name, value in ast.literal_eval(os.environ["BAD"]).items():   # one wrong value at a time
    os.environ[name] = value
    try:
        import kernels.lssa_triton
    except EnvError as e:
        print(str(e).replace(chr(10), " NEWLINE "))
    else:
        print("IMPORTED with", name, value)
    del os.environ[name]
    sys.modules.pop("kernels.lssa_triton", None)
"""


# ----------------------------------------------------------------------------- TF32 flags

def test_train_main_leaves_the_tf32_flags_as_it_found_them(synth_dir, tmp_path, monkeypatch):
    """--tf32=True switches TF32 on for the run; train.main puts the flags back after, also when
    the run fails."""
    import train
    seen = []

    def training_loop(*args):
        seen.append(train.precision_flags())
        raise KeyboardInterrupt   # a run stopped by hand: the flags come back all the same

    monkeypatch.setattr(train, "training_loop", training_loop)
    before = train.precision_flags()
    assert not before["cuda.matmul.allow_tf32"]   # torch's default, which the autouse fixture keeps
    with pytest.raises(KeyboardInterrupt):
        train.main(tiny_args(synth_dir, str(tmp_path / "run"), "--tf32=True"))
    assert seen[0]["cuda.matmul.allow_tf32"] and seen[0]["cudnn.allow_tf32"]   # on during the run
    assert train.precision_flags() == before


_LEAK_TESTS = r"""
import torch

def test_leaves_tf32_on():
    torch.backends.cuda.matmul.allow_tf32 = True

def test_changes_and_restores():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    torch.set_float32_matmul_precision(before)

def test_after_the_leak():
    assert not torch.backends.cuda.matmul.allow_tf32   # put back by the fixture
"""


def test_a_test_that_leaves_tf32_on_fails(tmp_path):
    """The autouse fixture of tests/conftest.py, run by pytest on three tests: the one that leaves
    TF32 on errors, naming the flags; the others pass, the last one with TF32 off again."""
    (tmp_path / "conftest.py").write_text(
        "import importlib.util, sys\n"
        f"sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]\n"
        f"spec = importlib.util.spec_from_file_location('repo_conftest', {REPO + '/tests/conftest.py'!r})\n"
        "repo_conftest = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(repo_conftest)\n"
        "precision_unchanged = repo_conftest.precision_unchanged\n")
    (tmp_path / "test_leak.py").write_text(_LEAK_TESTS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(tmp_path / "test_leak.py")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert "3 passed, 1 error" in proc.stdout, proc.stdout[-3000:]
    assert "ERROR at teardown of test_leaves_tf32_on" in proc.stdout
    assert "the test left torch's TF32 flags changed" in proc.stdout


def test_the_kernels_own_checks_and_defaults_in_this_process(interpreted):
    """lssa_attention refuses what unsupported_reason names, in one line; its defaults are the paper's
    p = 15 and no fixed length (softplus_fixed then asks for one); under the interpreter the probe
    length is two of its blocks, on a GPU two of the largest block of any table (not its warps)."""
    L = interpreted
    q, k, v = _qkv(d=12)
    with pytest.raises(RuntimeError, match=r"^the fused softplus kernel cannot run: head_dim 12 is not supported"):
        L.lssa_attention(q, k, v, ("softplus", True, True))
    q, k, v = (t.detach() for t in _qkv())
    assert torch.equal(L.lssa_attention(q, k, v, ("softplus", True, True)),
                       L.lssa_attention(q, k, v, ("softplus", True, True), 15.0))
    with pytest.raises(ValueError, match=r"^softplus_fixed needs its constant length, an integer >= 2; got 0$"):
        L.lssa_attention(q, k, v, ("softplus_fixed", True, False))
    assert L.probe_length() == 2 * 16 == 2 * max(max(b) for b in L.INTERPRET_BLOCKS.values())


def test_the_probe_length_on_a_gpu_is_two_of_the_largest_block(monkeypatch):
    from kernels import lssa_triton as L
    monkeypatch.setattr(L, "INTERPRET", False)
    assert L.probe_length() == 256   # the largest block of today's tables is 128
    monkeypatch.setattr(L, "_TABLES", {"t": {("fwd", 64): [(16, 32, 64, 1)]}})   # 64 warps: not a block
    assert L.probe_length() == 64


def test_a_backward_without_an_output_gradient_returns_one_none_per_input():
    import inspect
    from kernels import lssa_triton as L
    inputs = [n for n in inspect.signature(L._forward).parameters if n != "wrap"]   # the op's: q ... need_grad
    assert L._grad(None, None) == (None,) * len(inputs) == (None,) * 9


def test_the_backward_fills_no_tensor_with_zeros_in_this_process(interpreted):
    """The op's unused outputs (the row statistics) get no gradient: no zero tensor is made for them
    (set_materialize_grads(False)); the same check as the child-process one, where mutation testing sees it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Fills(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if any(w in str(func) for w in ("zeros", "fill", "full")):
                self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    q, k, v = _qkv()
    out = attention.causal_attention(q, k, v, "lssa", backend="kernel")
    with Fills() as fills:
        out.sum().backward()
    assert fills.seen == [] and q.grad is not None


def test_mixed_dtypes_strided_inputs_and_one_input_needing_a_gradient_in_this_process(interpreted):
    """lssa_attention promotes mixed dtypes and answers in v's, makes a last dimension of stride != 1
    contiguous (the kernels read rows of unit stride), and keeps what the backward needs when any one
    of q, k, v needs a gradient."""
    L, rec = interpreted, ("softplus", True, True)
    q, k, v = (t.detach() for t in _qkv())
    want = L.lssa_attention(q, k, v, rec)
    strided = [torch.stack([t, torch.full_like(t, 7.0)], -1).flatten(-2)[..., ::2] for t in (q, k, v)]
    assert strided[0].stride(-1) == 2 and torch.equal(strided[0], q)
    assert (L.lssa_attention(*strided, rec) - want).abs().max() <= 1e-6
    k16, v16 = k.to(torch.bfloat16), v.to(torch.float16)
    mixed = L.lssa_attention(q, k16, v16, rec)
    assert mixed.dtype == torch.float16
    assert (mixed.float() - L.lssa_attention(q, k16.float(), v16.float(), rec)).abs().max() <= 1e-3
    k_grad = k.clone().requires_grad_()
    L.lssa_attention(q, k_grad, v, rec).sum().backward()
    assert k_grad.grad is not None and torch.isfinite(k_grad.grad).all() and k_grad.grad.abs().sum() > 0


def test_mixed_dtypes_are_computed_in_the_promoted_dtype_in_this_process(interpreted):
    """With q, k, v of different dtypes the whole op runs in their promoted dtype and only the
    answer is cast to v's: bit for bit what the same inputs give already promoted. (Unpromoted, a
    16-bit q would select the 16-bit numerics (DOT_PREC "tf32": the softplus polynomial) and a 16-bit
    v a 16-bit value matmul.)"""
    L, rec = interpreted, ("softplus", True, True)
    q, k, v = (t.detach() for t in _qkv())
    half, f32 = torch.float16, torch.float32
    for dq, dk, dv in [(half, half, f32), (half, f32, f32), (f32, half, f32), (f32, f32, half)]:
        a, b, c = q.to(dq), k.to(dk), v.to(dv)
        got = L.lssa_attention(a, b, c, rec)
        assert got.dtype == dv
        assert torch.equal(got, L.lssa_attention(a.float(), b.float(), c.float(), rec).to(dv)), (dq, dk, dv)


def test_rows_of_unit_stride_are_read_in_place_others_copied_in_this_process(interpreted, monkeypatch):
    """The model's heads arrive as a transposed view, (B, T, H, d) -> (B, H, T, d): rows of unit stride,
    read where they are, no copy. A last dimension of stride != 1 (here T's stride is 1 instead) is
    made contiguous first: the kernels read rows of unit stride."""
    L, rec = interpreted, ("softplus", True, True)
    q, k, v = (t.detach() for t in _qkv())
    want = L.lssa_attention(q, k, v, rec)
    seen = []
    real = L._fwd_op
    monkeypatch.setattr(L, "_fwd_op", lambda *a: seen.append(a[:3]) or real(*a))
    heads = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]   # (B, T, H, d) memory
    assert not heads[0].is_contiguous() and heads[0].stride(-1) == 1
    assert torch.equal(L.lssa_attention(*heads, rec), want)
    assert [t.data_ptr() for t in seen[-1]] == [t.data_ptr() for t in heads]
    columns = [t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (q, k, v)]   # stride(-2) == 1
    assert columns[0].stride(-2) == 1 and columns[0].stride(-1) != 1
    assert torch.equal(L.lssa_attention(*columns, rec), want)
    assert all(t.is_contiguous() for t in seen[-1])


def test_what_the_backward_needs_is_kept_only_when_a_gradient_is_wanted_in_this_process(interpreted, monkeypatch):
    """need_grad (the re-weighting's u saved for the backward, a (B, H, T, d) fp32 tensor) is asked for
    when grad mode is on and any one of q, k, v needs a gradient: not at inference, not under no_grad.
    With only one input needing a gradient its gradient is the reference's."""
    L, rec = interpreted, ("softplus", True, True)
    q, k, v = (t.detach() for t in _qkv())
    asked = []
    real = L._fwd_op
    monkeypatch.setattr(L, "_fwd_op", lambda *a: asked.append(a[-1]) or real(*a))
    L.lssa_attention(q, k, v, rec)
    with torch.no_grad():
        L.lssa_attention(q, k, v.clone().requires_grad_(), rec)
    assert asked == [False, False]
    weights = torch.linspace(-1, 1, q.numel()).view(q.shape)
    for i in range(3):
        inputs = [q, k, v]
        inputs[i] = inputs[i].clone().requires_grad_()
        (L.lssa_attention(*inputs, rec) * weights).sum().backward()
        ref = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        (attention.reference_attention(*ref, "lssar", 15.0) * weights).sum().backward()
        assert asked[-1] is True
        assert (inputs[i].grad - ref[i].grad).abs().max() <= 1e-4, i


def test_softplus_fixed_takes_a_constant_length_of_two_in_this_process(interpreted):
    L = interpreted
    q, k, v = (t.detach() for t in _qkv())
    two = L.lssa_attention(q, k, v, ("softplus_fixed", True, False), fixed_length=2)
    assert torch.isfinite(two).all()
    assert not torch.equal(two, L.lssa_attention(q, k, v, ("softplus_fixed", True, False), fixed_length=3))
    with pytest.raises(ValueError, match=r"an integer >= 2; got 1$"):
        L.lssa_attention(q, k, v, ("softplus_fixed", True, False), fixed_length=1)


def test_unsupported_reasons_word_for_word(L, monkeypatch):
    q, k, v = (t.detach() for t in _qkv())
    assert L.unsupported_reason(q, k, v, ("tanh", True, False)) == \
        "no fused kernel for positive weights 'tanh' (only softplus, softplus_fixed, sigmoid, relu, exp)"
    assert L.unsupported_reason(q, k, v, ("softplus", False, True)) == \
        "the re-weighting needs l1-normalised rows (its fallback is the normalised row)"
    monkeypatch.setattr(L, "INTERPRET", False)
    assert L.unsupported_reason(q, k, v, ("softplus", True, True)) == \
        "q, k, v are not all CUDA tensors (CPU tensors need Triton's interpreter, TRITON_INTERPRET=1 " \
        "set before triton is imported)"


def test_interpreter_scalars_are_squeezed_where_triton_does_not(L, monkeypatch):
    """Triton < 3.7's interpreter turned a scalar, a (1,)-array, into a loop bound with int(array), which
    NumPy 2 refuses: _fix_interpreter_scalars wraps its _patch_lang_tensor to squeeze first, once, with
    the launch's patch scope when there is one (restored after the launch), on the class otherwise. Here
    a stand-in for the old function (today's triton squeezes already, so only a stand-in shows it)."""
    import numpy as np
    from types import SimpleNamespace
    from triton.runtime import interpreter
    calls = []

    def old(tensor, *scope):
        calls.append((tensor, scope))
        tensor.__index__ = lambda self: int(self.handle.data)   # NumPy 2: fails on a (1,)-array

    scalar = SimpleNamespace(handle=SimpleNamespace(data=np.array([7], dtype=np.int32)))
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", old)
    L._fix_interpreter_scalars()
    patched = interpreter._patch_lang_tensor
    assert patched is not old and patched.squeezes_scalars is True

    class Scope:
        def __init__(self):
            self.set = {}

        def set_attr(self, obj, name, value):
            self.set[name] = value

    class Tensor:
        pass
    scope = Scope()
    patched(Tensor, scope)
    assert calls == [(Tensor, (scope,))] and type(scope.set["__index__"](scalar)) is int
    assert scope.set["__index__"](scalar) == 7
    patched(Tensor)                      # no scope: on the class itself
    assert calls[-1] == (Tensor, ()) and Tensor.__index__(scalar) == 7
    L._fix_interpreter_scalars()         # already wrapped: not wrapped twice
    assert interpreter._patch_lang_tensor is patched
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", None)
    L._fix_interpreter_scalars()         # nothing to wrap
    assert interpreter._patch_lang_tensor is None
    monkeypatch.delattr(interpreter, "_patch_lang_tensor")
    L._fix_interpreter_scalars()         # an interpreter without the function: nothing done
    assert not hasattr(interpreter, "_patch_lang_tensor")


def test_unsupported_inputs_word_for_word(L, monkeypatch):
    """Every reason unsupported_reason gives for inputs, and the smallest supported input (one row)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    rec = ("softplus", True, True)
    monkeypatch.setattr(L, "INTERPRET", True)

    def why(*shapes, dtypes=(torch.float32,) * 3):
        return L.unsupported_reason(*(torch.zeros(s, dtype=d) for s, d in zip(shapes, dtypes)), rec)

    assert why((1, 1, 1, 16), (1, 1, 1, 16), (1, 1, 1, 16)) is None
    assert why((1, 2, 3, 16), (1, 2, 3, 16), (1, 2, 4, 16)) == \
        "expected q, k, v of one shape (B, n_head, T, head_dim), got (1, 2, 3, 16), (1, 2, 3, 16), (1, 2, 4, 16)"
    assert why((2, 3, 16), (2, 3, 16), (2, 3, 16)) == \
        "expected q, k, v of one shape (B, n_head, T, head_dim), got (2, 3, 16), (2, 3, 16), (2, 3, 16)"
    assert why((1, 1, 4, 48), (1, 1, 4, 48), (1, 1, 4, 48)) == \
        "head_dim 48 is not supported (supported: (16, 32, 64, 128))"
    assert why((1, 1, 4, 16), (1, 1, 4, 16), (1, 1, 4, 16), dtypes=(torch.float32, torch.float64, torch.float32)) == \
        "dtypes torch.float32, torch.float64, torch.float32: the kernel takes float16, bfloat16 or float32"
    for empty in ((0, 2, 4, 16), (2, 0, 4, 16), (2, 2, 0, 16)):
        assert why(empty, empty, empty) == "empty input", empty
    with FakeTensorMode():
        on = [torch.zeros(1, 1, 4, 16, device=d) for d in ("cuda:0", "cuda:1", "cuda:0")]
        assert L.unsupported_reason(*on, rec) == "q, k, v are on different devices"
        wide = torch.zeros(32768, 2, 1, 16, device="cuda:0")
        assert L.unsupported_reason(wide, wide, wide, rec) == \
            "batch x heads = 65536 exceeds the launch grid limit 65535"
        widest = torch.zeros(13107, 5, 1, 16, device="cuda:0")   # 65535 programs: the limit itself launches
        assert L.unsupported_reason(widest, widest, widest, rec) is None


def test_pick_routes_by_dtype_and_head_dim_class(L, monkeypatch):
    """_pick on a GPU without the autotuner: fp32 inputs take fp32's table, 16-bit ones the 16-bit table of
    the architecture (a CPU device: the non-Hopper one); head dims up to 64 class 64, above it class 128;
    the whole tile is launched, warps and stages too. Distinct tiles pinned to tell the entries apart."""
    monkeypatch.setattr(L, "INTERPRET", False)
    monkeypatch.setattr(L, "AUTOTUNE", False)
    pins = {"fp32/fwd/64": [16, 16, 1, 1], "fp32/fwd/128": [32, 16, 2, 2],
            "other/fwd/64": [64, 32, 4, 3], "other/fwd/128": [128, 64, 8, 4]}
    with L.tiles_pinned(pins):
        for dtype, head_dim, want in ((torch.float32, 64, pins["fp32/fwd/64"]), (torch.float32, 65, pins["fp32/fwd/128"]),
                                      (torch.float32, 128, pins["fp32/fwd/128"]), (torch.bfloat16, 16, pins["other/fwd/64"]),
                                      (torch.float16, 128, pins["other/fwd/128"])):
            kernel, meta = L._pick("fwd", dtype, head_dim, "cpu")
            assert kernel is L._KERNELS["fwd"]
            assert [meta["BLOCK_M"], meta["BLOCK_N"], meta["num_warps"], meta["num_stages"]] == want, (dtype, head_dim)


def test_the_small_launch_parameters(L, monkeypatch):
    """The autotuner's length bucket (a T re-tunes only past 256, 1024, 4096), the integer power the
    re-weighting takes by repeated squaring (1 to 64; anything else 0: exp2/log2), the dot precision
    (fp32's setting, "tf32" the 16-bit mark), and the table's name (Hopper's own 16-bit table only on a
    Hopper: the capability of the inputs' device, not the current one's)."""
    assert [L._t_bucket(T) for T in (1, 256, 257, 1024, 1025, 4096, 4097, 100_000)] == \
        [256, 256, 1024, 1024, 4096, 4096, 16384, 16384]
    assert [L._p_int(p) for p in (1, 1.0, 15, 64.0, 65, 0, 0.5, 2.5, -3)] == [1, 1, 15, 64, 0, 0, 0, 0, 0]
    assert L._dot_precision(torch.float32) == L.FP32_DOT_PRECISION != "tf32"
    assert L._dot_precision(torch.bfloat16) == L._dot_precision(torch.float16) == "tf32"
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (9, 0) if d == torch.device("cuda:1") else (8, 0))
    L._is_hopper.cache_clear()
    try:
        assert [L._table_name(torch.float32, "cuda:1"), L._table_name(torch.bfloat16, "cuda:1"),
                L._table_name(torch.float16, "cuda:0"), L._table_name(torch.bfloat16, "cpu")] == \
            ["fp32", "sm90", "other", "other"]
    finally:
        L._is_hopper.cache_clear()


def test_pick_under_the_interpreter_with_the_autotuner_and_by_default(L, monkeypatch):
    """_pick's order: a pinned tile, else the interpreter's blocks (blocks only: it runs a program as one
    thread), else the autotuner, else the table's first tile: the one default_tiles records for a run."""
    monkeypatch.setattr(L, "INTERPRET", True)
    monkeypatch.setattr(L, "INTERPRET_BLOCKS", {"fwd": (32, 64), "dkdv": (16, 16), "dq": (16, 16)})
    assert L._pick("fwd", torch.float32, 64, "cpu") == (L._KERNELS["fwd"], {"BLOCK_M": 32, "BLOCK_N": 16 * 4})
    with L.tiles_pinned({"fp32/fwd/64": [16, 16, 2, 1]}):
        assert L._pick("fwd", torch.float32, 64, "cpu") == (L._KERNELS["fwd"], {"BLOCK_M": 16, "BLOCK_N": 16})
    monkeypatch.setattr(L, "INTERPRET", False)
    monkeypatch.setattr(L, "AUTOTUNE", True)
    assert L._pick("dq", torch.bfloat16, 128, "cpu") == (L._TUNED["other", "dq", 128], {})
    with L.tiles_pinned({"other/dq/128": [64, 16, 4, 2]}):
        assert L._pick("dq", torch.bfloat16, 128, "cpu") == \
            (L._KERNELS["dq"], {"BLOCK_M": 64, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2})
    monkeypatch.setattr(L, "AUTOTUNE", False)
    for name, tile in L.default_tiles("cpu").items():
        table, which, d = name.split("/")
        dtype = torch.float32 if table == "fp32" else torch.bfloat16
        kernel, meta = L._pick(which, dtype, int(d), "cpu")
        assert kernel is L._KERNELS[which] and list(meta.values()) == tile, name


def test_scales_are_the_closed_forms_in_fp32(L):
    """_scales' per-row and per-key factors, fp32 whatever the inputs' dtype, against their formulas
    written out here (i 1-indexed, d the head dim): softplus ρ_i = ln d·log2 i/‖q_i‖, κ_j = 1/‖k_j‖
    (softplus_fixed: log2 of the fixed length for log2 i); relu ρ_i = 1/(√d·i); sigmoid ρ = log2 e/√d,
    β_i = −log2 i; exp ρ = log2 e/√d."""
    import math
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 5, 16, generator=g).to(torch.bfloat16) for _ in range(2))   # (B, H, T, d)
    i = torch.arange(1.0, 6.0)
    nq, nk = (torch.tensor([[[math.sqrt(sum(float(x) ** 2 for x in row)) for row in h] for h in b] for b in t.float()])
              for t in (q, k))
    for phi, log2_len in (("softplus", torch.log2(i)), ("softplus_fixed", torch.full((5,), 3.0))):
        got = L._scales(q, k, phi, 8)
        assert all(t.dtype == torch.float32 for t in got), phi
        assert all(t.shape == (2, 3, 5) for t in got) and torch.allclose(got[0], nq) and torch.allclose(got[1], nk)
        assert torch.allclose(got[2], math.log(16) * log2_len / nq) and torch.allclose(got[3], 1 / nk)
    rho, _, _, _, beta = L._scales(q, k, "relu", 0)
    assert rho.shape == (2, 3, 5) and torch.allclose(rho, (1 / (4 * i)).expand(2, 3, 5))
    for phi in ("sigmoid", "exp"):
        rho, _, _, _, beta = L._scales(q, k, phi, 0)
        assert rho.dtype == torch.float32 and rho.shape == (2, 3, 5)
        assert torch.allclose(rho, torch.full((2, 3, 5), math.log2(math.e) / 4))
        if phi == "sigmoid":
            assert beta.shape == (2, 3, 5) and torch.allclose(beta, -torch.log2(i).expand(2, 3, 5))
        else:                            # unused, never loaded: rho itself, no memory of its own
            assert beta is rho
    for phi in ("softplus", "relu"):
        got = L._scales(q, k, phi, 0 if phi == "relu" else 8)
        assert got[4] is got[2], phi


def test_repeated_squaring_counts_its_multiplications(L):
    """x**n by repeated squaring: bit_length - 1 squarings and popcount - 1 products (15: x², x⁴, x⁸ and
    three products, six; 64: six squarings); lssar's p = 15 is one of the powers taken as (x⁵)³ (five)."""
    assert [L._binary_multiplications(n) for n in (1, 2, 3, 7, 15, 64, 127)] == [0, 1, 2, 4, 6, 6, 12]
    assert (L._CUBE_POWERS.value >> 15) & 1 and not (L._CUBE_POWERS.value >> 12) & 1


# Per row, fp32 (the module docstring's list): l1-normalised types 1/Z, unnormalised ones nothing,
# re-weighted types six (τ/M, 1/M, K, F, 1/X̃, R), and one more (L) where the row subtracts its
# maximum (normalised sigmoid and exp)
STATISTICS = {"lssa": 1, "lssar": 6, "sigmoid": 0, "relu": 0, "softmax_reweight": 7, "sigmoid_l1_reweight": 7,
              "relu_l1": 1, "softplus_l1": 1}


def test_the_statistics_each_type_keeps_per_row(L):
    """Without a launch: too few rows make the kernels write past the tensor (the interpreter's process
    then aborts rather than failing a test)."""
    assert set(STATISTICS) == set(attention.KERNEL_TYPES)
    for kind, n in STATISTICS.items():
        assert L._n_stats(*attention.RECIPES[kind]) == n, kind


def test_the_forward_saves_only_the_statistics_the_backward_reads(interpreted):
    """STATISTICS' rows, (B, H, max(n, 1), T), and U, (B, H, T, d), only for the re-weighted types in training."""
    L = interpreted
    q, k, v = (t.detach() for t in _qkv(T=4))
    for kind, n in STATISTICS.items():
        phi, normalised, reweighted = attention.RECIPES[kind]
        for need_grad in (True, False):
            _, stats, u = L._forward(q, k, v, phi, normalised, reweighted, 3.0, 1024, need_grad)
            assert stats.shape == (1, 2, max(n, 1), 4) and stats.dtype == torch.float32, kind
            assert u.shape == ((1, 2, 4, 16) if reweighted and need_grad else (1,)), kind


def test_op_kind_takes_the_newest_registration_torch_has_unless_told(L, monkeypatch):
    """How the kernels enter torch: LSSA_TRITON_OP if set; else torch.library.triton_op (with
    wrap_triton: torch.compile sees the kernels), else custom_op, else a plain autograd.Function.
    A torch without one is stood in for by a namespace holding only what that version had."""
    from types import SimpleNamespace
    for value in ("triton_op", "custom_op", "function"):
        monkeypatch.setenv("LSSA_TRITON_OP", value)
        assert L._op_kind() == value
    monkeypatch.setenv("LSSA_TRITON_OP", "auto")
    have = lambda *names: SimpleNamespace(**{n: object() for n in names})   # noqa: E731
    for library, want in ((have("triton_op", "wrap_triton", "custom_op"), "triton_op"),
                          (have("triton_op", "custom_op"), "custom_op"), (have("wrap_triton", "custom_op"), "custom_op"),
                          (have("custom_op"), "custom_op"), (have(), "function")):
        monkeypatch.setattr(torch, "library", library)
        assert L._op_kind() == want, vars(library)
    monkeypatch.delenv("LSSA_TRITON_OP")
    assert L._op_kind() == "function"
    with pytest.raises(Exception, match=r"^LSSA_TRITON_OP='op' is not valid; set it to one of: auto, triton_op, "
                                        r"custom_op, function \(or unset it for the default, auto\)$"):
        monkeypatch.setenv("LSSA_TRITON_OP", "op")
        L._op_kind()


def test_the_autotuners_try_every_tile_of_the_table_keyed_by_what_changes_the_best(L):
    """One triton.Config per tile (blocks as meta-parameters, warps and stages as launch options), keyed
    by head dim, length bucket, recipe, integer power, precision, and for the forward whether U is stored."""
    configs = L._configs([(64, 32, 4, 3), (128, 16, 8, 2)])
    assert [(c.kwargs, c.num_warps, c.num_stages) for c in configs] == \
        [({"BLOCK_M": 64, "BLOCK_N": 32}, 4, 3), ({"BLOCK_M": 128, "BLOCK_N": 16}, 8, 2)]
    key = ["HEAD_DIM", "T_BUCKET", "PHI", "NORM", "RW", "P_INT", "DOT_PREC"]
    for which in L._KERNELS:
        tuner = L._autotuned(which, [(64, 32, 4, 3)])
        assert list(tuner.keys) == key + (["STORE_U"] if which == "fwd" else []), which
        assert [(c.kwargs, c.num_warps, c.num_stages) for c in tuner.configs] == [({"BLOCK_M": 64, "BLOCK_N": 32}, 4, 3)]
        assert tuner.fn is L._KERNELS[which]
