"""
GPT-2 with rotary position embeddings and a switch for the attention type.

nanoGPT's model (pre-LayerNorm blocks, GELU MLP, tied input/output embeddings, GPT-2's init
with scaled residual projections) with one change that matters for this repository: RoPE
replaces the learned position embeddings, so a model trained with a context of T tokens runs
at 16·T. Learned positions stop dead at T; rotary ones only rotate q and k further.

The attention types (softmax | lssa | lssar) differ only inside attention.causal_attention.
"""
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from attention import (KERNEL_TYPES, RECIPES, causal_attention, check_attention_type, check_backend, check_head_dim,
                       check_kernel, check_reweight_p, reference_attention)


@dataclass
class GPTConfig:
    block_size: int = 1024        # the training context; RoPE lets the model run longer
    vocab_size: int = 50304       # GPT-2's 50257 padded to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True             # biases in Linear and LayerNorm, as GPT-2
    attention: str = "softmax"    # "softmax" | "lssa" | "lssar" | the baselines in attention.RECIPES
    reweight_p: float = 15.0      # the re-weighting power p (the paper's default; 3 is also reported)
    rope_base: float = 10000.0
    attention_backend: str = "auto"  # "auto" (fused kernel on CUDA) | "reference" | "kernel"

    def __post_init__(self):
        check_attention_type(self.attention)
        check_backend(self.attention_backend)
        check_reweight_p(self.reweight_p)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"head_dim={self.n_embd // self.n_head} must be even for RoPE")


# Model shapes. The GPT-2 family (head_dim 64 throughout), and small ones for tests and demos.
PRESETS = {
    "gpt2-124M": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-350M": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-774M": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-1.5B": dict(n_layer=48, n_head=25, n_embd=1600),
    "small": dict(n_layer=4, n_head=4, n_embd=256),   # the spec's minutes-scale model
    "mini": dict(n_layer=4, n_head=4, n_embd=128),
    "micro": dict(n_layer=4, n_head=4, n_embd=64),    # CPU demo: the vocabulary projection dominates
    "tiny": dict(n_layer=2, n_head=2, n_embd=32),     # tests
}


def config_from_preset(name, **overrides):
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets are: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


