"""GPT.generate's KV cache (model.KVCache): exact for every attention type.

Each step's logits are compared with the no-cache forward of the same prefix, which runs the
whole sequence through the ordinary causal path: the cache is right only if every row's n_i,
RoPE position and keys are."""
import os

import pytest
import torch

from attention import ATTENTION_TYPES
from model import GPT, GPTConfig, KVCache

BLOCK = 8   # the training context: generation below runs past 16x it


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of single-token steps of a tiny model: one thread, or the threads' start-up per
    op (on a busy machine, their waiting) costs far more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model_of(kind, seed=0, uniform_head=False):
    """A tiny random model whose attention is sharp (weights 6x GPT-2's init), so that the types
    differ and lssar's threshold matters. uniform_head: head 0's queries are zero, so its scores
    are all equal and every row of it past the third sits at the uniform level: most of those
    rows are the re-weighting's fallback rows (relu(w - tau) is 0 throughout; in the others tau
    rounds an ulp below w and the row is uniform all the same)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=BLOCK, vocab_size=64, n_layer=2, n_head=2, n_embd=32, attention=kind)).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(6)
            if uniform_head:
                block.attn.c_attn.weight[:16].zero_()
                block.attn.c_attn.bias[:16].zero_()
            if block.attn.ssmax_scale is not None:   # per-head scales that differ
                block.attn.ssmax_scale.copy_(torch.tensor([0.3, 0.9]))
    return model


def full_logits(model, tokens):
    """The no-cache forward's last logits for each row of tokens (B, T)."""
    with torch.no_grad():
        return model(tokens)[0][:, -1]


def cached_steps(model, prompt, continuation, pad=None):
    """Logits after the prompt and after each token of continuation (B, n), fed one at a time
    through a KVCache: [(B, vocab)] * (n + 1)."""
    B = prompt.size(0)
    cache = KVCache(model.config, B, prompt.size(1) + continuation.size(1), pad, "cpu", torch.float32)
    with torch.no_grad():
        out = [model.lm_head(model.hidden_states(prompt, cache)[:, -1])]
        for t in range(continuation.size(1)):
            out.append(model.lm_head(model.hidden_states(continuation[:, t:t + 1], cache)[:, -1]))
    return out


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_each_step_equals_the_no_cache_forward_past_16x(kind):
    """A 2-token prompt (rows 1-3: lssar's o_i = 0, then its offset rows), then single tokens to
    17x the training context; head 0 uniform (the re-weighting's fallback rows)."""
    model = model_of(kind, uniform_head=True)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 64, (2, 17 * BLOCK), generator=g)
    steps = cached_steps(model, tokens[:, :2], tokens[:, 2:])
    worst = 0.0
    for t, logits in enumerate(steps):
        worst = max(worst, (logits - full_logits(model, tokens[:, :t + 2])).abs().max().item())
    assert worst < 1e-5, worst
    # and a model without the uniform head, from a one-token prompt (a prefill of row 1 alone)
    model = model_of(kind, seed=3)
    steps = cached_steps(model, tokens[:, :1], tokens[:, 1:24])
    for t, logits in enumerate(steps):
        assert (logits - full_logits(model, tokens[:, :t + 1])).abs().max() < 1e-5, t


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_left_padded_rows_equal_their_unpadded_selves(kind):
    """Prompts of 1, 4 and 7 tokens right-aligned in one batch: each row's logits at every step
    equal the no-cache forward of that row alone (RoPE from its first real token, n_i from its
    real keys)."""
    model = model_of(kind, seed=5)
    g = torch.Generator().manual_seed(2)
    lengths, width, steps = (1, 4, 7), 7, 12
    rows = [torch.randint(0, 64, (n + steps,), generator=g) for n in lengths]
    prompt = torch.full((3, width), 63)   # the pad id is ignored
    for b, (n, row) in enumerate(zip(lengths, rows)):
        prompt[b, width - n:] = row[:n]
    continuation = torch.stack([row[n:] for n, row in zip(lengths, rows)])
    pad = torch.tensor([width - n for n in lengths])
    out = cached_steps(model, prompt, continuation, pad)
    for b, (n, row) in enumerate(zip(lengths, rows)):
        for t, logits in enumerate(out):
            alone = full_logits(model, row[None, :n + t])[0]
            assert (logits[b] - alone).abs().max() < 1e-5, (b, t)


