"""scripts/attention_stats.py: the row statistics on hand-built q and k whose answers are known,
and the whole script (and its plot) on tiny trained checkpoints."""
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import attention_stats  # noqa: E402
import plot_attention_maps  # noqa: E402
import plot_attention_stats  # noqa: E402
from attention import ATTENTION_TYPES, RECIPES, attention_weights  # noqa: E402
from checkpoint import load_model  # noqa: E402
from data.shards import ShardError  # noqa: E402

B, H, T, D = 2, 3, 40, 8
BLOCK = 16
POSITIONS = [1, 7, 15, 16, 39]   # n = 2 .. 40 visible keys, either side of BLOCK


def stats(q, k, kind, p=15.0):
    return attention_stats.layer_row_stats(q, k, kind, p, POSITIONS, BLOCK, head_scale=torch.full((H,), 0.7))


@pytest.mark.parametrize("kind", [k for k in ATTENTION_TYPES if RECIPES[k][0] != "relu"])
def test_uniform_rows(kind):
    # q = 0: every score is equal, so every type (lssar falls back to lssa) weighs its visible keys alike
    s = stats(torch.zeros(B, H, T, D), torch.randn(B, H, T, D), kind)
    n = torch.tensor([i + 1.0 for i in POSITIONS]).expand(B, H, -1)
    torch.testing.assert_close(s["entropy"], torch.ones_like(n))
    torch.testing.assert_close(s["sink"], 1 / n)
    torch.testing.assert_close(s["max"], 1 / n)
    torch.testing.assert_close(s["local"], n.clamp(max=BLOCK) / n)
    if RECIPES[kind][1]:  # l1-normalised types
        torch.testing.assert_close(s["mass"], torch.ones_like(n))
    if kind == "sigmoid":  # sigmoid(0 - ln n) = 1 / (1 + n) per key
        torch.testing.assert_close(s["mass"], n / (n + 1))


def test_a_row_without_weight_is_left_out():
    s = stats(torch.zeros(B, H, T, D), torch.randn(B, H, T, D), "relu")   # relu(0) = 0 everywhere
    assert s["entropy"].isnan().all() and (s["mass"] == 0).all()


@pytest.mark.parametrize("kind", ["softmax", "lssar"])
@pytest.mark.parametrize("target", ["first", "diagonal"])
def test_one_hot_rows(kind, target):
    # each query matches exactly one key (the first, or itself), the others are orthogonal to it;
    # softmax's other weights underflow to 0, and lssar's re-weighting zeroes every below-mean weight
    # (from n = 4 keys on: the first three rows have no threshold)
    positions = POSITIONS[1:]
    q = torch.zeros(B, H, T, D)
    q[..., 0] = 1000.0
    k = torch.zeros(B, H, T, D)
    k[..., 1] = 1.0
    if target == "first":
        k[:, :, 0] = torch.eye(D)[0]
    s_rows = []
    for i in positions:
        kk = k.clone()
        if target == "diagonal":
            kk[:, :, i] = torch.eye(D)[0]
        s_rows.append(attention_stats.layer_row_stats(q, kk, kind, 15.0, [i], BLOCK))
    s = {name: torch.cat([r[name] for r in s_rows], dim=-1) for name in attention_stats.STATS}
    ones = torch.ones(B, H, len(positions))
    torch.testing.assert_close(s["entropy"], 0 * ones)
    torch.testing.assert_close(s["max"], ones)
    far = torch.tensor([i + 1 > BLOCK for i in positions]).expand(B, H, -1).float()
    if target == "first":
        torch.testing.assert_close(s["sink"], ones)
        torch.testing.assert_close(s["local"], 1 - far)        # key 0 leaves the window past BLOCK keys
    else:
        torch.testing.assert_close(s["sink"], 0 * ones)
        torch.testing.assert_close(s["local"], ones)


@pytest.mark.parametrize("kind", ["lssar", "ssmax", "sigmoid"])
def test_sampled_rows_are_the_rows_of_the_full_matrix(kind):
    torch.manual_seed(0)
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    scale = torch.full((H,), 0.7)
    full = attention_weights(q, k, kind, 15.0, head_scale=scale)
    s = attention_stats.layer_row_stats(q, k, kind, 15.0, POSITIONS, BLOCK, head_scale=scale)
    for j, i in enumerate(POSITIONS):
        row = full[:, :, i, :i + 1]
        dist = row / row.sum(-1, keepdim=True)
        torch.testing.assert_close(s["entropy"][..., j], -(dist * dist.clamp_min(1e-30).log()).sum(-1) / math.log(i + 1))
        torch.testing.assert_close(s["sink"][..., j], dist[..., 0])
        torch.testing.assert_close(s["max"][..., j], dist.max(-1).values)


def test_sample_positions_one_set_per_bucket():
    buckets = attention_stats.sample_positions(100, 32, 10, np.random.default_rng(0))
    assert [len(b) for b in buckets] == [10, 10, 10, 4]      # the last bucket holds 96..99 only
    for b, rows in enumerate(buckets):
        assert len(set(rows)) == len(rows) and list(rows) == sorted(rows)
        assert all(max(1, 32 * b) <= i < min(100, 32 * (b + 1)) for i in rows)


