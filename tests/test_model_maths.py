"""model.py against values worked out by hand or from closed forms (not the code against itself):
RoPE's angles and rotation, GPT-2's init, the loss, the FLOP count, the optimizer's settings and
sampling. Fast: no training."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, apply_rope, config_from_preset, rope_tables


def test_rope_angles_are_position_times_base_to_the_minus_2i_over_d():
    # head_dim 8, base 10^4: frequencies 10^4^(-2i/8) = 1, 0.1, 0.01, 0.001 for i = 0..3
    cos, sin = rope_tables(4, 8, 10000.0, "cpu")
    assert cos.shape == sin.shape == (4, 4) and cos.dtype == torch.float32
    angles = torch.tensor([[t * f for f in (1.0, 0.1, 0.01, 0.001)] for t in range(4)], dtype=torch.float64)
    torch.testing.assert_close(cos, angles.cos().float(), rtol=0, atol=1e-7)
    torch.testing.assert_close(sin, angles.sin().float(), rtol=0, atol=1e-7)
    assert sin[3, 1].item() == pytest.approx(math.sin(0.3), abs=1e-7)
    # base 100, head_dim 4: frequencies 1 and 0.1
    cos, sin = rope_tables(3, 4, 100.0, "cpu")
    assert cos[2].tolist() == pytest.approx([math.cos(2.0), math.cos(0.2)], abs=1e-7)


def test_rope_angles_are_exact_far_out():
    """Formed in float64: at position 16383 the fp32 angle would be off by ~1e-3 rad."""
    cos, sin = rope_tables(16384, 2, 10000.0, "cpu")
    assert sin[16383, 0].item() == pytest.approx(math.sin(16383.0), abs=1e-6)
    assert cos[16383, 0].item() == pytest.approx(math.cos(16383.0), abs=1e-6)


def test_apply_rope_rotates_the_pairs_i_and_i_plus_half():
    cos, sin = rope_tables(8, 4, 100.0, "cpu")  # frequencies 1 and 0.1
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4).expand(1, 1, 8, 4)  # pairs (1, 3) and (2, 4)
    y = apply_rope(x, cos, sin)[0, 0]
    for t in (0, 1, 5, 7):
        a, b = t * 1.0, t * 0.1
        expected = [1 * math.cos(a) - 3 * math.sin(a), 2 * math.cos(b) - 4 * math.sin(b),
                    1 * math.sin(a) + 3 * math.cos(a), 2 * math.sin(b) + 4 * math.cos(b)]
        assert y[t].tolist() == pytest.approx(expected, abs=1e-6), t
    assert apply_rope(x.to(torch.bfloat16), cos, sin).dtype == torch.bfloat16


def test_model_uses_its_rope_base_at_every_length():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab_size=11, rope_base=100.0))
    # head_dim 4, base 100: frequencies 1 and 0.1
    for T in (4, 6):
        cos, sin = model.rope(T, torch.device("cpu"))
        angles = torch.tensor([[t * 1.0, t * 0.1] for t in range(T)], dtype=torch.float64)
        torch.testing.assert_close(cos, angles.cos().float(), rtol=0, atol=1e-7)
        torch.testing.assert_close(sin, angles.sin().float(), rtol=0, atol=1e-7)
    assert model.rope(6, torch.device("cpu"))[0] is model.rope(6, torch.device("cpu"))[0]  # cached
    assert model.rope(4, torch.device("cpu"))[0] is model.rope_cos


def test_gpt2_init():
    """N(0, 0.02) weights, zero biases, unit LayerNorms, and the projections into the residual
    stream (attn.c_proj, mlp.c_proj) at 0.02 / sqrt(2 n_layer) (GPT-2's scaling)."""
    torch.manual_seed(0)
    n_layer = 8
    model = GPT(GPTConfig(n_layer=n_layer, n_head=4, n_embd=128, block_size=16, vocab_size=512))
    for name, p in model.named_parameters():
        if p.dim() == 2:
            assert abs(p.mean().item()) < 2e-3, name
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.05), name
        elif name.endswith(".weight") and p.dim() == 2:
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name
        elif "ln" in name and name.endswith(".weight"):
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert name.endswith(".bias") and torch.equal(p, torch.zeros_like(p)), name
    assert not GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=16, bias=False)).lm_head.bias


def test_loss_is_the_mean_cross_entropy_and_ignores_minus_one():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13)).eval()
    idx = torch.randint(0, 13, (2, 8))
    targets = torch.randint(0, 13, (2, 8))
    targets[0, :3] = -1  # e.g. padding
    logits, loss = model(idx, targets)
    logp = logits.double().log_softmax(-1)
    keep = targets >= 0
    by_hand = -logp[keep].gather(1, targets[keep][:, None]).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    losses = model.token_losses(idx, targets.clamp(min=0))
    assert losses[1].tolist() == pytest.approx((-logp[1].gather(1, targets[1][:, None]).squeeze(1)).tolist(),
                                               rel=1e-5)
    buffered = model.token_losses(idx, targets.clamp(min=0), buffer=torch.empty(2, 5, 13))  # 5 rows a chunk
    torch.testing.assert_close(buffered, losses)
    torch.testing.assert_close(model.token_losses(idx, targets.clamp(min=0), chunk=3), losses)


