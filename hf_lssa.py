"""
Our attention types inside Hugging Face transformers, and our model as a transformers model.

    import hf_lssa                                   # registers the attention types with transformers
    model = AutoModelForCausalLM.from_config(llama_config, attn_implementation="lssar")

1. `attention_forward` is causal attention of any type in attention.py (softmax, lssa, lssar and
   the baselines) as a transformers attention function, registered under the type's name with
   AttentionInterface, so any model that dispatches through it (Llama, Qwen, GPT-NeoX, ...) runs
   it by `attn_implementation=NAME`. The mask function registered with it (AttentionMaskInterface,
   which a custom name needs since transformers 4.53, or the function gets no mask) is
   transformers' own SDPA one: None for a plain causal batch, else a boolean (B, 1, Tq, Tk) mask.
   n_i, the row's number of visible keys, is counted from that mask: from the query length a
   cached decoding step would get n = 1, and from position_ids left padding would be wrong.
2. `LssaGPTForCausalLM` is model.GPT as transformers' GPT-NeoX (the same blocks, see
   export_hf.py) with two changes: the attention type is fixed by the config, whatever
   `attn_implementation` a caller asks for, and RoPE angles are formed in float64 as in
   model.rope_tables (transformers' fp32 angles are off by ~1e-3 rad at position 16384).

This file travels: export_hf.py copies it into every exported folder as modeling_lssa_gpt.py,
with attention.py beside it, and transformers imports it from there (trust_remote_code=True), so
it imports nothing else from the repository. The fused Triton kernel stays in the repository:
inside it (the registered function, or an export loaded where `kernels` imports) lssa and lssar
run the kernel on CUDA for an unpadded causal batch; elsewhere, the reference.
"""
import math

import torch
from transformers import AttentionInterface, GPTNeoXConfig, GPTNeoXForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

try:  # an exported model folder: transformers loads this file as part of a package, attention.py beside it
    from .attention import ATTENTION_TYPES, RECIPES, causal_attention, reference_attention
except ImportError:  # the repository
    from attention import ATTENTION_TYPES, RECIPES, causal_attention, reference_attention


def attention_forward(kind, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function interface for type `kind`: query (B, H, Tq, D), key and
    value (B, H_kv, Tk, D) with RoPE applied and any cache prepended, the mask from the function
    registered below; returns (output (B, Tq, H, D), None: no attention weights)."""
    if dropout:
        raise ValueError(f"{kind} attention has no attention dropout: set the model's attention_dropout to 0")
    if query.size(1) != key.size(1):   # grouped-query attention: each k/v head serves a group of query heads
        groups = query.size(1) // key.size(1)
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    d = query.size(-1)
    if scaling is not None and scaling != d ** -0.5 and not RECIPES[kind][0].startswith("softplus"):
        query = query * (scaling * math.sqrt(d))   # the types divide by sqrt(d) themselves; lssa's are QK-normed
    # reweight_p from the model's config (ours has it; set config.reweight_p on any other to change it)
    p = float(getattr(getattr(module, "config", None), "reweight_p", 15.0))
    # ssmax's learned per-head s_h is folded into the query weights by export_hf.py: here s_h = 1
    head_scale = torch.ones(query.size(1), device=query.device) if kind == "ssmax" else None
    Tq, Tk = query.size(-2), key.size(-2)
    if attention_mask is None and Tq == Tk:
        # plain causal: the fused kernel where it applies (attention.KERNEL_TYPES on CUDA), else the reference
        y = causal_attention(query, key, value, kind, p, "auto", head_scale=head_scale)
    else:
        if attention_mask is None:   # causal, the queries being the last Tq of Tk positions (cached decoding)
            pos = torch.arange(Tk, device=query.device)
            visible = pos[None, :] <= pos[Tk - Tq:, None]
        elif attention_mask.dtype == torch.bool:
            visible = attention_mask[..., :Tk]
        else:   # an additive float mask (transformers' eager masks): 0 where visible
            visible = attention_mask[..., :Tk] == 0
        y = reference_attention(query, key, value, kind, p, head_scale=head_scale, visible=visible)
    return y.transpose(1, 2).contiguous(), None


def _bind(kind):
    def forward(module, query, key, value, attention_mask, **kwargs):
        return attention_forward(kind, module, query, key, value, attention_mask, **kwargs)
    forward.__name__ = f"{kind}_attention_forward"
    return forward


for _kind in ATTENTION_TYPES:
    AttentionInterface.register(_kind, _bind(_kind))
    AttentionMaskInterface.register(_kind, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


class LssaGPTConfig(GPTNeoXConfig):
    """GPT-NeoX's config plus ours: attention (the type), reweight_p, rope_base, block_size (the
    training context) and tokenizer ("gpt2" | "bytes"), as export_hf.py writes them."""
    model_type = "lssa_gpt"

    # The attention type is part of the model: an lssar model must never run as softmax because a
    # caller (or transformers' default, "sdpa") asked for another attn_implementation.
    @property
    def _attn_implementation(self):
        return getattr(self, "attention", "softmax")

    @_attn_implementation.setter
    def _attn_implementation(self, value):
        pass


class Float64Rotary(torch.nn.Module):
    """RoPE's cos and sin for GPT-NeoX's rotate-half layout, with the angles formed in float64
    exactly as model.rope_tables does. Nothing is stored: a float64 buffer would be cast by
    model.to(dtype)."""

    def __init__(self, config):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.base = float(config.rope_base)

    def forward(self, x, position_ids):
        half = torch.arange(0, self.head_dim, 2, dtype=torch.float64, device=x.device)
        inv_freq = self.base ** (-half / self.head_dim)
        angles = position_ids.to(torch.float64)[..., None] * inv_freq   # (B, T, head_dim / 2)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().float().to(x.dtype), angles.sin().float().to(x.dtype)


class LssaGPTForCausalLM(GPTNeoXForCausalLM):
    config_class = LssaGPTConfig

    def __init__(self, config):
        super().__init__(config)
        self.gpt_neox.rotary_emb = Float64Rotary(config)
