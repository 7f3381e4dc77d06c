"""The reference attention maths, checked against values worked out independently of it."""
import math
import os
import subprocess
import sys

import pytest
import torch

from attention import ATTENTION_TYPES, RECIPES, attention_weights, causal_attention, reference_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def softplus(x):
    return math.log1p(math.exp(x))


def naive_weights(q, k, kind, p=15.0, s_h=0.5):
    """The formulas for one head, row by row in plain Python floats (no torch)."""
    T, d = len(q), len(q[0])
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    unit = lambda a: [x / math.sqrt(dot(a, a)) for x in a]
    sigmoid = lambda x: 1 / (1 + math.exp(-x))
    A = []
    for i in range(1, T + 1):                              # 1-indexed query row
        s = [dot(q[i - 1], k[j]) / math.sqrt(d) for j in range(i)]
        if kind in ("softmax", "softmax_reweight", "ssmax"):
            if kind == "ssmax":
                s = [x * s_h * math.log(i) for x in s]
            e = [math.exp(x - max(s)) for x in s]
            row = [x / sum(e) for x in e]
        elif kind in ("sigmoid", "sigmoid_l1_reweight"):
            row = [sigmoid(x - math.log(i)) for x in s]
            if kind == "sigmoid_l1_reweight":
                row = [x / sum(row) for x in row]
        elif kind == "relu":
            row = [max(x, 0.0) / i for x in s]
        elif kind == "relu_l1":   # a row without a positive score has no weights
            w = [max(x, 0.0) for x in s]
            row = [x / sum(w) if sum(w) > 0 else 0.0 for x in w]
        else:
            length = math.log(1024) if kind == "softplus_l1" else math.log(i)
            s = [math.log(d) * length * dot(unit(q[i - 1]), unit(k[j])) for j in range(i)]
            w = [softplus(x) for x in s]
            row = [x / sum(w) for x in w]
        if kind.endswith("reweight") or kind == "lssar":
            o = 0.0 if i <= 3 else 1.0
            x = [max(i * a - o, 0.0) ** p for a in row]
            row = [v / sum(x) for v in x] if sum(x) > 0 else row
        A.append(row + [0.0] * (T - i))
    return A


def as_tensor(rows):
    return torch.tensor(rows, dtype=torch.float64)[None, None]