def test_dropout_is_applied_in_training_only():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13, dropout=0.5))
    idx = torch.randint(0, 13, (2, 8))
    assert not torch.equal(model(idx, idx)[0], model(idx, idx)[0])  # different masks each call
    model.eval()
    assert torch.equal(model(idx, idx)[0], model(idx, idx)[0])


def test_flops_per_token_by_hand():
    with torch.device("meta"):
        model = GPT(config_from_preset("tiny", vocab_size=64, block_size=16, attention="lssar", reweight_p=15))
    n = model.num_params()
    # tiny: 2 layers, 2 heads, n_embd 32
    assert model.flops_per_token(16)["matmul"] == 6 * n + 12 * 2 * 32 * 16
    # lssar: softplus (9) + l1 normalisation (2) + re-weighting (8 + ceil(log2 15) = 12) = 23 ops per score,
    # x3 for forward + backward, per layer and head, T scores per token
    assert model.flops_per_token(16)["score_ops"] == 3 * 23 * 2 * 2 * 16
    with torch.device("meta"):
        relu = GPT(config_from_preset("tiny", vocab_size=64, block_size=16, attention="relu"))
        ssmax = GPT(config_from_preset("tiny", vocab_size=64, block_size=16, attention="ssmax"))
    assert relu.flops_per_token(8)["score_ops"] == 3 * 3 * 2 * 2 * 8             # relu, not normalised
    assert ssmax.flops_per_token(8)["score_ops"] == 3 * (5 + 2) * 2 * 2 * 8      # exp + normalisation
    with torch.device("meta"):
        p1 = GPT(config_from_preset("tiny", vocab_size=64, attention="lssar", reweight_p=1))
    assert p1.flops_per_token(8)["score_ops"] == 3 * (9 + 2 + 8 + 1) * 2 * 2 * 8  # log2 of max(p, 2)