def test_generate_with_the_cache_picks_the_no_cache_tokens():
    model = model_of("lssar", seed=7)
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 64, (2, 5), generator=g)
    cached = model.generate(prompt, 20, temperature=0)
    assert torch.equal(cached, model.generate(prompt, 20, temperature=0, use_cache=False))
    # a padded batch generates for each row what that row generates alone
    short = torch.randint(0, 64, (1, 2), generator=g)
    batch = torch.cat((torch.cat((torch.zeros(1, 3, dtype=torch.long), short), 1), prompt[:1]))
    out = model.generate(batch, 10, temperature=0, pad=torch.tensor([3, 0]))
    assert torch.equal(out[0, 3:], model.generate(short, 10, temperature=0, use_cache=False)[0])
    assert torch.equal(out[1], model.generate(prompt[:1], 10, temperature=0, use_cache=False)[0])
    # sampling from the same seed draws the same tokens with and without the cache
    torch.manual_seed(4)
    sampled = model.generate(prompt, 10, temperature=0.9, top_k=10)
    torch.manual_seed(4)
    assert torch.equal(sampled, model.generate(prompt, 10, temperature=0.9, top_k=10, use_cache=False))


def test_generate_stops_early_and_limits_the_vocabulary():
    model = model_of("lssa", seed=8)
    prompt = torch.randint(0, 64, (2, 3), generator=torch.Generator().manual_seed(5))
    seen = []
    out = model.generate(prompt, 50, temperature=0, stop=lambda new: seen.append(new.size(1)) or new.size(1) == 4)
    assert out.shape == (2, 7) and seen == [1, 2, 3, 4]
    with torch.no_grad():   # vocab=10: the argmax of the first 10 logits only
        first = model(prompt)[0][:, -1, :10].argmax(-1)
    assert torch.equal(model.generate(prompt, 1, temperature=0, vocab=10)[:, -1], first)
    assert torch.equal(model.generate(prompt, 0), prompt)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        model.generate(prompt, -5)
    with pytest.raises(ValueError, match="left padding .* needs the cache"):
        model.generate(prompt, 2, pad=torch.tensor([1, 0]), use_cache=False)


def test_the_cache_holds_keys_and_values_in_the_dtype_asked_for():
    """bf16 under autocast: the keys and values the model writes are stored as they come."""
    config = GPTConfig(block_size=BLOCK, vocab_size=64, n_layer=2, n_head=2, n_embd=32)
    cache = KVCache(config, 2, 6, None, "cpu", torch.bfloat16)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16 and cache.k.shape == (2, 2, 2, 6, 16)


def test_a_step_past_the_capacity_is_refused_with_the_numbers():
    cache = KVCache(GPTConfig(block_size=BLOCK, vocab_size=64, n_layer=1, n_head=2, n_embd=32), 1, 4, None,
                    "cpu", torch.float32)
    cache.begin(3)
    cache.advance(3)
    cache.begin(1)   # exactly full: fits
    with pytest.raises(ValueError, match=r"^the cache holds 4 positions; 3 \+ 2 do not fit$"):
        cache.begin(2)


def test_sampling_defaults_to_temperature_1():
    from model import sample
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(500, 1)
    torch.manual_seed(0)
    default = sample(logits)
    torch.manual_seed(0)
    assert torch.equal(default, sample(logits, 1.0))


def test_the_cache_path_keeps_the_power_and_the_backend():
    """lssar with p = 3 (not the default 15) through the cache's masked path (a padded batch)
    equals the no-cache forward; and a model set to backend "kernel" fails loudly in the cached
    path too, where the kernel cannot run (no GPU, no interpreter), instead of quietly taking the
    reference."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=BLOCK, vocab_size=64, n_layer=1, n_head=2, n_embd=32, attention="lssar",
                          reweight_p=3.0)).eval()
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight.mul_(6)
    tokens = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(0))
    prompt = torch.cat((torch.full((1, 1), 63), tokens[:, :3]), dim=1)   # one pad: the masked path
    steps = cached_steps(model, prompt, tokens[:, 3:], pad=torch.tensor([1]))
    for t, logits in enumerate(steps):
        assert (logits - full_logits(model, tokens[:, :t + 3])).abs().max() < 1e-5, t
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        kernel = GPT(GPTConfig(block_size=BLOCK, vocab_size=64, n_layer=1, n_head=2, n_embd=32, attention="lssa",
                               attention_backend="kernel"))
        with pytest.raises(RuntimeError, match="fused lssa kernel cannot run"):
            kernel.generate(tokens[:, :3], 1)