def test_two_tokens_written_out():
    # d = 4; the second query is parallel to the first key and orthogonal to the second.
    q = [[0.3, -0.2, 0.5, 0.1], [2.0, 0.0, 0.0, 0.0]]
    k = [[1.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]]
    v = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 1.0, 0.0]]
    Q, K, V = as_tensor(q), as_tensor(k), as_tensor(v)
    # softmax, row 2: scores 2/sqrt(4) = 1 and 0
    a = math.e / (math.e + 1)                                 # 0.7310585786
    expected = [[1, 2, 3, 4], [a * 1 - (1 - a), a * 2, a * 3 + (1 - a), a * 4]]
    torch.testing.assert_close(causal_attention(Q, K, V, "softmax")[0, 0], torch.tensor(expected, dtype=torch.float64))
    # lssa, row 2: scores ln(4)·ln(2)·(1, 0) = (0.9609060278, 0); softplus -> (1.2848328, ln 2)
    w1, w2 = softplus(math.log(4) * math.log(2)), math.log(2)
    assert abs(w1 - 1.2848328) < 1e-7
    a = w1 / (w1 + w2)                                        # 0.64956...
    expected = [[1, 2, 3, 4], [a * 1 - (1 - a), a * 2, a * 3 + (1 - a), a * 4]]
    torch.testing.assert_close(causal_attention(Q, K, V, "lssa")[0, 0], torch.tensor(expected, dtype=torch.float64))
    # lssar: rows 1-3 use o = 0, so row 2 is w^p renormalised: with p = 2, a ∝ (w1², w2²)
    a = w1 ** 2 / (w1 ** 2 + w2 ** 2)
    expected = [[1, 2, 3, 4], [a * 1 - (1 - a), a * 2, a * 3 + (1 - a), a * 4]]
    torch.testing.assert_close(causal_attention(Q, K, V, "lssar", p=2.0)[0, 0], torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
@pytest.mark.parametrize("p", [3.0, 15.0])
def test_against_naive_formulas(kind, p):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 4, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    expected = as_tensor(naive_weights(q.tolist(), k.tolist(), kind, p, s_h=0.5))
    head_scale = torch.tensor([0.5], dtype=torch.float64)
    got = attention_weights(q[None, None], k[None, None], kind, p, head_scale=head_scale)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    y = causal_attention(q[None, None], k[None, None], v[None, None], kind, p, head_scale=head_scale)
    torch.testing.assert_close(y, expected @ v, rtol=1e-10, atol=1e-12)


def test_baselines_two_tokens_written_out():
    # d = 4, row 2 of the case above: scaled scores q·k/√d = (1, 0), two visible keys (n = 2)
    q = torch.tensor([[0.3, -0.2, 0.5, 0.1], [2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)[None, None]
    k = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]], dtype=torch.float64)[None, None]
    row2 = lambda kind, **kw: attention_weights(q, k, kind, **kw)[0, 0, 1].tolist()
    # sigmoid: σ(1 − ln 2) = 1/(1 + e^-0.306853) = 0.5761169, σ(0 − ln 2) = 1/3; no normalisation
    assert row2("sigmoid") == pytest.approx([0.5761169, 1 / 3], abs=1e-7)
    # relu: relu(1)/2, relu(0)/2
    assert row2("relu") == pytest.approx([0.5, 0.0], abs=1e-12)
    # relu_l1: relu(1), relu(0) normalised; its row 1 (score 0.3·1/2 = 0.15 > 0) is [1]
    assert row2("relu_l1") == pytest.approx([1.0, 0.0], abs=1e-12)
    # softplus_l1: q̂·k̂ = (1, 0), scale ln 4·ln 1024 = 9.609060 -> softplus = (9.609127, ln 2)
    w = [math.log1p(math.exp(math.log(4) * math.log(1024))), math.log(2)]
    assert row2("softplus_l1") == pytest.approx([w[0] / sum(w), w[1] / sum(w)], abs=1e-12)
    # ssmax with s_h = 2: scores scaled by 2·ln 2 = 1.386294 -> softmax(1.386294, 0) = (0.8, 0.2)
    assert row2("ssmax", head_scale=torch.tensor([2.0])) == pytest.approx([0.8, 0.2], abs=1e-7)
    # sigmoid_l1_reweight, rows <= 3 use o = 0: (0.5761169, 1/3)^2 renormalised with p = 2
    a, b = 0.5761169 ** 2, (1 / 3) ** 2
    assert row2("sigmoid_l1_reweight", p=2.0) == pytest.approx([a / (a + b), b / (a + b)], abs=1e-6)


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_rows_sum_to_one_and_are_causal(kind):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 40, 16, generator=g) for _ in range(3))
    scale = torch.full((3,), 0.3)
    a = attention_weights(q, k, kind, head_scale=scale)
    if RECIPES[kind][1]:  # l1-normalised types; relu_l1's rows without a positive score are 0
        empty = (q @ k.transpose(-2, -1)).tril().clamp_min(0).sum(-1) == 0
        empty &= RECIPES[kind][0] == "relu"
        torch.testing.assert_close(a.sum(-1), torch.where(empty, 0.0, 1.0))
    assert (a.triu(diagonal=1) == 0).all() and (a >= 0).all()
    y = causal_attention(q, k, v, kind, head_scale=scale)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 25:] += 5 * torch.randn(2, 3, 15, 16, generator=g)
    v2[:, :, 25:] -= 3
    y2 = causal_attention(q, k2, v2, kind, head_scale=scale)
    assert torch.equal(y[:, :, :25], y2[:, :, :25])
    assert not torch.allclose(y[:, :, 25:], y2[:, :, 25:])