def test_optimizer_settings():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13))
    opt = model.configure_optimizers(0.1, 3e-4, (0.8, 0.9), "cpu")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [3e-4, 3e-4]
    assert [g["betas"] for g in opt.param_groups] == [(0.8, 0.9), (0.8, 0.9)]
    assert not opt.param_groups[0].get("fused")  # fused is for CUDA only
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_generate_greedy_top_k_and_context():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13)).eval()
    idx = torch.randint(0, 13, (1, 5))
    greedy = model.generate(idx, 4, temperature=0)
    x = idx
    for _ in range(4):  # greedy by hand: the argmax of the full forward's last logits
        x = torch.cat((x, model(x, x)[0][:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(greedy, x)
    torch.manual_seed(1)
    assert torch.equal(model.generate(idx, 4, temperature=1.0, top_k=1), greedy)  # top-1 sampling is greedy
    # max_context=2: each step sees only the last two tokens
    cropped = model.generate(idx, 3, temperature=0, max_context=2)
    x = idx
    for _ in range(3):
        x = torch.cat((x, model(x[:, -2:], x[:, -2:])[0][:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(cropped, x)
    # temperature divides the logits: a tiny temperature samples the argmax
    torch.manual_seed(2)
    assert torch.equal(model.generate(idx, 4, temperature=1e-4), greedy)
    # top_k keeps exactly k candidates
    torch.manual_seed(3)
    logits = model(idx)[0][0, -1]
    allowed = set(logits.topk(3).indices.tolist())
    samples = {model.generate(idx, 1, temperature=100.0, top_k=3)[0, -1].item() for _ in range(60)}
    assert samples <= allowed and len(samples) > 1


def test_blocks_are_pre_layernorm_residual_by_hand():
    """x + attn(ln_1(x)), then + mlp(ln_2(.)), block after block, then ln_f (nanoGPT's GPT-2)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=13, attention="lssar")).eval()
    idx = torch.randint(0, 13, (2, 8))
    cos, sin = rope_tables(8, 8, 10000.0, "cpu")
    with torch.no_grad():
        x = model.transformer.wte(idx)
        for block in model.transformer.h:
            x = x + block.attn(block.ln_1(x), cos, sin)
            x = x + block.mlp(block.ln_2(x))
        torch.testing.assert_close(model.hidden_states(idx), model.transformer.ln_f(x), rtol=0, atol=1e-6)
        y = block.mlp.c_fc(block.ln_2(x))
        torch.testing.assert_close(block.mlp(block.ln_2(x)),
                                   block.mlp.c_proj(0.5 * y * (1 + torch.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))),
                                   rtol=0, atol=1e-6)  # GPT-2's tanh GELU


def test_attention_backend_reaches_the_attention():
    torch.manual_seed(0)
    idx = torch.randint(0, 13, (1, 8))
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13, attention="lssa",
                          attention_backend="kernel"))
    if os.environ.get("TRITON_INTERPRET") != "1":  # on a CPU only the interpreter runs the kernel
        with pytest.raises(RuntimeError, match="the fused lssa kernel cannot run"):
            model(idx)


def test_check_attention_kernel_checks_cuda_only(monkeypatch):
    import model as model_module
    calls = []
    monkeypatch.setattr(model_module, "check_kernel", lambda *a: calls.append(a))
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13, attention="lssar"))
    m.check_attention_kernel("cpu", torch.float32)
    assert calls == []  # nothing to check on a CPU


def test_sigmoid_flops():
    with torch.device("meta"):
        model = GPT(config_from_preset("tiny", vocab_size=64, block_size=16, attention="sigmoid"))
    assert model.flops_per_token(8)["score_ops"] == 3 * 6 * 2 * 2 * 8  # sigmoid, not normalised


def test_rope_angles_hold_at_16k_positions():
    """The tables at the sweep's 16x lengths: cos/sin of t·base^(-2i/d) worked out in Python's
    float64 for the last positions (an angle formed in float32 is ~1e-3 rad off there)."""
    from model import rope_tables
    cos, sin = rope_tables(16384, 64, 10000.0, "cpu")
    for t in (16383, 12345):
        for i in (0, 1, 31):
            angle = t * 10000.0 ** (-2 * i / 64)
            assert cos[t, i].item() == pytest.approx(math.cos(angle), abs=1e-6)
            assert sin[t, i].item() == pytest.approx(math.sin(angle), abs=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_bias_reaches_every_linear_and_layer_norm(bias):
    model = GPT(config_from_preset("tiny", vocab_size=64, block_size=16, bias=bias))
    biases = sorted(n for n, _ in model.named_parameters() if n.endswith(".bias"))
    per_block = ["attn.c_attn.bias", "attn.c_proj.bias", "ln_1.bias", "ln_2.bias", "mlp.c_fc.bias", "mlp.c_proj.bias"]
    expected = sorted([f"transformer.h.{i}.{b}" for i in range(2) for b in per_block] + ["transformer.ln_f.bias"])
    assert biases == (expected if bias else [])  # the tied lm_head never has one


def test_ssmax_scale_starts_at_one_over_ln_block_size():
    model = GPT(config_from_preset("tiny", vocab_size=64, block_size=64, attention="ssmax"))
    for block in model.transformer.h:
        torch.testing.assert_close(block.attn.ssmax_scale.detach(), torch.full((2,), 1 / math.log(64)))


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"^head_dim=3 must be even for RoPE$"):
        GPTConfig(n_layer=1, n_head=16, n_embd=48)
    with pytest.raises(ValueError, match=r"^unknown model preset 'gpt3'; valid presets are: gpt2-124M, gpt2-350M, "
                                         r"gpt2-774M, gpt2-1.5B, small, mini, micro, tiny$"):
        config_from_preset("gpt3")


def test_softplus_l1_flops():
    with torch.device("meta"):
        model = GPT(config_from_preset("tiny", vocab_size=64, block_size=16, attention="softplus_l1"))
    assert model.flops_per_token(8)["score_ops"] == 3 * (9 + 2) * 2 * 2 * 8  # softplus + l1 normalisation


def test_optimizer_is_fused_for_cuda_and_takes_adamws_first_step():
    """For a CUDA device type the optimizer is AdamW's fused implementation (torch 2.13 runs it on CPU
    tensors too), in both groups; its first step is AdamW's in closed form: each weight moves by
    lr·g/(|g| + eps) against its gradient, the 2-D ones also decayed by lr·wd."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13))
    lr, wd = 1e-2, 0.1
    opt = model.configure_optimizers(wd, lr, (0.9, 0.95), "cuda")
    assert isinstance(opt, torch.optim.AdamW) and [g["fused"] for g in opt.param_groups] == [True, True]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        decay = wd if p.dim() >= 2 else 0.0
        g = grads[n].double()
        expected = before[n].double() * (1 - lr * decay) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach().double(), expected, rtol=0, atol=1e-6, msg=n)


def test_check_attention_kernel_on_a_cuda_device(monkeypatch):
    """On a CUDA device (a device name: nothing runs there) with backend "auto", a fused type's
    kernel is checked for the model's p, that device, autocast's dtype and the head size; the
    reference backend, and a type without a kernel (softmax runs SDPA), are not checked."""
    import model as model_module
    calls = []
    monkeypatch.setattr(model_module, "check_kernel", lambda *a: calls.append(a))
    config = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13)
    GPT(GPTConfig(**config, attention="lssar", reweight_p=3.0)).check_attention_kernel("cuda:1", torch.bfloat16)
    assert calls == [("lssar", 3.0, torch.device("cuda:1"), torch.bfloat16, 8)]
    assert type(calls[0][4]) is int   # the head size, 16 // 2
    GPT(GPTConfig(**config, attention="lssar", attention_backend="reference")).check_attention_kernel("cuda", torch.float32)
    GPT(GPTConfig(**config, attention="softmax")).check_attention_kernel("cuda", torch.float32)
    assert len(calls) == 1
