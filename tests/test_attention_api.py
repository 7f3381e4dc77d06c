"""attention.causal_attention's checks and dispatch, and the small helpers around it, as the
mutation run (tools/mutation.sh) found them unguarded: the default p, the backends on a CPU,
the shape checks one by one, the accepted range of p, how results name a type. Fast."""
import os

import pytest
import torch

from attention import (ATTENTION_TYPES, attention_weights, causal_attention, check_backend, check_reweight_p, describe,
                       reference_attention)


def qkv(B=1, H=2, T=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, d, generator=g) for _ in range(3)]


def test_default_p_is_the_papers_15():
    q, k, v = qkv(T=9)
    torch.testing.assert_close(causal_attention(q, k, v, "lssar"), reference_attention(q, k, v, "lssar", 15.0))
    assert not torch.allclose(causal_attention(q, k, v, "lssar"), reference_attention(q, k, v, "lssar", 16.0))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter runs the kernel on the CPU")
def test_backends_on_the_cpu(monkeypatch):
    import attention

    def probe(*args):
        raise AssertionError("backend 'auto' probed for a kernel on CPU tensors")

    monkeypatch.setattr(attention, "check_kernel", probe)  # auto on a CPU goes straight to the reference
    q, k, v = qkv()
    ref = reference_attention(q, k, v, "lssa")
    torch.testing.assert_close(causal_attention(q, k, v, "lssa", backend="reference"), ref, rtol=0, atol=0)
    torch.testing.assert_close(causal_attention(q, k, v, "lssa", backend="auto"), ref, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r"^the fused lssa kernel cannot run: .*CUDA.*use backend='auto' or "
                                           r"'reference'$"):
        causal_attention(q, k, v, "lssa", backend="kernel")
    with pytest.raises(ValueError, match=r"^unknown attention backend 'fast'; valid backends are: auto, reference, "
                                         r"kernel$"):
        causal_attention(q, k, v, "lssa", backend="fast")
    check_backend("kernel")  # valid ones pass

    def no_triton():
        raise ImportError("No module named 'triton'")
    monkeypatch.setattr(attention, "kernel_module", no_triton)
    with pytest.raises(RuntimeError, match=r"^the fused lssa kernel cannot run: the Triton kernel module cannot be "
                                           r"imported \(ImportError: No module named 'triton'\); use backend='auto'"):
        causal_attention(q, k, v, "lssa", backend="kernel")


def test_each_shape_mismatch_is_refused_with_the_shapes():
    q, k, v = qkv()
    shapes = r"got \(1, 2, 5, 4\), \(1, 2, 5, 4\), \(1, 2, 6, 4\)$"
    with pytest.raises(ValueError, match=r"^expected q, k, v of shape \(B, n_head, T, head_dim\); " + shapes):
        causal_attention(q, k, torch.randn(1, 2, 6, 4), "lssa")          # v alone differs
    with pytest.raises(ValueError, match=r"got \(1, 2, 5, 4\), \(1, 2, 6, 4\), \(1, 2, 5, 4\)$"):
        causal_attention(q, torch.randn(1, 2, 6, 4), v, "lssa")          # k alone differs
    with pytest.raises(ValueError, match=r"got \(2, 5, 4\), \(2, 5, 4\), \(2, 5, 4\)$"):
        causal_attention(q[0], k[0], v[0], "lssa")                       # 3-D, all alike
    torch.testing.assert_close(causal_attention(q, k, torch.randn(1, 2, 5, 7), "lssa").shape[-1], 7)  # v's own width


def test_ssmax_names_the_head_scale_shape_it_needs():
    q, k, v = qkv(H=2, T=5)
    with pytest.raises(ValueError, match=r"ssmax needs head_scale, the learned per-head s_h of shape \(2,\)$"):
        causal_attention(q, k, v, "ssmax", head_scale=torch.ones(5))


def test_reweight_p_range():
    for p in (1, 1.0, 1.5, 3, 15.0):
        check_reweight_p(p)
    for p in (0.999, 0, -3, float("inf"), float("nan"), "15", None):
        with pytest.raises(ValueError, match=r"reweight_p must be a finite number >= 1 \(the paper uses 3 and 15\)"):
            check_reweight_p(p)