def test_lssar_first_three_rows_use_offset_zero():
    g = torch.Generator().manual_seed(2)
    q, k = (torch.randn(1, 1, 6, 8, generator=g, dtype=torch.float64) for _ in range(2))
    p = 3.0
    a = attention_weights(q, k, "lssar", p)[0, 0]
    w = attention_weights(q, k, "lssa", p)[0, 0]  # l1-normalised softplus weights
    for i in range(1, 4):   # o_i = 0: plain w^p renormalised
        x = w[i - 1, :i] ** p
        torch.testing.assert_close(a[i - 1, :i], x / x.sum())
    for i in range(4, 7):   # o_i = 1: only weights above uniform survive
        x = (i * w[i - 1, :i] - 1).clamp_min(0) ** p
        torch.testing.assert_close(a[i - 1, :i], x / x.sum())
        assert (a[i - 1, :i][w[i - 1, :i] <= 1 / i] == 0).all()


def test_lssar_row_at_uniform_falls_back_to_lssa():
    # zero queries (rows 4-6): every weight of the row is softplus(0), equal to its mean, so
    # relu(w - tau) = 0 everywhere and the row falls back to lssa. The other rows (random
    # queries) are re-weighted in the same call: a fallback taken everywhere would fail them.
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(1, 2, 9, 8, generator=g), torch.randn(1, 2, 9, 8, generator=g)
    q[:, :, 4:7] = 0
    v = torch.randn(1, 2, 9, 8, generator=g, requires_grad=True)
    y = causal_attention(q, k, v, "lssar")
    lssa = causal_attention(q, k, v, "lssa")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, :, 4:7], lssa[:, :, 4:7])
    torch.testing.assert_close(y[:, :, 4:7], v.cumsum(2)[:, :, 4:7] / torch.arange(5, 8)[:, None])  # uniform rows
    assert (y[:, :, 7:] - lssa[:, :, 7:]).norm(dim=-1).amin() > 0.1  # every re-weighted row differs
    y.sum().backward()
    assert torch.isfinite(v.grad).all()


def test_lssar_large_p_approaches_argmax():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 1, 32, 16, generator=g) for _ in range(3))
    w = attention_weights(q, k, "lssa")[0, 0]
    y = causal_attention(q, k, v, "lssar", p=400.0)[0, 0]
    # rows whose top weight clearly beats the runner-up (1.1^400 ~ 4e16); near-ties need larger p
    top2 = w.topk(2, dim=-1).values
    clear = (top2[:, 0] > 1.1 * top2[:, 1]) & (torch.arange(32) >= 3)
    assert clear.sum() >= 10
    torch.testing.assert_close(y[clear], v[0, 0][w.argmax(-1)][clear], atol=1e-5, rtol=0)
    # and p = 15 is sharper than p = 3 everywhere past the offset rows
    a3 = attention_weights(q, k, "lssar", p=3.0)[0, 0]
    a15 = attention_weights(q, k, "lssar", p=15.0)[0, 0]
    assert (a15.amax(-1)[3:] >= a3.amax(-1)[3:] - 1e-6).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_finite_at_4096(kind, dtype):
    g = torch.Generator().manual_seed(4)
    q, k, v = (8 * torch.randn(1, 2, 4096, 16, generator=g) for _ in range(3))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    with torch.no_grad():
        y = causal_attention(q, k, v, kind, head_scale=torch.full((2,), 0.2))
    assert y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [3.0, 15.0])
def test_sigmoid_l1_rows_far_below_underflow(dtype, p):
    """Every score of every row is about −200 to −300: σ underflows to 0 in fp32 (below about
    −88), and l1-normalising those zeros used to give 0/0 = NaN rows. The rows must equal the
    float64 formulas (naive_weights: σ(−300) ≈ 5e-131 is still a normal float64)."""
    g = torch.Generator().manual_seed(7)
    T, d = 9, 4
    base = torch.tensor([1.0, 1.0, 0.0, 0.0])
    k = 15 * base + 0.5 * torch.randn(T, d, generator=g)
    q = -15 * base + 0.5 * torch.randn(T, d, generator=g)
    q, k = q.to(dtype).double(), k.to(dtype).double()   # the inputs as the dtype represents them
    want = as_tensor(naive_weights(q.tolist(), k.tolist(), "sigmoid_l1_reweight", p))
    scores = (q @ k.T) / math.sqrt(d)
    assert scores.max() < -180, "the test needs every score far below fp32's sigmoid underflow"
    got = attention_weights(q[None, None].to(dtype), k[None, None].to(dtype), "sigmoid_l1_reweight", p)
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-4), (got.double() - want).abs().max()
    v = torch.randn(1, 1, T, d, generator=g).to(dtype)
    y = causal_attention(q[None, None].to(dtype).requires_grad_(), k[None, None].to(dtype), v,
                         "sigmoid_l1_reweight", p)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("kind", ["lssa", "lssar"])
