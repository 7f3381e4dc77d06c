"""Dispatch of the fused kernels that cannot misfire: launches on q's GPU, a probe that runs every
kind of block and waits for it, side tensors made dense whatever layout they arrive in (also under
torch.compile), a warning for head dims without a kernel, validated LSSA_TRITON_* values, and
torch's TF32 flags left as they were by tests and by train.main.

No GPU here: a CUDA tensor on a second GPU is a fake tensor (torch's FakeTensorMode), the launches
and torch.cuda.device are stand-ins that record, and the kernels themselves run under Triton's
interpreter in a child process. What only a GPU can show (that torch.cuda.device really moves
Triton's launch, that a real fault is caught at the probe's synchronize) is not tested here.
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
    assert caught[0].filename == os.path.join(REPO, "model.py")   # points at the model that asked


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
        dirs[:] = [d for d in dirs if not d.startswith(".")]
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
