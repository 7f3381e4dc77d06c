"""The GPT model: API, RoPE, length generalisation of the code path, counts."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from attention import ATTENTION_TYPES
from model import GPT, GPTConfig, PRESETS, apply_rope, config_from_preset, rope_tables


def tiny(attention="softmax", **kw):
    torch.manual_seed(0)
    return GPT(config_from_preset("tiny", vocab_size=97, block_size=32, attention=attention, **kw))


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_trained_at_32_runs_at_512(attention):
    model = tiny(attention)
    opt = model.configure_optimizers(0.1, 3e-3, (0.9, 0.95), "cpu")
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, 97, (8, 33), generator=g)
    losses = []
    for _ in range(5):
        _, loss = model(data[:, :-1], data[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    long = torch.randint(0, 97, (2, 513), generator=g)
    logits, loss = model(long[:, :-1], long[:, 1:])
    assert logits.shape == (2, 512, 97) and torch.isfinite(loss)


def test_forward_api_like_nanogpt():
    model = tiny()
    idx = torch.randint(0, 97, (3, 20))
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 97) and loss is None
    full_logits, loss = model(idx, torch.randint(0, 97, (3, 20)))
    torch.testing.assert_close(logits[:, 0], full_logits[:, -1])
    # at init the prediction is close to uniform over the vocabulary
    assert loss.shape == () and abs(loss.item() - math.log(97)) < 0.3


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_model_is_causal(attention):
    model = tiny(attention).eval()
    a = torch.randint(0, 97, (1, 40))
    b = a.clone()
    b[0, 30:] = (b[0, 30:] + 1) % 97
    la, _ = model(a, a)
    lb, _ = model(b, b)
    torch.testing.assert_close(la[:, :30], lb[:, :30], rtol=0, atol=0)


def test_token_losses_match_forward_loss():
    model = tiny("lssar").eval()
    x = torch.randint(0, 97, (2, 50))
    y = torch.randint(0, 97, (2, 50))
    _, loss = model(x, y)
    per_token = model.token_losses(x, y, chunk=16)
    assert per_token.shape == (2, 50)
    torch.testing.assert_close(per_token.mean(), loss)
    logits, _ = model(x, y)
    reference = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(2, 50)
    torch.testing.assert_close(per_token, reference)
    # into a caller's buffer: its 16 rows set the chunk, the last chunk uses 4 of them, and it is reused
    buffer = torch.full((2, 16, 97), float("nan"))
    for _ in range(2):
        torch.testing.assert_close(model.token_losses(x, y, buffer=buffer), reference)


def test_rope_is_a_rotation_relative_in_position():
    cos, sin = rope_tables(64, 8, 10000.0, "cpu")
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    # q at position m, k at position n: the dot product depends only on m - n
    dots = []
    for m, n in [(5, 2), (40, 37), (63, 60)]:
        qm = apply_rope(q, cos[m:m + 1], sin[m:m + 1])
        kn = apply_rope(k, cos[n:n + 1], sin[n:n + 1])
        assert torch.allclose(qm.norm(), q.norm())
        dots.append((qm * kn).sum())
    assert torch.allclose(dots[0], dots[1], atol=1e-5) and torch.allclose(dots[0], dots[2], atol=1e-5)


def test_weight_tying_and_init():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert std < 0.02  # residual projections scaled by 1/sqrt(2 n_layer)
    names = {n for n, _ in model.named_parameters()}
    assert not any("wpe" in n for n in names)  # no learned positions: RoPE


def test_gpt2_presets_have_the_expected_sizes():
    expected_millions = {"gpt2-124M": 124, "gpt2-350M": 354, "gpt2-774M": 773, "gpt2-1.5B": 1556}
    for name, millions in expected_millions.items():
        with torch.device("meta"):
            n = GPT(config_from_preset(name)).num_params()
        assert abs(n / 1e6 - millions) < 1, (name, n)
        cfg = GPTConfig(**PRESETS[name])
        assert cfg.n_embd // cfg.n_head == 64


def test_flops_per_token_knows_the_attention_type():
    with torch.device("meta"):
        models = {a: GPT(config_from_preset("gpt2-124M", attention=a)) for a in ATTENTION_TYPES}
    f = {a: m.flops_per_token(1024) for a, m in models.items()}
    n = models["softmax"].num_params()
    assert f["softmax"]["matmul"] == 6 * n + 12 * 12 * 768 * 1024
    assert f["softmax"]["matmul"] == f["lssa"]["matmul"] == f["lssar"]["matmul"]
    assert f["softmax"]["score_ops"] < f["lssa"]["score_ops"] < f["lssar"]["score_ops"]


def test_weight_decay_only_on_matrices():
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown attention type 'sofmax'.*softmax, lssa, lssar"):
        GPTConfig(attention="sofmax")
    with pytest.raises(ValueError, match="unknown model preset"):
        config_from_preset("gpt3")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)


def test_generate_runs_past_block_size():
    model = tiny("lssar").eval()
    torch.manual_seed(0)
    out = model.generate(torch.zeros(1, 30, dtype=torch.long), 10, temperature=0.8, top_k=5)
    assert out.shape == (1, 40)
    greedy = model.generate(torch.zeros(1, 30, dtype=torch.long), 5, temperature=0)
    assert torch.equal(greedy, model.generate(torch.zeros(1, 30, dtype=torch.long), 5, temperature=0))


def test_compiled_model_does_not_recompile():
    """The first call of a compiled model (not preceded by an eager one, as on a resume
    between evaluations) must not change state its graph depends on: no recompile after it."""
    torch._dynamo.reset()
    model = GPT(config_from_preset("tiny", vocab_size=97, block_size=16))
    compiled = torch.compile(model, backend="eager")
    x = torch.randint(0, 97, (2, 16))
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            _, loss = compiled(x, x)
            loss.backward()
    torch._dynamo.reset()


def test_rope_tables_are_not_saved():
    model = GPT(config_from_preset("tiny", vocab_size=97, block_size=16))
    assert not any("rope" in key for key in model.state_dict())
    cos, sin = rope_tables(16, 16, 10000.0, "cpu")
    assert torch.equal(model.rope(16, torch.device("cpu"))[0], cos)
    assert torch.equal(model.rope(16, torch.device("cpu"))[1], sin)


def test_the_model_makes_its_rope_tables_on_the_device_of_its_input():
    """RoPE tables are made on the input's device and cached per device: the meta device (shapes
    only) stands in for a GPU, where a table made on the CPU by mistake meets the activations and
    fails. At the training length (the buffers, moved with the model) and at another length."""
    model = GPT(config_from_preset("tiny", vocab_size=97, block_size=16)).to("meta")
    for T in (16, 8):
        idx = torch.zeros(2, T, dtype=torch.long, device="meta")
        logits, loss = model(idx, idx)
        assert logits.device.type == loss.device.type == "meta" and logits.shape == (2, T, 97)
    cpu, meta = model.rope(12, "cpu"), model.rope(12, "meta")   # one length, two devices: two tables
    assert {t.device.type for t in cpu} == {"cpu"} and {t.device.type for t in meta} == {"meta"}


def test_a_model_whose_head_dim_has_no_kernel_says_so_when_built(monkeypatch):
    import attention
    monkeypatch.setattr(attention, "_HEAD_DIM_WARNED", set())
    with pytest.warns(RuntimeWarning, match="head_dim 80 has no fused lssar kernel"):
        GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=160, attention="lssar"))
    monkeypatch.setattr(attention, "_HEAD_DIM_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the reference, asked for: nothing to warn about
        GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=160, attention="lssar",
                      attention_backend="reference"))