def rope_tables(T, head_dim, base, device):
    """cos/sin of shape (T, head_dim/2). Angles are formed in float64: at position 16384 an
    fp32 angle is already off by ~1e-3 rad."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    angles = torch.outer(torch.arange(T, dtype=torch.float64, device=device), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x, cos, sin):
    """Rotate pairs (x[..., :h], x[..., h:]) of x (B, H, T, D) by the position's angles."""
    h = x.size(-1) // 2
    x1, x2 = x[..., :h].float(), x[..., h:].float()
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attention, self.p = config.attention, config.reweight_p
        self.backend = config.attention_backend
        check_head_dim(config.attention, config.n_embd // config.n_head, config.attention_backend)
        if config.attention == "ssmax":
            # ssmax's learned per-head s_h (Nakanishi 2025). Initialised to 1/ln(block_size):
            # s_h·ln n = 1 for the last row of a training window (plain softmax), < 1 before it.
            self.ssmax_scale = nn.Parameter(torch.full((config.n_head,), 1.0 / math.log(config.block_size)))
        else:
            self.ssmax_scale = None

    def qkv(self, x, cos, sin):
        """q, k, v (B, n_head, T, head_dim), RoPE applied to q and k: what the attention sees
        (scripts/attention_stats.py calls this too, to inspect the weights)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin):
        B, T, C = x.size()
        q, k, v = self.qkv(x, cos, sin)
        # No dropout on the attention weights: the fused kernels have none, and the attention
        # types should be compared on the same footing (the paper's recipe uses dropout 0).
        y = causal_attention(q, k, v, self.attention, self.p, self.backend, head_scale=self.ssmax_scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def cached(self, x, cos, sin, cache, layer):
        """forward for new tokens x after those in `cache` (generation): their keys and values
        join the cache, and their rows attend over every key so far. Exact, because row i of
        every type depends only on q_i, keys and values 1..i and n_i, the row's visible keys."""
        B, T, C = x.size()
        q, k, v = self.qkv(x, cos, sin)
        keys, values = cache.store(layer, k, v)
        # an unpadded prompt from the start: the causal path (the fused kernel where one applies)
        if cache.visible is None:
            y = causal_attention(q, k, v, self.attention, self.p, self.backend, head_scale=self.ssmax_scale)
        else:   # rows at an offset, or padding: n_i counted from the visible keys
            y = reference_attention(q, keys, values, self.attention, self.p, head_scale=self.ssmax_scale,
                                    visible=cache.visible)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class KVCache:
    """The keys and values of every layer for a batch being generated, in buffers of `capacity`
    positions filled left to right, and per row its number of left-padding tokens `pad` (B,):
    a row's tokens start after its padding, at RoPE position 0, and no real token sees a pad
    (so n_i counts only real keys, and a padded row equals its unpadded self)."""

    def __init__(self, config, batch, capacity, pad, device, dtype):
        head_dim = config.n_embd // config.n_head
        self.k = torch.empty(config.n_layer, batch, config.n_head, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.capacity, self.length, self.visible = capacity, 0, None
        self.pad = torch.zeros(batch, dtype=torch.long, device=device) if pad is None else pad.to(device)
        self.padded = bool(self.pad.any())

    def begin(self, T):
        """Prepare a step of T new tokens; returns their RoPE positions (B, T)."""
        if self.length + T > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions; {self.length} + {T} do not fit")
        cols = torch.arange(self.length, self.length + T, device=self.pad.device)
        if self.length == 0 and not self.padded:
            self.visible = None
        else:   # query column c sees key j <= c that is not padding; a pad sees itself only (never NaN)
            keys = torch.arange(self.length + T, device=self.pad.device)
            real = keys[None, None, :] >= self.pad[:, None, None]
            self.visible = ((keys[None, :] <= cols[:, None]) & (real | (keys[None, :] == cols[:, None])))[:, None]
        return (cols[None, :] - self.pad[:, None]).clamp_min(0)

    def store(self, layer, k, v):
        """Write a layer's new keys and values; returns that layer's keys and values so far."""
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T):
        self.length += T


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache=None):
        """cache: (KVCache, this block's layer index) when generating."""
        h = self.ln_1(x)
        x = x + (self.attn(h, cos, sin) if cache is None else self.attn.cached(h, cos, sin, *cache))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the init of the projections into the residual stream by 1/sqrt(2·n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # RoPE tables for the training length are buffers: they move with .to(device) and are
        # there from the start, so a compiled model's graph never sees the cache below change
        # (filling a dict on the first call would recompile it once). Not in the state dict.
        cos, sin = rope_tables(config.block_size, config.n_embd // config.n_head, config.rope_base, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._rope = {}  # other lengths (evaluation): (T, device) -> (cos, sin), built on demand

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def check_attention_kernel(self, device, dtype):
        """With attention_backend "auto" on a GPU, make sure the fused kernel compiles and runs
        there for q, k, v of `dtype` (autocast's), else warn once and use the reference
        (attention.check_kernel). An eager model does this on its first call; a compiled one
        cannot launch the check inside its graph, so call this before torch.compile. Returns
        check_kernel's reason the kernel cannot run here, or None."""
        cfg = self.config
        device = torch.device(device)
        if cfg.attention_backend == "auto" and cfg.attention in KERNEL_TYPES and device.type == "cuda":
            return check_kernel(cfg.attention, cfg.reweight_p, device, dtype, cfg.n_embd // cfg.n_head)
        return None   # nothing to check: no fused kernel applies

    def num_params(self):
        """Parameter count (the tied embedding counted once; there are no position embeddings)."""
        return sum(p.numel() for p in self.parameters())

    def rope(self, T, device):
        if T == self.config.block_size and self.rope_cos.device == device:
            return self.rope_cos, self.rope_sin
        # Other lengths are cached per length: evaluation uses a handful.
        key = (T, str(device))
        if key not in self._rope:
            head_dim = self.config.n_embd // self.config.n_head
            self._rope[key] = rope_tables(T, head_dim, self.config.rope_base, device)
        return self._rope[key]

    def hidden_states(self, idx, cache=None):
        """Final-LayerNorm hidden states (B, T, n_embd) for token ids idx (B, T); with a KVCache,
        of tokens that follow those already in it (which it then holds too)."""
        x = self.transformer.drop(self.transformer.wte(idx))
        if cache is None:
            cos, sin = self.rope(idx.size(1), idx.device)
            for block in self.transformer.h:
                x = block(x, cos, sin)
            return self.transformer.ln_f(x)
        # absolute positions per row, also past block_size: RoPE extrapolates
        pos = cache.begin(idx.size(1))
        cos, sin = self.rope(cache.capacity, idx.device)
        cos, sin = cos[pos][:, None], sin[pos][:, None]   # (B, 1, T, head_dim / 2)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, (cache, layer))
        cache.advance(idx.size(1))
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None):
        """nanoGPT's API: with targets, (logits, mean cross-entropy); without, the logits of
        the last position only (all that generation needs) and None. The loss is computed
        in fp32 even under bf16 autocast."""
        x = self.hidden_states(idx)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def token_losses(self, idx, targets, chunk=4096, buffer=None):
        """Per-position cross-entropy (B, T), computed `chunk` tokens at a time so that the
        (tokens, vocab) logits never exist at once: at 16x context they would be gigabytes.

        buffer: a float32 (2, chunk, vocab_size) tensor (its rows set the chunk) that every
        chunk's logits and log-probabilities are written into, for a caller that evaluates many
        batches on the CPU without autocast. There runinfo.keep_freed_memory() keeps freed
        blocks in the heap, and fresh blocks of this size per chunk, split up by the
        differently-sized blocks around them, grew the heap to 3x what the sweep needs."""
        x = self.hidden_states(idx).flatten(0, 1)
        flat_targets = targets.flatten()
        out = torch.empty(flat_targets.shape, dtype=torch.float32, device=idx.device)
        chunk = chunk if buffer is None else buffer.size(1)
        for t0 in range(0, len(flat_targets), chunk):
            rows, row_targets = x[t0:t0 + chunk], flat_targets[t0:t0 + chunk]
            if buffer is None:
                out[t0:t0 + chunk] = F.cross_entropy(self.lm_head(rows).float(), row_targets, reduction="none")
            else:  # the same maths as F.cross_entropy, into the buffer
                logits = torch.mm(rows, self.lm_head.weight.t(), out=buffer[0, :len(rows)])
                log_probs = torch.log_softmax(logits, 1, out=buffer[1, :len(rows)])
                out[t0:t0 + chunk] = -log_probs.gather(1, row_targets[:, None]).squeeze(1)
        return out.view(targets.shape)

    def flops_per_token(self, T):
        """Training FLOPs per token at context T (forward + backward), as nanoGPT/PaLM count
        them: 6 per weight plus the attention matmuls (q·k and a·v: 12·L·C·T), counted over
        the full T x T square. The attention types share these matmuls; they differ in the
        elementwise work per score, returned separately under "score_ops" (not counted in
        MFU, which by convention measures matmul throughput)."""
        cfg = self.config
        matmul = 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * T
        # elementwise ops per score (forward; the backward counted as twice that), per layer
        # and head: the positive-weight function, the l1 normalisation, the re-weighting
        positive, normalised, reweighted = RECIPES[cfg.attention]
        per_score = {"exp": 5, "softplus": 9, "softplus_fixed": 9, "sigmoid": 6, "relu": 3}[positive] + 2 * normalised
        if reweighted:
            per_score += 8 + math.ceil(math.log2(max(cfg.reweight_p, 2)))
        score_ops = 3 * per_score * cfg.n_layer * cfg.n_head * T
        return {"matmul": matmul, "score_ops": score_ops}

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on 2-D weights only (matmuls and embeddings), not on biases,
        LayerNorm gains or other vectors; fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, max_context=None, pad=None, stop=None,
                 vocab=None, use_cache=True):
        """Sample max_new_tokens after idx (B, T); temperature 0 is greedy. The context is not
        cropped to block_size (RoPE runs past it: that is the point).

        The prompt runs once and each new token then attends over a cache of keys and values
        (KVCache): O(T) per token, not the O(T^2) of running the whole prefix again, which
        use_cache=False or a max_context (crop the context to its last max_context tokens, a
        sliding window no cache can keep exact) still do.
        pad: (B,) left-padding tokens per row of idx (their ids are ignored): a batch of prompts
        of different lengths, right-aligned. stop: a function of the tokens generated so far
        (B, t) that returns True to end early. vocab: sample from the first `vocab` logits only
        (a tokenizer's real tokens; the vocabulary is padded to a multiple of 64)."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if pad is not None and (max_context is not None or not use_cache):
            raise ValueError("left padding (pad) needs the cache: it cannot be combined with max_context "
                             "or use_cache=False")
        B, T = idx.shape
        cache = None
        if use_cache and max_context is None and max_new_tokens:
            dtype = torch.get_autocast_dtype(idx.device.type) if torch.is_autocast_enabled(idx.device.type) \
                else self.lm_head.weight.dtype
            cache = KVCache(self.config, B, T + max_new_tokens - 1, pad, idx.device, dtype)
        new = idx[:, :0]
        for step in range(max_new_tokens):
            if cache is not None:   # the prompt first, then one token at a time
                x = self.hidden_states(idx if step == 0 else new[:, -1:], cache)[:, -1]
            else:
                whole = torch.cat((idx, new), dim=1)
                x = self.hidden_states(whole if max_context is None else whole[:, -max_context:])[:, -1]
            logits = self.lm_head(x).float()
            new = torch.cat((new, sample(logits if vocab is None else logits[:, :vocab], temperature, top_k)), dim=1)
            if stop is not None and stop(new):
                break
        return torch.cat((idx, new), dim=1)


def sample(logits, temperature=1.0, top_k=None):
    """Next tokens (B, 1) from logits (B, V): argmax at temperature 0, else softmax(logits /
    temperature) restricted to the top_k most likely."""
    if temperature == 0:  # greedy decoding
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