@pytest.mark.parametrize("attention", ["softmax", "lssar"])
def test_captured_q_and_k_are_what_the_attention_used(trained_runs, attention):
    # rebuilding each layer's output from the captured q, k and the reference weights gives the layer's output
    model, _ = load_model(trained_runs[attention])
    checked = []

    def check(module, args, output):
        q, k, v = module.qkv(*args)
        y = attention_weights(q, k, module.attention, module.p) @ v
        torch.testing.assert_close(module.c_proj(y.transpose(1, 2).flatten(2)), output, atol=1e-5, rtol=1e-4)
        checked.append(True)

    handles = [b.attn.register_forward_hook(check) for b in model.transformer.h]
    with torch.no_grad():
        model.hidden_states(torch.randint(0, 97, (2, 64)))
    for h in handles:
        h.remove()
    assert len(checked) == model.config.n_layer


@pytest.fixture(scope="module")
def report(trained_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("attention") / "stats.json"
    runs = [trained_runs["softmax"], trained_runs["lssar"]]
    return attention_stats.main(runs + ["--multipliers", "1", "4", "--windows", "3", "--rows", "5", "--out", str(out)]), out


def test_script_on_trained_checkpoints(report):
    report, out = report
    assert json.load(open(out)) == json.loads(json.dumps(report))
    assert report["windows"] == 3 and report["rows_per_bucket"] == 5
    for run in report["runs"]:
        assert run["train_context"] == 32 and run["bucket"] == 32 and run["step"] == 30
        one, four = run["results"]
        assert (one["length"], four["length"]) == (32, 128) and (one["rows"], four["rows"]) == (5, 20)
        assert one["local"] == 1.0                  # at the training length every key is recent
        assert four["local"] < 1.0
        for r in run["results"]:
            assert len(r["layers"]) == 2
            for layer in r["layers"]:
                assert len(layer["heads"]["entropy"]) == 2 and len(layer["buckets"]) == r["length"] // 32
                assert 0 <= layer["sink"] <= layer["max"] <= 1 and 0 <= layer["entropy"] <= 1
                # equal rows per bucket and per head: the layer mean is the mean of the buckets and of the heads
                assert layer["entropy"] == pytest.approx(np.mean([b["entropy"] for b in layer["buckets"]]), abs=1e-5)
                assert layer["entropy"] == pytest.approx(np.mean(layer["heads"]["entropy"]), abs=1e-5)
            assert r["entropy"] == pytest.approx(np.mean([la["entropy"] for la in r["layers"]]), abs=1e-5)


def test_same_rows_for_every_checkpoint_and_override_recorded(trained_runs, report):
    report, _ = report
    args = ["--multipliers", "4", "--windows", "3", "--rows", "5"]
    again = attention_stats.main([trained_runs["softmax"]] + args)
    assert again["runs"][0]["results"][0]["layers"] == report["runs"][0]["results"][1]["layers"]   # seeded
    reweighted = attention_stats.main([trained_runs["lssa"], "--attention", "lssar", "--p", "3"] + args)
    run = reweighted["runs"][0]
    assert run["trained_attention"] == "lssa" and run["attention"] == "lssar" and run["reweight_p"] == 3.0
    plain = attention_stats.main([trained_runs["lssa"]] + args)["runs"][0]["results"][0]
    assert run["results"][0]["max"] > plain["max"]     # the re-weighting sharpens the rows


def test_too_few_windows_is_a_clear_error(trained_runs):
    with pytest.raises(ShardError, match=r"validation set has 20,000 tokens: 39 window\(s\) of 512, 50 asked for"):
        attention_stats.main([trained_runs["softmax"], "--multipliers", "16", "--windows", "50"])


def test_plot_is_written(report, tmp_path):
    _, out = report
    png = tmp_path / "stats.png"
    plot_attention_stats.main([str(out), "-o", str(png), "--title", "tiny"])
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["softmax", "lssar", "relu"])
def test_attention_map_bins_the_full_matrix_rows(kind):
    # each map row: the full T x T matrix's row, summed over bins of T / bins keys by hand
    torch.manual_seed(0)
    T, H, bins = 24, 2, 6
    q, k = torch.randn(1, H, T, 8), torch.randn(1, H, T, 8)
    full = attention_weights(q, k, kind)[0]                                         # (H, T, T)
    rows = plot_attention_maps.map_rows(T, 4)
    assert rows == [5, 11, 17, 23]
    got = plot_attention_maps.binned_map(q, k, kind, 15.0, rows, bins)
    expected = full[:, rows].reshape(H, len(rows), bins, T // bins).sum(-1)
    torch.testing.assert_close(got, expected.double(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["lssa", "ssmax"])
def test_attention_maps_of_a_model_with_and_without_a_per_head_scale(kind):
    """maps_of on an untrained model: only ssmax has a per-head scale (the others must say they have
    none); every map row is a distribution over the keys the row sees (mass 1, none past the row)."""
    from contextlib import nullcontext
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16, attention=kind)).eval()
    tokens = np.arange(64, dtype=np.int64) % 32
    maps = plot_attention_maps.maps_of(model, tokens, [16], 4, [0], [0, 1], 0, nullcontext())
    assert sorted(maps) == [(16, 0, 0), (16, 0, 1)]
    for m in maps.values():
        np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
        for r, i in enumerate(plot_attention_maps.map_rows(16, 4)):
            assert m[r, i + 1:].sum() == 0   # one key per bin here: bins past row i are unseen