def test_describe_names_the_power_of_re_weighted_types_only():
    assert describe("lssar", 15.0) == "lssar p=15"
    assert describe("softmax_reweight", 2.5) == "softmax_reweight p=2.5"
    assert describe("lssa", 15.0) == "lssa"
    assert describe("softmax", 3.0) == "softmax"


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_a_padding_mask_gives_each_row_its_own_count(kind):
    """Left padding, as in a batch of prompts of different lengths (hf_lssa.py): the first two keys
    are hidden from every query. The real rows' weights over the real keys are then those of the
    unpadded sequence (n_i counted over the keys a row sees, not its position), and the padding
    queries, which see no key at all, get all-zero rows rather than NaN."""
    q, k, _ = qkv(T=7, d=8)
    pad, T = 2, 7
    head_scale = torch.full((2,), 0.7) if kind == "ssmax" else None
    visible = torch.ones(T, T).tril().bool() & (torch.arange(T) >= pad)[None, :]
    a = attention_weights(q, k, kind, 3.0, head_scale=head_scale, visible=visible[None, None])  # p = 3, not 15
    unpadded = attention_weights(q[:, :, pad:], k[:, :, pad:], kind, 3.0, head_scale=head_scale)
    torch.testing.assert_close(a[:, :, pad:, pad:], unpadded)
    assert (a[:, :, :pad] == 0).all() and (a[:, :, pad:, :pad] == 0).all()
    _, _, v = qkv(T=7, d=8, seed=1)  # and the outputs, through the reference (softmax's own path included)
    out = reference_attention(q, k, v, kind, 3.0, head_scale=head_scale, visible=visible[None, None])
    torch.testing.assert_close(out[:, :, pad:], reference_attention(q[:, :, pad:], k[:, :, pad:], v[:, :, pad:], kind,
                                                                    3.0, head_scale=head_scale))


def test_without_the_kernels_the_error_says_what_they_need(monkeypatch):
    """An exported Hugging Face folder carries attention.py without kernels/: asking it for a fused
    kernel names what is missing, and keeps the import error."""
    import sys
    from attention import kernel_module
    monkeypatch.setitem(sys.modules, "kernels", None)  # `from kernels import ...` now fails
    with pytest.raises(ImportError, match=r"^the fused kernels need this repository's kernels/ package and triton: ") as e:
        kernel_module()
    assert isinstance(e.value.__cause__, ImportError)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_the_power_reaches_the_reference_on_a_cpu(backend):
    """p = 3 and p = 15 weigh differently: what causal_attention returns is the reference at the p
    it was given, whichever backend a CPU run asks for."""
    q, k, v = qkv(T=9, d=8)
    got = causal_attention(q, k, v, "lssar", 3.0, backend=backend)
    torch.testing.assert_close(got, reference_attention(q, k, v, "lssar", 3.0))
    assert not torch.allclose(got, reference_attention(q, k, v, "lssar", 15.0))


def test_the_reference_in_chunks_of_rows_equals_it_whole():
    """Without gradients the reference computes its rows in chunks (memory at 16K tokens); the
    chunking changes which rows go together, never their values."""
    q, k, v = (t.double() for t in qkv(B=4, H=4, T=11, d=8))  # float64: p = 15 amplifies rounding
    whole = reference_attention(q, k, v, "lssar", chunk_elements=10**9)
    with torch.no_grad():
        for chunk in (1, 4 * 4 * 11 * 3, 10**9):  # one row at a time, three rows, all at once
            torch.testing.assert_close(reference_attention(q, k, v, "lssar", chunk_elements=chunk), whole)


def test_the_reference_in_exactly_two_chunks_returns_every_row():
    """Two chunks is the case where "one chunk: return it" and "several: concatenate" differ by one
    comparison: every row must come back (the whole-T path with gradients is the reference)."""
    q, k, v = (t.double() for t in qkv(B=1, H=1, T=8, d=4))
    whole = reference_attention(q, k, v, "lssa")
    with torch.no_grad():
        halves = reference_attention(q, k, v, "lssa", chunk_elements=4 * 8)  # 4 rows x 8 keys: two chunks
    assert halves.shape == whole.shape
    torch.testing.assert_close(halves, whole)