def test_gradients_finite_in_low_precision(kind):
    q, k, v = (8 * torch.randn(1, 2, 512, 16) for _ in range(3))
    for dtype in (torch.bfloat16, torch.float16):
        qkv = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        causal_attention(*qkv, kind).float().square().sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in qkv)


@pytest.mark.parametrize("kind", [k for k in ATTENTION_TYPES if k != "softmax"])
def test_gradcheck_float64(kind):
    g = torch.Generator().manual_seed(5)
    qkv = [torch.randn(1, 2, 7, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    scale = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)  # ssmax learns it
    assert torch.autograd.gradcheck(lambda q, k, v, s: causal_attention(q, k, v, kind, p=3.0, head_scale=s),
                                    (*qkv, scale))


def test_lssar_gradient_flows_through_threshold(monkeypatch):
    # The threshold tau_i = Z_i / n_i depends on every score of the row. Detaching it gives a
    # different q-gradient; gradcheck above would catch that, and so does this explicit probe.
    import attention
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 1, 8, 4, generator=g, dtype=torch.float64) for _ in range(3))
    q.requires_grad_()
    (gq,) = torch.autograd.grad(causal_attention(q, k, v, "lssar", p=3.0).sum(), q)

    def reweight_detached_tau(w, a, n, p):
        tau = ((n > 3).to(w.dtype) * w.sum(-1, keepdim=True) / n).detach()
        x = torch.relu(w - tau) ** p
        return x / x.sum(-1, keepdim=True)

    monkeypatch.setattr(attention, "reweight", reweight_detached_tau)
    (gq_detached,) = torch.autograd.grad(causal_attention(q, k, v, "lssar", p=3.0).sum(), q)
    assert not torch.allclose(gq, gq_detached, atol=1e-6)


def test_float64_stays_float64():
    q, k, v = (torch.randn(1, 1, 5, 4, dtype=torch.float64) for _ in range(3))
    assert attention_weights(q, k, "lssar").dtype == torch.float64
    assert causal_attention(q, k, v, "lssar").dtype == torch.float64


@pytest.mark.parametrize("kind", ["lssa", "lssar"])
def test_chunked_equals_unchunked(kind):
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 2, 300, 8, generator=g) for _ in range(3))
    full = attention_weights(q, k, kind) @ v
    with torch.no_grad():
        chunked = reference_attention(q, k, v, kind, chunk_elements=2 * 2 * 300 * 7)  # 7 rows a chunk
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)


def test_16k_forward_memory_is_bounded():
    # One T x T fp32 matrix at 16384 is 1 GiB, and the unchunked maths holds several at once
    # (scores, weights, normalised weights, ...: > 3 GiB). Chunked, the blocks are 32 MiB; the
    # bound leaves room for torch itself and for how glibc happens to reuse freed blocks.
    script = (
        "import resource, torch\n"
        "from attention import causal_attention\n"
        "q, k, v = (torch.randn(1, 1, 16384, 16) for _ in range(3))\n"
        "with torch.no_grad():\n"
        "    assert torch.isfinite(causal_attention(q, k, v, 'lssar')).all()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    peak_mib = int(out.stdout.strip().splitlines()[-1])
    assert peak_mib < 2048, f"16k forward peaked at {peak_mib} MiB"


def test_unknown_type_lists_the_valid_ones():
    q = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"unknown attention type 'flash'.*softmax, lssa, lssar"):
        causal_attention(q, q, q, "flash")
    with pytest.raises(ValueError, match="reweight_p"):
        causal_attention(q, q, q, "lssar", p=0.5)
    with pytest.raises(ValueError, match="ssmax needs head_scale"):
        causal_attention(q, q, q, "ssmax")