def test_the_reference_computes_blocks_of_rows_at_inference_and_every_row_at_once_with_gradients(monkeypatch):
    """How the rows are grouped is the memory at 16K tokens (tests/test_attention.py's
    test_16k_forward_memory_is_bounded measures it in a child process): at inference blocks of
    chunk_elements // (B*H*Tk) rows, at least one row when a single row is already larger; with
    autograd every row at once (autograd keeps each block's weights anyway)."""
    import attention

    blocks = []
    weights = attention.attention_weights

    def recording(q, *args, **kwargs):
        blocks.append(q.size(-2))
        return weights(q, *args, **kwargs)

    monkeypatch.setattr(attention, "attention_weights", recording)
    q, k, v = qkv(B=1, H=2, T=12, d=4)
    for chunk_elements, rows in ((2 * 12 * 5, [5, 5, 2]), (10, [1] * 12), (10**9, [12])):
        blocks.clear()
        with torch.no_grad():
            reference_attention(q, k, v, "lssa", chunk_elements=chunk_elements)
        assert blocks == rows, chunk_elements
    blocks.clear()
    reference_attention(q, k, v, "lssa", chunk_elements=2 * 12 * 5)   # grad mode, no input needing one
    assert blocks == [5, 5, 2]
    q.requires_grad_(True)
    blocks.clear()
    reference_attention(q, k, v, "lssa", chunk_elements=2 * 12 * 5)
    assert blocks == [12]
    # one head and one key (a cache's first token): 2 elements are two rows
    blocks.clear()
    with torch.no_grad():
        reference_attention(q[:, :1], k[:, :1, :1], v[:, :1, :1], "lssa", chunk_elements=2,
                            visible=torch.ones(1, 1, 12, 1, dtype=torch.bool))
    assert blocks == [2] * 6

    # the default block size is the table's entry for the inputs' device, the CPU's for a device it lacks
    class Table(dict):
        def get(self, *key_and_default):
            asked.append(key_and_default)
            return super().get(*key_and_default)

    asked = []
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", Table(cpu=2 * 12 * 5, cuda=1 << 27))
    blocks.clear()
    with torch.no_grad():
        reference_attention(q, k, v, "lssa")
    assert blocks == [5, 5, 2] and asked == [("cpu", 2 * 12 * 5)]


def test_16_bit_inputs_with_a_visible_mask():
    """The padding and cached-decoding path (a `visible` mask) in bf16: the weights are computed in
    fp32, so v must follow them; the result comes back in bf16 and matches softmax by hand in float64."""
    q, k, v = (t.bfloat16() for t in qkv(B=2, H=2, T=6, d=8))
    visible = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    visible[1, ..., :2] = False   # the second sequence left-padded by two tokens
    visible[1, :, :2, :2] = torch.eye(2, dtype=torch.bool)   # padded rows see themselves only
    y = reference_attention(q, k, v, "softmax", visible=visible)
    assert y.dtype == torch.bfloat16
    s = (q.double() @ k.double().transpose(-2, -1)) / 8 ** 0.5
    expected = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1) @ v.double()
    torch.testing.assert_close(y.double(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_tensors_made_inside_are_on_q_device(kind):
    """The row counts and the causal mask attention makes itself are made on q's device. The meta
    device (shapes only) stands in for a GPU: a tensor made on the CPU by mistake meets q there
    and fails, as it would on CUDA. The weights for every type, and ssmax's SDPA path."""
    q, k, v = (t.to("meta") for t in qkv())
    head_scale = torch.ones(2, device="meta") if kind == "ssmax" else None
    a = attention_weights(q, k, kind, q_start=3, head_scale=head_scale)
    assert a.device.type == "meta" and a.shape == (1, 2, 5, 5)
    if kind == "ssmax":
        assert reference_attention(q, k, v, kind, head_scale=head_scale).device.type == "meta"
